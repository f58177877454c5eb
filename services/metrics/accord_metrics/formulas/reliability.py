"""Reliability formulas of docs/domain.md §3–4: time-based and request-based availability, MTTR,
MTBF, the error budget, burn rates and the multi-window burn-rate alerts.

Conventions shared by every formula here:

- Pure functions over `Interval`s and counts; Decimal arithmetic throughout, never float
  (a float passed as a percentage or ratio is refused).
- Eligible time = window ∩ the calendar's open hours − exclusions (docs/domain.md §3); overlapping
  exclusions and overlapping outages count once (interval union).
- `input_digest` is the digest of the formula id and version, its parameters, the calendar's
  definition and the inputs, each input list sorted and every instant written in UTC, so
  neither the order the inputs arrived in nor the UTC offset they were written with changes it.
  The versions with a running form (`availability.time` and `mtbf` v2 and v3,
  `availability.requests` v3 and v4) digest their outages, failures or counts bucketed
  (`common.bucketed`; `availability.time` and `mtbf` v3 and `availability.requests` v4 in runs by
  the hour their outage or count started in, `common.hour_bucketed`), and their payload names
  their own version; the versions before
  them (kept for the windows recorded with them) digest them in one list, under
  "formula_version" 1.
- Parameters and detail values are strings; instants are UTC ISO-8601, durations seconds.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Any

from accord_kit.timeline import (
    AlwaysOpen,
    BusinessCalendar,
    Calendar,
    Interval,
    intersect_all,
    subtract,
    total,
    union,
)
from accord_metrics.formulas.common import (
    HUNDRED,
    ZERO,
    EncodedList,
    Evaluated,
    bucketed,
    canonical_json,
    digest,
    encoded_all,
    hour_bucketed,
    hour_of,
    percent,
    ratio,
    seconds,
    utc_iso,
)

VERSION = 1
# The versions of `availability.time` and `mtbf` computed: v3 digests the outages (failures)
# bucketed, each bucket in runs by the hour (UTC) they started in (`common.hour_bucketed`: a
# running form holds no record); v2 bucketed without runs, v1 in one list (both kept for the
# windows recorded with them); the value and detail are the same in all three.
OUTAGES_VERSION = 3
OUTAGES_VERSIONS = (1, 2, 3)
NO_ELIGIBLE_TIME = "no eligible time"
AVAILABILITY_METHODS = ("OCCURRENCES", "TIMESLICES", "RATIO_TIMESLICES")
# Which recorded instant ends the clock for each "R" of MTTR (docs/domain.md §4).
R_VARIANTS: dict[str, str] = {
    "REPAIR": "restored_at",
    "RESTORE": "restored_at",
    "RESOLVE": "resolved_at",
    "RESPOND": "responded_at",
}
_R_VERB = {"REPAIR": "repaired", "RESTORE": "restored", "RESOLVE": "resolved", "RESPOND": "responded to"}
DEFAULT_WARNING_LEVELS: tuple[int, ...] = (50, 75, 90)
# Mean of slice ratios: the sum is kept at this precision before the final rounding to the
# context's 28 digits (exact sums of many ratios would need unbounded rationals).
SUM_PRECISION = 60


# -- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestCount:
    """Requests counted over [start, end): `good` of `total` succeeded. Slotted: a window's
    selection holds every count of it (64 B each, against 104 with a dict — a service recorded
    every 10 s holds ≈ 268,000 a month), and no formula keeps a record on one."""

    start: datetime
    end: datetime
    good: int
    total: int

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("request count instants must be timezone-aware")
        if self.end < self.start:
            raise ValueError("a request count ends before it starts")
        if not 0 <= self.good <= self.total:
            raise ValueError(f"need 0 <= good <= total, got good={self.good} total={self.total}")


@dataclass(frozen=True)
class Incident:
    """One incident's clock: when the failure started and, once known, when the service was
    restored, the incident resolved and first responded to. None = not yet (still running)."""

    failure_start: datetime
    restored_at: datetime | None = None
    resolved_at: datetime | None = None
    responded_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.failure_start.tzinfo is None:
            raise ValueError("incident instants must be timezone-aware")
        for name in ("restored_at", "resolved_at", "responded_at"):
            at: datetime | None = getattr(self, name)
            if at is None:
                continue
            if at.tzinfo is None:
                raise ValueError("incident instants must be timezone-aware")
            if at < self.failure_start:
                raise ValueError(f"{name} precedes failure_start")

    @classmethod
    def from_outage(cls, outage: Interval) -> Incident:
        """An outage interval as an incident restored at the interval's end."""
        return cls(outage.start, restored_at=outage.end)

    def ended(self, r: str) -> datetime | None:
        """The instant that stops the clock for the given R (see `R_VARIANTS`)."""
        try:
            field_name = R_VARIANTS[r]
        except KeyError:
            raise ValueError(f"unknown R {r!r}; expected one of {tuple(R_VARIANTS)}") from None
        at: datetime | None = getattr(self, field_name)
        return at


