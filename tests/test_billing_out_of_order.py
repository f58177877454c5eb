"""Billing's consumers under redelivery: the agreements and metrics streams carry every
event twice and out of order (as JetStream may redeliver); billing applies them through its
real durable consumers and ends with exactly the statements of a clean, in-order delivery."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from accord.metrics.v1 import events_pb2 as metric_events
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.application import Billing
from accord_billing.domain import ISSUED
from accord_kit.application import AccordApplication
from accord_kit.clock import FakeClock
from accord_kit.consumer import Consumer, ConsumerConfig, NotYetError
from accord_kit.context import Principal
from accord_kit.nats_util import connect, ensure_stream
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import eventually
from accord_metrics.application import Metrics
from tests.suite import AMS, COLLECTOR, CUSTOMER, PROVIDER, at, outage


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


def money(billing: Billing, aid: str) -> list[tuple[str, str, dict[str, object], list[object], dict[str, object]]]:
    """Each statement's period, state, assessments, adjustments and totals (fee, credits, net)."""
    return [(s.period_start, s.state, s.assessments, s.adjustments, s.totals) for s in billing.statements(None, aid)]


def journey_apps(
    make_store_env: Callable[[str], dict[str, str]], unique: str, clock: FakeClock
) -> tuple[Agreements, Metrics]:
    agreements = Agreements(make_store_env("agreements"), clock=clock)
    agreements.service = f"agreements{unique.lower()}"
    metrics = Metrics(make_store_env("metrics"), clock=clock)
    metrics.service = f"metrics{unique.lower()}"
    for dept in (IT, FINANCE):
        agreements.register_department(dept, dept)
    agreements.register_service(EMAIL, "E-mail", IT)
    return agreements, metrics


def accept(agreements: Agreements, terms: dict[str, Any]) -> str:
    aid = str(agreements.draft(PROVIDER, terms).id)
    agreements.propose(PROVIDER, aid)
    agreements.accept(CUSTOMER, aid)
    return aid


def views(agreements: Agreements, metrics: Metrics) -> None:
    """Metrics' agreements consumer: every new agreements event applied."""
    for env in agreements.read_events(metrics.tracked_position("agreements"), 5000)[0]:
        metrics.apply_upstream("agreements", env)


def first_position(source: AccordApplication, event: str) -> int:
    """The position of the first `event` (its type's last name) in the source's log."""
    return next(e.position for e in source.read_events(0, 5000)[0] if e.type.endswith("." + event))


async def publish(nats_url: str, source: AccordApplication, envs: list[Any]) -> None:
    """The given events of the source's log on its stream, in order."""
    nc = await connect(nats_url, name="publisher")
    try:
        await ensure_stream(nc, source.service.upper(), source.service)
        js = nc.jetstream()
        for env in envs:
            await js.publish(f"accord.{source.service}.v1.{env.type.rsplit('.', 1)[1]}", env.SerializeToString())
    finally:
        await nc.close()


def assert_rederives_clean(billing: Billing, agreements: Agreements, metrics: Metrics, aid: str) -> None:
    """The audit's independent replay of both upstream logs agrees with every recorded window."""
    result = billing.rederive(metrics.read_events(0, 5000)[0], agreements.read_events(0, 5000)[0], aid)
    assert result.checked > 0
    assert (result.mismatches, result.missing, result.unexplained) == ([], [], [])


async def billed_with_agreements_held_back(
    nats_url: str, make_store_env: Callable[[str], dict[str, str]], clock: FakeClock, agreements: Agreements,
    metrics: Metrics, held_from: int,
) -> tuple[Billing, Consumer]:  # fmt: skip
    """Billing through its real consumers while the agreements stream holds only the events
    before `held_from` and the metrics stream everything: its clock runs (statements due are
    issued), then the held-back agreements events arrive and the clock runs again."""
    agreement_envs = agreements.read_events(0, 5000)[0]
    await publish(nats_url, agreements, [e for e in agreement_envs if e.position < held_from])
    await publish(nats_url, metrics, metrics.read_events(0, 5000)[0])
    late = Billing(make_store_env("billing-late"), clock=clock)
    nc = await connect(nats_url, name="billing")
    config = {"nak_delay": 0.01, "wait_delay": 0.05}
    on_metrics = Consumer(late, nc, ConsumerConfig("billing", "metrics", metrics.service.upper(), **config))
    on_agreements = Consumer(late, nc, ConsumerConfig("billing", "agreements", agreements.service.upper(), **config))
    before = max(e.position for e in agreement_envs if e.position < held_from)
    tasks = [asyncio.create_task(c.run()) for c in (on_agreements, on_metrics)]
    try:
        await eventually(
            lambda: (
                late.tracked_position("agreements") == before
                and (on_metrics.stats.waits >= 3 or late.tracked_position("metrics") == metrics.head_position())
            ),
            timeout=60,
            what="the agreements stream applied as far as it goes, the metrics stream as far as it may",
        )
        late.process_due()
        await publish(nats_url, agreements, [e for e in agreement_envs if e.position >= held_from])
        await eventually(
            lambda: (
                late.tracked_position("agreements") == agreements.head_position()
                and late.tracked_position("metrics") == metrics.head_position()
            ),
            timeout=60,
            what="both streams applied",
        )
        late.process_due()
    finally:
        for c in (on_metrics, on_agreements):
            c.stop()
        await asyncio.gather(*tasks)
        await nc.close()
    return late, on_metrics


