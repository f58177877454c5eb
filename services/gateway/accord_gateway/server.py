"""The GatewayService gRPC servicer: the read model's views as Struct documents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct

from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord_gateway.projection import (
    Changes,
    NotVisibleError,
    ReadModel,
    agreement_view,
    department_view,
    portfolio_view,
    service_view,
)
from accord_kit.context import current_principal

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {NotVisibleError: grpc.StatusCode.NOT_FOUND}
WATCH_HEARTBEAT_SECONDS = 15.0


def _caller() -> tuple[str, str]:
    p = current_principal()
    assert p is not None
    return p.role, p.department


def response(doc: dict[str, Any], positions: dict[str, int]) -> pb.StatusResponse:
    status = Struct()
    status.update(doc)
    return pb.StatusResponse(status=status, positions=positions)


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, model: ReadModel) -> None:
        self.model = model

    async def GetAgreementStatus(self, request: pb.GetAgreementStatusRequest, context: Any) -> pb.StatusResponse:
        return response(agreement_view(self.model, request.agreement_id, *_caller()), self.model.positions())

    async def GetDepartmentStatus(self, request: pb.GetDepartmentStatusRequest, context: Any) -> pb.StatusResponse:
        return response(department_view(self.model, request.department_id, *_caller()), self.model.positions())

    async def GetServiceStatus(self, request: pb.GetServiceStatusRequest, context: Any) -> pb.StatusResponse:
        return response(service_view(self.model, request.service_id, *_caller()), self.model.positions())

    async def GetPortfolio(self, request: pb.GetPortfolioRequest, context: Any) -> pb.StatusResponse:
        return response(portfolio_view(self.model, *_caller()), self.model.positions())

    async def WatchStatus(self, request: pb.WatchStatusRequest, context: Any) -> AsyncIterator[pb.StatusResponse]:
        role, department = _caller()
        aid = request.agreement_id or None

        def current() -> dict[str, Any]:
            if aid is not None:
                return agreement_view(self.model, aid, role, department)
            return portfolio_view(self.model, role, department)

        changes = Changes(self.model, aid)  # subscribed before the first look
        try:
            last = current()
            yield response(last, self.model.positions())
            while True:
                await changes.wait(WATCH_HEARTBEAT_SECONDS)
                doc = current()
                if doc != last:
                    last = doc
                    yield response(doc, self.model.positions())
        finally:
            changes.close()


def register_gateway(model: ReadModel) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(model), server)
        return str(pb.DESCRIPTOR.services_by_name["GatewayService"].full_name)

    return register
