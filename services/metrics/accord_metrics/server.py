"""The MetricsService gRPC servicer: protobuf in, the application's outcome out; errors
become status codes through ERROR_MAP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from accord.metrics.v1 import metrics_pb2 as pb
from accord.metrics.v1 import metrics_pb2_grpc as pb_grpc
from accord_kit.context import current_principal
from accord_kit.errors import InvalidArgumentError
from accord_kit.logging import get_logger
from accord_metrics.application import Metrics
from accord_metrics.domain import NotTheProviderError, UnknownServiceError
from accord_metrics.signals import InvalidSignalError

log = get_logger("accord.metrics")
MAX_SIGNALS_PER_MESSAGE = 10_000

ERROR_MAP: dict[type[BaseException], grpc.StatusCode] = {
    InvalidSignalError: grpc.StatusCode.INVALID_ARGUMENT,
    NotTheProviderError: grpc.StatusCode.PERMISSION_DENIED,
    UnknownServiceError: grpc.StatusCode.FAILED_PRECONDITION,
}


def _check_size(n: int, where: str) -> None:
    if n == 0:
        raise InvalidArgumentError(f"{where}: no signals")
    if n > MAX_SIGNALS_PER_MESSAGE:
        raise InvalidArgumentError(f"{where}: {n} signals; at most {MAX_SIGNALS_PER_MESSAGE} per message")


class MetricsServicer(pb_grpc.MetricsServiceServicer):
    def __init__(self, app: Metrics) -> None:
        self.app = app

    async def RecordSignals(
        self, request_iterator: AsyncIterator[pb.RecordSignalsRequest], context: Any
    ) -> pb.RecordSignalsResponse:
        caller = current_principal()
        assert caller is not None
        accepted = duplicates = messages = 0
        async for message in request_iterator:
            _check_size(len(message.signals), f"message {messages}")
            try:
                outcome = await asyncio.to_thread(self.app.record, caller, list(message.signals))
            except InvalidSignalError as e:
                raise InvalidSignalError(
                    f"message {messages} (earlier messages were stored: {accepted} accepted): {e}"
                ) from None
            accepted += outcome.accepted
            duplicates += outcome.duplicates
            messages += 1
        log.info("signals_recorded", accepted=accepted, duplicates=duplicates, messages=messages)
        return pb.RecordSignalsResponse(accepted=accepted, duplicates=duplicates, messages=messages)

    async def RecordSignalBatch(
        self, request: pb.RecordSignalBatchRequest, context: Any
    ) -> pb.RecordSignalBatchResponse:
        caller = current_principal()
        assert caller is not None
        _check_size(len(request.signals), "batch")
        outcome = await asyncio.to_thread(self.app.record, caller, list(request.signals))
        return pb.RecordSignalBatchResponse(accepted=outcome.accepted, duplicates=outcome.duplicates)


def register_metrics(app: Metrics) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        pb_grpc.add_MetricsServiceServicer_to_server(MetricsServicer(app), server)
        return str(pb.DESCRIPTOR.services_by_name["MetricsService"].full_name)

    return register
