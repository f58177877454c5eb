"""Reading protobuf requests into typed values, for every servicer: instants within the years
0001–9999 with valid nanos, enum numbers the descriptor defines, decimals as strings (no NaN,
no Infinity, no garbage), log positions a signed 64-bit column holds, IANA time zones, and
RFC 3339 instants in strings. Each conversion raises `InputError` naming the field; the gRPC
interceptor turns it into INVALID_ARGUMENT before anything is stored.

The interceptor also checks every request as a whole with `check_message` (every Timestamp,
Duration, enum and unsigned 64-bit field at any depth) and reads request bytes through
`tolerant_deserializer`, so bytes that do not decode become INVALID_ARGUMENT as well instead
of the library's UNKNOWN."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from accord_kit.errors import InvalidArgumentError

# The instants a datetime holds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999
# google.protobuf.Duration's own bounds: ±10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000
# Positions and counts are stored in signed 64-bit columns.
MAX_POSITION = 2**63 - 1

T = TypeVar("T")


class InputError(InvalidArgumentError):
    """A request field the service cannot read: INVALID_ARGUMENT, with the field named."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


# -- single values ----------------------------------------------------------------------------------


def check_timestamp(msg: Timestamp, field: str) -> None:
    if not MIN_SECONDS <= msg.seconds <= MAX_SECONDS:
        raise InputError(field, f"seconds {msg.seconds} is outside the years 0001–9999")
    if not 0 <= msg.nanos <= MAX_NANOS:
        raise InputError(field, f"nanos {msg.nanos} must be within 0..{MAX_NANOS}")


def instant(msg: Timestamp, field: str, *, required: bool = True) -> datetime | None:
    """A Timestamp as an aware UTC datetime; an unset (all-zero) one is None, or an error if required."""
    if not msg.seconds and not msg.nanos:
        if required:
            raise InputError(field, "is required")
        return None
    check_timestamp(msg, field)
    return msg.ToDatetime(tzinfo=UTC)


def required_instant(msg: Timestamp, field: str) -> datetime:
    out = instant(msg, field, required=True)
    assert out is not None
    return out


def check_duration(msg: Duration, field: str) -> None:
    if not -MAX_DURATION_SECONDS <= msg.seconds <= MAX_DURATION_SECONDS:
        raise InputError(field, f"seconds {msg.seconds} is outside ±{MAX_DURATION_SECONDS}")
    if not -MAX_NANOS <= msg.nanos <= MAX_NANOS or (msg.seconds and msg.nanos and (msg.seconds < 0) != (msg.nanos < 0)):
        raise InputError(field, f"nanos {msg.nanos} must be within ±{MAX_NANOS} with the sign of seconds")


def enum_name(enum: EnumDescriptor | Any, number: int, field: str, *, unspecified: str = "") -> str:
    """The name of an enum value, checked against the descriptor; 0 (unspecified) gives
    `unspecified`. `enum` is an EnumDescriptor or a generated enum wrapper."""
    descriptor: EnumDescriptor = getattr(enum, "DESCRIPTOR", enum)
    value = descriptor.values_by_number.get(number)
    if value is None:
        raise InputError(field, f"{number} is not a value of {descriptor.name}")
    return unspecified if number == 0 else str(value.name)


def decimal(text: str, field: str, *, required: bool = False) -> Decimal | None:
    """A decimal written as a string: finite, nothing else in it; empty is None (or an error if required)."""
    s = text.strip()
    if not s:
        if required:
            raise InputError(field, "is required")
        return None
    try:
        value = Decimal(s)
    except (InvalidOperation, ValueError):
        raise InputError(field, f"{text[:40]!r} is not a decimal number") from None
    if not value.is_finite():
        raise InputError(field, f"{text[:40]!r} is not a finite number")
    return value


def position(number: int, field: str) -> int:
    """A log position (or count) that a signed 64-bit column holds."""
    if not 0 <= number <= MAX_POSITION:
        raise InputError(field, f"{number} is outside 0..{MAX_POSITION}")
    return number


