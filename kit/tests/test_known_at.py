"""The two time axes: an aggregate as the store knew it at an instant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from accord_kit.clock import FakeClock
from accord_kit.testing.counter import Counter, Counters


def test_an_aggregate_as_known_at_each_instant(make_store_env: Callable[[str], dict[str, str]]) -> None:
    t0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    clock = FakeClock(t0)
    app = Counters(make_store_env("counters"), clock=clock)
    app.increment("a", 1)  # created + incremented at t0
    clock.advance(timedelta(hours=1))
    app.increment("a", 10)
    clock.advance(timedelta(hours=1))
    app.increment("a", 100)
    cid = Counter.create_id("a")

    assert app.get_as_known_at(cid, t0 - timedelta(seconds=1)) is None
    assert app.get_as_known_at(cid, t0).value == 1
    assert app.get_as_known_at(cid, t0 + timedelta(minutes=59)).value == 1
    assert app.get_as_known_at(cid, t0 + timedelta(hours=1)).value == 11
    assert app.get_as_known_at(cid, t0 + timedelta(days=1)).value == 111
    assert [v for v, _ in app.recorded_times(cid)] == list(range(1, app.repository.get(cid).version + 1))
    app.close()
