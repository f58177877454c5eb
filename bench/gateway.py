"""Gateway status queries over gRPC and HTTP beside a trivial echo of each protocol, in the
same run.

Set-up (not timed): a portfolio of agreements (default 1,000) drafted, proposed and accepted
in an `Agreements` application on SQLite (durable settings) in this process, spread over four
services; optionally (on by default) a `Metrics` application that learned them, recorded a few
outages and contact-centre calls per service and evaluated January, so every status carries
its objectives' current windows, some breaches and warnings — and with `--gateway-history-rounds R`, R
more rounds six fake hours apart, each after a batch of calls on every service (about one
evaluation event per agreement a round, windows closing at each month's end: a history of
events behind the read model); relays (`accord_kit.relay.Relay`)
publish both logs to their streams on a nats-server with JetStream (the gateway's other
upstream streams are created empty). Then the gateway as its own OS process (`python -m accord_gateway`, keys from
`accord_kit.keys`, log level info) rebuilds its read model from the streams; the benchmark
waits until the model holds every agreement at the streams' heads. Then it is stopped (SIGTERM:
it writes its read-model snapshot) and started again on the same var dir: how long until it
serves the streams' heads again, resuming from the snapshot's positions, is the restart figure.

Timed, in rounds (default 3), each variant in turn for a fixed time (default 3 s), with N
concurrent clients (default 32) in this process, each asking for a random agreement in a
closed loop:

* gRPC `GetAgreementStatus` (one grpc.aio channel per client), beside a bytes-in/bytes-out
  echo in a process of its own, bare and behind the services' `build_server` (auth
  interceptor) — the echoes of bench.agreements;
* HTTP `GET /v1/agreements/{id}` (one keep-alive HTTP/1.1 connection per client, a minimal
  asyncio client), beside a minimal FastAPI app returning a small JSON document, served by
  uvicorn as the gateway serves its HTTP app, in a process of its own, with and without the
  same bearer-token check.

The figures are the median round of each variant. The server's CPU per query comes from
/proc. Afterwards, in this process, the same read model is rebuilt from the same events and
the parts of one query are timed in-process (the kept typed answer, the same answer rebuilt
after an event dropped it, the deprecated Struct, the HTTP app without a socket, the token
check), and the snapshot is written and loaded (with its cost per event, extrapolated to
1,000,000 events).

Run the HTTP echo alone: `python -m bench.gateway http-echo --port P --public-key FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, Header, HTTPException

from accord.gateway.v1 import gateway_pb2 as gw_pb
from accord.gateway.v1 import gateway_pb2_grpc as gw_grpc
from accord.metrics.v1 import signals_pb2
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_gateway import schemas
from accord_gateway.http import create_app, portfolio_json
from accord_gateway.projection import ReadModel, portfolio_view
from accord_gateway.server import KeptPositions, agreement_answer, agreement_response, portfolio_bytes, view_response
from accord_gateway.snapshot import load_snapshot, write_snapshot
from accord_kit.application import AccordApplication
from accord_kit.auth import TokenVerifier
from accord_kit.clock import FakeClock
from accord_kit.context import Principal
from accord_kit.errors import UnauthenticatedError
from accord_kit.keys import PUBLIC, TOKEN, write_keys
from accord_kit.nats_util import connect, ensure_stream
from accord_kit.relay import Relay
from accord_kit.testing.asgi import asgi_get
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import free_port
from accord_metrics.application import Metrics
from bench.agreements import (
    CALL_TIMEOUT,
    ECHO_METHOD,
    SERVER_LOG_LEVEL,
    START_TIMEOUT,
    Child,
    Metadata,
    Meter,
    Phase,
    Tokens,
    _channels,
    _clean_env,
    _close,
    _loadavg,
    _log_summary,
    _pct,
    _proc_cpu,
    _ready,
    _start_echo,
    _usable_cpus,
    _wait_serving,
    supervised,
)

NAME = "gateway"
SUMMARY = (
    "gateway status queries (gRPC GetAgreementStatus, HTTP GET /v1/agreements/{id}) on a portfolio of agreements "
    "beside a gRPC and an HTTP echo, in the same run"
)

AMS = "+01:00"
SETUP_AT = datetime.fromisoformat(f"2026-01-10T09:00{AMS}").astimezone(UTC)  # when the agreements are accepted
EVALUATE_AT = datetime.fromisoformat(f"2026-01-20T12:00{AMS}").astimezone(UTC)  # January is open
# Services the agreements cover, with what happened to them in January: outage minutes on the
# 12th, then calls answered fast and slow on the 13th. Picked so that the portfolio holds
# healthy, at-risk, breached and no-data objectives.
SERVICES: dict[str, tuple[int, int, int]] = {
    EMAIL: (20, 30, 5),
    "calendar": (0, 0, 0),
    "file-share": (60, 20, 10),
    "telephony": (5, 40, 8),
}
HTTP_ECHO_PATH = "/v1/echo/"
HTTP_ECHO_AUTH_PATH = "/v1/echo-auth/"
PORTFOLIO_POLL_SECONDS = 0.1
CATCH_UP_TIMEOUT = 120.0  # at least; more with more events (`_catch_up_timeout`)
HISTORY_STEP = timedelta(hours=6)  # between the history's rounds (--gateway-history-rounds)
IN_PROCESS_SAMPLES = 300  # queries timed per part in the in-process breakdown
PORTFOLIO_SAMPLES = 20  # portfolio views timed in the in-process breakdown, each after one agreement changed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway benchmark")
    group.add_argument(
        "--gateway-agreements", type=int, default=1000, help="accepted agreements in the portfolio (default 1000)"
    )
    group.add_argument("--gateway-clients", type=int, default=32, help="concurrent clients (default 32)")
    group.add_argument(
        "--gateway-seconds", type=float, default=3.0, help="seconds each variant runs per round (default 3)"
    )
    group.add_argument(
        "--gateway-rounds", type=int, default=3, help="rounds of every variant; figures are medians (default 3)"
    )
    group.add_argument(
        "--gateway-role",
        choices=["auditor", "department"],
        default="auditor",
        help="who asks the gateway: an auditor (sees all) or the provider department (party to all); default auditor",
    )
    group.add_argument(
        "--gateway-history-rounds",
        type=int,
        default=0,
        help="metrics rounds after January's, HISTORY_STEP apart, each after a batch of calls on every service "
        "(about an evaluation event per agreement each): history for the restart figure (default 0)",
    )
    group.add_argument(
        "--gateway-skip-metrics",
        action="store_true",
        help="no metrics windows: statuses carry terms and versions only (faster set-up, smaller documents)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.gateway_agreements
    clients: int = args.gateway_clients
    seconds: float = args.gateway_seconds
    rounds: int = args.gateway_rounds
    if n < 1 or clients < 1 or rounds < 1 or seconds <= 0:
        raise ValueError("--gateway-agreements, --gateway-clients, --gateway-rounds and --gateway-seconds must be > 0")
    history: int = args.gateway_history_rounds
    if history < 0 or (history and args.gateway_skip_metrics):
        raise ValueError("--gateway-history-rounds must be ≥ 0, and needs the metrics windows")
    config = Config(n, clients, seconds, rounds, args.gateway_role, not args.gateway_skip_metrics, history)
    return asyncio.run(_run(config))


@dataclass(frozen=True)
class Config:
    agreements: int
    clients: int
    seconds: float
    rounds: int
    role: str
    with_metrics: bool
    history_rounds: int = 0


# -- the portfolio ---------------------------------------------------------------------------------------------


@dataclass
class Portfolio:
    agreements: Agreements
    metrics: Metrics | None
    ids: list[str]  # in the order they were accepted
    seconds: dict[str, float] = field(default_factory=dict)  # set-up step → wall seconds

    @property
    def apps(self) -> list[AccordApplication]:
        return [self.agreements] if self.metrics is None else [self.agreements, self.metrics]

    def close(self) -> None:
        for app in self.apps:
            app.close()


def _ts(when: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(when)
    return t


def _signals(service_id: str, outage_minutes: int, fast: int, slow: int) -> list[signals_pb2.Signal]:
    out: list[signals_pb2.Signal] = []
    if outage_minutes:
        start = datetime.fromisoformat(f"2026-01-12T10:00{AMS}").astimezone(UTC)
        outage = signals_pb2.Outage(start=_ts(start), end=_ts(start + timedelta(minutes=outage_minutes)))
        out.append(signals_pb2.Signal(signal_id=f"{service_id}-outage", service_id=service_id, outage=outage))
    day = datetime.fromisoformat(f"2026-01-13T10:00{AMS}").astimezone(UTC)
    for i in range(fast + slow):
        entered = day + timedelta(minutes=i)
        wait = 10 if i < fast else 40  # the sample objective: 80 % within 20 s
        call = signals_pb2.Call(
            entered_queue=_ts(entered), answered_at=_ts(entered + timedelta(seconds=wait)), talk_seconds="60"
        )
        out.append(signals_pb2.Signal(signal_id=f"{service_id}-call-{i}", service_id=service_id, call=call))
    return out


def _history_batch(service_id: str, step: int, at: datetime) -> list[signals_pb2.Signal]:
    """A batch for one service: 20 calls in the hour before `at`, a third answered late, so the
    service level moves (no outage: its burn rates would keep every later round judging)."""
    out: list[signals_pb2.Signal] = []
    for i in range(20):
        entered = at - timedelta(minutes=60 - i)
        wait = 40 if (i + step) % 3 == 0 else 10
        call = signals_pb2.Call(
            entered_queue=_ts(entered), answered_at=_ts(entered + timedelta(seconds=wait)), talk_seconds="60"
        )
        out.append(signals_pb2.Signal(signal_id=f"{service_id}-h{step}-{i}", service_id=service_id, call=call))
    return out


def _build_portfolio(
    tmp: Path, n: int, with_metrics: bool, history_rounds: int = 0, distinct: bool = False
) -> Portfolio:
    """N accepted agreements (the sample SLA over one of four services each); with metrics,
    January evaluated up to the 20th, then `history_rounds` more rounds HISTORY_STEP apart, each
    after a batch of calls on every service (windows closing on the way: history). `distinct`:
    each agreement's objectives with targets of their own (no two agreements judged alike)."""
    clock = FakeClock(SETUP_AT)
    agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
    metrics: Metrics | None = None
    try:
        provider, customer = Actor("bench-provider", "department", IT), Actor("bench-customer", "department", FINANCE)
        t0 = time.perf_counter()
        for dept in (IT, FINANCE):
            agreements.register_department(dept, dept)
        for sid in SERVICES:
            agreements.register_service(sid, sid, IT)
        base = sla_terms()
        ids: list[str] = []
        services = list(SERVICES)
        for i in range(n):
            sid = services[i % len(services)]
            terms = sla_terms(title=f"{sid} for Finance #{i:04d}", service={**base["service"], "service_ids": [sid]})
            if distinct:  # 99.9 → 99.90001, 99.90002, …; 80 → 80.00001, …
                for objective in terms["objectives"]:
                    objective["target"] = f"{objective['target']}{'' if '.' in objective['target'] else '.'}{i + 1:05d}"
            aid = str(agreements.draft(provider, terms).id)
            agreements.propose(provider, aid)
            agreements.accept(customer, aid)
            ids.append(aid)
        portfolio = Portfolio(agreements, None, ids)
        portfolio.seconds["agreements"] = time.perf_counter() - t0
        if not with_metrics:
            return portfolio
        t0 = time.perf_counter()
        metrics = Metrics(sqlite_env(tmp / "metrics.sqlite"), clock=clock)
        portfolio.metrics = metrics
        after = 0
        while True:  # what metrics' AGREEMENTS consumer does
            envelopes, head = agreements.read_events(after, 5000)
            for env in envelopes:
                metrics.apply_upstream("agreements", env)
            if not envelopes or envelopes[-1].position >= head:
                break
            after = envelopes[-1].position
        collector = Principal("bench-collector", "service")
        for sid, (outage, fast, slow) in SERVICES.items():
            if outage or fast or slow:
                metrics.record(collector, _signals(sid, outage, fast, slow))
        clock.set(EVALUATE_AT)
        metrics.evaluate(EVALUATE_AT)
        portfolio.seconds["metrics"] = time.perf_counter() - t0
        if history_rounds:
            t0, at = time.perf_counter(), EVALUATE_AT
            for step in range(1, history_rounds + 1):
                at += HISTORY_STEP
                for sid in SERVICES:
                    metrics.record(collector, _history_batch(sid, step, at))
                clock.set(at)
                metrics.evaluate(at)
                if step % 50 == 0 or step == history_rounds:
                    print(
                        f"   history: {step:,} of {history_rounds:,} rounds, up to {at:%Y-%m-%d %H:%M} UTC, "
                        f"metrics' log head {metrics.head_position():,}, {time.perf_counter() - t0:,.0f} s",
                        flush=True,
                    )
            portfolio.seconds["history"] = time.perf_counter() - t0
        return portfolio
    except BaseException:
        agreements.close()
        if metrics is not None:
            metrics.close()
        raise


