"""The burn rates' look-backs kept between rounds (`burning.BurnIndex`) against the formula over
every input (`evaluation.burn_rates`): after appended batches, late outages, corrections,
removals, another selection, outages under way, another minimum, calendar or exclusions, and
the round's instant moving — and a service's rounds, idle ones included, against the burn rates
of every stored signal."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accord.metrics.v1 import signals_pb2 as pb
from accord_kit.timeline import AlwaysOpen, BusinessCalendar, Calendar, Interval, total
from accord_metrics import burning, evaluation, judging
from accord_metrics.burning import BurnIndex
from accord_metrics.evaluation import ONGOING, SignalSet, burn_lengths, burn_rates, run_formula
from accord_metrics.formulas import reliability
from accord_metrics.signal_index import combined
from tests.suite import AMS, COLLECTOR, EMAIL, Suite, an_active_agreement, at, outage, spy_burn_rates, ts

T0 = datetime(2026, 1, 5, tzinfo=UTC)
# A window of 2 days: its look-backs are 2 days ÷ 30 days of the pairs' (5 min 20 s … 4 h 48 min).
WINDOW = Interval(T0, T0 + timedelta(days=2))
LENGTHS = burn_lengths(WINDOW.duration)
SPAN = Interval(WINDOW.start - max(LENGTHS), WINDOW.end)
BUSINESS = BusinessCalendar(
    "Europe/Amsterdam", ((1, "09:00", "17:00"), (2, "08:30", "12:00"), (3, "09:00", "17:00")), frozenset(), "office", 2
)


def _objective(minimum: int) -> dict[str, Any]:
    return {
        "metric": "METRIC_AVAILABILITY_TIME",
        "target": "99.5",
        "comparator": "COMPARATOR_AT_LEAST",
        "parameters": {"min_outage_seconds": str(minimum)} if minimum else {},
    }


class _Kept:
    """Two services' kept selections of outages as `ServiceSignals.select` reports them: per
    service the list (in the order recorded), the selection's serial, its changes other than
    appends, and its log of replacements in place (change, place, before, after)."""

    def __init__(self) -> None:
        self.lists: list[list[Interval]] = [[], []]
        self.serials = [1, 2]
        self.changes = [0, 0]
        self.logs: list[list[tuple[int, int, Interval, Interval]]] = [[], []]

    def replace(self, part: int, at: int, new: Interval) -> None:
        """A correction in place, as the selection makes it: an outage under way replaced is no
        change (a completion); any other a change, logged."""
        old = self.lists[part][at]
        self.lists[part][at] = new
        if old.end < ONGOING:
            self.changes[part] += 1
            self.logs[part].append((self.changes[part], at, old, new))

    def signals(self) -> SignalSet:
        parts = {
            str(i): SignalSet(
                outages=list(self.lists[i]), lineage={"outages": ((s, c, len(self.lists[i])),)},
                edits={"outages": (list(self.logs[i]),)},
            )
            for i, (s, c) in enumerate(zip(self.serials, self.changes, strict=True))
        }  # fmt: skip
        return combined(parts, ["0", "1"])


def _at(seconds: int) -> datetime:
    return WINDOW.start + timedelta(seconds=seconds)


_outage = st.tuples(
    st.integers(-6 * 3600, 2 * 86400),  # start, s into the window
    st.integers(0, 2400),  # length, s (0: empty)
    st.integers(0, 12),  # 0: under way
)
_step = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 1), st.lists(_outage, max_size=12)),
    st.tuples(st.just("correct"), st.integers(0, 1), st.integers(0, 10**6), _outage),
    st.tuples(st.just("remove"), st.integers(0, 1), st.integers(0, 10**6)),
    st.tuples(st.just("reselect"), st.integers(0, 1)),
    st.tuples(st.just("round"), st.integers(0, 4 * 3600)),
    st.tuples(st.just("minimum"), st.sampled_from([0, 1, 60, 600])),
    st.tuples(st.just("calendar"), st.sampled_from(["always", "business"])),
    st.tuples(st.just("exclude"), st.integers(0, 2 * 86400), st.integers(0, 7200)),
)


def _interval(raw: tuple[int, int, int]) -> Interval:
    start, length, ended = raw
    return Interval(_at(start), _at(start + length) if ended else ONGOING)


def _expected(
    objective: dict[str, Any], calendar: Calendar, exclusions: list[Interval], signals: SignalSet, as_of: datetime
) -> dict[timedelta, Decimal | None]:
    """Each look-back's value as `burn_rates` has the formula compute it over every outage."""
    out = {}
    for length in LENGTHS:
        look = Interval(as_of - length, as_of)
        mine = SignalSet(outages=[o for o in signals.outages if o.end > look.start])
        out[length] = run_formula(objective, look, calendar, exclusions, mine, as_of, "UTC", digested=False).value
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_step, min_size=1, max_size=30), st.integers(0, 2 * 86400 - 1))
def test_the_look_backs_kept_are_the_formula_s_over_every_outage(steps: list[tuple[Any, ...]], start: int) -> None:
    kept, index = _Kept(), BurnIndex()
    as_of, minimum, calendar = _at(start), 0, "always"
    exclusions: list[Interval] = []
    for step in [*steps, ("round", 1)]:
        kind = step[0]
        if kind == "append":
            kept.lists[step[1]].extend(_interval(o) for o in step[2])
        elif kind in ("correct", "remove") and kept.lists[step[1]]:
            mine = kept.lists[step[1]]
            at = step[2] % len(mine)
            # An outage under way replaced in its place (its end reported, or its start corrected)
            # is no change, as the selection counts it: the index looks at it again by its place.
            # Any other replacement is logged: the index takes it out and in.
            if kind == "correct":
                kept.replace(step[1], at, _interval(step[3]))
            else:
                kept.changes[step[1]] += 1
                del mine[at]
        elif kind == "reselect":
            kept.serials[step[1]] += 10
        elif kind == "round":
            as_of = min(as_of + timedelta(seconds=step[1]), WINDOW.end - timedelta(microseconds=1))
        elif kind == "minimum":
            minimum = step[1]
        elif kind == "calendar":
            calendar = step[1]
        elif kind == "exclude":
            exclusions = [Interval(_at(step[1]), _at(step[1] + step[2]))] if step[2] else []
        objective, cal = _objective(minimum), AlwaysOpen() if calendar == "always" else BUSINESS
        signals = kept.signals()
        values = index.values(
            objective, cal, exclusions, signals.outages, signals.lineage, SPAN, as_of, LENGTHS, signals.edits
        )
        expected = _expected(objective, cal, exclusions, signals, as_of)
        # (an outage under way too: each look-back takes it as lasting until its end, as the formula)
        assert values is not None
        assert set(values) == set(LENGTHS)  # every look-back's eligible time is the span's clipped to it
        assert values == expected
        rates = burn_rates(objective, cal, exclusions, SignalSet(), as_of, WINDOW.duration, "UTC", values)
        assert rates == burn_rates(objective, cal, exclusions, signals, as_of, WINDOW.duration, "UTC")


