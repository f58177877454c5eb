"""NATS connection and JetStream stream set-up shared by the relay and consumers."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from accord_kit.logging import get_logger

log = get_logger("accord.nats")

HDR_POSITION = "Accord-Position"
HDR_PREVIOUS = "Accord-Previous-Position"
HDR_TYPE = "Accord-Type"
HDR_MSG_ID = "Nats-Msg-Id"
HDR_EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"


async def connect(url: str, name: str, **kwargs: Any) -> NATS:
    """A connection that keeps reconnecting for as long as the process lives."""

    async def on_error(e: Exception) -> None:
        log.warning("nats_error", error=str(e) or type(e).__name__)

    client: list[NATS] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close or drain, not an outage
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")

    opts: dict[str, Any] = dict(
        servers=[s.strip() for s in url.split(",") if s.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=2,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    opts.update(kwargs)
    nc = await nats.connect(**opts)
    client.append(nc)
    return nc


# How long a look at JetStream's state at start (a stream's head, a durable) waits for its answer:
# `look_timeout`.
LOOK_TIMEOUT = 1.0
SHORT_LOOKS = 10
LOOK_TIMEOUT_MAX = 5.0  # JetStream's default request timeout


def look_timeout(failed: int) -> float:
    """How long the next look waits for its answer after `failed` looks in a row got none or
    failed: 1 s for the first ten, then twice as long each time, up to JetStream's default (5 s).
    A request sent on a connection whose server then died, or to a cluster still electing a leader
    (its JetStream API's, a stream's), gets no answer at all, however long it waits: asked again
    each second, the answer comes about a second after the cluster answers again, not up to five
    (a standby that takes over serves that much sooner; looks lengthening 1, 2, 4 s were measured
    to lose the look sent just before the cluster came back). A cluster so slow that it answers
    only after a second gets longer waits from the eleventh look on."""
    longer = failed - SHORT_LOOKS
    return LOOK_TIMEOUT if longer < 0 else min(LOOK_TIMEOUT * 2 ** (longer + 1), LOOK_TIMEOUT_MAX)


class Looks:
    """One kind of look at JetStream's state (a relay's at its stream's head, a consumer's stall
    check…): how many in a row got no answer or failed (`failed`, set back to 0 by one that was
    answered), and so how long the next one waits for its answer (`timeout`, `look_timeout`)."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = 0

    @property
    def timeout(self) -> float:
        return look_timeout(self.failed)

    def jetstream(self, nc: NATS) -> JetStreamContext:
        """A JetStream context whose requests wait `timeout` for their answers."""
        return nc.jetstream(timeout=self.timeout)


def stream_config(stream: str, service: str, replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        name=stream,
        subjects=[f"accord.{service}.v1.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=120.0,
        allow_direct=True,
        description=f"Accord {service} events (published by its relay, in log order)",
    )


async def ensure_stream(
    nc: NATS, stream: str, service: str, replicas: int = 1, timeout: float | None = None
) -> api.StreamInfo:
    """Create the stream, or bring an existing one's config up to date. `timeout`: of each request
    (JetStream's default, 5 s, when None)."""
    js = nc.jetstream() if timeout is None else nc.jetstream(timeout=timeout)
    config = stream_config(stream, service, replicas)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        log.info("stream_created", stream=stream)
        return await js.add_stream(config)
    if info.config.storage != api.StorageType.FILE:
        raise RuntimeError(
            f"stream {stream} uses {info.config.storage} storage: events would not survive a restart; "
            "delete it so the relay recreates it with file storage"
        )
    if list(info.config.subjects or []) != list(config.subjects or []) or info.config.num_replicas != replicas:
        return await js.update_stream(config)
    return info
