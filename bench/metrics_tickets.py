"""Evaluation rounds of ticket, incident, lead and call objectives against the items of history:
what a round costs when the service has recorded years of them.

Set-up (not timed), per list (`--tickets-lists`, default tickets, incidents, leads and calls) and
size: one accepted agreement with that list's objectives — tickets: P1 answered within an hour and
resolved within eight; incidents: MTTR (restore); leads: close rate and follow-up speed within
8 hours; calls: first-contact resolution inferred from repeat contacts within 7 days; calls-2: the
same over two services, e-mail and phone, the calls spread over both (not in the default lists) — monthly
windows, learned by a `Metrics` application on SQLite in this process; N items of history
(default 1,000, 10,000 and 50,000, one store each) spread evenly over the two years before the
agreement, each settled (a ticket answered after 30 minutes and resolved after two hours; an
incident responded to, restored and resolved within two hours; a lead handed off an hour after
it was created and followed up an hour later; a call answered, from one of 1,000 customers about
one of 3 reasons — one call in a hundred of one customer about one reason, a chain of contacts
through the whole history from 10,000 calls on), recorded in batches of 1,000; a round.
Then rounds one fake hour apart, each after a batch of 10 new items (figures are medians of
`--tickets-rounds`, default 7): each round's CPU time (`time.process_time`), the items the
list's formula was passed (or, first-contact resolution's, its running form folded into the open
window's evaluation), and the process's peak RSS at the end; and the CPU of the round
after the history was recorded (its windows' selections made: a chain of contacts read back).
With `--tickets-corrections` each round's batch also corrects one item of history in the open
window (its instant 3 minutes later): what a correction costs a round.

Before these lists were selected by when their items settle (and the calls by the repeat window
and the contacts chained to the window's), every round passed every item of history to each
objective's formula: its cost grew with history (services/metrics/README.md, "Tickets and tasks
selected by when they settle", "First-contact resolution reads the contacts chained to its
window").
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from accord.metrics.v1 import signals_pb2
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_kit.clock import FakeClock
from accord_kit.context import Principal
from accord_kit.testing.fixtures import sqlite_env
from accord_metrics.application import Metrics
from accord_metrics.formulas import contact, reliability, work
from accord_metrics.formulas.running import FcrTally

NAME = "metrics-tickets"
SUMMARY = "metrics rounds of ticket, incident, lead and call objectives against the items of history: CPU per round"

COLLECTOR = Principal("bench-collector", "service")
PHONE = "phone"
START = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)  # the agreement's first day; history is the two years before
HISTORY = timedelta(days=730)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics-tickets benchmark")
    group.add_argument(
        "--tickets-sizes",
        default="1000,10000,50000",
        help="items of history, one store each, comma-separated (default 1000,10000,50000)",
    )
    group.add_argument(
        "--tickets-rounds", type=int, default=7, help="rounds after a batch of 10 items; medians (default 7)"
    )
    group.add_argument(
        "--tickets-corrections",
        action="store_true",
        help="each round's batch also corrects one item of history in the open window (3 minutes later)",
    )
    group.add_argument(
        "--tickets-lists",
        default=DEFAULT_LISTS,
        help=f"the lists measured, comma-separated, of {', '.join(LISTS)} (default {DEFAULT_LISTS})",
    )


def _ts(t: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(t)
    return out


def _ticket(sid: str, opened: datetime) -> signals_pb2.Signal:
    body = signals_pb2.Ticket(
        priority="P1",
        opened=_ts(opened),
        first_response=_ts(opened + timedelta(minutes=30)),
        resolved=_ts(opened + timedelta(hours=2)),
    )
    return signals_pb2.Signal(signal_id=sid, service_id=EMAIL, ticket=body)


def _incident(sid: str, failed: datetime) -> signals_pb2.Signal:
    body = signals_pb2.Incident(
        failure_start=_ts(failed),
        responded_at=_ts(failed + timedelta(minutes=10)),
        restored_at=_ts(failed + timedelta(minutes=40)),
        resolved_at=_ts(failed + timedelta(hours=2)),
    )
    return signals_pb2.Signal(signal_id=sid, service_id=EMAIL, incident=body)


def _lead(sid: str, created: datetime) -> signals_pb2.Signal:
    body = signals_pb2.Lead(
        created=_ts(created),
        handed_off=_ts(created + timedelta(hours=1)),
        follow_ups=[_ts(created + timedelta(hours=2))],
    )
    return signals_pb2.Signal(signal_id=sid, service_id=EMAIL, lead=body)


def _call(sid: str, entered: datetime) -> signals_pb2.Signal:
    """An answered call of one of 1,000 customers about one of 3 reasons (chosen by its id), or,
    one call in a hundred, of a customer who calls about one reason all the time (with 10,000
    calls of history, every 7 days or less: a chain of contacts through all of it)."""
    n = zlib.crc32(sid.encode())
    regular = n % 100 == 0
    body = signals_pb2.Call(
        entered_queue=_ts(entered),
        answered_at=_ts(entered + timedelta(seconds=20)),
        customer_id="regular" if regular else f"cust-{n % 1000}",
        reason="reason-0" if regular else f"reason-{n // 1000 % 3}",
    )
    return signals_pb2.Signal(signal_id=sid, service_id=EMAIL, call=body)


def _call_of_two(sid: str, entered: datetime) -> signals_pb2.Signal:
    """`_call`, by e-mail or by phone (chosen by its id): one customer's contacts on both."""
    s = _call(sid, entered)
    if zlib.crc32(sid.encode()) // 7 % 2:
        s.service_id = PHONE
    return s


