"""A small event-sourced service used only by the foundation's tests: a Counter aggregate
(published as `accord.testing.v1.CounterIncremented`) and a Tally consumer application that
records one `TallyRecorded` event per upstream counter event it applies."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import grpc
from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate, event

from accord.events.v1 import events_pb2
from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.application import AccordApplication
from accord_kit.auth import EVENT_LOG_POLICY, INFRA_POLICY, Policy, TokenVerifier
from accord_kit.clock import Clock
from accord_kit.envelope import EventCodec, unpack
from accord_kit.errors import InvalidArgumentError, NotFoundError
from accord_kit.eventlog import register_event_log
from accord_kit.persistence import prepare_store
from accord_kit.runtime import ServiceParts
from accord_kit.settings import ServiceSettings
from accord_kit.topics import stored_as


@stored_as("accord_kit.testing.counter:Counter")
class Counter(Aggregate):
    class Created(Aggregate.Created):
        TOPIC = "accord_kit.testing.counter:Counter.Created"
        name: str

    class Incremented(Aggregate.Event):
        TOPIC = "accord_kit.testing.counter:Counter.Incremented"
        amount: int

    @event(Created)
    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord-test-counter:{name}")

    @event(Incremented)
    def increment(self, amount: int) -> None:
        self.value += amount


@stored_as("accord_kit.testing.counter:Tally")
class Tally(Aggregate):
    """What the consumer keeps: a running total of every counter event it applied."""

    class Started(Aggregate.Created):
        TOPIC = "accord_kit.testing.counter:Tally.Started"

    class Recorded(Aggregate.Event):
        TOPIC = "accord_kit.testing.counter:Tally.Recorded"
        source_event_id: str
        amount: int

    @event(Started)
    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "accord-test-tally")

    @event(Recorded)
    def record(self, source_event_id: str, amount: int) -> None:
        self.total += amount
        self.count += 1


def counter_codec() -> EventCodec:
    codec = EventCodec("counter")
    codec.register(Counter.Created, counter_pb2.CounterCreated, lambda e: counter_pb2.CounterCreated(name=e.name))
    codec.register(
        Counter.Incremented,
        counter_pb2.CounterIncremented,
        lambda e: counter_pb2.CounterIncremented(counter_id=str(e.originator_id), amount=e.amount),
    )
    return codec


def tally_codec() -> EventCodec:
    codec = EventCodec("tally")
    codec.register(Tally.Started, counter_pb2.TallyRecorded, lambda e: counter_pb2.TallyRecorded())
    codec.register(
        Tally.Recorded,
        counter_pb2.TallyRecorded,
        lambda e: counter_pb2.TallyRecorded(source_event_id=e.source_event_id, amount=e.amount),
    )
    return codec


class Counters(AccordApplication):
    service = "counter"

    def __init__(self, env: dict[str, str], clock: Clock | None = None, service: str | None = None) -> None:
        super().__init__(env, codec=counter_codec(), clock=clock, service=service)

    def increment(self, name: str, amount: int) -> Counter:
        if not name:
            raise InvalidArgumentError("counter_id must not be empty")
        if amount == 0:
            raise InvalidArgumentError("amount must not be zero")
        try:
            counter: Counter = self.repository.get(Counter.create_id(name))
        except AggregateNotFoundError:
            counter = Counter(name)
        counter.increment(amount)
        self.save(counter)
        return counter

    def increment_many(self, name: str, amounts: list[int]) -> None:
        """Several increments saved as one transaction (test data set-up)."""
        try:
            counter: Counter = self.repository.get(Counter.create_id(name))
        except AggregateNotFoundError:
            counter = Counter(name)
        for a in amounts:
            counter.increment(a)
        self.save(counter)

    def get_counter(self, name: str) -> Counter:
        try:
            return self.repository.get(Counter.create_id(name))
        except AggregateNotFoundError:
            raise NotFoundError(f"counter {name!r} does not exist") from None


class Tallies(AccordApplication):
    """Consumes the counter stream; fails on purpose for positions in `fail_positions`."""

    service = "tally"

    def __init__(self, env: dict[str, str], clock: Clock | None = None, service: str | None = None) -> None:
        super().__init__(env, codec=tally_codec(), clock=clock, service=service)
        self.fail_positions: dict[int, int] = {}  # position → failures still to inject

    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        left = self.fail_positions.get(envelope.position, 0)
        if left > 0:
            self.fail_positions[envelope.position] = left - 1
            raise RuntimeError(f"injected failure at position {envelope.position}")
        if envelope.type != counter_pb2.CounterIncremented.DESCRIPTOR.full_name:
            return
        msg = unpack(envelope, counter_pb2.CounterIncremented)
        try:
            tally: Tally = self.repository.get(Tally.create_id())
        except AggregateNotFoundError:
            tally = Tally()
        tally.record(envelope.event_id, msg.amount)
        processing.collect_events(tally)

    def get_tally(self) -> Tally | None:
        try:
            return self.repository.get(Tally.create_id())
        except AggregateNotFoundError:
            return None


COUNTER_POLICY = Policy.of(
    INFRA_POLICY,
    EVENT_LOG_POLICY,
    {
        "/accord.testing.v1.CounterService/Increment": {"department", "admin"},
        "/accord.testing.v1.CounterService/GetCounter": {"department", "auditor", "admin"},
    },
)


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    def __init__(self, app: Counters) -> None:
        self.app = app

    async def Increment(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000)
        counter = await asyncio.to_thread(self.app.increment, request.counter_id, request.amount)
        return counter_pb2.IncrementResponse(version=counter.version, value=counter.value)

    async def GetCounter(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        counter = await asyncio.to_thread(self.app.get_counter, request.counter_id)
        return counter_pb2.GetCounterResponse(version=counter.version, value=counter.value)


def register_counter(app: Counters) -> Any:
    def register(server: grpc.aio.Server) -> str:
        counter_pb2_grpc.add_CounterServiceServicer_to_server(CounterServicer(app), server)
        return str(counter_pb2.DESCRIPTOR.services_by_name["CounterService"].full_name)

    return register


def build_counter_service(
    settings: ServiceSettings,
    *,
    verifier: TokenVerifier | None = None,
    clock: Clock | None = None,
    app_class: type[Counters] = Counters,
) -> ServiceParts:
    """The counter test service as a bootstrap would compose it (for `running_service`):
    its store from the settings, named after the settings' service (a test's own stream)."""
    prepare_store(settings)
    app = app_class(settings.event_store_env(), clock=clock, service=settings.service)
    return ServiceParts(
        settings=settings,
        policy=COUNTER_POLICY,
        register=[register_counter(app), register_event_log(app)],
        app=app,
        verifier=verifier,
    )
