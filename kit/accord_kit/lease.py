"""The single-writer lease of an event-sourced service with a hot standby.

Several instances of one service may run on the same PostgreSQL store; exactly one of them —
the one holding the lease — writes: it runs the relay, the consumers, the clock-driven tasks
and sealing, and serves every RPC. The others are hot standbys: their gRPC server is up, their
health is NOT_SERVING, and every call but health and reflection is refused with UNAVAILABLE
("standby: …"), until the active instance dies and one of them takes the lease.

The lease is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`) on the service's
own database, held on a dedicated connection for the life of the process. It needs no clock
and no renewal: PostgreSQL releases it when that session ends — the process exits or is killed
(the kernel closes its socket), or its connection is lost (TCP keepalives end a session whose
peer vanished). An instance whose lease connection breaks stops at once (`lease_lost`, exit 1)
rather than write on without it; its supervisor restarts it as a standby.

What the lease does not cover, the stream's fencing does: a frozen former holder that wakes up
after a standby took over still has its publishes refused by `Nats-Expected-Last-Msg-Id`
(`accord_kit.relay`), and its store writes by the store's optimistic concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from accord_kit.logging import get_logger
from accord_kit.settings import ServiceSettings

log = get_logger("accord.lease")

POLL_SECONDS = 0.25  # how often a standby tries to take the lease
CHECK_SECONDS = 1.0  # how often the holder makes sure its lease connection is alive


def lease_key(service: str) -> int:
    """The advisory lock's 64-bit key: stable, and the same for every instance of `service`."""
    digest = hashlib.sha256(f"accord.lease.{service}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Lease:
    def __init__(self, settings: ServiceSettings, poll_seconds: float = POLL_SECONDS) -> None:
        self.settings = settings
        self.key = lease_key(settings.service)
        self.poll_seconds = poll_seconds
        self.held = asyncio.Event()
        self.acquired_after: float | None = None  # seconds the instance waited as a standby
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        pg = self.settings.postgres
        return psycopg.connect(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            password=pg.password or None,
            dbname=pg.dbname,
            autocommit=True,
            connect_timeout=5,
            application_name=f"accord-{self.settings.service}-lease",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )

    def _try(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this instance holds the lease (True) or the service stops (False)."""
        started = time.monotonic()
        waiting_logged = False
        while not stop.is_set():
            try:
                if await asyncio.to_thread(self._try):
                    self.acquired_after = time.monotonic() - started
                    self.held.set()
                    log.info(
                        "lease_acquired",
                        service=self.settings.service,
                        instance=self.settings.instance,
                        waited_seconds=round(self.acquired_after, 3),
                    )
                    return True
                if not waiting_logged:
                    log.info(
                        "lease_standby",
                        service=self.settings.service,
                        instance=self.settings.instance,
                        reason="another instance holds the lease",
                    )
                    waiting_logged = True
            except Exception as e:
                log.warning("lease_unreachable", error=f"{type(e).__name__}: {e}")
                self._close()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass
        return False

    def _alive(self) -> bool:
        try:
            self._conn.execute("SELECT 1").fetchone()
            return True
        except Exception:
            return False

    async def watch(self, stop: asyncio.Event) -> str | None:
        """While held: return why the lease was lost (its connection broke), or None on stop."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECK_SECONDS)
                return None
            except TimeoutError:
                pass
            if not await asyncio.to_thread(self._alive):
                self.held.clear()
                return "the lease's PostgreSQL session ended; another instance may hold it now"
        return None

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def release(self) -> None:
        """Give the lease up (closing the session releases the advisory lock)."""
        self.held.clear()
        self._close()
