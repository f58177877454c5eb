"""free_port: the ports tests and runners give to servers that are yet to start. A port the
kernel may hand to any socket (its ephemeral range) can be taken by another process in the
seconds before the server binds it; and two processes choosing at the same time must never
be given the same one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accord_kit.testing import nats
from accord_kit.testing.nats import free_port

ASK = "from accord_kit.testing.nats import free_port\nprint(' '.join(str(free_port()) for _ in range({n})))"


RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_ONLY = pytest.mark.skipif(not RANGE.exists(), reason="the ephemeral range is read from Linux's /proc")


@LINUX_ONLY
def test_ports_are_outside_the_range_the_kernel_hands_out() -> None:
    low = int(RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(nats.LOWEST_PORT <= p < low for p in ports), (low, ports)


def test_processes_asking_at_once_are_never_given_the_same_port(tmp_path: Path) -> None:
    """Four processes ask for 200 ports each at the same time and bind none of them (as a
    runner that is still starting has not): every port is given once. (Their reservations in a
    directory of the test's own: the 800 do not hold ports from the other tests running.)"""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", ASK.format(n=200)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    given = [int(p) for proc in procs for p in proc.communicate(timeout=120)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(given) == 800
    assert len(set(given)) == len(given), sorted(p for p in set(given) if given.count(p) > 1)


class _Pick:
    """random.randrange that starts the scan at `port`."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(self, span: int) -> int:
        return self.port - nats.LOWEST_PORT


@pytest.fixture
def reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(nats, "_reservations", lambda: tmp_path)
    return tmp_path


def _a_free_candidate(reservations: Path) -> int:
    """A port free_port could give (the scan is then started there)."""
    port = free_port()
    (reservations / str(port)).unlink()
    return port


@LINUX_ONLY
def test_a_port_something_listens_on_is_passed_over(reservations: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _a_free_candidate(reservations)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        monkeypatch.setattr(nats.random, "randrange", _Pick(port))
        given = free_port()
    assert given != port


@LINUX_ONLY
def test_a_reservation_holds_until_it_lapses(reservations: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _a_free_candidate(reservations)
    monkeypatch.setattr(nats.random, "randrange", _Pick(port))
    assert free_port() == port
    assert free_port() != port  # still reserved
    lapsed = time.time() - nats.RESERVED_SECONDS - 1
    os.utime(reservations / str(port), (lapsed, lapsed))
    assert free_port() == port  # taken over
    assert time.time() - (reservations / str(port)).stat().st_mtime < 60
    assert [p.name for p in reservations.iterdir() if "lapsed" in p.name] == []
