"""Time for the formulas: half-open intervals and their arithmetic, measurement windows in
an agreement's IANA time zone (real calendar months, DST-correct), rolling windows, and
business-hours calendars with holidays. All instants are timezone-aware; UTC inside."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo


class _KeepsRecord:
    """A slot where the metrics formulas keep an interval's record as they encode it (its UTC
    pair's canonical JSON, `_accord_encoded_` + the encoding's name): an open window's outages
    are encoded once, not at every round that judges the window again. Nothing else reads it."""

    __slots__ = ("_accord_encoded__utc_pair",)


@dataclass(frozen=True, order=True, slots=True)
class Interval(_KeepsRecord):
    """[start, end) — start included, end excluded. Empty when end <= start. Slotted: an open
    window holds hundreds of thousands of outages (≈ 32 B less each than without slots)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval instants must be timezone-aware")

    @property
    def duration(self) -> timedelta:
        return max(self.end - self.start, timedelta(0))

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def intersect(self, other: Interval) -> Interval | None:
        s, e = max(self.start, other.start), min(self.end, other.end)
        return Interval(s, e) if e > s else None


# By (start, end): the dataclass's own order, compared as tuples (much faster than its __lt__),
# the key read in C.
_start_end = attrgetter("start", "end")


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, merged, non-overlapping intervals (touching ones are merged too)."""
    out: list[Interval] = []
    for iv in sorted([i for i in intervals if i.start < i.end], key=_start_end):  # the non-empty ones
        if out and iv.start <= out[-1].end:
            if iv.end > out[-1].end:
                out[-1] = Interval(out[-1].start, iv.end)
        else:
            out.append(iv)
    return out


def intersect_all(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The parts of `a` that are also in `b`."""
    ua, ub = union(a), union(b)
    out: list[Interval] = []
    j = 0
    for x in ua:
        while j < len(ub) and ub[j].end <= x.start:
            j += 1
        k = j
        while k < len(ub) and ub[k].start < x.end:
            part = x.intersect(ub[k])
            if part is not None:
                out.append(part)
            k += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The parts of `a` that are not in `b`."""
    out: list[Interval] = []
    ub = union(b)
    for x in union(a):
        cursor = x.start
        for y in ub:
            if y.end <= cursor or y.start >= x.end:
                continue
            if y.start > cursor:
                out.append(Interval(cursor, y.start))
            cursor = max(cursor, y.end)
            if cursor >= x.end:
                break
        if cursor < x.end:
            out.append(Interval(cursor, x.end))
    return out


def total(intervals: Iterable[Interval]) -> timedelta:
    return sum((i.duration for i in union(intervals)), timedelta(0))


# -- windows ------------------------------------------------------------------------------
WINDOW_KINDS = ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")


def wall_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time as a UTC instant. A wall time skipped by a DST change maps to the
    instant the clock resumes (02:30 on a spring-forward night → the 03:00 jump); an
    ambiguous one (autumn) to its first occurrence."""
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)
    # Skipped: between the two readings lies the jump; find its instant (to the second).
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return wall_to_utc(datetime.combine(d, time(0)), tz)


def _start_date(kind: str, d: date) -> date:
    if kind == "DAY":
        return d
    if kind == "WEEK":  # ISO weeks: Monday
        return d - timedelta(days=d.weekday())
    if kind == "MONTH":
        return d.replace(day=1)
    if kind == "QUARTER":
        return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)
    if kind == "YEAR":
        return d.replace(month=1, day=1)
    raise ValueError(f"unknown window kind {kind!r}; expected one of {WINDOW_KINDS}")