def _catch_up_timeout(events: int) -> float:
    """How long publishing or reading `events` may take: CATCH_UP_TIMEOUT, or 250 events/s."""
    return max(CATCH_UP_TIMEOUT, events / 250)


async def _publish(portfolio: Portfolio, nats_url: str) -> float:
    """Relay every log to its stream (and create the gateway's other upstream streams empty,
    so each of its consumers finds its stream); returns the seconds it took."""
    t0 = time.perf_counter()
    nc = await connect(nats_url, name="bench-relays")
    try:
        relays = [Relay(app, nc, stream=app.service.upper(), poll_seconds=0.2) for app in portfolio.apps]
        tasks = [asyncio.create_task(r.run()) for r in relays]
        try:
            deadline = time.monotonic() + _catch_up_timeout(sum(r.app.head_position() for r in relays))
            while any(r.stats.head_position < r.app.head_position() for r in relays):
                for task in tasks:
                    if task.done():
                        task.result()  # a relay that failed says why
                if time.monotonic() > deadline:
                    raise TimeoutError("the relays did not publish the portfolio in time")
                await asyncio.sleep(0.1)
        finally:
            for r in relays:
                r.stop()
            await asyncio.gather(*tasks)
        for service in ("agreements", "metrics", "billing"):
            if service not in {app.service for app in portfolio.apps}:
                await ensure_stream(nc, service.upper(), service)
    finally:
        await nc.close()
    return time.perf_counter() - t0


