"""Runs one service process: store check, gRPC server, relay, consumers, sealing, signals.

A service's `bootstrap.py` describes what it is made of (application, servicers, policy,
upstream streams) and hands it to `ServiceRuntime`, which owns the order of start and stop:
SIGTERM → health NOT_SERVING → in-flight calls finish within the grace → relay and
consumers stop → NATS drains → the log is sealed → the store closes → exit 0.

An event-sourced service (one with `parts.app`) also gets, without its bootstrap saying so,
the common `accord.audit.v1.AuditService` (servicer and policy) and a task that seals its
log with a signed checkpoint every `<SERVICE>_SEAL_SECONDS` and once more at stop. Before
it seals anything, it verifies its whole log (while it serves; `accord.chain` is
NOT_SERVING until that has passed, and for good if the log was tampered with).

Parts other than the runtime report health of their own through `ServiceParts.health`
(e.g. `accord.deadletter`, NOT_SERVING once a message was dead-lettered).

When it reports SERVING: an event-sourced service as soon as its relay holds the stream and
its consumers are started (its state is in its store, so it answers correctly at once); a
service that keeps no store and only applies upstream events (`parts.applier`, the gateway's
in-memory read model) only once every consumer has caught up with its stream as it was at
start (`Consumer.caught_up`) — until then its read model would answer 404 for what exists."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from eventsourcing.persistence import IntegrityError
from prometheus_client.registry import Collector

from accord_kit import tracing
from accord_kit.application import AccordApplication
from accord_kit.audit import ChainKeys, StartupVerification, VerifyProgress, register_audit, verify_log
from accord_kit.auth import AUDIT_POLICY, Policy, TokenVerifier
from accord_kit.chain import ChainError, Checkpoint, seal
from accord_kit.consumer import Applier, Consumer, ConsumerConfig
from accord_kit.deadletter import HEALTH as DEADLETTER_HEALTH
from accord_kit.eventlog import EventLogClient
from accord_kit.grpc_server import AccordServer, ErrorMap, build_server
from accord_kit.heap import heap_task
from accord_kit.lease import Lease
from accord_kit.logging import get_logger
from accord_kit.nats_util import connect
from accord_kit.relay import Relay, RelayMismatchError
from accord_kit.settings import ServiceSettings, SettingsError
from accord_kit.telemetry import RuntimeCollector, Telemetry, refresh_consumers
from accord_kit.threads import finish_in_thread, settle

log = get_logger("accord.runtime")
VERIFY_PROGRESS_SECONDS = 10.0  # how often the start-up verification logs how far it got
VERIFY_RETRY_SECONDS = 5.0  # after the start-up verification could not read the log
CHAIN_HEALTH = "accord.chain"  # health service name: NOT_SERVING once sealing stopped on a tampered log
HEALTH_CHECK_SECONDS = 1.0  # how often ServiceParts.health_checks are looked at


@dataclass
class Upstream:
    """A stream this service consumes."""

    source: str  # upstream service name

    def config(self, consumer: str) -> ConsumerConfig:
        return ConsumerConfig(consumer=consumer, source=self.source, stream=self.source.upper())


def periodic(
    name: str, work: Callable[[], int], interval: float
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A runtime task that runs `work` (blocking, in a worker thread) every `interval`
    seconds until the service stops; it logs how much changed, and logs (never dies of)
    a failure, so the next round tries again."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                changed = await finish_in_thread(work)
                if changed:
                    log.info(f"{name}_done", changed=changed)
            except Exception:
                log.exception(f"{name}_failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass

    return run


class Readiness:
    """Whether the service is SERVING, for parts other than gRPC health (e.g. HTTP), and
    while it is not, why."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"  # "starting", "catching_up" or "stopping" while not ready
        # While catching up: per stream not yet caught up, the position applied and the position
        # to reach (None until known).
        self.progress: Callable[[], dict[str, dict[str, int | None]]] | None = None

    def is_ready(self) -> bool:
        return self.ready

    def detail(self) -> dict[str, Any]:
        """Why the service is not SERVING (empty when it is)."""
        if self.ready:
            return {}
        out: dict[str, Any] = {"reason": self.reason}
        if self.reason == "catching_up" and self.progress is not None:
            out["streams"] = self.progress()
        return out


