"""The fee basis (services/billing/README.md, "How money is made"): a fee period is charged only
for the time the agreement is in its term and not suspended, and a band's (or the cap's)
percentage is of the fee the period charges — on real agreements, metrics and billing, on both
stores. A statement keeps the rule it was opened with (`fee_basis`): one computed by rule 1
(whole fee, percentages of the terms' fee) still re-derives clean and is priced by rule 1."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from accord.billing.v1 import events_pb2 as billing_events
from accord.metrics.v1 import events_pb2 as metric_events
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_billing import periods
from accord_billing.domain import FINAL, ISSUED, Statement
from tests.reference import model
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, PROVIDER, Suite, at, outage

AVAILABILITY = sla_terms()["objectives"][0]
SUMMER = "+02:00"  # Amsterdam from 29 March


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def accepted(suite: Suite, terms: dict[str, Any]) -> str:
    ag = suite.agreements
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    return aid


def statement_of(suite: Suite, aid: str, period_start: str) -> Statement:
    return next(s for s in suite.billing.statements(None, aid) if at(s.period_start) == at(period_start))


def rederives_clean(suite: Suite, aid: str) -> None:
    metrics, _ = suite.metrics.read_events(0, 5000)
    agreements, _ = suite.agreements.read_events(0, 5000)
    result = suite.billing.rederive(metrics, agreements, aid)
    assert result.checked > 0
    assert (result.mismatches, result.missing, result.unexplained) == ([], [], [])


def public(suite: Suite, name: str, statement: Statement) -> list[Any]:
    """Billing's public events of type `name` about `statement`."""
    out = []
    for env in suite.billing.read_events(0, 5000)[0]:
        if env.type == f"accord.billing.v1.{name}":
            msg = getattr(billing_events, name)()
            env.payload.Unpack(msg)
            if msg.statement_id == str(statement.id):
                out.append(msg)
    return out


def closed_evaluations(suite: Suite, aid: str) -> list[metric_events.Evaluation]:
    envs, _ = suite.metrics.read_events(0, 5000)
    out = []
    for env in envs:
        if env.type == metric_events.WindowClosed.DESCRIPTOR.full_name:
            closed = metric_events.WindowClosed()
            env.payload.Unpack(closed)
            if closed.evaluation.agreement_id == aid:
                out.append(closed.evaluation)
    return out


def test_an_agreement_starting_on_the_20th_of_a_30_day_month_is_charged_11_30_of_the_fee(suite: Suite) -> None:
    """In force from 20 April (a 30-day month): April charges 11/30 of the 12,000.00 EUR fee —
    4,400.00, not the whole fee — and its 10 % band credits 10 % of that 4,400.00: 440.00; May
    is whole. The what-if prices April the same way."""
    terms = sla_terms(objectives=[AVAILABILITY])
    terms["term"] = {"effective_from": "2026-04-19T22:00:00Z", "notice_days": 30}  # 20 April 00:00 in Amsterdam
    aid = accepted(suite, terms)
    suite.tick(f"2026-04-22T10:00{SUMMER}")
    # 60 minutes down in April's 11 days: 99.62 % → the 10 % band.
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-04-25T08:00{SUMMER}", 60)])
    suite.tick(f"2026-05-01T02:00{SUMMER}")
    suite.tick(f"2026-06-01T02:00{SUMMER}")
    april, may = (
        statement_of(suite, aid, f"2026-04-01T00:00{SUMMER}"),
        statement_of(suite, aid, f"2026-05-01T00:00{SUMMER}"),
    )
    assert (april.state, april.fee_basis) == (FINAL, 2)
    assert Decimal(april.totals["fee"]) == Decimal("4400.00")
    assert Decimal(april.totals["credits_issued"]) == Decimal("440.00")
    [record] = april.assessments.values()
    assert (record["fee_basis"], record["charged_share"]) == (2, "11/30")
    assert "× 11/30 of the period charged" in record["lines"][0]["derivation"]
    assert Decimal(may.totals["fee"]) == Decimal("12000.00")
    # Its public events say which rule and what share (what a reader of the stream sees).
    opened, assessed = public(suite, "StatementOpened", april), public(suite, "AssessmentRecorded", april)
    assert [e.fee_basis for e in opened] == [2]
    assert {(e.fee_basis, e.charged_share) for e in assessed} == {(2, "11/30")}
    rederives_clean(suite, aid)
    window = [e for e in closed_evaluations(suite, aid) if at(e.window_start) < at(f"2026-05-01T00:00{SUMMER}")]
    priced = suite.billing.price_evaluations(P_CUSTOMER, aid, None, window)
    assert [str(p.totals.net.amount) for p in priced.periods] == ["440.00"]


