"""Composition root of the agreements service: store, application, gRPC servicers, relay, consumers."""

from __future__ import annotations

from accord_agreements.application import Agreements
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.eventlog import register_event_log
from accord_kit.persistence import prepare_store
from accord_kit.runtime import ServiceParts, Upstream
from accord_kit.settings import ServiceSettings

POLICY = Policy.of(INFRA_POLICY, EVENT_LOG_POLICY)


def build(
    settings: ServiceSettings, *, clock: Clock | None = None, verifier: TokenVerifier | None = None
) -> ServiceParts:
    prepare_store(settings)
    app = Agreements(settings.event_store_env(), clock=clock)
    return ServiceParts(
        settings=settings,
        policy=POLICY,
        register=[register_event_log(app)],
        app=app,
        upstreams=[Upstream("billing")],
        verifier=verifier,
    )
