"""What the running forms of first-contact resolution and request-based availability hold an input
of an open month, and what a batch costs them: the tallies driven directly, in this process.

Set-up, per size: the month of January 2026. First-contact resolution (`FcrTally`, by repeat
contact within 7 days): N answered contacts at an even pace, each from one of N/2 customers about
one of 5 reasons (seeded; `--tallies-fcr-reasons`: fewer, 0 for none), 70 % flagged resolved.
Request-based availability (`CountTally`, OCCURRENCES, 24x7): N request counts back to back over
the month (43,200 is a count a minute, 267,840 one every 10 s, as a Prometheus source may record
them), 990–1,000 good of 1,000.

Measured: the tally folded in batches of 500 in order, evaluated after each (as a round after each
batch would); the memory it holds at the end (`tracemalloc`: what the fold allocated and kept, the
inputs themselves not counted — the window's selection holds them), in bytes an input; then, in a
second run without tracing, the CPU a batch (`time.process_time`, mean over the batches). The
evaluation at the end is checked against the formula's over every input.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from accord_kit.timeline import AlwaysOpen, Interval
from accord_metrics.formulas import contact, reliability
from accord_metrics.formulas.running import CountTally, FcrTally

NAME = "metrics-tallies"
SUMMARY = "metrics running forms driven directly: bytes held an input of an open month, CPU a batch of 500"
BATCH = 500
MONTH = Interval(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
REASONS = ("billing", "outage", "move", "cancel", "upgrade")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tallies-fcr-sizes",
        default="100000,400000",
        help="contacts in the month for first-contact resolution (default 100000,400000)",
    )
    parser.add_argument(
        "--tallies-fcr-reasons",
        type=int,
        default=len(REASONS),
        choices=range(len(REASONS) + 1),
        help=f"reasons the contacts give, 0 to {len(REASONS)} (default {len(REASONS)}; 0: none, as a contact centre "
        "that tags no reasons)",
    )
    parser.add_argument(
        "--tallies-count-sizes",
        default="43200,267840",
        help="request counts in the month (default 43200,267840: a count a minute, every 10 s)",
    )


def _sizes(text: str) -> list[int]:
    sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) < BATCH:
        raise SystemExit(f"sizes must be at least {BATCH}: {text!r}")
    return sizes


def _contacts(n: int, reasons: int = len(REASONS)) -> list[contact.Call]:
    rnd = random.Random(7)
    given = REASONS[:reasons] or ("",)
    step = MONTH.duration / n
    customers = [f"cust-{i:07d}" for i in range(max(n // 2, 1))]
    out = []
    for i in range(n):
        t = MONTH.start + step * i
        out.append(
            contact.Call(
                f"call-{i:09d}", t, t + timedelta(seconds=rnd.randint(1, 60)), None,
                customer_id=customers[rnd.randrange(len(customers))], reason=given[rnd.randrange(len(given))],
                resolved_first_contact=rnd.random() < 0.7,
            )
        )  # fmt: skip
    return out


def _counts(n: int) -> list[reliability.RequestCount]:
    step = MONTH.duration / n
    return [
        reliability.RequestCount(MONTH.start + step * i, MONTH.start + step * (i + 1), 990 + i % 11, 1000)
        for i in range(n)
    ]


def _fold(make: Callable[[], Any], inputs: Sequence[Any], step: Callable[[Any, Sequence[Any]], Any]) -> Any:
    tally = make()
    last = None
    for k in range(0, len(inputs), BATCH):
        last = step(tally, inputs[k : k + BATCH])
    return tally, last


def _measure(
    name: str,
    n: int,
    make: Callable[[], Any],
    inputs: Sequence[Any],
    step: Callable[[Any, Sequence[Any]], Any],
    expected: Any,
) -> list[dict[str, Any]]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tally, last = _fold(make, inputs, step)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    if last != expected:
        raise SystemExit(f"{name}: the tally's evaluation is not the formula's over every input")
    del tally
    gc.collect()
    c0 = time.process_time()
    _fold(make, inputs, step)
    batch_ms = (time.process_time() - c0) / (len(inputs) / BATCH) * 1000
    return [
        {"name": f"{name} held, {n:,}", "value": held / n, "unit": "B/input",
         "detail": f"{held / 2**20:.1f} MiB held by the tally after {n:,} inputs in batches of {BATCH}"},
        {"name": f"{name} batch, {n:,}", "value": batch_ms, "unit": "ms",
         "detail": f"CPU a batch of {BATCH} (folded and evaluated), mean over {len(inputs) // BATCH:,} batches"},
    ]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: list[dict[str, Any]] = []
    repeat = timedelta(days=7)
    for n in _sizes(args.tallies_fcr_sizes):
        calls = _contacts(n, args.tallies_fcr_reasons)
        as_of = calls[-1].entered_queue
        print(f"   metrics-tallies: first-contact resolution, {n:,} contacts", flush=True)

        def fcr_step(t: FcrTally, batch: Sequence[contact.Call]) -> Any:
            t.extend(batch)
            return t.evaluated(batch[-1].entered_queue)

        expected = contact.fcr(calls, "REPEAT_CONTACT", repeat, window=MONTH, as_of=as_of)
        figures += _measure(
            "first-contact resolution", n, lambda: FcrTally("REPEAT_CONTACT", repeat, MONTH), calls, fcr_step, expected
        )
    for n in _sizes(args.tallies_count_sizes):
        counts = _counts(n)
        print(f"   metrics-tallies: request counts, {n:,}", flush=True)

        def count_step(t: CountTally, batch: Sequence[reliability.RequestCount]) -> Any:
            t.extend(batch)
            return t.evaluated()

        expected = reliability.availability_requests(counts, "OCCURRENCES", MONTH, calendar=AlwaysOpen())
        figures += _measure(
            "request counts", n, lambda: CountTally(MONTH, AlwaysOpen(), []), counts, count_step, expected
        )
    return {
        "figures": figures,
        "params": {
            "fcr_sizes": args.tallies_fcr_sizes,
            "fcr_reasons": args.tallies_fcr_reasons,
            "count_sizes": args.tallies_count_sizes,
            "batch": BATCH,
        },
        "notes": [
            "held: what the tally allocated and kept (tracemalloc), the inputs not counted; a month's end of a "
            "50,000-calls-a-day contact centre holds ≈ 1,500,000 contacts"
        ],
    }
