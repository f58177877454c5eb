"""A round judges a window again only for signals in a list its metric reads
(`evaluation.METRIC_READS`): each metric's formula, running form and burn rates are held here to
touch no other list of formula inputs; and a window is judged by the version in force at its
start, so an objective whose metric an amendment changed reads the lists of every version's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import sla_terms
from accord_kit.timeline import AlwaysOpen, Interval
from accord_metrics import signal_index
from accord_metrics.evaluation import BUDGETED, INPUT_LISTS, METRIC_READS, SignalSet, burn_rates, judge
from accord_metrics.running import Running
from tests.suite import (
    AMS,
    COLLECTOR,
    CUSTOMER,
    PROVIDER,
    Suite,
    an_active_agreement,
    at,
    calls,
    monthly_objective,
    outage,
    ts,
)

FEBRUARY = Interval(at(f"2026-02-01T00:00{AMS}"), at(f"2026-03-01T00:00{AMS}"))
PARAMETERS: dict[str, dict[str, str]] = {
    "METRIC_AVAILABILITY_TIME": {"min_outage_seconds": "60"},
    "METRIC_MTBF": {},
    "METRIC_AVAILABILITY_REQUESTS": {},
    "METRIC_MTTR": {"r": "RESTORE"},
    "METRIC_ASA": {},
    "METRIC_ABANDONMENT_RATE": {"short_abandon_seconds": "5"},
    "METRIC_SERVICE_LEVEL": {"variant": "ANSWERED_OVER_OFFERED", "threshold_seconds": "20"},
    "METRIC_AVERAGE_HANDLE_TIME": {},
    "METRIC_FIRST_CONTACT_RESOLUTION": {"method": "REPEAT_CONTACT"},
}


class Untouchable(list[Any]):
    """A list of formula inputs the metric must not read: any look at it fails."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _touched(self, *_: Any) -> Any:
        raise AssertionError(f"the formula read the {self.name} it does not say it reads")

    __iter__ = __len__ = __getitem__ = __bool__ = __contains__ = _touched  # type: ignore[assignment]


def _inputs() -> list[pb.Signal]:
    """A few signals of every kind a metric of METRIC_READS reads, in February."""
    day = f"2026-02-10T09:00{AMS}"
    start, end = at(f"2026-02-11T10:00{AMS}"), at(f"2026-02-11T11:00{AMS}")
    return [
        outage("o1", f"2026-02-10T10:00{AMS}", 30),
        *calls("c", day, 3, 2),
        pb.Signal(signal_id="m1", maintenance=pb.Maintenance(start=ts(start), end=ts(end), announced_at=ts(at(day)))),
        pb.Signal(signal_id="r1", requests=pb.RequestCount(start=ts(start), end=ts(end), good=990, total=1000)),
        pb.Signal(signal_id="p1", probe=pb.Probe(at=ts(start), success=False)),
        pb.Signal(
            signal_id="i1",
            incident=pb.Incident(
                failure_start=ts(start),
                responded_at=ts(start + timedelta(minutes=5)),
                restored_at=ts(end),
                resolved_at=ts(end),
            ),
        ),
    ]


@pytest.mark.parametrize("metric", sorted(METRIC_READS))
def test_a_metric_reads_only_the_lists_it_says(metric: str) -> None:
    reads = METRIC_READS[metric]
    objective = monthly_objective("o", metric, PARAMETERS[metric])
    if metric in BUDGETED:
        objective["budgeting"] = "BUDGETING_OCCURRENCES"
    full = SignalSet()
    for s in _inputs():
        signal_index._add(full, s)
    assert all(getattr(full, name) for name in reads), "each list it reads holds something"
    guarded = SignalSet(**{name: getattr(full, name) if name in reads else Untouchable(name) for name in INPUT_LISTS})
    as_of = at(f"2026-02-20T00:00{AMS}")
    for running in (None, Running(), Running()):
        got = judge(objective, FEBRUARY, AlwaysOpen(), [], guarded, as_of, "UTC", 1, running=running)
        assert got == judge(objective, FEBRUARY, AlwaysOpen(), [], full, as_of, "UTC", 1)
    if metric in BUDGETED:
        rates = burn_rates(objective, AlwaysOpen(), [], guarded, as_of, FEBRUARY.duration, "UTC")
        assert rates == burn_rates(objective, AlwaysOpen(), [], full, as_of, FEBRUARY.duration, "UTC")


def test_every_metric_reads_the_maintenance_its_exclusions_are_made_of() -> None:
    assert all("maintenance" in reads for reads in METRIC_READS.values())


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def test_an_objective_whose_metric_an_amendment_changed_reads_every_versions_lists(suite: Suite) -> None:
    """Version 1 measures objective "x" as availability; version 2 (from February) as the service
    level. A late outage in January restates January's window, judged by version 1 — though
    the latest terms read no outage — and calls judge February's window, not January's."""
    m = suite.metrics
    v1 = sla_terms(objectives=[monthly_objective("x", "METRIC_AVAILABILITY_TIME", {"min_outage_seconds": "60"})])
    an_active_agreement(suite)  # departments and the service (and another agreement)
    aid = str(suite.agreements.draft(PROVIDER, v1).id)
    suite.agreements.propose(PROVIDER, aid)
    suite.agreements.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T11:00{AMS}")
    v2 = sla_terms(objectives=[monthly_objective("x", "METRIC_SERVICE_LEVEL", PARAMETERS["METRIC_SERVICE_LEVEL"])])
    _, amendment = suite.agreements.propose_amendment(
        PROVIDER, aid, v2, at(f"2026-02-01T00:00{AMS}"), "measure the queue instead"
    )
    suite.agreements.accept_amendment(CUSTOMER, aid, amendment)
    suite.tick(f"2026-02-10T10:00{AMS}")
    january = "2025-12-31T23:00:00+00:00"
    assert m.window(None, aid, "x", january).closed["formula_id"] == "availability.time"

    m.record(COLLECTOR, [outage("late", f"2026-01-20T10:00{AMS}", 60)])
    suite.tick(f"2026-02-10T10:05{AMS}")
    restated = m.window(None, aid, "x", january)
    assert len(restated.restatements) == 1
    check = m.recompute(aid, "x", january)
    assert check["matches"], check["differences"]

    m.record(COLLECTOR, calls("feb", f"2026-02-10T09:00{AMS}", 3, 1))
    suite.tick(f"2026-02-10T10:10{AMS}")
    assert len(m.window(None, aid, "x", january).restatements) == 1
    assert m.window(None, aid, "x", "2026-01-31T23:00:00+00:00").latest["detail"]["answered"] == "4"
