"""The public event envelope: turns a stored event into an `accord.events.v1.EventEnvelope`
carrying a typed protobuf payload. Only public messages from `protos/` leave a service,
never the store's internal bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification
from google.protobuf.message import Message

from accord.events.v1 import events_pb2
from accord_kit.persistence import AccordMapper

ToProto = Callable[[Any], Message]


class UnknownEventError(LookupError):
    """An event class has no public message registered: it cannot be published."""


@dataclass(frozen=True)
class EventType:
    name: str  # the stable public name, e.g. "CounterIncremented"
    message: type[Message]
    to_proto: ToProto

    @property
    def full_name(self) -> str:
        return str(self.message.DESCRIPTOR.full_name)


class EventCodec:
    """Registry of domain event class → public protobuf message, for one service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._by_class: dict[type, EventType] = {}

    def register(self, event_class: type, message: type[Message], to_proto: ToProto) -> None:
        name = message.DESCRIPTOR.name
        self._by_class[event_class] = EventType(name=name, message=message, to_proto=to_proto)

    def event_type(self, event_class: type) -> EventType:
        try:
            return self._by_class[event_class]
        except KeyError:
            raise UnknownEventError(
                f"{self.service}: no public event message registered for {event_class.__qualname__}"
            ) from None

    @property
    def registered(self) -> dict[type, EventType]:
        return dict(self._by_class)

    def subject(self, event_class: type) -> str:
        return f"accord.{self.service}.v1.{self.event_type(event_class).name}"


def event_id(service: str, aggregate_id: object, version: int) -> str:
    return f"{service}:{aggregate_id}:{version}"


def _ts(value: Any) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value)
    return ts


def to_envelope(
    service: str,
    notification: Notification,
    previous_position: int,
    mapper: AccordMapper,
    codec: EventCodec,
) -> tuple[events_pb2.EventEnvelope, str]:
    """The envelope of one stored event and the NATS subject it is published on."""
    event, meta = mapper.to_domain_event_with_meta(notification)
    etype = codec.event_type(type(event))
    env = events_pb2.EventEnvelope(
        event_id=event_id(service, notification.originator_id, notification.originator_version),
        source_service=service,
        aggregate_id=str(notification.originator_id),
        aggregate_version=notification.originator_version,
        position=notification.id,
        previous_position=previous_position,
        type=etype.full_name,
        correlation_id=meta.get("correlation_id") or "",
        causation_id=meta.get("causation_id") or "",
    )
    env.occurred_at.CopyFrom(_ts(getattr(event, "timestamp", None)))
    recorded = meta.get("recorded_at")
    env.recorded_at.CopyFrom(_ts(recorded if isinstance(recorded, datetime) else getattr(event, "timestamp", None)))
    actor = meta.get("actor")
    if actor:
        env.actor.CopyFrom(events_pb2.Actor(**actor))
    env.payload.Pack(etype.to_proto(event))
    return env, f"accord.{service}.v1.{etype.name}"


def unpack(envelope: events_pb2.EventEnvelope, message: type[Message]) -> Any:
    """The typed payload of an envelope (raises ValueError if it is another type)."""
    msg = message()
    if not envelope.payload.Unpack(msg):
        raise ValueError(f"envelope {envelope.event_id} carries {envelope.type}, not {message.DESCRIPTOR.full_name}")
    return msg
