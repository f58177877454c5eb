"""Billing's money where two features meet (issue 11), on real agreements and real
evaluations, on both stores: rolling windows assessed once per fee period, terms inherited
from a parent billed, statements issued only once every window of the period is known,
adjustments capped per period, nothing billed outside the agreement's term, and the fee
charged on the ledger.

The sample agreement starts on 1 January 00:00 UTC, an hour into Amsterdam's January: by the
fee basis of rule 2 (services/billing/README.md, "How money is made") January charges 743 of
its 744 hours — 11,983.87 of the 12,000.00 EUR fee — and its percentage credits are of that
(10 %: 1,198.39)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from accord.metrics.v1 import events_pb2 as metric_events
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing.domain import FINAL, ISSUED, OPEN, InvalidRequestError
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, P_PROVIDER, PROVIDER, Suite, at, feed, outage

AVAILABILITY = sla_terms()["objectives"][0]


@pytest.fixture
def make_suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Callable[[], Suite]]:
    made: list[Suite] = []

    def make() -> Suite:
        made.append(Suite(make_store_env))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def suite(make_suite: Callable[[], Suite]) -> Suite:
    return make_suite()


def rolling_week_terms() -> dict[str, Any]:
    """The sample SLA with one objective: availability over a rolling 7 days (≥ 99.9 %;
    < 99.9 and ≥ 99.0 → 10 % of the 12,000.00 EUR monthly fee)."""
    objective = copy.deepcopy(AVAILABILITY)
    objective["window"] = {"kind": "WINDOW_KIND_ROLLING", "rolling_days": 7}
    return sla_terms(objectives=[objective])


def accepted(suite: Suite, terms: dict[str, Any], register: bool = True) -> str:
    ag = suite.agreements
    if register:
        for dept in (IT, FINANCE):
            ag.register_department(dept, dept)
        ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    return aid


def test_a_rolling_week_and_one_outage_earn_one_credit_for_the_month_and_no_termination_right(
    suite: Suite,
) -> None:
    """Seven rolling windows hold the 30-minute outage; the month's fee is credited once (the
    worst window of the period), and one breached month grants no termination right."""
    aid = accepted(suite, rolling_week_terms())
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.tick(f"2026-02-10T02:00{AMS}")
    january = next(
        s for s in suite.billing.statements(P_CUSTOMER, aid) if at(s.period_start) == at(f"2026-01-01T00:00{AMS}")
    )
    assert january.state == ISSUED
    breached = [k for k, a in january.assessments.items() if a["status"] == "BREACHED"]
    assert len(breached) == 7, "every window is kept on the statement"
    # (10,080 − 30) ÷ 10,080 = 99.70 % → 10 % of the 11,983.87 January charges, once for the month.
    assert Decimal(january.totals["credits_issued"]) == Decimal("1198.39")
    assert Decimal(january.totals["net"]) == Decimal("1198.39")
    assert suite.agreements.get_agreement_aggregate(aid).termination_rights == []
    assert_rederives_clean(suite, aid)


def test_no_statement_is_opened_for_a_period_before_the_agreement_starts(suite: Suite) -> None:
    """The first rolling windows reach back into December; the agreement starts on 1 January."""
    aid = accepted(suite, rolling_week_terms())
    suite.tick(f"2026-01-10T10:00{AMS}")
    started = at("2026-01-01T00:00:00+00:00")
    periods = [(at(s.period_start), at(s.period_end)) for s in suite.billing.statements(P_CUSTOMER, aid)]
    assert periods, "January has its statement"
    assert all(end > started for _, end in periods), f"a statement before the start: {periods}"


def test_an_inherited_objective_is_credited_and_an_inherited_fee_billed(suite: Suite) -> None:
    """A customer-level agreement names only the service level; it inherits the corporate
    agreement's availability objective and its fee, and is billed on both."""
    corporate = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate", objectives=[AVAILABILITY])
    parent = accepted(suite, corporate)
    child_terms = sla_terms(level="SCOPE_LEVEL_CUSTOMER", title="Finance e-mail", parent_agreement_id=parent)
    child_terms["objectives"] = [child_terms["objectives"][1]]  # service level only
    del child_terms["fee"]
    child = accepted(suite, child_terms, register=False)
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-13T08:00{AMS}", 60)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    statements = suite.billing.statements(P_CUSTOMER, child)
    assert [s.state for s in statements[:1]] == [ISSUED]
    january = statements[0]
    assert january.currency == "EUR"
    assert {k.split("|")[0] for k in january.assessments} == {"availability", "service-level"}
    # January from 1 Jan 01:00 (the start): 60 minutes down → 99.86 % → 10 % of the inherited
    # fee January charges (743 of its 744 hours).
    assert Decimal(january.totals["credits_issued"]) == Decimal("1198.39")
    assert Decimal(january.totals["fee"]) == Decimal("11983.87")
    assert_rederives_clean(suite, child)