class HealthBoard:
    """Health statuses that parts other than the runtime report (e.g. the signal intake's
    dead letters, `accord_kit.deadletter.HEALTH`): each name is a gRPC health service of its
    own, and `detail` says what the last report was about (gRPC health carries no text)."""

    def __init__(self) -> None:
        self.statuses: dict[str, tuple[bool, str]] = {}
        self._server: AccordServer | None = None

    async def set(self, name: str, serving: bool, detail: str = "") -> None:
        self.statuses[name] = (serving, detail)
        if self._server is not None:
            await self._server.set_serving(serving, name)

    def detail(self, name: str) -> str:
        return self.statuses.get(name, (True, ""))[1]

    async def bind(self, server: AccordServer) -> None:
        """Report through `server` from now on (and what was reported before)."""
        self._server = server
        for name, (serving, _) in list(self.statuses.items()):
            await server.set_serving(serving, name)


@dataclass
class ServiceParts:
    settings: ServiceSettings
    policy: Policy
    register: list[Callable[[grpc.aio.Server], str]]
    app: AccordApplication | None = None
    # Where consumed events go when the service keeps no event store (the gateway's read model).
    applier: Applier | None = None
    upstreams: list[Upstream] = field(default_factory=list)
    error_map: ErrorMap | None = None
    verifier: TokenVerifier | None = None
    # Extra long-running tasks (e.g. the gateway's HTTP server), started after gRPC.
    extra_tasks: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Run at stop once the consumers and tasks have ended, before NATS drains (e.g. the
    # gateway's last read-model snapshot, which then holds every event acknowledged).
    at_stop: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)
    health: HealthBoard = field(default_factory=HealthBoard)
    # Named gRPC health statuses the runtime keeps current: SERVING while the check (cheap,
    # non-blocking) returns True, NOT_SERVING otherwise; checked every HEALTH_CHECK_SECONDS.
    health_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)  # polled into `health`
    # Prometheus collectors of the service's own (e.g. the gateway's SLO gauges), served on
    # /metrics beside the runtime's when `<SERVICE>_METRICS_PORT` is set.
    collectors: list[Collector] = field(default_factory=list)


