"""The metrics domain (so far): recorded signal batches and the services whose signals
may be recorded (learned from the agreements stream)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


class MetricsError(Exception):
    """Base of the metrics domain's errors."""


class NotTheProviderError(MetricsError):
    """The caller may not record signals of this service."""


class UnknownServiceError(MetricsError):
    """No registered service has this id."""


class SignalBatch(Aggregate):
    """Signals of one service recorded together: one event, whatever the number of signals.

    `batch` is the public `accord.metrics.v1.SignalBatch` in its wire format, base64: the
    raw record every evaluation is recomputed from, stored exactly as accepted."""

    class Recorded(Aggregate.Created):
        service_id: str
        batch: str
        count: int

    @event(Recorded)
    def __init__(self, service_id: str, batch: str, count: int) -> None:
        self.service_id = service_id
        self.batch = batch
        self.count = count


class KnownService(Aggregate):
    """A registered service and its provider department."""

    class Known(Aggregate.Created):
        service_id: str
        provider_department_id: str

    @staticmethod
    def create_id(service_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord:metrics:service:{service_id}")

    @event(Known)
    def __init__(self, service_id: str, provider_department_id: str) -> None:
        self.service_id = service_id
        self.provider_department_id = provider_department_id
