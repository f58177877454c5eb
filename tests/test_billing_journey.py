"""Billing on real agreements and real evaluations, on both stores: three months of an
e-mail SLA; statements assessed per closed window and issued after each month; a dispute
accepted and one rejected; a late outage restating January as an adjustment on a later
statement; the termination right granted after the third breached month and used by the
customer to terminate at once; the ledger balancing, each department's entries equal to its
statements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from accord_agreements.domain import TERMINATED
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.domain import FINAL, ISSUED
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, P_PROVIDER, PROVIDER, Suite, calls, outage


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def test_three_months_billed_disputed_restated_and_terminated(suite: Suite) -> None:
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    # Fee 12,000.00 EUR a month; availability < 99.9 and ≥ 99.0 → 10 %, cap 100 %,
    # minimum 10.00, claim window 30 days, termination after 3 consecutive breached months.
    aid = str(ag.draft(PROVIDER, sla_terms()).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")

    # January: 30 minutes down (met); February and March: an hour down each (breached).
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")  # January closed and its statement issued
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    suite.tick(f"2026-03-01T02:00{AMS}")
    statements = b.statements(P_CUSTOMER, aid)
    jan, feb = statements[0], statements[1]
    assert jan.state == ISSUED and Decimal(jan.totals["net"]) == 0  # 99.93 %: no band
    assert feb.state == ISSUED
    # February: (40,320 − 60) ÷ 40,320 = 99.851 % → 10 % of 12,000.00 = 1,200.00.
    assert Decimal(feb.totals["credits_issued"]) == Decimal("1200.00")
    assert Decimal(feb.totals["net"]) == Decimal("1200.00")

    # The customer disputes both February assessments; the provider accepts one with an
    # amount and rejects the other with a reason.
    feb_windows = {k.split("|")[0]: k.split("|")[1] for k in feb.assessments}
    d1 = b.dispute(P_CUSTOMER, str(feb.id), "availability", feb_windows["availability"], "the hour cost us the close")
    d2 = b.dispute(P_CUSTOMER, str(feb.id), "service-level", feb_windows["service-level"], "calls were slow")
    with pytest.raises(Exception, match="only the provider"):
        b.resolve(P_CUSTOMER, str(feb.id), d1, True, "9999", "")
    b.resolve(P_PROVIDER, str(feb.id), d1, True, "2000.00", "agreed: 2,000.00")
    b.resolve(P_PROVIDER, str(feb.id), d2, False, "", "no band for the service level")

    # March: an hour down again; then a late report adds 50 minutes to January.
    m.record(COLLECTOR, [outage("mar", f"2026-03-04T08:00{AMS}", 60)])
    m.record(COLLECTOR, [outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])
    suite.tick(f"2026-03-10T12:00{AMS}")
    jan = b.statements(P_CUSTOMER, aid)[0]
    assert Decimal(jan.totals["net"]) == 0, "an issued statement is never changed"
    march = b.statements(P_CUSTOMER, aid)[2]
    assert [a["key"].split("|")[0] for a in march.adjustments] == ["availability"]
    # January restated: (44,580 − 80) ÷ 44,580 = 99.82 % → 10 % of the 11,983.87 January
    # charges (the agreement starts an hour into it: 743 of its 744 hours) → 1,198.39 more than 0.00.
    assert Decimal(march.adjustments[0]["difference"]) == Decimal("1198.39")

    # April: March closes breached: January (restated), February, March → 3 consecutive
    # breached months → the termination right, which agreements records.
    suite.tick(f"2026-04-01T02:00{AMS}")
    agreement = ag.get_agreement_aggregate(aid)
    assert [r["objective_id"] for r in agreement.termination_rights] == ["availability"]
    march = b.statements(P_CUSTOMER, aid)[2]
    assert march.state == ISSUED
    # March: its own 1,200.00 plus January's adjustment of 1,198.39.
    assert Decimal(march.totals["net"]) == Decimal("2398.39")
    assert ag.terminate(CUSTOMER, aid, "three bad months", immediate=True).state == TERMINATED

    # The claim windows pass: statements become final and post to the ledger.
    suite.tick(f"2026-05-15T00:00{AMS}")
    finals = b.statements(P_CUSTOMER, aid)
    assert [s.state for s in finals[:3]] == [FINAL, FINAL, FINAL]
    assert Decimal(finals[1].totals["net"]) == Decimal("2000.00")  # the accepted dispute
    balances = b.balances(None)
    assert sum(balances.values()) == 0, "the ledger balances"
    # The customer pays three fees — 11,983.87 for January, 12,000.00 for February and March —
    # and is credited 0 + 2,000.00 + 2,398.39.
    assert balances[(FINANCE, "EUR")] == Decimal("-31585.48")
    assert balances[(IT, "EUR")] == Decimal("31585.48")
    assert (
        sum(Decimal(s.totals["net"]) - Decimal(s.totals["fee"]) for s in finals if s.state == FINAL)
        == (balances[(FINANCE, "EUR")])
    )
    # Per period: February's statement alone (its fee, less its credits).
    assert b.balances(None, period=finals[1].period_start)[(FINANCE, "EUR")] == Decimal("-10000.00")
    # Each party sees only its own account.
    assert set(b.balances(P_CUSTOMER)) == {(FINANCE, "EUR")}


def test_upstream_events_delivered_twice_change_nothing(suite: Suite) -> None:
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, sla_terms()).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    m.record(COLLECTOR, [outage("jan", f"2026-01-13T08:00{AMS}", 120)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    head = b.head_position()
    for source, upstream in (("agreements", ag), ("metrics", m)):
        envs, _ = upstream.read_events(0, 5000)
        for env in envs:
            assert b.apply_upstream(source, env) is False  # already applied: recognised, nothing stored
    assert b.head_position() == head
