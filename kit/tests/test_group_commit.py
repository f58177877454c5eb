"""Group commit on both stores (accord_kit.groupcommit): concurrent saves share a transaction
and its fsync, each caller keeps its own outcome, the hash chain stays whole, tracking stays
exactly-once, and nothing acknowledged is lost to a SIGKILL.

To make a group without relying on timing, a second connection holds the write lock (SQLite's
database lock; PostgreSQL's EXCLUSIVE lock on the events table, which every insert takes): the
first writer (the leader) waits for it, every other writer queues behind the leader, and the
lock is let go once the queue holds them all: the next leader commits them together."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeAlias

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import IntegrityError, Tracking

from accord_kit.chain import ChainedPostgresApplicationRecorder, ChainedSQLiteApplicationRecorder, seal, verify_store
from accord_kit.testing.counter import Counter, Counters

Recorder: TypeAlias = ChainedSQLiteApplicationRecorder | ChainedPostgresApplicationRecorder

WRITERS = 16


@pytest.fixture
def make_env(make_store_env: Callable[[str], dict[str, str]]) -> Callable[[str], dict[str, str]]:
    return lambda name: {**make_store_env(name), "SQLITE_LOCK_TIMEOUT": "120"}


def _recorder(app: Counters) -> Recorder:
    recorder = app.recorder
    assert isinstance(recorder, ChainedSQLiteApplicationRecorder | ChainedPostgresApplicationRecorder)
    return recorder


def _until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for a state (not for a time): fails only if it never comes."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.005)


@contextmanager
def write_lock_held(env: dict[str, str], app: Counters) -> Iterator[Any]:
    """Another connection holding the store's write lock until the block's end (or its
    rollback)."""
    recorder = _recorder(app)
    conn: Any
    if isinstance(recorder, ChainedSQLiteApplicationRecorder):
        conn = sqlite3.connect(env["SQLITE_DBNAME"], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        import psycopg
        from psycopg.sql import SQL, Identifier

        conn = psycopg.connect(
            host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]),
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            dbname=env["POSTGRES_DBNAME"],
        )
        lock = SQL("LOCK TABLE {}.{} IN EXCLUSIVE MODE").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
        )
        conn.execute(lock)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _run_all(jobs: list[Callable[[], Any]]) -> tuple[list[Any], list[threading.Thread]]:
    outcomes: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            outcomes[i] = jobs[i]()
        except BaseException as e:
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    return outcomes, threads


def _verify(app: Counters) -> None:
    key = Ed25519PrivateKey.generate()
    seal(app, key)
    report = verify_store(app, [key.public_key()])
    assert report.ok, report.problem


def _stored(app: Counters) -> int:
    """How many records the log holds (a PostgreSQL head can be above it: see below)."""
    return len(_recorder(app).select_records(0))


def _ids_in_order(app: Counters) -> None:
    """Each record once, ids increasing; on SQLite with no gap (a PostgreSQL sequence skips
    the ids of a rolled-back insert)."""
    records = _recorder(app).select_records(0)
    ids = [r.notification_id for r in records]
    if isinstance(app.recorder, ChainedSQLiteApplicationRecorder):
        assert ids == list(range(1, len(records) + 1))
    assert ids == sorted(set(ids))
    assert len({(r.originator_id, r.originator_version) for r in records}) == len(records)


def test_concurrent_saves_share_commits_and_every_event_is_stored_once(
    make_env: Callable[[str], dict[str, str]],
) -> None:
    env = make_env("group")
    app = Counters(env)
    recorder = _recorder(app)
    rounds = 5
    try:

        def save_rounds(i: int) -> list[Counter]:
            return [app.increment(f"c{i}", 1 + i) for _ in range(rounds)]

        jobs: list[Callable[[], Any]] = [partial(save_rounds, i) for i in range(WRITERS)]
        with write_lock_held(env, app) as blocker:
            first, first_threads = _run_all(jobs[:1])
            _until(lambda: _leading(recorder), "a writer leads (and waits for the lock)")
            rest, threads = _run_all(jobs[1:])
            _until(lambda: recorder.group_commit.queued == WRITERS - 1, "every other writer queued")
            blocker.rollback()
        for t in [*first_threads, *threads]:
            t.join()
        outcomes = first + rest
        assert all(isinstance(o, list) for o in outcomes), outcomes
        stats = recorder.group_commit.stats
        saves = WRITERS * rounds
        assert stats.writes == saves
        assert stats.largest >= WRITERS - 1  # the queued writers, committed together
        assert stats.commits < saves
        for i in range(WRITERS):
            counter = app.get_counter(f"c{i}")
            assert counter.value == rounds * (1 + i)
            assert counter.version == rounds + 1  # Created + one Incremented per save
        assert _stored(app) == WRITERS * (rounds + 1)
        _ids_in_order(app)
        _verify(app)
    finally:
        app.close()


def test_a_conflicting_save_in_a_group_fails_alone(make_env: Callable[[str], dict[str, str]]) -> None:
    env = make_env("conflict")
    app = Counters(env)
    recorder = _recorder(app)
    app.increment("shared", 1)
    for i in range(WRITERS):
        app.increment(f"c{i}", 1)
    stale: list[Counter] = []
    for _ in range(2):  # two copies of the same version: only one of them can be saved
        copy: Counter = app.repository.get(Counter.create_id("shared"))
        copy.increment(10)
        stale.append(copy)
    stored = _stored(app)
    try:
        with write_lock_held(env, app) as blocker:
            first, first_threads = _run_all([lambda: app.increment("leader", 1)])
            _until(lambda: _leading(recorder), "a writer leads")
            jobs: list[Callable[[], Any]] = [partial(app.increment, f"c{i}", 1) for i in range(WRITERS)]
            jobs += [partial(app.save, c) for c in stale]
            outcomes, threads = _run_all(jobs)
            _until(lambda: recorder.group_commit.queued == len(jobs), "the group queued")
            blocker.rollback()
        for t in [*first_threads, *threads]:
            t.join()
        assert not isinstance(first[0], BaseException), first
        assert all(not isinstance(o, BaseException) for o in outcomes[:WRITERS]), outcomes
        conflicts = [o for o in outcomes[WRITERS:] if isinstance(o, IntegrityError)]
        assert len(conflicts) == 1, outcomes[WRITERS:]
        stats = recorder.group_commit.stats
        assert stats.largest == len(jobs)  # the conflict was in the group that committed the others
        assert stats.isolated == 1
        assert app.get_counter("shared").value == 11
        for i in range(WRITERS):
            assert app.get_counter(f"c{i}").value == 2
        assert _stored(app) == stored + 2 + WRITERS + 1  # leader: Created + Incremented
        _ids_in_order(app)
        _verify(app)
    finally:
        app.close()


def _leading(recorder: Recorder) -> bool:
    gc: Any = recorder.group_commit
    return bool(gc._busy) and gc.queued == 0


def test_tracking_in_a_group_stays_exactly_once(make_env: Callable[[str], dict[str, str]]) -> None:
    env = make_env("tracking")
    app = Counters(env)
    recorder = _recorder(app)
    try:
        with write_lock_held(env, app) as blocker:
            first, first_threads = _run_all([lambda: app.increment("leader", 1)])
            _until(lambda: _leading(recorder), "a writer leads")
            # The same upstream position twice (a redelivery racing the first delivery), with
            # other writers in the same group.
            jobs: list[Callable[[], Any]] = [
                lambda: app.process_recorder.insert_events([], tracking=Tracking("upstream", 7)),
                lambda: app.process_recorder.insert_events([], tracking=Tracking("upstream", 7)),
                *[partial(app.increment, f"c{i}", 1) for i in range(4)],
            ]
            outcomes, threads = _run_all(jobs)
            _until(lambda: recorder.group_commit.queued == len(jobs), "the group queued")
            blocker.rollback()
        for t in [*first_threads, *threads]:
            t.join()
        assert not isinstance(first[0], BaseException), first
        assert sum(isinstance(o, IntegrityError) for o in outcomes[:2]) == 1, outcomes
        assert all(not isinstance(o, BaseException) for o in outcomes[2:]), outcomes
        assert recorder.group_commit.stats.largest == len(jobs)
        assert app.tracked_position("upstream") == 7
        _verify(app)
    finally:
        app.close()


_WRITER = textwrap.dedent(
    """
    import json, sys, threading
    from accord_kit.testing.counter import Counters

    app = Counters(json.loads(sys.argv[1]))
    out = threading.Lock()

    def work(i):
        n = 0
        while True:
            app.increment(f"c{i}", 1)
            n += 1
            with out:  # acknowledged: the save returned
                print(f"c{i} {n} {app.recorder.group_commit.stats.largest}", flush=True)

    for i in range(int(sys.argv[2])):
        threading.Thread(target=work, args=(i,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.parametrize("acks", [200, 600])
def test_sigkill_during_group_commits_loses_nothing_acknowledged(
    make_store_env: Callable[[str], dict[str, str]], acks: int
) -> None:
    env = make_store_env("killed")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, json.dumps(env), str(WRITERS)], stdout=subprocess.PIPE, text=True
    )
    acknowledged: dict[str, int] = {}
    grouped = 0
    try:
        assert proc.stdout is not None
        for seen, line in enumerate(proc.stdout, start=1):
            name, count, largest = line.split()
            acknowledged[name] = int(count)
            grouped = max(grouped, int(largest))
            if seen >= acks and grouped > 1:  # killed while writers are being grouped
                break
        proc.send_signal(signal.SIGKILL)
        for line in proc.stdout:  # acknowledged before the kill landed
            name, count, _ = line.split()
            acknowledged[name] = int(count)
    finally:
        proc.kill()
        proc.wait()
    assert grouped > 1
    app = Counters(env)
    try:
        for name, n in acknowledged.items():
            assert app.get_counter(name).value >= n, name
        _ids_in_order(app)
        _verify(app)
    finally:
        app.close()
