"""The single-writer lease (accord_kit.lease) on real PostgreSQL and NATS: two instances of the
counter service on one store, one active and one hot standby that answers health NOT_SERVING
and refuses calls with UNAVAILABLE (storing nothing); the standby takes over when the active
one stops, publishing on from the stream's head; an instance whose lease session is ended
stops instead of writing on."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.auth import TokenVerifier
from accord_kit.eventlog import register_event_log
from accord_kit.lease import Lease, lease_key
from accord_kit.nats_util import connect
from accord_kit.runtime import ServiceParts, ServiceRuntime
from accord_kit.settings import ServiceSettings, SettingsError
from accord_kit.testing.counter import COUNTER_POLICY, Counters, register_counter
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, ensure_chain_key, make_keys, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream


def _settings(tmp_path: Path, nats_url: str, dbname: str, service: str) -> ServiceSettings:
    env = service_environ(
        "counter", tmp_path, nats_url, "postgres", dbname, ACCORD_LEASE="postgres", COUNTER_SEAL_SECONDS="0"
    )
    settings = ServiceSettings.from_env("counter", env)
    ensure_chain_key(settings)
    return settings


def _runtime(settings: ServiceSettings, keys: Keys, service: str) -> ServiceRuntime:
    app = Counters(settings.event_store_env(), service=service)
    parts = ServiceParts(
        settings=settings,
        policy=COUNTER_POLICY,
        register=[register_counter(app), register_event_log(app)],
        app=app,
        verifier=TokenVerifier(keys.public_file.read_bytes()),
    )
    return ServiceRuntime(parts)


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(resp.status)


async def _increment(port: int, keys: Keys, counter: str) -> counter_pb2.IncrementResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        return await stub.Increment(
            counter_pb2.IncrementRequest(counter_id=counter, amount=1), metadata=keys.metadata("admin"), timeout=10
        )


def test_lease_needs_postgres() -> None:
    with pytest.raises(SettingsError, match="ACCORD_LEASE=postgres needs ACCORD_PERSISTENCE=postgres"):
        ServiceSettings.from_env("counter", {"ACCORD_LEASE": "postgres"})
    with pytest.raises(SettingsError, match="ACCORD_LEASE must be"):
        ServiceSettings.from_env("counter", {"ACCORD_LEASE": "kv", "ACCORD_PERSISTENCE": "postgres"})
    assert lease_key("agreements") == lease_key("agreements") != lease_key("billing")


def test_lease_idle_seconds_is_a_setting_of_at_least_three() -> None:
    env = {"ACCORD_LEASE": "postgres", "ACCORD_PERSISTENCE": "postgres"}
    assert ServiceSettings.from_env("counter", env).lease_idle_seconds == 10.0
    assert ServiceSettings.from_env("counter", {**env, "ACCORD_LEASE_IDLE_SECONDS": "4.5"}).lease_idle_seconds == 4.5
    with pytest.raises(SettingsError, match=r"ACCORD_LEASE_IDLE_SECONDS must be between 3 and 3600, not 1\.0"):
        ServiceSettings.from_env("counter", {**env, "ACCORD_LEASE_IDLE_SECONDS": "1"})
    with pytest.raises(SettingsError, match="ACCORD_LEASE_IDLE_SECONDS must be a number"):
        ServiceSettings.from_env("counter", {**env, "ACCORD_LEASE_IDLE_SECONDS": "ten"})


def test_a_silent_holder_loses_the_lease_after_lease_idle_seconds(
    tmp_path: Path, own_nats_server: NatsServer, postgres_db: Callable[[], str]
) -> None:
    """A holder that stops speaking on its lease session (its keepalive stopped, as a frozen process's
    is) loses the lease after `ACCORD_LEASE_IDLE_SECONDS` — here 3 s, not the default 10 — and
    another instance takes it; one that goes on speaking keeps it past that."""
    dbname = postgres_db()
    service = f"lease{uuid.uuid4().hex[:6]}"
    env = service_environ(
        "counter", tmp_path, own_nats_server.url, "postgres", dbname, ACCORD_LEASE="postgres",
        ACCORD_LEASE_IDLE_SECONDS="3",
    )  # fmt: skip
    settings = ServiceSettings.from_env("counter", env)
    assert settings.lease_idle_seconds == 3.0
    settings = dataclasses.replace(settings, service=service)

    async def run() -> None:
        holder, other = Lease(settings, poll_seconds=0.1), Lease(settings, poll_seconds=0.1)
        stop = asyncio.Event()
        assert await holder.acquire(stop)
        try:
            waiting = asyncio.create_task(other.acquire(stop))
            await asyncio.sleep(4.5)  # past the idle time: the holder speaking keeps it
            assert not waiting.done()
            holder._stop_keepalive.set()  # silent from here on
            silent = time.monotonic()
            assert await asyncio.wait_for(waiting, timeout=30)
            took = time.monotonic() - silent
            assert 2.0 <= took < 8.0, f"the lease taken {took:.1f} s after its holder went silent"
        finally:
            stop.set()
            holder.release()
            other.release()

    asyncio.run(run())


def test_standby_refuses_until_it_holds_the_lease_then_takes_over(
    tmp_path: Path, own_nats_server: NatsServer, postgres_db: Callable[[], str]
) -> None:
    keys = make_keys(tmp_path / "keys")
    dbname = postgres_db()
    service = f"lease{uuid.uuid4().hex[:6]}"
    settings = _settings(tmp_path, own_nats_server.url, dbname, service)

    async def run() -> None:
        active, standby = _runtime(settings, keys, service), _runtime(settings, keys, service)
        await active.start()
        await eventually(active.parts.readiness.is_ready, timeout=30, what="active ready")
        await standby.start()
        try:
            assert (await _increment(active.port, keys, "a")).value == 1
            await asyncio.sleep(1.0)  # the standby has tried the lease a few times
            assert not standby.writer and not standby.parts.readiness.is_ready()
            assert await _health(standby.port) == health_pb2.HealthCheckResponse.NOT_SERVING
            head = standby.parts.app.head_position()  # type: ignore[union-attr]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _increment(standby.port, keys, "b")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "standby" in (refused.value.details() or "")
            assert standby.parts.app.head_position() == head  # type: ignore[union-attr]
            assert standby.relay is None and not standby.consumers

            await active.stop()  # its lease session ends with it
            await eventually(standby.parts.readiness.is_ready, timeout=30, what="standby took over")
            assert standby.writer
            assert await _health(standby.port) == health_pb2.HealthCheckResponse.SERVING
            assert (await _increment(standby.port, keys, "a")).value == 2
            assert (await _increment(standby.port, keys, "b")).value == 1
            app = standby.parts.app
            assert app is not None
            head = app.head_position()
            nc = await connect(own_nats_server.url, name="check")
            try:
                relay = standby.relay
                await eventually(lambda: relay is not None and relay.stats.head_position == head, what="relayed")
                messages = await read_stream(nc, settings.stream)
            finally:
                await nc.close()
            # Both instances' events, in log order, exactly once: the standby's relay went on from the head.
            assert_exactly_once_in_order(messages, list(range(1, head + 1)))

            # Its lease session ended from outside (a lost connection): it stops, writing nothing more.
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=dbname, autocommit=True
            ) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    ("accord-counter-lease",),
                )
            await eventually(lambda: standby.fatal is not None, timeout=10, what="lease_lost")
            assert "lease" in str(standby.fatal)
        finally:
            await standby.stop()

    asyncio.run(run())
