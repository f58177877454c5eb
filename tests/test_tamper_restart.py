"""The agreements service restarted over a log tampered with before its last checkpoint:
its start-up verification finds it, it seals nothing more (`accord.chain` NOT_SERVING),
and reading the damaged agreement answers DATA_LOSS naming the position, not INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord_agreements.application import Agreements
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_agreements.settings import load as load_agreements
from accord_kit.chain import latest_checkpoint
from accord_kit.clock import FakeClock
from accord_kit.runtime import CHAIN_HEALTH
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.tamper import Store
from tests.suite import AMS, CUSTOMER, PROVIDER, at


@pytest.mark.parametrize("tamper", ["edit", "delete"])
async def test_a_damaged_agreement_after_restart_reads_as_data_loss_and_the_log_is_not_sealed_again(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str], tamper: str
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    env = service_environ("agreements", tmp_path, own_nats_server.url, store_kind, db, AGREEMENTS_SEAL_SECONDS="3600")
    settings = load_agreements(env)
    keys = make_keys(tmp_path / "keys")
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    async with running_service(build_agreements, settings, keys, clock=clock) as runtime:
        app = runtime.parts.app
        assert isinstance(app, Agreements)
        for dept in (IT, FINANCE):
            app.register_department(dept, dept)
        app.register_service(EMAIL, "E-mail", IT)
        aid = str(app.draft(PROVIDER, sla_terms()).id)
        app.propose(PROVIDER, aid)
        app.accept(CUSTOMER, aid)
        assert await runtime.seal_once() is not None
        events_table = str(app.recorder.events_table_name)  # type: ignore[attr-defined]
    reopened = Agreements(settings.event_store_env())
    try:
        sealed, _ = latest_checkpoint(reopened)
        assert sealed is not None
    finally:
        reopened.close()
    store = Store(store_kind, settings.event_store_env(), events_table)
    try:
        positions = store.positions_of(aid)
        assert len(positions) >= 3 and positions[-1] <= sealed.position
        victim = positions[1]
        if tamper == "edit":
            store.set_state(victim, b"\xff not what was stored")
        else:
            store.delete(victim)
    finally:
        store.close()

    async with (
        running_service(build_agreements, settings, keys, clock=clock) as runtime,
        grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
    ):
        assert await runtime.startup_verified() is False
        health = health_pb2_grpc.HealthStub(channel)
        chain = await health.Check(health_pb2.HealthCheckRequest(service=CHAIN_HEALTH))
        assert chain.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await apb_grpc.AgreementsServiceStub(channel).GetAgreement(
                apb.GetAgreementRequest(agreement_id=aid), metadata=keys.metadata("department", IT)
            )
        assert err.value.code() == grpc.StatusCode.DATA_LOSS, err.value.details()
        assert f"at position {victim}" in (err.value.details() or "")
        assert await runtime.seal_once() is None
    reopened = Agreements(settings.event_store_env())
    try:
        again, _ = latest_checkpoint(reopened)
        assert again is not None and again.position == sealed.position, "a checkpoint was signed over the damage"
    finally:
        reopened.close()
