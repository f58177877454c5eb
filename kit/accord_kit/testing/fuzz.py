"""Fuzzing a running service over gRPC: hypothesis strategies that build request messages of
any type from its protobuf descriptor (edge values on purpose: instants outside 0001–9999,
nanos out of range, the largest and smallest integers, unknown enum numbers, NaN and garbage
in decimal strings, undecodable bytes), and a caller that sends them as raw bytes over a
real channel and reports the status code. Bounded and reproducible: the tests using it fix
`max_examples` and derandomize."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor

STRINGS = [
    "",
    " ",
    "NaN",
    "nan",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e999",
    "-1e999",
    "1E+1000000",
    "-0",
    "0",
    "0.1",
    "99.9",
    "-5",
    "100",
    "12abc",
    "abc",
    "%",
    "|",
    "a|b",
    "\x00",
    "ünïcode",
    "x" * 300,
    "2026-01-01",
    "2026-01-01T00:00:00+00:00",
    "2025-12-31T23:00:00+00:00",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59+00:00",
    "10000-01-01",
    "not-a-date",
    "Europe/Amsterdam",
    "UTC",
    "Mars/Olympus_Mons",
    "../../etc/passwd",
    "EUR",
    "XXX",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
]
# Seconds since the epoch at and beyond the edges a datetime can hold (0001-01-01 .. 9999-12-31).
SECONDS = [
    0, 1, -1, 1767225600, 1780000000, -62135596800, -62135596801, 253402300799, 253402300800,
    2**62, -(2**62), 2**63 - 1, -(2**63),
]  # fmt: skip
NANOS = [0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]
INT32 = [0, 1, -1, 2, 999, 2**31 - 1, -(2**31)]
INT64 = [0, 1, -1, 2, 10_000, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
UINT32 = [0, 1, 2, 999, 2**32 - 1]
UINT64 = [0, 1, 2, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
# Bytes no request message decodes from: a truncated varint, a truncated length, a bad wire type,
# a field number 0, invalid UTF-8 in a string field 1 (most requests' first field is a string).
UNDECODABLE = [b"\x08", b"\x0a\x05ab", b"\x0f", b"\x00\x00", b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff\xff"]

_INT_RANGES = {
    F.TYPE_INT32: (INT32, -(2**31), 2**31 - 1),
    F.TYPE_SINT32: (INT32, -(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (INT32, -(2**31), 2**31 - 1),
    F.TYPE_INT64: (INT64, -(2**63), 2**63 - 1),
    F.TYPE_SINT64: (INT64, -(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (INT64, -(2**63), 2**63 - 1),
    F.TYPE_UINT32: (UINT32, 0, 2**32 - 1),
    F.TYPE_FIXED32: (UINT32, 0, 2**32 - 1),
    F.TYPE_UINT64: (UINT64, 0, 2**64 - 1),
    F.TYPE_FIXED64: (UINT64, 0, 2**64 - 1),
}

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@dataclass
class Generator:
    """Strategies for messages. `strings` adds known identifiers (so calls reach past the
    lookups); `bases` are valid messages by full type name that get mutated instead of
    being built from nothing half of the time."""

    strings: Sequence[str] = ()
    bases: Mapping[str, Sequence[Message]] = field(default_factory=dict)
    max_depth: int = 4

    def string(self) -> st.SearchStrategy[str]:
        return st.one_of(st.sampled_from([*self.strings, *STRINGS]), _text)

    def scalar(self, f: Any) -> st.SearchStrategy[object]:
        t = f.type
        if t in _INT_RANGES:
            edges, lo, hi = _INT_RANGES[t]
            if f.containing_type.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                edges = SECONDS if f.name == "seconds" else NANOS
            return st.one_of(st.sampled_from(edges), st.integers(lo, hi))
        if t == F.TYPE_BOOL:
            return st.booleans()
        if t == F.TYPE_DOUBLE:
            return st.floats()
        if t == F.TYPE_FLOAT:
            return st.floats(width=32)
        if t == F.TYPE_STRING:
            return self.string()
        if t == F.TYPE_BYTES:
            return st.binary(max_size=24)
        if t == F.TYPE_ENUM:
            known = [v.number for v in f.enum_type.values]
            return st.sampled_from([*known, *known, 999, -1, 2**31 - 1])
        raise AssertionError(f"unhandled field type {t} of {f.full_name}")

    def message(self, desc: Any, depth: int = 0) -> st.SearchStrategy[Message]:
        @st.composite
        def build(draw: st.DrawFn) -> Message:
            bases: Sequence[Message] = self.bases.get(desc.full_name) or ()
            mutate: bool = draw(st.booleans())
            if bases and mutate:
                msg = GetMessageClass(desc)()
                msg.CopyFrom(draw(st.sampled_from(list(bases))))
                self._mutate(draw, msg, depth)
                return msg
            msg = GetMessageClass(desc)()
            for f in desc.fields:
                if draw(st.integers(0, 2)) == 0:
                    continue
                self._set(draw, msg, f, depth)
            return msg

        return build()

    def _mutate(self, draw: st.DrawFn, msg: Message, depth: int) -> None:
        fields: list[Any] = list(msg.DESCRIPTOR.fields)
        for f in draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda x: x.number)) if fields else []:
            if f.type == F.TYPE_MESSAGE and not _is_map(f) and depth < self.max_depth and draw(st.booleans()):
                if f.is_repeated:
                    items = getattr(msg, f.name)
                    if len(items):
                        self._mutate(draw, items[draw(st.integers(0, len(items) - 1))], depth + 1)
                        continue
                elif msg.HasField(f.name):
                    self._mutate(draw, getattr(msg, f.name), depth + 1)
                    continue
            msg.ClearField(f.name)
            self._set(draw, msg, f, depth)

    def _set(self, draw: st.DrawFn, msg: Message, f: Any, depth: int) -> None:
        if f.type == F.TYPE_MESSAGE and depth >= self.max_depth:
            return
        if _is_map(f):
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            for _ in range(draw(st.integers(0, 2))):
                key = draw(self.scalar(key_f))
                if value_f.type == F.TYPE_MESSAGE:
                    target[key].CopyFrom(draw(self.message(value_f.message_type, depth + 1)))
                else:
                    target[key] = draw(self.scalar(value_f))
            return
        if f.is_repeated:
            items = getattr(msg, f.name)
            for _ in range(draw(st.integers(0, 2))):
                if f.type == F.TYPE_MESSAGE:
                    items.add().CopyFrom(draw(self.message(f.message_type, depth + 1)))
                else:
                    items.append(draw(self.scalar(f)))
            return
        if f.type == F.TYPE_MESSAGE:
            getattr(msg, f.name).CopyFrom(draw(self.message(f.message_type, depth + 1)))
        else:
            setattr(msg, f.name, draw(self.scalar(f)))

    def request(self, method: MethodDescriptor) -> st.SearchStrategy[bytes]:
        """The bytes of a request: mostly a built message, sometimes bytes that do not decode."""
        message = self.message(method.input_type)
        raw = st.one_of(st.sampled_from(UNDECODABLE), st.binary(max_size=24))

        @st.composite
        def request(draw: st.DrawFn) -> bytes:
            if draw(st.integers(0, 9)) == 0:  # one in ten
                return draw(raw)
            return draw(message).SerializeToString()

        return request()


def _is_map(f: Any) -> bool:
    return bool(f.type == F.TYPE_MESSAGE and f.message_type.GetOptions().map_entry)


def methods_of(service_names: Sequence[str]) -> Iterator[tuple[str, MethodDescriptor]]:
    """(full path, descriptor) of every method of the named services."""
    pool = descriptor_pool.Default()
    for name in service_names:
        service: ServiceDescriptor = pool.FindServiceByName(name)
        for m in service.methods:
            yield f"/{service.full_name}/{m.name}", m


def _same(b: bytes) -> bytes:
    return b


def call(
    channel: grpc.Channel,
    path: str,
    method: MethodDescriptor,
    payload: bytes,
    metadata: Sequence[tuple[str, str]],
    *,
    timeout: float = 10.0,
    max_responses: int = 50,
) -> tuple[grpc.StatusCode, str]:
    """Send `payload` (the request's bytes) to `path` on a blocking channel; the status and details.
    A server stream is read up to `max_responses` answers, then cancelled (status OK)."""
    kw: dict[str, Callable[[bytes], bytes]] = {"request_serializer": _same, "response_deserializer": _same}
    try:
        if method.client_streaming and method.server_streaming:
            stream = channel.stream_stream(path, **kw)(iter([payload]), metadata=metadata, timeout=timeout)
            _drain(stream, max_responses)
        elif method.client_streaming:
            channel.stream_unary(path, **kw)(iter([payload, payload]), metadata=metadata, timeout=timeout)
        elif method.server_streaming:
            stream = channel.unary_stream(path, **kw)(payload, metadata=metadata, timeout=timeout)
            _drain(stream, max_responses)
        else:
            channel.unary_unary(path, **kw)(payload, metadata=metadata, timeout=timeout)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def _drain(stream: Any, max_responses: int) -> None:
    for n, _ in enumerate(stream):
        if n + 1 >= max_responses:
            stream.cancel()
            return
