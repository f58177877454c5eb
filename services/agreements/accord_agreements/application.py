"""The agreements application: owns the agreements service's event store — agreements with
all their versions, and the departments, services and calendars they name. Commands check
the caller, the references and the underpinning rule, and save atomically with the record
of the client's request id; queries read aggregates and an index of agreements kept by
tailing the store's own log."""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Notification

from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord_agreements.codec import codec
from accord_agreements.domain import (
    LIVE,
    NOTHING_IN_FORCE,
    Actor,
    Agreement,
    Calendar,
    ConflictError,
    Department,
    Difference,
    InForce,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
    ProcessedRequest,
    Service,
    TransitionError,
    UnknownReferenceError,
    known_effective_differences,
    reference_id,
)
from accord_agreements.terms import (
    CALENDAR_24X7,
    LEVEL_RANK,
    UNDERPINNING_KINDS,
    TermsDict,
    check_not_ended,
    dec,
    diff,
    merge,
    normalise,
    parse_instant,
    stricter_or_equal,
    valid_time_zone,
    validate,
)
from accord_kit.application import AccordApplication
from accord_kit.clock import Clock
from accord_kit.envelope import to_envelope, unpack
from accord_kit.topics import event_topics

REFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
AGREEMENT_TOPICS = event_topics(Agreement)  # the declared names of its stored events
# The events that carry an accepted version's terms (Accepted: version 1; AmendmentAccepted).
VERSION_TOPICS = frozenset(t for t in AGREEMENT_TOPICS if t.endswith((".Accepted", ".AmendmentAccepted")))
VERSION_TERMS_CACHE = 4096  # accepted versions' terms kept in memory (immutable, so never stale)


class AlreadyRegisteredError(Exception):
    pass


class UnderpinningError(TransitionError):
    """An SLA objective is stricter than an objective of an agreement underpinning it."""


class LogEntry(NamedTuple):
    """Where one event of an agreement sits in the service's log."""

    version: int  # the agreement's version the event made
    position: int
    previous_position: int  # the log's position before it (any aggregate's), as ReadEvents serves it


@dataclass(frozen=True)
class AgreementAt:
    """An agreement at an instant on both time axes (docs/domain.md §6)."""

    known: Agreement | None  # as the store knew it then; None when it did not exist yet
    in_force_as_known: InForce  # what was in force at the instant, as known then
    effective: InForce  # what was in force at the instant, as known now
    differences: list[Difference]  # between the two answers about what was in force
    term_changes: list[dict[str, Any]]  # terms in force as known then → as known now (diff's form)


@dataclass
class Summary:
    agreement_id: str
    title: str
    state: str
    kind: str
    level: str
    provider: str
    customer: str
    service_ids: list[str]
    version: int
    revision: int
    log: list[LogEntry] = field(default_factory=list)


