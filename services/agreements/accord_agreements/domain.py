"""The agreements domain: the Agreement aggregate with its lifecycle, versions and
amendments (docs/domain.md §2), and the reference data it names (departments, services,
business calendars). Who may do what is decided here, per agreement, from its parties."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from accord_agreements.terms import TermsDict, parse_instant, validate
from accord_kit.topics import stored_as


# -- errors ---------------------------------------------------------------------------------
class AgreementsError(Exception):
    """Base of the agreements domain's errors."""


class NotAPartyError(AgreementsError):
    """The caller is not the party (or not a party) that may do this."""


class TransitionError(AgreementsError):
    """The agreement is not in a state that allows this."""


class InvalidRequestError(AgreementsError):
    """A request field other than the terms is wrong (a missing reason, a bad date)."""


class UnknownReferenceError(AgreementsError):
    """The terms name a department, service, calendar or agreement that is not registered."""


class NotFoundError(AgreementsError):
    pass


class ConflictError(AgreementsError):
    """The expected revision is not the current one."""


# -- who is acting --------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    subject: str
    role: str  # department, auditor, admin, service
    department: str = ""


# -- states ---------------------------------------------------------------------------------
DRAFT, PROPOSED, ACTIVE, SUSPENDED, TERMINATED, EXPIRED = (
    "DRAFT",
    "PROPOSED",
    "ACTIVE",
    "SUSPENDED",
    "TERMINATED",
    "EXPIRED",
)
LIVE = (ACTIVE, SUSPENDED)


def _require_reason(reason: str, what: str) -> None:
    if not reason or not reason.strip():
        raise InvalidRequestError(f"reason is required to {what}")
    if len(reason) > 2000:
        raise InvalidRequestError("reason must be at most 2000 characters")


def add_months(when: datetime, months: int) -> datetime:
    """The same wall-clock day `months` later (clamped to the month's last day)."""
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