@dataclass(frozen=True)
class BurnPair:
    """A multi-window burn-rate rule: alert when the burn rate over both `long` and `short`
    exceeds `factor`."""

    factor: Decimal
    long: timedelta
    short: timedelta


# The pairs docs/domain.md §3 gives for a 30-day window.
BURN_WINDOW_REFERENCE = timedelta(days=30)
BURN_PAIRS_30_DAYS: tuple[BurnPair, ...] = (
    BurnPair(Decimal("14.4"), timedelta(hours=1), timedelta(minutes=5)),
    BurnPair(Decimal(6), timedelta(hours=6), timedelta(minutes=30)),
    BurnPair(Decimal(3), timedelta(days=1), timedelta(hours=2)),
    BurnPair(Decimal(1), timedelta(days=3), timedelta(hours=6)),
)


# -- helpers ---------------------------------------------------------------------------------
def _dec(x: Decimal | int, what: str) -> Decimal:
    if isinstance(x, float) or not isinstance(x, (Decimal, int)):
        raise TypeError(f"{what} must be a Decimal or an int, not {type(x).__name__}")
    return Decimal(x)


def _utc(t: datetime) -> str:
    return utc_iso(t)


def _secs(td: timedelta) -> str:
    return str(seconds(td))


def _utc_pair(i: Interval) -> list[str]:
    return [_utc(i.start), _utc(i.end)]


def _utc_pair_json(i: Interval) -> str:
    """`canonical_json(_utc_pair(i))`, written directly (an instant's ISO form needs no escaping)."""
    return '["' + utc_iso(i.start) + '","' + utc_iso(i.end) + '"]'


def _intervals(ivs: Iterable[Interval]) -> EncodedList:
    """The intervals as [start, end] in UTC, sorted: each encoded once per interval object."""
    return EncodedList(sorted(encoded_all(ivs, _utc_pair, _utc_pair_json)))


def _window_parameters(window: Interval) -> dict[str, str]:
    return {"window_start": _utc(window.start), "window_end": _utc(window.end)}


def _calendar_parameters(calendar: Calendar) -> dict[str, str]:
    return {"calendar": str(calendar.calendar_id), "calendar_version": str(calendar.version)}


def _calendar_definition(calendar: Calendar) -> dict[str, Any]:
    if isinstance(calendar, BusinessCalendar):
        return {
            "calendar_id": calendar.calendar_id,
            "version": calendar.version,
            "time_zone": calendar.time_zone,
            "hours": sorted([w, o, c] for w, o, c in calendar.hours),
            "holidays": sorted(d.isoformat() for d in calendar.holidays),
        }
    return {"calendar_id": calendar.calendar_id, "version": calendar.version}


def _input_digest(
    formula_id: str,
    parameters: dict[str, str],
    inputs: dict[str, Any],
    calendar: Calendar | None = None,
    version: int = VERSION,
) -> str:
    return digest(_input_payload(formula_id, parameters, inputs, calendar, version))


def _input_payload(
    formula_id: str,
    parameters: dict[str, str],
    inputs: dict[str, Any],
    calendar: Calendar | None = None,
    version: int = VERSION,
) -> dict[str, Any]:
    """What `_input_digest` digests (the running forms split it around their records: `running`).
    `version`: what the payload names — 1 for every version before the bucketed ones (as they
    were recorded), a bucketed version its own."""
    payload: dict[str, Any] = {
        "formula_id": formula_id,
        "formula_version": version,
        "parameters": parameters,
        "inputs": inputs,
    }
    if calendar is not None:
        payload["calendar"] = _calendar_definition(calendar)
    return payload


def _with_common_part(intervals: Sequence[Interval], others: Sequence[Interval]) -> int:
    """How many of `intervals` have a non-empty common part with `others` (what
    `intersect_all([i], others)` being non-empty says for each), found by bisection in the
    merged `others` instead of intersecting each interval with all of them."""
    merged = union(others)
    ends = [o.end for o in merged]
    count = 0
    for i in intervals:
        if i.empty:
            continue
        j = bisect_right(ends, i.start)  # the first merged interval ending after i starts
        if j < len(merged) and merged[j].start < i.end:
            count += 1
    return count


