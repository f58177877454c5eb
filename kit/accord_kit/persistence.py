"""Event store plumbing: durable SQLite, PostgreSQL checks, and a mapper that records
who caused each event (actor, correlation, causation) and when it was recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.postgres import PostgresFactory
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)
from eventsourcing.utils import Environment

from accord_kit import context, tracing
from accord_kit.chain import (
    ChainedPostgresApplicationRecorder,
    ChainedPostgresProcessRecorder,
    ChainedSQLiteApplicationRecorder,
    ChainedSQLiteProcessRecorder,
)
from accord_kit.settings import ServiceSettings, SettingsError

META_KEY = "__accord_meta__"


class DurabilityError(SettingsError):
    """The store is configured to acknowledge writes it has not made durable."""


class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    """Every connection in WAL mode with synchronous=FULL, checked, not assumed."""

    def _create_connection(self) -> SQLiteConnection:
        conn = super()._create_connection()
        if not self.is_sqlite_memory_mode:
            cur = conn._sqlite_conn.cursor()
            cur.execute("PRAGMA synchronous=FULL;")
            cur.execute("PRAGMA synchronous;")
            level = cur.fetchone()[0]
            if level < 2:  # 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
                raise DurabilityError(f"SQLite refused synchronous=FULL (it reports {level}) for {self.db_name}")
        return conn


class DurableSQLiteDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, **kwargs: Any) -> None:
        super().__init__(db_name, **kwargs)
        self.pool.close()
        self.pool = DurableSQLiteConnectionPool(db_name=db_name, lock_timeout=kwargs.get("lock_timeout"))


class DurableSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with synchronous=FULL on every connection, whose
    application and process recorders keep the log's hash chain (accord_kit.chain)."""

    application_recorder_class = ChainedSQLiteApplicationRecorder
    process_recorder_class = ChainedSQLiteProcessRecorder

    def __init__(self, env: Environment | Any) -> None:
        super().__init__(env)
        old = self.datastore
        self.datastore = DurableSQLiteDatastore(
            db_name=old.pool.db_name,
            lock_timeout=old.pool.lock_timeout,
            single_row_tracking=old.single_row_tracking,
            originator_id_type=old.originator_id_type,
        )
        old.close()


class ChainedPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory whose application and process recorders keep
    the log's hash chain (accord_kit.chain)."""

    application_recorder_class = ChainedPostgresApplicationRecorder
    process_recorder_class = ChainedPostgresProcessRecorder


class AccordMapper(Mapper[Any]):
    """Adds the request's actor, correlation and causation ids and the recording time (and,
    while tracing is on, the current span's traceparent) to every stored event's state, and
    strips them again when events are loaded."""

    clock_now: Callable[[], datetime] | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        ctx = context.current()
        meta: dict[str, Any] = {
            "correlation_id": ctx.correlation_id,
            "causation_id": ctx.causation_id,
            "recorded_at": (self.clock_now() if self.clock_now else None),
        }
        if tracing.enabled and (traceparent := tracing.current_traceparent()):
            meta["traceparent"] = traceparent  # the relay continues this trace when it publishes
        if ctx.principal is not None:
            meta["actor"] = {
                "subject": ctx.principal.subject,
                "department": ctx.principal.department,
                "role": ctx.principal.role,
            }
        # Attach for the base mapper's vars() copy, then detach from the object again.
        domain_event.__dict__[META_KEY] = meta
        try:
            return super().to_stored_event(domain_event)
        finally:
            domain_event.__dict__.pop(META_KEY, None)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        event, _ = self.to_domain_event_with_meta(stored_event)
        return event

    def to_domain_event_with_meta(self, stored_event: StoredEvent) -> tuple[DomainEventProtocol[Any], dict[str, Any]]:
        event = super().to_domain_event(stored_event)
        meta = event.__dict__.pop(META_KEY, None) or {}
        return event, meta


def check_sqlite_file(path: str) -> None:
    """Refuse a SQLite file whose journal cannot be WAL (e.g. a network filesystem)."""
    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL;").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DurabilityError(f"SQLite file {path} cannot use WAL journal mode (got {mode!r})")
    finally:
        conn.close()


def check_postgres(settings: ServiceSettings) -> None:
    """Refuse a PostgreSQL server that acknowledges commits before they are durable."""
    import psycopg

    pg = settings.postgres
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password or None, dbname=pg.dbname, connect_timeout=10
    ) as conn:
        for name, bad in (("fsync", {"off"}), ("synchronous_commit", {"off", "local"})):
            row = conn.execute(f"SHOW {name}").fetchone()
            value = str(row[0]) if row else ""
            if value in bad:
                raise DurabilityError(
                    f"PostgreSQL setting {name}={value} on {pg.host}:{pg.port}/{pg.dbname} would acknowledge "
                    "writes that are not durable; set it to 'on'"
                )


def ensure_postgres_database(settings: ServiceSettings) -> None:
    """Create the service's database if it does not exist yet."""
    import psycopg
    from psycopg import sql

    pg = settings.postgres
    with psycopg.connect(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.dbname,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg.dbname)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another instance of the service created it at the same moment


def prepare_store(settings: ServiceSettings) -> None:
    """Make the store ready and prove it is durable, or raise saying which setting is wrong."""
    if settings.persistence == "sqlite":
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        check_sqlite_file(str(settings.sqlite_path))
    else:
        ensure_postgres_database(settings)
        check_postgres(settings)
