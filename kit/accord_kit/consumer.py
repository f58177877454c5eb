"""The consumer: a durable JetStream pull consumer that applies each upstream event
exactly once to a local application.

* The upstream position is recorded in the same transaction as the consumer's own new
  events (`AccordApplication.apply_upstream`), so a crash between commit and ack only
  causes a redelivery, which is recognised and acknowledged.
* JetStream may redeliver out of order: an event is applied only when its previous
  position equals the tracked position; otherwise it (and the rest of its batch) is
  nak'ed with a delay.
* A gap the stream cannot fill (retention, broker loss) is caught up through the source's
  `ReadEvents` RPC, then consumption returns to NATS.
* An event whose handling keeps failing halts the consumer with an alert (log + health);
  it is never skipped.
* An event that depends on another source's event not yet applied here (billing receives a
  window metrics judged with the agreements stream applied further than billing's agreements
  consumer has yet: the two streams are consumed independently) raises `NotYetError`: the event and the
  rest of its batch are nak'ed and tried again after `wait_delay`, as often as it takes. It is
  neither skipped nor counted as a failure; `stats.waits` counts the attempts.
* A message that is not an envelope at all (its bytes do not decode, or it has no event
  id or no position) cannot be an event of the source's log: it is copied to the
  DEADLETTER stream with the reason (`accord_kit.deadletter`), then acknowledged, with an
  alert (`consumer_dead_lettered`, and `on_dead_letter`: health `accord.deadletter`). It
  takes no place in the log's order: if it stood for a real event, the next event's
  previous position shows the gap, which is caught up through `ReadEvents` as any other.
  If the copy cannot be stored, the message is nak'ed and tried again.
* A consumer that receives nothing for `stall_timeout` while its stream's head is ahead of
  its tracked position (a clustered durable whose leader moved while a node was frozen, a
  subscription that stopped delivering, a durable that has no leader or is gone from the
  server, so that every fetch fails at once) says so (`consumer_stalled`), catches up through
  `ReadEvents`, creates its durable again if the server lost it (`consumer_durable_lost`) and
  binds its subscription again: JetStream not delivering never leaves it behind for good,
  whether its fetches time out or fail. While NATS does not answer at all (the stream's head
  cannot be asked — that look waits a second for its answer, `look_timeout`), it reads what
  the source wrote meanwhile through `ReadEvents` each `stall_timeout`
  (`consumer_caught_up_without_nats` when there was any).
* `caught_up` is set once the consumer has applied everything its stream held when it
  started (the position of the stream's last message then); an empty stream counts as
  caught up at once, and so does a stream that does not exist yet (the consumer keeps
  waiting for it, but nothing can be behind a stream that is not there). A service whose
  state is only what its consumers built (the gateway's read model) waits for it before
  reporting SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from accord.events.v1 import events_pb2
from accord_kit import tracing
from accord_kit.context import RequestContext, request_context
from accord_kit.deadletter import dead_letter
from accord_kit.logging import get_logger
from accord_kit.nats_util import Looks
from accord_kit.threads import finish_in_thread

log = get_logger("accord.consumer")

ReadEvents = Callable[[int, int], Awaitable[tuple[list[events_pb2.EventEnvelope], int]]]


class Applier(Protocol):
    """What a consumer applies events to: an AccordApplication (tracking in its store, in the
    same transaction as its own events) or a read model that keeps its own positions. One that
    also has `applying_run()` (a context manager) gets each run of events applied together (a
    fetched batch, a page read to catch up) inside it: the gateway's read model tells its
    watchers of the run's changes once, at its end."""

    def tracked_position(self, source: str) -> int: ...

    def apply_upstream(self, source: str, envelope: events_pb2.EventEnvelope) -> bool: ...


@dataclass
class ConsumerConfig:
    consumer: str  # the consuming service, e.g. "metrics"
    source: str  # the upstream service, e.g. "agreements"
    stream: str  # the upstream stream, e.g. "AGREEMENTS"
    batch_size: int = 200
    nak_delay: float = 0.2
    gap_timeout: float = 3.0  # how long a missing event may take to arrive before catch-up
    max_failures: int = 5  # handler failures on one event before the consumer halts
    ack_wait: float = 30.0
    fetch_timeout: float = 1.0
    wait_delay: float = 0.5  # before an event that raised NotYetError is tried again
    stall_timeout: float = 10.0  # nothing received this long with the stream ahead: stalled
    # Waiting for the stream at start (`Consumer.run`): said once at once — at info when the stream
    # does not exist yet, its producer perhaps still starting — then as a warning once waited this
    # long, and again at most this often (not every attempt, each second).
    stream_wait_warning: float = 30.0

    @property
    def durable(self) -> str:
        return f"{self.consumer}-{self.stream}"