def assert_rederives_clean(suite: Suite, aid: str) -> None:
    """The audit's independent replay of the upstream logs agrees with every recorded window."""
    metrics, _ = suite.metrics.read_events(0, 5000)
    agreements, _ = suite.agreements.read_events(0, 5000)
    result = suite.billing.rederive(metrics, agreements, aid)
    assert result.checked > 0
    assert (result.mismatches, result.missing, result.unexplained) == ([], [], [])


def _window_end(env: Any) -> str:
    if env.type != metric_events.WindowClosed.DESCRIPTOR.full_name:
        return ""
    closed = metric_events.WindowClosed()
    env.payload.Unpack(closed)
    return str(closed.evaluation.window_end)


def _totals(suite: Suite, aid: str) -> list[tuple[str, str, dict[str, Any], list[dict[str, Any]]]]:
    return [
        (s.period_start, s.state, {k: v for k, v in s.totals.items()}, s.adjustments)
        for s in suite.billing.statements(P_CUSTOMER, aid)
    ]


def test_process_due_while_the_metrics_consumer_is_behind_issues_nothing_then_the_same_money(
    make_suite: Callable[[], Suite],
) -> None:
    """Two runs of the same journey: in order, and with billing's clock running while its
    metrics consumer has read only part of January's windows. The second issues nothing
    until every January window has arrived, then exactly the first run's money."""
    runs = []
    for behind in (False, True):
        suite = make_suite()
        aid = accepted(suite, rolling_week_terms())
        suite.tick(f"2026-01-10T10:00{AMS}")
        suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-28T10:00{AMS}", 30)])
        if behind:
            b = suite.billing
            suite.clock.set(at(f"2026-02-01T02:00{AMS}"))
            feed("agreements", suite.agreements, b)
            suite.metrics.evaluate()
            envs, _ = suite.metrics.read_events(b.tracked_position("metrics"), 5000)
            for env in envs:  # the consumer has read the windows up to 20 January only
                end = _window_end(env)
                if end and at(end) > at(f"2026-01-20T00:00{AMS}"):
                    break
                b.apply_upstream("metrics", env)
            b.process_due()
            assert [s.state for s in b.statements(P_CUSTOMER, aid)] == [OPEN], "issued while windows were missing"
        suite.tick(f"2026-02-01T02:00{AMS}")
        suite.tick(f"2026-02-10T02:00{AMS}")
        runs.append(_totals(suite, aid))
    in_order, caught_up = runs
    assert in_order[0][1] == ISSUED and Decimal(in_order[0][2]["net"]) == Decimal("1198.39")
    assert caught_up == in_order


def test_a_late_window_adjustment_respects_the_period_cap(suite: Suite) -> None:
    """Credits are capped at 10 % of the fee per period (of the 11,983.87 January charges). January
    is issued at the cap; a late outage restates January's availability into the 25 % band: the
    adjustment is what the change does to January's capped total — nothing — not the window's
    1,797.58 more."""
    terms = sla_terms(objectives=[AVAILABILITY])
    terms["consequences"]["cap_percent"] = "10"
    aid = accepted(suite, terms)
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-13T08:00{AMS}", 60)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    january = suite.billing.statements(P_CUSTOMER, aid)[0]
    assert january.state == ISSUED and Decimal(january.totals["net"]) == Decimal("1198.39")
    suite.metrics.record(COLLECTOR, [outage("late", f"2026-01-20T02:00{AMS}", 500)])
    suite.tick(f"2026-02-10T12:00{AMS}")
    february = suite.billing.statements(P_CUSTOMER, aid)[1]
    assert len(february.adjustments) == 1
    adjustment = february.adjustments[0]
    assert Decimal(adjustment["new"]) == Decimal("2995.97")  # the window alone: 25 %
    assert Decimal(adjustment["difference"]) == 0  # January stays at its cap
    assert Decimal(adjustment["period_after"]) == Decimal("1198.39")


