"""The billing domain (docs/domain.md §5): what billing knows of each agreement, a statement per
agreement and billing period with its assessments, adjustments and disputes, the
chargeback ledger's transactions, and the watch over breaches that grants termination
rights."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from accord_kit.topics import stored_as

OPEN, ISSUED, FINAL = "OPEN", "ISSUED", "FINAL"


class BillingError(Exception):
    """Base of the billing domain's errors."""


class NotAPartyError(BillingError):
    pass


class NotFoundError(BillingError):
    pass


class TransitionError(BillingError):
    """The statement or dispute is not in a state that allows this."""


class InvalidRequestError(BillingError):
    pass


def _id(*parts: str) -> UUID:
    return uuid5(NAMESPACE_URL, "accord:billing:" + ":".join(parts))


@stored_as("accord_billing.domain:BilledAgreement")
class BilledAgreement(Aggregate):
    """An agreement's accepted versions (terms with fee and consequences), its suspensions and its end."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    VersionInForce: ClassVar[type[Aggregate.Event]]
    Ended: ClassVar[type[Aggregate.Event]]
    Suspended: ClassVar[type[Aggregate.Event]]
    Resumed: ClassVar[type[Aggregate.Event]]

    class Seen(Aggregate.Created):
        TOPIC = "accord_billing.domain:BilledAgreement.Seen"
        agreement_id: str

    @staticmethod
    def create_id(agreement_id: str) -> UUID:
        return _id("agreement", agreement_id)

    @event(Seen)
    def __init__(self, agreement_id: str) -> None:
        self.agreement_id = agreement_id
        self.versions: list[dict[str, Any]] = []
        self.ended_at = ""
        self.suspensions: list[list[str]] = []  # [suspended at, resumed at ("" while suspended)]

    def version_in_force(self, version: int, effective_from: str, terms: dict[str, Any]) -> None:
        if not any(v["version"] == version for v in self.versions):
            self._version_in_force(version=version, effective_from=effective_from, terms=terms)

    @event("VersionInForce", topic="accord_billing.domain:BilledAgreement.VersionInForce")
    def _version_in_force(self, version: int, effective_from: str, terms: dict[str, Any]) -> None:
        self.versions = sorted([*self.versions, {"version": version, "effective_from": effective_from, "terms": terms}],
                               key=lambda v: v["version"])  # fmt: skip

    def end(self, at: str) -> None:
        if not self.ended_at:
            self._ended(at=at)

    @event("Ended", topic="accord_billing.domain:BilledAgreement.Ended")
    def _ended(self, at: str) -> None:
        self.ended_at = at

    def suspend(self, at: str) -> None:
        if not self.suspensions or self.suspensions[-1][1]:
            self._suspended(at=at)

    @event("Suspended", topic="accord_billing.domain:BilledAgreement.Suspended")
    def _suspended(self, at: str) -> None:
        self.suspensions = [*self.suspensions, [at, ""]]

    def resume(self, at: str) -> None:
        if self.suspensions and not self.suspensions[-1][1]:
            self._resumed(at=at)

    @event("Resumed", topic="accord_billing.domain:BilledAgreement.Resumed")
    def _resumed(self, at: str) -> None:
        self.suspensions = [*self.suspensions[:-1], [self.suspensions[-1][0], at]]

    @property
    def parties(self) -> dict[str, str]:
        return dict(self.versions[-1]["terms"].get("parties") or {}) if self.versions else {}


@stored_as("accord_billing.domain:Statement")
class Statement(Aggregate):
    """One agreement's statement for one billing period: OPEN while its windows are being
    judged, ISSUED (disputable during the claim window), then FINAL. Issued statements are
    never changed: later restatements become adjustments on a later statement."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Assessed: ClassVar[type[Aggregate.Event]]
    Adjusted: ClassVar[type[Aggregate.Event]]
    Issued: ClassVar[type[Aggregate.Event]]
    Disputed: ClassVar[type[Aggregate.Event]]
    Resolved: ClassVar[type[Aggregate.Event]]
    Finalized: ClassVar[type[Aggregate.Event]]
    TotalsStated: ClassVar[type[Aggregate.Event]]
    # The rule its money is computed by (see __init__). The class default is what a statement
    # restored from a snapshot taken before the field existed reads: rule 1, as it was opened.
    fee_basis = 1

    class Opened(Aggregate.Created):
        TOPIC = "accord_billing.domain:Statement.Opened"
        agreement_id: str
        period_start: str
        period_end: str
        currency: str
        fee_basis: int

    @staticmethod
    def create_id(agreement_id: str, period_start: str) -> UUID:
        return _id("statement", agreement_id, period_start)

    @event(Opened)
    def __init__(
        self, agreement_id: str, period_start: str, period_end: str, currency: str, fee_basis: int = 1
    ) -> None:
        self.agreement_id = agreement_id
        self.period_start = period_start
        self.period_end = period_end
        self.currency = currency
        # The rule its money is computed by (`periods.FEE_BASES`); kept for good. A statement
        # opened before the field existed was computed by rule 1 (its event carries none).
        self.fee_basis = fee_basis
        self.state = OPEN
        self.assessments: dict[str, dict[str, Any]] = {}  # "<objective>|<window start>" → assessment
        self.adjustments: list[dict[str, Any]] = []
        self.disputes: dict[str, dict[str, Any]] = {}
        self.totals: dict[str, Any] = {}
        self.issued_at = ""
        self.claim_until = ""

    # Assessed, Adjusted and Resolved carry `totals`: the statement's totals after the change,
    # as billing states them to readers of its events (events recorded before they did: none).
    def record_assessment(self, key: str, assessment: dict[str, Any], totals: dict[str, Any] | None = None) -> None:
        if self.state != OPEN:
            raise TransitionError(f"statement {self.id} is {self.state}: it is never changed after issue")
        if self.assessments.get(key) != assessment:
            self._assessed(key=key, assessment=assessment, totals=totals)

    @event("Assessed", topic="accord_billing.domain:Statement.Assessed")
    def _assessed(self, key: str, assessment: dict[str, Any], totals: dict[str, Any] | None = None) -> None:
        self.assessments = {**self.assessments, key: assessment}

    def record_adjustment(self, adjustment: dict[str, Any], totals: dict[str, Any] | None = None) -> None:
        if self.state != OPEN:
            raise TransitionError(f"statement {self.id} is {self.state}")
        if not any(a["source"] == adjustment["source"] for a in self.adjustments):
            self._adjusted(adjustment=adjustment, totals=totals)

    @event("Adjusted", topic="accord_billing.domain:Statement.Adjusted")
    def _adjusted(self, adjustment: dict[str, Any], totals: dict[str, Any] | None = None) -> None:
        self.adjustments = [*self.adjustments, adjustment]

    def state_totals(self, totals: dict[str, Any], reason: str) -> None:
        """An open statement's totals changed with no amount of its own recorded (its fee, by a
        suspension, resumption, version in force or end): stated for readers of its events."""
        if self.state != OPEN:
            raise TransitionError(f"statement {self.id} is {self.state}: it is never changed after issue")
        self._totals_stated(totals=totals, reason=reason)

    @event("TotalsStated", topic="accord_billing.domain:Statement.TotalsStated")
    def _totals_stated(self, totals: dict[str, Any], reason: str) -> None:
        pass  # what it states is computed from the statement and its agreement: nothing kept

    def issue(self, totals: dict[str, Any], issued_at: str, claim_until: str) -> None:
        if self.state == OPEN:
            self._issued(totals=totals, issued_at=issued_at, claim_until=claim_until)

    @event("Issued", topic="accord_billing.domain:Statement.Issued")
    def _issued(self, totals: dict[str, Any], issued_at: str, claim_until: str) -> None:
        self.state = ISSUED
        self.totals = totals
        self.issued_at = issued_at
        self.claim_until = claim_until

    def dispute(self, dispute_id: str, key: str, by: str, reason: str, now: str) -> None:
        if self.state != ISSUED:
            raise TransitionError(f"only an issued statement may be disputed; this one is {self.state}")
        if now > self.claim_until:
            raise TransitionError(f"the claim window closed at {self.claim_until}")
        if key not in self.assessments:
            raise NotFoundError(f"statement has no assessment {key!r}")
        if any(d["key"] == key and d["state"] == "OPEN" for d in self.disputes.values()):
            raise TransitionError(f"assessment {key!r} is already disputed")
        if not reason.strip():
            raise InvalidRequestError("reason is required to dispute an assessment")
        self._disputed(dispute_id=dispute_id, key=key, by=by, reason=reason)

    @event("Disputed", topic="accord_billing.domain:Statement.Disputed")
    def _disputed(self, dispute_id: str, key: str, by: str, reason: str) -> None:
        self.disputes = {**self.disputes, dispute_id: {"key": key, "by": by, "reason": reason, "state": "OPEN"}}

    def resolution(self, dispute_id: str, accept: bool, amount: str, reason: str) -> dict[str, dict[str, Any]]:
        """The disputes as they would be with this resolution (refused as `resolve` refuses it)."""
        d = self.disputes.get(dispute_id)
        if d is None:
            raise NotFoundError(f"statement has no dispute {dispute_id!r}")
        if d["state"] != "OPEN":
            raise TransitionError(f"dispute {dispute_id} is already {d['state']}")
        if not accept and not reason.strip():
            raise InvalidRequestError("reason is required to reject a dispute")
        resolved = {**d, "state": "ACCEPTED" if accept else "REJECTED", "amount": amount, "resolution": reason}
        return {**self.disputes, dispute_id: resolved}

    def resolve(
        self, dispute_id: str, accept: bool, amount: str, reason: str, totals: dict[str, Any] | None = None
    ) -> None:
        self.resolution(dispute_id, accept, amount, reason)
        self._resolved(dispute_id=dispute_id, accepted=accept, amount=amount, reason=reason, totals=totals)

    @event("Resolved", topic="accord_billing.domain:Statement.Resolved")
    def _resolved(
        self, dispute_id: str, accepted: bool, amount: str, reason: str, totals: dict[str, Any] | None = None
    ) -> None:
        d = {**self.disputes[dispute_id], "state": "ACCEPTED" if accepted else "REJECTED", "amount": amount,
             "resolution": reason}  # fmt: skip
        self.disputes = {**self.disputes, dispute_id: d}

    @property
    def open_disputes(self) -> list[str]:
        return [k for k, d in self.disputes.items() if d["state"] == "OPEN"]

    def finalize(self, totals: dict[str, Any]) -> None:
        if self.state == ISSUED and not self.open_disputes:
            self._finalized(totals=totals)

    @event("Finalized", topic="accord_billing.domain:Statement.Finalized")
    def _finalized(self, totals: dict[str, Any]) -> None:
        self.state = FINAL
        self.totals = totals


