"""docker-compose.yml, the Dockerfiles and deploy/ checked against what the services read and against
`make run-cluster` (accord_kit.clusterrun: the same processes, commands and settings), without Docker."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from accord_kit import healthcheck
from accord_kit.auth import TokenVerifier
from accord_kit.clusterrun import NATS_NODES, NATS_USERS, local_names, nats_config, topology
from accord_kit.settings import EVENT_SOURCED, SERVICES, ServiceSettings, env_names
from accord_kit.testing.nats import free_port, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NATS_CLUSTER_CONF = ROOT / "deploy" / "nats" / "cluster.conf"
KEYS_MOUNT = "/run/accord/keys"
GATEWAY_HTTP_PORT = 8080
EPHEMERAL = range(32768, 60999 + 1)  # Linux's default net.ipv4.ip_local_port_range
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    entry = services[name]
    assert isinstance(entry, dict)
    return entry


def _interpolate(value: object) -> str:
    """Compose's `${VAR:-default}` with nothing set in the environment: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def _environment(entry: dict[str, Any]) -> dict[str, str]:
    env = entry.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(v) for k, v in env.items()}


def _published(entry: dict[str, Any]) -> dict[int, int]:
    """Container port → host port."""
    out: dict[int, int] = {}
    for spec in entry.get("ports") or []:
        host, _, container = str(spec).rpartition(":")
        out[int(container.split("/")[0])] = int(host.rpartition(":")[2])
    return out


