"""The metrics application: owns the metrics service's event store — the raw signals (one
event per recorded batch and service), the agreements and services learned from the
agreements stream, and every objective's evaluation per window with its breaches and
restatements; and the recomputation of a recorded window that audit builds on (audit.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from google.protobuf import json_format

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.metrics.v1 import signals_pb2
from accord_kit.agreement_terms import effective_terms
from accord_kit.application import AccordApplication
from accord_kit.clock import Clock
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_kit.logging import get_logger
from accord_kit.timeline import (
    AlwaysOpen,
    BusinessCalendar,
    Calendar,
    Interval,
    calendar_windows,
    subtract,
    union,
)
from accord_kit.topics import event_topics
from accord_metrics import signals as sig
from accord_metrics.codec import batch_message, codec
from accord_metrics.domain import (
    BREACHED,
    NO_DATA,
    REJECTED,
    WITHDRAWN,
    AgreementView,
    CalendarView,
    KnownService,
    NotAPartyError,
    NotFoundError,
    NotTheProviderError,
    SignalBatch,
    SignalCorrection,
    UnknownServiceError,
    WindowEvaluation,
)
from accord_metrics.evaluation import ONGOING, SignalSet, burn_rates, exclusions_for, judge, late_subjects
from accord_metrics.formulas import reliability
from accord_metrics.signals import validate

log = get_logger("accord.metrics.evaluation")

BATCH_TOPIC = SignalBatch.Recorded.TOPIC
CORRECTION_TOPIC = SignalCorrection.Corrected.TOPIC
SIGNAL_TOPICS = [BATCH_TOPIC, CORRECTION_TOPIC]  # every recorded signal content, in log order
VIEW_TOPIC = AgreementView.Seen.TOPIC
# Every event of an agreement view (its first, Seen, included): what says a view has changed.
VIEW_EVENT_TOPICS = sorted(event_topics(AgreementView))
WINDOW_TOPIC = WindowEvaluation.Opened.TOPIC
FAR_FUTURE = ONGOING
# A re-derivation's difference when the calendar version a window was judged with is not held.
CALENDAR_UNAVAILABLE = "calendar_version unavailable"
DEFAULT_MAINTENANCE_NOTICE = timedelta(hours=24)


@dataclass(frozen=True)
class Recorded:
    accepted: int
    duplicates: int
    corrections: int = 0


NEW, DUPLICATE, COMPLETION, CORRECTION = "new", "duplicate", "completion", "correction"
# Where each kind of signal goes among the formula inputs (a probe is a one-request count).
_LIST_OF = {
    "outage": "outages", "maintenance": "maintenance", "requests": "requests", "probe": "requests",
    "incident": "incidents", "call": "calls", "ticket": "tickets", "task": "tasks", "lead": "leads", "deal": "deals",
}  # fmt: skip


def content_digest(s: signals_pb2.Signal) -> str:
    """The digest of a signal's content (deterministic wire format): what tells a re-send
    (same digest) from a correction (same id, another digest)."""
    return hashlib.sha256(s.SerializeToString(deterministic=True)).hexdigest()


def changed_fields(old: signals_pb2.Signal, new: signals_pb2.Signal) -> list[str]:
    """The fields of a signal's body that differ between two contents, e.g. ["outage.end"]."""
    kind = str(new.WhichOneof("kind"))
    a, b = getattr(old, kind), getattr(new, kind)
    names = sorted({f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()})
    return [f"{kind}.{n}" for n in names if getattr(a, n) != getattr(b, n)]


@dataclass
class ServiceSignals:
    """One service's signals in memory: every content each id was recorded with (digests,
    for dedupe and corrections), the latest content per id, the raw signals in the order
    stored (corrections included), and the formula inputs converted from them so far
    (converted lazily, at evaluation, so recording stays cheap). A signal's latest content
    replaces its earlier one in place among the formula inputs."""

    versions: dict[str, list[str]] = field(default_factory=dict)  # signal id → digests of every content held
    latest: dict[str, signals_pb2.Signal] = field(default_factory=dict)
    raw: list[signals_pb2.Signal] = field(default_factory=list)
    signals: SignalSet = field(default_factory=SignalSet)
    converted: int = 0
    at: dict[str, tuple[str, int]] = field(default_factory=dict)  # signal id → (SignalSet list, index)

    def classify(self, s: signals_pb2.Signal, where: str) -> str:
        """NEW; DUPLICATE (a content this id was already recorded with: a retry, never a
        step back); COMPLETION (the end of an outage first reported as under way); or
        CORRECTION (another content). A correction must keep the signal's kind."""
        held = self.versions.get(s.signal_id)
        if held is None:
            return NEW
        if content_digest(s) in held:
            return DUPLICATE
        before = self.latest[s.signal_id]
        kind, was = s.WhichOneof("kind"), before.WhichOneof("kind")
        if kind != was:
            raise sig.InvalidSignalError(
                f"{where}.signal_id: {s.signal_id!r} was recorded as a {was} signal; a correction keeps its kind "
                f"(not {kind}) — use a new signal id"
            )
        if (
            kind == "outage"
            and not before.outage.HasField("end")
            and s.outage.HasField("end")
            and changed_fields(before, s) == ["outage.end"]
        ):
            return COMPLETION
        return CORRECTION

    def earliest(self, signal_id: str) -> datetime | None:
        held = self.latest.get(signal_id)
        return _earliest(held) if held is not None else None

    def note(self, items: list[signals_pb2.Signal]) -> None:
        for s in items:
            self.versions.setdefault(s.signal_id, []).append(content_digest(s))
            self.latest[s.signal_id] = s
        self.raw.extend(items)

    def converted_set(self) -> SignalSet:
        for s in self.raw[self.converted :]:
            self._convert(s)
        self.converted = len(self.raw)
        return self.signals

    def absorb(self, items: list[signals_pb2.Signal]) -> None:
        """Convert stored signals without keeping them raw (a one-pass re-read of the store:
        a month of a million signals is held once, as formula inputs)."""
        for s in items:
            self._convert(s)

    def _convert(self, s: signals_pb2.Signal) -> None:
        name = _LIST_OF[str(s.WhichOneof("kind"))]
        one = SignalSet()
        _add(one, s)
        items: list[Any] = getattr(one, name)
        target: list[Any] = getattr(self.signals, name)
        at = self.at.get(s.signal_id)
        if at is None:
            self.at[s.signal_id] = (name, len(target))
            target.extend(items)
        else:  # a later content (completion, correction) replaces the earlier one in place
            target[at[1]] = items[0]


