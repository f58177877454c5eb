"""`make run-cluster`'s runner (accord_kit.clusterrun) for tests and benchmarks: start it on free
ports with its own databases, follow which pid each process has (the runner starts again
whatever dies), find the active instance of a service, and stop it all again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_kit.settings import EVENT_SOURCED
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER

ROW = re.compile(r"accord:\s+(\S+)\s+pid (\d+)\s+(?:gRPC 127\.0\.0\.1:(\d+)|nats://127\.0\.0\.1:(\d+))")
AGAIN = re.compile(r"accord: (\S+) started again \(pid (\d+)\)")
ADDRESS = re.compile(r"accord:\s+address\s+(\S+)\s+(\S+)")


def health(port: int, timeout: float = 1.0) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            return int(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)
        except grpc.RpcError:
            return -1


class RunningCluster:
    def __init__(self, var: Path, restart_seconds: float = 2.0, log_level: str = "info") -> None:
        self.var = var
        self.prefix = f"accord_cl_{uuid.uuid4().hex[:8]}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ACCORD_", "AGREEMENTS_", "METRICS_", "BILLING_", "GATEWAY_"))
        }
        env.update(
            ACCORD_VAR_DIR=str(var),
            ACCORD_CLUSTER_FREE_PORTS="1",
            ACCORD_CLUSTER_DB_PREFIX=self.prefix,
            ACCORD_CLUSTER_RESTART_SECONDS=str(restart_seconds),
            ACCORD_RUN_QUIET="1",
            ACCORD_LOG_LEVEL=log_level,
            ACCORD_POSTGRES_HOST=PG_HOST,
            ACCORD_POSTGRES_PORT=str(PG_PORT),
            ACCORD_POSTGRES_USER=PG_USER,
            ACCORD_POSTGRES_PASSWORD=PG_PASSWORD,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accord_kit.clusterrun"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}  # gRPC port of each service instance, client port of each NATS node
        self.addresses: dict[str, str] = {}
        self.up = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.up.wait(180) or self.ended.is_set():
            self.stop()
            raise AssertionError("make run-cluster did not come up:\n" + "".join(self.lines[-60:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if m := ROW.search(line):
                self.pids[m[1]] = int(m[2])
                self.ports[m[1]] = int(m[3] or m[4])
            elif m := AGAIN.search(line):
                self.pids[m[1]] = int(m[2])
            elif m := ADDRESS.search(line):
                self.addresses[m[1]] = m[2]
            if "Ctrl-C stops everything" in line:
                self.up.set()
        self.ended.set()
        self.up.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    @property
    def keys(self) -> Path:
        return self.var / "keys"

    def token(self, who: str) -> str:
        if who == "service":
            return (self.keys / "service.token").read_text().strip()
        for line in (self.keys / "dev-tokens.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name == f"ACCORD_TOKEN_{who.upper().replace('-', '_')}":
                return value
        raise KeyError(who)

    def nats_password(self, user: str) -> str:
        return str(json.loads((self.keys / "nats-passwords.json").read_text())[user])

    @property
    def nats_url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{self.ports[f'nats-{n}']}" for n in (1, 2, 3))

    def active(self, service: str, timeout: float = 60.0, only: str = "") -> str:
        """The instance of `service` that is SERVING (the lease holder); `only`: wait for that one."""
        deadline = time.monotonic() + timeout
        names = [only] if only else [f"{service}-{inst}" for inst in ("1", "2")]
        while time.monotonic() < deadline:
            for name in names:
                if health(self.ports[name], timeout=0.5) == health_pb2.HealthCheckResponse.SERVING:
                    return name
            time.sleep(0.05)
        raise AssertionError(f"no instance of {service} is SERVING")

    def wait_standby(self, name: str, timeout: float = 90.0) -> None:
        """Until `name` answers health (NOT_SERVING: a standby waiting for the lease)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if health(self.ports[name]) == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} is not a standby")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pids[name]
        os.kill(pid, sig)
        return pid

    def restarted(self, name: str, old_pid: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pids.get(name, old_pid) != old_pid:
                return self.pids[name]
            time.sleep(0.1)
        raise AssertionError(f"{name} was not started again")

    def warnings(self, last: int = 3) -> str:
        """What the services warned of (their JSON log lines at warning and above), for a failed
        run's message: per process, each kind counted — by durable where a consumer said it —
        with its first and last time and the last `last` lines whole. NATS's own logs are not read."""
        out: list[str] = []
        for path in sorted((self.var / "log").glob("*.log")):
            if path.name.startswith("nats-"):
                continue
            kinds: dict[str, list[str]] = {}
            lines: list[str] = []
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
                    continue
                kind = str(entry.get("event", "?")) + (f" {entry['durable']}" if "durable" in entry else "")
                kinds.setdefault(kind, []).append(str(entry.get("timestamp", ""))[11:19])
                lines.append(line[:400])
            if not kinds:
                continue
            out.append(f"{path.stem}: " + "; ".join(f"{k} ×{len(t)} {t[0]}–{t[-1]}" for k, t in kinds.items()))
            out += [f"  {line}" for line in lines[-last:]]
        return "\n".join(out) or "no service warned of anything"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.ended.wait(10)
        if os.environ.get("ACCORD_KEEP_DATABASES") == "1":  # kept to look into a failed run
            return self.text
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname="postgres", autocommit=True
        ) as conn:
            for s in EVENT_SOURCED:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.prefix}_{s}" WITH (FORCE)')
        return self.text
