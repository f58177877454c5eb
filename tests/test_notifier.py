"""The notifier on real stores, fed by the real agreements, metrics and billing applications
(one fake clock, as their consumers would feed it), delivering to a real HTTP receiver:
retries with backoff on 5xx, timeouts and dropped connections under one idempotency key and a
signature the receiver verifies; giving up with an alert; a refusal; events held until the
agreement's parties are known; statements with credits and their dispute deadline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_kit.testing.webhook import Receiver
from accord_notifier.application import Notifier, Rules
from accord_notifier.delivery import HEALTH, Deliverer, DeliveryPolicy
from accord_notifier.domain import (
    ABANDONED,
    BREACH,
    DELIVERED,
    DISPUTE_DEADLINE_APPROACHING,
    PENDING,
    STATEMENT_FINAL,
    STATEMENT_ISSUED,
)
from tests.suite import AMS, COLLECTOR, P_CUSTOMER, P_PROVIDER, Suite, an_active_agreement, at, feed, ts

SECRET = "a-secret-of-the-finance-dept"


class World:
    def __init__(self, make_env: Callable[[str], dict[str, str]]) -> None:
        self.suite = Suite(make_env)
        self.notifier = Notifier(make_env("notifier"), clock=self.suite.clock, rules=Rules())
        self.reports: list[tuple[str, bool, str]] = []

    def feed(self, *sources: str) -> None:
        for source in sources or ("agreements", "metrics", "billing"):
            feed(source, getattr(self.suite, source), self.notifier)

    def deliverer(self, **policy: Any) -> Deliverer:
        async def report(name: str, serving: bool, detail: str) -> None:
            self.reports.append((name, serving, detail))

        return Deliverer(self.notifier, DeliveryPolicy(**{"retry_base": 1.0, "timeout": 1.0, **policy}), report=report)

    def advance(self, seconds: float) -> None:
        self.suite.clock.advance(timedelta(seconds=seconds))

    def breach(self) -> str:
        """An accepted agreement, and an outage long enough to breach January's availability."""
        aid = an_active_agreement(self.suite)
        self.suite.clock.set(at(f"2026-01-20T11:20{AMS}"))
        ongoing = pb.Signal(
            signal_id="down", service_id=EMAIL, outage=pb.Outage(start=ts(at(f"2026-01-20T11:00{AMS}")))
        )
        self.suite.metrics.record(COLLECTOR, [ongoing])
        self.suite.tick(f"2026-01-20T12:30{AMS}")
        return aid


