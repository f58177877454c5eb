"""Tamper evidence for an event-sourced service's log (docs/domain.md §6, "Verification"):
a hash chain over every stored record, written in the same transaction as the record;
signed checkpoints sealed into the log itself; and a verifier that needs only the log
and the public keys.

The chain
---------
Every record of the notification log (the application's events table; snapshots are
not part of the log and are not chained) gets a chain hash::

    h_0 = 32 zero bytes
    h_i = sha256(h_{i-1} || canonical(record_i))

where ``record_i`` is the i-th record in notification-id order and, with every integer
big-endian and every length an unsigned 64-bit big-endian byte count::

    canonical(record) = int64(notification id)
                     || int64(originator version)
                     || uint64(len(o)) || o      o = originator id as text, UTF-8
                     || uint64(len(t)) || t      t = topic, UTF-8
                     || uint64(len(s)) || s      s = the state bytes exactly as stored

The originator id's text is what the store gives back when read: the hyphenated
lower-case form for UUIDs (``str(uuid)``), the string itself for text ids. The state is
hashed as stored (it may be compressed or encrypted): the chain is over what is stored,
so the verifier needs no keys but the signing ones. Every field is fixed-width or
length-prefixed, so two different records never have the same encoding.

The recorders below (:class:`ChainedSQLiteApplicationRecorder`,
:class:`ChainedSQLiteProcessRecorder`, :class:`ChainedPostgresApplicationRecorder`,
:class:`ChainedPostgresProcessRecorder`) compute ``h_i`` while the write transaction holds
the writer lock (SQLite serialises writers; PostgreSQL inserts run under an EXCLUSIVE
table lock), from the highest entry of the chain table, and insert it IN THE SAME
TRANSACTION as the records into a side table (with group commit, accord_kit.groupcommit,
a transaction holds several saves, each in its savepoint, chained one after the other)::

    event_chain(notification_id INTEGER/bigint PRIMARY KEY, hash BLOB/bytea)

named ``event_chain`` beside the default ``stored_events`` table (SQLite) and
``<prefix>_event_chain`` beside ``<prefix>_events`` (PostgreSQL, e.g. ``counters_events``
→ ``counters_event_chain``), so several applications may share one database. A record
whose notification id is not above the chain's head is refused (:class:`ChainError`):
that only happens when the log's tail was removed behind the recorder's back, and the
recorder will not paper over it. When the chain table is first created beside a log
that already has records, the existing records are chained in that same transaction
("adoption"): their history before that moment is taken as found.

Checkpoints
-----------
A :class:`Checkpoint` is an Ed25519 signature by the service's key over::

    b"accord.chain.checkpoint.v1\\x00"
    || uint64(len) || service name (UTF-8)
    || int64(position)              the notification id sealed
    || uint64(32) || chain hash     h at that position
    || uint64(len) || sealed_at     ISO 8601 UTC, microseconds, e.g. 2026-01-01T00:00:00.000000+00:00
    || uint64(len) || key id        first 16 hex digits of sha256(raw public key)

It is stored as a ``Checkpoints.Sealed`` event of the store's ``Checkpoints`` aggregate
(one per service), so checkpoints are events of the log and are themselves chained.
:func:`seal` seals the current head: it first verifies the records since the previous
checkpoint (so it never signs a tampered log), signs, and saves. Every event-sourced
service runs it periodically and once at shutdown (``accord_kit.runtime``,
``<SERVICE>_SEAL_SECONDS``) and serves its records, chain and public keys to verifiers
outside it (``accord_kit.audit``, ``accord.audit.v1.AuditService``). An auditor can also
keep checkpoints outside the store (e.g. from the service's published stream, where they
are ``accord.audit.v1.ChainCheckpointSealed`` events) and pass them to the verifier: only
such copies can prove that the tail of a log was cut off together with its chain rows
and checkpoints.

How the verifier tells the kinds apart
--------------------------------------
:func:`verify` walks the records in notification-id order and recomputes the chain from
the records themselves. With the stored chain table ``S`` (id → hash) it merges the two
id sequences, and the FIRST problem in log order is reported:

- a chain entry ``k`` with no record at ``k`` while records follow → **MISSING** at k;
  chain entries with no records and nothing after them → **TRUNCATED** at the first one.
- a record ``n`` with no chain entry → **INSERTED** at n (every genuine record's chain
  row was written in its own transaction).
- a record ``n`` whose recomputed hash differs from ``S[n]`` (g = the last good record,
  ``h_g`` its hash). The verifier looks where the record's content genuinely belongs
  (``m``: the id whose stored hash it reproduces from the stored hash before it) and
  where the content that genuinely belongs at n went (``j``: a later record that
  reproduces ``S[n]`` from ``h_g``):

  * the next record chains from ``h_g`` as if n were not there → **INSERTED** at n
    (an extra record with a forged chain row);
  * n's genuine content is found later and n's content belongs later → **REORDERED**;
  * n's genuine content is found later, n's content belongs nowhere (or earlier) →
    **INSERTED** (forged records pushed the genuine ones to higher ids);
  * n's content belongs later, its own content is gone → **MISSING** at n (a record was
    deleted and the later ones renumbered down);
  * neither, and ids are skipped between g and n → **MISSING** at g+1 (a record was
    deleted together with its chain row, so n no longer chains from its predecessor).
    In SQLite an honest log has no skipped ids; PostgreSQL sequences skip ids after a
    rolled-back insert, so there an edited record right after an honest gap would be
    labelled MISSING at the gap rather than ALTERED at the record;
  * otherwise → **ALTERED** at n (the bytes of the record changed in place).
- records with decreasing ids in the input → **REORDERED** (a store read never does that).

Checkpoints (from the log's own ``Checkpoints.Sealed`` records, plus any kept outside):

- cannot be decoded, signed by a key that is not trusted, signature invalid, sealed
  for another service, or sealing a position at or after its own record →
  **BAD_CHECKPOINT** at the checkpoint's own record (at its sealed position for a
  checkpoint kept outside the store);
- the recomputed hash at its position differs from the signed hash while the stored
  chain agrees with the records → **BAD_CHECKPOINT** at the sealed position, with
  ``since`` = the previous verified checkpoint: the records in (since, position] were
  rewritten together with their chain rows (an attacker who can write the database can
  recompute an unkeyed chain, but cannot sign) — or the checkpoint is false;
- the log ends before its position → **TRUNCATED** at (last record + 1);
- its position is inside the log but has no record → **MISSING** at that position.

Without the chain table (``chain_hashes=None``) only checkpoints can show a change,
located to the interval between two checkpoints. Records after the last checkpoint are
protected only by the chain table, which an attacker with write access can recompute:
seal often. Zero false alarms: an untouched log always verifies clean, including while
other writers append (:func:`verify_store` reads both heads in one snapshot and verifies
up to there).

Speed and memory: one sha256 per record, under 2 µs in Python: ``verify`` over 10,000
records takes ~15 ms, ``verify_store`` (reading them) ~40 ms on SQLite and ~100 ms on
PostgreSQL. ``verify`` is the reference and holds what it is given; ``verify_store`` (and
the AuditService's verifiers) give the same reports in one pass over the log read page by
page (:class:`ChainVerifier`), holding a page whatever the log's length. Naming a mismatch
costs a second hash of each record after it and a re-read of the chain before it; a
checkpoint sealing a position far behind its record costs one read of that chain entry
(only on the failure path, or for such a checkpoint). To verify incrementally, pass
``start`` = a checkpoint already verified: only records after its position are read and
recomputed (and ``stop`` bounds the end). Writing costs one extra indexed read and one
insert per save, inside the transaction that is open anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import sqlite3
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    ApplicationRecorder,
    DatetimeAsISO,
    DecimalAsStr,
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    Mapper,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from accord_kit.groupcommit import GroupCommit, Write, sqlite_error
from accord_kit.topics import stored_as

ZERO_HASH = bytes(32)
CHAIN_TABLE = "event_chain"
_HEAD = struct.Struct(">qqQ")
_INT = struct.Struct(">q")
_LEN = struct.Struct(">Q")
_SIGNING_TAG = b"accord.chain.checkpoint.v1\x00"


class ChainError(PersistenceError):
    """The chain cannot be extended or trusted (e.g. the log's tail was removed)."""


# -- the format -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordView:
    """One stored record of the log, as the verifier sees it."""

    notification_id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes

    @classmethod
    def of(cls, n: Notification) -> RecordView:
        return cls(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))