def _objective(oid: str, metric: str, parameters: dict[str, str], comparator: str = "AT_LEAST") -> dict[str, Any]:
    return {
        "objective_id": oid, "name": oid, "metric": metric, "parameters": parameters,
        "comparator": f"COMPARATOR_{comparator}", "target": "90", "window": {"kind": "WINDOW_KIND_MONTH"},
        "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip


@dataclass(frozen=True)
class _List:
    """One list measured: its signals, its objectives, and the formula whose inputs are counted
    (and, for calls, the running form that folds them into an open window's evaluation)."""

    name: str
    item: Callable[[str, datetime], signals_pb2.Signal]
    objectives: list[dict[str, Any]]
    module: Any
    formula: str
    fold: Any = None  # a class whose `extend(self, items)` is counted too
    services: tuple[str, ...] = (EMAIL,)  # the services the agreement measures

    @property
    def noun(self) -> str:
        """What its items are called in the figures' names."""
        return self.name.split("-")[0]

    @property
    def where(self) -> str:
        """Its services, in the figures' names when more than one."""
        return "" if len(self.services) == 1 else f" over {len(self.services)} services"


LISTS = {
    "tickets": _List("tickets", _ticket, [
        _objective("response", "METRIC_TICKET_RESPONSE", {"priority": "P1", "target_minutes": "60"}),
        _objective("resolution", "METRIC_TICKET_RESOLUTION", {"priority": "P1", "target_minutes": "480"}),
    ], work, "ticket_compliance"),
    "incidents": _List("incidents", _incident, [
        _objective("mttr", "METRIC_MTTR", {"r": "RESTORE"}, "AT_MOST"),
    ], reliability, "mttr"),
    "leads": _List("leads", _lead, [
        _objective("close-rate", "METRIC_CLOSE_RATE", {}),
        _objective("speed", "METRIC_FOLLOW_UP_SPEED", {"target_hours": "8"}),
    ], work, "follow_up_speed"),
    "calls": _List("calls", _call, [
        _objective("fcr", "METRIC_FIRST_CONTACT_RESOLUTION", {"method": "REPEAT_CONTACT"}),
    ], contact, "fcr", FcrTally),
    "calls-2": _List("calls-2", _call_of_two, [
        _objective("fcr", "METRIC_FIRST_CONTACT_RESOLUTION", {"method": "REPEAT_CONTACT"}),
    ], contact, "fcr", FcrTally, (EMAIL, PHONE)),
}  # fmt: skip
DEFAULT_LISTS = "tickets,incidents,leads,calls"


@contextmanager
def _passed_counted(kind: _List) -> Iterator[list[int]]:
    """Counts the items the list's formula is passed, or its running form folds (one entry a call)."""
    counts: list[int] = []
    formula = getattr(kind.module, kind.formula)
    fold: Any = kind.fold.extend if kind.fold is not None else None

    def counting(items: Any, *args: Any, **kwargs: Any) -> Any:
        counts.append(len(items))
        return formula(items, *args, **kwargs)

    def folding(tally: Any, items: Any) -> Any:
        counts.append(len(items))
        return fold(tally, items)

    setattr(kind.module, kind.formula, counting)
    if kind.fold is not None:
        kind.fold.extend = folding
    try:
        yield counts
    finally:
        setattr(kind.module, kind.formula, formula)
        if kind.fold is not None:
            kind.fold.extend = fold


def _one_size(tmp: Path, kind: _List, n: int, rounds: int, corrections: bool = False) -> dict[str, Any]:
    clock = FakeClock(START - timedelta(hours=1))
    agreements = Agreements(sqlite_env(tmp / "agreements.sqlite"), clock=clock)
    metrics = Metrics(sqlite_env(tmp / "metrics.sqlite"), clock=clock)
    try:
        provider, customer = Actor("bench-provider", "department", IT), Actor("bench-customer", "department", FINANCE)
        for dept in (IT, FINANCE):
            agreements.register_department(dept, dept)
        for service in kind.services:
            agreements.register_service(service, service, IT)
        terms = sla_terms(objectives=kind.objectives)
        terms["service"] = {**terms["service"], "service_ids": list(kind.services)}
        aid = str(agreements.draft(provider, terms).id)
        agreements.propose(provider, aid)
        agreements.accept(customer, aid)
        envelopes, _ = agreements.read_events(0, 5000)
        for env in envelopes:  # what metrics' agreements consumer does
            metrics.apply_upstream("agreements", env)
        t0 = time.perf_counter()
        first = START - HISTORY
        step = HISTORY / max(n, 1)
        for at in range(0, n, 1000):
            metrics.record(COLLECTOR, [kind.item(f"h{i:08d}", first + step * i) for i in range(at, min(n, at + 1000))])
        build = time.perf_counter() - t0
        now = START + timedelta(days=2)
        month = datetime(now.year, now.month, 1, tzinfo=UTC)
        window = [i for i in range(n) if first + step * i >= month]  # history recorded in the open window
        clock.set(now)
        c0 = time.process_time()
        metrics.evaluate(now)
        first_round = (time.process_time() - c0) * 1000
        cpu: list[float] = []
        with _passed_counted(kind) as passed:
            for r in range(rounds):
                now += timedelta(hours=1)
                clock.set(now)
                batch = [kind.item(f"n{r:03d}-{i}", now - timedelta(minutes=170 - i)) for i in range(10)]
                if corrections and window:
                    k = window[(r * 7919) % len(window)]  # an item of history in the open window
                    batch.append(kind.item(f"h{k:08d}", first + step * k + timedelta(minutes=3)))  # 3 minutes later
                metrics.record(COLLECTOR, batch, reason="corrected" if corrections else "")
                c0 = time.process_time()
                metrics.evaluate(now)
                cpu.append((time.process_time() - c0) * 1000)
        return {
            "list": kind.name,
            "noun": kind.noun,
            "where": kind.where,
            "items": n,
            "round_cpu_ms": statistics.median(cpu),
            "round_cpu_ms_all": [round(x, 2) for x in cpu],
            "passed_per_objective": max(passed, default=0),
            "first_round_cpu_ms": first_round,
            "corrections": corrections,
            "build_seconds": build,
        }
    finally:
        metrics.close()
        agreements.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in str(args.tickets_sizes).split(",") if x.strip()]
    names = [x.strip() for x in str(args.tickets_lists).split(",") if x.strip()]
    rounds: int = args.tickets_rounds
    if not sizes or any(n < 0 for n in sizes) or rounds < 1:
        raise ValueError("--tickets-sizes must list sizes ≥ 0 and --tickets-rounds must be > 0")
    unknown = [x for x in names if x not in LISTS]
    if not names or unknown:
        raise ValueError(f"--tickets-lists takes some of {', '.join(LISTS)}, not {', '.join(unknown) or 'none'}")
    results = []
    for name in names:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="accord-bench-tickets-") as tmp:
                results.append(_one_size(Path(tmp), LISTS[name], n, rounds, bool(args.tickets_corrections)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = [
        {
            "name": f"round after 10 new {r['noun']}{' and a correction' if r['corrections'] else ''}, "
            f"{r['items']:,} {r['noun']} of history{r['where']}",
            "value": round(r["round_cpu_ms"], 2),
            "unit": "ms CPU",
            "detail": f"median of {rounds}; the formula passed {r['passed_per_objective']:,} {r['noun']}; "
            f"rounds {r['round_cpu_ms_all']}; the first round (its windows' selections made) "
            f"{r['first_round_cpu_ms']:.1f} ms",
        }
        for r in results
    ]
    figures.append({"name": "peak RSS", "value": round(rss, 1), "unit": "MiB", "detail": "of the whole run"})
    params = {"sizes": sizes, "lists": names, "rounds": rounds, "corrections": bool(args.tickets_corrections)}
    return {"figures": figures, "params": params, "results": results}