# -- the gateway process --------------------------------------------------------------------------------------


@dataclass
class Gateway:
    child: Child
    grpc_address: str
    http_port: int
    started: float  # perf_counter when the process was started
    serving_after: float  # seconds from the start until gRPC health said SERVING


async def _start_gateway(
    tmp: Path, nats_url: str, keys: Path, log_name: str = "gateway.log", events: int = 0
) -> Gateway:
    """The gateway as its own process; waits until it is SERVING (which it says once its read
    model holds the streams' heads: longer with more `events` to read)."""
    grpc_port, http_port = free_port(), free_port()
    env = _clean_env(
        ACCORD_VAR_DIR=str(tmp / "var"),
        ACCORD_NATS_URL=nats_url,
        ACCORD_PERSISTENCE="sqlite",
        ACCORD_AUTH_PUBLIC_KEY_FILE=str(keys / PUBLIC),
        ACCORD_SERVICE_TOKEN_FILE=str(keys / TOKEN),
        # Not running: the streams hold every event from the start, so no catch-up through ReadEvents.
        ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{free_port()}",
        ACCORD_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        ACCORD_BILLING_ADDR=f"127.0.0.1:{free_port()}",
        ACCORD_LOG_LEVEL=SERVER_LOG_LEVEL,
        ACCORD_LOG_FORMAT="json",
        GATEWAY_GRPC_PORT=str(grpc_port),
        GATEWAY_HTTP_PORT=str(http_port),
        GATEWAY_GRACE_SECONDS="2",
    )
    started = time.perf_counter()
    child = Child("gateway", [sys.executable, "-m", "accord_gateway"], env, tmp / log_name, read_stdout=False)
    address = f"127.0.0.1:{grpc_port}"
    try:
        await _wait_serving(child, address, _catch_up_timeout(events))
        serving_after = time.perf_counter() - started
        await _wait_http(child, http_port, "/healthz", b"SERVING")
    except BaseException:
        child.stop()
        raise
    return Gateway(child, address, http_port, started, serving_after)


@dataclass
class CatchUp:
    seconds: float  # from the process's start until the read model held the streams' heads
    serving_after: float  # from the process's start until gRPC health said SERVING
    behind_after_serving: int  # polls after SERVING that found the model behind (NOT_FOUND or old positions)
    events: int
    portfolio_ms: list[float]  # GetPortfolio calls once complete
    portfolio_bytes: int
    idle_cpu: float | None  # the gateway's CPU share while idle, after the catch-up


async def _wait_caught_up(
    gateway: Gateway, portfolio: Portfolio, heads: dict[str, int], md: Metadata, expected: int
) -> CatchUp:
    """Until the gateway's read model reflects both streams' heads and GetPortfolio counts
    every agreement (polled by GetAgreementStatus of the last agreement, which is cheap)."""
    last_id = portfolio.ids[-1]
    async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
        stub = gw_grpc.GatewayServiceStub(channel)
        behind = 0
        while True:
            gateway.child.check_alive()
            if time.perf_counter() - gateway.started > _catch_up_timeout(sum(heads.values())):
                raise TimeoutError(f"the gateway did not catch up within {_catch_up_timeout(sum(heads.values()))} s")
            try:
                got = await stub.GetAgreementStatus(
                    gw_pb.GetAgreementStatusRequest(agreement_id=last_id), metadata=md, timeout=CALL_TIMEOUT
                )
                positions = dict(got.positions)
                if all(positions.get(source, 0) >= head for source, head in heads.items()):
                    break
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            behind += 1
            await asyncio.sleep(PORTFOLIO_POLL_SECONDS)
        seconds = time.perf_counter() - gateway.started
        cpu0, w0 = _proc_cpu(gateway.child.pid), time.perf_counter()
        await asyncio.sleep(1.0)
        cpu1 = _proc_cpu(gateway.child.pid)
        idle = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (time.perf_counter() - w0)
        await _quiet(gateway.child.pid)  # its kept answers built: GetPortfolio timed on them, as it is served
        times: list[float] = []
        size = 0
        for _ in range(5):
            c0 = time.perf_counter()
            whole = await stub.GetPortfolio(gw_pb.GetPortfolioRequest(), metadata=md, timeout=CALL_TIMEOUT)
            times.append((time.perf_counter() - c0) * 1000)
            size = whole.ByteSize()
            count = whole.portfolio.agreements
            if count != expected:
                raise RuntimeError(f"the gateway's portfolio holds {count} agreements, not {expected}")
    return CatchUp(seconds, gateway.serving_after, behind, sum(heads.values()), times, size, idle)


