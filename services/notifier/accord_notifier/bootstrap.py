"""Composition root of the notifier: store, application, gRPC servicers, relay, the
agreements, metrics and billing consumers, and the delivery task."""

from __future__ import annotations

from datetime import timedelta

from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.eventlog import register_event_log
from accord_kit.persistence import prepare_store
from accord_kit.runtime import ServiceParts, Upstream
from accord_kit.settings import ServiceSettings
from accord_notifier.application import Notifier, Rules
from accord_notifier.delivery import HEALTH, Deliverer, DeliveryPolicy
from accord_notifier.server import ERROR_MAP, register_notifier

SVC = "/accord.notifier.v1.NotifierService/"
# Which department a call may act for is checked by the application (its own, unless admin).
POLICY = Policy.of(
    INFRA_POLICY,
    EVENT_LOG_POLICY,
    {
        SVC + "Subscribe": {"department", "admin"},
        SVC + "Unsubscribe": {"department", "admin"},
        SVC + "ListSubscriptions": {"department", "admin", "auditor"},
        SVC + "ListDeliveries": {"department", "admin", "auditor"},
    },
)


def delivery_policy(settings: ServiceSettings) -> DeliveryPolicy:
    x = settings.extra
    return DeliveryPolicy(
        timeout=float(x.get("DELIVERY_TIMEOUT_SECONDS", "10")),
        max_attempts=int(float(x.get("MAX_ATTEMPTS", "8"))),
        retry_base=float(x.get("RETRY_BASE_SECONDS", "2")),
        retry_max=float(x.get("RETRY_MAX_SECONDS", "600")),
        alertmanager_url=x.get("ALERTMANAGER_URL", ""),
    )


def rules(settings: ServiceSettings) -> Rules:
    x = settings.extra
    return Rules(
        alertmanager=bool(x.get("ALERTMANAGER_URL")),
        dispute_notice=timedelta(days=float(x.get("DISPUTE_NOTICE_DAYS", "3"))),
        alert_hold=timedelta(hours=float(x.get("ALERT_HOLD_HOURS", "744"))),
    )


def build(
    settings: ServiceSettings, *, clock: Clock | None = None, verifier: TokenVerifier | None = None
) -> ServiceParts:
    prepare_store(settings)
    app = Notifier(settings.event_store_env(), clock=clock or settings.clock(), rules=rules(settings))
    parts = ServiceParts(
        settings=settings,
        policy=POLICY,
        register=[register_notifier(app), register_event_log(app)],
        app=app,
        upstreams=[Upstream("agreements"), Upstream("metrics"), Upstream("billing")],
        error_map=ERROR_MAP,
        verifier=verifier,
    )
    parts.health.statuses[HEALTH] = (True, "")
    deliverer = Deliverer(app, delivery_policy(settings), report=parts.health.set)
    parts.extra_tasks.append(deliverer.run)
    return parts
