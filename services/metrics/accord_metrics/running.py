"""Running evaluations of open windows (see the README, "Scale"): for an open window judged by
a call-based formula (ASA, abandonment, service level, AHT, first-contact resolution),
time-based availability, MTBF or request-based availability by occurrences, the formula's
running form (`formulas/running.py`) is kept between rounds, and a round whose inputs are the
last round's with signals appended folds in only those — the same evaluation the formula gives
over all of them, byte for byte.

What is an append is told by the selection the inputs came from (`SignalSet.lineage`, from
`ServiceSignals.select`'s kept selections): per list and service, the selection, how often a
signal in it was replaced, removed or placed before its end, and its length. When every
service's part is the one folded before, grown or not, the new inputs are each part's tail (a
window of several services: a batch on any of them is an append). A correction of a signal the
window holds that the selection logged as a replacement in place (`SignalSet.edits`) is taken
out of the running form as it was and folded in as it is (calls, request counts, contacts,
outages). Anything else — a signal removed, one whose rank places it earlier, a correction more
than the log keeps, another selection (a restart), another objective or version, another
calendar, exclusion or suspension (for the availabilities and MTBF, which read them; the call
formulas and first-contact resolution read none), a repeated call id (in one service's calls,
or across several services'), or any failure — folds the window's inputs again from the start (or leaves them to
the formula itself): the running form is an optimisation, never a second source of truth. An outage under
way is never folded: time-based availability's and MTBF's evaluations take it as lasting until
the round's instant, beside the tally (`OutageTally.evaluated`), and fold it once its end is
reported (a completion in its place, not counted as a change by the selection). The call
tallies of one window (an SLA's ASA, abandonment, service level and AHT) share one digest while
they hold the same calls (`_CALL_DIGESTS`): one places a batch, the others only count it.
`tests/test_running.py` holds it to the formulas."""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from accord_kit.timeline import Calendar, Interval
from accord_metrics.burning import BurnIndex, Lineage, advanced, logged_changes, part_bases
from accord_metrics.evaluation import CALL_FORMULAS, ONGOING, judging_version
from accord_metrics.formulas import contact, reliability
from accord_metrics.formulas import running as forms
from accord_metrics.formulas.common import Evaluated
from accord_metrics.formulas.running import CallTally, CountTally, FcrTally, MtbfTally, OutageTally, RunDigest

if TYPE_CHECKING:
    from accord_metrics.evaluation import SignalSet

# The metrics with a running form, and the list of a SignalSet each reads.
FCR = "METRIC_FIRST_CONTACT_RESOLUTION"
LISTS = {
    **dict.fromkeys(CALL_FORMULAS, "calls"),
    FCR: "calls",
    "METRIC_AVAILABILITY_TIME": "outages",
    "METRIC_MTBF": "outages",
    "METRIC_AVAILABILITY_REQUESTS": "requests",
}
_OUTAGE_METRICS = frozenset({"METRIC_AVAILABILITY_TIME", "METRIC_MTBF"})  # over outages, one under way beside


def _computes(metric: str, recorded: tuple[str, int] | None) -> bool:
    """Whether the running form computes the version of the metric's formula that judges the
    window: the current one (another is left to the formula itself), and — a closed window,
    `recorded` its formula id and version — the one `evaluation.run_formula` judges it by (the
    version it was recorded with while metrics keeps it: `evaluation.judging_version`). The versions are read as the
    modules hold them now (`formulas.running`'s, the formulas')."""
    kept: tuple[int, ...]
    if metric in CALL_FORMULAS:
        formula, kept, current, computed = CALL_FORMULAS[metric], contact.VERSIONS, contact.VERSION, forms.CALLS_VERSION
    elif metric == FCR:
        formula, kept, current, computed = "contact.fcr", contact.FCR_VERSIONS, contact.FCR_VERSION, forms.FCR_VERSION
    elif metric in _OUTAGE_METRICS:
        formula = "availability.time" if metric == "METRIC_AVAILABILITY_TIME" else "mtbf"
        kept, current, computed = reliability.OUTAGES_VERSIONS, reliability.OUTAGES_VERSION, forms.OUTAGES_VERSION
    else:
        formula, kept = "availability.requests", reliability.REQUESTS_VERSIONS
        current, computed = reliability.REQUESTS_VERSION, forms.REQUESTS_VERSION
    return current == computed and (recorded is None or judging_version(recorded, formula, kept, current) == current)