def test_the_merged_outages_downtime_sums_are_machine_integers_exact_to_the_microsecond() -> None:
    """The running sums of the merged outages' downtime are µs in machine integers (8 B a merged
    outage, not a timedelta and a pointer: ≈ 40 B an outage of the window's burn rates): outages
    an odd number of µs long, some merging, give each look-back the formula's value."""
    kept, index = _Kept(), BurnIndex()
    objective, as_of = _objective(0), _at(86400)
    us = timedelta(microseconds=1)
    # 3 s and some µs long, every fifth one 93 s: it merges with the next
    kept.lists[0] = [
        Interval(_at(90 * k) + 7 * k * us, _at(90 * k + 3 + 90 * (k % 5 == 0)) + (13 * k + 1) * us)
        for k in range(1, 900)
    ]
    signals = kept.signals()
    got = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
    assert got == _expected(objective, AlwaysOpen(), [], signals, as_of)
    assert isinstance(index._sums, array) and index._sums.typecode == "q"
    assert index._sums[-1] == sum(total([m]) // us for m in index.merged)


def test_a_change_not_logged_builds_it_again_and_an_append_only_adds() -> None:
    """An outage appended is placed; one corrected without its replacement logged (the
    selection's changes count) is not an append: the index is built again — ignoring the count
    would keep the outage as it was."""
    kept, index = _Kept(), BurnIndex()
    objective, as_of = _objective(60), _at(86400)
    kept.lists[0] = [Interval(_at(86400 - 600), _at(86400 - 300))]

    def values() -> dict[timedelta, Decimal | None] | None:
        signals = kept.signals()
        got = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
        assert got == _expected(objective, AlwaysOpen(), [], signals, as_of)
        return got

    first = values()
    kept.lists[1].append(Interval(_at(86400 - 200), _at(86400 - 100)))
    values()
    assert (index.built, index.appended) == (1, 1)
    kept.lists[0][0] = Interval(_at(86400 - 600), _at(86400 - 590))  # 10 s: below the minimum now
    kept.changes[0] += 1
    last = values()
    assert (index.built, index.appended) == (2, 1)
    assert first is not None and last is not None and last != first


def test_a_logged_correction_is_taken_out_and_in() -> None:
    """Outages merged together, one of them corrected (shortened, then moved away) with the
    replacement logged: taken out of the index — the merged outage merged again from the ones
    left, split where it no longer holds — and the new one placed; not built again, every
    look-back the formula's; a correction to an outage under way is held by its place."""
    kept, index = _Kept(), BurnIndex()
    objective, as_of = _objective(60), _at(86400)
    kept.lists[0] = [Interval(_at(86400 - 3000 + 600 * i), _at(86400 - 2300 + 600 * i)) for i in range(4)]
    kept.lists[1] = [Interval(_at(86400 - 5000), _at(86400 - 4000))]

    def values() -> None:
        signals = kept.signals()
        got = index.values(
            objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS, signals.edits
        )
        assert got == _expected(objective, AlwaysOpen(), [], signals, as_of)

    values()
    assert len(index.merged) == 2
    kept.replace(0, 1, Interval(_at(86400 - 2400), _at(86400 - 2390)))  # 10 s: the merged outage splits
    values()
    assert len(index.merged) == 3
    kept.replace(0, 1, Interval(_at(86400 - 9000), _at(86400 - 8000)))  # moved before the others
    kept.lists[1].append(Interval(_at(86400 - 60), _at(86400 - 30)))
    values()
    kept.replace(1, 0, Interval(_at(86400 - 500), ONGOING))  # now under way
    values()
    assert (index.built, index.edited, index.under_way) == (1, 3, [(1, 0)])


def _count_unions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of outages each union `burning` makes from here on is given (a list that grows)."""
    unions: list[int] = []
    union = burning.union

    def counted(intervals: Any) -> Any:
        intervals = list(intervals)
        unions.append(len(intervals))
        return union(intervals)

    monkeypatch.setattr(burning, "union", counted)
    return unions


def test_a_late_outage_merges_only_with_the_merged_outages_it_touches(monkeypatch: pytest.MonkeyPatch) -> None:
    """An appended outage that ends before outages held (recorded late) is placed among those by
    end, and merges only with the merged outages it touches — none here: not with every merged
    outage after it (merged again with them, a round's union grew with every outage held after a
    late one — thousands at a contact centre's density, a correction in the middle of the window
    among them); one touching two merges the two."""
    kept, index = _Kept(), BurnIndex()
    objective, as_of = _objective(0), _at(86400)
    kept.lists[0] = [Interval(_at(600 * k), _at(600 * k + 60)) for k in range(100)]  # 100 apart, one a 10 min
    unions = _count_unions(monkeypatch)

    def values() -> None:
        signals = kept.signals()
        got = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
        assert got == _expected(objective, AlwaysOpen(), [], signals, as_of)

    values()
    unions.clear()
    # Late: between held outages 90 and 91 (of 0 … 99), ending before the last nine.
    kept.lists[1].append(Interval(_at(600 * 90 + 120), _at(600 * 90 + 180)))
    values()
    assert (index.built, index.appended) == (1, 1)
    assert unions == [1]  # the new one alone (before: the merged outages 91 … 99 beside it)
    unions.clear()
    kept.lists[1].append(Interval(_at(600 * 50 + 30), _at(600 * 51 + 30)))  # from 50's middle into 51
    values()
    assert unions == [3] and len(index.merged) == 100


@pytest.mark.parametrize("minimum", [0, 60])
@pytest.mark.parametrize("under_way", [False, True])
def test_a_long_run_of_overlapping_outages_is_not_merged_again_at_each_look_back(
    monkeypatch: pytest.MonkeyPatch, minimum: int, under_way: bool
) -> None:
    """A probe reporting a blip every 3 s while a service is down for hours makes one merged
    outage of thousands of outages. A look-back whose start or end falls in it reads it without
    merging those outages again (the formula's value all the same): before, each look-back of each
    round merged every outage of it ending after the look-back's start — and, with an outage under
    way beside, every outage from that merged outage's start, twice."""
    kept, index = _Kept(), BurnIndex()
    objective = _objective(minimum)
    down_from = 20 * 3600  # 20:00 on the window's first day, for 3 hours
    kept.lists[0] = [Interval(_at(600 * k), _at(600 * k + 90)) for k in range(100)]  # apart, before it
    kept.lists[1] = [Interval(_at(down_from + 3 * k), _at(down_from + 3 * k + 5)) for k in range(3600)]
    if under_way:
        kept.lists[0].append(Interval(_at(down_from + 2 * 3600), ONGOING))
    unions = _count_unions(monkeypatch)
    signals = kept.signals()
    index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, _at(down_from), LENGTHS)
    # (built from every outage, once) then rounds with the look-backs' ends inside the run (its
    # start, middle and end reached) and after it.
    for offset in (40, 95, 1800, 5400, 10790, 10805, 11100, 14000):
        as_of = _at(down_from + offset)
        unions.clear()
        values = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
        assert values == _expected(objective, AlwaysOpen(), [], signals, as_of), offset
        # Only what lies within the minimum of a look-back's edge is merged again: a few dozen blips.
        assert max(unions, default=0) <= 40, (offset, max(unions))
    assert index.built == 1


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 60)), min_size=1, max_size=150),
    st.lists(_outage, max_size=8),
    st.integers(-600, 4 * 3600),
    st.sampled_from([0, 1, 30, 60, 600, 3600]),
    st.one_of(st.none(), st.integers(-3 * 3600, 600)),
)
# A look-back's end 40 s into a 50 s outage, and a 320 s look-back's start 10 s into it: 40 s of
# it in the look-back, the outage shorter than a minimum of 60 s — no downtime, whatever part of
# it lies in the look-back (the part alone judged against the minimum would count 40 s).
@example(blips=[(0, 50)], others=[], offset=40, minimum=60, under_way=None)
@example(blips=[(0, 50)], others=[], offset=330, minimum=60, under_way=None)
def test_look_backs_over_runs_of_overlapping_outages_are_the_formula_s(
    blips: list[tuple[int, int]], others: list[tuple[int, int, int]], offset: int, minimum: int,
    under_way: int | None,
) -> None:  # fmt: skip
    """Runs of blips (each starting a few seconds after the one before, some overlapping, some
    touching, some apart) beside other outages, a minimum outage of any length against the
    look-backs' (5 min 20 s … 4 h 48 min), an outage under way or not, the round's instant
    anywhere in or after them: each look-back is the formula's."""
    kept, index = _Kept(), BurnIndex()
    t = 20 * 3600
    for gap, length in blips:
        t += gap
        kept.lists[1].append(Interval(_at(t), _at(t + length)))
    kept.lists[0] = [_interval(o) for o in others]
    as_of = _at(20 * 3600 + offset)
    if under_way is not None:
        kept.lists[0].append(Interval(as_of + timedelta(seconds=under_way), ONGOING))
    objective, signals = _objective(minimum), kept.signals()
    values = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
    assert values == _expected(objective, AlwaysOpen(), [], signals, as_of)