class ServiceRuntime:
    def __init__(self, parts: ServiceParts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.server: AccordServer | None = None
        self.relay: Relay | None = None
        self.consumers: list[Consumer] = []
        self._clients: list[EventLogClient] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._nc: Any = None
        self.fatal: BaseException | None = None
        self.chain_keys: ChainKeys | None = None
        # Why sealing stopped (the log was found tampered with), or None while it runs.
        self.sealing_halted: str | None = None
        # The whole-log verification at start (sealing services only): sealing waits for it.
        self.startup_verification: StartupVerification | None = None
        self._verification: asyncio.Task[None] | None = None
        self.telemetry: Telemetry | None = None
        self.metrics_port: int | None = None  # the /metrics endpoint's port, when served
        # The single-writer lease (ACCORD_LEASE=postgres, event-sourced services): until it is
        # held this instance is a hot standby that writes nothing (accord_kit.lease).
        self.lease: Lease | None = (
            Lease(parts.settings) if parts.app is not None and parts.settings.lease == "postgres" else None
        )

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def sealing(self) -> bool:
        """Whether this runtime seals its log (an event-sourced service with a signing key
        and a seal interval), whether or not sealing has halted since."""
        keys, interval = self.chain_keys, self.settings.seal_seconds
        return self.parts.app is not None and keys is not None and keys.private is not None and interval > 0

    async def start(self) -> None:
        s = self.settings
        if s.otlp_endpoint:
            tracing.configure(s.service, s.otlp_endpoint, s.otlp_protocol)
        verifier = self.parts.verifier or TokenVerifier.from_file(s.auth_public_key_file)
        policy, register = self.parts.policy, list(self.parts.register)
        app = self.parts.app
        if app is not None:
            self.chain_keys = ChainKeys.load(s)
            if self.sealing:
                self.startup_verification = StartupVerification()
            # The service's own rules win over the common audit rules if it names the same RPCs.
            policy = Policy.of(AUDIT_POLICY, self.parts.policy.rules)
            register.append(
                register_audit(
                    app,
                    self.chain_keys,
                    seal_seconds=s.seal_seconds,
                    max_message_bytes=s.max_message_bytes,
                    startup=self.startup_verification,
                )
            )
        self.server = build_server(
            host=s.grpc_host,
            port=s.grpc_port,
            policy=policy,
            verifier=verifier,
            register=register,
            error_map=self.parts.error_map,
            max_message_bytes=s.max_message_bytes,
        )
        if self.server.interceptor is not None:
            self.server.interceptor.damage = lambda: self.sealing_halted
            self.server.interceptor.standby = self._standby_reason
        if s.metrics_port is not None:
            self._start_metrics()
        await self.server.set_serving(False)
        await self.parts.health.bind(self.server)
        await self.server.start()
        log.info("grpc_started", address=f"{s.grpc_host}:{self.server.port}")
        if self.sealing:
            # NOT_SERVING until the whole log has been verified (below, while the service
            # serves); nothing is sealed before that.
            await self.server.set_serving(False, CHAIN_HEALTH)
            self._verification = asyncio.create_task(self._verify_at_start(), name="verify")
            self._tasks.append(self._verification)
            self._tasks.append(asyncio.create_task(self._seal_periodically(), name="seal"))
        self._tasks.append(asyncio.create_task(self._messaging(), name="messaging"))
        for extra in self.parts.extra_tasks:
            self._tasks.append(asyncio.create_task(self._when_writer(extra), name="extra"))
        if s.heap_settle_seconds > 0:
            self._tasks.append(asyncio.create_task(heap_task(s.heap_settle_seconds)(self._stop), name="heap"))
        for name, check in self.parts.health_checks.items():
            self._tasks.append(asyncio.create_task(self._watch_health(name, check), name=f"health {name}"))

    def _start_metrics(self) -> None:
        """Serve /metrics (accord_kit.telemetry): the runtime's parts, the RPC histogram the
        interceptor feeds, and the service's own collectors."""
        s = self.settings
        assert self.server is not None and s.metrics_port is not None
        telemetry = Telemetry(s.service)
        telemetry.register(RuntimeCollector(self))
        for collector in self.parts.collectors:
            telemetry.register(collector)
        if self.server.interceptor is not None:
            self.server.interceptor.telemetry = telemetry
        try:
            self.metrics_port = telemetry.serve(s.metrics_host, s.metrics_port)
        except OSError as e:
            raise OSError(f"cannot bind the metrics endpoint to {s.metrics_host}:{s.metrics_port}: {e}") from e
        self.telemetry = telemetry
        self._tasks.append(asyncio.create_task(refresh_consumers(self, self._stop), name="metrics"))
        log.info("metrics_started", address=f"http://{s.metrics_host}:{self.metrics_port}/metrics")

    @property
    def writer(self) -> bool:
        """Whether this instance may write: it holds the lease, or needs none."""
        return self.lease is None or self.lease.held.is_set()

    def _standby_reason(self) -> str | None:
        if self.writer:
            return None
        return (
            f"standby: this {self.settings.service} instance does not hold the service's lease; "
            "another instance is active (try it)"
        )

    async def _when_writer(self, task: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        """Run a long-running task of the parts once this instance may write (at once when it
        needs no lease): a standby runs none of the clock-driven work."""
        if self.lease is not None:
            await self._wait_first(self.lease.held.wait())
            if self._stop.is_set():
                return
        await task(self._stop)

    async def _watch_lease(self) -> None:
        assert self.lease is not None
        reason = await self.lease.watch(self._stop)
        if reason is not None:
            log.error("lease_lost", alert=True, service=self.settings.service, reason=reason)
            self.fatal = RuntimeError(reason)
            if self.server is not None:
                await self.server.set_serving(False)
            self._stop.set()

    async def _watch_health(self, name: str, check: Callable[[], bool]) -> None:
        """Keep the health status `name` as `check` says until the service stops, reported
        through the parts' health board like every other status a part reports."""
        last: bool | None = None
        while not self._stop.is_set():
            ok = bool(check())
            if ok != last:
                await self.parts.health.set(name, ok)
                last = ok
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=HEALTH_CHECK_SECONDS)
            except TimeoutError:
                pass

    # -- verifying the whole log at start ------------------------------------------------
    async def _verify_at_start(self) -> None:
        """Verify the whole log (`audit.verify_log`: a page in memory at a time, in a worker
        thread) while the service serves; `accord.chain` turns SERVING once it is verified.
        A tampered log stops sealing for good, exactly as a failed seal does. A failure to
        read the log (the store unreachable) is logged and the verification starts again
        after VERIFY_RETRY_SECONDS; meanwhile nothing is sealed."""
        status = self.startup_verification
        assert status is not None and self.server is not None
        started = time.monotonic()
        log.info("chain_verify_started", service=self.settings.service)
        progress: VerifyProgress | None = None
        try:
            while progress is None:
                try:
                    progress = await self._verify_whole_log(started)
                except Exception as e:
                    log.warning("chain_verify_failed", error=f"{type(e).__name__}: {e}", retry_in=VERIFY_RETRY_SECONDS)
                    try:
                        await asyncio.wait_for(self._stop.wait(), timeout=VERIFY_RETRY_SECONDS)
                        return  # stopping (finally: "stopped")
                    except TimeoutError:
                        pass
        finally:
            status.seconds = time.monotonic() - started
            if progress is None:
                status.state = "stopped"
                through = status.progress.verified_through if status.progress else 0
                log.info("chain_verify_stopped", verified_through=through)
        status.progress = progress
        seconds = round(status.seconds, 3)
        if progress.ok:
            status.state = "verified"
            await self.server.set_serving(True, CHAIN_HEALTH)
            log.info(
                "chain_verified",
                records=progress.records_checked,
                checkpoints=progress.checkpoints_checked,
                head=progress.head_position,
                seconds=seconds,
            )
            return
        status.state, status.finding = "tampered", progress
        reason = f"the log failed verification at start: {progress.problem}"
        self.sealing_halted = reason
        log.error("chain_seal_refused", alert=True, reason=reason, seconds=seconds)
        await self.server.set_serving(False, CHAIN_HEALTH)

    async def _verify_whole_log(self, started: float) -> VerifyProgress:
        """One pass over the whole log; its result. Not stopped by a stop request: a stop
        waits for it a few seconds (then cancels it), so that a short-lived service still
        seals at stop."""
        app, keys, status = self.parts.app, self.chain_keys, self.startup_verification
        assert app is not None and keys is not None and status is not None
        steps = verify_log(app, keys.public_keys, from_checkpoint=False)
        reported = time.monotonic()
        while True:
            progress = await finish_in_thread(next, steps, None)
            if progress is None:
                raise RuntimeError("the verification ended without a result")
            if progress.done:
                return progress
            status.progress = progress
            if time.monotonic() - reported >= VERIFY_PROGRESS_SECONDS:
                reported = time.monotonic()
                log.info(
                    "chain_verify_progress",
                    verified_through=progress.verified_through,
                    head=progress.head_position,
                    seconds=round(reported - started, 1),
                )

    async def startup_verified(self) -> bool:
        """Wait for the start-up verification (if any); whether the log passed it."""
        if self._verification is None:
            return True
        if not self._verification.done():
            await asyncio.wait([self._verification])
        status = self.startup_verification
        return status is not None and status.verified

    # -- sealing the log (accord_kit.chain.seal) ------------------------------------------
    def _seal_now(self) -> Checkpoint | None:
        """Seal the log's head (blocking). None when there was nothing new to seal."""
        app, keys = self.parts.app, self.chain_keys
        assert app is not None and keys is not None and keys.private is not None
        recorder: Any = app.recorder
        if recorder.chain_head()[0] == 0:
            return None  # an empty log: nothing to vouch for
        cp = seal(app, keys.private, previous_keys=keys.previous)
        return cp if cp.at is not None else None  # `at` is None when the last checkpoint was returned

    async def seal_once(self) -> Checkpoint | None:
        """Seal now in a worker thread; log the outcome. A lost race (another sealer took the
        checkpoint's version) is left for the next round; a tampered log stops sealing for
        good, with an alert and the `accord.chain` health status NOT_SERVING — the service
        itself keeps serving, so that the log can still be read and verified."""
        if not self.sealing or self.sealing_halted is not None or not self.writer:
            return None
        if not await self.startup_verified():
            if self.sealing_halted is None:  # stopped before the verification finished
                log.info("chain_seal_skipped", reason="the log's start-up verification did not finish")
            return None
        try:
            cp = await finish_in_thread(self._seal_now)
        except ChainError as e:
            self.sealing_halted = str(e)
            log.error("chain_seal_refused", alert=True, reason=str(e))
            if self.server is not None:
                await self.server.set_serving(False, CHAIN_HEALTH)
            return None
        except IntegrityError as e:
            log.info("chain_seal_raced", reason=str(e) or type(e).__name__)
            return None
        except Exception:
            log.exception("chain_seal_failed")
            return None
        if cp is not None:
            log.info("chain_sealed", position=cp.position, at=cp.at, key_id=cp.key_id)
        return cp

    async def _seal_periodically(self) -> None:
        if self._verification is not None:
            await self._wait_first(asyncio.shield(self._verification))
        if self.lease is not None:
            await self._wait_first(self.lease.held.wait())
        while self.sealing_halted is None:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.seal_seconds)
                return  # stopping: stop() seals once more after the server and consumers are done
            except TimeoutError:
                pass
            await self.seal_once()

    async def _messaging(self) -> None:
        """Connect to NATS, start the relay and consumers; SERVING once the stream is ours."""
        s = self.settings
        assert self.server is not None
        if self.lease is not None:
            if not await self.lease.acquire(self._stop):
                return  # stopped while a standby
            self._tasks.append(asyncio.create_task(self._watch_lease(), name="lease"))
            lease_at = time.monotonic()
        instance = f"-{s.instance}" if s.instance else ""
        try:
            self._nc = await connect(s.nats_url, name=f"accord-{s.service}{instance}", **s.nats_auth)
        except Exception as e:
            log.error("nats_unreachable", url=s.nats_url, error=str(e) or type(e).__name__)
            self.fatal = e
            self._stop.set()
            return
        app = self.parts.app
        if app is not None:
            self.relay = Relay(
                app, self._nc, stream=s.stream, replicas=s.nats_replicas, poll_seconds=s.relay_poll_seconds
            )
            self._tasks.append(asyncio.create_task(self._run_relay(), name="relay"))
            await self._wait_first(self.relay.caught_up.wait())
        target = self.parts.applier or app
        for upstream in self.parts.upstreams:
            if target is None:
                break
            client = EventLogClient(
                s.addresses[upstream.source], token=self._service_token, interceptors=tracing.client_interceptors()
            )
            self._clients.append(client)
            cfg = dataclasses.replace(upstream.config(s.consumer_name), ack_wait=s.ack_wait_seconds)
            consumer = Consumer(
                target,
                self._nc,
                cfg,
                read_events=client.read_events,
                on_halt=self._halted(cfg.durable),
                on_dead_letter=self._dead_lettered,
            )
            self.consumers.append(consumer)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"consumer-{cfg.durable}"))
            # A consumer that must catch up first is NOT_SERVING (not unknown) until it has.
            await self.server.set_serving(not self.serves_after_catch_up, f"accord.consumer.{cfg.durable}")
        caught_up: dict[str, Any] = {}
        if self.serves_after_catch_up and self.consumers:
            started = time.monotonic()
            await self._wait_first(self._catch_up())
            caught_up = {
                "caught_up_events": sum(c.caught_up_events for c in self.consumers),
                "catch_up_seconds": round(time.monotonic() - started, 3),
            }
        if self.lease is not None:
            # A standby that took over: how long from holding the lease to serving.
            caught_up["after_lease_seconds"] = round(time.monotonic() - lease_at, 3)
        if not self._stop.is_set():
            await self.server.set_serving(True)
            self.parts.readiness.ready = True
            log.info("service_ready", service=s.service, instance=s.instance, **caught_up)

    @property
    def serves_after_catch_up(self) -> bool:
        """A service whose only state is what its consumers build in memory (no event store)
        is SERVING only once they have caught up with their streams."""
        return self.parts.app is None and self.parts.applier is not None

    async def _catch_up(self) -> None:
        """Until every consumer has applied what its stream held at start; each consumer's
        health turns SERVING as it gets there. NOT_SERVING meanwhile, and HTTP readiness says
        how far each stream has got."""
        assert self.server is not None
        server, readiness = self.server, self.parts.readiness

        def progress() -> dict[str, dict[str, int | None]]:
            return {
                c.config.stream: {"position": c.tracked, "stream_head": c.catch_up_target}
                for c in self.consumers
                if not c.caught_up.is_set()
            }

        async def one(c: Consumer) -> None:
            await c.caught_up.wait()
            await server.set_serving(True, f"accord.consumer.{c.config.durable}")

        readiness.progress, readiness.reason = progress, "catching_up"
        streams = [c.config.stream for c in self.consumers]
        log.info("service_catching_up", service=self.settings.service, streams=streams)
        await asyncio.gather(*(one(c) for c in self.consumers))

    async def _wait_first(self, aw: Awaitable[Any]) -> None:
        waiter = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in (waiter, stopper):
            t.cancel()

    async def _run_relay(self) -> None:
        assert self.relay is not None
        try:
            await self.relay.run()
        except RelayMismatchError as e:
            log.error("relay_refused", alert=True, reason=str(e))
            self.fatal = e
            self._stop.set()

    def _service_token(self) -> str:
        return self.settings.service_token_file.read_text().strip()

    def _halted(self, durable: str) -> Callable[[str], None]:
        def on_halt(reason: str) -> None:
            if self.server is not None:
                asyncio.get_running_loop().create_task(self.server.set_serving(False, f"accord.consumer.{durable}"))

        return on_halt

    async def _dead_lettered(self, reason: str) -> None:
        await self.parts.health.set(DEADLETTER_HEALTH, False, reason)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        s = self.settings
        log.info("service_stopping", grace_seconds=s.grace_seconds)
        self.parts.readiness.ready = False
        self.parts.readiness.reason = "stopping"
        if self.server is not None:
            await self.server.stop(s.grace_seconds)
        if self.relay is not None:
            self.relay.stop()
        for c in self.consumers:
            c.stop()
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for hook in self.parts.at_stop:
            try:
                await hook()
            except Exception:
                log.exception("at_stop_failed")
        for client in self._clients:
            await client.close()
        if self._nc is not None:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=5)
            except Exception:
                pass
        if self.parts.app is not None:
            # Calls cancelled past their grace may still read or write the store in a thread.
            if still := await settle(s.grace_seconds):
                log.warning("store_work_still_running", threads=still)
            await self.seal_once()  # nothing writes any more: this checkpoint covers the whole log
            self.parts.app.close()
        if self.telemetry is not None:
            self.telemetry.close()
        if tracing.enabled:
            await asyncio.to_thread(tracing.shutdown)  # flush the last spans
        if self.lease is not None:
            self.lease.release()
        log.info("service_stopped")