def test_no_statement_after_the_agreement_ends(suite: Suite) -> None:
    """The agreement is terminated on 20 February. Billing learns it; metrics, its own
    agreements consumer still behind, goes on closing windows until June: billing bills
    none of the windows after the end, and opens no statement for a period after it."""
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    end = at(f"2026-02-20T00:00{AMS}")
    ag.terminate(PROVIDER, aid, "service retired", effective_at=end)
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.clock.set(at(f"2026-06-01T02:00{AMS}"))
    ag.process_due()
    feed("agreements", ag, b)  # billing knows the end; metrics does not yet
    m.evaluate()
    feed("metrics", m, b)
    b.process_due()
    periods = [at(s.period_start) for s in b.statements(P_CUSTOMER, aid)]
    assert periods and all(p < end for p in periods), f"statements after the end: {periods}"


def test_a_term_ending_bills_nothing_after_it_before_any_expiry_is_heard(suite: Suite) -> None:
    """Terms ending on 11 January with a quarterly objective; the agreements service has not
    expired the agreement (its clock task has not run). Metrics ends measurement at the term's
    end (its documented rule) and closes the quarter measured up to it; billing, by the same
    rule, bills that window in January, the period holding its last measured instant, and opens
    no statement after the end (found by the reference model: it billed the window in March)."""
    terms = sla_terms(objectives=[{**AVAILABILITY, "window": {"kind": "WINDOW_KIND_QUARTER"}}])
    terms["term"] = {"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-01-11T00:00:00Z"}
    aid = accepted(suite, terms)
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-05T08:00{AMS}", 15)])
    suite.tick(f"2026-03-05T02:00{AMS}")
    suite.tick(f"2026-05-20T02:00{AMS}")
    statements = suite.billing.statements(P_CUSTOMER, aid)
    assert [at(s.period_start) for s in statements] == [at(f"2026-01-01T00:00{AMS}")]
    [january] = statements
    # 15 minutes down in 10 days: 99.896 % → 10 % of what January charges: the 10 of its 31
    # days in term (from 01:00 on the 1st to 01:00 on the 11th), 3,870.97.
    assert Decimal(january.totals["fee"]) == Decimal("3870.97")
    assert Decimal(january.totals["credits_issued"]) == Decimal("387.10")


def test_the_fee_is_charged_on_the_ledger_with_the_credits_against_it(suite: Suite) -> None:
    """A final statement posts the period's fee (the customer pays the provider) and its
    credits against it; balances show both, and the ledger balances."""
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-13T08:00{AMS}", 60)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.tick(f"2026-03-05T02:00{AMS}")
    january = suite.billing.statements(P_CUSTOMER, aid)[0]
    assert january.state == FINAL
    [posting] = [t for t in suite.billing.ledger(None) if t.period == january.period_start]
    kinds = sorted((e["kind"], e["account"], Decimal(e["amount"])) for e in posting.entries)
    assert kinds == [
        ("CREDITS", FINANCE, Decimal("1198.39")),
        ("CREDITS", IT, Decimal("-1198.39")),
        ("FEE", FINANCE, Decimal("-11983.87")),
        ("FEE", IT, Decimal("11983.87")),
    ]
    balances = suite.billing.balances(None, period=january.period_start)
    assert balances == {(FINANCE, "EUR"): Decimal("-10785.48"), (IT, "EUR"): Decimal("10785.48")}


def test_suspended_time_is_not_charged_its_share_of_the_fee(suite: Suite) -> None:
    """Suspended for 14 of February's 28 days: February's fee is half the monthly fee."""
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.tick(f"2026-02-08T00:00{AMS}")
    suite.agreements.suspend(PROVIDER, aid, "office move")
    suite.tick(f"2026-02-22T00:00{AMS}")
    suite.agreements.resume(PROVIDER, aid, "moved")
    suite.tick(f"2026-03-01T02:00{AMS}")
    january, february = suite.billing.statements(P_CUSTOMER, aid)[:2]
    assert (january.state, february.state) == (ISSUED, ISSUED)
    assert Decimal(january.totals["fee"]) == Decimal("11983.87")  # from 01:00 on the 1st
    assert Decimal(february.totals["fee"]) == Decimal("6000.00")


