"""The agreements application: owns the agreements service's event store and its public events."""

from __future__ import annotations

from accord_kit.application import AccordApplication
from accord_kit.clock import Clock
from accord_kit.envelope import EventCodec


def codec() -> EventCodec:
    """Domain event class → public message in protos/accord/agreements/v1 (none registered yet)."""
    return EventCodec("agreements")


class Agreements(AccordApplication):
    """The agreements system of record (see DESIGN.md). Consumes: billing's termination rights."""

    service = "agreements"

    def __init__(self, env: dict[str, str], clock: Clock | None = None) -> None:
        super().__init__(env, codec=codec(), clock=clock)
