"""Signals from NATS: producers publish `accord.metrics.v1.SignalBatch` messages to
`accord.signals.v1.<service id>` (stream SIGNALS) with an `Authorization: Bearer <token>`
header; metrics records them exactly as RecordSignalBatch would (same validation, same
who-may-record rule, duplicates stored once), through a durable pull consumer.

What happens to a message:

- recorded (or all duplicates): acknowledged;
- it can never be recorded — its bytes are not a SignalBatch, the batch is empty, a signal
  breaks a field rule, the token is missing, bad or expired, the sender does not provide
  the service — or it names a service still unknown after `UNKNOWN_SERVICE_RETRIES`
  deliveries (registration may be on its way, so it is retried first): it is copied to the
  DEADLETTER stream on `accord.deadletter.metrics.<subject>` with the reason
  (`accord_kit.deadletter`), THEN acknowledged, with an alert (`signal_batch_dead_lettered`
  log, `alert=true`) and the health service `accord.deadletter` NOT_SERVING (what it was
  about: `ServiceParts.health.detail`);
- anything else (the store cannot be read or written, the dead-letter copy cannot be
  stored): never acknowledged — nak'ed with a delay growing with each delivery (1 s, 2 s, 4 s,
  … at most 30 s) and tried again until it can be recorded.

The JetStream ack a producer gets only says the stream holds its batch. A producer that wants
to hear the outcome sets the header `Accord-Reply-To: <subject>` (e.g. an inbox it subscribed
to before publishing): once metrics has recorded or rejected the batch, it publishes a core
NATS message there with the headers `Accord-Status` (`recorded` or `rejected`) and
`Accord-Msg-Id` (the batch's own `Nats-Msg-Id`, to match the answer with the batch), and a
JSON body:

    {"status": "recorded", "accepted": 3, "duplicates": 1, "corrections": 0,
     "msg_id": "…", "subject": "accord.signals.v1.email", "stream_sequence": 42}
    {"status": "rejected", "code": "invalid_argument",
     "reason": "signals[0].outage.end: must be after start", "msg_id": "…", …}

A batch's `correction_reason` (SignalBatch) is the `reason` of the corrections it brings
(`SignalsCorrected`); one too long or not printable rejects the batch (`invalid_argument`,
naming `correction_reason`).

`code` is `invalid_argument` (not a SignalBatch, empty, a field rule), `unauthenticated`,
`permission_denied` (not the service's provider) or `failed_precondition` (a service still
unknown after the retries). A batch delivered again after its answer was sent (an ack lost on
the way) is recorded again as duplicates, and answered again. Nothing is answered while a
batch waits to be tried again. (JetStream answers the publish itself, so the message's own
reply subject is not metrics'.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

from accord.metrics.v1 import signals_pb2
from accord_kit.auth import TokenVerifier
from accord_kit.context import Principal
from accord_kit.deadletter import HEALTH, dead_letter, ensure_deadletter_stream
from accord_kit.logging import get_logger
from accord_kit.nats_util import connect
from accord_kit.runtime import HealthBoard
from accord_kit.threads import finish_in_thread
from accord_metrics.application import Metrics
from accord_metrics.domain import NotTheProviderError, UnknownServiceError
from accord_metrics.signals import InvalidSignalError, Read, correction_reason, validate

log = get_logger("accord.metrics.intake")

STREAM = "SIGNALS"
SUBJECTS = ["accord.signals.v1.>"]
DURABLE = "metrics-SIGNALS"
UNKNOWN_SERVICE_RETRIES = 20
REPLY_TO = "Accord-Reply-To"
STATUS = "Accord-Status"
MSG_ID = "Accord-Msg-Id"
MAX_RETRY_DELAY = 30.0


class BatchRejectedError(Exception):
    """The batch can never be recorded; the message says why, `code` names the kind."""

    def __init__(self, message: str, code: str = "invalid_argument") -> None:
        super().__init__(message)
        self.code = code


async def ensure_signals_stream(js: Any, replicas: int = 1) -> None:
    config = api.StreamConfig(
        name=STREAM,
        subjects=SUBJECTS,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        description="Signal batches producers publish for the metrics service",
    )
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)


class SignalIntake:
    def __init__(
        self,
        app: Metrics,
        nats_url: str,
        verifier: TokenVerifier,
        replicas: int = 1,
        *,
        health: HealthBoard | None = None,
        retry_delay: float = 1.0,
        nats_auth: dict[str, str] | None = None,
    ) -> None:
        self.nats_auth = dict(nats_auth or {})
        self.app = app
        self.nats_url = nats_url
        self.verifier = verifier
        self.replicas = replicas
        self.health = health
        self.retry_delay = retry_delay
        self.recorded = 0
        self.rejected = 0  # dead-lettered
        self.retried = 0  # nak'ed after a failure that may pass
        self._nc: Any = None
        self._js: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        nc = await connect(self.nats_url, name="accord-metrics-intake", **self.nats_auth)
        try:
            js = nc.jetstream()
            self._nc, self._js = nc, js
            await ensure_signals_stream(js, self.replicas)
            await ensure_deadletter_stream(js, self.replicas)
            await js.add_consumer(
                STREAM,
                api.ConsumerConfig(
                    durable_name=DURABLE,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_wait=60,
                    max_deliver=-1,
                    description="metrics records published signal batches",
                ),
            )
            sub = await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(20, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                for msg in msgs:
                    try:
                        await self._handle(msg)
                    except Exception:  # e.g. the ack could not be sent: the message comes again
                        log.exception("signal_batch_handling_failed", subject=msg.subject)
        finally:
            await nc.close()

    async def _handle(self, msg: Msg) -> None:
        try:
            principal, signals, reason, reads = self._read(msg)
            outcome = await finish_in_thread(  # validated by _read; the batch is ours, parsed from the message
                self.app.record, principal, signals, reason, via="nats", owned=True, reads=reads
            )
        except BatchRejectedError as e:
            await self._reject(msg, str(e), e.code)
            return
        except UnknownServiceError as e:
            if self._deliveries(msg) < UNKNOWN_SERVICE_RETRIES:
                await msg.nak(delay=2.0)
                return
            reason = f"{e} (still unknown after {UNKNOWN_SERVICE_RETRIES} deliveries)"
            await self._reject(msg, reason, "failed_precondition")
            return
        except InvalidSignalError as e:
            await self._reject(msg, str(e), "invalid_argument")
            return
        except NotTheProviderError as e:
            await self._reject(msg, str(e), "permission_denied")
            return
        except Exception as e:  # the store: retry later, never drop
            await self._retry(msg, f"{type(e).__name__}: {e}")
            return
        self.recorded += outcome.accepted
        await msg.ack()
        await self._reply(
            msg,
            "recorded",
            {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "corrections": outcome.corrections},
        )

    def _read(self, msg: Msg) -> tuple[Principal, list[signals_pb2.Signal], str, list[Read | None]]:
        """What the message says (its signals and correction reason, and what validating each
        signal read of it) and who sent it. Nothing here depends on anything but the message, so
        a failure is final (BatchRejectedError)."""
        headers = msg.headers or {}
        try:
            principal = self.verifier.verify(headers.get("Authorization") or headers.get("authorization"))
        except Exception as e:
            raise BatchRejectedError(f"the Authorization header: {e}", "unauthenticated") from e
        try:
            batch = signals_pb2.SignalBatch.FromString(msg.data or b"")
        except Exception as e:
            what = f"{type(e).__name__}: {e}"
            raise BatchRejectedError(f"the message is not an accord.metrics.v1.SignalBatch ({what})") from e
        if not batch.signals:
            raise BatchRejectedError("the batch has no signals")
        try:
            reason = correction_reason(batch.correction_reason)
        except InvalidSignalError as e:
            raise BatchRejectedError(str(e)) from e
        signals = list(batch.signals)
        reads: list[Read | None] = []
        for i, s in enumerate(signals):
            try:
                reads.append(validate(s, i))
            except Exception as e:
                raise BatchRejectedError(str(e) if isinstance(e, InvalidSignalError) else f"signals[{i}]: {e}") from e
        return principal, signals, reason, reads

    @staticmethod
    def _deliveries(msg: Msg) -> int:
        try:
            return int(msg.metadata.num_delivered or 1)
        except Exception:
            return 1

    async def _retry(self, msg: Msg, error: str) -> None:
        self.retried += 1
        delay = min(MAX_RETRY_DELAY, self.retry_delay * 2 ** min(self._deliveries(msg) - 1, 5))
        n = self._deliveries(msg)
        log.warning("signal_batch_retry", subject=msg.subject, deliveries=n, delay=delay, error=error)
        await msg.nak(delay=delay)

    async def _reject(self, msg: Msg, reason: str, code: str) -> None:
        """Dead-letter, then acknowledge; if the copy cannot be stored, retry instead."""
        try:
            to = await dead_letter(self._js, "metrics", msg, reason, replicas=self.replicas)
        except Exception as e:
            await self._retry(msg, f"the dead-letter copy could not be stored: {type(e).__name__}: {e}")
            return
        await msg.ack()
        self.rejected += 1
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        log.error("signal_batch_dead_lettered", alert=True, subject=msg.subject, stream_seq=seq, reason=reason, to=to)
        if self.health is not None:
            await self.health.set(HEALTH, False, f"{STREAM} message {seq} on {msg.subject}: {reason}")
        await self._reply(msg, "rejected", {"code": code, "reason": reason})

    async def _reply(self, msg: Msg, status: str, outcome: dict[str, Any]) -> None:
        headers = msg.headers or {}
        to = headers.get(REPLY_TO)
        if not to or self._nc is None:
            return
        msg_id = headers.get("Nats-Msg-Id", "")
        try:
            seq = int(msg.metadata.sequence.stream) if msg.metadata else 0
        except Exception:
            seq = 0
        body = {"status": status, **outcome, "msg_id": msg_id, "subject": msg.subject, "stream_sequence": seq}
        try:
            await self._nc.publish(to, json.dumps(body).encode(), headers={STATUS: status, MSG_ID: msg_id})
        except Exception as e:  # the producer's inbox is its own business
            log.info("signal_batch_reply_failed", to=to, error=str(e) or type(e).__name__)


def intake_task(intake: SignalIntake) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    return intake.run
