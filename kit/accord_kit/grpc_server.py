"""The gRPC server factory every service uses: grpc.aio with health, reflection, one
interceptor for auth + request context + logging + error mapping, a max message size,
and graceful shutdown (health NOT_SERVING first, in-flight calls finish within a grace).

The interceptor wraps each method's handler once, as it is registered, and is the server's one
generic handler: a call's handler is a dict lookup, with none of the library's per-call
interceptor coroutines, and no method registered with the core (the aio server waits on one
future per registered method at every call it accepts)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import structlog
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import MapperDeserialisationError, RecordConflictError
from eventsourcing.utils import TopicError
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from accord_kit import tracing
from accord_kit.auth import Policy, TokenVerifier
from accord_kit.context import RequestContext, enter_request, request_context
from accord_kit.errors import AccordError, DataLossError, UnavailableError
from accord_kit.inputs import InputError, Undecodable, checked, decoded_only, tolerant_deserializer
from accord_kit.logging import debug_enabled, get_logger
from accord_kit.telemetry import Telemetry

log = get_logger("accord.grpc")

ErrorMap = Mapping[type[BaseException], grpc.StatusCode]
# Errors of rebuilding state from stored records: a record's bytes, topic or version is not
# what its writer stored (DATA_LOSS, not INTERNAL).
UNREADABLE_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    MapperDeserialisationError,
    OriginatorVersionError,
    TopicError,
)


# A call without a correlation id of its caller's gets one of this process's: a random prefix
# for the process and a counter, 32 hex digits like the uuid4 it replaced at a fraction of the
# cost (os.urandom each call was a visible part of a small call's CPU).
_CORRELATION_PREFIX = os.urandom(8).hex()
_correlations = itertools.count(1)


def new_correlation_id() -> str:
    return f"{_CORRELATION_PREFIX}{next(_correlations):016x}"


# What `checks_its_own_requests` marks a servicer method with.
_OWN_CHECK = "_accord_checks_its_own_requests"
F = TypeVar("F", bound=Callable[..., Any])


def checks_its_own_requests(behaviour: F) -> F:
    """Marks a servicer method that checks every field of its requests that
    `accord_kit.inputs.check_message` would — with its words, before anything is stored — so
    that the interceptor does not walk them first: it hands the method each request as decoded,
    refusing only bytes that do not decode (INVALID_ARGUMENT). For the methods whose requests
    come by the thousand (a batch of signals), where the walk was a tenth of the work."""
    setattr(behaviour, _OWN_CHECK, True)
    return behaviour


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


class AccordInterceptor(grpc.GenericRpcHandler):
    """Authenticates, authorises (deny by default), binds the request context, logs the
    outcome once per call, and turns exceptions into status codes with a message.

    Registered with the server as its only generic handler: every handler the services add
    (through `build_server`'s registrar) is wrapped here once and looked up by its method."""

    def __init__(self, verifier: TokenVerifier | None, policy: Policy, error_map: ErrorMap | None = None) -> None:
        self.verifier = verifier
        self.policy = policy
        self.error_map = dict(error_map or {})
        # What is known to be wrong with the service's log (e.g. the start-up verification's
        # finding), or None: while it says something, a call that fails unexpectedly is
        # answered DATA_LOSS naming it rather than INTERNAL.
        self.damage: Callable[[], str | None] = lambda: None
        # Where each call's duration and status code go (accord_kit.telemetry), when metrics are on.
        self.telemetry: Telemetry | None = None
        # Why this instance answers nothing but health and reflection (a standby that does not
        # hold its service's lease, accord_kit.lease), or None when it serves.
        self.standby: Callable[[], str | None] = lambda: None
        # Each method's wrapped handler: made as it is registered (`add_methods`), or at its first
        # call for a method only a generic handler of the service's knows (`add_generic`). The
        # handlers are registered before the server starts and never change.
        self._handlers: dict[str, Any] = {}
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_methods(self, service_name: str, handlers: Mapping[str, Any]) -> None:
        for name, handler in handlers.items():
            method = f"/{service_name}/{name}"
            self._handlers[method] = self._wrap(method, handler)

    def add_generic(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            for generic in self._generic:
                handler = generic.service(handler_call_details)
                if handler is not None:
                    wrapped = self._handlers[method] = self._wrap(method, handler)
                    break
            # An unknown method is not remembered: looked up again each time (and UNIMPLEMENTED).
        return wrapped

    def _data_loss(self, exc: BaseException) -> DataLossError | None:
        damage = self.damage()
        known = f"; the log is damaged: {damage}" if damage else ""
        if isinstance(exc, UNREADABLE_RECORD_ERRORS):
            return DataLossError(f"a stored record cannot be read ({type(exc).__name__}: {exc}){known}")
        if damage:
            return DataLossError(f"the log is damaged: {damage} (reading it failed: {type(exc).__name__}: {exc})")
        return None

    def _code_for(self, exc: BaseException) -> grpc.StatusCode | None:
        if isinstance(exc, AccordError):
            return exc.code
        for cls in type(exc).__mro__:
            if cls in self.error_map:
                return self.error_map[cls]
        return None

    def _wrap(self, method: str, handler: Any) -> Any:
        if self.policy.is_public(method):
            return _public(handler)
        # Bytes that do not decode reach the wrapped behaviour (and become INVALID_ARGUMENT
        # there, after authentication) instead of failing inside the library as UNKNOWN.
        kw = dict(
            request_deserializer=tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        inner = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
        check = decoded_only if getattr(inner, _OWN_CHECK, False) else checked
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._wrap_unary(method, inner, check), **kw)
        if handler.stream_unary:
            behaviour = self._wrap_unary(method, inner, check, streamed=True)
            return grpc.stream_unary_rpc_method_handler(behaviour, **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._wrap_stream(method, inner, check), **kw)
        behaviour = self._wrap_stream(method, inner, check, streamed=True)
        return grpc.stream_stream_rpc_method_handler(behaviour, **kw)

    def _enter(
        self, method: str, context: grpc.aio.ServicerContext, md: dict[str, str], trace_id: str = ""
    ) -> RequestContext:
        # Without a correlation id of the caller's, a traced call's trace id is its correlation id.
        correlation = md.get("x-correlation-id") or trace_id or new_correlation_id()
        causation = md.get("x-causation-id") or md.get("x-request-id") or ""
        # Bound without restoring them afterwards: the aio server runs every call in a task of its
        # own, whose context is a copy of the server's, so what a call binds ends with the call.
        structlog.contextvars.bind_contextvars(correlation_id=correlation, rpc=method)
        if self.verifier is None:
            raise RuntimeError("no token verifier configured")
        principal = self.verifier.verify(md.get("authorization"))
        self.policy.check(method, principal)
        if (why := self.standby()) is not None:
            raise UnavailableError(why)
        return RequestContext(principal=principal, correlation_id=correlation, causation_id=causation)

    async def _fail(
        self, method: str, context: grpc.aio.ServicerContext, exc: BaseException, started: float, outcome: list[Any]
    ) -> None:
        code = self._code_for(exc)
        if code is None and isinstance(exc, RecordConflictError):
            # Two writers raced for the same aggregate version: nothing of the loser was stored.
            code, exc = grpc.StatusCode.ABORTED, RuntimeError("a concurrent change to the same record won; retry")
        if code is None and (lost := self._data_loss(exc)) is not None:
            log.error("rpc_data_loss", rpc=method, error=f"{type(exc).__name__}: {exc}")
            code, exc = lost.code, lost
        ms = round((time.perf_counter() - started) * 1000, 2)
        outcome[0] = code or grpc.StatusCode.INTERNAL
        if code is None:
            log.exception("rpc_failed", rpc=method, ms=ms)
            corr = structlog.contextvars.get_contextvars().get("correlation_id", "")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (correlation id {corr})")
        else:
            log.info("rpc_rejected", rpc=method, code=code.name, message=str(exc), ms=ms)
            await context.abort(code, str(exc) or code.name)

    def _finish(
        self, method: str, started: float, code: grpc.StatusCode, span: Any, ctx: RequestContext | None
    ) -> None:
        """The call's outcome to metrics and its trace (each only when on)."""
        if self.telemetry is not None:
            self.telemetry.observe_rpc(method, code.name, time.perf_counter() - started)
        if span is not None:
            tracing.end_rpc(span, code, ctx.correlation_id if ctx is not None else "")

    def _wrap_unary(
        self, method: str, behaviour: Callable[..., Any], check: Callable[[Any], Any], streamed: bool = False
    ) -> Callable[..., Any]:  # fmt: skip
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            md = _metadata(context)
            outcome: list[Any] = [grpc.StatusCode.OK]
            ctx: RequestContext | None = None
            with tracing.server_span(method, md) as span:
                try:
                    ctx = self._enter(method, context, md, tracing.trace_id(span))
                    if streamed:
                        request = _checked_stream(request, check)
                    elif check is checked and _checked_in_thread(request):
                        request = await asyncio.to_thread(checked, request)
                    else:
                        request = check(request)
                    # Set for the rest of the call's own task (see `_enter`): nothing to restore.
                    enter_request(ctx)
                    result = await behaviour(request, context)
                except grpc.aio.AbortError:
                    outcome[0] = _aborted_code(context, outcome[0])
                    raise
                except asyncio.CancelledError:
                    outcome[0] = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc, started, outcome)
                    raise  # unreachable: abort raises
                finally:
                    self._finish(method, started, outcome[0], span, ctx)
                if debug_enabled():
                    log.debug("rpc_ok", rpc=method, ms=round((time.perf_counter() - started) * 1000, 2))
                return result

        return wrapped

    def _wrap_stream(
        self, method: str, behaviour: Callable[..., Any], check: Callable[[Any], Any], streamed: bool = False
    ) -> Callable[..., Any]:  # fmt: skip
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            md = _metadata(context)
            outcome: list[Any] = [grpc.StatusCode.OK]
            ctx: RequestContext | None = None
            with tracing.server_span(method, md) as span:
                try:
                    ctx = self._enter(method, context, md, tracing.trace_id(span))
                    request = _checked_stream(request, check) if streamed else await _checked(request, check)
                    with request_context(ctx):
                        async for item in behaviour(request, context):
                            yield item
                except grpc.aio.AbortError:
                    outcome[0] = _aborted_code(context, outcome[0])
                    raise
                except (asyncio.CancelledError, GeneratorExit):
                    outcome[0] = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc, started, outcome)
                finally:
                    self._finish(method, started, outcome[0], span, ctx)

        return wrapped


