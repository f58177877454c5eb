"""Signals from NATS: producers publish `accord.metrics.v1.SignalBatch` messages to
`accord.signals.v1.<service id>` (stream SIGNALS) with an `Authorization: Bearer <token>`
header; metrics records them exactly as RecordSignalBatch would (same validation, same
who-may-record rule, duplicates stored once), through a durable pull consumer.

A batch that can never be recorded (bad token, invalid signal, not the provider) is
acknowledged and reported with an alert; one naming a service not registered yet is
retried for a while (registration may still be on its way); a storage failure is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

from accord.metrics.v1 import signals_pb2
from accord_kit.auth import TokenVerifier
from accord_kit.errors import AccordError
from accord_kit.logging import get_logger
from accord_kit.nats_util import connect
from accord_metrics.application import Metrics
from accord_metrics.domain import NotTheProviderError, UnknownServiceError
from accord_metrics.signals import InvalidSignalError

log = get_logger("accord.metrics.intake")

STREAM = "SIGNALS"
SUBJECTS = ["accord.signals.v1.>"]
DURABLE = "metrics-SIGNALS"
UNKNOWN_SERVICE_RETRIES = 20


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
    def __init__(self, app: Metrics, nats_url: str, verifier: TokenVerifier, replicas: int = 1) -> None:
        self.app = app
        self.nats_url = nats_url
        self.verifier = verifier
        self.replicas = replicas
        self.recorded = 0
        self.rejected = 0

    async def run(self, stop: asyncio.Event) -> None:
        nc = await connect(self.nats_url, name="accord-metrics-intake")
        try:
            js = nc.jetstream()
            await ensure_signals_stream(js, self.replicas)
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
                    await self._handle(msg)
        finally:
            await nc.close()

    async def _handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            principal = self.verifier.verify(headers.get("Authorization") or headers.get("authorization"))
            batch = signals_pb2.SignalBatch.FromString(msg.data)
            if not batch.signals:
                raise InvalidSignalError("the batch has no signals")
            outcome = await asyncio.to_thread(self.app.record, principal, list(batch.signals))
        except UnknownServiceError as e:
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            if delivered < UNKNOWN_SERVICE_RETRIES:
                await msg.nak(delay=2.0)
                return
            await self._reject(msg, str(e))
            return
        except (AccordError, InvalidSignalError, NotTheProviderError, ValueError) as e:
            await self._reject(msg, str(e))
            return
        except Exception as e:  # the store: retry later, never drop
            log.warning("signal_batch_retry", subject=msg.subject, error=f"{type(e).__name__}: {e}")
            await msg.nak(delay=1.0)
            return
        self.recorded += outcome.accepted
        await msg.ack()

    async def _reject(self, msg: Msg, reason: str) -> None:
        self.rejected += 1
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        log.error("signal_batch_rejected", alert=True, subject=msg.subject, stream_seq=seq, reason=reason)
        await msg.ack()


def intake_task(intake: SignalIntake) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    return intake.run
