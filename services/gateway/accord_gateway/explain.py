"""What explains a breach: the outage and maintenance signals of a window, read from metrics
(`MetricsService.ListWindowSignals`) when a breach timeline is asked for. The read model
holds no signals (they are metrics' record and far too many); this one read goes to the
owning service, with the gateway's service token, and a metrics that does not answer leaves
the timeline without its signals and says why instead of failing it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

import grpc

from accord.metrics.v1 import metrics_pb2 as pb
from accord.metrics.v1 import metrics_pb2_grpc as pb_grpc
from accord.metrics.v1 import signals_pb2

SECONDS = 5.0  # a breach timeline waits this long for metrics


@dataclass(frozen=True)
class WindowSignals:
    signals: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    error: str = ""  # why metrics could not say; empty when it did


ReadWindowSignals = Callable[[str, str, str], Awaitable[WindowSignals]]


def _instant(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat())


def signal_view(s: signals_pb2.Signal) -> dict[str, Any]:
    kind = str(s.WhichOneof("kind"))
    body: Any = getattr(s, kind)
    ended = body.HasField("end")
    minutes = ""
    if ended:
        length = Decimal(body.end.ToNanoseconds() - body.start.ToNanoseconds()) / Decimal(60_000_000_000)
        minutes = f"{length.quantize(Decimal('0.01')).normalize():f}"
    return {
        "signal_id": s.signal_id,
        "service_id": s.service_id,
        "kind": kind,
        "start": _instant(body.start),
        "end": _instant(body.end) if ended else "",
        "minutes": minutes,
        "cause": body.cause if kind == "outage" else body.reason,
        "planned": bool(body.planned) if kind == "outage" else True,
        "source": s.provenance.source,
        "reference": s.provenance.reference,
    }


class MetricsWindowSignals:
    """Reads a window's signals from metrics over one channel, opened on first use."""

    def __init__(self, address: str, token: Callable[[], str], timeout: float = SECONDS) -> None:
        self.address = address
        self.token = token
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def __call__(self, agreement_id: str, objective_id: str, window_start: str) -> WindowSignals:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        stub = pb_grpc.MetricsServiceStub(self._channel)
        request = pb.ListWindowSignalsRequest(
            agreement_id=agreement_id, objective_id=objective_id, window_start=window_start
        )
        try:
            token = self.token()
            r = await stub.ListWindowSignals(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as e:
            return WindowSignals(error=f"metrics did not answer: {e.code().name}: {e.details()}")
        except OSError as e:
            return WindowSignals(error=f"metrics could not be asked: {e}")
        return WindowSignals([signal_view(s) for s in r.signals], r.truncated)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
