"""Metrics at growing history: what an evaluation round, memory, ingestion and a restart cost
as the signals stored grow while the open window stays the same size.

Set-up, for each size S (default 25,000, 50,000 and 100,000 signals; `--signals N` makes the
sizes N/4, N/2, N): a `Metrics` application on SQLite in this process (WAL, synchronous=FULL)
that learned the sample SLA (availability, time-based, and service level, monthly,
Europe/Amsterdam) from an `Agreements` application's events; S signals (half calls, half
outages, as `bench.metrics` makes them) spread evenly from 1 January 2026 at `--per-month`
signals a month (default 20,000), recorded in batches of 1,000 as a service identity; a first
round at "now", the middle of the last month (every window judged once: not timed here).

Timed, per size:
* idle round: `evaluate` 5 s later with nothing new (windows judged: 0 expected);
* round after one batch: 1,000 new signals in the open window, then `evaluate`;
* ingest during rounds: 5 batches recorded while another thread runs rounds back to back
  (the clock moving 5 s a round), beside the same without rounds — signals/s each;
* restart: a second `Metrics` on the same store, in a process of its own — construction, then
  its first round (which reads the log from the judged position and judges what came after it,
  with its open windows, from the store's signal index), then a second round; that process's
  VmRSS;
* memory: resident set size after the rounds (VmRSS), the signals the store's index holds, the
  formula inputs held converted and the windows known.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from accord.metrics.v1 import signals_pb2 as spb
from bench.metrics import MONTH_START, _signals, sample_agreement

NAME = "metrics-scale"
SUMMARY = "metrics evaluation rounds, memory, ingestion during rounds and restart at growing history"
BATCH = 1000
INGEST_BATCHES = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics-scale benchmark")
    group.add_argument(
        "--scale-signals",
        type=int,
        default=100_000,
        help="the largest history, in signals; also measured at a quarter and a half of it (default 100,000)",
    )
    group.add_argument(
        "--per-month", type=int, default=20_000, help="signals a month of history holds (default 20,000)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    top = int(args.scale_signals)
    # `--signals` (the metrics benchmark's option), when given on the command line, sizes this one too.
    if any(a == "--signals" or a.startswith("--signals=") for a in sys.argv[1:]):
        top = int(args.metrics_signals)
    sizes = [top // 4, top // 2, top]
    # Each size in a process of its own: its resident memory is its own.
    spawn = multiprocessing.get_context("spawn")
    points = []
    for size in sizes:
        with spawn.Pool(1) as pool:
            points.append(pool.apply(_point, (size, int(args.per_month))))
    figures: list[dict[str, Any]] = []
    for p in points:
        s = f"{p['signals']:,} signals"
        figures += [
            {"name": f"idle round, {s}", "value": p["idle_ms"], "unit": "ms",
             "detail": f"nothing new; windows judged {p['idle_windows']}; CPU {p['idle_cpu_ms']:.1f} ms"},
            {"name": f"round after one batch, {s}", "value": p["batch_ms"], "unit": "ms",
             "detail": f"{BATCH:,} signals in the open window ({p['open_signals']:,} there); windows judged "
                       f"{p['batch_windows']}; CPU {p['batch_cpu_ms']:.0f} ms"},
            {"name": f"ingest during rounds, {s}", "value": p["ingest_rounds"], "unit": "signals/s",
             "detail": f"{p['rounds_during']} rounds ran meanwhile; without rounds {p['ingest_alone']:,.0f} signals/s"},
            {"name": f"restart to first round done, {s}", "value": p["restart_s"], "unit": "s",
             "detail": f"a process of its own (CPU {p['restart_cpu_s']:.2f} s): construction "
                       f"{p['construct_s']:.2f} s, first round "
                       f"{p['first_round_s']:.2f} s ({p['first_round_windows']} windows judged), second round "
                       f"{p['second_round_ms']:.1f} ms; its RSS then {p['restart_rss_mb']:.0f} MiB, "
                       f"{p['restart_converted']:,} formula inputs converted"},
            {"name": f"RSS, {s}", "value": p["rss_mb"], "unit": "MiB",
             "detail": f"signals indexed {p['held_signals']:,}, formula inputs converted {p['converted']:,}, "
                       f"windows known {p['windows_known']:,}"},
        ]  # fmt: skip
    return {
        "figures": figures,
        "params": {"sizes": sizes, "per_month": args.per_month, "batch": BATCH, "ingest_batches": INGEST_BATCHES},
        "notes": [_growth(points)],
        "points": points,
    }


def _growth(points: list[dict[str, Any]]) -> str:
    first, last = points[0], points[-1]
    factor = last["signals"] / max(first["signals"], 1)

    def ratio(key: str) -> str:
        return f"{last[key] / first[key]:.1f}×" if first[key] else "n/a"

    return (
        f"history ×{factor:.0f}: round after one batch {ratio('batch_ms')} (CPU {ratio('batch_cpu_ms')}), "
        f"idle round {ratio('idle_ms')}, restart CPU {ratio('restart_cpu_s')}, "
        f"restart {ratio('restart_s')}, RSS {ratio('rss_mb')}, RSS of the restarted process {ratio('restart_rss_mb')}"
    )


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _point(n: int, per_month: int) -> dict[str, Any]:
    from accord_agreements.application import Agreements
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.application import Metrics

    # History until "now", the middle of the month after `n / per_month` whole months.
    whole = max(round(n / per_month), 1)
    now = datetime(2026 + whole // 12, whole % 12 + 1, 15, 12, tzinfo=UTC)
    span = now - MONTH_START
    months = span / timedelta(days=30.4375)
    rnd = random.Random(20260101)
    batches = [_signals(i, min(BATCH, n - i), MONTH_START, span, n, rnd) for i in range(0, n, BATCH)]
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(hours=2)  # Amsterdam's month, roughly
    open_signals = int(n * max((now - month_start) / span, 0))
    print(f"   metrics-scale: {n:,} signals over {months:.1f} months", flush=True)
    collector = Principal("bench-collector", "service")
    with tempfile.TemporaryDirectory(prefix="accord-bench-metrics-scale-") as tmp_name:
        tmp = Path(tmp_name)
        clock = FakeClock(MONTH_START + timedelta(hours=9))
        agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
        env = sqlite_env(tmp / "metrics.sqlite")
        metrics = Metrics(env, clock=clock)
        try:
            sample_agreement(agreements, metrics)
            for b in batches:
                metrics.record(collector, list(spb.SignalBatch.FromString(b).signals))
            del batches
            clock.set(now)
            t0 = time.perf_counter()
            metrics.evaluate(now)
            print(f"   first round over all history: {time.perf_counter() - t0:.1f} s", flush=True)

            t0, c0 = time.perf_counter(), time.process_time()
            metrics.evaluate(now + timedelta(seconds=5))
            idle_ms, idle_windows = (time.perf_counter() - t0) * 1000, metrics.last_round.windows_judged
            idle_cpu_ms = (time.process_time() - c0) * 1000

            extra = n
            late = _signals(extra, BATCH, now - timedelta(minutes=10), timedelta(minutes=5), BATCH, rnd, origin=extra)
            extra += BATCH
            metrics.record(collector, list(spb.SignalBatch.FromString(late).signals))
            t0, c0 = time.perf_counter(), time.process_time()
            metrics.evaluate(now + timedelta(seconds=10))
            batch_ms, batch_windows = (time.perf_counter() - t0) * 1000, metrics.last_round.windows_judged
            batch_cpu_ms = (time.process_time() - c0) * 1000

            at = now + timedelta(seconds=10)

            def more(k: int) -> list[list[spb.Signal]]:
                nonlocal extra
                out = []
                for _ in range(k):
                    raw = _signals(extra, BATCH, at - timedelta(minutes=5), timedelta(minutes=4), BATCH, rnd, extra)
                    out.append(list(spb.SignalBatch.FromString(raw).signals))
                    extra += BATCH
                return out

            alone = more(INGEST_BATCHES)
            t0 = time.perf_counter()
            for signals in alone:
                metrics.record(collector, signals)
            ingest_alone = INGEST_BATCHES * BATCH / (time.perf_counter() - t0)

            during = more(INGEST_BATCHES)
            stop, rounds = threading.Event(), [0]

            def rounds_meanwhile() -> None:
                when = at
                while not stop.is_set():
                    when += timedelta(seconds=5)
                    metrics.evaluate(when)
                    rounds[0] += 1

            worker = threading.Thread(target=rounds_meanwhile)
            worker.start()
            t0 = time.perf_counter()
            for signals in during:
                metrics.record(collector, signals)
            ingest_rounds = INGEST_BATCHES * BATCH / (time.perf_counter() - t0)
            stop.set()
            worker.join()
            rss_mb = _rss_mb()
            held = sum(s.count for s in metrics._services.values())
            converted = sum(len(s.converted) for s in metrics._services.values())
            windows_known = len(metrics._closed_windows) + len(metrics._open_windows)
            last = at + timedelta(seconds=5 * (rounds[0] + 1))
        finally:
            agreements.close()
            metrics.close()

        # The restart in a process of its own, as a service restarting: its time and its memory.
        restart = _restart_in_process(env, last)
    return {
        "signals": n,
        "open_signals": open_signals,
        "idle_ms": idle_ms,
        "idle_windows": idle_windows,
        "idle_cpu_ms": idle_cpu_ms,
        "batch_cpu_ms": batch_cpu_ms,
        "batch_ms": batch_ms,
        "batch_windows": batch_windows,
        "ingest_alone": ingest_alone,
        "ingest_rounds": ingest_rounds,
        "rounds_during": rounds[0],
        "rss_mb": rss_mb,
        "held_signals": held,
        "converted": converted,
        "windows_known": windows_known,
        **restart,
    }


def _restart_in_process(env: dict[str, str], last: datetime) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.metrics_scale", json.dumps(env), last.isoformat()],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _restart(env: dict[str, str], last: datetime) -> dict[str, Any]:
    """A `Metrics` started on the store: construction, its first round (which reads the log from
    the judged position and judges what came after it), a second round; its memory."""
    from accord_kit.clock import FakeClock
    from accord_metrics.application import Metrics

    t0, c0 = time.perf_counter(), time.process_time()
    again = Metrics(env, clock=FakeClock(last))
    construct_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        again.evaluate(last + timedelta(seconds=5))
        first_round_s = time.perf_counter() - t1
        restart_cpu_s = time.process_time() - c0
        first_windows = again.last_round.windows_judged
        t2 = time.perf_counter()
        again.evaluate(last + timedelta(seconds=10))
        second_round_ms = (time.perf_counter() - t2) * 1000
        converted = sum(len(s.converted) for s in again._services.values())
    finally:
        again.close()
    return {
        "construct_s": construct_s,
        "first_round_s": first_round_s,
        "first_round_windows": first_windows,
        "second_round_ms": second_round_ms,
        "restart_s": construct_s + first_round_s,
        "restart_cpu_s": restart_cpu_s,
        "restart_rss_mb": _rss_mb(),
        "restart_converted": converted,
    }


if __name__ == "__main__":  # the restart, in a process of its own (see _restart_in_process)
    print(json.dumps(_restart(json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2]))))
