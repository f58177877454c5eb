"""Metrics: durable signal ingestion over gRPC beside raw SQLite inserts of the same bytes,
and the evaluation of a month of signals, in the same run.

Set-up (not timed): N signals (default 1,000,000), half contact-centre calls (queue, answer
or abandon times, talk seconds), half outages (start, end), spread over January 2026, in
messages of B signals (default 1,000), serialised once; a nats-server with JetStream; the
agreements service and the metrics service as OS processes of their own (`python -m
accord_agreements`, `python -m accord_metrics`: SQLite in WAL mode with synchronous=FULL in
a temp dir, keys from `accord_kit.keys`, production log level, relays on); departments and
service `email` registered in agreements as admin, and the metrics service's AGREEMENTS
consumer given time to learn the service's provider.

Timed:
* ingest: one client (or `--metrics-clients` K at once, each its share over a channel of its
  own) streams every message over one `MetricsService/RecordSignals` call as the provider
  department; the figure is signals/s from the call's start to its response
  (each message is stored durably, as one event, in the stream's order). Every stored
  signal is read back afterwards (`EventLogService/ReadEvents`, and the store file).
* ceiling: the same serialised batches inserted into a fresh SQLite file in WAL mode with
  synchronous=FULL, one row and one transaction per batch; and again with the rows exactly
  as the service stored them (eventsourcing's `stored_events` table).
* evaluation, in this process: a `Metrics` application on SQLite that learned the sample
  SLA (availability, time-based, and service level, monthly, Europe/Amsterdam) from an
  `Agreements` application's events, N signals recorded by direct `record` calls (B per
  call, as a service identity), then `evaluate(now)` late in January: the first (which
  converts every signal to the formulas' inputs) and a second after B more signals.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import resource
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.errors import NotFoundError as StreamNotFoundError

from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import events_pb2 as metric_events
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import signals_pb2 as spb
from accord_kit.keys import TOKEN, write_keys
from accord_kit.nats_util import connect
from accord_metrics.application import BATCH_TOPIC  # eventsourcing's topic of the stored batches
from bench.agreements import (
    SERVER_LOG_LEVEL,
    START_TIMEOUT,
    Child,
    Tokens,
    _fsync_ms,
    _loadavg,
    _log_summary,
    _proc_cpu,
    _register_reference,
    _start_agreements,
    _start_service,
    _usable_cpus,
    supervised,
)

NAME = "metrics"
SUMMARY = (
    "signals streamed over RecordSignals into SQLite (own process) beside raw SQLite inserts of the "
    "same bytes; evaluation of a month of signals"
)

SERVICE_ID = "email"  # the sample terms' service (accord_agreements.samples.EMAIL)
PROVIDER = "it-operations"
STREAM = "METRICS"
RECORD_METHOD = "/accord.metrics.v1.MetricsService/RecordSignals"
SIGNALS_RECORDED = "accord.metrics.v1.SignalsRecorded"
TARGET = 50_000.0  # the Metrics issue's target, signals/s, durable, on a 2-core machine
SCALE_TARGET = 100_000.0  # the later scale goal: signals/s sustained, also while rounds run
MONTH_START = datetime(2026, 1, 1, tzinfo=UTC)  # the sample agreement's effective-from
MONTH_SPAN = timedelta(days=30, hours=22)  # signals until 2026-01-31T22:00Z (23:00 in Amsterdam)
EVALUATE_AT = datetime(2026, 1, 31, 22, 30, tzinfo=UTC)  # January (Amsterdam) still open
LATE_SPAN = timedelta(minutes=25)  # the extra batch's signals: 22:00–22:25Z
CALL_TIMEOUT = 900.0  # seconds the whole stream may take before the run is abandoned
RELAY_TIMEOUT = 120.0  # seconds the relay may take after the stream to publish everything
READ_BYTES = 8 * 1024 * 1024  # aim of each ReadEvents answer (the service sends at most 16 MiB)
EDGE = 0.1  # "first" and "last": this share of the ingest's wall time
LIVE_SPAN = timedelta(hours=20)  # --metrics-live: the signals' span, ending 5 minutes before the run
CEILING_ROUNDS = 3  # rounds of each ceiling variant (interleaved); the median is reported


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from accord_metrics.server import MAX_SIGNALS_PER_MESSAGE

    group = parser.add_argument_group("metrics benchmark")
    group.add_argument(
        "--metrics-signals",
        "--signals",
        dest="metrics_signals",
        type=int,
        default=1_000_000,
        help="signals streamed, and recorded for the evaluation (half calls, half outages; default 1,000,000)",
    )
    group.add_argument(
        "--metrics-batch",
        type=int,
        default=1000,
        help=f"signals per stream message and per record call (default 1,000; at most {MAX_SIGNALS_PER_MESSAGE:,})",
    )
    group.add_argument(
        "--metrics-recorder",
        choices=("process", "in-process"),
        default="process",
        help="METRICS_RECORDER of the service: its recording process (the default) or recording in its own process",
    )
    group.add_argument(
        "--metrics-clients",
        type=int,
        default=1,
        help="concurrent clients, each streaming its share of the messages over a RecordSignals call of its own "
        "on a channel of its own (default 1)",
    )
    group.add_argument(
        "--metrics-live",
        action="store_true",
        help="the signals fall in the last 20 hours (the month under way) and the sample SLA is agreed first, so "
        "the service judges its open windows every 5 s while they stream in (ingestion during evaluation rounds)",
    )
    group.add_argument(
        "--metrics-skip-evaluation", action="store_true", help="only the ingestion and its ceiling (saves ~2 min)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from accord_metrics.server import MAX_SIGNALS_PER_MESSAGE

    n: int = args.metrics_signals
    batch: int = args.metrics_batch
    if n < 2:
        raise ValueError("--metrics-signals must be at least 2")
    if not 1 <= batch <= MAX_SIGNALS_PER_MESSAGE:
        raise ValueError(f"--metrics-batch must be between 1 and {MAX_SIGNALS_PER_MESSAGE}")
    load_before = _loadavg()
    t0 = time.perf_counter()
    live: bool = args.metrics_live
    live_start = datetime.now(UTC).replace(microsecond=0) - LIVE_SPAN - timedelta(minutes=5)
    batches = _generate(n, batch, live_start, LIVE_SPAN) if live else _generate(n, batch)
    generate_s = time.perf_counter() - t0
    sizes = [len(b) for b in batches]
    print(
        f"   {n:,} signals in {len(batches):,} messages of {batch:,} generated in {generate_s:.1f} s "
        f"({statistics.fmean(sizes) / 1024:.1f} KiB a message)",
        flush=True,
    )
    clients: int = args.metrics_clients
    if not 1 <= clients <= len(batches):
        raise ValueError(f"--metrics-clients must be between 1 and the number of messages ({len(batches)})")
    ingest = asyncio.run(_ingest_run(batches, n, clients, live, args.metrics_recorder))
    # The evaluation's figures are of a month of signals (January's): a live run's signals, of the
    # last 20 hours, are not where its rounds look (a live run judged as the signals arrived).
    monthly = _generate(n, batch) if live and not args.metrics_skip_evaluation else batches
    evaluation = None if args.metrics_skip_evaluation else _evaluation_run(monthly, n, batch)
    return _report(
        ingest, evaluation, n=n, batch=batch, sizes=sizes, generate_s=generate_s, load_before=load_before,
        clients=clients, live=live,
    )  # fmt: skip


# -- the signals ------------------------------------------------------------------------------------------


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def call_id(i: int, random_ids: bool = False) -> str:
    """Signal `i`'s id as a call: `call-00000042`, or (`random_ids`) a UUID drawn from `i` alone —
    the same for the same `i` in every run, with no order among them, as a telephony system's."""
    if random_ids:
        return str(uuid.UUID(bytes=hashlib.blake2b(b"call-%d" % i, digest_size=16).digest()))
    return f"call-{i:08d}"


