"""Checks every event-sourced service passes, shared by the services' own test files:
it starts on its real bootstrap, serves its log over gRPC with auth, creates its stream,
consumes the streams it should, and refuses stores that would acknowledge undurable writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.events.v1 import events_pb2, events_pb2_grpc
from accord_kit.nats_util import connect
from accord_kit.persistence import DurabilityError
from accord_kit.settings import ServiceSettings, SettingsError
from accord_kit.testing.fixtures import PG_HOST, PG_PORT, PG_USER
from accord_kit.testing.service import make_keys, running_service, service_environ

Build = Callable[..., Any]
Load = Callable[[dict[str, str]], ServiceSettings]


async def check_starts_and_serves_its_log(
    service: str,
    build: Build,
    load: Load,
    upstreams: list[str],
    nats_url: str,
    tmp_path: Path,
    store_kind: str,
    db: str,
) -> None:
    settings = load(service_environ(service, tmp_path, nats_url, store_kind, db))
    keys = make_keys(tmp_path / "keys")
    async with running_service(build, settings, keys) as runtime:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = events_pb2_grpc.EventLogServiceStub(ch)
            resp = await stub.ReadEvents(events_pb2.ReadEventsRequest(), metadata=keys.metadata("auditor"))
            app = runtime.parts.app
            assert app is not None
            assert resp.head_position == app.head_position()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReadEvents(events_pb2.ReadEventsRequest(), metadata=keys.metadata("department", "it"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        nc = await connect(nats_url, name="check")
        try:
            info = await nc.jetstream().stream_info(service.upper())
        finally:
            await nc.close()
        assert info.config.subjects == [f"accord.{service}.v1.>"]
        assert [u.source for u in runtime.parts.upstreams] == upstreams
    if store_kind == "sqlite":
        assert (tmp_path / "var" / f"{service}.sqlite").exists()


def check_refuses_in_memory_sqlite(service: str, load: Load) -> None:
    with pytest.raises(SettingsError, match=rf"{service.upper()}_SQLITE_PATH.*in-memory"):
        load({f"{service.upper()}_SQLITE_PATH": ":memory:"})


def check_refuses_undurable_postgres(service: str, build: Build, load: Load, tmp_path: Path, db: str) -> None:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=db, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db}" SET synchronous_commit = off')
    settings = load(service_environ(service, tmp_path, "nats://127.0.0.1:1", "postgres", db))
    with pytest.raises(DurabilityError, match="synchronous_commit=off"):
        build(settings)
