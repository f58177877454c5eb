"""structlog configuration: JSON lines (pretty on a terminal), with per-request context."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# The level configured last; until configure_logging runs, structlog's defaults log every
# level, debug included.
_level = logging.DEBUG


def configure_logging(level: str = "info", fmt: str = "auto", service: str | None = None) -> None:
    """Configure structlog once per process. `fmt` is json, console or auto."""
    global _level
    _level = _LEVELS.get(level, logging.INFO)
    pretty = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if pretty:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()


def debug_enabled() -> bool:
    """Whether debug lines are logged: asked before building one on a hot path (a module's
    logger is a proxy that binds a new logger on every call, even for a line then dropped)."""
    return _level <= logging.DEBUG
