"""A breach reaches a department's webhook through real services: the agreements, metrics and
billing applications publish through their relays to a real nats-server, and the notifier
runs as its own OS process (its real bootstrap, SQLite store, gRPC API). The finance
department subscribes over gRPC; an outage breaches January's availability; the notifier
queues a notification per event with the stream position and delivers it, signed. It is
killed (SIGKILL) while a delivery is in flight — consumed and acknowledged, not yet
delivered — and after a restart on the same store every notification is delivered, the
interrupted one again under the same idempotency key: none lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.metrics.v1 import signals_pb2 as pb
from accord.notifier.v1 import notifier_pb2 as npb
from accord.notifier.v1 import notifier_pb2_grpc as npb_grpc
from accord_agreements.samples import EMAIL, FINANCE
from accord_kit.auth import mint_token
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import Keys, make_keys, service_environ
from accord_kit.testing.streams import eventually
from accord_kit.testing.webhook import Receiver
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, at, ts

pytestmark = pytest.mark.slow
SECRET = "finance-webhook-secret-0123"
REPORTED = {"BreachDetected", "BudgetWarning", "BurnRateAlert"}


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Suite]:
    s = Suite(lambda name: sqlite_env(tmp_path / f"{name}.sqlite"))
    yield s
    s.close()


def start_notifier(tmp_path: Path, nats_url: str, port: int, keys: Keys) -> subprocess.Popen[bytes]:
    token = tmp_path / "service.token"
    token.write_text(mint_token(keys.private, subject="notifier", role="service"))
    dead = f"127.0.0.1:{free_port()}"  # the upstreams' ReadEvents: not needed unless a gap appears
    env = {
        **os.environ,
        **service_environ("notifier", tmp_path, nats_url, "sqlite"),
        "NOTIFIER_GRPC_PORT": str(port),
        "NOTIFIER_SEAL_SECONDS": "0",
        "NOTIFIER_DELIVERY_TIMEOUT_SECONDS": "60",
        "NOTIFIER_RETRY_BASE_SECONDS": "0.2",
        # What the killed notifier fetched and never acknowledged comes back to the next one
        # after the ack wait (30 s by default).
        "NOTIFIER_ACK_WAIT_SECONDS": "2",
        "ACCORD_AUTH_PUBLIC_KEY_FILE": str(keys.public_file),
        "ACCORD_SERVICE_TOKEN_FILE": str(token),
        "ACCORD_AGREEMENTS_ADDR": dead,
        "ACCORD_METRICS_ADDR": dead,
        "ACCORD_BILLING_ADDR": dead,
        "ACCORD_LOG_FORMAT": "json",
        "ACCORD_LOG_LEVEL": "info",
    }
    log = (tmp_path / "notifier.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "accord_notifier"], env=env, stdout=log, stderr=log)


async def serving(port: int) -> bool:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return bool(r.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


async def deliveries(port: int, keys: Keys) -> list[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        r = await npb_grpc.NotifierServiceStub(ch).ListDeliveries(
            npb.ListDeliveriesRequest(limit=1000), metadata=keys.metadata("department", FINANCE)
        )
        return list(r.deliveries)


async def test_a_breach_reaches_the_webhook_and_a_killed_notifier_loses_nothing(
    own_nats_server: NatsServer, tmp_path: Path, suite: Suite
) -> None:
    keys = make_keys(tmp_path / "keys")
    port = free_port()
    nc = await connect(own_nats_server.url, name="relays")
    relays = [
        Relay(app, nc, stream=app.service.upper(), poll_seconds=0.05)
        for app in (suite.agreements, suite.metrics, suite.billing)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    receiver = Receiver(["hang"]).start()
    proc = start_notifier(tmp_path, own_nats_server.url, port, keys)
    try:
        await eventually(lambda: serving(port), timeout=60, what="notifier SERVING")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            sub = await npb_grpc.NotifierServiceStub(ch).Subscribe(
                npb.SubscribeRequest(
                    url=receiver.url, secret=SECRET,
                    kinds=[npb.NOTIFICATION_KIND_BREACH, npb.NOTIFICATION_KIND_BUDGET_WARNING,
                           npb.NOTIFICATION_KIND_BURN_RATE_FIRING],
                ),
                metadata=keys.metadata("department", FINANCE),
            )  # fmt: skip
        assert sub.subscription.department_id == FINANCE and sub.subscription.active

        # The journey: an accepted agreement, then the e-mail service down from 11:00 past 12:30.
        aid = an_active_agreement(suite)
        suite.clock.set(at(f"2026-01-20T11:20{AMS}"))
        down = pb.Signal(signal_id="down", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-20T11:00{AMS}"))))
        suite.metrics.record(COLLECTOR, [down])
        suite.tick(f"2026-01-20T12:30{AMS}")
        envs, _ = suite.metrics.read_events(0, 5000)
        expected = {e.event_id for e in envs if e.type.rsplit(".", 1)[-1] in REPORTED}
        assert any(e.type.endswith("BreachDetected") for e in envs)

        # The first delivery hangs at the receiver: the notifier is killed while it is in flight.
        await eventually(lambda: len(receiver.received) >= 1, timeout=60, what="a first delivery attempt")
        interrupted = receiver.received[0].headers["idempotency-key"]
        proc.kill()
        assert proc.wait(30) == -9
        before = {r.headers["idempotency-key"] for r in receiver.received}

        proc = start_notifier(tmp_path, own_nats_server.url, port, keys)
        await eventually(lambda: serving(port), timeout=60, what="notifier SERVING again")

        async def all_delivered() -> bool:
            found = await deliveries(port, keys)
            return len(found) == len(expected) and all(d.state == npb.DELIVERY_STATE_DELIVERED for d in found)

        await eventually(all_delivered, timeout=60, what="every notification delivered")
        found = await deliveries(port, keys)
        # NOTIFIER_ACK_WAIT_SECONDS reached the notifier's durable consumers.
        durable = await nc.jetstream().consumer_info("METRICS", "notifier-METRICS")
        assert durable.config.ack_wait == 2
    finally:
        proc.kill()
        proc.wait(30)
        receiver.stop()
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        await nc.close()

    # None lost, none queued twice: one notification per reported upstream event.
    assert {d.source_event_id for d in found} == expected
    delivered_keys = {r.headers["idempotency-key"] for r in receiver.received}
    assert delivered_keys == {d.notification_id for d in found}
    # The interrupted one was sent again after the restart, under the same key.
    assert [r.headers["idempotency-key"] for r in receiver.received].count(interrupted) >= 2
    assert interrupted in before
    assert all(r.signed_by(SECRET) for r in receiver.received)
    breach = next(r.json for r in receiver.received if r.json["kind"] == "BREACH")
    assert breach["agreement_id"] == aid and breach["event"]["objective_id"] == "availability"
    assert breach["event_type"] == "accord.metrics.v1.BreachDetected" and breach["department_id"] == FINANCE