def _signals(
    first: int, count: int, start: datetime, span: timedelta, total: int, rnd: random.Random, origin: int = 0,
    random_ids: bool = False,
) -> bytes:  # fmt: skip
    """Signals `first` … `first + count − 1`, the `total` from `origin` on spread evenly over [start, start + span):
    even ones calls, odd ones outages; serialised as a SignalBatch (whose wire format is
    RecordSignalsRequest's: both are `repeated Signal signals = 1`). A call's id: `call_id`."""
    base, width = int(start.timestamp()), int(span.total_seconds())
    out: list[spb.Signal] = []
    for i in range(first, first + count):
        t = base + ((i - origin) * width) // total
        if i % 2 == 0:
            wait = 1 + int(rnd.expovariate(1 / 12))  # seconds in the queue: ~80 % within the sample's 20 s
            if rnd.random() < 0.06:
                call = spb.Call(entered_queue=_ts(t), abandoned_at=_ts(t + wait), customer_id=f"cust{i % 5000}")
            else:
                call = spb.Call(
                    entered_queue=_ts(t),
                    answered_at=_ts(t + wait),
                    talk_seconds=str(rnd.randint(30, 900)),
                    customer_id=f"cust{i % 5000}",
                )
            out.append(spb.Signal(signal_id=call_id(i, random_ids), service_id=SERVICE_ID, call=call))
        else:
            outage = spb.Outage(start=_ts(t), end=_ts(t + rnd.randint(1, 9)))  # blips a probe sees
            out.append(spb.Signal(signal_id=f"outage-{i:08d}", service_id=SERVICE_ID, outage=outage))
    return spb.SignalBatch(signals=out).SerializeToString()


def _generate(n: int, batch: int, start: datetime = MONTH_START, span: timedelta = MONTH_SPAN) -> list[bytes]:
    rnd = random.Random(20260101)
    return [_signals(i, min(batch, n - i), start, span, n, rnd) for i in range(0, n, batch)]


# -- ingestion over gRPC ---------------------------------------------------------------------------------


