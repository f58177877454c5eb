"""Metrics at growing history: what an evaluation round, memory, ingestion and a restart cost
as the signals stored grow while the open window stays the same size.

Set-up, for each size S (default 25,000, 50,000 and 100,000 signals; `--signals N` makes the
sizes N/4, N/2, N; `--scale-sizes A,B,C` gives them): a `Metrics` application on SQLite in a
process of its own (WAL, synchronous=FULL) that learned the sample SLA (availability,
time-based, and service level, monthly, Europe/Amsterdam) from an `Agreements` application's
events; S signals (half calls, half outages, as `bench.metrics` makes them) spread evenly from
1 January 2026 at `--per-month` signals a month (default 20,000), recorded through
`Metrics.record` in batches of `--scale-batch` (default 1,000; at most 10,000, the most one
RecordSignals message may carry) as a service identity; a first round at "now", the middle of
the last month (every window judged once: not timed here). `--scale-day D` puts "now" on day D of
that month instead of the 15th: on the 28th the open window holds nearly a whole month, as at a
month's end, where a restart converts the most.

With `--scale-grow` the sizes share one store, grown from one size to the next: the process of
each size opens the store the previous one left (a restart, not timed), records the signals
that bring it to S — spread evenly, at the same density, from just after the previous size's
last round to this size's "now" — and judges what they reach; the store is the one a service
recording the same batches would hold (the same application, the same `record` calls). The
figures of each size are then taken as without it; that process's RSS is of a process that
recorded the growth only.

Timed, per size (the rounds one after another, each `evaluate` 5 s after the previous one on
the fake clock):
* first round after judging all: `evaluate` 5 s after the first round at "now", nothing new —
  mostly its `end_round` releasing the inputs converted for the windows that round judged;
* idle round: `--scale-rounds` (default 5) further rounds with nothing new, as a running service's
  round when nothing came: their median, minimum and maximum, wall and CPU;
* round after one batch: `--scale-rounds` rounds, each after 1,000 new signals recorded in the
  open window: their median, minimum and maximum, wall and CPU;
* round after one live batch: rounds as a live stream's — each after 1,000 new signals spread
  over the 5 s since the round before (after every signal held, in time order: ≈ 200 signals a
  second, half of them outages of 1–9 s, so they overlap into one long merged outage), the
  round at their end; 30 of them (2.5 minutes of the stream), then `--scale-rounds` timed;
* round after an outage longer than any: one round after an outage of two hours recorded early in
  the open window, longer than any before (the kept selections kept, the outage folded in);
* round after one batch, an outage under way: the same as after one batch, with an outage reported without its end
  a few minutes before (availability then changes with every round's instant; the outage of two
  hours before them, so that it is not the longest once ended); its end is reported after them,
  and one round timed after that (a completion of a signal the open window holds);
* round after one batch and two corrections: `--scale-rounds` rounds, each after a batch of
  1,000 that also corrects an outage (10 s longer) and a call recorded earlier in the open window;
* ingest during rounds: 5 batches recorded while another thread runs rounds back to back
  (the clock moving 5 s a round), beside the same without rounds — signals/s each;
* restart: a second `Metrics` on the same store, in a process of its own — construction, then
  its first round (which reads the log from the judged position and judges what came after it,
  with its open windows, from the store's signal index; run as the service runs it, with the
  collector paused and the heap settled after it, `accord_kit.heap.building`), then a second
  round; that process's VmRSS, and the collector's time in it (full collections, the longest);
* restart under a stream: another `Metrics` started on the store while a process of its own
  records 20 batches of 1,000 into the open window (the last 10 minutes before the restart's
  clock), the first before its first round, the others 20 ms apart, while it runs — as the
  recording process does under a live stream; the CPU of the round after it (which notes what
  the stream stored — what the first round's fresh selection had read already among it) and of
  one more, and the running forms that round folded again from the start;
* round closing the month: last, another `Metrics` started on the store, its first round, a round
  5 s before the open window's end and the one 5 s after it, which closes the window: its CPU;
  then three batches of 1,000 late for the closed month (its last 10 minutes), each followed by a
  round (5 s apart): their CPU — late signals restating the month just closed;
* memory: resident set size after the rounds (VmRSS), the signals the store's index holds, the
  formula inputs held converted and the windows known.

With `--scale-services N` (default 1) the agreement measures N services (the e-mail service and
others of its provider's) and each batch — of the history, the timed rounds and the ingestion —
is one service's, the services taking turns (the outage of two hours and the one under way are
the first service's): an agreement of several services, each sending its own batches.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from accord.metrics.v1 import signals_pb2 as spb
from bench.metrics import MONTH_START, SERVICE_ID, _signals, sample_agreement

NAME = "metrics-scale"
SUMMARY = "metrics evaluation rounds, memory, ingestion during rounds and restart at growing history"
BATCH = 1000
INGEST_BATCHES = 5
LIVE_BEFORE = 30  # live batches, each with its round, before the live rounds timed: a stream going on a while
ROUNDS = 5  # idle rounds, and rounds after one batch, a size's figures take the median of (--scale-rounds)
MAX_BUILD_BATCH = 10_000  # the most signals one RecordSignals message may carry (accord_metrics.server)
ROUND_EVERY = 1_000_000  # while a history is built, a round each time this many more signals are recorded
STEP = timedelta(seconds=5)  # the fake clock's move from one timed round to the next
AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # the sample SLA's time zone: its months'


def measured(rounds: int = ROUNDS) -> int:
    """The signals a size's figures record beside its history: a batch before each of its `rounds`
    rounds after one batch (four times: late, live, with an outage under way — it and a long
    outage before it are two more — and with two corrections, which add none), and the batches
    recorded for ingestion alone and during rounds."""
    return (4 * rounds + LIVE_BEFORE + 2 * INGEST_BATCHES) * BATCH + 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics-scale benchmark")
    group.add_argument(
        "--scale-signals",
        type=int,
        default=100_000,
        help="the largest history, in signals; also measured at a quarter and a half of it (default 100,000)",
    )
    group.add_argument(
        "--scale-sizes",
        type=_sizes,
        default=None,
        help="the histories measured, in signals, comma-separated (e.g. 1000000,5000000,20000000); "
        "overrides --scale-signals",
    )
    group.add_argument(
        "--scale-grow",
        action="store_true",
        help="grow one store from each size to the next instead of building each size from nothing",
    )
    group.add_argument(
        "--scale-batch",
        type=int,
        default=BATCH,
        help=f"signals per recorded batch while building the history (default {BATCH:,}; at most {MAX_BUILD_BATCH:,})",
    )
    group.add_argument(
        "--scale-budget",
        type=float,
        default=0.0,
        help="seconds the run may take: a build still under way then stops, its size is measured at the "
        "signals recorded, and no larger size is built (default: no limit)",
    )
    group.add_argument(
        "--per-month", type=int, default=20_000, help="signals a month of history holds (default 20,000)"
    )
    group.add_argument(
        "--scale-day",
        type=int,
        default=NOW_DAY,
        help=f'the day of its last month a history ends on, "now" (1–28; default {NOW_DAY}: the open window '
        "half full; 28 nearly full, as at a month's end)",
    )
    group.add_argument(
        "--scale-services",
        type=int,
        default=1,
        help="services the agreement measures, each batch one service's in turn (default 1)",
    )
    group.add_argument(
        "--scale-ids",
        choices=("sequence", "random"),
        default="sequence",
        help="the calls' ids: call-00000042 in the order they arrive, or random UUIDs as many telephony "
        "systems give them (default sequence)",
    )
    group.add_argument(
        "--scale-objectives",
        choices=("sample", "calls"),
        default="sample",
        help="the agreement's objectives: the sample SLA's (availability and service level), or those "
        "and a contact centre's other call objectives — ASA, abandonment, AHT — over the same calls "
        "(default sample)",
    )
    group.add_argument(
        "--scale-rounds",
        type=int,
        default=ROUNDS,
        help=f"idle rounds, and rounds after one batch, timed at each size: their median, min and max "
        f"are reported (default {ROUNDS})",
    )


def _monthly(oid: str, metric: str, target: str, comparator: str, parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "objective_id": oid, "name": oid, "metric": metric, "parameters": parameters, "comparator": comparator,
        "target": target, "window": {"kind": "WINDOW_KIND_MONTH"}, "calendar_id": "24x7",
    }  # fmt: skip


# `--scale-objectives calls`: a contact centre's other call objectives beside the sample's service
# level (each a tally of the same calls of the month).
CALL_OBJECTIVES = (
    _monthly("asa", "METRIC_ASA", "30", "COMPARATOR_AT_MOST", {}),
    _monthly("abandonment", "METRIC_ABANDONMENT_RATE", "5", "COMPARATOR_AT_MOST", {"short_abandon_seconds": "5"}),
    _monthly("aht", "METRIC_AVERAGE_HANDLE_TIME", "600", "COMPARATOR_AT_MOST", {}),
)


def service_names(n: int) -> list[str]:
    """The services an agreement of `n` measures: the sample's e-mail service, then others."""
    return [SERVICE_ID, *(f"{SERVICE_ID}-{k}" for k in range(2, n + 1))]


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are whole numbers, comma-separated") from None
    if not sizes or any(n < BATCH for n in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes of at least {BATCH:,} signals, increasing")
    return sizes


def run(args: argparse.Namespace) -> dict[str, Any]:
    top = int(args.scale_signals)
    # `--signals` (the metrics benchmark's option), when given on the command line, sizes this one too.
    if any(a == "--signals" or a.startswith("--signals=") for a in sys.argv[1:]):
        top = int(args.metrics_signals)
    sizes = list(args.scale_sizes) if args.scale_sizes else [top // 4, top // 2, top]
    build_batch = int(args.scale_batch)
    if not 1 <= build_batch <= MAX_BUILD_BATCH:
        raise ValueError(f"--scale-batch {build_batch}: from 1 to {MAX_BUILD_BATCH:,}")
    grow = bool(args.scale_grow)
    rounds = int(args.scale_rounds)
    if rounds < 1:
        raise ValueError(f"--scale-rounds {rounds}: at least 1")
    services = int(args.scale_services)
    if services < 1:
        raise ValueError(f"--scale-services {services}: at least 1")
    day = int(args.scale_day)
    if not 1 <= day <= 28:
        raise ValueError(f"--scale-day {day}: from 1 to 28 (a day every month has)")
    extra = measured(rounds)
    deadline = time.time() + args.scale_budget if args.scale_budget else 0.0
    if grow:
        for earlier, later in itertools.pairwise(sizes):
            if later <= earlier + extra:
                raise ValueError(
                    f"--scale-grow: {later:,} signals: the store holds {earlier + extra:,} after {earlier:,}'s"
                )
            if _now(later, int(args.per_month), day) <= _now(earlier, int(args.per_month), day):
                raise ValueError(
                    f"--scale-grow: {later:,} signals end in the same month as {earlier:,} at this density"
                )
    # Each size in a process of its own: its resident memory is its own.
    spawn = multiprocessing.get_context("spawn")
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="accord-bench-metrics-scale-") as tmp_name:
        base = _Base()
        for k, size in enumerate(sizes):
            store = Path(tmp_name) / (f"size-{k}" if not grow else "grown")
            start = base if grow else _Base()
            with spawn.Pool(1) as pool:
                point = pool.apply(
                    _point,
                    (
                        size,
                        int(args.per_month),
                        str(store),
                        start.__dict__,
                        build_batch,
                        deadline,
                        rounds,
                        services,
                        args.scale_ids == "random",
                        args.scale_objectives == "calls",
                        day,
                    ),
                )
            points.append(point)
            base = _Base(**point.pop("base"))
            if not grow:
                _remove_store(store)
            if point["cut"]:
                break
    figures: list[dict[str, Any]] = []
    for p in points:
        s = f"{p['signals']:,} signals"
        figures += [
            {"name": f"idle round, {s}", "value": p["idle_ms"], "unit": "ms",
             "detail": f"nothing new, median of {rounds} rounds 5 s apart (wall {_span(p, 'idle_ms')} ms); "
                       f"windows judged {_judged(p['idle_rounds'])}; CPU {p['idle_cpu_ms']:.1f} ms "
                       f"({_span(p, 'idle_cpu_ms')})"},
            {"name": f"first round after judging all, {s}", "value": p["first_idle_ms"], "unit": "ms",
             "detail": f"the idle round right after the round that judged every window (releasing their "
                       f"inputs); windows judged {p['first_idle_windows']}; CPU {p['first_idle_cpu_ms']:.1f} ms"},
            {"name": f"round after one batch, {s}", "value": p["batch_ms"], "unit": "ms",
             "detail": f"{BATCH:,} signals in the open window ({p['open_signals']:,} there), median of {rounds} "
                       f"rounds each after a new batch (wall {_span(p, 'batch_ms')} ms); windows judged "
                       f"{_judged(p['batch_rounds'])}; CPU {p['batch_cpu_ms']:.0f} ms ({_span(p, 'batch_cpu_ms', 0)})"},
            {"name": f"round after one live batch, {s}", "value": p["live_ms"], "unit": "ms",
             "detail": f"{BATCH:,} signals spread over the 5 s since the round before, after every signal held "
                       f"(half of them outages of 1–9 s, overlapping), the round at their end, {LIVE_BEFORE} such "
                       f"batches and rounds before; median of {rounds} "
                       f"(wall {_span(p, 'live_ms')} ms); windows judged {_judged(p['live_rounds'])}; CPU "
                       f"{p['live_cpu_ms']:.0f} ms ({_span(p, 'live_cpu_ms', 0)})"},
            {"name": f"round after one batch, an outage under way, {s}", "value": p["under_way_ms"], "unit": "ms",
             "detail": f"as the rounds above, with an outage reported without its end since 3 minutes; median of "
                       f"{rounds} (wall {_span(p, 'under_way_ms')} ms); windows judged "
                       f"{_judged(p['under_way_rounds'])}; CPU {p['under_way_cpu_ms']:.0f} ms "
                       f"({_span(p, 'under_way_cpu_ms', 0)})"},
            {"name": f"round after one batch and two corrections, {s}", "value": p["corrected_ms"], "unit": "ms",
             "detail": f"as the rounds after one batch, each batch also correcting an outage and a call recorded "
                       f"earlier in the open window; median of {rounds} (wall {_span(p, 'corrected_ms')} ms); "
                       f"windows judged {_judged(p['corrected_rounds'])}; CPU {p['corrected_cpu_ms']:.0f} ms "
                       f"({_span(p, 'corrected_cpu_ms', 0)})"},
            {"name": f"round after an outage longer than any, {s}", "value": p["longer_ms"], "unit": "ms",
             "detail": f"one round after an outage of two hours early in the open window, longer than any before "
                       f"(the kept selections kept, the outage folded in); CPU "
                       f"{p['longer_cpu_ms']:.0f} ms"},
            {"name": f"round after the outage's end, {s}", "value": p["ended_ms"], "unit": "ms",
             "detail": f"one round after its end is reported (a completion of a signal the open window holds); "
                       f"CPU {p['ended_cpu_ms']:.0f} ms"},
            {"name": f"ingest during rounds, {s}", "value": p["ingest_rounds"], "unit": "signals/s",
             "detail": f"{p['rounds_during']} rounds ran meanwhile; without rounds {p['ingest_alone']:,.0f} signals/s"},
            {"name": f"restart to first round done, {s}", "value": p["restart_s"], "unit": "s",
             "detail": f"a process of its own (CPU {p['restart_cpu_s']:.2f} s): construction "
                       f"{p['construct_s']:.2f} s, first round "
                       f"{p['first_round_s']:.2f} s ({p['first_round_windows']} windows judged), second round "
                       f"{p['second_round_ms']:.1f} ms; its RSS then {p['restart_rss_mb']:.0f} MiB, "
                       f"{p['restart_converted']:,} formula inputs converted; the collector "
                       f"{p['restart_gc_s']:.2f} s of it ({p['restart_gc_full']} full collections, the longest "
                       f"{p['restart_gc_longest_s'] * 1000:.0f} ms)"},
            {"name": f"round closing the month, {s}", "value": p["closing_cpu_ms"], "unit": "ms",
             "detail": f"CPU of a restarted process's round 5 s after the open window's end (after its first "
                       f"round and one 5 s before the end): the month closed from its kept selection and running "
                       f"evaluations; "
                       f"windows judged {p['closing_windows']}"},
            {"name": f"round after a batch late for the closed month, {s}",
             "value": statistics.median(p["late_closed_cpu_ms"]), "unit": "ms",
             "detail": f"CPU, median of {len(p['late_closed_cpu_ms'])} rounds, each after 1,000 signals late for the "
                       f"month the round above closed (its last 10 minutes): the month restated from its kept "
                       f"running evaluations (within an hour of its end) — "
                       f"{', '.join(f'{v:.1f}' for v in p['late_closed_cpu_ms'])} ms"},
            {"name": f"round after a restart under a stream, {s}", "value": p["streamed_after_cpu_ms"],
             "unit": "ms",
             "detail": f"CPU of the round after a restart's first round while another process recorded "
                       f"{p['streamed_stored']:,} signals into the open window before and during that round "
                       f"(the ones its selection read already noted now); running forms folded again in it "
                       f"{p['streamed_refolded']}; the round after it {p['streamed_next_cpu_ms']:.1f} ms"},
            {"name": f"RSS, {s}", "value": p["rss_mb"], "unit": "MiB",
             "detail": f"signals indexed {p['held_signals']:,}, formula inputs converted {p['converted']:,}, "
                       f"windows known {p['windows_known']:,}"},
            {"name": f"store on disk, {s}", "value": p["store_mb"], "unit": "MiB",
             "detail": f"the SQLite file after the restart {p['store_file_mb']:,.0f} MiB, its WAL "
                       f"{p['store_wal_mb']:,.0f} MiB"},
            {"name": f"build, {s}", "value": p["build_rate"], "unit": "signals/s",
             "detail": f"{p['built']:,} signals recorded in batches of {p['build_batch']:,} in "
                       f"{p['build_s']:,.0f} s (CPU {p['build_cpu_us']:.1f} µs a signal); rounds judging them "
                       f"(one every {ROUND_EVERY:,} recorded and the first at now) {p['first_full_s']:,.1f} s "
                       f"(CPU {p['first_full_cpu_s']:,.1f} s)"},
        ]  # fmt: skip
    return {
        "figures": figures,
        "params": {
            "sizes": sizes,
            "per_month": args.per_month,
            "day": day,
            "batch": BATCH,
            "build_batch": build_batch,
            "grow": grow,
            "ingest_batches": INGEST_BATCHES,
            "rounds": rounds,
            "services": services,
            "ids": args.scale_ids,
            "objectives": args.scale_objectives,
        },
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
        f"idle round {ratio('idle_ms')} (CPU {ratio('idle_cpu_ms')}), first round after judging all "
        f"{ratio('first_idle_ms')}, restart CPU {ratio('restart_cpu_s')}, "
        f"restart {ratio('restart_s')}, RSS {ratio('rss_mb')}, RSS of the restarted process {ratio('restart_rss_mb')}"
    )


def _span(point: dict[str, Any], key: str, digits: int = 1) -> str:
    """The minimum and maximum of the rounds whose median `point[key]` is."""
    return f"{point[key + '_min']:.{digits}f}–{point[key + '_max']:.{digits}f}"


def _judged(samples: list[dict[str, Any]]) -> str:
    """The windows the timed rounds judged: one number when they all judged as many."""
    low, high = min(r["windows"] for r in samples), max(r["windows"] for r in samples)
    return str(low) if low == high else f"{low}–{high}"


def _summary(name: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The median, minimum and maximum of timed rounds' wall (`{name}_ms…`) and CPU (`{name}_cpu_ms…`)."""
    out: dict[str, Any] = {f"{name}_rounds": samples}
    for key, field in ((f"{name}_ms", "ms"), (f"{name}_cpu_ms", "cpu_ms")):
        values = [r[field] for r in samples]
        out |= {key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)}
    out[f"{name}_windows"] = statistics.median_low([r["windows"] for r in samples])
    return out


class _Base:
    """Where a size's history starts: the signals already stored, the next signal number and the
    instant the new ones start from (after the previous size's last round, when growing)."""

    def __init__(self, stored: int = 0, next_id: int = 0, start: str = "") -> None:
        self.stored, self.next_id, self.start = stored, next_id, start


NOW_DAY = 15  # the day of the month a history ends on, unless `--scale-day` says another


def _now(n: int, per_month: int, day: int = NOW_DAY) -> datetime:
    """ "Now" for a history of `n` signals: day `day` (noon UTC) of the month after `n / per_month`
    whole months."""
    whole = max(round(n / per_month), 1)
    return datetime(2026 + whole // 12, whole % 12 + 1, day, 12, tzinfo=UTC)


def _reached(start: datetime, span: timedelta, done: int, count: int) -> datetime:
    """The instant a history of `count` signals spread evenly over [start, start + span) has
    reached after `done` of them (a fraction of the span: decades of span times millions of
    signals overflow a timedelta)."""
    return start + span * (done / count)


def _store_sizes(path: Path) -> tuple[float, float]:
    def size(p: Path) -> float:
        return p.stat().st_size / 2**20 if p.exists() else 0.0

    return size(path), size(path.with_name(path.name + "-wal"))


def _remove_store(store: Path) -> None:
    for f in sorted(store.glob("*")):
        f.unlink()
    store.rmdir()


def _status_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process's /proc status (VmRSS, VmHWM…), in MiB (0 where none)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _point(
    n: int,
    per_month: int,
    store_dir: str,
    base_fields: dict[str, Any],
    build_batch: int,
    deadline: float = 0.0,
    rounds: int = ROUNDS,
    services: int = 1,
    random_ids: bool = False,
    call_objectives: bool = False,
    day: int = NOW_DAY,
) -> dict[str, Any]:
    from accord_agreements.application import Agreements
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.application import Metrics

    base = _Base(**base_fields)
    service_ids = service_names(services)
    turn = itertools.count()

    def in_turn(signals: list[spb.Signal]) -> list[spb.Signal]:
        """A batch as the next service's (every service in turn)."""
        service = service_ids[next(turn) % len(service_ids)]
        for s in signals:
            s.service_id = service
        return signals

    # History until "now", the middle of the month after `n / per_month` whole months; the signals
    # this process records spread evenly from where the store's history stops (1 January 2026 for
    # a new store) until then.
    now = _now(n, per_month, day)
    start = datetime.fromisoformat(base.start) if base.start else MONTH_START
    span = now - start
    count = n - base.stored
    if count < 1:
        raise ValueError(f"{n:,} signals: the store holds {base.stored:,} already")
    months = (now - MONTH_START) / timedelta(days=30.4375)
    rnd = random.Random(20260101 + base.stored)
    first_id = base.next_id
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(hours=2)  # Amsterdam's month, roughly
    open_signals = int(count * max((now - month_start) / span, 0))
    print(f"   metrics-scale: {n:,} signals over {months:.1f} months ({count:,} to record)", flush=True)
    collector = Principal("bench-collector", "service")
    tmp = Path(store_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    fresh = not base.start
    clock = FakeClock(MONTH_START + timedelta(hours=9) if fresh else start)
    agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
    env = sqlite_env(tmp / "metrics.sqlite")
    metrics = Metrics(env, clock=clock)
    try:
        if fresh:
            sample_agreement(agreements, metrics, service_ids, CALL_OBJECTIVES if call_objectives else ())
        # A round every ROUND_EVERY signals recorded, at the instant the history has reached, as a
        # service judges its windows while signals arrive: no round judges more than that many.
        judge_s = judge_cpu_s = 0.0
        cut = False
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(first_id, first_id + count, build_batch):
            k = min(build_batch, first_id + count - i)
            raw = _signals(i, k, start, span, count, rnd, origin=first_id, random_ids=random_ids)
            metrics.record(collector, in_turn(list(spb.SignalBatch.FromString(raw).signals)))
            done = i + k - first_id
            if deadline and time.time() > deadline and done < count:
                # Out of time: the history stops here, and the figures are taken at the size reached.
                now = _reached(start, span, done, count) + timedelta(minutes=15)
                print(f"   out of time after {done:,} of {count:,}: the figures at {base.stored + done:,}", flush=True)
                n, count, cut = base.stored + done, done, True
                month_start = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(hours=2)
                open_signals = int(count * max((now - month_start) / (now - start), 0))
                break
            if done % ROUND_EVERY < k and done < count:
                when = _reached(start, span, done, count)
                clock.set(when)
                t1, c1 = time.perf_counter(), time.process_time()
                metrics.evaluate(when)
                judge_s, judge_cpu_s = judge_s + time.perf_counter() - t1, judge_cpu_s + time.process_time() - c1
                print(
                    f"   recorded {done:,} in {time.perf_counter() - t0:,.0f} s "
                    f"(CPU {time.process_time() - c0:,.0f} s, rounds {judge_cpu_s:,.0f} s of it); "
                    f"RSS {_rss_mb():,.0f} MiB",
                    flush=True,
                )
        build_s = time.perf_counter() - t0 - judge_s
        build_cpu_s = time.process_time() - c0 - judge_cpu_s
        print(f"   recorded {count:,} signals: {build_s:,.0f} s (CPU {build_cpu_s:,.0f} s)", flush=True)
        clock.set(now)
        t0, c0 = time.perf_counter(), time.process_time()
        metrics.evaluate(now)
        first_full_s, first_full_cpu_s = judge_s + time.perf_counter() - t0, judge_cpu_s + time.process_time() - c0
        print(f"   rounds over what was recorded: {first_full_s:,.1f} s (CPU {first_full_cpu_s:,.1f} s)", flush=True)

        at = now

        def timed_round() -> dict[str, Any]:
            """A round 5 s after the previous one: its wall and CPU time and the windows it judged."""
            nonlocal at
            at += STEP
            t0, c0 = time.perf_counter(), time.process_time()
            metrics.evaluate(at)
            ms, cpu_ms = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
            return {"ms": ms, "cpu_ms": cpu_ms, "windows": metrics.last_round.windows_judged}

        # The first round after the one that judged every window, then idle rounds as a running
        # service's, then rounds each after one new batch in the open window.
        first_idle = timed_round()
        idle = [timed_round() for _ in range(rounds)]
        extra = first_id + count

        def after_batches() -> list[dict[str, Any]]:
            """`rounds` rounds, each after a batch of 1,000 in the open window (10 minutes late)."""
            nonlocal extra
            out = []
            for _ in range(rounds):
                late = _signals(
                    extra, BATCH, at - timedelta(minutes=10), timedelta(minutes=5), BATCH, rnd, extra, random_ids
                )
                extra += BATCH
                metrics.record(collector, in_turn(list(spb.SignalBatch.FromString(late).signals)))
                out.append(timed_round())
            return out

        batched = after_batches()

        def live_rounds() -> list[dict[str, Any]]:
            """Rounds as a live stream's: each after a batch of 1,000 spread over the 5 s since the
            round before (in time order, after every signal held), the round at their end —
            `LIVE_BEFORE` of them, then `rounds` (those returned)."""
            nonlocal extra
            out = []
            for _ in range(LIVE_BEFORE + rounds):
                fresh = _signals(extra, BATCH, at, STEP, BATCH, rnd, extra, random_ids)
                extra += BATCH
                metrics.record(collector, in_turn(list(spb.SignalBatch.FromString(fresh).signals)))
                out.append(timed_round())
            return out[LIVE_BEFORE:]

        live = live_rounds()
        # An outage under way (its end not reported yet) since a few minutes: the same rounds. First
        # an outage of two hours early in the open window, longer than any before (timed), so that
        # the one under way, once ended, is not the longest.
        long = spb.Signal(signal_id=f"outage-long-{extra}", service_id=SERVICE_ID)
        long.outage.start.FromDatetime(month_start + timedelta(hours=3))
        long.outage.end.FromDatetime(month_start + timedelta(hours=5))
        metrics.record(collector, [long])
        longer = timed_round()  # the outage folded in, the kept selections kept
        down = spb.Signal(signal_id=f"outage-under-way-{extra}", service_id=SERVICE_ID)
        down.outage.start.FromDatetime(at - timedelta(minutes=3))
        metrics.record(collector, [down])
        under_way = after_batches()
        down.outage.end.FromDatetime(at)
        metrics.record(collector, [down], reason="outage ended")
        ended = timed_round()  # its end: a completion of a signal the open window holds

        def corrected_rounds() -> list[dict[str, Any]]:
            """`rounds` rounds, each after a batch of 1,000 in the open window with two corrections
            of history recorded there: an outage's (longer by 10 s) and a call's (another content,
            as the generator draws it again), each on the service that recorded it."""
            nonlocal extra
            out = []
            # From a day into the open window (its start is Amsterdam's month start, roughly).
            first_open = first_id + max(count - open_signals, 0) + open_signals // 30
            for r in range(rounds):
                late = _signals(
                    extra, BATCH, at - timedelta(minutes=10), timedelta(minutes=5), BATCH, rnd, extra, random_ids
                )
                extra += BATCH
                batch = in_turn(list(spb.SignalBatch.FromString(late).signals))
                for parity in (1, 0):  # an outage (odd), a call (even)
                    i = first_open + (r * 7919) % max(open_signals // 2, 1)
                    i += (i - parity) % 2  # its kind
                    raw = _signals(i, 1, start, span, count, random.Random(r), origin=first_id, random_ids=random_ids)
                    (fixed,) = spb.SignalBatch.FromString(raw).signals
                    if fixed.HasField("outage"):
                        fixed.outage.end.FromDatetime(fixed.outage.end.ToDatetime(UTC) + timedelta(seconds=10))
                    fixed.service_id = service_ids[((i - first_id) // build_batch) % len(service_ids)]
                    batch.append(fixed)
                metrics.record(collector, batch, reason="corrected")
                out.append(timed_round())
            return out

        corrected = corrected_rounds()

        def more(k: int) -> list[list[spb.Signal]]:
            nonlocal extra
            out = []
            for _ in range(k):
                raw = _signals(
                    extra, BATCH, at - timedelta(minutes=5), timedelta(minutes=4), BATCH, rnd, extra, random_ids
                )
                out.append(in_turn(list(spb.SignalBatch.FromString(raw).signals)))
                extra += BATCH
            return out

        alone = more(INGEST_BATCHES)
        t0 = time.perf_counter()
        for signals in alone:
            metrics.record(collector, signals)
        ingest_alone = INGEST_BATCHES * BATCH / (time.perf_counter() - t0)

        during = more(INGEST_BATCHES)
        stop, meanwhile = threading.Event(), [0]

        def rounds_meanwhile() -> None:
            when = at
            while not stop.is_set():
                when += STEP
                metrics.evaluate(when)
                meanwhile[0] += 1

        worker = threading.Thread(target=rounds_meanwhile)
        worker.start()
        t0 = time.perf_counter()
        for signals in during:
            metrics.record(collector, signals)
        ingest_rounds = INGEST_BATCHES * BATCH / (time.perf_counter() - t0)
        stop.set()
        worker.join()
        rss_mb = _rss_mb()
        held_by_service = {sid: s.count for sid, s in metrics._services.items() if s.count}
        held = sum(held_by_service.values())
        converted = sum(len(s.converted) for s in metrics._services.values())
        windows_known = len(metrics._closed_windows) + len(metrics._open_windows)
        last = at + STEP * (meanwhile[0] + 1)
    finally:
        agreements.close()
        metrics.close()

    # The restart in a process of its own, as a service restarting: its time and its memory.
    restart = _restart_in_process(env, last)
    streamed = _restart_in_process(env, last, "streamed", str(n))
    closing = _restart_in_process(env, last, "closing", str(n))
    store_file_mb, store_wal_mb = _store_sizes(tmp / "metrics.sqlite")
    point = {
        "signals": n,
        "open_signals": open_signals,
        "first_idle_ms": first_idle["ms"],
        "first_idle_cpu_ms": first_idle["cpu_ms"],
        "first_idle_windows": first_idle["windows"],
        **_summary("idle", idle),
        **_summary("batch", batched),
        **_summary("live", live),
        **_summary("under_way", under_way),
        "ended_ms": ended["ms"],
        "ended_cpu_ms": ended["cpu_ms"],
        "longer_ms": longer["ms"],
        "longer_cpu_ms": longer["cpu_ms"],
        **_summary("corrected", corrected),
        "ingest_alone": ingest_alone,
        "ingest_rounds": ingest_rounds,
        "rounds_during": meanwhile[0],
        "rss_mb": rss_mb,
        "held_signals": held,
        "held_by_service": held_by_service,
        "converted": converted,
        "windows_known": windows_known,
        "built": count,
        "build_batch": build_batch,
        "build_s": build_s,
        "build_rate": count / build_s,
        "build_cpu_us": build_cpu_s / count * 1e6,
        "first_full_s": first_full_s,
        "first_full_cpu_s": first_full_cpu_s,
        "store_file_mb": store_file_mb,
        "store_wal_mb": store_wal_mb,
        "store_mb": store_file_mb + store_wal_mb,
        **restart,
        **streamed,
        **closing,
        # Where a grown store's next size starts: every signal recorded here is stored.
        "base": {"stored": n + measured(rounds) + streamed["streamed_stored"] + closing["late_closed_stored"],
                 "next_id": extra,
                 "start": (last + timedelta(minutes=1)).isoformat()},
        "cut": cut,
    }  # fmt: skip
    # Each size's figures as soon as they are taken, should a long run not end.
    print(f"   metrics-scale point: {json.dumps(point)}", flush=True)
    return point


def _restart_in_process(env: dict[str, str], last: datetime, *mode: str) -> dict[str, Any]:
    """`_restart` in a process of its own; `mode` "streamed" and the size (which keeps the ids the
    stream records its own): `_restart_streamed` instead; "closing": `_closing`."""
    command = [sys.executable, "-m", "bench.metrics_scale", json.dumps(env), last.isoformat(), *mode]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _closing(env: dict[str, str], last: datetime, size: int) -> dict[str, Any]:
    """A `Metrics` started on the store, its first round, a round 5 s before the open window's end
    (Amsterdam's month) and the round 5 s after it, which closes the window: that round's CPU;
    then `LATE_BATCHES` batches of `BATCH` late for the closed month (its last 10 minutes), each
    followed by a round 5 s after the one before: their CPU. Run last: the store's month is closed
    after it (`size` keeps the late batches' ids their own)."""
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_kit.heap import building
    from accord_metrics.application import Metrics

    local = last.astimezone(AMSTERDAM)
    end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=AMSTERDAM).astimezone(UTC)
    again = Metrics(env, clock=FakeClock(last))
    collector = Principal("bench-collector", "service")
    rnd = random.Random(size + 1)
    late: list[float] = []
    try:
        with building():
            again.evaluate(last + timedelta(seconds=5))
        again.evaluate(end - timedelta(seconds=5))
        at = end + timedelta(seconds=5)
        c0 = time.process_time()
        again.evaluate(at)
        closing_cpu_ms = (time.process_time() - c0) * 1000
        closing_windows = again.last_round.windows_judged
        first = STREAM_FIRST_ID + size + STREAM_BATCHES * BATCH
        for k in range(LATE_BATCHES):
            i = first + k * BATCH
            raw = _signals(i, BATCH, end - STREAM_SPAN, STREAM_SPAN, BATCH, rnd, origin=i)
            again.record(collector, list(spb.SignalBatch.FromString(raw).signals))
            at += STEP
            c1 = time.process_time()
            again.evaluate(at)
            late.append((time.process_time() - c1) * 1000)
    finally:
        again.close()
    return {
        "closing_cpu_ms": closing_cpu_ms,
        "closing_windows": closing_windows,
        "late_closed_cpu_ms": late,
        "late_closed_stored": LATE_BATCHES * BATCH,
    }


class CollectorTime:
    """The time the cyclic collector took (a `gc.callbacks` entry): in all, and its full
    collections — how many, their time, the longest."""

    def __init__(self) -> None:
        self.seconds = self.full_seconds = self.longest = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.seconds += took
        if info["generation"] == 2:
            self.full += 1
            self.full_seconds += took
            self.longest = max(self.longest, took)


def _restart(env: dict[str, str], last: datetime) -> dict[str, Any]:
    """A `Metrics` started on the store: construction, its first round (which reads the log from
    the judged position and judges what came after it), a second round; its memory."""
    from accord_kit.clock import FakeClock
    from accord_kit.heap import building
    from accord_metrics.application import Metrics

    collected = CollectorTime()
    gc.callbacks.append(collected)
    t0, c0 = time.perf_counter(), time.process_time()
    again = Metrics(env, clock=FakeClock(last))
    construct_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        with building():  # as the service runs its first round (accord_metrics.bootstrap)
            again.evaluate(last + timedelta(seconds=5))
        first_round_s = time.perf_counter() - t1
        restart_cpu_s = time.process_time() - c0
        restart_gc = (collected.seconds, collected.full, collected.longest)
        first_windows = again.last_round.windows_judged
        t2 = time.perf_counter()
        again.evaluate(last + timedelta(seconds=10))
        second_round_ms = (time.perf_counter() - t2) * 1000
        converted = sum(len(s.converted) for s in again._services.values())
        rss_mb = _rss_mb()
    finally:
        gc.callbacks.remove(collected)
        again.close()
    return {
        "restart_gc_s": restart_gc[0],
        "restart_gc_full": restart_gc[1],
        "restart_gc_longest_s": restart_gc[2],
        "construct_s": construct_s,
        "first_round_s": first_round_s,
        "first_round_windows": first_windows,
        "second_round_ms": second_round_ms,
        "restart_s": construct_s + first_round_s,
        "restart_cpu_s": restart_cpu_s,
        "restart_rss_mb": rss_mb,
        "restart_converted": converted,
    }


STREAM_FIRST_ID = 1_000_000_000  # the streamed restart's signals: ids of their own (+ the size)
STREAM_SPAN = timedelta(minutes=10)  # … spread over the last minutes before the restart's clock
STREAM_BATCHES = 20  # … in as many batches of BATCH
STREAM_PAUSE = 0.02  # seconds between two of its batches (a batch takes ≈ 20–40 ms to record)
LATE_BATCHES = 3  # batches late for the month the closing round closed, each with its round


def _restart_streamed(env: dict[str, str], last: datetime, size: int) -> dict[str, Any]:
    """A `Metrics` started on the store while another process records a stream into its open
    window (as the recording process does under a live stream): `STREAM_BATCHES` batches of
    `BATCH`, the first before its first round, the others while it runs (or after it, if it ends
    first); then the round after it (which notes them: those its fresh selection had read already
    among them, and the others) and one more — their CPU, and the running forms folded again."""
    from accord_kit.clock import FakeClock
    from accord_kit.heap import building
    from accord_metrics.application import Metrics

    feeder = subprocess.Popen(
        [sys.executable, "-m", "bench.metrics_scale", json.dumps(env), last.isoformat(), "feed", str(size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert feeder.stdout is not None
    again = Metrics(env, clock=FakeClock(last))
    try:
        feeder.stdout.readline()  # its first batch stored: the stream is under way
        with building():
            again.evaluate(last + timedelta(seconds=5))
        stored = int(feeder.communicate(timeout=120)[0].strip().splitlines()[-1])  # every batch stored
        seeded = sum(r.seeded for r in again._running.values())
        c0 = time.process_time()
        again.evaluate(last + timedelta(seconds=10))
        after_cpu_ms = (time.process_time() - c0) * 1000
        refolded = sum(r.seeded for r in again._running.values()) - seeded
        c1 = time.process_time()
        again.evaluate(last + timedelta(seconds=15))
        next_cpu_ms = (time.process_time() - c1) * 1000
    finally:
        if feeder.poll() is None:
            feeder.kill()
        again.close()
    return {
        "streamed_stored": stored,
        "streamed_after_cpu_ms": after_cpu_ms,
        "streamed_refolded": refolded,
        "streamed_next_cpu_ms": next_cpu_ms,
    }


def _feed(env: dict[str, str], last: datetime, size: int) -> None:
    """`_restart_streamed`'s stream: `STREAM_BATCHES` batches of `BATCH`, `STREAM_PAUSE` apart,
    spread over the `STREAM_SPAN` before `last`; a line after the first batch, the signals stored
    at the end."""
    from accord_kit.clock import FakeClock
    from accord_kit.context import Principal
    from accord_metrics.application import Metrics

    metrics = Metrics(env, clock=FakeClock(last))
    collector = Principal("bench-collector", "service")
    rnd = random.Random(size)
    total, stored, first = STREAM_BATCHES * BATCH, 0, STREAM_FIRST_ID + size
    try:
        for i in range(first, first + total, BATCH):
            raw = _signals(i, BATCH, last - STREAM_SPAN, STREAM_SPAN, total, rnd, origin=first)
            stored += metrics.record(collector, list(spb.SignalBatch.FromString(raw).signals)).accepted
            if i == first:
                print("under way", flush=True)
            time.sleep(STREAM_PAUSE)
    finally:
        metrics.close()
    print(stored, flush=True)


if __name__ == "__main__":  # the restart, in a process of its own (see _restart_in_process)
    env_arg, last_arg = json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2])
    if sys.argv[3:4] == ["streamed"]:
        print(json.dumps(_restart_streamed(env_arg, last_arg, int(sys.argv[4]))))
    elif sys.argv[3:4] == ["closing"]:
        print(json.dumps(_closing(env_arg, last_arg, int(sys.argv[4]))))
    elif sys.argv[3:4] == ["feed"]:
        _feed(env_arg, last_arg, int(sys.argv[4]))
    else:
        print(json.dumps(_restart(env_arg, last_arg)))
