"""Billing's consumers under redelivery: the agreements and metrics streams carry every
event twice and out of order (as JetStream may redeliver); billing applies them through its
real durable consumers and ends with exactly the statements of a clean, in-order delivery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.application import Billing
from accord_kit.application import AccordApplication
from accord_kit.clock import FakeClock
from accord_kit.consumer import Consumer, ConsumerConfig
from accord_kit.context import Principal
from accord_kit.nats_util import connect, ensure_stream
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import eventually
from accord_metrics.application import Metrics
from tests.suite import AMS, at, outage


def snapshot(billing: Billing, aid: str) -> list[tuple[str, dict[str, object], list[object]]]:
    return [(s.period_start, s.assessments, s.adjustments) for s in billing.statements(None, aid)]


async def publish_shuffled(nats_url: str, source: AccordApplication, stream: str, seed: int) -> None:
    """The source's events on its stream, each twice, in a shuffled order (without dedupe ids,
    as a redelivery would bring them)."""
    envs, _ = source.read_events(0, 5000)
    doubled = envs + envs
    random.Random(seed).shuffle(doubled)
    nc = await connect(nats_url, name="publisher")
    try:
        await ensure_stream(nc, stream, source.service)
        js = nc.jetstream()
        for env in doubled:
            await js.publish(f"accord.{source.service}.v1.{env.type.rsplit('.', 1)[1]}", env.SerializeToString())
    finally:
        await nc.close()


def judged_journey(
    make_store_env: Callable[[str], dict[str, str]], unique: str, clock: FakeClock
) -> tuple[Agreements, Metrics, str]:
    """An accepted SLA and its January and February windows judged (with a late January
    outage restating January), in stores of their own."""
    agreements = Agreements(make_store_env("agreements"), clock=clock)
    agreements.service = f"agreements{unique.lower()}"
    metrics = Metrics(make_store_env("metrics"), clock=clock)
    metrics.service = f"metrics{unique.lower()}"
    for dept in (IT, FINANCE):
        agreements.register_department(dept, dept)
    agreements.register_service(EMAIL, "E-mail", IT)
    aid = str(agreements.draft(Actor("a", "department", IT), sla_terms()).id)
    agreements.propose(Actor("a", "department", IT), aid)
    agreements.accept(Actor("b", "department", FINANCE), aid)
    for env in agreements.read_events(0, 5000)[0]:
        metrics.apply_upstream("agreements", env)
    collector = Principal("c", "service")
    metrics.record(collector, [outage("jan", f"2026-01-12T10:00{AMS}", 90)])
    clock.set(at(f"2026-02-10T00:00{AMS}"))
    metrics.evaluate()
    metrics.record(
        collector, [outage("feb", f"2026-02-03T10:00{AMS}", 60), outage("jan2", f"2026-01-25T10:00{AMS}", 30)]
    )
    clock.set(at(f"2026-03-02T00:00{AMS}"))
    metrics.evaluate()
    return agreements, metrics, aid


def clean_delivery(
    make_store_env: Callable[[str], dict[str, str]], clock: FakeClock, agreements: Agreements, metrics: Metrics
) -> Billing:
    """Billing fed the agreements stream, then the metrics stream, each in order."""
    clean = Billing(make_store_env("billing-clean"), clock=clock)
    for source, app in (("agreements", agreements), ("metrics", metrics)):
        for env in app.read_events(0, 5000)[0]:
            clean.apply_upstream(source, env)
    return clean


async def test_twice_and_out_of_order_gives_the_same_statements(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics, aid = judged_journey(make_store_env, unique, clock)
    clean = clean_delivery(make_store_env, clock, agreements, metrics)
    # The same events, twice each, shuffled, through the real consumers.
    await publish_shuffled(nats_server.url, agreements, agreements.service.upper(), seed=1)
    await publish_shuffled(nats_server.url, metrics, metrics.service.upper(), seed=2)
    messy = Billing(make_store_env("billing-messy"), clock=clock)
    nc = await connect(nats_server.url, name="billing")
    consumers = [
        Consumer(
            messy, nc, ConsumerConfig(consumer="billing", source=source, stream=app.service.upper(), nak_delay=0.01)
        )
        for source, app in (("agreements", agreements), ("metrics", metrics))
    ]
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await eventually(
            lambda: (
                messy.tracked_position("agreements") == agreements.head_position()
                and messy.tracked_position("metrics") == metrics.head_position()
            ),
            timeout=60,
            what="both streams applied",
        )
    finally:
        for c in consumers:
            c.stop()
        await asyncio.gather(*tasks)
        await nc.close()
    assert snapshot(messy, aid) == snapshot(clean, aid)
    assert len(snapshot(clean, aid)) == 2
    for consumer, app in zip(consumers, (agreements, metrics), strict=True):
        events = len(app.read_events(0, 5000)[0])
        assert (consumer.stats.applied, consumer.stats.redeliveries_skipped) == (events, events)
    for app in (agreements, metrics, clean, messy):
        app.close()


async def test_windows_that_arrive_before_their_agreement_wait_for_it(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """Billing's metrics consumer runs ahead of its agreements consumer (after a failover the
    agreements consumer may be seconds behind): the windows metrics judged for an agreement
    billing has not applied yet wait for it — none is dropped — and the money is the same as
    an in-order delivery's."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics, aid = judged_journey(make_store_env, unique, clock)
    clean = clean_delivery(make_store_env, clock, agreements, metrics)
    await publish_shuffled(nats_server.url, agreements, agreements.service.upper(), seed=3)
    await publish_shuffled(nats_server.url, metrics, metrics.service.upper(), seed=4)
    late = Billing(make_store_env("billing-late"), clock=clock)
    nc = await connect(nats_server.url, name="billing")
    config = {"nak_delay": 0.01, "wait_delay": 0.05}
    on_metrics = Consumer(late, nc, ConsumerConfig("billing", "metrics", metrics.service.upper(), **config))
    on_agreements = Consumer(late, nc, ConsumerConfig("billing", "agreements", agreements.service.upper(), **config))
    tasks = [asyncio.create_task(on_metrics.run())]
    try:
        # The metrics consumer alone: the first window closed waits for the agreement.
        await eventually(lambda: on_metrics.stats.waits >= 3, timeout=30, what="a window waiting for its agreement")
        assert late.tracked_position("metrics") < metrics.head_position()
        assert late.statements(None, aid) == []
        tasks.append(asyncio.create_task(on_agreements.run()))
        await eventually(
            lambda: (
                late.tracked_position("agreements") == agreements.head_position()
                and late.tracked_position("metrics") == metrics.head_position()
            ),
            timeout=60,
            what="both streams applied",
        )
    finally:
        for c in (on_metrics, on_agreements):
            c.stop()
        await asyncio.gather(*tasks)
        await nc.close()
    assert snapshot(late, aid) == snapshot(clean, aid)
    assert len(snapshot(clean, aid)) == 2
    assert on_metrics.stats.failures == 0 and on_metrics.halted is None
    for app in (agreements, metrics, clean, late):
        app.close()
