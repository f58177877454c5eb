"""Metrics after a backfill: the one round that judges months of history recorded with no round
between — what it costs and what memory it needs, at and after its peak.

Set-up, per size N (default 500,000 and 2,000,000 signals): a `Metrics` application on SQLite in a
process of its own (WAL, synchronous=FULL) that learned the sample SLA (availability, time-based,
and service level, monthly, Europe/Amsterdam) from an `Agreements` application's events, judged
once at its start; then N signals (half calls, half outages, as `bench.metrics` makes them) spread
evenly from 1 January 2026 at `--per-month` signals a month (default 20,000: 2,000,000 is 100
months) recorded through `Metrics.record` in batches of 1,000 as a service identity, with no round
between — a department sending its history, or a service stopped for that long.

Timed: the round at "now" (the middle of the month after the last), as the service runs a round
after its first (the collector paused, `accord_kit.heap.paused`): its wall and CPU time and the
windows it judged; the process's peak RSS (VmHWM) before it and after it; its RSS after the next
round (5 s later) and a settle of the heap as the service makes one every interval
(`accord_kit.heap.settle`: a full collection, the C allocator's free pages given back).
Then a what-if of the last closed month (the agreement's own terms as the proposal: every stored
batch re-read, the signals that reach the month held): its CPU and the memory it needs over what
the process holds (its peak RSS reset first, `/proc/self/clear_refs`).
Then a re-derivation of the agreement (every closed window recomputed from the stored batches)
twice: in one pass holding every signal (as re-derivation did before it read the store a span of
time at a time) and with the signals a pass holds (`--rederive-held`, default
`audit.REDERIVE_HELD`): for each its CPU, the passes, the windows checked and found amiss (none,
or the benchmark fails) and the memory it needs over what the process holds (the heap settled and
the peak RSS reset before each).
`--backfill-held` sets the inputs of closed windows a round holds at once (`Metrics.closed_held`;
a number larger than N holds them all, as rounds did before the budget).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from accord.metrics.v1 import signals_pb2 as spb
from bench.metrics import MONTH_START, _signals, sample_agreement
from bench.metrics_scale import _now, _rss_mb, _status_mb

NAME = "metrics-backfill"
SUMMARY = "metrics: the round after months of history recorded with no round between (its CPU, peak RSS, RSS after)"
BATCH = 1_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backfill-sizes",
        default="500000,2000000",
        help="signals recorded before the round, comma-separated (default 500000,2000000)",
    )
    parser.add_argument(
        "--backfill-held",
        type=int,
        default=0,
        help="inputs of closed windows a round holds at once (default 0: the service's own, judging.CLOSED_HELD)",
    )
    parser.add_argument(
        "--rederive-held",
        type=int,
        default=0,
        help="signals a re-derivation's pass holds (default 0: the service's own, audit.REDERIVE_HELD)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s.replace("_", "")) for s in str(args.backfill_sizes).split(",") if s.strip()]
    if not sizes or any(n < BATCH for n in sizes):
        raise ValueError(f"--backfill-sizes {args.backfill_sizes!r}: sizes of at least {BATCH:,}")
    if args.backfill_held < 0:
        raise ValueError(f"--backfill-held {args.backfill_held}: not negative")
    if args.rederive_held < 0:
        raise ValueError(f"--rederive-held {args.rederive_held}: not negative")
    per_month = int(getattr(args, "per_month", 20_000))
    spawn = multiprocessing.get_context("spawn")
    points: list[dict[str, Any]] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="accord-bench-metrics-backfill-") as tmp, spawn.Pool(1) as pool:
            points.append(pool.apply(_point, (n, per_month, tmp, int(args.backfill_held), int(args.rederive_held))))
    figures: list[dict[str, Any]] = []
    for p in points:
        s = f"{p['signals']:,} signals over {p['months']} months"
        figures += [
            {"name": f"round after a backfill, {s}", "value": p["round_cpu_s"], "unit": "s",
             "detail": f"CPU (wall {p['round_s']:.1f} s; {p['round_cpu_us']:.1f} µs a signal); windows judged "
                       f"{p['windows']}; closed windows' inputs held at once {p['held']:,}"},
            {"name": f"peak RSS in that round, {s}", "value": p["peak_mb"], "unit": "MiB",
             "detail": f"VmHWM after the round; before it (recording) {p['hwm_before_mb']:.0f} MiB"},
            {"name": f"RSS after it, {s}", "value": p["after_mb"], "unit": "MiB",
             "detail": f"after the next round and a settle of the heap (right after the round: "
                       f"{p['right_after_mb']:.0f} MiB)"},
            {"name": f"what-if of the last month after it, {s}", "value": p["what_if_cpu_s"], "unit": "s",
             "detail": f"CPU (every stored batch read, the month's signals held); the memory it needed over what "
                       f"the process held: {p['what_if_mb']:.0f} MiB (its peak RSS reset before it)"},
        ]  # fmt: skip
        for how, r in (("in one pass", p["rederive_one"]), ("a span of time at a time", p["rederive"])):
            figures += [
                {"name": f"re-derivation {how}, {s}", "value": r["mb"], "unit": "MiB",
                 "detail": f"memory needed over what the process held; CPU {r['cpu_s']:.1f} s; {r['passes']} "
                           f"pass(es) of at most {r['held']:,} signals; {r['checked']} windows checked, "
                           f"{r['mismatches']} amiss"},
            ]  # fmt: skip
    return {
        "figures": figures,
        "params": {
            "sizes": sizes,
            "per_month": per_month,
            "held": args.backfill_held or "CLOSED_HELD",
            "rederive_held": args.rederive_held or "REDERIVE_HELD",
        },
    }


def _point(n: int, per_month: int, store_dir: str, held: int, rederive_held: int) -> dict[str, Any]:
    from accord_agreements.application import Agreements
    from accord_agreements.samples import sla_terms
    from accord_kit import heap
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.application import Metrics
    from accord_metrics.audit import REDERIVE_HELD, MetricsAudit

    now = _now(n, per_month)
    span = now - MONTH_START
    rnd = random.Random(20260101)
    tmp = Path(store_dir)
    clock = FakeClock(MONTH_START + timedelta(hours=9))
    agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
    metrics = Metrics(sqlite_env(tmp / "metrics.sqlite"), clock=clock)
    try:
        if held:
            metrics.closed_held = held
        agreement_id = sample_agreement(agreements, metrics)
        metrics.evaluate(clock.now())
        collector = Principal("bench-collector", "service")
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            raw = _signals(i, min(BATCH, n - i), MONTH_START, span, n, rnd)
            metrics.record(collector, list(spb.SignalBatch.FromString(raw).signals))
        print(f"   metrics-backfill: {n:,} recorded in {time.perf_counter() - t0:,.0f} s", flush=True)
        hwm_before = _status_mb("VmHWM")
        clock.set(now)
        t0, c0 = time.perf_counter(), time.process_time()
        with heap.paused():
            metrics.evaluate(now)
        round_s, round_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        windows = metrics.last_round.windows_judged
        peak, right_after = _status_mb("VmHWM"), _rss_mb()
        clock.set(now + timedelta(seconds=5))
        with heap.paused():
            metrics.evaluate(now + timedelta(seconds=5))
        heap.settle()
        after = _rss_mb()
        # A what-if of the last closed month (the agreement's own terms as the proposal): its CPU
        # and the memory it needs over what the process holds (the peak reset first).
        Path("/proc/self/clear_refs").write_text("5")
        c0 = time.process_time()
        MetricsAudit(metrics).what_if(None, agreement_id, terms=sla_terms(), periods=1)
        what_if_cpu_s = time.process_time() - c0
        what_if_mb = _status_mb("VmHWM") - after
        rederived = {}
        for name, most in (("rederive_one", n + 1), ("rederive", rederive_held or REDERIVE_HELD)):
            heap.settle()
            base = _rss_mb()
            Path("/proc/self/clear_refs").write_text("5")
            c0 = time.process_time()
            found = MetricsAudit(metrics).rederive(agreement_id, held=most)
            cpu = time.process_time() - c0
            if found.mismatches:
                raise AssertionError(f"re-derivation found {len(found.mismatches)} windows amiss in an untouched store")
            rederived[name] = {"cpu_s": cpu, "passes": found.passes, "held": most, "checked": found.checked,
                               "mismatches": len(found.mismatches), "mb": _status_mb("VmHWM") - base}  # fmt: skip
            print(f"   metrics-backfill: re-derivation ({name}) {cpu:.1f} s CPU, {found.passes} passes", flush=True)
        return {
            "signals": n,
            "months": round((now - MONTH_START) / timedelta(days=30.4375)),
            "round_s": round_s,
            "round_cpu_s": round_cpu_s,
            "round_cpu_us": round_cpu_s / n * 1e6,
            "windows": windows,
            "held": metrics.closed_held,
            "hwm_before_mb": hwm_before,
            "peak_mb": peak,
            "right_after_mb": right_after,
            "after_mb": after,
            "what_if_cpu_s": what_if_cpu_s,
            "what_if_mb": what_if_mb,
            **rederived,
        }
    finally:
        metrics.close()
        agreements.close()
