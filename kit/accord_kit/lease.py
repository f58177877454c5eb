"""The single-writer lease of an event-sourced service with a hot standby.

Several instances of one service may run on the same PostgreSQL store; exactly one of them —
the one holding the lease — writes: it runs the relay, the consumers, the clock-driven tasks
and sealing, and serves every RPC. The others are hot standbys: their gRPC server is up, their
health is NOT_SERVING, and every call but health and reflection is refused with UNAVAILABLE
("standby: …"), until the active instance dies and one of them takes the lease.

The lease is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`) on the service's
own database, held on a dedicated connection for the life of the process. PostgreSQL releases it
when that session ends — the process exits or is killed (the kernel closes its socket), its
connection is lost (TCP keepalives end a session whose peer vanished), or the process stops
talking: the holder's session has `idle_session_timeout` = `ACCORD_LEASE_IDLE_SECONDS` (10 s; at
least 3) and a thread of its own sends `SELECT 1` every CHECK_SECONDS, so a frozen holder
(SIGSTOP, a stalled VM) loses the lease after that long while a live one never does. Shorter,
a frozen holder's standby takes over sooner; a holder whose keepalive thread is held up that long
(a machine starved of CPU) loses the lease though alive. An instance whose lease session ended
stops at once when it notices (`lease_lost`, exit 1) rather than write on without it; its
supervisor starts it again as a standby.

What the lease does not cover, the stream's fencing does: a frozen former holder that wakes up
after a standby took over still has its publishes refused by `Nats-Expected-Last-Msg-Id`
(`accord_kit.relay`), and its store writes by the store's optimistic concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

from accord_kit.logging import get_logger
from accord_kit.settings import ServiceSettings
from accord_kit.threads import finish_in_thread

log = get_logger("accord.lease")

POLL_SECONDS = 0.25  # how often a standby tries to take the lease
CHECK_SECONDS = 1.0  # how often the holder's keepalive thread speaks on its lease session


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
        self._lost: str | None = None  # why the keepalive thread found the session gone
        self._stop_keepalive = threading.Event()

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
        if not (row and row[0]):
            return False
        try:  # a holder that stops talking (frozen) loses the session, and the lease with it
            idle_ms = round(self.settings.lease_idle_seconds * 1000)
            self._conn.execute(f"SET idle_session_timeout = '{idle_ms}ms'")
        except Exception as e:  # PostgreSQL < 14: only a dead process or connection frees the lease
            log.warning("lease_idle_timeout_unavailable", error=f"{type(e).__name__}: {e}")
        threading.Thread(target=self._keepalive, name="lease-keepalive", daemon=True).start()
        return True

    def _keepalive(self) -> None:
        """Speak on the lease session every CHECK_SECONDS until released; note a lost session."""
        while not self._stop_keepalive.wait(CHECK_SECONDS):
            try:
                self._conn.execute("SELECT 1").fetchone()
            except Exception as e:
                self._lost = f"{type(e).__name__}: {e}".strip()
                return

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this instance holds the lease (True) or the service stops (False)."""
        started = time.monotonic()
        waiting_logged = False
        while not stop.is_set():
            try:
                if await finish_in_thread(self._try):
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

    async def watch(self, stop: asyncio.Event) -> str | None:
        """While held: return why the lease was lost (its session ended), or None on stop."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECK_SECONDS / 4)
                return None
            except TimeoutError:
                pass
            if self._lost is not None:
                self.held.clear()
                return f"the lease's PostgreSQL session ended ({self._lost}); another instance may hold it now"
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
        self._stop_keepalive.set()
        self._close()
