"""The signal index in the service's own store (SQLite or PostgreSQL, beside its event log): a
projection of the signal events of the log — one row per service and signal id, with the
formula input list it goes to, its time key, its rank (the order of first recording within its
service), the earliest instant any of its contents reaches, the digests of its earlier contents
(for dedupe) and its latest content, serialised; one row per service of small facts (signals
held, longest outage, the latest instant a budgeted signal reaches); and the log position the
index holds every signal event up to. Rows, facts and position are written in one transaction,
so the index is always as of one log position; a process catches it up from the log from that
position (see signal_index.py). Reads are by service and id (dedupe, one query per batch), by
list and time range, by list and the instant an item settles (tickets, tasks, leads, deals,
incidents), by list, time range and the customer-and-reason group of answered calls
(first-contact resolution's chains of contacts), or a list whole."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from eventsourcing.persistence import IntegrityError
from eventsourcing.sqlite import SQLiteDatastore
from psycopg.rows import tuple_row

from accord_metrics.domain import SignalBatch, SignalCorrection

# The formula input lists, by the code each is stored as.
LISTS = ("outages", "maintenance", "requests", "incidents", "calls", "tickets", "tasks", "leads", "deals")
LIST_CODE = {name: code for code, name in enumerate(LISTS, 1)}
DIGEST_BYTES = 32
_POSITION = "signals"
# Rows fetched at a time by a read that converts them as it goes (`in_range`'s `each`).
_PAGE = 4_096
# Rows as a range read gives them: (rank, signal id, latest content).
Ranked = tuple[int, str, bytes]
# The topics of the signal events: what the index is a projection of.
SIGNAL_BATCH_TOPIC = SignalBatch.Recorded.TOPIC
SIGNAL_CORRECTION_TOPIC = SignalCorrection.Corrected.TOPIC


class Row(NamedTuple):
    """One signal id of one service as indexed: `list_code` the formula input list it goes to
    (`LIST_CODE`), `time_key` (µs) the instant a window selects it by (a ticket's, task's, lead's,
    deal's or incident's: the instant it settles; 0 for the lists read whole), `ongoing` 1 for an outage under way,
    `earliest` (µs) the earliest instant any content it was recorded with can change evaluations
    from, `earlier` the SHA-256 digests (32
    bytes each) of its earlier contents, `content` its latest content serialised, `grp` an
    answered call's customer-and-reason group (`signal_index.call_group`; None for every other
    row). A tuple in the order of the index's columns after the service id: a row is written as
    it is."""

    signal_id: str
    list_code: int
    time_key: int
    rank: int
    ongoing: int
    earliest: int
    earlier: bytes
    content: bytes
    grp: int | None = None

    @property
    def kind_list(self) -> str:
        """The formula input list's name."""
        return LISTS[self.list_code - 1]

    def earlier_digests(self) -> list[str]:
        return [self.earlier[i : i + DIGEST_BYTES].hex() for i in range(0, len(self.earlier), DIGEST_BYTES)]


@dataclass
class Facts:
    """A service's facts kept with its rows: signal ids held (the next one's rank), the longest
    outage with a reported end (µs), the latest instant a budgeted signal reaches (µs)."""

    count: int = 0
    longest_outage: int = 0
    reaches: int | None = None


@dataclass(frozen=True)
class IndexState:
    position: int
    facts: dict[str, Facts]
    ongoing: dict[str, dict[str, tuple[int, int]]]  # service → outage id under way → (start µs, rank)