def _mounts(entry: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path → (source, options)."""
    out: dict[str, tuple[str, str]] = {}
    for spec in entry.get("volumes") or []:
        source, target, *options = str(spec).split(":")
        out[target] = (source, options[0] if options else "rw")
    return out


@pytest.mark.parametrize("name", list(SERVICES))
def test_dockerfile_builds_the_service_as_a_non_root_user(name: str) -> None:
    text = (ROOT / "services" / name / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert "python -m grpc_tools.protoc -Iprotos --python_out=gen --grpc_python_out=gen" in text
    assert "python tools/write_pth.py --init gen" in text
    assert f"ENV PYTHONPATH=/app/kit:/app/services/{name}:/app/gen" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), f"{name}: must run as a non-root user"
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    assert SERVICES[name] in exposed
    if name == "gateway":
        assert GATEWAY_HTTP_PORT in exposed
    assert f'CMD ["python", "-m", "accord_{name}"]' in text


def test_dockerfiles_differ_only_in_name_and_ports() -> None:
    def normalized(name: str) -> str:
        text = (ROOT / "services" / name / "Dockerfile").read_text().replace(name, "<name>")
        return re.sub(r"^EXPOSE .*$", "EXPOSE <ports>", text, flags=re.M)

    first, *rest = SERVICES
    for name in rest:
        assert normalized(name) == normalized(first), f"services/{name}/Dockerfile drifted from {first}'s"


INSTANCES = {p.name: p for p in topology()}
NODES = [f"nats-{n}" for n in range(1, NATS_NODES + 1)]


def test_compose_runs_the_cluster_topology(compose: dict[str, Any]) -> None:
    # Compose adds a Prometheus scraping every /metrics (make run-cluster leaves monitoring to
    # the operator's own); everything else is the same set of processes.
    services = set(compose.get("services") or {}) - {"prometheus"}
    assert services == {*INSTANCES, *NODES, "postgres"}, "docker-compose.yml and make run-cluster differ in processes"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_instance_is_the_service_built_from_its_own_dockerfile(compose: dict[str, Any], name: str) -> None:
    proc = INSTANCES[name]
    build = _service(compose, name).get("build")
    assert isinstance(build, dict), f"{name}: build must be a mapping with context and dockerfile"
    assert build.get("context") == "."
    assert build["dockerfile"] == f"services/{proc.service}/Dockerfile"
    assert (ROOT / build["dockerfile"]).is_file()
    assert "command" not in _service(compose, name), f"{name}: the image's CMD is the command make run-cluster runs"
    text = (ROOT / build["dockerfile"]).read_text()
    cmd = re.findall(r"^CMD (.+)$", text, re.M)
    assert cmd and yaml.safe_load(cmd[-1]) == list(proc.command), f"{name}: not the command make run-cluster runs"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_compose_and_run_cluster_give_the_same_settings(compose: dict[str, Any], name: str) -> None:
    """The same variables set, and the same values for every one that does not depend on where
    the process runs (hosts, ports, files and passwords do: clusterrun.local_names)."""
    proc = INSTANCES[name]
    env = _environment(_service(compose, name))
    assert set(env) == set(proc.settings) | local_names(proc.service), f"{name}: other variables than run-cluster's"
    assert {k: env[k] for k in proc.settings} == proc.settings
    unknown = sorted(set(env) - set(env_names(proc.service)))
    assert not unknown, f"{name} is given variables it never reads: {unknown}"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_ports_are_published_on_loopback_only(compose: dict[str, Any], name: str) -> None:
    proc = INSTANCES[name]
    specs = [str(p) for p in _service(compose, name).get("ports") or []]
    assert specs, f"{name} publishes nothing"
    for spec in specs:
        assert spec.startswith("127.0.0.1:"), f"{name}: {spec} would be reachable on every host interface"
    containers = {int(spec.rpartition(":")[2]) for spec in specs}
    expected = {SERVICES[proc.service]} | ({GATEWAY_HTTP_PORT} if proc.service == "gateway" else set())
    assert containers == expected


def test_no_port_is_published_on_every_interface(compose: dict[str, Any]) -> None:
    for name, entry in (compose.get("services") or {}).items():
        for spec in entry.get("ports") or []:
            assert str(spec).startswith("127.0.0.1:"), f"{name}: {spec} is published on every host interface"
    assert not _service(compose, "postgres").get("ports"), "PostgreSQL stays inside the compose network"


def test_no_published_port_lies_in_the_ephemeral_range(compose: dict[str, Any]) -> None:
    """Outside Linux's default ephemeral range (32768–60999), as every default port of the suite
    (kit/tests/test_default_ports.py): an outgoing connection on the host or in a container cannot
    hold one while the services start."""
    inside = [
        f"{name}: 127.0.0.1:{host} → {container}"
        for name, entry in (compose.get("services") or {}).items()
        for container, host in _published(entry).items()
        if container in EPHEMERAL or host in EPHEMERAL
    ]
    assert not inside, f"published ports inside Linux's ephemeral range 32768–60999: {inside}"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_essential_settings_are_set_and_parse(compose: dict[str, Any], name: str) -> None:
    proc = INSTANCES[name]
    entry = _service(compose, name)
    env = _environment(entry)
    settings = ServiceSettings.from_env(proc.service, env)  # only the compose environment, as in the container
    assert settings.persistence == "postgres"
    assert settings.postgres.host == "postgres"
    assert settings.postgres.password, "ACCORD_POSTGRES_PASSWORD must be set"
    assert settings.nats_url == ",".join(f"nats://{n}:4222" for n in NODES)
    assert settings.nats_replicas == NATS_NODES
    assert settings.nats_user == proc.service and settings.nats_password
    assert settings.instance == proc.instance
    assert settings.lease == ("postgres" if proc.service in EVENT_SOURCED else "none")
    assert settings.log_format == "json"
    assert settings.grpc_host == "0.0.0.0"
    assert settings.grpc_port == SERVICES[proc.service]
    # Every instance of a service answers on the service's name; callers reach the SERVING one.
    assert settings.addresses == {s: f"dns:///{s}:{SERVICES[s]}" for s in EVENT_SOURCED}
    assert entry.get("networks", {}).get("default", {}).get("aliases") == [proc.service]
    if proc.service == "gateway":
        assert settings.http_host == "0.0.0.0"
        assert settings.http_port == GATEWAY_HTTP_PORT
    else:
        assert settings.postgres.dbname == f"accord_{proc.service}"

    mounts = _mounts(entry)
    assert mounts.get(KEYS_MOUNT) == ("./deploy/keys", "ro"), f"{name}: deploy/keys must be mounted read-only"
    assert settings.auth_public_key_file == Path(KEYS_MOUNT, "auth_public.pem")
    assert settings.service_token_file == Path(KEYS_MOUNT, "service.token")
    if proc.service in EVENT_SOURCED:
        assert settings.chain_key_file == Path(KEYS_MOUNT, f"{proc.service}_chain_private.pem")
        assert settings.seal_seconds > 0, f"{name} must seal its log"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_instance_waits_for_healthy_infrastructure_and_is_health_checked(compose: dict[str, Any], name: str) -> None:
    proc = INSTANCES[name]
    entry = _service(compose, name)
    depends = entry.get("depends_on") or {}
    for infra in (*NODES, "postgres"):
        assert depends.get(infra, {}).get("condition") == "service_healthy", f"{name} must wait for {infra}"
    test = entry.get("healthcheck", {}).get("test")
    alive = ["--alive"] if proc.service in EVENT_SOURCED else []  # a standby is NOT_SERVING by design
    assert test == ["CMD", "python", "-m", "accord_kit.healthcheck", *alive, f"127.0.0.1:{SERVICES[proc.service]}"]


def _conf(path: Path) -> str:
    return re.sub(r"#.*", "", path.read_text())


def _check_node_conf(conf: str, store: str) -> None:
    block = re.search(r"jetstream\s*\{([^}]*)\}", conf)
    assert block, "no jetstream block"
    assert re.search(rf"^\s*store_dir\s*[:=]\s*\"?{re.escape(store)}\"?\s*$", block[1], re.M), (
        "JetStream must store files"
    )
    assert re.search(r"^\s*sync_interval\s*[:=]\s*\"?always\"?\s*$", block[1], re.M), "fsync before every ack"
    assert not re.search(r"max_memory_store|^\s*store\s*[:=]\s*\"?memory", block[1], re.M)
    cluster = re.search(r"cluster\s*\{(.*?)\n\}", conf, re.S)
    assert cluster, "no cluster block"
    assert re.search(r"^\s*name\s*[:=]\s*accord\s*$", cluster[1], re.M)
    assert len(re.findall(r"nats-route://", cluster[1])) == NATS_NODES
    assert re.search(r"^include\s+\"?[./]*\S*accounts\.conf\"?\s*$", conf, re.M), "accounts.conf not included"


def test_nats_nodes_form_a_jetstream_cluster_fsynced_on_every_write(compose: dict[str, Any]) -> None:
    names = set()
    for node in NODES:
        nats = _service(compose, node)
        match = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?(?:-\w+)?", str(nats.get("image")))
        assert match and (int(match[1]), int(match[2])) >= (2, 10), "Accord's stream settings need NATS ≥ 2.10"
        mounts = _mounts(nats)
        assert mounts.get("/etc/nats") == ("./deploy/nats", "ro")
        assert nats.get("command") == ["--config", "/etc/nats/cluster.conf"]
        assert mounts.get("/data", ("", ""))[0] in (compose.get("volumes") or {}), "/data must be a named volume"
        assert "8222/healthz" in " ".join(nats.get("healthcheck", {}).get("test") or [])
        env = _environment(nats)
        names.add(env["NATS_SERVER_NAME"])
        for user in NATS_USERS:
            assert env.get(f"NATS_PASSWORD_{user.upper()}"), f"{node}: no password for NATS user {user}"
        for name in INSTANCES:  # each service connects with the password its node knows
            svc_env = _environment(_service(compose, name))
            assert svc_env["ACCORD_NATS_PASSWORD"] == env[f"NATS_PASSWORD_{INSTANCES[name].service.upper()}"]
    assert len(names) == NATS_NODES, "every node needs its own server name"
    conf = _conf(NATS_CLUSTER_CONF)
    _check_node_conf(conf, "/data")
    assert re.search(r"^\s*listen\s*[:=]\s*\S*:4222\s*$", conf, re.M)
    for node in NODES:
        assert f"nats-route://{node}:6222" in conf


def test_run_cluster_writes_the_same_node_configuration(tmp_path: Path) -> None:
    conf = nats_config(2, [4001, 4002, 4003], [6001, 6002, 6003], tmp_path / "js", tmp_path)
    _check_node_conf(re.sub(r"#.*", "", conf), str(tmp_path / "js"))
    assert "listen: 127.0.0.1:4002" in conf and "listen: 127.0.0.1:6002" in conf
    (tmp_path / "node.conf").write_text(conf)
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / "node.conf")],
        capture_output=True, text=True, timeout=30, env=_nats_passwords(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _nats_passwords() -> dict[str, str]:
    import os

    return (
        dict(os.environ)
        | {f"NATS_PASSWORD_{u.upper()}": f"pw-{u}" for u in NATS_USERS}
        | {"NATS_SERVER_NAME": "accord-nats-1"}
    )


def test_nats_config_is_accepted_by_nats_server() -> None:
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(NATS_CLUSTER_CONF)],
        capture_output=True, text=True, timeout=30, env=_nats_passwords(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_postgres_commits_durably(compose: dict[str, Any]) -> None:
    pg = _service(compose, "postgres")
    assert str(pg.get("image")).startswith("postgres:16")
    command = [str(c) for c in pg.get("command") or []]
    assert command[0] == "postgres"
    assert "synchronous_commit=on" in command and "fsync=on" in command
    assert "pg_isready" in (pg.get("healthcheck", {}).get("test") or [])
    assert _mounts(pg).get("/var/lib/postgresql/data", ("", ""))[0] in (compose.get("volumes") or {})
    password = _environment(pg).get("POSTGRES_PASSWORD")
    assert password, "POSTGRES_PASSWORD must be set"
    for name in INSTANCES:
        assert _environment(_service(compose, name))["ACCORD_POSTGRES_PASSWORD"] == password


def _compose_command() -> list[str] | None:
    """Debian's `docker-compose` (tools/test_deps.sh installs it), else the `docker compose`
    plugin; neither needs an engine for `config`."""
    for command in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_accepts_the_file() -> None:
    command = _compose_command()
    assert command is not None, "docker-compose is not installed (tools/test_deps.sh installs Debian's)"
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_healthcheck_fails_when_nothing_listens() -> None:
    done = _run_module("accord_kit.healthcheck", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UNAVAILABLE" in done.stdout


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None).wait()


def test_healthcheck_exit_code_follows_the_status(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    address = f"127.0.0.1:{port}"
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("accord.x.v1.XService", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address]) == 0
    assert healthcheck.main([address, "accord.x.v1.XService"]) == 1
    assert healthcheck.main([address, "no.such.Service"]) == 1  # NOT_FOUND
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([address]) == 1
    assert healthcheck.main(["--alive", address]) == 0  # a standby: up, answering, not serving
    assert healthcheck.main(["--alive", f"127.0.0.1:{free_port()}"]) == 1


def test_healthcheck_gives_up_within_its_timeout() -> None:
    # A listener that accepts connections but never speaks HTTP/2: the probe must not hang.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        started = time.monotonic()
        assert healthcheck.main([f"127.0.0.1:{listener.getsockname()[1]}"]) == 1
        assert time.monotonic() - started < healthcheck.TIMEOUT_SECONDS + 3


def test_keys_writes_the_pair_and_a_service_token(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    done = _run_module("accord_kit.keys", str(keys), "--service-token-days", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    chain = [f"{s}_chain_{half}.pem" for s in EVENT_SOURCED for half in ("private", "public")]
    assert sorted(p.name for p in keys.iterdir()) == sorted(
        ["auth_private.pem", "auth_public.pem", "service.token", *chain]
    )
    for name in ("auth_private.pem", "service.token", *(f"{s}_chain_private.pem" for s in EVENT_SOURCED)):
        assert (keys / name).stat().st_mode & 0o077 == 0, f"{name} must not be readable by others"
    public = (keys / "auth_public.pem").read_bytes()
    token = (keys / "service.token").read_text().strip()
    principal = TokenVerifier(public).verify("Bearer " + token)
    assert principal.role == "service"
    assert principal.subject == "accord-services"
    assert str(keys / "service.token") in done.stdout

    # A second run keeps the key pair (tokens already handed out stay valid) and re-mints the token.
    again = _run_module("accord_kit.keys", str(keys))
    assert again.returncode == 0, again.stdout + again.stderr
    assert (keys / "auth_public.pem").read_bytes() == public
    assert TokenVerifier(public).verify("Bearer " + (keys / "service.token").read_text().strip()).role == "service"


def test_prometheus_scrapes_every_service_s_metrics_port(compose: dict[str, Any]) -> None:
    config_file = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (tools/test_deps.sh does)"
    check = subprocess.run([promtool, "check", "config", str(config_file)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(config_file.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = set()
    for name, proc in INSTANCES.items():
        settings = ServiceSettings.from_env(proc.service, _environment(_service(compose, name)))
        assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0", f"{name}: /metrics off"
        expected.add(f"{name}:{settings.metrics_port}")
    assert targets == expected
    mounts = _mounts(_service(compose, "prometheus"))
    assert mounts.get("/etc/prometheus") == ("./deploy/prometheus", "ro")
