"""Work in a worker thread is waited for even when its caller is cancelled
(`accord_kit.threads.finish_in_thread`): a service stopping closes its store after its tasks
stop, and a read still running in an abandoned thread met its connection closed under it — a
crash of the whole process in sqlite3 (seen as a segfault in a relay's read at a test's stop)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.testing.counter import Counters
from accord_kit.testing.nats import NatsServer
from accord_kit.threads import finish_in_thread, settle


def _gated() -> tuple[Callable[[], str], threading.Event, threading.Event, list[str]]:
    """A function that blocks until its gate opens; (it, entered, gate, what it finished)."""
    entered, gate, finished = threading.Event(), threading.Event(), []

    def work() -> str:
        entered.set()
        gate.wait(10)
        finished.append("read")
        return "read"

    return work, entered, gate, finished


async def test_a_cancelled_caller_waits_for_its_thread_to_finish() -> None:
    work, entered, gate, finished = _gated()
    caller = asyncio.ensure_future(finish_in_thread(work))
    await asyncio.to_thread(entered.wait, 10)
    caller.cancel()
    await asyncio.sleep(0.2)
    assert not caller.done(), "the cancellation went on while the thread still ran"
    caller.cancel()  # cancelled again: still waits
    await asyncio.sleep(0.1)
    assert not caller.done()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["read"]


async def test_a_result_and_an_error_pass_through_as_to_thread_gives_them() -> None:
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert await finish_in_thread(add, 2, b=3) == 5

    def fails() -> None:
        raise ValueError("the store said no")

    with pytest.raises(ValueError, match="the store said no"):
        await finish_in_thread(fails)


async def test_an_error_of_abandoned_work_is_not_reported_as_never_retrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, gate = threading.Event(), threading.Event()

    def fails_late() -> None:
        entered.set()
        gate.wait(10)
        raise RuntimeError("too late to matter")

    caller = asyncio.ensure_future(finish_in_thread(fails_late))
    await asyncio.to_thread(entered.wait, 10)
    caller.cancel()
    await asyncio.sleep(0.05)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_relay_cancelled_mid_read_returns_only_once_the_read_has_finished(
    nats_server: NatsServer,
    make_store_env: Callable[[str], dict[str, str]],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a service's stop cancels a relay that did not stop in time: its task ends only after
    the store read under way has returned, so the store can be closed after it."""
    service = f"counter{unique.lower()}"
    app = Counters(make_store_env("counters"), service=service)
    nc = await connect(nats_server.url, name="relay")
    try:
        app.increment_many("seed", [1] * 10)
        relay = Relay(app, nc, stream=service.upper(), poll_seconds=0.05)
        read, entered, gate, finished = _gated()
        real = app.select_notifications

        def slow_read(after: int, limit: int) -> list[Any]:
            read()  # blocks until the gate opens
            return real(after, limit)

        monkeypatch.setattr(app, "select_notifications", slow_read)  # this instance only
        task = asyncio.ensure_future(relay.run())
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        await asyncio.sleep(0.2)
        assert not task.done(), "the relay ended while its store read still ran"
        gate.set()
        await asyncio.gather(task, return_exceptions=True)
        assert finished == ["read"]
    finally:
        await nc.close()
        app.close()


async def test_settle_waits_for_the_work_of_callers_gone_before_it() -> None:
    """What a service does before closing its store: the gRPC server's stop cancels a call past
    its grace without waiting for its task, whose thread may still run."""
    work, entered, gate, finished = _gated()
    caller = asyncio.ensure_future(finish_in_thread(work))
    await asyncio.to_thread(entered.wait, 10)
    assert await settle(0.1) == 1  # still running after the timeout
    threading.Timer(0.2, gate.set).start()
    assert await settle(10) == 0
    assert finished == ["read"]
    assert await caller == "read"
    assert await settle(0) == 0  # nothing left
