"""The signal index: recording signals (dedupe, corrections), indexing them, and re-reading them from the store."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError

from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.metrics.v1 import signals_pb2
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_metrics import signals as sig
from accord_metrics.codec import batch_message
from accord_metrics.domain import (
    AgreementView,
    KnownService,
    NotTheProviderError,
    SignalBatch,
    SignalCorrection,
    UnknownServiceError,
)
from accord_metrics.evaluation import ONGOING, SignalSet
from accord_metrics.signals import validate

if TYPE_CHECKING:
    from accord_metrics.views import AgreementViews as _Host
else:
    _Host = object

BATCH_TOPIC = SignalBatch.Recorded.TOPIC
CORRECTION_TOPIC = SignalCorrection.Corrected.TOPIC
SIGNAL_TOPICS = [BATCH_TOPIC, CORRECTION_TOPIC]  # every recorded signal content, in log order
FAR_FUTURE = ONGOING


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


# The signals availability (time- and request-based, so its burn rates) reads.
_BUDGETED_INPUTS = frozenset({"outage", "maintenance", "requests", "probe"})


def content_digest(s: signals_pb2.Signal) -> str:
    """The digest of a signal's content (deterministic wire format): what tells a re-send
    (same digest) from a correction (same id, another digest). Its provenance is not part of
    its content: the same signal re-sent by another way (NATS after gRPC, the CLI after a
    tool) is a duplicate, not a correction — and the digests of signals stored before
    provenance existed are unchanged."""
    if s.HasField("provenance"):
        bare = signals_pb2.Signal()
        bare.CopyFrom(s)
        bare.ClearField("provenance")
        s = bare
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
    # What tells whether an open window's evaluation can change with time alone (judging.py):
    # the outages still under way (no end reported) and the latest instant any other signal an
    # availability (its burn rates) reads reaches.
    ongoing: set[str] = field(default_factory=set)
    reaches: datetime | None = None

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
            if s.WhichOneof("kind") == "outage":
                if s.outage.HasField("end"):
                    self.ongoing.discard(s.signal_id)
                else:
                    self.ongoing.add(s.signal_id)
            if s.WhichOneof("kind") not in _BUDGETED_INPUTS:
                continue
            reaches = _latest(s)  # an outage under way counts among the ongoing ones instead
            if reaches < FAR_FUTURE and (self.reaches is None or reaches > self.reaches):
                self.reaches = reaches
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


def _earliest(s: signals_pb2.Signal) -> datetime:
    """The instant from which a signal can change evaluations."""
    kind = str(s.WhichOneof("kind"))
    body = getattr(s, kind)
    first = {
        "outage": "start", "maintenance": "start", "requests": "start", "probe": "at", "incident": "failure_start",
        "call": "entered_queue", "ticket": "opened", "task": "received", "lead": "created", "deal": "closed_at",
    }[kind]  # fmt: skip
    return sig.instant(getattr(body, first))


def _latest(s: signals_pb2.Signal) -> datetime:
    """The latest instant a signal reaches (an outage under way: far in the future)."""
    kind = str(s.WhichOneof("kind"))
    body = getattr(s, kind)
    if kind in ("outage", "maintenance", "requests"):
        return sig.instant(body.end) if body.HasField("end") else FAR_FUTURE
    return _earliest(s)


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


class SignalIndex(_Host):
    """Recording signals and indexing them (a mixin of `Metrics`, whose constructor sets the
    state declared here)."""

    _lock: threading.RLock
    _providers: dict[str, str]
    _services: dict[str, ServiceSignals]
    _signals_position: int
    _judged_position: int  # signals up to this log position were judged by a round (judging.JUDGED)
    _changed: dict[str, datetime]  # service → earliest instant of signals not yet evaluated
    _fcr_services: tuple[int, dict[str, str]] | None  # (views position, services)

    if TYPE_CHECKING:  # judging.Judging.scope

        def scope(self, view: AgreementView, now: datetime) -> tuple[dict[str, Any], str, list[str]]: ...

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
    def record(
        self, caller: Principal, signals: list[signals_pb2.Signal], reason: str = "", *, via: str = ""
    ) -> Recorded:
        """Validate, authorise and store one batch: one event per service, in one
        transaction. Each signal is stored with its provenance; one that names no source gets
        `via` (the way it arrived: "grpc", "nats") when given. Signals the service already
        holds with the same content (or repeated in the batch) are counted as duplicates and
        not stored again. A known signal id with
        another content is a correction: stored as its own event (`SignalCorrection`: the
        caller, the digest of the content it replaces, the fields that changed, `reason`),
        so that the windows it changes are judged again (restated once closed)."""
        for i, s in enumerate(signals):
            validate(s, i)
        if via:
            signals = [sig.with_source(s, via) for s in signals]
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

    def _index(self, service_id: str, items: list[signals_pb2.Signal], position: int | None = None) -> None:
        """Index one stored batch (at log `position`, None: just stored by this process). A batch
        a round already judged (at or before the durable judged position: a process that starts
        indexes the whole log) is held, but no change for the next round."""
        entry = self._services[service_id]
        if position is not None and position <= self._judged_position:
            entry.note(items)
            return
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
                    self._index(batch.service_id, list(batch_message(batch.batch).signals), n.id)
                self._signals_position = notes[-1].id

    def last_request_count_end(self, service_id: str, id_prefix: str) -> datetime | None:
        """The latest end among a service's request counts whose signal ids start with
        `id_prefix`: where a pulling source (prometheus.py) left off, read from the signals it
        recorded — its position is kept by the very events it records."""
        with self._lock:
            self._refresh_signals()
            entry = self._services.get(service_id)
            if entry is None:
                return None
            ends = [
                sig.instant(s.requests.end)
                for sid, s in entry.latest.items()
                if sid.startswith(id_prefix) and s.WhichOneof("kind") == "requests"
            ]
        return max(ends, default=None)

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