@dataclass
class Ingest:
    seconds: float
    response: mpb.RecordSignalsResponse
    bench_cpu: float
    cpu: dict[str, float | None]  # process name → CPU seconds during the stream
    samples: list[tuple[float, int]]  # (seconds since start, signal events stored), sampled from the store file
    stored_events: int  # SignalsRecorded events read back over ReadEvents
    stored_signals: int  # signals in them
    distinct_ids: int
    store_events: int  # SignalsRecorded rows counted in the store file
    store_signals: int  # sum of their counts
    head_position: int
    relay_lag: int  # events not yet on the METRICS stream when the response arrived
    relay_catch_up: float
    rss_mb: dict[str, float]
    logs: dict[str, dict[str, int]]
    fsync_ms: float
    ceilings: dict[str, tuple[float, int]] = field(default_factory=dict)  # name → (seconds, bytes), median round
    ceiling_rounds: dict[str, list[float]] = field(default_factory=dict)  # name → every round's seconds


async def _agree_sample(stub: apb_grpc.AgreementsServiceStub, tokens: Tokens) -> None:
    """The sample SLA on the service drafted and proposed by its provider, accepted by finance."""
    from accord.agreements.v1 import agreements_pb2 as apb
    from accord_agreements.samples import FINANCE, sla_terms
    from bench.agreements import _terms_pb

    provider, customer = tokens.md("department", PROVIDER), tokens.md("department", FINANCE)
    draft = await stub.DraftAgreement(apb.DraftAgreementRequest(terms=_terms_pb(sla_terms())), metadata=provider)
    aid = draft.agreement.agreement_id
    await stub.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=provider)
    await stub.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=customer)


def _recording_process(pid: int) -> int | None:
    """The metrics service's recording process (a child of its process), when it runs one."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                children += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        for child in children:
            try:
                if b"accord_metrics.recorder" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return child
            except OSError:
                continue
        if b"METRICS_RECORDER=in-process" in Path(f"/proc/{pid}/environ").read_bytes():
            return None
        time.sleep(0.1)
    return None


def _rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, MiB (Linux only)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


async def _start_metrics(
    tmp: Path, nats_url: str, keys: Path, agreements_address: str, recorder: str = "process"
) -> tuple[Child, str]:
    return await _start_service(
        "metrics", tmp, nats_url, keys, ACCORD_AGREEMENTS_ADDR=agreements_address, METRICS_RECORDER=recorder
    )


async def _read_all(
    stub: events_pb2_grpc.EventLogServiceStub, token: str, limit: int
) -> AsyncIterator[events_pb2.EventEnvelope]:
    md = (("authorization", f"Bearer {token}"),)
    after = 0
    while True:
        resp = await stub.ReadEvents(events_pb2.ReadEventsRequest(after_position=after, limit=limit), metadata=md)
        if not resp.events:
            return
        for env in resp.events:
            yield env
        after = resp.events[-1].position


async def _wait_known(
    stub: events_pb2_grpc.EventLogServiceStub, token: str, child: Child, judging: bool = False
) -> None:
    """Until the metrics service has stored ServiceKnown for the service (its AGREEMENTS consumer);
    `judging`: and a window of the month under way opened (its rounds judge the agreement), then
    one more round's interval, so the catching-up of the months before is over."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        child.check_alive()
        known = opened = False
        async for env in _read_all(stub, token, 500):
            if env.type == "accord.metrics.v1.ServiceKnown":
                msg = metric_events.ServiceKnown()
                env.payload.Unpack(msg)
                known = known or (msg.service_id == SERVICE_ID and msg.provider_department_id == PROVIDER)
            elif env.type == "accord.metrics.v1.WindowOpened":
                window = metric_events.WindowOpened()
                env.payload.Unpack(window)
                opened = opened or datetime.fromisoformat(window.window_end) > datetime.now(UTC)
        if known and (opened or not judging):
            if judging:
                await asyncio.sleep(6)
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"metrics did not learn service {SERVICE_ID!r} within {START_TIMEOUT} s:\n{child.log_tail()}")


def _store_head(path: Path) -> int:
    """Signal batches stored so far, read from the store file (WAL: a reader never blocks the writer)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        row = conn.execute("SELECT COUNT(*) FROM stored_events WHERE topic = ?", (BATCH_TOPIC,)).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return -1
    finally:
        conn.close()


def _store_rows(path: Path) -> list[tuple[str, int, str, bytes]]:
    """The signal batch rows as the service stored them, in order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [
            (str(r[0]), int(r[1]), str(r[2]), bytes(r[3]))
            for r in conn.execute(
                "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE topic = ? "
                "ORDER BY rowid",
                (BATCH_TOPIC,),
            )
        ]
    finally:
        conn.close()


async def _stream_messages(nats_url: str) -> int:
    nc = await connect(nats_url, name="bench-check")
    try:
        return int((await nc.jetstream().stream_info(STREAM)).state.messages)
    except StreamNotFoundError:
        return 0
    finally:
        await nc.close()


