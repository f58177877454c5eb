"""Domain events of the agreements service → their public messages (protos/accord/agreements/v1/events.proto).

Every event class the application stores is registered here: the relay refuses to
publish an event without a public message."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import events_pb2 as ev
from accord.agreements.v1 import terms_pb2
from accord_agreements.domain import Agreement, Calendar, Department, ProcessedRequest, Service
from accord_kit.envelope import EventCodec


def terms_message(terms: dict[str, Any]) -> terms_pb2.AgreementTerms:
    """The terms as their proto. json_format is pure Python and slow, and the same terms are
    converted again and again (responses, the relay), so conversions are memoised by the
    terms' canonical JSON (C-fast); each caller gets its own copy."""
    cached = _parsed(json.dumps(terms, sort_keys=True, separators=(",", ":")))
    out = terms_pb2.AgreementTerms()
    out.CopyFrom(cached)
    return out


@functools.lru_cache(maxsize=1024)
def _parsed(canonical: str) -> terms_pb2.AgreementTerms:
    return json_format.ParseDict(json.loads(canonical), terms_pb2.AgreementTerms(), ignore_unknown_fields=True)


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
