"""Audit: events verified and events replayed per second over a metrics log of 1,000,000
signal events, beside raw reading of the same log, in the same run (the audit issue).

Set-up (not timed as a figure, but reported): a metrics store as the service keeps it
(`accord_metrics.settings.load(...).event_store_env()`: SQLite in WAL mode with
synchronous=FULL, the chained recorder) in a temp dir. It learns departments, service
`email` and the sample SLA (drafted, proposed, accepted by an in-process `Agreements`
application) from the agreements events, the way its consumer does (`apply_upstream`);
then N signal events of that service (`SignalBatch`, B signals each, half calls, half
outages over January 2026), saved many per transaction with `app.save(*batches)` through
the chained recorder, sealed every SEAL_EVERY events and at the end with a generated key
(`chain.seal`); then `Metrics.evaluate()` once (the agreement's windows since January:
window, evaluation, closing and breach events). The set-up runs in a process of its own.

Timed, each in a fresh process of its own (so each has its own peak RSS), `--audit-rounds`
rounds interleaved, medians reported:
* raw read: `recorder.select_notifications` page by page over the whole log;
* verify_store: `chain.verify_store(app, keys)` over the whole log;
* verify_chain: `audit.verify_chain` fed by `audit.read_chain` pages, in-process: what a
  remote auditor's offline check costs without the network;
* agreement_history: `audit.agreement_history(app, agreement_id)` over the whole log.

Then, unless `--audit-skip-service`: the metrics service as its own process on that store
(`python -m accord_metrics`, with a nats-server; its relay publishes the log first), and an
auditor client in another process: ReadChain pages + `verify_chain`, VerifyLog, and
AgreementHistory over gRPC, once each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import resource
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.agreements import (
    SERVER_LOG_LEVEL,
    Child,
    Tokens,
    _clean_env,
    _loadavg,
    _log_summary,
    _proc_cpu,
    _usable_cpus,
    _wait_serving,
    supervised,
)
from bench.metrics import sample_agreement

NAME = "audit"
SUMMARY = (
    "verifying (verify_store, verify_chain, gRPC) and replaying (agreement_history) a metrics log of "
    "1,000,000 signal events beside raw reading of the same log"
)

SERVICE_ID = "email"  # the sample terms' service (accord_agreements.samples.EMAIL)
SAVE_EVENTS = 2000  # signal events per save (one transaction) while filling the store
SEAL_EVERY = 100_000  # events between two checkpoints while filling (the service seals every minute)
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the auditor client's receive limit (the service sends ≤ 16 MiB)
SERVICE_START_TIMEOUT = 900.0  # the service is SERVING once its relay has published the whole log
QUIET_TIMEOUT = 600.0  # how long to wait for the service's start-up work to settle
CALL_TIMEOUT = 900.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("audit benchmark")
    group.add_argument(
        "--audit-signals",
        type=int,
        default=None,
        help="signals stored for the agreement's service (default: --signals, i.e. 1,000,000)",
    )
    group.add_argument(
        "--audit-batch",
        "--batch",
        dest="audit_batch",
        type=int,
        default=1,
        help="signals per stored event (default 1: one event per signal)",
    )
    group.add_argument("--audit-rounds", type=int, default=3, help="rounds of the in-process figures (default 3)")
    group.add_argument(
        "--audit-page", type=int, default=1000, help="records per page of raw reading and ReadChain (default 1,000)"
    )
    group.add_argument(
        "--audit-skip-service", action="store_true", help="skip the gRPC figures (no service process, no nats-server)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    signals: int = args.audit_signals if args.audit_signals is not None else getattr(args, "metrics_signals", 1_000_000)
    batch: int = args.audit_batch
    rounds: int = args.audit_rounds
    page: int = args.audit_page
    if signals < 1 or batch < 1 or rounds < 1:
        raise ValueError("--audit-signals, --audit-batch and --audit-rounds must be at least 1")
    if not 1 <= page <= 10_000:
        raise ValueError("--audit-page must be between 1 and 10,000 (ReadChain's limit)")
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="accord-bench-audit-") as tmp_name:
        tmp = Path(tmp_name)
        keys = tmp / "keys"
        env = _service_env(tmp, keys)
        from accord_kit.keys import write_keys

        write_keys(keys)
        print(f"   set-up: {signals:,} signals, {batch:,} per event, in a process of its own", flush=True)
        setup = _in_child(_set_up, env, signals, batch)
        print(
            f"   set-up: {setup['head']:,} events in {setup['seconds']:.1f} s (insert {setup['insert_seconds']:.1f} s, "
            f"evaluate {setup['evaluate_seconds']:.1f} s, seal {setup['seal_seconds']:.1f} s); store "
            f"{setup['store_mb']:,.0f} MiB",
            flush=True,
        )
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in IN_PROCESS}
        for r in range(rounds):
            for name, fn in IN_PROCESS:
                out = _in_child(fn, env, setup, page)
                _check(name, out, setup)
                samples[name].append(out)
                print(
                    f"   round {r + 1}/{rounds} {name}: {out['events']:,} events in {out['seconds']:.2f} s "
                    f"({out['events'] / out['seconds']:,.0f}/s), peak RSS {out['peak_rss_mb']:,.0f} MiB",
                    flush=True,
                )
        service: dict[str, Any] | None = None
        if not args.audit_skip_service:
            service = _service_phase(tmp, env, keys, setup, page)
    return _report(setup, samples, service, signals=signals, batch=batch, page=page, load_before=load_before)


# -- processes -------------------------------------------------------------------------------------------


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run `fn(*args)` in a fresh (spawned) process and return its result with the process's peak RSS."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, fn, *args).result()


def _measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    from accord_kit.logging import configure_logging

    configure_logging("warning")
    out = fn(*args)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _rss_mb() -> float:
    """This process's resident memory now, MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _service_env(tmp: Path, keys: Path) -> dict[str, str]:
    """The metrics service's settings (environment) for this run: the set-up and the in-process
    measurements read the store through the same settings loader as the service process."""
    from accord_kit.keys import PUBLIC, TOKEN, chain_key_files
    from accord_kit.testing.nats import free_port

    return _clean_env(
        ACCORD_VAR_DIR=str(tmp / "var"),
        ACCORD_PERSISTENCE="sqlite",
        ACCORD_AUTH_PUBLIC_KEY_FILE=str(keys / PUBLIC),
        ACCORD_SERVICE_TOKEN_FILE=str(keys / TOKEN),
        ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{free_port()}",  # not running: the consumer waits for its stream
        ACCORD_LOG_LEVEL=SERVER_LOG_LEVEL,
        ACCORD_LOG_FORMAT="json",
        METRICS_SQLITE_PATH=str(tmp / "metrics.sqlite"),
        METRICS_CHAIN_KEY_FILE=str(chain_key_files(keys, "metrics")[0]),
        # The set-up sealed the log; the service must not add a checkpoint while it is measured.
        METRICS_SEAL_SECONDS="86400",
        METRICS_GRACE_SECONDS="2",
    )