def _aborted_code(context: grpc.aio.ServicerContext, known: grpc.StatusCode) -> grpc.StatusCode:
    """The code a call was aborted with: the interceptor's own (already known), or the one
    the servicer passed to `context.abort`."""
    if known != grpc.StatusCode.OK:
        return known
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN


def _public(handler: Any) -> Any:
    """A public method (health, reflection) as the library serves it, except that bytes
    which do not decode are INVALID_ARGUMENT rather than the library's UNKNOWN."""
    kw = dict(
        request_deserializer=tolerant_deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            request.raise_error()
        except InputError as e:
            await context.abort(e.code, str(e))

    async def decoded(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            yield request

    if handler.unary_unary or handler.unary_stream:
        behaviour = handler.unary_unary or handler.unary_stream

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            return await behaviour(request, context)

        async def server_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for item in behaviour(request, context):
                yield item

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary, **kw)
        # A server stream either yields or writes to the context (and returns): keep its kind.
        streaming = server_stream if inspect.isasyncgenfunction(behaviour) else unary
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    if handler.stream_unary:
        client_stream = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await client_stream(decoded(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    bidi = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for item in bidi(decoded(requests, context), context):
            yield item

    async def stream_written(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        return await bidi(decoded(requests, context), context)

    bidi_streaming = stream_stream if inspect.isasyncgenfunction(bidi) else stream_written
    return grpc.stream_stream_rpc_method_handler(bidi_streaming, **kw)


async def _checked_stream(requests: AsyncIterator[Any], check: Callable[[Any], Any]) -> AsyncIterator[Any]:
    """A client stream whose every message is checked as it arrives (see `accord_kit.inputs`)."""
    async for request in requests:
        yield await _checked(request, check)


# Checking a request walks it in Python: a large one (a batch of thousands of signals) is
# checked in a worker thread so that the event loop keeps serving other calls meanwhile.
CHECK_IN_THREAD_BYTES = 64 * 1024


def _checked_in_thread(request: Any) -> bool:
    return isinstance(request, Message) and request.ByteSize() > CHECK_IN_THREAD_BYTES


async def _checked(request: Any, check: Callable[[Any], Any]) -> Any:
    if check is checked and _checked_in_thread(request):
        return await asyncio.to_thread(checked, request)
    return check(request)


@dataclass
class AccordServer:
    """A started (or startable) gRPC server with its health servicer."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    service_names: list[str] = field(default_factory=list)
    interceptor: AccordInterceptor | None = None
    # Every health status set so far ("" is the service as a whole): telemetry reports them.
    statuses: dict[str, bool] = field(default_factory=dict)

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, serving: bool, name: str | None = None) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for n in [name] if name is not None else ["", *self.service_names]:
            self.statuses[n] = serving
            await self.health.set(n, status)

    async def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get `grace` seconds."""
        await self.set_serving(False)
        await self.server.stop(grace)


class _Registrar(grpc.aio.Server):
    """What the services' `register` callables (and health and reflection) add handlers to:
    the generated `add_…_to_server` functions add each service's handlers both as registered
    methods and as a generic handler; both go to the interceptor, wrapped, and nothing to the
    server itself. The rest is the server's. An `aio.Server` itself, for code that asks (the
    reflection servicer is chosen by it)."""

    def __init__(self, server: grpc.aio.Server, interceptor: AccordInterceptor) -> None:
        self._server, self._interceptor = server, interceptor

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        self._interceptor.add_methods(service_name, method_handlers)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._interceptor.add_generic(generic_rpc_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)


def build_server(
    *,
    host: str,
    port: int,
    policy: Policy,
    verifier: TokenVerifier | None,
    register: Iterable[Callable[[grpc.aio.Server], str]],
    error_map: ErrorMap | None = None,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> AccordServer:
    """Build a server. Each `register` callable adds one servicer and returns its full
    service name (used for reflection and per-service health)."""
    interceptor = AccordInterceptor(verifier, policy, error_map)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    registrar = _Registrar(server, interceptor)
    names = [reg(registrar) for reg in register]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], registrar
    )
    server.add_generic_rpc_handlers((interceptor,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port} (address in use?)")
    return AccordServer(server=server, health=health_servicer, port=bound, service_names=names, interceptor=interceptor)
