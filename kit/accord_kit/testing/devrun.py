"""`make run`'s runner (accord_kit.devrun) as a real process for end-to-end tests: started on
a data directory of the test's own with free ports, waited for until every service is
SERVING, stopped with Ctrl-C (SIGINT) as a user stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from accord_kit.settings import SERVICES

# The variables of the developer's shell that would move the suite elsewhere: never inherited.
OWN_PREFIXES = ("ACCORD_", "OTEL_", *(f"{s.upper()}_" for s in SERVICES))
READY = "Ctrl-C stops everything"


def clean_environment() -> dict[str, str]:
    """The process environment without any of Accord's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}


def start_devrun(
    var: Path,
    grpc_ports: dict[str, int],
    nats_port: int,
    http_port: int,
    *,
    extra: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `python -m accord_kit.devrun` on `var` with these ports (and `extra` settings) and
    return it with the lines it printed once every service is SERVING; kill it and fail with
    its output when it does not get there within `timeout` seconds."""
    env = clean_environment()
    env.update(
        ACCORD_VAR_DIR=str(var),
        ACCORD_NATS_PORT=str(nats_port),
        ACCORD_RUN_QUIET="1",
        GATEWAY_HTTP_PORT=str(http_port),
        **{f"{s.upper()}_GRPC_PORT": str(p) for s, p in grpc_ports.items()},
        **(extra or {}),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "accord_kit.devrun"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if READY in line:
            return proc, lines
    proc.kill()
    proc.communicate(timeout=30)
    raise AssertionError("make run did not become healthy:\n" + "".join(lines))


def stop_devrun(proc: subprocess.Popen[str], timeout: float = 90.0) -> str:
    """Ctrl-C, as a user stops it; what it printed after starting. Killed if it hangs."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        raise AssertionError("make run did not stop on Ctrl-C:\n" + out) from None
    return out


def what_happened(proc: subprocess.Popen[str], var: Path, lines: int = 30) -> str:
    """For a failure's message: whether the runner still runs (and what it printed since, if it
    has ended) and the last `lines` of each service's log under `var/log`."""
    if proc.poll() is None:
        parts = ["make run: still running"]
    else:
        rest = proc.stdout.read() if proc.stdout is not None else ""
        parts = [f"make run: exited with {proc.returncode}, printing:\n{rest}"]
    for log in sorted((var / "log").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)
