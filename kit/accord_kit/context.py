"""Who is calling and why: the per-request context the gRPC edge sets and the event
store records with every event (actor, correlation id, causation id)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """A verified caller: token subject, department (for role "department"), role."""

    subject: str
    role: str
    department: str = ""


@dataclass(frozen=True)
class RequestContext:
    principal: Principal | None = None
    correlation_id: str = ""
    causation_id: str = ""


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("accord_request", default=RequestContext())


def current() -> RequestContext:
    return _current.get()


def current_principal() -> Principal | None:
    return _current.get().principal


@contextmanager
def request_context(ctx: RequestContext) -> Iterator[RequestContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def enter_request(ctx: RequestContext) -> None:
    """Sets the context for the rest of the current task, restoring nothing: for a task that is
    the request's own (the gRPC server runs every call in a task of its own)."""
    _current.set(ctx)