class Agreements(AccordApplication):
    """Agreements, their versions and amendments, and the reference data they name."""

    name = "Agreements"
    service = "agreements"
    snapshotting_intervals = {Agreement: 50}
    # The library's aggregate cache: a command loads its agreement from memory and reads only
    # the events stored since (fast-forward, so another process's saves are seen), instead of
    # decoding the snapshot and the events after it. Commands get a deep copy.
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000"}

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self._index: dict[str, Summary] = {}
        self._index_position = 0
        self._index_lock = threading.Lock()
        self._version_terms: OrderedDict[tuple[UUID, int], TermsDict] = OrderedDict()
        self._version_terms_lock = threading.Lock()
        self._cache_locks = [threading.Lock() for _ in range(64)]
        # Reference records (departments, services, calendars) are never removed, so one seen
        # to exist exists for good: commands check their references without loading them.
        self._known_references: set[UUID] = set()

    # -- helpers ------------------------------------------------------------------------------
    def _get(self, cls: type[Aggregate], aggregate_id: UUID, what: str) -> Any:
        try:
            agg: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"{what} does not exist") from None
        if not isinstance(agg, cls):
            raise NotFoundError(f"{what} does not exist")
        return agg

    def get_agreement_aggregate(self, agreement_id: str, version: int | None = None) -> Agreement:
        try:
            uid = UUID(agreement_id)
        except (ValueError, TypeError):
            raise NotFoundError(f"agreement {agreement_id!r} does not exist (not an agreement id)") from None
        try:
            if version is None:
                # The library fast-forwards a cached aggregate under a lock but copies it
                # outside it: one lock per stripe of ids keeps a copy from seeing half an event.
                with self._cache_locks[uid.int % len(self._cache_locks)]:
                    agg: Any = self.repository.get(uid)
            else:
                agg = self.repository.get(uid, version=version)
        except AggregateNotFoundError:
            raise NotFoundError(f"agreement {agreement_id} does not exist") from None
        if not isinstance(agg, Agreement):
            raise NotFoundError(f"agreement {agreement_id} does not exist")
        return agg

    # -- versions' terms, read from the events that accepted them ------------------------------
    def version_terms(self, agg: Agreement, entry: dict[str, Any]) -> TermsDict:
        """The terms of an accepted version. The aggregate keeps only the current terms;
        an earlier version's are in the event that accepted it, read from the store on
        demand (decoding only those events) and remembered, since they never change."""
        if "terms" in entry:  # an entry made by with_terms
            terms: TermsDict = entry["terms"]
            return terms
        n = int(entry["version"])
        if n == agg.terms_version:
            return agg.terms
        key = (agg.id, n)
        with self._version_terms_lock:
            if key in self._version_terms:
                self._version_terms.move_to_end(key)
                return self._version_terms[key]
        found: dict[int, TermsDict] = {}
        for stored in self.recorder.select_events(agg.id, lte=agg.version):
            if stored.topic in VERSION_TOPICS:
                e: Any = self.mapper.to_domain_event(stored)
                found[int(e.version)] = e.terms
        if n not in found:
            raise NotFoundError(f"agreement {agg.id} has no stored terms for version {n}")
        with self._version_terms_lock:
            for v, terms in found.items():
                self._version_terms[(agg.id, v)] = terms
                self._version_terms.move_to_end((agg.id, v))
            while len(self._version_terms) > VERSION_TERMS_CACHE:
                self._version_terms.popitem(last=False)
        return found[n]

    def with_terms(self, agg: Agreement, entry: dict[str, Any] | None) -> dict[str, Any] | None:
        """A version's entry with its terms (None stays None)."""
        return None if entry is None else {**entry, "terms": self.version_terms(agg, entry)}

    def _previous_outcome(self, key: str) -> ProcessedRequest | None:
        if not key:
            return None
        try:
            rec: Any = self.repository.get(ProcessedRequest.create_id(key))
        except AggregateNotFoundError:
            return None
        return rec if isinstance(rec, ProcessedRequest) else None

    @staticmethod
    def _request_key(actor: Actor, request_id: str) -> str:
        if not request_id:
            return ""
        if len(request_id) > 200:
            raise InvalidRequestError("request_id must be at most 200 characters")
        return f"{actor.subject}|{actor.role}|{actor.department}|{request_id}"

    def _save_command(self, actor: Actor, request_id: str, agg: Agreement, extra: str = "") -> tuple[Agreement, str]:
        key = self._request_key(actor, request_id)
        records: list[Any] = [agg]
        if key:
            records.append(ProcessedRequest(key, str(agg.id), agg.version, extra))
        try:
            self.save(*records)
        except IntegrityError:
            prior = self._previous_outcome(key)
            if prior is not None:
                return self.get_agreement_aggregate(prior.agreement_id, prior.revision), prior.extra
            current = self.get_agreement_aggregate(str(agg.id))
            raise ConflictError(
                f"agreement {agg.id} was changed concurrently; its revision is now {current.version}"
            ) from None
        self._keep_saved(agg)
        return agg, extra

    def _keep_saved(self, agg: Agreement) -> None:
        """A copy of the agreement just saved becomes the cached one, so that the next command
        on it finds nothing to fast-forward (it would otherwise read back and decode the events
        this command wrote). Its save succeeded right after the version it was loaded at (the
        store refuses a version that exists), so it is exactly the stored state at its version.
        A cached copy already further on (another thread's save) is kept. The cache holds a
        copy, not `agg` itself: a later fast-forward changes the cached one in place, and the
        caller still reads `agg` for its answer."""
        cache = self.repository.cache
        if cache is None:
            return
        kept = copy.deepcopy(agg)  # cheap: see Agreement.__deepcopy__
        with self._cache_locks[agg.id.int % len(self._cache_locks)]:
            try:
                cached: Any = cache.get(agg.id)
            except KeyError:
                cached = None
            if cached is None or cached.version < agg.version:
                cache.put(agg.id, kept)

    def _command(
        self,
        actor: Actor,
        agreement_id: str,
        expected_revision: int,
        request_id: str,
        change: Any,
    ) -> tuple[Agreement, str]:
        """Run `change(agreement) -> extra` once per request id, with optimistic concurrency."""
        prior = self._previous_outcome(self._request_key(actor, request_id))
        if prior is not None:
            return self.get_agreement_aggregate(prior.agreement_id, prior.revision), prior.extra
        agg = self.get_agreement_aggregate(agreement_id)
        if expected_revision and expected_revision != agg.version:
            raise ConflictError(
                f"agreement {agreement_id} is at revision {agg.version}, not the expected {expected_revision}"
            )
        extra = change(agg) or ""
        return self._save_command(actor, request_id, agg, extra)

    # -- reference data --------------------------------------------------------------------------
    def register_department(self, department_id: str, name: str) -> Department:
        _check_reference_id("department_id", department_id)
        if not name.strip():
            raise InvalidRequestError("name is required")
        dept = Department(department_id, name.strip())
        self._save_new(dept, f"department {department_id}")
        return dept

    def _save_new(self, agg: Aggregate, what: str) -> None:
        """Save a reference record whose id derives from its key: a second one conflicts."""
        try:
            self.save(agg)
        except IntegrityError:
            raise AlreadyRegisteredError(f"{what} is already registered") from None

    def register_service(self, service_id: str, name: str, provider_department_id: str) -> Service:
        _check_reference_id("service_id", service_id)
        if not name.strip():
            raise InvalidRequestError("name is required")
        self._check_exists(
            Department, reference_id("department", provider_department_id), f"department {provider_department_id!r}"
        )
        svc = Service(service_id, name.strip(), provider_department_id)
        self._save_new(svc, f"service {service_id}")
        return svc

    def define_calendar(self, calendar_id: str, definition: dict[str, Any]) -> Calendar:
        _check_reference_id("calendar_id", calendar_id)
        if calendar_id == CALENDAR_24X7:
            raise InvalidRequestError(f"calendar id {CALENDAR_24X7!r} is built in")
        _validate_calendar(definition)
        try:
            cal: Any = self.repository.get(reference_id("calendar", calendar_id))
            assert isinstance(cal, Calendar)
            cal.redefine(definition)
            self.save(cal)
            return cal
        except AggregateNotFoundError:
            cal = Calendar(calendar_id, definition)
            self._save_new(cal, f"calendar {calendar_id}")
            return cal

    def _check_exists(self, cls: type[Aggregate], aggregate_id: UUID, what: str) -> None:
        """NotFoundError unless the reference record exists (loaded only until it is seen once)."""
        if aggregate_id not in self._known_references:
            self._get(cls, aggregate_id, what)
            self._known_references.add(aggregate_id)

    def get_department(self, department_id: str) -> Department:
        return self._get(Department, reference_id("department", department_id), f"department {department_id!r}")

    def get_service(self, service_id: str) -> Service:
        return self._get(Service, reference_id("service", service_id), f"service {service_id!r}")

    def get_calendar(self, calendar_id: str) -> Calendar:
        return self._get(Calendar, reference_id("calendar", calendar_id), f"calendar {calendar_id!r}")

    def list_reference(self, cls: type[Aggregate]) -> list[Any]:
        topics = event_topics(cls)
        out: list[Any] = []
        seen: set[UUID | str] = set()
        position = 0
        while True:
            notes = self.recorder.select_notifications(start=position, limit=1000, inclusive_of_start=False)
            if not notes:
                break
            for n in notes:
                if n.topic in topics and n.originator_id not in seen:
                    seen.add(n.originator_id)
                    out.append(self.repository.get(n.originator_id))
            position = notes[-1].id
        return out

    # -- references named by terms ------------------------------------------------------------------
    def check_references(self, terms: TermsDict, agreement_id: str = "") -> None:
        parties = terms["parties"]
        missing = []
        for f in ("provider_department_id", "customer_department_id"):
            try:
                self._check_exists(Department, reference_id("department", parties[f]), f"department {parties[f]!r}")
            except NotFoundError:
                missing.append(f"parties.{f}: department {parties[f]!r} is not registered")
        service = terms.get("service") or {}
        for i, sid in enumerate(service.get("service_ids") or []):
            try:
                self._check_exists(Service, reference_id("service", sid), f"service {sid!r}")
            except NotFoundError:
                missing.append(f"service.service_ids[{i}]: service {sid!r} is not registered")
        calendars = [("service.coverage_calendar_id", service.get("coverage_calendar_id"))]
        calendars += [
            (f"objectives[{i}].calendar_id", o.get("calendar_id")) for i, o in enumerate(terms.get("objectives") or [])
        ]
        for where, cal in calendars:
            if cal and cal != CALENDAR_24X7:
                try:
                    self._check_exists(Calendar, reference_id("calendar", cal), f"calendar {cal!r}")
                except NotFoundError:
                    missing.append(f"{where}: calendar {cal!r} is not defined")
        parent = terms.get("parent_agreement_id") or ""
        if parent:
            if parent == agreement_id:
                missing.append("parent_agreement_id: an agreement cannot be its own parent")
            else:
                try:
                    p = self.get_agreement_aggregate(parent)
                except NotFoundError:
                    missing.append(f"parent_agreement_id: agreement {parent} does not exist")
                else:
                    if LEVEL_RANK[p.terms["level"]] >= LEVEL_RANK[terms["level"]]:
                        missing.append(
                            f"parent_agreement_id: the parent is {p.terms['level']}, "
                            f"which is not above {terms['level']}"
                        )
        if missing:
            raise UnknownReferenceError("; ".join(missing))

    def check_underpinning(self, terms: TermsDict) -> None:
        """Every underpinning objective for the same metric is at least as strict."""
        problems = []
        for o in terms.get("objectives") or []:
            for ref in o.get("underpinned_by") or []:
                try:
                    under = self.get_agreement_aggregate(ref)
                except NotFoundError:
                    problems.append(
                        f"objective {o['objective_id']!r} names underpinning agreement {ref}, which does not exist"
                    )
                    continue
                if under.terms.get("kind") not in UNDERPINNING_KINDS:
                    problems.append(
                        f"objective {o['objective_id']!r}: agreement {ref} is not an OLA or underpinning contract"
                    )
                    continue
                for u, ut, ot, sign in _weaker(o, self.effective_terms(under)):
                    problems.append(
                        f"objective {o['objective_id']!r} ({o['metric']} {sign} {ot}) is underpinned by objective "
                        f"{u['objective_id']!r} of agreement {ref} ({sign} {ut}), which is less strict"
                    )
        if problems:
            raise UnderpinningError("; ".join(problems))

    def check_underpinned_slas(self, agreement_id: str, terms: TermsDict) -> None:
        """The underpinning rule from the other side: new terms of an OLA or underpinning
        contract (a revision, a proposal, an amendment) stay at least as strict as every
        objective of a live SLA that names it in `underpinned_by`."""
        if terms.get("kind") not in UNDERPINNING_KINDS:
            return
        agg = self.get_agreement_aggregate(agreement_id)
        mine = self.effective_terms(agg, terms)
        problems = []
        for summary in self.list_summaries():
            if summary.kind != "AGREEMENT_KIND_SLA" or summary.state not in LIVE:
                continue
            sla = self.get_agreement_aggregate(summary.agreement_id)
            for o in self.effective_terms(sla).get("objectives") or []:
                if agreement_id not in (o.get("underpinned_by") or []):
                    continue
                for u, ut, ot, sign in _weaker(o, mine):
                    problems.append(
                        f"objective {u['objective_id']!r} of agreement {agreement_id} ({sign} {ut}) would be less "
                        f"strict than objective {o['objective_id']!r} ({o['metric']} {sign} {ot}) of "
                        f"{sla.state} SLA {sla.id}, which it underpins"
                    )
        if problems:
            raise UnderpinningError("; ".join(problems))

    # -- lifecycle ----------------------------------------------------------------------------------
    def draft(self, actor: Actor, terms: TermsDict, request_id: str = "") -> Agreement:
        prior = self._previous_outcome(self._request_key(actor, request_id))
        if prior is not None:
            return self.get_agreement_aggregate(prior.agreement_id, prior.revision)
        provider = (terms.get("parties") or {}).get("provider_department_id", "")
        if actor.role != "department" or actor.department != provider:
            who = f"department {actor.department}" if actor.role == "department" else f"role {actor.role}"
            raise NotAPartyError(
                f"only the provider named in the terms ({provider or 'none given'}) may draft this agreement; "
                f"{who} may not"
            )
        terms = normalise(terms)
        validate(terms)
        check_not_ended(terms, self.clock.now())
        self.check_references(terms)
        agg = Agreement(terms=terms, drafted_at=self.clock.now())
        return self._save_command(actor, request_id, agg)[0]

    def revise(
        self, actor: Actor, agreement_id: str, terms: TermsDict, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        terms = normalise(terms)

        def change(a: Agreement) -> None:
            a.revise(actor, terms)
            check_not_ended(terms, self.clock.now())
            self.check_references(terms, agreement_id)
            self.check_underpinned_slas(agreement_id, terms)

        return self._command(actor, agreement_id, expected, request_id, change)[0]

    def propose(self, actor: Actor, agreement_id: str, expected: int = 0, request_id: str = "") -> Agreement:
        def change(a: Agreement) -> None:
            a.propose(actor)
            check_not_ended(a.terms, self.clock.now())
            self.check_references(a.terms, agreement_id)
            self.check_underpinning(a.terms)
            self.check_underpinned_slas(agreement_id, a.terms)

        return self._command(actor, agreement_id, expected, request_id, change)[0]

    def reject_proposal(
        self, actor: Actor, agreement_id: str, reason: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        return self._command(actor, agreement_id, expected, request_id, lambda a: a.reject_proposal(actor, reason))[0]

    def accept(self, actor: Actor, agreement_id: str, expected: int = 0, request_id: str = "") -> Agreement:
        def change(a: Agreement) -> None:
            a.accept(actor, self.clock.now())
            check_not_ended(a.terms, self.clock.now())
            self.check_underpinning(a.terms)
            self.check_underpinned_slas(agreement_id, a.terms)

        return self._command(actor, agreement_id, expected, request_id, change)[0]

    def propose_amendment(
        self,
        actor: Actor,
        agreement_id: str,
        terms: TermsDict,
        effective_from: datetime,
        reason: str,
        expected: int = 0,
        request_id: str = "",
    ) -> tuple[Agreement, str]:
        terms = normalise(terms)

        def change(a: Agreement) -> str:
            amendment_id = uuid.uuid4().hex[:12]
            a.propose_amendment(actor, amendment_id, terms, effective_from, reason, self.clock.now())
            check_not_ended(terms, self.clock.now(), effective_from)
            self.check_references(terms, agreement_id)
            self.check_underpinning(terms)
            self.check_underpinned_slas(agreement_id, terms)
            return amendment_id

        return self._command(actor, agreement_id, expected, request_id, change)

    def accept_amendment(
        self, actor: Actor, agreement_id: str, amendment_id: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        def change(a: Agreement) -> None:
            a.accept_amendment(actor, amendment_id, self.clock.now())
            check_not_ended(a.terms, self.clock.now(), parse_instant(a.versions[-1]["effective_from"]))
            self.check_underpinning(a.terms)
            self.check_underpinned_slas(agreement_id, a.terms)

        return self._command(actor, agreement_id, expected, request_id, change)[0]

    def reject_amendment(
        self, actor: Actor, agreement_id: str, amendment_id: str, reason: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        return self._command(
            actor, agreement_id, expected, request_id, lambda a: a.reject_amendment(actor, amendment_id, reason)
        )[0]

    def withdraw_amendment(
        self, actor: Actor, agreement_id: str, amendment_id: str, reason: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        return self._command(
            actor, agreement_id, expected, request_id, lambda a: a.withdraw_amendment(actor, amendment_id, reason)
        )[0]

    def suspend(
        self, actor: Actor, agreement_id: str, reason: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        return self._command(
            actor, agreement_id, expected, request_id, lambda a: a.suspend(actor, reason, self.clock.now())
        )[0]

    def resume(
        self, actor: Actor, agreement_id: str, reason: str, expected: int = 0, request_id: str = ""
    ) -> Agreement:
        return self._command(
            actor, agreement_id, expected, request_id, lambda a: a.resume(actor, reason, self.clock.now())
        )[0]

    def terminate(
        self,
        actor: Actor,
        agreement_id: str,
        reason: str,
        effective_at: datetime | None = None,
        immediate: bool = False,
        expected: int = 0,
        request_id: str = "",
    ) -> Agreement:
        return self._command(
            actor,
            agreement_id,
            expected,
            request_id,
            lambda a: a.terminate(actor, reason, self.clock.now(), effective_at, immediate),
        )[0]

    def process_due(self, now: datetime | None = None) -> int:
        """Apply scheduled terminations, expiries and renewals due by `now`; returns how many
        agreements changed. Run periodically by the service (and by tests with a fake clock)."""
        now = now or self.clock.now()
        changed = 0
        for summary in self.list_summaries():
            if summary.state not in LIVE:
                continue
            agg = self.get_agreement_aggregate(summary.agreement_id)
            agg.process_due(now)
            if agg.pending_events:
                try:
                    self.save(agg)
                    changed += 1
                except IntegrityError:
                    continue  # a concurrent command won; the next round will look again
        return changed

    # -- upstream: billing's termination rights --------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        if envelope.type != billing_events.TerminationRightGranted.DESCRIPTOR.full_name:
            return
        msg = unpack(envelope, billing_events.TerminationRightGranted)
        try:
            agg = self.get_agreement_aggregate(msg.agreement_id)
        except NotFoundError:
            return  # not ours to keep; the position still advances
        agg.record_termination_right(msg.objective_id, msg.reason, envelope.event_id)
        processing.collect_events(agg)

    # -- queries -----------------------------------------------------------------------------------------
    def get_agreement(self, actor: Actor, agreement_id: str) -> Agreement:
        agg = self.get_agreement_aggregate(agreement_id)
        agg.check_readable_by(actor)
        return agg

    def effective_terms(self, agg: Agreement, terms: TermsDict | None = None, depth: int = 0) -> TermsDict:
        terms = terms if terms is not None else agg.terms
        parent = terms.get("parent_agreement_id") or ""
        if not parent or depth > 8:
            return terms
        try:
            p = self.get_agreement_aggregate(parent)
        except NotFoundError:
            return terms
        return merge(self.effective_terms(p, depth=depth + 1), terms)

    def diff_versions(self, actor: Actor, agreement_id: str, a: int, b: int) -> list[dict[str, Any]]:
        agg = self.get_agreement(actor, agreement_id)
        return diff(self.version_terms(agg, agg.get_version(a)), self.version_terms(agg, agg.get_version(b)))

    def get_agreement_at(self, actor: Actor, agreement_id: str, at: datetime | None) -> AgreementAt:
        """The agreement "as known at" `at` (every event recorded by then) and "as effective
        at" `at` (what is correct now about that instant), and where they disagree."""
        if at is None:
            raise InvalidRequestError("at is required: the instant to reconstruct the agreement at")
        if at.tzinfo is None:
            raise InvalidRequestError(f"at must carry a time zone (got {at.isoformat()})")
        current = self.get_agreement(actor, agreement_id)
        # Bounded by the revision just loaded, so that both answers describe the same events
        # even when a command lands in between.
        version = self.version_known_at(current.id, at)
        known: Agreement | None = None
        if version is not None:
            version = min(version, current.version)
            known = current if version == current.version else self.get_agreement_aggregate(agreement_id, version)
        then = known.in_force_at(at, known) if known is not None else NOTHING_IN_FORCE
        now = current.in_force_at(at, known)
        if known is not None:
            then = replace(then, version=self.with_terms(known, then.version))
        now = replace(now, version=self.with_terms(current, now.version))
        term_changes: list[dict[str, Any]] = []
        if then.version is not None and now.version is not None and then.version["terms"] != now.version["terms"]:
            term_changes = diff(then.version["terms"], now.version["terms"])
        return AgreementAt(
            known=known,
            in_force_as_known=then,
            effective=now,
            differences=known_effective_differences(then, now),
            term_changes=term_changes,
        )

    def history(self, actor: Actor, agreement_id: str) -> list[events_pb2.EventEnvelope]:
        """Every event of the agreement, oldest first, each as ReadEvents serves it. One read
        of the agreement's events; positions and previous positions come from the index."""
        agg = self.get_agreement(actor, agreement_id)
        self.refresh_index()
        with self._index_lock:
            log = list(self._index[str(agg.id)].log)
        if not log:
            return []
        stored = {s.originator_version: s for s in self.recorder.select_events(agg.id, lte=log[-1].version)}
        out = []
        for entry in log:
            s = stored[entry.version]
            note = Notification(
                id=entry.position,
                originator_id=s.originator_id,
                originator_version=s.originator_version,
                topic=s.topic,
                state=s.state,
            )
            out.append(to_envelope(self.service, note, entry.previous_position, self.accord_mapper, self.codec)[0])
        return out

    # -- the index of agreements (tails this store's own log) ------------------------------------------
    def refresh_index(self) -> None:
        with self._index_lock:
            while True:
                notes = self.recorder.select_notifications(
                    start=self._index_position, limit=1000, inclusive_of_start=False
                )
                if not notes:
                    return
                touched: dict[str, list[LogEntry]] = {}
                # The index reads every notification in order, so the one before each is the
                # log's previous position (positions may have gaps: PostgreSQL sequences).
                previous = self._index_position
                for n in notes:
                    if n.topic in AGREEMENT_TOPICS:
                        entry = LogEntry(n.originator_version, n.id, previous)
                        touched.setdefault(str(n.originator_id), []).append(entry)
                    previous = n.id
                for aid, entries in touched.items():
                    agg = self.get_agreement_aggregate(aid)
                    old = self._index.get(aid)
                    summary = _summary(agg)
                    summary.log = old.log if old else []
                    summary.log.extend(entries)  # history copies it under the lock
                    self._index[aid] = summary
                self._index_position = notes[-1].id

    def list_summaries(self) -> list[Summary]:
        self.refresh_index()
        with self._index_lock:
            return list(self._index.values())

    def list_agreements(
        self,
        actor: Actor,
        *,
        party: str = "",
        role: str = "",
        service_id: str = "",
        state: str = "",
        kind: str = "",
        level: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[Summary], str]:
        if page_size <= 0:
            page_size = 50
        if page_size > 500:
            raise InvalidRequestError(f"page_size must be at most 500, not {page_size}")
        rows = sorted(self.list_summaries(), key=lambda s: s.agreement_id)
        if actor.role == "department":
            rows = [s for s in rows if actor.department in (s.provider, s.customer)]
        if party:
            if role == "PROVIDER":
                rows = [s for s in rows if s.provider == party]
            elif role == "CUSTOMER":
                rows = [s for s in rows if s.customer == party]
            else:
                rows = [s for s in rows if party in (s.provider, s.customer)]
        elif role:
            raise InvalidRequestError("role filters need party_department_id")
        rows = [
            s
            for s in rows
            if (not service_id or service_id in s.service_ids)
            and (not state or s.state == state)
            and (not kind or s.kind == kind)
            and (not level or s.level == level)
        ]
        if page_token:
            rows = [s for s in rows if s.agreement_id > page_token]
        page = rows[:page_size]
        next_token = page[-1].agreement_id if len(rows) > page_size else ""
        return page, next_token


def _weaker(sla_objective: dict[str, Any], under: TermsDict) -> list[tuple[dict[str, Any], Any, Any, str]]:
    """The objectives of underpinning terms `under` for the SLA objective's metric and
    comparator that are less strict than it: (objective, its target, the SLA's, sign)."""
    out = []
    o = sla_objective
    sign = ">=" if o.get("comparator") == "COMPARATOR_AT_LEAST" else "<="
    for u in under.get("objectives") or []:
        if u.get("metric") != o.get("metric") or u.get("comparator") != o.get("comparator"):
            continue
        ut, ot = dec(u.get("target")), dec(o.get("target"))
        if ut is None or ot is None or stricter_or_equal(o["comparator"], ut, ot):
            continue
        out.append((u, ut, ot, sign))
    return out


def _summary(agg: Agreement) -> Summary:
    t = agg.terms
    return Summary(
        agreement_id=str(agg.id),
        title=t.get("title", ""),
        state=agg.state,
        kind=t.get("kind", ""),
        level=t.get("level", ""),
        provider=agg.provider,
        customer=agg.customer,
        service_ids=list((t.get("service") or {}).get("service_ids") or []),
        version=agg.current_version,
        revision=agg.version,
    )


def _check_reference_id(field_name: str, value: str) -> None:
    if not REFERENCE_ID.match(value or ""):
        raise InvalidRequestError(f"{field_name} must be 1–64 letters, digits, '-' or '_' (got {value!r})")


def _validate_calendar(d: dict[str, Any]) -> None:
    errors = []
    tz = d.get("time_zone") or ""
    if not tz or not valid_time_zone(tz):
        errors.append(f"calendar.time_zone: unknown IANA time zone {tz!r}")
    hours = d.get("hours") or []
    if not hours:
        errors.append("calendar.hours: at least one day of opening hours is required")
    for i, h in enumerate(hours):
        wd = int(h.get("weekday") or 0)
        if not 1 <= wd <= 7:
            errors.append(f"calendar.hours[{i}].weekday: must be 1 (Monday) to 7 (Sunday), not {wd}")
        opens, closes = h.get("opens") or "", h.get("closes") or ""
        if not HHMM.match(opens) or not HHMM.match(closes):
            errors.append(f"calendar.hours[{i}]: opens and closes must be HH:MM (got {opens!r}, {closes!r})")
        elif opens >= closes:
            errors.append(f"calendar.hours[{i}]: opens ({opens}) must be before closes ({closes})")
    for i, day in enumerate(d.get("holidays") or []):
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except (TypeError, ValueError):
            errors.append(f"calendar.holidays[{i}]: must be an ISO date YYYY-MM-DD, not {day!r}")
    if errors:
        raise InvalidRequestError("; ".join(errors))
