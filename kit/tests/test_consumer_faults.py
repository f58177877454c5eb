"""The consumer under faults, on both stores: failures that nak (so JetStream redelivers
out of order), a process killed between its commit and its ack, a message missing from
the stream (caught up through ReadEvents over gRPC), and an event that keeps failing
(the consumer halts and never skips it); and a stream not created yet, waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from nats.js.errors import NotFoundError

from accord_kit.auth import TokenVerifier, generate_keypair, mint_token
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.eventlog import EventLogClient, register_event_log
from accord_kit.grpc_server import build_server
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.testing.counter import COUNTER_POLICY, Counters, Tallies
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import eventually


async def publish_all(nats_url: str, app: Counters) -> None:
    """Run the relay until the whole store is in the stream."""
    nc = await connect(nats_url, name="relay")
    relay = Relay(app, nc, stream=app.service.upper(), poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    await eventually(lambda: relay.stats.head_position == app.head_position(), what="published")
    relay.stop()
    await task
    await nc.close()


async def serve_log(counters: Counters, keys: tuple[bytes, bytes]) -> tuple[Any, EventLogClient]:
    """The source's log served over a real gRPC channel with auth, and a client of it."""
    private, public = keys
    server = build_server(
        host="127.0.0.1", port=0, policy=COUNTER_POLICY, verifier=TokenVerifier(public),
        register=[register_event_log(counters)],
    )  # fmt: skip
    await server.start()
    token = mint_token(private, subject="tally", role="service")
    return server, EventLogClient(f"127.0.0.1:{server.port}", token=lambda: token)


async def wind_down(consumer: Consumer, task: asyncio.Task[None] | None, nc: Any, *apps: Any) -> None:
    """A test's consumer stopped (its run awaited, when started), its NATS connection closed, then
    these applications."""
    consumer.stop()
    if task is not None:
        await task
    await nc.close()
    for app in apps:
        app.close()


def seed(app: Counters, n: int) -> int:
    """n increments of 1..n on three counters; returns their sum."""
    for i in range(1, n + 1):
        app.increment(f"c{i % 3}", i)
    return n * (n + 1) // 2


async def test_redelivered_out_of_order_events_apply_exactly_once(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 120)
    await publish_all(nats_server.url, counters)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    # Failures that nak: each position fails once or twice, then succeeds on redelivery.
    positions = [n.id for n in counters.select_notifications(0, 1000)]
    tallies.fail_positions = {positions[5]: 1, positions[40]: 2, positions[41]: 1, positions[99]: 1}
    nc = await connect(nats_server.url, name="consumer")
    cfg = ConsumerConfig(consumer="tally", source=service, stream=service.upper(), batch_size=25, nak_delay=0.05)
    consumer = Consumer(tallies, nc, cfg)
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: consumer.tracked == positions[-1], timeout=60, what="consumer caught up")
        await asyncio.sleep(0.3)  # late redeliveries of already-applied events must change nothing
        tally = tallies.get_tally()
        assert tally is not None
        assert (tally.count, tally.total) == (120, total)
        assert consumer.stats.failures == 5
        assert consumer.stats.out_of_order_naks > 0
        assert consumer.halted is None
    finally:
        await wind_down(consumer, task, nc, counters, tallies)


async def test_an_event_that_keeps_failing_halts_the_consumer_and_is_never_skipped(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    seed(counters, 20)
    await publish_all(nats_server.url, counters)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    positions = [n.id for n in counters.select_notifications(0, 1000)]
    poison = positions[10]
    tallies.fail_positions = {poison: 1000}
    halts: list[str] = []
    nc = await connect(nats_server.url, name="consumer")
    cfg = ConsumerConfig(consumer="tally", source=service, stream=service.upper(), nak_delay=0.05, max_failures=3)
    consumer = Consumer(tallies, nc, cfg, on_halt=halts.append)
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: consumer.halted is not None, timeout=30, what="halt")
        await task
        assert tallies.tracked_position(service) == positions[9]
        assert len(halts) == 1
        assert f"position {poison} failed 3 times" in halts[0]
    finally:
        await wind_down(consumer, None, nc, counters, tallies)