def _open(env: dict[str, str]) -> Any:
    from accord_metrics.application import Metrics
    from accord_metrics.settings import load

    return Metrics(load(env).event_store_env())


def _public_keys(env: dict[str, str]) -> list[Any]:
    from accord_kit.chain import load_private_key

    return [load_private_key(Path(env["METRICS_CHAIN_KEY_FILE"])).public_key()]


# -- set-up ----------------------------------------------------------------------------------------------------


def _set_up(env: dict[str, str], signals: int, batch: int) -> dict[str, Any]:
    import random

    from accord_agreements.application import Agreements
    from accord_agreements.samples import EMAIL
    from accord_kit.chain import load_private_key, seal
    from accord_kit.context import Principal, RequestContext, request_context
    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.application import BATCH_TOPIC
    from accord_metrics.domain import SignalBatch
    from bench.metrics import MONTH_SPAN, MONTH_START, _signals

    assert EMAIL == SERVICE_ID
    t_start = time.perf_counter()
    key = load_private_key(Path(env["METRICS_CHAIN_KEY_FILE"]))
    store = Path(env["METRICS_SQLITE_PATH"])
    agreements = Agreements(sqlite_env(store.parent / "agreements.sqlite"))
    metrics = _open(env)
    try:
        aid = sample_agreement(agreements, metrics)
        upstream_events = metrics.head_position()

        # What Metrics.record stores (one SignalBatch event per call and service), saved
        # SAVE_EVENTS to a transaction: record() would commit (and fsync) once per event.
        rnd = random.Random(20260101)
        events = (signals + batch - 1) // batch
        checkpoints = 0
        t0 = time.perf_counter()
        with request_context(RequestContext(Principal("bench-collector", "service"))):
            since_seal = 0
            for first in range(0, events, SAVE_EVENTS):
                chunk = []
                for e in range(first, min(first + SAVE_EVENTS, events)):
                    i = e * batch
                    count = min(batch, signals - i)
                    raw = _signals(i, count, MONTH_START, MONTH_SPAN, signals, rnd)
                    chunk.append(SignalBatch(service_id=EMAIL, batch=base64.b64encode(raw).decode(), count=count))
                metrics.save(*chunk)
                since_seal += len(chunk)
                if since_seal >= SEAL_EVERY:
                    seal(metrics, key)
                    checkpoints += 1
                    since_seal = 0
        insert_seconds = time.perf_counter() - t0
        print(f"   set-up: {events:,} signal events saved in {insert_seconds:.1f} s", flush=True)

        t0 = time.perf_counter()
        changed = metrics.evaluate()
        evaluate_seconds = time.perf_counter() - t0
        if changed == 0:
            raise RuntimeError("the evaluation recorded nothing: the agreement has no window to judge")

        t0 = time.perf_counter()
        cp = seal(metrics, key)
        seal_seconds = time.perf_counter() - t0
        checkpoints += 1
        head = metrics.head_position()
        if cp.at != head:
            raise RuntimeError(f"the last checkpoint is at {cp.at}, not at the log's head {head}")
    finally:
        agreements.close()
        metrics.close()

    conn = sqlite3.connect(store)
    try:
        topics = dict(conn.execute("SELECT topic, COUNT(*) FROM stored_events GROUP BY topic").fetchall())
        state_bytes = int(conn.execute("SELECT SUM(LENGTH(state)) FROM stored_events").fetchone()[0])
        chain_rows = int(conn.execute("SELECT COUNT(*) FROM event_chain").fetchone()[0])
    finally:
        conn.close()
    if topics.get(BATCH_TOPIC) != events or chain_rows != head or sum(topics.values()) != head:
        raise RuntimeError(
            f"the store holds {topics.get(BATCH_TOPIC)} signal events of {events}, {chain_rows} chain rows"
        )
    store_bytes = sum(p.stat().st_size for p in store.parent.glob(store.name + "*"))
    return {
        "agreement_id": aid,
        "signals": signals,
        "signal_events": events,
        "upstream_events": upstream_events,
        "evaluation_windows_changed": changed,
        "other_events": head - events - upstream_events,
        "checkpoints": checkpoints,
        "head": head,
        "topics": {t.rsplit(":", 1)[-1]: c for t, c in topics.items()},
        "state_bytes": state_bytes,
        "store_mb": store_bytes / 2**20,
        "insert_seconds": insert_seconds,
        "evaluate_seconds": evaluate_seconds,
        "seal_seconds": seal_seconds,
        "seconds": time.perf_counter() - t_start,
    }


