"""The metrics application: owns the metrics service's event store and its public events."""

from __future__ import annotations

from accord_kit.application import AccordApplication
from accord_kit.clock import Clock
from accord_kit.envelope import EventCodec


def codec() -> EventCodec:
    """Domain event class → public message in protos/accord/metrics/v1 (none registered yet)."""
    return EventCodec("metrics")


class Metrics(AccordApplication):
    """The metrics system of record (see DESIGN.md). Consumes: agreements."""

    service = "metrics"

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
