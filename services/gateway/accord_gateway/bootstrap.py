"""Composition root of the gateway: the read model, its consumers of the three streams, the
gRPC GatewayService and the HTTP app."""

from __future__ import annotations

import asyncio

from accord_gateway.explain import MetricsWindowSignals
from accord_gateway.http import create_app, http_task
from accord_gateway.intake import MetricsForwarder
from accord_gateway.projection import ReadModel, warm_task
from accord_gateway.server import ERROR_MAP, register_gateway
from accord_gateway.slo import SloCollector
from accord_gateway.snapshot import load_snapshot, snapshot_task
from accord_kit.auth import INFRA_POLICY, Policy, TokenVerifier
from accord_kit.runtime import Readiness, ServiceParts, Upstream
from accord_kit.settings import ServiceSettings

SVC = "/accord.gateway.v1.GatewayService/"
READERS = {"department", "auditor", "admin", "service"}
POLICY = Policy.of(
    INFRA_POLICY,
    {
        SVC + rpc: READERS
        for rpc in ("GetAgreementStatus", "GetDepartmentStatus", "GetServiceStatus", "GetPortfolio", "WatchStatus")
    },
)


def build(settings: ServiceSettings, *, verifier: TokenVerifier | None = None) -> ServiceParts:
    verifier = verifier or TokenVerifier.from_file(settings.auth_public_key_file)
    readiness = Readiness()
    model = ReadModel()
    snapshot_tasks, at_stop = [], []
    if settings.snapshot_path is not None:
        # Resume from the snapshot's positions (a full rebuild when there is none usable).
        load_snapshot(model, settings.snapshot_path)
        periodic_snapshot, last_snapshot = snapshot_task(model, settings.snapshot_path, settings.snapshot_seconds)
        snapshot_tasks, at_stop = [periodic_snapshot], [last_snapshot]
    # The signal intake forwards to metrics with the caller's own token: nothing kept here.
    metrics = MetricsForwarder(settings.addresses["metrics"], settings.max_message_bytes)
    # Breach timelines ask metrics for the signals that explain a window, as the gateway's service.
    window_signals = MetricsWindowSignals(
        settings.addresses["metrics"], token=lambda: settings.service_token_file.read_text().strip()
    )
    http = create_app(
        is_ready=readiness.is_ready,
        model=model,
        verifier=verifier,
        not_ready=readiness.detail,
        metrics=metrics,
        max_body_bytes=settings.max_message_bytes,
        window_signals=window_signals,
    )

    async def close_metrics_channel(stop: asyncio.Event) -> None:
        await stop.wait()
        await window_signals.close()

    return ServiceParts(
        readiness=readiness,
        settings=settings,
        policy=POLICY,
        register=[register_gateway(model)],
        applier=model,
        upstreams=[Upstream("agreements"), Upstream("metrics"), Upstream("billing")],
        error_map=ERROR_MAP,
        verifier=verifier,
        extra_tasks=[
            http_task(http, settings.http_host, settings.http_port, metrics=metrics),
            close_metrics_channel,
            warm_task(model, readiness.is_ready),
            *snapshot_tasks,
        ],
        at_stop=at_stop,
        collectors=[SloCollector(model)],
    )