@pytest.mark.parametrize(
    ("held", "under_way", "minimum"),
    [
        # Two touching outages (10 min merged) before one under way that overlaps the second: the
        # three are one merged outage of 12 min, the first ending before the one under way starts.
        ([(-12, -5), (-6, -2)], -3, 10),
        # One ending exactly where the one under way starts, merged with an earlier one: 17 min
        # below a minimum of 20, then 20 with the one under way.
        ([(-20, -9), (-10, -3)], -3, 20),
        # Apart: nothing merged with it; and one under way swallowing a short one.
        ([(-30, -25)], -3, 2),
        ([(-4, -3)], -6, 5),
    ],
)
def test_an_outage_under_way_is_merged_with_what_it_touches_as_the_formula_merges(
    held: list[tuple[int, int]], under_way: int, minimum: int
) -> None:
    """An outage under way lasts until each look-back's end: merged with the merged outages it
    touches, each judged on its whole length against the minimum, as the formula does."""
    kept, index = _Kept(), BurnIndex()
    as_of = _at(86400)
    minutes = [Interval(as_of + timedelta(minutes=a), as_of + timedelta(minutes=b)) for a, b in held]
    kept.lists[0] = [Interval(_at(3600), _at(3660)), *minutes, Interval(as_of + timedelta(minutes=under_way), ONGOING)]
    signals = kept.signals()
    objective = _objective(minimum * 60)
    values = index.values(objective, AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
    assert values == _expected(objective, AlwaysOpen(), [], signals, as_of)


@pytest.mark.parametrize("ongoing", [False, True])
def test_a_look_back_whose_eligible_time_is_not_the_span_s_is_left_to_the_formula(ongoing: bool) -> None:
    """A round instant whose look-backs reach before the span (not a window's: a caller's own)."""
    kept, index = _Kept(), BurnIndex()
    kept.lists[0] = [Interval(SPAN.start - timedelta(hours=1), SPAN.start + timedelta(minutes=5))]
    if ongoing:
        kept.lists[0].append(Interval(SPAN.start, ONGOING))
    as_of = SPAN.start + timedelta(minutes=10)
    signals = kept.signals()
    values = index.values(_objective(0), AlwaysOpen(), [], signals.outages, signals.lineage, SPAN, as_of, LENGTHS)
    assert values is not None and set(values) == {w for w in LENGTHS if w <= timedelta(minutes=10)}
    rates = burn_rates(_objective(0), AlwaysOpen(), [], signals, as_of, WINDOW.duration, "UTC", values)
    assert rates == burn_rates(_objective(0), AlwaysOpen(), [], signals, as_of, WINDOW.duration, "UTC")


_count = st.tuples(st.integers(-3600, 2 * 86400), st.integers(0, 50), st.integers(0, 50))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_count, max_size=40),
    st.sampled_from(["OCCURRENCES", "TIMESLICES", "RATIO_TIMESLICES"]),
    st.sampled_from([1, 2]),
    st.sampled_from(["always", "business"]),
)
def test_a_request_based_look_back_computes_the_value_without_the_digest(
    raw: list[tuple[int, int, int]], method: str, version: int, calendar: str
) -> None:
    """What a look-back reads of request-based availability (its value) is the formula's, its
    input digest not computed."""
    counts = [reliability.RequestCount(_at(a), _at(a + 60), min(g, n), n) for a, g, n in raw]
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(_at(3600), _at(7200))]
    args = (counts, method, WINDOW, 5, Decimal("99"), cal, exclusions, version)
    full = reliability.availability_requests(*args)
    quick = reliability.availability_requests(*args, digested=False)
    assert quick == replace(full, input_digest="")
    objective = {
        "metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "comparator": "COMPARATOR_AT_LEAST",
        "budgeting": f"BUDGETING_{method}", "slice_target": "99", "slice_minutes": 5,
    }  # fmt: skip
    as_of = _at(86400)
    look = run_formula(
        objective, Interval(as_of - timedelta(hours=1), as_of), cal, exclusions, SignalSet(requests=counts),
        as_of, "UTC", digested=False,
    )  # fmt: skip
    assert look.input_digest == ""