@stored_as("accord_billing.domain:LedgerTransaction")
class LedgerTransaction(Aggregate):
    """One double-entry posting of the chargeback ledger: entries sum to zero per currency."""

    class Posted(Aggregate.Created):
        TOPIC = "accord_billing.domain:LedgerTransaction.Posted"
        source: str
        entries: list[dict[str, str]]
        period: str
        description: str

    @staticmethod
    def create_id(source: str) -> UUID:
        return _id("ledger", source)

    @event(Posted)
    def __init__(self, source: str, entries: list[dict[str, str]], period: str, description: str) -> None:
        self.source = source
        self.entries = entries
        self.period = period
        self.description = description


@stored_as("accord_billing.domain:TerminationWatch")
class TerminationWatch(Aggregate):
    """One objective of one agreement: which billing periods it was breached in, and whether
    the agreement's termination rule has granted the customer the right to terminate."""

    # Made by @event below (for type checkers: the codec refers to them by attribute).
    Noted: ClassVar[type[Aggregate.Event]]
    Granted: ClassVar[type[Aggregate.Event]]

    class Started(Aggregate.Created):
        TOPIC = "accord_billing.domain:TerminationWatch.Started"
        agreement_id: str
        objective_id: str

    @staticmethod
    def create_id(agreement_id: str, objective_id: str) -> UUID:
        return _id("watch", agreement_id, objective_id)

    @event(Started)
    def __init__(self, agreement_id: str, objective_id: str) -> None:
        self.agreement_id = agreement_id
        self.objective_id = objective_id
        self.periods: dict[str, bool] = {}  # window start → breached
        self.granted = False

    def note(self, window_start: str, breached: bool) -> None:
        if self.periods.get(window_start) != breached:
            self._noted(window_start=window_start, breached=breached)

    @event("Noted", topic="accord_billing.domain:TerminationWatch.Noted")
    def _noted(self, window_start: str, breached: bool) -> None:
        self.periods = {**self.periods, window_start: breached}

    def grant(self, reason: str, breach_windows: list[str]) -> None:
        if not self.granted:
            self._granted(agreement_id=self.agreement_id, objective_id=self.objective_id, reason=reason,
                          breach_windows=breach_windows)  # fmt: skip

    @event("Granted", topic="accord_billing.domain:TerminationWatch.Granted")
    def _granted(self, agreement_id: str, objective_id: str, reason: str, breach_windows: list[str]) -> None:
        self.granted = True
