"""A tamper in the sealed part of a log (before the last checkpoint) is found when the
service starts again: it verifies its whole log before it seals anything, refuses to seal
a tampered log (alert, `accord.chain` NOT_SERVING), keeps serving reads, answers VerifyLog
from the last checkpoint with what it found, and answers a read of the damaged aggregate
DATA_LOSS rather than INTERNAL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.audit.v1 import audit_pb2, audit_pb2_grpc
from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.audit import StartupVerification, verify_log_steps
from accord_kit.chain import Kind, Problem, latest_checkpoint, seal
from accord_kit.clock import FakeClock
from accord_kit.runtime import CHAIN_HEALTH, ServiceRuntime
from accord_kit.settings import ServiceSettings
from accord_kit.testing.counter import Counters, build_counter_service
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from accord_kit.testing.tamper import Store

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Running:
    runtime: ServiceRuntime
    app: Counters
    keys: Keys
    channel: grpc.aio.Channel

    def md(self, role: str = "auditor", department: str = "") -> tuple[tuple[str, str], ...]:
        return self.keys.metadata(role, department)

    async def increment(self, name: str, amount: int = 1) -> None:
        await counter_pb2_grpc.CounterServiceStub(self.channel).Increment(
            counter_pb2.IncrementRequest(counter_id=name, amount=amount), metadata=self.md("department", "it")
        )

    async def get(self, name: str) -> Any:
        return await counter_pb2_grpc.CounterServiceStub(self.channel).GetCounter(
            counter_pb2.GetCounterRequest(counter_id=name), metadata=self.md("department", "it")
        )

    async def chain_health(self) -> int:
        health = health_pb2_grpc.HealthStub(self.channel)
        return int((await health.Check(health_pb2.HealthCheckRequest(service=CHAIN_HEALTH))).status)

    async def overall_health(self) -> int:
        health = health_pb2_grpc.HealthStub(self.channel)
        return int((await health.Check(health_pb2.HealthCheckRequest(service=""))).status)

    async def verify_log(self, from_checkpoint: bool) -> audit_pb2.VerifyLogProgress:
        call = audit_pb2_grpc.AuditServiceStub(self.channel).VerifyLog(
            audit_pb2.VerifyLogRequest(from_checkpoint=from_checkpoint), metadata=self.md()
        )
        steps = [m async for m in call]
        assert steps[-1].done
        return steps[-1]


@asynccontextmanager
async def counter_service(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Running]:
    keys = make_keys(tmp_path / "keys")
    async with running_service(build_counter_service, settings, keys, clock=FakeClock()) as runtime:
        app = runtime.parts.app
        assert isinstance(app, Counters)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield Running(runtime, app, keys, channel)


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
async def test_a_tamper_before_the_last_checkpoint_is_found_at_restart_and_nothing_more_is_sealed(
    nats_server: NatsServer,
    tmp_path: Path,
    unique: str,
    store_kind: str,
    postgres_db: Callable[[], str],
    tamper: str,
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    service = f"counter{unique.lower()}"
    env = service_environ(
        service, tmp_path, nats_server.url, store_kind, db, **{f"{service.upper()}_SEAL_SECONDS": "3600"}
    )
    settings = ServiceSettings.from_env(service, env)
    # A log: c1 created and +1 (1, 2), c1 +1 (3), c2 created and +1 (4, 5), c1 +1 (6), sealed;
    # then c2 +1.
    async with counter_service(settings, tmp_path) as svc:
        await svc.increment("c1", 1)
        await svc.increment("c1", 1)
        await svc.increment("c2", 1)
        await svc.increment("c1", 1)
        positions = svc.app.head_position()
        assert await svc.runtime.seal_once() is not None
        await svc.increment("c2", 1)
    # Stopping sealed once more: the tamper below is well before the last checkpoint.
    reopened = Counters(settings.event_store_env(), service=settings.service)
    try:
        last, _ = latest_checkpoint(reopened)
        assert last is not None and last.position > positions
        head = reopened.head_position()
        events_table = str(reopened.recorder.events_table_name)  # type: ignore[attr-defined]
    finally:
        reopened.close()
    store = Store(store_kind, settings.event_store_env(), events_table)
    try:
        c1_plus_one = 3  # c1's third event (version 3)
        if tamper == "edit":
            store.edit(c1_plus_one, b'"amount":1', b'"amount":9')
        elif tamper == "delete":
            store.delete(c1_plus_one)
        else:
            store.swap(c1_plus_one, 5)  # with c2's increment
    finally:
        store.close()

    async with counter_service(settings, tmp_path) as svc:
        assert await svc.runtime.startup_verified() is False
        assert await svc.chain_health() == NOT_SERVING
        assert await svc.overall_health() == SERVING  # reads go on
        assert svc.runtime.sealing_halted is not None and f"at position {c1_plus_one}" in svc.runtime.sealing_halted
        # Nothing is sealed over the tampered log: not by hand, not after a write, not at stop.
        await svc.increment("c3", 1)
        assert await svc.runtime.seal_once() is None
        # VerifyLog from the last checkpoint does not answer ok: it reports what the start found.
        for from_checkpoint in (True, False):
            result = await svc.verify_log(from_checkpoint)
            assert not result.ok, f"VerifyLog(from_checkpoint={from_checkpoint}) answered ok"
            assert result.problem.position == c1_plus_one
        if tamper == "delete":
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await svc.get("c1")
            assert err.value.code() == grpc.StatusCode.DATA_LOSS, err.value.details()
            assert f"at position {c1_plus_one}" in (err.value.details() or "")
        assert (await svc.get("c3")).value == 1  # an undamaged aggregate reads as ever
    reopened = Counters(settings.event_store_env(), service=settings.service)
    try:
        again, _ = latest_checkpoint(reopened)
        assert again is not None and again.position == last.position, "a checkpoint was signed over the tampered log"
        assert reopened.head_position() == head + 2  # c3 created and incremented, and no checkpoint
    finally:
        reopened.close()


async def test_an_untampered_log_is_verified_at_start_before_it_is_sealed_again(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    service = f"counter{unique.lower()}"
    env = service_environ(service, tmp_path, nats_server.url, "sqlite", **{f"{service.upper()}_SEAL_SECONDS": "3600"})
    settings = ServiceSettings.from_env(service, env)
    async with counter_service(settings, tmp_path) as svc:
        await svc.increment("c1", 1)
    async with counter_service(settings, tmp_path) as svc:
        assert await svc.runtime.startup_verified() is True
        status = svc.runtime.startup_verification
        assert status is not None and status.progress is not None and status.progress.records_checked >= 3
        assert await svc.chain_health() == SERVING
        await svc.increment("c1", 1)
        assert await svc.runtime.seal_once() is not None
        assert (await svc.verify_log(True)).ok


def test_verify_log_from_the_checkpoint_starts_there_only_once_the_start_up_verification_passed(
    tmp_path: Path,
) -> None:
    app = Counters(sqlite_env(tmp_path / "c.sqlite"), service="counter")
    try:
        key = Ed25519PrivateKey.generate()
        app.increment("c1", 1)
        cp = seal(app, key)
        app.increment("c1", 2)
        keys = [key.public_key()]
        startup = StartupVerification()  # still verifying: the part before the checkpoint is not known good
        *_, whole = verify_log_steps(app, keys, from_checkpoint=True, startup=startup)
        assert whole.done and whole.ok and whole.start_position == 0
        startup.state = "verified"
        *_, since = verify_log_steps(app, keys, from_checkpoint=True, startup=startup)
        assert since.ok and since.start_position == cp.position
        # Found tampered at start: that finding, whatever the log after the checkpoint says.
        startup.state = "tampered"
        startup.finding = replace(whole, ok=False, problem=Problem(Kind.MISSING, 1, "a record was deleted"))
        *_, found = verify_log_steps(app, keys, from_checkpoint=True, startup=startup)
        assert not found.ok and found.problem == startup.finding.problem
        *_, again = verify_log_steps(app, keys, from_checkpoint=False, startup=startup)
        assert again.ok  # the whole log is verified afresh when asked for it
    finally:
        app.close()
