"""The AgreementsService gRPC servicer: protobuf ⇄ domain types and nothing else. Rules live
in the domain and application; errors become status codes through ERROR_MAP."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import grpc

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import agreements_pb2_grpc as pb_grpc
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord_agreements.application import AgreementAt, Agreements, AlreadyRegisteredError, Summary
from accord_agreements.codec import message_dict, terms_message, ts
from accord_agreements.domain import (
    Actor,
    Agreement,
    ConflictError,
    InForce,
    InvalidRequestError,
    NotAPartyError,
    NotFoundError,
    TransitionError,
    UnknownReferenceError,
)
from accord_agreements.terms import TermsInvalidError
from accord_kit.context import current_principal
from accord_kit.errors import InvalidArgumentError
from accord_kit.inputs import enum_name, instant, required_instant
from accord_kit.threads import finish_in_thread

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    TermsInvalidError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    NotAPartyError: grpc.StatusCode.PERMISSION_DENIED,
    TransitionError: grpc.StatusCode.FAILED_PRECONDITION,
    UnknownReferenceError: grpc.StatusCode.FAILED_PRECONDITION,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    ConflictError: grpc.StatusCode.ABORTED,
    AlreadyRegisteredError: grpc.StatusCode.ALREADY_EXISTS,
}

STATE = {
    name: pb.AgreementState.Value(f"AGREEMENT_STATE_{name}")
    for name in ("DRAFT", "PROPOSED", "ACTIVE", "SUSPENDED", "TERMINATED", "EXPIRED")
}


def actor() -> Actor:
    p = current_principal()
    if p is None:  # the interceptor always sets one; this is a programming error
        raise RuntimeError("no authenticated caller")
    return Actor(subject=p.subject, role=p.role, department=p.department)


def terms_dict(msg: terms_pb2.AgreementTerms, field: str = "terms") -> dict[str, Any]:
    if not msg.ByteSize():
        raise InvalidArgumentError(f"{field} is required")
    return message_dict(msg)


def agreement_message(
    app: Agreements, agg: Agreement, *, version: dict[str, Any] | None = None, effective: bool = False
) -> pb.Agreement:
    terms = app.version_terms(agg, version) if version else agg.terms
    msg = pb.Agreement(
        agreement_id=str(agg.id),
        state=STATE[agg.state],
        revision=agg.version,
        version=agg.current_version,
        terms=terms_message(terms),
        terms_version=version["version"] if version else agg.terms_version,
        last_rejection_reason=agg.last_rejection,
        suspension_reason=agg.suspension_reason,
    )
    if version:
        msg.terms_effective_from.CopyFrom(ts(version["effective_from"]))
    elif agg.versions:
        msg.terms_effective_from.CopyFrom(ts(agg.versions[-1]["effective_from"]))
    if effective:
        msg.effective_terms.CopyFrom(terms_message(app.effective_terms(agg, terms)))
    if agg.versions:
        msg.MergeFromString(_versions_part(agg))
    if agg.pending:
        p = agg.pending
        msg.pending_amendment.CopyFrom(
            pb.PendingAmendment(
                amendment_id=p["amendment_id"],
                proposed_by_department_id=p["proposed_by"],
                effective_from=ts(p["effective_from"]),
                reason=p["reason"],
                terms=terms_message(p["terms"]),
            )
        )
    if agg.termination:
        t = agg.termination
        msg.termination.CopyFrom(
            pb.TerminationInfo(
                effective_at=ts(t["effective_at"]),
                reason=t["reason"],
                by_department_id=t["by"],
                scheduled=agg.state not in ("TERMINATED",),
                termination_right_used=bool(t.get("right_used")),
            )
        )
    for r in agg.termination_rights:
        msg.termination_rights.append(pb.TerminationRight(**r))
    return msg


_VERSIONS_PARTS: OrderedDict[tuple[UUID, int], bytes] = OrderedDict()
_VERSIONS_PARTS_LOCK = threading.Lock()


def _versions_part(agg: Agreement) -> bytes:
    """The answer's list of version summaries, serialised once per agreement and count of
    versions (entries are only ever appended, so the pair names the content) and merged
    into each answer in C, so an answer's cost does not grow with the agreement's history.
    A repeated field's encoding is its entries' encodings one after another, so the part
    for N versions is the part for N - 1 (when kept) followed by entry N alone."""
    n = len(agg.versions)
    key = (agg.id, n)
    with _VERSIONS_PARTS_LOCK:
        part = _VERSIONS_PARTS.get(key)
        if part is not None:
            _VERSIONS_PARTS.move_to_end(key)
            return part
        before = _VERSIONS_PARTS.get((agg.id, n - 1))
    entries = agg.versions if before is None else agg.versions[n - 1 :]
    part = (before or b"") + pb.Agreement(
        versions=[
            pb.AgreementVersion(
                version=v["version"],
                effective_from=ts(v["effective_from"]),
                accepted_at=ts(v["accepted_at"]),
                amendment_id=v["amendment_id"],
            )
            for v in entries
        ]
    ).SerializeToString()
    with _VERSIONS_PARTS_LOCK:
        _VERSIONS_PARTS[key] = part
        _VERSIONS_PARTS.pop((agg.id, n - 1), None)  # superseded
        while len(_VERSIONS_PARTS) > 4096:
            _VERSIONS_PARTS.popitem(last=False)
    return part


def term_change_message(c: dict[str, Any]) -> pb.TermChange:
    def js(v: Any) -> str:
        return "" if v is None else json.dumps(v, sort_keys=True)

    return pb.TermChange(path=c["path"], kind=c["kind"], old_json=js(c["old"]), new_json=js(c["new"]))


def in_force_message(e: InForce) -> pb.AgreementInForce:
    msg = pb.AgreementInForce(
        state=STATE.get(e.state, pb.AGREEMENT_STATE_UNSPECIFIED), in_force=e.version is not None, revision=e.revision
    )
    if e.version is not None:
        msg.version = e.version["version"]
        msg.effective_from.CopyFrom(ts(e.version["effective_from"]))
        msg.terms.CopyFrom(terms_message(e.version["terms"]))
    if e.ended_at:
        msg.ended_at.CopyFrom(ts(e.ended_at))
    return msg


def agreement_at_message(app: Agreements, r: AgreementAt) -> pb.GetAgreementAtResponse:
    msg = pb.GetAgreementAtResponse(
        known=r.known is not None,
        as_effective=in_force_message(r.effective),
        in_force_as_known=in_force_message(r.in_force_as_known),
        differences=[
            pb.KnownEffectiveDifference(field=d.field, as_known=d.as_known, as_effective=d.as_effective)
            for d in r.differences
        ],
        term_changes=[term_change_message(c) for c in r.term_changes],
    )
    if r.known is not None:
        msg.as_known.CopyFrom(agreement_message(app, r.known))
    return msg


def summary_message(s: Summary) -> pb.AgreementSummary:
    return pb.AgreementSummary(
        agreement_id=s.agreement_id,
        title=s.title,
        state=STATE[s.state],
        kind=terms_pb2.AgreementKind.Value(s.kind or "AGREEMENT_KIND_UNSPECIFIED"),
        level=terms_pb2.ScopeLevel.Value(s.level or "SCOPE_LEVEL_UNSPECIFIED"),
        provider_department_id=s.provider,
        customer_department_id=s.customer,
        service_ids=s.service_ids,
        version=s.version,
        revision=s.revision,
    )


def calendar_message(cal: Any) -> pb.Calendar:
    d = cal.definition
    return pb.Calendar(
        calendar_id=cal.calendar_id,
        version=cal.calendar_version,
        time_zone=d.get("time_zone", ""),
        hours=[pb.DayHours(**h) for h in d.get("hours") or []],
        holidays=d.get("holidays") or [],
    )


class AgreementsServicer(pb_grpc.AgreementsServiceServicer):
    def __init__(self, app: Agreements) -> None:
        self.app = app

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await finish_in_thread(fn, *args, **kwargs)

    # -- reference data -------------------------------------------------------------------------
    async def RegisterDepartment(
        self, request: pb.RegisterDepartmentRequest, context: Any
    ) -> pb.RegisterDepartmentResponse:
        d = await self._run(self.app.register_department, request.department_id, request.name)
        return pb.RegisterDepartmentResponse(department=pb.Department(department_id=d.department_id, name=d.name))

    async def RegisterService(self, request: pb.RegisterServiceRequest, context: Any) -> pb.RegisterServiceResponse:
        s = await self._run(self.app.register_service, request.service_id, request.name, request.provider_department_id)
        return pb.RegisterServiceResponse(
            service=pb.ServiceRef(service_id=s.service_id, name=s.name, provider_department_id=s.provider_department_id)
        )

    async def DefineCalendar(self, request: pb.DefineCalendarRequest, context: Any) -> pb.DefineCalendarResponse:
        c = request.calendar
        definition = {
            "time_zone": c.time_zone,
            "hours": [{"weekday": h.weekday, "opens": h.opens, "closes": h.closes} for h in c.hours],
            "holidays": list(c.holidays),
        }
        cal = await self._run(self.app.define_calendar, c.calendar_id, definition)
        return pb.DefineCalendarResponse(calendar=calendar_message(cal))

    async def ListDepartments(self, request: pb.ListDepartmentsRequest, context: Any) -> pb.ListDepartmentsResponse:
        from accord_agreements.domain import Department

        rows = await self._run(self.app.list_reference, Department)
        return pb.ListDepartmentsResponse(
            departments=[pb.Department(department_id=d.department_id, name=d.name) for d in rows]
        )

    async def ListServices(self, request: pb.ListServicesRequest, context: Any) -> pb.ListServicesResponse:
        from accord_agreements.domain import Service

        rows = await self._run(self.app.list_reference, Service)
        return pb.ListServicesResponse(
            services=[
                pb.ServiceRef(service_id=s.service_id, name=s.name, provider_department_id=s.provider_department_id)
                for s in rows
            ]
        )

    async def GetCalendar(self, request: pb.GetCalendarRequest, context: Any) -> pb.GetCalendarResponse:
        cal = await self._run(self.app.get_calendar, request.calendar_id)
        return pb.GetCalendarResponse(calendar=calendar_message(cal))

    # -- lifecycle ---------------------------------------------------------------------------------
    async def DraftAgreement(self, request: pb.DraftAgreementRequest, context: Any) -> pb.DraftAgreementResponse:
        agg = await self._run(self.app.draft, actor(), terms_dict(request.terms), request.request_id)
        return pb.DraftAgreementResponse(agreement=agreement_message(self.app, agg))

    async def ReviseDraft(self, request: pb.ReviseDraftRequest, context: Any) -> pb.ReviseDraftResponse:
        agg = await self._run(
            self.app.revise,
            actor(),
            request.agreement_id,
            terms_dict(request.terms),
            request.expected_revision,
            request.request_id,
        )
        return pb.ReviseDraftResponse(agreement=agreement_message(self.app, agg))

    async def ProposeAgreement(self, request: pb.ProposeAgreementRequest, context: Any) -> pb.ProposeAgreementResponse:
        agg = await self._run(
            self.app.propose, actor(), request.agreement_id, request.expected_revision, request.request_id
        )
        return pb.ProposeAgreementResponse(agreement=agreement_message(self.app, agg))

    async def AcceptAgreement(self, request: pb.AcceptAgreementRequest, context: Any) -> pb.AcceptAgreementResponse:
        agg = await self._run(
            self.app.accept, actor(), request.agreement_id, request.expected_revision, request.request_id
        )
        return pb.AcceptAgreementResponse(agreement=agreement_message(self.app, agg))

    async def RejectProposal(self, request: pb.RejectProposalRequest, context: Any) -> pb.RejectProposalResponse:
        agg = await self._run(
            self.app.reject_proposal,
            actor(),
            request.agreement_id,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.RejectProposalResponse(agreement=agreement_message(self.app, agg))

    async def ProposeAmendment(self, request: pb.ProposeAmendmentRequest, context: Any) -> pb.ProposeAmendmentResponse:
        effective = required_instant(request.effective_from, "effective_from")
        agg, amendment_id = await self._run(
            self.app.propose_amendment,
            actor(),
            request.agreement_id,
            terms_dict(request.terms),
            effective,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.ProposeAmendmentResponse(agreement=agreement_message(self.app, agg), amendment_id=amendment_id)

    async def AcceptAmendment(self, request: pb.AcceptAmendmentRequest, context: Any) -> pb.AcceptAmendmentResponse:
        agg = await self._run(
            self.app.accept_amendment,
            actor(),
            request.agreement_id,
            request.amendment_id,
            request.expected_revision,
            request.request_id,
        )
        return pb.AcceptAmendmentResponse(agreement=agreement_message(self.app, agg))

    async def RejectAmendment(self, request: pb.RejectAmendmentRequest, context: Any) -> pb.RejectAmendmentResponse:
        agg = await self._run(
            self.app.reject_amendment,
            actor(),
            request.agreement_id,
            request.amendment_id,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.RejectAmendmentResponse(agreement=agreement_message(self.app, agg))

    async def WithdrawAmendment(
        self, request: pb.WithdrawAmendmentRequest, context: Any
    ) -> pb.WithdrawAmendmentResponse:
        agg = await self._run(
            self.app.withdraw_amendment,
            actor(),
            request.agreement_id,
            request.amendment_id,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.WithdrawAmendmentResponse(agreement=agreement_message(self.app, agg))

    async def SuspendAgreement(self, request: pb.SuspendAgreementRequest, context: Any) -> pb.SuspendAgreementResponse:
        agg = await self._run(
            self.app.suspend,
            actor(),
            request.agreement_id,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.SuspendAgreementResponse(agreement=agreement_message(self.app, agg))

    async def ResumeAgreement(self, request: pb.ResumeAgreementRequest, context: Any) -> pb.ResumeAgreementResponse:
        agg = await self._run(
            self.app.resume,
            actor(),
            request.agreement_id,
            request.reason,
            request.expected_revision,
            request.request_id,
        )
        return pb.ResumeAgreementResponse(agreement=agreement_message(self.app, agg))

    async def TerminateAgreement(
        self, request: pb.TerminateAgreementRequest, context: Any
    ) -> pb.TerminateAgreementResponse:
        effective = instant(request.effective_at, "effective_at", required=False)
        agg = await self._run(
            self.app.terminate,
            actor(),
            request.agreement_id,
            request.reason,
            effective,
            request.immediate,
            request.expected_revision,
            request.request_id,
        )
        return pb.TerminateAgreementResponse(agreement=agreement_message(self.app, agg))

    # -- queries ---------------------------------------------------------------------------------------
    async def GetAgreement(self, request: pb.GetAgreementRequest, context: Any) -> pb.GetAgreementResponse:
        who = actor()
        selector = request.WhichOneof("selector")
        in_force_at = required_instant(request.in_force_at, "in_force_at") if selector == "in_force_at" else None

        def get() -> pb.Agreement:
            agg = self.app.get_agreement(who, request.agreement_id)
            version = None
            if selector == "version":
                version = agg.get_version(request.version)
            elif in_force_at is not None:
                version = agg.version_in_force_at(in_force_at)
            return agreement_message(self.app, agg, version=version, effective=request.effective_terms)

        return pb.GetAgreementResponse(agreement=await self._run(get))

    async def ListAgreements(self, request: pb.ListAgreementsRequest, context: Any) -> pb.ListAgreementsResponse:
        role = enum_name(pb.PartyRole, request.role, "role").removeprefix("PARTY_ROLE_")
        state = enum_name(pb.AgreementState, request.state, "state").removeprefix("AGREEMENT_STATE_")
        kind = enum_name(terms_pb2.AgreementKind, request.kind, "kind")
        level = enum_name(terms_pb2.ScopeLevel, request.level, "level")
        rows, token = await self._run(
            self.app.list_agreements,
            actor(),
            party=request.party_department_id,
            role=role,
            service_id=request.service_id,
            state=state,
            kind=kind,
            level=level,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAgreementsResponse(agreements=[summary_message(s) for s in rows], next_page_token=token)

    async def DiffVersions(self, request: pb.DiffVersionsRequest, context: Any) -> pb.DiffVersionsResponse:
        changes = await self._run(
            self.app.diff_versions, actor(), request.agreement_id, request.from_version, request.to_version
        )
        return pb.DiffVersionsResponse(changes=[term_change_message(c) for c in changes])

    async def GetAgreementAt(self, request: pb.GetAgreementAtRequest, context: Any) -> pb.GetAgreementAtResponse:
        at = required_instant(request.at, "at")
        result = await self._run(self.app.get_agreement_at, actor(), request.agreement_id, at)
        return agreement_at_message(self.app, result)

    async def StreamHistory(
        self, request: pb.StreamHistoryRequest, context: Any
    ) -> AsyncIterator[events_pb2.EventEnvelope]:
        for env in await self._run(self.app.history, actor(), request.agreement_id):
            yield env


def register_agreements(app: Agreements) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_AgreementsServiceServicer_to_server(AgreementsServicer(app), server)
        return str(pb.DESCRIPTOR.services_by_name["AgreementsService"].full_name)

    return register
