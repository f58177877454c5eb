"""Billing's statement and ledger indexes, on both stores: after months of history the
clock's pass (`process_due`) loads only the statements that are not FINAL and reads no
notification it has read before — also the first pass of a restarted instance; `statements`
loads only that agreement's; a department's ledger loads only its postings and balances
load none; all give what a full scan of the log gives; and an instance sharing the store
with the writer sees what it wrote."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from accord_agreements.samples import FINANCE, IT
from accord_billing.application import FINALIZED_TOPIC, LEDGER_TOPIC, STATEMENT_TOPIC, Billing
from accord_billing.domain import FINAL, ISSUED, LedgerTransaction
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, at, outage

INDEX_TOPICS = (STATEMENT_TOPIC, FINALIZED_TOPIC)  # what the statement index reads


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
        assert reads.notifications[INDEX_TOPICS] == 0
        reads.reset()
        assert [s.id for s in b.statements(None, aid)] == [s.id for s in statements]
        assert set(reads.loaded) == everything  # that agreement's statements, each once
        assert reads.notifications[INDEX_TOPICS] == 0

        # The other instance indexed only what the first one wrote since; it sees the same
        # statements, and once it has found the final ones final it loads them no more.
        other_reads = Reads(other, monkeypatch)
        assert ids_versions(other.statements(None, aid)) == ids_versions(b.statements(None, aid))
        finalized = len(everything) - len(not_final)
        assert other_reads.notifications[INDEX_TOPICS] == len(everything) + finalized
        assert other.process_due() == 0  # the first instance did everything due
        other_reads.reset()
        assert other.process_due() == 0
        assert {i for i in other_reads.loaded if i in everything} == not_final

        # September's statement is opened and issued by the first instance; the second one
        # finds it, and it is the second that finalises August and September: the first
        # learns that from their Finalized notifications and loads neither.
        suite.tick(f"2026-10-01T02:00{AMS}")
        after = b.statements(None, aid)
        assert ids_versions(after) == by_full_scan(b, aid) == ids_versions(other.statements(None, aid))
        assert [s.state for s in after][-3:] == [FINAL, ISSUED, ISSUED]
        assert other.process_due(at(f"2026-10-31T03:00{AMS}")) == 2
        reads.reset()
        assert b.process_due(at(f"2026-10-31T03:00{AMS}")) == 0
        assert not {i for i in reads.loaded if i in everything or i == after[-1].id}
        reads.reset()
        assert b.process_due(at(f"2026-10-31T03:00{AMS}")) == 0
        assert not reads.loaded
        assert [s.state for s in b.statements(None, aid)] == [FINAL] * 9
    finally:
        other.close()


def _months_of_history(suite: Suite) -> tuple[str, list[Any]]:
    """An agreement with eight monthly statements, most of them FINAL and posted."""
    aid = an_active_agreement(suite)
    for month in range(2, 10):
        suite.metrics.record(COLLECTOR, [outage(f"o{month}", f"2026-{month - 1:02d}-12T10:00{AMS}", 30)])
        suite.tick(f"2026-{month:02d}-01T02:00{AMS}")
    return aid, suite.billing.statements(None, aid)


def test_a_restarted_instance_loads_only_the_statements_that_can_be_due(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid, statements = _months_of_history(suite)
    everything = {s.id for s in statements}
    not_final = {s.id for s in statements if s.state != FINAL}
    assert len(everything) == 8 and len(not_final) <= 2

    restarted = Billing(suite.envs["billing"], clock=suite.clock)
    try:
        reads = Reads(restarted, monkeypatch)
        assert restarted.process_due() == 0
        assert {i for i in reads.loaded if i in everything} == not_final

        # September ends: its statement is opened and waits for September's windows, which
        # metrics has not closed yet. Deciding that reads only the statements of periods
        # ending after September's start, not the agreement's whole history.
        reads.reset()
        october = at(f"2026-10-01T02:00{AMS}")
        restarted.process_due(october)
        loaded = set(reads.loaded)
        now = restarted.statements(None, aid)
        september = now[-1]
        assert at(september.period_start) == at("2026-09-01T00:00+02:00") and september.state == "OPEN"
        assert not restarted._ready_to_issue(september, october)  # it was looked at: it waits
        assert september.id in loaded
        assert {i for i in loaded if i in everything} <= not_final, [s.period_start for s in now if s.id in loaded]

        # The same statements and states as a full scan, and as the first instance sees them.
        assert ids_versions(now) == by_full_scan(restarted, aid) == ids_versions(suite.billing.statements(None, aid))
    finally:
        restarted.close()


def _full_balances(rows: list[Any], department: str, period: str) -> dict[tuple[str, str], Decimal]:
    """What `balances` gave before the index: every transaction of the log, summed."""
    out: dict[tuple[str, str], Decimal] = {}
    for tx in rows:
        if period and at(tx.period) != at(period):
            continue
        for e in tx.entries:
            if not department or e["account"] == department:
                key = (e["account"], e["currency"])
                out[key] = out.get(key, Decimal(0)) + Decimal(e["amount"])
    return out


def test_ledger_and_balances_read_only_what_they_return(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    _months_of_history(suite)
    b = suite.billing
    # Many postings between other departments, over the same months.
    others = [f"dept-{i}" for i in range(5)]
    for i in range(60):
        payer, payee = others[i % 5], others[(i + 1) % 5]
        period = f"2026-{i % 9 + 1:02d}-01T00:00:00+01:00"
        entries = [
            {"account": payer, "amount": "-10.00", "currency": "EUR", "kind": "FEE"},
            {"account": payee, "amount": "10.00", "currency": "EUR", "kind": "FEE"},
        ]
        b.save(LedgerTransaction(source=f"test:{i}", entries=entries, period=period, description=f"posting {i}"))
    full = b._all(LEDGER_TOPIC)
    ours = [tx for tx in full if any(e["account"] in (IT, FINANCE) for e in tx.entries)]
    assert len(ours) >= 6 and len(full) == len(ours) + 60
    one_period = ours[len(ours) // 2].period

    restarted = Billing(suite.envs["billing"], clock=suite.clock)
    try:
        reads = Reads(restarted, monkeypatch)
        ledger = restarted.ledger(None, IT)
        assert [tx.id for tx in ledger] == [tx.id for tx in ours]
        assert set(reads.loaded) == {tx.id for tx in ours}  # its own postings, nothing else
        assert [tx.id for tx in restarted.ledger(None)] == [tx.id for tx in full]

        for department in (IT, FINANCE, "dept-3", ""):
            for period in ("", one_period):
                reads.reset()
                assert restarted.balances(None, department, period) == _full_balances(full, department, period)
                assert not reads.loaded  # summed from the index
                assert not reads.notifications[(LEDGER_TOPIC,)]  # nothing new to index
        total = restarted.balances(None)
        assert sum(total.values()) == 0 and total[(IT, "EUR")] == -total[(FINANCE, "EUR")]

        # A posting made by another instance is found.
        late = [
            {"account": IT, "amount": "-1.00", "currency": "EUR", "kind": "FEE"},
            {"account": "dept-1", "amount": "1.00", "currency": "EUR", "kind": "FEE"},
        ]
        b.save(LedgerTransaction(source="test:late", entries=late, period=one_period, description="late"))
        assert len(restarted.ledger(None, IT)) == len(ours) + 1
        assert restarted.balances(None, IT) == _full_balances(b._all(LEDGER_TOPIC), IT, "")
    finally:
        restarted.close()
