"""The relay: tails a service's notification log and publishes every event, in order and
exactly once, to the service's JetStream stream.

* It never publishes from inside `save()`: it reads what was committed.
* Each message carries a dedupe id (`Nats-Msg-Id` = event id), the previous position
  published to the stream (`Accord-Previous-Position`), and the fencing header
  `Nats-Expected-Last-Msg-Id`, so a second or zombie relay cannot interleave.
* Its position is the head of the stream, checked against the store on start and after
  every error: a head that the store does not have makes it refuse to run; a stream
  behind the store (lost tail, recreated stream) is re-published from its head.
* Publishes are pipelined (many in flight on one connection, which keeps their order).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import NotFoundError

from accord_kit import tracing
from accord_kit.application import AccordApplication
from accord_kit.envelope import event_id, to_envelope_with_meta
from accord_kit.logging import get_logger
from accord_kit.nats_util import (
    HDR_EXPECTED_LAST_MSG_ID,
    HDR_MSG_ID,
    HDR_POSITION,
    HDR_PREVIOUS,
    HDR_TYPE,
    ensure_stream,
)

log = get_logger("accord.relay")


@dataclass(frozen=True)
class Prepared:
    """One event encoded as the message the relay publishes."""

    position: int
    msg_id: str
    subject: str
    data: bytes
    headers: dict[str, str]
    span: Any = None  # the publish span while tracing is on (ended once acknowledged)


class RelayMismatchError(RuntimeError):
    """The stream's head is not an event of this store: wrong database or wrong stream."""


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    resyncs: int = 0
    head_position: int = 0