def canonical(notification_id: int, originator_id: str, originator_version: int, topic: str, state: bytes) -> bytes:
    """The unambiguous byte encoding of one record (see the module docstring)."""
    o = originator_id.encode()
    t = topic.encode()
    return b"".join(
        (_HEAD.pack(notification_id, originator_version, len(o)), o, _LEN.pack(len(t)), t, _LEN.pack(len(state)), state)
    )


def link(
    previous: bytes, notification_id: int, originator_id: str, originator_version: int, topic: str, state: bytes
) -> bytes:
    """h_i = sha256(h_{i-1} || canonical(record_i))."""
    return hashlib.sha256(
        previous + canonical(notification_id, originator_id, originator_version, topic, state)
    ).digest()


def _link(previous: bytes, r: RecordView, as_id: int | None = None) -> bytes:
    nid = r.notification_id if as_id is None else as_id
    return link(previous, nid, r.originator_id, r.originator_version, r.topic, r.state)


def chain_hashes_of(records: Iterable[RecordView], previous: bytes = ZERO_HASH) -> Iterator[tuple[int, bytes]]:
    """The chain over `records` (in order), starting after `previous`."""
    for r in records:
        previous = _link(previous, r)
        yield r.notification_id, previous


def _uuid_text(stored: str) -> str:
    """str(UUID(stored)) for the hex a SQLite store keeps, without building a UUID."""
    if len(stored) == 32:
        h = stored.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    try:
        return str(UUID(stored))
    except ValueError:
        return stored  # not an id the store could have written: it will not chain


def chain_table_for(events_table_name: str) -> str:
    if events_table_name == "stored_events":
        return CHAIN_TABLE
    if events_table_name.endswith("_events"):
        return events_table_name.removesuffix("_events") + "_" + CHAIN_TABLE
    return events_table_name + "_chain"


def _next_links(
    head_id: int, head_hash: bytes, rows: Iterable[tuple[int, str, int, str, bytes]]
) -> list[tuple[int, bytes]]:
    """Chain new records (id, originator id text, version, topic, state) onto the head."""
    out: list[tuple[int, bytes]] = []
    prev = head_hash
    for nid, oid, version, topic, state in sorted(rows, key=lambda row: row[0]):
        if nid <= head_id:
            raise ChainError(
                f"record {nid} is not after the chain's head {head_id}: the log's tail was removed behind "
                "the store's back; refusing to write until the log is verified"
            )
        prev = link(prev, nid, oid, version, topic, state)
        out.append((nid, prev))
        head_id = nid
    return out


# -- recorders ------------------------------------------------------------------------

# `Application.save(..., with_records=f)`: `f(cursor, notification_ids)` runs in the records' own
# transaction (and savepoint), after they and their chain entries are inserted, with the
# database's cursor (sqlite3 or psycopg) — a projection of the records written with them
# (accord_metrics' signal index). An IntegrityError it raises fails that save alone; any other
# error, the whole group commit.
WITH_RECORDS = "with_records"


def with_records(kwargs: dict[str, Any], cursor: Any, ids: Sequence[int] | None) -> None:
    hook = kwargs.get(WITH_RECORDS)
    if hook is not None and ids:
        hook(cursor, list(ids))


