"""The burn rates' look-backs of an open window judged by time-based availability, kept between
rounds (see the README, "Running evaluations of open windows"): each look-back's value exactly as
`reliability.availability_time` computes it over the outages `evaluation.burn_rates` gives it,
from a structure of the window's outages kept up to date as its kept selection grows, so a round
costs a few bisections a look-back, not a pass over every outage of the window.

What is kept (`BurnIndex`), from every outage of the window's selection with its end reported
(non-empty; an outage under way changes with the round's instant: it is kept apart, and each
look-back takes it as the formula does — lasting until the round's instant — beside the rest,
below):

- the outages ordered by end;
- their union (merged, touching ones too, as the formula merges them), each merged outage's
  downtime in the eligible time of the selection's whole span and whether it is at least the
  minimum outage long, with running sums of that downtime.

A look-back [since, as_of) reads the merged outages lying wholly inside it from the running sums:
the look-back's own union holds each of them unchanged (every outage in it ends after `since`
and starts before `as_of`), judged on its full length as the formula judges it. The outages
of the merged outage `since` falls in (if any), and of the one `as_of` falls in, that reach into
the look-back make one merged outage of the look-back's own covering that merged outage's part
within it (`BurnIndex._edge` says why): its eligible part is their downtime when that part is at
least the minimum outage long (or there is no minimum) — only a shorter one is merged again from
its outages (found by bisection among the outages ordered by end), its whole length judged
against the minimum as the formula judges it. The downtime of a wholly-inside merged outage in
the span's eligible time is its downtime in the look-back's when the look-back's eligible time
is the span's clipped to it, which is checked every look-back (else the formula computes it).

Outages under way all last until the look-back's end, so together they are one interval X from
the earliest of their starts. X touches the look-back's merged outages from the first ending at or
after its start on, and no earlier one (the span's merged outages are apart from each other):
from a cut — the earlier of X's start and that merged outage's start — the look-back's outages
ending at or after it are one merged outage with X, and their downtime without X (as above, from
that merged outage on) is replaced by the eligible part of the look-back from the cut; before the
cut nothing changes. Only when that part is shorter than the minimum outage are they merged
twice, without X and with it, to judge their whole lengths (outages ending after the cut: for an
outage under way since less than the minimum, a few).

What is an append is told by the kept selections the outages came from (`SignalSet.lineage`, as
for `running.Running`): every service's part the one held with inputs placed after its end. A
correction the selection logged as a replacement in place (`SignalSet.edits`) is taken out — the
merged outage it was in merged again from the outages left in it, the running sums after it
moved by the difference — and the outage it is now placed (one under way held by its place).
A removal or earlier placement, another selection (a restart), another minimum
outage, calendar, exclusion (suspension included) or span builds it again from every outage.
`tests/test_burning.py` holds it to `evaluation.burn_rates`."""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from accord_kit.timeline import Calendar, Interval, total, union
from accord_metrics.evaluation import ONGOING
from accord_metrics.formulas import reliability
from accord_metrics.formulas.common import percent, seconds
from accord_metrics.formulas.running import OUTAGES_VERSION, place_by_end, touched

Lineage = tuple[tuple[int, int, int], ...]  # per service: (selection, its changes other than appends, length)
_ZERO = timedelta(0)
_US = timedelta(microseconds=1)


def _seconds(raw: Any) -> timedelta:
    return timedelta(seconds=float(Decimal(str(raw)))) if raw not in (None, "") else _ZERO


