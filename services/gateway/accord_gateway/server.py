"""The GatewayService gRPC servicer: the read model's views as typed answers.

An agreement's answer is the read model's kept serialised `AgreementStatus` (a lookup and a
visibility check per call), answered as bytes put together beside the kept bytes of the stream
positions: no message is parsed or serialised per query. Department, service and portfolio
answers are built from the kept summaries and kept serialised while the positions stand still,
shared by the callers who see the same agreements (`KeptViews`; the HTTP app keeps their JSON
alike). The deprecated Struct (`StatusResponse.status`) is filled only when the request sets
`include_struct`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord_gateway.projection import (
    Changes,
    KeptAtPositions,
    NotVisibleError,
    ReadModel,
    check_department_visible,
    department_parts,
    department_view,
    portfolio_parts,
    portfolio_view,
    seen_by,
    service_answers,
    service_view,
    visible,
    worst_ranked,
)
from accord_kit.context import current_principal

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {NotVisibleError: grpc.StatusCode.NOT_FOUND}
WATCH_HEARTBEAT_SECONDS = 15.0


def _caller() -> tuple[str, str]:
    p = current_principal()
    assert p is not None
    return p.role, p.department


def _struct(doc: dict[str, Any]) -> Struct:
    status = Struct()
    status.update(doc)
    return status


def agreement_response(
    model: ReadModel, agreement_id: str, role: str, department: str, include_struct: bool = False
) -> pb.StatusResponse:
    """The agreement's answer: its kept serialised status, if the caller may see it."""
    answer = model.answer(agreement_id)
    if answer is None or not visible(answer.summary, role, department):
        raise NotVisibleError(f"no agreement {agreement_id!r} visible to this caller")
    r = pb.StatusResponse(positions=model.positions())
    r.agreement.MergeFromString(model.typed(answer))
    if include_struct:
        r.status.CopyFrom(_struct(answer.summary))
    return r


class KeptPositions:
    """The read model's stream positions serialised as a `StatusResponse` holding them alone,
    encoded again only when they have moved (`projection.KeptAtPositions`)."""

    def __init__(self, model: ReadModel) -> None:
        self._kept: KeptAtPositions[bytes] = KeptAtPositions(model, max_kept=1)

    def serialised(self) -> bytes:
        return self._kept.get("positions", _positions_only)


def _positions_only(positions: dict[str, int]) -> bytes:
    return pb.StatusResponse(positions=positions).SerializeToString(deterministic=True)


