"""The gateway as it runs: gRPC health over a real channel and its HTTP app."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_gateway.bootstrap import build
from accord_gateway.settings import load
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import make_keys, running_service, service_environ


async def test_gateway_serves_grpc_health_and_http(nats_server: NatsServer, tmp_path: Path) -> None:
    http_port = free_port()
    settings = load(service_environ("gateway", tmp_path, nats_server.url, "sqlite", GATEWAY_HTTP_PORT=str(http_port)))
    keys = make_keys(tmp_path / "keys")
    async with running_service(build, settings, keys) as runtime:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING

        def get(path: str) -> object:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as r:
                return json.load(r)

        import asyncio

        assert await asyncio.to_thread(get, "/healthz") == {"status": "SERVING"}
        openapi = await asyncio.to_thread(get, "/openapi.json")
        assert isinstance(openapi, dict) and "/healthz" in openapi["paths"]
