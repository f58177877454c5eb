"""Generated journeys through the real agreements, metrics and billing applications (real
SQLite stores, and a quarter as many journeys on PostgreSQL; one fake clock; every upstream
event fed the way the consumers apply it), compared with the independent reference model in
`tests/reference/model.py`: every closed window's availability and judgement, and every fee
period's credits, to the minor unit.

A journey: an availability SLA starting at a random instant of January 2026, with a random
window kind (calendar day … year, rolling 7 or 30 days), minimum outage, maintenance
exclusions and sometimes an end date; random outages (many on the places that go wrong:
window edges, the start, the end, the DST change) reported in random batches, some only after
their window closed (a restatement); the clock moved in random steps to the end."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.periods import period_totals
from accord_kit.testing.fixtures import postgres_env, sqlite_env
from tests.reference import model
from tests.suite import COLLECTOR, CUSTOMER, PROVIDER, Suite, ts

ZONE = ZoneInfo("Europe/Amsterdam")
JAN = datetime(2026, 1, 1, tzinfo=ZONE)
TIERS = (
    model.Tier(Fraction("99.0"), True, Fraction("99.9"), False, Fraction(10)),
    model.Tier(Fraction("95.0"), True, Fraction("99.0"), False, Fraction(25)),
    model.Tier(None, False, Fraction("95.0"), False, Fraction(100)),
)
TIERS_JSON = [
    {"lower": "99.0", "lower_inclusive": True, "upper": "99.9", "credit_percent": "10"},
    {"lower": "95.0", "lower_inclusive": True, "upper": "99.0", "credit_percent": "25"},
    {"upper": "95.0", "credit_percent": "100"},
]
WINDOW_SPAN = {"DAY": 40, "WEEK": 50, "MONTH": 75, "QUARTER": 100, "ROLLING": 60}


@dataclass(frozen=True)
class Journey:
    window: str
    rolling_days: int
    target: str
    min_outage: int
    start: datetime
    end: datetime | None
    exclusions: tuple[tuple[datetime, datetime], ...]
    outages: tuple[tuple[datetime, int], ...]  # start, seconds
    seed: int

    @property
    def horizon(self) -> datetime:
        """Where the clock stops: every window the journey touches has closed by then."""
        return (JAN + timedelta(days=WINDOW_SPAN[self.window] + 40)).astimezone(UTC)


@st.composite
def journeys(draw: Any) -> Journey:
    window = draw(st.sampled_from(["DAY", "WEEK", "MONTH", "QUARTER", "ROLLING"]))
    rolling = draw(st.sampled_from([7, 30])) if window == "ROLLING" else 0
    start = (JAN + timedelta(minutes=draw(st.integers(0, 20 * 24 * 60)))).astimezone(UTC)
    span = timedelta(days=WINDOW_SPAN[window])
    end = None
    if draw(st.booleans()):
        end = start + timedelta(days=draw(st.integers(10, WINDOW_SPAN[window])), hours=draw(st.integers(0, 23)))
    edges = [start, JAN.astimezone(UTC) + span / 2, datetime(2026, 3, 29, 1, tzinfo=UTC)]
    if end:
        edges.append(end)
    instant = st.one_of(
        st.integers(0, int(span.total_seconds())).map(lambda s: start + timedelta(seconds=s)),
        st.tuples(st.sampled_from(edges), st.integers(-7200, 7200)).map(lambda p: p[0] + timedelta(seconds=p[1])),
    )
    outages = draw(st.lists(st.tuples(instant, st.integers(1, 6 * 3600)), max_size=8))
    exclusions = draw(st.lists(st.tuples(instant, st.integers(600, 4 * 3600)), max_size=2))
    return Journey(
        window=window,
        rolling_days=rolling,
        target=draw(st.sampled_from(["99", "99.5", "99.9"])),
        min_outage=draw(st.sampled_from([0, 60, 300])),
        start=start,
        end=end,
        exclusions=tuple((s, s + timedelta(seconds=d)) for s, d in exclusions),
        outages=tuple(outages),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def terms_json(j: Journey) -> dict[str, Any]:
    t = sla_terms()
    objective = t["objectives"][0]
    objective.update(
        target=j.target,
        parameters={"min_outage_seconds": str(j.min_outage)},
        window={"kind": f"WINDOW_KIND_{j.window}", **({"rolling_days": j.rolling_days} if j.rolling_days else {})},
        credit_tiers=TIERS_JSON,
        exclusions=[{"start": _iso(s), "end": _iso(e), "reason": "maintenance"} for s, e in j.exclusions],
    )
    t["objectives"] = [objective]
    t["term"] = {"effective_from": _iso(j.start), "notice_days": 0}
    if j.end:
        t["term"]["effective_to"] = _iso(j.end)
    t["consequences"].pop("termination", None)
    return t


def terms_model(j: Journey) -> model.Terms:
    return model.Terms(
        time_zone="Europe/Amsterdam",
        effective_from=j.start,
        effective_to=j.end,
        fee=Fraction("12000.00"),
        currency_exponent=2,
        cap_percent=Fraction(100),
        minimum_amount=Fraction("10.00"),
        objectives=(
            model.Objective("availability", Fraction(j.target), j.window, j.rolling_days, j.min_outage, TIERS),
        ),
        exclusions=j.exclusions,
    )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@contextmanager
def suite() -> Iterator[Suite]:
    folder = Path(tempfile.mkdtemp(prefix="accord-reference-"))
    s = Suite(lambda name: sqlite_env(folder / f"{name}.sqlite"))
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(folder, ignore_errors=True)


def run(j: Journey, s: Suite) -> str:
    """Drive the journey through the applications; returns the agreement id."""
    rng = random.Random(j.seed)
    s.clock.set(datetime(2025, 12, 20, tzinfo=UTC))
    ag = s.agreements
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, terms_json(j)).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    signals = [
        (
            start,
            pb.Signal(
                signal_id=f"o{i}",
                service_id=EMAIL,
                outage=pb.Outage(start=ts(start), end=ts(start + timedelta(seconds=d))),
            ),
        )
        for i, (start, d) in enumerate(j.outages)
    ]
    # Each outage is reported some time after it began: mostly soon, sometimes weeks late.
    arrivals = sorted(
        ((start + timedelta(seconds=rng.choice([3600 * 7, 86400, 86400 * 20])), signal) for start, signal in signals),
        key=lambda a: (a[0], a[1].signal_id),
    )
    now = datetime(2025, 12, 31, tzinfo=UTC)
    s.tick(_iso(now).replace("Z", "+00:00"))
    while now < j.horizon:
        now = min(j.horizon, now + timedelta(days=rng.choice([2, 5, 11])))
        due = [sig for when, sig in arrivals if when <= now]
        arrivals = [(w, sig) for w, sig in arrivals if w > now]
        if due:
            s.clock.set(now)
            s.metrics.record(COLLECTOR, due)
        s.tick(_iso(now).replace("Z", "+00:00"))
    if arrivals:  # reports due after the horizon arrive at it, as the latest restatements
        s.metrics.record(COLLECTOR, [sig for _, sig in arrivals])
        s.tick(_iso(now).replace("Z", "+00:00"))
    return aid


def _close(value: str, expected: Fraction | None) -> bool:
    if expected is None:
        return value == ""
    return abs(Fraction(Decimal(value)) - expected) < Fraction(1, 10**12)


PROPERTY = settings(
    max_examples=int(os.environ.get("ACCORD_REFERENCE_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@PROPERTY
@given(journeys())
def test_windows_and_money_are_those_of_the_reference_model(j: Journey) -> None:
    with suite() as s:
        check(j, s)


@settings(PROPERTY, max_examples=max(1, PROPERTY.max_examples // 4))
@given(journeys())
def test_the_same_on_postgresql(postgres_db: Callable[[], str], j: Journey) -> None:
    """The same journeys (fewer) with every store on PostgreSQL (fresh databases each)."""
    s = Suite(lambda name: postgres_env(postgres_db()))
    try:
        check(j, s)
    finally:
        s.close()


def check(j: Journey, s: Suite) -> None:
    """Drive the journey and hold windows and money to the model."""
    note(f"journey {j!r}")
    aid = run(j, s)
    expected = {
        (w.objective_id, _iso(w.start)): w
        for w in model.judge(terms_model(j), [(st_, st_ + timedelta(seconds=d)) for st_, d in j.outages], j.horizon)
    }
    got = {}
    for w in s.metrics.window_evaluations(aid):
        e = w.latest
        got[(w.objective_id, _utc(w.window_start))] = e
    note(f"expected windows {sorted(expected)}")
    note(f"got windows {sorted(got)}")
    closed = {k: v for k, v in got.items() if v.get("closed")}
    assert sorted(closed) == sorted(expected)
    for key, want in expected.items():
        e = closed[key]
        assert _close(e["value"], want.value), (key, e["value"], float(want.value or 0))
        assert e["status"].removeprefix("EVALUATION_STATUS_") == want.status, (key, e["status"], want.status)

    # Money, to the minor unit: every fee period that has ended with a window billed in it,
    # and every period before the latest one billing has opened (a period without windows
    # of its own is opened with the next one).
    terms = terms_model(j)
    money = model.credits(terms, list(expected.values()), j.horizon)
    has_windows = {p for p, ws in model.windows_by_period(terms, list(expected.values()), j.horizon).items() if ws}
    ends = {start: cut[1] for start, cut in model.fee_periods(terms, j.horizon)}
    got_money = billed(s, aid)
    last = max(got_money, default="")
    note(f"model credits {money}")
    note(f"billed {got_money}")
    for period, amount in money.items():
        if ends[period] > j.horizon - timedelta(days=1) or (period not in has_windows and _iso(period) > last):
            continue
        period = _iso(period)  # type: ignore[assignment]
        assert got_money.get(period) == amount, (period, got_money.get(period), amount)


def _utc(text: str) -> str:
    return _iso(datetime.fromisoformat(text.replace("Z", "+00:00")))


def billed(s: Suite, aid: str) -> dict[str, Decimal]:
    """Each fee period's credits as billing has them now: the period's own statement's total,
    or the period total of the latest adjustment recorded for it on a later statement."""
    out: dict[str, Decimal] = {}
    statements = s.billing.statements(None, aid)
    for st_ in statements:
        out[_utc(st_.period_start)] = Decimal(period_totals(st_.assessments, st_.currency).net.amount)
    for st_ in statements:
        for a in st_.adjustments:
            if a.get("period_start"):
                out[_utc(a["period_start"])] = Decimal(a["period_after"])
    return out
