"""Composition root of the gateway: gRPC server (health, reflection) and the HTTP app."""

from __future__ import annotations

from accord_gateway.http import create_app, http_task
from accord_kit.auth import INFRA_POLICY, Policy, TokenVerifier
from accord_kit.runtime import Readiness, ServiceParts
from accord_kit.settings import ServiceSettings

POLICY = Policy.of(INFRA_POLICY)


def build(settings: ServiceSettings, *, verifier: TokenVerifier | None = None) -> ServiceParts:
    readiness = Readiness()
    http = create_app(is_ready=readiness.is_ready)
    return ServiceParts(
        readiness=readiness,
        settings=settings,
        policy=POLICY,
        register=[],
        verifier=verifier,
        extra_tasks=[http_task(http, settings.http_host, settings.http_port)],
    )