async def test_consumer_killed_between_commit_and_ack_applies_nothing_twice(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str, tmp_path: Path
) -> None:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 60)
    await publish_all(nats_server.url, counters)
    positions = [n.id for n in counters.select_notifications(0, 1000)]
    tally_env = make_store_env("tallies")
    marker = tmp_path / "died"
    cmd = [
        sys.executable, "-m", "accord_kit.testing.processes", "consume", "--store", json.dumps(tally_env),
        "--nats", nats_server.url, "--service", service, "--batch", "10",
        "--die-after-commit-at", str(positions[30]), "--marker", str(marker),
        # What the dead process fetched and never acked comes back to the next one after the
        # ack wait: a short one, so that the redelivery comes soon (not 30 s later).
        "--ack-wait", "2",
    ]  # fmt: skip
    first = subprocess.run(cmd, timeout=60)
    assert first.returncode == 9 and marker.exists(), "the consumer should have died right after its commit"
    tallies = Tallies(tally_env, service=f"tally{unique.lower()}")
    assert tallies.tracked_position(service) == positions[30]
    second = subprocess.Popen(cmd)
    try:
        await eventually(lambda: tallies.tracked_position(service) == positions[-1], timeout=60, what="resumed")
        await asyncio.sleep(0.5)
    finally:
        second.terminate()
        assert second.wait(timeout=20) == 0
    tally = tallies.get_tally()
    assert tally is not None
    assert (tally.count, tally.total) == (60, total)
    counters.close()
    tallies.close()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, bytes]:
    private, public = generate_keypair(tmp_path / "keys")
    return private.read_bytes(), public.read_bytes()


async def test_message_missing_from_the_stream_is_caught_up_through_read_events(
    nats_server: NatsServer,
    make_store_env: Callable[[str], dict[str, str]],
    unique: str,
    keys: tuple[bytes, bytes],
) -> None:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 30)
    await publish_all(nats_server.url, counters)
    nc = await connect(nats_server.url, name="consumer")
    js = nc.jetstream()
    # The broker loses two messages (as retention or a lost disk would).
    await js.delete_msg(service.upper(), 7)
    await js.delete_msg(service.upper(), 8)
    # The source serves its log over a real gRPC channel, with auth.
    server, client = await serve_log(counters, keys)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    cfg = ConsumerConfig(consumer="tally", source=service, stream=service.upper(), nak_delay=0.05, gap_timeout=0.5)
    consumer = Consumer(tallies, nc, cfg, read_events=client.read_events)
    task = asyncio.create_task(consumer.run())
    try:
        head = counters.head_position()
        await eventually(lambda: consumer.tracked == head, timeout=30, what="caught up")
        tally = tallies.get_tally()
        assert tally is not None
        assert (tally.count, tally.total) == (30, total)
        # (The tracked position moves as each event is applied, in a worker thread; the counts once
        # the whole page read is applied: waited for, not read at once.)
        await eventually(lambda: consumer.stats.caught_up_via_read_events >= 2, timeout=30, what="the count")
    finally:
        consumer.stop()
        await task
        await client.close()
        await server.stop(0)
        await nc.close()
        counters.close()
        tallies.close()


@dataclass
class StallRig:
    """A tally consumer of ten counted events, caught up over NATS, with a short stall timeout and
    the source's log served over gRPC; `add(first, last)` counts more at the source."""

    counters: Counters
    tallies: Tallies
    consumer: Consumer
    nc: Any
    total: int

    @property
    def durable(self) -> str:
        return self.consumer.config.durable

    @property
    def stream(self) -> str:
        return self.consumer.config.stream

    def add(self, first: int, last: int) -> None:
        for i in range(first, last + 1):
            self.counters.increment(f"c{i % 3}", i)
            self.total += i

    async def caught_up(self, what: str) -> None:
        await eventually(lambda: self.consumer.tracked == self.counters.head_position(), timeout=30, what=what)

    async def counted_via_read_events(self, n: int) -> None:
        # The tracked position moves as each event is applied, in a worker thread; the counts once
        # the whole page read is applied: waited for, not read the moment the position arrives.
        stats = self.consumer.stats
        await eventually(lambda: stats.caught_up_via_read_events >= n, timeout=30, what="the count")
        assert stats.caught_up_via_read_events == n

    def assert_tally(self, count: int) -> None:
        tally = self.tallies.get_tally()
        assert tally is not None
        assert (tally.count, tally.total) == (count, self.total)


