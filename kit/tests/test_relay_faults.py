"""The relay under faults, on both stores: SIGKILL at random points, nats-server restarted
mid-run, the stream deleted and recreated. Every time the stream must end up holding the
store's log exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from nats.js import api
from nats.js.errors import NotFoundError

from accord_kit.nats_util import Looks, connect, look_timeout
from accord_kit.relay import Relay
from accord_kit.testing.counter import Counters
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream

pytestmark = pytest.mark.slow


def _writer(app: Counters, total: int, chunk: int, pause: float, stop: threading.Event) -> threading.Thread:
    """Appends `total` increments of counter "seed" (which must exist) in chunks of
    `chunk` events, one transaction each, in a thread."""

    def run() -> None:
        written = 0
        while written < total and not stop.is_set():
            n = min(chunk, total - written)
            app.increment_many("seed", [1] * n)
            written += n
            stop.wait(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def _stream_count(js: object, stream: str) -> int:
    try:
        info = await js.stream_info(stream)  # type: ignore[attr-defined]
    except NotFoundError:
        return 0
    return int(info.state.messages)


async def test_relay_killed_at_ten_random_points_publishes_5000_events_exactly_once(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    stream = service.upper()
    env = make_store_env("counters")
    app = Counters(env, service=service)
    app.increment_many("seed", [1] * 2499)  # 2,500 events with the Created event
    stop = threading.Event()
    writer = _writer(app, 2500, 50, 0.02, stop)  # 2,500 more while the relay is being killed

    rng = random.Random(20261127)
    targets = sorted(rng.sample(range(100, 4900), 10))
    nc = await connect(nats_server.url, name="test")
    js = nc.jetstream()
    cmd = [
        sys.executable, "-m", "accord_kit.testing.processes", "relay",
        "--store", json.dumps(env), "--nats", nats_server.url, "--service", service, "--batch", "100",
    ]  # fmt: skip
    kills = 0
    try:
        for target in targets:
            proc = subprocess.Popen(cmd)
            try:
                await eventually(
                    lambda t=target: _at_least(js, stream, t), timeout=60, interval=0.002, what=f"{target} messages"
                )
            finally:
                proc.kill()  # SIGKILL: no clean-up at all
                proc.wait()
            kills += 1
        writer.join()
        assert kills == 10
        proc = subprocess.Popen(cmd)
        try:
            await eventually(lambda: _at_least(js, stream, 5000), timeout=60)
            await asyncio.sleep(0.5)  # anything extra (a duplicate) would show up now
        finally:
            proc.terminate()
            assert proc.wait(timeout=20) == 0
        messages = await read_stream(nc, stream)
        store = [n.id for n in app.select_notifications(0, 10_000)]
        assert len(store) == 5000
        assert_exactly_once_in_order(messages, store)
    finally:
        stop.set()
        await nc.close()
        app.close()


async def _at_least(js: object, stream: str, n: int) -> bool:
    return await _stream_count(js, stream) >= n


async def test_relay_recovers_when_nats_server_restarts_mid_run(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    app = Counters(make_store_env("counters"), service=service)
    nc = await connect(own_nats_server.url, name="test-relay")
    relay = Relay(app, nc, stream=service.upper(), poll_seconds=0.1, batch_size=100, ack_timeout=2)
    task = asyncio.create_task(relay.run())
    app.increment("seed", 1)
    stop = threading.Event()
    writer = _writer(app, 3000, 20, 0.005, stop)
    try:
        await eventually(lambda: relay.stats.head_position > 500, what="relay under way")
        # Mid-run, the server dies hard and stays away a while; the writer keeps writing.
        own_nats_server.stop(kill=True)
        at_kill = relay.stats.head_position
        await asyncio.sleep(1.5)
        own_nats_server.start()
        await asyncio.to_thread(writer.join)
        await eventually(lambda: relay.stats.head_position == app.head_position(), timeout=60, what="caught up")
        assert at_kill < app.head_position()
        check = await connect(own_nats_server.url, name="check")
        messages = await read_stream(check, service.upper())
        await check.close()
        assert_exactly_once_in_order(messages, [n.id for n in app.select_notifications(0, 10_000)])
    finally:
        stop.set()
        relay.stop()
        await task
        await nc.close()
        app.close()


async def test_deleted_stream_is_recreated_and_fully_republished(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    stream = service.upper()
    app = Counters(make_store_env("counters"), service=service)
    app.increment_many("a", [1] * 999)
    nc = await connect(nats_server.url, name="test")
    js = nc.jetstream()
    relay = Relay(app, nc, stream=stream, poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: relay.stats.head_position == app.head_position())
        # Deleted behind the relay's back while it is idle …
        await js.delete_stream(stream)
        await eventually(lambda: _at_least(js, stream, 1000), timeout=30, what="re-published after delete")
        # … and recreated empty by someone else.
        await js.delete_stream(stream)
        await js.add_stream(
            api.StreamConfig(name=stream, subjects=[f"accord.{service}.v1.>"], storage=api.StorageType.FILE)
        )
        app.increment_many("b", [2] * 10)
        await eventually(lambda: _at_least(js, stream, 1011), timeout=30, what="re-published after recreate")
        await asyncio.sleep(0.3)
        messages = await read_stream(nc, stream)
        assert_exactly_once_in_order(messages, [n.id for n in app.select_notifications(0, 10_000)])
        assert relay.stats.resyncs >= 2
    finally:
        relay.stop()
        await task
        await nc.close()
        app.close()


def test_looks_wait_a_second_ten_times_in_a_row_then_longer_up_to_the_default() -> None:
    """A lost look is asked again a second later; a cluster that answers only after a second
    still gets its answer, from the eleventh look on, within JetStream's default of 5 s."""
    assert [look_timeout(n) for n in range(14)] == [1.0] * 10 + [2.0, 4.0, 5.0, 5.0]
    looks = Looks()  # what the relay and the consumer count their looks with
    timeouts = []
    for _ in range(12):
        timeouts.append(looks.timeout)
        looks.failed += 1
    assert timeouts == [1.0] * 10 + [2.0, 4.0]


