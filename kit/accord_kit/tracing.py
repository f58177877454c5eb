"""OpenTelemetry traces across gRPC and NATS, exported over OTLP when an endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`); otherwise off, and then every function here returns at
once (the interceptor, relay and consumer test one module flag).

What makes one trace of a command that flows through several services:

* gRPC: the server interceptor starts a SERVER span per call, a child of the caller's W3C
  `traceparent` metadata when there is one; outgoing calls (`client_interceptors`) start a
  CLIENT span and send its `traceparent`.
* the store: the mapper records the current span's `traceparent` with every event it stores
  (beside the correlation id, in the event's metadata; only while tracing is on), so that the
  relay, which publishes later and elsewhere, continues the trace of the call that stored it.
* NATS: the relay publishes each event in a PRODUCER span (`<STREAM> publish`) whose
  `traceparent` travels in the message's headers; the consumer applies it in a CONSUMER span
  (`<STREAM> process`), a child of that header, under which the consuming service's own new
  events are stored (and so published in the same trace again).

The correlation id is tied to the trace: every span carries it as `accord.correlation_id`, and
a call that brings no `x-correlation-id` gets its trace id as correlation id, so a log line's
`correlation_id` finds its trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from accord_kit.logging import get_logger

log = get_logger("accord.tracing")

enabled = False  # set by configure(): nothing here costs anything while it is False
_tracer: trace.Tracer = trace.NoOpTracer()
_shutdown: Callable[[], None] | None = None
_PROPAGATOR = TraceContextTextMapPropagator()
_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()
CORRELATION = "accord.correlation_id"
# gRPC codes that make a server span an error (OpenTelemetry's RPC conventions); a client span
# is an error on any code but OK.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def configure(service: str, endpoint: str, protocol: str = "grpc") -> None:
    """Export this process's spans to the OTLP collector at `endpoint` (batched, in a
    background thread), as resource `service.name` = the service. Idempotent per process."""
    global enabled, _tracer, _shutdown
    if enabled or not endpoint:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter: Any
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        url = endpoint.rstrip("/")
        exporter = HttpExporter(endpoint=url if url.endswith("/v1/traces") else f"{url}/v1/traces")
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter(endpoint=endpoint, insecure=not endpoint.startswith("https://"))
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "accord"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = provider.get_tracer("accord_kit")
    _shutdown = provider.shutdown
    enabled = True
    log.info("tracing_started", endpoint=endpoint, protocol=protocol)


def shutdown() -> None:
    """Flush what is still buffered and stop exporting."""
    global enabled, _tracer, _shutdown
    if _shutdown is not None:
        try:
            _shutdown()
        except Exception as e:  # a collector gone away must not fail the service's stop
            log.warning("tracing_flush_failed", error=str(e) or type(e).__name__)
    enabled, _tracer, _shutdown = False, trace.NoOpTracer(), None


# -- the current trace -------------------------------------------------------------------
def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None (off, or no span)."""
    if not enabled:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def trace_id(span: Span | None) -> str:
    """The span's trace id (32 hex digits), or "" for none."""
    if span is None:
        return ""
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def _parent(carrier: Mapping[str, str] | None) -> Any:
    return _PROPAGATOR.extract(dict(carrier)) if carrier else None


# -- gRPC ------------------------------------------------------------------------------------
def server_span(method: str, metadata: Mapping[str, str]) -> contextlib.AbstractContextManager[Span | None]:
    """A SERVER span for one call of `method` ("/package.Service/Method"), child of the
    caller's `traceparent`; a no-op context while tracing is off."""
    if not enabled:
        return _NULL
    service, _, name = method.lstrip("/").rpartition("/")
    return _tracer.start_as_current_span(
        f"{service}/{name}",
        context=_parent(metadata),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    )


def end_rpc(span: Span | None, code: grpc.StatusCode, correlation_id: str = "", server: bool = True) -> None:
    """Record the call's outcome on its span."""
    if span is None:
        return
    span.set_attribute("rpc.grpc.status_code", int(code.value[0]))
    if correlation_id:
        span.set_attribute(CORRELATION, correlation_id)
    if (code in _SERVER_ERRORS) if server else (code != grpc.StatusCode.OK):
        span.set_status(Status(StatusCode.ERROR, code.name))


def mark_failed(span: Span | None, reason: str) -> None:
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, reason))


class _ClientTracing(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    """A CLIENT span per outgoing call, its `traceparent` sent in the call's metadata."""

    def _details(self, details: grpc.aio.ClientCallDetails) -> tuple[str, grpc.aio.ClientCallDetails, Span]:
        method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
        service, _, name = method.lstrip("/").rpartition("/")
        span = _tracer.start_span(
            f"{service}/{name}",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        metadata = grpc.aio.Metadata(*(tuple(details.metadata or ())), *carrier.items())
        new = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return method, new, span

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if not enabled:
            return await continuation(client_call_details, request)
        _, details, span = self._details(client_call_details)
        try:
            call = await continuation(details, request)
            code = await call.code()
        except BaseException:
            end_rpc(span, grpc.StatusCode.UNKNOWN, server=False)
            span.end()
            raise
        end_rpc(span, code, server=False)
        span.end()
        return call

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if not enabled:
            return await continuation(client_call_details, request)
        _, details, span = self._details(client_call_details)
        try:
            call = await continuation(details, request)
        finally:
            span.end()  # the span covers starting the call; the stream is read by its caller
        return call


def client_interceptors() -> list[Any]:
    """Interceptors for a grpc.aio channel whose calls should be traced (none while off)."""
    return [_ClientTracing()] if enabled else []


# -- NATS ------------------------------------------------------------------------------------
def start_publish(stream: str, subject: str, stored_traceparent: str | None, event_id: str, correlation_id: str) -> Any:
    """A PRODUCER span for publishing one event, child of the trace the event was stored in
    (its recorded traceparent); its own traceparent goes in the message's headers
    (`inject_into`). The caller ends it once the stream acknowledged the message."""
    attributes = {
        "messaging.system": "nats",
        "messaging.operation.type": "publish",
        "messaging.destination.name": subject,
        "messaging.message.id": event_id,
        "accord.stream": stream,
    }
    if correlation_id:
        attributes[CORRELATION] = correlation_id
    parent = _parent({"traceparent": stored_traceparent} if stored_traceparent else None)
    return _tracer.start_span(f"{stream} publish", context=parent, kind=SpanKind.PRODUCER, attributes=attributes)


def inject_into(span: Any, headers: dict[str, str]) -> None:
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))


def process_span(
    stream: str, headers: Mapping[str, str] | None, event_id: str, correlation_id: str
) -> contextlib.AbstractContextManager[Span | None]:
    """A CONSUMER span for applying one event, child of its message's `traceparent`; the
    events the consumer stores meanwhile record it. A no-op context while tracing is off."""
    if not enabled:
        return _NULL
    attributes = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.message.id": event_id,
        "accord.stream": stream,
    }
    if correlation_id:
        attributes[CORRELATION] = correlation_id
    return _tracer.start_as_current_span(
        f"{stream} process", context=_parent(headers), kind=SpanKind.CONSUMER, attributes=attributes
    )
