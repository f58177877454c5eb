"""docker-compose.yml, the Dockerfiles and deploy/ checked against what the services read, without Docker."""

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
from accord_kit.settings import EVENT_SOURCED, SERVICES, ServiceSettings, env_names
from accord_kit.testing.nats import free_port, nats_server_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NATS_CONF = ROOT / "deploy" / "nats.conf"
KEYS_MOUNT = "/run/accord/keys"
GATEWAY_HTTP_PORT = 8080
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
def test_service_is_built_from_its_own_dockerfile(compose: dict[str, Any], name: str) -> None:
    build = _service(compose, name).get("build")
    assert isinstance(build, dict), f"{name}: build must be a mapping with context and dockerfile"
    assert build.get("context") == "."
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    assert dockerfile.is_file(), f"{dockerfile} does not exist"


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


@pytest.mark.parametrize("name", list(SERVICES))
def test_published_ports_are_the_defaults(compose: dict[str, Any], name: str) -> None:
    ports = _published(_service(compose, name))
    expected = {SERVICES[name]: SERVICES[name]}
    if name == "gateway":
        expected[GATEWAY_HTTP_PORT] = GATEWAY_HTTP_PORT
    assert ports == expected


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_variable_set_is_one_the_service_reads(compose: dict[str, Any], name: str) -> None:
    env = _environment(_service(compose, name))
    unknown = sorted(set(env) - set(env_names(name)))
    assert not unknown, f"{name} is given variables it never reads: {unknown}"


@pytest.mark.parametrize("name", list(SERVICES))
def test_essential_settings_are_set_and_parse(compose: dict[str, Any], name: str) -> None:
    entry = _service(compose, name)
    env = _environment(entry)
    settings = ServiceSettings.from_env(name, env)  # only the compose environment, as in the container
    assert env.get("ACCORD_PERSISTENCE") == "postgres"
    assert settings.persistence == "postgres"
    assert settings.postgres.host == "postgres"
    assert settings.postgres.password, "ACCORD_POSTGRES_PASSWORD must be set"
    assert settings.nats_url == "nats://nats:4222"
    assert settings.nats_replicas == 1
    assert settings.log_format == "json"
    assert settings.grpc_host == "0.0.0.0"
    assert settings.grpc_port == SERVICES[name]
    assert settings.addresses == {s: f"{s}:{SERVICES[s]}" for s in EVENT_SOURCED}
    if name == "gateway":
        assert settings.http_host == "0.0.0.0"
        assert settings.http_port == GATEWAY_HTTP_PORT

    mounts = _mounts(entry)
    assert mounts.get(KEYS_MOUNT) == ("./deploy/keys", "ro"), f"{name}: deploy/keys must be mounted read-only"
    assert settings.auth_public_key_file == Path(KEYS_MOUNT, "auth_public.pem")
    assert settings.service_token_file == Path(KEYS_MOUNT, "service.token")
    if name in EVENT_SOURCED:
        assert settings.chain_key_file == Path(KEYS_MOUNT, f"{name}_chain_private.pem")
        assert settings.seal_seconds > 0, f"{name} must seal its log"


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_waits_for_healthy_infrastructure_and_is_health_checked(compose: dict[str, Any], name: str) -> None:
    entry = _service(compose, name)
    depends = entry.get("depends_on") or {}
    for infra in ("nats", "postgres"):
        assert depends.get(infra, {}).get("condition") == "service_healthy", f"{name} must wait for {infra}"
    test = entry.get("healthcheck", {}).get("test")
    assert test == ["CMD", "python", "-m", "accord_kit.healthcheck", f"127.0.0.1:{SERVICES[name]}"]


def test_nats_uses_jetstream_file_storage_fsynced_on_every_write(compose: dict[str, Any]) -> None:
    nats = _service(compose, "nats")
    match = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?(?:-\w+)?", str(nats.get("image")))
    assert match and (int(match[1]), int(match[2])) >= (2, 10), "Accord's stream settings need NATS ≥ 2.10"
    mounts = _mounts(nats)
    conf_target = next((t for t, (src, _) in mounts.items() if src == "./deploy/nats.conf"), None)
    assert conf_target, "deploy/nats.conf is not mounted into the nats container"
    assert conf_target in [str(c) for c in nats.get("command") or []], "nats is not started with deploy/nats.conf"
    assert mounts.get("/data", ("", ""))[0] in (compose.get("volumes") or {}), "/data must be a named volume"
    assert "8222/healthz" in " ".join(nats.get("healthcheck", {}).get("test") or [])

    conf = re.sub(r"#.*", "", NATS_CONF.read_text())
    block = re.search(r"jetstream\s*\{([^}]*)\}", conf)
    assert block, "deploy/nats.conf has no jetstream block"
    assert re.search(r"^\s*store_dir\s*[:=]\s*\"?/data\"?\s*$", block[1], re.M), "JetStream must store files in /data"
    assert re.search(r"^\s*sync_interval\s*[:=]\s*\"?always\"?\s*$", block[1], re.M)
    assert not re.search(r"max_memory_store|^\s*store\s*[:=]\s*\"?memory", block[1], re.M)
    assert re.search(r"^\s*listen\s*[:=]\s*\S*:4222\s*$", conf, re.M)


def test_nats_config_is_accepted_by_nats_server() -> None:
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(NATS_CONF)], capture_output=True, text=True, timeout=30
    )
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
    for name in EVENT_SOURCED:
        assert _environment(_service(compose, name))["ACCORD_POSTGRES_PASSWORD"] == password


def _compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever runs here (neither needs an engine for `config`)."""
    for command in (["docker", "compose"], ["docker-compose"]):
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
    if command is None:
        pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed here")
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
    for name in SERVICES:
        settings = ServiceSettings.from_env(name, _environment(_service(compose, name)))
        assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0", f"{name}: /metrics off"
        expected.add(f"{name}:{settings.metrics_port}")
    assert targets == expected
    mounts = _mounts(_service(compose, "prometheus"))
    assert mounts.get("/etc/prometheus") == ("./deploy/prometheus", "ro")