@dataclass
class ConsumerStats:
    applied: int = 0
    redeliveries_skipped: int = 0
    out_of_order_naks: int = 0
    failures: int = 0
    caught_up_via_read_events: int = 0
    dead_lettered: int = 0
    # times nothing arrived for stall_timeout while the stream was ahead (or, NATS not answering,
    # the source had written more meanwhile)
    stalls: int = 0
    waits: int = 0  # attempts that found an event not yet applicable (NotYetError)
    failures_by_position: dict[int, int] = field(default_factory=dict)


class ConsumerHaltedError(RuntimeError):
    pass


class NotYetError(Exception):
    """Raised by an applier for an event that depends on something not applied here yet (an
    event of another stream): the consumer tries it again later, in order, never skipping it."""


class Consumer:
    def __init__(
        self,
        app: Applier,
        nc: NATS,
        config: ConsumerConfig,
        *,
        read_events: ReadEvents | None = None,
        on_halt: Callable[[str], None] | None = None,
        on_dead_letter: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.on_dead_letter = on_dead_letter
        self.nc = nc
        self.js = nc.jetstream()
        self.config = config
        self.read_events = read_events
        self.on_halt = on_halt
        self.stats = ConsumerStats()
        self.halted: str | None = None
        self._stopping = asyncio.Event()
        self._tracked = 0
        self._gap_since: float | None = None
        self._waiting_at = 0  # the position of the event last found not yet applicable
        self._received_at = time.monotonic()  # when a fetch last brought messages (or a stall check ran)
        # Catching up with the stream as it was at start: the position to reach (None until
        # known), and once reached, how many events that took and how long.
        self.caught_up = asyncio.Event()
        self.catch_up_target: int | None = None
        self.caught_up_events = 0
        self.caught_up_seconds = 0.0
        self._started = time.monotonic()
        # What telemetry reports (accord_kit.telemetry): the upstream stream's head position as
        # last seen, and the messages JetStream holds for the durable (refresh_lag).
        self.upstream_head = 0
        self.pending_messages = 0
        self._stall_looks = Looks()  # the stall check's looks at the stream's head
        self._lag_looks = Looks()  # refresh_lag's looks at the durable and the stream's head

    def stop(self) -> None:
        self._stopping.set()

    @property
    def tracked(self) -> int:
        return self._tracked

    async def ensure_durable(self, js: JetStreamContext | None = None) -> None:
        """Create or update the durable consumer explicitly; recreate it when our store was
        reset (nothing tracked) but the durable has already acknowledged messages. `js`: the
        JetStream context to ask through (its request timeout), else the consumer's own."""
        js = js or self.js
        cfg = self.config
        self._tracked = await finish_in_thread(self.app.tracked_position, cfg.source)
        consumer_cfg = api.ConsumerConfig(
            durable_name=cfg.durable,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait,
            max_deliver=-1,  # we count handler failures ourselves: gap naks are not failures
            max_ack_pending=max(1000, cfg.batch_size * 4),
            description=f"{cfg.consumer} applies {cfg.source} events exactly once",
        )
        try:
            info = await js.consumer_info(cfg.stream, cfg.durable)
        except NotFoundError:
            info = None
        if (
            info is not None
            and self._tracked == 0
            and info.ack_floor is not None
            and (info.ack_floor.stream_seq or 0) > 0
        ):
            log.warning("consumer_recreated", durable=cfg.durable, reason="store has no tracked position")
            await js.delete_consumer(cfg.stream, cfg.durable)
        await js.add_consumer(cfg.stream, consumer_cfg)

    async def stream_head(self, js: JetStreamContext | None = None) -> int:
        """The position of the last event in the stream now; 0 for an empty stream. Raises
        NotFoundError when the stream does not exist. `js`: as `ensure_durable`'s."""
        js = js or self.js
        stream = self.config.stream
        for _ in range(3):
            info = await js.stream_info(stream)
            if info.state.messages == 0 or not info.state.last_seq:
                return 0
            seq, first = info.state.last_seq, info.state.first_seq or 1
            while seq >= first:
                try:
                    msg = await js.get_msg(stream, seq=seq)
                except NotFoundError:
                    break  # purged or deleted since we looked: look again
                env = events_pb2.EventEnvelope()
                try:
                    env.ParseFromString(msg.data or b"")
                except Exception:
                    env.Clear()
                if env.event_id and env.position > 0:
                    return int(env.position)
                seq -= 1  # not an envelope (it will be dead-lettered): the one before
            else:
                return 0
        raise TimeoutError(f"stream {stream}: its last message kept disappearing")

    async def refresh_lag(self) -> None:
        """Ask JetStream how far behind this consumer is: its stream's head position and the
        messages not yet delivered or acknowledged to the durable. Each request waits for its
        answer as the looks at start do (`look_timeout`: a second, longer after ten in a row got
        none), not JetStream's default 5 s: one lost with its server holds the refresh of every
        consumer after it that much less."""
        cfg = self.config
        looks = self._lag_looks
        js = looks.jetstream(self.nc)
        try:
            info = await js.consumer_info(cfg.stream, cfg.durable)
            head = await self.stream_head(js)
        except Exception:
            looks.failed += 1
            raise
        looks.failed = 0
        self.pending_messages = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        self.upstream_head = max(self.upstream_head, head)

    async def run(self) -> None:
        cfg = self.config
        self._started = time.monotonic()
        said_at: float | None = None  # when waiting for the stream was last logged
        looks = Looks()  # at the durable and the stream's head
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                js = looks.jetstream(self.nc)
                await self.ensure_durable(js)
                psub = await self.js.pull_subscribe_bind(durable=cfg.durable, stream=cfg.stream)
                target = await self.stream_head(js)
                break
            except (NotFoundError, nats.errors.Error, TimeoutError) as e:
                looks.failed += 1
                now = time.monotonic()
                waited = now - self._started
                said = dict(stream=cfg.stream, error=str(e) or type(e).__name__, waited_seconds=round(waited, 1))
                if said_at is None:
                    (log.info if isinstance(e, NotFoundError) else log.warning)("consumer_waiting_for_stream", **said)
                    said_at = now
                elif waited >= cfg.stream_wait_warning and now - said_at >= cfg.stream_wait_warning:
                    log.warning("consumer_waiting_for_stream", **said)
                    said_at = now
                if isinstance(e, NotFoundError) and self.catch_up_target is None:
                    # No stream yet (its producer has not created it): nothing to catch up with,
                    # and a reader must not wait for a stream that may be long in coming.
                    self.catch_up_target = 0
                    self._check_caught_up()
                await self._sleep(max(0.0, 1.0 - (now - began)))  # a look a second (one that waited, waited)
        else:
            return
        if self.catch_up_target is None:
            self.catch_up_target = target
        self.upstream_head = max(self.upstream_head, target)
        log.info("consumer_started", durable=cfg.durable, tracked=self._tracked, stream_head=target)
        self._check_caught_up()
        try:
            while not self._stopping.is_set() and self.halted is None:
                failed = False
                try:
                    msgs = await psub.fetch(cfg.batch_size, timeout=cfg.fetch_timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    msgs = []
                except nats.errors.Error as e:
                    log.warning("consumer_fetch_failed", durable=cfg.durable, error=str(e) or type(e).__name__)
                    msgs, failed = [], True
                if not msgs:
                    # Nothing came, whether the fetch timed out, failed (no responders: the
                    # durable has no leader, or is gone from the server) or ended empty: the
                    # stall check is the same for all three.
                    await self._maybe_catch_up(None)
                    if await self._stalled():
                        psub = await self._rebind(psub)
                    self._check_caught_up()
                    if failed:
                        await self._sleep(0.5)
                    continue
                self._received_at = time.monotonic()
                await self._handle_batch(msgs)
                self._check_caught_up()
        finally:
            try:
                await psub.unsubscribe()
            except Exception:  # connection already closed on shutdown
                pass

    async def _stalled(self) -> bool:
        """Nothing received for stall_timeout while the stream holds events past the tracked
        position: catch up through ReadEvents now. True when the subscription should be bound
        again. Looked at once per stall_timeout (a stream_info and one get_msg)."""
        now = time.monotonic()
        if now - self._received_at < self.config.stall_timeout:
            return False
        self._received_at = now
        try:
            # A look that gets no answer (NATS down, its server frozen) is given up after a second,
            # as the looks at start are (`look_timeout`), not JetStream's default 5 s: what the
            # source wrote meanwhile is read from it that much sooner.
            head = await self.stream_head(self._stall_looks.jetstream(self.nc))
        except Exception as e:
            # NATS does not answer (every node down, or none reachable): nothing is published
            # meanwhile, but the source may still serve its log — what it wrote is read from there.
            self._stall_looks.failed += 1
            log.debug("consumer_stall_check_failed", durable=self.config.durable, error=str(e) or type(e).__name__)
            before = self._tracked
            await self._catch_up(None, quiet=True)
            if self._tracked > before:
                self.stats.stalls += 1
                log.warning(
                    "consumer_caught_up_without_nats", durable=self.config.durable, tracked=self._tracked, since=before
                )
            return False
        self._stall_looks.failed = 0
        self.upstream_head = max(self.upstream_head, head)
        if head <= self._tracked:
            return False
        self.stats.stalls += 1
        log.warning("consumer_stalled", durable=self.config.durable, tracked=self._tracked, stream_head=head)
        await self._catch_up(None)
        return True

    async def _rebind(self, psub: JetStreamContext.PullSubscription) -> JetStreamContext.PullSubscription:
        """A new pull subscription on the durable, created again first when the server no longer
        has it (one that exists is left as it is: paused, say); the old one is dropped once the
        new one exists."""
        cfg = self.config
        try:
            try:
                await self.js.consumer_info(cfg.stream, cfg.durable)
            except NotFoundError:
                log.warning("consumer_durable_lost", durable=cfg.durable, stream=cfg.stream)
                await self.ensure_durable()
            fresh = await self.js.pull_subscribe_bind(durable=cfg.durable, stream=cfg.stream)
        except Exception as e:  # keep the old one: the next stall check tries again
            log.warning("consumer_rebind_failed", durable=cfg.durable, error=str(e) or type(e).__name__)
            return psub
        try:
            await psub.unsubscribe()
        except Exception:  # already gone with the old connection
            pass
        return fresh

    def _check_caught_up(self) -> None:
        """Set `caught_up` (once) when the position to reach is known and reached."""
        target = self.catch_up_target
        if self.caught_up.is_set() or target is None or self._tracked < target:
            return
        self.caught_up_events = self.stats.applied
        self.caught_up_seconds = time.monotonic() - self._started
        log.info(
            "consumer_caught_up",
            durable=self.config.durable,
            position=self._tracked,
            stream_head=target,
            events=self.caught_up_events,
            seconds=round(self.caught_up_seconds, 3),
        )
        self.caught_up.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        pairs = []
        for m in msgs:
            env = events_pb2.EventEnvelope()
            try:
                env.ParseFromString(m.data or b"")
                problem = "" if env.event_id and env.position > 0 else "it has no event id or no position"
            except Exception as e:  # protobuf's DecodeError, or anything else the bytes cause
                problem = f"its bytes do not decode as an EventEnvelope ({type(e).__name__}: {e})"
            if problem:
                await self._dead_letter(m, f"not an event envelope: {problem}")
                continue
            pairs.append((env, m))
        if not pairs:
            return
        # Redeliveries arrive in any order: within a fetched batch, put them back in log order
        # (a stable sort keeps a duplicate next to its twin, which is then skipped).
        pairs.sort(key=lambda p: p[0].position)
        envs = [e for e, _ in pairs]
        msgs = [m for _, m in pairs]
        self.upstream_head = max(self.upstream_head, envs[-1].position)
        headers: list[Mapping[str, str] | None] | None = [m.headers for m in msgs] if tracing.enabled else None
        done, outcome, error = await finish_in_thread(self._apply_run, envs, headers)
        for m in msgs[:done]:
            await m.ack()
        if done == len(msgs):
            return
        rest = msgs[done:]
        if outcome == "gap":
            self.stats.out_of_order_naks += len(rest)
            for m in rest:
                await m.nak(delay=self.config.nak_delay)
            await self._maybe_catch_up(envs[done])
        elif outcome == "waiting":
            self._waiting(envs[done], error)
            for m in rest:
                await m.nak(delay=self.config.wait_delay)
        else:  # handler failure
            env = envs[done]
            n = self.stats.failures_by_position.get(env.position, 0) + 1
            self.stats.failures_by_position[env.position] = n
            self.stats.failures += 1
            log.warning(
                "consumer_apply_failed", durable=self.config.durable, position=env.position, attempt=n, error=error
            )
            if n >= self.config.max_failures:
                self._halt(f"event {env.event_id} at position {env.position} failed {n} times: {error}")
                return
            for m in rest:
                await m.nak(delay=self.config.nak_delay)

    def _waiting(self, env: events_pb2.EventEnvelope, why: str) -> None:
        self.stats.waits += 1
        if self._waiting_at != env.position:  # said once per event, however long it waits
            self._waiting_at = env.position
            log.info("consumer_waiting", durable=self.config.durable, position=env.position, reason=why)

    def _apply_run(
        self, envs: list[events_pb2.EventEnvelope], headers: list[Mapping[str, str] | None] | None = None
    ) -> tuple[int, str, str]:
        """Apply a contiguous run of envelopes (in a worker thread). Returns how many were
        handled, and why it stopped: "done", "gap", "waiting" (NotYetError) or "failed".

        Each event is applied in its own request context: what the consumer stores meanwhile
        records the upstream event's correlation id and, as its cause, the upstream event's
        id; while tracing is on, also in a span continuing the message's trace. Inside the
        applier's `applying_run()` when it has one (see Applier)."""
        applying = getattr(self.app, "applying_run", None)
        with applying() if applying is not None else contextlib.nullcontext():
            return self._apply_each(envs, headers)

    def _apply_each(
        self, envs: list[events_pb2.EventEnvelope], headers: list[Mapping[str, str] | None] | None
    ) -> tuple[int, str, str]:
        for i, env in enumerate(envs):
            if env.position <= self._tracked:
                self.stats.redeliveries_skipped += 1
                continue
            if env.previous_position != self._tracked:
                return i, "gap", ""
            ctx = RequestContext(correlation_id=env.correlation_id, causation_id=env.event_id)
            carrier = headers[i] if headers is not None else None
            try:
                with (
                    request_context(ctx),
                    tracing.process_span(self.config.stream, carrier, env.event_id, env.correlation_id) as span,
                ):
                    try:
                        applied = self.app.apply_upstream(self.config.source, env)
                    except NotYetError:
                        raise
                    except Exception as e:
                        tracing.mark_failed(span, type(e).__name__)
                        raise
            except NotYetError as e:
                return i, "waiting", str(e)
            except Exception as e:
                return i, "failed", f"{type(e).__name__}: {e}"
            if applied:
                self.stats.applied += 1
            else:
                self.stats.redeliveries_skipped += 1
            self._tracked = env.position
            self._gap_since = None
        return len(envs), "done", ""

    async def _maybe_catch_up(self, waiting: events_pb2.EventEnvelope | None) -> None:
        """A missing event that has not arrived within gap_timeout is read from the source."""
        if waiting is None and self._gap_since is None:
            return
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
            return
        if now - self._gap_since < self.config.gap_timeout:
            return
        await self._catch_up(waiting.previous_position if waiting is not None else None)

    async def _catch_up(self, target: int | None, quiet: bool = False) -> None:
        """Read the source's log from the tracked position and apply it (up to `target` when given,
        else to its end). `quiet`: said at debug level (a look while NATS is down, most often finding
        nothing)."""
        if self.read_events is None:
            return
        (log.debug if quiet else log.warning)(
            "consumer_catching_up", durable=self.config.durable, tracked=self._tracked, target=target
        )
        while not self._stopping.is_set():
            try:
                envs, _ = await self.read_events(self._tracked, 500)
            except Exception as e:  # looked at again at the next fetch that brings nothing
                log.warning("consumer_catch_up_failed", source=self.config.source, error=str(e) or type(e).__name__)
                if self._gap_since is None:
                    self._gap_since = time.monotonic() - self.config.gap_timeout
                return
            if not envs:
                break
            done, outcome, error = await finish_in_thread(self._apply_run, envs)
            self.stats.caught_up_via_read_events += done
            if outcome == "waiting":  # NATS delivers it again; the wait is said there
                break
            if outcome != "done":
                log.warning("consumer_catch_up_stopped", outcome=outcome, error=error)
                break
            if target is not None and self._tracked >= target:
                break
        self._gap_since = None

    async def _dead_letter(self, m: Msg, reason: str) -> None:
        cfg = self.config
        try:
            subject = await dead_letter(self.js, cfg.consumer, m, reason)
        except Exception as e:
            log.warning("consumer_dead_letter_failed", durable=cfg.durable, error=str(e) or type(e).__name__)
            await m.nak(delay=max(cfg.nak_delay, 1.0))
            return
        await m.ack()
        self.stats.dead_lettered += 1
        seq = m.metadata.sequence.stream if m.metadata else 0
        log.error("consumer_dead_lettered", alert=True, durable=cfg.durable, stream_seq=seq, reason=reason, to=subject)
        if self.on_dead_letter is not None:
            await self.on_dead_letter(f"{cfg.durable}: stream {cfg.stream} message {seq}: {reason}")

    def _halt(self, reason: str) -> None:
        self.halted = reason
        log.error("consumer_halted", alert=True, durable=self.config.durable, reason=reason)
        if self.on_halt is not None:
            self.on_halt(reason)