def test_a_correction_after_the_end_lands_on_one_settlement_statement(suite: Suite) -> None:
    """Terminated on 20 February, February issued; in June a late outage restates January:
    the adjustment lands on June's settlement statement (no fee), and no statement is opened
    for the months between."""
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    ag.terminate(PROVIDER, aid, "service retired", effective_at=at(f"2026-02-20T00:00{AMS}"))
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.clock.set(at(f"2026-02-20T01:00{AMS}"))
    ag.process_due()
    suite.tick(f"2026-03-01T02:00{AMS}")
    assert [s.state for s in b.statements(P_CUSTOMER, aid)] == [ISSUED, ISSUED]
    m.record(COLLECTOR, [outage("late", f"2026-01-20T02:00{AMS}", 60)])
    suite.tick(f"2026-06-10T02:00{AMS}")
    statements = b.statements(P_CUSTOMER, aid)
    assert [at(s.period_start) for s in statements] == [
        at(f"2026-01-01T00:00{AMS}"),
        at(f"2026-02-01T00:00{AMS}"),
        at("2026-06-01T00:00+02:00"),
    ]
    settlement = statements[2]
    assert [a["key"].split("|")[0] for a in settlement.adjustments] == ["availability"]
    assert Decimal(settlement.adjustments[0]["difference"]) == Decimal("1198.39")


def test_only_the_window_that_counts_for_the_period_may_be_disputed(suite: Suite) -> None:
    """Of January's seven breached rolling windows one counts; disputing another is refused,
    naming the one that counts, and nothing is stored."""
    aid = accepted(suite, rolling_week_terms())
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    b = suite.billing
    january = b.statements(P_CUSTOMER, aid)[0]
    breached = sorted(k for k, a in january.assessments.items() if a["status"] == "BREACHED")
    counted = breached[-1]  # equal nets: the latest window counts
    head = b.head_position()
    worst = counted.split("|")[1].replace("+", r"\+")
    with pytest.raises(InvalidRequestError, match=rf"worst window of the period, from {worst}, does; dispute that one"):
        b.dispute(P_CUSTOMER, str(january.id), "availability", breached[0].split("|")[1], "one outage")
    assert b.head_position() == head
    b.dispute(P_CUSTOMER, str(january.id), "availability", counted.split("|")[1], "one outage")


@pytest.mark.parametrize(("accepted_amount", "net"), [("0", "0.00"), ("5000.00", "2995.97")])
def test_an_accepted_dispute_of_a_capped_credit_is_capped_and_never_charges_the_customer(
    suite: Suite, accepted_amount: str, net: str
) -> None:
    """January's 48 hours down earn 100 % of the 11,983.87 EUR January charges, capped at 25 %:
    2,995.97. The provider accepts the customer's dispute with a new amount for that assessment:
    the period is taken again with it under the same cap — waived (0) it credits nothing (it
    does not charge the customer 8,987.90), at 5,000.00 the cap still holds it at 2,995.97."""
    capped = {**sla_terms()["consequences"], "cap_percent": "25"}
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY], consequences=capped))
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-12T10:00{AMS}", 48 * 60)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    b = suite.billing
    january = b.statements(P_CUSTOMER, aid)[0]
    assert january.state == ISSUED
    assert Decimal(january.totals["credits_before_cap"]) == Decimal("11983.87")
    assert Decimal(january.totals["net"]) == Decimal("2995.97")
    [key] = january.assessments
    dispute = b.dispute(P_CUSTOMER, str(january.id), "availability", key.split("|")[1], "announced maintenance")
    b.resolve(P_PROVIDER, str(january.id), dispute, True, accepted_amount, "")
    suite.tick(f"2026-03-05T02:00{AMS}")
    january = b.statements(P_CUSTOMER, aid)[0]
    assert january.state == FINAL
    assert Decimal(january.totals["net"]) == Decimal(net)
    assert Decimal(january.totals["disputes"]) == Decimal(net) - Decimal("2995.97")
    balances = b.balances(None, period=january.period_start)
    assert balances[(FINANCE, "EUR")] == Decimal("-11983.87") + Decimal(net)