def _downtime(merged: Sequence[Interval], eligible: Sequence[Interval]) -> tuple[timedelta, int]:
    """`total(intersect_all(merged, eligible))` and `_with_common_part(merged, eligible)` in one
    pass: both lists sorted and disjoint (`merged` a union, `eligible` as `eligible_intervals`
    gives it), so each merged outage's eligible part is the sum of its overlaps with the eligible
    intervals it meets — exact durations, whatever the order they are added in."""
    down = timedelta(0)
    counted = j = 0
    n = len(eligible)
    for m in merged:
        start, end = m.start, m.end
        while j < n and eligible[j].end <= start:
            j += 1
        k, mine = j, timedelta(0)
        while k < n and eligible[k].start < end:
            e = eligible[k]
            part = min(end, e.end) - max(start, e.start)
            if part > timedelta(0):
                mine += part
            k += 1
        if mine:
            counted += 1
            down += mine
    return down, counted


def eligible_intervals(window: Interval, calendar: Calendar, exclusions: Sequence[Interval] = ()) -> list[Interval]:
    """window ∩ the calendar's open hours − exclusions (docs/domain.md §3–4), merged and sorted.
    An always-open calendar's open hours within the window are the window itself: it minus the
    exclusions, the same intervals without the intersection (asked for at every burn-rate
    look-back of every open window, every round)."""
    if isinstance(calendar, AlwaysOpen):
        return subtract([window], exclusions) if window.start < window.end else []
    return subtract(intersect_all([window], calendar.open_intervals(window)), exclusions)


# -- availability ------------------------------------------------------------------------------
def outages_payload(
    formula_id: str, version: int, parameters: dict[str, str], records: list[Any], exclusions: Sequence[Interval],
    calendar: Calendar,
) -> dict[str, Any]:  # fmt: skip
    """What `availability.time`'s or `mtbf`'s input digest digests, `records` in the place of the
    outages' (failures') records: the sorted records (v1), their bucketed form (v2), by hours
    (v3) or a running form's slot."""
    if version not in OUTAGES_VERSIONS:
        raise ValueError(f"{formula_id} has versions {OUTAGES_VERSIONS}, not {version}")
    name = "outages" if formula_id == "availability.time" else "failures"
    inputs = {name: records, "exclusions": _intervals(exclusions)}
    return _input_payload(formula_id, parameters, inputs, calendar, version)


def _outages_digest(
    formula_id: str, version: int, parameters: dict[str, str], outages: Sequence[Interval],
    exclusions: Sequence[Interval], calendar: Calendar,
) -> str:  # fmt: skip
    if version >= 3:
        # Sorted by record, which is by start then end (UTC instants in one ISO form sort as they
        # fall), so the hours of their starts never decrease.
        pairs = sorted((_utc_pair_json(o), o.start) for o in outages)
        inputs: list[Any] = hour_bucketed((hour_of(start), record) for record, start in pairs)
    else:
        records = _intervals(outages)
        inputs = bucketed(records) if version >= 2 else records
    return digest(outages_payload(formula_id, version, parameters, inputs, exclusions, calendar))


def availability_time(
    window: Interval,
    calendar: Calendar,
    outages: Sequence[Interval],
    exclusions: Sequence[Interval],
    min_outage: timedelta = timedelta(0),
    *,
    digested: bool = True,
    version: int = OUTAGES_VERSION,
) -> Evaluated:
    """Availability, time-based (docs/domain.md §4 "Availability, time-based"), formula
    `availability.time` v3, in percent (v1 and v2: the same value, its outages digested in one list,
    and bucketed without runs by hour).

    eligible = window ∩ calendar open hours − exclusions; downtime = the union of the outages
    within eligible time; value = (eligible − downtime) ÷ eligible × 100.

    - Overlapping (or touching) outages count once; an outage overlapping an exclusion, or
      reaching outside open hours or the window, counts only where it is eligible.
    - Minimum outage: overlapping/touching outage records are first merged into one outage,
      and an outage is ignored when its *full* length — before clipping to the window, the
      calendar or the exclusions — is shorter than `min_outage` (an outage of exactly the
      minimum counts). So an outage crossing the window's edge is judged the same in both
      windows, and an outage reported as touching fragments is judged as a whole.
    - No eligible time → value None, undefined "no eligible time" (NO_DATA, docs/domain.md §3).

    detail: eligible_seconds, downtime_seconds, outages_counted (merged outages at least the
    minimum long that have eligible time), outages_below_minimum (merged outages ignored).

    `digested` false: no input digest computed (`input_digest` ""), for a caller that reads
    only the value (the burn rates' look-backs)."""
    if min_outage < timedelta(0):
        raise ValueError("min_outage must not be negative")
    if version not in OUTAGES_VERSIONS:
        raise ValueError(f"availability.time has versions {OUTAGES_VERSIONS}, not {version}")
    formula_id = "availability.time"
    parameters = {
        **_window_parameters(window),
        **_calendar_parameters(calendar),
        "min_outage_seconds": _secs(min_outage),
        "min_outage_judged_on": "merged outage before clipping",
    }
    eligible = eligible_intervals(window, calendar, exclusions)
    merged = union(outages)
    # Every merged outage is non-empty (its duration is end − start): none is shorter than no minimum.
    long_enough = merged if min_outage <= timedelta(0) else [o for o in merged if o.end - o.start >= min_outage]
    down, counted = _downtime(long_enough, eligible)
    input_digest = _outages_digest(formula_id, version, parameters, outages, exclusions, calendar) if digested else ""
    return availability_time_evaluated(
        parameters, seconds(total(eligible)), seconds(down), counted, len(merged) - len(long_enough), input_digest,
        version,
    )  # fmt: skip


