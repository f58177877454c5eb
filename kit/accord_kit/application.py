"""The base of every Accord application: an eventsourcing Application whose store
records who caused each event, that tells its relay when it saved, serves its log as
public envelopes (its checkpoints included), says which agreement each event concerns,
and applies upstream events exactly once (tracking recorded in the same transaction as
its own new events)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from datetime import datetime
from typing import Any

from eventsourcing.application import Application, ProcessingEvent, Repository
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Notification,
    ProcessRecorder,
    Recording,
    Tracking,
)
from eventsourcing.utils import Environment

from accord.events.v1 import events_pb2
from accord_kit.clock import Clock, SystemClock
from accord_kit.envelope import EventCodec, agreement_ids_in, payload_of, register_chain_events, to_envelope
from accord_kit.persistence import AccordMapper

MAX_READ_LIMIT = 5000
DEFAULT_READ_LIMIT = 500
# An upstream event whose recording conflicts with another writer of the same store is applied
# again this many times in all before the conflict is the consumer's failure (AccordApplication.apply_upstream).
CONFLICT_RETRIES = 3


def topic_pages(
    recorder: ApplicationRecorder, after: int, topics: Sequence[str], limit: int = 1000
) -> Iterator[tuple[Sequence[Notification], int]]:
    """The notifications of `topics` stored after position `after`, page by page (at most
    `limit` to a page), each page with the position read up to: its last notification's, or —
    at the last page — the log's head as read before the first page. An index that tails some
    topics keeps that position, so its next look starts at the head it reached, not at its
    topics' last event: the events of other topics after that one (a metrics log is mostly
    signal batches) are not scanned again each time, and its cost stays with what is new.

    Safe because positions are committed in order (SQLite serialises writers; PostgreSQL
    inserts hold the events table's EXCLUSIVE lock until their commit): no event at or below
    the head read can be committed after it."""
    head = recorder.max_notification_id() or 0
    while True:
        notes = recorder.select_notifications(
            start=after, limit=limit, stop=head, topics=topics, inclusive_of_start=False
        )
        last = len(notes) < limit
        after = max(after, head) if last else notes[-1].id
        yield notes, after
        if last:
            return


def project_events(aggregate: Any, domain_events: Any) -> Any:
    """The library's `project_aggregate` without its `assert isinstance(event, CanMutateProtocol)`:
    a check against a runtime-checkable Protocol costs ≈ 15 µs an event, paid for every event of
    every aggregate loaded (a metrics round loads thousands), and every event class here is the
    library's own `DomainEvent` with its `mutate`."""
    for domain_event in domain_events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


class AccordRepository(Repository[Any]):
    """The library's repository, projecting with `project_events` unless told otherwise.

    `current`: the ids whose cached aggregate its owner knows to be the latest stored — loaded
    from the cache without the fast-forward query that otherwise asks the store for events
    stored since (one query a load). Empty unless the owner keeps it (a service that saves an
    aggregate puts it in the cache and keeps it current, and takes it out when the log shows
    another process stored an event of it: the metrics service's rounds); an id no longer
    cached is loaded from the store as ever."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: set[Any] = set()
        # The aggregate classes whose loads from the cache (fast-forwarded) are kept current.
        self.keep_current: tuple[type, ...] = ()

    def get(
        self,
        aggregate_id: Any,
        *,
        version: int | None = None,
        projector_func: Any = project_events,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        if version is None and self.cache is not None and aggregate_id in self.current:
            try:
                aggregate = self.cache.get(aggregate_id)
            except KeyError:  # evicted since: loaded (and cached) below
                self.current.discard(aggregate_id)
            else:
                if not (deepcopy_from_cache and self.deepcopy_from_cache):
                    return aggregate
                # A class that says how it is deep-copied (metrics' window evaluations: by their
                # attributes) is asked directly, without `deepcopy`'s memo and keep-alive work.
                copier = getattr(type(aggregate), "__deepcopy__", None)
                return copier(aggregate, {}) if copier is not None else deepcopy(aggregate)
        aggregate = super().get(
            aggregate_id,
            version=version,
            projector_func=projector_func,
            fastforward_skipping=fastforward_skipping,
            deepcopy_from_cache=deepcopy_from_cache,
        )
        if version is None and self.cache is not None and isinstance(aggregate, self.keep_current):
            self.current.add(aggregate_id)  # cached, and brought up to date by the store just now
        return aggregate


class AccordApplication(Application[Any]):
    """Owns one service's event store. Subclasses add commands, queries and `policy`."""

    service = "accord"

    def __init__(
        self, env: dict[str, str], *, codec: EventCodec, clock: Clock | None = None, service: str | None = None
    ) -> None:
        if service is not None:
            self.service = service  # e.g. a test's own stream namespace
        self.clock: Clock = clock or SystemClock()
        self.codec = codec
        register_chain_events(codec)  # the store's own checkpoints are events of its log too
        self._save_listeners: list[Callable[[], None]] = []
        self.stored_events = 0  # events this process stored since it started (telemetry)
        self._listeners_lock = threading.Lock()
        super().__init__(env)

    # -- construction -------------------------------------------------------------
    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only what settings.py passed in: the process environment is not read here.
        merged = {**type(self).env, **(env or {})}
        if type(self).is_snapshotting_enabled or type(self).snapshotting_intervals:
            merged.setdefault("IS_SNAPSHOTTING_ENABLED", "y")
        return Environment(name, merged)

    def construct_mapper(self) -> AccordMapper:
        mapper = AccordMapper(
            transcoder=self.construct_transcoder(),
            cipher=self.factory.cipher(),
            compressor=self.factory.compressor(),
        )
        mapper.clock_now = self.clock.now
        return mapper

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def construct_repository(self) -> Repository[Any]:
        base = super().construct_repository()  # the library's reading of its AGGREGATE_CACHE_* settings
        cache = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return AccordRepository(
            event_store=base.event_store,
            snapshot_store=base.snapshot_store,
            cache_maxsize=int(cache) if cache else None,
            fastforward=base.fastforward,
            fastforward_skipping=base.fastforward_skipping,
            deepcopy_from_cache=base.deepcopy_from_cache,
        )

    @property
    def process_recorder(self) -> ProcessRecorder:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder

    @property
    def accord_mapper(self) -> AccordMapper:
        assert isinstance(self.mapper, AccordMapper)
        return self.mapper

    # -- saving ---------------------------------------------------------------------
    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[Any]]:
        """The library's `save`, with aggregates collected without its runtime protocol
        checks (`isinstance` against a `typing.Protocol` walks the protocol's attributes on
        every call, several times per save): an aggregate is recognised by its class, and
        anything else (a domain event, None) is collected by the library as before."""
        processing = ProcessingEvent[Any]()
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                processing.events.extend(obj.collect_events())
                processing.aggregates[obj.id] = obj
            else:
                processing.collect_events(obj)
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # the library's deprecated hook, as its save calls it
        return recordings

    def _take_snapshots(self, processing: ProcessingEvent[Any]) -> None:
        """The library's, taking a snapshot from the aggregate just saved when it is at the
        snapshot's version — the state the library would rebuild by loading the aggregate from
        the store (its snapshot, then every event since: ≈ 1 ms for a window evaluation of 50
        events) — and loading it as the library does otherwise (a save whose events for one
        aggregate pass the snapshot's version: the aggregate is already beyond it). Every event
        of an aggregate changes its state only through its mutator, so the aggregate saved holds
        exactly what replaying its events gives (`test_application_save.py` compares the two)."""
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        for event in processing.events:
            aggregate = processing.aggregates.get(event.originator_id)
            if aggregate is None:
                continue
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is None or event.originator_version % interval:
                continue
            if aggregate.version != event.originator_version:
                projector = self.snapshotting_projectors.get(type(aggregate), project_events)
                self.take_snapshot(event.originator_id, version=event.originator_version, projector_func=projector)
                continue
            snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
            if snapshot_class is None:  # the library's error, from its own path
                self.take_snapshot(event.originator_id, version=event.originator_version)
                continue
            self.snapshots.put([snapshot_class.take(aggregate)])

    # -- the relay's wake-up --------------------------------------------------------
    def add_save_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._save_listeners.append(listener)

    def remove_save_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            if listener in self._save_listeners:
                self._save_listeners.remove(listener)

    def _notify(self, recordings: list[Recording[Any]]) -> None:
        self.stored_events += len(recordings)
        if recordings:
            self.notify_saved()

    def notify_saved(self) -> None:
        """Wake the save listeners (the relay): events were stored — by this process, or by a process
        of its own whose saves it does not see otherwise (the metrics service's recording process)."""
        with self._listeners_lock:
            listeners = list(self._save_listeners)
        for listener in listeners:
            listener()

    # -- the log as public envelopes --------------------------------------------------
    def head_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def select_notifications(self, after: int, limit: int) -> list[Notification]:
        return list(self.recorder.select_notifications(start=after, limit=limit, inclusive_of_start=False))

    def position_before(self, position: int) -> int:
        """The highest position in the log below `position` (0 if none). Positions may
        have gaps (PostgreSQL sequences), so this looks, rather than subtracting one."""
        window = 64
        low = position
        while low > 1:
            low = max(1, position - window)
            found = self.recorder.select_notifications(start=low, stop=position - 1, limit=window + 1)
            if found:
                return found[-1].id
            window *= 4
        return 0

    def read_events(self, after_position: int, limit: int = 0) -> tuple[list[events_pb2.EventEnvelope], int]:
        """Up to `limit` envelopes after `after_position`, and the log's head position."""
        limit = DEFAULT_READ_LIMIT if limit <= 0 else min(limit, MAX_READ_LIMIT)
        head = self.head_position()
        notes = self.select_notifications(after_position, limit)
        out: list[events_pb2.EventEnvelope] = []
        prev: int | None = None
        for n in notes:
            if prev is None:
                prev = (
                    after_position
                    if after_position == 0 or self._position_exists(after_position)
                    else self.position_before(n.id)
                )
            env, _ = to_envelope(self.service, n, prev, self.accord_mapper, self.codec)
            out.append(env)
            prev = n.id
        return out, head

    def _position_exists(self, position: int) -> bool:
        found = self.recorder.select_notifications(start=position, stop=position, limit=1)
        return bool(found)

    # -- two time axes (docs/domain.md §6) -----------------------------------------------
    def recorded_times(self, aggregate_id: Any) -> list[tuple[int, datetime]]:
        """(version, recorded at) of every stored event of one aggregate, oldest first.
        Events stored before recording times were kept fall back to their own timestamp."""
        out: list[tuple[int, datetime]] = []
        for stored in self.recorder.select_events(aggregate_id):
            event, meta = self.accord_mapper.to_domain_event_with_meta(stored)
            recorded = meta.get("recorded_at")
            when = recorded if isinstance(recorded, datetime) else getattr(event, "timestamp", None)
            assert isinstance(when, datetime)
            out.append((stored.originator_version, when))
        return out

    def version_known_at(self, aggregate_id: Any, at: datetime) -> int | None:
        """The aggregate's version as the store knew it at instant `at` (the highest
        version recorded at or before it), or None when it did not exist yet."""
        known = None
        for version, when in self.recorded_times(aggregate_id):
            if when <= at:
                known = version
            else:
                break
        return known

    def get_as_known_at(self, aggregate_id: Any, at: datetime) -> Any | None:
        """The aggregate as it was known at `at` ("as known at T"), or None when no
        event of it had been recorded by then. The current state is `repository.get`."""
        version = self.version_known_at(aggregate_id, at)
        if version is None:
            return None
        return self.repository.get(aggregate_id, version=version)

    # -- audit: which agreement an event concerns (AuditService.AgreementHistory) ---------
    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        """The agreements one of this service's events concerns. By default the payload's
        `agreement_id`, at top level or in a top-level message field (`evaluation`, `old`,
        `new`, a repeated field...). Override for events that name their agreement in
        another way (e.g. through a statement or a service)."""
        payload = payload_of(envelope, self.codec)
        return agreement_ids_in(payload) if payload is not None else set()

    def concerns_agreement(self, envelope: events_pb2.EventEnvelope, agreement_id: str) -> bool:
        return agreement_id in self.agreement_ids_of(envelope)

    # -- consuming upstream events exactly once --------------------------------------------
    def tracked_position(self, source: str) -> int:
        return self.process_recorder.max_tracking_id(source) or 0

    def apply_upstream(self, source: str, envelope: events_pb2.EventEnvelope) -> bool:
        """Apply one upstream event and record its position in the same transaction.

        Returns False when the position was already recorded (a redelivery). When another
        writer of this store saved one of the same aggregates first (the service's own clock
        work, a command), the event is applied again on the new state, up to
        CONFLICT_RETRIES times, before the conflict is reported as the consumer's failure."""
        attempt = 1
        while True:
            processing = ProcessingEvent[Any](tracking=Tracking(source, envelope.position))
            self.policy(source, envelope, processing)
            try:
                recordings = self._record(processing)
                break
            except IntegrityError:
                if self.tracked_position(source) >= envelope.position:
                    return False
                if attempt == CONFLICT_RETRIES:
                    raise
                attempt += 1
        self._take_snapshots(processing)
        self._notify(recordings)
        return True

    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        """React to an upstream event by collecting new events into `processing`.
        Events the service does not care about are left alone: they still advance the
        tracked position."""
