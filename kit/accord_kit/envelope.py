"""The public event envelope: turns a stored event into an `accord.events.v1.EventEnvelope`
carrying a typed protobuf payload. Only public messages from `protos/` leave a service,
never the store's internal bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Notification
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from accord.audit.v1 import audit_pb2
from accord.events.v1 import events_pb2
from accord_kit.chain import Checkpoints
from accord_kit.persistence import AccordMapper

ToProto = Callable[[Any], Message]
ToBytes = Callable[[Any], bytes]
# How `Any.Pack` names a payload's type (its default prefix and the message's full name).
_TYPE_URL_PREFIX = "type.googleapis.com/"


class UnknownEventError(LookupError):
    """An event class has no public message registered: it cannot be published."""


@dataclass(frozen=True)
class EventType:
    name: str  # the stable public name, e.g. "CounterIncremented"
    message: type[Message]
    to_proto: ToProto
    full_name: str = ""  # the message's full protobuf name (set from `message` when left out)
    # The message's serialised bytes made straight from the event, when the service gives a way
    # (`EventCodec.register`'s `to_bytes`): what the envelope carries, without the message built.
    to_bytes: ToBytes | None = None

    def __post_init__(self) -> None:
        if not self.full_name:
            object.__setattr__(self, "full_name", str(self.message.DESCRIPTOR.full_name))


class EventCodec:
    """Registry of domain event class → public protobuf message, for one service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._by_class: dict[type, EventType] = {}

    def register(
        self, event_class: type, message: type[Message], to_proto: ToProto, to_bytes: ToBytes | None = None
    ) -> None:
        """`to_proto` makes an event's public message; `to_bytes`, when given, its serialised
        bytes without making the message (for a large event: the same bytes as
        `to_proto(event).SerializeToString()`, which the service's tests hold it to)."""
        name = message.DESCRIPTOR.name
        self._by_class[event_class] = EventType(name=name, message=message, to_proto=to_proto, to_bytes=to_bytes)

    def event_type(self, event_class: type) -> EventType:
        try:
            return self._by_class[event_class]
        except KeyError:
            raise UnknownEventError(
                f"{self.service}: no public event message registered for {event_class.__qualname__}"
            ) from None

    def is_registered(self, event_class: type) -> bool:
        return event_class in self._by_class

    def message_type(self, full_name: str) -> type[Message] | None:
        """The registered public message with this full protobuf name, if any."""
        for etype in self._by_class.values():
            if etype.full_name == full_name:
                return etype.message
        return None

    @property
    def registered(self) -> dict[type, EventType]:
        return dict(self._by_class)

    def subject(self, event_class: type) -> str:
        return f"accord.{self.service}.v1.{self.event_type(event_class).name}"


def event_id(service: str, aggregate_id: object, version: int) -> str:
    return f"{service}:{aggregate_id}:{version}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_ts(field: Timestamp, value: Any) -> None:
    """`field` set to `value` as `Timestamp.FromDatetime` sets it (a naive datetime is UTC),
    or present and zero when `value` is not a datetime; without its per-call overhead."""
    if isinstance(value, datetime):
        delta = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
        field.seconds = delta.days * 86400 + delta.seconds
        field.nanos = delta.microseconds * 1000
    else:
        field.SetInParent()


def to_envelope(
    service: str,
    notification: Notification,
    previous_position: int,
    mapper: AccordMapper,
    codec: EventCodec,
) -> tuple[events_pb2.EventEnvelope, str]:
    """The envelope of one stored event and the NATS subject it is published on."""
    env, subject, _ = to_envelope_with_meta(service, notification, previous_position, mapper, codec)
    return env, subject


