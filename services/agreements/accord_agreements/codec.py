"""Domain events of the agreements service → their public messages (protos/accord/agreements/v1/events.proto).

Every event class the application stores is registered here: the relay refuses to
publish an event without a public message."""

from __future__ import annotations

import functools
import json
import marshal
import threading
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import events_pb2 as ev
from accord.agreements.v1 import terms_pb2
from accord_agreements.domain import Agreement, Calendar, Department, ProcessedRequest, Service
from accord_kit.envelope import EventCodec


def terms_message(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    """The terms as their proto. json_format is pure Python and slow, and the same terms are
    converted again and again (responses, the relay), so conversions are memoised by the
    terms' canonical JSON (C-fast); each caller gets its own copy. Terms seen before are
    found first by their marshal (version 2: no references between equal objects, so equal
    terms in the same key order give equal bytes wherever they came from; about half the
    cost of the canonical JSON): equal bytes are equal terms, and terms in another key order
    only miss this first lookup."""
    try:
        key: bytes | None = marshal.dumps(terms, 2)
    except ValueError:  # not marshallable (e.g. a Decimal): only the canonical JSON names it
        key = None
    cached = _by_marshal.get(key) if key is not None else None
    if cached is None:
        cached = _parsed(json.dumps(terms, sort_keys=True, separators=(",", ":")))
        if key is not None:
            with _by_marshal_lock:
                _by_marshal[key] = cached
                while len(_by_marshal) > TERMS_MESSAGES_KEPT:
                    del _by_marshal[next(iter(_by_marshal))]  # the oldest first
    out = terms_pb2.AgreementTerms()
    out.CopyFrom(cached)
    return out


TERMS_MESSAGES_KEPT = 1024
_by_marshal: dict[bytes, terms_pb2.AgreementTerms] = {}
_by_marshal_lock = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _parsed(canonical: str) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(json.loads(canonical), terms_pb2.AgreementTerms(), ignore_unknown_fields=True)


def message_dict(msg: Message) -> dict[str, Any]:
    """`json_format.MessageToDict(msg, preserving_proto_field_name=True)`, the same dict,
    several times faster for the messages terms are made of: a plan per message type (made
    once) converts strings, booleans, 32-bit integers, enums, nested, repeated and string-keyed
    map fields directly from `ListFields`. A message type with any other kind of field (64-bit
    integers, floats, bytes, enums with JSON name options, closed enums), and every
    well-known type (Timestamp …), is converted by `MessageToDict` itself."""
    plan = _dict_plan(msg.DESCRIPTOR)
    if plan is None:
        return _slow_dict(msg)
    return _planned_dict(msg, plan)


def _slow_dict(msg: Message) -> Any:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


# Field kinds of a plan: how one field's value becomes its JSON value.
_SCALAR, _BOOL, _ENUM, _MESSAGE, _WELL_KNOWN = range(5)
_FAST_SCALARS = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
# Per field, in field-number order (ListFields' order, so MessageToDict's key order):
# (name, kind, repeated, map, presence, enum names by number or a nested plan).
_FieldPlan = tuple[str, int, bool, bool, bool, Any]
_dict_plans: dict[str, tuple[_FieldPlan, ...] | None] = {}


def _dict_plan(desc: Any) -> tuple[_FieldPlan, ...] | None:
    """How to convert a message type field by field; None: by MessageToDict."""
    name = desc.full_name
    if name in _dict_plans:
        return _dict_plans[name]
    _dict_plans[name] = None  # while it is being made (a recursive type stays slow)
    if name.startswith("google.protobuf."):
        return None
    steps: list[_FieldPlan] = []
    for f in sorted(desc.fields, key=lambda f: f.number):
        is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
        field = f
        if is_map:
            if f.message_type.fields_by_name["key"].type != FieldDescriptor.TYPE_STRING:
                return None
            field = f.message_type.fields_by_name["value"]
        entry = _field_plan(field)
        if entry is None or f.is_extension:
            return None
        steps.append((f.name, entry[0], f.is_repeated and not is_map, is_map, f.has_presence, entry[1]))
    plan = tuple(steps)
    _dict_plans[name] = plan
    return plan


def _field_plan(f: Any) -> tuple[int, Any] | None:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        sub = f.message_type
        if sub.full_name.startswith("google.protobuf."):
            return _WELL_KNOWN, None
        nested = _dict_plan(sub)
        return None if nested is None else (_MESSAGE, nested)
    if f.type == FieldDescriptor.TYPE_ENUM:
        e = f.enum_type
        if e.is_closed or e.full_name == "google.protobuf.NullValue" or any(v.has_options for v in e.values):
            return None
        return _ENUM, {v.number: v.name for v in e.values}
    if f.type == FieldDescriptor.TYPE_BOOL:
        return _BOOL, None
    if f.type in _FAST_SCALARS:
        return _SCALAR, None
    return None


def _planned_dict(msg: Any, plan: tuple[_FieldPlan, ...]) -> dict[str, Any]:
    # A field is in the dict when ListFields lists it: a field with presence when set, any
    # other when it differs from its default (non-empty, non-zero, true).
    out: dict[str, Any] = {}
    for name, kind, repeated, is_map, presence, sub in plan:
        if presence:
            if not msg.HasField(name):
                continue
            value = getattr(msg, name)
        else:
            value = getattr(msg, name)
            if not value:
                continue
        if is_map:
            out[name] = {k: _value(kind, sub, value[k]) for k in value}
        elif repeated:
            out[name] = [_value(kind, sub, v) for v in value]
        else:
            out[name] = _value(kind, sub, value)
    return out


def _value(kind: int, sub: Any, value: Any) -> Any:
    if kind == _SCALAR:
        return value
    if kind == _ENUM:
        return sub.get(value, value)  # a number the enum does not name stays a number, as in MessageToDict
    if kind == _MESSAGE:
        return _planned_dict(value, sub)
    if kind == _BOOL:
        return bool(value)
    return _slow_dict(value)


def ts(value: str | datetime | None) -> Timestamp:
    """An instant (an aware datetime or its ISO-8601 text, as the events keep them) as a Timestamp."""
    if isinstance(value, datetime):
        t = Timestamp()
        t.FromDatetime(value)
        return t
    if not value:
        return Timestamp()
    seconds, nanos = _instant(value)
    return Timestamp(seconds=seconds, nanos=nanos)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=65536)