class ChainedRecorder:
    """What the sealer and the verifier need from a chained recorder."""

    @property
    def chain_table_name(self) -> str:
        raise NotImplementedError

    def chain_head(self) -> tuple[int, bytes]:
        """The highest chain entry: (notification id, hash), (0, ZERO_HASH) if none."""
        raise NotImplementedError

    def chain_heads(self) -> tuple[int, int]:
        """(highest record id, highest chain id), read in one snapshot."""
        raise NotImplementedError

    def select_chain_hashes(self, start: int, stop: int | None = None, limit: int | None = None) -> dict[int, bytes]:
        """Chain entries with start <= notification id <= stop (the first `limit` of them)."""
        raise NotImplementedError

    def select_records(self, after: int, stop: int | None = None, limit: int | None = None) -> list[RecordView]:
        """The log's records with after < notification id <= stop, in order, the first
        `limit` of them (a faster select_notifications for the verifier: no domain objects)."""
        raise NotImplementedError

    def _oid_text(self, originator_id: UUID | str) -> str:
        """The originator id as select_notifications() gives it back (what the hash covers)."""
        raise NotImplementedError

    def _new_links(
        self, head: tuple[int, bytes], ids: Sequence[int] | None, stored_events: Sequence[StoredEvent]
    ) -> list[tuple[int, bytes]]:
        """The chain entries of records just inserted under these notification ids, after `head`
        (read under the same write lock)."""
        if ids is None or len(ids) != len(stored_events):
            raise ChainError("the store did not report a notification id for every record")
        rows = [
            (nid, self._oid_text(s.originator_id), s.originator_version, s.topic, s.state)
            for nid, s in zip(ids, stored_events, strict=True)
        ]
        return _next_links(head[0], head[1], rows)


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder, ChainedRecorder):
    """Writes each record's chain hash in the record's own write transaction.

    Concurrent writes are group-committed (accord_kit.groupcommit): writes that arrive while
    a commit is in progress share the next transaction and its fsync, each in a savepoint of
    its own, so an integrity error (a conflict) fails only its own caller."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_commit = GroupCommit(self._apply_group)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return self.group_commit.submit(stored_events, kwargs)

    def _apply_group(self, group: list[Write]) -> None:
        with self.datastore.get_connection(commit=True) as conn:
            c = conn.cursor()
            try:
                c.execute("BEGIN IMMEDIATE")  # the write lock now: no reader's snapshot to upgrade
                try:
                    for w in group:
                        c.execute("SAVEPOINT accord_write")
                        try:
                            w.result = self._insert_events(c, w.stored_events, **w.kwargs)
                        except (sqlite3.IntegrityError, IntegrityError) as e:
                            c.execute("ROLLBACK TO accord_write")
                            w.result, w.error = None, sqlite_error(e)
                            self.group_commit.stats.isolated += 1
                        c.execute("RELEASE accord_write")
                    conn.commit()  # the group's one fsync; only then is any caller answered
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.rollback()
                    raise
            except BaseException as e:
                for w in group:  # nothing of the group was stored: each caller gets the error
                    w.result, w.error = None, sqlite_error(e, fresh=True)
                if not isinstance(e, Exception):
                    raise
            finally:
                c.sqlite_cursor.close()

    @property
    def chain_table_name(self) -> str:
        return chain_table_for(self.events_table_name)

    def _oid_text(self, originator_id: UUID | str) -> str:
        # What select_notifications() will give back for this id.
        if isinstance(originator_id, UUID):
            return str(originator_id) if self.datastore.originator_id_type == "uuid" else originator_id.hex
        return str(self.convert_originator_id(originator_id))

    def _create_table(self, c: SQLiteCursor) -> None:
        super()._create_table(c)
        c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (self.chain_table_name,))
        existed = c.fetchone() is not None
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} "
            "(notification_id INTEGER PRIMARY KEY, hash BLOB NOT NULL)"
        )
        if not existed:
            self._adopt(c)

    def _adopt(self, c: SQLiteCursor) -> None:
        head_id, head_hash = self._chain_head(c)
        c.execute(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
            "WHERE rowid > ? ORDER BY rowid",
            (head_id,),
        )
        rows = [(r[0], str(self.convert_originator_id(r[1])), r[2], r[3], bytes(r[4])) for r in c.fetchall()]
        if rows:
            c.executemany(
                f"INSERT INTO {self.chain_table_name} (notification_id, hash) VALUES (?, ?)",
                _next_links(head_id, head_hash, rows),
            )

    def _chain_head(self, c: SQLiteCursor) -> tuple[int, bytes]:
        c.execute(f"SELECT notification_id, hash FROM {self.chain_table_name} ORDER BY notification_id DESC LIMIT 1")
        row = c.fetchone()
        return (0, ZERO_HASH) if row is None else (int(row[0]), bytes(row[1]))

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if stored_events:
            # The inserts above hold SQLite's write lock: no other writer can move the head now.
            links = self._new_links(self._chain_head(c), ids, stored_events)
            c.executemany(f"INSERT INTO {self.chain_table_name} (notification_id, hash) VALUES (?, ?)", links)
            with_records(kwargs, c.sqlite_cursor, ids)
        return ids

    def chain_head(self) -> tuple[int, bytes]:
        with self.datastore.transaction(commit=False) as c:
            return self._chain_head(c)

    def chain_heads(self) -> tuple[int, int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT (SELECT MAX(rowid) FROM {self.events_table_name}), "
                f"(SELECT MAX(notification_id) FROM {self.chain_table_name})"
            )
            row = c.fetchone()
            return int(row[0] or 0), int(row[1] or 0)

    def select_chain_hashes(self, start: int, stop: int | None = None, limit: int | None = None) -> dict[int, bytes]:
        sql = f"SELECT notification_id, hash FROM {self.chain_table_name} WHERE notification_id >= ?"
        params: list[int] = [start]
        if stop is not None:
            sql += " AND notification_id <= ?"
            params.append(stop)
        sql += " ORDER BY notification_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None  # plain tuples: faster for many rows
            c.execute(sql, params)
            return {int(nid): bytes(h) for nid, h in c.fetchall()}

    def select_records(self, after: int, stop: int | None = None, limit: int | None = None) -> list[RecordView]:
        sql = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
            "WHERE rowid > ?"
        )
        params: list[int] = [after]
        if stop is not None:
            sql += " AND rowid <= ?"
            params.append(stop)
        sql += " ORDER BY rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        oid = _uuid_text if self.datastore.originator_id_type == "uuid" else str
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None
            c.execute(sql, params)
            return [RecordView(nid, oid(o), v, t, bytes(s)) for nid, o, v, t, s in c.fetchall()]


class ChainedSQLiteProcessRecorder(SQLiteProcessRecorder, ChainedSQLiteApplicationRecorder):
    """The process recorder (events + tracking in one transaction), chained."""


class ChainedPostgresApplicationRecorder(PostgresApplicationRecorder, ChainedRecorder):
    """Writes each record's chain hash in the record's own transaction, under the
    events table's EXCLUSIVE lock (so chain order is commit order). Always uses the
    transactional insert path (POSTGRES_ENABLE_DB_FUNCTIONS is not used).

    Concurrent writes are group-committed (accord_kit.groupcommit), as on SQLite: the table
    lock is held until the commit, so without it the server could not combine commits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_commit = GroupCommit(self._apply_group)

    @property
    def chain_table_name(self) -> str:
        return chain_table_for(self.events_table_name)

    def _chain_sql(self, template: str) -> SQL | Any:
        return SQL(template).format(
            schema=Identifier(self.datastore.schema),
            chain=Identifier(self.chain_table_name),
            events=Identifier(self.events_table_name),
        )

    def _oid_text(self, originator_id: UUID | str) -> str:
        if self.datastore.originator_id_type == "uuid" and not isinstance(originator_id, UUID):
            return str(UUID(originator_id))
        return str(originator_id)

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        super()._create_table(curs)
        self.check_identifier_length(self.chain_table_name)
        curs.execute(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s) AS e",
            (self.datastore.schema, self.chain_table_name),
        )
        row = curs.fetchone()
        existed = bool(row and row["e"])
        curs.execute(
            self._chain_sql(
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} (notification_id bigint PRIMARY KEY, hash bytea NOT NULL)"
            )
        )
        if not existed:
            self._lock_table(curs)
            head_id, head_hash = self._chain_head(curs)
            curs.execute(
                self._chain_sql(
                    "SELECT notification_id, originator_id, originator_version, topic, state FROM {schema}.{events} "
                    "WHERE notification_id > %s ORDER BY notification_id"
                ),
                (head_id,),
            )
            rows = [
                (r["notification_id"], str(r["originator_id"]), r["originator_version"], r["topic"], bytes(r["state"]))
                for r in curs.fetchall()
            ]
            if rows:
                curs.executemany(self._insert_chain_sql, _next_links(head_id, head_hash, rows))

    @cached_property
    def _select_head_sql(self) -> Any:
        return self._chain_sql(
            "SELECT notification_id, hash FROM {schema}.{chain} ORDER BY notification_id DESC LIMIT 1"
        )

    @cached_property
    def _insert_chain_sql(self) -> Any:
        return self._chain_sql("INSERT INTO {schema}.{chain} (notification_id, hash) VALUES (%s, %s)")

    def _chain_head(self, curs: Cursor[DictRow]) -> tuple[int, bytes]:
        curs.execute(self._select_head_sql)
        row = curs.fetchone()
        return (0, ZERO_HASH) if row is None else (int(row["notification_id"]), bytes(row["hash"]))

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return self.group_commit.submit(stored_events, kwargs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _apply_group(self, group: list[Write]) -> None:
        # One transaction for the group, each write in a savepoint of its own (psycopg's nested
        # transaction): an integrity error rolls back that write only. Any other failure ends
        # the whole transaction (rolled back) and reaches every caller of the group (retried
        # first, like the library's own insert, for a lost connection).
        for w in group:
            w.result, w.error = None, None
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            for w in group:
                try:
                    with conn.transaction():
                        w.result = self._insert_one(curs, w.stored_events, **w.kwargs)
                except (psycopg.IntegrityError, IntegrityError) as e:
                    w.error = e if isinstance(e, IntegrityError) else IntegrityError(str(e))
                    w.error.__cause__ = e
                    self.group_commit.stats.isolated += 1

    def _insert_one(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert_events(curs, stored_events, **kwargs)  # tracking, for process recorders
        if not stored_events:
            return None
        self._insert_stored_events(curs, stored_events, **kwargs)  # takes the table lock
        notification_ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        # The head, read under that lock (other writers wait for this transaction's end).
        links = self._new_links(self._chain_head(curs), notification_ids, stored_events)
        curs.executemany(self._insert_chain_sql, links)
        with_records(kwargs, curs, notification_ids)
        return notification_ids

    def chain_head(self) -> tuple[int, bytes]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return self._chain_head(curs)

    def chain_heads(self) -> tuple[int, int]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self._chain_sql(
                    "SELECT (SELECT MAX(notification_id) FROM {schema}.{events}) AS log, "
                    "(SELECT MAX(notification_id) FROM {schema}.{chain}) AS chain"
                )
            )
            row = curs.fetchone()
            assert row is not None
            return int(row["log"] or 0), int(row["chain"] or 0)

    def select_chain_hashes(self, start: int, stop: int | None = None, limit: int | None = None) -> dict[int, bytes]:
        sql = "SELECT notification_id, hash FROM {schema}.{chain} WHERE notification_id >= %s"
        params: list[int] = [start]
        if stop is not None:
            sql += " AND notification_id <= %s"
            params.append(stop)
        sql += " ORDER BY notification_id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._chain_sql(sql), params)
            return {int(r["notification_id"]): bytes(r["hash"]) for r in curs.fetchall()}

    def select_records(self, after: int, stop: int | None = None, limit: int | None = None) -> list[RecordView]:
        sql = (
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {schema}.{events} "
            "WHERE notification_id > %s"
        )
        params: list[int] = [after]
        if stop is not None:
            sql += " AND notification_id <= %s"
            params.append(stop)
        sql += " ORDER BY notification_id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(self._chain_sql(sql), params)
            return [RecordView(nid, str(o), v, t, bytes(s)) for nid, o, v, t, s in curs.fetchall()]


class ChainedPostgresProcessRecorder(PostgresProcessRecorder, ChainedPostgresApplicationRecorder):
    """The process recorder (events + tracking in one transaction), chained."""


# -- keys -----------------------------------------------------------------------------


def generate_chain_keypair(directory: Path, service: str) -> tuple[Path, Path]:
    """Write a new Ed25519 checkpoint-signing key pair (PEM, as accord_kit.auth does) into
    `directory`: `<service>_chain_private.pem` (mode 0600) and `<service>_chain_public.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / f"{service}_chain_private.pem"
    public = directory / f"{service}_chain_public.pem"
    private.write_bytes(private_key_pem(key))
    private.chmod(0o600)
    public.write_bytes(public_key_pem(key.public_key()))
    return private, public


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(source: Path | bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file or PEM bytes (unencrypted PKCS8)."""
    pem = source.read_bytes() if isinstance(source, Path) else source
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{source if isinstance(source, Path) else 'the PEM'} is not an Ed25519 private key")
    return key


def load_public_key(source: Path | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file or PEM bytes (SubjectPublicKeyInfo)."""
    pem = source.read_bytes() if isinstance(source, Path) else source
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{source if isinstance(source, Path) else 'the PEM'} is not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- checkpoints ----------------------------------------------------------------------


def _field(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def signing_payload(service: str, position: int, chain_hash: bytes, sealed_at: str, key: str) -> bytes:
    """The bytes a checkpoint's signature covers (see the module docstring)."""
    return b"".join(
        (
            _SIGNING_TAG,
            _field(service.encode()),
            _INT.pack(position),
            _field(chain_hash),
            _field(sealed_at.encode()),
            _field(key.encode()),
        )
    )


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: "this service's chain hash at `position` was `chain_hash`"."""

    service: str
    position: int
    chain_hash: bytes
    sealed_at: str
    key_id: str
    signature: bytes
    at: int | None = None  # position of the checkpoint's own record (not signed); None if kept outside
    error: str | None = None  # set when the record could not be read as a checkpoint

    def payload(self) -> bytes:
        return signing_payload(self.service, self.position, self.chain_hash, self.sealed_at, self.key_id)

    @property
    def sealed_time(self) -> datetime:
        return datetime.fromisoformat(self.sealed_at)

    @classmethod
    def sign(
        cls, service: str, position: int, chain_hash: bytes, when: datetime, private_key: Ed25519PrivateKey
    ) -> Checkpoint:
        if when.tzinfo is None:
            raise ValueError("a checkpoint's time must be timezone-aware")
        sealed_at = when.astimezone(UTC).isoformat(timespec="microseconds")
        kid = key_id(private_key.public_key())
        signature = private_key.sign(signing_payload(service, position, chain_hash, sealed_at, kid))
        return cls(service, position, chain_hash, sealed_at, kid, signature)

    @classmethod
    def unreadable(cls, at: int, reason: str) -> Checkpoint:
        return cls("", -1, b"", "", "", b"", at=at, error=reason)


@stored_as("accord_kit.chain:Checkpoints")
class Checkpoints(Aggregate):
    """The store's signed checkpoints, one `Sealed` event each (one aggregate per service)."""

    class Opened(Aggregate.Created):
        TOPIC = "accord_kit.chain:Checkpoints.Opened"
        service: str

    class Sealed(Aggregate.Event):
        TOPIC = "accord_kit.chain:Checkpoints.Sealed"
        service: str
        position: int
        chain_hash: str  # hex
        sealed_at: str
        key_id: str
        signature: str  # hex

        def apply(self, aggregate: Any) -> None:
            aggregate.last_position = self.position
            aggregate.count += 1

    @event(Opened)
    def __init__(self, service: str) -> None:
        self.service = service
        self.last_position = 0
        self.count = 0

    @staticmethod
    def create_id(service: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"accord-chain-checkpoints:{service}")


SEALED_TOPIC = Checkpoints.Sealed.TOPIC
CHECKPOINT_TOPICS = frozenset({Checkpoints.Opened.TOPIC, SEALED_TOPIC})


def default_mapper() -> Mapper[Any]:
    """Reads a plain (uncompressed, unencrypted) store's checkpoint events."""
    transcoder = JSONTranscoder()
    for t in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(t)
    return Mapper(transcoder=transcoder)


def checkpoint_of(record: RecordView, mapper: Mapper[Any]) -> Checkpoint:
    """The checkpoint a `Checkpoints.Sealed` record carries (an unreadable one if it cannot be read)."""
    try:
        try:
            oid: UUID | str = UUID(record.originator_id)
        except ValueError:
            oid = record.originator_id
        ev: Any = mapper.to_domain_event(StoredEvent(oid, record.originator_version, record.topic, record.state))
        if not isinstance(ev, Checkpoints.Sealed):
            raise TypeError(f"expected a Checkpoints.Sealed event, got {type(ev).__qualname__}")
        return Checkpoint(
            service=str(ev.service),
            position=int(ev.position),
            chain_hash=bytes.fromhex(ev.chain_hash),
            sealed_at=str(ev.sealed_at),
            key_id=str(ev.key_id),
            signature=bytes.fromhex(ev.signature),
            at=record.notification_id,
        )
    except Exception as e:
        return Checkpoint.unreadable(record.notification_id, f"cannot be read as a checkpoint ({e})")


def latest_checkpoint(app: Application[Any]) -> tuple[Checkpoint | None, int]:
    """The service's last sealed checkpoint (its `at` unknown: None) and the
    Checkpoints aggregate's version (0 if it does not exist yet)."""
    cid = Checkpoints.create_id(_service_of(app))
    found = app.recorder.select_events(cid, desc=True, limit=1)
    if not found:
        return None, 0
    stored = found[0]
    if stored.topic != SEALED_TOPIC:
        return None, stored.originator_version
    view = RecordView(0, str(stored.originator_id), stored.originator_version, stored.topic, stored.state)
    cp = checkpoint_of(view, app.mapper)
    if cp.error:
        raise ChainError(f"the last checkpoint of {_service_of(app)} {cp.error}")
    return replace(cp, at=None), stored.originator_version


def _service_of(app: Application[Any]) -> str:
    return str(getattr(app, "service", None) or app.name)


def chained_recorder(recorder: Any) -> ChainedRecorder:
    """`recorder` as a chained recorder, or TypeError naming the factories that keep a chain."""
    chained: ChainedRecorder = _chained(recorder)
    return chained


def trusted_keys(
    public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
) -> dict[str, Ed25519PublicKey]:
    """Key id → public key, from a list of keys (or such a mapping already)."""
    return _key_map(public_keys)


def checkpoint_problem(
    cp: Checkpoint, public_keys: Mapping[str, Ed25519PublicKey], service: str | None = None
) -> str | None:
    """Why `cp` cannot be trusted on its own (unreadable, untrusted key, bad signature,
    another service, sealing a position not before its own record), or None. Whether its
    hash agrees with the log is for `verify` to say."""
    return _signature_problem(cp, public_keys, service)


def _chained(recorder: Any) -> Any:
    if not isinstance(recorder, ChainedRecorder):
        raise TypeError(
            f"{type(recorder).__qualname__} does not keep a chain: use accord_kit.persistence:DurableSQLiteFactory "
            "or accord_kit.persistence:ChainedPostgresFactory"
        )
    return recorder


def seal(
    app: Application[Any],
    private_key: Ed25519PrivateKey,
    *,
    previous_keys: Iterable[Ed25519PublicKey] = (),
    now: datetime | None = None,
    force: bool = False,
) -> Checkpoint:
    """Seal the log at its current head: sign (service, head position, chain hash at the
    head, time) and save the checkpoint as an event of the store's `Checkpoints` aggregate.

    Meant to run periodically in each event-sourced service (e.g. every minute from a
    background thread, and once at shutdown). Before signing it verifies the records
    since the previous checkpoint (whose signature must verify with this key or one of
    `previous_keys`, for key rotation) and raises ChainError instead of sealing a log
    that is already tampered with. If nothing but checkpoints was written since the last
    one, it returns that one (unless `force`). The time comes from the application's
    injected clock. Run one sealer per store: a concurrent seal fails with the store's
    IntegrityError (the aggregate's version is taken) and can simply be retried later."""
    recorder = _chained(app.recorder)
    service = _service_of(app)
    public = private_key.public_key()
    last, version = latest_checkpoint(app)
    head_id, head_hash = recorder.chain_head()
    verifier = _verify_store(app, [public, *previous_keys], start=last, stop=head_id)
    report = verifier.finish()
    if not report.ok:
        raise ChainError(f"refusing to seal {service} at {head_id}: {report.problem}")
    if last is not None and not force and verifier.only_checkpoints:
        return last
    if report.head_hash != head_hash:  # the verification above compared every stored hash; belt and braces
        raise ChainError(f"refusing to seal {service} at {head_id}: the recomputed hash differs from the stored one")
    if now is None:
        clock = getattr(app, "clock", None)
        now = clock.now() if clock is not None else datetime.now(UTC)
    cp = Checkpoint.sign(service, head_id, head_hash, now, private_key)
    cid = Checkpoints.create_id(service)
    objs: list[Any] = []
    if version == 0:
        opened = Checkpoints(service)
        objs.append(opened)
        version = opened.version
    objs.append(
        Checkpoints.Sealed(  # type: ignore[call-arg]
            originator_id=cid,
            originator_version=version + 1,
            timestamp=now,
            service=cp.service,
            position=cp.position,
            chain_hash=cp.chain_hash.hex(),
            sealed_at=cp.sealed_at,
            key_id=cp.key_id,
            signature=cp.signature.hex(),
        )
    )
    recordings = app.save(*objs)
    return replace(cp, at=recordings[-1].notification.id)


# -- the verifier ---------------------------------------------------------------------


class Kind(StrEnum):
    ALTERED = "ALTERED"
    MISSING = "MISSING"
    INSERTED = "INSERTED"
    REORDERED = "REORDERED"
    TRUNCATED = "TRUNCATED"
    BAD_CHECKPOINT = "BAD_CHECKPOINT"


@dataclass(frozen=True)
class Problem:
    kind: Kind
    position: int
    detail: str
    since: int | None = None  # a change somewhere in (since, position], when it cannot be located further

    def __str__(self) -> str:
        return f"{self.kind} at position {self.position}: {self.detail}"


@dataclass(frozen=True)
class Report:
    problem: Problem | None
    start: int  # verified records after this position...
    end: int  # ...up to this one (inclusive)
    records: int  # records recomputed before the first problem (all of them if none)
    checkpoints: int  # checkpoints whose signature and hash were verified
    sealed_through: int  # highest position covered by a verified checkpoint (0: none)
    last_checkpoint: Checkpoint | None = None  # that checkpoint: an anchor for the next incremental run
    head_hash: bytes | None = None  # recomputed hash at `end` when there is no problem

    @property
    def ok(self) -> bool:
        return self.problem is None


def _key_map(public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    if isinstance(public_keys, Mapping):
        return dict(public_keys)
    return {key_id(k): k for k in public_keys}


def _signature_problem(cp: Checkpoint, keys: Mapping[str, Ed25519PublicKey], service: str | None) -> str | None:
    if cp.error:
        return cp.error
    if service is not None and cp.service != service:
        return f"it was sealed for service {cp.service!r}, not {service!r}"
    if len(cp.chain_hash) != 32:
        return "its chain hash is not 32 bytes"
    key = keys.get(cp.key_id)
    if key is None:
        return f"it is signed with key {cp.key_id!r}, which is not among the trusted public keys"
    try:
        key.verify(cp.signature, cp.payload())
    except InvalidSignature:
        return f"its signature does not verify with key {cp.key_id!r}"
    if cp.at is not None and cp.position >= cp.at:
        return f"it seals position {cp.position}, not before its own record"
    return None


def verify(
    records: Iterable[RecordView],
    chain_hashes: Mapping[int, bytes] | None,
    checkpoints: Iterable[Checkpoint],
    public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
    *,
    service: str | None = None,
    start: Checkpoint | None = None,
    stop: int | None = None,
) -> Report:
    """Recompute the chain from `records` (in notification-id order) and report the first
    problem (see the module docstring for how each kind is told apart).

    `chain_hashes` is the store's chain table (id → hash), or None to rely on the
    checkpoints alone. `checkpoints` are those found in the log (see `checkpoint_of`)
    plus any kept outside; `public_keys` the trusted signing keys (a list, or key id →
    key). `start` verifies incrementally: it must be a checkpoint whose signature
    verifies; records at or before its position are not examined. `stop` ignores
    records and chain entries after that position."""
    keys = _key_map(public_keys)
    lo = 0
    h_lo = ZERO_HASH
    if start is not None:
        reason = _signature_problem(replace(start, at=None), keys, service)
        if reason:
            return Report(
                Problem(Kind.BAD_CHECKPOINT, start.position, f"the starting checkpoint: {reason}"), 0, 0, 0, 0, 0
            )
        lo, h_lo = start.position, start.chain_hash

    def in_range(position: int) -> bool:
        return position > lo and (stop is None or position <= stop)

    recs = [r for r in records if in_range(r.notification_id)]
    cps = list(checkpoints)
    want = {cp.position for cp in cps if cp.error is None and in_range(cp.position)}
    candidates: list[tuple[int, int, Problem]] = []  # (position, priority, problem)

    stored: dict[int, bytes] | None = None
    keys_in_range: list[int] = []
    if chain_hashes is not None:
        stored = {k: v for k, v in chain_hashes.items() if in_range(k)}
        keys_in_range = sorted(stored)
        if start is not None and lo in chain_hashes and chain_hashes[lo] != h_lo:
            candidates.append(
                (
                    lo,
                    0,
                    Problem(
                        Kind.BAD_CHECKPOINT,
                        lo,
                        "the stored chain at the starting checkpoint's position differs from its signed hash: "
                        "the log at or before it was rewritten",
                    ),
                )
            )

    hashes_at: dict[int, bytes] = {}
    prev, g = h_lo, lo
    count = 0
    ki = 0
    chain_problem: Problem | None = None
    for i, r in enumerate(recs):
        n = r.notification_id
        if n <= g:
            chain_problem = Problem(Kind.REORDERED, n, f"record {n} comes after record {g} in the log")
            break
        if stored is not None:
            if ki < len(keys_in_range) and keys_in_range[ki] < n:
                k = keys_in_range[ki]
                chain_problem = Problem(Kind.MISSING, k, f"the chain has an entry for {k} but the log has no record")
                break
            if ki >= len(keys_in_range) or keys_in_range[ki] != n:
                chain_problem = Problem(
                    Kind.INSERTED, n, f"record {n} has no chain entry: it was not written by the chained recorder"
                )
                break
            ki += 1
            h = _link(prev, r)
            if h != stored[n]:
                later = ((x, stored.get(x.notification_id)) for x in itertools.islice(recs, i + 1, None))
                chain = ((k, stored[k]) for k in keys_in_range)
                chain_problem = _classify(r, stored[n], later, chain, h_lo, g, prev)
                break
        else:
            h = _link(prev, r)
        if n in want:
            hashes_at[n] = h
        prev, g = h, n
        count += 1
    else:
        if stored is not None and ki < len(keys_in_range):
            k = keys_in_range[ki]
            chain_problem = Problem(
                Kind.TRUNCATED, k, f"the log ends at {g} but the chain continues to {keys_in_range[-1]}"
            )
    if chain_problem is not None:
        candidates.append((chain_problem.position, 0, chain_problem))

    last_record = recs[-1].notification_id if recs else lo
    verified: list[Checkpoint] = []
    prev_good = lo
    for cp in sorted(cps, key=lambda c: c.position):
        where = cp.at if cp.at is not None else cp.position
        if not (in_range(where) or in_range(cp.position) or cp.position == lo):
            continue  # outside this run (an earlier interval, or after `stop`)
        reason = _signature_problem(cp, keys, service)
        if reason:
            candidates.append((where, 1, Problem(Kind.BAD_CHECKPOINT, where, f"the checkpoint at {where}: {reason}")))
            continue
        p = cp.position
        if p <= lo:
            expected = h_lo if p == lo else None
            if expected is not None and expected != cp.chain_hash:
                candidates.append(
                    (where, 1, Problem(Kind.BAD_CHECKPOINT, where, f"its hash at {p} differs from the anchor's"))
                )
            continue
        if p > last_record:
            candidates.append(
                (
                    last_record + 1,
                    2,
                    Problem(
                        Kind.TRUNCATED,
                        last_record + 1,
                        f"the log ends at {last_record}, before position {p} sealed by the checkpoint"
                        + (f" at {cp.at}" if cp.at is not None else ""),
                    ),
                )
            )
            continue
        h_p = hashes_at.get(p)
        if h_p is None:
            if p <= g:
                candidates.append(
                    (
                        p,
                        2,
                        Problem(Kind.MISSING, p, f"a checkpoint sealed position {p} but the log has no record there"),
                    )
                )
            continue  # else: the chain walk stopped before p; its problem comes first
        if h_p != cp.chain_hash:
            candidates.append(
                (
                    p,
                    1,
                    Problem(
                        Kind.BAD_CHECKPOINT,
                        p,
                        f"the log's hash at {p} differs from the signed checkpoint"
                        + (f" at {cp.at}" if cp.at is not None else "")
                        + f": records in ({prev_good}, {p}] were changed together with their chain entries, "
                        "or the checkpoint is false",
                        since=prev_good,
                    ),
                )
            )
            continue
        verified.append(cp)
        prev_good = p

    problem = min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
    good = [cp for cp in verified if problem is None or cp.position < problem.position]
    last_cp = max(good, key=lambda c: c.position) if good else None
    return Report(
        problem=problem,
        start=lo,
        end=(stop if stop is not None else last_record) if problem is None else last_record,
        records=count,
        checkpoints=len(good),
        sealed_through=last_cp.position if last_cp else (lo if start is not None else 0),
        last_checkpoint=last_cp or start,
        head_hash=prev if problem is None else None,
    )


def _classify(
    r: RecordView,
    want: bytes,
    later: Iterable[tuple[RecordView, bytes | None]],
    chain: Iterable[tuple[int, bytes]],
    h_lo: bytes,
    g: int,
    h_g: bytes,
) -> Problem:
    """Name the first mismatch, at record `r` whose stored hash is `want` (see the module
    docstring). `later`: the records after r in the input, each with its stored hash (None
    if it has none); `chain`: every stored chain entry of the range, in order; `g`: the last
    good record, `h_g` its hash. Each is read once, only as far as needed."""
    n = r.notification_id
    rest = iter(later)
    first = next(rest, None)
    if first is not None and _chains_past(first[0], first[1], h_g):
        return _extra(n, g)
    m = _home_of(r, chain, h_lo)
    j = None
    if first is not None:
        j = next((x.notification_id for x, _ in itertools.chain((first,), rest) if _holds(x, n, want, h_g)), None)
    return _named(n, g, m, j)


def _chains_past(nxt: RecordView, stored: bytes | None, h_g: bytes) -> bool:
    """Whether the record after a mismatch chains straight from the last good record h_g."""
    return stored is not None and _link(h_g, nxt) == stored


def _holds(x: RecordView, n: int, want: bytes, h_g: bytes) -> bool:
    """Whether record x holds the content genuinely at n (it reproduces S[n] = want from h_g)."""
    return _link(h_g, x, n) == want


def _home_of(r: RecordView, chain: Iterable[tuple[int, bytes]], before: bytes) -> int | None:
    """m: the first id (not r's own) whose stored hash r's content reproduces from the entry before it."""
    n = r.notification_id
    for k, stored_k in chain:
        if k != n and _link(before, r, k) == stored_k:
            return k
        before = stored_k
    return None


def _extra(n: int, g: int) -> Problem:
    return Problem(
        Kind.INSERTED,
        n,
        f"record {n} is extra: the record after it chains straight from {g} (its chain entry was forged)",
    )


def _named(n: int, g: int, m: int | None, j: int | None) -> Problem:
    """The mismatch at n, from m (where its content belongs) and j (where n's content went)."""
    if j is not None:
        if m is not None and m > n:
            return Problem(Kind.REORDERED, n, f"record {n} holds the content of {m}, and its own content is at {j}")
        return Problem(
            Kind.INSERTED, n, f"record {n} does not belong in the log: the content that belongs at {n} is now at {j}"
        )
    if m is not None and m > n:
        return Problem(
            Kind.MISSING, n, f"the record at {n} is gone: it now holds the content of {m} (later records moved down)"
        )
    if m is not None:
        return Problem(Kind.ALTERED, n, f"record {n} was replaced by a copy of record {m}")
    if n > g + 1:
        return Problem(
            Kind.MISSING,
            g + 1,
            f"record {n} does not chain from record {g}: the record(s) between them were deleted with their "
            "chain entries",
        )
    return Problem(Kind.ALTERED, n, f"record {n}'s stored bytes differ from those that were chained")


# -- verifying a log page by page ------------------------------------------------------

Page = tuple[Sequence[RecordView], Mapping[int, bytes]]


class ReadPages(Protocol):
    """(after, stop) → the records and chain entries in (after, stop], page by page in
    position order, each page holding both of one range of positions (as ReadChain's pages
    do). With `records=False` the pages may leave the records out."""

    def __call__(self, after: int, stop: int, *, records: bool = True) -> Iterable[Page]: ...


VERIFY_PAGE = 5000  # records (and chain entries) per page that verify_store reads
LOOK_BEHIND = 512  # chain entries kept from the page before: a checkpoint seals a position just behind it
_Key = tuple[int, int, int]  # a checkpoint's place in verify's order: (position, 0 found / 1 given, index)
_Rank = tuple[int, int, int, tuple[int, ...]]  # a problem's: (position, priority, group, checkpoint key)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A checkpoint kept outside the log, waiting for the walk to reach the position it seals."""

    key: _Key
    cp: Checkpoint


class ChainVerifier:
    """`verify` in one pass over a log fed page by page in position order (`add`), holding
    a page or two whatever the log's length; `finish` gives the Report `verify` gives over
    everything fed (pages must hold the records and chain entries of consecutive position
    ranges, as `store_pages` and ReadChain's pages do).

    It recomputes h_i from h_{i-1} as the records arrive and compares it with the stored
    chain, and checks each checkpoint when it can: one found in the log when its record is
    reached (the position it seals is behind it: its stored hash, which the walk found equal
    to the recomputed one, is in this page's chain entries or the `look_behind` before
    them, or read alone), one kept outside when the walk reaches its position. Kept
    meanwhile: the last good position and hash, the first problem of each kind, counts, and
    the checkpoints kept outside (the caller's). After a chain mismatch the records and
    chain entries that follow are hashed once more as they arrive (`verify`'s two scans for
    naming it); what a problem needs beyond that is read again through `reread`, on the
    failure path only: the chain before the mismatch, and, when a checkpoint's problem comes
    before checkpoints that verified, the log's checkpoints (to count those before it)."""

    look_behind = LOOK_BEHIND

    def __init__(
        self,
        public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
        *,
        reread: ReadPages,
        service: str | None = None,
        start: Checkpoint | None = None,
        stop: int | None = None,
        mapper: Mapper[Any] | None = None,
        checkpoints: Iterable[Checkpoint] = (),
    ) -> None:
        self.keys = _key_map(public_keys)
        self.service = service
        self.start = start
        self.stop = stop
        self.mapper: Mapper[Any] = mapper or default_mapper()
        self.reread = reread
        self.early: Report | None = None  # the result when the starting checkpoint cannot be trusted
        lo, h_lo = 0, ZERO_HASH
        if start is not None:
            reason = _signature_problem(replace(start, at=None), self.keys, service)
            if reason:
                problem = Problem(Kind.BAD_CHECKPOINT, start.position, f"the starting checkpoint: {reason}")
                self.early = Report(problem, 0, 0, 0, 0, 0)
            else:
                lo, h_lo = start.position, start.chain_hash
        self.lo, self.h_lo = lo, h_lo
        self.only_checkpoints = True  # no record in range but checkpoints (seal: nothing new)
        # The walk.
        self._prev, self._g, self._count = h_lo, lo, 0
        self._halted = False
        self._halt: Problem | None = None  # why the walk stopped (a mismatch is named by finish)
        self._mismatch: tuple[RecordView, bytes, int, bytes] | None = None  # record, its stored hash, g, h_g
        self._next_seen = False  # the record after it was seen...
        self._skipped = False  # ...and chains straight from g
        self._j: int | None = None  # the record holding the content genuinely at the mismatch
        self._home: int | None = None  # the first entry after it where its content belongs
        self._home_before = ZERO_HASH
        self._dangling: int | None = None  # the first chain entry found without its record
        self._chain_top = lo  # the highest chain entry in range
        self._last_record = lo
        self._top = lo  # the highest position fed in range: reading again stops there
        self._anchor: Problem | None = None
        self._sound = self.early is None
        self._through = lo  # every record up to here verified, and nothing wrong found so far
        self._recent: Mapping[int, bytes] = {}  # the chain entries of this page...
        self._earlier: Mapping[int, bytes] = {}  # ...and the last LOOK_BEHIND before it
        # The checkpoints.
        self._found = 0
        self._best: tuple[_Rank, Problem | None, Checkpoint | None] | None = None
        self._verified = 0
        self._last_cp: Checkpoint | None = None
        self._last_key: _Key = (0, 0, 0)
        self._min_p = self._max_p = 0
        self._given_verified: list[tuple[_Key, Checkpoint]] = []
        self._pending: list[_Pending] = []
        self._next = 0
        if self.early is None:
            for j, cp in enumerate(checkpoints):
                self._given((cp.position, 1, j), cp)
            self._pending.sort(key=lambda e: e.key)

    # -- progress ------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        """Nothing wrong found so far."""
        return self._sound

    @property
    def verified_through(self) -> int:
        return self._through

    @property
    def records_checked(self) -> int:
        return self._count

    @property
    def checkpoints_checked(self) -> int:
        return self._verified

    # -- feeding -------------------------------------------------------------------------
    def add(self, records: Iterable[RecordView], hashes: Mapping[int, bytes]) -> None:
        """The next page: records in position order and the chain entries of the same range."""
        if self.early is not None:
            return
        lo, stop = self.lo, self.stop
        page: dict[int, bytes] = {}
        for k, v in hashes.items():
            if k > lo and (stop is None or k <= stop):
                page[k] = v
            elif k == lo and self.start is not None and v != self.h_lo and self._anchor is None:
                self._anchor = Problem(
                    Kind.BAD_CHECKPOINT,
                    lo,
                    "the stored chain at the starting checkpoint's position differs from its signed hash: "
                    "the log at or before it was rewritten",
                )
                self._sound = False
        keys = sorted(page)
        self._recent = page
        if keys:
            self._chain_top = max(self._chain_top, keys[-1])
            self._top = max(self._top, keys[-1])
        ki, nk = 0, len(keys)
        pending, nxt = self._pending, self._next
        due = pending[nxt].key[0] if nxt < len(pending) else None  # the next outside checkpoint's position
        sha256, head, length = hashlib.sha256, _HEAD.pack, _LEN.pack
        prev, g, count, through = self._prev, self._g, self._count, self._through
        for r in records:
            n = r.notification_id
            if n <= lo or (stop is not None and n > stop):
                continue
            self._last_record = n
            if n > self._top:
                self._top = n
            topic = r.topic
            if self.only_checkpoints and topic not in CHECKPOINT_TOPICS:
                self.only_checkpoints = False
            if not self._halted:
                problem: Problem | None = None
                if n <= g:
                    problem = Problem(Kind.REORDERED, n, f"record {n} comes after record {g} in the log")
                elif self._dangling is not None or (ki < nk and keys[ki] < n):
                    k = self._dangling if self._dangling is not None else keys[ki]
                    problem = Problem(Kind.MISSING, k, f"the chain has an entry for {k} but the log has no record")
                elif ki >= nk or keys[ki] != n:
                    problem = Problem(
                        Kind.INSERTED, n, f"record {n} has no chain entry: it was not written by the chained recorder"
                    )
                else:
                    ki += 1
                    o, t, state = r.originator_id.encode(), topic.encode(), r.state
                    h = sha256(
                        b"".join(
                            (
                                prev,
                                head(n, r.originator_version, len(o)),
                                o,
                                length(len(t)),
                                t,
                                length(len(state)),
                                state,
                            )
                        )
                    ).digest()
                    if h == page[n]:
                        prev, g = h, n
                        count += 1
                        if self._sound:
                            through = n
                        while due is not None and due <= n:  # outside checkpoints the walk has reached
                            e = pending[nxt]
                            nxt += 1
                            due = pending[nxt].key[0] if nxt < len(pending) else None
                            if self._judge(e.key, e.cp, h if e.cp.position == n else None):
                                self._verified_cp(e.key, e.cp)
                    else:
                        self._mismatch = (r, page[n], g, prev)
                        self._home_before = page[n]
                self._halted = problem is not None or self._mismatch is not None
                if self._halted:
                    self._halt = problem
                    self._sound = False
            elif self._seeking:
                self._seek(r, page)
            if topic == SEALED_TOPIC:
                self._prev, self._g, self._count, self._through = prev, g, count, through
                self._take_found(r)
        self._prev, self._g, self._count, self._through, self._next = prev, g, count, through, nxt
        if not self._halted and ki < nk and self._dangling is None:
            self._dangling = keys[ki]
        if self._mismatch is not None and self._home is None and not self._skipped:
            self._seek_home(keys, page)
        if keys:
            self._earlier = {k: page[k] for k in keys[len(keys) - self.look_behind :]}
        self._recent = {}

    # -- the checkpoints -----------------------------------------------------------------
    def _given(self, key: _Key, cp: Checkpoint) -> None:
        """A checkpoint kept outside: what can be judged now, else pending until the walk reaches it."""
        where = cp.at if cp.at is not None else cp.position
        p = cp.position
        in_range = self._in_range
        if not (in_range(where) or in_range(p) or p == self.lo):
            return  # outside this run (an earlier interval, or after `stop`)
        if not self._settled(key, cp, where):
            self._pending.append(_Pending(key, cp))

    def _take_found(self, r: RecordView) -> None:
        cp = checkpoint_of(r, self.mapper)
        key = (cp.position, 0, self._found)
        self._found += 1
        if self._found_holds(key, cp, judge=True):
            self._verified_cp(key, cp)

    def _in_range(self, position: int) -> bool:
        return position > self.lo and (self.stop is None or position <= self.stop)

    def _settled(self, key: _Key, cp: Checkpoint, where: int) -> bool:
        """The checks that need no hash of the log (a candidate is noted); True if nothing is left."""
        reason = _signature_problem(cp, self.keys, self.service)
        if reason:
            self._candidate(where, 1, key, Problem(Kind.BAD_CHECKPOINT, where, f"the checkpoint at {where}: {reason}"))
            return True
        p = cp.position
        if p <= self.lo:
            if p == self.lo and self.h_lo != cp.chain_hash:
                problem = Problem(Kind.BAD_CHECKPOINT, where, f"its hash at {p} differs from the anchor's")
                self._candidate(where, 1, key, problem)
            return True
        return False

    def _found_holds(self, key: _Key, cp: Checkpoint, *, judge: bool) -> bool:
        """Whether a checkpoint found in the log verifies; with `judge`, its problem is noted."""
        assert cp.at is not None
        if judge:
            if self._settled(key, cp, cp.at):
                return False
        elif _signature_problem(cp, self.keys, self.service) or cp.position <= self.lo:
            return False
        p = cp.position
        # A checkpoint that passed those seals a position before its own record: inside the
        # log, and walked already unless the walk stopped before it (its problem comes first).
        if p > self._g:
            return False
        return self._judge(key, cp, self._stored_hash(p), judge=judge)

    def _judge(self, key: _Key, cp: Checkpoint, h_p: bytes | None, *, judge: bool = True) -> bool:
        """A checkpoint sealing a walked position p against the recomputed hash there (None: no record)."""
        p = cp.position
        if h_p is None:
            if judge:
                problem = Problem(Kind.MISSING, p, f"a checkpoint sealed position {p} but the log has no record there")
                self._candidate(p, 2, key, problem)
            return False
        if h_p != cp.chain_hash:
            if judge:
                self._candidate(p, 1, key, None, cp)  # named in finish: it says since which checkpoint
            return False
        return True

    def _stored_hash(self, p: int) -> bytes | None:
        """The stored hash at a walked position p (the walk found it equal to the recomputed
        one; a walked position has a chain entry exactly when it has a record)."""
        h = self._recent.get(p)
        if h is None:
            h = self._earlier.get(p)
        if h is None:
            for _, hashes in self.reread(p - 1, p, records=False):
                if p in hashes:
                    return hashes[p]
        return h

    def _candidate(
        self, position: int, priority: int, key: _Key, problem: Problem | None, mismatch: Checkpoint | None = None
    ) -> None:
        rank: _Rank = (position, priority, 2, key)
        if self._best is None or rank < self._best[0]:
            self._best = (rank, problem, mismatch)
        self._sound = False

    def _verified_cp(self, key: _Key, cp: Checkpoint) -> None:
        p = cp.position
        self._verified += 1
        if self._verified == 1:
            self._min_p = self._max_p = p
        else:
            self._min_p, self._max_p = min(self._min_p, p), max(self._max_p, p)
        last = self._last_cp
        if last is None or p > last.position or (p == last.position and key < self._last_key):
            self._last_cp, self._last_key = cp, key
        if key[1] == 1:
            self._given_verified.append((key, cp))

    # -- naming a mismatch: the records and chain entries after it, as they arrive -------
    @property
    def _seeking(self) -> bool:
        return self._mismatch is not None and not self._skipped and (self._j is None or not self._next_seen)

    def _seek(self, x: RecordView, page: Mapping[int, bytes]) -> None:
        """A record after the mismatch: does the first one chain straight from the last good
        record (the mismatched one is extra)? does it hold the content genuinely at n (j)?"""
        assert self._mismatch is not None
        r, want, _, h_g = self._mismatch
        if not self._next_seen:
            self._next_seen = True
            self._skipped = _chains_past(x, page.get(x.notification_id), h_g)
        if self._j is None and _holds(x, r.notification_id, want, h_g):
            self._j = x.notification_id

    def _seek_home(self, keys: Sequence[int], page: Mapping[int, bytes]) -> None:
        """The chain entries after the mismatch: is one where its content belongs (m)?"""
        assert self._mismatch is not None
        r = self._mismatch[0]
        n = r.notification_id
        for k in keys:
            if k > n:
                if _link(self._home_before, r, k) == page[k]:
                    self._home = k
                    return
                self._home_before = page[k]

    # -- the result ----------------------------------------------------------------------
    def finish(self) -> Report:
        """The Report `verify` gives over everything fed."""
        if self.early is not None:
            return self.early
        lo, g, last_record = self.lo, self._g, self._last_record
        chain_problem = self._halt
        if not self._halted and self._dangling is not None:
            d = self._dangling
            chain_problem = Problem(
                Kind.TRUNCATED, d, f"the log ends at {g} but the chain continues to {self._chain_top}"
            )
        if self._mismatch is not None:
            r, _, g_r, _ = self._mismatch
            if self._skipped:
                chain_problem = _extra(r.notification_id, g_r)
            else:  # where its content belongs: an entry up to g (read again) before one after it
                home = _home_of(r, self._chain(g_r), self.h_lo)
                chain_problem = _named(r.notification_id, g_r, home if home is not None else self._home, self._j)
        for e in self._pending[self._next :]:  # never reached by the walk
            p = e.cp.position
            if p > last_record:
                detail = f"the log ends at {last_record}, before position {p} sealed by the checkpoint" + (
                    f" at {e.cp.at}" if e.cp.at is not None else ""
                )
                self._candidate(last_record + 1, 2, e.key, Problem(Kind.TRUNCATED, last_record + 1, detail))
        candidates: list[tuple[_Rank, Problem | None, Checkpoint | None]] = []
        if self._anchor is not None:
            candidates.append(((lo, 0, 0, ()), self._anchor, None))
        if chain_problem is not None:
            candidates.append(((chain_problem.position, 0, 1, ()), chain_problem, None))
        if self._best is not None:
            candidates.append(self._best)
        problem: Problem | None = None
        count, last = self._verified, self._last_cp
        if candidates:
            rank, problem, mismatch = min(candidates, key=lambda c: c[0])
            count, last, since = self._good_before(rank[0], rank[3] if mismatch is not None else None)
            if mismatch is not None:
                problem = _mismatch_problem(mismatch, since)
        return Report(
            problem=problem,
            start=lo,
            end=(self.stop if self.stop is not None else last_record) if problem is None else last_record,
            records=self._count,
            checkpoints=count,
            sealed_through=last.position if last else (lo if self.start is not None else 0),
            last_checkpoint=last or self.start,
            head_hash=self._prev if problem is None else None,
        )

    def _good_before(self, position: int, key: tuple[int, ...] | None) -> tuple[int, Checkpoint | None, int]:
        """The verified checkpoints sealing positions before the problem's: how many, the last
        one; and (for a checkpoint whose hash differs, `key` its place) the position of the
        last one verified before it in verify's order."""
        if self._verified == 0:
            return 0, None, self.lo
        if self._max_p < position:
            return self._verified, self._last_cp, self._max_p
        if self._min_p >= position and key is None:
            return 0, None, self.lo
        # A problem before checkpoints that verified: go through the log's checkpoints again.
        count, last, last_key, since = 0, None, (0, 0, 0), self.lo

        def see(k: _Key, cp: Checkpoint) -> None:
            nonlocal count, last, last_key, since
            p = cp.position
            if p < position:
                count += 1
                if last is None or p > last.position or (p == last.position and k < last_key):
                    last, last_key = cp, k
            if key is not None and k < key:
                since = max(since, p)

        for k, cp in self._given_verified:
            see(k, cp)
        found = 0
        self._recent = self._earlier = {}
        for records, hashes in self.reread(self.lo, self._top):
            self._earlier, self._recent = self._recent, hashes  # (more look-behind: this is rare)
            for r in records:
                if r.topic == SEALED_TOPIC and self._in_range(r.notification_id):
                    cp = checkpoint_of(r, self.mapper)
                    k = (cp.position, 0, found)
                    found += 1
                    if self._found_holds(k, cp, judge=False):
                        see(k, cp)
        return count, last, since

    def _chain(self, stop: int) -> Iterator[tuple[int, bytes]]:
        """The stored chain of the range up to `stop`, read again."""
        for _, hashes in self.reread(self.lo, stop, records=False):
            for k in sorted(hashes):
                if self._in_range(k):
                    yield k, hashes[k]


def _mismatch_problem(cp: Checkpoint, since: int) -> Problem:
    p = cp.position
    return Problem(
        Kind.BAD_CHECKPOINT,
        p,
        f"the log's hash at {p} differs from the signed checkpoint"
        + (f" at {cp.at}" if cp.at is not None else "")
        + f": records in ({since}, {p}] were changed together with their chain entries, or the checkpoint is false",
        since=since,
    )


# -- reading a store ------------------------------------------------------------------


def read_page(
    recorder: ChainedRecorder, after: int, stop: int, limit: int
) -> tuple[list[RecordView], dict[int, bytes], int]:
    """One page of a store's log: its records and chain entries in (after, through], at most
    `limit` of each, and `through` (at most `stop`; below it when a limit was reached)."""
    records = recorder.select_records(after, stop, limit)
    hashes = recorder.select_chain_hashes(after + 1, stop, limit)
    through = stop
    if len(records) == limit:
        through = min(through, records[-1].notification_id)
    if len(hashes) == limit:
        through = min(through, max(hashes))
    if through < stop:
        records = [r for r in records if r.notification_id <= through]
        hashes = {k: h for k, h in hashes.items() if k <= through}
    return records, hashes, through


def store_pages(recorder: ChainedRecorder, limit: int = VERIFY_PAGE) -> ReadPages:
    """A store's log page by page (`limit` records or chain entries a page), for ChainVerifier."""

    def pages(after: int, stop: int, *, records: bool = True) -> Iterator[Page]:
        while after < stop:
            if records:
                found, hashes, through = read_page(recorder, after, stop, limit)
                yield found, hashes
                del found  # not held while the next page is read
            else:
                hashes = recorder.select_chain_hashes(after + 1, stop, limit)
                through = max(hashes) if len(hashes) == limit else stop
                yield [], hashes
            del hashes
            after = through

    return pages


def pages_in_memory(pages: Sequence[Page]) -> ReadPages:
    """Pages already held, read again as ChainVerifier does."""

    def read(after: int, stop: int, *, records: bool = True) -> Iterator[Page]:
        for held, hashes in pages:
            found = [r for r in held if after < r.notification_id <= stop] if records else []
            entries = {k: h for k, h in hashes.items() if after < k <= stop}
            if found or entries:
                yield found, entries

    return read


def read_records(
    recorder: ApplicationRecorder, *, after: int = 0, stop: int | None = None, page: int = 10_000
) -> list[RecordView]:
    """The log's records after `after` up to `stop` (inclusive), in order (all in memory: for
    `verify`; `store_pages` reads them a page at a time)."""
    if isinstance(recorder, ChainedRecorder):
        return recorder.select_records(after, stop)
    out: list[RecordView] = []
    position = after
    while True:
        batch = recorder.select_notifications(start=position, limit=page, stop=stop, inclusive_of_start=False)
        out.extend(RecordView.of(n) for n in batch)
        if len(batch) < page:
            return out
        position = batch[-1].id


def _verify_store(
    source: Application[Any] | ApplicationRecorder,
    public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
    *,
    service: str | None = None,
    mapper: Mapper[Any] | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    start: Checkpoint | None = None,
    stop: int | None = None,
    page: int = VERIFY_PAGE,
) -> ChainVerifier:
    if isinstance(source, Application):
        recorder: Any = source.recorder
        mapper = mapper or source.mapper
        if service is None:
            service = _service_of(source)
    else:
        recorder = source
    chained: ChainedRecorder = _chained(recorder)
    # `stop` is only passed on when the caller bounded the run: otherwise a checkpoint kept
    # outside that seals a position beyond the log's end must show as TRUNCATED.
    verifier = ChainVerifier(
        public_keys,
        reread=store_pages(chained, page),
        service=service,
        start=start,
        stop=stop,
        mapper=mapper,
        checkpoints=checkpoints,
    )
    if verifier.early is None:
        # Both heads from one snapshot: later writers only add ids above this end.
        end = stop if stop is not None else max(chained.chain_heads())
        after = max(start.position - 1, 0) if start is not None else 0  # the chain entry at the start too
        for records, hashes in verifier.reread(after, end):
            verifier.add(records, hashes)
            del records, hashes  # not held while the next page is read
    return verifier


def verify_store(
    source: Application[Any] | ApplicationRecorder,
    public_keys: Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey],
    *,
    service: str | None = None,
    mapper: Mapper[Any] | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    start: Checkpoint | None = None,
    stop: int | None = None,
) -> Report:
    """Verify a store: its records, its chain table and the checkpoints in its log (plus
    `checkpoints` kept outside), page by page (`ChainVerifier`: the Report `verify` would
    give, in memory bounded by a page). `source` is an application (its mapper reads the
    checkpoint events, its `service` is expected in them) or a chained recorder (checkpoints
    read with `default_mapper()` unless `mapper` is given)."""
    return _verify_store(
        source, public_keys, service=service, mapper=mapper, checkpoints=checkpoints, start=start, stop=stop
    ).finish()
