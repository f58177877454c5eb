"""Delivering queued notifications: webhooks (HTTP POST of JSON, signed with the
subscription's secret) and Alertmanager (`POST /api/v2/alerts`).

At least once, safely repeatable: every attempt of a notification carries the same
`Idempotency-Key` (its id), so a receiver that keeps the keys it has seen can drop a
repeat — one comes after a crash between the receiver's answer and the notifier's record of
it. A 2xx answer delivers; a 5xx, 408 or 429 answer, a timeout or a connection error is
tried again after an exponential backoff (`retry_base` × 2^(attempt−1), at most
`retry_max`); after `max_attempts` attempts, or on any other answer (a 4xx refuses it for
good), the notification is abandoned with an alert (`notification_abandoned` log with
`alert=true`, health service `accord.delivery` NOT_SERVING until restart). Every attempt
and outcome is an event of the notification, saved before the next attempt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from accord_kit.logging import get_logger
from accord_kit.threads import finish_in_thread
from accord_notifier.application import Notifier
from accord_notifier.domain import ALERTMANAGER, Notification

log = get_logger("accord.notifier.delivery")
HEALTH = "accord.delivery"  # NOT_SERVING once a notification was abandoned (until restart)
SIGNATURE_HEADER = "Accord-Signature"
TIMESTAMP_HEADER = "Accord-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout: float = 10.0  # seconds per attempt
    max_attempts: int = 8
    retry_base: float = 2.0  # seconds before the second attempt; doubles after each failure
    retry_max: float = 600.0
    alertmanager_url: str = ""  # e.g. http://127.0.0.1:9093 (its /api/v2/alerts)
    poll_seconds: float = 1.0  # how often due notifications are looked for (a local save wakes it sooner)
    concurrency: int = 16

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.retry_max, self.retry_base * (2 ** (attempt - 1))))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 with the subscription's secret over `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def body_bytes(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Deliverer:
    def __init__(
        self,
        app: Notifier,
        policy: DeliveryPolicy,
        *,
        report: Callable[[str, bool, str], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.report = report  # (health name, serving, detail)
        self._transport = transport
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[str] = set()
        self.abandoned = 0

    def _saved(self) -> None:  # called by the application after any save, in any thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.app.add_save_listener(self._saved)
        limits = httpx.Limits(max_connections=self.policy.concurrency)
        try:
            async with httpx.AsyncClient(
                timeout=self.policy.timeout, limits=limits, transport=self._transport, follow_redirects=False
            ) as client:
                while not stop.is_set():
                    self._wake.clear()
                    try:
                        await self.deliver_due(client)
                    except Exception:
                        log.exception("delivery_round_failed")
                    waiter = asyncio.ensure_future(self._wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait(
                        [waiter, stopper], timeout=self.policy.poll_seconds, return_when="FIRST_COMPLETED"
                    )
                    for t in (waiter, stopper):
                        t.cancel()
        finally:
            self.app.remove_save_listener(self._saved)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Attempt every notification due now (not already in flight); how many were attempted."""
        now = self.app.clock.now()
        due = await finish_in_thread(self.app.due, now, self.policy.concurrency * 4)
        due = [n for n in due if str(n.id) not in self._in_flight]
        if not due:
            return 0
        sem = asyncio.Semaphore(self.policy.concurrency)

        async def one(n: Notification) -> None:
            async with sem:
                await self.attempt(client, n)

        await asyncio.gather(*(one(n) for n in due))
        return len(due)

    async def attempt(self, client: httpx.AsyncClient, n: Notification) -> None:
        key = str(n.id)
        self._in_flight.add(key)
        try:
            await self._attempt(client, n)
        finally:
            self._in_flight.discard(key)

    async def _attempt(self, client: httpx.AsyncClient, n: Notification) -> None:
        app, number = self.app, len(n.attempts) + 1
        if n.target == ALERTMANAGER:
            if not self.policy.alertmanager_url:
                await self._abandon(n, "no Alertmanager is configured (NOTIFIER_ALERTMANAGER_URL)")
                return
            url = self.policy.alertmanager_url.rstrip("/") + "/api/v2/alerts"
            payload = body_bytes([n.body])
            headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key_of(n)}
        else:
            sub = await finish_in_thread(app.subscription, n.department_id, n.subscription_id)
            if sub is None or not sub["active"]:
                await self._abandon(n, "unsubscribed")
                return
            url = sub["url"]
            payload = body_bytes(n.body)
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "accord-notifier",
                IDEMPOTENCY_HEADER: key_of(n),
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: signature(sub["secret"], stamp, payload),
            }
        status, error = 0, ""
        try:
            response = await client.post(url, content=payload, headers=headers)
            status = response.status_code
        except httpx.TimeoutException as e:
            error = f"timeout: {type(e).__name__}"
        except httpx.TransportError as e:
            error = f"connection error: {type(e).__name__}: {e}"
        if 200 <= status < 300:
            await finish_in_thread(app.record_delivered, n.id, status)
            log.info("notification_delivered", notification_id=key_of(n), kind=n.kind, target=n.target,
                     attempt=number, status=status)  # fmt: skip
            return
        if status:
            error = f"HTTP {status}"
        retry = status == 0 or status >= 500 or status in RETRIED_STATUSES
        if retry and number < self.policy.max_attempts:
            at = app.clock.now() + timedelta(seconds=self.policy.backoff(number))
            await finish_in_thread(app.record_attempt, n.id, status, error, _iso(at))
            log.warning("notification_attempt_failed", notification_id=key_of(n), kind=n.kind, target=n.target,
                        attempt=number, error=error, next_attempt_at=_iso(at))  # fmt: skip
            return
        await finish_in_thread(app.record_attempt, n.id, status, error, "")
        reason = f"gave up after {number} attempts: {error}" if retry else f"refused: {error}"
        await self._abandon(n, reason)

    async def _abandon(self, n: Notification, reason: str) -> None:
        await finish_in_thread(self.app.record_abandoned, n.id, reason)
        self.abandoned += 1
        log.error("notification_abandoned", alert=True, notification_id=key_of(n), kind=n.kind, target=n.target,
                  department_id=n.department_id or None, subscription_id=n.subscription_id or None,
                  reason=reason)  # fmt: skip
        if self.report is not None:
            await self.report(HEALTH, False, f"notification {key_of(n)} abandoned: {reason}")


def key_of(n: Notification) -> str:
    return str(n.id)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()