async def _quiet(pid: int, share: float = 0.1, timeout: float = 15.0) -> None:
    """Until the process uses less than `share` of a CPU over a quarter of a second (at most
    `timeout` seconds)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        c0, w0 = _proc_cpu(pid), time.perf_counter()
        await asyncio.sleep(0.25)
        c1 = _proc_cpu(pid)
        if c0 is None or c1 is None or (c1 - c0) / (time.perf_counter() - w0) < share:
            return


# -- the HTTP echo (runs as `python -m bench.gateway http-echo`) -------------------------------------------------


def http_echo_app(verifier: TokenVerifier) -> FastAPI:
    """A minimal FastAPI app answering a small JSON document, declared like the gateway's
    routes (path parameter, `dict[str, Any]` result); one route also checks the bearer token
    as the gateway's routes do."""
    app = FastAPI(title="bench echo")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "SERVING"}

    @app.get(HTTP_ECHO_PATH + "{item_id}")
    async def echo(item_id: str) -> dict[str, Any]:
        return {"status": {"agreement_id": item_id, "state": "ACTIVE"}, "positions": {"agreements": 1}}

    @app.get(HTTP_ECHO_AUTH_PATH + "{item_id}")
    async def echo_auth(item_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        try:
            p = verifier.verify(authorization)
        except UnauthenticatedError as e:
            raise HTTPException(status_code=401, detail=str(e)) from None
        return {"status": {"agreement_id": item_id, "state": "ACTIVE", "role": p.role}, "positions": {"agreements": 1}}

    return app


async def _serve_http_echo(port: int, public_key: Path) -> int:
    import uvicorn

    from accord_kit.logging import configure_logging

    configure_logging(SERVER_LOG_LEVEL, "json", service="bench-http-echo")
    app = http_echo_app(TokenVerifier(public_key.read_bytes()))
    # As accord_gateway.http.http_task configures it (uvicorn keeps its own signal handling here).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    await uvicorn.Server(config).serve()
    return 0


def _http_echo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description="the gateway benchmark's HTTP echo")
    parser.add_argument("mode", choices=["http-echo"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", type=Path, required=True, help="verifies the bearer tokens")
    args = parser.parse_args(argv)
    return asyncio.run(_serve_http_echo(args.port, args.public_key))


async def _start_http_echo(tmp: Path, keys: Path) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.gateway", "http-echo", "--port", str(port), "--public-key", str(keys / PUBLIC)]
    child = Child("http-echo", argv, _clean_env(), tmp / "http-echo.log", read_stdout=False)
    try:
        await _wait_http(child, port, "/healthz", b"SERVING")
    except BaseException:
        child.stop()
        raise
    return child, port


# -- a minimal HTTP/1.1 client: one keep-alive connection, one request at a time -------------------------------


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer = reader, writer
        self.host = f"Host: 127.0.0.1:{port}\r\n".encode()

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def get(self, path: str, headers: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.host + headers + b"\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"no content-length in the answer to {path}: {head[:300]!r}")
        end = lower.index(b"\r\n", at + 2)
        body = await self.reader.readexactly(int(lower[at + 17 : end]))
        return status, body

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def _wait_http(child: Child, port: int, path: str, expect: bytes) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            conn = await HttpConnection.open(port)
            try:
                status, body = await asyncio.wait_for(conn.get(path), timeout=2.0)
            finally:
                await conn.close()
            if status == 200 and expect in body:
                return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(
        f"{child.name} did not answer {path} on port {port} within {START_TIMEOUT} s:\n{child.log_tail()}"
    )


# -- measuring ----------------------------------------------------------------------------------------------------

Call = Callable[[], Awaitable[int]]  # one query; returns the size of the answer


async def _closed_loop(key: str, meter: Meter, calls: list[Call], seconds: float) -> Phase:
    """Every client calls in a loop until `seconds` have passed; every latency is recorded."""
    sizes: list[int] = []

    async def body(call: Call, deadline: float) -> list[float]:
        out: list[float] = []
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return out
            size = await call()
            out.append(time.perf_counter() - t0)
            if not sizes:
                sizes.append(size)

    began = meter.start()
    deadline = time.perf_counter() + seconds
    per_client = await asyncio.gather(*(body(c, deadline) for c in calls))
    wall, bench_cpu, server_cpu, _ = meter.stop(began)
    return Phase(key, wall, {"query": list(per_client)}, bench_cpu, server_cpu, None, {"response_bytes": sizes[0]})


async def _grpc_phase(
    key: str, address: str, meter: Meter, cfg: Config, make: Callable[[grpc.aio.Channel, random.Random], Call]
) -> Phase:
    channels = _channels(address, cfg.clients, shared=False)
    try:
        await _ready(channels)
        calls = [make(ch, random.Random(i)) for i, ch in enumerate(channels)]
        await asyncio.gather(*(c() for c in calls))  # warm-up
        return await _closed_loop(key, meter, calls, cfg.seconds)
    finally:
        await _close(channels)


async def _http_phase(
    key: str, port: int, meter: Meter, cfg: Config, make: Callable[[HttpConnection, random.Random], Call]
) -> Phase:
    conns = [await HttpConnection.open(port) for _ in range(cfg.clients)]
    try:
        calls = [make(conn, random.Random(i)) for i, conn in enumerate(conns)]
        await asyncio.gather(*(c() for c in calls))  # warm-up
        return await _closed_loop(key, meter, calls, cfg.seconds)
    finally:
        for conn in conns:
            await conn.close()


def _gateway_grpc_call(ids: list[str], md: Metadata) -> Callable[[grpc.aio.Channel, random.Random], Call]:
    def make(channel: grpc.aio.Channel, rng: random.Random) -> Call:
        stub = gw_grpc.GatewayServiceStub(channel)

        async def call() -> int:
            aid = rng.choice(ids)
            got = await stub.GetAgreementStatus(
                gw_pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md, timeout=CALL_TIMEOUT
            )
            if got.agreement.agreement_id != aid:
                raise RuntimeError(f"GetAgreementStatus({aid}) answered another agreement")
            return int(got.ByteSize())

        return call

    return make


def _echo_grpc_call(payload: bytes, md: Metadata | None) -> Callable[[grpc.aio.Channel, random.Random], Call]:
    def make(channel: grpc.aio.Channel, rng: random.Random) -> Call:
        method = channel.unary_unary(ECHO_METHOD)  # no (de)serialisers: bytes in, bytes out

        async def call() -> int:
            got = await method(payload, metadata=md, timeout=CALL_TIMEOUT)
            if got != payload:
                raise RuntimeError("the echo returned other bytes")
            return len(got)

        return call

    return make


def _http_call(
    ids: list[str], prefix: str, authorization: str | None
) -> Callable[[HttpConnection, random.Random], Call]:
    headers = b"" if authorization is None else f"Authorization: {authorization}\r\n".encode()

    def make(conn: HttpConnection, rng: random.Random) -> Call:
        async def call() -> int:
            aid = rng.choice(ids)
            status, body = await asyncio.wait_for(conn.get(prefix + aid, headers), timeout=CALL_TIMEOUT)
            if status != 200 or aid.encode() not in body:
                raise RuntimeError(f"GET {prefix}{aid} answered {status}: {body[:300]!r}")
            return len(body)

        return call

    return make


@dataclass(frozen=True)
class Variant:
    key: str
    protocol: str  # "gRPC" or "HTTP"
    server: str  # "gateway", "echo" or "echo + auth"


VARIANTS = (
    Variant("gRPC GetAgreementStatus", "gRPC", "gateway"),
    Variant("gRPC echo", "gRPC", "echo"),
    Variant("gRPC echo + auth", "gRPC", "echo + auth"),
    Variant("HTTP GET /v1/agreements/{id}", "HTTP", "gateway"),
    Variant("HTTP echo", "HTTP", "echo"),
    Variant("HTTP echo + auth", "HTTP", "echo + auth"),
)


# -- the in-process breakdown -------------------------------------------------------------------------------------


def _read_model_of(portfolio: Portfolio) -> tuple[ReadModel, float, int]:
    """The gateway's read model rebuilt in this process from the same events, in log order
    per source; returns it, the seconds and the events applied."""
    model = ReadModel()
    events = 0
    t0 = time.perf_counter()
    for app in portfolio.apps:
        after = 0
        while True:
            envelopes, head = app.read_events(after, 5000)
            for env in envelopes:
                model.apply_upstream(app.service, env)
            events += len(envelopes)
            if not envelopes or envelopes[-1].position >= head:
                break
            after = envelopes[-1].position
    return model, time.perf_counter() - t0, events


def _time_each(work: Callable[[str], object], ids: list[str]) -> float:
    """Median µs of `work(id)` over the given ids."""
    samples: list[float] = []
    for aid in ids:
        t0 = time.perf_counter()
        work(aid)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


async def _asgi_us(app: FastAPI, paths: list[str], authorization: str | None) -> float:
    samples: list[float] = []
    for path in paths:
        t0 = time.perf_counter()
        status, _ = await asgi_get(app, path, authorization)
        samples.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"in-process GET {path} answered {status}")
    return statistics.median(samples) * 1e6


async def _breakdown(portfolio: Portfolio, keys: Path, role: str, department: str, bearer: str) -> dict[str, Any]:
    """Where one query's server time goes, timed in this process on the same read model."""
    model, rebuild_seconds, events = _read_model_of(portfolio)
    t0 = time.perf_counter()
    model.warm()  # as the gateway does once it serves
    warm_seconds = time.perf_counter() - t0
    rng = random.Random(7)
    sample = [rng.choice(portfolio.ids) for _ in range(IN_PROCESS_SAMPLES)]
    verifier = TokenVerifier((keys / PUBLIC).read_bytes())
    positions = model.positions()

    kept_positions = KeptPositions(model)

    def rebuilt(aid: str) -> bytes:
        model._answers.pop(aid, None)  # dropped, as an event touching the agreement drops it
        return agreement_answer(model, aid, role, department, kept_positions)

    def kept(aid: str) -> bytes:
        return agreement_answer(model, aid, role, department, kept_positions)

    def struct(aid: str) -> bytes:
        return agreement_response(model, aid, role, department, include_struct=True).SerializeToString()

    def portfolio_after_one(aid: str) -> bytes:
        """GetPortfolio's view after an event touched one agreement (its kept parts dropped)."""
        model._answers.pop(aid, None)
        return portfolio_bytes(model, role, department)

    def portfolio_typed(aid: str) -> bytes:
        """The same view parsed whole into the typed message, as the gateway built it before."""
        model._answers.pop(aid, None)
        return view_response("portfolio", portfolio_view(model, role, department), positions, False).SerializeToString()

    def portfolio_json_after_one(aid: str) -> bytes:
        """GET /v1/portfolio's JSON after an event touched one agreement."""
        model._answers.pop(aid, None)
        return portfolio_json(model, role, department, positions)[0]

    def portfolio_validated(aid: str) -> bytes:
        """The same JSON written whole through its schema, as the gateway wrote it before."""
        model._answers.pop(aid, None)
        doc = {"status": portfolio_view(model, role, department), "positions": positions}
        return schemas.PortfolioAnswer.model_validate(doc).model_dump_json(by_alias=True).encode()

    answer = model.answer(sample[0])
    assert answer is not None
    few = sample[:PORTFOLIO_SAMPLES]
    out: dict[str, Any] = {
        "portfolio_joined_ms": _time_each(portfolio_after_one, few) / 1000,
        "portfolio_typed_ms": _time_each(portfolio_typed, few) / 1000,
        "portfolio_json_joined_ms": _time_each(portfolio_json_after_one, few) / 1000,
        "portfolio_json_validated_ms": _time_each(portfolio_validated, few) / 1000,
        "portfolio_json_bytes": len(portfolio_json(model, role, department, positions)[0]),
        "rebuild_seconds": rebuild_seconds,
        "rebuild_events": events,
        "warm_seconds": warm_seconds,
        "rebuilt_answer_us": _time_each(rebuilt, sample),
        "kept_answer_us": _time_each(kept, sample),
        "struct_response_us": _time_each(struct, sample),
        "verify_us": _time_each(lambda a: verifier.verify(bearer), sample),
        "doc_json_bytes": len(model.json(answer)) + len(json.dumps(positions)) + 25,
        "grpc_response_bytes": len(kept(sample[0])),
        "struct_response_bytes": len(struct(sample[0])),
    }
    path = Path(tempfile.mkdtemp(prefix="accord-bench-snapshot-")) / "gateway-snapshot.json"
    t0 = time.perf_counter()
    write_snapshot(model, path)
    out["snapshot_write_seconds"] = time.perf_counter() - t0
    out["snapshot_bytes"] = path.stat().st_size
    t0 = time.perf_counter()
    if not load_snapshot(ReadModel(), path):
        raise RuntimeError("the snapshot just written did not load")
    out["snapshot_load_seconds"] = time.perf_counter() - t0
    path.unlink()
    path.parent.rmdir()
    gateway_app = create_app(lambda: True, model=model, verifier=verifier)
    echo_app = http_echo_app(verifier)
    await asgi_get(gateway_app, "/v1/agreements/" + sample[0], bearer)  # builds the middleware stack
    await asgi_get(echo_app, HTTP_ECHO_PATH + sample[0], None)
    out["asgi_gateway_us"] = await _asgi_us(gateway_app, ["/v1/agreements/" + a for a in sample], bearer)
    out["asgi_echo_us"] = await _asgi_us(echo_app, [HTTP_ECHO_PATH + a for a in sample], None)
    out["asgi_echo_auth_us"] = await _asgi_us(echo_app, [HTTP_ECHO_AUTH_PATH + a for a in sample], bearer)
    return out


# -- the run --------------------------------------------------------------------------------------------------


def _median_phase(phases: list[Phase]) -> Phase:
    return sorted(phases, key=lambda p: p.calls / p.seconds)[len(phases) // 2]


def _rate(ph: Phase) -> float:
    return ph.calls / ph.seconds


def _server_us(ph: Phase) -> float | None:
    return None if ph.server_cpu is None else ph.server_cpu / ph.calls * 1e6


async def _run(cfg: Config) -> dict[str, Any]:
    load_before = _loadavg()
    phases: dict[str, list[Phase]] = {v.key: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="accord-bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        write_keys(keys)
        tokens = Tokens(keys)
        department = IT if cfg.role == "department" else ""
        md = tokens.md(cfg.role, department)
        bearer = md[0][1]
        echo_md = tokens.md("department", IT)  # the echo + auth's policy lets role department call it
        (tmp / "var").mkdir()

        t0 = time.perf_counter()
        portfolio = await asyncio.to_thread(_build_portfolio, tmp, cfg.agreements, cfg.with_metrics, cfg.history_rounds)
        setup = dict(portfolio.seconds)
        heads = {app.service: app.head_position() for app in portfolio.apps}
        print(
            f"   portfolio: {cfg.agreements:,} agreements in {time.perf_counter() - t0:.1f} s; log heads "
            + ", ".join(f"{k} {v:,}" for k, v in heads.items()),
            flush=True,
        )
        with supervised(tmp / "nats") as (nats, children):
            setup["relays"] = await _publish(portfolio, nats.url)
            t0 = time.perf_counter()
            gateway = await _start_gateway(tmp, nats.url, keys, events=sum(heads.values()))
            children.append(gateway.child)
            catch_up = await _wait_caught_up(gateway, portfolio, heads, md, cfg.agreements)
            setup["gateway_start"] = time.perf_counter() - t0
            print(
                f"   gateway SERVING {catch_up.serving_after:.1f} s after its start, read model complete after "
                f"{catch_up.seconds:.1f} s ({catch_up.events:,} events); GetPortfolio "
                f"{catch_up.portfolio_ms[0]:.0f} ms (then kept: {statistics.median(catch_up.portfolio_ms[1:]):.1f} ms)",
                flush=True,
            )
            # Restart: SIGTERM (the last snapshot is written at stop), then the same var dir again.
            gateway.child.stop()
            children.remove(gateway.child)
            snapshot = tmp / "var" / "gateway-snapshot.json"
            setup["snapshot_bytes"] = snapshot.stat().st_size if snapshot.exists() else 0
            gateway = await _start_gateway(tmp, nats.url, keys, "gateway-restarted.log", sum(heads.values()))
            children.append(gateway.child)
            restart = await _wait_caught_up(gateway, portfolio, heads, md, cfg.agreements)
            print(
                f"   gateway restarted from its snapshot: SERVING after {restart.serving_after:.1f} s, the streams' "
                f"heads after {restart.seconds:.1f} s (from scratch: {catch_up.seconds:.1f} s)",
                flush=True,
            )
            echo, echo_address = await _start_echo(tmp, keys, auth=False)
            children.append(echo)
            echo_auth, echo_auth_address = await _start_echo(tmp, keys, auth=True)
            children.append(echo_auth)
            http_echo, http_echo_port = await _start_http_echo(tmp, keys)
            children.append(http_echo)

            payload = gw_pb.GetAgreementStatusRequest(agreement_id=portfolio.ids[0]).SerializeToString()
            ids = portfolio.ids
            for r in range(cfg.rounds):
                line = []
                for v in VARIANTS:
                    if v.protocol == "gRPC":
                        if v.server == "gateway":
                            child, address, make = gateway.child, gateway.grpc_address, _gateway_grpc_call(ids, md)
                        elif v.server == "echo":
                            child, address, make = echo, echo_address, _echo_grpc_call(payload, None)
                        else:
                            child, address, make = echo_auth, echo_auth_address, _echo_grpc_call(payload, echo_md)
                        ph = await _grpc_phase(v.key, address, Meter(child.pid, None), cfg, make)
                    else:
                        if v.server == "gateway":
                            child, port, hmake = (
                                gateway.child,
                                gateway.http_port,
                                _http_call(ids, "/v1/agreements/", bearer),
                            )
                        elif v.server == "echo":
                            child, port, hmake = http_echo, http_echo_port, _http_call(ids, HTTP_ECHO_PATH, None)
                        else:
                            child, port, hmake = http_echo, http_echo_port, _http_call(ids, HTTP_ECHO_AUTH_PATH, bearer)
                        ph = await _http_phase(v.key, port, Meter(child.pid, None), cfg, hmake)
                    phases[v.key].append(ph)
                    line.append(f"{v.key} {_rate(ph):,.0f}/s")
                print(f"   round {r + 1}/{cfg.rounds}: " + ", ".join(line), flush=True)
        logs = {c.name: _log_summary(c.log_file) for c in children}
        try:
            breakdown = await _breakdown(portfolio, keys, cfg.role, department, bearer)
        finally:
            portfolio.close()
    return _report(cfg, phases, catch_up, restart, setup, heads, breakdown, logs, load_before)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _cpu(ph: Phase) -> str:
    server = "" if ph.server_cpu is None else f", server {ph.server_cpu / ph.seconds:.0%}"
    return f"CPU clients {ph.bench_cpu / ph.seconds:.0%}{server}"


def _query_figures(ph: Phase, rounds: list[Phase], unit: str) -> list[dict[str, Any]]:
    v = ph.flat("query")
    server = _server_us(ph)
    per = "" if server is None else f"server {server:.0f} µs CPU/{unit}, "
    return [
        {
            "name": ph.key,
            "value": _rate(ph),
            "unit": "queries/s" if unit == "query" else "calls/s",
            "detail": f"median of {len(rounds)} rounds ({', '.join(f'{_rate(p):,.0f}' for p in rounds)}/s), "
            f"{ph.calls:,} {'queries' if unit == 'query' else 'calls'} in {ph.seconds:.2f} s; {_cpu(ph)}; {per}clients "
            f"{ph.bench_cpu / ph.calls * 1e6:.0f} µs CPU/{unit}; {ph.extra['response_bytes']:,} bytes answered",
        },
        {
            "name": f"{ph.key} p50",
            "value": _pct(v, 0.5) * 1000,
            "unit": "ms",
            "detail": f"mean {_ms(statistics.fmean(v))} ms, max {_ms(max(v))} ms",
        },
        {"name": f"{ph.key} p99", "value": _pct(v, 0.99) * 1000, "unit": "ms", "detail": ""},
    ]


def _report(
    cfg: Config,
    phases: dict[str, list[Phase]],
    catch_up: CatchUp,
    restart: CatchUp,
    setup: dict[str, float],
    heads: dict[str, int],
    bd: dict[str, Any],
    logs: dict[str, dict[str, int]],
    load_before: str,
) -> dict[str, Any]:
    setup = dict(setup)
    snapshot_bytes = int(setup.pop("snapshot_bytes", 0))
    med = {k: _median_phase(v) for k, v in phases.items()}
    g_grpc, e_grpc, a_grpc = (med[v.key] for v in VARIANTS[:3])
    g_http, e_http, a_http = (med[v.key] for v in VARIANTS[3:])
    figures: list[dict[str, Any]] = []
    for v in VARIANTS:
        figures += _query_figures(med[v.key], phases[v.key], "query" if v.server == "gateway" else "call")

    def ratio(name: str, a: Phase, b: Phase, detail: str) -> dict[str, Any]:
        return {"name": name, "value": _rate(a) / _rate(b), "unit": "×", "detail": detail}

    figures += [
        ratio("ratio gRPC/echo", g_grpc, e_grpc, "GetAgreementStatus queries/s ÷ bare gRPC echo calls/s"),
        ratio("ratio gRPC/echo+auth", g_grpc, a_grpc, "÷ the echo behind the services' build_server and interceptor"),
        ratio("ratio HTTP/echo", g_http, e_http, "GET /v1/agreements/{id} queries/s ÷ FastAPI echo calls/s"),
        ratio("ratio HTTP/echo+auth", g_http, a_http, "÷ the FastAPI echo that checks the bearer token"),
        ratio("ratio HTTP/gRPC", g_http, g_grpc, "the gateway's HTTP queries/s ÷ its gRPC queries/s"),
    ]
    for proto, g, e, a in (("gRPC", g_grpc, e_grpc, a_grpc), ("HTTP", g_http, e_http, a_http)):
        gs, es, as_ = _server_us(g), _server_us(e), _server_us(a)
        if gs is not None and es is not None and as_ is not None:
            figures.append(
                {
                    "name": f"server CPU/query {proto}",
                    "value": gs,
                    "unit": "µs",
                    "detail": f"the gateway's CPU ÷ queries (median round); echo {es:.0f} µs, echo + auth {as_:.0f} µs "
                    f"per call: the gateway's own work ≈ {gs - as_:.0f} µs beyond the authenticated echo",
                }
            )
    rebuild_rate = catch_up.events / catch_up.seconds if catch_up.seconds > 0 else 0.0
    figures += [
        {
            "name": "read model catch-up",
            "value": catch_up.seconds,
            "unit": "s",
            "detail": f"from starting the process until its read model held the streams' heads ({catch_up.events:,} "
            f"events; ≥ {rebuild_rate:,.0f} events/s; polled every {PORTFOLIO_POLL_SECONDS} s); gRPC SERVING after "
            f"{catch_up.serving_after:.2f} s, {catch_up.behind_after_serving} polls after SERVING found the model "
            f"behind (NOT_FOUND for the last agreement, or positions short of the heads); in this process, the "
            f"same model rebuilt in {bd['rebuild_seconds']:.2f} s",
        },
        {
            "name": "GetPortfolio",
            "value": catch_up.portfolio_ms[0],
            "unit": "ms",
            "detail": f"the first call, building the answer, once the gateway was quiet (its kept answers built), "
            f"{cfg.agreements:,} agreements, "
            f"{catch_up.portfolio_bytes:,} bytes; the calls after it, the answer kept while the positions stand "
            f"still: {', '.join(f'{x:.2f}' for x in catch_up.portfolio_ms[1:])} ms",
        },
        {
            "name": "gateway restart from its snapshot",
            "value": restart.seconds,
            "unit": "s",
            "detail": f"SIGTERM (the snapshot written at stop, {snapshot_bytes:,} bytes), then started "
            f"again on the same var dir until its read model held the streams' heads; gRPC SERVING after "
            f"{restart.serving_after:.2f} s; from scratch {catch_up.seconds:.2f} s",
        },
        {
            "name": "in-process snapshot at 1M events",
            "value": bd["snapshot_load_seconds"] / max(bd["rebuild_events"], 1) * 1_000_000,
            "unit": "s",
            "detail": f"loading this run's snapshot ({bd['snapshot_bytes']:,} bytes, {bd['rebuild_events']:,} events) "
            f"took {bd['snapshot_load_seconds']:.3f} s, writing it {bd['snapshot_write_seconds']:.3f} s; scaled "
            f"linearly to 1,000,000 events (the rebuild from every event: "
            f"{bd['rebuild_seconds'] / max(bd['rebuild_events'], 1) * 1_000_000:.0f} s at that scale)",
        },
        {
            "name": "in-process kept answer",
            "value": bd["kept_answer_us"],
            "unit": "µs",
            "detail": f"median; server.agreement_answer: lookup, visibility, the kept positions' and "
            f"AgreementStatus bytes joined into the serialised response ({bd['grpc_response_bytes']:,} bytes)",
        },
        {
            "name": "in-process portfolio after an event",
            "value": bd["portfolio_joined_ms"],
            "unit": "ms",
            "detail": f"median; server.portfolio_bytes after one agreement's kept answer was dropped (as an event "
            f"touching it drops it): the view joined from each agreement's kept brief and worst objectives, "
            f"{cfg.agreements:,} agreements; the same view parsed whole into the typed message (the code before): "
            f"{bd['portfolio_typed_ms']:.1f} ms; over HTTP (http.portfolio_json, {bd['portfolio_json_bytes']:,} "
            f"bytes of JSON) {bd['portfolio_json_joined_ms']:.1f} ms joined, {bd['portfolio_json_validated_ms']:.1f} "
            "ms written whole through its schema (the code before)",
        },
        {
            "name": "in-process rebuilt answer",
            "value": bd["rebuilt_answer_us"],
            "unit": "µs",
            "detail": "median; the same after an event dropped the agreement's kept answer (deepcopy, summary, "
            "typed message): what a query arriving before the background rebuild costs; every agreement's answer "
            f"(typed and JSON) built in {bd['warm_seconds']:.2f} s (ReadModel.warm)",
        },
        {
            "name": "in-process Struct response",
            "value": bd["struct_response_us"],
            "unit": "µs",
            "detail": f"median; the kept answer plus the deprecated Struct (include_struct), "
            f"{bd['struct_response_bytes']:,} bytes",
        },
        {
            "name": "in-process HTTP app",
            "value": bd["asgi_gateway_us"],
            "unit": "µs",
            "detail": f"GET /v1/agreements/{{id}} through the gateway's FastAPI app without a socket (token check, "
            f"the kept JSON of the status, the positions); the echo's route {bd['asgi_echo_us']:.0f} µs, with the "
            f"token check {bd['asgi_echo_auth_us']:.0f} µs ({bd['doc_json_bytes']:,} bytes answered)",
        },
        {
            "name": "in-process token check",
            "value": bd["verify_us"],
            "unit": "µs",
            "detail": "TokenVerifier.verify of the bearer token (Ed25519), done on every query over both protocols",
        },
    ]

    notes: list[str] = []
    n_cpu = _usable_cpus()
    notes.append(
        f"processes: the {cfg.clients} clients share one asyncio loop in this process; the gateway, the gRPC echo, "
        f"the gRPC echo + auth and the HTTP echo each run in a process of their own, as does nats-server; all share "
        f"{n_cpu} CPUs. The clients' CPU is in each figure's detail: with {n_cpu} CPUs, clients and server compete."
    )
    gs, hs = _server_us(g_grpc), _server_us(g_http)
    if gs is not None and hs is not None:
        notes.append(
            f"server CPU per query: gRPC {gs:.0f} µs, HTTP {hs:.0f} µs. In-process, one query's parts: "
            f"the kept answer {bd['kept_answer_us']:.0f} µs (rebuilt after a change {bd['rebuilt_answer_us']:.0f} µs), "
            f"with the deprecated Struct {bd['struct_response_us']:.0f} µs, token check {bd['verify_us']:.0f} µs; the "
            f"HTTP app without a socket "
            f"{bd['asgi_gateway_us']:.0f} µs vs the echo's {bd['asgi_echo_us']:.0f} µs. A server near 100% of one CPU "
            f"is limited by its Python work, serialised by the GIL."
        )
    if catch_up.idle_cpu is not None:
        notes.append(
            f"the gateway in the second after its catch-up: {catch_up.idle_cpu:.1%} of a CPU (consumers polling, and "
            "the background task building every agreement's kept answer once it serves)."
        )
    notes.append(
        "set-up: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items())
        + "; log heads "
        + ", ".join(f"{k} {v:,}" for k, v in heads.items())
        + ("" if cfg.with_metrics else " (no metrics windows: --gateway-skip-metrics)")
        + "."
    )
    for name, counts in logs.items():
        if counts:
            listed = ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            notes.append(f"{name} logged at warning or above: {listed}.")
    notes.append(f"load average before {load_before}, after {_loadavg()} (figures are comparable within one run).")

    def phase_json(ph: Phase) -> dict[str, Any]:
        v = ph.flat("query")
        return {
            "seconds": round(ph.seconds, 4),
            "calls": ph.calls,
            "per_second": round(_rate(ph), 1),
            "p50_ms": round(_pct(v, 0.5) * 1000, 3),
            "p99_ms": round(_pct(v, 0.99) * 1000, 3),
            "bench_cpu_seconds": round(ph.bench_cpu, 3),
            "server_cpu_seconds": ph.server_cpu,
            **ph.extra,
        }

    return {
        "figures": figures,
        "notes": notes,
        "params": {
            "agreements": cfg.agreements,
            "clients": cfg.clients,
            "seconds_per_phase": cfg.seconds,
            "rounds": cfg.rounds,
            "role": cfg.role,
            "metrics_windows": cfg.with_metrics,
            "history_rounds": cfg.history_rounds,
            "services": list(SERVICES),
            "log_heads": heads,
            "server_log_level": SERVER_LOG_LEVEL,
            "usable_cpus": n_cpu,
            "load_average_before": load_before,
        },
        "samples": {
            "rounds": {k: [phase_json(p) for p in v] for k, v in phases.items()},
            "catch_up": {
                "seconds": round(catch_up.seconds, 3),
                "serving_after_seconds": round(catch_up.serving_after, 3),
                "polls_behind_after_serving": catch_up.behind_after_serving,
                "events": catch_up.events,
                "get_portfolio_ms": [round(x, 2) for x in catch_up.portfolio_ms],
                "get_portfolio_bytes": catch_up.portfolio_bytes,
                "idle_cpu": catch_up.idle_cpu,
            },
            "restart": {
                "seconds": round(restart.seconds, 3),
                "serving_after_seconds": round(restart.serving_after, 3),
                "events": restart.events,
            },
            "setup_seconds": {k: round(v, 3) for k, v in setup.items()},
            "in_process": {k: round(v, 3) if isinstance(v, float) else v for k, v in bd.items()},
            "server_logs": logs,
        },
    }


if __name__ == "__main__":
    sys.exit(_http_echo_main(sys.argv[1:]))