@contextlib.asynccontextmanager
async def stall_rig(
    nats: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str, keys: tuple[bytes, bytes]
) -> AsyncIterator[StallRig]:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 10)
    await publish_all(nats.url, counters)
    nc = await connect(nats.url, name="consumer")
    server, client = await serve_log(counters, keys)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    cfg = ConsumerConfig(
        consumer="tally", source=service, stream=service.upper(), fetch_timeout=0.2, gap_timeout=0.5, stall_timeout=1.0
    )
    consumer = Consumer(tallies, nc, cfg, read_events=client.read_events)
    task = asyncio.create_task(consumer.run())
    rig = StallRig(counters, tallies, consumer, nc, total)
    try:
        await rig.caught_up("the first ten")
        yield rig
    finally:
        consumer.stop()
        await task
        await client.close()
        await server.stop(0)
        await nc.close()
        counters.close()
        tallies.close()


async def test_a_durable_that_stops_delivering_is_caught_up_through_read_events(
    nats_server: NatsServer,
    make_store_env: Callable[[str], dict[str, str]],
    unique: str,
    keys: tuple[bytes, bytes],
) -> None:
    """JetStream stops delivering to the durable while the stream moves on (here the durable is
    paused; in a cluster, its leader lost while a node was frozen): the consumer notices that
    nothing arrives while the stream's head is past its position, catches up through
    ReadEvents and binds its subscription again — it is never left behind for good."""
    async with stall_rig(nats_server, make_store_env, unique, keys) as rig:
        assert rig.consumer.stats.stalls == 0
        until = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        await rig.nc.jetstream().pause_consumer(rig.stream, rig.durable, until)
        rig.add(11, 30)
        await publish_all(nats_server.url, rig.counters)
        await rig.caught_up("caught up")
        rig.assert_tally(30)
        assert rig.consumer.stats.stalls >= 1
        await rig.counted_via_read_events(20)


async def test_a_durable_lost_on_the_server_is_caught_up_and_created_again(
    nats_server: NatsServer,
    make_store_env: Callable[[str], dict[str, str]],
    unique: str,
    keys: tuple[bytes, bytes],
) -> None:
    """The durable disappears from the server while the consumer runs (an operator deleted it, a
    node lost its storage): every fetch now fails at once rather than timing out. The consumer
    still notices that nothing arrives while the stream's head is past its position, catches up
    through ReadEvents, and creates its durable again — after which NATS delivers once more."""
    async with stall_rig(nats_server, make_store_env, unique, keys) as rig:
        js = rig.nc.jetstream()
        first = rig.counters.head_position()  # applied from NATS before the durable was lost
        await js.delete_consumer(rig.stream, rig.durable)
        rig.add(11, 30)
        await publish_all(nats_server.url, rig.counters)
        await rig.caught_up("caught up")
        assert rig.consumer.stats.stalls >= 1
        await rig.counted_via_read_events(20)
        # The durable exists again; it delivers the stream from its start, each event applied once
        # (those applied already recognised), and the next ones too.
        await eventually(lambda: _durable_exists(js, rig.stream, rig.durable), timeout=30, what="the durable again")
        rig.add(31, 35)
        await publish_all(nats_server.url, rig.counters)
        await rig.caught_up("the last five")
        assert rig.consumer.stats.applied == rig.counters.head_position()
        rig.assert_tally(35)
        # NATS delivers through it: the stream from its start, what was applied recognised as such.
        stats = rig.consumer.stats
        await eventually(lambda: stats.redeliveries_skipped >= first, timeout=30, what="the durable delivering")
        assert stats.applied == rig.counters.head_position()