def _next_date(kind: str, d: date) -> date:
    if kind == "DAY":
        return d + timedelta(days=1)
    if kind == "WEEK":
        return d + timedelta(days=7)
    months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[kind]
    m0 = d.month - 1 + months
    return date(d.year + m0 // 12, m0 % 12 + 1, 1)


def calendar_window(kind: str, instant: datetime, time_zone: str) -> Interval:
    """The calendar window (in the agreement's time zone) that contains `instant`."""
    tz = ZoneInfo(time_zone)
    local = instant.astimezone(tz).date()
    start = _start_date(kind, local)
    return Interval(_local_midnight(start, tz), _local_midnight(_next_date(kind, start), tz))


def calendar_windows(kind: str, span: Interval, time_zone: str) -> Iterator[Interval]:
    """Every calendar window that overlaps `span`, in order."""
    w = calendar_window(kind, span.start, time_zone)
    while w.start < span.end:
        yield w
        w = calendar_window(kind, w.end, time_zone)


def rolling_window(days: int, end: datetime) -> Interval:
    """The `days` days up to `end` (elapsed time, not calendar days)."""
    if days <= 0:
        raise ValueError("a rolling window needs a positive number of days")
    return Interval(end - timedelta(days=days), end)


# -- business calendars ----------------------------------------------------------------------
@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly opening hours in a time zone, minus holidays. `hours` maps ISO weekday
    (1 = Monday … 7 = Sunday) to (opens, closes) local times; "24:00" closes at midnight."""

    time_zone: str
    hours: tuple[tuple[int, str, str], ...]
    holidays: frozenset[date] = frozenset()
    calendar_id: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        for weekday, opens, closes in self.hours:
            if not 1 <= weekday <= 7:
                raise ValueError(f"weekday must be 1 (Monday) to 7 (Sunday), not {weekday}")
            if _minutes(opens) >= _minutes(closes):
                # Overnight hours are two entries: 22:00–24:00 and the next day's 00:00–06:00.
                raise ValueError(f"opening hours {opens}–{closes} close before they open; split them at midnight")

    @classmethod
    def from_definition(cls, definition: dict[str, Any], calendar_id: str = "", version: int = 1) -> BusinessCalendar:
        """From the agreements service's calendar definition (time_zone, hours, holidays)."""
        hours = tuple((int(h["weekday"]), str(h["opens"]), str(h["closes"])) for h in definition.get("hours") or [])
        holidays = frozenset(date.fromisoformat(str(d)) for d in definition.get("holidays") or [])
        return cls(str(definition["time_zone"]), hours, holidays, calendar_id, version)

    def open_intervals(self, span: Interval) -> list[Interval]:
        """The business hours inside `span`, DST-correct: each day's hours are local wall
        times converted to UTC, so a day with a DST change has its true length."""
        tz = ZoneInfo(self.time_zone)
        out: list[Interval] = []
        day = span.start.astimezone(tz).date() - timedelta(days=1)
        last = span.end.astimezone(tz).date()
        while day <= last:
            if day not in self.holidays:
                for weekday, opens, closes in self.hours:
                    if weekday != day.isoweekday():
                        continue
                    s = _local(day, opens, tz)
                    e = _local(day, closes, tz)
                    part = Interval(s, e).intersect(span) if e > s else None
                    if part is not None:
                        out.append(part)
            day += timedelta(days=1)
        return union(out)

    def business_time(self, span: Interval) -> timedelta:
        return total(self.open_intervals(span))


def _minutes(hhmm: str) -> int:
    hh, mm = (int(x) for x in hhmm.split(":"))
    return hh * 60 + mm


def _local(d: date, hhmm: str, tz: ZoneInfo) -> datetime:
    if hhmm == "24:00":
        return _local_midnight(d + timedelta(days=1), tz)
    hh, mm = (int(x) for x in hhmm.split(":"))
    return wall_to_utc(datetime.combine(d, time(hh, mm)), tz)


class AlwaysOpen:
    """The "24x7" calendar."""

    calendar_id = "24x7"
    version = 1

    def open_intervals(self, span: Interval) -> list[Interval]:
        return [] if span.empty else [span]

    def business_time(self, span: Interval) -> timedelta:
        return span.duration


Calendar = BusinessCalendar | AlwaysOpen
