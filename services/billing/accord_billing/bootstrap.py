"""Composition root of the billing service: store, application, gRPC servicers, relay, the
agreements and metrics consumers, and the clock-driven issue/finalise task."""

from __future__ import annotations

from accord_billing.application import Billing
from accord_billing.server import ERROR_MAP, register_billing
from accord_kit import tracing
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.eventlog import EventLogClient, register_event_log
from accord_kit.persistence import prepare_store
from accord_kit.runtime import ServiceParts, Upstream, periodic
from accord_kit.settings import ServiceSettings

SVC = "/accord.billing.v1.BillingService/"
READERS = {"department", "auditor", "admin", "service"}
POLICY = Policy.of(
    INFRA_POLICY,
    EVENT_LOG_POLICY,
    {
        **{
            SVC + rpc: READERS
            for rpc in ("GetStatement", "ListStatements", "GetAssessment", "GetLedgerEntries", "GetBalances")
        },
        # Which department may dispute (the customer) or resolve (the provider) is decided per agreement.
        SVC + "DisputeAssessment": {"department"},
        SVC + "ResolveDispute": {"department"},
        # Audit: the re-derivation reads every agreement's upstream history, so auditors and
        # admins only; what-if pricing and both time axes also for the agreement's parties.
        SVC + "RederiveAssessments": {"auditor", "admin"},
        SVC + "PriceEvaluations": {"department", "auditor", "admin"},
        SVC + "StatementsAt": {"department", "auditor", "admin"},
    },
)
DUE_EVERY_SECONDS = 30.0  # how often statements are issued and finalised on the clock


def build(
    settings: ServiceSettings,
    *,
    clock: Clock | None = None,
    verifier: TokenVerifier | None = None,
    due_every: float | None = None,
) -> ServiceParts:
    prepare_store(settings)
    clock = clock or settings.clock()
    due_every = due_every or settings.tick_seconds or DUE_EVERY_SECONDS
    app = Billing(settings.event_store_env(), clock=clock)

    def upstream_log(service: str) -> EventLogClient:
        # One client per re-derivation, with the service token the consumers present too.
        return EventLogClient(
            settings.addresses[service],
            token=lambda: settings.service_token_file.read_text().strip(),
            max_message_bytes=settings.max_message_bytes,
            interceptors=tracing.client_interceptors(),
        )

    return ServiceParts(
        settings=settings,
        policy=POLICY,
        register=[register_billing(app, upstream_log), register_event_log(app)],
        app=app,
        upstreams=[Upstream("agreements"), Upstream("metrics")],
        error_map=ERROR_MAP,
        verifier=verifier,
        extra_tasks=[periodic("billing_due", app.process_due, due_every)],
    )