class _Counted(list[Any]):
    """A list that counts the passes over it."""

    passes = 0

    def __iter__(self) -> Any:
        self.passes += 1
        return super().__iter__()


@pytest.mark.parametrize("method", ["OCCURRENCES", "TIMESLICES"])
def test_the_look_backs_read_the_windows_request_counts_once(method: str) -> None:
    """The look-backs of request-based availability pick their counts from those given in one pass
    — each shorter one from the longer one's — not a pass over all of them each, and each is the
    formula's over every count."""
    counts = _Counted(
        reliability.RequestCount(_at(m * 60), _at(m * 60 + 60), 990 + m % 11, 1000) for m in range(10 * 24 * 60)
    )
    objective = {
        "metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "comparator": "COMPARATOR_AT_LEAST",
        "budgeting": f"BUDGETING_{method}", "slice_target": "99", "slice_minutes": 5,
    }  # fmt: skip
    as_of, exclusions = _at(10 * 86400 - 90), [Interval(_at(9 * 86400), _at(9 * 86400 + 3600))]
    window = timedelta(days=30)
    rates = burn_rates(objective, BUSINESS, exclusions, SignalSet(requests=counts), as_of, window, "UTC")
    assert counts.passes == 1
    for length in burn_lengths(window):
        look = Interval(as_of - length, as_of)
        value = run_formula(objective, look, BUSINESS, exclusions, SignalSet(requests=list(counts)), as_of, "UTC").value
        rate = reliability.burn_rate_value((100 - value) / 100, Decimal("99.5")) if value is not None else None
        assert rates[length] == (rate if rate is not None else 0), length