@stored_as("accord_agreements.domain:Agreement")
class Agreement(Aggregate):
    """One agreement between a provider and a customer department, from its first draft
    through its accepted versions to its end."""

    suspended_at = ""  # for agreements restored from snapshots taken before it was kept
    # 2: a version's entry no longer holds a copy of its terms (they stay in the event that
    # accepted it, and the application reads them from there on demand), so the aggregate
    # (and its snapshots) no longer grow with a full copy of the terms per version.
    class_version = 2
    terms_version = 0  # the version whose terms `terms` are (0: a draft's, or changed since)
    # Made by @event below (for type checkers: the codec refers to them by attribute).
    DraftRevised: ClassVar[type[Aggregate.Event]]
    Proposed: ClassVar[type[Aggregate.Event]]
    ProposalRejected: ClassVar[type[Aggregate.Event]]
    Accepted: ClassVar[type[Aggregate.Event]]
    AmendmentProposed: ClassVar[type[Aggregate.Event]]
    AmendmentAccepted: ClassVar[type[Aggregate.Event]]
    AmendmentRejected: ClassVar[type[Aggregate.Event]]
    AmendmentWithdrawn: ClassVar[type[Aggregate.Event]]
    Suspended: ClassVar[type[Aggregate.Event]]
    Resumed: ClassVar[type[Aggregate.Event]]
    TerminationScheduled: ClassVar[type[Aggregate.Event]]
    Terminated: ClassVar[type[Aggregate.Event]]
    TerminationRightGranted: ClassVar[type[Aggregate.Event]]
    Renewed: ClassVar[type[Aggregate.Event]]
    Expired: ClassVar[type[Aggregate.Event]]

    class Drafted(Aggregate.Created):
        TOPIC = "accord_agreements.domain:Agreement.Drafted"
        terms: TermsDict
        drafted_at: datetime

    @event(Drafted)
    def __init__(self, terms: TermsDict, drafted_at: datetime) -> None:
        self.terms = terms
        self.state = DRAFT
        self.drafted_at = drafted_at
        self.versions: list[dict[str, Any]] = []
        self.terms_version = 0
        self.pending: dict[str, Any] | None = None
        self.last_rejection = ""
        self.termination: dict[str, Any] | None = None
        self.termination_rights: list[dict[str, Any]] = []
        self.suspension_reason = ""
        self.suspended_at = ""  # the instant of the suspension in force, "" when none
        self.ended_at: str = ""

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot taken before class version 2: drop each version's copy of its terms and
        say which version's terms the current ones are, exactly as replaying its events would."""
        versions = state.get("versions") or []
        last_terms = versions[-1].get("terms") if versions else None
        state["terms_version"] = versions[-1]["version"] if versions and last_terms == state.get("terms") else 0
        for v in versions:
            v.pop("terms", None)

    def __deepcopy__(self, memo: dict[int, Any]) -> Agreement:
        """The library's aggregate cache hands each command a deep copy. The agreement's
        nested values (terms, pending amendment, termination, version entries) are replaced,
        never changed in place, and its lists only grow by append, so a copy of the attribute
        dict and of its lists is a deep copy in effect, at a fraction of the cost. A method
        that changes a nested value in place must copy it first (as _renewed does)."""
        clone = object.__new__(type(self))
        state = dict(self.__dict__)
        for name, value in state.items():
            if isinstance(value, list):
                state[name] = list(value)
        clone.__dict__.update(state)
        memo[id(self)] = clone
        return clone

    # -- who is who ----------------------------------------------------------------------
    @property
    def provider(self) -> str:
        return str(self.terms["parties"]["provider_department_id"])

    @property
    def customer(self) -> str:
        return str(self.terms["parties"]["customer_department_id"])

    def is_party(self, department: str) -> bool:
        return department in (self.provider, self.customer)

    def check_provider(self, actor: Actor, what: str) -> None:
        if actor.role != "department" or actor.department != self.provider:
            raise NotAPartyError(f"only the provider ({self.provider}) may {what}; {_who(actor)} may not")

    def check_customer(self, actor: Actor, what: str) -> None:
        if actor.role != "department" or actor.department != self.customer:
            raise NotAPartyError(f"only the customer ({self.customer}) may {what}; {_who(actor)} may not")

    def check_party(self, actor: Actor, what: str) -> None:
        if actor.role != "department" or not self.is_party(actor.department):
            raise NotAPartyError(f"only a party ({self.provider}, {self.customer}) may {what}; {_who(actor)} may not")

    def check_state(self, allowed: tuple[str, ...], what: str) -> None:
        if self.state not in allowed:
            raise TransitionError(f"cannot {what}: the agreement is {self.state} (allowed in {', '.join(allowed)})")

    def check_readable_by(self, actor: Actor) -> None:
        if actor.role == "department" and not self.is_party(actor.department):
            raise NotAPartyError(f"department {actor.department} is not a party to agreement {self.id}")

    # -- drafting ------------------------------------------------------------------------
    def revise(self, actor: Actor, terms: TermsDict) -> None:
        self.check_provider(actor, "revise a draft")
        self.check_state((DRAFT,), "revise")
        validate(terms)
        if terms["parties"]["provider_department_id"] != self.provider:
            raise InvalidRequestError("a revision cannot change the provider")
        self._revised(terms=terms)

    @event("DraftRevised", topic="accord_agreements.domain:Agreement.DraftRevised")
    def _revised(self, terms: TermsDict) -> None:
        self.terms = terms

    def propose(self, actor: Actor) -> None:
        self.check_provider(actor, "propose the agreement")
        self.check_state((DRAFT,), "propose")
        self._proposed()

    @event("Proposed", topic="accord_agreements.domain:Agreement.Proposed")
    def _proposed(self) -> None:
        self.state = PROPOSED

    def reject_proposal(self, actor: Actor, reason: str) -> None:
        self.check_customer(actor, "reject the proposal")
        self.check_state((PROPOSED,), "reject the proposal")
        _require_reason(reason, "reject a proposal")
        self._proposal_rejected(reason=reason)

    @event("ProposalRejected", topic="accord_agreements.domain:Agreement.ProposalRejected")
    def _proposal_rejected(self, reason: str) -> None:
        self.state = DRAFT
        self.last_rejection = reason

    def accept(self, actor: Actor, accepted_at: datetime) -> None:
        self.check_customer(actor, "accept the agreement")
        self.check_state((PROPOSED,), "accept")
        effective = self.terms["term"]["effective_from"]
        self._accepted(version=1, effective_from=effective, accepted_at=accepted_at.isoformat(), terms=self.terms)

    @event("Accepted", topic="accord_agreements.domain:Agreement.Accepted")
    def _accepted(self, version: int, effective_from: str, accepted_at: str, terms: TermsDict) -> None:
        # The event carries the terms of the version, so that consumers need not track drafts.
        self.state = ACTIVE
        self.terms = terms
        self.terms_version = version
        self.versions.append(
            {"version": version, "effective_from": effective_from, "accepted_at": accepted_at, "amendment_id": ""}
        )

    # -- amendments ------------------------------------------------------------------------
    @property
    def current_version(self) -> int:
        return len(self.versions)

    def propose_amendment(
        self, actor: Actor, amendment_id: str, terms: TermsDict, effective_from: datetime, reason: str, now: datetime
    ) -> None:
        self.check_party(actor, "propose an amendment")
        self.check_state(LIVE, "propose an amendment")
        who = (self.terms.get("amendment") or {}).get("who_may_propose") or "PROPOSER_EITHER_PARTY"
        if who == "PROPOSER_PROVIDER" and actor.department != self.provider:
            raise NotAPartyError(f"this agreement lets only the provider ({self.provider}) propose amendments")
        if who == "PROPOSER_CUSTOMER" and actor.department != self.customer:
            raise NotAPartyError(f"this agreement lets only the customer ({self.customer}) propose amendments")
        if self.pending is not None:
            raise TransitionError(f"amendment {self.pending['amendment_id']} is already pending; one at a time")
        _require_reason(reason, "propose an amendment")
        validate(terms)
        if (
            terms["parties"] != self.terms["parties"]
            or terms.get("kind") != self.terms.get("kind")
            or terms.get("level") != self.terms.get("level")
        ):
            raise InvalidRequestError("an amendment cannot change the parties, the kind or the level")
        notice = int((self.terms.get("amendment") or {}).get("notice_days") or 0)
        earliest = now + timedelta(days=notice)
        if effective_from < earliest:
            raise InvalidRequestError(
                f"effective_from {effective_from.isoformat()} is too early: the notice period is {notice} days, "
                f"so the earliest is {earliest.isoformat()}"
            )
        self._amendment_proposed(
            amendment_id=amendment_id,
            proposed_by=actor.department,
            terms=terms,
            effective_from=effective_from.isoformat(),
            reason=reason,
        )

    @event("AmendmentProposed", topic="accord_agreements.domain:Agreement.AmendmentProposed")
    def _amendment_proposed(
        self, amendment_id: str, proposed_by: str, terms: TermsDict, effective_from: str, reason: str
    ) -> None:
        self.pending = {
            "amendment_id": amendment_id,
            "proposed_by": proposed_by,
            "terms": terms,
            "effective_from": effective_from,
            "reason": reason,
        }

    def _check_pending(self, amendment_id: str) -> dict[str, Any]:
        if self.pending is None:
            raise TransitionError("there is no pending amendment")
        if self.pending["amendment_id"] != amendment_id:
            raise TransitionError(f"the pending amendment is {self.pending['amendment_id']}, not {amendment_id}")
        return self.pending

    def counterparty_of(self, department: str) -> str:
        return self.customer if department == self.provider else self.provider

    def accept_amendment(self, actor: Actor, amendment_id: str, now: datetime) -> None:
        pending = self._check_pending(amendment_id)
        self.check_state(LIVE, "accept an amendment")
        counterparty = self.counterparty_of(pending["proposed_by"])
        if actor.role != "department" or actor.department != counterparty:
            raise NotAPartyError(
                f"only the counterparty ({counterparty}) may accept this amendment; {_who(actor)} may not"
            )
        proposed = parse_instant(pending["effective_from"])
        assert proposed is not None
        # Never re-judge the past: an amendment accepted after its proposed date takes
        # effect when it is accepted.
        effective = max(proposed, now)
        self._amendment_accepted(
            amendment_id=amendment_id,
            version=self.current_version + 1,
            effective_from=effective.isoformat(),
            accepted_at=now.isoformat(),
            terms=pending["terms"],
        )

    @event("AmendmentAccepted", topic="accord_agreements.domain:Agreement.AmendmentAccepted")
    def _amendment_accepted(
        self, amendment_id: str, version: int, effective_from: str, accepted_at: str, terms: TermsDict
    ) -> None:
        self.terms = terms
        self.terms_version = version
        self.versions.append(
            {
                "version": version,
                "effective_from": effective_from,
                "accepted_at": accepted_at,
                "amendment_id": amendment_id,
            }
        )
        self.pending = None

    def reject_amendment(self, actor: Actor, amendment_id: str, reason: str) -> None:
        pending = self._check_pending(amendment_id)
        counterparty = self.counterparty_of(pending["proposed_by"])
        if actor.role != "department" or actor.department != counterparty:
            raise NotAPartyError(
                f"only the counterparty ({counterparty}) may reject this amendment; {_who(actor)} may not"
            )
        _require_reason(reason, "reject an amendment")
        self._amendment_rejected(amendment_id=amendment_id, reason=reason)

    @event("AmendmentRejected", topic="accord_agreements.domain:Agreement.AmendmentRejected")
    def _amendment_rejected(self, amendment_id: str, reason: str) -> None:
        self.pending = None

    def withdraw_amendment(self, actor: Actor, amendment_id: str, reason: str) -> None:
        pending = self._check_pending(amendment_id)
        if actor.role != "department" or actor.department != pending["proposed_by"]:
            raise NotAPartyError(f"only the proposer ({pending['proposed_by']}) may withdraw it; {_who(actor)} may not")
        self._amendment_withdrawn(amendment_id=amendment_id, reason=reason or "")

    @event("AmendmentWithdrawn", topic="accord_agreements.domain:Agreement.AmendmentWithdrawn")
    def _amendment_withdrawn(self, amendment_id: str, reason: str) -> None:
        self.pending = None

    # -- suspension and the end -------------------------------------------------------------
    def suspend(self, actor: Actor, reason: str, now: datetime) -> None:
        # docs/domain.md §2: "by agreement of both, or by the provider with reason" — either way it
        # is the provider who suspends, always with a reason (which names the customer's
        # request when both agree); the customer alone cannot.
        self.check_provider(actor, "suspend the agreement")
        self.check_state((ACTIVE,), "suspend")
        _require_reason(reason, "suspend an agreement")
        self._suspended(reason=reason, at=now.isoformat())

    @event("Suspended", topic="accord_agreements.domain:Agreement.Suspended")
    def _suspended(self, reason: str, at: str = "") -> None:
        self.state = SUSPENDED
        self.suspension_reason = reason
        self.suspended_at = at

    def resume(self, actor: Actor, reason: str, now: datetime) -> None:
        self.check_provider(actor, "resume the agreement")
        self.check_state((SUSPENDED,), "resume")
        self._resumed(reason=reason or "", at=now.isoformat())

    @event("Resumed", topic="accord_agreements.domain:Agreement.Resumed")
    def _resumed(self, reason: str, at: str = "") -> None:
        self.state = ACTIVE
        self.suspension_reason = ""
        self.suspended_at = ""

    def terminate(
        self, actor: Actor, reason: str, now: datetime, effective_at: datetime | None, immediate: bool
    ) -> None:
        self.check_party(actor, "terminate the agreement")
        self.check_state(LIVE, "terminate")
        _require_reason(reason, "terminate an agreement")
        if self.termination is not None:
            raise TransitionError(f"termination is already scheduled for {self.termination['effective_at']}")
        if immediate:
            if actor.department != self.customer or not self.termination_rights:
                raise NotAPartyError(
                    "only a customer holding a termination right may terminate at once; "
                    "give notice instead (effective_at at least the notice period ahead)"
                )
            self._terminated(effective_at=now.isoformat(), reason=reason, by=actor.department, right_used=True)
            return
        notice = int((self.terms.get("term") or {}).get("notice_days") or 0)
        earliest = now + timedelta(days=notice)
        when = effective_at or earliest
        if when < earliest:
            raise InvalidRequestError(
                f"a termination at {when.isoformat()} (effective_at) is within the {notice}-day notice period;"
                f" the earliest is {earliest.isoformat()}"
            )
        if when <= now:
            self._terminated(effective_at=now.isoformat(), reason=reason, by=actor.department, right_used=False)
        else:
            self._termination_scheduled(effective_at=when.isoformat(), reason=reason, by=actor.department)

    @event("TerminationScheduled", topic="accord_agreements.domain:Agreement.TerminationScheduled")
    def _termination_scheduled(self, effective_at: str, reason: str, by: str) -> None:
        self.termination = {"effective_at": effective_at, "reason": reason, "by": by}

    @event("Terminated", topic="accord_agreements.domain:Agreement.Terminated")
    def _terminated(self, effective_at: str, reason: str, by: str, right_used: bool) -> None:
        self.state = TERMINATED
        self.ended_at = effective_at
        self.termination = {"effective_at": effective_at, "reason": reason, "by": by, "right_used": right_used}
        self.pending = None

    def record_termination_right(self, objective_id: str, reason: str, source_event_id: str) -> None:
        if any(r["source_event_id"] == source_event_id for r in self.termination_rights):
            return
        self._termination_right_granted(objective_id=objective_id, reason=reason, source_event_id=source_event_id)

    @event("TerminationRightGranted", topic="accord_agreements.domain:Agreement.TerminationRightGranted")
    def _termination_right_granted(self, objective_id: str, reason: str, source_event_id: str) -> None:
        self.termination_rights.append(
            {"objective_id": objective_id, "reason": reason, "source_event_id": source_event_id}
        )

    def process_due(self, now: datetime) -> None:
        """Scheduled terminations, expiry and auto-renewal that `now` has reached."""
        if self.state not in LIVE:
            return
        if self.termination is not None:
            at = parse_instant(self.termination["effective_at"])
            if at is not None and at <= now:
                t = self.termination
                self._terminated(effective_at=t["effective_at"], reason=t["reason"], by=t["by"], right_used=False)
                return
        term = self.terms.get("term") or {}
        end = parse_instant(term.get("effective_to"))
        if end is None or end > now:
            return
        if term.get("auto_renew"):
            months = int(term.get("renewal_months") or 0)
            new_end = end
            while new_end <= now:
                new_end = add_months(new_end, months)
            self._renewed(previous_end=end.isoformat(), new_end=new_end.isoformat())
        else:
            self._expired(at=end.isoformat())

    @event("Renewed", topic="accord_agreements.domain:Agreement.Renewed")
    def _renewed(self, previous_end: str, new_end: str) -> None:
        self.terms = copy.deepcopy(self.terms)
        self.terms["term"]["effective_to"] = new_end
        self.terms_version = 0

    @event("Expired", topic="accord_agreements.domain:Agreement.Expired")
    def _expired(self, at: str) -> None:
        self.state = EXPIRED
        self.ended_at = at
        self.pending = None

    # -- reading ---------------------------------------------------------------------------------
    def get_version(self, n: int) -> dict[str, Any]:
        if not 1 <= n <= len(self.versions):
            raise NotFoundError(
                f"agreement {self.id} has no version {n}"
                + (f" (versions 1 to {len(self.versions)})" if self.versions else " (it has not been accepted yet)")
            )
        return self.versions[n - 1]

    def version_effective_at(self, when: datetime) -> dict[str, Any] | None:
        """The accepted version whose effective-from is the latest not after `when`, whether
        or not the agreement had ended by then (None before the first one)."""
        found = None
        for v in self.versions:
            start = parse_instant(v["effective_from"])
            if start is not None and start <= when:
                found = v
        return found

    def ended_by(self, when: datetime) -> bool:
        """Whether the agreement's end (termination or expiry) is at or before `when`."""
        end = parse_instant(self.ended_at) if self.ended_at else None
        return end is not None and when >= end

    def version_in_force_at(self, when: datetime) -> dict[str, Any]:
        """The version whose effective-from is the latest not after `when`."""
        found = self.version_effective_at(when)
        if found is None:
            raise NotFoundError(f"no version of agreement {self.id} is in force at {when.isoformat()}")
        if self.ended_by(when):
            raise NotFoundError(f"agreement {self.id} had ended ({self.state}) by {when.isoformat()}")
        return found

    def in_force_at(self, when: datetime, recorded: Agreement | None) -> InForce:
        """What was in force at instant `when` according to this agreement's events: as
        known now when this is the current agreement ("as effective at", docs/domain.md §6), as
        known then when it is `recorded` itself. `recorded` is the agreement as the store
        knew it at `when` (None: it did not exist yet).

        Only effective-dated facts reach back before their recording: a version's
        effective-from and the end of the agreement. Suspension, resumption and the steps
        before acceptance take effect when recorded, so for them `recorded`'s state stands."""
        if self.ended_by(when):
            return InForce(state=self.state, version=None, ended_at=self.ended_at, revision=self.version)
        version = self.version_effective_at(when)  # not ended: the rule of version_in_force_at
        state = recorded.state if recorded is not None else ""  # nothing in force: as recorded
        if version is not None:
            state = SUSPENDED if state == SUSPENDED else ACTIVE
        return InForce(state=state, version=version, ended_at="", revision=self.version)


