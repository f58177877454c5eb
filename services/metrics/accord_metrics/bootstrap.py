"""Composition root of the metrics service: store, application, gRPC servicers, relay, the
agreements consumer, the NATS signal intake and the Prometheus sources (when configured)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.eventlog import register_event_log
from accord_kit.heap import first_built
from accord_kit.persistence import prepare_store
from accord_kit.runtime import HealthBoard, ServiceParts, Upstream, periodic
from accord_kit.settings import ServiceSettings
from accord_metrics.application import Metrics
from accord_metrics.intake import SignalIntake, intake_task
from accord_metrics.judging import CLOSED_KEPT_SECONDS
from accord_metrics.prometheus import PrometheusSource, load_sources
from accord_metrics.recorder import RecordingProcess, RecordingUnavailableError
from accord_metrics.server import ERROR_MAP, register_metrics

SVC = "/accord.metrics.v1.MetricsService/"
POLICY = Policy.of(
    INFRA_POLICY,
    EVENT_LOG_POLICY,
    {
        # Which department may record which service's signals is decided per service.
        SVC + "RecordSignals": {"department", "service"},
        SVC + "RecordSignalBatch": {"department", "service"},
        # Parties (checked per agreement), auditors, admins and services read.
        SVC + "GetCompliance": {"department", "auditor", "admin", "service"},
        SVC + "GetEvaluation": {"department", "auditor", "admin", "service"},
        SVC + "ListBreaches": {"department", "auditor", "admin", "service"},
        SVC + "ListWindowSignals": {"department", "auditor", "admin", "service"},
        SVC + "RecomputeWindow": {"auditor", "admin"},
        # Audit (docs/domain.md §6): re-derivation is the auditors'; what-if and the two time axes
        # are also the parties' (checked per agreement).
        SVC + "RederiveEvaluations": {"auditor", "admin"},
        SVC + "WhatIf": {"department", "auditor", "admin"},
        SVC + "ComplianceAt": {"department", "auditor", "admin"},
    },
)
EVALUATE_EVERY_SECONDS = 5.0  # how often open windows are re-judged and ended ones closed
# Health service NOT_SERVING while an agreement's or objective's evaluation fails (the
# alert log `evaluation_isolated` names it; the others go on being judged).
EVALUATION_HEALTH = "accord.evaluation"


def store_env(settings: ServiceSettings) -> dict[str, str]:
    """The library's settings for metrics' store, with its aggregate cache (`METRICS_AGGREGATE_CACHE`),
    and the application's own: how long a closed window keeps its running evaluation
    (`METRICS_CLOSED_KEPT_SECONDS`, `Metrics.closed_kept`)."""
    cache = str(settings.aggregate_cache) if settings.aggregate_cache else ""
    return {
        **settings.event_store_env(),
        "AGGREGATE_CACHE_MAXSIZE": cache,
        CLOSED_KEPT_SECONDS: repr(settings.closed_kept_seconds),
    }


def build(
    settings: ServiceSettings,
    *,
    clock: Clock | None = None,
    verifier: TokenVerifier | None = None,
    evaluate_every: float | None = None,
) -> ServiceParts:
    # A sources file that does not say what is needed stops the start, naming the entry.
    sources = load_sources(settings.prometheus_sources) if settings.prometheus_sources else None
    prepare_store(settings)
    clock = clock or settings.clock()
    evaluate_every = evaluate_every or settings.tick_seconds or EVALUATE_EVERY_SECONDS
    verifier = verifier or TokenVerifier.from_file(settings.auth_public_key_file)
    app = Metrics(store_env(settings), clock=clock)
    at_stop = []
    tasks = []
    if settings.recorder == "process":
        # Signals recorded by a process of the service's own, beside it (accord_metrics.recorder):
        # started at once, so the first batch finds it ready; stopped after the calls are over.
        recording = RecordingProcess(store_env(settings), log_level=settings.log_level, log_format=settings.log_format)
        app.record_in(recording)
        tasks.append(_recording_started(recording))
        at_stop.append(_stopper(recording))
    health = HealthBoard()
    intake = SignalIntake(
        app, settings.nats_url, verifier, settings.nats_replicas, health=health, nats_auth=settings.nats_auth
    )
    # The first round after start converts the open windows' inputs (most of what the process
    # will hold): with the collector paused, then the heap settled (accord_kit.heap.building); the
    # later rounds with the collector paused too, not settled (accord_kit.heap.paused).
    tasks += [periodic("evaluation", first_built(app.evaluate), evaluate_every), intake_task(intake)]
    if sources is not None:
        tasks.append(PrometheusSource(app, sources, health=health).run)
    return ServiceParts(
        settings=settings,
        policy=POLICY,
        register=[register_metrics(app), register_event_log(app)],
        app=app,
        upstreams=[Upstream("agreements")],
        error_map=ERROR_MAP,
        verifier=verifier,
        extra_tasks=tasks,
        health=health,
        health_checks={EVALUATION_HEALTH: lambda: not app.evaluation_failures()},
        at_stop=at_stop,
    )


def _recording_started(recording: RecordingProcess) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    async def run(stop: asyncio.Event) -> None:
        try:
            await asyncio.to_thread(recording.start)
        except RecordingUnavailableError:
            pass  # logged; the next batch tries again (and is refused UNAVAILABLE if it cannot start)

    return run


def _stopper(recording: RecordingProcess) -> Callable[[], Coroutine[Any, Any, None]]:
    async def stop() -> None:
        await asyncio.to_thread(recording.stop)

    return stop