# Random request counts over four days, an always-open or a business calendar, an instant in the
# last day, with or without an exclusion: what the look-backs' property tests below draw.
_LOOK_BACKS = (
    st.lists(st.tuples(st.integers(0, 4 * 86400), st.integers(0, 50), st.integers(0, 50)), max_size=60),
    st.sampled_from(["always", "business"]),
    st.integers(3 * 86400, 4 * 86400 + 7200),
    st.booleans(),
)


def _look_back_case(
    raw: list[tuple[int, int, int]], calendar: str, as_of_s: int, excluded: bool
) -> tuple[list[reliability.RequestCount], Calendar, list[Interval], datetime]:
    counts = [reliability.RequestCount(_at(a), _at(a + 60), min(g, n), n) for a, g, n in raw]
    cal = AlwaysOpen() if calendar == "always" else BUSINESS
    exclusions = [Interval(_at(3 * 86400), _at(3 * 86400 + 5400))] if excluded else []
    return counts, cal, exclusions, _at(as_of_s)


def _rates_are_the_formula_s(
    objective: dict[str, Any], cal: Calendar, exclusions: list[Interval], counts: list[reliability.RequestCount],
    as_of: datetime, read: Mapping[timedelta, Decimal | None],
) -> None:  # fmt: skip
    """Each look-back's burn rate (of a 30-day window) the formula's value over every count gives,
    and each value `read` the formula's."""
    window = timedelta(days=30)
    rates = burn_rates(objective, cal, exclusions, SignalSet(requests=counts), as_of, window, "UTC")
    for length in burn_lengths(window):
        look = Interval(as_of - length, as_of)
        value = run_formula(objective, look, cal, exclusions, SignalSet(requests=counts), as_of, "UTC").value
        if length in read:
            assert read[length] == value, length
        rate = reliability.burn_rate_value((100 - value) / 100, Decimal("99.5")) if value is not None else None
        assert rates[length] == (rate if rate is not None else 0), length