@dataclass(frozen=True)
class Settled:
    """An ended agreement whose every window was closed (or judged by no version) by an
    evaluation that read the views as of log position `position`. Evaluating it again finds
    nothing to do (`_evaluate_agreement`: a closed window needs judging only for a change to
    its services' signals from before its end) unless `now` is before its end, one of its
    `services` has signals from before `windows_end` (the end of its last window) not yet
    evaluated — a late one restates a closed window — or a view it `depends_on` (its own, those
    its terms inherit from) changed after `position`."""

    position: int
    ended_at: datetime
    windows_end: datetime
    services: frozenset[str]
    depends_on: frozenset[UUID]

    def holds(self, now: datetime, changed_since: dict[str, datetime], view_changed: dict[UUID, int]) -> bool:
        earliest_change = min((changed_since[s] for s in self.services if s in changed_since), default=None)
        return (
            now >= self.ended_at
            and (earliest_change is None or earliest_change >= self.windows_end)
            and all(view_changed.get(d, 0) <= self.position for d in self.depends_on)
        )


@dataclass(frozen=True)
class StoredSignals:
    """Signals re-read from the store: formula inputs per service, and how many were read."""

    sets: dict[str, SignalSet]
    count: int


def combined(sources: dict[str, SignalSet], service_ids: list[str]) -> SignalSet:
    """One SignalSet of these services' signals, in the order given (each service's in the
    order stored): the order evaluation and recomputation both use."""
    out = SignalSet()
    for sid in service_ids:
        src = sources.get(sid)
        if src is None:
            continue
        for name in SignalSet.__dataclass_fields__:
            getattr(out, name).extend(getattr(src, name))
    return out


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


def _earliest(s: signals_pb2.Signal) -> datetime:
    """The instant from which a signal can change evaluations."""
    kind = str(s.WhichOneof("kind"))
    body = getattr(s, kind)
    first = {
        "outage": "start", "maintenance": "start", "requests": "start", "probe": "at", "incident": "failure_start",
        "call": "entered_queue", "ticket": "opened", "task": "received", "lead": "created", "deal": "closed_at",
    }[kind]  # fmt: skip
    return sig.instant(getattr(body, first))


def _encode(items: list[signals_pb2.Signal]) -> str:
    return base64.b64encode(signals_pb2.SignalBatch(signals=items).SerializeToString()).decode()


def _add(into: SignalSet, s: signals_pb2.Signal) -> None:
    kind = s.WhichOneof("kind")
    if kind == "outage":
        # An ongoing outage is kept open-ended; evaluations clip it to their own "now".
        into.outages.append(sig.outage_interval(s, until=FAR_FUTURE))
    elif kind == "maintenance":
        m = s.maintenance
        announced = sig.instant(m.announced_at) if m.announced_at.seconds else None
        into.maintenance.append((sig.maintenance_interval(s), announced))
    elif kind == "requests":
        into.requests.append(sig.request_count(s))
    elif kind == "probe":
        into.requests.append(sig.probe_count(s))
    elif kind == "incident":
        into.incidents.append(sig.incident(s))
    elif kind == "call":
        into.calls.append(sig.call(s))
    elif kind == "ticket":
        into.tickets.append(sig.ticket(s))
    elif kind == "task":
        into.tasks.append(sig.task(s))
    elif kind == "lead":
        into.leads.append(sig.lead(s))
    elif kind == "deal":
        into.deals.append(sig.deal(s))


