"""The metrics application: owns the metrics service's event store — the raw signals (one
event per recorded batch and service), the agreements and services learned from the
agreements stream, and every objective's evaluation per window with its breaches and
restatements; and the recomputation of a recorded window that audit builds on (audit.py).
`Metrics` is composed of its jobs: `SignalIndex` (signal_index.py), `AgreementViews`
(views.py) and `Judging` (judging.py)."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import Recording

from accord_kit.application import AccordApplication, AccordRepository
from accord_kit.clock import Clock
from accord_metrics.codec import codec
from accord_metrics.domain import AgreementView, CalendarView, WindowEvaluation
from accord_metrics.judging import (
    CALENDAR_UNAVAILABLE,
    CLOSED_HELD,
    CLOSED_KEPT,
    CLOSED_KEPT_SECONDS,
    DEFAULT_MAINTENANCE_NOTICE,
    JUDGED,
    JUDGED_VIEWS,
    WINDOW_TOPIC,
    Judging,
    ObjectiveKeys,
    RoundStats,
    Settled,
    Watch,
    WatchIndex,
    WindowCheck,
    WindowList,
    _windows,
    breach_subjects,
    recorded_calendar,
    recorded_formula,
)
from accord_metrics.running import Running
from accord_metrics.signal_index import (
    BATCH_TOPIC,
    CORRECTION_TOPIC,
    FAR_FUTURE,
    SIGNAL_TOPICS,
    Recorded,
    ServiceSignals,
    SignalIndex,
    StoredSignals,
    Told,
    changed_fields,
    combined,
    content_digest,
)
from accord_metrics.views import VIEW_EVENT_TOPICS, VIEW_TOPIC, AgreementViews, _parse, end_of, suspensions

# Names other modules, tests and tools import from here (audit.py, server.py, bench/, tests/).
__all__ = [
    "BATCH_TOPIC",
    "CALENDAR_UNAVAILABLE",
    "CORRECTION_TOPIC",
    "DEFAULT_MAINTENANCE_NOTICE",
    "FAR_FUTURE",
    "JUDGED",
    "SIGNAL_TOPICS",
    "VIEW_EVENT_TOPICS",
    "VIEW_TOPIC",
    "WINDOW_TOPIC",
    "Metrics",
    "Recorded",
    "RoundStats",
    "ServiceSignals",
    "Settled",
    "StoredSignals",
    "WindowCheck",
    "_parse",
    "_windows",
    "breach_subjects",
    "changed_fields",
    "combined",
    "content_digest",
    "end_of",
    "recorded_calendar",
    "recorded_formula",
    "suspensions",
]


class Metrics(Judging, SignalIndex, AgreementViews, AccordApplication):
    """Raw signals, the agreements and calendars they are judged by (from the agreements
    stream), and every objective's evaluation per window with its breaches."""

    name = "Metrics"
    service = "metrics"
    # A window's running evaluation changes often while it is open: load it from a snapshot.
    snapshotting_intervals = {WindowEvaluation: 50}
    # The library's aggregate cache: a round loads each agreement's view and its open windows'
    # evaluations from memory instead of decoding them from the store each round. Least recently
    # used beyond the size (METRICS_AGGREGATE_CACHE). What is changed is loaded as a copy (a
    # round that fails half-way leaves nothing it changed behind, and a query never sees changes
    # not saved yet; `WindowEvaluation.__deepcopy__`); what a round only reads, the views and
    # calendars, as the cached object itself (`AgreementViews._read`). The views, calendars and
    # window evaluations this process saves (its consumer, its rounds) are put in the cache as
    # saved and kept current (`AccordRepository.current`): loaded without asking the store for
    # events stored since. Each round first reads the log for their events stored since its last
    # look and takes out of `current` any whose cached version is behind (another process stored
    # it): those are brought up to date by the store at their next load (`_refresh_current`).
    env = {"AGGREGATE_CACHE_MAXSIZE": "10000"}
    KEPT_CURRENT = (AgreementView, CalendarView, WindowEvaluation)
    # Signal batches name a service, never an agreement: AgreementHistory skips them undecoded
    # (an evaluation carries the digest and counts of the signals that decided its window).
    history_skip_topics = frozenset({BATCH_TOPIC})

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self._lock = threading.RLock()
        self._providers: dict[str, str] = {}  # service → provider (views.AgreementViews._refresh_services)
        self._services_position = 0  # the latest service event's log position
        self._services_read = 0  # the log position service events were read up to
        self._services: dict[str, ServiceSignals] = {}
        self.recording_process = None  # where batches are recorded when not here (`record_in`)
        self._told: dict[int, Told] = {}  # what it told of batches it stored, by their log positions
        self._told_rows = 0
        self._told_lock = threading.Lock()
        self._changed: dict[str, datetime] = {}  # service → earliest instant of signals not yet evaluated
        self._changed_lists: dict[str, set[str]] = {}  # service → the lists of those signals
        self._windows: dict[str, set[str]] = defaultdict(set)  # agreement id → window aggregate ids
        self._windows_position = 0
        self._views_position = 0  # the latest agreement view event's log position (any process's)
        self._views_read = 0  # the log position view events were read up to
        self._view_changed: dict[UUID, int] = {}  # view id → position of its latest event, in first-seen order
        self._view_rank: dict[UUID, int] = {}  # view id → its place in _view_changed
        self._views_touched: set[UUID] = set()  # views read since the last round took them
        self._settled: dict[UUID, Settled] = {}  # ended agreements with nothing to evaluate (see Settled)
        # (agreement id, objective id or "" for the whole agreement) → why its evaluation failed
        # in the latest pass that tried it: isolated there, every other agreement goes on.
        self._failing: dict[tuple[str, str], str] = {}
        self._fcr_services: tuple[tuple[int, int], dict[str, str]] | None = None  # ((views, services positions), …)
        # What a round judges again (see judging.Watch): only what changed since the last one.
        self._watch_index = WatchIndex()  # the watches by what can end their quiet (judging.WatchIndex)
        self._watches: dict[UUID, Watch] = self._watch_index.watches  # kept by it (Judging._watch)
        self._scopes: dict[UUID, Any] = {}  # each agreement's views and services (Judging._scope_of)
        self._calendars_position = 0  # the latest calendar event's log position
        self._calendars_read = 0  # the log position calendar events were read up to
        self._closed_windows: set[UUID] = set()
        self._open_windows: set[UUID] = set()
        self._running: dict[UUID, Running] = {}  # open window → its running evaluation (running.py)
        self._running_touched: set[UUID] = set()  # windows given one, or closed, since the last round's sweep
        self._running_closed: dict[UUID, datetime] = {}  # a window closed with one → until when it keeps it
        kept = self.env.get(CLOSED_KEPT_SECONDS)
        self.closed_kept = timedelta(seconds=float(kept)) if kept else CLOSED_KEPT
        self.closed_held = CLOSED_HELD
        self._window_lists: dict[tuple[str, str], WindowList] = {}  # each objective's windows (judging.WindowList)
        self._objective_keys = ObjectiveKeys()  # each objective's outcome key (judging.ObjectiveKeys)
        self._round_windows = 0
        self._round_kept = False  # a round kept changes for the next one (a failing agreement or objective)
        self.last_round = RoundStats()
        # The signals' log position up to which a round (of any process on this store) judged every
        # signal: this process's first round judges only what came after (see judging.JUDGED).
        self._judged_position = self.tracked_position(JUDGED)
        # The view events up to this position were judged (see judging.JUDGED_VIEWS). A store
        # judged before the position was kept has every view event it holds judged.
        self._views_judged_position = self.tracked_position(JUDGED_VIEWS)
        if not self._views_judged_position and self._judged_position:
            self._views_judged_position = self.recorder.max_notification_id() or 0
        self._view_reach: dict[UUID, datetime] = {}
        self._reach_kept: set[UUID] = set()
        # Windows' closings and restatements indexed by log position (each round: the windows
        # known closed; and when a window judged by contact.fcr v1 is re-derived, see
        # `Judging._calls_as_judged`).
        self._recorded_at: dict[UUID, int] = {}
        self._recorded_at_position = 0
        # The store's signal index (signal_store.py): its facts, and the log read from the judged
        # position or the index's, whichever is earlier (see SignalIndex._open_signal_index).
        self._open_signal_index()
        # The aggregates kept current in the cache (see KEPT_CURRENT); the log read for other
        # processes' events of them up to here (nothing is cached yet).
        repository = self.repository
        assert isinstance(repository, AccordRepository)
        repository.keep_current = self.KEPT_CURRENT
        self._kept = repository
        self._current_read = self.recorder.max_notification_id() or 0
        # The log positions this process recorded after `_current_read`: when they are every
        # position since, no other process stored anything and the log need not be read.
        self._own_positions: set[int] = set()
        self._own_lock = threading.Lock()

    def _record(self, processing_event: ProcessingEvent[Any]) -> list[Recording[Any]]:
        """Record as the library does; then the views, calendars and window evaluations saved
        that the cache holds are replaced there by the saved ones, current (their next load asks
        the store nothing). One the cache does not hold (a window just opened, a window a
        backfill closed) is not put there: loaded, and cached, if it is ever asked for."""
        recordings = super()._record(processing_event)
        with self._own_lock:
            self._own_positions.update(r.notification.id for r in recordings)
        cache = self._kept.cache
        if cache is not None:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                if not isinstance(aggregate, self.KEPT_CURRENT):
                    continue
                try:
                    cache.get(aggregate_id)
                except KeyError:
                    self._kept.current.discard(aggregate_id)
                    continue
                cache.put(aggregate_id, aggregate)
                self._kept.current.add(aggregate_id)
        return recordings