def to_envelope_with_meta(
    service: str,
    notification: Notification,
    previous_position: int,
    mapper: AccordMapper,
    codec: EventCodec,
) -> tuple[events_pb2.EventEnvelope, str, dict[str, Any]]:
    """`to_envelope`, and the metadata the store recorded with the event (e.g. its traceparent)."""
    event, meta = mapper.to_domain_event_with_meta(notification)
    etype = codec.event_type(type(event))
    aggregate_id = str(notification.originator_id)
    version = notification.originator_version
    env = events_pb2.EventEnvelope(
        event_id=f"{service}:{aggregate_id}:{version}",
        source_service=service,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        position=notification.id,
        previous_position=previous_position,
        type=etype.full_name,
        correlation_id=meta.get("correlation_id") or "",
        causation_id=meta.get("causation_id") or "",
    )
    occurred = getattr(event, "timestamp", None)
    _set_ts(env.occurred_at, occurred)
    recorded = meta.get("recorded_at")
    _set_ts(env.recorded_at, recorded if isinstance(recorded, datetime) else occurred)
    actor = meta.get("actor")
    if actor:
        env.actor.CopyFrom(events_pb2.Actor(**actor))
    if etype.to_bytes is not None:  # what `Pack` of the message sets, the bytes made directly
        env.payload.type_url = _TYPE_URL_PREFIX + etype.full_name
        env.payload.value = etype.to_bytes(event)
    else:
        env.payload.Pack(etype.to_proto(event))
    return env, f"accord.{service}.v1.{etype.name}", meta


def unpack(envelope: events_pb2.EventEnvelope, message: type[Message]) -> Any:
    """The typed payload of an envelope (raises ValueError if it is another type)."""
    msg = message()
    if not envelope.payload.Unpack(msg):
        raise ValueError(f"envelope {envelope.event_id} carries {envelope.type}, not {message.DESCRIPTOR.full_name}")
    return msg


def register_chain_events(codec: EventCodec) -> None:
    """Register the log's own checkpoint events (accord_kit.chain.Checkpoints) with their
    public messages, unless the service did already: every chained store holds them, so
    the relay publishes them and ReadEvents serves them like any other event."""
    if not codec.is_registered(Checkpoints.Opened):
        codec.register(
            Checkpoints.Opened,
            audit_pb2.ChainCheckpointsOpened,
            lambda e: audit_pb2.ChainCheckpointsOpened(service=e.service),
        )
    if not codec.is_registered(Checkpoints.Sealed):
        codec.register(
            Checkpoints.Sealed,
            audit_pb2.ChainCheckpointSealed,
            lambda e: audit_pb2.ChainCheckpointSealed(
                service=e.service,
                position=e.position,
                chain_hash=bytes.fromhex(e.chain_hash),
                sealed_at=e.sealed_at,
                key_id=e.key_id,
                signature=bytes.fromhex(e.signature),
            ),
        )


def payload_of(envelope: events_pb2.EventEnvelope, codec: EventCodec | None = None) -> Message | None:
    """The envelope's payload as its own message type (looked up in `codec`, else among
    every message the process has imported), or None when that type is unknown here."""
    cls = codec.message_type(envelope.type) if codec is not None else None
    if cls is None:
        try:
            cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(envelope.type))
        except KeyError:
            return None
    msg = cls()
    return msg if envelope.payload.Unpack(msg) else None


def _own_agreement_id(msg: Message) -> str:
    field = msg.DESCRIPTOR.fields_by_name.get("agreement_id")
    if field is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
        return ""
    return str(msg.agreement_id)  # type: ignore[attr-defined]


def agreement_ids_in(message: Message) -> set[str]:
    """The agreements a public event message names: its own string `agreement_id`, and
    that of each top-level message field, singular (e.g. `evaluation`, `old`, `new`) or
    repeated. Deeper fields are not searched."""
    ids = {_own_agreement_id(message)}
    for field in message.DESCRIPTOR.fields:
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            ids.update(_own_agreement_id(item) for item in getattr(message, field.name))
        elif message.HasField(field.name):
            ids.add(_own_agreement_id(getattr(message, field.name)))
    ids.discard("")
    return ids