@dataclass(frozen=True)
class InForce:
    """What of an agreement was in force at an instant, as known at some time (docs/domain.md §6)."""

    state: str  # "" when the agreement did not exist yet and no version is in force
    version: dict[str, Any] | None  # the version in force, None when none
    ended_at: str  # the end, when at or before the instant; else ""
    revision: int  # the revision of the agreement this was computed from (0: none)


NOTHING_IN_FORCE = InForce(state="", version=None, ended_at="", revision=0)


@dataclass(frozen=True)
class Difference:
    """One way the answer known at an instant and the answer known now disagree about it."""

    field: str  # state, version, terms
    as_known: str
    as_effective: str


def known_effective_differences(as_known: InForce, as_effective: InForce) -> list[Difference]:
    """Where what was in force at an instant, as the store knew it then (`as_known`), and
    as known now (`as_effective`) disagree: the state, the version in force, its terms.
    Only facts recorded after the instant but effective at or before it make them differ
    (a version accepted later with an earlier effective date, an end applied late)."""
    out: list[Difference] = []
    if as_known.state != as_effective.state:
        out.append(Difference("state", as_known.state or "none", as_effective.state or "none"))
    known_version = _version_name(as_known)
    effective_version = _version_name(as_effective)
    if known_version != effective_version:
        out.append(Difference("version", known_version, effective_version))
    known_terms = as_known.version["terms"] if as_known.version is not None else None
    effective_terms = as_effective.version["terms"] if as_effective.version is not None else None
    if known_terms != effective_terms:
        out.append(Difference("terms", _terms_name(as_known), _terms_name(as_effective)))
    return out