async def test_a_consumer_catches_up_through_read_events_while_nats_is_down(
    own_nats_server: NatsServer,
    make_store_env: Callable[[str], dict[str, str]],
    unique: str,
    keys: tuple[bytes, bytes],
) -> None:
    """NATS is down (every node), so nothing is published and the stream's head cannot even be
    asked: the source still serves its log, and the consumer applies what it wrote meanwhile
    through ReadEvents — a broker outage delays nothing the source can tell. When NATS is back,
    the stream's copies of those events are recognised as applied, and what comes next is
    delivered over NATS again. The stall check's look at the stream's head, which gets no answer
    with NATS down, waits a second for it (`look_timeout`), not JetStream's default 5 s: the events
    are applied within about the stall timeout (1 s here) and that second."""
    async with stall_rig(own_nats_server, make_store_env, unique, keys) as rig:
        own_nats_server.stop()
        rig.add(11, 30)
        started = time.monotonic()
        await rig.caught_up("caught up, NATS down")
        took = time.monotonic() - started
        assert took < 4.0, f"caught up {took:.1f} s after the events were written (the look waited 5 s?)"
        await rig.counted_via_read_events(20)
        rig.assert_tally(30)

        own_nats_server.start()
        await eventually(lambda: rig.nc.is_connected, timeout=30, what="reconnected")
        rig.add(31, 35)
        await publish_all(own_nats_server.url, rig.counters)  # the twenty, then the five
        await rig.caught_up("the last five")
        rig.assert_tally(35)
        # Each event applied once: the twenty read from the source are recognised as applied when
        # the durable delivers them (the five after them come from NATS or, if it is slower than
        # the stall check, from the source: either way once).
        stats = rig.consumer.stats
        await eventually(lambda: stats.redeliveries_skipped >= 20, timeout=30, what="the twenty redelivered")
        assert stats.applied == rig.counters.head_position()


async def _durable_exists(js: Any, stream: str, durable: str) -> bool:
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        return False
    return True


class ContendedTallies(Tallies):
    """A tally consumer whose store has a second writer: at the positions in `contend_at`, that
    writer saves the same tally after the policy has read it and before it is recorded."""

    name = Tallies.name  # the same tables as the other writer's

    def __init__(self, env: dict[str, str], service: str) -> None:
        super().__init__(env, service=service)
        self.other = Tallies(env, service=service)
        self.contend_at: set[int] = set()

    def policy(self, source: str, envelope: Any, processing: Any) -> None:
        super().policy(source, envelope, processing)
        if envelope.position in self.contend_at:
            self.contend_at.discard(envelope.position)
            tally = self.other.get_tally()
            assert tally is not None
            tally.record("the other writer", 1000)
            self.other.save(tally)


async def test_an_event_that_conflicts_with_another_writer_is_applied_again(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """Billing's consumer and billing's own clock work both open statements: when the other
    writer saved the aggregate first, the event is applied again on the new state — not a
    failure counted towards halting the consumer, and nothing lost or doubled."""
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 12)
    await publish_all(nats_server.url, counters)
    tallies = ContendedTallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    tallies.contend_at = {5, 9}
    nc = await connect(nats_server.url, name="consumer")
    consumer = Consumer(tallies, nc, ConsumerConfig(consumer="tally", source=service, stream=service.upper()))
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: consumer.tracked == counters.head_position(), timeout=30, what="applied")
        tally = tallies.get_tally()
        assert tally is not None
        assert (tally.count, tally.total) == (12 + 2, total + 2000)
        assert consumer.stats.failures == 0
    finally:
        await wind_down(consumer, task, nc, counters, tallies.other, tallies)


@contextlib.contextmanager
def every_level_logged() -> Iterator[list[dict[str, Any]]]:
    """What is logged meanwhile, at every level (the tests log at warning and above)."""
    config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**config)


