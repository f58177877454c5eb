"""The signal index in the store (signal_store.py), on both stores: a process holds no
per-signal state for the windows it does not judge — a restart reads only the log after the
judged position and its open windows' signals — and dedupe and corrections stay exact across a
restart, after a crash between a batch's commit and its indexing (the index left behind the log),
and on a store whose index is empty (recorded before the index existed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from accord.metrics.v1 import signals_pb2 as pb
from accord_metrics import signal_index, signal_store
from accord_metrics.application import SIGNAL_TOPICS, Metrics, content_digest
from accord_metrics.domain import KnownService, SignalCorrection
from accord_metrics.signal_index import _encode
from accord_metrics.signals import InvalidSignalError
from tests.suite import AMS, COLLECTOR, EMAIL, Suite, an_active_agreement, at, calls, outage, spy_lookups, ts


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _strings(value: Any, seen: set[int] | None = None) -> set[str]:
    """Every string reachable from `value` through containers and objects' attributes (the
    store, a connection pool, is not followed: it is the database's, not the process's)."""
    seen = set() if seen is None else seen
    if id(value) in seen or type(value).__name__ == "SignalStore":
        return set()
    seen.add(id(value))
    if isinstance(value, str):
        return {value}
    if isinstance(value, bytes):
        return {value.decode("latin-1")}
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out |= _strings(k, seen) | _strings(v, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            out |= _strings(v, seen)
    else:
        if hasattr(value, "__dict__"):
            out |= _strings(vars(value), seen)
        # A slotted object's attributes (a formula input such as a call holds no dict).
        for cls in type(value).__mro__:
            slots = getattr(cls, "__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if not name.startswith("__"):
                    out |= _strings(getattr(value, name, None), seen)
    return out


def _quarter(suite: Suite) -> str:
    """January to March with an outage and calls each, judged; April open."""
    aid = an_active_agreement(suite)
    for month in ("01", "02", "03"):
        day = f"2026-{month}-12T09:00{AMS}"
        suite.metrics.record(
            COLLECTOR, [outage(f"o{month}", f"2026-{month}-12T10:00{AMS}", 30), *calls(f"c{month}-", day, 8, 2)]
        )
        suite.tick(f"2026-{month}-20T10:00{AMS}")
    suite.tick(f"2026-04-10T10:00{AMS}")
    return aid


def test_a_restarted_process_holds_nothing_of_the_signals_of_closed_windows(suite: Suite) -> None:
    aid = _quarter(suite)
    expected = {(w.objective_id, w.window_start): w.latest for w in suite.metrics.window_evaluations(aid)}
    judged_at = suite.metrics._judged_position
    suite.metrics.close()

    again = Metrics(suite.envs["metrics"], clock=suite.clock)
    reads: list[int] = []
    select = again.recorder.select_notifications

    def watched(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("topics") == SIGNAL_TOPICS:
            reads.append(int(kwargs["start"]))
        return select(*args, **kwargs)

    again.recorder.select_notifications = watched  # type: ignore[method-assign]
    try:
        april = [outage("o04", f"2026-04-10T08:00{AMS}", 20), *calls("c04-", f"2026-04-10T07:00{AMS}", 5, 5)]
        again.record(COLLECTOR, april)
        again.evaluate(at(f"2026-04-10T10:05{AMS}"))
        assert again.last_round.windows_judged == 2  # April's, from April's signals
        # The log was read from the judged position on, never from its start.
        assert reads and min(reads) >= judged_at > 0
        # Nothing of January to March is held in the process: no id, no content, no digest.
        held = _strings(again._services)
        earlier = {f"o{m}" for m in ("01", "02", "03")} | {f"c{m}-{i}" for m in ("01", "02", "03") for i in range(10)}
        assert not held & earlier
        assert {s.signal_id for s in april} <= set(again._services["email"].converted)
        # … all of it is in the store's index, and the evaluations are those of the first process.
        assert again._services["email"].count == 3 * 11 + 11
        assert set(again._signal_store.lookup("email", sorted(earlier))) == earlier
        now = {(w.objective_id, w.window_start): w.latest for w in again.window_evaluations(aid)}
        assert {k: v for k, v in now.items() if k in expected and not k[1].startswith("2026-03-31")} == {
            k: v for k, v in expected.items() if not k[1].startswith("2026-03-31")
        }
        for objective in ("availability", "service-level"):
            check = again.recompute(aid, objective, "2026-03-31T22:00:00+00:00")
            assert check["matches"], check["differences"]
    finally:
        again.close()
    suite.metrics = Metrics(suite.envs["metrics"], clock=suite.clock)  # closed by the fixture


def _dedupe_holds(m: Metrics) -> None:
    """o1 was recorded with 30 minutes, then corrected to 45; c0 once."""
    for old in (outage("o1", f"2026-01-12T10:00{AMS}", 30), outage("o1", f"2026-01-12T10:00{AMS}", 45)):
        again = m.record(COLLECTOR, [old, calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0]])
        assert (again.accepted, again.duplicates, again.corrections) == (0, 2, 0)
    fixed = m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 50)])
    assert (fixed.accepted, fixed.duplicates, fixed.corrections) == (0, 0, 1)
    new = m.record(COLLECTOR, [outage("o2", f"2026-01-13T10:00{AMS}", 5)])
    assert (new.accepted, new.duplicates, new.corrections) == (1, 0, 0)
    wrong = pb.Signal()
    wrong.CopyFrom(calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0])
    wrong.signal_id = "o1"
    with pytest.raises(InvalidSignalError, match="'o1' was recorded as a outage signal"):
        m.record(COLLECTOR, [wrong])


def _first_two(m: Metrics) -> None:
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30), calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0]])
    assert m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 45)]).corrections == 1


def test_dedupe_and_corrections_stay_exact_across_a_restart(suite: Suite) -> None:
    an_active_agreement(suite)
    _first_two(suite.metrics)
    suite.metrics.close()
    suite.metrics = Metrics(suite.envs["metrics"], clock=suite.clock)
    _dedupe_holds(suite.metrics)


def _stored_unindexed(m: Metrics, signal: pb.Signal, previous: pb.Signal) -> None:
    """A correction of `previous` stored in the log without its index rows: as a crash between
    the event's commit and its indexing would leave it (or a process of a version before the
    index)."""
    fix = SignalCorrection(
        service_id=signal.service_id,
        batch=_encode([signal]),
        count=1,
        previous_digests=[content_digest(previous)],
        changed=["outage.end"],
        actor="service:collector",
        reason="re-sent",
        agreement_ids=[],
    )
    m.save(fix)


def test_a_batch_left_out_of_the_index_is_caught_up_from_the_log_on_start(suite: Suite) -> None:
    aid = an_active_agreement(suite)
    m = suite.metrics
    first = outage("o1", f"2026-01-12T10:00{AMS}", 30)
    m.record(COLLECTOR, [first, calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0]])
    indexed = m._signal_store.position()
    _stored_unindexed(m, outage("o1", f"2026-01-12T10:00{AMS}", 45), first)
    assert m._signal_store.position() == indexed < m.head_position()  # the index is behind the log
    m.close()

    # A process that starts catches the index up from its position: the correction is known.
    suite.metrics = m = Metrics(suite.envs["metrics"], clock=suite.clock)
    _dedupe_holds(m)
    assert m._signal_store.position() > indexed
    suite.tick(f"2026-02-01T02:00{AMS}")
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, "2025-12-31T23:00:00+00:00")
        assert check["matches"], check["differences"]


def test_a_batch_left_out_of_the_index_is_caught_up_by_a_running_process(suite: Suite) -> None:
    an_active_agreement(suite)
    m = suite.metrics
    first = outage("o1", f"2026-01-12T10:00{AMS}", 30)
    m.record(COLLECTOR, [first, calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0]])
    _stored_unindexed(m, outage("o1", f"2026-01-12T10:00{AMS}", 45), first)
    _dedupe_holds(m)
    assert m._services["email"].count == 3  # o1, c0, o2
    assert m._signal_store.position() == m._signals_position


def test_a_failed_index_write_stores_nothing_and_a_retry_is_recorded_once(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index rows are written in the batch's own transaction: a failure there stores
    neither; the retry is recorded, once, and counted once."""
    an_active_agreement(suite)
    m = suite.metrics
    m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30), calls("c", f"2026-01-12T09:00{AMS}", 1, 0)[0]])
    head = m.head_position()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("the disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(m._signal_store, "_write", fail)
        with pytest.raises(OperationalError):
            m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 45)])
    assert m.head_position() == head  # nothing stored
    assert m.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 45)]).corrections == 1
    _dedupe_holds(m)
    assert m._services["email"].count == 3  # o1, c0, o2: the failed write counted nothing


