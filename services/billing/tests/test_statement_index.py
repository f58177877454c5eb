"""Billing's statement index, on both stores: after months of history the clock's pass
(`process_due`) loads only the statements that are not FINAL and reads no notification it
has read before; `statements` loads only that agreement's; both give what a full scan of
the log gives; and an instance sharing the store with the writer sees what it wrote."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest

from accord_billing.application import STATEMENT_TOPIC, Billing
from accord_billing.domain import FINAL, ISSUED
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, at, outage


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


class Reads:
    """Counts what an application reads from its store: aggregates loaded (by id) and
    notifications returned (by topic filter)."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loaded: Counter[UUID] = Counter()
        self.notifications: Counter[tuple[str, ...]] = Counter()
        get, select = app.repository.get, app.recorder.select_notifications

        def counted_get(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
            self.loaded[UUID(str(aggregate_id))] += 1
            return get(aggregate_id, *args, **kwargs)

        def counted_select(*args: Any, **kwargs: Any) -> Any:
            notes = select(*args, **kwargs)
            self.notifications[tuple(kwargs.get("topics") or ())] += len(notes)
            return notes

        monkeypatch.setattr(app.repository, "get", counted_get)
        monkeypatch.setattr(app.recorder, "select_notifications", counted_select)

    def reset(self) -> None:
        self.loaded.clear()
        self.notifications.clear()


def by_full_scan(billing: Billing, agreement_id: str) -> list[tuple[UUID, int]]:
    """What `statements` gave before the index: every statement of the log, filtered."""
    rows = [s for s in billing._all(STATEMENT_TOPIC) if s.agreement_id == agreement_id]
    return [(s.id, s.version) for s in sorted(rows, key=lambda s: s.period_start)]


def ids_versions(statements: list[Any]) -> list[tuple[UUID, int]]:
    return [(s.id, s.version) for s in statements]


def test_process_due_loads_only_statements_not_final(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    b = suite.billing
    aid = an_active_agreement(suite)
    # A second instance on the same store, its index built now: it must later see what the
    # first one writes.
    other = Billing(suite.envs["billing"], clock=suite.clock)
    try:
        assert other.statements(None, aid) == []

        # Eight months: each month closes, its statement is issued, and 30 days on it is final.
        for month in range(2, 10):
            suite.metrics.record(COLLECTOR, [outage(f"o{month}", f"2026-{month - 1:02d}-12T10:00{AMS}", 30)])
            suite.tick(f"2026-{month:02d}-01T02:00{AMS}")
        statements = b.statements(None, aid)
        everything = {s.id for s in statements}
        not_final = {s.id for s in statements if s.state != FINAL}
        assert len(everything) == 8
        assert not_final and len(not_final) <= 2, [s.state for s in statements]
        assert ids_versions(statements) == by_full_scan(b, aid)
        assert b.statements(None, "no-such-agreement") == []

        # The clock's pass: only the statements still OPEN or ISSUED are loaded, and no
        # statement notification is read again.
        reads = Reads(b, monkeypatch)
        b.process_due()
        assert {i for i in reads.loaded if i in everything} == not_final
        assert reads.notifications[(STATEMENT_TOPIC,)] == 0
        reads.reset()
        assert [s.id for s in b.statements(None, aid)] == [s.id for s in statements]
        assert set(reads.loaded) == everything  # that agreement's statements, each once
        assert reads.notifications[(STATEMENT_TOPIC,)] == 0

        # The other instance indexed only what the first one wrote since; it sees the same
        # statements, and once it has found the final ones final it loads them no more.
        other_reads = Reads(other, monkeypatch)
        assert ids_versions(other.statements(None, aid)) == ids_versions(b.statements(None, aid))
        assert other_reads.notifications[(STATEMENT_TOPIC,)] == len(everything)
        assert other.process_due() == 0  # the first instance did everything due
        other_reads.reset()
        assert other.process_due() == 0
        assert {i for i in other_reads.loaded if i in everything} == not_final

        # September's statement is opened and issued by the first instance; the second one
        # finds it, and it is the second that finalises August and September: the first then
        # loads those once, finds them FINAL, and loads nothing after.
        suite.tick(f"2026-10-01T02:00{AMS}")
        after = b.statements(None, aid)
        assert ids_versions(after) == by_full_scan(b, aid) == ids_versions(other.statements(None, aid))
        assert [s.state for s in after][-3:] == [FINAL, ISSUED, ISSUED]
        assert other.process_due(at(f"2026-10-31T03:00{AMS}")) == 2
        reads.reset()
        assert b.process_due(at(f"2026-10-31T03:00{AMS}")) == 0
        assert {i for i in reads.loaded if i in everything or i == after[-1].id} == {s.id for s in after[-2:]}
        reads.reset()
        assert b.process_due(at(f"2026-10-31T03:00{AMS}")) == 0
        assert not reads.loaded
        assert [s.state for s in b.statements(None, aid)] == [FINAL] * 9
    finally:
        other.close()