def availability_time_evaluated(
    parameters: dict[str, str], eligible_s: Decimal, downtime_s: Decimal, counted: int, short: int, input_digest: str,
    version: int = OUTAGES_VERSION,
) -> Evaluated:  # fmt: skip
    """`availability_time`'s evaluation from its measures (what it and its running form share):
    the value, or why it is undefined, and the detail."""
    value = percent(eligible_s - downtime_s, eligible_s)
    return Evaluated(
        formula_id="availability.time",
        formula_version=version,
        value=value,
        parameters=parameters,
        input_digest=input_digest,
        detail={
            "eligible_seconds": str(eligible_s),
            "downtime_seconds": str(downtime_s),
            "outages_counted": str(counted),
            "outages_below_minimum": str(short),
        },
        undefined=NO_ELIGIBLE_TIME if value is None else "",
    )


# v4 digests the counts bucketed, each bucket in runs by the hour (UTC) they started in
# (`common.hour_bucketed`: a running form holds no record); v3 bucketed without runs.
REQUESTS_VERSION = 4
REQUESTS_VERSIONS = (1, 2, 3, 4)  # the versions of `availability.requests` metrics still computes


def count_json(b: RequestCount) -> str:
    """A count's record, `canonical_json([start, end, good, total])` with the instants in UTC,
    written directly (an instant's ISO form needs no escaping, an int's digits none)."""
    return (
        '["' + utc_iso(b.start) + '","' + utc_iso(b.end) + '",'
        + str(int(b.good)) + "," + str(int(b.total)) + "]"
    )  # fmt: skip


def count_order(b: RequestCount) -> tuple[datetime, datetime, int, int]:
    """A count's place among the records: by start, then end, good and total (as instants and numbers)."""
    return (b.start, b.end, b.good, b.total)


