"""Agreements commands committed in one group (accord_kit.groupcommit, SQLite, real threads):
two commands racing on the same agreement are in the same group as commands on other
agreements; only the one that lost the race gets a ConflictError, the others are stored."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accord_agreements.application import Agreements
from accord_agreements.domain import Actor, ConflictError
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms, with_target
from accord_kit.chain import ChainedSQLiteApplicationRecorder, seal, verify_store
from accord_kit.clock import FakeClock
from accord_kit.testing.fixtures import sqlite_env

START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
OTHERS = 6


def _until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for a state (not for a time): fails only if it never comes."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.005)


def test_a_conflicting_command_in_a_group_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "agreements.db"
    app = Agreements({**sqlite_env(path), "SQLITE_LOCK_TIMEOUT": "120"}, clock=FakeClock(START))
    recorder = app.recorder
    assert isinstance(recorder, ChainedSQLiteApplicationRecorder)
    gc = recorder.group_commit
    try:
        for dept in (IT, FINANCE):
            app.register_department(dept, dept)
        app.register_service(EMAIL, "E-mail", IT)
        ids = []
        for _ in range(OTHERS + 2):
            agg = app.draft(PROVIDER, sla_terms())
            app.propose(PROVIDER, str(agg.id))
            app.accept(CUSTOMER, str(agg.id))
            ids.append(str(agg.id))
        raced, leader_id, others = ids[0], ids[1], ids[2:]
        revision = app.get_agreement_aggregate(raced).version
        effective = START + timedelta(days=8)

        def amend(agreement_id: str, target: str) -> Any:
            terms = with_target(sla_terms(), "service-level", target)
            return app.propose_amendment(PROVIDER, agreement_id, terms, effective, "r", expected=revision)[1]

        outcomes: list[Any] = []
        lock = threading.Lock()

        def run(job: Callable[[], Any], at: int) -> None:
            try:
                result: Any = job()
            except BaseException as e:
                result = e
            with lock:
                outcomes.append((at, result))

        def start(jobs: list[Callable[[], Any]], first: int) -> list[threading.Thread]:
            threads = [threading.Thread(target=run, args=(j, first + i)) for i, j in enumerate(jobs)]
            for t in threads:
                t.start()
            return threads

        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock: the leader waits, the rest queue
        try:
            threads = start([partial(amend, leader_id, "81")], 0)
            _until(lambda: gc._busy and gc.queued == 0, "a command leads")
            jobs = [partial(amend, raced, "81"), partial(amend, raced, "82")]
            jobs += [partial(amend, a, "81") for a in others]
            threads += start(jobs, 1)
            _until(lambda: gc.queued == len(jobs), "the group queued")
        finally:
            blocker.rollback()
            blocker.close()
        for t in threads:
            t.join()
        results = dict(outcomes)
        assert gc.stats.largest == len(jobs)
        assert gc.stats.isolated == 1  # the race was lost inside the group, at the store
        raced_results = [results[1], results[2]]
        assert sum(isinstance(r, ConflictError) for r in raced_results) == 1, raced_results
        assert sum(isinstance(r, str) for r in raced_results) == 1, raced_results
        assert all(isinstance(results[i], str) for i in [0, *range(3, 3 + len(others))]), results
        assert app.get_agreement_aggregate(raced).version == revision + 1
        for a in [leader_id, *others]:
            assert app.get_agreement_aggregate(a).pending is not None
        key = Ed25519PrivateKey.generate()
        seal(app, key)
        report = verify_store(app, [key.public_key()])
        assert report.ok, report.problem
    finally:
        app.close()
