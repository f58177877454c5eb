"""SIGTERM on a real service process with calls in flight: health turns NOT_SERVING, the
in-flight calls complete, new calls are refused, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.auth import generate_keypair, mint_token
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import eventually


async def test_sigterm_lets_in_flight_calls_finish_refuses_new_ones_and_exits_0(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    token = mint_token(private.read_bytes(), subject="ops", role="department", department="it")
    md = (("authorization", f"Bearer {token}"),)
    env = {
        **os.environ,
        "ACCORD_NATS_URL": nats_server.url,
        "ACCORD_AUTH_PUBLIC_KEY_FILE": str(public),
        "COUNTER_GRPC_PORT": "0",
        "COUNTER_GRACE_SECONDS": "10",
    }
    store = sqlite_env(tmp_path / "counter.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-m", "accord_kit.testing.processes", "serve-counter", "--store", json.dumps(store),
         "--service", f"counter{unique.lower()}"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=30)
        assert line.startswith("PORT "), line
        address = f"127.0.0.1:{int(line.split()[1])}"
        channel = grpc.aio.insecure_channel(address)
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            r = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving, timeout=30, what="SERVING")
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        stub = counter_pb2_grpc.CounterServiceStub(channel)
        in_flight = [
            asyncio.ensure_future(
                stub.Increment(counter_pb2.IncrementRequest(counter_id=f"c{i}", amount=1, delay_ms=1500), metadata=md)
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.4)  # the calls are now inside the server
        proc.send_signal(signal.SIGTERM)
        after = await asyncio.wait_for(watch.read(), timeout=5)
        assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING

        # A new call, on a fresh connection, is refused.
        late = grpc.aio.insecure_channel(address)
        try:
            await counter_pb2_grpc.CounterServiceStub(late).Increment(
                counter_pb2.IncrementRequest(counter_id="late", amount=1), metadata=md, timeout=3
            )
            raise AssertionError("a call after SIGTERM was accepted")
        except grpc.aio.AioRpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
        finally:
            await late.close()

        results = await asyncio.gather(*in_flight)
        assert [r.value for r in results] == [1, 1, 1]
        await channel.close()
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