def availability_requests(
    buckets: Sequence[RequestCount],
    method: str,
    window: Interval,
    slice_minutes: int = 5,
    slice_target: Decimal | None = None,
    calendar: Calendar | None = None,
    exclusions: Sequence[Interval] = (),
    version: int = REQUESTS_VERSION,
    *,
    digested: bool = True,
) -> Evaluated:
    """Availability, request-based (docs/domain.md §4 "Availability, request-based", budgeting
    methods of §3), formula `availability.requests`, in percent; `method` is the variant:

    - `OCCURRENCES`: Σgood ÷ Σtotal × 100; no request measured → value None.
    - `TIMESLICES`: the share of good slices × 100, a slice good when its success percentage
      is at least `slice_target` (a percentage, e.g. Decimal("99.5"); compared exactly).
    - `RATIO_TIMESLICES`: the mean of the slices' success ratios × 100.

    Version 2 measures only eligible time, as time-based availability does:
    eligible = window ∩ the calendar's open hours − exclusions (declared maintenance,
    maintenance announced with the notice required, suspended time). A count is measured when
    its `start` is eligible (a count is never split); a slice is a slice of the window when
    some of it is eligible, and holds the measured counts that start in it. No eligible time
    → value None, undefined "no eligible time". Version 1 (kept for the windows recorded with
    it) measured every count starting in the window and every slice, whatever the calendar
    and the exclusions. Version 3 is version 2 with its counts digested bucketed
    (`common.bucketed`; v2 digests them in one list); version 4 (the current one) with each
    bucket in runs by the hour (UTC) its counts started in (`common.hour_bucketed`).

    Counts starting outside the window are ignored. Slices are `slice_minutes` long and
    aligned to the window's start; a last, shorter slice (a window not a multiple of the
    slice) is a slice like the others. A slice with no measured request counts as fully
    successful (ratio 1, good for any target). A window of no slice → value None.

    detail: good, total, counts_in_window (the counts measured); for the slice methods slices,
    empty_slices and (TIMESLICES) good_slices; version 2 also eligible_seconds and
    counts_excluded (counts starting in the window outside eligible time).

    `digested` false: no input digest computed (`input_digest` ""), for a caller that reads
    only the value (the burn rates' look-backs)."""
    if method not in AVAILABILITY_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {AVAILABILITY_METHODS}")
    if version not in REQUESTS_VERSIONS:
        raise ValueError(f"availability.requests has versions {REQUESTS_VERSIONS}, not {version}")
    calendar = calendar if calendar is not None else AlwaysOpen()
    formula_id = "availability.requests"
    parameters = {"method": method, **_window_parameters(window)}
    if version >= 2:
        parameters |= _calendar_parameters(calendar)
    target = None
    if method != "OCCURRENCES":
        if slice_minutes <= 0:
            raise ValueError("slice_minutes must be positive")
        parameters["slice_minutes"] = str(slice_minutes)
    if method == "TIMESLICES":
        if slice_target is None:
            raise ValueError("TIMESLICES needs a slice_target (a percentage)")
        target = _dec(slice_target, "slice_target")
        if not ZERO <= target <= HUNDRED:
            raise ValueError("slice_target is a percentage between 0 and 100")
        parameters["slice_target"] = str(target)

    in_window = [b for b in buckets if window.contains(b.start)]
    counts: dict[str, Any] = {}
    if digested:
        if version >= 4:
            ordered = sorted(buckets, key=count_order)
            counts["counts"] = hour_bucketed((hour_of(b.start), count_json(b)) for b in ordered)
        else:
            listed = sorted([_utc(b.start), _utc(b.end), b.good, b.total] for b in buckets)
            counts["counts"] = bucketed(map(canonical_json, listed)) if version >= 3 else listed
    if version == 1:
        eligible = [window]
        inside = in_window
        input_digest = _input_digest(formula_id, parameters, counts) if digested else ""
    else:
        eligible = eligible_intervals(window, calendar, exclusions)
        starts = [iv.start for iv in eligible]

        def measured_at(t: datetime) -> bool:
            i = bisect_right(starts, t) - 1
            return i >= 0 and t < eligible[i].end

        inside = [b for b in in_window if measured_at(b.start)]
        input_digest = (
            _input_digest(
                formula_id, parameters, counts | {"exclusions": _intervals(exclusions)}, calendar,
                version if version >= 3 else VERSION,
            )
            if digested
            else ""
        )  # fmt: skip
    good = sum(b.good for b in inside)
    requests = sum(b.total for b in inside)
    detail = {"good": str(good), "total": str(requests), "counts_in_window": str(len(inside))}
    if version >= 2:
        detail |= {
            "eligible_seconds": str(seconds(total(eligible))),
            "counts_excluded": str(len(in_window) - len(inside)),
        }

    value: Decimal | None
    if method == "OCCURRENCES":
        value = percent(good, requests)
        undefined = ""
        if value is None:
            undefined = "no requests in the window" if eligible else NO_ELIGIBLE_TIME
        return Evaluated(formula_id, version, value, parameters, input_digest, detail, undefined)

    width = timedelta(minutes=slice_minutes)
    n_slices = _slices_touching(window.start, width, window.duration, eligible)
    per_slice: dict[int, tuple[int, int]] = {}
    for b in inside:
        i = (b.start - window.start) // width
        g, t = per_slice.get(i, (0, 0))
        per_slice[i] = (g + b.good, t + b.total)
    measured = [(g, t) for g, t in per_slice.values() if t > 0]
    empty = n_slices - len(measured)
    detail |= {"slices": str(n_slices), "empty_slices": str(empty)}

    if method == "TIMESLICES":
        assert target is not None
        with localcontext() as ctx:
            ctx.prec = SUM_PRECISION
            good_slices = empty + sum(1 for g, t in measured if Decimal(g) * HUNDRED >= target * t)
        detail["good_slices"] = str(good_slices)
        value = percent(good_slices, n_slices)
    elif n_slices == 0:
        value = None
    else:
        with localcontext() as ctx:
            ctx.prec = SUM_PRECISION
            ratios = sum((Decimal(g) / Decimal(t) for g, t in measured), Decimal(empty))
            mean = ratios * HUNDRED / n_slices
        value = +mean  # rounded to the caller's context (28 digits by default)
    return Evaluated(
        formula_id, version, value, parameters, input_digest, detail, NO_ELIGIBLE_TIME if value is None else ""
    )