async def _ingest_run(
    batches: list[bytes], n: int, clients: int = 1, live: bool = False, recorder: str = "process"
) -> Ingest:
    with tempfile.TemporaryDirectory(prefix="accord-bench-metrics-") as tmp_name:
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        write_keys(keys)
        tokens = Tokens(keys)
        service_token = (keys / TOKEN).read_text().strip()
        (tmp / "var").mkdir()
        fsync_ms = _fsync_ms(tmp / "var")
        store = tmp / "var" / "metrics.sqlite"
        with supervised(tmp / "nats") as (nats, children):
            nats_pid = nats.proc.pid if nats.proc is not None else None
            agreements, a_address = await _start_agreements(tmp, nats.url, keys)
            children.append(agreements)
            async with grpc.aio.insecure_channel(a_address) as channel:
                await _register_reference(apb_grpc.AgreementsServiceStub(channel), tokens)
                if live:
                    await _agree_sample(apb_grpc.AgreementsServiceStub(channel), tokens)
            metrics, m_address = await _start_metrics(tmp, nats.url, keys, a_address, recorder)
            children.append(metrics)
            options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            async with grpc.aio.insecure_channel(m_address, options=options) as channel:
                log_stub = events_pb2_grpc.EventLogServiceStub(channel)
                await _wait_known(log_stub, service_token, metrics, judging=live)
                print(f"   servers up: agreements {a_address}, metrics {m_address}; metrics knows {SERVICE_ID}")
                head_before = (
                    await log_stub.ReadEvents(
                        events_pb2.ReadEventsRequest(after_position=0, limit=1),
                        metadata=(("authorization", f"Bearer {service_token}"),),
                    )
                ).head_position

                pids = {"metrics": metrics.pid, "nats": nats_pid, "agreements": agreements.pid}
                recording = _recording_process(metrics.pid)
                if recording is not None:  # METRICS_RECORDER=process (the default): its recording process
                    pids["recording"] = recording
                samples: list[tuple[float, int]] = []
                stop = asyncio.Event()

                async def messages(share: list[bytes]) -> AsyncIterator[bytes]:
                    for b in share:
                        yield b

                async def client(share: list[bytes]) -> mpb.RecordSignalsResponse:
                    # A channel of its own per client: its own connection, as separate collectors have.
                    async with grpc.aio.insecure_channel(m_address, options=options) as own:
                        record = own.stream_unary(  # bytes out (already serialised), the response parsed
                            RECORD_METHOD, response_deserializer=mpb.RecordSignalsResponse.FromString
                        )
                        response: mpb.RecordSignalsResponse = await record(
                            messages(share), metadata=tokens.md("department", PROVIDER), timeout=CALL_TIMEOUT
                        )
                        return response

                async def sample(t0: float) -> None:
                    while not stop.is_set():
                        samples.append((time.perf_counter() - t0, _store_head(store)))
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=0.5)
                        except TimeoutError:
                            pass

                cpu0 = {k: _proc_cpu(p) for k, p in pids.items()}
                bench0 = time.process_time()
                t0 = time.perf_counter()
                sampler = asyncio.create_task(sample(t0))
                try:
                    # Client k streams messages k, k + clients, …: each its share, all at once.
                    answers = await asyncio.gather(*(client(batches[k::clients]) for k in range(clients)))
                    response = mpb.RecordSignalsResponse(
                        accepted=sum(a.accepted for a in answers),
                        duplicates=sum(a.duplicates for a in answers),
                        corrections=sum(a.corrections for a in answers),
                        messages=sum(a.messages for a in answers),
                    )
                finally:
                    seconds = time.perf_counter() - t0
                    stop.set()
                    await sampler
                bench_cpu = time.process_time() - bench0
                cpu1 = {k: _proc_cpu(p) for k, p in pids.items()}
                published_at_end = await _stream_messages(nats.url)
                samples.append((seconds, _store_head(store)))
                rss = _rss_mb(metrics.pid)
                if recording is not None:
                    rss_recording = _rss_mb(recording)
                    rss = {k: v + rss_recording.get(k, 0) for k, v in rss.items()}
                print(f"   ingest: {n:,} signals in {seconds:.1f} s = {n / seconds:,.0f} signals/s", flush=True)

                # Read every stored signal back over the service's own log.
                limit = max(1, min(5000, READ_BYTES // max(1, max(len(b) for b in batches) * 4 // 3 + 1024)))
                events = signals = 0
                ids: set[str] = set()
                head = 0
                async for env in _read_all(log_stub, service_token, limit):
                    head = env.position
                    if env.type == SIGNALS_RECORDED:
                        msg = metric_events.SignalsRecorded()
                        env.payload.Unpack(msg)
                        events += 1
                        signals += len(msg.batch.signals)
                        ids.update(s.signal_id for s in msg.batch.signals)
            # The relay publishes every stored event exactly once.
            t_relay = time.perf_counter()
            # (Live, the rounds record evaluations meanwhile: the stream may hold more than was read.)
            while (got := await _stream_messages(nats.url)) != head and not (live and got >= head):
                if (got > head and not live) or time.perf_counter() - t_relay > RELAY_TIMEOUT:
                    raise RuntimeError(f"stream {STREAM} holds {got} events, the metrics store {head}")
                await asyncio.sleep(0.1)
            relay_catch_up = time.perf_counter() - t_relay
        store_events = _store_head(store)
        rows = _store_rows(store)
        store_signals = sum(int(json.loads(r[3])["count"]) for r in rows)
        logs = {c.name: _log_summary(c.log_file) for c in children}
        result = Ingest(
            seconds=seconds,
            response=response,
            bench_cpu=bench_cpu,
            cpu={k: _delta(cpu0[k], cpu1[k]) for k in pids},
            samples=samples,
            stored_events=events,
            stored_signals=signals,
            distinct_ids=len(ids),
            store_events=store_events,
            store_signals=store_signals,
            head_position=head,
            relay_lag=head - published_at_end,
            relay_catch_up=relay_catch_up,
            rss_mb=rss,
            logs=logs,
            fsync_ms=fsync_ms,
        )
        _check_ingest(result, n, len(batches), None if live else head_before)
        print(
            f"   read back: {signals:,} signals ({len(ids):,} distinct ids) in {events:,} events; "
            f"the store file holds {store_events:,} batch events of {store_signals:,} signals",
            flush=True,
        )
        # The ceiling, in the same temp dir (same disk), the services stopped.
        # The ceiling, in the same temp dir (same disk), the services stopped; the two variants
        # interleaved round by round, a fresh file each time, the median round reported.
        rounds: dict[str, list[tuple[float, int]]] = {"raw batch inserts": [], "stored rows": []}
        for r in range(CEILING_ROUNDS):
            rounds["raw batch inserts"].append(_raw_inserts(tmp / f"ceiling-raw-{r}.sqlite", batches))
            rounds["stored rows"].append(_stored_row_inserts(tmp / f"ceiling-rows-{r}.sqlite", rows))
        for name, timings in rounds.items():
            result.ceilings[name] = sorted(timings)[len(timings) // 2]
            result.ceiling_rounds[name] = [s for s, _ in timings]
            listed = ", ".join(f"{n / s:,.0f}" for s, _ in timings)
            print(f"   ceiling, {name}: {n / result.ceilings[name][0]:,.0f} signals/s (rounds {listed})", flush=True)
        return result


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _check_ingest(r: Ingest, n: int, messages: int, head_before: int | None) -> None:
    """(`head_before` None: the rounds recorded evaluations meanwhile, so the log's head is not checked.)"""
    resp = r.response
    if (resp.accepted, resp.duplicates, resp.messages) != (n, 0, messages):
        raise RuntimeError(
            f"RecordSignals answered accepted {resp.accepted}, duplicates {resp.duplicates}, messages "
            f"{resp.messages}; expected {n}, 0, {messages}"
        )
    if (r.stored_signals, r.distinct_ids, r.stored_events) != (n, n, messages):
        raise RuntimeError(
            f"read back {r.stored_signals} signals ({r.distinct_ids} distinct) in {r.stored_events} events; "
            f"expected {n} in {messages}"
        )
    if (r.store_signals, r.store_events) != (n, messages):
        raise RuntimeError(f"the store file holds {r.store_signals} signals in {r.store_events} batch events")
    if head_before is not None and r.head_position != head_before + messages:
        raise RuntimeError(f"the log went from {head_before} to {r.head_position}: not one event per message")


# -- the ceiling: raw SQLite inserts ---------------------------------------------------------------------


def _durable(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # explicit transactions
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    if str(mode).lower() != "wal" or conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
        raise RuntimeError(f"{path}: SQLite refused WAL + synchronous=FULL")
    return conn


def _raw_inserts(path: Path, batches: list[bytes]) -> tuple[float, int]:
    """Each serialised batch as one row of a plain table, one transaction each."""
    conn = _durable(path)
    try:
        conn.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, data BLOB)")
        t0 = time.perf_counter()
        for b in batches:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO batches (data) VALUES (?)", (b,))
            conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
        if conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] != len(batches):
            raise RuntimeError("raw inserts: rows missing")
    finally:
        conn.close()
    return seconds, sum(len(b) for b in batches)


def _stored_row_inserts(path: Path, rows: list[tuple[str, int, str, bytes]]) -> tuple[float, int]:
    """The service's own stored rows (JSON state with the base64 batch) into eventsourcing's
    table, one transaction each: the same rows, without the application."""
    conn = _durable(path)
    try:
        conn.execute(
            "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        t0 = time.perf_counter()
        for row in rows:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)", row)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - t0
        if conn.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] != len(rows):
            raise RuntimeError("stored-row inserts: rows missing")
    finally:
        conn.close()
    return seconds, sum(len(r[3]) for r in rows)


# -- evaluation, in this process ------------------------------------------------------------------------


@dataclass
class Evaluation:
    record_seconds: float
    record_cpu: float
    first_seconds: float
    first_cpu: float
    second_seconds: float
    second_cpu: float
    changed: tuple[int, int]
    evaluations: dict[str, dict[str, Any]]  # objective → its window's evaluation after the second run
    events_before: int
    events_after: int
    maxrss_mb: float


def _evaluation_run(batches: list[bytes], n: int, batch: int) -> Evaluation:
    from accord_agreements.application import Agreements
    from accord_agreements.samples import EMAIL, IT
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.application import Metrics

    assert (EMAIL, IT) == (SERVICE_ID, PROVIDER)
    with tempfile.TemporaryDirectory(prefix="accord-bench-metrics-eval-") as tmp_name:
        tmp = Path(tmp_name)
        clock = FakeClock(MONTH_START + timedelta(hours=9))
        agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
        metrics = Metrics(sqlite_env(tmp / "metrics.sqlite"), clock=clock)
        try:
            aid = sample_agreement(agreements, metrics)

            collector = Principal("bench-collector", "service")
            parsed = [list(spb.SignalBatch.FromString(b).signals) for b in batches]
            c0, t0 = time.process_time(), time.perf_counter()
            for signals in parsed:
                metrics.record(collector, signals)
            record_seconds, record_cpu = time.perf_counter() - t0, time.process_time() - c0
            del parsed
            print(f"   evaluation: {n:,} signals recorded in-process in {record_seconds:.1f} s", flush=True)

            events_before = metrics.head_position()
            c0, t0 = time.process_time(), time.perf_counter()
            first = metrics.evaluate(EVALUATE_AT)
            first_seconds, first_cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"   first evaluate: {first_seconds:.1f} s ({first} windows changed)", flush=True)

            late = _signals(n, batch, EVALUATE_AT - timedelta(minutes=30), LATE_SPAN, batch, random.Random(1), origin=n)
            metrics.record(collector, list(spb.SignalBatch.FromString(late).signals))
            c0, t0 = time.process_time(), time.perf_counter()
            second = metrics.evaluate(EVALUATE_AT + timedelta(minutes=1))
            second_seconds, second_cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"   second evaluate, {batch:,} signals later: {second_seconds:.1f} s", flush=True)

            windows = {w.objective_id: dict(w.latest) for w in metrics.window_evaluations(aid)}
            result = Evaluation(
                record_seconds=record_seconds,
                record_cpu=record_cpu,
                first_seconds=first_seconds,
                first_cpu=first_cpu,
                second_seconds=second_seconds,
                second_cpu=second_cpu,
                changed=(first, second),
                evaluations=windows,
                events_before=events_before,
                events_after=metrics.head_position(),
                maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            )
        finally:
            agreements.close()
            metrics.close()
    _check_evaluation(result, n, batch)
    return result


