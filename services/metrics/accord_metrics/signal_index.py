"""The signal index: recording signals (dedupe, corrections), indexing them, and re-reading them from the store."""

from __future__ import annotations

import base64
import bisect
import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError

from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.metrics.v1 import signals_pb2
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_kit.timeline import Interval
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


# The formula inputs a window selects by time (`ServiceSignals.select`), and the instant each is
# indexed by: a call by when it entered the queue, a request count by its start (a probe: its
# instant), an outage by its start (with its end, below). Every other kind is read whole.
_BY_TIME = frozenset({"calls", "requests", "outages"})
_SLACK_US = 1_000  # a selection's margin (µs) either side: a superset, which the formulas filter again


def _us(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1_000


def _time_key(s: signals_pb2.Signal) -> int:
    kind = s.WhichOneof("kind")
    if kind == "call":
        return _us(s.call.entered_queue)
    if kind == "probe":
        return _us(s.probe.at)
    if kind == "requests":
        return _us(s.requests.start)
    return _us(s.outage.start)


@dataclass
class ServiceSignals:
    """One service's signals in memory: every content each id was recorded with (digests,
    for dedupe and corrections), the latest content per id and the order ids were first
    recorded in, an index by time of the calls, request counts and outages, and the formula
    inputs converted from the latest contents so far (converted lazily, when a window selects
    them, so recording and a restart's indexing stay cheap). A signal's latest content replaces
    its earlier one in place (its first recording's order) among the formula inputs."""

    # signal id → digests of every content it was recorded with, for the ids recorded with more than
    # one (a signal recorded once is its latest content: its digest is computed when asked for).
    versions: dict[str, list[str]] = field(default_factory=dict)
    # signal id → its latest content, serialised (a parsed Signal takes ≈ 4 × the memory; one is
    # parsed again when a window converts it or a signal with its id comes again)
    latest: dict[str, bytes] = field(default_factory=dict)
    count: int = 0  # signal ids held: the next one's rank (the order of first recordings)
    # What tells whether an open window's evaluation can change with time alone (judging.py):
    # the outages still under way (no end reported) and the latest instant any other signal an
    # availability (its burn rates) reads reaches.
    ongoing: dict[str, tuple[int, int]] = field(default_factory=dict)  # signal id → (its start in µs, rank)
    reaches_us: int | None = None  # `reaches`, in µs since the epoch
    # formula input list → [(instant in µs, rank, signal id)] sorted: the calls, request counts, outages
    by_time: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    longest_outage: int = 0  # µs: the longest outage with a reported end (an outage's start bound)
    whole: dict[str, list[str]] = field(default_factory=dict)  # every other input list → ids, by rank
    converted: dict[str, Any] = field(default_factory=dict)  # signal id → its latest content as a formula input
    # The inputs the evaluation round under way selected (see begin_round): what is kept after it.
    selected: dict[str, Any] | None = None

    def classify(self, s: signals_pb2.Signal, where: str) -> str:
        """NEW; DUPLICATE (a content this id was already recorded with: a retry, never a
        step back); COMPLETION (the end of an outage first reported as under way); or
        CORRECTION (another content). A correction must keep the signal's kind."""
        held = self.contents(s.signal_id)
        if held is None:
            return NEW
        if content_digest(s) in held:
            return DUPLICATE
        before = self.content(s.signal_id)
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

    @property
    def reaches(self) -> datetime | None:
        """The latest instant a signal availability reads (its burn rates) reaches, outages under
        way aside (`ongoing`)."""
        return None if self.reaches_us is None else _EPOCH + timedelta(microseconds=self.reaches_us)

    def content(self, signal_id: str) -> signals_pb2.Signal:
        """A signal's latest content (its id must be known)."""
        return signals_pb2.Signal.FromString(self.latest[signal_id])

    def contents(self, signal_id: str) -> list[str] | None:
        """The digests of every content a signal id was recorded with (None: an unknown id)."""
        held = self.versions.get(signal_id)
        if held is None and signal_id in self.latest:
            return [content_digest(self.content(signal_id))]
        return held

    def earliest(self, signal_id: str) -> datetime | None:
        return _earliest(self.content(signal_id)) if signal_id in self.latest else None

    def note(self, items: list[signals_pb2.Signal]) -> None:
        for s in items:
            sid = s.signal_id
            before = self.content(sid) if sid in self.latest else None
            if before is not None:  # another content (a completion or correction): every digest kept
                if sid not in self.versions:
                    self.versions[sid] = [content_digest(before)]
                self.versions[sid].append(content_digest(s))
            self.latest[sid] = s.SerializeToString()
            self.converted.pop(sid, None)
            if self.selected is not None:
                self.selected.pop(sid, None)
            kind = str(s.WhichOneof("kind"))
            name = _LIST_OF[kind]
            rank = 0
            if before is None:
                rank, self.count = self.count, self.count + 1
                if name not in _BY_TIME:
                    self.whole.setdefault(name, []).append(sid)
            if name in _BY_TIME:
                rank = self._index_time(name, sid, rank, _time_key(s), None if before is None else _time_key(before))
            if kind == "outage":
                if s.outage.HasField("end"):
                    self.ongoing.pop(sid, None)
                    self.longest_outage = max(self.longest_outage, _us(s.outage.end) - _us(s.outage.start))
                else:
                    self.ongoing[sid] = (_us(s.outage.start), rank)
            if kind not in _BUDGETED_INPUTS:
                continue
            reaches = _latest_us(s)  # an outage under way counts among the ongoing ones instead
            if reaches is not None and (self.reaches_us is None or reaches > self.reaches_us):
                self.reaches_us = reaches

    def _index_time(self, name: str, sid: str, rank: int, key: int, before: int | None) -> int:
        """Index a signal at instant `key` (µs); `before`: the instant its earlier content was
        indexed at (its rank is kept). Returns its rank."""
        index = self.by_time.setdefault(name, [])
        if before is not None:  # a later content: found where the earlier one is, moved if its instant changed
            at = bisect.bisect_left(index, (before,))
            while index[at][2] != sid:
                at += 1
            rank = index[at][1]
            if before == key:
                return rank
            del index[at]
        entry = (key, rank, sid)
        if not index or index[-1] < entry:
            index.append(entry)  # the usual case: signals arrive roughly in time order
        else:
            bisect.insort(index, entry)
        return rank

    def select(self, span: Interval | None = None, all_calls: bool = False) -> SignalSet:
        """The formula inputs, each list in the order its signals were first recorded: all of
        them, or (`span`) the calls and request counts from `span`'s start to its end and the
        outages that reach into it or are under way — a superset of what any window within
        `span` (and its burn rates' look-backs) reads; every other kind whole. `all_calls`: every
        call (first-contact resolution looks at contacts on either side of the window)."""
        out = SignalSet()
        for name, ids in self.whole.items():
            getattr(out, name).extend(self._inputs(ids))
        for name, index in self.by_time.items():
            if span is None or (name == "calls" and all_calls):
                found = list(index)
            else:
                lo, hi = _instant_us(span.start) - _SLACK_US, _instant_us(span.end) + _SLACK_US
                if name == "outages":
                    lo -= self.longest_outage
                found = index[bisect.bisect_left(index, (lo,)) : bisect.bisect_right(index, (hi, self.count))]
                if name == "outages" and self.ongoing:
                    inside = {e[2] for e in found}
                    found += [(k, r, i) for i, (k, r) in self.ongoing.items() if k <= hi and i not in inside]
            found.sort(key=_rank)  # the order of first recordings
            getattr(out, name).extend(self._inputs([e[2] for e in found]))
        return out

    def begin_round(self) -> None:
        """An evaluation round starts: the inputs it selects are those kept after it."""
        self.selected = {}

    def end_round(self) -> None:
        """An evaluation round ended: when it selected any of this service's inputs, only those
        stay converted (its open windows', and those of closed windows it judged, until the next
        round that selects any) — the others are converted again from their latest content if a
        window needs them. What stays converted is bounded by what a round judges, not by
        history; a round that judged none of the service's windows keeps what was converted."""
        if self.selected:
            self.converted = self.selected
        self.selected = None

    def overlapping(self, span: Interval) -> list[signals_pb2.Signal]:
        """The latest contents of the outages (selected by time: `select`) and maintenance
        signals that may overlap `span` — a superset, in no order, for the caller to filter."""
        index = self.by_time.get("outages", [])
        lo = _instant_us(span.start) - _SLACK_US - self.longest_outage
        hi = _instant_us(span.end) + _SLACK_US
        found = index[bisect.bisect_left(index, (lo,)) : bisect.bisect_right(index, (hi, self.count))]
        ids = {e[2] for e in found} | set(self.ongoing) | set(self.whole.get("maintenance", []))
        return [self.content(i) for i in ids]

    def _inputs(self, ids: list[str]) -> list[Any]:
        converted, latest, selected = self.converted, self.latest, self.selected
        out = []
        for sid in ids:
            item = converted.get(sid)
            if item is None:
                item = converted[sid] = _input(signals_pb2.Signal.FromString(latest[sid]))
            if selected is not None:
                selected[sid] = item
            out.append(item)
        return out


def _latest_us(s: signals_pb2.Signal) -> int | None:
    """`_latest` in µs since the epoch (None: an outage under way), read without datetimes
    (exactly: a Timestamp's datetime drops its nanoseconds below the microsecond too)."""
    kind = s.WhichOneof("kind")
    if kind == "probe":
        return _us(s.probe.at)
    body = s.outage if kind == "outage" else s.maintenance if kind == "maintenance" else s.requests
    return _us(body.end) if body.HasField("end") else None


def _rank(entry: tuple[int, int, str]) -> int:
    return entry[1]


def _instant_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _input(s: signals_pb2.Signal) -> Any:
    """One signal as its formula input."""
    one = SignalSet()
    _add(one, s)
    return getattr(one, _LIST_OF[str(s.WhichOneof("kind"))])[0]


@dataclass
class _Absorbed:
    """Signals re-read from the store in one pass, held only as formula inputs (a month of a
    million signals is held once): a signal's later content replaces its earlier one in place."""

    signals: SignalSet = field(default_factory=SignalSet)
    at: dict[str, tuple[str, int]] = field(default_factory=dict)  # signal id → (SignalSet list, index)

    def absorb(self, items: list[signals_pb2.Signal]) -> None:
        for s in items:
            name = _LIST_OF[str(s.WhichOneof("kind"))]
            item = _input(s)
            target: list[Any] = getattr(self.signals, name)
            at = self.at.get(s.signal_id)
            if at is None:
                self.at[s.signal_id] = (name, len(target))
                target.append(item)
            else:  # a later content (completion, correction) replaces the earlier one in place
                target[at[1]] = item


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
                    before = entry.content(s.signal_id)
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
            held = [entry.content(sid) for sid in entry.latest if sid.startswith(id_prefix)]
            ends = [sig.instant(s.requests.end) for s in held if s.WhichOneof("kind") == "requests"]
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

    def signal_set(
        self, service_ids: list[str], *, from_store: bool = False, span: Interval | None = None,
        all_calls: bool = False,
    ) -> SignalSet:  # fmt: skip
        """The signals of these services as formula inputs: from the in-memory index (all, or
        those a window within `span` reads: `ServiceSignals.select`), or re-read from the
        stored batches (auditors' recomputation)."""
        if from_store:
            return combined(self.stored_signals(set(service_ids)).sets, service_ids)
        with self._lock:
            self._refresh_signals()
            sources = {sid: self._services[sid].select(span, all_calls) for sid in service_ids}
        return combined(sources, service_ids)

    def stored_signals(self, service_ids: set[str] | None = None) -> StoredSignals:
        """Every stored signal batch (of these services) re-read from the store in one pass,
        independently of the in-memory index, as formula inputs per service."""
        entries: dict[str, _Absorbed] = {}
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
                entries.setdefault(batch.service_id, _Absorbed()).absorb(items)
                count += len(items)
            position = notes[-1].id
        return StoredSignals({sid: e.signals for sid, e in entries.items()}, count)