class Relay:
    def __init__(
        self,
        app: AccordApplication,
        nc: NATS,
        *,
        stream: str,
        replicas: int = 1,
        poll_seconds: float = 1.0,
        batch_size: int = 1000,
        ack_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.nc = nc
        self.js = nc.jetstream(publish_async_max_pending=batch_size * 2)
        self.stream = stream
        self.replicas = replicas
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._head = 0  # last position known to be in the stream
        self._last_msg_id: str | None = None
        self._last_seq = 0  # stream sequence of that message
        self.caught_up = asyncio.Event()

    @property
    def head(self) -> int:
        """The log position of the last event known to be on the stream."""
        return self._head

    # -- wake-ups from local saves (called from whatever thread saved) -----------------
    def _on_save(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped. Raises RelayMismatchError if the stream is not ours."""
        self._loop = asyncio.get_running_loop()
        self.app.add_save_listener(self._on_save)
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    await self._sync_head()
                    await self._publish_loop()
                    backoff = 0.1
                except RelayMismatchError:
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # NATS down, stream deleted, fenced by another relay …
                    self.stats.resyncs += 1
                    log.warning("relay_resync", stream=self.stream, error=str(e) or type(e).__name__)
                    self.caught_up.clear()
                    try:
                        await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                    except TimeoutError:
                        pass
                    backoff = min(backoff * 2, 2.0)
        finally:
            self.app.remove_save_listener(self._on_save)

    async def _sync_head(self) -> None:
        """Set our position to the stream's head, after checking it against the store."""
        info = await ensure_stream(self.nc, self.stream, self.app.service, self.replicas)
        if info.state.messages == 0 or info.state.last_seq == 0:
            self._head, self._last_msg_id, self._last_seq = 0, None, info.state.last_seq
            log.info("relay_head", stream=self.stream, position=0, store_head=await self._store_head())
            return
        msg = await self.js.get_msg(self.stream, seq=info.state.last_seq)
        headers = msg.headers or {}
        raw_pos, msg_id = headers.get(HDR_POSITION), headers.get(HDR_MSG_ID)
        if raw_pos is None or msg_id is None:
            raise RelayMismatchError(
                f"stream {self.stream}: its last message (seq {info.state.last_seq}) has no "
                f"{HDR_POSITION}/{HDR_MSG_ID} headers; it was not written by an Accord relay. Refusing to run."
            )
        position = int(raw_pos)
        found = await asyncio.to_thread(self.app.recorder.select_notifications, start=position, stop=position, limit=1)
        expected = event_id(self.app.service, found[0].originator_id, found[0].originator_version) if found else None
        if expected != msg_id:
            store_head = await self._store_head()
            raise RelayMismatchError(
                f"stream {self.stream} ends at position {position} (event {msg_id}) but this store "
                + (
                    f"has event {expected} there"
                    if expected
                    else f"has no event at that position (its head is {store_head})"
                )
                + ": the stream belongs to another database, or the store was replaced. Refusing to run; "
                "point the service at its own store, or delete the stream so it is re-published."
            )
        self._head, self._last_msg_id, self._last_seq = position, msg_id, info.state.last_seq
        log.info("relay_head", stream=self.stream, position=position, store_head=await self._store_head())

    async def _store_head(self) -> int:
        return await asyncio.to_thread(self.app.head_position)

    async def _publish_loop(self) -> None:
        """Publish batches; while one batch's acks are awaited, the next is read and encoded
        in a worker thread (so the event loop that also serves gRPC is not held up)."""
        next_batch: asyncio.Task[list[Prepared]] | None = None
        try:
            while not self._stopping.is_set():
                if next_batch is None:
                    self._wake.clear()
                    batch = await asyncio.to_thread(self._prepare, self._head, self._last_msg_id)
                else:
                    batch, next_batch = await next_batch, None
                if not batch:
                    self.caught_up.set()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                    except TimeoutError:
                        await self._check_stream_unchanged()
                    continue
                futures = await self._send(batch)
                self._wake.clear()
                last = batch[-1]
                next_batch = asyncio.create_task(asyncio.to_thread(self._prepare, last.position, last.msg_id))
                await self._await_acks(batch, futures)
        finally:
            if next_batch is not None:
                next_batch.cancel()
                await asyncio.gather(next_batch, return_exceptions=True)

    def _prepare(self, head: int, last_msg_id: str | None) -> list[Prepared]:
        """Read the events after `head` and encode them as messages (in a worker thread)."""
        notes = self.app.select_notifications(head, self.batch_size)
        out: list[Prepared] = []
        prev = head
        for n in notes:
            env, subject, meta = to_envelope_with_meta(
                self.app.service, n, prev, self.app.accord_mapper, self.app.codec
            )
            headers = {HDR_MSG_ID: env.event_id, HDR_POSITION: str(n.id), HDR_PREVIOUS: str(prev), HDR_TYPE: env.type}
            if last_msg_id is not None:
                headers[HDR_EXPECTED_LAST_MSG_ID] = last_msg_id
            span = None
            if tracing.enabled:
                span = tracing.start_publish(
                    self.stream, subject, meta.get("traceparent"), env.event_id, env.correlation_id
                )
                tracing.inject_into(span, headers)
            out.append(Prepared(n.id, env.event_id, subject, env.SerializeToString(), headers, span))
            prev, last_msg_id = n.id, env.event_id
        return out

    async def _send(self, batch: list[Prepared]) -> list[asyncio.Future[api.PubAck]]:
        """Pipeline a batch: every publish goes out in order on one connection, no waiting.
        The in-flight window (twice the batch) is never full, so no stall timer is needed."""
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            for p in batch:
                futures.append(await self.js.publish_async(p.subject, p.data, headers=p.headers))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return futures

    async def _await_acks(self, batch: list[Prepared], futures: list[asyncio.Future[api.PubAck]]) -> None:
        started = time.perf_counter()
        try:
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=self.ack_timeout)
        except BaseException:
            for f in futures:
                f.cancel()
            _end_spans(batch, failed=True)
            raise
        _end_spans(batch)
        dupes = sum(1 for a in acks if a.duplicate)
        self.stats.duplicates += dupes
        self.stats.published += len(acks) - dupes
        last = batch[-1]
        self._head, self._last_msg_id, self._last_seq = last.position, last.msg_id, acks[-1].seq
        self.stats.head_position = last.position
        log.debug(
            "relay_published",
            stream=self.stream,
            count=len(batch),
            head=self._head,
            ack_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _check_stream_unchanged(self) -> None:
        """While idle, notice a stream that was deleted, purged or recreated."""
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            raise RuntimeError(f"stream {self.stream} disappeared") from None
        if info.state.last_seq != self._last_seq:
            raise RuntimeError(
                f"stream {self.stream} changed behind the relay "
                f"(last seq {info.state.last_seq}, expected {self._last_seq})"
            )


def _end_spans(batch: list[Prepared], failed: bool = False) -> None:
    for p in batch:
        if p.span is not None:
            if failed:
                tracing.mark_failed(p.span, "not acknowledged by the stream")
            p.span.end()