def _check_evaluation(e: Evaluation, n: int, batch: int) -> None:
    calls = (n + 1) // 2 + (batch + 1) // 2  # even indices are calls
    if set(e.evaluations) != {"availability", "service-level"} or e.changed != (2, 2):
        raise RuntimeError(f"evaluated windows {sorted(e.evaluations)}, changed {e.changed}; expected both, (2, 2)")
    sl = e.evaluations["service-level"]["detail"]
    judged = int(sl["answered"]) + int(sl["abandoned"]) + int(sl["other"])
    if judged != calls:
        raise RuntimeError(f"the service level judged {judged} calls; {calls} were recorded")
    if not e.evaluations["availability"].get("value"):
        raise RuntimeError(f"availability has no value: {e.evaluations['availability']}")


# -- the report ---------------------------------------------------------------------------------------------


def _window_rate(samples: list[tuple[float, int]], batch_signals: float, last: bool) -> float:
    """Signals/s over the first (or last) EDGE share of the ingest's wall time, from the store samples."""
    good = [s for s in samples if s[1] >= 0]
    if len(good) < 2:
        return 0.0
    t_end = good[-1][0]
    span = t_end * EDGE
    if last:
        a = max((s for s in good if s[0] <= t_end - span), key=lambda s: s[0])
        b = good[-1]
    else:
        a = good[0]
        b = min((s for s in good if s[0] >= span), key=lambda s: s[0])
    return (b[1] - a[1]) * batch_signals / (b[0] - a[0]) if b[0] > a[0] else 0.0