# -- in-process measurements (each in a fresh process) ----------------------------------------------------


def _timed(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    rss = _rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    out = work()
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["rss_before_mb"] = rss
    return out


def _raw_read(env: dict[str, str], setup: dict[str, Any], page: int) -> dict[str, Any]:
    app = _open(env)
    try:
        head = app.head_position()

        def work() -> dict[str, Any]:
            n, position = 0, 0
            while position < head:
                notes = app.recorder.select_notifications(
                    start=position, limit=page, stop=head, inclusive_of_start=False
                )
                if not notes:
                    break
                n += len(notes)
                position = notes[-1].id
            return {"events": n, "through": position}

        return _timed(work)
    finally:
        app.close()


def _verify_store(env: dict[str, str], setup: dict[str, Any], page: int) -> dict[str, Any]:
    from accord_kit.chain import verify_store

    app = _open(env)
    keys = _public_keys(env)
    try:

        def work() -> dict[str, Any]:
            report = verify_store(app, keys)
            return {
                "events": report.records,
                "ok": report.ok,
                "problem": str(report.problem or ""),
                "checkpoints": report.checkpoints,
                "through": report.end,
            }

        return _timed(work)
    finally:
        app.close()


def _verify_chain(env: dict[str, str], setup: dict[str, Any], page: int) -> dict[str, Any]:
    from accord_kit.audit import read_chain, verify_chain

    app = _open(env)
    keys = _public_keys(env)
    try:

        def work() -> dict[str, Any]:
            pages = 0

            def read(after: int, limit: int, stop: int) -> Any:
                nonlocal pages
                pages += 1
                return read_chain(app, after, limit, stop)

            last = None
            for progress in verify_chain(read, keys, limit=page):
                last = progress
            assert last is not None and last.done
            return {
                "events": last.records_checked,
                "ok": last.ok,
                "problem": str(last.problem or ""),
                "checkpoints": last.checkpoints_checked,
                "through": last.verified_through,
                "pages": pages,
            }

        return _timed(work)
    finally:
        app.close()


def _history(env: dict[str, str], setup: dict[str, Any], page: int) -> dict[str, Any]:
    from accord_kit.audit import agreement_history

    app = _open(env)
    try:
        head = app.head_position()

        def work() -> dict[str, Any]:
            kinds: Counter[str] = Counter()
            for audited in agreement_history(app, setup["agreement_id"]):
                kinds[audited.envelope.type.rsplit(".", 1)[-1]] += 1
            return {"events": head, "concerning": sum(kinds.values()), "kinds": dict(kinds), "through": head}

        return _timed(work)
    finally:
        app.close()


IN_PROCESS: tuple[tuple[str, Callable[..., dict[str, Any]]], ...] = (
    ("raw read", _raw_read),
    ("verify_store", _verify_store),
    ("verify_chain", _verify_chain),
    ("agreement_history", _history),
)


def _check(name: str, out: dict[str, Any], setup: dict[str, Any], grows: bool = False) -> None:
    """A measurement that did not cover the whole log, or found a problem, fails the run. With
    `grows`, the log may have grown since the set-up (a running service's evaluation may record)."""
    head = setup["head"]
    through = out.get("through", out["events"])
    short = out["events"] < head if grows else out["events"] != head
    if short or through != out["events"]:
        raise RuntimeError(f"{name} covered {out['events']:,} events through {through}, not {head:,}")
    if out.get("ok") is False:
        raise RuntimeError(f"{name} found a problem in an untouched log: {out.get('problem')}")
    if "checkpoints" in out and out["checkpoints"] != setup["checkpoints"]:
        raise RuntimeError(f"{name} verified {out['checkpoints']} checkpoints, not {setup['checkpoints']}")
    if "concerning" in out and not out["concerning"]:
        raise RuntimeError(f"{name} found no event concerning agreement {setup['agreement_id']}")


# -- the service process and its auditor -------------------------------------------------------------------


def _service_phase(tmp: Path, env: dict[str, str], keys: Path, setup: dict[str, Any], page: int) -> dict[str, Any]:
    from accord_kit.testing.nats import free_port

    port = free_port()
    address = f"127.0.0.1:{port}"
    with supervised(tmp / "nats") as (nats, children):
        service_env = {**env, "ACCORD_NATS_URL": nats.url, "METRICS_GRPC_PORT": str(port)}
        t0 = time.perf_counter()
        child = Child("metrics", [sys.executable, "-m", "accord_metrics"], service_env, tmp / "metrics.log", False)
        children.append(child)
        asyncio.run(_wait_serving(child, address, SERVICE_START_TIMEOUT))
        serving_s = time.perf_counter() - t0
        print(f"   service: SERVING after {serving_s:.1f} s (its relay published the log first)", flush=True)
        quiet_s, background = _wait_quiet(child, nats.proc.pid if nats.proc else None)
        print(
            f"   service: start-up work settled after {quiet_s:.1f} s more; background CPU "
            f"{background:.0%} of one core",
            flush=True,
        )
        out: dict[str, Any] = {"serving_seconds": serving_s, "quiet_seconds": quiet_s, "background_cpu": background}
        for name, fn in GRPC:
            result = _in_child(fn, address, str(keys), setup, page, child.pid)
            _check(name, result, setup, grows=True)
            out[name] = result
            print(
                f"   {name}: {result['events']:,} events in {result['seconds']:.2f} s "
                f"({result['events'] / result['seconds']:,.0f}/s), client peak RSS {result['peak_rss_mb']:,.0f} MiB",
                flush=True,
            )
        out["service_rss_mb"] = _status_mb(child.pid)
        child.check_alive()
    out["service_log"] = _log_summary(tmp / "metrics.log")
    out["startup_verification"] = _startup_verification(tmp / "metrics.log")
    return out


def _startup_verification(log_file: Path) -> dict[str, Any] | None:
    """The service's whole-log verification at start, from its `chain_verified` log line
    (records, checkpoints, seconds), or None when it did not log one."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "chain_verified" and entry.get("records"):
            return {k: entry.get(k) for k in ("records", "checkpoints", "head", "seconds")}
    return None


def _wait_quiet(child: Child, nats_pid: int | None) -> tuple[float, float]:
    """Until the service's start-up work is over: the first evaluation (which re-reads every
    signal) runs beside the relay. Settled = two successive 5 s intervals (the evaluation
    period) in which the service and nats-server together used under 60% of one core and
    within 10 points of each other. Returns the seconds waited and the service's CPU share
    in the last interval (its periodic evaluation keeps running while it is measured)."""
    period = 5.0
    t0 = time.perf_counter()
    shares: list[float] = []
    own: list[float] = []
    while time.perf_counter() - t0 < QUIET_TIMEOUT:
        child.check_alive()
        a, b = _proc_cpu(child.pid) or 0.0, _proc_cpu(nats_pid) or 0.0
        time.sleep(period)
        da, db = (_proc_cpu(child.pid) or 0.0) - a, (_proc_cpu(nats_pid) or 0.0) - b
        shares.append((da + db) / period)
        own.append(da / period)
        if len(shares) >= 2 and shares[-1] < 0.6 and shares[-2] < 0.6 and abs(shares[-1] - shares[-2]) < 0.1:
            return time.perf_counter() - t0, own[-1]
    raise TimeoutError(f"the metrics service stayed busy for {QUIET_TIMEOUT} s after SERVING: {shares[-5:]}")


def _status_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _stub(address: str) -> tuple[Any, Any]:
    import grpc

    from accord.audit.v1 import audit_pb2_grpc

    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    channel = grpc.insecure_channel(address, options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel, audit_pb2_grpc.AuditServiceStub(channel)


def _client_timed(service_pid: int, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    s0 = _proc_cpu(service_pid)
    out = _timed(work)
    s1 = _proc_cpu(service_pid)
    out["service_cpu_seconds"] = None if s0 is None or s1 is None else s1 - s0
    return out


def _grpc_read_chain(address: str, keys: str, setup: dict[str, Any], page: int, service_pid: int) -> dict[str, Any]:
    from accord.audit.v1 import audit_pb2
    from accord_kit.audit import public_keys_of, verify_chain

    md = Tokens(Path(keys)).md("auditor")
    channel, stub = _stub(address)
    try:
        trusted = public_keys_of(stub.GetChainKeys(audit_pb2.GetChainKeysRequest(), metadata=md, timeout=30))
        expected = set(_key_ids(keys))
        if set(trusted) != expected:
            raise RuntimeError(f"GetChainKeys gave key ids {sorted(trusted)}, not {sorted(expected)}")

        def work() -> dict[str, Any]:
            pages, wire = 0, 0

            def read(after: int, limit: int, stop: int) -> Any:
                nonlocal pages, wire
                request = audit_pb2.ReadChainRequest(after_position=after, limit=limit, stop_position=stop)
                response = stub.ReadChain(request, metadata=md, timeout=CALL_TIMEOUT)
                pages += 1
                wire += response.ByteSize()
                return response

            last = None
            for progress in verify_chain(read, trusted, service="metrics", limit=page):
                last = progress
            assert last is not None and last.done
            return {
                "events": last.records_checked,
                "ok": last.ok,
                "problem": str(last.problem or ""),
                "checkpoints": last.checkpoints_checked,
                "through": last.verified_through,
                "pages": pages,
                "wire_bytes": wire,
            }

        return _client_timed(service_pid, work)
    finally:
        channel.close()


def _key_ids(keys: str) -> list[str]:
    from accord_kit.chain import key_id, load_private_key
    from accord_kit.keys import chain_key_files

    return [key_id(load_private_key(chain_key_files(Path(keys), "metrics")[0]).public_key())]


def _grpc_verify_log(address: str, keys: str, setup: dict[str, Any], page: int, service_pid: int) -> dict[str, Any]:
    from accord.audit.v1 import audit_pb2

    md = Tokens(Path(keys)).md("auditor")
    channel, stub = _stub(address)
    try:

        def work() -> dict[str, Any]:
            messages, last = 0, None
            request = audit_pb2.VerifyLogRequest(from_checkpoint=False)
            for progress in stub.VerifyLog(request, metadata=md, timeout=CALL_TIMEOUT):
                messages += 1
                last = progress
            assert last is not None and last.done
            return {
                "events": last.records_checked,
                "ok": last.ok,
                "problem": last.problem.detail if last.HasField("problem") else "",
                "checkpoints": last.checkpoints_checked,
                "through": last.verified_through,
                "messages": messages,
            }

        return _client_timed(service_pid, work)
    finally:
        channel.close()


def _grpc_history(address: str, keys: str, setup: dict[str, Any], page: int, service_pid: int) -> dict[str, Any]:
    from accord.audit.v1 import audit_pb2

    md = Tokens(Path(keys)).md("auditor")
    channel, stub = _stub(address)
    try:
        head = setup["head"]

        def work() -> dict[str, Any]:
            kinds: Counter[str] = Counter()
            request = audit_pb2.AgreementHistoryRequest(agreement_id=setup["agreement_id"])
            for audited in stub.AgreementHistory(request, metadata=md, timeout=CALL_TIMEOUT):
                kinds[audited.envelope.type.rsplit(".", 1)[-1]] += 1
            return {"events": head, "concerning": sum(kinds.values()), "kinds": dict(kinds), "through": head}

        return _client_timed(service_pid, work)
    finally:
        channel.close()


GRPC: tuple[tuple[str, Callable[..., dict[str, Any]]], ...] = (
    ("gRPC ReadChain + verify_chain", _grpc_read_chain),
    ("gRPC VerifyLog", _grpc_verify_log),
    ("gRPC AgreementHistory", _grpc_history),
)


# -- the report -----------------------------------------------------------------------------------------------


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rounds, key=lambda o: o["seconds"])[len(rounds) // 2]


def _rate(out: dict[str, Any]) -> float:
    return float(out["events"]) / float(out["seconds"])


def _rounds(rounds: list[dict[str, Any]]) -> str:
    return ", ".join(f"{_rate(o):,.0f}" for o in rounds)


def _mem(out: dict[str, Any]) -> str:
    return f"peak RSS {out['peak_rss_mb']:,.0f} MiB (before {out['rss_before_mb']:,.0f})"


def _report(
    setup: dict[str, Any],
    samples: dict[str, list[dict[str, Any]]],
    service: dict[str, Any] | None,
    *,
    signals: int,
    batch: int,
    page: int,
    load_before: str,
) -> dict[str, Any]:
    head = setup["head"]
    medians = {name: _median(rounds) for name, rounds in samples.items()}
    raw = _rate(medians["raw read"])
    n_rounds = len(samples["raw read"])

    def ratio(rate: float) -> str:
        return f"{rate / raw:.2f}× raw read"

    def per_event(out: dict[str, Any]) -> str:
        return f"{out['seconds'] / out['events'] * 1e6:.1f} µs/event, CPU {out['cpu_seconds'] / out['seconds']:.0%}"

    r, vs, vc, hi = (medians[k] for k in ("raw read", "verify_store", "verify_chain", "agreement_history"))
    figures: list[dict[str, Any]] = [
        {
            "name": "raw read",
            "value": raw,
            "unit": "events/s",
            "detail": f"recorder.select_notifications, {page:,} a page, {head:,} events in {r['seconds']:.2f} s; "
            f"{per_event(r)}; {_mem(r)}; rounds {_rounds(samples['raw read'])}/s",
        },
        {
            "name": "verify_store",
            "value": _rate(vs),
            "unit": "events/s",
            "detail": f"{ratio(_rate(vs))}; chain.verify_store(app, key) over the whole log, "
            f"{vs['checkpoints']} checkpoint(s), clean, {vs['seconds']:.2f} s; {per_event(vs)}; {_mem(vs)}; "
            f"rounds {_rounds(samples['verify_store'])}/s",
        },
        {
            "name": "verify_chain (read_chain pages)",
            "value": _rate(vc),
            "unit": "events/s",
            "detail": f"{ratio(_rate(vc))}; audit.verify_chain over {vc['pages']:,} audit.read_chain pages of "
            f"{page:,}, in-process (no network), {vc['seconds']:.2f} s; {per_event(vc)}; {_mem(vc)}; "
            f"rounds {_rounds(samples['verify_chain'])}/s",
        },
        {
            "name": "agreement_history",
            "value": _rate(hi),
            "unit": "events/s",
            "detail": f"{ratio(_rate(hi))}; log events scanned by audit.agreement_history(app, agreement); "
            f"{hi['concerning']:,} of them concern the agreement, "
            f"{hi['seconds']:.2f} s; {per_event(hi)}; {_mem(hi)}; rounds {_rounds(samples['agreement_history'])}/s",
        },
    ]
    if service is not None:
        for name, what in (
            ("gRPC ReadChain + verify_chain", "an auditor process: GetChainKeys, ReadChain pages, verify_chain"),
            ("gRPC VerifyLog", "the service verifies its own log (VerifyLog, whole log), streamed progress"),
            ("gRPC AgreementHistory", "log events the service scanned for AgreementHistory"),
        ):
            o = service[name]
            extra = ""
            if "pages" in o:
                extra = f"{o['pages']:,} pages, {o['wire_bytes'] / 2**20:,.0f} MiB; "
            elif "messages" in o:
                extra = f"{o['messages']:,} progress messages; "
            else:
                extra = f"{o['concerning']:,} events streamed; "
            svc = o["service_cpu_seconds"]
            svc_text = f"service CPU {svc / o['seconds']:.0%}" if svc is not None else "service CPU ?"
            figures.append(
                {
                    "name": name,
                    "value": _rate(o),
                    "unit": "events/s",
                    "detail": f"{ratio(_rate(o))}; {what}; {extra}{o['seconds']:.2f} s; client CPU "
                    f"{o['cpu_seconds'] / o['seconds']:.0%}, {svc_text}; client {_mem(o)}; one round",
                }
            )
    started = service.get("startup_verification") if service is not None else None
    if started:
        figures.append(
            {
                "name": "start-up verification (whole log)",
                "value": started["seconds"] / started["records"] * 1e6,
                "unit": "s per million events",
                "detail": f"the service verified its whole log at start before sealing anything "
                f"({started['records']:,} records, {started['checkpoints']} checkpoint(s) in "
                f"{started['seconds']:.1f} s, from its chain_verified log line), beside its relay and first "
                "evaluation; accord.chain was NOT_SERVING until then; one round",
            }
        )
    figures.append(
        {
            "name": "set-up",
            "value": setup["seconds"],
            "unit": "s",
            "detail": f"{setup['signal_events']:,} signal events ({signals:,} signals, {batch:,} per event) saved "
            f"{SAVE_EVENTS:,} a transaction in {setup['insert_seconds']:.1f} s "
            f"({setup['signal_events'] / setup['insert_seconds']:,.0f}/s, sealing every {SEAL_EVERY:,}); evaluate "
            f"{setup['evaluate_seconds']:.1f} s ({setup['evaluation_windows_changed']} windows); final seal "
            f"{setup['seal_seconds']:.1f} s; peak RSS {setup['peak_rss_mb']:,.0f} MiB (its own process)",
        }
    )
    peaks = {name: max(o["peak_rss_mb"] for o in rounds) for name, rounds in samples.items()}
    if service is not None:
        peaks.update({name: service[name]["peak_rss_mb"] for name, _ in GRPC})
    worst = max(peaks, key=lambda k: peaks[k])
    figures.append(
        {
            "name": "peak RSS",
            "value": peaks[worst],
            "unit": "MiB",
            "detail": f"the largest of the measuring processes ({worst}); "
            + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items()),
        }
    )

    kb = setup["state_bytes"] / head / 1024
    notes = [
        f"the log: {head:,} events ({setup['signal_events']:,} SignalBatch, {setup['upstream_events']} learned from "
        f"agreements, {setup['other_events']:,} evaluation and checkpoint events; {setup['checkpoints']} checkpoints), "
        f"{kb:.2f} KiB of state per event, store {setup['store_mb']:,.0f} MiB; agreement {setup['agreement_id']}.",
        f"verifying costs {vs['seconds'] / head * 1e6:.1f} µs/event with verify_store (records and chain rows read "
        f"page by page, one sha256 per record, checkpoints checked as they are reached) against "
        f"{r['seconds'] / head * 1e6:.1f} µs/event to page through select_notifications; "
        f"{vc['seconds'] / head * 1e6:.1f} µs/event with verify_chain from read_chain pages (records to protobuf "
        "and back as well).",
        f"both verifiers hold one page at a time (the streaming ChainVerifier): peak RSS {vs['peak_rss_mb']:,.0f} and "
        f"{vc['peak_rss_mb']:,.0f} MiB for {head:,} events, beside {r['peak_rss_mb']:,.0f} MiB for paging through it.",
        f"agreement_history skips the topics the application declares never concern an agreement (metrics' signal "
        f"batches) without decoding them and decodes the rest to envelopes: {hi['seconds'] / head * 1e6:.1f} µs per "
        f"log event; the {hi['concerning']:,} it returns are the agreement view and window events "
        f"({_kinds(hi['kinds'])}) — the evaluations carry the digest and counts of the signals that decided "
        "each window.",
    ]
    if service is not None:
        rss = service.get("service_rss_mb", {})
        notes.append(
            f"service process: SERVING {service['serving_seconds']:.0f} s after start (its relay published the "
            f"{head:,} events to JetStream first), start-up work settled {service['quiet_seconds']:.0f} s later; its "
            f"periodic evaluation (every 5 s) used {service['background_cpu']:.0%} of a core while idle; RSS "
            f"{rss.get('VmRSS', 0):,.0f} MiB, peak {rss.get('VmHWM', 0):,.0f} MiB (it indexes every signal)."
        )
        for name, _ in GRPC:
            o = service[name]
            if "concerning" in o and o["concerning"] != hi["concerning"]:
                notes.append(f"{name} streamed {o['concerning']} events, agreement_history {hi['concerning']}.")
        if service.get("service_log"):
            listed = ", ".join(f"{k} ×{c}" for k, c in sorted(service["service_log"].items(), key=lambda kv: -kv[1]))
            notes.append(f"metrics logged at warning or above: {listed}.")
    notes.append(
        f"{n_rounds} round(s) of the in-process figures, interleaved, each measurement in a fresh process; medians. "
        f"Load average before {load_before}, after {_loadavg()}; {_usable_cpus()} usable CPUs."
    )
    return {
        "figures": figures,
        "notes": notes,
        "params": {
            "signals": signals,
            "batch": batch,
            "events": head,
            "signal_events": setup["signal_events"],
            "page": page,
            "rounds": n_rounds,
            "save_events": SAVE_EVENTS,
            "seal_every": SEAL_EVERY,
            "store": "sqlite (WAL, synchronous=FULL, chained recorder), temp dir",
            "usable_cpus": _usable_cpus(),
            "load_average_before": load_before,
        },
        "samples": {"setup": setup, "in_process": samples, "service": service},
    }


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{c}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]))
