"""The notifier's domain: webhook subscriptions per department, what it knows of agreements
(parties) and statements (their agreement), and notifications with every delivery attempt."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from accord_kit.topics import stored_as

# Kinds of notification (the proto's NotificationKind without its prefix).
BREACH = "BREACH"
BUDGET_WARNING = "BUDGET_WARNING"
BURN_RATE_FIRING = "BURN_RATE_FIRING"
BURN_RATE_RESOLVED = "BURN_RATE_RESOLVED"
STATEMENT_ISSUED = "STATEMENT_ISSUED"
DISPUTE_DEADLINE_APPROACHING = "DISPUTE_DEADLINE_APPROACHING"
STATEMENT_FINAL = "STATEMENT_FINAL"
KINDS = (
    BREACH,
    BUDGET_WARNING,
    BURN_RATE_FIRING,
    BURN_RATE_RESOLVED,
    STATEMENT_ISSUED,
    DISPUTE_DEADLINE_APPROACHING,
    STATEMENT_FINAL,
)
WEBHOOK, ALERTMANAGER = "webhook", "alertmanager"
PENDING, DELIVERED, ABANDONED = "PENDING", "DELIVERED", "ABANDONED"


class NotifierError(Exception):
    """Base of the notifier's domain errors."""


class NotFoundError(NotifierError):
    """No such subscription."""


class InvalidRequestError(NotifierError):
    """A request's arguments are missing or malformed (the message says which)."""


class NotYourDepartmentError(NotifierError):
    """A department asked about another department's subscriptions or deliveries."""


