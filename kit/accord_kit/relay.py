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
  A batch goes out as one write of ready-made protocol bytes (built with its headers in
  the worker thread that reads and encodes it), and its acknowledgements arrive on the
  relay's own reply subscription, counted per batch: no per-message future, header dict
  or PubAck object on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
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
    Looks,
    ensure_stream,
)
from accord_kit.threads import finish_in_thread

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


@dataclass
class Batch:
    """Events encoded as messages, and their wire form (one HPUB each, replies to the relay's
    inbox with the event's position as the last token)."""

    items: list[Prepared]
    wire: bytes

    @property
    def last(self) -> Prepared:
        return self.items[-1]


def _hpub(subject: str, reply: str, headers: dict[str, str], payload: bytes) -> bytes:
    """The NATS protocol's HPUB command for one message (as nats-py's publish writes it)."""
    hdr = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    hdr_bytes = hdr.encode()
    return (
        f"HPUB {subject} {reply} {len(hdr_bytes)} {len(hdr_bytes) + len(payload)}\r\n".encode()
        + hdr_bytes
        + payload
        + b"\r\n"
    )


class _Acks:
    """The acknowledgements of one batch in flight, counted as they arrive."""

    def __init__(self, batch: Batch, loop: asyncio.AbstractEventLoop) -> None:
        self.positions = {p.position for p in batch.items}
        self.expected = len(batch.items)
        self.seen: set[int] = set()
        self.duplicates = 0
        self.last_seq = 0
        self.last_position = batch.last.position
        self.done: asyncio.Future[None] = loop.create_future()

    def on_ack(self, position: int, data: bytes) -> None:
        if self.done.done() or position not in self.positions or position in self.seen:
            return
        plain = b'"seq"' in data and b'"error"' not in data and b'"duplicate"' not in data
        if not plain or position == self.last_position:
            try:  # the one ack whose sequence is kept, or one that is not a plain success
                ack = json.loads(data)
            except ValueError:
                self.done.set_exception(RuntimeError(f"unreadable acknowledgement for position {position}: {data!r}"))
                return
            error = ack.get("error")
            if error or "seq" not in ack:
                description = (error or {}).get("description") or f"no sequence in {data!r}"
                self.done.set_exception(RuntimeError(f"position {position} not stored: {description}"))
                return
            if ack.get("duplicate"):
                self.duplicates += 1
            if position == self.last_position:
                self.last_seq = int(ack["seq"])
        self.seen.add(position)
        if len(self.seen) == self.expected:
            self.done.set_result(None)


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
        self.js = nc.jetstream()
        self.stream = stream
        self.replicas = replicas
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.stats = RelayStats()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._idle_looks = Looks()  # the idle looks at the stream (`_check_stream_unchanged`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._head = 0  # last position known to be in the stream
        self._last_msg_id: str | None = None
        self._last_seq = 0  # stream sequence of that message
        self._acks: _Acks | None = None  # the batch in flight
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
        looks = Looks()  # at the stream's head
        try:
            while not self._stopping.is_set():
                synced, began = False, time.monotonic()
                try:
                    await self._sync_head(looks.timeout)
                    synced, looks.failed = True, 0
                    await self._publish_loop()
                    backoff = 0.1
                except RelayMismatchError:
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # NATS down, stream deleted, fenced by another relay …
                    if not synced:
                        looks.failed += 1
                    self.stats.resyncs += 1
                    log.warning("relay_resync", stream=self.stream, error=str(e) or type(e).__name__)
                    self.caught_up.clear()
                    try:  # a pause between looks that fail at once; one that waited for its answer has paused
                        await asyncio.wait_for(
                            self._stopping.wait(), timeout=max(0.0, backoff - (time.monotonic() - began))
                        )
                    except TimeoutError:
                        pass
                    backoff = min(backoff * 2, 2.0)
        finally:
            self.app.remove_save_listener(self._on_save)

    async def _sync_head(self, timeout: float) -> None:
        """Set our position to the stream's head, after checking it against the store (each
        request waiting `timeout` for its answer)."""
        info = await ensure_stream(self.nc, self.stream, self.app.service, self.replicas, timeout=timeout)
        if info.state.messages == 0 or info.state.last_seq == 0:
            self._head, self._last_msg_id, self._last_seq = 0, None, info.state.last_seq
            log.info("relay_head", stream=self.stream, position=0, store_head=await self._store_head())
            return
        msg = await self.nc.jetstream(timeout=timeout).get_msg(self.stream, seq=info.state.last_seq)
        headers = msg.headers or {}
        raw_pos, msg_id = headers.get(HDR_POSITION), headers.get(HDR_MSG_ID)
        if raw_pos is None or msg_id is None:
            raise RelayMismatchError(
                f"stream {self.stream}: its last message (seq {info.state.last_seq}) has no "
                f"{HDR_POSITION}/{HDR_MSG_ID} headers; it was not written by an Accord relay. Refusing to run."
            )
        position = int(raw_pos)
        found = await finish_in_thread(self.app.recorder.select_notifications, start=position, stop=position, limit=1)
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
        return await finish_in_thread(self.app.head_position)

    async def _publish_loop(self) -> None:
        """Publish batches; while one batch's acks are awaited, the next is read and encoded
        in a worker thread (so the event loop that also serves gRPC is not held up). Acks
        come to an inbox of this loop's own (a fresh one after every re-sync, so a late ack
        of an abandoned attempt is never counted)."""
        reply_prefix = self.nc.new_inbox()  # under the connection's inbox prefix (permissions)
        sub = await self.nc.subscribe(f"{reply_prefix}.*", cb=self._on_ack)
        next_batch: asyncio.Task[Batch | None] | None = None
        try:
            while not self._stopping.is_set():
                if next_batch is None:
                    self._wake.clear()
                    batch = await finish_in_thread(self._prepare, self._head, self._last_msg_id, reply_prefix)
                else:
                    batch, next_batch = await next_batch, None
                if batch is None:
                    self.caught_up.set()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                    except TimeoutError:
                        await self._check_stream_unchanged()
                    continue
                acks = await self._send(batch)
                self._wake.clear()
                last = batch.last
                next_batch = asyncio.create_task(
                    finish_in_thread(self._prepare, last.position, last.msg_id, reply_prefix)
                )
                await self._await_acks(batch, acks)
        finally:
            self._acks = None
            if next_batch is not None:
                next_batch.cancel()
                await asyncio.gather(next_batch, return_exceptions=True)
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone: so is the subscription
                pass

    def _prepare(self, head: int, last_msg_id: str | None, reply_prefix: str) -> Batch | None:
        """Read the events after `head` and encode them as messages and their protocol bytes
        (in a worker thread)."""
        notes = self.app.select_notifications(head, self.batch_size)
        if not notes:
            return None
        out: list[Prepared] = []
        wire: list[bytes] = []
        prev = head
        service, mapper, codec = self.app.service, self.app.accord_mapper, self.app.codec
        traced = tracing.enabled
        for n in notes:
            env, subject, meta = to_envelope_with_meta(service, n, prev, mapper, codec)
            eid = env.event_id
            headers = {HDR_MSG_ID: eid, HDR_POSITION: str(n.id), HDR_PREVIOUS: str(prev), HDR_TYPE: env.type}
            if last_msg_id is not None:
                headers[HDR_EXPECTED_LAST_MSG_ID] = last_msg_id
            span = None
            if traced:
                span = tracing.start_publish(self.stream, subject, meta.get("traceparent"), eid, env.correlation_id)
                tracing.inject_into(span, headers)
            data = env.SerializeToString()
            out.append(Prepared(n.id, eid, subject, data, headers, span))
            wire.append(_hpub(subject, f"{reply_prefix}.{n.id}", headers, data))
            prev, last_msg_id = n.id, eid
        return Batch(out, b"".join(wire))

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._acks
        if acks is None:
            return
        try:
            position = int(msg.subject.rsplit(".", 1)[1])
        except ValueError:
            return
        acks.on_ack(position, msg.data)

    async def _send(self, batch: Batch) -> _Acks:
        """Pipeline a batch: every message goes out in order on one connection, in one write
        of its protocol bytes; nothing is awaited but the hand-over to the connection."""
        nc = self.nc
        if not nc.is_connected:
            raise RuntimeError("not connected to NATS")
        too_big = next((p for p in batch.items if len(p.data) > nc.max_payload), None)
        if too_big is not None:
            raise RuntimeError(
                f"event {too_big.msg_id} ({len(too_big.data)} bytes) exceeds the server's max_payload {nc.max_payload}"
            )
        acks = _Acks(batch, asyncio.get_running_loop())
        self._acks = acks
        # nats-py has no public call for many messages at once; its publish() does the same
        # two steps per message (queue the command, kick the flusher).
        await nc._send_command(batch.wire)
        await nc._flush_pending()
        return acks

    async def _await_acks(self, batch: Batch, acks: _Acks) -> None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(acks.done), timeout=self.ack_timeout)
        except BaseException:
            self._acks = None
            _end_spans(batch.items, failed=True)
            raise
        self._acks = None
        _end_spans(batch.items)
        count = len(batch.items)
        self.stats.duplicates += acks.duplicates
        self.stats.published += count - acks.duplicates
        last = batch.last
        self._head, self._last_msg_id, self._last_seq = last.position, last.msg_id, acks.last_seq
        self.stats.head_position = last.position
        log.debug(
            "relay_published",
            stream=self.stream,
            count=count,
            head=self._head,
            ack_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _check_stream_unchanged(self) -> None:
        """While idle, notice a stream that was deleted, purged or recreated. The look waits a
        second for its answer (`look_timeout`), as the looks at the stream's head do: one lost
        with its server (a node that died) is given up then and the relay looks at the head again
        — saves made meanwhile, which the relay is not woken for while it waits, are published
        that much sooner than after JetStream's default 5 s. Looks that time out in a row wait
        longer from the eleventh on, as those do: a cluster that answers only after a second is
        not asked again and again."""
        try:
            info = await self._idle_looks.jetstream(self.nc).stream_info(self.stream)
        except NotFoundError:
            raise RuntimeError(f"stream {self.stream} disappeared") from None
        except TimeoutError:
            self._idle_looks.failed += 1
            raise
        self._idle_looks.failed = 0
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
