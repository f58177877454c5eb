"""`accord.events.v1.EventLogService`: every event-sourced service serves its log with it,
and consumers use its client to catch up on gaps the stream cannot fill."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from accord.events.v1 import events_pb2, events_pb2_grpc
from accord_kit.application import MAX_READ_LIMIT, AccordApplication
from accord_kit.errors import InvalidArgumentError
from accord_kit.inputs import position
from accord_kit.threads import finish_in_thread


class EventLogServicer(events_pb2_grpc.EventLogServiceServicer):
    def __init__(self, app: AccordApplication) -> None:
        self.app = app

    async def ReadEvents(  # noqa: N802 (gRPC method name)
        self, request: events_pb2.ReadEventsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ReadEventsResponse:
        if request.limit > MAX_READ_LIMIT:
            raise InvalidArgumentError(f"limit must be at most {MAX_READ_LIMIT}, not {request.limit}")
        after = position(request.after_position, "after_position")
        envs, head = await finish_in_thread(self.app.read_events, after, request.limit)
        return events_pb2.ReadEventsResponse(events=envs, head_position=head)


def register_event_log(app: AccordApplication) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        events_pb2_grpc.add_EventLogServiceServicer_to_server(EventLogServicer(app), server)
        return str(events_pb2.DESCRIPTOR.services_by_name["EventLogService"].full_name)

    return register


# A service's address may name several instances (`ipv4:10.0.0.1:7051,10.0.0.2:7051`, or a
# DNS name resolving to each): calls go only to an instance whose gRPC health is SERVING — the
# active one, never a standby (accord_kit.lease) — and move when another one takes over.
FAILOVER_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


def failover_options() -> list[tuple[str, Any]]:
    """gRPC channel options that send calls only to SERVING instances of the address."""
    return [("grpc.service_config", FAILOVER_SERVICE_CONFIG)]


class EventLogClient:
    """Reads a remote service's log over gRPC with a bearer token."""

    def __init__(
        self,
        address: str,
        token: Callable[[], str],
        max_message_bytes: int = 64 * 1024 * 1024,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.address = address
        self._interceptors = list(interceptors)  # e.g. tracing.client_interceptors()
        self._token = token
        self._channel: grpc.aio.Channel | None = None
        self._max = max_message_bytes

    def _stub(self) -> events_pb2_grpc.EventLogServiceStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.address,
                options=[("grpc.max_receive_message_length", self._max), *failover_options()],
                interceptors=self._interceptors or None,
            )
        return events_pb2_grpc.EventLogServiceStub(self._channel)

    async def read_events(self, after_position: int, limit: int) -> tuple[list[events_pb2.EventEnvelope], int]:
        resp = await self._stub().ReadEvents(
            events_pb2.ReadEventsRequest(after_position=after_position, limit=limit),
            metadata=(("authorization", f"Bearer {self._token()}"),),
            timeout=30,
        )
        return list(resp.events), resp.head_position

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