@stored_as("accord_notifier.domain:Subscriptions")
class Subscriptions(Aggregate):
    """One department's webhook subscriptions: url, secret (signs every delivery), kinds
    (empty: all), and whether each is still active."""

    Added: ClassVar[type[Aggregate.Event]]
    Removed: ClassVar[type[Aggregate.Event]]

    class Started(Aggregate.Created):
        TOPIC = "accord_notifier.domain:Subscriptions.Started"
        department_id: str

    @staticmethod
    def create_id(department_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:notifier:subscriptions:{department_id}")

    @event(Started)
    def __init__(self, department_id: str) -> None:
        self.department_id = department_id
        self.subscriptions: dict[str, dict[str, Any]] = {}

    def add(self, subscription_id: str, url: str, secret: str, kinds: list[str], at: str) -> None:
        self._added(
            department_id=self.department_id, subscription_id=subscription_id, url=url, secret=secret,
            kinds=kinds, at=at,
        )  # fmt: skip

    @event("Added", topic="accord_notifier.domain:Subscriptions.Added")
    def _added(
        self, department_id: str, subscription_id: str, url: str, secret: str, kinds: list[str], at: str
    ) -> None:
        self.subscriptions = {
            **self.subscriptions,
            subscription_id: {"url": url, "secret": secret, "kinds": list(kinds), "created_at": at, "active": True},
        }

    def remove(self, subscription_id: str) -> None:
        if subscription_id not in self.subscriptions:
            raise NotFoundError(f"department {self.department_id!r} has no subscription {subscription_id!r}")
        if self.subscriptions[subscription_id]["active"]:
            self._removed(department_id=self.department_id, subscription_id=subscription_id)

    @event("Removed", topic="accord_notifier.domain:Subscriptions.Removed")
    def _removed(self, department_id: str, subscription_id: str) -> None:
        self.subscriptions = {
            **self.subscriptions,
            subscription_id: {**self.subscriptions[subscription_id], "active": False},
        }

    def active_for(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """The active subscriptions that want `kind`, in the order they were made."""
        return [
            (sid, s) for sid, s in self.subscriptions.items() if s["active"] and (not s["kinds"] or kind in s["kinds"])
        ]


@stored_as("accord_notifier.domain:AgreementParties")
class AgreementParties(Aggregate):
    """An agreement's provider and customer departments (from its accepted versions), and the
    upstream events about it that arrived before its parties were known: they wait here,
    durably, and are routed when the parties become known."""

    Known: ClassVar[type[Aggregate.Event]]
    Held: ClassVar[type[Aggregate.Event]]

    class Seen(Aggregate.Created):
        TOPIC = "accord_notifier.domain:AgreementParties.Seen"
        agreement_id: str

    @staticmethod
    def create_id(agreement_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:notifier:agreement:{agreement_id}")

    @event(Seen)
    def __init__(self, agreement_id: str) -> None:
        self.agreement_id = agreement_id
        self.provider = ""
        self.customer = ""
        self.waiting: list[dict[str, Any]] = []

    @property
    def known(self) -> bool:
        return bool(self.provider or self.customer)

    def know(self, provider: str, customer: str) -> list[dict[str, Any]]:
        """Record the parties; returns the items that waited for them (now to be routed)."""
        if (provider, customer) == (self.provider, self.customer) and not self.waiting:
            return []
        released = list(self.waiting)
        self._known(agreement_id=self.agreement_id, provider=provider, customer=customer)
        return released

    @event("Known", topic="accord_notifier.domain:AgreementParties.Known")
    def _known(self, agreement_id: str, provider: str, customer: str) -> None:
        self.provider, self.customer, self.waiting = provider, customer, []

    def hold(self, item: dict[str, Any]) -> None:
        self._held(agreement_id=self.agreement_id, item=item)

    @event("Held", topic="accord_notifier.domain:AgreementParties.Held")
    def _held(self, agreement_id: str, item: dict[str, Any]) -> None:
        self.waiting = [*self.waiting, item]


@stored_as("accord_notifier.domain:StatementRef")
class StatementRef(Aggregate):
    """A statement's agreement (from StatementOpened), and whether its issue was noticed
    (it carried credits), so that its finalisation is noticed too."""

    Noticed: ClassVar[type[Aggregate.Event]]

    class Known(Aggregate.Created):
        TOPIC = "accord_notifier.domain:StatementRef.Known"
        statement_id: str
        agreement_id: str

    @staticmethod
    def create_id(statement_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:notifier:statement:{statement_id}")

    @event(Known)
    def __init__(self, statement_id: str, agreement_id: str) -> None:
        self.statement_id = statement_id
        self.agreement_id = agreement_id
        self.noticed = False

    def notice(self, claim_until: str) -> None:
        self._noticed(statement_id=self.statement_id, claim_until=claim_until)

    @event("Noticed", topic="accord_notifier.domain:StatementRef.Noticed")
    def _noticed(self, statement_id: str, claim_until: str) -> None:
        self.noticed = True


@stored_as("accord_notifier.domain:Notification")
class Notification(Aggregate):
    """One upstream event reported to one target (a department's webhook subscription, or
    Alertmanager): its body, when it may first be delivered, every attempt, and its outcome.
    Its id is stable (derived from the upstream event id, the rule and the target), so the
    same upstream event never queues it twice, and it is the Idempotency-Key of every attempt."""

    Attempted: ClassVar[type[Aggregate.Event]]
    Delivered: ClassVar[type[Aggregate.Event]]
    Abandoned: ClassVar[type[Aggregate.Event]]

    class Queued(Aggregate.Created):
        TOPIC = "accord_notifier.domain:Notification.Queued"
        kind: str
        target: str
        department_id: str
        subscription_id: str
        agreement_id: str
        source_event_id: str
        not_before: str
        body: dict[str, Any]
        queued_at: str

    @staticmethod
    def create_id(source_event_id: str, kind: str, target: str, subscription_id: str) -> UUID:
        """One notification per upstream event, kind and target (a subscription, or Alertmanager)."""
        return uuid5(NAMESPACE_URL, f"accord:notifier:notification:{source_event_id}:{kind}:{target}:{subscription_id}")

    @event(Queued)
    def __init__(
        self,
        kind: str,
        target: str,
        department_id: str,
        subscription_id: str,
        agreement_id: str,
        source_event_id: str,
        not_before: str,
        body: dict[str, Any],
        queued_at: str,
    ) -> None:
        self.kind = kind
        self.target = target
        self.department_id = department_id
        self.subscription_id = subscription_id
        self.agreement_id = agreement_id
        self.source_event_id = source_event_id
        self.not_before = not_before
        self.body = body
        self.queued_at = queued_at
        self.attempts: list[dict[str, Any]] = []
        self.state = PENDING
        self.outcome = ""

    @property
    def next_attempt_at(self) -> str:
        """When it is due next (RFC 3339); empty once delivered or abandoned."""
        if self.state != PENDING:
            return ""
        return self.attempts[-1]["next_attempt_at"] if self.attempts else self.not_before

    def attempted(self, at: str, status_code: int, error: str, next_attempt_at: str) -> None:
        self._attempted(
            attempt=len(self.attempts) + 1, at=at, status_code=status_code, error=error,
            next_attempt_at=next_attempt_at,
        )  # fmt: skip

    @event("Attempted", topic="accord_notifier.domain:Notification.Attempted")
    def _attempted(self, attempt: int, at: str, status_code: int, error: str, next_attempt_at: str) -> None:
        self.attempts = [
            *self.attempts,
            {"attempt": attempt, "at": at, "status_code": status_code, "error": error,
             "next_attempt_at": next_attempt_at},
        ]  # fmt: skip

    def delivered(self, at: str, status_code: int) -> None:
        if self.state == PENDING:
            self._delivered(attempt=len(self.attempts) + 1, at=at, status_code=status_code)

    @event("Delivered", topic="accord_notifier.domain:Notification.Delivered")
    def _delivered(self, attempt: int, at: str, status_code: int) -> None:
        self.attempts = [
            *self.attempts,
            {"attempt": attempt, "at": at, "status_code": status_code, "error": "", "next_attempt_at": ""},
        ]
        self.state = DELIVERED
        self.outcome = f"HTTP {status_code}"

    def abandon(self, reason: str) -> None:
        if self.state == PENDING:
            self._abandoned(attempts=len(self.attempts), reason=reason)

    @event("Abandoned", topic="accord_notifier.domain:Notification.Abandoned")
    def _abandoned(self, attempts: int, reason: str) -> None:
        self.state = ABANDONED
        self.outcome = reason
