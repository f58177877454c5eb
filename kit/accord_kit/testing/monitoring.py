"""Real Prometheus and Alertmanager for tests (Debian's `prometheus` and
`prometheus-alertmanager`, installed by tools/test_deps.sh): each started on a free port with
the configuration a test writes, in its own data directory, awaited until ready, and stopped
(SIGTERM, then SIGKILL) at the end. A binary that is missing or a server that never gets
ready fails the test with the reason and the server's own output; nothing is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from accord_kit.testing.nats import free_port
from accord_kit.testing.streams import eventually

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def http_json(url: str, body: Any = None, *, method: str = "GET", timeout: float = 5.0) -> Any:
    """A JSON request with the standard library (call it in a thread from async code)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


@contextlib.asynccontextmanager
async def _running(binary: str, args: list[str], url: str, workdir: Path, what: str) -> AsyncIterator[Server]:
    if not Path(binary).exists():
        raise AssertionError(f"{binary} is missing: run tools/test_deps.sh as root (it installs {what})")
    log = workdir / f"{Path(binary).name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(url, process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        try:
            await eventually(lambda: asyncio.to_thread(ready), timeout=60, interval=0.2, what=f"{what} ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{server.output()}") from None
        yield server
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


@contextlib.asynccontextmanager
async def running_alertmanager(config: dict[str, Any], workdir: Path) -> AsyncIterator[Server]:
    """Alertmanager with `config` (its YAML as a dict), clustering off, on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    async with _running(ALERTMANAGER, args, f"http://127.0.0.1:{port}", workdir, "prometheus-alertmanager") as s:
        yield s


@contextlib.asynccontextmanager
async def running_prometheus(config: dict[str, Any], workdir: Path) -> AsyncIterator[Server]:
    """Prometheus with `config` (its YAML as a dict) and its own TSDB, on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=info",
    ]
    async with _running(PROMETHEUS, args, f"http://127.0.0.1:{port}", workdir, "prometheus") as s:
        yield s
