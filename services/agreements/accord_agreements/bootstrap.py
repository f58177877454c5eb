"""Composition root of the agreements service: store, application, gRPC servicers, relay,
the billing consumer, and the clock-driven task for expiry, renewal and scheduled ends."""

from __future__ import annotations

from accord_agreements.application import Agreements
from accord_agreements.server import ERROR_MAP, register_agreements
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.eventlog import register_event_log
from accord_kit.persistence import prepare_store
from accord_kit.runtime import ServiceParts, Upstream, periodic
from accord_kit.settings import ServiceSettings

SVC = "/accord.agreements.v1.AgreementsService/"
EVERYONE = {"department", "auditor", "admin", "service"}
PARTIES = {"department"}
POLICY = Policy.of(
    INFRA_POLICY,
    EVENT_LOG_POLICY,
    {
        SVC + "RegisterDepartment": {"admin"},
        SVC + "RegisterService": {"admin"},
        SVC + "DefineCalendar": {"admin"},
        SVC + "ListDepartments": EVERYONE,
        SVC + "ListServices": EVERYONE,
        SVC + "GetCalendar": EVERYONE,
        **{
            SVC + rpc: PARTIES
            for rpc in (
                "DraftAgreement",
                "ReviseDraft",
                "ProposeAgreement",
                "AcceptAgreement",
                "RejectProposal",
                "ProposeAmendment",
                "AcceptAmendment",
                "RejectAmendment",
                "WithdrawAmendment",
                "SuspendAgreement",
                "ResumeAgreement",
                "TerminateAgreement",
            )
        },
        **{SVC + rpc: EVERYONE for rpc in ("GetAgreement", "ListAgreements", "DiffVersions", "StreamHistory")},
        SVC + "GetAgreementAt": {"department", "auditor", "admin"},  # an audit query: not for services
    },
)
DUE_INTERVAL_SECONDS = 30.0  # how often scheduled terminations, expiries and renewals are applied


def build(
    settings: ServiceSettings,
    *,
    clock: Clock | None = None,
    verifier: TokenVerifier | None = None,
    due_interval: float | None = None,
) -> ServiceParts:
    prepare_store(settings)
    clock = clock or settings.clock()
    due_interval = due_interval or settings.tick_seconds or DUE_INTERVAL_SECONDS
    app = Agreements(settings.event_store_env(), clock=clock)
    return ServiceParts(
        settings=settings,
        policy=POLICY,
        register=[register_agreements(app), register_event_log(app)],
        app=app,
        upstreams=[Upstream("billing")],
        error_map=ERROR_MAP,
        verifier=verifier,
        extra_tasks=[periodic("agreements_due", app.process_due, due_interval)],
    )
