"""What metrics and traces cost: agreements commands per second with telemetry off, with
Prometheus `/metrics` on (scraped every second meanwhile), and with `/metrics` and OTLP traces
on (to a collector in this process), in the same run.

Set-up (not timed): for each variant its own nats-server and agreements process (`python -m
accord_agreements`, SQLite, production durability and log level, as `bench.agreements`
starts it), departments and the e-mail service registered, and for each client its own
agreement, accepted, with one warm-up amendment. Timed: `--ops-rounds` rounds (default 3);
in each, every variant in turn runs `--ops-pairs` propose/accept amendment pairs per client
(`--ops-clients`, default 8) over one channel per client. Figures: commands/s per variant
(median of the rounds) and each variant's ratio to "off". Beside them, measured in this process
by CPU time (so a busy machine disturbs them less): what the interceptor adds per call for
metrics (`Telemetry.observe_rpc`) and, with tracing off, for its trace hooks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord_kit import tracing
from accord_kit.keys import write_keys
from accord_kit.telemetry import Telemetry
from accord_kit.testing.nats import NatsServer, free_port
from bench.agreements import Child, Tokens, _pair, _register_reference, _set_up_parties, _start_service

NAME = "ops"
SUMMARY = "agreements commands/s with metrics and traces off, with /metrics on, and with /metrics + OTLP traces on"
VARIANTS = ("off", "metrics", "metrics+traces")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ops benchmark")
    group.add_argument("--ops-clients", type=int, default=8, help="concurrent clients (default 8)")
    group.add_argument("--ops-pairs", type=int, default=30, help="propose/accept pairs per client per round (30)")
    group.add_argument("--ops-rounds", type=int, default=3, help="rounds, each running every variant (3)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if min(args.ops_clients, args.ops_pairs, args.ops_rounds) < 1:
        raise ValueError("--ops-clients, --ops-pairs and --ops-rounds must be at least 1")
    return asyncio.run(_run(args.ops_clients, args.ops_pairs, args.ops_rounds))


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver that counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


async def _scrape(port: int, stop: asyncio.Event) -> int:
    """Scrape /metrics every second, as Prometheus would; how many scrapes succeeded."""
    done = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            )
            done += 1
        except OSError:
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
    return done


def _per_call_us(work: Any, n: int = 200_000) -> float:
    """CPU µs per call of `work` (best of three)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            work()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def _hooks() -> list[dict[str, Any]]:
    telemetry = Telemetry("bench")
    method = "/accord.agreements.v1.AgreementsService/ProposeAmendment"

    def observe() -> None:
        telemetry.observe_rpc(method, "OK", 0.012)

    md = {"authorization": "Bearer x"}

    def trace_off() -> None:
        with tracing.server_span(method, md) as span:
            tracing.trace_id(span)
        tracing.end_rpc(span, grpc.StatusCode.OK)

    assert not tracing.enabled
    return [
        {"name": "metrics per call", "value": round(_per_call_us(observe), 2), "unit": "µs CPU",
         "detail": "Telemetry.observe_rpc: the histogram child looked up and observed"},
        {"name": "trace hooks per call, off", "value": round(_per_call_us(trace_off), 3), "unit": "µs CPU",
         "detail": "server_span, trace_id and end_rpc with tracing off"},
    ]  # fmt: skip


async def _run(clients: int, pairs: int, rounds: int) -> dict[str, Any]:
    collector = _Collector()
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    otlp.start()
    with tempfile.TemporaryDirectory(prefix="accord-bench-ops-") as raw:
        tmp = Path(raw)
        keys = tmp / "keys"
        write_keys(keys)
        tokens = Tokens(keys)
        natses: list[NatsServer] = []
        children: list[Child] = []
        try:
            stubs: dict[str, list[Any]] = {}
            parties: dict[str, list[Any]] = {}
            channels: list[grpc.aio.Channel] = []
            metrics_ports: dict[str, int] = {}
            for variant in VARIANTS:
                (tmp / variant).mkdir()
                nats = NatsServer(tmp / f"nats-{variant}").start()
                natses.append(nats)
                extra: dict[str, str] = {}
                if variant != "off":
                    metrics_ports[variant] = free_port()
                    extra["AGREEMENTS_METRICS_PORT"] = str(metrics_ports[variant])
                if variant == "metrics+traces":
                    extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
                child, address = await _start_service(
                    "agreements", tmp / variant, nats.url, keys, ACCORD_BILLING_ADDR=f"127.0.0.1:{free_port()}", **extra
                )
                child.name = f"agreements ({variant})"
                children.append(child)
                chs = [grpc.aio.insecure_channel(address) for _ in range(clients)]
                channels += chs
                stubs[variant] = [pb_grpc.AgreementsServiceStub(ch) for ch in chs]
                await _register_reference(stubs[variant][0], tokens)
                parties[variant] = await _set_up_parties(stubs[variant][0], tokens, clients)
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            scrapes = 0
            for r in range(rounds):
                for variant in VARIANTS:
                    stop = asyncio.Event()
                    scraper = asyncio.create_task(_scrape(metrics_ports[variant], stop)) if variant != "off" else None
                    started = time.perf_counter()

                    async def client(i: int, variant: str = variant, r: int = r) -> None:
                        for n in range(pairs):
                            await _pair(stubs[variant][i], parties[variant][i], 1 + r * pairs + n)

                    await asyncio.gather(*(client(i) for i in range(clients)))
                    seconds = time.perf_counter() - started
                    stop.set()
                    if scraper is not None:
                        scrapes += await scraper
                    samples[variant].append(clients * pairs * 2 / seconds)
            for ch in channels:
                await ch.close()
            for child in children:
                child.check_alive()
        finally:
            for child in reversed(children):
                child.stop()
            for nats in natses:
                nats.stop()
            otlp.stop(1)
    off = statistics.median(samples["off"])
    figures = []
    for variant in VARIANTS:
        med = statistics.median(samples[variant])
        rounds_text = ", ".join(f"{x:.1f}" for x in samples[variant])
        figures.append(
            {
                "name": f"commands/s, {variant}",
                "value": round(med, 1),
                "unit": "cmd/s",
                "detail": f"rounds: {rounds_text}",
            }
        )
        if variant != "off":
            figures.append(
                {"name": f"ratio {variant}/off", "value": round(med / off, 3), "unit": "x", "detail": "medians"}
            )
    figures += _hooks()
    return {
        "figures": figures,
        "notes": [f"{scrapes} scrapes of /metrics during the timed rounds; {collector.spans} spans received over OTLP"],
        "params": {"clients": clients, "pairs_per_client_per_round": pairs, "rounds": rounds},
    }
