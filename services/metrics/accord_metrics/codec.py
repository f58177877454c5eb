"""Domain events of the metrics service → their public messages (protos/accord/metrics/v1/events.proto)."""

from __future__ import annotations

import base64

from accord.metrics.v1 import events_pb2 as ev
from accord.metrics.v1 import signals_pb2
from accord_kit.envelope import EventCodec
from accord_metrics.domain import KnownService, SignalBatch


def batch_message(encoded: str) -> signals_pb2.SignalBatch:
    return signals_pb2.SignalBatch.FromString(base64.b64decode(encoded))


def codec() -> EventCodec:
    c = EventCodec("metrics")
    c.register(
        SignalBatch.Recorded,
        ev.SignalsRecorded,
        lambda e: ev.SignalsRecorded(service_id=e.service_id, batch=batch_message(e.batch)),
    )
    c.register(
        KnownService.Known,
        ev.ServiceKnown,
        lambda e: ev.ServiceKnown(service_id=e.service_id, provider_department_id=e.provider_department_id),
    )
    return c
