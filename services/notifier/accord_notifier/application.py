"""The notifier application: owns the notifier's event store — departments' webhook
subscriptions, what it knows of agreements (parties) and statements, and every notification
with its delivery attempts. Its reactions to upstream events queue notifications in the same
transaction as the upstream position (so a consumed event is never lost); `delivery.py`
delivers them."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from google.protobuf.json_format import MessageToDict

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_kit.application import AccordApplication, topic_pages
from accord_kit.clock import Clock
from accord_kit.context import Principal
from accord_notifier.codec import codec
from accord_notifier.domain import (
    ALERTMANAGER,
    BREACH,
    BUDGET_WARNING,
    BURN_RATE_FIRING,
    BURN_RATE_RESOLVED,
    DISPUTE_DEADLINE_APPROACHING,
    KINDS,
    PENDING,
    STATEMENT_FINAL,
    STATEMENT_ISSUED,
    WEBHOOK,
    AgreementParties,
    InvalidRequestError,
    NotFoundError,
    Notification,
    NotYourDepartmentError,
    StatementRef,
    Subscriptions,
)

# The upstream events reported, and to whom: both parties of the agreement, or its customer.
METRIC_KINDS: dict[str, tuple[str, Any]] = {
    "BreachDetected": (BREACH, metric_events.BreachDetected),
    "BudgetWarning": (BUDGET_WARNING, metric_events.BudgetWarning),
    "BurnRateAlert": (BURN_RATE_FIRING, metric_events.BurnRateAlert),
    "BurnRateAlertResolved": (BURN_RATE_RESOLVED, metric_events.BurnRateAlertResolved),
}
NOTIFICATION_TOPICS = [
    Notification.Queued.TOPIC,
    "accord_notifier.domain:Notification.Attempted",
    "accord_notifier.domain:Notification.Delivered",
    "accord_notifier.domain:Notification.Abandoned",
]
MIN_SECRET = 16
MAX_LIST = 1000


@dataclass(frozen=True)
class Rules:
    """What is reported where: Alertmanager gets burn-rate alerts when configured; the
    reminder of a statement's dispute deadline is due `dispute_notice` before it; a firing
    alert is sent to Alertmanager with an end `alert_hold` after its start (metrics resolves
    every alert at the latest when its window closes, and the resolution ends it at once)."""

    alertmanager: bool = False
    dispute_notice: timedelta = timedelta(days=3)
    alert_hold: timedelta = timedelta(days=31)


@dataclass
class _Index:
    position: int = 0
    due: dict[UUID, datetime] = field(default_factory=dict)  # pending notification → next attempt
    by_department: dict[str, list[UUID]] = field(default_factory=lambda: defaultdict(list))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _parse(s: str) -> datetime:
    at = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _nonzero(x: str) -> bool:
    try:
        return Decimal(x or "0") != 0
    except InvalidOperation:
        return False


def severity(alert_name: str) -> str:
    """Fast-burning pairs (factor ≥ 6: 14.4x and 6x) page; slow ones (3x, 1x) open a ticket."""
    try:
        factor = Decimal(alert_name.split("x", 1)[0])
    except (InvalidOperation, IndexError):
        return "warning"
    return "critical" if factor >= 6 else "warning"


class Notifier(AccordApplication):
    """Subscriptions, notifications and their deliveries."""

    name = "Notifier"
    service = "notifier"

    def __init__(self, env: dict[str, str], clock: Clock | None = None, rules: Rules | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
        self.rules = rules or Rules()
        self._lock = threading.RLock()
        self._index = _Index()

    def _get_or(self, aggregate_id: Any, create: Callable[[], Any]) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return create()

    # -- subscriptions (gRPC) ---------------------------------------------------------------
    @staticmethod
    def department_of(caller: Principal | None, requested: str) -> str:
        """The department a call is about: a department's own (naming another is refused);
        an admin or auditor must name one."""
        if caller is not None and caller.role == "department":
            if requested and requested != caller.department:
                raise NotYourDepartmentError(
                    f"department {caller.department!r} may not act for department {requested!r}"
                )
            return caller.department
        if not requested:
            raise InvalidRequestError("department_id is required")
        return requested

    def subscribe(
        self, caller: Principal | None, department_id: str, url: str, secret: str, kinds: list[str]
    ) -> dict[str, Any]:
        department = self.department_of(caller, department_id)
        check_url(url)
        if len(secret) < MIN_SECRET:
            raise InvalidRequestError(f"secret must be at least {MIN_SECRET} characters")
        for k in kinds:
            if k not in KINDS:
                raise InvalidRequestError(f"kinds: {k!r} is not a notification kind")
        subs: Subscriptions = self._get_or(Subscriptions.create_id(department), lambda: Subscriptions(department))
        sid = str(uuid.uuid4())
        subs.add(sid, url, secret, sorted(set(kinds), key=KINDS.index), _iso(self.clock.now()))
        self.save(subs)
        return subscription_record(department, sid, subs.subscriptions[sid])

    def unsubscribe(self, caller: Principal | None, department_id: str, subscription_id: str) -> dict[str, Any]:
        department = self.department_of(caller, department_id)
        if not subscription_id:
            raise InvalidRequestError("subscription_id is required")
        subs: Subscriptions | None = self._get_or(Subscriptions.create_id(department), lambda: None)
        if subs is None:
            raise NotFoundError(f"department {department!r} has no subscription {subscription_id!r}")
        subs.remove(subscription_id)
        self.save(subs)
        return subscription_record(department, subscription_id, subs.subscriptions[subscription_id])

    def list_subscriptions(self, caller: Principal | None, department_id: str) -> list[dict[str, Any]]:
        department = self.department_of(caller, department_id)
        subs: Subscriptions | None = self._get_or(Subscriptions.create_id(department), lambda: None)
        if subs is None:
            return []
        return [subscription_record(department, sid, s) for sid, s in subs.subscriptions.items()]

    def subscription(self, department_id: str, subscription_id: str) -> dict[str, Any] | None:
        """A subscription with its secret (delivery only), or None when unknown."""
        subs: Subscriptions | None = self._get_or(Subscriptions.create_id(department_id), lambda: None)
        return None if subs is None else subs.subscriptions.get(subscription_id)

    # -- deliveries -----------------------------------------------------------------------------
    def refresh_index(self) -> None:
        """Bring the index of pending notifications and of each department's notifications up
        to date with the log (notifications saved by any process)."""
        with self._lock:
            idx = self._index
            for notes, read_to in topic_pages(self.recorder, idx.position, NOTIFICATION_TOPICS):
                for n in notes:
                    e: Any = self.mapper.to_domain_event(n)
                    nid = e.originator_id
                    if n.topic == Notification.Queued.TOPIC:
                        idx.due[nid] = _parse(e.not_before)
                        idx.by_department[e.department_id].append(nid)
                    elif n.topic.endswith(".Attempted"):
                        if e.next_attempt_at:
                            idx.due[nid] = _parse(e.next_attempt_at)
                    else:  # delivered or abandoned
                        idx.due.pop(nid, None)
                idx.position = read_to

    def due(self, now: datetime, limit: int = 100) -> list[Notification]:
        """Pending notifications due at `now`, the longest due first."""
        self.refresh_index()
        with self._lock:
            ids = sorted((at, str(i)) for i, at in self._index.due.items() if at <= now)[:limit]
        out: list[Notification] = []
        for _, i in ids:
            n: Notification = self.repository.get(UUID(i))
            if n.state == PENDING:
                out.append(n)
        return out

    def pending_count(self) -> int:
        self.refresh_index()
        with self._lock:
            return len(self._index.due)

    def next_due(self) -> datetime | None:
        self.refresh_index()
        with self._lock:
            return min(self._index.due.values(), default=None)

    def notification(self, notification_id: UUID) -> Notification:
        n: Notification = self.repository.get(notification_id)
        return n

    def record_attempt(self, notification_id: UUID, status_code: int, error: str, next_attempt_at: str) -> None:
        n = self.notification(notification_id)
        n.attempted(_iso(self.clock.now()), status_code, error, next_attempt_at)
        self.save(n)

    def record_delivered(self, notification_id: UUID, status_code: int) -> None:
        n = self.notification(notification_id)
        n.delivered(_iso(self.clock.now()), status_code)
        self.save(n)

    def record_abandoned(self, notification_id: UUID, reason: str) -> None:
        n = self.notification(notification_id)
        n.abandon(reason)
        self.save(n)

    def list_deliveries(
        self, caller: Principal | None, department_id: str, subscription_id: str = "", limit: int = 0
    ) -> list[Notification]:
        # An admin or auditor naming no department sees the Alertmanager deliveries.
        alerts = not department_id and (caller is None or caller.role != "department")
        department = "" if alerts else self.department_of(caller, department_id)
        limit = 100 if limit <= 0 else min(limit, MAX_LIST)
        self.refresh_index()
        with self._lock:
            ids = list(self._index.by_department.get(department, ()))
        out: list[Notification] = []
        for i in reversed(ids):
            n: Notification = self.repository.get(i)
            if subscription_id and n.subscription_id != subscription_id:
                continue
            out.append(n)
            if len(out) >= limit:
                break
        return out

    # -- reactions to upstream events ---------------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        package, _, name = envelope.type.rpartition(".")
        if package == "accord.agreements.v1" and name in ("AgreementAccepted", "AmendmentAccepted"):
            msg: Any = getattr(agreement_events, name)()
            envelope.payload.Unpack(msg)
            parties = msg.terms.parties
            agg = self._parties(msg.agreement_id)
            for item in agg.know(parties.provider_department_id, parties.customer_department_id):
                self._queue(item, agg, processing)
            processing.collect_events(agg)
        elif package == "accord.metrics.v1" and name in METRIC_KINDS:
            kind, cls = METRIC_KINDS[name]
            metric = cls()
            envelope.payload.Unpack(metric)
            item = self._item(kind, envelope, metric, metric.agreement_id)
            self._route(item, processing)
            if self.rules.alertmanager and kind in (BURN_RATE_FIRING, BURN_RATE_RESOLVED):
                self._queue_alert(kind, envelope, metric, processing)
        elif package == "accord.billing.v1":
            self._billing(name, envelope, processing)

    def _billing(self, name: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        if name == "StatementOpened":
            opened = billing_events.StatementOpened()
            envelope.payload.Unpack(opened)
            ref = self._get_or(StatementRef.create_id(opened.statement_id), lambda: None)
            if ref is None:
                processing.collect_events(StatementRef(opened.statement_id, opened.agreement_id))
        elif name == "StatementIssued":
            issued = billing_events.StatementIssued()
            envelope.payload.Unpack(issued)
            ref = self._get_or(StatementRef.create_id(issued.statement_id), lambda: None)
            totals = issued.totals
            credits = _nonzero(totals.credits_issued) or _nonzero(totals.adjustments) or _nonzero(totals.net)
            if ref is None or ref.noticed or not credits:
                return
            ref.notice(issued.claim_until)
            processing.collect_events(ref)
            self._route(self._item(STATEMENT_ISSUED, envelope, issued, ref.agreement_id), processing)
            if issued.claim_until:
                remind_at = _parse(issued.claim_until) - self.rules.dispute_notice
                if remind_at > self.clock.now():
                    item = self._item(DISPUTE_DEADLINE_APPROACHING, envelope, issued, ref.agreement_id)
                    item["audience"], item["not_before"] = "customer", _iso(remind_at)
                    self._route(item, processing)
        elif name == "StatementFinalized":
            final = billing_events.StatementFinalized()
            envelope.payload.Unpack(final)
            ref = self._get_or(StatementRef.create_id(final.statement_id), lambda: None)
            if ref is not None and ref.noticed:
                self._route(self._item(STATEMENT_FINAL, envelope, final, ref.agreement_id), processing)

    def _parties(self, agreement_id: str) -> AgreementParties:
        agg: AgreementParties = self._get_or(
            AgreementParties.create_id(agreement_id), lambda: AgreementParties(agreement_id)
        )
        return agg

    def _item(self, kind: str, envelope: events_pb2.EventEnvelope, payload: Any, agreement_id: str) -> dict[str, Any]:
        occurred = _iso(envelope.occurred_at.ToDatetime(tzinfo=UTC))
        return {
            "kind": kind,
            "audience": "both",
            "agreement_id": agreement_id,
            "source_event_id": envelope.event_id,
            "event_type": envelope.type,
            "occurred_at": occurred,
            "not_before": _iso(self.clock.now()),
            "event": MessageToDict(payload, preserving_proto_field_name=True),
        }

    def _route(self, item: dict[str, Any], processing: ProcessingEvent[Any]) -> None:
        """Queue `item` for its audience's subscriptions, or hold it until the agreement's
        parties are known (the agreements stream may be behind the others)."""
        parties = self._parties(item["agreement_id"])
        if parties.known:
            self._queue(item, parties, processing)
        else:
            parties.hold(item)
            processing.collect_events(parties)

    def _queue(self, item: dict[str, Any], parties: AgreementParties, processing: ProcessingEvent[Any]) -> None:
        audience = [parties.customer] if item["audience"] == "customer" else [parties.provider, parties.customer]
        queued_at = _iso(self.clock.now())
        for department in dict.fromkeys(d for d in audience if d):
            subs: Subscriptions | None = self._get_or(Subscriptions.create_id(department), lambda: None)
            if subs is None:
                continue
            for sid, _ in subs.active_for(item["kind"]):
                nid = Notification.create_id(item["source_event_id"], item["kind"], WEBHOOK, sid)
                if self._get_or(nid, lambda: None) is not None:
                    continue
                body = {
                    "notification_id": str(nid),
                    "kind": item["kind"],
                    "department_id": department,
                    "agreement_id": item["agreement_id"],
                    "occurred_at": item["occurred_at"],
                    "source_event_id": item["source_event_id"],
                    "event_type": item["event_type"],
                    "event": item["event"],
                }
                if item["kind"] == DISPUTE_DEADLINE_APPROACHING:
                    body["dispute_until"] = item["event"].get("claim_until", "")
                n = Notification(
                    kind=item["kind"], target=WEBHOOK, department_id=department, subscription_id=sid,
                    agreement_id=item["agreement_id"], source_event_id=item["source_event_id"],
                    not_before=item["not_before"], body=body, queued_at=queued_at,
                )  # fmt: skip
                processing.collect_events(n)

    def _queue_alert(
        self, kind: str, envelope: events_pb2.EventEnvelope, alert: Any, processing: ProcessingEvent[Any]
    ) -> None:
        """A burn-rate alert as Alertmanager's API takes it: firing with startsAt (and an
        endsAt `alert_hold` later, see Rules), resolved with endsAt."""
        at = envelope.occurred_at.ToDatetime(tzinfo=UTC)
        labels = {
            "alertname": "AccordBurnRate",
            "agreement": alert.agreement_id,
            "objective": alert.objective_id,
            "severity": severity(alert.name),
            "pair": alert.name,
            "window_start": alert.window_start,
        }
        body: dict[str, Any] = {"labels": labels, "startsAt": _iso(at)}
        if kind == BURN_RATE_FIRING:
            body["endsAt"] = _iso(at + self.rules.alert_hold)
            body["annotations"] = {
                "summary": f"burn rate {alert.long_rate} over the long and {alert.short_rate} over the short "
                f"window exceed {alert.factor}",
            }
        else:
            body["endsAt"] = _iso(at)
            body["annotations"] = {"summary": f"resolved: {alert.reason}"}
        nid = Notification.create_id(envelope.event_id, kind, ALERTMANAGER, "")
        if self._get_or(nid, lambda: None) is not None:
            return
        now = _iso(self.clock.now())
        n = Notification(
            kind=kind, target=ALERTMANAGER, department_id="", subscription_id="", agreement_id=alert.agreement_id,
            source_event_id=envelope.event_id, not_before=now, body=body, queued_at=now,
        )  # fmt: skip
        processing.collect_events(n)


def check_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise InvalidRequestError(f"url {url!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(f"url {url!r} must be an http or https URL with a host")


def subscription_record(department: str, subscription_id: str, s: dict[str, Any]) -> dict[str, Any]:
    """A subscription as the API shows it (never its secret)."""
    return {
        "subscription_id": subscription_id,
        "department_id": department,
        "url": s["url"],
        "kinds": list(s["kinds"]),
        "created_at": s["created_at"],
        "active": s["active"],
    }
