"""AccordApplication.save and loading: the library's save, with aggregates collected by their class
instead of the library's runtime `typing.Protocol` checks (which walk the protocol's
attributes on every call); domain events and None are still collected by the library;
aggregates loaded without the library's per-event Protocol check; and a snapshot taken from the
aggregate just saved, not loaded back from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import ProcessingEvent

from accord_kit.testing.counter import Counter, Counters
from accord_kit.testing.fixtures import sqlite_env


def test_aggregates_are_saved_without_the_librarys_protocol_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Counters(sqlite_env(tmp_path / "counters.sqlite"))
    try:
        collected: list[Any] = []
        library_collect = ProcessingEvent.collect_events

        def spying(self: ProcessingEvent[Any], *objs: Any, **kwargs: Any) -> None:
            collected.extend(objs)
            library_collect(self, *objs, **kwargs)

        monkeypatch.setattr(ProcessingEvent, "collect_events", spying)
        a, b = Counter("a"), Counter("b")
        a.increment(2)
        b.increment(3)
        b.increment(4)
        recordings = app.save(a, None, b)
        assert collected == [None]  # the aggregates never reached the library's checks
        assert [(r.domain_event.originator_id, r.domain_event.originator_version) for r in recordings] == [
            (a.id, 1),
            (a.id, 2),
            (b.id, 1),
            (b.id, 2),
            (b.id, 3),
        ]
        assert (app.get_counter("a").value, app.get_counter("b").value) == (2, 7)
        assert not a.collect_events() and not b.collect_events()  # their pending events were taken
        # A domain event on its own is still collected by the library.
        c = Counter("c")
        (created,) = c.collect_events()
        app.save(created)
        assert collected == [None, created]
        assert app.get_counter("c").value == 0
    finally:
        app.close()


def test_aggregates_are_loaded_without_the_librarys_protocol_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library's projector asserts each event against a runtime-checkable Protocol (≈ 15 µs
    an event): the kit's repository projects with `project_events`, the same fold without it."""
    import eventsourcing.application as library

    checked: list[Any] = []

    class Counting(type):
        def __instancecheck__(cls, instance: Any) -> bool:
            checked.append(instance)
            return True

    monkeypatch.setattr(library, "CanMutateProtocol", Counting("CanMutate", (), {}))
    app = Counters(sqlite_env(tmp_path / "counters.sqlite"))
    try:
        a = Counter("a")
        for n in range(1, 6):
            a.increment(n)
        app.save(a)
        assert app.repository.get(a.id).value == 15
        assert app.repository.get(a.id, version=3).value == 3  # a past version too
        assert checked == []
        # The library's own projector, asked for explicitly, still checks each event.
        assert app.repository.get(a.id, projector_func=library.project_aggregate).value == 15
        assert len(checked) == 6
    finally:
        app.close()


class SnapshottingCounters(Counters):
    snapshotting_intervals = {Counter: 3}


def test_a_snapshot_is_taken_from_the_aggregate_saved_when_it_is_at_the_snapshots_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library loads the aggregate from the store to snapshot it (its last snapshot and every
    event since); the aggregate just saved at that version is the same state, so it is taken from
    it — and loaded as the library does when a save passes the snapshot's version."""
    app = SnapshottingCounters(sqlite_env(tmp_path / "counters.sqlite"))
    try:
        loaded: list[int] = []  # the versions loaded from the store to take a snapshot
        library_get = app.repository.get

        def spying(aggregate_id: Any, *, version: int | None = None, **kwargs: Any) -> Any:
            if version is not None:
                loaded.append(version)
            return library_get(aggregate_id, version=version, **kwargs)

        monkeypatch.setattr(app.repository, "get", spying)
        a = Counter("a")  # version 1
        a.increment(1)
        a.increment(2)
        app.save(a)  # version 3: a snapshot
        for n in (3, 4, 5):
            a.increment(n)
        app.save(a)  # version 6: another
        assert loaded == []
        for n in (6, 7, 8, 9):
            a.increment(n)
        app.save(a)  # versions 7–10: a snapshot at 9, the aggregate saved already at 10
        assert loaded == [9]

        # Each snapshot holds what loading the aggregate from its events gives, the library's way.
        monkeypatch.setattr(app.repository, "get", library_get)
        assert app.snapshots is not None
        for version, value in ((3, 3), (6, 15), (9, 36)):
            snapshot: Any
            (snapshot,) = app.snapshots.get(a.id, lte=version, desc=True, limit=1)
            assert snapshot.originator_version == version
            replayed: Any = None
            for e in app.events.get(a.id, lte=version):  # every event, no snapshot
                replayed = e.mutate(replayed)
            assert replayed.value == value
            assert snapshot.state == Counter.Snapshot.take(replayed).state
        assert app.get_counter("a").value == 45
    finally:
        app.close()