# `StatusResponse.agreement` (field 3, length-delimited) as it precedes its bytes on the wire.
_AGREEMENT_TAG = bytes([3 << 3 | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def agreement_answer(
    model: ReadModel, agreement_id: str, role: str, department: str, positions: KeptPositions
) -> bytes:
    """The agreement's answer as a serialised `StatusResponse`: the kept positions, then the kept
    `AgreementStatus` as its `agreement` field — the bytes `agreement_response(…)` serialises to
    (deterministically, fields in number order), without building the message."""
    return _joined(positions, _kept_status(model, agreement_id, role, department))


def _kept_status(model: ReadModel, agreement_id: str, role: str, department: str) -> bytes:
    """The agreement's kept serialised `AgreementStatus`, if the caller may see it."""
    answer = model.answer(agreement_id)
    if answer is None or not visible(answer.summary, role, department):
        raise NotVisibleError(f"no agreement {agreement_id!r} visible to this caller")
    return model.typed(answer)


def _joined(positions: KeptPositions, status: bytes) -> bytes:
    return b"".join((positions.serialised(), _AGREEMENT_TAG, _varint(len(status)), status))


def _serialised(response: pb.StatusResponse | bytes) -> bytes:
    """GatewayService's response serialiser: an answer already serialised is sent as it is."""
    return response if isinstance(response, bytes) else response.SerializeToString()


def view_response(
    field: str, doc: dict[str, Any], positions: dict[str, int], include_struct: bool
) -> pb.StatusResponse:
    """A department, service or portfolio view as its typed answer (`field` of StatusResponse)."""
    r = pb.StatusResponse(positions=positions)
    json_format.ParseDict(doc, getattr(r, field), ignore_unknown_fields=True)
    if include_struct:
        r.status.CopyFrom(_struct(doc))
    return r


# Each view's field of `StatusResponse` (length-delimited) as it precedes the view's bytes.
_VIEW_TAGS = {"department": bytes([4 << 3 | 2]), "service": bytes([5 << 3 | 2]), "portfolio": bytes([6 << 3 | 2])}
# The repeated message fields the views are joined from, each tag as it precedes an entry.
_AS_PROVIDER, _AS_CUSTOMER = bytes([2 << 3 | 2]), bytes([3 << 3 | 2])  # DepartmentStatus
_SERVICE_AGREEMENTS = bytes([2 << 3 | 2])  # ServiceStatus.agreements
_WORST, _LIST = bytes([4 << 3 | 2]), bytes([5 << 3 | 2])  # Portfolio


def _entries(tag: bytes, items: Iterable[bytes]) -> bytes:
    """Serialised messages as the entries of a repeated field (`tag`)."""
    return b"".join(b"".join((tag, _varint(len(item)), item)) for item in items)


def department_bytes(model: ReadModel, department_id: str, role: str, department: str) -> bytes:
    """`department_view` as its `DepartmentStatus` serialised (deterministically), joined from
    each agreement's kept brief: the fields in number order, as the message serialises them."""
    p = department_parts(model, department_id, role, department)
    return b"".join((
        pb.DepartmentStatus(department_id=p.department_id).SerializeToString(),
        _entries(_AS_PROVIDER, (model.parts(a).brief for a in p.as_provider)),
        _entries(_AS_CUSTOMER, (model.parts(a).brief for a in p.as_customer)),
        pb.DepartmentStatus(
            health=p.health, balance=p.balance, balance_provisional=p.balance_provisional
        ).SerializeToString(deterministic=True),
    ))  # fmt: skip


def service_bytes(model: ReadModel, service_id: str, role: str, department: str) -> bytes:
    """`service_view` as its `ServiceStatus` serialised, joined as `department_bytes`."""
    rows = service_answers(model, service_id, role, department)
    head = pb.ServiceStatus(service_id=service_id).SerializeToString()
    return head + _entries(_SERVICE_AGREEMENTS, (model.parts(a).brief for a in rows))


def portfolio_bytes(model: ReadModel, role: str, department: str) -> bytes:
    """`portfolio_view` as its `Portfolio` serialised, joined as `department_bytes`: the worst
    objectives the least of each agreement's kept ones (`projection.worst_ranked`)."""
    p = portfolio_parts(model, role, department)
    worst = [model.parts(p.rows[i]).worst[j] for i, j in worst_ranked(model, p.rows)]
    return b"".join((
        pb.Portfolio(agreements=len(p.rows), by_state=p.by_state, by_health=p.by_health).SerializeToString(
            deterministic=True
        ),
        _entries(_WORST, worst),
        _entries(_LIST, (model.parts(a).brief for a in p.listed)),
    ))  # fmt: skip


class KeptViews:
    """Department, service and portfolio answers serialised, kept while the read model's
    positions stand still (`projection.KeptAtPositions`) and shared by the callers who see the
    same agreements: each as (the `StatusResponse`, its view's own bytes — what a watcher
    compares)."""

    def __init__(self, model: ReadModel) -> None:
        self.kept: KeptAtPositions[tuple[bytes, bytes]] = KeptAtPositions(model)

    def answer(self, field: str, view_id: str, seen_by: str, build: Callable[[], bytes]) -> tuple[bytes, bytes]:
        """`field`'s view `view_id` as callers who see `seen_by`'s agreements see it
        (`projection.seen_by`); `build` serialises the view when none is kept."""

        def serialised(positions: dict[str, int]) -> tuple[bytes, bytes]:
            view = build()
            return b"".join((_positions_only(positions), _VIEW_TAGS[field], _varint(len(view)), view)), view

        return self.kept.get((field, view_id, seen_by), serialised)


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, model: ReadModel) -> None:
        self.model = model
        self.positions = KeptPositions(model)
        self.views = KeptViews(model)

    # Answers bytes where the generated base says a message: `_serialised` sends them as they are.
    async def GetAgreementStatus(  # type: ignore[override]
        self, request: pb.GetAgreementStatusRequest, context: Any
    ) -> pb.StatusResponse | bytes:
        if request.include_struct:
            return agreement_response(self.model, request.agreement_id, *_caller(), include_struct=True)
        return agreement_answer(self.model, request.agreement_id, *_caller(), self.positions)

    async def GetDepartmentStatus(  # type: ignore[override]
        self, request: pb.GetDepartmentStatusRequest, context: Any
    ) -> pb.StatusResponse | bytes:
        role, department = _caller()
        did = request.department_id
        check_department_visible(did, role, department)  # before a kept answer is looked up
        # A department's view is the same for every caller who may see it.
        if request.include_struct:
            return self._with_struct("department", department_view(self.model, did, role, department))[0]
        return self.views.answer("department", did, "", partial(department_bytes, self.model, did, role, department))[0]

    async def GetServiceStatus(  # type: ignore[override]
        self, request: pb.GetServiceStatusRequest, context: Any
    ) -> pb.StatusResponse | bytes:
        role, department = _caller()
        sid = request.service_id
        if request.include_struct:
            return self._with_struct("service", service_view(self.model, sid, role, department))[0]
        build = partial(service_bytes, self.model, sid, role, department)
        return self.views.answer("service", sid, seen_by(role, department), build)[0]

    async def GetPortfolio(  # type: ignore[override]
        self, request: pb.GetPortfolioRequest, context: Any
    ) -> pb.StatusResponse | bytes:
        return self._portfolio(*_caller(), request.include_struct)[0]

    def _portfolio(self, role: str, department: str, include_struct: bool) -> tuple[pb.StatusResponse | bytes, bytes]:
        """The portfolio's answer (kept, unless the deprecated Struct is asked for) and its view's bytes."""
        if include_struct:
            return self._with_struct("portfolio", portfolio_view(self.model, role, department))
        build = partial(portfolio_bytes, self.model, role, department)
        return self.views.answer("portfolio", "", seen_by(role, department), build)

    def _with_struct(self, field: str, doc: dict[str, Any]) -> tuple[pb.StatusResponse, bytes]:
        """A view's typed answer with the deprecated Struct beside it, and its view's bytes."""
        r = view_response(field, doc, self.model.positions(), include_struct=True)
        return r, getattr(r, field).SerializeToString(deterministic=True)

    async def WatchStatus(  # type: ignore[override]
        self, request: pb.WatchStatusRequest, context: Any
    ) -> AsyncIterator[pb.StatusResponse | bytes]:
        role, department = _caller()
        aid = request.agreement_id or None
        include_struct = request.include_struct

        def current() -> tuple[pb.StatusResponse | bytes, bytes]:
            """The answer now and what a change is judged by (its content, not its positions)."""
            if aid is None:
                return self._portfolio(role, department, include_struct)
            if not include_struct:  # the kept bytes, as GetAgreementStatus answers
                status = _kept_status(self.model, aid, role, department)
                return _joined(self.positions, status), status
            r = agreement_response(self.model, aid, role, department, include_struct)
            return r, r.agreement.SerializeToString(deterministic=True)

        changes = Changes(self.model, aid)  # subscribed before the first look
        try:
            first, last = current()
            yield first
            while True:
                await changes.wait(WATCH_HEARTBEAT_SECONDS)
                r, content = current()
                if content != last:
                    last = content
                    yield r
        finally:
            changes.close()


class _Handlers:
    """Takes the method handlers the generated code registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers as the registered ones

    def add_registered_method_handlers(self, name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.services[name] = handlers


def _sending_bytes_as_they_are(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary, handler.request_deserializer, _serialised)
    assert handler.unary_stream is not None  # GatewayService has unary calls and one server stream
    return grpc.unary_stream_rpc_method_handler(handler.unary_stream, handler.request_deserializer, _serialised)


def register_gateway(model: ReadModel) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        # The generated handlers, each with a response serialiser that lets kept bytes through.
        taken = _Handlers()
        pb_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(model), taken)
        for name, handlers in taken.services.items():
            mine = {method: _sending_bytes_as_they_are(h) for method, h in handlers.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, mine),))
            server.add_registered_method_handlers(name, mine)
        return str(pb.DESCRIPTOR.services_by_name["GatewayService"].full_name)

    return register