class BurnIndex:
    """One open window's outages as its burn rates' look-backs read them (see the module)."""

    def __init__(self) -> None:
        self.basis: tuple[Any, ...] | None = None
        self.lineage: Lineage = ()
        self.ends: list[datetime] = []  # the outages' ends, ascending
        self.by_end: list[Interval] = []  # the outages (reported end, non-empty) in that order
        # The outages under way, by place (service part, place in it): each look-back takes them as
        # lasting until its end; one whose end is reported (replaced in its place without counting
        # as a change: `ServiceSignals._catch_up`) is placed as an appended one.
        self.under_way: list[tuple[int, int]] = []
        self.merged: list[Interval] = []
        self._mstarts: list[datetime] = []
        self._mends: list[datetime] = []
        # _sums[i]: the downtime in the span's eligible time of merged[:i] at least the minimum long,
        # in µs (machine integers: 8 B a merged outage, not a timedelta and a pointer — durations
        # are whole µs, so the sums are exact)
        self._sums: array[int] = array("q", [0])
        self.eligible: list[Interval] = []  # the span's eligible time
        self._eligible_starts: list[datetime] = []
        self._eligible_ends: list[datetime] = []
        self.min_outage = _ZERO
        self.built = 0  # rounds that built it from every outage (for tests and benches)
        self.appended = 0  # rounds that added only appended outages
        self.edited = 0  # rounds that took corrected outages out and in, the appended added

    def values(
        self, objective: dict[str, Any], calendar: Calendar, exclusions: Sequence[Interval], outages: list[Interval],
        lineage: dict[str, Lineage] | None, span: Interval, as_of: datetime, lengths: Iterable[timedelta],
        edits: dict[str, tuple[Sequence[tuple[int, int, Any, Any]], ...]] | None = None,
    ) -> dict[timedelta, Decimal | None] | None:  # fmt: skip
        """Each look-back [as_of − length, as_of)'s value as `reliability.availability_time` gives it
        over the outages `evaluation.burn_rates` passes it; a length left out is for the formula to
        compute (its eligible time is not the span's), and None is returned when none can be (not
        time-based availability, not from kept selections, a negative minimum). `edits`: the kept
        selections' replacements in place (`SignalSet.edits`): a correction is taken out and in."""
        if (
            objective.get("metric") != "METRIC_AVAILABILITY_TIME"
            or lineage is None
            or reliability.OUTAGES_VERSION != OUTAGES_VERSION
        ):
            self._drop()
            return None
        p = objective.get("parameters") or {}
        try:
            min_outage = _seconds(p.get("min_outage_seconds"))
        except Exception:  # the formula says what is wrong
            self._drop()
            return None
        if min_outage < _ZERO:
            self._drop()
            return None
        mine = lineage.get("outages", ())
        if sum(n for _, _, n in mine) != len(outages):  # not as a selection reports them: the formula
            self._drop()
            return None
        basis = (
            min_outage,
            json.dumps(reliability._calendar_definition(calendar), sort_keys=True, default=str),
            tuple(exclusions),
            span,
        )
        changed = self._changed(mine, (edits or {}).get("outages"), outages) if basis == self.basis else None
        if changed is not None:
            fresh, corrected = changed
            self._add(fresh)
            if corrected:
                self.edited += 1
            else:
                self.appended += 1
        else:
            self._build(basis, calendar, exclusions, span, min_outage, outages, mine)
            self.built += 1
        self.lineage = mine
        bases = part_bases(mine)
        under_way = [outages[bases[k] + at] for k, at in self.under_way]
        out: dict[timedelta, Decimal | None] = {}
        for length in lengths:
            try:
                out[length] = self._value(Interval(as_of - length, as_of), calendar, exclusions, under_way)
            except _UnclippedError:
                continue  # the formula computes this one
        return out

    def _drop(self) -> None:
        self.basis, self.lineage = None, ()

    def _changed(
        self, lineage: Lineage, parts: tuple[Sequence[tuple[int, int, Any, Any]], ...] | None, outages: list[Interval]
    ) -> tuple[list[Interval], bool] | None:  # fmt: skip
        """When every change since the last round, in every service's part, is an outage placed
        after its end or a replacement in place the kept selection logged (a correction; `parts`:
        each part's log, none when nothing is logged): each corrected outage held taken out (its
        merged outage merged again without it) and the one it is now placed (or, under way, held by
        its place); then the outages to add — those placed after each part's end and those under way
        held whose end is now reported (the new ones under way held by place) — and whether any was
        corrected. None when anything else changed."""
        before = self.lineage
        logs = logged_changes(before, lineage, parts)
        if logs is None or sum(n for _, _, n in lineage) != len(outages):
            return None
        held = set(self.under_way)
        for k, at, old, new in logs:
            if at >= before[k][2]:
                continue  # placed after the last round: among the appended, as it is now
            if (k, at) in held:
                return None  # an outage under way's replacement is a completion, never logged
            if old.end < ONGOING and old.start < old.end:
                self._remove(old)
            if new.end >= ONGOING:
                self.under_way.append((k, at))
                held.add((k, at))
            else:
                self._add([new])
        fresh, self.under_way = advanced(before, lineage, outages, self.under_way, outages=True)
        return fresh, bool(logs)

    def _build(
        self, basis: tuple[Any, ...], calendar: Calendar, exclusions: Sequence[Interval], span: Interval,
        min_outage: timedelta, outages: list[Interval], lineage: Lineage,
    ) -> None:  # fmt: skip
        self.basis, self.min_outage = basis, min_outage
        self.eligible = reliability.eligible_intervals(span, calendar, exclusions)
        self._eligible_starts = [e.start for e in self.eligible]
        self._eligible_ends = [e.end for e in self.eligible]
        self.ends, self.by_end = [], []
        self.merged, self._mstarts, self._mends, self._sums = [], [], [], array("q", [0])
        none = tuple((selection, changes, 0) for selection, changes, _ in lineage)  # every part grown from nothing
        _, self.under_way = advanced(none, lineage, outages, [], outages=True)
        self._add(outages)

    def _add(self, outages: Sequence[Interval]) -> None:
        """Place these outages: in the order by end, and in the union, each run of them merged with
        the merged outages it touches alone (`touched`), the running sums after it moved by the
        difference."""
        new = [o for o in outages if o.end < ONGOING and o.start < o.end]  # under way: held apart
        if not new:
            return
        place_by_end(self.ends, self.by_end, new)
        for first, hi, run in reversed(touched(self._mstarts, self.merged, new)):
            self._merge(first, hi, union([*self.merged[first:hi], *run]))

    def _merge(self, first: int, hi: int, again: list[Interval]) -> None:
        """The merged outages [first, hi) replaced by `again` (what they are now), the running sums
        of those after moved by the difference in downtime."""
        downs = [self._downtime(x) // _US if x.end - x.start >= self.min_outage else 0 for x in again]
        sums = self._sums
        delta = sum(downs) - (sums[hi] - sums[first])
        self.merged[first:hi] = again
        self._mstarts[first:hi] = [x.start for x in again]
        self._mends[first:hi] = [x.end for x in again]
        running, out = sums[first], sums[: first + 1]
        for d in downs:
            running += d
            out.append(running)
        if delta:
            out.extend(x + delta for x in sums[hi + 1 :])
        else:
            out.extend(sums[hi + 1 :])
        self._sums = out

    def _remove(self, o: Interval) -> None:
        """An outage held (ended, non-empty) taken out: the merged outage it was in merged again
        from the outages left in it (`_merge`)."""
        at = bisect_left(self.ends, o.end)
        while self.by_end[at] != o:  # an equal one is there: the selection held it
            at += 1
        del self.ends[at], self.by_end[at]
        k = bisect_right(self._mstarts, o.start) - 1  # the merged outage it was in
        m = self.merged[k]
        self._merge(k, k + 1, union(self.by_end[bisect_left(self.ends, m.start) : bisect_right(self.ends, m.end)]))

    def _downtime(self, m: Interval) -> timedelta:
        """`m`'s downtime in the span's eligible time."""
        eligible = self.eligible
        i = max(bisect_right(self._eligible_starts, m.start) - 1, 0)
        down = _ZERO
        while i < len(eligible) and eligible[i].start < m.end:
            e = eligible[i]
            part = min(m.end, e.end) - max(m.start, e.start)
            if part > _ZERO:
                down += part
            i += 1
        return down

    def _clipped(self, look: Interval) -> list[Interval]:
        """The span's eligible time within `look`."""
        out: list[Interval] = []
        eligible, ls, le = self.eligible, look.start, look.end
        i = bisect_right(self._eligible_ends, ls)
        while i < len(eligible) and eligible[i].start < le:
            e = eligible[i]
            s, t = max(e.start, ls), min(e.end, le)
            if s < t:
                out.append(Interval(s, t))
            i += 1
        return out

    def _value(
        self, look: Interval, calendar: Calendar, exclusions: Sequence[Interval], under_way: Sequence[Interval] = ()
    ) -> Decimal | None:  # fmt: skip
        """`reliability.availability_time(look, …).value` over the outages that end after its start and
        start before its end (those `evaluation.run_formula` passes the formula), with those
        `under_way` (no end reported) lasting until its end when they start before it."""
        since, as_of = look.start, look.end
        if not since < as_of:
            raise _UnclippedError
        eligible = reliability.eligible_intervals(look, calendar, exclusions)
        if eligible != self._clipped(look):
            raise _UnclippedError
        down = self._down(since, as_of, eligible)
        starts = [o.start for o in under_way if o.start < as_of]
        if starts:
            down += self._under_way(since, as_of, min(starts), eligible)
        eligible_s = seconds(total(eligible))
        return percent(eligible_s - seconds(down), eligible_s)

    def _down(self, since: datetime, as_of: datetime, eligible: list[Interval], first: int = 0) -> timedelta:
        """The downtime of the look-back [since, as_of) over the outages of the merged outages from
        `first` on (every one: 0) that reach into it: those lying wholly inside from the running
        sums, the one `since` falls in and the one `as_of` falls in by `_edge`."""
        lo = max(bisect_right(self._mstarts, since), first)  # the first merged outage starting after `since`
        hi = bisect_right(self._mends, as_of)  # the first ending after `as_of`
        down = timedelta(microseconds=self._sums[hi] - self._sums[lo]) if hi > lo else _ZERO
        edges = set()
        if lo > first and self._mends[lo - 1] > since:
            edges.add(lo - 1)
        if first <= hi < len(self.merged) and self._mstarts[hi] < as_of:
            edges.add(hi)
        for k in edges:
            down += self._edge(k, since, as_of, eligible)
        return down

    def _edge(self, k: int, since: datetime, as_of: datetime, eligible: list[Interval]) -> timedelta:
        """The downtime in the look-back [since, as_of) of the outages of merged outage `k` that
        reach into it (ending after `since`, starting before `as_of`), when `since` or `as_of` falls
        in it: the formula merges those alone and judges what they make against the minimum.

        They make one merged outage covering [max(since, k's start), min(as_of, k's end)): k's
        outages are connected (each starts at or before the latest end of those starting before
        it), and leaving out those ending at or before `since` or starting at or after `as_of`
        leaves no gap inside that part — a gap there would lie within a left-out outage, so before
        `since` or after `as_of`, where a kept outage crossing `since` (or `as_of`) covers it. So
        when that part alone is at least the minimum long (or there is no minimum), its eligible
        part is the downtime, whatever its outages; only a shorter one (the look-back's edge within
        the minimum of k's end or start) is merged again from its outages to judge its whole length
        — a few bisections, where merging them all cost every outage of k each look-back (a long
        run of overlapping blips: thousands)."""
        m, least = self.merged[k], self.min_outage
        a, b = max(since, m.start), min(as_of, m.end)
        if least <= _ZERO or b - a >= least:
            return reliability._downtime([Interval(a, b)], eligible)[0]
        first = bisect_right(self.ends, a)
        last = bisect_right(self.ends, m.end)
        merged = union([o for o in self.by_end[first:last] if o.start < as_of])
        return reliability._downtime([o for o in merged if o.end - o.start >= least], eligible)[0]

    def _under_way(self, since: datetime, as_of: datetime, start: datetime, eligible: list[Interval]) -> timedelta:
        """What outages under way since `start` (the earliest), lasting until `as_of`, add to the
        downtime of the look-back [since, as_of) over the others (see the module)."""
        x = Interval(start, as_of)
        k = bisect_right(self._mends, start)
        if k and self._mends[k - 1] == start:  # one ending where X starts touches it
            k -= 1
        cut = min(start, self._mstarts[k]) if k < len(self.merged) else start
        least = self.min_outage
        # With X, the look-back's outages of the merged outages from k on (each ends at or after X's
        # start, and those that reach into the look-back start before its end, where X ends) are one
        # merged outage with X, from the cut (or `since`) to `as_of` at least: when that part is at
        # least the minimum long, its eligible part replaces their downtime without X (`_down`).
        lower = max(since, cut)
        if least <= _ZERO or as_of - lower >= least:
            with_x = reliability._downtime([Interval(lower, as_of)], eligible)[0]
            return with_x - self._down(since, as_of, eligible, k)
        # The look-back's outages (ending after `since`, starting before `as_of`) ending at or after the cut.
        first = bisect_left(self.ends, cut) if cut > since else bisect_right(self.ends, since)
        mine = [o for o in self.by_end[first:] if o.start < as_of]

        def downtime(outages: list[Interval]) -> timedelta:
            merged = union(outages)
            long_enough = merged if least <= _ZERO else [o for o in merged if o.end - o.start >= least]
            return reliability._downtime(long_enough, eligible)[0]

        return downtime([*mine, x]) - downtime(mine)


def logged_changes(
    before: Lineage, lineage: Lineage, parts: tuple[Sequence[tuple[int, int, Any, Any]], ...] | None
) -> list[tuple[int, int, Any, Any]] | None:  # fmt: skip
    """The replacements in place made in kept selections between two lineages of them, as (service
    part, place in it, input before, input after) — none when only appends were made — when every
    change in every service's part is one of them (the part's log, `parts`, holds each change's
    number in turn: none when nothing is logged) and the rest was appended; None otherwise (another
    selection, a removal, an earlier placement, a change the log no longer holds)."""
    parts = parts if parts is not None else ((),) * len(lineage)
    if len(before) != len(lineage) or len(parts) != len(lineage) or not lineage:
        return None
    out: list[tuple[int, int, Any, Any]] = []
    for k, ((s0, e0, n0), (s1, e1, n1), log) in enumerate(zip(before, lineage, parts, strict=True)):
        if s0 != s1 or e1 < e0 or n1 < n0:
            return None
        mine = [edit for edit in log if e0 < edit[0] <= e1]
        if [edit[0] for edit in mine] != list(range(e0 + 1, e1 + 1)):
            return None
        out += [(k, at, old, new) for _, at, old, new in mine]
    return out


def advanced(
    before: Lineage, lineage: Lineage, items: Sequence[Any], under_way: list[tuple[int, int]], *, outages: bool
) -> tuple[list[Any], list[tuple[int, int]]]:  # fmt: skip
    """What a structure folded over the kept selections as of `before` (its replacements in place
    applied) takes in to be over them as of `lineage` (`items`: every service part's inputs in
    turn): the outages under way it held by place whose end is now reported, then the inputs placed
    after each part's end; and the outages under way by place — those held still under way and the
    new ones (`outages`: the inputs are outages; none is under way otherwise)."""
    bases = part_bases(lineage)
    fresh: list[Any] = []
    still: list[tuple[int, int]] = []
    for k, i in under_way:
        o = items[bases[k] + i]
        if o.end >= ONGOING:
            still.append((k, i))
        else:
            fresh.append(o)  # its end reported
    for k, ((_, _, n0), (_, _, n1)) in enumerate(zip(before, lineage, strict=True)):
        tail = items[bases[k] + n0 : bases[k] + n1]
        fresh.extend(tail)
        if outages:
            still += [(k, n0 + i) for i, o in enumerate(tail) if o.end >= ONGOING]
    return fresh, still


def part_bases(lineage: Lineage) -> list[int]:
    """Where each service's part starts in the combined list."""
    out, at = [], 0
    for _, _, n in lineage:
        out.append(at)
        at += n
    return out


class _UnclippedError(Exception):
    """A look-back whose eligible time is not the span's clipped to it: the formula computes it."""
