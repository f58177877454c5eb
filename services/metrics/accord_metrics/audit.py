"""The auditor's questions of the metrics service (docs/domain.md §6): re-derivation of every
recorded evaluation from the raw signals in the store, what-if of proposed terms over past
windows, and each window as the store knew it at an instant beside what is correct now.
Reads only: nothing here stores an event."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from accord.metrics.v1 import events_pb2 as ev
from accord_kit.context import Principal
from accord_kit.timeline import Interval
from accord_metrics.application import (
    Metrics,
    WindowCheck,
    _parse,
    _windows,
    end_of,
    recorded_calendar,
    recorded_formula,
)
from accord_metrics.codec import evaluation_message
from accord_metrics.domain import ACCEPTED, BREACHED, AmendmentNotPendingError, InvalidRequestError, NotFoundError
from accord_metrics.evaluation import ONGOING
from accord_metrics.running import FCR
from accord_metrics.signal_index import ReadPages, reaching

DEFAULT_PERIODS = 3
MAX_PERIODS = 24
PROGRESS_EVERY = 25  # windows between two progress reports of a re-derivation
READ_PROGRESS_SECONDS = 1.0  # between two progress reports while a re-derivation's pass reads the store
# Signals a re-derivation's pass over the store holds (≈ 400 B each as formula inputs: ≈ 200 MiB).
# A store whose signals fit is read once; a larger one once a span of time, each pass holding the
# signals that reach its windows (`_passes`).
REDERIVE_HELD = 500_000
_DAY = timedelta(days=1)
_US = timedelta(microseconds=1)
COMPARATORS = ("COMPARATOR_AT_LEAST", "COMPARATOR_AT_MOST")
# Evaluation fields naming the window, not saying anything about it: never a difference.
IDENTITY = {"agreement_id", "objective_id", "window_start", "window_end"}


@dataclass(frozen=True)
class Progress:
    processed: int  # windows looked at so far (checked or skipped as open)
    total: int
    agreement_id: str
    agreements: int
    signals_read: int
    passes: int = 0  # passes over the store planned (0 before they are)
    pass_number: int = 0  # the pass under way, from 1


@dataclass
class Rederivation:
    """The outcome of a re-derivation: totals and every window that does not match."""

    total: int = 0
    agreements: int = 0
    signals_read: int = 0
    checked: int = 0
    skipped_open: int = 0
    mismatches: list[WindowCheck] = field(default_factory=list)
    passes: int = 0  # passes over the stored signals made


@dataclass(frozen=True)
class _Due:
    """A window a re-derivation looks at, as planned (before it is loaded)."""

    agreement_id: str
    window_id: UUID
    start: datetime
    end: datetime
    chained: bool  # first-contact resolution's in some version
    # First-contact resolution's repeat window and the services its version measures: its calls
    # read from its start less the repeat window, and the chains of contacts before walked back
    # over those services (`SignalIndex.chain_anchors`); None with `chained`: every call held.
    repeat: timedelta | None = None
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Pass:
    """One pass over the stored signals: the windows it checks (agreement id, window id), the
    span of time they cover and whether it holds every call (`reaching`); `span` None: it holds
    every signal."""

    windows: list[tuple[str, UUID]]
    span: Interval | None
    all_calls: bool
    repeat: timedelta | None = None  # first-contact resolution's windows of this repeat window …
    peers: tuple[str, ...] = ()  # … over these services


def _cut(
    due: list[_Due], holds: Callable[[Interval], int], held: int, repeat: timedelta | None = None,
    peers: tuple[str, ...] = (),
) -> list[_Pass]:  # fmt: skip
    """These windows in order of their start, cut into passes whose span (from the first window's
    start — less `repeat`, first-contact resolution's repeat window, when given — to the latest end
    among them) `holds` at most `held` signals; a window within a pass's span joins it whatever it
    holds (another objective's month, when a month alone is more than a pass): it adds nothing."""
    before = repeat or timedelta(0)
    out: list[_Pass] = []
    group: list[_Due] = []
    span: Interval | None = None
    for d in sorted(due, key=lambda d: (d.start, d.end)):
        wider = Interval(d.start, d.end) if span is None else Interval(span.start, max(span.end, d.end))
        if group and wider != span and holds(Interval(wider.start - before, wider.end)) > held:
            out.append(_Pass([(g.agreement_id, g.window_id) for g in group], span, False, repeat, peers))
            group, wider = [], Interval(d.start, d.end)
        group.append(d)
        span = wider
    if group:
        out.append(_Pass([(g.agreement_id, g.window_id) for g in group], span, False, repeat, peers))
    return out


@dataclass(frozen=True)
class WhatIfWindow:
    start: datetime
    end: datetime
    actual: dict[str, Any] | None
    proposed: dict[str, Any] | None

    @property
    def breached_actual(self) -> bool:
        return self.actual is not None and self.actual.get("status") == BREACHED

    @property
    def breached_proposed(self) -> bool:
        return self.proposed is not None and self.proposed.get("status") == BREACHED


@dataclass(frozen=True)
class WhatIfObjective:
    objective_id: str
    name: str
    metric: str
    note: str
    windows: list[WhatIfWindow]


@dataclass(frozen=True)
class WhatIf:
    agreement_id: str
    amendment_id: str
    terms: dict[str, Any]  # the proposal as given (not merged with a parent)
    periods: int
    objectives: list[WhatIfObjective]


@dataclass(frozen=True)
class WindowAt:
    objective_id: str
    window_start: str
    window_end: str
    as_known: dict[str, Any] | None
    as_effective: dict[str, Any]
    restated: bool
    differences: list[str]


def evaluation_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The public Evaluation fields (by proto name) in which two evaluations differ."""
    ma, mb = evaluation_message(a), evaluation_message(b)
    out = []
    for f in ev.Evaluation.DESCRIPTOR.fields:
        if f.name in IDENTITY:
            continue
        va, vb = getattr(ma, f.name), getattr(mb, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            va, vb = dict(va), dict(vb)
        if va != vb:
            out.append(f.name)
    return out


class MetricsAudit:
    """Audit over the metrics application's store: it owns nothing and stores nothing."""

    def __init__(self, app: Metrics) -> None:
        self.app = app

    # -- re-derivation -----------------------------------------------------------------------------
    def rederive(
        self,
        agreement_id: str = "",
        progress: Callable[[Progress], None] | None = None,
        cancelled: threading.Event | None = None,
        held: int = REDERIVE_HELD,
    ) -> Rederivation:
        """Recompute every recorded closed window (of one agreement, or of all) from the
        signal batches re-read from the store — the terms in force at each window's start and
        the calendar version its evaluation records; report the windows that differ from the
        record. Open windows are counted and skipped: their value still changes. Stops early
        (with what it found so far) when `cancelled` is set.

        The store is read once for all agreements when its signals fit `held`; else once a span
        of time (`_passes`), each pass holding only the signals that reach its windows, so the
        memory is a span's, not history's. Mismatches are listed by agreement, objective and
        window whatever the passes."""
        app = self.app
        now = app.clock.now()
        if agreement_id:
            views = [app.agreement_view(None, agreement_id)]
        else:
            views = sorted((v for v in app.views() if v.versions), key=lambda v: v.agreement_id)
        # Every service a window of them may read; each window is judged on its version's.
        services = {v.agreement_id: app.measured_services(v, now)[0] for v in views}
        ids = {v.agreement_id: app.window_ids(v.agreement_id) for v in views}
        total = sum(len(i) for i in ids.values())
        out = Rederivation(total=total, agreements=len(views))
        if progress is not None:  # reading a month of signals takes a while: say so first
            progress(Progress(0, total, "", len(views), 0))
        plan = self._passes(views, services, ids, held)
        # The first of several passes reads every batch and maps the log's pages; the later ones
        # read only the pages that may hold a signal of their span (`ReadPages`).
        pages = ReadPages({s for ss in services.values() for s in ss}) if len(plan) > 1 else None
        by_id = {v.agreement_id: v for v in views}
        processed = 0
        mismatches: list[WindowCheck] = []
        # Windows a pass bounded in time found recorded without their formula: judged again in a
        # pass holding every call, as a recomputation holds them (`Judging.recompute`).
        unbounded: list[tuple[str, UUID, Interval]] = []

        def tell(aid: str) -> None:
            if progress is not None:
                progress(Progress(processed, out.total, aid, out.agreements, out.signals_read, len(plan), out.passes))

        said = time.monotonic()

        def going_on(read: int) -> bool:
            """A pass's read: its progress every READ_PROGRESS_SECONDS (the signals read so far,
            while the first pass counts them), stopped when the re-derivation is cancelled."""
            nonlocal said
            if cancelled is not None and cancelled.is_set():
                return False
            if progress is not None and time.monotonic() - said >= READ_PROGRESS_SECONDS:
                if out.passes == 1:
                    out.signals_read = read
                tell("")
                said = time.monotonic()
            return True

        while out.passes < len(plan):
            if cancelled is not None and cancelled.is_set():
                break
            step = plan[out.passes]
            out.passes += 1
            of: dict[str, list[UUID]] = defaultdict(list)  # each agreement's windows in the pass
            for aid, wid in step.windows:
                of[aid].append(wid)
            wanted = {s for aid in of for s in services[aid]}
            if step.span is None:
                reach = None
            elif step.repeat is not None:  # first-contact resolution's: its calls from its repeat window before
                reach = reaching(Interval(step.span.start - step.repeat, step.span.end))
            else:
                reach = reaching(step.span, all_calls=step.all_calls)
            stored = app.stored_signals(
                wanted, reach=reach, going_on=going_on, pages=pages if reach is not None else None
            )
            if step.repeat is not None and reach is not None:  # and the chains of contacts before
                app.chain_anchors(stored.sets, reach.lo, step.repeat // _US, step.peers, pages, going_on)
            if cancelled is not None and cancelled.is_set():  # a part of the store read: judge nothing
                break
            if out.passes == 1:  # the first pass reads every batch: the store's signals, counted once
                out.signals_read = stored.count
            signals = stored.sets
            del stored
            for aid, wids in of.items():
                view = by_id[aid]
                tell(aid)
                loaded: list[Any] = [app.repository.get(w) for w in wids]
                for agg in sorted(loaded, key=lambda w: (w.objective_id, w.window_start)):
                    if cancelled is not None and cancelled.is_set():
                        out.mismatches = sorted(mismatches, key=_check_order)
                        return out
                    if not agg.closed:
                        out.skipped_open += 1
                    elif not step.all_calls and recorded_formula(agg.latest) is None:
                        window = Interval(_parse(agg.window_start), _parse(agg.window_end))
                        unbounded.append((aid, agg.id, window))
                        continue
                    else:
                        check = app.check_window(view, agg, signals, now)
                        out.checked += 1
                        if not check.matches:
                            mismatches.append(check)
                    processed += 1
                    if processed % PROGRESS_EVERY == 0:
                        tell(aid)
                del loaded
                if processed % PROGRESS_EVERY:
                    tell(aid)
            del signals
            if out.passes == len(plan) and unbounded:
                span = Interval(min(w.start for *_, w in unbounded), max(w.end for *_, w in unbounded))
                plan.append(_Pass([(aid, wid) for aid, wid, _ in unbounded], span, True))
                unbounded = []
        out.mismatches = sorted(mismatches, key=_check_order)
        return out

    def _passes(
        self, views: list[Any], services: dict[str, list[str]], ids: dict[str, list[UUID]], held: int
    ) -> list[_Pass]:
        """The passes a re-derivation makes over the store. One holding every signal when the
        store's signals of these services fit `held` (as the signal index holds them). Else the
        windows in order of their start, cut into passes whose span (from the first window's start
        to the latest end among them) holds at most `held` signals by the index's count of each
        day — the lists read whole (tickets, tasks…) counted in every pass; a window whose span
        alone holds more is a pass of its own, held whole, with the windows within its span.
        First-contact resolution's windows read chains of contacts back without bound: they are
        cut likewise, a set a repeat window and services, each pass's span reaching that window
        before its first start (the chains before are walked back: `SignalIndex.chain_anchors`);
        any other (its version not in force in it) shares one pass holding every call and, of the
        rest, what reaches their span."""
        app = self.app
        measured = {s for ss in services.values() for s in ss}
        if app.signals_held(measured) <= held:
            return [_Pass([(aid, w) for aid in ids for w in ids[aid]], None, True)]
        by_day, rest = app.counted_by_time(measured, _DAY)
        days = sorted(by_day)
        running = [0]
        for day in days:
            running.append(running[-1] + by_day[day])

        def holds(span: Interval) -> int:
            first = bisect_left(days, _day(span.start))
            last = bisect_right(days, _day(span.end))
            return rest + running[last] - running[first]

        due = [d for v in views for d in self._due(v, ids[v.agreement_id])]
        out = _cut([d for d in due if not d.chained], holds, held)
        bounded = [d for d in due if d.chained and d.repeat is not None]
        for repeat, peers in sorted({(d.repeat, d.peers) for d in bounded if d.repeat is not None}):
            out += _cut([d for d in bounded if (d.repeat, d.peers) == (repeat, peers)], holds, held, repeat, peers)
        if chained := [d for d in due if d.chained and d.repeat is None]:
            span = Interval(min(d.start for d in chained), max(d.end for d in chained))
            out.append(_Pass([(d.agreement_id, d.window_id) for d in chained], span, True))
        return out

    def _due(self, view: Any, window_ids: list[UUID]) -> list[_Due]:
        """An agreement's windows as a re-derivation plans them: their spans from the events that
        opened them, and whether their objective is first-contact resolution in any version."""
        chained = {
            o.get("objective_id")
            for v in view.versions
            for o in v["terms"].get("objectives") or []
            if o.get("metric") == FCR
        }
        out: list[_Due] = []
        for wid, (oid, start, end) in self.app.window_spans(window_ids).items():
            chain = self.app.chained_repeat(view, oid, Interval(start, end)) if oid in chained else None
            repeat, peers = chain if chain is not None else (None, ())
            out.append(_Due(view.agreement_id, wid, start, end, oid in chained, repeat, peers))
        return out

    # -- what-if -------------------------------------------------------------------------------------
    def what_if(
        self,
        caller: Principal | None,
        agreement_id: str,
        *,
        amendment_id: str = "",
        terms: dict[str, Any] | None = None,
        periods: int = 0,
    ) -> WhatIf:
        """The last `periods` closed windows of each objective as recorded, beside what the
        proposed terms (a pending amendment, or draft terms) would have produced from the same
        signals, re-read from the store. The proposal judges every window, whatever its
        effective date: that is the point of a what-if (docs/domain.md §2, §6). An amendment no
        longer pending (rejected, withdrawn, accepted) is refused: AmendmentNotPendingError."""
        if bool(amendment_id) == (terms is not None):
            given = "both were given" if amendment_id else "neither was given"
            raise InvalidRequestError(
                f"give exactly one of amendment_id (a proposed amendment) and terms (draft terms); {given}"
            )
        if periods < 0 or periods > MAX_PERIODS:
            raise InvalidRequestError(f"periods: 1 to {MAX_PERIODS} windows per objective (0 means 3), not {periods}")
        n = periods or DEFAULT_PERIODS
        app = self.app
        view = app.agreement_view(caller, agreement_id)
        if amendment_id:
            _check_pending(view, amendment_id)
            proposal = view.proposed.get(amendment_id)
            if proposal is None:
                raise NotFoundError(
                    f"amendment {amendment_id!r} of agreement {agreement_id} is not known to metrics "
                    "(never proposed, or not seen yet)"
                )
        else:
            assert terms is not None
            proposal = terms
            _check_objectives(proposal)
        now = app.clock.now()
        latest, tz, _ = app.scope(view, now)
        ended = end_of(view) or ONGOING
        proposed_now = app.effective_terms(proposal, min(now, ended))
        p_tz = proposed_now.get("time_zone") or tz

        closed: dict[str, list[Any]] = defaultdict(list)
        for w in app.window_evaluations(agreement_id):
            if w.closed:
                closed[w.objective_id].append(w)
        actual = {o["objective_id"]: o for o in latest.get("objectives") or []}
        proposed = {o["objective_id"]: o for o in proposed_now.get("objectives") or [] if o.get("objective_id")}
        order = list(dict.fromkeys([*actual, *closed, *proposed]))
        table: dict[str, dict[tuple[datetime, datetime], dict[str, Any] | None]] = {}
        for oid in order:
            rows = table[oid] = {}
            for w in closed.get(oid, [])[-n:]:
                rows[(_parse(w.window_start), _parse(w.window_end))] = w.latest
            if oid in proposed:
                for window in self._closed_windows(view, proposed[oid], p_tz, now)[-n:]:
                    rows.setdefault((window.start, window.end), None)
        # Each window is judged by the proposal on the services it measures as in force at the
        # window's start (naming none: every service of its provider, the agreement's unless it
        # names another). Re-read from the store, as re-derivation does: the answer is the
        # store's alone, the same from any process (not whatever the signal index happens to hold).
        wanted = {
            sid
            for oid, rows in table.items()
            if oid in proposed
            for start, end in rows
            for sid in app.rejudged_services(view, Interval(start, end), now, terms=proposal)
        }
        # Only the signals that may reach the windows judged are held (the pass reads every batch):
        # a few periods' signals, not history's. First-contact resolution's calls whole: its
        # chains of contacts reach back without bound.
        spans = [(start, end) for oid, rows in table.items() if oid in proposed for start, end in rows]
        reach = None
        if spans:
            fcr = any(o.get("metric") == FCR for o in proposed.values())
            span = Interval(min(s for s, _ in spans), max(e for _, e in spans))
            reach = reaching(span, all_calls=fcr)
        signals = app.signal_sources(sorted(wanted), from_store=True, reach=reach)
        out = []
        for oid in order:
            rows = table[oid]
            p_obj = proposed.get(oid)
            windows = []
            for (start, end), recorded in sorted(rows.items()):
                judged = None
                if p_obj is not None:
                    # A recorded window's calendar version judges the proposal too (when it keeps that
                    # calendar), and its formula version (when it keeps that metric): only the
                    # proposal differs, not a calendar redefined or a formula versioned since.
                    pinned = recorded_calendar(recorded) if recorded else None
                    formula = recorded_formula(recorded) if recorded else None
                    try:
                        judged = app.rejudge(
                            view, oid, Interval(start, end), signals, now, terms=proposal, calendar=pinned,
                            formula=formula,
                        )  # fmt: skip
                    except (KeyError, ValueError, ArithmeticError, TypeError, LookupError) as e:
                        raise InvalidRequestError(
                            f"the proposed objective {oid!r} cannot be evaluated: {type(e).__name__}: {e}"
                        ) from None
                windows.append(WhatIfWindow(start, end, recorded, judged))
            described = p_obj or actual.get(oid) or {}
            note = ""
            if p_obj is None:
                note = "not in the proposal: nothing to judge it by"
            elif oid not in actual and not closed.get(oid):
                note = "new in the proposal: never judged"
            out.append(WhatIfObjective(oid, described.get("name", ""), described.get("metric", ""), note, windows))
        return WhatIf(agreement_id, amendment_id, proposal, n, out)

    def _closed_windows(self, view: Any, objective: dict[str, Any], tz: str, now: datetime) -> list[Interval]:
        """The windows of an objective over the agreement's life that had closed by `now`."""
        start = _parse(view.versions[0]["effective_from"])
        ended = end_of(view) or ONGOING
        end = min(ended, now)
        if end <= start:
            return []
        out = []
        for window in _windows(objective, Interval(start, end), tz):
            measured_end = min(window.end, ended)
            if max(window.start, start) < measured_end <= now:
                out.append(window)
        return out

    # -- as known at / as effective at --------------------------------------------------------------
    def compliance_at(
        self, caller: Principal | None, agreement_id: str, at: datetime, objective_id: str = ""
    ) -> list[WindowAt]:
        """Each window that had started by `at`: as the store knew it at `at` (by when each
        of its events was recorded) and as recorded now, whether it was restated after `at`,
        and the fields that differ."""
        app = self.app
        view = app.agreement_view(caller, agreement_id)
        if objective_id and not any(
            o.get("objective_id") == objective_id for v in view.versions for o in v["terms"].get("objectives") or []
        ):
            raise NotFoundError(f"agreement {agreement_id} has no objective {objective_id!r}")
        out = []
        for agg in app.window_evaluations(agreement_id):
            if (objective_id and agg.objective_id != objective_id) or _parse(agg.window_start) > at:
                continue
            known = app.get_as_known_at(agg.id, at)
            as_known = (known.latest or None) if known is not None else None
            effective = agg.latest
            out.append(
                WindowAt(
                    objective_id=agg.objective_id,
                    window_start=agg.window_start,
                    window_end=agg.window_end,
                    as_known=as_known,
                    as_effective=effective,
                    restated=len(agg.restatements) > (len(known.restatements) if known is not None else 0),
                    differences=evaluation_differences(as_known, effective) if as_known else [],
                )
            )
        return out


def _check_pending(view: Any, amendment_id: str) -> None:
    """A what-if asks about a proposal before anyone accepts it (docs/domain.md §6): once concluded
    there is none. An accepted amendment is a version, judging its windows already; rejected or
    withdrawn terms can still be asked about as draft terms, knowingly."""
    done = view.concluded.get(amendment_id)
    if done is None:
        return
    where = f"amendment {amendment_id!r} of agreement {view.agreement_id}"
    if done["outcome"] == ACCEPTED:
        raise AmendmentNotPendingError(
            f"{where} was already accepted as version {done['version']}: compare the versions instead "
            "(or pass its terms as draft terms to replay them over earlier windows)"
        )
    reason = f" ({done['reason']})" if done.get("reason") else ""
    raise AmendmentNotPendingError(
        f"{where} was {done['outcome']}{reason}: it is no longer pending "
        "(pass its terms as draft terms to replay them anyway)"
    )


def _check_objectives(terms: dict[str, Any]) -> None:
    """Draft terms are stored nowhere and checked by no one else: each objective must name
    itself, its metric and comparator, and a decimal target before it can be judged."""
    for i, o in enumerate(terms.get("objectives") or []):
        where = f"terms.objectives[{i}]"
        if not o.get("objective_id"):
            raise InvalidRequestError(f"{where}.objective_id: is required")
        where = f"{where} ({o['objective_id']})"
        if not o.get("metric") or o["metric"] == "METRIC_UNSPECIFIED":
            raise InvalidRequestError(f"{where}.metric: is required")
        if o.get("comparator") not in COMPARATORS:
            raise InvalidRequestError(f"{where}.comparator: must be one of {', '.join(COMPARATORS)}")
        try:
            target = Decimal(str(o.get("target", "")))
        except InvalidOperation:
            target = Decimal("NaN")
        if not target.is_finite():
            raise InvalidRequestError(f"{where}.target: must be a decimal number, not {o.get('target', '')!r}")


def _day(t: datetime) -> int:
    """The day (UTC) an instant falls in, counted from the epoch: `counted_by_time`'s key by `_DAY`."""
    return int(t.timestamp() // 86_400)


def _check_order(check: WindowCheck) -> tuple[str, str, str]:
    return check.agreement_id, check.objective_id, check.window_start