def test_a_store_recorded_before_the_index_existed_is_indexed_from_its_log(suite: Suite) -> None:
    aid = _quarter(suite)
    m = suite.metrics
    _first_two(m)
    expected = {(w.objective_id, w.window_start): w.latest for w in m.window_evaluations(aid)}
    store = m._signal_store
    with store._cursor(write=True) as cur:  # as a store recorded before the index existed
        for table in (store.rows, store.services):
            cur.execute(f"DELETE FROM {table}")
        cur.execute(f"UPDATE {store.position_table} SET position = 0")
    m.close()

    suite.metrics = m = Metrics(suite.envs["metrics"], clock=suite.clock)
    _dedupe_holds(m)
    assert m._services["email"].count == 33 + 3
    m.evaluate(at(f"2026-04-10T10:05{AMS}"))
    assert m.last_round.windows_judged >= 2
    assert {(w.objective_id, w.window_start): w.latest for w in m.window_evaluations(aid)}.keys() == expected.keys()
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, "2026-03-31T22:00:00+00:00")
        assert check["matches"], check["differences"]


def test_on_a_recorder_without_the_hook_a_batch_is_indexed_from_the_log(tmp_path: Path) -> None:
    """eventsourcing's own SQLite recorder runs no `with_records` hook: each batch is indexed
    from the log right after it is stored, and dedupe stays exact."""
    from accord_kit.testing.fixtures import sqlite_env

    env = {**sqlite_env(tmp_path / "plain.sqlite"), "PERSISTENCE_MODULE": "eventsourcing.sqlite"}
    m = Metrics(env)
    try:
        m.save(KnownService("email", "it-operations"))
        _first_two(m)
        assert m._signal_store.position() == m._signals_position == m.head_position()
        _dedupe_holds(m)
        assert m._services["email"].count == 3
    finally:
        m.close()