def _slices_touching(origin: datetime, width: timedelta, duration: timedelta, eligible: Sequence[Interval]) -> int:
    """How many of the slices [origin + i·width, origin + (i+1)·width) ∩ [origin, origin +
    duration) have some eligible time; `eligible` sorted and disjoint."""
    last = -(-duration // width)  # the number of slices of the whole window
    n, covered_to = 0, 0  # slices counted, and the first slice index not counted yet
    for iv in eligible:
        first = max((iv.start - origin) // width, covered_to)
        end = min(-(-(iv.end - origin) // width), last)
        if end > first:
            n += end - first
            covered_to = end
    return n


# -- MTTR / MTBF ---------------------------------------------------------------------------------
# The versions of `mttr` computed: v2 digests the incidents that reach the window, v1 (kept for
# the windows recorded with it) every incident passed.
MTTR_VERSION = 2
MTTR_VERSIONS = (1, 2)


def mttr(
    incidents: Sequence[Incident],
    window: Interval,
    calendar: Calendar = AlwaysOpen(),
    r: str = "RESTORE",
    *,
    exclusions: Sequence[Interval] = (),
    version: int = MTTR_VERSION,
) -> Evaluated:
    """MTTR / MTRS (docs/domain.md §4 "MTTR / MTRS"), formula `mttr` v2, in minutes:
    total downtime ÷ number of incidents restored in the window.

    `r` is the variant, recorded as a parameter: the clock of an incident runs from
    `failure_start` to `restored_at` for REPAIR and RESTORE, `resolved_at` for RESOLVE,
    `responded_at` for RESPOND (an `Incident` without that instant is still running).

    - total downtime = the union of the incidents' clocks within eligible time (window ∩
      calendar open hours − exclusions): overlapping incidents count once, a running
      incident counts up to the window's end, the part of an incident outside the window
      belongs to the neighbouring window.
    - "restored in the window": the R instant lies in [window.start, window.end).
    - None restored → value None, undefined "no incident restored in the window" (resp.
      repaired / resolved / responded to).

    detail: r, downtime_seconds, eligible_seconds, restored (the count), running (incidents
    whose clock still runs at the window's end).

    An incident reaches the window when its failure started before the window's end and its
    clock was not stopped before the window's start: no other counts in it. v2's input digest
    covers those; v1 (`version=1`, kept for the windows recorded with it) every incident passed —
    from the first one recorded, so its digest moved with every incident, and a round could not
    pass fewer. The value and detail are the same in both."""
    if r not in R_VARIANTS:
        raise ValueError(f"unknown R {r!r}; expected one of {tuple(R_VARIANTS)}")
    if version not in MTTR_VERSIONS:
        raise ValueError(f"mttr has versions {MTTR_VERSIONS}, not {version}")
    formula_id = "mttr"
    parameters = {"r": r, **_window_parameters(window), **_calendar_parameters(calendar)}
    eligible = eligible_intervals(window, calendar, exclusions)
    clocks: list[Interval] = []
    restored = running = 0
    ends = [(i, i.ended(r)) for i in incidents if i.failure_start < window.end]
    reaching = [(i, e) for i, e in ends if e is None or e >= window.start]
    for incident, ended in reaching:
        if ended is not None and window.contains(ended):
            restored += 1
        if (ended is None or ended >= window.end) and incident.failure_start < window.end:
            running += 1
        clocks.append(Interval(incident.failure_start, window.end if ended is None else ended))
    downtime_s = seconds(total(intersect_all(clocks, eligible)))
    value = ratio(downtime_s, 60 * restored)
    digested = incidents if version == 1 else [i for i, _ in reaching]
    return Evaluated(
        formula_id=formula_id,
        formula_version=version,
        value=value,
        parameters=parameters,
        input_digest=_input_digest(
            formula_id,
            parameters,
            {
                "incidents": sorted(
                    [_utc(i.failure_start)] + ["" if at is None else _utc(at) for at in _instants(i)] for i in digested
                ),
                "exclusions": _intervals(exclusions),
            },
            calendar,
        ),
        detail={
            "r": r,
            "downtime_seconds": str(downtime_s),
            "eligible_seconds": str(seconds(total(eligible))),
            "restored": str(restored),
            "running": str(running),
        },
        undefined=f"no incident {_R_VERB[r]} in the window" if value is None else "",
    )


def _instants(i: Incident) -> tuple[datetime | None, ...]:
    return (i.restored_at, i.resolved_at, i.responded_at)


def mtbf(
    window: Interval,
    calendar: Calendar,
    failures: Sequence[Interval],
    *,
    exclusions: Sequence[Interval] = (),
    version: int = OUTAGES_VERSION,
) -> Evaluated:
    """MTBF (docs/domain.md §4 "MTBF"), formula `mtbf` v3, in hours (v1 and v2: the same value,
    its failures digested in one list, and bucketed without runs by hour):
    (eligible time − downtime) ÷ number of failures starting in the window.

    - eligible = window ∩ calendar open hours − exclusions; downtime = the union of the
      failure intervals within eligible time (pass `window.end` as the end of a failure
      still running).
    - Overlapping or touching failure intervals are one failure (as they are one stretch
      of downtime); a failure counts when its (merged) start lies in the window —
      whether or not that instant is eligible time.
    - No eligible time → value None, undefined "no eligible time" (NO_DATA).
    - No failure starting in the window → value None, undefined "no failure in the window"
      and detail met="true": MTBF is undefined and the objective is met (docs/domain.md §4).

    detail: eligible_seconds, downtime_seconds, failures (the count)."""
    formula_id = "mtbf"
    if version not in OUTAGES_VERSIONS:
        raise ValueError(f"mtbf has versions {OUTAGES_VERSIONS}, not {version}")
    parameters = {**_window_parameters(window), **_calendar_parameters(calendar)}
    eligible = eligible_intervals(window, calendar, exclusions)
    merged = union(failures)
    starting = sum(1 for f in merged if window.contains(f.start))
    eligible_s = seconds(total(eligible))
    downtime_s = seconds(total(intersect_all(merged, eligible)))
    input_digest = _outages_digest(formula_id, version, parameters, failures, exclusions, calendar)
    return mtbf_evaluated(parameters, eligible_s, downtime_s, starting, input_digest, version)


def mtbf_evaluated(
    parameters: dict[str, str], eligible_s: Decimal, downtime_s: Decimal, starting: int, input_digest: str,
    version: int = OUTAGES_VERSION,
) -> Evaluated:  # fmt: skip
    """`mtbf`'s evaluation from its measures (what it and its running form share): the value,
    or why it is undefined, and the detail."""
    detail = {
        "eligible_seconds": str(eligible_s),
        "downtime_seconds": str(downtime_s),
        "failures": str(starting),
    }
    value: Decimal | None = None
    if eligible_s == 0:
        undefined = NO_ELIGIBLE_TIME
    elif starting == 0:
        undefined = "no failure in the window"
        detail["met"] = "true"
    else:
        value = ratio(eligible_s - downtime_s, 3600 * starting)
        undefined = ""
    return Evaluated(
        formula_id="mtbf",
        formula_version=version,
        value=value,
        parameters=parameters,
        input_digest=input_digest,
        detail=detail,
        undefined=undefined,
    )


# -- error budget and burn rate ----------------------------------------------------------------------
def _target(target_percent: Decimal | int) -> Decimal:
    target = _dec(target_percent, "target_percent")
    if not ZERO <= target <= HUNDRED:
        raise ValueError("target_percent is a percentage between 0 and 100")
    return target


def error_budget(target_percent: Decimal | int, good: Decimal | int, total: Decimal | int) -> Evaluated:
    """Error-budget consumption (docs/domain.md §3 "Warnings", over the §4 availability
    formulas), formula `error_budget` v1: the percentage of the window's error budget used.

    budget (allowed bad) = total × (100 − target) ÷ 100; bad = total − good;
    value = bad ÷ budget × 100, which exceeds 100 once the budget is overspent;
    detail remaining_percent = 100 − value (negative when overspent).

    Works on request counts (good/total requests) and on time (good = eligible − downtime
    seconds, total = eligible seconds). total 0 → value None, undefined "no eligible
    input" (NO_DATA); target 100 % → value None, undefined "the target leaves no error budget"."""
    formula_id = "error_budget"
    target = _target(target_percent)
    g, n = _dec(good, "good"), _dec(total, "total")
    if not ZERO <= g <= n:
        raise ValueError("need 0 <= good <= total")
    parameters = {"target_percent": str(target)}
    bad = n - g
    allowed = n * (HUNDRED - target) / HUNDRED
    value = None
    if n == 0:
        undefined = "no eligible input"
    elif target == HUNDRED:
        undefined = "the target leaves no error budget"
    else:
        value = percent(bad * HUNDRED, n * (HUNDRED - target))
        undefined = ""
    detail = {"good": str(g), "total": str(n), "bad": str(bad), "allowed_bad": str(allowed)}
    if value is not None:
        detail["remaining_percent"] = str(HUNDRED - value)
    return Evaluated(
        formula_id,
        VERSION,
        value,
        parameters,
        _input_digest(formula_id, parameters, {"good": str(g), "total": str(n)}),
        detail,
        undefined,
    )


def burn_rate(error_ratio: Decimal | int, target_percent: Decimal | int) -> Evaluated:
    """Burn rate (docs/domain.md §3 "Warnings"), formula `burn_rate` v1: observed error ratio ÷
    (1 − target), with `error_ratio` a ratio (0…1, e.g. Decimal("0.0144")) and the target a
    percentage (e.g. Decimal("99.9")). 1 spends the budget exactly over the window.
    Target 100 % → value None, undefined "the target leaves no error budget"."""
    formula_id = "burn_rate"
    target, observed, value = _burn_rate(error_ratio, target_percent)
    parameters = {"target_percent": str(target)}
    return Evaluated(
        formula_id,
        VERSION,
        value,
        parameters,
        _input_digest(formula_id, parameters, {"error_ratio": str(observed)}),
        {"error_ratio": str(observed)},
        "the target leaves no error budget" if value is None else "",
    )


def burn_rate_value(error_ratio: Decimal | int, target_percent: Decimal | int) -> Decimal | None:
    """`burn_rate(...).value` without its input digest: what the multi-window rule compares,
    asked for over each look-back of every open window each round."""
    return _burn_rate(error_ratio, target_percent)[2]


def _burn_rate(error_ratio: Decimal | int, target_percent: Decimal | int) -> tuple[Decimal, Decimal, Decimal | None]:
    target = _target(target_percent)
    observed = _dec(error_ratio, "error_ratio")
    if not ZERO <= observed <= 1:
        raise ValueError("error_ratio is a ratio between 0 and 1")
    return target, observed, ratio(observed * HUNDRED, HUNDRED - target)


def _scaled(td: timedelta, window_length: timedelta) -> timedelta:
    micro = Fraction(td // timedelta(microseconds=1)) * Fraction(
        window_length // timedelta(microseconds=1), BURN_WINDOW_REFERENCE // timedelta(microseconds=1)
    )
    return timedelta(microseconds=round(micro))


# A pure function of the window's length, asked for by every open window of every agreement each
# round (its pairs, look-backs and alert names): computed once a length (a month's four lengths,
# a quarter's, a rolling window's; a few dozen at most), not eight exact fractions a call.
@lru_cache(maxsize=256)
def burn_windows(window_length: timedelta) -> tuple[BurnPair, ...]:
    """The multi-window burn-rate pairs (docs/domain.md §3 "Warnings") for an objective window of
    `window_length`: the pairs docs/domain.md gives for 30 days (14.4 over 1 h and 5 min, 6 over 6 h and
    30 min, 3 over 1 day and 2 h, 1 over 3 days and 6 h), with both windows of each pair
    scaled by window_length ÷ 30 days (rounded to the microsecond) and the factors kept — so
    each pair still fires on the same share of the budget spent in its long window (14.4 ×
    1 h ÷ 30 days = 2 %). A 28-day month: 14.4 over 56 min and 4 min 40 s."""
    if window_length <= timedelta(0):
        raise ValueError("window_length must be positive")
    return tuple(
        BurnPair(p.factor, _scaled(p.long, window_length), _scaled(p.short, window_length)) for p in BURN_PAIRS_30_DAYS
    )


def burn_alerts(rate_by_window: Mapping[timedelta, Decimal], window_length: timedelta) -> tuple[BurnPair, ...]:
    """The multi-window multi-burn-rate rule (docs/domain.md §3 "Warnings"): the pairs of
    `burn_windows(window_length)` whose burn rates over both the long and the short window
    strictly exceed the pair's factor ("exceed": a rate equal to the factor does not fire),
    highest factor first. `rate_by_window` maps a lookback length to the burn rate observed
    over it (`burn_rate`); a window a pair needs but the mapping lacks is an error, never a
    silent "no alert"."""
    triggered = []
    for pair in burn_windows(window_length):
        missing = [w for w in (pair.long, pair.short) if w not in rate_by_window]
        if missing:
            raise ValueError(f"no burn rate over {', '.join(str(w) for w in missing)} (pair with factor {pair.factor})")
        long_rate = _dec(rate_by_window[pair.long], "burn rate")
        short_rate = _dec(rate_by_window[pair.short], "burn rate")
        if long_rate > pair.factor and short_rate > pair.factor:
            triggered.append(pair)
    return tuple(triggered)


def warning_levels_crossed(
    consumed_percent: Decimal | None, levels: Iterable[Decimal | int] = DEFAULT_WARNING_LEVELS
) -> tuple[Decimal, ...]:
    """The error-budget warning levels (docs/domain.md §3 "Warnings", default 50 %, 75 %, 90 %)
    reached by `consumed_percent` (`error_budget(...).value`), ascending; a level is crossed
    when consumption is at least the level. Undefined consumption (None) crosses none."""
    checked = sorted({_dec(level, "warning level") for level in levels})
    if consumed_percent is None:
        return ()
    consumed = _dec(consumed_percent, "consumed_percent")
    return tuple(level for level in checked if consumed >= level)