async def test_an_idle_look_lost_with_its_server_holds_back_saves_a_second_not_five(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """An idle relay's look at its stream (deleted, purged, recreated?) sent to a server that dies
    before answering holds the relay until it is given up: a save made meanwhile is published
    about a second after the server froze, not after JetStream's default request timeout of 5 s
    (the code before: ≈ 5 s)."""
    service = f"counter{unique.lower()}"
    app = Counters(make_store_env("counters"), service=service)
    app.increment("seed", 1)
    nc = await connect(own_nats_server.url, name="test-relay")
    relay = Relay(app, nc, stream=service.upper(), poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.caught_up.wait(), timeout=30)
        await eventually(lambda: relay.stats.head_position == app.head_position(), what="the seed published")
        frozen = time.monotonic()
        async with own_nats_server.requests_lost():
            await asyncio.sleep(0.3)  # an idle look (every 0.1 s) sent to the frozen server
        app.increment("after", 1)
        await eventually(lambda: relay.stats.head_position == app.head_position(), timeout=30, what="published")
        done = time.monotonic()
        # From when the server answered again: its start (killed, then started) takes seconds on a
        # busy machine, and the relay is not what waits for it.
        took, back = done - frozen, done - own_nats_server.answering_since
        assert back < 3.0, (
            f"the save published {back:.1f} s after the server answered again ({took:.1f} s after it froze)"
        )
    finally:
        relay.stop()
        await task
        await nc.close()
        app.close()


async def test_a_request_lost_with_its_server_is_asked_again_before_the_default_timeout(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """The relay's first look at the stream (its head) sent to a server that dies before answering —
    frozen, then killed and started again at once — is asked again after a short wait, not after
    JetStream's default request timeout of 5 s: a standby that takes over in a cluster whose node
    just died (the one its connection used, or the stream's leader) serves that much sooner."""
    service = f"counter{unique.lower()}"
    app = Counters(make_store_env("counters"), service=service)
    app.increment("seed", 1)
    nc = await connect(own_nats_server.url, name="test-relay")
    relay = Relay(app, nc, stream=service.upper(), poll_seconds=0.1)
    asked = time.monotonic()
    task: asyncio.Task[None] | None = None
    try:
        async with own_nats_server.requests_lost():
            task = asyncio.create_task(relay.run())
        await asyncio.wait_for(relay.caught_up.wait(), timeout=30)
        done = time.monotonic()
        took, back = done - asked, done - own_nats_server.answering_since
        assert relay.stats.resyncs >= 1  # the lost request timed out and the head was asked again
        assert back < 3.0, (
            f"the stream's head known {back:.1f} s after the server answered again "
            f"({took:.1f} s after it was first asked)"
        )
        await eventually(lambda: relay.stats.head_position == app.head_position(), what="published")
    finally:
        relay.stop()
        if task is not None:
            await task
        await nc.close()
        app.close()