def test_a_batchs_index_rows_are_written_ninety_to_a_statement_on_sqlite(tmp_path: Path) -> None:
    """A batch's rows go to SQLite in statements of many rows (each one step: the GIL released
    once, not once a row — with a round running in another thread, each release waited for the
    round to hand it back), and read back exactly as written, a replaced row included."""
    import sqlite3

    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.signal_store import LIST_CODE, Facts, Row

    path = tmp_path / "rows.sqlite"
    m = Metrics(sqlite_env(path))
    try:
        store = m._signal_store
        rows = [
            ("email", *Row(f"c{i}", LIST_CODE["calls"], 1_000 + i, i, 0, 1_000 + i, b"", b"%d" % i))
            for i in range(1_050)
        ]
        rows[-1] = ("email", *Row("c0", LIST_CODE["calls"], 5, 0, 0, 5, b"\x01" * 32, b"again"))  # c0 replaced
        statements: list[str] = []
        conn = sqlite3.connect(path, isolation_level=None)
        conn.set_trace_callback(statements.append)
        try:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            store.write(cur, rows, {"email": Facts(1_049)}, store.position(), 1, 1)
            cur.execute("COMMIT")
        finally:
            conn.close()
        inserts = [s for s in statements if s.startswith(f"INSERT INTO {store.rows} ")]
        assert len(inserts) == 12, len(inserts)  # 1,050 rows: 11 statements of 90 and one of 60
        assert store.count() == 1_049 and store.position() == 1
        held = store.lookup("email", ["c0", "c1", "c1048"])
        assert held["c0"] == Row("c0", LIST_CODE["calls"], 5, 0, 0, 5, b"\x01" * 32, b"again")
        assert held["c1048"] == Row("c1048", LIST_CODE["calls"], 2_048, 1_048, 0, 2_048, b"", b"1048")
        assert held["c1"].kind_list == "calls"
    finally:
        m.close()