async def test_a_stream_not_created_yet_is_waited_for_without_a_warning_each_attempt(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """At start the upstream stream may not exist yet (its producer still starting): the consumer
    says so once at info, warns once it has waited `stream_wait_warning` and then at most that
    often — not a warning each attempt, a second apart — and applies the stream once it exists."""
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 12)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    nc = await connect(nats_server.url, name="consumer")
    cfg = ConsumerConfig(consumer="tally", source=service, stream=service.upper(), stream_wait_warning=3.0)
    consumer = Consumer(tallies, nc, cfg)
    with every_level_logged() as logs:

        def said() -> list[tuple[str, float]]:
            return [(e["log_level"], e["waited_seconds"]) for e in logs if e["event"] == "consumer_waiting_for_stream"]

        task = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: any(level == "warning" for level, _ in said()), timeout=30, what="a warning")
            await asyncio.sleep(2.5)  # two more attempts or so: neither said again
            assert [level for level, _ in said()] == ["info", "warning"], said()
            assert said()[1][1] >= 3.0
            assert consumer.catch_up_target == 0  # nothing to catch up with: not held back meanwhile
            await publish_all(nats_server.url, counters)
            await eventually(lambda: (t := tallies.get_tally()) is not None and t.total == total, what="applied")
        finally:
            await wind_down(consumer, task, nc, counters, tallies)


async def test_a_lag_look_lost_with_its_server_is_given_up_after_a_second(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """A consumer's lag (its stream's head and the messages pending for its durable, refreshed for
    telemetry every few seconds, one consumer after another) asked of a server that dies before
    answering is given up after a second, not JetStream's default 5 s, and known again once the
    server answers."""
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    seed(counters, 12)
    await publish_all(own_nats_server.url, counters)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    nc = await connect(own_nats_server.url, name="consumer")
    consumer = Consumer(tallies, nc, ConsumerConfig(consumer="tally", source=service, stream=service.upper()))
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.caught_up.wait(), timeout=30)
        await consumer.refresh_lag()
        assert consumer.upstream_head == counters.head_position()  # (its durable's deliveries may still be pending)
        async with own_nats_server.requests_lost():
            began = time.monotonic()
            with pytest.raises(TimeoutError):
                await consumer.refresh_lag()
            took = time.monotonic() - began
        assert took < 2.5, f"the lag's look given up {took:.1f} s after it was asked"
        deadline = time.monotonic() + 30
        while True:  # the server answers again: the lag is known again
            try:
                await consumer.refresh_lag()
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "the lag never known again"
        assert consumer.upstream_head == counters.head_position()
    finally:
        await wind_down(consumer, task, nc, counters, tallies)


async def test_a_look_lost_with_its_server_at_start_is_asked_again_before_the_default_timeout(
    own_nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """The consumer's first look at its durable, sent to a server that dies before answering —
    frozen, then killed and started again at once — is asked again after a second, not after
    JetStream's default request timeout of 5 s (`nats_util.look_timeout`): a reader that must catch
    up before it serves (the gateway) serves that much sooner after a NATS node dies."""
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    total = seed(counters, 12)
    await publish_all(own_nats_server.url, counters)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    nc = await connect(own_nats_server.url, name="consumer")
    consumer = Consumer(tallies, nc, ConsumerConfig(consumer="tally", source=service, stream=service.upper()))
    asked = time.monotonic()
    task: asyncio.Task[None] | None = None
    try:
        async with own_nats_server.requests_lost():
            task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(consumer.caught_up.wait(), timeout=30)
        done = time.monotonic()
        took, back = done - asked, done - own_nats_server.answering_since
        assert back < 3.0, (
            f"caught up {back:.1f} s after the server answered again "
            f"({took:.1f} s after the durable was first asked for)"
        )
        tally = tallies.get_tally()
        assert tally is not None and tally.total == total
    finally:
        await wind_down(consumer, task, nc, counters, tallies)
