"""The backbone on both stores: the relay publishes a store's log exactly once and in
order; the consumer applies it exactly once; ReadEvents serves the same envelopes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from accord.testing.v1 import counter_pb2
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.envelope import unpack
from accord_kit.nats_util import connect
from accord_kit.relay import Relay, RelayMismatchError
from accord_kit.testing.counter import Counters, Tallies
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream


async def test_relay_publishes_every_event_once_in_order_and_consumer_applies_them(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    counters = Counters(make_store_env("counters"), service=service)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    for i in range(50):
        counters.increment(f"c{i % 3}", i + 1)
    nc = await connect(nats_server.url, name="test")
    relay = Relay(counters, nc, stream=service.upper(), poll_seconds=0.2)
    relay_task = asyncio.create_task(relay.run())
    consumer = Consumer(tallies, nc, ConsumerConfig(consumer="tally", source=service, stream=service.upper()))
    consumer_task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: relay.stats.head_position == counters.head_position(), what="relay caught up")
        # Saved while running: the save wakes the relay.
        for _ in range(10):
            await asyncio.to_thread(counters.increment, "late", 1)
        await eventually(lambda: relay.stats.head_position == counters.head_position(), what="relay woke up")
        await eventually(lambda: tallies.tracked_position(service) == counters.head_position(), what="consumer")
        messages = await read_stream(nc, service.upper())
        store = [n.id for n in counters.select_notifications(0, 10_000)]
        assert_exactly_once_in_order(messages, store)
        assert messages[0][1].type == "accord.testing.v1.CounterCreated"
        assert unpack(messages[1][1], counter_pb2.CounterIncremented).amount == 1
        tally = tallies.get_tally()
        assert tally is not None
        assert tally.total == sum(range(1, 51)) + 10
        assert tally.count == 60
        # ReadEvents serves exactly what the stream carries.
        served, head = counters.read_events(0, 5000)
        assert head == store[-1]
        assert [e.SerializeToString() for e in served] == [m[1].SerializeToString() for m in messages]
    finally:
        relay.stop()
        consumer.stop()
        await asyncio.gather(relay_task, consumer_task)
        await nc.close()
        counters.close()
        tallies.close()


async def test_relay_refuses_a_stream_whose_head_is_not_in_its_store(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    first = Counters(make_store_env("a"), service=service)
    for _ in range(5):
        first.increment("x", 1)
    nc = await connect(nats_server.url, name="test")
    relay = Relay(first, nc, stream=service.upper(), poll_seconds=0.2)
    task = asyncio.create_task(relay.run())
    await eventually(lambda: relay.stats.head_position == first.head_position())
    relay.stop()
    await task
    # A different (fresh) database pointed at the same stream.
    other = Counters(make_store_env("b"), service=service)
    other.increment("y", 1)
    with pytest.raises(RelayMismatchError) as err:
        await asyncio.wait_for(Relay(other, nc, stream=service.upper()).run(), timeout=10)
    assert "Refusing to run" in str(err.value)
    assert f"stream {service.upper()} ends at position" in str(err.value)
    await nc.close()
    first.close()
    other.close()
