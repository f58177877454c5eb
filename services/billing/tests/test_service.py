"""The billing service as it runs: its real bootstrap on both stores, gRPC over a real
channel, its stream created on NATS, its log served, its durability checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS

from accord.events.v1 import events_pb2, events_pb2_grpc
from accord_billing.bootstrap import build
from accord_billing.settings import load
from accord_kit.persistence import DurabilityError
from accord_kit.settings import SettingsError
from accord_kit.testing.fixtures import PG_HOST, PG_PORT, PG_USER
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ


async def test_billing_starts_serves_its_log_and_creates_its_stream(
    own_nats_server: NatsServer, tmp_path: Path, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    settings = load(service_environ("billing", tmp_path, own_nats_server.url, store_kind, db))
    keys = make_keys(tmp_path / "keys")
    async with running_service(build, settings, keys) as runtime:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = events_pb2_grpc.EventLogServiceStub(ch)
            resp = await stub.ReadEvents(events_pb2.ReadEventsRequest(), metadata=keys.metadata("auditor"))
            assert resp.head_position == 0
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReadEvents(events_pb2.ReadEventsRequest(), metadata=keys.metadata("department", "it"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        nc = NATS()
        await nc.connect(own_nats_server.url)
        info = await nc.jetstream().stream_info("BILLING")
        assert info.config.subjects == ["accord.billing.v1.>"]
        await nc.close()
        assert [u.source for u in runtime.parts.upstreams] == ["agreements", "metrics"]
    if store_kind == "sqlite":
        assert (tmp_path / "var" / "billing.sqlite").exists()


def test_billing_refuses_an_in_memory_sqlite_store(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"BILLING_SQLITE_PATH.*in-memory"):
        load({"BILLING_SQLITE_PATH": ":memory:"})


def test_billing_refuses_postgres_that_acknowledges_undurable_commits(
    tmp_path: Path, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db()
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db}" SET synchronous_commit = off')
    settings = load(service_environ("billing", tmp_path, "nats://127.0.0.1:1", "postgres", db))
    with pytest.raises(DurabilityError, match="synchronous_commit=off"):
        build(settings)