async def the_same_money_held_back(
    nats_url: str, make_store_env: Callable[[str], dict[str, str]], clock: FakeClock, agreements: Agreements,
    metrics: Metrics, aid: str, held_event: str,
) -> tuple[Billing, Billing, Consumer]:  # fmt: skip
    """Billing fed in order (`clean`) and billing whose agreements stream is held back from the
    first `held_event` (`late`, `billed_with_agreements_held_back`) state the same money for
    `aid`, and the audit's replay agrees with `late`. Returns both and late's metrics consumer."""
    clean = clean_delivery(make_store_env, clock, agreements, metrics)
    clean.process_due()
    held_from = first_position(agreements, held_event)
    late, on_metrics = await billed_with_agreements_held_back(
        nats_url, make_store_env, clock, agreements, metrics, held_from
    )
    assert money(late, aid) == money(clean, aid)
    assert_rederives_clean(late, agreements, metrics, aid)
    return clean, late, on_metrics


async def test_a_window_judged_after_a_suspension_waits_for_billing_to_know_it(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """Suspended from 8 to 22 February: metrics applied both before it closed January and
    February, billing's agreements consumer has applied only the acceptance when its metrics
    consumer receives the windows, and billing's clock runs after February's end. The windows
    wait for the suspension (metrics recorded how far it had applied the agreements stream), so
    February is issued with half its fee, as in an in-order delivery — not with the whole fee
    of an agreement billing did not know was suspended."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics = journey_apps(make_store_env, unique, clock)
    aid = accept(agreements, sla_terms(objectives=[sla_terms()["objectives"][0]]))
    views(agreements, metrics)
    metrics.evaluate()
    clock.set(at(f"2026-02-08T00:00{AMS}"))
    agreements.suspend(PROVIDER, aid, "office move")
    clock.set(at(f"2026-02-22T00:00{AMS}"))
    agreements.resume(PROVIDER, aid, "moved")
    views(agreements, metrics)
    metrics.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 90)])
    clock.set(at(f"2026-03-01T02:00{AMS}"))
    metrics.evaluate()
    clean, late, on_metrics = await the_same_money_held_back(
        nats_server.url, make_store_env, clock, agreements, metrics, aid, "AgreementSuspended"
    )
    january, february = money(clean, aid)[:2]
    assert (january[1], february[1]) == (ISSUED, ISSUED)
    assert (Decimal(str(january[4]["fee"])), Decimal(str(february[4]["fee"]))) == (
        Decimal("11983.87"),  # from 01:00 on 1 January, an hour into Amsterdam's January
        Decimal("6000.00"),
    )
    assert on_metrics.stats.waits >= 3 and on_metrics.stats.failures == 0 and on_metrics.halted is None
    for app in (agreements, metrics, clean, late):
        app.close()


async def test_a_child_window_judged_after_its_parent_was_amended_waits_for_the_amendment(
    nats_server: NatsServer, make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """A customer-level child measures availability and inherits its fee from a corporate
    parent (which measures nothing itself) whose fee doubles from 1 February: an amendment of
    the parent, no new version of the child. Metrics judged the child's February window by
    the amended parent; billing's agreements consumer has applied the child's acceptance but
    not the parent's amendment when the window arrives. The window waits for the amendment,
    so February's credit is 10 % of the new fee, as in an in-order delivery — not of the old
    one."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics = journey_apps(make_store_env, unique, clock)
    corporate = sla_terms(
        level="SCOPE_LEVEL_CORPORATE", title="Corporate", objectives=[],
        amendment={"who_may_propose": "PROPOSER_EITHER_PARTY", "notice_days": 0},
    )  # fmt: skip
    parent = accept(agreements, corporate)
    child_terms = sla_terms(
        level="SCOPE_LEVEL_CUSTOMER", title="Finance e-mail", parent_agreement_id=parent,
        objectives=[sla_terms()["objectives"][0]],
    )  # fmt: skip
    del child_terms["fee"]
    child = accept(agreements, child_terms)
    clock.set(at(f"2026-01-20T00:00{AMS}"))
    amended = copy.deepcopy(corporate)
    amended["fee"]["amount"] = "24000.00"
    _, amendment = agreements.propose_amendment(PROVIDER, parent, amended, at(f"2026-02-01T00:00{AMS}"), "two sites")
    agreements.accept_amendment(CUSTOMER, parent, amendment)
    views(agreements, metrics)
    metrics.record(COLLECTOR, [outage("feb", f"2026-02-03T10:00{AMS}", 60)])
    clock.set(at(f"2026-03-01T02:00{AMS}"))
    metrics.evaluate()
    clean, late, on_metrics = await the_same_money_held_back(
        nats_server.url, make_store_env, clock, agreements, metrics, child, "AmendmentProposed"
    )
    february = money(clean, child)[1]
    [assessment] = february[2].values()
    assert (february[1], Decimal(str(assessment["net"]))) == (ISSUED, Decimal("2400.00"))  # type: ignore[index]
    assert on_metrics.stats.waits >= 3 and on_metrics.stats.failures == 0 and on_metrics.halted is None
    for app in (agreements, metrics, clean, late):
        app.close()


def judged_positions(metrics: Metrics, event: type[Any]) -> list[int]:
    """The `agreements_position` of each of metrics' public events of type `event`, in log order."""
    out = []
    for env in metrics.read_events(0, 5000)[0]:
        if env.type == event.DESCRIPTOR.full_name:
            msg = event()
            env.payload.Unpack(msg)
            out.append(int(msg.agreements_position))
    return out


def test_a_closing_and_a_restatement_say_how_far_metrics_had_applied_the_agreements_stream(
    make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """January closes with the agreements stream applied up to the acceptance; the agreement is
    then suspended, and a late outage restates January: the restatement carries the later
    position. Billing applies the closing once it has applied the acceptance, but the
    restatement only once it has applied the suspension too — tried before, it waits
    (NotYetError), nothing stored — and then records it as an in-order delivery does."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics = journey_apps(make_store_env, unique, clock)
    aid = accept(agreements, sla_terms(objectives=[sla_terms()["objectives"][0]]))
    views(agreements, metrics)
    metrics.evaluate()
    accepted_at = metrics.tracked_position("agreements")
    clock.set(at(f"2026-02-10T00:00{AMS}"))
    metrics.evaluate()
    agreements.suspend(PROVIDER, aid, "office move")
    views(agreements, metrics)
    suspended_at = metrics.tracked_position("agreements")
    assert suspended_at > accepted_at
    metrics.record(COLLECTOR, [outage("late", f"2026-01-20T10:00{AMS}", 90)])
    clock.set(at(f"2026-02-10T01:00{AMS}"))
    metrics.evaluate()
    assert judged_positions(metrics, metric_events.WindowClosed) == [accepted_at]
    assert judged_positions(metrics, metric_events.EvaluationRestated) == [suspended_at]
    clean = clean_delivery(make_store_env, clock, agreements, metrics)
    late = Billing(make_store_env("billing-late"), clock=clock)
    for env in agreements.read_events(0, 5000)[0]:
        if env.position <= accepted_at:
            late.apply_upstream("agreements", env)
    metric_envs = metrics.read_events(0, 5000)[0]
    restated = next(i for i, e in enumerate(metric_envs) if e.type.endswith(".EvaluationRestated"))
    for env in metric_envs[:restated]:
        late.apply_upstream("metrics", env)
    head = late.head_position()
    with pytest.raises(NotYetError, match=f"up to position {suspended_at}; billing has applied it up to {accepted_at}"):
        late.apply_upstream("metrics", metric_envs[restated])
    assert late.head_position() == head
    assert late.tracked_position("metrics") == metric_envs[restated - 1].position
    for env in agreements.read_events(accepted_at, 5000)[0]:
        late.apply_upstream("agreements", env)
    for env in metric_envs[restated:]:
        late.apply_upstream("metrics", env)
    assert money(late, aid) == money(clean, aid)
    assert_rederives_clean(late, agreements, metrics, aid)
    for app in (agreements, metrics, clean, late):
        app.close()


def test_a_window_recorded_before_metrics_kept_the_position_waits_only_for_its_version(
    make_store_env: Callable[[str], dict[str, str]], unique: str
) -> None:
    """A closing recorded before metrics kept `agreements_position` carries 0: billing applies
    it as soon as it holds the version that judged it, however far its agreements consumer is
    behind metrics' — the rule those events were billed by."""
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    agreements, metrics = journey_apps(make_store_env, unique, clock)
    aid = accept(agreements, sla_terms(objectives=[sla_terms()["objectives"][0]]))
    accepted_at = agreements.head_position()
    agreements.suspend(PROVIDER, aid, "office move")
    views(agreements, metrics)
    clock.set(at(f"2026-02-01T02:00{AMS}"))
    metrics.evaluate()
    [closing] = [e for e in metrics.read_events(0, 5000)[0] if e.type.endswith(".WindowClosed")]
    closed = metric_events.WindowClosed()
    closing.payload.Unpack(closed)
    assert closed.agreements_position == metrics.tracked_position("agreements") > accepted_at
    billing = Billing(make_store_env("billing"), clock=clock)
    for env in agreements.read_events(0, 5000)[0]:
        if env.position <= accepted_at:
            billing.apply_upstream("agreements", env)
    with pytest.raises(NotYetError):
        billing.apply_upstream("metrics", closing)
    closed.agreements_position = 0  # as recorded before the position was kept
    closing.payload.Pack(closed)
    for env in metrics.read_events(0, 5000)[0]:
        billing.apply_upstream("metrics", closing if env.event_id == closing.event_id else env)
    [january] = billing.statements(None, aid)
    assert list(january.assessments) == [f"availability|{closed.evaluation.window_start}"]
    for app in (agreements, metrics, billing):
        app.close()
