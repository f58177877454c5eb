"""AccordApplication.save and loading: the library's save, with aggregates collected by their class
instead of the library's runtime `typing.Protocol` checks (which walk the protocol's
attributes on every call); domain events and None are still collected by the library; and
aggregates loaded without the library's per-event Protocol check."""

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