@settings(max_examples=80, deadline=None)
@given(*_LOOK_BACKS)
def test_request_based_look_backs_by_occurrences_are_the_formula_s_from_one_pass(
    raw: list[tuple[int, int, int]], calendar: str, as_of_s: int, excluded: bool
) -> None:
    """By occurrences, every look-back's value is read from the counts measured in the longest
    one, sorted with their sums (`evaluation._occurrences`) — each the formula's over every count,
    eligible time (a business calendar, an exclusion) included — none left to the formula."""
    counts, cal, exclusions, as_of = _look_back_case(raw, calendar, as_of_s, excluded)
    objective = {
        "metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "comparator": "COMPARATOR_AT_LEAST",
        "budgeting": "BUDGETING_OCCURRENCES",
    }  # fmt: skip
    lengths = burn_lengths(timedelta(days=30))
    read = evaluation._occurrences(cal, exclusions, counts, as_of, lengths)
    assert len(read) == len(lengths)
    _rates_are_the_formula_s(objective, cal, exclusions, counts, as_of, read)


@settings(max_examples=80, deadline=None)
@given(
    *_LOOK_BACKS,
    st.sampled_from([("TIMESLICES", 5, "99"), ("TIMESLICES", 1, "50"), ("RATIO_TIMESLICES", 5, None),
                     ("RATIO_TIMESLICES", 7, None), ("TIMESLICES", 10, "0")]),
)  # fmt: skip
def test_request_based_look_backs_by_time_slices_are_the_formula_s_from_one_pass(
    raw: list[tuple[int, int, int]], calendar: str, as_of_s: int, excluded: bool, budget: tuple[str, int, str | None]
) -> None:
    """By time slices (good slices, or the mean of their ratios), every look-back a whole number of
    slices long is read from the slices of the longest one worked out once (`evaluation._time_slices`)
    — each the formula's over every count, eligible time (a business calendar, an exclusion)
    included; 7-minute slices leave the look-backs they do not divide to the formula."""
    method, minutes, target = budget
    counts, cal, exclusions, as_of = _look_back_case(raw, calendar, as_of_s, excluded)
    objective = {
        "metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "comparator": "COMPARATOR_AT_LEAST",
        "budgeting": f"BUDGETING_{method}", "slice_minutes": minutes, **({"slice_target": target} if target else {}),
    }  # fmt: skip
    lengths = burn_lengths(timedelta(days=30))
    read = evaluation._time_slices(
        method, minutes, Decimal(target) if target else None, cal, exclusions, counts, as_of, lengths
    )
    whole = [length for length in lengths if not length % timedelta(minutes=minutes)]
    assert sorted(read) == sorted(whole) if max(lengths) in whole else read == {}
    _rates_are_the_formula_s(objective, cal, exclusions, counts, as_of, read)