class Metrics(AccordApplication):
    """Raw signals, the agreements and calendars they are judged by (from the agreements
    stream), and every objective's evaluation per window with its breaches."""

    name = "Metrics"
    service = "metrics"
    # A window's running evaluation changes often while it is open: load it from a snapshot.
    snapshotting_intervals = {WindowEvaluation: 50}
    # Signal batches name a service, never an agreement: AgreementHistory skips them undecoded
    # (an evaluation carries the digest and counts of the signals that decided its window).
    history_skip_topics = frozenset({BATCH_TOPIC})

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self._lock = threading.RLock()
        self._providers: dict[str, str] = {}
        self._services: dict[str, ServiceSignals] = defaultdict(ServiceSignals)
        self._signals_position = 0
        self._changed: dict[str, datetime] = {}  # service → earliest instant of signals not yet evaluated
        self._windows: dict[str, set[str]] = defaultdict(set)  # agreement id → window aggregate ids
        self._windows_position = 0
        self._views_position = 0  # agreement views indexed from the log by position (any process's)
        self._view_changed: dict[UUID, int] = {}  # view id → position of its latest event, in first-seen order
        self._settled: dict[UUID, Settled] = {}  # ended agreements with nothing to evaluate (see Settled)
        # (agreement id, objective id or "" for the whole agreement) → why its evaluation failed
        # in the latest pass that tried it: isolated there, every other agreement goes on.
        self._failing: dict[tuple[str, str], str] = {}
        self._fcr_services: tuple[int, dict[str, str]] | None = None  # (views position, services)

    # -- who may record --------------------------------------------------------------------------
    def provider_of(self, service_id: str) -> str:
        cached = self._providers.get(service_id)
        if cached is not None:
            return cached
        try:
            known: Any = self.repository.get(KnownService.create_id(service_id))
        except AggregateNotFoundError:
            raise UnknownServiceError(
                f"service {service_id!r} is not registered (register it with the agreements service first)"
            ) from None
        self._providers[service_id] = str(known.provider_department_id)  # a service's provider never changes
        return self._providers[service_id]

    def _check_may_record(self, caller: Principal, service_ids: set[str]) -> None:
        for sid in sorted(service_ids):
            provider = self.provider_of(sid)
            if caller.role == "service":
                continue
            if caller.role != "department" or caller.department != provider:
                who = f"department {caller.department}" if caller.role == "department" else f"role {caller.role}"
                raise NotTheProviderError(
                    f"only the provider of service {sid!r} ({provider}) or a service identity may record its signals; "
                    f"{who} may not"
                )

    # -- recording signals -----------------------------------------------------------------------------
    def record(self, caller: Principal, signals: list[signals_pb2.Signal], reason: str = "") -> Recorded:
        """Validate, authorise and store one batch: one event per service, in one
        transaction. Signals the service already holds with the same content (or repeated
        in the batch) are counted as duplicates and not stored again. A known signal id with
        another content is a correction: stored as its own event (`SignalCorrection`: the
        caller, the digest of the content it replaces, the fields that changed, `reason`),
        so that the windows it changes are judged again (restated once closed)."""
        for i, s in enumerate(signals):
            validate(s, i)
        self._check_may_record(caller, {s.service_id for s in signals})
        self._check_fcr_customers(signals)
        with self._lock:  # dedupe and save as one step within this process
            self._refresh_signals()
            fresh: dict[str, list[signals_pb2.Signal]] = defaultdict(list)
            corrected: dict[str, list[tuple[signals_pb2.Signal, str, list[str]]]] = defaultdict(list)
            in_batch: dict[tuple[str, str], str] = {}
            duplicates = 0
            for i, s in enumerate(signals):
                key = (s.service_id, s.signal_id)
                if key in in_batch:
                    if in_batch[key] != content_digest(s):
                        raise sig.InvalidSignalError(
                            f"signals[{i}].signal_id: {s.signal_id!r} appears twice in the batch with different "
                            "content (send a correction in a later batch)"
                        )
                    duplicates += 1
                    continue
                entry = self._services[s.service_id]
                verdict = entry.classify(s, f"signals[{i}]")
                if verdict == DUPLICATE:
                    duplicates += 1
                    continue
                in_batch[key] = content_digest(s)
                if verdict == CORRECTION:
                    before = entry.latest[s.signal_id]
                    corrected[s.service_id].append((s, content_digest(before), changed_fields(before, s)))
                else:
                    fresh[s.service_id].append(s)
            batches: list[Any] = [
                SignalBatch(service_id=sid, batch=_encode(items), count=len(items))
                for sid, items in sorted(fresh.items())
            ]
            actor = f"{caller.role}:{caller.subject}" + (f" ({caller.department})" if caller.department else "")
            for sid, fixes in sorted(corrected.items()):
                batches.append(
                    SignalCorrection(
                        service_id=sid,
                        batch=_encode([f[0] for f in fixes]),
                        count=len(fixes),
                        previous_digests=[f[1] for f in fixes],
                        changed=[",".join(f[2]) for f in fixes],
                        actor=actor,
                        reason=reason or "re-sent with a known signal id and different content",
                        agreement_ids=self._agreements_of_service(sid),
                    )
                )
            if batches:
                recordings = self.save(*batches)
                ids = sorted(r.notification.id for r in recordings)
                if ids and ids[0] == self._signals_position + 1 and ids[-1] - ids[0] == len(ids) - 1:
                    # Nothing else was stored in between: index our own batch instead of re-reading it.
                    for b in batches:
                        self._index(b.service_id, list(batch_message(b.batch).signals))
                    self._signals_position = ids[-1]
            return Recorded(
                accepted=sum(len(v) for v in fresh.values()),
                duplicates=duplicates,
                corrections=sum(len(v) for v in corrected.values()),
            )

    def _check_fcr_customers(self, signals: list[signals_pb2.Signal]) -> None:
        """An answered call without a first-contact flag is judged by repeat contacts of the
        same customer: refused without its customer id when its service is measured by an
        FCR objective that infers resolution (anonymous calls are no one customer)."""
        anonymous = [
            (i, s)
            for i, s in enumerate(signals)
            if s.WhichOneof("kind") == "call"
            and s.call.HasField("answered_at")
            and not s.call.customer_id
            and s.call.first_contact == signals_pb2.FIRST_CONTACT_RESOLUTION_UNSPECIFIED
        ]
        if not anonymous:
            return
        inferred = self._fcr_inferred_services()
        for i, s in anonymous:
            if s.service_id in inferred:
                raise sig.InvalidSignalError(
                    f"signals[{i}].call.customer_id: is required: service {s.service_id!r} is measured by "
                    f"first-contact resolution inferred from repeat contacts ({inferred[s.service_id]}), and "
                    "an answered call without a first_contact flag needs its customer"
                )

    def _fcr_inferred_services(self) -> dict[str, str]:
        """Services measured by an FCR objective inferring resolution from repeat contacts
        (in any version or the effective terms of any agreement) → "agreement/objective"."""
        position = self._refresh_views()
        cached = self._fcr_services
        if cached is not None and cached[0] == position:
            return cached[1]
        now = self.clock.now()
        out: dict[str, str] = {}
        for view in self.views():
            if not view.versions:
                continue
            latest, _, services = self.scope(view, now)
            for terms in [latest, *(v["terms"] for v in view.versions)]:
                for o in terms.get("objectives") or []:
                    method = str((o.get("parameters") or {}).get("method") or "FLAGGED")
                    if o.get("metric") == "METRIC_FIRST_CONTACT_RESOLUTION" and method != "FLAGGED":
                        for sid in services:
                            out.setdefault(sid, f"{view.agreement_id}/{o.get('objective_id', '')}")
        self._fcr_services = (position, out)  # until a view changes
        return out

    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        """A correction of signals concerns the agreements judged on its service's signals
        (recorded with it); every other event names its agreement as the kit reads it."""
        if envelope.type.endswith(".SignalsCorrected"):
            msg = unpack(envelope, metrics_events.SignalsCorrected)
            return set(msg.agreement_ids)
        return super().agreement_ids_of(envelope)

    def _agreements_of_service(self, service_id: str) -> list[str]:
        """The agreements (as metrics knows them) judged on a service's signals: those a
        correction of its signals concerns (AgreementHistory shows it to them)."""
        out = []
        for view in self.views():
            if any(service_id in ((v["terms"].get("service") or {}).get("service_ids") or []) for v in view.versions):
                out.append(view.agreement_id)
        return sorted(out)

    def _index(self, service_id: str, items: list[signals_pb2.Signal]) -> None:
        entry = self._services[service_id]
        # A signal's earlier content counts as a change too: the windows it was in are judged again.
        earlier = [e for s in items if (e := entry.earliest(s.signal_id)) is not None]
        entry.note(items)
        at = min([_earliest(s) for s in items] + earlier)
        if service_id not in self._changed or at < self._changed[service_id]:
            self._changed[service_id] = at

    def _refresh_signals(self) -> None:
        """Index the signal batches stored since we last looked (by any process)."""
        with self._lock:
            while True:
                notes = self.recorder.select_notifications(
                    start=self._signals_position, limit=500, topics=SIGNAL_TOPICS, inclusive_of_start=False
                )
                if not notes:
                    return
                for n in notes:
                    batch: Any = self.mapper.to_domain_event(n)
                    self._index(batch.service_id, list(batch_message(batch.batch).signals))
                self._signals_position = notes[-1].id

    def signals(self, service_id: str | None = None) -> list[signals_pb2.Signal]:
        """Every stored signal content (of one service), in the order stored — first
        recordings and corrections alike: the raw record."""
        out: list[signals_pb2.Signal] = []
        position = 0
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=500, topics=SIGNAL_TOPICS, inclusive_of_start=False
            )
            if not notes:
                return out
            for n in notes:
                batch: Any = self.mapper.to_domain_event(n)
                if service_id is None or batch.service_id == service_id:
                    out.extend(batch_message(batch.batch).signals)
            position = notes[-1].id

    def signal_set(self, service_ids: list[str], *, from_store: bool = False) -> SignalSet:
        """The signals of these services as formula inputs: from the in-memory index, or
        re-read from the stored batches (auditors' recomputation)."""
        if from_store:
            return combined(self.stored_signals(set(service_ids)).sets, service_ids)
        with self._lock:
            self._refresh_signals()
            sources = {sid: self._services[sid].converted_set() for sid in service_ids}
        return combined(sources, service_ids)

    def stored_signals(self, service_ids: set[str] | None = None) -> StoredSignals:
        """Every stored signal batch (of these services) re-read from the store in one pass,
        independently of the in-memory index, as formula inputs per service."""
        entries: dict[str, ServiceSignals] = {}
        count = 0
        position = 0
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=500, topics=SIGNAL_TOPICS, inclusive_of_start=False
            )
            if not notes:
                break
            for n in notes:
                batch: Any = self.mapper.to_domain_event(n)
                if service_ids is not None and batch.service_id not in service_ids:
                    continue
                items = list(batch_message(batch.batch).signals)
                entries.setdefault(batch.service_id, ServiceSignals()).absorb(items)
                count += len(items)
            position = notes[-1].id
        return StoredSignals({sid: e.signals for sid, e in entries.items()}, count)

    # -- upstream: the agreements stream ------------------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        t = envelope.type.rsplit(".", 1)[-1]
        ev = agreement_events
        if t == "ServiceRegistered":
            msg = unpack(envelope, ev.ServiceRegistered)
            if not self._exists(KnownService.create_id(msg.service_id)):
                processing.collect_events(KnownService(msg.service_id, msg.provider_department_id))
        elif t == "CalendarDefined":
            cal_msg = unpack(envelope, ev.CalendarDefined)
            cal = self._get_or(CalendarView.create_id(cal_msg.calendar_id), lambda: CalendarView(cal_msg.calendar_id))
            cal.define(cal_msg.version, json.loads(cal_msg.definition_json))
            processing.collect_events(cal)
        elif t in ("AgreementDrafted", "DraftRevised", "AmendmentProposed", "AgreementAccepted", "AmendmentAccepted",
                   "AmendmentRejected", "AmendmentWithdrawn", "AgreementTerminated", "AgreementExpired",
                   "AgreementRenewed", "AgreementSuspended", "AgreementResumed"):  # fmt: skip
            message = getattr(ev, t)()
            envelope.payload.Unpack(message)
            aid = message.agreement_id
            view = self._get_or(AgreementView.create_id(aid), lambda: AgreementView(aid))
            if t in ("AgreementDrafted", "DraftRevised"):
                view.note_draft(_terms(message.terms))
            elif t == "AmendmentProposed":
                view.note_amendment(message.amendment_id, _terms(message.terms))
            elif t == "AgreementAccepted":
                view.accept(message.version, _iso(message.effective_from))
            elif t == "AmendmentAccepted":
                view.accept(message.version, _iso(message.effective_from), message.amendment_id)
            elif t == "AmendmentRejected":
                view.conclude_amendment(message.amendment_id, REJECTED, message.reason)
            elif t == "AmendmentWithdrawn":
                view.conclude_amendment(message.amendment_id, WITHDRAWN, message.reason)
            elif t == "AgreementTerminated":
                view.end(_iso(message.effective_at))
            elif t == "AgreementExpired":
                view.end(_iso(message.at))
            elif t == "AgreementSuspended":
                view.suspend(_iso(envelope.occurred_at))
            elif t == "AgreementResumed":
                view.resume(_iso(envelope.occurred_at))
            else:
                view.renew(_iso(message.new_end))
            processing.collect_events(view)

    def _exists(self, aggregate_id: Any) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def _get_or(self, aggregate_id: Any, create: Any) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return create()

    # -- evaluation -------------------------------------------------------------------------------------------
    def _refresh_views(self) -> int:
        """Index the agreement views' events stored since we last looked (by any process);
        returns the position read up to."""
        with self._lock:
            while True:
                notes = self.recorder.select_notifications(
                    start=self._views_position, limit=1000, topics=VIEW_EVENT_TOPICS, inclusive_of_start=False
                )
                if not notes:
                    return self._views_position
                for n in notes:
                    self._view_changed[UUID(str(n.originator_id))] = n.id
                self._views_position = notes[-1].id

    def view_ids(self) -> list[UUID]:
        """The ids of every agreement view, in the order first stored."""
        with self._lock:
            self._refresh_views()
            return list(self._view_changed)

    def views(self) -> list[AgreementView]:
        return [self.repository.get(i) for i in self.view_ids()]

    def _depends_on(self, view: AgreementView) -> frozenset[UUID]:
        """The view and every view its versions' terms may inherit from, transitively: a
        superset of what `effective_terms` reads for it."""
        out = {UUID(str(view.id))}
        todo: list[Any] = [view]
        while todo:
            for version in todo.pop().versions:
                parent_id = version["terms"].get("parent_agreement_id") or ""
                uid = AgreementView.create_id(parent_id) if parent_id else None
                if uid is not None and uid not in out:
                    out.add(uid)
                    parent = self._get_or(uid, lambda: None)
                    if parent is not None:
                        todo.append(parent)
        return frozenset(out)

    def calendar(self, calendar_id: str, version: int = 0) -> Calendar:
        """A business calendar: its latest definition, or (version > 0) the one it had as that
        version — every version learned is kept, so a window is judged again by the calendar
        that judged it. LookupError when not known (that version not, or not yet)."""
        if not calendar_id or calendar_id == "24x7":
            return AlwaysOpen()
        view: Any = self._get_or(CalendarView.create_id(calendar_id), lambda: None)
        if view is None or not view.definitions:
            raise LookupError(f"calendar {calendar_id!r} is not known to metrics yet")
        if not version:
            version, definition = view.latest
        elif (definition := view.definition(version)) is None:
            raise LookupError(f"calendar {calendar_id!r} version {version} is not known to metrics")
        return BusinessCalendar.from_definition(definition, calendar_id, version)

    def calendar_held(self, calendar_id: str, version: int) -> bool:
        """Whether metrics holds this version of this calendar (the built-in 24x7 has one, 1)."""
        if not calendar_id or calendar_id == "24x7":
            return version == AlwaysOpen.version
        view: Any = self._get_or(CalendarView.create_id(calendar_id), lambda: None)
        return version > 0 and view is not None and view.definition(version) is not None

    def _calendar_for(self, objective: dict[str, Any], pinned: tuple[str, int] | None) -> Calendar:
        """The objective's calendar: the `pinned` (id, version) — the one a recorded evaluation
        was judged with — when it is the objective's calendar and that version is held;
        otherwise its latest definition."""
        calendar_id = objective.get("calendar_id") or "24x7"
        if pinned is not None and pinned[0] == calendar_id and self.calendar_held(*pinned):
            return self.calendar(calendar_id, pinned[1])
        return self.calendar(calendar_id)

    def evaluate(self, now: datetime | None = None) -> int:
        """Bring every objective's evaluations up to date as of `now` (the service's clock):
        running values of open windows, closing of ended ones, restatements of closed ones
        that late signals changed, breaches, warnings and burn-rate alerts. Returns how many
        window evaluations changed. Evaluation never reads the wall clock."""
        now = now or self.clock.now()
        with self._lock:
            self._refresh_signals()
            changed_since, self._changed = self._changed, {}
            position = self._refresh_views()
            # A settled agreement (see Settled) would find nothing to judge: skip it, unloaded.
            settled = self._settled
            ids = [
                i
                for i in self._view_changed
                if i not in settled or not settled[i].holds(now, changed_since, self._view_changed)
            ]
        views: list[AgreementView] = [self.repository.get(i) for i in ids]
        changed = 0
        for view in views:
            if not view.versions:
                continue
            try:
                changed += self._evaluate_agreement(view, now, changed_since, position)
            except Exception as e:  # isolated to this agreement: the others are still judged
                self._failed(view.agreement_id, "", e)
                self._keep_changes(_named_services(view), changed_since)  # pending for the next pass
            else:
                self._recovered(view.agreement_id, "")
        return changed

    def _keep_changes(self, services: Iterable[str], changed_since: dict[str, datetime]) -> None:
        """Keep these services' signal changes for the next pass (their windows were not judged)."""
        with self._lock:
            for sid in services:
                if sid in changed_since and (sid not in self._changed or changed_since[sid] < self._changed[sid]):
                    self._changed[sid] = changed_since[sid]

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
        self, view: AgreementView, now: datetime, changed_since: dict[str, datetime], position: int | None = None
    ) -> int:
        """Judge the agreement's windows that need it. `position`: the log position the view
        was read at or after; given, an ended agreement left with no open window is settled."""
        start = _parse(view.versions[0]["effective_from"])
        ends = end_of(view)
        end = min(ends or FAR_FUTURE, now)
        if end <= start:
            return 0
        latest, tz, services = self.scope(view, now)
        signals = self.signal_set(services)
        earliest_change = min((changed_since[s] for s in services if s in changed_since), default=None)
        to_save: list[Any] = []
        all_closed = True  # every window judged here is closed (those that need no judging are)
        windows_end = start
        failed = False
        for objective in latest.get("objectives") or []:
            try:
                windows = self._objective_windows(
                    view, objective, start, end, tz, signals, now, earliest_change, to_save
                )
            except Exception as e:  # isolated to this objective: its windows wait for a fix
                self._failed(view.agreement_id, str(objective.get("objective_id") or ""), e)
                failed = True
                continue
            self._recovered(view.agreement_id, str(objective.get("objective_id") or ""))
            windows_end = max(windows_end, windows[0])
            all_closed = all_closed and windows[1]
        if failed:  # windows of a failing objective were not judged: keep its services' changes
            self._keep_changes(services, changed_since)
        current = {str(o.get("objective_id") or "") for o in latest.get("objectives") or []}
        with self._lock:  # an objective no longer in the terms fails no more
            for key in [k for k in self._failing if k[0] == view.agreement_id and k[1] and k[1] not in current]:
                del self._failing[key]
        if to_save:
            self.save(*to_save)
        if position is not None and not failed and all_closed and ends is not None and now >= ends:
            settled = Settled(position, ends, windows_end, frozenset(services), self._depends_on(view))
            with self._lock:
                self._settled[UUID(str(view.id))] = settled
        return len(to_save)

    def _objective_windows(
        self, view: AgreementView, objective: dict[str, Any], start: datetime, end: datetime, tz: str,
        signals: SignalSet, now: datetime, earliest_change: datetime | None, to_save: list[Any],
    ) -> tuple[datetime, bool]:  # fmt: skip
        """Judge one objective's windows that need it (adding changed ones to `to_save`);
        returns the end of its last window and whether every window judged is closed."""
        windows_end, all_closed = start, True
        pending: list[Any] = []
        ends = end_of(view)
        suspended = suspensions(view)
        for window in _windows(objective, Interval(start, max(end, start + timedelta(microseconds=1))), tz):
            measured = Interval(max(window.start, start), min(window.end, ends or window.end))
            if measured.empty:
                continue
            windows_end = max(windows_end, window.end)
            wid = WindowEvaluation.create_id(view.agreement_id, objective["objective_id"], window.start.isoformat())
            agg: Any = self._get_or(
                wid,
                lambda o=objective, w=window: WindowEvaluation(
                    view.agreement_id, o["objective_id"], w.start.isoformat(), w.end.isoformat()
                ),
            )
            needs = not agg.closed or (earliest_change is not None and earliest_change < window.end)
            if not needs:
                continue
            version = self._effective_version(view, measured.start)
            v_objective = next(
                (o for o in version["terms"].get("objectives") or [] if o["objective_id"] == objective["objective_id"]),
                None,
            )
            if v_objective is None:
                continue  # the objective did not exist in the version judging this window
            self._judge_window(agg, v_objective, version["version"], measured, window, signals, now, tz, suspended)
            if agg.pending_events:
                pending.append(agg)
            all_closed = all_closed and bool(agg.closed)
        to_save.extend(pending)  # only once every window of the objective was judged
        return windows_end, all_closed

    def scope(self, view: AgreementView, now: datetime) -> tuple[dict[str, Any], str, list[str]]:
        """An agreement's latest effective terms (as in force at `now`, or when it ended), its
        time zone, and the services whose signals it is judged on (those of every version)."""
        end = min(end_of(view) or FAR_FUTURE, now)
        latest = self.effective_terms(view.versions[-1]["terms"], end)
        services = sorted(
            {sid for v in view.versions for sid in (v["terms"].get("service") or {}).get("service_ids") or []}
            | set((latest.get("service") or {}).get("service_ids") or [])
        )
        return latest, latest.get("time_zone") or "UTC", services

    def _judgement(
        self, agreement_id: str, objective: dict[str, Any], version: int, measured: Interval, window: Interval,
        signals: SignalSet, as_of: datetime, tz: str, calendar: tuple[str, int] | None = None,
        suspended: list[Interval] | None = None,
    ) -> tuple[dict[str, Any], Calendar, list[Interval]]:  # fmt: skip
        """One objective over one window as recorded in events, with the calendar (the
        `calendar` (id, version) when given and held, else the latest) and exclusions it was
        judged with: what evaluation, recomputation and what-if share."""
        cal = self._calendar_for(objective, calendar)
        notice = timedelta(hours=float((objective.get("parameters") or {}).get("maintenance_notice_hours") or 24))
        exclusions = exclusions_for(objective, signals, measured, notice)
        # Suspended time is excluded like a declared exclusion (see the README).
        paused = [iv for iv in suspended or [] if iv.intersect(measured)]
        if paused:
            exclusions = union([*exclusions, *paused])
        evaluation = judge(objective, measured, cal, exclusions, signals, as_of, tz, version)
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
        signals: SignalSet, now: datetime, tz: str, suspended: list[Interval] | None = None,
    ) -> None:  # fmt: skip
        # A closed window is judged as of its end, whenever that happens: the same inputs give
        # the same digest at closing, at a restatement and at an auditor's recomputation.
        as_of = now if now < window.end else window.end
        # A closed window keeps the calendar version it closed with: a late signal restates it
        # from its signals, never from a calendar redefined since (history is never re-judged).
        pinned = recorded_calendar(agg.latest) if agg.closed else None
        evaluation, calendar, exclusions = self._judgement(
            agg.agreement_id, objective, version, measured, window, signals, as_of, tz, pinned, suspended
        )
        rates: dict[timedelta, Decimal] = {}
        if "budget_consumed" in evaluation and not evaluation["closed"]:
            rates = burn_rates(objective, calendar, exclusions, signals, now, window.duration, tz)
            # The burn rate over the fastest pair's long window (1 h for a 30-day window),
            # as of this evaluation: carried with it, not a reason on its own for a new event.
            evaluation["burn_rate"] = str(rates[reliability.burn_windows(window.duration)[0].long])
        agg.update(evaluation)
        if evaluation["closed"]:
            agg.close(evaluation)
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
                for pair in reliability.burn_alerts(rates, window.duration):
                    agg.burn_alert(
                        f"{pair.factor}x {pair.long}/{pair.short}",
                        str(pair.factor),
                        str(rates[pair.long]),
                        str(rates[pair.short]),
                    )

    # -- queries ---------------------------------------------------------------------------------------------------
    def window_ids(self, agreement_id: str) -> list[UUID]:
        """The ids of every window evaluation recorded for an agreement (in no order)."""
        with self._lock:
            while True:
                notes = self.recorder.select_notifications(
                    start=self._windows_position, limit=1000, topics=[WINDOW_TOPIC], inclusive_of_start=False
                )
                if not notes:
                    break
                for n in notes:
                    opened: Any = self.mapper.to_domain_event(n)
                    self._windows[opened.agreement_id].add(str(n.originator_id))
                self._windows_position = notes[-1].id
            return [UUID(i) for i in self._windows.get(agreement_id, ())]

    def window_evaluations(self, agreement_id: str) -> list[Any]:
        """Every window evaluation of an agreement, oldest window first."""
        rows: list[Any] = [self.repository.get(i) for i in self.window_ids(agreement_id)]
        return sorted(rows, key=lambda w: (w.objective_id, w.window_start))

    def agreement_view(self, caller: Principal | None, agreement_id: str) -> Any:
        """Metrics' view of an agreement, if the caller may read it (parties, auditors, admins, services)."""
        try:
            uid = AgreementView.create_id(agreement_id)
            view: Any = self.repository.get(uid)
        except AggregateNotFoundError:
            raise NotFoundError(f"agreement {agreement_id!r} is not known to metrics (not accepted yet?)") from None
        if not view.versions:
            raise NotFoundError(f"agreement {agreement_id} has no accepted version yet")
        parties = view.versions[-1]["terms"].get("parties") or {}
        if caller is not None and caller.role == "department" and caller.department not in parties.values():
            raise NotAPartyError(f"department {caller.department} is not a party to agreement {agreement_id}")
        return view

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

    def effective_terms(self, terms: dict[str, Any], when: datetime, depth: int = 0) -> dict[str, Any]:
        """The terms merged with their parent chain as in force at `when` (docs/domain.md §1)."""
        parent_id = terms.get("parent_agreement_id") or ""
        if not parent_id or depth > 8:
            return terms
        parent: Any = self._get_or(AgreementView.create_id(parent_id), lambda: None)
        if parent is None or not parent.versions:
            return terms
        parent_terms = self.effective_terms(_version_at(parent, when)["terms"], when, depth + 1)
        return effective_terms(parent_terms, terms)

    def _effective_version(self, view: AgreementView, when: datetime) -> dict[str, Any]:
        version = _version_at(view, when)
        return {**version, "terms": self.effective_terms(version["terms"], when)}

    def recompute(self, agreement_id: str, objective_id: str, window_start: str) -> dict[str, Any]:
        """Recompute a recorded window from the raw signals in the store and the terms in
        force (auditors): equal to what was recorded unless something was altered. Returns
        recorded, recomputed ({} when the objective is missing), matches and differences."""
        view = self.agreement_view(None, agreement_id)
        agg = self.window(None, agreement_id, objective_id, window_start)
        now = self.clock.now()
        signals = self.signal_set(self.scope(view, now)[2], from_store=True)
        check = self.check_window(view, agg, signals, now)
        return {"recorded": check.recorded, "recomputed": check.recomputed or {}, "matches": check.matches,
                "differences": check.differences}  # fmt: skip

    def rejudge(
        self, view: AgreementView, objective_id: str, window: Interval, signals: SignalSet, now: datetime,
        terms: dict[str, Any] | None = None, as_of: datetime | None = None, calendar: tuple[str, int] | None = None,
    ) -> dict[str, Any] | None:  # fmt: skip
        """One objective over one window judged again from `signals`: by the version in force
        at the window's start, or by `terms` (a proposal: what-if, agreement version 0).
        None when those terms have no such objective. A window ended by `now` is judged as of
        its end, as when it closed; an open one as of `now` (unless `as_of` says otherwise).
        `calendar`: the (id, version) the window was recorded with, used if the objective is
        judged by that calendar and metrics holds that version (else the latest)."""
        start = _parse(view.versions[0]["effective_from"])
        measured = Interval(max(window.start, start), min(window.end, end_of(view) or window.end))
        if measured.empty:
            return None
        if terms is None:
            version = self._effective_version(view, measured.start)
            tz = self.scope(view, now)[1]
        else:
            version = {"version": 0, "terms": self.effective_terms(terms, measured.start)}
            tz = version["terms"].get("time_zone") or self.scope(view, now)[1]
        objective = next(
            (o for o in version["terms"].get("objectives") or [] if o.get("objective_id") == objective_id), None
        )
        if objective is None:
            return None
        if as_of is None:
            as_of = now if now < window.end else window.end
        evaluation, _, _ = self._judgement(
            view.agreement_id,
            objective,
            version["version"],
            measured,
            window,
            signals,
            as_of,
            tz,
            calendar,
            suspensions(view),
        )
        return evaluation

    def check_window(self, view: AgreementView, agg: Any, signals: SignalSet, now: datetime) -> WindowCheck:
        """A recorded window recomputed from `signals` and compared with its latest recorded
        evaluation: value, status, input digest and breaches. A breach once recorded is never
        withdrawn (a restatement shows the change), so the record should hold the breaches the
        recomputed evaluation implies plus those its earlier recorded evaluations implied."""
        recorded = agg.latest
        window = Interval(_parse(agg.window_start), _parse(agg.window_end))
        # A closed window was judged as of its end; an open one is judged as of now. Either is
        # judged by the calendar version its evaluation records, not the calendar's latest.
        as_of = window.end if recorded.get("closed") else None
        pinned = recorded_calendar(recorded)
        fresh = self.rejudge(view, agg.objective_id, window, signals, now, as_of=as_of, calendar=pinned)
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

    def _recorded_evaluations(self, window_id: UUID) -> list[dict[str, Any]]:
        """Every evaluation a window's events recorded: running, closing, restated (old and new)."""
        out: list[dict[str, Any]] = []
        for e in self.repository.event_store.get(window_id):
            d = e.__dict__
            out += [d[k] for k in ("evaluation", "old", "new") if isinstance(d.get(k), dict)]
        return out


