"""Evaluation rounds over a portfolio of agreements: what a round costs for each agreement it
judges.

Set-up (not timed): the gateway benchmark's portfolio (`bench.gateway._build_portfolio`) — N
accepted agreements (default 1,000), the sample SLA (two objectives: availability and the
service level) over one of four services each, learned by a `Metrics` application on SQLite
(durable settings) in this process, January evaluated up to the 20th. Then, one fake hour
apart, rounds of three kinds, each in turn (default 5 of each; figures are medians):

* after a batch on every service (each service's calls): every agreement is judged, its
  service-level window again (an evaluation recorded when it changed; its availability window
  reads no call, so it is not judged for them);
* after a batch on one service (the services in turn): the agreements measuring it (N/4);
* with nothing new: none.

`--portfolio-distinct` gives every agreement targets of its own (99.90001 %, 99.90002 %, …): no
two agreements are judged alike, so no outcome is shared (see services/metrics/README.md,
"One outcome for the agreements that measure a service the same way").

Before the rounds the heap is settled once (`accord_kit.heap.settle`), as the running service
settles its own every `METRICS_HEAP_SETTLE_SECONDS`; `--portfolio-python-gc` leaves Python's
collector alone (the service with `METRICS_HEAP_SETTLE_SECONDS=0`).

Each round's CPU time (`time.process_time`), wall time, agreements and windows judged and
events recorded come from the round itself (`Metrics.last_round`); the figures divide the CPU
by the agreements judged. The collector's full collections during the rounds (how many, their
time, the longest) and the process's RSS at the end are reported.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from accord_kit.context import Principal
from accord_kit.heap import settle
from bench.gateway import EVALUATE_AT, SERVICES, _build_portfolio, _history_batch
from bench.metrics_scale import CollectorTime

NAME = "metrics-portfolio"
SUMMARY = "metrics evaluation rounds over a portfolio of agreements: CPU per agreement judged"

COLLECTOR = Principal("bench-collector", "service")
KINDS = ("every service", "one service", "nothing new")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics-portfolio benchmark")
    group.add_argument(
        "--portfolio-agreements", type=int, default=1000, help="accepted agreements in the portfolio (default 1000)"
    )
    group.add_argument(
        "--portfolio-rounds", type=int, default=5, help="rounds of each kind; figures are medians (default 5)"
    )
    group.add_argument(
        "--portfolio-distinct",
        action="store_true",
        help="give every agreement targets of its own, so that no two are judged alike (no outcome shared)",
    )
    group.add_argument(
        "--portfolio-python-gc",
        action="store_true",
        help="leave Python's collector alone: no settle of the heap before the rounds (METRICS_HEAP_SETTLE_SECONDS=0)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.portfolio_agreements
    rounds: int = args.portfolio_rounds
    if n < 1 or rounds < 1:
        raise ValueError("--portfolio-agreements and --portfolio-rounds must be > 0")
    with tempfile.TemporaryDirectory(prefix="accord-bench-portfolio-") as tmp:
        t0 = time.perf_counter()
        portfolio = _build_portfolio(Path(tmp), n, with_metrics=True, distinct=args.portfolio_distinct)
        setup_s = time.perf_counter() - t0
        print(f"   portfolio: {n:,} agreements in {setup_s:.1f} s", flush=True)
        metrics = portfolio.metrics
        assert metrics is not None
        settled = not args.portfolio_python_gc
        if settled:
            done = settle()
            print(f"   heap settled: {done.frozen:,} objects frozen in {done.seconds * 1000:.0f} ms", flush=True)
        collector = CollectorTime()
        gc.callbacks.append(collector)
        try:
            measured = _rounds(metrics, rounds)
        finally:
            gc.callbacks.remove(collector)
            gc.unfreeze()
            portfolio.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return _report(n, rounds, setup_s, measured, rss_mb, bool(args.portfolio_distinct), collector, settled)


def _rounds(metrics: Any, rounds: int) -> dict[str, list[dict[str, float]]]:
    measured: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    services = list(SERVICES)
    at = EVALUATE_AT
    step = 0
    for r in range(rounds):
        for kind in KINDS:
            step += 1
            at = at + timedelta(hours=1)
            if kind == "every service":
                for sid in services:
                    metrics.record(COLLECTOR, _history_batch(sid, step, at))
            elif kind == "one service":
                sid = services[r % len(services)]
                metrics.record(COLLECTOR, _history_batch(sid, step, at))
            metrics.clock.set(at)
            head = metrics.head_position()
            c0, w0 = time.process_time(), time.perf_counter()
            metrics.evaluate(at)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            last = metrics.last_round
            measured[kind].append(
                {
                    "cpu_ms": cpu * 1000,
                    "ms": wall * 1000,
                    "agreements": last.agreements_judged,
                    "windows": last.windows_judged,
                    "shared": last.windows_shared,
                    "events": metrics.head_position() - head,
                }
            )
        print(
            f"   rounds {r + 1}/{rounds}: " + ", ".join(f"{k} {measured[k][-1]['cpu_ms']:,.0f} ms CPU" for k in KINDS),
            flush=True,
        )
    return measured


def _report(
    n: int, rounds: int, setup_s: float, measured: dict[str, list[dict[str, float]]], rss_mb: float,
    distinct: bool = False, collector: CollectorTime | None = None, settled: bool = True,
) -> dict[str, Any]:  # fmt: skip
    collector = collector or CollectorTime()
    figures: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for kind in KINDS:
        rs = measured[kind]
        cpu = statistics.median(r["cpu_ms"] for r in rs)
        agreements = statistics.median(r["agreements"] for r in rs)
        windows = statistics.median(r["windows"] for r in rs)
        events = statistics.median(r["events"] for r in rs)
        shared = statistics.median(r["shared"] for r in rs)
        per = cpu / agreements if agreements else None
        summary[kind] = {
            "cpu_ms": cpu, "agreements": agreements, "windows": windows, "shared": shared, "events": events, "per": per,
        }  # fmt: skip
        low, high = min(r["cpu_ms"] for r in rs), max(r["cpu_ms"] for r in rs)
        detail = (
            f"CPU, median of {rounds} (range {low:,.0f}–{high:,.0f} ms; "
            f"wall {statistics.median(r['ms'] for r in rs):,.0f} ms); {agreements:,.0f} agreements and "
            f"{windows:,.0f} windows judged ({shared:,.0f} from another agreement's outcome), "
            f"{events:,.0f} events recorded"
        )
        if per is not None:
            detail += f"; {per:.2f} ms a judged agreement"
        label = f"{n:,} agreements" + (", each its own targets" if distinct else "")
        figures.append({"name": f"round, {kind}, {label}", "value": cpu, "unit": "ms", "detail": detail})
    how = "the heap settled before the rounds" if settled else "Python's collector alone (--portfolio-python-gc)"
    figures.append(
        {
            "name": "full collections during the rounds",
            "value": collector.full,
            "unit": "collections",
            "detail": f"{how}: {collector.full_seconds * 1000:,.0f} ms in all, the longest "
            f"{collector.longest * 1000:,.0f} ms, over {rounds * len(KINDS)} rounds",
        }
    )
    figures.append(
        {"name": f"RSS, {n:,} agreements", "value": rss_mb, "unit": "MiB", "detail": "peak of the process, at the end"}
    )
    return {
        "figures": figures,
        "params": {"agreements": n, "rounds": rounds, "setup_s": setup_s, "distinct": distinct, "settled": settled},
        "full_collections": {"count": collector.full, "ms": collector.full_seconds * 1000},
        "rounds": measured,
        "summary": summary,
    }