def test_request_based_look_backs_by_time_slices_run_no_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """By time slices of 5 minutes, the look-backs' values come from the slices worked out once: no
    formula run a look-back (3 days of a count a minute: ≈ 6 ms a round for the eight formula runs
    before)."""
    counts = [reliability.RequestCount(_at(m * 60), _at(m * 60 + 60), 988 + m % 13, 1000) for m in range(3 * 24 * 60)]
    for budgeting in ("BUDGETING_TIMESLICES", "BUDGETING_RATIO_TIMESLICES"):
        objective = {"metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "budgeting": budgeting,
                     "slice_target": "99", "slice_minutes": 5}  # fmt: skip
        expected = burn_rates(
            objective, BUSINESS, [], SignalSet(requests=counts), _at(3 * 86400), timedelta(days=30), "UTC"
        )
        with monkeypatch.context() as patch:

            def formula(*args: Any, **kwargs: Any) -> Any:
                raise AssertionError("a look-back ran the formula")

            patch.setattr(evaluation, "run_formula", formula)
            rates = burn_rates(
                objective, BUSINESS, [], SignalSet(requests=counts), _at(3 * 86400), timedelta(days=30), "UTC"
            )
        assert rates == expected and len(rates) == len(burn_lengths(timedelta(days=30)))


