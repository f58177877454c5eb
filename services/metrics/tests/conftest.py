"""Fixtures of the metrics service's own tests: altering a stored signal in the database
behind the service's back, as an attacker (or a careless operator) with write access would."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_metrics.application import BATCH_TOPIC

Alter = Callable[[dict[str, str], str, str, Callable[[pb.Signal], None]], None]


def _alter(env: dict[str, str], table: str, signal_id: str, change: Callable[[pb.Signal], None]) -> None:
    """Find the stored SignalBatch event holding `signal_id` in the store `env` names, decode
    its state as the store holds it (JSON; the batch is the public SignalBatch, base64),
    apply `change` to that signal, and write the state back with a plain UPDATE."""
    if "SQLITE_DBNAME" in env:
        conn: Any = sqlite3.connect(env["SQLITE_DBNAME"])
        mark = "?"
    else:
        conn = psycopg.connect(
            host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
            password=env.get("POSTGRES_PASSWORD") or None, dbname=env["POSTGRES_DBNAME"], autocommit=True,
        )  # fmt: skip
        mark = "%s"
    try:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, state FROM {table} WHERE topic = {mark}", (BATCH_TOPIC,)
        ).fetchall()
        for originator_id, version, state in rows:
            record = json.loads(bytes(state))
            batch = pb.SignalBatch.FromString(base64.b64decode(record["batch"]))
            hits = [s for s in batch.signals if s.signal_id == signal_id]
            if not hits:
                continue
            for s in hits:
                change(s)
            record["batch"] = base64.b64encode(batch.SerializeToString()).decode()
            conn.execute(
                f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} AND originator_version = {mark}",
                (json.dumps(record, separators=(",", ":")).encode(), originator_id, version),
            )
            if isinstance(conn, sqlite3.Connection):
                conn.commit()
            return
        raise AssertionError(f"no stored signal batch holds signal {signal_id!r}")
    finally:
        conn.close()


@pytest.fixture
def alter_stored_signal() -> Alter:
    return _alter
