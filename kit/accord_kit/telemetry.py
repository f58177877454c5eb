"""Prometheus metrics of one service process, served on `/metrics` at
`<SERVICE>_METRICS_HOST:<SERVICE>_METRICS_PORT` (no endpoint, and no cost, when the port is
not set).

Every service exports (labels in braces; every label's values are bounded: RPC methods are
the service's own, codes gRPC's, durables and streams the service's upstreams and its own):

* `accord_rpc_duration_seconds{grpc_service, grpc_method, grpc_code}` — histogram of every
  authenticated RPC's handling time by outcome, observed by the gRPC interceptor; its
  `_count` is the calls by method and status code.
* `accord_store_head_position`, `accord_events_stored_total` — the log's head and the events
  this process stored since it started (event-sourced services).
* `accord_relay_*{stream}` — the relay's stream head, `accord_relay_lag_events` (store head −
  stream head), published, duplicate and resync counts.
* `accord_consumer_*{durable}` — the applied position, the upstream stream's head,
  `accord_consumer_lag_events` (upstream head − applied), `accord_consumer_pending_messages`
  (JetStream's count of messages not yet delivered or not yet acknowledged), applied,
  skipped, nak, failure, catch-up and dead-letter counts, and whether it halted.
* `accord_health_serving{check}` — every gRPC health status the service reports (1 SERVING),
  `check="service"` for the service as a whole; `accord_service_ready`.
* the client library's `process_*` and `python_*` series.

A service adds its own collectors through `ServiceParts.collectors` (the gateway's SLO
gauges, `accord_gateway.slo`). The figures are read from the running parts when Prometheus
scrapes, so nothing is counted twice and the hot paths only keep the counters they already
keep; the RPC histogram is the one thing observed per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from accord_kit.logging import get_logger

if TYPE_CHECKING:
    from accord_kit.runtime import ServiceRuntime

log = get_logger("accord.telemetry")

# RPC latency buckets (seconds): a cached read takes a millisecond, a command tens of them,
# a streamed batch of signals or an audit replay seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFRESH_SECONDS = 5.0
# Consumer counters: metric name (without _total), help, ConsumerStats attribute.
COUNTERS = (
    ("accord_consumer_applied", "Upstream events applied", "applied"),
    ("accord_consumer_redeliveries_skipped", "Redeliveries of applied events skipped", "redeliveries_skipped"),
    ("accord_consumer_out_of_order_naks", "Messages nak'ed while an earlier one was missing", "out_of_order_naks"),
    ("accord_consumer_failures", "Failed attempts to apply an event", "failures"),
    ("accord_consumer_read_events", "Events read through ReadEvents to fill a gap", "caught_up_via_read_events"),
    ("accord_consumer_dead_lettered", "Messages copied to the dead-letter stream", "dead_lettered"),
)  # how often consumer lag is asked of JetStream while metrics are on


class Telemetry:
    """One service process's registry, RPC histogram and `/metrics` HTTP endpoint."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.rpc_seconds = Histogram(
            "accord_rpc_duration_seconds",
            "Handling time of authenticated gRPC calls, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Any] = {}
        self._server: Any = None
        self._thread: Any = None

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        child = self._children.get((method, code))
        if child is None:
            service, _, name = method.lstrip("/").rpartition("/")
            child = self._children[(method, code)] = self.rpc_seconds.labels(service, name, code)
        child.observe(seconds)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def serve(self, host: str, port: int) -> int:
        """Serve `/metrics` in a background thread; the port bound."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Metric:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        g.add_metric(values, value)
    return g


def _counter(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Metric:
    c = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        c.add_metric(values, value)
    return c


class RuntimeCollector(Collector):
    """The runtime's parts (store, relay, consumers, health) as metrics, read at scrape time."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Metric]:
        return []  # read at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        app = rt.parts.app
        if app is not None:
            try:
                head = float(app.head_position())
            except Exception as e:  # the store unreachable: the series is absent, not wrong
                log.warning("metrics_store_unreadable", error=str(e) or type(e).__name__)
                head = None
            if head is not None:
                yield _gauge("accord_store_head_position", "Position of the last event in the log", [], [([], head)])
            yield _counter(
                "accord_events_stored", "Events this process stored since it started", [], [([], app.stored_events)]
            )
            relay = rt.relay
            if relay is not None:
                stream = [relay.stream]
                yield _gauge(
                    "accord_relay_stream_position",
                    "Log position of the last event on the stream",
                    ["stream"],
                    [(stream, relay.head)],
                )
                if head is not None:
                    yield _gauge(
                        "accord_relay_lag_events",
                        "Store head minus stream head: committed events not yet on the stream (positions)",
                        ["stream"],
                        [(stream, max(0.0, head - relay.head))],
                    )
                st = relay.stats
                yield _counter("accord_relay_published", "Events published", ["stream"], [(stream, st.published)])
                yield _counter(
                    "accord_relay_duplicates",
                    "Publishes the stream already held",
                    ["stream"],
                    [(stream, st.duplicates)],
                )
                yield _counter(
                    "accord_relay_resyncs", "Times the relay re-read the stream head after an error",
                    ["stream"], [(stream, st.resyncs)],
                )  # fmt: skip
        consumers = list(rt.consumers)
        if consumers:
            d = ["durable"]

            def rows(value: Any) -> list[tuple[list[str], float]]:
                return [([c.config.durable], float(value(c))) for c in consumers]

            yield _gauge("accord_consumer_applied_position", "Upstream position applied", d, rows(lambda c: c.tracked))
            yield _gauge(
                "accord_consumer_upstream_position",
                "Position of the last event on the upstream stream, as last seen",
                d,
                rows(lambda c: max(c.upstream_head, c.tracked)),
            )
            yield _gauge(
                "accord_consumer_lag_events",
                "Upstream head minus applied position (positions)",
                d,
                rows(lambda c: max(0, c.upstream_head - c.tracked)),
            )
            yield _gauge(
                "accord_consumer_pending_messages",
                "Messages JetStream holds for the durable, not yet delivered or not yet acknowledged",
                d,
                rows(lambda c: c.pending_messages),
            )
            yield _gauge("accord_consumer_halted", "1 when the consumer halted on an event", d, rows(
                lambda c: 1 if c.halted else 0))  # fmt: skip
            for name, doc, attr in COUNTERS:
                yield _counter(name, doc, d, rows(lambda c, a=attr: getattr(c.stats, a)))
        server = rt.server
        if server is not None:
            yield _gauge(
                "accord_health_serving",
                "1 while the gRPC health status is SERVING",
                ["check"],
                [([name or "service"], 1.0 if ok else 0.0) for name, ok in sorted(server.statuses.items())],
            )
        yield _gauge(
            "accord_service_ready", "1 while the service is ready", [], [([], 1.0 if rt.parts.readiness.ready else 0.0)]
        )


async def refresh_consumers(runtime: ServiceRuntime, stop: asyncio.Event, every: float = REFRESH_SECONDS) -> None:
    """Keep each consumer's view of its upstream (stream head, pending messages) current
    while metrics are served: asked of JetStream every `every` seconds."""
    while not stop.is_set():
        for c in list(runtime.consumers):
            try:
                await c.refresh_lag()
            except Exception as e:  # NATS away: the figures keep their last value
                log.debug("consumer_lag_unknown", durable=c.config.durable, error=str(e) or type(e).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass
