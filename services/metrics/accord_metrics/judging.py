"""Judging: windows evaluated, restated and recomputed, evaluation failures isolated, and window queries."""

from __future__ import annotations

import functools
import heapq
import json
import threading
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking

from accord_kit.application import AccordRepository, topic_pages
from accord_kit.context import Principal
from accord_kit.logging import get_logger
from accord_kit.timeline import Calendar, Interval, calendar_windows, subtract, union
from accord_kit.topics import event_topics
from accord_metrics import signals as sig
from accord_metrics.burning import BurnIndex
from accord_metrics.domain import BREACHED, NO_DATA, AgreementView, CalendarView, NotFoundError, WindowEvaluation
from accord_metrics.evaluation import (
    BUDGETED,
    INPUT_LISTS,
    METRIC_READS,
    SignalSet,
    burn_lengths,
    burn_rates,
    depth_days,
    exclusions_for,
    judge,
    late_subjects,
    repeat_window,
)
from accord_metrics.formulas import reliability
from accord_metrics.running import FCR, Running
from accord_metrics.signal_index import FAR_FUTURE, ServiceSignals, combined, reaching
from accord_metrics.views import _parse, end_of, named_services, suspensions

if TYPE_CHECKING:
    from accord_metrics.signal_index import SignalIndex as _Host
else:
    _Host = object

log = get_logger("accord.metrics.evaluation")

WINDOW_TOPIC = WindowEvaluation.Opened.TOPIC
# A re-derivation's difference when the calendar version a window was judged with is not held.
CALENDAR_UNAVAILABLE = "calendar_version unavailable"
DEFAULT_MAINTENANCE_NOTICE = timedelta(hours=24)
CALENDAR_TOPICS = sorted(event_topics(CalendarView))
# The events of the aggregates a round keeps current in the cache (`Metrics.KEPT_CURRENT`).
# Beyond this many positions stored by other processes since a round's last look, it does not
# read them: nothing is current any more (`Judging._refresh_current`).
CURRENT_SCAN_LIMIT = 10_000
KEPT_TOPICS = sorted(event_topics(AgreementView) | event_topics(CalendarView) | event_topics(WindowEvaluation))
_TICK = timedelta(microseconds=1)
# The tracking name under which a round records, durably, the signals' log position up to which it
# judged every signal (`Judging._record_judged`): a process that starts reads it, and its first
# round judges only the signals stored after it — with its open windows, and any window a view
# change, a closing or an opening needs — not every window again (see the README, "Scale").
# A round saves the evaluations of the agreements it judged together, in one transaction, once
# this many window evaluations are pending (and at its end): a commit (and its fsync) a batch of
# agreements, not one an agreement.
SAVE_BATCH = 256
JUDGED = "metrics-judged-signals"
# The log position up to which every agreement view event a round learned was judged (see
# `AgreementViews._refresh_views`): the view events after it reach closed windows again.
JUDGED_VIEWS = "metrics-judged-views"
# The name under which metrics' consumer of the agreements stream tracks its position (the
# agreements service's log position it applied up to; bootstrap: Upstream("agreements")).
AGREEMENTS_SOURCE = "agreements"
# The events that record a closed window's evaluation: its closing and each restatement.
RECORDING_TOPICS = ["accord_metrics.domain:WindowEvaluation.Closed", "accord_metrics.domain:WindowEvaluation.Restated"]
# A formula version whose input digest covers every call it was passed (the calls known when the
# window was judged), not only those its window counts: re-derived on those calls.
FCR_V1 = ("contact.fcr", 1)


