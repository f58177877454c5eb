"""Every amount billing knows is in the statement's totals at once, on both stores: an accepted
dispute on an issued statement counts in its answer's `disputes` and `net` before it is final,
an adjustment on the open statement and the assessments recorded on it so far show in that
statement's totals (provisional); the events that bring each amount (AssessmentRecorded,
AdjustmentRecorded, DisputeResolved) state the totals after it; an issued statement's recorded
totals are never changed."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from accord.billing.v1 import billing_pb2 as pb
from accord.billing.v1 import events_pb2 as ev
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.domain import FINAL, ISSUED, OPEN
from accord_billing.server import BillingServicer
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, P_PROVIDER, PROVIDER, Suite, outage, slo_journey


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def answer(suite: Suite, statement_id: str) -> pb.Statement:
    """The statement as `GetStatement` answers it."""
    servicer = BillingServicer(suite.billing)
    got = asyncio.run(servicer.GetStatement(pb.GetStatementRequest(statement_id=statement_id), None))
    return got.statement


def listed(suite: Suite, agreement_id: str) -> list[pb.Statement]:
    servicer = BillingServicer(suite.billing)
    got = asyncio.run(servicer.ListStatements(pb.ListStatementsRequest(agreement_id=agreement_id), None))
    return list(got.statements)


def events_of(suite: Suite, name: str, statement_id: str) -> list[Any]:
    """Billing's public events of type `name` about the statement, in log order."""
    out = []
    for env in suite.billing.read_events(0, 5000)[0]:
        if env.type == f"accord.billing.v1.{name}":
            msg = getattr(ev, name)()
            env.payload.Unpack(msg)
            if msg.statement_id == statement_id:
                out.append(msg)
    return out


def test_an_accepted_dispute_and_an_adjustment_count_in_the_totals_at_once(suite: Suite) -> None:
    """February issued with 1,200.00; the provider accepts the customer's dispute at 3,000.00:
    February's answer says disputes 1,800.00, net 3,000.00 while it is still only issued, and
    so does the DisputeResolved event. March, open, carries January's adjustment of 1,198.39
    (10 % of the 11,983.87 January charges: the agreement starts an hour into it): its totals
    so far say so (provisional), as does the AdjustmentRecorded event."""
    aid, feb_id = slo_journey(suite)
    b = suite.billing
    _jan, feb, march = b.statements(P_CUSTOMER, aid)
    assert (feb.state, march.state) == (ISSUED, OPEN)

    # The open statement: January's adjustment so far, labelled provisional.
    t = answer(suite, str(march.id)).totals
    assert (t.provisional, Decimal(t.adjustments), Decimal(t.net)) == (True, Decimal("1198.39"), Decimal("1198.39"))
    assert Decimal(t.fee) == Decimal("12000.00")
    [adjusted] = events_of(suite, "AdjustmentRecorded", str(march.id))
    assert adjusted.HasField("totals") and adjusted.totals.provisional
    assert (Decimal(adjusted.totals.adjustments), Decimal(adjusted.totals.net)) == (Decimal("1198.39"),) * 2

    # The dispute accepted at 3,000.00: in the totals now, not once final.
    assert Decimal(answer(suite, feb_id).totals.net) == Decimal("1200.00")
    window = next(iter(feb.assessments)).split("|")[1]
    dispute = b.dispute(P_CUSTOMER, feb_id, "availability", window, "the hour cost us the close")
    b.resolve(P_PROVIDER, feb_id, dispute, True, "3000.00", "agreed")
    got = answer(suite, feb_id)
    assert got.state == pb.STATEMENT_STATE_ISSUED and not got.totals.provisional
    assert (Decimal(got.totals.disputes), Decimal(got.totals.net)) == (Decimal("1800.00"), Decimal("3000.00"))
    assert Decimal(got.totals.credits_issued) == Decimal("1200.00")
    assert [s.totals.net for s in listed(suite, aid)][1] == got.totals.net
    [resolved] = events_of(suite, "DisputeResolved", feb_id)
    assert resolved.HasField("totals") and not resolved.totals.provisional
    assert (Decimal(resolved.totals.disputes), Decimal(resolved.totals.net)) == (Decimal("1800.00"), Decimal("3000.00"))
    # The issued record itself is never changed: its totals are those of the issue.
    assert Decimal(b.statement(None, feb_id).totals["net"]) == Decimal("1200.00")

    # Final: as finalised, the accepted amount posted.
    suite.tick(f"2026-04-05T02:00{AMS}")
    final = answer(suite, feb_id)
    assert final.state == pb.STATEMENT_STATE_FINAL and Decimal(final.totals.net) == Decimal("3000.00")
    assert b.statement(None, feb_id).state == FINAL


def test_an_open_statement_states_its_assessments_so_far(suite: Suite) -> None:
    """A rolling 7-day objective closes a window a day: by 20 January the open January
    statement holds the breached windows of a 30-minute outage, and its totals so far credit
    10 % of the fee January charges once (11,983.87: the agreement starts an hour into
    Amsterdam's January, 743 of its 744 hours), as the issue will; each AssessmentRecorded states those totals."""
    objective = copy.deepcopy(sla_terms()["objectives"][0])
    objective["window"] = {"kind": "WINDOW_KIND_ROLLING", "rolling_days": 7}
    ag = suite.agreements
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, sla_terms(objectives=[objective])).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-01-20T02:00{AMS}")
    [january] = suite.billing.statements(P_CUSTOMER, aid)
    assert january.state == OPEN and not january.totals
    assert any(a["status"] == "BREACHED" for a in january.assessments.values())
    t = answer(suite, str(january.id)).totals
    assert t.provisional
    assert (Decimal(t.credits_issued), Decimal(t.net)) == (Decimal("1198.39"), Decimal("1198.39"))
    assessed = events_of(suite, "AssessmentRecorded", str(january.id))
    assert assessed and all(a.HasField("totals") and a.totals.provisional for a in assessed)
    assert Decimal(assessed[-1].totals.net) == Decimal("1198.39")
    assert Decimal(assessed[0].totals.net) == Decimal(0)  # the first window, before the outage
    # Issued: the same amounts, no longer provisional.
    suite.tick(f"2026-02-01T02:00{AMS}")
    issued = answer(suite, str(january.id))
    assert issued.state == pb.STATEMENT_STATE_ISSUED and not issued.totals.provisional
    assert Decimal(issued.totals.net) == Decimal("1198.39")
