"""A service's event store edited behind its back (sqlite3 / psycopg, not through the
application), as an attacker or a careless operator with write access would: for tests
of tamper evidence."""

from __future__ import annotations

import sqlite3
from typing import Any

from accord_kit.testing import fixtures


class Store:
    """The records table `events` of the store `env` names (an event store environment,
    `ServiceSettings.event_store_env()`); best edited while the service is stopped."""

    def __init__(self, kind: str, env: dict[str, str], events: str) -> None:
        self.kind = kind
        self.events = events
        self.id = "rowid" if kind == "sqlite" else "notification_id"
        self.names: dict[str, str] = {"events": events, "id": self.id}  # what {…} in SQL stands for
        self.conn: Any
        if kind == "sqlite":
            self.conn = sqlite3.connect(env["SQLITE_DBNAME"], isolation_level=None)
        else:
            import psycopg

            self.conn = psycopg.connect(
                host=fixtures.PG_HOST,
                port=fixtures.PG_PORT,
                user=fixtures.PG_USER,
                password=fixtures.PG_PASSWORD or None,
                dbname=env["POSTGRES_DBNAME"],
                autocommit=True,
            )

    def x(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        sql = sql.format(**self.names)
        if self.kind != "sqlite":
            sql = sql.replace("?", "%s")
        cur = self.conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []

    def row(self, n: int) -> tuple[Any, ...]:
        """(originator id, originator version, topic, state) of the record at position n."""
        found = self.x("SELECT originator_id, originator_version, topic, state FROM {events} WHERE {id} = ?", (n,))
        return tuple(found[0])

    def positions_of(self, originator_id: str) -> list[int]:
        """The positions of one aggregate's records, by version."""
        rows = self.x(
            "SELECT {id} FROM {events} WHERE CAST(originator_id AS TEXT) IN (?, ?) ORDER BY originator_version",
            (originator_id, originator_id.replace("-", "")),
        )
        return [int(r[0]) for r in rows]

    def edit(self, n: int, old: bytes, new: bytes) -> None:
        state = bytes(self.row(n)[3])
        assert old in state, state
        self.set_state(n, state.replace(old, new))

    def set_state(self, n: int, state: bytes) -> None:
        self.x("UPDATE {events} SET state = ? WHERE {id} = ?", (state, n))

    def delete(self, n: int) -> None:
        self.x("DELETE FROM {events} WHERE {id} = ?", (n,))

    def swap(self, a: int, b: int) -> None:
        """Swap two records' contents (each keeps its position)."""
        ra, rb = self.row(a), self.row(b)
        self.x("UPDATE {events} SET originator_version = -1 WHERE {id} = ?", (a,))
        sql = "UPDATE {events} SET originator_id = ?, originator_version = ?, topic = ?, state = ? WHERE {id} = ?"
        self.x(sql, (*ra, b))
        self.x(sql, (*rb, a))

    def close(self) -> None:
        self.conn.close()