def _version_name(e: InForce) -> str:
    return str(e.version["version"]) if e.version is not None else "none"


def _terms_name(e: InForce) -> str:
    return f"version {e.version['version']}" if e.version is not None else "none"


def _who(actor: Actor) -> str:
    return f"department {actor.department}" if actor.role == "department" else f"role {actor.role}"


# -- reference data ---------------------------------------------------------------------------
def reference_id(kind: str, key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"accord:agreements:{kind}:{key}")


@stored_as("accord_agreements.domain:Department")
class Department(Aggregate):
    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Registered: ClassVar[type[Aggregate.Event]]

    @staticmethod
    def create_id(department_id: str) -> UUID:
        return reference_id("department", department_id)

    @event("Registered", topic="accord_agreements.domain:Department.Registered")
    def __init__(self, department_id: str, name: str) -> None:
        self.department_id = department_id
        self.name = name


@stored_as("accord_agreements.domain:Service")
class Service(Aggregate):
    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Registered: ClassVar[type[Aggregate.Event]]

    @staticmethod
    def create_id(service_id: str) -> UUID:
        return reference_id("service", service_id)

    @event("Registered", topic="accord_agreements.domain:Service.Registered")
    def __init__(self, service_id: str, name: str, provider_department_id: str) -> None:
        self.service_id = service_id
        self.name = name
        self.provider_department_id = provider_department_id