def recorded_calendar(evaluation: dict[str, Any]) -> tuple[str, int]:
    """The calendar (id, version) a recorded evaluation was judged with (version 0: none recorded)."""
    return evaluation.get("calendar_id") or "24x7", int(evaluation.get("calendar_version") or 0)


def breach_subjects(evaluation: dict[str, Any]) -> list[str]:
    """The breaches an evaluation implies: "" for the objective when BREACHED, and each
    late ticket or task it names."""
    return ([""] if evaluation.get("status") == BREACHED else []) + late_subjects(evaluation)


def _terms(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _iso(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat())


def _parse(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)


def _named_services(view: Any) -> set[str]:
    """The services an agreement's own versions name (without reading its parents)."""
    out: set[str] = set()
    for v in getattr(view, "versions", []):
        service = v["terms"].get("service") or {}
        out |= set(service.get("service_ids") or []) if isinstance(service, dict) else set()
    return out


def end_of(view: Any) -> datetime | None:
    """When an agreement ends, for measurement: when it was terminated or expired, else the
    end of its term unless it renews itself (then its expiry or renewal will say); None while
    open-ended. No window opens at or after it; a window across it is measured up to it."""
    if view.ended_at:
        return _parse(view.ended_at)
    if not view.versions or not getattr(view, "end_of_term", ""):
        return None
    term = view.versions[-1]["terms"].get("term") or {}
    return None if term.get("auto_renew") else _parse(view.end_of_term)


def suspensions(view: Any) -> list[Interval]:
    """The intervals the agreement was suspended (one still suspended: until far in the future)."""
    return [Interval(_parse(s), _parse(e) if e else FAR_FUTURE) for s, e in getattr(view, "suspended", [])]


def _version_at(view: AgreementView, when: datetime) -> dict[str, Any]:
    """The version in force at `when` (the window's start): history is never re-judged."""
    found = view.versions[0]
    for v in view.versions:
        if _parse(v["effective_from"]) <= when:
            found = v
    return found


def _windows(objective: dict[str, Any], span: Interval, time_zone: str) -> list[Interval]:
    w = objective.get("window") or {}
    kind = (w.get("kind") or "WINDOW_KIND_MONTH").removeprefix("WINDOW_KIND_")
    if kind == "ROLLING":
        # A rolling window is judged at every local midnight: the N days before it.
        days = int(w.get("rolling_days") or 30)
        out = []
        for day in calendar_windows("DAY", span, time_zone):
            out.append(Interval(day.end - timedelta(days=days), day.end))
        return out
    return list(calendar_windows(kind, span, time_zone))