@dataclass(frozen=True)
class Settled:
    """An ended agreement whose every window was closed (or judged by no version) by an
    evaluation that read the views as of log position `position`. Evaluating it again finds
    nothing to do (`_evaluate_agreement`: a closed window needs judging only for a change to
    its services' signals from before its end) unless `now` is before its end, one of its
    `services` has signals from before `windows_end` (the end of its last window) not yet
    evaluated — a late one restates a closed window; so does a service of one of its `providers`
    (measured on their every service) — or a view it `depends_on` (its own, those its terms
    inherit from) changed after `position`."""

    position: int
    ended_at: datetime
    windows_end: datetime
    services: frozenset[str]
    depends_on: frozenset[UUID]
    providers: frozenset[str] = frozenset()

    def holds(
        self, now: datetime, changed_since: dict[str, datetime], view_changed: dict[UUID, int],
        provider_of: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        earliest_change = min(
            (at for s, at in changed_since.items() if s in self.services or _covers(self.providers, provider_of, s)),
            default=None,
        )
        return (
            now >= self.ended_at
            and (earliest_change is None or earliest_change >= self.windows_end)
            and all(view_changed.get(d, 0) <= self.position for d in self.depends_on)
        )


def _covers(providers: frozenset[str], provider_of: dict[str, str] | None, service_id: str) -> bool:
    """Whether a service is one of these providers' (an agreement measured on their every service)."""
    return bool(providers) and provider_of is not None and provider_of.get(service_id) in providers


# Metrics whose evaluation of a window depends on its signals, terms and calendar only, never on
# the instant it is judged at (evaluation.run_formula passes them no `as_of`): an open window of
# one is judged again only when one of those changes, or when it closes.
TIME_INVARIANT = frozenset({
    "METRIC_AVAILABILITY_TIME", "METRIC_AVAILABILITY_REQUESTS", "METRIC_MTTR", "METRIC_MTBF", "METRIC_ASA",
    "METRIC_ABANDONMENT_RATE", "METRIC_SERVICE_LEVEL", "METRIC_AVERAGE_HANDLE_TIME", "METRIC_CLOSE_RATE",
    "METRIC_DEAL_SIZE", "METRIC_MARKETING_REVENUE_SHARE",
})  # fmt: skip
# … except that an outage under way (no end reported) lasts until the evaluation's instant.
OUTAGE_CLIPPED = frozenset({"METRIC_AVAILABILITY_TIME", "METRIC_MTBF"})


@dataclass(frozen=True)
class OpenWindow:
    """An open window left as judged: its metric, and the longest burn-rate look-back of a
    budgeted objective (None otherwise) — what says whether time alone can change it."""

    metric: str
    look_back: timedelta | None

    def time_sensitive(self, now: datetime, facts: list[ServiceSignals], burn_rates: bool = True) -> bool:
        """Whether judging it at `now` could give another outcome than its last judgement with
        no new signal, view or calendar: a metric judged as of the instant (tickets, tasks,
        leads, FCR, …), an outage under way, or (unless `burn_rates` is false: whether its
        evaluation itself could) burn rates whose look-back still holds signals."""
        if self.metric not in TIME_INVARIANT:
            return True
        if self.metric in OUTAGE_CLIPPED and any(f.ongoing for f in facts):
            return True
        if not burn_rates:
            return False
        # Burn rates are judged over look-back windows ending now: with no signal reaching into
        # the longest one, every rate is zero and no alert can fire.
        return self.look_back is not None and any(
            f.ongoing or (f.reaches is not None and f.reaches > now - self.look_back) for f in facts
        )


@dataclass(frozen=True)
class Watch:
    """What an agreement's latest judgement depended on, so that a round judges it again only
    when something changed: the views' log position (its own and those its terms inherit
    from, `depends_on`), the calendars' log position, its services (a new signal or
    correction of one; a signal of any service of its `providers`, measured on their every
    service, even one registered since), `due` — the first instant a window of it closes or
    opens, or a version takes effect — and its open windows, any of which time alone may change."""

    position: int
    calendars: int
    depends_on: frozenset[UUID]
    services: tuple[str, ...]
    due: datetime
    open: tuple[OpenWindow, ...]
    providers: frozenset[str] = frozenset()

    def quiet(
        self, now: datetime, changed_since: dict[str, datetime], view_changed: dict[UUID, int], calendars: int,
        facts: dict[str, ServiceSignals], provider_of: dict[str, str] | None = None,
    ) -> bool:  # fmt: skip
        if now >= self.due or calendars != self.calendars:
            return False
        if any(s in changed_since for s in self.services):
            return False
        if self.providers and any(_covers(self.providers, provider_of, s) for s in changed_since):
            return False
        if any(view_changed.get(d, 0) > self.position for d in self.depends_on):
            return False
        mine = [facts[s] for s in self.services if s in facts]
        return not any(w.time_sensitive(now, mine) for w in self.open)


class WatchIndex:
    """The agreements' watches indexed by what can end their quiet (`Watch.quiet`), so that a
    round looks only at the agreements something changed for, not at every agreement known:
    with a thousand agreements, asking each whether it was quiet was a tenth of a round after
    a batch on one service. `candidates` is a superset of the watched agreements that are not
    quiet; the round still asks each of them `Watch.quiet` (and `Settled.holds`), so what it
    judges is what it judged when it asked every agreement. Kept by `Judging._watch`, the only
    place a watch is set or dropped."""

    def __init__(self) -> None:
        self.by_service: dict[str, set[UUID]] = {}
        self.by_provider: dict[str, set[UUID]] = {}
        self.by_view: dict[UUID, set[UUID]] = {}
        self.by_calendars: dict[int, set[UUID]] = {}
        # Watches with an open window of a metric judged as of the instant: looked at every round.
        self.always: set[UUID] = set()
        # Watches whose open windows time can change through their services' facts (an outage
        # under way, burn rates whose look-back holds signals): looked at when a service of
        # theirs has an outage under way or a signal within the longest look-back of now.
        self.timed: set[UUID] = set()
        self.look_back = timedelta(0)  # the longest look-back of any watch's open window (only grows)
        # A heap of the watches' due instants; an entry stands while its watch does (those of
        # replaced watches are dropped when popped, or when they outnumber the watches).
        self._due: list[tuple[datetime, int, UUID, Watch]] = []
        self._seq = 0
        self.overdue: set[UUID] = set()  # watched agreements whose due instant has passed
        self.unwatched: set[UUID] = set()  # agreements whose watch was dropped (a failure)
        self.watches: dict[UUID, Watch] = {}  # each agreement's watch (what `Judging._watches` is)

    def put(self, uid: UUID, watch: Watch | None) -> None:
        """`uid`'s watch is now `watch` (None: dropped, so it is looked at every round until
        watched again). An agreement judged again is mostly watched as before: only what
        differs is moved."""
        old = self.watches.pop(uid, None)
        if watch is None:
            self.unwatched.add(uid)
        else:
            self.unwatched.discard(uid)
            self.watches[uid] = watch
        _move(self.by_service, old.services if old else (), watch.services if watch else (), uid)
        _move(self.by_provider, old.providers if old else (), watch.providers if watch else (), uid)
        _move(self.by_view, old.depends_on if old else (), watch.depends_on if watch else (), uid)
        _move(self.by_calendars, (old.calendars,) if old else (), (watch.calendars,) if watch else (), uid)
        self.always.discard(uid)
        self.timed.discard(uid)
        self.overdue.discard(uid)
        if watch is None:
            return
        for window in watch.open:
            if window.metric not in TIME_INVARIANT:
                self.always.add(uid)
            elif window.metric in OUTAGE_CLIPPED or window.look_back is not None:
                self.timed.add(uid)
                if window.look_back is not None and window.look_back > self.look_back:
                    self.look_back = window.look_back
        if watch.due < FAR_FUTURE:
            self._seq += 1
            heapq.heappush(self._due, (watch.due, self._seq, uid, watch))
            if len(self._due) > 2 * len(self.watches) + 64:  # mostly replaced watches' entries: dropped
                self._due = [entry for entry in self._due if self.watches.get(entry[2]) is entry[3]]
                heapq.heapify(self._due)

    def candidates(
        self, now: datetime, changed_since: Mapping[str, datetime], provider_of: Mapping[str, str], calendars: int,
        facts: Mapping[str, ServiceSignals], views_changed: Iterable[UUID],
    ) -> set[UUID]:  # fmt: skip
        """Every agreement a round must ask whether it is quiet: those whose views
        (`views_changed`: read since the last round, their own or one their terms inherit from),
        services or their providers' services changed, whose watch was made with other
        calendars, whose due instant came, with an open window judged as of the instant or one
        time can change through its services, and those not watched. It notes as it goes the
        views first seen (not watched until a round watches them) and the due instants passed
        (overdue until watched anew): a round's question, asked once a round."""
        for view in views_changed:  # a view not watched yet (new) is looked at until it is
            if view not in self.watches:
                self.unwatched.add(view)
        due = self._due
        while due and due[0][0] <= now:
            _, _, uid, watch = heapq.heappop(due)
            if self.watches.get(uid) is watch:
                self.overdue.add(uid)
        out = self.unwatched | self.overdue | self.always
        for view in views_changed:
            out |= self.by_view.get(view, _NONE)
        for service in changed_since:
            out |= self.by_service.get(service, _NONE)
            provider = provider_of.get(service)
            if provider is not None:
                out |= self.by_provider.get(provider, _NONE)
        for held, uids in self.by_calendars.items():
            if held != calendars:
                out |= uids
        if self.timed:
            horizon = now - self.look_back
            for service, fact in facts.items():
                reaches = fact.reaches
                if fact.ongoing or (reaches is not None and reaches > horizon):
                    out |= self.timed & self.by_service.get(service, _NONE)
        return out


_NONE: frozenset[UUID] = frozenset()


def _move(index: dict[Any, set[UUID]], old: Iterable[Any], new: Iterable[Any], uid: UUID) -> None:
    """`uid` indexed under the keys `new` instead of `old`."""
    if old == new:
        return
    kept = set(new)
    for key in old:
        held = index.get(key)
        if key not in kept and held is not None:
            held.discard(uid)
            if not held:
                del index[key]
    for key in kept:
        index.setdefault(key, set()).add(uid)


class WindowList:
    """An objective's windows from its agreement's start to a round's end, with their ids, kept
    between rounds: listing every window since an agreement began (and hashing its id) each
    round grew with history. `spec` is what they were listed for (kind, rolling days, start,
    time zone), `last` the period the span ended in (the list holds while a round's end stays
    in it), `ends` the windows' ends (increasing), `closed` how many leading windows are known
    closed (windows known closed are never unmarked; the count only grows)."""

    __slots__ = ("closed", "ends", "ids", "last", "spec", "windows")

    def __init__(
        self, spec: tuple[Any, ...], last: Interval, windows: list[Interval], ids: list[UUID], ends: list[datetime]
    ) -> None:
        self.spec, self.last, self.windows, self.ids, self.ends = spec, last, windows, ids, ends
        self.closed = 0

    def first(self, earliest_change: datetime | None, closed: set[UUID]) -> int:
        """The first window a round must look at: those before it are known closed and end at
        or before the earliest change (a change reaches a window that ends after it)."""
        k, ids = self.closed, self.ids
        while k < len(ids) and ids[k] in closed:
            k += 1
        self.closed = k
        return k if earliest_change is None else min(k, bisect_right(self.ends, earliest_change))


@dataclass(frozen=True)
class RoundStats:
    """What the latest evaluation round did: agreements judged and skipped (nothing changed
    for them), windows judged (their formula run) and windows whose evaluation changed."""

    agreements_judged: int = 0
    agreements_skipped: int = 0
    windows_judged: int = 0
    windows_changed: int = 0
    # Of the windows judged, those whose outcome (or burn rates) another agreement's window
    # with the same objective, window and inputs had worked out in the round (see _Shared).
    windows_shared: int = 0


@dataclass(frozen=True)
class WindowCheck:
    """A recorded window recomputed: the latest recorded evaluation, the recomputed one
    (None when the objective is missing from the terms in force), the fields that differ,
    and the window's breach records against those the record should hold."""

    agreement_id: str
    objective_id: str
    window_start: str
    window_end: str
    recorded: dict[str, Any]
    recomputed: dict[str, Any] | None
    differences: list[str]
    recorded_breaches: int
    expected_breaches: int

    @property
    def matches(self) -> bool:
        return not self.differences


@dataclass
class _Judged:
    """An agreement judged in a round: the window evaluations to save, and what to note once
    they are saved (the windows known closed or open, its watch, settled)."""

    view: Any
    to_save: list[Any]
    saved: Callable[[], None]


# An agreement's views, services, providers measured on their every service, and the lists each
# objective reads (`Judging._scope_of`).
_Scope = tuple[frozenset[UUID], list[str], frozenset[str], dict[str, frozenset[str] | None]]

# The key of a window's inputs: its span, first-contact resolution's repeat window (the calls it
# reads: `SignalIndex.signal_sources`), its services, the instant before which only the lists the
# burn rates read are, and whether every ticket, task, lead, deal and incident (and with a repeat
# window, call) is read (see `_objective_windows`).
InputsKey = tuple[Interval, timedelta | None, tuple[str, ...], datetime | None, bool]
# How long after its end a window closed from its running evaluation keeps it, and its selection,
# for late signals (by the rounds' instant): a month's late calls and outage ends are folded into
# it rather than its whole month read and computed again each late batch (services/metrics/README.md,
# "A window closes from its running evaluation").
# `Metrics.closed_kept`, set by `METRICS_CLOSED_KEPT_SECONDS` (the store env's CLOSED_KEPT_SECONDS):
# longer, later signals are folded in too, and the window's inputs are held that much longer.
CLOSED_KEPT = timedelta(hours=1)
CLOSED_KEPT_SECONDS = "CLOSED_KEPT_SECONDS"
# How many formula inputs of closed windows a round holds at once (`Metrics.closed_held`): a round
# that judges many closed windows — history recorded late, a backfill of months, a process that
# was stopped for long — releases the inputs of the windows it judged first once those it holds
# are over it (`_Shared.closed`). Holding them all, a round after a backfill of 2,000,000 signals
# over 100 months held every one converted at once (≈ 1 GiB of RSS at its peak) and the process
# kept ≈ 270 MiB after the next round and a settle (≈ 960 MiB right after): the allocator's arenas
# pinned by what outlived the round.
# ≈ 300 B an input: ≈ 60 MiB.
CLOSED_HELD = 200_000
# The formulas whose digest covers every item passed, read whole for the windows recorded with
# them: "ticket.compliance" and "task.turnaround" v1 (v2 digests the items due in the window),
# "mttr" v1 (v2 the incidents that reach the window), "contact.fcr" v1 (v2 the first contacts
# decided in the window).
_READ_WHOLE = frozenset({("ticket.compliance", 1), ("task.turnaround", 1), ("mttr", 1), FCR_V1})


@dataclass
class _Shared:
    """What one round works out once for all the agreements that ask the same of it: a span of
    services' signals, and an objective's outcome over a window from them. Agreements measuring
    the same service by the same objective (a template's) share one computation; the key holds
    everything the outcome reads (the objective without its id, the window and the part of it
    measured, the time zone, the calendar and formula versions a closed window keeps, the
    suspended time, the inputs and the instant), so an agreement that differs in any of them
    is judged on its own. Only a round has one: recomputation and audit judge each window alone."""

    # Each span's signals with the signal position they were read at: read again for the next
    # agreement once a batch was recorded since (as fresh as when each agreement read its own).
    inputs: dict[InputsKey, tuple[int, SignalSet]] = field(default_factory=dict)
    outcomes: dict[tuple[Any, ...], tuple[dict[str, Any], Calendar, list[Interval], dict[timedelta, Decimal]]] = field(
        default_factory=dict
    )
    rates: dict[tuple[Any, ...], dict[timedelta, Decimal]] = field(default_factory=dict)
    shared: int = 0  # windows judged from another agreement's outcome or burn rates
    # The inputs of closed windows the round read and holds (not kept after it: ended before
    # `closed_kept`), oldest first, with how many inputs each holds, and their sum: once that is
    # over the round's budget (`Metrics.closed_held`), the oldest are released (`Judging._hold_closed`).
    closed: dict[InputsKey, int] = field(default_factory=dict)
    closed_inputs: int = 0
    # The inputs released, by the signal position they were read at: a window whose outcome
    # another agreement worked out from them takes it without reading them again.
    released: dict[InputsKey, int] = field(default_factory=dict)


def _objective_key(objective: dict[str, Any]) -> str:
    """An objective as its outcome reads it: every field but its id, in one canonical form."""
    return json.dumps({k: v for k, v in objective.items() if k != "objective_id"}, sort_keys=True, default=str)


class ObjectiveKeys:
    """`_objective_key` of each objective, kept between rounds by the objective's identity: an
    agreement's terms are the same dicts round after round (its view is read from the cache, not
    copied), and encoding each again was a few per cent of a round. An entry holds the dict
    itself, so no other dict can take its id while the entry lives; terms are never changed in
    place (a version's arrive as new dicts), so a kept key stays the dict's. Terms merged with a
    parent's are new dicts at every look: they miss, and the whole is dropped once `limit`
    entries are held (a bound on what it keeps alive, not a least-recently-used order)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.encoded = 0  # keys worked out (not taken from what is kept)
        self._keys: dict[int, tuple[dict[str, Any], str]] = {}

    def __call__(self, objective: dict[str, Any]) -> str:
        held = self._keys.get(id(objective))
        if held is not None and held[0] is objective:
            return held[1]
        if len(self._keys) >= self.limit:
            self._keys.clear()
        key = _objective_key(objective)
        self._keys[id(objective)] = (objective, key)
        self.encoded += 1
        return key


class Judging(_Host):
    """Every objective's evaluation per window with its breaches, and its recomputation (a
    mixin of `Metrics`, whose constructor sets the state declared here)."""

    _lock: threading.RLock
    _windows: dict[str, set[str]]  # agreement id → window aggregate ids
    _windows_position: int
    _settled: dict[UUID, Settled]  # ended agreements with nothing to evaluate (see Settled)
    # (agreement id, objective id or "" for the whole agreement) → why its evaluation failed
    # in the latest pass that tried it: isolated there, every other agreement goes on.
    _failing: dict[tuple[str, str], str]
    _watches: dict[UUID, Watch]  # agreements judged, and what would make a round judge them again
    _calendars_position: int
    _calendars_read: int  # the log position the calendar events were read up to (topic_pages)
    # Windows known closed (judged so here, or their closing read from the log): loaded only
    # when a change reaches them.
    _closed_windows: set[UUID]
    _open_windows: set[UUID]  # windows known open (judged by this process)
    _round_windows: int
    _round_kept: bool
    _running: dict[UUID, Running]  # open window → its running evaluation (running.py)
    _running_touched: set[UUID]  # windows given one, or closed, since the last round's sweep
    _running_closed: dict[UUID, datetime]  # a window closed with one → until when it keeps it (closed_kept)
    closed_kept: timedelta  # how long after its end a window closed with one keeps it (CLOSED_KEPT)
    closed_held: int  # how many inputs of closed windows a round holds at once (CLOSED_HELD)
    _watch_index: WatchIndex  # the watches by what can end their quiet
    # agreement → ((views, services positions), what it depends on, is measured on, reads): `_scope_of`
    _scopes: dict[UUID, tuple[tuple[int, int], _Scope]]
    _window_lists: dict[tuple[str, str], WindowList]  # (agreement id, objective id) → its windows listed
    _objective_keys: ObjectiveKeys  # each objective's outcome key (see _Shared), kept between rounds
    _judged_position: int
    _views_judged_position: int
    _view_reach: dict[UUID, datetime]
    _reach_kept: set[UUID]
    _recorded_at: dict[UUID, int]  # window id → position of its latest closing or restatement
    _recorded_at_position: int
    _kept: AccordRepository  # the repository, with the aggregates kept current in its cache
    _current_read: int  # the log position read up to for other processes' events of those
    _own_positions: set[int]  # the positions this process recorded after it (Metrics._record)
    _own_lock: threading.Lock
    last_round: RoundStats

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, now: datetime | None = None) -> int:
        """Bring every objective's evaluations up to date as of `now` (the service's clock):
        running values of open windows, closing of ended ones, restatements of closed ones
        that late signals changed, breaches, warnings and burn-rate alerts. Returns how many
        window evaluations changed. Evaluation never reads the wall clock."""
        now = now or self.clock.now()
        with self._lock:
            self._refresh_current()
            self._refresh_signals()
            self._refresh_recorded()  # the windows closed (by any process) are known closed
            changed_since, self._changed = self._changed, {}
            changed_lists, self._changed_lists = self._changed_lists, {}
            signals_position = self._signals_position  # every signal up to here is in changed_since
            self._round_kept = False
            for entry in self._services.values():
                entry.begin_round()
            position = self._refresh_views()
            views_changed, self._views_touched = self._views_touched, set()
            reach = dict(self._view_reach)  # what the view events since the last round reach
            self._reach_kept = set()
            calendars = self._refresh_calendars()
            self._refresh_services()  # every service a signal changed is known with its provider
            # A settled agreement (see Settled) would find nothing to judge: skip it, unloaded;
            # so is one whose watch (see Watch) says nothing it depends on changed. Only those
            # something changed for are asked (WatchIndex), in the order first seen.
            settled, watches, providers = self._settled, self._watches, self._providers
            candidates = self._watch_index.candidates(
                now, changed_since, providers, calendars, self._services, views_changed
            )
            rank = self._view_rank
            ids = [
                i
                for i in sorted((c for c in candidates if c in rank), key=rank.__getitem__)
                if (i not in settled or not settled[i].holds(now, changed_since, self._view_changed, providers))
                and (
                    i not in watches
                    or not watches[i].quiet(
                        now, changed_since, self._view_changed, calendars, self._services, providers
                    )
                )
            ]
            skipped = len(self._view_changed) - len(ids)
        self._round_windows = 0
        shared = _Shared()
        changed = judged = 0
        pending: list[_Judged] = []  # judged, their evaluations not saved yet
        waiting = 0  # the window evaluations they hold

        def isolate(view: Any, e: Exception) -> None:  # this agreement: the others are still judged
            self._watch(UUID(str(view.id)), None)
            self._reach_kept |= self._depends_on(view)
            self._failed(view.agreement_id, "", e)
            self._keep_changes(self._services_kept(view, now, changed_since), changed_since, changed_lists)  # next pass

        def flush() -> int:
            """Save the pending agreements' evaluations in one transaction (one commit, not one
            an agreement); saved, each is known judged. A failed save keeps none: each of them is
            judged again next round (its window evaluations were loaded as copies)."""
            nonlocal waiting
            batch, saved, waiting = list(pending), 0, 0
            pending.clear()
            if not batch:
                return 0
            try:
                self.save(*[agg for j in batch for agg in j.to_save])
            except Exception as e:
                for j in batch:
                    isolate(j.view, e)
                    # Loaded from the store at their next load: a save refused because another
                    # process stored a version first is not refused again from the same copy.
                    self._kept.current.difference_update(agg.id for agg in j.to_save)
                return 0
            for j in batch:
                j.saved()
                saved += len(j.to_save)
            return saved

        try:
            for uid in ids:
                # Read, never changed here (its events come from the consumer): the cached view itself.
                view: Any = self.repository.get(uid, deepcopy_from_cache=False)
                if not view.versions:  # a draft: nothing to judge until its view changes
                    self._watch(uid, Watch(position, calendars, frozenset({uid}), (), FAR_FUTURE, ()))
                    continue
                judged += 1
                try:
                    judgement = self._evaluate_agreement(
                        view, now, changed_since, position, calendars, shared, changed_lists
                    )
                except Exception as e:
                    isolate(view, e)
                    continue
                self._recovered(view.agreement_id, "")
                if judgement.to_save:
                    pending.append(judgement)
                    waiting += len(judgement.to_save)
                    if waiting >= SAVE_BATCH:
                        changed += flush()
                else:
                    judgement.saved()
            changed += flush()
        except BaseException:
            # A round that could not go on (its store failing under it): the changes it took are
            # given back, so that the next round looks again at the agreements it did not reach.
            with self._lock:
                self._views_touched |= views_changed
            self._keep_changes(list(changed_since), changed_since, changed_lists)
            raise
        with self._lock:
            for entry in self._services.values():
                entry.end_round(now - self.closed_kept, now)
            # Running evaluations only for windows known open, and those closed within closed_kept
            # before the round's instant: of those given one or closed since the last sweep (no
            # other window's can change), and the closed ones kept until then.
            kept_closed = self._running_closed
            for wid, until in list(kept_closed.items()):
                if now >= until:
                    del kept_closed[wid]
                    self._running_touched.add(wid)
            touched, self._running_touched = self._running_touched, set()
            for wid in touched:
                if (
                    wid in self._running and wid not in kept_closed
                    and (wid not in self._open_windows or wid in self._closed_windows)
                ):  # fmt: skip
                    del self._running[wid]
        self.last_round = RoundStats(judged, skipped + len(ids) - judged, self._round_windows, changed, shared.shared)
        if not self._round_kept:  # every signal it read was judged: a restart need not judge them again
            self._record_judged(signals_position)
        self._views_judged(reach, position)
        return changed

    def _refresh_current(self) -> None:
        """Read the log for the events of views, calendars and window evaluations stored since
        the last look: one whose cached version is behind (another process stored it) is no
        longer current, and its next load asks the store for what it missed. This process's
        own saves are the cached ones already (`Metrics._record`): when every position stored
        since is one of them — one process on the store, as ever but during a takeover — the log
        is not read at all (after a backfill, that is thousands of its own evaluations)."""
        repository = self._kept
        if repository.cache is None:
            return
        with self._lock:
            head = self.recorder.max_notification_id() or 0
            with self._own_lock:
                mine = sum(1 for at in self._own_positions if self._current_read < at <= head)
                # Nothing current (a standby that just took over: what the active stored since
                # this process started is not read) or every position since is this process's.
                # Or more stored since than is worth reading: nothing is current any more (each
                # is brought up to date by the store at its next load, as without `current`).
                foreign = head - self._current_read - mine
                if not repository.current or not foreign or foreign > CURRENT_SCAN_LIMIT:
                    if foreign > CURRENT_SCAN_LIMIT:
                        repository.current.clear()
                    self._current_read = head
                    self._own_positions = {at for at in self._own_positions if at > head}
                    return
            for notes, read_to in topic_pages(self.recorder, self._current_read, KEPT_TOPICS):
                for n in notes:
                    uid = UUID(str(n.originator_id))
                    if uid not in repository.current:
                        continue
                    try:
                        cached = repository.cache.get(uid)
                    except KeyError:
                        cached = None
                    if cached is None or cached.version < n.originator_version:
                        repository.current.discard(uid)
                self._current_read = read_to
            with self._own_lock:
                self._own_positions = {at for at in self._own_positions if at > self._current_read}

    def _views_judged(self, reach: dict[UUID, datetime], position: int) -> None:
        """What the view events up to `position` reach was judged: forget it (unless a failing
        agreement depends on the view, or an event since moved it) and, once nothing is left,
        record the position durably (a restart reads only the view events after it again)."""
        with self._lock:
            for uid, instant in reach.items():
                if uid not in self._reach_kept and self._view_reach.get(uid) == instant:
                    del self._view_reach[uid]
            if self._view_reach or position <= self._views_judged_position:
                return
        self._track(JUDGED_VIEWS, position)
        with self._lock:
            self._views_judged_position = max(self._views_judged_position, position)

    def _record_judged(self, signals_position: int) -> None:
        """Record durably (the store's tracking table, one row) that every signal up to
        `signals_position` was judged and its evaluations saved. Written after the round's
        saves, in a transaction of its own: a crash in between leaves the earlier position, and
        a restart judges those signals again (recording only what differs)."""
        with self._lock:
            if signals_position <= self._judged_position:
                return
        self._track(JUDGED, signals_position)
        with self._lock:
            self._judged_position = max(self._judged_position, signals_position)

    def _track(self, name: str, position: int) -> None:
        """One row of the store's tracking table: `name` judged up to `position`."""
        try:
            self._record(ProcessingEvent[Any](tracking=Tracking(name, position)))
        except IntegrityError:  # another process on the store recorded as far already
            pass

    def _watch(self, uid: UUID, watch: Watch | None) -> None:
        with self._lock:
            self._watch_index.put(uid, watch)  # `_watches` is its dict

    def _refresh_calendars(self) -> int:
        """The log position of the latest calendar event (any process's): a calendar redefined
        judges the open windows again (they are judged by its latest version)."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._calendars_read, CALENDAR_TOPICS):
                if notes:
                    self._calendars_position = notes[-1].id
                self._calendars_read = read_to
            return self._calendars_position

    def _services_kept(self, view: AgreementView, now: datetime, changed_since: dict[str, datetime]) -> list[str]:
        """The services whose changes an agreement that failed keeps pending: those it is
        measured on, or — when even those cannot be told — every service changed."""
        try:
            return self.measured_services(view, now)[0]
        except Exception:  # its terms cannot be read: keep every change rather than lose one
            return list(changed_since)

    def _keep_changes(
        self, services: Iterable[str], changed_since: dict[str, datetime], changed_lists: dict[str, set[str]]
    ) -> None:
        """Keep these services' signal changes (and the lists they were in) for the next pass
        (their windows were not judged)."""
        with self._lock:
            self._round_kept = True
            for sid in services:
                if sid in changed_since and (sid not in self._changed or changed_since[sid] < self._changed[sid]):
                    self._changed[sid] = changed_since[sid]
                if sid in changed_since:
                    self._changed_lists.setdefault(sid, set()).update(changed_lists.get(sid, INPUT_LISTS))

    def _failed(self, agreement_id: str, objective_id: str, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        with self._lock:
            new = self._failing.get((agreement_id, objective_id)) != reason
            self._failing[(agreement_id, objective_id)] = reason
        if new:
            log.error(
                "evaluation_isolated",
                alert=True,
                agreement_id=agreement_id,
                objective_id=objective_id or None,
                reason=reason,
            )

    def _recovered(self, agreement_id: str, objective_id: str) -> None:
        with self._lock:
            if self._failing.pop((agreement_id, objective_id), None) is None:
                return
        log.info("evaluation_recovered", agreement_id=agreement_id, objective_id=objective_id or None)

    def evaluation_failures(self) -> dict[tuple[str, str], str]:
        """The agreements (objective "" : the agreement as a whole) and objectives whose
        evaluation failed in the latest pass that tried them, with why; empty when all
        were judged. The health service `accord.evaluation` is NOT_SERVING while not empty."""
        with self._lock:
            return dict(self._failing)

    def _evaluate_agreement(
        self, view: AgreementView, now: datetime, changed_since: dict[str, datetime], position: int | None = None,
        calendars: int | None = None, shared: _Shared | None = None, changed_lists: dict[str, set[str]] | None = None,
    ) -> _Judged:  # fmt: skip
        """Judge the agreement's windows that need it: the window evaluations to save, and what
        to note once they are saved (`_Judged.saved`). `position`: the log position the view
        was read at or after; given, an ended agreement left with no open window is settled,
        and (with `calendars`, the calendars' position) the agreement is watched: the next
        rounds skip it until something it depends on changes (see Watch). `shared`: the round's
        signals and outcomes worked out for other agreements (see _Shared). `changed_lists`: the
        lists (`INPUT_LISTS`) the signals of each service in `changed_since` were in (a service
        missing: every list) — a window whose metric reads none of its services' lists changed is
        not judged for them."""
        uid = UUID(str(view.id))
        start = _parse(view.versions[0]["effective_from"])
        ends = end_of(view)
        end = min(ends or FAR_FUTURE, now)
        depends_on, services, providers, reads = self._scope_of(uid, view, now)
        # Unless the views or calendars changed since its last judgement (or it has none), only
        # the windows a change touches are judged, and those that close or open.
        watch = self._watches.get(uid)
        full = (
            watch is None
            or watch.calendars != calendars
            or any(self._view_changed.get(d, 0) > watch.position for d in depends_on)
        )
        if end <= start:
            if position is not None and calendars is not None:
                due = start if ends is None or start < ends else FAR_FUTURE
                self._watch(uid, Watch(position, calendars, depends_on, (), due, ()))
            return _Judged(view, [], lambda: None)
        latest, tz = self._latest_terms(view, now)
        # Read only if a window is judged, once a span and services — again once a batch was
        # recorded since (the signal position moved): every agreement judges from what was
        # recorded before its turn, as when each read its own (and a signal recorded after is a
        # change for the next round: `changed_since`).
        held: dict[InputsKey, tuple[int, SignalSet]] = shared.inputs if shared is not None else {}

        def signals(
            span: Interval, repeat: timedelta | None, of: tuple[str, ...], since: datetime | None = None,
            whole: bool = False,
        ) -> SignalSet:  # fmt: skip
            key = (span, repeat, of, since, whole)
            kept = held.get(key)
            at = self._signals_position  # before reading: a batch recorded meanwhile reads again
            if kept is None or kept[0] != at:
                found = self.signal_set(list(of), span=span, repeat=repeat, since=since, whole_settled=whole)
                kept = held[key] = (at, found)
            return kept[1]

        with self._lock:
            facts = [self._services[s] for s in services if s in self._services]
            # A version, suspension, resumption or end of it (or of a terms parent) learned since
            # the last round reaches the windows ending after the instant it takes effect — a
            # closed one too: metrics' agreements consumer may have been behind when it closed.
            reach = min((self._view_reach[d] for d in depends_on if d in self._view_reach), default=None)
        lists = changed_lists if changed_lists is not None else {}

        def earliest_change_for(objective_id: str) -> datetime | None:
            """The earliest instant a change reaches the objective's windows from: a view's, or a
            signal's in a list some version of the objective reads (its metric's, `METRIC_READS`)."""
            read = reads.get(objective_id)
            earliest = min(
                (
                    changed_since[s]
                    for s in services
                    if s in changed_since and (read is None or not read.isdisjoint(lists.get(s, INPUT_LISTS)))
                ),
                default=None,
            )
            if reach is not None:
                earliest = reach if earliest is None else min(earliest, reach)
            return earliest

        to_save: list[Any] = []
        all_closed = True  # every window judged here is closed (those that need no judging are)
        windows_end = start
        failed = False
        due = self._next_effective(depends_on, now)
        if ends is not None and ends > now:
            due = min(due, ends)
        open_windows: list[OpenWindow] = []
        marks: list[tuple[UUID, bool]] = []
        objectives = latest.get("objectives") or []
        # Each objective's windows judged in step with the others' (`_in_step`): a round judging
        # months of history reads each month's inputs for all of them while it holds them.
        parts: list[tuple[list[Any], list[OpenWindow], list[tuple[UUID, bool]]]] = [([], [], []) for _ in objectives]
        outcomes = _in_step([
            self._objective_windows(
                view, objective, start, end, tz, signals, now,
                earliest_change_for(str(objective.get("objective_id") or "")), part[0], (full, facts, part[1], part[2]),
                shared,
            )
            for objective, part in zip(objectives, parts, strict=True)
        ])  # fmt: skip
        for objective, part, outcome in zip(objectives, parts, outcomes, strict=True):
            if isinstance(outcome, Exception):  # isolated to this objective: its windows wait for a fix
                self._failed(view.agreement_id, str(objective.get("objective_id") or ""), outcome)
                failed = True
                continue
            self._recovered(view.agreement_id, str(objective.get("objective_id") or ""))
            to_save.extend(part[0])
            open_windows.extend(part[1])
            marks.extend(part[2])
            windows_end = max(windows_end, outcome[0])
            all_closed = all_closed and outcome[1]
            due = min(due, outcome[2])
        if failed:  # windows of a failing objective were not judged: keep its services' changes
            self._keep_changes(services, changed_since, lists)
            with self._lock:
                self._reach_kept |= depends_on
        current = {str(o.get("objective_id") or "") for o in latest.get("objectives") or []}
        with self._lock:  # an objective no longer in the terms fails no more
            for key in [k for k in self._failing if k[0] == view.agreement_id and k[1] and k[1] not in current]:
                del self._failing[key]

        def saved() -> None:
            with self._lock:  # known closed or open from now on (saved: a failure keeps none)
                for wid, closed in marks:
                    (self._closed_windows if closed else self._open_windows).add(wid)
                    if closed:
                        self._open_windows.discard(wid)
                        self._running_touched.add(wid)
            if position is not None and calendars is not None:
                # A failing objective is tried again every round (its failure stays reported until then).
                fresh = Watch(position, calendars, depends_on, tuple(services), due, tuple(open_windows), providers)
                self._watch(uid, None if failed else fresh)
            if position is not None and not failed and all_closed and ends is not None and now >= ends:
                settled = Settled(position, ends, windows_end, frozenset(services), depends_on, providers)
                with self._lock:
                    self._settled[uid] = settled

        return _Judged(view, to_save, saved)

    def _scope_of(self, uid: UUID, view: AgreementView, now: datetime) -> _Scope:
        """The views an agreement depends on (`_depends_on`) and every service a window of it may
        read, with the providers measured on their every service (`measured_services`: what its
        watch follows; each window reads only those of the version judging it), and the lists each
        of its objectives reads (`_objective_reads`), kept between
        rounds until a view or a service is learned (the views' or services' log position
        moves): working them out again for every agreement judged, walking its versions and
        parents, was a tenth of a round after a batch. They do not depend on `now`: the
        instants they are worked out at are the versions' own."""
        key = (self._views_position, self._services_position)
        held = self._scopes.get(uid)
        if held is not None and held[0] == key:
            return held[1]
        depends_on = self._depends_on(view)
        scope = (depends_on, *self.measured_services(view, now), self._objective_reads(depends_on))
        self._scopes[uid] = (key, scope)
        return scope

    def _objective_reads(self, view_ids: Iterable[UUID]) -> dict[str, frozenset[str] | None]:
        """Per objective id, the lists of formula inputs its windows read (`METRIC_READS`; None:
        every list): those of its metric in every version of these views (an agreement's and
        those its terms inherit from) — a window is judged by the version in force at its start,
        whose objective of that id may measure another metric than the latest."""
        out: dict[str, frozenset[str] | None] = {}
        for uid in view_ids:
            v: Any = self._read(uid)
            for version in getattr(v, "versions", []):
                for objective in version["terms"].get("objectives") or []:
                    oid = str(objective.get("objective_id") or "")
                    read = METRIC_READS.get(str(objective.get("metric") or ""))
                    held = out.get(oid, frozenset())
                    out[oid] = None if read is None or held is None else held | read
        return out

    def _objective_windows(
        self, view: AgreementView, objective: dict[str, Any], start: datetime, end: datetime, tz: str,
        signals: Callable[[Interval, timedelta | None, tuple[str, ...], datetime | None, bool], SignalSet],
        now: datetime,
        earliest_change: datetime | None, to_save: list[Any],
        watching: tuple[bool, list[ServiceSignals], list[OpenWindow], list[tuple[UUID, bool]]] | None = None,
        shared: _Shared | None = None,
    ) -> Generator[datetime, None, tuple[datetime, bool, datetime]]:  # fmt: skip
        """Judge one objective's windows that need it (adding changed ones to `to_save`), each
        from `signals(span, repeat, services, since, whole)` of its version's services, yielding
        each judged window's end; returns the end of
        its last window, whether every window judged is closed, and the first instant one of its
        windows closes or a new one opens. `watching` (whether every
        open window must be judged, the services' signal facts, a list the open windows are
        added to, and one each judged window is added to with whether it is closed, to be
        marked so once saved): given, an open window nothing changed for is left as judged."""
        windows_end, all_closed, due = start, True, FAR_FUTURE
        pending: list[Any] = []
        ends = end_of(view)
        suspended = suspensions(view)
        full, facts, open_windows, marks = watching if watching is not None else (True, [], [], [])
        judged: list[tuple[UUID, bool]] = []
        metric = str(objective.get("metric") or "")
        look_back = None
        listed = self._window_list(view.agreement_id, objective, Interval(start, max(end, start + _TICK)), tz)
        # The windows before `first` are known closed and no change reaches them: not even listed again.
        first = listed.first(earliest_change, self._closed_windows)
        for window in reversed(listed.windows[:first]):
            if not Interval(max(window.start, start), min(window.end, ends or window.end)).empty:
                windows_end = max(windows_end, window.end)
                break
        for window, wid in zip(listed.windows[first:], listed.ids[first:], strict=True):
            measured = Interval(max(window.start, start), min(window.end, ends or window.end))
            if measured.empty:
                continue
            windows_end = max(windows_end, window.end)
            touched = earliest_change is not None and earliest_change < window.end
            if wid in self._closed_windows and not touched:
                continue  # closed, and no change reaches it: not even loaded
            if measured.end > now:
                due = min(due, measured.end)
                if metric in BUDGETED and look_back is None:
                    look_back = max(p.long for p in reliability.burn_windows(window.duration))
                spec = OpenWindow(metric, look_back if metric in BUDGETED else None)
                known = not (full or touched or wid not in self._open_windows)
                if known and not spec.time_sensitive(now, facts):
                    open_windows.append(spec)
                    all_closed = False
                    continue  # open, and nothing it depends on changed: left as judged
                # Time changes only its burn rates: its evaluation is the one recorded.
                rates_only = known and not spec.time_sensitive(now, facts, burn_rates=False)
            else:
                rates_only = False
            agg: Any = self._get_or(
                wid,
                lambda o=objective, w=window: WindowEvaluation(
                    view.agreement_id, o["objective_id"], w.start.isoformat(), w.end.isoformat()
                ),
            )
            needs = not agg.closed or touched
            if not needs:
                self._closed_windows.add(wid)
                self._running_touched.add(wid)
                continue
            version, window_services = self._judging_version(view, measured.start)
            v_objective = next(
                (o for o in version["terms"].get("objectives") or [] if o["objective_id"] == objective["objective_id"]),
                None,
            )
            if v_objective is None:
                continue  # the objective did not exist in the version judging this window
            # What the window reads: its signals, and an open one's burn rates those of the look-backs
            # ending now (first-contact resolution: the calls from its repeat window before its
            # start, and the contacts chained to them before, which tell first contacts from repeats).
            # An open one, judged whole or its burn rates alone, reads the same span every round —
            # from its longest look-back before its start to its end: a superset of both, which the
            # formulas and `_recent` filter again — so the selection kept from the last round
            # serves (`ServiceSignals.select`: only the ids changed since are read). Before its start
            # only the lists the burn rates read (outages, request counts); the calls from its start.
            # A window closing in this round reads that span too: its kept selection, whose running
            # evaluation gives its closing one (`_judge_window`); so does one closed within
            # closed_kept that kept its running evaluation (late signals restate it from there).
            # Any other closed one (a restatement) reads its own.
            # A window recorded with a formula that digests every item passed (tickets, tasks,
            # incidents, calls: `_READ_WHOLE`) reads them whole.
            whole = bool(agg.closed) and recorded_formula(agg.latest) in _READ_WHOLE
            since = None
            if agg.closed and (whole or wid not in self._running):
                span = window
            else:
                span, since = Interval(window.start - _look_back(window), window.end), window.start
            if metric == "METRIC_FOLLOW_UP_DEPTH":  # a lead is decided its days after its hand-off
                days = depth_days(v_objective.get("parameters") or {})
                span = Interval(span.start - timedelta(days=days), span.end)
            repeat = repeat_window(v_objective.get("parameters") or {}) if metric == FCR else None
            inputs_key = (span, repeat, tuple(window_services), since, whole)
            # Inputs this round released (`_hold_closed`) and no batch recorded since: read again
            # only when the window's outcome is not another agreement's already (`_judge_window`).
            read_at = shared.released.get(inputs_key) if shared is not None else None
            inputs: SignalSet | Callable[[], SignalSet]
            if read_at is not None and read_at == self._signals_position and not rates_only:
                inputs = functools.partial(signals, *inputs_key)
            else:
                inputs = signals(*inputs_key)
                read_at = shared.inputs[inputs_key][0] if shared is not None else None
            # The outcome's key names the inputs as read (their key and signal position).
            at = (shared, (*inputs_key, read_at)) if shared is not None else None
            if rates_only and not agg.closed:
                assert isinstance(inputs, SignalSet)
                self._judge_burn_rates(agg, v_objective, measured, window, inputs, now, tz, suspended, at)
            else:
                self._judge_window(
                    agg, v_objective, version["version"], measured, window, inputs, now, tz, suspended, at
                )
            if agg.closed and measured.end <= now - self.closed_kept:
                # Nothing keeps its running evaluation or its inputs after this round (see
                # `end_round`, and the sweep at the round's end): released now, not at the end —
                # a round judging months of history held every one of them until then.
                with self._lock:
                    if wid in self._running_closed and self._running_closed[wid] <= now:
                        del self._running_closed[wid]
                        self._running.pop(wid, None)
                if shared is not None and span.end <= now - self.closed_kept:
                    self._hold_closed(shared, inputs_key)
            self._round_windows += 1
            if agg.pending_events:
                pending.append(agg)
            all_closed = all_closed and bool(agg.closed)
            judged.append((wid, bool(agg.closed)))
            if not agg.closed:
                open_windows.append(OpenWindow(metric, look_back if metric in BUDGETED else None))
            yield window.end
        to_save.extend(pending)  # only once every window of the objective was judged
        marks.extend(judged)
        if windows_end > now:
            due = min(due, windows_end)
        elif windows_end == now:  # the next window opens just after now
            due = now
        return windows_end, all_closed, due

    def _hold_closed(self, shared: _Shared, key: InputsKey) -> None:
        """The inputs of a closed window just judged, held by the round with those of the closed
        windows it judged before while they fit its budget (`closed_held`): once over it, the
        oldest are released — from the round's inputs and from the services' selections — and
        read again if a window needs them later in the round, unless its outcome is another
        agreement's already (`_Shared.released`). The window just judged is held whatever its size."""
        held = shared.inputs.get(key)
        if held is None:  # not read again (its outcome was shared), or released already
            return
        if key in shared.closed:
            shared.closed[key] = shared.closed.pop(key)  # the newest now
        else:
            size = sum(len(getattr(held[1], name)) for name in INPUT_LISTS)
            shared.closed[key] = size
            shared.closed_inputs += size
        while shared.closed_inputs > self.closed_held and len(shared.closed) > 1:
            oldest = next(iter(shared.closed))
            shared.closed_inputs -= shared.closed.pop(oldest)
            shared.released[oldest] = shared.inputs.pop(oldest)[0]
            with self._lock:
                for sid in oldest[2]:
                    entry = self._services.get(sid)
                    if entry is not None:
                        entry.release(oldest[0])

    def _window_list(self, agreement_id: str, objective: dict[str, Any], span: Interval, tz: str) -> WindowList:
        """An objective's windows over `span` with their ids, kept between rounds (see WindowList):
        listed again only when the span's end passes into the next period (a window, or a day
        for rolling windows) or the objective's window, start or time zone change. When a later
        period opens for the same windows, only the periods after those kept are listed (their
        ids hashed) and added to the kept ones: a daily window's list of ten years, listed anew
        each day, was ≈ 3,650 windows and ids a day (services/metrics/README.md, "A round's cost
        with years of history")."""
        objective_id = str(objective["objective_id"])
        kind, days = _window_kind(objective)
        spec = (kind, days, span.start, tz)
        with self._lock:
            kept = self._window_lists.get((agreement_id, objective_id))
        if kept is not None and kept.spec == spec and kept.last.start < span.end <= kept.last.end:
            return kept
        # The kept windows the new list begins with (the same windows from the same start, a later
        # period now): only the periods after them are listed; else every one over the span.
        before = kept if kept is not None and kept.spec == spec and kept.last.end < span.end and kept.windows else None
        windows: list[Interval] = []
        last = Interval(span.start, span.start)
        periods = span if before is None else Interval(before.last.end, span.end)
        for period in calendar_windows("DAY" if kind == "ROLLING" else kind, periods, tz):
            windows.append(period if days is None else Interval(period.end - timedelta(days=days), period.end))
            last = period
        ids = [WindowEvaluation.create_id(agreement_id, objective_id, w.start.isoformat()) for w in windows]
        ends = [w.end for w in windows]
        if before is not None:  # a new list (a round may hold the kept one): the kept then the new
            windows, ids, ends = before.windows + windows, before.ids + ids, before.ends + ends
        listed = WindowList(spec, last, windows, ids, ends)
        if kept is not None and kept.spec == spec:  # the same windows from the same start: a prefix of these
            listed.closed = min(kept.closed, len(windows))
        with self._lock:
            self._window_lists[(agreement_id, objective_id)] = listed
        return listed

    def _next_effective(self, view_ids: Iterable[UUID], now: datetime) -> datetime:
        """The first instant after `now` a version of these views takes effect (FAR_FUTURE if
        none): the terms in force, and so an agreement's objectives, may change then."""
        due = FAR_FUTURE
        for uid in view_ids:
            v: Any = self._read(uid)
            for version in getattr(v, "versions", []):
                at = _parse(version["effective_from"])
                if now < at < due:
                    due = at
        return due

    def scope(self, view: AgreementView, now: datetime) -> tuple[dict[str, Any], str, list[str]]:
        """An agreement's latest effective terms (as in force at `now`, or when it ended), its
        time zone, and every service whose signals a window of it may be judged on
        (`measured_services`; each window reads its own version's, `window_services`)."""
        latest, tz = self._latest_terms(view, now)
        return latest, tz, self.measured_services(view, now)[0]

    def _latest_terms(self, view: AgreementView, now: datetime) -> tuple[dict[str, Any], str]:
        """An agreement's latest effective terms, as in force at `now` or when it ended, and
        their time zone."""
        end = min(end_of(view) or FAR_FUTURE, now)
        latest = self.effective_terms(view.versions[-1]["terms"], end)
        return latest, latest.get("time_zone") or "UTC"

    def _judgement(
        self, agreement_id: str, objective: dict[str, Any], version: int, measured: Interval, window: Interval,
        signals: SignalSet, as_of: datetime, tz: str, calendar: tuple[str, int] | None = None,
        suspended: list[Interval] | None = None, formula: tuple[str, int] | None = None,
        running: Running | None = None,
    ) -> tuple[dict[str, Any], Calendar, list[Interval]]:  # fmt: skip
        """One objective over one window as recorded in events, with the calendar (the
        `calendar` (id, version) when given and held, else the latest) and exclusions it was
        judged with: what evaluation, recomputation and what-if share. `formula`: the (id,
        version) the window was recorded with, computed by that version while it is kept. `running`:
        an open window's running evaluation (running.py): the inputs appended since its last round
        folded in, the same evaluation."""
        cal = self._calendar_for(objective, calendar)
        exclusions, paused = _exclusions(objective, signals, measured, suspended)
        evaluation = judge(objective, measured, cal, exclusions, signals, as_of, tz, version, window, formula, running)
        if paused and not subtract([measured], paused):
            # A window suspended throughout is not judged: NO_DATA whatever the no-data policy.
            evaluation.update(status=NO_DATA, value="", undefined="suspended throughout", detail={"suspended": "true"})
            evaluation.pop("budget_consumed", None)
            evaluation.pop("budget_remaining", None)
        evaluation["agreement_id"], evaluation["objective_id"] = agreement_id, objective["objective_id"]
        evaluation["window_start"], evaluation["window_end"] = window.start.isoformat(), window.end.isoformat()
        evaluation["calendar_id"], evaluation["calendar_version"] = cal.calendar_id, cal.version
        return evaluation, cal, exclusions

    def _judge_window(
        self, agg: Any, objective: dict[str, Any], version: int, measured: Interval, window: Interval,
        signals: SignalSet | Callable[[], SignalSet], now: datetime, tz: str, suspended: list[Interval] | None = None,
        shared: tuple[_Shared, tuple[Any, ...]] | None = None,
    ) -> None:  # fmt: skip
        """Judge one window from `signals` (read by `shared`'s inputs key, when given: an outcome
        another agreement's window worked out from the same in this round is taken, see _Shared)
        and record what changed on `agg`. `signals` may be how to read them, called only when
        the outcome is not taken (inputs the round released: `_hold_closed`)."""
        # A closed window is judged as of its end, whenever that happens: the same inputs give
        # the same digest at closing, at a restatement and at an auditor's recomputation. Its
        # end is the measured one: a window the agreement's end cuts closes then.
        as_of = now if now < measured.end else measured.end
        # A closed window keeps the calendar version it closed with: a late signal restates it
        # from its signals, never from a calendar redefined since (history is never re-judged).
        # So does the formula version (history is never re-judged by a later version).
        pinned = recorded_calendar(agg.latest) if agg.closed else None
        formula = recorded_formula(agg.latest) if agg.closed else None
        # An open window keeps its running evaluation between rounds (running.py), and closes from
        # it — as of its end, the inputs appended since its last round folded in: the formula over
        # the whole window each month's end was seconds at a contact centre's density — and keeps
        # it `closed_kept` after its end, so that late signals restate it from there too (when the
        # version it was recorded with is the running form's): services/metrics/README.md, "A
        # window closes from its running evaluation". Any other closed one (a restatement) is
        # judged from all its inputs by the version it was recorded with.
        running: Running | None = None
        with self._lock:
            if not agg.closed:
                running = self._running.setdefault(agg.id, Running())
                self._running_touched.add(agg.id)
            else:
                running = self._running.get(agg.id) if agg.id in self._running_closed else None
                if running is None:
                    self._running.pop(agg.id, None)
            if running is not None and now >= measured.end:
                self._running_closed.setdefault(agg.id, measured.end + self.closed_kept)
        key: tuple[Any, ...] | None = None
        if shared is not None:
            key = (
                self._objective_keys(objective), measured, window, tz, pinned, formula, tuple(suspended or ()),
                shared[1], as_of,
            )  # fmt: skip
        kept = shared[0].outcomes.get(key) if shared is not None and key is not None else None
        if kept is not None and shared is not None:
            outcome, calendar, exclusions, rates = kept
            # The agreement's own labels on a copy (nested parts too: nothing is shared between windows).
            evaluation = {
                **outcome, "parameters": dict(outcome["parameters"]), "detail": dict(outcome["detail"]),
                "agreement_id": agg.agreement_id, "objective_id": objective["objective_id"], "version": version,
            }  # fmt: skip
            shared[0].shared += 1
        else:
            if not isinstance(signals, SignalSet):
                signals = signals()
            evaluation, calendar, exclusions = self._judgement(
                agg.agreement_id, objective, version, measured, window, signals, as_of, tz, pinned, suspended,
                formula, running,
            )  # fmt: skip
            rates = {}
            if "budget_consumed" in evaluation and not evaluation["closed"]:
                rates = _burn_rates(running, objective, calendar, exclusions, signals, now, window, tz)
                # The burn rate over the fastest pair's long window (1 h for a 30-day window),
                # as of this evaluation: carried with it, not a reason on its own for a new event.
                evaluation["burn_rate"] = str(rates[reliability.burn_windows(window.duration)[0].long])
            if shared is not None and key is not None:
                shared[0].outcomes[key] = (
                    {**evaluation, "parameters": dict(evaluation["parameters"]), "detail": dict(evaluation["detail"])},
                    calendar, exclusions, rates,
                )  # fmt: skip
        # A closing or restatement says how far metrics had applied the agreements stream: read
        # now, after every view the judgement read was loaded, it bounds what the judgement knew
        # (billing waits until it has applied as far, WindowEvaluation._closed).
        position = self.tracked_position(AGREEMENTS_SOURCE) if evaluation["closed"] else 0
        agg.update(evaluation, position)
        if evaluation["closed"]:
            agg.close(evaluation, position)
        if evaluation["status"] == BREACHED:
            agg.breach("", evaluation["value"], evaluation["target"], certain_before_close=not evaluation["closed"])
        for subject in late_subjects(evaluation):
            agg.breach(
                subject, evaluation["value"], evaluation["target"], certain_before_close=not evaluation["closed"]
            )
        if "budget_consumed" in evaluation:
            levels = [Decimal(x) for x in objective.get("warning_levels") or ["50", "75", "90"]]
            for level in reliability.warning_levels_crossed(Decimal(evaluation["budget_consumed"]), levels):
                agg.warn(str(level), evaluation["budget_consumed"])
            if rates:
                _burn_alerts(agg, rates, window)
        if evaluation["closed"]:
            # An alert still firing when its window closes is resolved with it.
            for name in agg.burn_firing:
                agg.resolve_burn_alert(name, "window_closed")

    def _judge_burn_rates(
        self, agg: Any, objective: dict[str, Any], measured: Interval, window: Interval, signals: SignalSet,
        now: datetime, tz: str, suspended: list[Interval] | None = None,
        shared: tuple[_Shared, tuple[Any, ...]] | None = None,
    ) -> None:  # fmt: skip
        """An open window whose evaluation time alone cannot change (see OpenWindow): only its
        burn rates as of `now` and the alerts they raise, exactly as `_judge_window` would —
        the calendar and exclusions of its judgement, the budget of its recorded evaluation.
        The burn rates another agreement's window worked out in the round are taken when the key
        (as `_judge_window`'s) is the same."""
        if "budget_consumed" not in agg.current:
            return
        key: tuple[Any, ...] | None = None
        if shared is not None:
            key = (self._objective_keys(objective), measured, window, tz, tuple(suspended or ()), shared[1], now)
            kept = shared[0].rates.get(key)
            if kept is not None:
                shared[0].shared += 1
                _burn_alerts(agg, kept, window)
                return
        calendar = self._calendar_for(objective, None)
        exclusions, _ = _exclusions(objective, signals, measured, suspended)
        with self._lock:  # its look-backs are kept with its running evaluation (running.py, burning.py)
            running = self._running.setdefault(agg.id, Running())
            self._running_touched.add(agg.id)
        rates = _burn_rates(running, objective, calendar, exclusions, signals, now, window, tz)
        if shared is not None and key is not None:
            shared[0].rates[key] = rates
        _burn_alerts(agg, rates, window)

    # -- queries ---------------------------------------------------------------------------------------------------
    def window_ids(self, agreement_id: str) -> list[UUID]:
        """The ids of every window evaluation recorded for an agreement (in no order)."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._windows_position, [WINDOW_TOPIC]):
                for n in notes:
                    opened: Any = self.mapper.to_domain_event(n)
                    self._windows[opened.agreement_id].add(str(n.originator_id))
                self._windows_position = read_to
            return [UUID(i) for i in self._windows.get(agreement_id, ())]

    def window_spans(self, window_ids: Iterable[UUID]) -> dict[UUID, tuple[str, datetime, datetime]]:
        """Each window's objective, start and end, read from the event that opened it (the
        window itself not loaded)."""
        out: dict[UUID, tuple[str, datetime, datetime]] = {}
        for i in window_ids:
            for e in self.repository.event_store.get(i, lte=1):
                opened: Any = e
                out[i] = (opened.objective_id, _parse(opened.window_start), _parse(opened.window_end))
        return out

    def window_evaluations(self, agreement_id: str) -> list[Any]:
        """Every window evaluation of an agreement, oldest window first."""
        rows: list[Any] = [self.repository.get(i) for i in self.window_ids(agreement_id)]
        return sorted(rows, key=lambda w: (w.objective_id, w.window_start))

    def compliance(
        self, caller: Principal | None, agreement_id: str, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Each objective's current window (the one containing now, or the last one)."""
        now = now or self.clock.now()
        view = self.agreement_view(caller, agreement_id)
        windows = self.window_evaluations(agreement_id)
        out = []
        for objective in view.versions[-1]["terms"].get("objectives") or []:
            mine = [w for w in windows if w.objective_id == objective["objective_id"]]
            current = next((w for w in mine if _parse(w.window_start) <= now < _parse(w.window_end)), None)
            if current is None and mine:
                current = mine[-1]
            out.append({"objective": objective, "current": current.latest if current else None})
        return out

    def breaches(self, caller: Principal | None, agreement_id: str, objective_id: str = "") -> list[dict[str, Any]]:
        self.agreement_view(caller, agreement_id)
        out = []
        for w in self.window_evaluations(agreement_id):
            if objective_id and w.objective_id != objective_id:
                continue
            for b in w.breach_records:
                out.append(
                    {"agreement_id": agreement_id, "objective_id": w.objective_id, "window_start": w.window_start,
                     "window_end": w.window_end, **b}
                )  # fmt: skip
        return out

    def window(self, caller: Principal | None, agreement_id: str, objective_id: str, window_start: str) -> Any:
        self.agreement_view(caller, agreement_id)
        try:
            start = _parse(window_start).isoformat()
        except ValueError:
            raise NotFoundError(f"window_start {window_start!r} is not an RFC 3339 instant") from None
        agg: Any = self._get_or(WindowEvaluation.create_id(agreement_id, objective_id, start), lambda: None)
        if agg is None:
            raise NotFoundError(f"no evaluation of objective {objective_id!r} for the window starting {window_start}")
        return agg

    def window_signals(
        self, caller: Principal | None, agreement_id: str, objective_id: str, window_start: str, limit: int = 1000
    ) -> tuple[Any, list[Any], bool]:
        """One recorded window, the outage and maintenance signals (latest contents) of the
        services it is judged on that overlap it, oldest start first (at most `limit`), and
        whether there were more: what explains the window's evaluation (ListWindowSignals)."""
        agg = self.window(caller, agreement_id, objective_id, window_start)
        view = self.agreement_view(caller, agreement_id)
        start, end = _parse(agg.window_start), _parse(agg.window_end)
        found: list[tuple[datetime, str, Any]] = []
        # The services the window is judged on: its version's (docs/domain.md §2 "Effective dating").
        services = self.window_services(view, start)
        with self._lock:
            self._refresh_signals()
            for service_id in services:
                entry = self._services.get(service_id)
                for s in entry.overlapping(Interval(start, end)) if entry is not None else ():
                    kind = s.WhichOneof("kind")
                    if kind == "outage":
                        iv = sig.outage_interval(s, until=FAR_FUTURE)
                    elif kind == "maintenance":
                        iv = sig.maintenance_interval(s)
                    else:
                        continue
                    if iv.start < end and (iv.end > start or (iv.end == iv.start and iv.start >= start)):
                        found.append((iv.start, s.signal_id, s))
        found.sort(key=lambda x: (x[0], x[1]))
        return agg, [x[2] for x in found[:limit]], len(found) > limit

    def recompute(self, agreement_id: str, objective_id: str, window_start: str) -> dict[str, Any]:
        """Recompute a recorded window from the raw signals in the store and the terms in
        force (auditors): equal to what was recorded unless something was altered. Returns
        recorded, recomputed ({} when the objective is missing), matches and differences."""
        view = self.agreement_view(None, agreement_id)
        agg = self.window(None, agreement_id, objective_id, window_start)
        now = self.clock.now()
        # Only the signals that may reach the window are held (the pass reads every batch): a
        # year's store held whole for one window's check was history's memory, not the window's.
        # First-contact resolution's calls whole: its chains reach back without bound.
        formula = recorded_formula(agg.latest)
        window = Interval(_parse(agg.window_start), _parse(agg.window_end))
        fcr = formula is None or formula[0] == FCR_V1[0]
        signals = self.signal_sources(
            self.measured_services(view, now)[0], from_store=True, reach=reaching(window, all_calls=fcr)
        )
        check = self.check_window(view, agg, signals, now)
        return {"recorded": check.recorded, "recomputed": check.recomputed or {}, "matches": check.matches,
                "differences": check.differences}  # fmt: skip

    def rejudge(
        self, view: AgreementView, objective_id: str, window: Interval, signals: Mapping[str, SignalSet],
        now: datetime,
        terms: dict[str, Any] | None = None, as_of: datetime | None = None, calendar: tuple[str, int] | None = None,
        formula: tuple[str, int] | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """One objective over one window judged again from `signals` (per service; those of every
        service `rejudged_services` names, or more): by the version in force at the window's
        start, or by `terms` (a proposal: what-if, agreement version 0), each on its services.
        None when those terms have no such objective. A window ended by `now` is judged as of
        its measured end (the agreement's end, if that cuts it), as when it closed; an open one
        as of `now` (unless `as_of` says otherwise).
        `calendar`: the (id, version) the window was recorded with, used if the objective is
        judged by that calendar and metrics holds that version (else the latest); `formula`: the
        (id, version) of the formula it was recorded with, used while that version is kept."""
        measured = self._measured(view, window)
        if measured.empty:
            return None
        version, tz, services = self._rejudging(view, measured.start, now, terms)
        objective = next(
            (o for o in version["terms"].get("objectives") or [] if o.get("objective_id") == objective_id), None
        )
        if objective is None:
            return None
        if as_of is None:
            as_of = now if now < measured.end else measured.end
        evaluation, _, _ = self._judgement(
            view.agreement_id,
            objective,
            version["version"],
            measured,
            window,
            combined(signals, services),
            as_of,
            tz,
            calendar,
            suspensions(view),
            formula,
        )
        return evaluation

    def rejudged_services(
        self, view: AgreementView, window: Interval, now: datetime, terms: dict[str, Any] | None = None
    ) -> list[str]:
        """The services `rejudge` judges this window on: those of the version in force at its
        measured start, or (`terms`) of the proposal as in force then — naming none, every
        service of its provider (the agreement's, unless the proposal names another)."""
        measured = self._measured(view, window)
        return [] if measured.empty else self._rejudging(view, measured.start, now, terms)[2]

    def chained_repeat(
        self, view: AgreementView, objective_id: str, window: Interval
    ) -> tuple[timedelta, tuple[str, ...]] | None:  # fmt: skip
        """The repeat window a first-contact resolution window is judged with, and the services its
        version measures (one customer's contacts chain across them): a re-derivation reads its
        calls from its start less that window and walks the chains of contacts before back over
        those services (`SignalIndex.chain_anchors`). None when its version judges another metric,
        or is not in force in it."""
        measured = self._measured(view, window)
        if measured.empty:
            return None
        version, services = self._judging_version(view, measured.start)
        objective = next(
            (o for o in version["terms"].get("objectives") or [] if o.get("objective_id") == objective_id), None
        )
        if objective is None or objective.get("metric") != FCR or not services:
            return None
        return repeat_window(objective.get("parameters") or {}), tuple(services)

    def _measured(self, view: AgreementView, window: Interval) -> Interval:
        """The part of a window the agreement is in force (empty: none)."""
        start = _parse(view.versions[0]["effective_from"])
        return Interval(max(window.start, start), min(window.end, end_of(view) or window.end))

    def _rejudging(
        self, view: AgreementView, start: datetime, now: datetime, terms: dict[str, Any] | None
    ) -> tuple[dict[str, Any], str, list[str]]:
        """What judges a window whose measured part starts at `start` again: the version (its
        effective terms), time zone and services (see `rejudge`)."""
        latest, tz = self._latest_terms(view, now)
        if terms is None:
            version, services = self._judging_version(view, start)
            return version, tz, services
        effective = self.effective_terms(terms, start)
        parties = effective.get("parties") or latest.get("parties") or {}
        own = named_services(terms)
        services = sorted(own or self.services_covered({**effective, "parties": parties})[0])
        return {"version": 0, "terms": effective}, effective.get("time_zone") or tz, services

    def check_window(
        self, view: AgreementView, agg: Any, signals: Mapping[str, SignalSet], now: datetime
    ) -> WindowCheck:
        """A recorded window recomputed from `signals` (per service: those of its version's
        services, or more) and compared with its latest recorded
        evaluation: value, status, input digest and breaches. A breach once recorded is never
        withdrawn (a restatement shows the change), so the record should hold the breaches the
        recomputed evaluation implies plus those its earlier recorded evaluations implied."""
        recorded = agg.latest
        window = Interval(_parse(agg.window_start), _parse(agg.window_end))
        # A closed window was judged as of its end; an open one is judged as of now. Either is
        # judged by the calendar version its evaluation records, not the calendar's latest, and
        # by the formula version it records.
        as_of = min(window.end, end_of(view) or window.end) if recorded.get("closed") else None
        pinned = recorded_calendar(recorded)
        formula = recorded_formula(recorded)
        if formula == FCR_V1 and recorded.get("closed"):
            signals = self._calls_as_judged(agg.id, signals)
        fresh = self.rejudge(
            view, agg.objective_id, window, signals, now, as_of=as_of, calendar=pinned, formula=formula
        )
        held = set(agg.breaches)
        earlier = [agg.current, agg.closed, *(r[k] for r in agg.restatements for k in ("old", "new"))]
        expected = {s for e in earlier if e for s in breach_subjects(e)}
        if not held <= expected:
            # e.g. a breach certain while the window was open, on an outage whose reported end
            # later shortened it: look at every evaluation the window ever recorded.
            expected |= {s for e in self._recorded_evaluations(agg.id) for s in breach_subjects(e)}
        differences: list[str] = []
        if not self.calendar_held(*pinned):
            # Judged again by the calendar's latest definition instead: say so, never pass silently.
            differences.append(CALENDAR_UNAVAILABLE)
        if fresh is None:
            differences.append("objective")
        else:
            expected |= set(breach_subjects(fresh))
            differences += [f for f in ("value", "status", "input_digest") if fresh.get(f) != recorded.get(f)]
            if held != expected:
                differences.append("breaches")
        return WindowCheck(
            agreement_id=view.agreement_id,
            objective_id=agg.objective_id,
            window_start=agg.window_start,
            window_end=agg.window_end,
            recorded=recorded,
            recomputed=fresh,
            differences=differences,
            recorded_breaches=len(held),
            expected_breaches=len(expected),
        )

    def _calls_as_judged(self, window_id: UUID, signals: Mapping[str, SignalSet]) -> Mapping[str, SignalSet]:
        """`signals` (per service) with the calls as they stood when the window's latest
        evaluation was recorded: those stored up to the position of its closing (or latest
        restatement), each in its content then. contact.fcr v1 digests every call it is passed — a
        round passes the calls it knows — so calls recorded since (a later month's) would change
        its digest, not its value. A round judges under the lock that recording takes, so the
        calls stored before that event are exactly those it knew. Unchanged when the event is not
        found."""
        position = self._recorded_position(window_id)
        if position is None:
            return signals
        known = self.stored_signals(set(signals), through=position).sets
        return {sid: replace(s, calls=list(known[sid].calls) if sid in known else []) for sid, s in signals.items()}

    def _recorded_position(self, window_id: UUID) -> int | None:
        """The log position of the event that recorded a window's latest closed evaluation,
        from the index of closings and restatements (`_refresh_recorded`)."""
        self._refresh_recorded()
        with self._lock:
            return self._recorded_at.get(window_id)

    def _refresh_recorded(self) -> None:
        """Index the windows' closings and restatements stored since we last looked (by any
        process): each such window is known closed — a round passes over it, unloaded, unless a
        change reaches it — and the log position of its latest one is kept. A process that
        starts learns its closed windows here, in one read of the log, instead of loading every
        window of history in its first round to find it closed."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._recorded_at_position, RECORDING_TOPICS):
                for n in notes:
                    uid = UUID(str(n.originator_id))
                    self._recorded_at[uid] = n.id
                    self._closed_windows.add(uid)
                    self._running_touched.add(uid)
                self._recorded_at_position = read_to

    def _recorded_evaluations(self, window_id: UUID) -> list[dict[str, Any]]:
        """Every evaluation a window's events recorded: running, closing, restated (old and new)."""
        out: list[dict[str, Any]] = []
        for e in self.repository.event_store.get(window_id):
            d = e.__dict__
            out += [d[k] for k in ("evaluation", "old", "new") if isinstance(d.get(k), dict)]
        return out


def _in_step(
    judging: list[Generator[datetime, None, tuple[datetime, bool, datetime]]],
) -> list[tuple[datetime, bool, datetime] | Exception]:
    """Run each objective's judging (`Judging._objective_windows`) to its end, always going on
    with the one whose last judged window ended first (the first of them on a tie): the windows
    of one period are judged together, whatever the objective. Each one's outcome, in order, or
    the exception it raised (the others go on)."""
    outcomes: list[tuple[datetime, bool, datetime] | Exception | None] = [None] * len(judging)
    heap = [(datetime.min.replace(tzinfo=UTC), i) for i in range(len(judging))]
    while heap:
        _, i = heapq.heappop(heap)
        try:
            reached = next(judging[i])
        except StopIteration as done:
            outcomes[i] = done.value
            continue
        except Exception as e:
            outcomes[i] = e
            continue
        heapq.heappush(heap, (reached, i))
    return cast(list[tuple[datetime, bool, datetime] | Exception], outcomes)  # each one ran to its end


def _burn_alerts(agg: Any, rates: dict[timedelta, Decimal], window: Interval) -> None:
    """The burn-rate alerts of an open window as `rates` read: each pair whose condition holds
    fires (once while it holds), each firing pair whose condition no longer holds is resolved
    ("cleared", with the rates that cleared it) — for a fully judged window and for one whose
    burn rates alone were judged again alike."""
    fired = {burn_alert_name(p): p for p in reliability.burn_alerts(rates, window.duration)}
    for name, pair in fired.items():
        agg.burn_alert(name, str(pair.factor), str(rates[pair.long]), str(rates[pair.short]))
    if not agg.burn_firing:
        return
    pairs = {burn_alert_name(p): p for p in reliability.burn_windows(window.duration)}
    for name in agg.burn_firing:
        held = pairs.get(name)
        if name not in fired and held is not None:
            agg.resolve_burn_alert(name, "cleared", str(rates[held.long]), str(rates[held.short]))


def burn_alert_name(pair: reliability.BurnPair) -> str:
    """A burn-rate alert's name: its pair, e.g. "14.4x 1:00:00/0:05:00" (a 30-day window)."""
    return _burn_alert_name(str(pair.factor), pair.long, pair.short)


# Asked for each pair of every open window judged: the durations written out once a pair (a
# window length's four; a few dozen lengths at most). Keyed by the factor as written, not the
# pair: Decimal("14.4") and Decimal("14.40") are equal pairs with different names.
@lru_cache(maxsize=1024)
def _burn_alert_name(factor: str, long: timedelta, short: timedelta) -> str:
    return f"{factor}x {long}/{short}"


def recorded_calendar(evaluation: dict[str, Any]) -> tuple[str, int]:
    """The calendar (id, version) a recorded evaluation was judged with (version 0: none recorded)."""
    return evaluation.get("calendar_id") or "24x7", int(evaluation.get("calendar_version") or 0)


def recorded_formula(evaluation: dict[str, Any]) -> tuple[str, int] | None:
    """The (formula id, version) an evaluation was computed with; None when it names none."""
    if not evaluation or not evaluation.get("formula_id"):
        return None
    return str(evaluation["formula_id"]), int(evaluation.get("formula_version") or 0)


def breach_subjects(evaluation: dict[str, Any]) -> list[str]:
    """The breaches an evaluation implies: "" for the objective when BREACHED, and each
    late ticket or task it names."""
    return ([""] if evaluation.get("status") == BREACHED else []) + late_subjects(evaluation)


def _look_back(window: Interval) -> timedelta:
    """The longest burn-rate look-back of a window of `window`'s length."""
    return max(p.long for p in reliability.burn_windows(window.duration))


def _burn_rates(
    running: Running | None, objective: dict[str, Any], calendar: Calendar, exclusions: list[Interval],
    signals: SignalSet, now: datetime, window: Interval, tz: str,
) -> dict[timedelta, Decimal]:  # fmt: skip
    """An open window's burn rates as of `now` (`evaluation.burn_rates` over `signals`, the window's
    selection): the look-backs its running evaluation's `BurnIndex` can tell from the outages kept
    between rounds are read there (burning.py: the same values), the others computed by the
    formula over the signals that reach into the longest look-back (`_recent`)."""
    values: dict[timedelta, Decimal | None] | None = None
    lengths = burn_lengths(window.duration)
    if running is not None:
        span = Interval(window.start - _look_back(window), window.end)
        try:
            values = running.burns.values(
                objective, calendar, exclusions, signals.outages, signals.lineage, span, now, lengths, signals.edits
            )
        except Exception:  # unexpected (bad parameters are left to the formula): the formula computes them
            log.exception("burn_index_failed", objective=objective.get("id", ""))
            running.burns = BurnIndex()
            values = None
    if values is not None and len(values) == len(lengths):
        return burn_rates(objective, calendar, exclusions, SignalSet(), now, window.duration, tz, values)
    return burn_rates(objective, calendar, exclusions, _recent(signals, now, window), now, window.duration, tz, values)


def _recent(signals: SignalSet, now: datetime, window: Interval) -> SignalSet:
    """What the burn rates of a window of `window`'s length read as of `now`: the outages
    that end after, and the request counts that start at or after, the start of its longest
    look-back, in the order held — so each look-back's formula sees exactly the signals it
    would pick from all of them, without every look-back going through all of history."""
    since = now - max(p.long for p in reliability.burn_windows(window.duration))
    return SignalSet(
        outages=[o for o in signals.outages if o.end > since],
        requests=[r for r in signals.requests if r.start >= since],
    )


def _exclusions(
    objective: dict[str, Any], signals: SignalSet, measured: Interval, suspended: list[Interval] | None
) -> tuple[list[Interval], list[Interval]]:
    """A window's exclusions (declared, announced in time, suspended) and its suspended part."""
    notice = timedelta(hours=float((objective.get("parameters") or {}).get("maintenance_notice_hours") or 24))
    exclusions = exclusions_for(objective, signals, measured, notice)
    # Suspended time is excluded like a declared exclusion (see the README).
    paused = [iv for iv in suspended or [] if iv.intersect(measured)]
    if paused:
        exclusions = union([*exclusions, *paused])
    return exclusions, paused


def _window_kind(objective: dict[str, Any]) -> tuple[str, int | None]:
    """An objective's window kind (DAY … YEAR, or ROLLING) and, rolling, its length in days."""
    w = objective.get("window") or {}
    kind = (w.get("kind") or "WINDOW_KIND_MONTH").removeprefix("WINDOW_KIND_")
    return kind, int(w.get("rolling_days") or 30) if kind == "ROLLING" else None


def _windows(objective: dict[str, Any], span: Interval, time_zone: str) -> list[Interval]:
    """An objective's windows that overlap `span`, in order. A rolling window is judged at every
    local midnight: the N days before it."""
    kind, days = _window_kind(objective)
    if days is not None:
        return [Interval(day.end - timedelta(days=days), day.end) for day in calendar_windows("DAY", span, time_zone)]
    return list(calendar_windows(kind, span, time_zone))
