"""`accord webhook …`: a department's webhook subscriptions on the notifier — where breaches,
budget warnings, burn-rate alerts, statements with credits and dispute deadlines are sent
(signed with the subscription's secret) — and the record of every delivery attempt."""

from __future__ import annotations

from typing import Annotated

import typer

from accord.notifier.v1 import notifier_pb2 as npb
from accord.notifier.v1 import notifier_pb2_grpc as npb_grpc
from accord_cli.core import add_row, app, channel, emit, fail, metadata, table

webhook_app = typer.Typer(
    help="Webhook subscriptions (the notifier): where notifications go, and every delivery attempt.",
    no_args_is_help=True,
)
app.add_typer(webhook_app, name="webhook")

PREFIX = "NOTIFICATION_KIND_"
KINDS = [v.name.removeprefix(PREFIX).lower() for v in npb.NotificationKind.DESCRIPTOR.values if v.number]


def kind_numbers(kinds: list[str]) -> list[npb.NotificationKind.ValueType]:
    out: list[npb.NotificationKind.ValueType] = []
    for k in kinds:
        name = PREFIX + k.strip().upper().replace("-", "_")
        if name not in set(npb.NotificationKind.keys()) or name == PREFIX + "UNSPECIFIED":
            fail(f"--kind: {k!r} is not one of {', '.join(KINDS)}", 2)
        out.append(npb.NotificationKind.Value(name))
    return out


def kind_names(kinds: list[npb.NotificationKind.ValueType]) -> str:
    return ", ".join(npb.NotificationKind.Name(k).removeprefix(PREFIX).lower() for k in kinds) or "every kind"


@webhook_app.command("subscribe")
def subscribe(
    url: str,
    secret: Annotated[str, typer.Option(help="Signs every delivery (HMAC-SHA256); at least 16 characters")],
    kind: Annotated[list[str], typer.Option(help=f"Only these kinds (repeatable): {', '.join(KINDS)}")] = [],  # noqa: B006
    department: Annotated[str, typer.Option(help="Another department's (admins)")] = "",
) -> None:
    """Subscribe a webhook URL for the department's notifications (all kinds, or --kind …)."""
    with channel("notifier") as ch:
        r = npb_grpc.NotifierServiceStub(ch).Subscribe(
            npb.SubscribeRequest(department_id=department, url=url, secret=secret, kinds=kind_numbers(kind)),
            metadata=metadata(),
        )
    t = table("subscribed")
    for col in ("subscription", "department", "url", "kinds"):
        t.add_column(col, overflow="fold")
    s = r.subscription
    add_row(t, s.subscription_id, s.department_id, s.url, kind_names(list(s.kinds)))
    emit(r, t)


@webhook_app.command("list")
def list_subscriptions(
    department: Annotated[str, typer.Option(help="Another department's (admins, auditors)")] = "",
) -> None:
    """The department's subscriptions (never their secrets)."""
    with channel("notifier") as ch:
        r = npb_grpc.NotifierServiceStub(ch).ListSubscriptions(
            npb.ListSubscriptionsRequest(department_id=department), metadata=metadata()
        )
    t = table(f"{len(r.subscriptions)} subscriptions")
    for col in ("subscription", "department", "url", "kinds", "active", "since"):
        t.add_column(col, overflow="fold")
    for s in r.subscriptions:
        add_row(t, s.subscription_id, s.department_id, s.url, kind_names(list(s.kinds)), str(s.active), s.created_at)
    emit(r, t)


@webhook_app.command("unsubscribe")
def unsubscribe(
    subscription_id: str, department: Annotated[str, typer.Option(help="Another department's (admins)")] = ""
) -> None:
    """Stop a subscription (its deliveries stay recorded)."""
    with channel("notifier") as ch:
        r = npb_grpc.NotifierServiceStub(ch).Unsubscribe(
            npb.UnsubscribeRequest(department_id=department, subscription_id=subscription_id), metadata=metadata()
        )
    t = table("unsubscribed")
    t.add_column("subscription")
    t.add_column("active")
    add_row(t, r.subscription.subscription_id, str(r.subscription.active))
    emit(r, t)


@webhook_app.command("deliveries")
def deliveries(
    subscription: Annotated[str, typer.Option(help="One subscription's")] = "",
    department: Annotated[str, typer.Option(help="Another department's (admins, auditors)")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first (1–1000)")] = 100,
) -> None:
    """Every notification sent to the department and each attempt: status, error, next try."""
    if not 1 <= limit <= 1000:
        fail(f"--limit must be between 1 and 1000, not {limit}", 2)
    with channel("notifier") as ch:
        r = npb_grpc.NotifierServiceStub(ch).ListDeliveries(
            npb.ListDeliveriesRequest(department_id=department, subscription_id=subscription, limit=limit),
            metadata=metadata(),
        )
    t = table(f"{len(r.deliveries)} deliveries")
    for col in ("notification", "kind", "agreement", "target", "attempts", "outcome"):
        t.add_column(col, overflow="fold")
    for d in r.deliveries:
        last = d.attempts[-1] if d.attempts else None
        attempts = f"{len(d.attempts)}" + (f" (last {last.status_code or last.error})" if last else "")
        add_row(t, d.notification_id, npb.NotificationKind.Name(d.kind).removeprefix(PREFIX).lower(), d.agreement_id,
                d.target, attempts, d.outcome)  # fmt: skip
    emit(r, t)
