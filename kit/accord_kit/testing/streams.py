"""Test helpers: read a whole stream back, wait for a condition, check exactly-once order."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import api

from accord.events.v1 import events_pb2


async def read_stream(
    nc: NATS, stream: str, timeout: float = 60.0
) -> list[tuple[dict[str, str], events_pb2.EventEnvelope]]:
    """Every message of a stream in stream order, with headers and decoded envelope. An
    ordered consumer that stalls (a cluster node just restarted or thawed) is replaced by a
    new one starting after the last message read, and a JetStream API request that is not
    answered (a cluster between stream leaders) is asked again, until `timeout`."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    info = await answered(lambda: js.stream_info(stream), deadline)
    out: list[tuple[dict[str, str], events_pb2.EventEnvelope]] = []
    last_seq = 0
    while len(out) < info.state.messages:
        config = (
            api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
            if last_seq == 0
            else api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_seq + 1)
        )
        sub = await answered(functools.partial(js.subscribe, "accord.>", stream=stream, ordered_consumer=True,
                                                config=config), deadline)  # fmt: skip
        try:
            while len(out) < info.state.messages:
                msg = await sub.next_msg(timeout=5)
                env = events_pb2.EventEnvelope()
                env.ParseFromString(msg.data)
                out.append((dict(msg.headers or {}), env))
                last_seq = msg.metadata.sequence.stream if msg.metadata and msg.metadata.sequence else last_seq + 1
        except nats.errors.TimeoutError:
            if time.monotonic() > deadline:
                raise
        finally:
            await sub.unsubscribe()
    return out


async def answered(request: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """`request()`, asked again while the JetStream API does not answer it, until `deadline`."""
    while True:
        try:
            return await request()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result: Any = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


def assert_exactly_once_in_order(
    messages: list[tuple[dict[str, str], events_pb2.EventEnvelope]], store_positions: list[int]
) -> None:
    positions = [env.position for _, env in messages]
    ids = [env.event_id for _, env in messages]
    assert len(set(ids)) == len(ids), "duplicate events in the stream"
    assert positions == store_positions, "stream positions differ from the store's log"
    prev = 0
    for headers, env in messages:
        assert env.previous_position == prev
        assert headers["Accord-Previous-Position"] == str(prev)
        assert headers["Nats-Msg-Id"] == env.event_id
        prev = env.position