def test_an_agreement_ending_inside_a_period_is_charged_only_to_its_end(suite: Suite) -> None:
    """Terms from 1 to 11 April: April charges 10/30 of the fee, 4,000.00, and nothing after."""
    terms = sla_terms(objectives=[])
    terms["term"] = {"effective_from": "2026-03-31T22:00:00Z", "effective_to": "2026-04-10T22:00:00Z"}
    aid = accepted(suite, terms)
    suite.tick(f"2026-04-05T10:00{SUMMER}")
    suite.tick(f"2026-05-01T02:00{SUMMER}")
    suite.tick(f"2026-06-01T02:00{SUMMER}")
    [april] = suite.billing.statements(None, aid)
    assert april.state == FINAL
    assert Decimal(april.totals["fee"]) == Decimal("4000.00")


def half_suspended_february(suite: Suite, objective: dict[str, Any], **consequences: Any) -> Statement:
    """The sample SLA with `objective`, suspended from 8 to 22 February (14 of its 28 days)
    with 24 hours down on 2 February: 92.86 % of February's unsuspended time, the 100 % band."""
    terms = sla_terms(objectives=[objective])
    terms["consequences"] = {**terms["consequences"], **consequences}
    aid = accepted(suite, terms)
    suite.tick(f"2026-02-01T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-02-02T08:00{AMS}", 24 * 60)])
    suite.tick(f"2026-02-08T00:00{AMS}")
    suite.agreements.suspend(PROVIDER, aid, "office move")
    suite.tick(f"2026-02-22T00:00{AMS}")
    suite.agreements.resume(PROVIDER, aid, "moved")
    suite.tick(f"2026-03-01T02:00{AMS}")
    february = statement_of(suite, aid, f"2026-02-01T00:00{AMS}")
    assert february.state == ISSUED
    assert Decimal(february.totals["fee"]) == Decimal("6000.00")
    rederives_clean(suite, aid)
    return february


def test_a_month_half_suspended_with_a_100_percent_band_credits_half_the_fee(suite: Suite) -> None:
    """February is charged 6,000.00 (half suspended); the 100 % band credits 100 % of what it
    charged — 6,000.00, not the terms' 12,000.00 (twice what the customer paid)."""
    february = half_suspended_february(suite, AVAILABILITY)
    assert Decimal(february.totals["credits_before_cap"]) == Decimal("6000.00")
    assert Decimal(february.totals["net"]) == Decimal("6000.00")


def test_a_100_percent_cap_never_credits_more_than_the_period_charged(suite: Suite) -> None:
    """The same February with a fixed penalty of 3,000.00 stacked on the 100 % band: 9,000.00 of
    credits, capped at 100 % of the 6,000.00 February charged (not of the terms' 12,000.00)."""
    objective = copy.deepcopy(AVAILABILITY)
    objective["penalties"] = [{"kind": "PENALTY_KIND_FIXED", "amount": "3000.00"}]
    february = half_suspended_february(suite, objective, stacking="STACKING_RULE_STACK", cap_percent="100")
    assert Decimal(february.totals["credits_before_cap"]) == Decimal("9000.00")  # the penalty is a stated amount
    assert Decimal(february.totals["cap_cut"]) == Decimal("3000.00")
    assert Decimal(february.totals["net"]) == Decimal("6000.00")
    assert Decimal(february.totals["net"]) <= Decimal(february.totals["fee"])


