"""A message on an upstream stream that is not an event envelope at all is dead-lettered
(copied to the DEADLETTER stream with the reason, then acknowledged, with an alert), and
the consumer goes on with the events after it; it does not die on it or retry it forever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from accord_kit import deadletter
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.nats_util import connect, ensure_stream
from accord_kit.testing.counter import Counters, Tallies
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import eventually


async def test_a_message_that_is_not_an_envelope_is_dead_lettered_and_the_events_after_it_apply(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    service = f"counter{unique.lower()}"
    stream = service.upper()
    counters = Counters(make_store_env("counters"), service=service)
    for i in range(1, 9):
        counters.increment(f"c{i % 2}", i)
    envs, _ = counters.read_events(0, 100)
    tallies = Tallies(make_store_env("tallies"), service=f"tally{unique.lower()}")
    nc = await connect(nats_server.url, name="producer")
    alerts: list[str] = []

    async def on_dead_letter(reason: str) -> None:
        alerts.append(reason)

    garbage_subject = f"accord.{service}.v1.Garbage"
    try:
        await ensure_stream(nc, stream, service)
        js = nc.jetstream()
        half = len(envs) // 2
        for env in envs[:half]:
            await js.publish(f"accord.{service}.v1.{env.type.rsplit('.', 1)[-1]}", env.SerializeToString())
        await js.publish(garbage_subject, b"\xff\x00garbage", headers={"Authorization": "Bearer secret"})
        for env in envs[half:]:
            await js.publish(f"accord.{service}.v1.{env.type.rsplit('.', 1)[-1]}", env.SerializeToString())
        cfg = ConsumerConfig(consumer=f"tally{unique.lower()}", source=service, stream=stream, nak_delay=0.05)
        consumer = Consumer(tallies, nc, cfg, on_dead_letter=on_dead_letter)
        task = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: consumer.tracked == envs[-1].position, timeout=30, what="every event applied")
            tally = tallies.get_tally()
            assert tally is not None and tally.total == sum(range(1, 9))
            assert consumer.halted is None
            await eventually(lambda: consumer.stats.dead_lettered == 1, timeout=10, what="the garbage dead-lettered")
        finally:
            consumer.stop()
            await task
        copy = await js.get_last_msg(deadletter.STREAM, deadletter.subject_for(cfg.consumer, garbage_subject))
        assert copy.data == b"\xff\x00garbage"
        headers = copy.headers or {}
        assert "not an event envelope" in headers[deadletter.REASON]
        assert headers[deadletter.ORIGINAL_SUBJECT] == garbage_subject
        assert headers[deadletter.ORIGINAL_STREAM] == stream
        assert "Authorization" not in headers  # credentials are not kept
        assert len(alerts) == 1 and "not an event envelope" in alerts[0]
        # Acknowledged: nothing is pending for the durable any more.
        info = await js.consumer_info(stream, cfg.durable)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await nc.close()
        counters.close()
        tallies.close()