@pytest.fixture
def world(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    w = World(make_store_env)
    yield w
    w.suite.close()
    w.notifier.close()


async def test_a_breach_is_delivered_after_retries_with_one_idempotency_key_and_a_valid_signature(world: World) -> None:
    n = world.notifier
    with Receiver([500, "hang", "close", 200]) as receiver:
        sub = n.subscribe(P_CUSTOMER, FINANCE, receiver.url, SECRET, [BREACH])
        aid = world.breach()
        world.feed()  # the breach's notification is queued with the event's position
        deliverer = world.deliverer(max_attempts=5)
        async with httpx.AsyncClient(timeout=0.5) as client:
            for wait in (0, 1, 2, 4):  # the backoff: 1 s, then 2 s, then 4 s
                world.advance(wait)
                assert await deliverer.deliver_due(client) == 1
                # Not due again before its backoff has passed.
                assert await deliverer.deliver_due(client) == 0
        deliveries = n.list_deliveries(P_CUSTOMER, "")
    assert len(receiver.received) == 4, receiver.received
    keys = {r.headers["idempotency-key"] for r in receiver.received}
    assert len(keys) == 1
    assert all(r.signed_by(SECRET) for r in receiver.received)
    assert not receiver.received[0].signed_by("another secret entirely")
    body = receiver.received[-1].json
    assert body["notification_id"] == keys.pop() and body["kind"] == BREACH and body["agreement_id"] == aid
    assert body["department_id"] == FINANCE and body["event"]["objective_id"] == "availability"
    assert body["event_type"] == "accord.metrics.v1.BreachDetected"
    [d] = [d for d in deliveries if d.subscription_id == sub["subscription_id"]]
    assert d.state == DELIVERED
    assert [(a["status_code"], a["error"].split(":")[0]) for a in d.attempts] == [
        (500, "HTTP 500"), (0, "timeout"), (0, "connection error"), (200, ""),
    ]  # fmt: skip
    assert [a["next_attempt_at"] != "" for a in d.attempts] == [True, True, True, False]
    # The provider subscribed nothing: nothing for it.
    assert n.list_deliveries(P_PROVIDER, "") == []


async def test_a_notification_is_abandoned_with_an_alert_after_its_attempts_or_a_refusal(world: World) -> None:
    n = world.notifier
    with Receiver([503] * 10) as failing, Receiver([400]) as refusing:
        n.subscribe(P_CUSTOMER, "", failing.url, SECRET, [BREACH])
        n.subscribe(P_PROVIDER, "", refusing.url, SECRET + "-it", [BREACH])
        world.breach()
        world.feed()
        deliverer = world.deliverer(max_attempts=3)
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(4):
                await deliverer.deliver_due(client)
                world.advance(10)
        assert n.pending_count() == 0
    [given_up] = n.list_deliveries(P_CUSTOMER, "")
    [refused] = n.list_deliveries(P_PROVIDER, "")
    assert (given_up.state, given_up.outcome) == (ABANDONED, "gave up after 3 attempts: HTTP 503")
    assert (refused.state, refused.outcome) == (ABANDONED, "refused: HTTP 400")
    assert (len(failing.received), len(refused.attempts), len(refusing.received)) == (3, 1, 1)
    assert [r[:2] for r in world.reports] == [(HEALTH, False), (HEALTH, False)]


def test_events_wait_for_the_agreement_s_parties_and_a_redelivery_queues_nothing_twice(world: World) -> None:
    n = world.notifier
    n.subscribe(P_CUSTOMER, "", "http://127.0.0.1:9/hook", SECRET, [])
    world.breach()
    # Metrics' events arrive before the agreements stream says who the parties are: held.
    world.feed("metrics")
    assert n.pending_count() == 0
    world.feed("agreements")
    queued = n.list_deliveries(P_CUSTOMER, "")
    kinds = sorted({d.kind for d in queued})
    assert kinds == ["BREACH", "BUDGET_WARNING", "BURN_RATE_FIRING"], kinds
    assert all(d.state == PENDING for d in queued)
    # Every upstream event applied again (a redelivery) is recognised; nothing is queued twice.
    envs, _ = world.suite.metrics.read_events(0, 5000)
    assert not any(n.apply_upstream("metrics", e) for e in envs)
    assert len(n.list_deliveries(P_CUSTOMER, "")) == len(queued)


def test_a_statement_with_credits_opens_its_dispute_window_reminds_before_its_deadline_and_ends_final(
    world: World,
) -> None:
    n = world.notifier
    n.subscribe(P_CUSTOMER, "", "http://127.0.0.1:9/finance", SECRET, [STATEMENT_ISSUED,
                DISPUTE_DEADLINE_APPROACHING, STATEMENT_FINAL])  # fmt: skip
    n.subscribe(P_PROVIDER, "", "http://127.0.0.1:9/it", SECRET, [])
    world.breach()
    world.suite.tick(f"2026-02-01T03:00{AMS}")  # January closes; its statement is issued
    world.feed()
    customer = {d.kind: d for d in n.list_deliveries(P_CUSTOMER, "")}
    assert set(customer) == {STATEMENT_ISSUED, DISPUTE_DEADLINE_APPROACHING}
    claim = customer[STATEMENT_ISSUED].body["event"]["claim_until"]
    claim_until = at(claim)
    assert at(customer[DISPUTE_DEADLINE_APPROACHING].not_before) == claim_until - timedelta(days=3)
    assert customer[DISPUTE_DEADLINE_APPROACHING].body["dispute_until"] == claim
    assert customer[STATEMENT_ISSUED].body["event"]["totals"]["credits_issued"] not in ("", "0", "0.00")
    # The reminder is to the customer (the party that may dispute), not the provider.
    provider = {d.kind for d in n.list_deliveries(P_PROVIDER, "")}
    assert STATEMENT_ISSUED in provider and DISPUTE_DEADLINE_APPROACHING not in provider
    # Not due before its time.
    due = {d.kind for d in n.due(world.suite.clock.now(), 1000)}
    assert DISPUTE_DEADLINE_APPROACHING not in due
    assert DISPUTE_DEADLINE_APPROACHING in {d.kind for d in n.due(claim_until - timedelta(days=3), 1000)}
    # The claim window passes with no dispute: the statement is final, and both are told.
    world.suite.tick((claim_until + timedelta(hours=2)).isoformat())
    world.feed()
    assert STATEMENT_FINAL in {d.kind for d in n.list_deliveries(P_CUSTOMER, "")}
    assert STATEMENT_FINAL in {d.kind for d in n.list_deliveries(P_PROVIDER, "")}
    assert IT in {d.department_id for d in n.list_deliveries(P_PROVIDER, "")}