@stored_as("accord_agreements.domain:Calendar")
class Calendar(Aggregate):
    """A named business-hours calendar; every redefinition is a new version."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Defined: ClassVar[type[Aggregate.Event]]
    Redefined: ClassVar[type[Aggregate.Event]]

    @staticmethod
    def create_id(calendar_id: str) -> UUID:
        return reference_id("calendar", calendar_id)

    @event("Defined", topic="accord_agreements.domain:Calendar.Defined")
    def __init__(self, calendar_id: str, definition: dict[str, Any]) -> None:
        self.calendar_id = calendar_id
        self.definition = definition
        self.calendar_version = 1

    def redefine(self, definition: dict[str, Any]) -> None:
        self._redefined(calendar_id=self.calendar_id, definition=definition)

    @event("Redefined", topic="accord_agreements.domain:Calendar.Redefined")
    def _redefined(self, calendar_id: str, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.calendar_version += 1


@stored_as("accord_agreements.domain:ProcessedRequest")
class ProcessedRequest(Aggregate):
    """The first outcome of a client request id: a retry returns it and stores nothing."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Recorded: ClassVar[type[Aggregate.Event]]

    @event("Recorded", topic="accord_agreements.domain:ProcessedRequest.Recorded")
    def __init__(self, key: str, agreement_id: str, revision: int, extra: str) -> None:
        self.key = key
        self.agreement_id = agreement_id
        self.revision = revision
        self.extra = extra

    @staticmethod
    def create_id(key: str) -> UUID:  # one record per request key: a racing retry conflicts
        return uuid5(NAMESPACE_URL, f"accord:agreements:request:{key}")