async def serve(parts: ServiceParts, ready: Callable[[ServiceRuntime], None] | None = None) -> int:
    """Run a service until SIGTERM/SIGINT. Returns the process exit code."""
    if parts.settings.clock_file is not None:
        log.warning("clock_from_file", path=str(parts.settings.clock_file), note="not the system clock: tests only")
    runtime = ServiceRuntime(parts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.request_stop)
    await runtime.start()
    if ready is not None:
        ready(runtime)
    await runtime.wait()
    await runtime.stop()
    return 1 if runtime.fatal is not None else 0


def run_service(build: Callable[[ServiceSettings], ServiceParts], settings: ServiceSettings) -> int:
    return asyncio.run(serve(build(settings)))


def main(service: str, load: Callable[[], ServiceSettings], build: Callable[[ServiceSettings], ServiceParts]) -> int:
    """A service's `python -m` entry point: settings → logging → build → serve."""
    import sys

    from accord_kit.logging import configure_logging

    try:
        settings = load()
    except SettingsError as e:
        print(f"accord-{service}: configuration error: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, service=service)
    try:
        parts = build(settings)
    except (SettingsError, FileNotFoundError) as e:
        log.error("service_refused_to_start", reason=str(e))
        print(f"accord-{service}: refusing to start: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(parts))
    except (SettingsError, FileNotFoundError) as e:  # e.g. a key file the runtime loads at start
        log.error("service_refused_to_start", reason=str(e))
        print(f"accord-{service}: refusing to start: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:
        if "bind" not in str(e).lower():
            raise
        address, hint = f"{settings.grpc_host}:{settings.grpc_port}", f"set {service.upper()}_GRPC_PORT"
        if "metrics endpoint" in str(e):
            address, hint = f"{settings.metrics_host}:{settings.metrics_port}", f"set {service.upper()}_METRICS_PORT"
        log.error("service_refused_to_start", reason=f"cannot listen on {address}: {e}")
        print(f"accord-{service}: cannot listen on {address} (in use?): {hint}", file=sys.stderr)
        return 2