# The digests of the call tallies, by the calls placed in them: (window start, end, the calls'
# lineage) — what a call tally folds is the calls of its selections entering the queue in its
# window, whatever its formula, so the tallies of one window (an SLA's ASA, abandonment, service
# level and AHT; agreements measuring one service the same way) share one digest: the first to
# fold a state of the calls places them, the others only count them and take it. Held by the
# tallies alone (weakly here); a digest is at the state its `state` names, or being changed (None).
_CALL_DIGESTS: weakref.WeakValueDictionary[tuple[Any, ...], RunDigest] = weakref.WeakValueDictionary()


def _call_digest_at(key: tuple[Any, ...]) -> RunDigest | None:
    there = _CALL_DIGESTS.get(key)
    return there if there is not None and there.state == key else None


def _seconds(raw: Any) -> timedelta:
    return timedelta(seconds=float(Decimal(str(raw)))) if raw not in (None, "") else timedelta(0)


class Running:
    """One open window's running evaluation: the formula's running form, what it was made for
    (objective, window, calendar, exclusions) and the inputs folded so far (their lineage: each
    service part's selection, changes and length)."""

    def __init__(self) -> None:
        self.basis: tuple[Any, ...] | None = None
        self.tally: CallTally | OutageTally | CountTally | FcrTally | None = None
        self.lineage: Lineage = ()
        # Time-based availability and MTBF: the places (service part, place in it) of the outages
        # under way among those — never folded: each round gives them to the tally as lasting until
        # its instant (`OutageTally.evaluated`), and folds one once its end is reported. Its
        # completion replaces it in its place without counting as a change (`ServiceSignals._catch_up`).
        self.under_way: list[tuple[int, int]] = []
        # First-contact resolution and the call formulas over several services: the ids of the
        # calls folded (one service's are distinct by its index; several services' may repeat one,
        # at another instant, which the formula refuses: a call tally finds a held call by its
        # arrival and id, not by its id alone).
        self.ids: set[str] | None = None
        # A call tally: the key of the calls its digest holds (`_CALL_DIGESTS`); while it folds, the
        # key of those it folds to and the digest it takes once folded — its own, being changed, or
        # one another tally brought to those calls (it then only counts).
        self.calls_key: tuple[Any, ...] | None = None
        self._target: tuple[Any, ...] | None = None
        self._taking: RunDigest | None = None
        self.appended = 0  # rounds that folded only appended inputs (for tests and benches)
        self.edited = 0  # rounds that took corrections out and in (call, count, FCR tallies), the appended folded
        self.seeded = 0  # rounds that folded every input
        # Its burn rates' look-backs (time-based availability), kept between rounds (burning.py).
        self.burns = BurnIndex()

    def evaluate(
        self, objective: dict[str, Any], window: Interval, calendar: Calendar, exclusions: list[Interval],
        signals: SignalSet, as_of: datetime, recorded: tuple[str, int] | None,
    ) -> Evaluated | None:  # fmt: skip
        """The objective's evaluation over `window` as `evaluation.run_formula` computes it, from
        the running form; None when it has none for this objective (the caller computes it)."""
        metric = str(objective.get("metric"))
        name = LISTS.get(metric)
        p = objective.get("parameters") or {}
        if name is None or signals.lineage is None or not _computes(metric, recorded):
            self._drop()
            return None
        if metric == "METRIC_AVAILABILITY_REQUESTS" and (objective.get("budgeting") or "BUDGETING_OCCURRENCES") != (
            "BUDGETING_OCCURRENCES"
        ):
            self._drop()
            return None
        lineage = signals.lineage.get(name, ())
        source: Sequence[Any] = getattr(signals, name)
        if sum(n for _, _, n in lineage) != len(source):  # not as the selections report them
            self._drop()
            return None
        # The calendar and the exclusions (declared, announced maintenance, suspended time) are
        # read by the formulas over outages and request counts alone: those over calls (the call
        # formulas, first-contact resolution) count every call entering the queue in the window. A
        # maintenance announced into the open window (a new exclusion) folded every call of it
        # again, in each of its call objectives (services/metrics/README.md, "Exclusions reach the
        # formulas that read them").
        calendared = name != "calls"
        basis = (
            json.dumps(objective, sort_keys=True, default=str),
            window,
            json.dumps(reliability._calendar_definition(calendar), sort_keys=True, default=str) if calendared else None,
            tuple(exclusions) if calendared else (),
        )
        key = (window.start, window.end, lineage) if metric in CALL_FORMULAS else None
        try:
            edits = None
            if self.tally is not None and basis == self.basis:
                edits = logged_changes(self.lineage, lineage, (signals.edits or {}).get(name))
            if edits is not None and not self._ready(key):
                edits = None  # its digest moved on or broke under another tally: folded again
            if edits is not None:
                out = self._edited(metric, p, window, source, as_of, edits, lineage)
                if out is not None:
                    if edits:
                        self.edited += 1
                    else:
                        self.appended += 1
                    return out
            self._drop()
            tally = self._tally(metric, p, window, calendar, exclusions)
            fresh = self._fresh(metric, p, window, source, as_of)
            if fresh is None:
                return None
            self.tally = tally
            ready = self._ready(key)  # a new digest (or one at `key`): always
            assert ready
            self.ids = set() if (metric == FCR or metric in CALL_FORMULAS) and len(lineage) > 1 else None
            if not self._distinct(fresh) or not self._fold(fresh):
                self._drop()
                return None
            self.basis, self.lineage = basis, lineage
            # Its outages under way by place: as if every part grew from nothing.
            none = tuple((selection, changes, 0) for selection, changes, _ in lineage)
            _, self.under_way = advanced(none, lineage, source, [], outages=metric in _OUTAGE_METRICS)
            self.seeded += 1
            return self._evaluated(as_of, window, source)
        except Exception:  # the formula itself says what is wrong (or computes it)
            self._drop()
            return None

    def _evaluated(self, as_of: datetime, window: Interval, source: Sequence[Any]) -> Evaluated | None:
        """The tally's evaluation (first-contact resolution's as of `as_of`: None when that is
        before the instant it was last asked for — folded again from every input; time-based
        availability's and MTBF's with the outages under way as `evaluation.run_formula` passes them at
        `as_of`: each lasting until then, those starting before it and overlapping the window)."""
        tally = self.tally
        assert tally is not None
        if isinstance(tally, CallTally) and self._taking is not None:
            self._settle(tally)
        if isinstance(tally, FcrTally):
            return tally.evaluated(as_of)
        if isinstance(tally, OutageTally):
            ws, we = window.start, window.end
            bases = part_bases(self.lineage)
            held = [source[bases[k] + i] for k, i in self.under_way]
            lasting = [Interval(o.start, as_of) for o in held if o.start < as_of]
            return tally.evaluated([o for o in lasting if o.start < we and ws < o.end])
        return tally.evaluated()

    def _edited(
        self, metric: str, p: dict[str, Any], window: Interval, source: Sequence[Any], as_of: datetime,
        edits: list[tuple[int, int, Any, Any]], lineage: Lineage,
    ) -> Evaluated | None:  # fmt: skip
        """The tally with the replacements in place applied — each input folded before taken out as
        it was and folded in as it is (those placed after the last fold are folded with the
        appended, as they are now; an outage now under way held by its place, not folded) — and
        each service part's appended inputs folded in, with (outages) those under way whose end is
        now reported: its lineage is then `lineage`. None when it cannot (the caller folds every
        input again)."""
        tally = self.tally
        assert tally is not None
        folded = [n for _, _, n in self.lineage]
        held = set(self.under_way)
        for k, at, old, new in edits:
            if at >= folded[k]:
                continue
            if (k, at) in held:
                return None  # (an outage under way replaced in its place is a completion, never logged)
            if metric in _OUTAGE_METRICS and new.end >= ONGOING:
                self.under_way.append((k, at))
                held.add((k, at))
            gone = self._fresh(metric, p, window, [old], as_of)
            come = self._fresh(metric, p, window, [new], as_of)
            if gone is None or come is None:
                return None
            if gone and come and isinstance(tally, CallTally):
                tally.replace(gone[0], come[0])  # one rehash of the digest, from its place
                continue
            if gone:
                tally.remove(gone)
                if self.ids is not None:
                    self.ids.difference_update(c.call_id for c in gone)
            if come and not (self._distinct(come) and self._fold(come)):
                return None
        taken, under_way = advanced(self.lineage, lineage, source, self.under_way, outages=metric in _OUTAGE_METRICS)
        fresh = self._fresh(metric, p, window, taken, as_of)
        if fresh is None or not (self._distinct(fresh) and self._fold(fresh)):
            return None
        self.lineage, self.under_way = lineage, under_way
        return self._evaluated(as_of, window, source)

    def _ready(self, key: tuple[Any, ...] | None) -> bool:
        """A call tally (`key`: the calls it is to hold) made ready to fold: when a digest is at
        `key` already (another tally of the same calls folded them), it only counts and takes that
        digest once folded; else it places them in its own, which must be at the calls it folded
        before (False when another tally sharing it moved it elsewhere or broke it) — marked as
        changing, so no other tally takes it until folded (a fold that fails leaves it so)."""
        tally = self.tally
        if key is None or not isinstance(tally, CallTally):
            return True
        self._target = key
        there = _call_digest_at(key)
        if there is not None:
            tally.share(None)
            self._taking = there
            return True
        records = tally.records
        if records is None or records.state != self.calls_key:  # (a new tally's: both None)
            return False
        records.state = None
        self._taking = records
        return True

    def _settle(self, tally: CallTally) -> None:
        """The call tally folded: its digest is at its key, where the other tallies of those calls find it."""
        records, self._taking = self._taking, None
        assert records is not None and self._target is not None
        records.state = self.calls_key = self._target
        _CALL_DIGESTS[self._target] = records
        tally.share(records)

    def _drop(self) -> None:
        self.basis, self.tally, self.lineage = None, None, ()
        self.under_way, self.ids = [], None
        self.calls_key = self._target = None
        self._taking = None

    def _distinct(self, fresh: list[Any]) -> bool:
        """Whether these calls' ids are new and distinct (first-contact resolution and the call
        formulas over several services: then held); True for any other running form (its own
        checks, or none needed)."""
        if self.ids is None:
            return True
        ids = [c.call_id for c in fresh]
        if len(set(ids)) != len(ids) or not self.ids.isdisjoint(ids):
            return False
        self.ids.update(ids)
        return True

    @staticmethod
    def _tally(
        metric: str, p: dict[str, Any], window: Interval, calendar: Calendar, exclusions: list[Interval]
    ) -> CallTally | OutageTally | MtbfTally | CountTally | FcrTally:
        if metric == FCR:
            from accord_metrics.evaluation import fcr_method, repeat_window

            return FcrTally(fcr_method(p), repeat_window(p), window)
        if metric in CALL_FORMULAS:
            short = _seconds(p["short_abandon_seconds"]) if p.get("short_abandon_seconds") else None
            if metric == "METRIC_SERVICE_LEVEL":
                return CallTally(CALL_FORMULAS[metric], p["variant"], _seconds(p["threshold_seconds"]), short)
            return CallTally(CALL_FORMULAS[metric], "", None, short)
        if metric == "METRIC_AVAILABILITY_TIME":
            return OutageTally(window, calendar, exclusions, _seconds(p.get("min_outage_seconds")))
        if metric == "METRIC_MTBF":
            return MtbfTally(window, calendar, exclusions)
        return CountTally(window, calendar, exclusions)

    @staticmethod
    def _fresh(
        metric: str, p: dict[str, Any], window: Interval, items: Sequence[Any], as_of: datetime
    ) -> list[Any] | None:  # fmt: skip
        """The inputs among `items` the formula reads (`evaluation.run_formula`'s filters) that a
        tally folds: an outage under way is not (it changes with the evaluation's instant: see
        `_under_way`). None when the window is empty."""
        ws, we = window.start, window.end
        if not ws < we:
            return None
        if metric == FCR:  # every contact (those before the window decide first-ness)
            from accord_metrics.evaluation import fcr_method

            return contact.fcr_contacts(items, fcr_method(p))
        if metric in _OUTAGE_METRICS:
            return [o for o in items if o.end < ONGOING and o.start < we and ws < o.end and o.start < o.end]
        if metric == "METRIC_AVAILABILITY_REQUESTS":
            return [r for r in items if ws <= r.start < we]
        return [c for c in items if ws <= c.entered_queue < we]

    def _fold(self, fresh: list[Any]) -> bool:
        tally = self.tally
        if isinstance(tally, CallTally | FcrTally):
            return tally.extend(fresh)
        assert tally is not None
        tally.extend(fresh)
        return True