class SignalStore:
    """The signal index's tables beside the event log of `recorder` (its datastore, SQLite or
    PostgreSQL; named after its events table, so several applications may share a database)."""

    def __init__(self, recorder: Any) -> None:
        self._ds = recorder.datastore
        self._sqlite = isinstance(self._ds, SQLiteDatastore)
        events = str(recorder.events_table_name)
        prefix = events.removesuffix("_events") + "_" if events.endswith("_events") else ""
        self._names = {k: f"{prefix}signal_index{k}" for k in ("", "_services", "_position")}
        if self._sqlite:
            self.rows, self.services, self.position_table = (self._names[k] for k in ("", "_services", "_position"))
        else:
            schema = self._ds.schema
            self.rows, self.services, self.position_table = (
                f'"{schema}"."{self._names[k]}"' for k in ("", "_services", "_position")
            )
        if self._sqlite:
            self.events, self.events_id = events, "rowid"
        else:
            self.events, self.events_id = f'"{self._ds.schema}"."{events}"', "notification_id"
        self._create()

    # -- plumbing --------------------------------------------------------------------------------------
    @contextmanager
    def _cursor(self, write: bool) -> Iterator[Any]:
        if self._sqlite:
            with self._ds.transaction(commit=write) as c:
                cur = c.sqlite_cursor
                cur.row_factory = None
                yield cur
        else:
            with (
                self._ds.get_connection() as conn,
                conn.transaction(force_rollback=not write),
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                yield cur

    def _q(self, sql: str) -> str:
        return sql if self._sqlite else sql.replace("?", "%s")

    def _create(self) -> None:
        rows, n = self.rows, self._names[""]
        if self._sqlite:
            statements = [
                f"CREATE TABLE IF NOT EXISTS {rows} (service_id TEXT NOT NULL, signal_id TEXT NOT NULL, "
                "list INTEGER NOT NULL, time_key INTEGER NOT NULL, rank INTEGER NOT NULL, ongoing INTEGER NOT NULL, "
                "earliest INTEGER NOT NULL, earlier BLOB NOT NULL, content BLOB NOT NULL, grp INTEGER)",
                f"CREATE UNIQUE INDEX IF NOT EXISTS {n}_id ON {rows} (service_id, signal_id)",
                f"CREATE INDEX IF NOT EXISTS {n}_time ON {rows} (service_id, list, time_key)",
                f"CREATE INDEX IF NOT EXISTS {n}_ongoing ON {rows} (service_id) WHERE ongoing = 1",
                f"CREATE TABLE IF NOT EXISTS {self.services} (service_id TEXT PRIMARY KEY, count INTEGER NOT NULL, "
                "longest_outage INTEGER NOT NULL, reaches INTEGER)",
                f"CREATE TABLE IF NOT EXISTS {self.position_table} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
            ]
        else:
            statements = [
                f'CREATE TABLE IF NOT EXISTS {rows} (service_id text COLLATE "C" NOT NULL, '
                'signal_id text COLLATE "C" NOT NULL, list smallint NOT NULL, time_key bigint NOT NULL, '
                "rank bigint NOT NULL, ongoing smallint NOT NULL, earliest bigint NOT NULL, earlier bytea NOT NULL, "
                "content bytea NOT NULL, grp bigint, PRIMARY KEY (service_id, signal_id))",
                f'CREATE INDEX IF NOT EXISTS "{n}_time" ON {rows} (service_id, list, time_key)',
                f'CREATE INDEX IF NOT EXISTS "{n}_ongoing" ON {rows} (service_id) WHERE ongoing = 1',
                f"CREATE TABLE IF NOT EXISTS {self.services} (service_id text PRIMARY KEY, count bigint NOT NULL, "
                "longest_outage bigint NOT NULL, reaches bigint)",
                f"CREATE TABLE IF NOT EXISTS {self.position_table} (name text PRIMARY KEY, position bigint NOT NULL)",
            ]
        statements.append(
            f"INSERT INTO {self.position_table} (name, position) VALUES ('{_POSITION}', 0) "
            "ON CONFLICT (name) DO NOTHING"
        )
        # The calls' groups (a column since first-contact resolution reads chains of contacts; an
        # index made before gains it, `key_groups` fills it once). Not indexed: an index by group
        # takes each call at a random place, and a batch's commit then writes a page of it a call
        # (measured: ≈ 30 µs more a call recorded on SQLite); the chains are read by time instead.
        with self._cursor(write=True) as cur:
            if not self._sqlite:  # two instances starting at once on one database create the tables once
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.rows,))
            for statement in statements:
                cur.execute(statement)
            if self._sqlite:
                cur.execute(f"PRAGMA table_info({rows})")
                if "grp" not in {str(c[1]) for c in cur.fetchall()}:
                    cur.execute(f"ALTER TABLE {rows} ADD COLUMN grp INTEGER")
            else:
                cur.execute(f"ALTER TABLE {rows} ADD COLUMN IF NOT EXISTS grp bigint")

    # -- reads -----------------------------------------------------------------------------------------------
    def state(self) -> IndexState:
        """The position, every service's facts and the outages under way, read as of one position."""
        with self._cursor(write=False) as cur:
            cur.execute(self._q(f"SELECT position FROM {self.position_table} WHERE name = ?"), (_POSITION,))
            position = int(cur.fetchone()[0])
            cur.execute(f"SELECT service_id, count, longest_outage, reaches FROM {self.services}")
            facts = {str(s): Facts(int(c), int(lo), None if r is None else int(r)) for s, c, lo, r in cur.fetchall()}
            cur.execute(f"SELECT service_id, signal_id, time_key, rank FROM {self.rows} WHERE ongoing = 1")
            ongoing: dict[str, dict[str, tuple[int, int]]] = {}
            for service, sid, key, rank in cur.fetchall():
                ongoing.setdefault(str(service), {})[str(sid)] = (int(key), int(rank))
        return IndexState(position, facts, ongoing)

    def position(self) -> int:
        with self._cursor(write=False) as cur:
            cur.execute(self._q(f"SELECT position FROM {self.position_table} WHERE name = ?"), (_POSITION,))
            return int(cur.fetchone()[0])

    def lookup(self, service_id: str, signal_ids: Sequence[str]) -> dict[str, Row]:
        """The rows of these signal ids of one service (those held), in one query."""
        if not signal_ids:
            return {}
        cols = "signal_id, list, time_key, rank, ongoing, earliest, earlier, content, grp"
        with self._cursor(write=False) as cur:
            cur.execute(*self._of_ids(cols, service_id, signal_ids))
            if self._sqlite:  # its columns' types are the row's already (INTEGER, TEXT, BLOB: int, str, bytes)
                make = Row._make
                return {r[0]: make(r) for r in cur.fetchall()}
            return {
                str(sid): Row(str(sid), int(code), int(key), int(rank), int(ong), int(first), bytes(old),
                              bytes(content), None if grp is None else int(grp))
                for sid, code, key, rank, ong, first, old, content, grp in cur.fetchall()
            }  # fmt: skip

    def earliest(self, service_id: str, signal_ids: Sequence[str]) -> list[int]:
        """The earliest instant (µs) of the rows of these signal ids of one service (those held):
        each over every content its id had — `lookup`'s `earliest`, without the contents."""
        if not signal_ids:
            return []
        with self._cursor(write=False) as cur:
            cur.execute(*self._of_ids("earliest", service_id, signal_ids))
            return [int(r[0]) for r in cur.fetchall()]

    def _of_ids(self, cols: str, service_id: str, signal_ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """The query of columns `cols` of the rows of these signal ids of one service, in one
        statement (the ids bound as one JSON array on SQLite, one array on PostgreSQL)."""
        if self._sqlite:
            ids = "signal_id IN (SELECT value FROM json_each(?))"
            return (
                f"SELECT {cols} FROM {self.rows} WHERE service_id = ? AND {ids}",
                (service_id, json.dumps(list(signal_ids))),
            )
        return (
            f"SELECT {cols} FROM {self.rows} WHERE service_id = %s AND signal_id = ANY(%s)",
            (service_id, list(signal_ids)),
        )

    def in_range(
        self, service_id: str, name: str, lo: int, hi: int, each: Callable[[list[Ranked]], None] | None = None
    ) -> list[Ranked]:  # fmt: skip
        """(rank, signal id, latest content) of one list's signals whose time key is in [lo, hi];
        with `each`, given to it a page of rows at a time as they are read instead (none listed:
        a window's contents are then never all held at once)."""
        return self._ranked("time_key <= ?", service_id, name, lo, hi, each)

    def unsettled(
        self, service_id: str, name: str, lo: int, hi: int, each: Callable[[list[Ranked]], None] | None = None
    ) -> list[Ranked]:  # fmt: skip
        """(rank, signal id, latest content) of one list's signals whose time key (the instant
        they settle) is at or after `lo` and that reach back to `hi` or before (`earliest`); `each`
        as `in_range`'s."""
        return self._ranked("earliest <= ?", service_id, name, lo, hi, each)

    def _ranked(
        self, upper: str, service_id: str, name: str, lo: int, hi: int,
        each: Callable[[list[Ranked]], None] | None = None,
    ) -> list[Ranked]:  # fmt: skip
        """(rank, signal id, latest content) of one list's signals whose time key is at least
        `lo`, and the condition `upper` holds for `hi` — or given to `each` a page (`_PAGE` rows)
        at a time."""
        with self._cursor(write=False) as cur:
            cur.execute(
                self._q(
                    f"SELECT rank, signal_id, content FROM {self.rows} "
                    f"WHERE service_id = ? AND list = ? AND time_key >= ? AND {upper}"
                ),
                (service_id, LIST_CODE[name], lo, hi),
            )
            out: list[Ranked] = []
            sink = out.extend if each is None else each
            while page := cur.fetchmany(_PAGE):
                sink([(int(r), str(s), bytes(c)) for r, s, c in page])
            return out

    def group_firsts(
        self, service_ids: Sequence[str], lo: int, hi: int, groups: Sequence[int] | None = None
    ) -> dict[int, int]:  # fmt: skip
        """The groups of these services' answered calls (of these groups, when given) with a call
        whose time key is in [lo, hi), each with the earliest such time key (of any of them)."""
        where, params = self._of_services(service_ids)
        where += " AND list = ? AND time_key >= ? AND time_key < ? AND grp IS NOT NULL"
        params = (*params, LIST_CODE["calls"], lo, hi)
        if groups is not None:
            if not groups:
                return {}
            where, params = self._of_groups(where, params, groups)
        with self._cursor(write=False) as cur:
            cur.execute(self._q(f"SELECT grp, MIN(time_key) FROM {self.rows} WHERE {where} GROUP BY grp"), params)
            return {int(g): int(t) for g, t in cur.fetchall()}

    def group_calls(
        self, service_ids: Sequence[str], groups: Sequence[int], lo: int, hi: int
    ) -> list[tuple[int, str, bytes, int, int, str]]:  # fmt: skip
        """(rank, signal id, latest content, time key, group, service id) of these services'
        answered calls of these groups whose time key is in [lo, hi), in one query: the calls'
        time range read by the time index (a range a service), those of the groups kept."""
        if not groups:
            return []
        where, params = self._of_services(service_ids)
        where, params = self._of_groups(
            f"{where} AND list = ? AND time_key >= ? AND time_key < ? AND grp IS NOT NULL",
            (*params, LIST_CODE["calls"], lo, hi),
            groups,
        )
        with self._cursor(write=False) as cur:
            cur.execute(
                self._q(f"SELECT rank, signal_id, content, time_key, grp, service_id FROM {self.rows} WHERE {where}"),
                params,
            )
            return [(int(r), str(s), bytes(c), int(t), int(g), str(v)) for r, s, c, t, g, v in cur.fetchall()]

    @staticmethod
    def _of_services(service_ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """The condition (SQLite's placeholders) of rows of these services: one an equality, several
        a list the time index is read by, a range each."""
        if len(service_ids) == 1:
            return "service_id = ?", (service_ids[0],)
        return f"service_id IN ({', '.join('?' for _ in service_ids)})", tuple(service_ids)

    def _of_groups(self, where: str, params: tuple[Any, ...], groups: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """`where` (SQLite's placeholders) narrowed to these groups, in one parameter."""
        if self._sqlite:
            return f"{where} AND grp IN (SELECT value FROM json_each(?))", (*params, json.dumps(list(groups)))
        return f"{where} AND grp = ANY(?)", (*params, list(groups))

    def whole(self, service_id: str, names: Sequence[str]) -> dict[str, list[tuple[int, str, bytes]]]:
        """(rank, signal id, latest content) of every signal of these lists, by list."""
        out: dict[str, list[tuple[int, str, bytes]]] = {}
        if not names:
            return out
        marks = ", ".join("?" for _ in names)
        with self._cursor(write=False) as cur:
            cur.execute(
                self._q(
                    f"SELECT list, rank, signal_id, content FROM {self.rows} WHERE service_id = ? AND list IN ({marks})"
                ),
                (service_id, *(LIST_CODE[n] for n in names)),
            )
            for code, rank, sid, content in cur.fetchall():
                out.setdefault(LISTS[code - 1], []).append((int(rank), str(sid), bytes(content)))
        return out

    def with_prefix(self, service_id: str, prefix: str) -> list[bytes]:
        """The latest contents of a service's signals whose ids start with `prefix`."""
        with self._cursor(write=False) as cur:
            cur.execute(
                self._q(f"SELECT content FROM {self.rows} WHERE service_id = ? AND signal_id >= ? AND signal_id < ?"),
                (service_id, prefix, prefix + "\U0010ffff"),
            )
            return [bytes(c) for (c,) in cur.fetchall()]

    def counted_by_time(
        self, service_ids: Sequence[str], names: Sequence[str], step_us: int
    ) -> tuple[dict[int, int], int]:  # fmt: skip
        """How many signal ids of these services each step of time holds in the lists `names`
        (their time key // `step_us` → ids; read from the time index alone), and how many every
        other list holds."""
        by_step: dict[int, int] = {}
        if not service_ids:
            return by_step, 0
        where, params = self._of_services(service_ids)
        codes = [LIST_CODE[n] for n in names]
        marks = ", ".join("?" for _ in codes)
        with self._cursor(write=False) as cur:
            cur.execute(
                self._q(
                    f"SELECT time_key / ?, COUNT(*) FROM {self.rows} WHERE {where} AND list IN ({marks}) GROUP BY 1"
                ),
                (step_us, *params, *codes),
            )
            by_step = {int(step): int(n) for step, n in cur.fetchall()}
            cur.execute(
                self._q(f"SELECT COUNT(*) FROM {self.rows} WHERE {where} AND list NOT IN ({marks})"), (*params, *codes)
            )
            rest = int(cur.fetchone()[0])
        return by_step, rest

    def count(self) -> int:
        """Rows held (every service's signal ids)."""
        with self._cursor(write=False) as cur:
            cur.execute(f"SELECT COUNT(*) FROM {self.rows}")
            return int(cur.fetchone()[0])

    # -- writes ---------------------------------------------------------------------------------------------
    def key_settled(self, names: Sequence[str], key_of: Callable[[bytes], int]) -> int:
        """Once a list and store: give the rows of these lists, indexed when they were read whole
        (time key 0), the time key `key_of` their content (the instant they settle) (`_rekey`).
        Returns the rows keyed (0 when done before or none held)."""
        return sum(self._rekey(f"{_POSITION}.settled.{name}", name, "time_key", key_of) for name in names)

    def key_groups(self, group_of: Callable[[bytes], int | None]) -> int:
        """Once a store: give the calls indexed before their groups were (no group), the group
        `group_of` their content (None: not answered) (`_rekey`). Returns the rows given one (0
        when done before or none held)."""
        return self._rekey(f"{_POSITION}.grouped.calls", "calls", "grp", group_of)

    def _rekey(self, done: str, name: str, column: str, key_of: Callable[[bytes], int | None]) -> int:
        """Once (until the mark `done` is written): set `column` of every row of the list `name` to
        `key_of` its content (None: left as it is) — a page of `REKEY_PAGE` rows a transaction, in
        the order of their ids, so a store of millions of calls is never read whole into memory nor
        written in one transaction — then the mark. A row whose content changed since its page was
        read is left (whoever wrote that content wrote its key). What it writes follows from each
        content alone: a crash before the mark does it again, two processes starting at once write
        the same. Returns the rows set (a row left to another writer is not counted)."""
        with self._cursor(write=False) as cur:
            cur.execute(self._q(f"SELECT 1 FROM {self.position_table} WHERE name = ?"), (done,))
            if cur.fetchone() is not None:
                return 0
        keyed = 0
        after = ("", "")
        read = self._q(
            f"SELECT service_id, signal_id, content FROM {self.rows} "
            "WHERE list = ? AND (service_id, signal_id) > (?, ?) ORDER BY service_id, signal_id LIMIT ?"
        )
        write = self._q(f"UPDATE {self.rows} SET {column} = ? WHERE service_id = ? AND signal_id = ? AND content = ?")
        while True:
            # Read, then written in a transaction of its own: on SQLite a transaction that read
            # first cannot write once another process has committed since its read (it fails
            # at once, "database is locked", whatever the busy timeout); the guard on the content
            # leaves a row changed in between to whoever changed it.
            with self._cursor(write=False) as cur:
                cur.execute(read, (LIST_CODE[name], *after, REKEY_PAGE))
                page = cur.fetchall()
            if not page:
                break
            values = []
            for service, sid, content in page:
                key = key_of(bytes(content))
                if key is not None:
                    values.append((key, str(service), str(sid), content))
            with self._cursor(write=True) as cur:
                cur.executemany(write, values)
                keyed += max(cur.rowcount, 0)  # the rows set: summed over the statements by both drivers
            after = (str(page[-1][0]), str(page[-1][1]))
        with self._cursor(write=True) as cur:
            cur.execute(
                self._q(
                    f"INSERT INTO {self.position_table} (name, position) VALUES (?, 1) ON CONFLICT (name) DO NOTHING"
                ),
                (done,),
            )
        return keyed

    def commit(self, rows: Sequence[tuple[Any, ...]], facts: dict[str, Facts], expected: int, position: int) -> None:
        """Write rows ((service id, *Row): inserted or replacing the id's row) and services' facts, and
        move the position from `expected` to `position`, in one transaction of their own
        (`IndexMovedError`, with nothing written, when the position is no longer `expected`:
        another process moved it)."""
        with self._cursor(write=True) as cur:
            self._write(cur, rows, facts, expected, position)

    def try_commit(
        self, rows: Sequence[tuple[Any, ...]], facts: dict[str, Facts], expected: int, position: int
    ) -> bool:  # fmt: skip
        """`commit`: True when written, False when the position was no longer `expected`."""
        try:
            self.commit(rows, facts, expected, position)
        except IndexMovedError:
            return False
        return True

    def write(
        self, cursor: Any, rows: Sequence[tuple[Any, ...]], facts: dict[str, Facts], expected: int, first: int,
        position: int,
    ) -> None:  # fmt: skip
        """`commit` within the transaction of the signal events it indexes (`cursor`: the
        database's own, sqlite3 or psycopg), whose notification ids run from `first` to
        `position`: refused (`IndexMovedError`, an IntegrityError: that save alone fails) when
        the position is not `expected` or a signal event the index does not hold lies between."""
        topics = (SIGNAL_BATCH_TOPIC, SIGNAL_CORRECTION_TOPIC)
        cursor.execute(
            self._q(f"SELECT 1 FROM {self.events} WHERE {self.events_id} > ? AND {self.events_id} < ? "
                    "AND topic IN (?, ?) LIMIT 1"),
            (expected, first, *topics),
        )  # fmt: skip
        if cursor.fetchone() is not None:
            raise IndexMovedError("a signal event the index does not hold was stored before this batch")
        self._write(cursor, rows, facts, expected, position)

    def _write(
        self, cur: Any, rows: Sequence[tuple[Any, ...]], facts: dict[str, Facts], expected: int, position: int
    ) -> None:  # fmt: skip
        cur.execute(
            self._q(f"UPDATE {self.position_table} SET position = ? WHERE name = ? AND position = ?"),
            (position, _POSITION, expected),
        )
        if cur.rowcount != 1:
            raise IndexMovedError(f"the signal index is no longer at position {expected}")
        if rows and not self._sqlite:
            cur.executemany(_insert_rows(self.rows, 1, _ROW_MARKS).replace("?", "%s"), rows)
        elif rows:
            # Many rows a statement: one step of SQLite (one release of the GIL) inserts them all.
            # Row by row (executemany), each row's step released the GIL and took it back: with an
            # evaluation round running in another thread, every row waited for the round to give it
            # back (the interpreter's switch interval), and each step costs more than a row's share.
            # Each value is bound as a type sqlite3 binds as it is (int, str, bytearray): bytes and
            # None go through its adaptation protocol (a key tuple, a dict lookup, two attribute
            # lookups), ≈ 0.3 µs a value — most of the binding, itself most of a row's cost. A row
            # without a group binds '' for it, which the statement makes NULL (`_SQLITE_ROW_MARKS`).
            ba = bytearray
            for i in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[i : i + ROWS_PER_STATEMENT]
                values = [
                    v
                    for service, sid, code, key, rank, ongoing, first, earlier, content, grp in chunk
                    for v in (service, sid, code, key, rank, ongoing, first, ba(earlier), ba(content),
                              "" if grp is None else grp)
                ]  # fmt: skip
                cur.execute(_insert_rows(self.rows, len(chunk), _SQLITE_ROW_MARKS), values)
        if facts:
            cur.executemany(
                self._q(
                    f"INSERT INTO {self.services} (service_id, count, longest_outage, reaches) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (service_id) DO UPDATE SET count = excluded.count, "
                    "longest_outage = excluded.longest_outage, reaches = excluded.reaches"
                ),
                [(s, f.count, f.longest_outage, f.reaches) for s, f in facts.items()],
            )


@functools.lru_cache(maxsize=64)
def _insert_rows(table: str, n: int, marks: str) -> str:
    """The statement inserting `n` rows of `marks` (or replacing the rows of their ids), SQLite's
    placeholders."""
    return (
        f"INSERT INTO {table} (service_id, signal_id, list, time_key, rank, ongoing, earliest, earlier, "
        f"content, grp) VALUES {', '.join([marks] * n)} ON CONFLICT (service_id, signal_id) DO UPDATE SET "
        "list = excluded.list, time_key = excluded.time_key, rank = excluded.rank, ongoing = excluded.ongoing, "
        "earliest = excluded.earliest, earlier = excluded.earlier, content = excluded.content, grp = excluded.grp"
    )


_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# On SQLite a group is bound as '' when there is none: an integer never equals text, so `nullif`
# gives back every group and NULL for ''.
_SQLITE_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, nullif(?, ''))"
# Rows an insert statement carries on SQLite: 900 variables, within the 999 of any SQLite version.
ROWS_PER_STATEMENT = 90
# Rows `SignalStore._rekey` reads and writes a transaction.
REKEY_PAGE = 10_000


class IndexMovedError(IntegrityError):
    """The index is not at the position expected (another process indexed signals), or a signal
    event it does not hold lies before the batch: nothing written."""