def _report(
    ingest: Ingest,
    evaluation: Evaluation | None,
    *,
    n: int,
    batch: int,
    sizes: list[int],
    generate_s: float,
    load_before: str,
    clients: int = 1,
    live: bool = False,
) -> dict[str, Any]:
    rate = n / ingest.seconds
    met = rate >= TARGET
    scale = f"≥ {SCALE_TARGET:,.0f}/s {'MET' if rate >= SCALE_TARGET else 'NOT MET'}"
    cpu = ingest.cpu
    server_cpu = cpu.get("metrics")
    recording_cpu = cpu.get("recording")
    if server_cpu is not None and recording_cpu is not None:  # the service's two processes
        server_cpu += recording_cpu
    cpu_parts = [f"client {ingest.bench_cpu / ingest.seconds:.0%}"] + [
        f"{k} {v / ingest.seconds:.0%}" for k, v in cpu.items() if v is not None
    ]
    per_signal = f"metrics {server_cpu / n * 1e6:.1f} µs CPU/signal, " if server_cpu is not None else ""
    if recording_cpu is not None and server_cpu is not None:
        per_signal = (
            f"metrics {server_cpu / n * 1e6:.1f} µs CPU/signal (its recording process "
            f"{recording_cpu / n * 1e6:.1f}, the service's process {(server_cpu - recording_cpu) / n * 1e6:.1f}), "
        )
    avg_signals = n / len(sizes)
    first_rate = _window_rate(ingest.samples, avg_signals, last=False)
    last_rate = _window_rate(ingest.samples, avg_signals, last=True)
    rss = ingest.rss_mb
    figures: list[dict[str, Any]] = [
        {
            "name": "ingest",
            "value": rate,
            "unit": "signals/s",
            "detail": f"{n:,} signals, {len(sizes):,} messages of {batch:,} over "
            f"{'one RecordSignals stream' if clients == 1 else f'{clients} concurrent RecordSignals streams'}"
            f"{' into the open window of the agreed sample SLA, judged every 5 s meanwhile,' if live else ''} in "
            f"{ingest.seconds:.2f} s, durable; target ≥ {TARGET:,.0f}/s {'MET' if met else 'NOT MET'}, "
            f"the scale goal {scale}; first {EDGE:.0%} of the time {first_rate:,.0f}/s, "
            f"last {EDGE:.0%} {last_rate:,.0f}/s; CPU "
            f"{', '.join(cpu_parts)}; {per_signal}client {ingest.bench_cpu / n * 1e6:.1f} µs CPU/signal; relay "
            f"{ingest.relay_lag} events behind at the response",
        },
        {
            "name": "stored signals",
            "value": float(ingest.stored_signals),
            "unit": "signals",
            "detail": f"read back over EventLogService/ReadEvents: {ingest.stored_events:,} SignalsRecorded events, "
            f"{ingest.distinct_ids:,} distinct ids (= {n:,}: {'yes' if ingest.stored_signals == n else 'NO'}); the "
            f"store file: {ingest.store_events:,} batch events of {ingest.store_signals:,} signals; log head "
            f"{ingest.head_position:,}",
        },
    ]
    for name, (seconds, nbytes) in ingest.ceilings.items():
        what = (
            "the serialised SignalBatch bytes, one row and one transaction per message"
            if name == "raw batch inserts"
            else "the service's stored rows (JSON state, base64 batch) into eventsourcing's table, one transaction each"
        )
        listed = ", ".join(f"{n / x:,.0f}" for x in ingest.ceiling_rounds[name])
        figures.append(
            {
                "name": f"ceiling: {name}",
                "value": n / seconds,
                "unit": "signals/s",
                "detail": f"{what}; {len(sizes):,} commits in {seconds:.2f} s = {seconds / len(sizes) * 1000:.2f} ms "
                f"each, {nbytes / len(sizes) / 1024:.1f} KiB a row; WAL + synchronous=FULL, fresh file, this process; "
                f"median of {CEILING_ROUNDS} rounds ({listed}/s)",
            }
        )
    raw_s = ingest.ceilings["raw batch inserts"][0]
    figures.append(
        {
            "name": "ratio ingest/ceiling",
            "value": rate / (n / raw_s),
            "unit": "×",
            "detail": "ingest ÷ raw batch inserts: the share of what the disk and SQLite allow for these bytes",
        }
    )
    figures.append(
        {
            "name": "fsync",
            "value": ingest.fsync_ms,
            "unit": "ms",
            "detail": "median append 4 KiB + fdatasync in the store's directory",
        }
    )
    if evaluation is not None:
        e = evaluation
        av, sl = e.evaluations["availability"], e.evaluations["service-level"]
        figures += [
            {
                "name": "record in-process",
                "value": n / e.record_seconds,
                "unit": "signals/s",
                "detail": f"Metrics.record({batch:,} signals) × {len(sizes):,} as a service identity, SQLite, no gRPC: "
                f"{e.record_seconds:.1f} s, {e.record_cpu / n * 1e6:.1f} µs CPU/signal",
            },
            {
                "name": "evaluate, first",
                "value": e.first_seconds,
                "unit": "s",
                "detail": f"Metrics.evaluate(now) over {n:,} signals in one month, 2 objectives, converting every "
                f"signal; CPU {e.first_cpu:.1f} s",
            },
            {
                "name": "evaluate, second",
                "value": e.second_seconds,
                "unit": "s",
                "detail": f"after {batch:,} more signals: CPU {e.second_cpu:.1f} s; availability {av['value'][:8]} % "
                f"{av['status']}, service level {sl['value'][:6]} % {sl['status']}",
            },
        ]
    notes = [
        f"ingest target ≥ {TARGET:,.0f} signals/s (the Metrics issue, durable, {clients} client(s), this "
        f"{_usable_cpus()}-core machine): {rate:,.0f}/s, {'met' if met else 'NOT met'} (the scale goal {scale}); "
        f"{rate / (n / raw_s):.0%} "
        f"of the raw SQLite inserts of the same bytes ({n / raw_s:,.0f}/s).",
        (
            f"the metrics service's recording process used {recording_cpu / ingest.seconds:.0%} of one CPU during the "
            f"stream ({recording_cpu / n * 1e6:.1f} µs per signal: dedupe, indexing, the batch's events), its own "
            f"process {((server_cpu or 0) - recording_cpu) / ingest.seconds:.0%} (gRPC, validation, the relay): "
            + (
                "the recording process's Python work is the limit, not the disk."
                if recording_cpu / ingest.seconds >= 0.85
                else "neither was CPU-bound; look at the disk (fsync, ceiling), the hand-offs and the client."
            )
            if recording_cpu is not None
            else f"the metrics process used {(server_cpu or 0) / ingest.seconds:.0%} of one CPU during the stream "
            f"({(server_cpu or 0) / n * 1e6:.1f} µs per signal): "
            + (
                "its Python work (gRPC, validation, indexing, relay), serialised by the GIL, is the limit, not the "
                "disk."
                if server_cpu is not None and server_cpu / ingest.seconds >= 0.85
                else "it was not CPU-bound; look at the disk (fsync, ceiling) and the client."
            )
        ),
        f"processes: the client (this process) sends pre-serialised messages; metrics (with its recording process, "
        f"when it runs one), agreements and nats-server each run in their own process; all share {_usable_cpus()} "
        f"CPUs. Metrics' memory after the stream (its processes together): RSS "
        f"{rss.get('VmRSS', 0):,.0f} MiB, peak {rss.get('VmHWM', 0):,.0f} MiB (its signal index is in the store, "
        "not in memory).",
        f"the relay was {ingest.relay_lag} events behind when the response arrived and published them in "
        f"{ingest.relay_catch_up:.1f} s; the METRICS stream then held exactly one message per stored event.",
    ]
    if evaluation is not None:
        e = evaluation
        notes.append(
            f"evaluation: first {e.first_seconds:.1f} s, second {e.second_seconds:.1f} s ({batch:,} signals later); "
            f"the service re-evaluates every 5 s (bootstrap.EVALUATE_EVERY_SECONDS), so "
            f"{'a round takes longer than the interval' if e.second_seconds > 5 else 'a round fits in the interval'} "
            f"at this size. This process's peak RSS {e.maxrss_mb:,.0f} MiB."
        )
    for name, counts in ingest.logs.items():
        if counts:
            listed = ", ".join(f"{k} ×{c}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]))
            notes.append(f"{name} logged at warning or above: {listed}.")
    notes.append(f"load average before {load_before}, after {_loadavg()} (figures are comparable within one run).")
    return {
        "figures": figures,
        "notes": notes,
        "params": {
            "signals": n,
            "batch": batch,
            "clients": clients,
            "live": live,
            "messages": len(sizes),
            "message_bytes_mean": round(statistics.fmean(sizes)),
            "kinds": "half calls (6% abandoned), half outages (1–9 s)",
            "month": f"{MONTH_START.isoformat()} + {MONTH_SPAN}",
            "store": "sqlite (WAL, synchronous=FULL), temp dir",
            "server_log_level": SERVER_LOG_LEVEL,
            "usable_cpus": _usable_cpus(),
            "generate_seconds": round(generate_s, 2),
            "load_average_before": load_before,
        },
        "samples": {
            "ingest": {
                "seconds": round(ingest.seconds, 4),
                "bench_cpu_seconds": round(ingest.bench_cpu, 3),
                "cpu_seconds": ingest.cpu,
                "store_samples": ingest.samples,
                "relay_lag_events": ingest.relay_lag,
                "relay_catch_up_seconds": round(ingest.relay_catch_up, 3),
                "metrics_rss_mb": rss,
                "server_logs": ingest.logs,
            },
            "ceilings": {
                k: {"seconds": round(s, 4), "bytes": b, "rounds_seconds": ingest.ceiling_rounds[k]}
                for k, (s, b) in ingest.ceilings.items()
            },
            "evaluation": None
            if evaluation is None
            else {
                "record_seconds": round(evaluation.record_seconds, 3),
                "first_seconds": round(evaluation.first_seconds, 3),
                "second_seconds": round(evaluation.second_seconds, 3),
                "events_before": evaluation.events_before,
                "events_after": evaluation.events_after,
                "evaluations": evaluation.evaluations,
            },
        },
    }


def sample_agreement(
    agreements: Any, metrics: Any, services: Sequence[str] = (SERVICE_ID,), more: Sequence[dict[str, Any]] = ()
) -> str:  # fmt: skip
    """The sample e-mail SLA between it-operations and finance, accepted (`agreements`, an
    Agreements app), and `metrics` (a Metrics app) told of it the way its AGREEMENTS consumer
    would be; measured on `services` (the e-mail service, or others of it-operations' beside it),
    with `more` objectives beside its own. Returns the agreement id."""
    from accord_agreements.domain import Actor
    from accord_agreements.samples import FINANCE, IT, sla_terms

    provider, customer = Actor("alice", "department", IT), Actor("bob", "department", FINANCE)
    for dept in (IT, FINANCE):
        agreements.register_department(dept, dept)
    for service in services:
        agreements.register_service(service, "E-mail" if service == SERVICE_ID else service, IT)
    terms = sla_terms()
    terms["service"] = {**terms["service"], "service_ids": list(services)}
    terms["objectives"] = [*terms["objectives"], *more]
    aid = str(agreements.draft(provider, terms).id)
    agreements.propose(provider, aid)
    agreements.accept(customer, aid)
    envelopes, _ = agreements.read_events(0, 5000)
    for env in envelopes:
        metrics.apply_upstream("agreements", env)
    return aid
