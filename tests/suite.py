"""A whole suite in one process for cross-service tests: the agreements, metrics and billing
applications on real stores with one fake clock, fed to each other the way their consumers
would (every new upstream event applied once, in order)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_billing.application import Billing
from accord_kit.application import AccordApplication
from accord_kit.clock import FakeClock
from accord_kit.context import Principal
from accord_metrics.application import Metrics

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
P_PROVIDER = Principal("alice", "department", IT)
P_CUSTOMER = Principal("bob", "department", FINANCE)
COLLECTOR = Principal("collector", "service")
AMS = "+01:00"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def outage(sid: str, start: str, minutes: int) -> pb.Signal:
    s = at(start)
    return pb.Signal(
        signal_id=sid, service_id=EMAIL, outage=pb.Outage(start=ts(s), end=ts(s + timedelta(minutes=minutes)))
    )


def calls(prefix: str, day: str, fast: int, slow: int) -> list[pb.Signal]:
    out = []
    for i in range(fast + slow):
        entered = at(day) + timedelta(minutes=i)
        wait = 10 if i < fast else 40
        c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=wait)), talk_seconds="60")
        out.append(pb.Signal(signal_id=f"{prefix}{i}", service_id=EMAIL, call=c))
    return out


def feed(source: str, upstream: AccordApplication, downstream: AccordApplication) -> None:
    """What a consumer does: apply every new upstream event once, in order."""
    envs, _ = upstream.read_events(downstream.tracked_position(source), 5000)
    for env in envs:
        downstream.apply_upstream(source, env)


class Suite:
    def __init__(self, make_env: Callable[[str], dict[str, str]]) -> None:
        self.clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
        self.agreements = Agreements(make_env("agreements"), clock=self.clock)
        self.metrics = Metrics(make_env("metrics"), clock=self.clock)
        self.billing = Billing(make_env("billing"), clock=self.clock)

    def tick(self, when: str) -> None:
        """Move the clock and let every service do what its consumers and tasks would."""
        self.clock.set(at(when))
        for _ in range(2):
            feed("agreements", self.agreements, self.metrics)
            feed("agreements", self.agreements, self.billing)
            self.metrics.evaluate()
            feed("metrics", self.metrics, self.billing)
            self.billing.process_due()
            feed("billing", self.billing, self.agreements)

    def close(self) -> None:
        for app in (self.agreements, self.metrics, self.billing):
            app.close()