def _instant(value: str) -> tuple[int, int]:
    # Every answer lists each version's instants: parsed once (fromisoformat is C-fast,
    # protobuf's FromJsonString goes through strptime), remembered since they never change.
    d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if d.tzinfo is None:
        raise ValueError(f"instant {value!r} has no time zone offset")
    delta = d - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def codec() -> EventCodec:
    c = EventCodec("agreements")
    aid = lambda e: str(e.originator_id)  # noqa: E731
    A = Agreement  # noqa: N806
    c.register(
        A.Drafted, ev.AgreementDrafted, lambda e: ev.AgreementDrafted(agreement_id=aid(e), terms=terms_message(e.terms))
    )
    c.register(
        A.DraftRevised,
        ev.DraftRevised,
        lambda e: ev.DraftRevised(agreement_id=aid(e), terms=terms_message(e.terms)),
    )
    c.register(A.Proposed, ev.AgreementProposed, lambda e: ev.AgreementProposed(agreement_id=aid(e)))
    c.register(
        A.ProposalRejected,
        ev.ProposalRejected,
        lambda e: ev.ProposalRejected(agreement_id=aid(e), reason=e.reason),
    )
    c.register(
        A.Accepted,
        ev.AgreementAccepted,
        lambda e: ev.AgreementAccepted(
            agreement_id=aid(e), version=e.version, effective_from=ts(e.effective_from), terms=terms_message(e.terms)
        ),
    )
    c.register(
        A.AmendmentProposed,
        ev.AmendmentProposed,
        lambda e: ev.AmendmentProposed(
            agreement_id=aid(e),
            amendment_id=e.amendment_id,
            proposed_by_department_id=e.proposed_by,
            terms=terms_message(e.terms),
            effective_from=ts(e.effective_from),
            reason=e.reason,
        ),
    )
    c.register(
        A.AmendmentAccepted,
        ev.AmendmentAccepted,
        lambda e: ev.AmendmentAccepted(
            agreement_id=aid(e),
            amendment_id=e.amendment_id,
            version=e.version,
            effective_from=ts(e.effective_from),
            terms=terms_message(e.terms),
        ),
    )
    c.register(
        A.AmendmentRejected,
        ev.AmendmentRejected,
        lambda e: ev.AmendmentRejected(agreement_id=aid(e), amendment_id=e.amendment_id, reason=e.reason),
    )
    c.register(
        A.AmendmentWithdrawn,
        ev.AmendmentWithdrawn,
        lambda e: ev.AmendmentWithdrawn(agreement_id=aid(e), amendment_id=e.amendment_id, reason=e.reason),
    )
    c.register(
        A.Suspended,
        ev.AgreementSuspended,
        lambda e: ev.AgreementSuspended(agreement_id=aid(e), reason=e.reason, suspended_at=ts(getattr(e, "at", ""))),
    )
    c.register(
        A.Resumed,
        ev.AgreementResumed,
        lambda e: ev.AgreementResumed(agreement_id=aid(e), reason=e.reason, resumed_at=ts(getattr(e, "at", ""))),
    )
    c.register(
        A.TerminationScheduled,
        ev.TerminationScheduled,
        lambda e: ev.TerminationScheduled(
            agreement_id=aid(e), effective_at=ts(e.effective_at), reason=e.reason, by_department_id=e.by
        ),
    )
    c.register(
        A.Terminated,
        ev.AgreementTerminated,
        lambda e: ev.AgreementTerminated(
            agreement_id=aid(e),
            effective_at=ts(e.effective_at),
            reason=e.reason,
            by_department_id=e.by,
            termination_right_used=e.right_used,
        ),
    )
    c.register(
        A.TerminationRightGranted,
        ev.TerminationRightRecorded,
        lambda e: ev.TerminationRightRecorded(
            agreement_id=aid(e), objective_id=e.objective_id, reason=e.reason, source_event_id=e.source_event_id
        ),
    )
    c.register(
        A.Renewed,
        ev.AgreementRenewed,
        lambda e: ev.AgreementRenewed(agreement_id=aid(e), previous_end=ts(e.previous_end), new_end=ts(e.new_end)),
    )
    c.register(A.Expired, ev.AgreementExpired, lambda e: ev.AgreementExpired(agreement_id=aid(e), at=ts(e.at)))
    c.register(
        Department.Registered,
        ev.DepartmentRegistered,
        lambda e: ev.DepartmentRegistered(department_id=e.department_id, name=e.name),
    )
    c.register(
        Service.Registered,
        ev.ServiceRegistered,
        lambda e: ev.ServiceRegistered(
            service_id=e.service_id, name=e.name, provider_department_id=e.provider_department_id
        ),
    )
    c.register(
        Calendar.Defined,
        ev.CalendarDefined,
        lambda e: ev.CalendarDefined(calendar_id=e.calendar_id, version=1, definition_json=json.dumps(e.definition)),
    )
    c.register(
        Calendar.Redefined,
        ev.CalendarDefined,
        lambda e: ev.CalendarDefined(
            calendar_id=e.calendar_id, version=e.originator_version, definition_json=json.dumps(e.definition)
        ),
    )
    c.register(
        ProcessedRequest.Recorded,
        ev.RequestRecorded,
        lambda e: ev.RequestRecorded(request_key=e.key, agreement_id=e.agreement_id, revision=e.revision),
    )
    return c
