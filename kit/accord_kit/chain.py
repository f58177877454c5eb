"""Tamper evidence for an event-sourced service's log (DOMAIN.md §6, "Verification"):
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
TRANSACTION as the records into a side table::

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

Speed: one sha256 per record, under 2 µs in Python: ``verify`` over 10,000 records takes
~15 ms, ``verify_store`` (reading them) ~55 ms on SQLite and ~100 ms on PostgreSQL. Naming
a mismatch costs two more passes over the range (only on the failure path). To verify
incrementally, pass ``start`` = a checkpoint already verified: only records after its
position are read and recomputed (and ``stop`` bounds the end). Writing costs one extra
indexed read and one insert per transaction, inside the transaction that is open anyway.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    ApplicationRecorder,
    DatetimeAsISO,
    DecimalAsStr,
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
from eventsourcing.utils import get_topic, retry
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

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


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder, ChainedRecorder):
    """Writes each record's chain hash in the record's own write transaction."""

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
            if ids is None or len(ids) != len(stored_events):
                raise ChainError("the store did not report a notification id for every record")
            # The inserts above hold SQLite's write lock: no other writer can move the head now.
            head_id, head_hash = self._chain_head(c)
            rows = [
                (nid, self._oid_text(s.originator_id), s.originator_version, s.topic, s.state)
                for nid, s in zip(ids, stored_events, strict=True)
            ]
            c.executemany(
                f"INSERT INTO {self.chain_table_name} (notification_id, hash) VALUES (?, ?)",
                _next_links(head_id, head_hash, rows),
            )
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
    transactional insert path (POSTGRES_ENABLE_DB_FUNCTIONS is not used)."""

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

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        # The library's version pipelines and swallows exceptions until the transaction
        # block has ended; here any failure (including ChainError) must roll back.
        notification_ids: Sequence[int] | None = None
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
            conn.cursor() as head,
        ):
            self._insert_events(curs, stored_events, **kwargs)  # tracking, for process recorders
            if stored_events:
                self._insert_stored_events(curs, stored_events, **kwargs)  # takes the table lock
                # Read the chain's head under that lock, in the same round trip as the insert.
                head.execute(self._select_head_sql, prepare=True)
                pipeline.sync()  # a conflict raises IntegrityError here, and the transaction rolls back
                notification_ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                if notification_ids is None or len(notification_ids) != len(stored_events):
                    raise ChainError("the store did not report a notification id for every record")
                row = head.fetchone()
                head_id, head_hash = (
                    (0, ZERO_HASH) if row is None else (int(row["notification_id"]), bytes(row["hash"]))
                )
                rows = [
                    (nid, self._oid_text(s.originator_id), s.originator_version, s.topic, s.state)
                    for nid, s in zip(notification_ids, stored_events, strict=True)
                ]
                curs.executemany(self._insert_chain_sql, _next_links(head_id, head_hash, rows))
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


class Checkpoints(Aggregate):
    """The store's signed checkpoints, one `Sealed` event each (one aggregate per service)."""

    class Opened(Aggregate.Created):
        service: str

    class Sealed(Aggregate.Event):
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


SEALED_TOPIC = get_topic(Checkpoints.Sealed)
CHECKPOINT_TOPICS = frozenset({get_topic(Checkpoints.Opened), SEALED_TOPIC})


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
    report, records = _verify_store(app, [public, *previous_keys], start=last, stop=head_id)
    if not report.ok:
        raise ChainError(f"refusing to seal {service} at {head_id}: {report.problem}")
    if last is not None and not force and all(r.topic in CHECKPOINT_TOPICS for r in records):
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
                chain_problem = _classify(recs, i, stored, keys_in_range, lo, h_lo, g, prev)
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
    recs: Sequence[RecordView],
    i: int,
    stored: Mapping[int, bytes],
    keys: Sequence[int],
    lo: int,
    h_lo: bytes,
    g: int,
    h_g: bytes,
) -> Problem:
    """Name the first mismatch at recs[i] (see the module docstring)."""
    r = recs[i]
    n = r.notification_id
    nxt = recs[i + 1] if i + 1 < len(recs) else None
    if nxt is not None:
        expected_next = stored.get(nxt.notification_id)
        if expected_next is not None and _link(h_g, nxt) == expected_next:
            return Problem(
                Kind.INSERTED,
                n,
                f"record {n} is extra: the record after it chains straight from {g} (its chain entry was forged)",
            )
    # m: where r's content genuinely belongs (reproduces S[m] from the entry before m).
    m: int | None = None
    before = h_lo
    for k in keys:
        if k != n and _link(before, r, k) == stored[k]:
            m = k
            break
        before = stored[k]
    # j: a later record that holds the content genuinely at n.
    j: int | None = None
    want = stored[n]
    for x in range(i + 1, len(recs)):
        if _link(h_g, recs[x], n) == want:
            j = recs[x].notification_id
            break
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


# -- reading a store ------------------------------------------------------------------


def read_records(
    recorder: ApplicationRecorder, *, after: int = 0, stop: int | None = None, page: int = 10_000
) -> list[RecordView]:
    """The log's records after `after` up to `stop` (inclusive), in order."""
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
) -> tuple[Report, list[RecordView]]:
    if isinstance(source, Application):
        recorder: Any = source.recorder
        mapper = mapper or source.mapper
        if service is None:
            service = _service_of(source)
    else:
        recorder = source
    chained = _chained(recorder)
    bound = stop
    if stop is None:
        # Both heads from one snapshot: later writers only add ids above this end.
        log_head, chain_head = chained.chain_heads()
        stop = max(log_head, chain_head)
    lo = start.position if start is not None else 0
    records = read_records(recorder, after=lo, stop=stop)
    hashes = chained.select_chain_hashes(lo, stop)
    decode: Mapper[Any] = mapper or default_mapper()
    found = [checkpoint_of(r, decode) for r in records if r.topic == SEALED_TOPIC]
    # `stop` is only passed on when the caller bounded the run: otherwise a checkpoint
    # kept outside that seals a position beyond the log's end must show as TRUNCATED.
    report = verify(records, hashes, [*found, *checkpoints], public_keys, service=service, start=start, stop=bound)
    return report, records


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
    """Verify a store: read its records, its chain table and the checkpoints in its log
    (plus `checkpoints` kept outside), then `verify`. `source` is an application (its
    mapper reads the checkpoint events, its `service` is expected in them) or a chained
    recorder (checkpoints read with `default_mapper()` unless `mapper` is given)."""
    return _verify_store(
        source, public_keys, service=service, mapper=mapper, checkpoints=checkpoints, start=start, stop=stop
    )[0]
