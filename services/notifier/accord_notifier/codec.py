"""Domain events of the notifier → their public messages (protos/accord/notifier/v1/events.proto).
A subscription's secret and a notification's body are not in them."""

from __future__ import annotations

from typing import Any

from accord.notifier.v1 import events_pb2 as ev
from accord.notifier.v1 import notifier_pb2 as pb
from accord_kit.envelope import EventCodec
from accord_notifier.domain import AgreementParties, Notification, StatementRef, Subscriptions


def kind_number(kind: str) -> Any:
    return pb.NotificationKind.Value(f"NOTIFICATION_KIND_{kind}")


def codec() -> EventCodec:
    c = EventCodec("notifier")
    S = Subscriptions  # noqa: N806
    c.register(S.Started, ev.SubscriptionAdded, lambda e: ev.SubscriptionAdded(department_id=e.department_id))
    c.register(
        S.Added,
        ev.SubscriptionAdded,
        lambda e: ev.SubscriptionAdded(
            subscription_id=e.subscription_id, department_id=e.department_id, url=e.url,
            kinds=[kind_number(k) for k in e.kinds],
        ),
    )  # fmt: skip
    c.register(
        S.Removed,
        ev.SubscriptionRemoved,
        lambda e: ev.SubscriptionRemoved(subscription_id=e.subscription_id, department_id=e.department_id),
    )
    A = AgreementParties  # noqa: N806
    c.register(A.Seen, ev.AgreementPartiesKnown, lambda e: ev.AgreementPartiesKnown(agreement_id=e.agreement_id))
    c.register(
        A.Known,
        ev.AgreementPartiesKnown,
        lambda e: ev.AgreementPartiesKnown(
            agreement_id=e.agreement_id, provider_department_id=e.provider, customer_department_id=e.customer
        ),
    )
    c.register(
        A.Held, ev.AgreementPartiesKnown, lambda e: ev.AgreementPartiesKnown(agreement_id=e.agreement_id, waiting=1)
    )
    c.register(
        StatementRef.Known,
        ev.StatementKnown,
        lambda e: ev.StatementKnown(statement_id=e.statement_id, agreement_id=e.agreement_id),
    )
    c.register(StatementRef.Noticed, ev.StatementKnown, lambda e: ev.StatementKnown(statement_id=e.statement_id))
    N = Notification  # noqa: N806
    c.register(
        N.Queued,
        ev.NotificationQueued,
        lambda e: ev.NotificationQueued(
            notification_id=str(e.originator_id), kind=kind_number(e.kind), target=e.target,
            department_id=e.department_id, subscription_id=e.subscription_id, agreement_id=e.agreement_id,
            source_event_id=e.source_event_id, not_before=e.not_before,
        ),
    )  # fmt: skip
    c.register(
        N.Attempted,
        ev.DeliveryAttempted,
        lambda e: ev.DeliveryAttempted(
            notification_id=str(e.originator_id), attempt=e.attempt, status_code=e.status_code, error=e.error,
            next_attempt_at=e.next_attempt_at,
        ),
    )  # fmt: skip
    c.register(
        N.Delivered,
        ev.NotificationDelivered,
        lambda e: ev.NotificationDelivered(
            notification_id=str(e.originator_id), attempt=e.attempt, status_code=e.status_code
        ),
    )
    c.register(
        N.Abandoned,
        ev.DeliveryAbandoned,
        lambda e: ev.DeliveryAbandoned(notification_id=str(e.originator_id), attempts=e.attempts, reason=e.reason),
    )
    return c