def test_windows_assessed_before_a_suspension_are_credited_on_the_share_the_period_charges(suite: Suite) -> None:
    """Rolling 7-day windows are assessed daily: those of early February on the whole month,
    before the suspension from the 8th to the 22nd halves what February charges. The statement
    is issued with each of them assessed again on the half — 10 % of 6,000.00 — and the
    re-derivation agrees, before the issue and after."""
    objective = copy.deepcopy(AVAILABILITY)
    objective["window"] = {"kind": "WINDOW_KIND_ROLLING", "rolling_days": 7}
    aid = accepted(suite, sla_terms(objectives=[objective]))
    suite.tick(f"2026-02-01T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-02-02T08:00{AMS}", 30)])
    suite.tick(f"2026-02-06T00:00{AMS}")
    early = statement_of(suite, aid, f"2026-02-01T00:00{AMS}")
    assert {r["charged_share"] for r in early.assessments.values()} == {"1"}
    suite.tick(f"2026-02-08T00:00{AMS}")
    suite.agreements.suspend(PROVIDER, aid, "office move")
    suite.tick(f"2026-02-22T00:00{AMS}")
    suite.agreements.resume(PROVIDER, aid, "moved")
    suite.tick(f"2026-02-23T00:00{AMS}")
    # Still open: its windows on the share known when each was assessed (provisional, like its
    # totals), which the re-derivation takes as they state it until the issue.
    assert {r["charged_share"] for r in statement_of(suite, aid, f"2026-02-01T00:00{AMS}").assessments.values()} > {"1"}
    rederives_clean(suite, aid)
    suite.tick(f"2026-03-01T02:00{AMS}")
    february = statement_of(suite, aid, f"2026-02-01T00:00{AMS}")
    assert february.state == ISSUED
    assert {r["charged_share"] for r in february.assessments.values()} == {"1/2"}
    assert Decimal(february.totals["fee"]) == Decimal("6000.00")
    assert Decimal(february.totals["net"]) == Decimal("600.00")
    rederives_clean(suite, aid)


def test_a_statement_computed_by_rule_1_keeps_it_and_still_rederives(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January's statement is opened and issued by a billing still on rule 1 (the sample starts
    an hour into January, Amsterdam's month): charged the whole 12,000.00 and credited 10 % of
    the terms' fee, 1,200.00. Billing then moves to rule 2: January keeps rule 1 — finalised,
    re-derived and priced by it — while February is opened by rule 2."""
    monkeypatch.setattr(periods, "FEE_BASIS", 1)
    aid = accepted(suite, sla_terms(objectives=[AVAILABILITY]))
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-13T08:00{AMS}", 60)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    monkeypatch.setattr(periods, "FEE_BASIS", 2)
    suite.tick(f"2026-03-01T02:00{AMS}")
    january = statement_of(suite, aid, f"2026-01-01T00:00{AMS}")
    february = statement_of(suite, aid, f"2026-02-01T00:00{AMS}")
    assert (january.fee_basis, february.fee_basis) == (1, 2)
    assert [e.fee_basis for e in public(suite, "StatementOpened", january)] == [1]
    assert Decimal(january.totals["fee"]) == Decimal("12000.00")
    assert Decimal(january.totals["credits_issued"]) == Decimal("1200.00")
    assert all("fee_basis" not in r for r in january.assessments.values())
    rederives_clean(suite, aid)
    window = [e for e in closed_evaluations(suite, aid) if at(e.window_start) < at(f"2026-02-01T00:00{AMS}")]
    priced = suite.billing.price_evaluations(P_CUSTOMER, aid, None, window)
    assert [str(p.totals.net.amount) for p in priced.periods] == ["1200.00"]


def test_a_statement_opened_before_the_fee_basis_was_recorded_reads_as_rule_1() -> None:
    """A `StatementOpened` recorded before the field existed carries no `fee_basis`: the
    statement it makes computes by rule 1."""
    statement = Statement("a", "2026-01-01T00:00:00+01:00", "2026-02-01T00:00:00+01:00", "EUR", fee_basis=2)
    [opened] = statement.collect_events()
    del opened.__dict__["fee_basis"]
    assert opened.mutate(None).fee_basis == 1  # type: ignore[union-attr]


def test_the_reference_model_holds_both_rules() -> None:
    """The reference model (tests/reference/model.py) states each rule independently: from
    20 April, April charges 11/30 of the fee by rule 2 and the whole fee by rule 1; a 100 %
    band credits the fee so charged."""
    terms = model.Terms(
        time_zone="Europe/Amsterdam", effective_from=datetime(2026, 4, 19, 22, tzinfo=UTC), effective_to=None,
        fee=Fraction(12000), currency_exponent=2, cap_percent=Fraction(100), minimum_amount=None, objectives=(),
    )  # fmt: skip
    april = datetime(2026, 3, 31, 22, tzinfo=UTC)
    assert model.charged_share(terms, april) == Fraction(11, 30)
    assert (model.fee_charged(terms, april), model.fee_charged(terms, april, fee_basis=1)) == (
        Decimal("4400.00"),
        Decimal("12000.00"),
    )
    assert model.charged_share(terms, april, fee_basis=1) == 1