def test_request_based_look_backs_by_occurrences_run_no_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """By occurrences the look-backs' values come from the sums alone: no formula run a look-back
    (3 days of a count a minute: ≈ 2.5 ms a round for the eight formula runs before)."""
    counts = [reliability.RequestCount(_at(m * 60), _at(m * 60 + 60), 990, 1000) for m in range(3 * 24 * 60)]
    objective = {"metric": "METRIC_AVAILABILITY_REQUESTS", "target": "99.5", "budgeting": "BUDGETING_OCCURRENCES"}
    expected = burn_rates(
        objective, BUSINESS, [], SignalSet(requests=counts), _at(3 * 86400), timedelta(days=30), "UTC"
    )

    def formula(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a look-back ran the formula")

    monkeypatch.setattr(evaluation, "run_formula", formula)
    rates = burn_rates(objective, BUSINESS, [], SignalSet(requests=counts), _at(3 * 86400), timedelta(days=30), "UTC")
    assert rates == expected and len(rates) == len(burn_lengths(timedelta(days=30)))


# -- a service's rounds: the burn rates each round judged against those over every stored signal ---------------------
_service_step = st.one_of(
    st.tuples(st.just("outage"), st.integers(-60 * 24 * 4, 60 * 24 * 2), st.integers(1, 240)),
    st.tuples(st.just("under way"), st.integers(-60 * 24, 60)),
    st.tuples(st.just("correct"), st.integers(0, 10**6), st.integers(1, 300)),
    st.tuples(st.just("round"), st.integers(1, 3 * 3600)),
)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_service_step, min_size=3, max_size=14))
def test_every_round_s_burn_rates_are_those_over_every_stored_signal(
    make_store_env: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch, steps: list[tuple[Any, ...]]
) -> None:
    """Random outages (late ones before the window too), outages under way and their completion,
    corrections, and rounds moving the instant, idle ones included (only the burn rates judged):
    after every round, the burn rates it judged April's availability by are those
    `evaluation.burn_rates` gives over every stored signal, with the window's calendar and
    exclusions."""
    judged = spy_burn_rates(monkeypatch)
    suite = Suite(make_store_env)
    try:
        m = suite.metrics
        aid = an_active_agreement(suite)
        now = at(f"2026-04-10T10:00{AMS}")
        suite.tick(now.isoformat())
        sent: list[pb.Signal] = []
        for n, step in enumerate([*steps, ("round", 5)]):
            kind = step[0]
            if kind == "outage":
                batch = [outage(f"o{n}", (now + timedelta(minutes=step[1])).isoformat(), step[2] / 7)]
            elif kind == "under way":
                begun = pb.Outage(start=ts(now + timedelta(minutes=step[1])))
                batch = [pb.Signal(signal_id=f"u{n}", service_id=EMAIL, outage=begun)]
            elif kind == "correct" and sent:
                s = pb.Signal()
                s.CopyFrom(sent[step[1] % len(sent)])
                s.outage.end.CopyFrom(ts(s.outage.start.ToDatetime(tzinfo=UTC) + timedelta(seconds=step[2])))
                batch = [s]
            elif kind == "round":
                now += timedelta(seconds=step[1])
                judged.clear()
                suite.tick(now.isoformat())
                _check_rates(m, aid, now, judged)
                continue
            else:
                continue
            m.record(COLLECTOR, batch, reason="corrected")
            sent += [s for s in batch if s.signal_id not in {x.signal_id for x in sent}]
        _USED.update(r.burns.appended for r in m._running.values())
    finally:
        suite.close()


_USED: set[int] = set()


def _check_rates(m: Any, aid: str, now: datetime, judged: list[dict[timedelta, Decimal]]) -> None:
    view = m.agreement_view(None, aid)
    agg = m.window(None, aid, "availability", "2026-03-31T22:00:00+00:00")
    if "budget_consumed" not in agg.current:
        assert not judged
        return
    window = Interval(at(agg.window_start), at(agg.window_end))
    everything = m.signal_sources(m.scope(view, now)[2])  # every input per service, not from a kept selection
    version, services = m._judging_version(view, window.start)
    objective = next(o for o in version["terms"]["objectives"] if o["objective_id"] == "availability")
    signals = combined(everything, services)
    calendar = m._calendar_for(objective, None)
    exclusions, _ = judging._exclusions(objective, signals, window, judging.suspensions(view))
    expected = burn_rates(objective, calendar, exclusions, signals, now, window.duration, "UTC")
    if not judged:  # no signal reaches into its longest look-back: left as judged (every rate is zero)
        assert not any(expected.values())
    assert all(rates == expected for rates in judged)  # (a tick may run more than one round: each at `now`)


def test_the_rounds_above_read_look_backs_from_appended_outages() -> None:
    """(runs after the property above: some of its rounds placed appended outages alone)"""
    assert any(_USED)