def _january_matches(suite: Suite, aid: str) -> None:
    """January closed and each objective's window recomputed from every stored signal: the same."""
    suite.tick(f"2026-02-01T02:00{AMS}")
    for objective in ("availability", "service-level"):
        check = suite.metrics.recompute(aid, objective, "2025-12-31T23:00:00+00:00")
        assert check["matches"], check["differences"]


def test_a_round_reads_back_none_of_the_rows_this_process_just_wrote(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's rows, written by this process, bring the open window's kept selection up to date
    as written: the round reads none of them back from the store — and judges what a process
    reading every stored signal judges."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    # The longest outage first (those after it are shorter).
    m.record(COLLECTOR, [*calls("a", f"2026-01-12T09:00{AMS}", 5, 1), outage("long", f"2026-01-05T10:00{AMS}", 90)])
    suite.tick(f"2026-01-12T12:00{AMS}")  # a round: the open window's selection kept
    asked = spy_lookups(monkeypatch)
    m.record(COLLECTOR, [*calls("b", f"2026-01-12T12:30{AMS}", 3, 2), outage("o", f"2026-01-12T13:00{AMS}", 20)])
    m.record(COLLECTOR, [outage("o", f"2026-01-12T13:00{AMS}", 25)], reason="longer")  # a correction
    asked.clear()  # (dedupe read the batches' ids)
    suite.clock.set(at(f"2026-01-12T14:00{AMS}"))
    assert m.evaluate() > 0
    assert asked == []
    _january_matches(suite, aid)


def test_a_round_converts_the_messages_a_batch_was_recorded_from_when_they_were_given_away(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signals given away with their batch (`owned`: a request the service parsed) are converted
    by the round from those very messages, not parsed again from their rows; the caller's own
    messages are not kept (it may change them later): changed after recording, the round judges
    what was recorded, from the store's rows."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    # The longest outage first (those after it are shorter).
    m.record(COLLECTOR, [*calls("a", f"2026-01-12T09:00{AMS}", 5, 1), outage("long", f"2026-01-05T10:00{AMS}", 90)])
    suite.tick(f"2026-01-12T12:00{AMS}")  # a round: the open window's selection kept
    converted: list[Any] = []
    convert_all = signal_index._convert_all

    def spied(signals: list[pb.Signal], ids: Any = None) -> Any:
        converted.extend(signals)
        return convert_all(signals, ids)

    monkeypatch.setattr(signal_index, "_convert_all", spied)
    given = [*calls("b", f"2026-01-12T12:30{AMS}", 3, 2), outage("o", f"2026-01-12T13:00{AMS}", 20)]
    m.record(COLLECTOR, given, via="grpc", owned=True)
    mine = [outage("p", f"2026-01-12T13:10{AMS}", 10)]
    m.record(COLLECTOR, mine)
    mine[0].outage.end.CopyFrom(ts(at(f"2026-01-12T13:50{AMS}")))  # the caller's, changed: not recorded
    suite.clock.set(at(f"2026-01-12T14:00{AMS}"))
    assert m.evaluate() > 0
    assert {s.signal_id for s in converted} == {s.signal_id for s in given} | {"p"}
    assert all(any(c is s for c in converted) for s in given)  # the very messages given away
    assert not any(c is mine[0] for c in converted)
    kept = [i for sel in m._services["email"].selections.values() for i in sel.lists.get("outages", ([], [], []))[2]]
    assert sorted(o.end - o.start for o in kept) == [timedelta(minutes=m) for m in (10, 20, 90)]
    _january_matches(suite, aid)


def test_a_row_another_process_wrote_since_is_read_from_the_store(suite: Suite) -> None:
    """A row this process wrote and another process replaced since (a correction it recorded) is
    read from the store when the kept selection is brought up to date, not taken as written here."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    # The longest outage first (those after it are shorter).
    m.record(COLLECTOR, [*calls("a", f"2026-01-12T09:00{AMS}", 5, 1), outage("long", f"2026-01-05T10:00{AMS}", 90)])
    suite.tick(f"2026-01-12T12:00{AMS}")  # a round: the open window's selection kept
    m.record(COLLECTOR, [outage("o", f"2026-01-12T13:00{AMS}", 20)])
    other = Metrics(suite.envs["metrics"], clock=suite.clock)  # another process on the same store
    try:
        other.record(COLLECTOR, [outage("o", f"2026-01-12T13:00{AMS}", 50)], reason="longer")
    finally:
        other.close()
    suite.clock.set(at(f"2026-01-12T14:00{AMS}"))
    m.evaluate()
    kept = [i for sel in m._services["email"].selections.values() for i in sel.lists.get("outages", ([], [], []))[2]]
    assert sorted(o.end - o.start for o in kept) == [timedelta(minutes=50), timedelta(minutes=90)]
    _january_matches(suite, aid)


def test_batches_another_process_indexed_are_noted_without_building_their_rows_or_reading_their_contents(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches another process stored (and indexed in the same transaction) are past the index's
    position this process last read: the round asks the store's position and notes them — no
    index rows built for them only to be refused (`_rows_of`), and the instant they change the
    windows from read as the index holds it, not from their rows' contents; their ids are read
    once, by the kept selection's catch-up. The windows are judged as from every stored signal."""
    aid = an_active_agreement(suite)
    m = suite.metrics
    m.record(COLLECTOR, [*calls("a", f"2026-01-12T09:00{AMS}", 5, 1), outage("long", f"2026-01-05T10:00{AMS}", 90)])
    suite.tick(f"2026-01-12T12:00{AMS}")  # a round: the open window's selection kept
    other = Metrics(suite.envs["metrics"], clock=suite.clock)  # another process on the same store
    try:
        other.record(
            COLLECTOR, [*calls("b", f"2026-01-12T12:30{AMS}", 3, 2), outage("o", f"2026-01-12T13:00{AMS}", 20)]
        )
        # A correction moving a call a day earlier: the change reaches back to its earliest content.
        moved = calls("a", f"2026-01-11T09:00{AMS}", 1, 1)[0]
        other.record(COLLECTOR, [moved], reason="entered a day earlier")
    finally:
        other.close()
    built: list[int] = []
    rows_of = signal_index.SignalIndex._rows_of

    def spied(self: Any, batches: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(len(batches))
        return rows_of(self, batches, *args, **kwargs)

    monkeypatch.setattr(signal_index.SignalIndex, "_rows_of", spied)
    asked = spy_lookups(monkeypatch)
    suite.clock.set(at(f"2026-01-12T14:00{AMS}"))
    assert m.evaluate() > 0
    assert built == []
    assert sorted(asked) == ["a0", "b0", "b1", "b2", "b3", "b4", "o"]  # each once
    assert m._changed == {}  # the round judged what was noted
    _january_matches(suite, aid)


def test_rows_bound_without_adaptation_are_stored_with_the_types_written_before(tmp_path: Path) -> None:
    """On SQLite a row's contents and digests are bound as bytearrays and a missing group as ''
    (types sqlite3 binds without its adaptation protocol): stored as before all the same — blobs
    (an empty one too: not NULL), a group an integer (0, the extremes and a negative one
    included) or NULL — and read back as written."""
    import sqlite3

    from accord_kit.testing.fixtures import sqlite_env
    from accord_metrics.signal_store import LIST_CODE, Facts, Row

    path = tmp_path / "types.sqlite"
    m = Metrics(sqlite_env(path))
    try:
        store = m._signal_store
        groups: list[int | None] = [None, 0, -1, 7, -(2**63), 2**63 - 1, None]
        written = [
            Row(f"c{i}", LIST_CODE["calls"], 10 + i, i, 0, 10 + i, b"" if i % 2 else b"\x02" * 32, b"", g)
            for i, g in enumerate(groups)
        ]
        written.append(Row("o1", LIST_CODE["outages"], 99, 7, 1, 99, b"", bytes(range(256))))
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            store.write(cur, [("email", *r) for r in written], {"email": Facts(8)}, store.position(), 1, 1)
            cur.execute("COMMIT")
            types = dict(
                (sid, rest)
                for sid, *rest in conn.execute(
                    f"SELECT signal_id, typeof(earlier), typeof(content), typeof(grp), grp FROM {store.rows}"
                )
            )
        finally:
            conn.close()
        for r in written:
            assert types[r.signal_id] == ["blob", "blob", "null" if r.grp is None else "integer", r.grp], r
        held = store.lookup("email", [r.signal_id for r in written])
        assert [held[r.signal_id] for r in written] == written
    finally:
        m.close()


def test_grouping_a_store_indexed_before_leaves_a_row_another_process_writes_meanwhile(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keying rows indexed before (here: the calls' groups) reads a page, then sets each row's
    key only where its content is still the one read: a row another process changes in between
    (a correction of the customer, its new group written with it) keeps what that process
    wrote — and on SQLite that process's commit between the page's read and its writes does not
    fail the keying (a transaction that read first cannot then write over a newer commit)."""
    monkeypatch.setattr(signal_store, "REKEY_PAGE", 4)
    m = suite.metrics
    an_active_agreement(suite)  # the service known
    day = at(f"2026-01-12T09:00{AMS}")
    m.record(COLLECTOR, [_answered(f"c{i}", day, f"cust-{i}") for i in range(10)])
    other = Metrics(suite.envs["metrics"], clock=suite.clock)  # another process on the store
    try:
        store = m._signal_store
        with store._cursor(write=True) as cur:  # as the index was written before calls had groups
            cur.execute(store._q(f"UPDATE {store.rows} SET grp = NULL"))
            cur.execute(store._q(f"DELETE FROM {store.position_table} WHERE name LIKE ?"), ("signals.grouped%",))
        corrected = _answered("c2", day, "cust-moved").SerializeToString()
        written: list[str] = []

        def meanwhile(content: bytes) -> int | None:
            if not written:  # the first page read: the other process corrects c2 and commits
                written.append("c2")
                with other._signal_store._cursor(write=True) as cur:
                    cur.execute(
                        store._q(f"UPDATE {store.rows} SET content = ?, grp = ? WHERE signal_id = ?"),
                        (corrected, signal_index.group_key(corrected), "c2"),
                    )
            return signal_index.group_key(content)

        assert store.key_groups(meanwhile) == 9  # every call but the one written meanwhile
        with store._cursor(write=False) as cur:
            cur.execute(store._q(f"SELECT signal_id, grp, content FROM {store.rows}"))
            rows = {str(s): (None if g is None else int(g), bytes(c)) for s, g, c in cur.fetchall()}
        assert rows["c2"] == (signal_index.group_key(corrected), corrected)
        assert all(g == signal_index.group_key(c) for g, c in rows.values())
        assert store.key_groups(meanwhile) == 0  # marked done
    finally:
        other.close()


def _answered(sid: str, entered: datetime, customer: str) -> pb.Signal:
    c = pb.Call(
        entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=20)), customer_id=customer, reason="r"
    )
    return pb.Signal(signal_id=sid, service_id=EMAIL, call=c)