def time_zone(name: str, field: str) -> ZoneInfo:
    """An IANA time zone by name."""
    if not name:
        raise InputError(field, "is required (an IANA time zone such as Europe/Amsterdam)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InputError(field, f"{name[:60]!r} is not a known IANA time zone") from None


def iso_instant(text: str, field: str, *, required: bool = False) -> datetime | None:
    """An RFC 3339 instant in a string (with an offset), within the years 0001–9999."""
    if not text:
        if required:
            raise InputError(field, "is required")
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(field, f"{text[:40]!r} is not an RFC 3339 instant") from None
    if value.tzinfo is None:
        raise InputError(field, f"{text[:40]!r} has no UTC offset")
    return value


# -- whole messages ---------------------------------------------------------------------------------


def check_message(msg: Message, prefix: str = "") -> None:
    """Every Timestamp and Duration within range, every enum number defined, every unsigned
    64-bit number within a signed 64-bit column: at any depth, naming the first bad field.
    Only the fields that can hold such values are visited (a plan per message type, made
    once), so a batch of 10,000 signals is checked in a few milliseconds."""
    try:
        _check(msg, msg.DESCRIPTOR)
    except _BadValueError as bad:
        path = prefix
        for part in reversed(bad.parts):
            path = f"{path}{part}" if part.startswith("[") or not path else f"{path}.{part}"
        raise InputError(path, bad.problem) from None


def flat_plan(desc: Any) -> tuple[tuple[str, str, Any], ...] | None:
    """What `check_message` checks in a message of this type when every such field is singular
    (a Timestamp, an enum, an unsigned 64-bit number: no message, oneof, list or map to walk),
    as (field, what it holds, enum descriptor) for `check_flat`; None for any other type."""
    steps = _plan(desc)
    if steps is None:
        return None
    out = []
    for field, kind, repeated, is_map, sub in steps:
        if repeated or is_map or kind not in ("timestamp", "enum", "u64"):
            return None
        out.append((field, kind, sub))
    return tuple(out)


def check_flat(msg: Message, plan: tuple[tuple[str, str, Any], ...], prefix: str = "") -> None:
    """`check_message(msg, prefix)` for a type whose plan is flat (`flat_plan`) in one loop — for
    messages checked by the thousand (a batch's signals). A value out of range is reported by
    `check_message` itself: the same field named, the same words."""
    for field, kind, sub in plan:
        value = getattr(msg, field)  # an unset Timestamp reads as 0 s: within range
        if kind == "timestamp":
            if MIN_SECONDS <= value.seconds <= MAX_SECONDS and 0 <= value.nanos <= MAX_NANOS:
                continue
        elif kind == "enum":
            if value in sub.values_by_number:
                continue
        elif value <= MAX_POSITION:
            continue
        check_message(msg, prefix)


class _BadValueError(Exception):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.parts: list[str] = []


_TIMESTAMP, _DURATION = "google.protobuf.Timestamp", "google.protobuf.Duration"
_UNSIGNED_64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
# (field name, what it holds, repeated, map, the enum or message descriptor); None while being made.
# What it holds: "enum", "u64", "timestamp", "message" (Durations and any other message), or
# "oneof": the members of one oneof whose steps follow each other (field name: the oneof's,
# descriptor: member name → (what it holds, descriptor)) — the member set, if any, is checked
# (one WhichOneof instead of a HasField per member).
_Step = tuple[str, str, bool, bool, Any]
_plans: dict[str, tuple[_Step, ...] | None] = {}


def _plan(desc: Any) -> tuple[_Step, ...] | None:
    """The steps that check a message type; None for one still being planned (a recursive
    type such as Struct), which callers count as needing a check."""
    name = desc.full_name
    if name in _plans:
        return _plans[name]
    _plans[name] = None
    steps: list[_Step] = []
    owner: list[Any] = []  # the oneof of each step (None: a field of no oneof)
    for f in desc.fields:
        target, is_map = f, False
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            target, is_map = f.message_type.fields_by_name["value"], True
        if target.type == FieldDescriptor.TYPE_ENUM:
            steps.append((f.name, "enum", f.is_repeated, is_map, target.enum_type))
        elif target.type in _UNSIGNED_64:
            steps.append((f.name, "u64", f.is_repeated, is_map, None))
        elif target.type == FieldDescriptor.TYPE_MESSAGE:
            sub = target.message_type
            if sub.full_name == _TIMESTAMP:
                steps.append((f.name, "timestamp", f.is_repeated, is_map, sub))
            elif sub.full_name == _DURATION or _plan(sub) != ():
                steps.append((f.name, "message", f.is_repeated, is_map, sub))
            else:
                continue
        else:
            continue
        owner.append(f.containing_oneof)
    _plans[name] = tuple(_grouped(steps, owner))
    return _plans[name]


def _grouped(steps: list[_Step], owner: list[Any]) -> list[_Step]:
    """The steps with each run of one oneof's members (singular messages: at most one is set)
    made one "oneof" step, in its place: the same fields checked in the same order."""
    out: list[_Step] = []
    i = 0
    while i < len(steps):
        oneof = owner[i]
        j = i
        while j < len(steps) and oneof is not None and owner[j] is oneof and steps[j][1] in ("message", "timestamp"):
            j += 1
        if j - i < 2:
            out.append(steps[i])
            i += 1
            continue
        out.append((oneof.name, "oneof", False, False, {st[0]: (st[1], st[4]) for st in steps[i:j]}))
        i = j
    return out


# The plans made, by descriptor (what `_check` looks up: no name to read per message).
_steps: dict[Any, tuple[_Step, ...]] = {}


def _check(msg: Any, desc: Any) -> None:
    steps = _steps.get(desc)
    if steps is None:
        name = desc.full_name
        if name == _TIMESTAMP:
            _timestamp(msg)
            return
        if name == _DURATION:
            try:
                check_duration(msg, "")
            except InputError as e:
                raise _BadValueError(e.problem) from None
            return
        planned = _plan(desc)
        if planned is not None:  # None: still being planned (a recursive type), checked as having no steps
            _steps[desc] = planned
        steps = planned or ()
    for field, kind, repeated, is_map, sub in steps:
        if not (repeated or is_map):
            if kind == "oneof":
                which = msg.WhichOneof(field)
                if which is not None:
                    member_kind, member = sub[which]
                    _one(getattr(msg, which), member_kind, member, which)
            elif kind == "timestamp":
                if msg.HasField(field):
                    ts = getattr(msg, field)
                    if not (MIN_SECONDS <= ts.seconds <= MAX_SECONDS and 0 <= ts.nanos <= MAX_NANOS):
                        _one(ts, kind, sub, field)  # raises, naming the field
            elif kind == "message":
                if msg.HasField(field):
                    _one(getattr(msg, field), kind, sub, field)
            else:
                _one(getattr(msg, field), kind, sub, field)
            continue
        values = getattr(msg, field)
        if not values:
            continue
        if is_map:
            for key in values:
                try:
                    _one(values[key], kind, sub, "")
                except _BadValueError as bad:
                    bad.parts.append(f"{field}[{key!r}]")
                    raise
        else:
            for i, value in enumerate(values):
                try:
                    _one(value, kind, sub, "")
                except _BadValueError as bad:
                    bad.parts.append(f"{field}[{i}]")
                    raise


def _timestamp(msg: Any) -> None:
    if not MIN_SECONDS <= msg.seconds <= MAX_SECONDS:
        raise _BadValueError(f"seconds {msg.seconds} is outside the years 0001–9999")
    if not 0 <= msg.nanos <= MAX_NANOS:
        raise _BadValueError(f"nanos {msg.nanos} must be within 0..{MAX_NANOS}")


def _one(value: Any, kind: str, sub: Any, field: str) -> None:
    try:
        if kind == "timestamp":
            _timestamp(value)
        elif kind == "message":
            _check(value, sub)
        elif kind == "enum":
            if value not in sub.values_by_number:
                raise _BadValueError(f"{value} is not a value of {sub.name}")
        elif not 0 <= value <= MAX_POSITION:
            raise _BadValueError(f"{value} is outside 0..{MAX_POSITION}")
    except _BadValueError as bad:
        if field:
            bad.parts.append(field)
        raise


class Undecodable:
    """What `tolerant_deserializer` hands on for bytes that are not a request message."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error

    def raise_error(self) -> None:
        raise InputError("", f"the request is not a valid {self.type_name} message: {self.error}")


def tolerant_deserializer(deserialize: Callable[[bytes], T] | None) -> Callable[[bytes], T | Undecodable] | None:
    """Wraps a handler's request deserializer so that bytes that do not decode give an
    `Undecodable` (raised as INVALID_ARGUMENT by the interceptor) instead of an exception
    inside the gRPC library, which would answer UNKNOWN."""
    if deserialize is None:
        return None

    def read(data: bytes) -> T | Undecodable:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, UnicodeDecodeError) as e:
            owner = getattr(deserialize, "__self__", None)
            type_name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")
            return Undecodable(type_name, e)

    return read


def decoded_only(request: Any) -> Any:
    """The request as decoded, for a method that checks its fields itself
    (`accord_kit.grpc_server.checks_its_own_requests`): only bytes that did not decode are refused."""
    if isinstance(request, Undecodable):
        request.raise_error()
    return request


def checked(request: Any) -> Any:
    """The request as the servicer may read it: decoded, and every field within range."""
    if isinstance(request, Undecodable):
        request.raise_error()
    if isinstance(request, Message):
        check_message(request)
    return request