def test_a_suspension_takes_effect_at_its_own_instant_in_metrics_and_billing_alike(suite: Suite) -> None:
    """Suspended from 8 to 22 February by the agreements service's clock: metrics leaves the
    suspended fortnight out of February's window (an outage inside it costs nothing) and
    billing charges half of February's fee — both date the suspension by the instant the
    event carries, not by when its record happened to be written."""
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-02-05T00:00{AMS}")
    suite.clock.set(at(f"2026-02-08T00:00{AMS}"))
    suite.agreements.suspend(PROVIDER, aid, "office move")
    suite.tick(f"2026-02-15T00:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-02-15T08:00{AMS}", 120)])
    suite.clock.set(at(f"2026-02-22T00:00{AMS}"))
    suite.agreements.resume(PROVIDER, aid, "moved")
    suite.tick(f"2026-03-01T02:00{AMS}")
    [february] = [
        w for w in suite.metrics.window_evaluations(aid) if at(w.window_start) == at(f"2026-02-01T00:00{AMS}")
    ]
    assert february.latest["status"].removeprefix("EVALUATION_STATUS_") == "MET"
    assert Decimal(february.latest["value"]) == Decimal(100)
    statement = suite.billing.statements(P_CUSTOMER, aid)[1]
    assert statement.state == ISSUED
    assert Decimal(statement.totals["fee"]) == Decimal("6000.00")
    assert Decimal(statement.totals["net"]) == Decimal(0)


def test_a_fee_only_agreement_is_charged_its_fee_every_period(suite: Suite) -> None:
    """An agreement without objectives closes no window, yet each fee period of its term is
    issued with its fee and, once final, posted to the ledger."""
    aid = accepted(suite, sla_terms(objectives=[]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.tick(f"2026-03-05T02:00{AMS}")
    statements = suite.billing.statements(P_CUSTOMER, aid)
    assert [s.state for s in statements[:2]] == [FINAL, ISSUED]
    assert [Decimal(s.totals["fee"]) for s in statements[:2]] == [Decimal("11983.87"), Decimal("12000.00")]
    balances = suite.billing.balances(None, period=statements[0].period_start)
    assert balances == {(FINANCE, "EUR"): Decimal("-11983.87"), (IT, "EUR"): Decimal("11983.87")}


def test_an_amendment_inside_a_fee_period_charges_each_version_its_share_of_the_fee(suite: Suite) -> None:
    """The fee doubles from 15 February (an amendment accepted on the 10th): February charges
    14 days at 12,000.00 and 14 days at 24,000.00 a month — 18,000.00; March the new fee."""
    terms = sla_terms(
        objectives=[AVAILABILITY], amendment={"who_may_propose": "PROPOSER_EITHER_PARTY", "notice_days": 0}
    )
    aid = accepted(suite, terms)
    suite.tick(f"2026-02-10T00:00{AMS}")
    amended = copy.deepcopy(terms)
    amended["fee"]["amount"] = "24000.00"
    _, amendment = suite.agreements.propose_amendment(
        PROVIDER, aid, amended, at(f"2026-02-15T00:00{AMS}"), "a second site"
    )
    suite.agreements.accept_amendment(CUSTOMER, aid, amendment)
    suite.tick(f"2026-04-01T02:00{AMS}")
    fees = [Decimal(s.totals["fee"]) for s in suite.billing.statements(P_CUSTOMER, aid)[:3]]
    assert fees == [Decimal("11983.87"), Decimal("18000.00"), Decimal("24000.00")]


def test_a_parent_amendment_inside_a_fee_period_charges_its_child_each_fee_its_share(suite: Suite) -> None:
    """A customer-level child sets no fee: it inherits the corporate parent's. The parent's fee
    doubles from 15 February: the child's effective terms change then, so its February charges
    14 days at 12,000.00 and 14 days at 24,000.00 a month — 18,000.00 — as for an amendment of
    its own; March the new fee."""
    procedure = {"who_may_propose": "PROPOSER_EITHER_PARTY", "notice_days": 0}
    corporate = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate", objectives=[AVAILABILITY])
    corporate["amendment"] = procedure
    parent = accepted(suite, corporate)
    child_terms = sla_terms(level="SCOPE_LEVEL_CUSTOMER", title="Finance e-mail", parent_agreement_id=parent)
    child_terms["objectives"] = []
    del child_terms["fee"]
    child = accepted(suite, child_terms, register=False)
    suite.tick(f"2026-02-10T00:00{AMS}")
    amended = copy.deepcopy(corporate)
    amended["fee"]["amount"] = "24000.00"
    _, amendment = suite.agreements.propose_amendment(
        PROVIDER, parent, amended, at(f"2026-02-15T00:00{AMS}"), "a second site"
    )
    suite.agreements.accept_amendment(CUSTOMER, parent, amendment)
    suite.tick(f"2026-04-01T02:00{AMS}")
    fees = [Decimal(s.totals["fee"]) for s in suite.billing.statements(P_CUSTOMER, child)[:3]]
    assert fees == [Decimal("11983.87"), Decimal("18000.00"), Decimal("24000.00")]
