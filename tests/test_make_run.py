"""`make run`'s runner end to end: the whole suite as real processes on a fresh data
directory reaches all-SERVING (checked with a real gRPC health client), serves HTTP and
ReadEvents, stops cleanly on Ctrl-C, and a second run resumes on the same data."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.events.v1 import events_pb2, events_pb2_grpc
from accord_kit.testing.devrun import start_devrun, stop_devrun
from accord_kit.testing.nats import free_port

pytestmark = pytest.mark.slow
SERVICES = ["agreements", "metrics", "billing", "gateway", "notifier"]


def start(
    var: Path, ports: dict[str, int], nats_port: int, http_port: int, **extra: str
) -> tuple[subprocess.Popen[str], list[str]]:
    metrics = {f"{s.upper()}_METRICS_PORT": str(free_port()) for s in ports}
    return start_devrun(var, ports, nats_port, http_port, extra={**metrics, **extra}, timeout=120)


def stop(proc: subprocess.Popen[str]) -> str:
    out = stop_devrun(proc, timeout=60)
    assert proc.returncode == 0, out
    return out


def check_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return int(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def test_make_run_comes_up_healthy_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    var = tmp_path / "var"
    ports = {s: free_port() for s in SERVICES}
    nats_port, http_port = free_port(), free_port()
    proc, lines = start(var, ports, nats_port, http_port)
    try:
        text = "".join(lines)
        assert "all services SERVING" in text
        for s in SERVICES:
            assert check_health(ports[s]) == health_pb2.HealthCheckResponse.SERVING, s
            assert f"127.0.0.1:{ports[s]}" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as r:
            assert json.load(r) == {"status": "SERVING"}
        token = (var / "keys" / "service.token").read_text().strip()
        for s in ("agreements", "metrics", "billing", "notifier"):
            with grpc.insecure_channel(f"127.0.0.1:{ports[s]}") as ch:
                resp = events_pb2_grpc.EventLogServiceStub(ch).ReadEvents(
                    events_pb2.ReadEventsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
                )
                assert resp.head_position == 0
        for who in ("admin", "auditor", "it-operations", "finance"):
            assert f"  {who}" in text
        assert text.count("/metrics") == len(SERVICES), "a /metrics URL per service"
        assert (var / "agreements.sqlite").exists()
    finally:
        out = stop(proc)
    assert "stopped" in out
    public_key = (var / "keys" / "auth_public.pem").read_bytes()

    # A second run resumes on the same data and keys.
    proc, lines = start(var, ports, nats_port, http_port)
    try:
        for s in SERVICES:
            assert check_health(ports[s]) == health_pb2.HealthCheckResponse.SERVING, s
        assert (var / "keys" / "auth_public.pem").read_bytes() == public_key
        assert "created development signing keys" not in "".join(lines)
    finally:
        stop(proc)
