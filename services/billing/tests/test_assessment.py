"""Assessment (docs/domain.md §5): bands at every bound, stacking, caps and minimums, per-unit
penalties with grace, rewards, currencies never mixed, half-even rounding. Every expected
amount is computed by hand in the comment next to it."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from accord_billing.assessment import (
    BREACHED,
    CAP,
    CREDIT,
    FIXED_PENALTY,
    MINIMUM,
    PER_UNIT_PENALTY,
    REWARD,
    Assessment,
    AssessmentError,
    CurrencyMismatchError,
    Line,
    Money,
    UnitsUnavailableError,
    UnknownCurrencyError,
    assess,
    matching_tier,
    round_half_even,
    statement_totals,
    units_beyond_target,
)

D = Decimal
EUR_FEE = {"amount": "12000.00", "currency": "EUR", "period": "FEE_PERIOD_MONTH"}
# The sample agreement's bands (accord_agreements.samples.sla_terms):
# ≥ 99.0 and < 99.9 → 10 %; ≥ 95.0 and < 99.0 → 25 %; < 95.0 → 100 %; 99.9 and above: nothing.
SAMPLE_TIERS: list[dict[str, Any]] = [
    {"lower": "99.0", "lower_inclusive": True, "upper": "99.9", "credit_percent": "10"},
    {"lower": "95.0", "lower_inclusive": True, "upper": "99.0", "credit_percent": "25"},
    {"upper": "95.0", "credit_percent": "100"},
]
# A 30-day month, 24x7: 30 × 86400 = 2 592 000 s eligible. At target 99.9 the allowed
# downtime is 2 592 000 × (100 − 99.9) ÷ 100 = 2 592 s (43.2 min).
MONTH_S = "2592000"


def availability(**changes: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "objective_id": "availability",
        "metric": "METRIC_AVAILABILITY_TIME",
        "comparator": "COMPARATOR_AT_LEAST",
        "target": "99.9",
        "credit_tiers": copy.deepcopy(SAMPLE_TIERS),
    }
    o.update(changes)
    return o


def evaluation(value: str, status: str = BREACHED, **changes: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"objective_id": "availability", "value": value, "status": status, "closed": True}
    e.update(changes)
    return e


def consequences(stacking: str = "STACKING_RULE_STACK", cap: str = "", minimum: str = "") -> dict[str, Any]:
    return {"stacking": stacking, "cap_percent": cap, "minimum_amount": minimum}


def amounts(a: Assessment) -> list[tuple[str, Decimal, bool]]:
    return [(ln.kind, ln.amount.amount, ln.applied) for ln in a.lines]


# -- bands ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        ("100", None),
        ("99.91", None),  # above the top band
        ("99.9", None),  # upper bound of the 10 % band is exclusive: 99.9 exactly earns nothing
        ("99.90", None),  # the same number written with a trailing zero
        ("99.89", "10"),  # one hundredth under 99.9
        ("99.8999999999999999999999999999999999", "10"),  # exact decimals, far past float precision
        ("99.01", "10"),
        ("99.0", "10"),  # lower bound of the 10 % band is inclusive
        ("98.99", "25"),  # …so one hundredth under it is in the 25 % band
        ("95.01", "25"),
        ("95.0", "25"),  # lower bound of the 25 % band is inclusive
        ("94.99", "100"),  # upper bound of the 100 % band is exclusive (95.0 is not in it)
        ("0", "100"),  # open lower bound
        ("-1", "100"),
    ],
)
def test_sample_bands_at_every_bound(value: str, percent: str | None) -> None:
    tier = matching_tier(D(value), SAMPLE_TIERS)
    assert (tier or {}).get("credit_percent") == percent


# A "lower is better" objective (ASA ≤ 30 s) with the opposite inclusivity:
# > 30 and ≤ 60 → 5 %; > 60 and ≤ 120 → 20 %; > 120 (open) → 50 %.
ASA_TIERS: list[dict[str, Any]] = [
    {"lower": "30", "upper": "60", "upper_inclusive": True, "credit_percent": "5"},
    {"lower": "60", "lower_inclusive": False, "upper": "120", "upper_inclusive": True, "credit_percent": "20"},
    {"lower": "120", "upper": "", "credit_percent": "50"},  # "" is an open bound, like an absent one
]


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        ("29.99", None),
        ("30", None),  # exclusive lower bound
        ("30.01", "5"),
        ("59.99", "5"),
        ("60", "5"),  # inclusive upper bound
        ("60.01", "20"),  # exclusive lower bound of the next band
        ("120", "20"),
        ("120.01", "50"),
        ("1000000", "50"),  # open upper bound
    ],
)
def test_exclusive_lower_and_inclusive_upper_bounds(value: str, percent: str | None) -> None:
    tier = matching_tier(D(value), ASA_TIERS)
    assert (tier or {}).get("credit_percent") == percent


def test_a_band_with_both_bounds_inclusive_holds_a_single_point() -> None:
    tiers = [{"lower": "50", "lower_inclusive": True, "upper": "50", "upper_inclusive": True, "credit_percent": "7"}]
    assert matching_tier(D("50"), tiers) is tiers[0]
    assert matching_tier(D("50.01"), tiers) is None
    assert matching_tier(D("49.99"), tiers) is None


def test_overlapping_bands_are_refused_rather_than_picked() -> None:
    tiers = [
        {"lower": "90", "lower_inclusive": True, "upper": "99", "upper_inclusive": True, "credit_percent": "10"},
        {"lower": "99", "lower_inclusive": True, "upper": "100", "credit_percent": "0"},
    ]
    with pytest.raises(AssessmentError, match="overlapping"):
        matching_tier(D("99"), tiers)
    assert matching_tier(D("98.99"), tiers) is tiers[0]


def test_floats_and_bad_bounds_are_refused() -> None:
    with pytest.raises(TypeError):
        matching_tier(99.5, SAMPLE_TIERS)  # type: ignore[arg-type]
    with pytest.raises(AssessmentError):
        matching_tier(D("NaN"), SAMPLE_TIERS)
    with pytest.raises(AssessmentError, match=r"credit_tiers\[0\].lower"):
        matching_tier(D("1"), [{"lower": "ninety", "credit_percent": "1"}])


# -- one objective: credits ------------------------------------------------------------------


def test_credit_is_the_band_percent_of_the_fee() -> None:
    a = assess(availability(), evaluation("99.5"), EUR_FEE, consequences())
    # 99.5 is in [99.0, 99.9) → 10 % × 12000.00 = 1200.00 EUR
    assert amounts(a) == [(CREDIT, D("1200.00"), True)]
    assert a.band is not None and a.band["credit_percent"] == "10"
    assert a.lines[0].band == a.band
    assert a.lines[0].derivation == "value 99.5 in band ≥ 99.0 and < 99.9 → 10 %: 10 % × 12000.00 EUR = 1200.00 EUR"
    assert a.credits == Money(D("1200.00"), "EUR")


@pytest.mark.parametrize(
    ("value", "status", "credit"),
    [
        ("99.9", "MET", None),  # exactly the target: no band, nothing
        ("99.89", BREACHED, "1200.00"),  # 10 % × 12000.00
        ("99.0", BREACHED, "1200.00"),  # 10 % (inclusive lower bound)
        ("98.99", BREACHED, "3000.00"),  # 25 % × 12000.00
        ("95.0", BREACHED, "3000.00"),  # 25 %
        ("94.99", BREACHED, "12000.00"),  # 100 % × 12000.00
    ],
)
def test_credit_at_the_sample_bounds(value: str, status: str, credit: str | None) -> None:
    a = assess(availability(), evaluation(value, status), EUR_FEE, consequences())
    assert amounts(a) == ([] if credit is None else [(CREDIT, D(credit), True)])


def test_no_data_earns_nothing_and_at_risk_or_open_windows_are_not_assessed() -> None:
    a = assess(availability(), evaluation("", "NO_DATA"), EUR_FEE, consequences())
    assert a.lines == () and a.credits.is_zero() and a.notes
    with pytest.raises(AssessmentError, match="AT_RISK"):
        assess(availability(), evaluation("99.5", "AT_RISK"), EUR_FEE, consequences())
    with pytest.raises(AssessmentError, match="open"):
        assess(availability(), evaluation("99.5", BREACHED, closed=False), EUR_FEE, consequences())
    with pytest.raises(AssessmentError, match="given for objective"):
        assess(availability(), evaluation("99.5", objective_id="other"), EUR_FEE, consequences())


def test_the_proto_status_name_is_accepted() -> None:
    a = assess(availability(), evaluation("99.5", "EVALUATION_STATUS_BREACHED"), EUR_FEE, consequences())
    assert a.status == BREACHED and a.credits == Money.of("1200.00", "EUR")


def test_no_data_counted_as_breached_pays_the_fixed_penalty_but_no_band() -> None:
    o = availability(penalties=[{"kind": "PENALTY_KIND_FIXED", "amount": "250.00"}])
    a = assess(o, evaluation("", BREACHED), EUR_FEE, consequences())
    # no value → no band; breached → the fixed penalty 250.00 once
    assert a.band is None
    assert amounts(a) == [(FIXED_PENALTY, D("250.00"), True)]


# -- stacking ---------------------------------------------------------------------------------

PENALTIES = [
    {"kind": "PENALTY_KIND_FIXED", "amount": "500.00"},
    {"kind": "PENALTY_KIND_PER_UNIT", "amount": "50.00", "unit": "hour", "grace_units": "1"},
]
# Value 99.5 with 12 960 s of downtime in the 30-day month: (2 592 000 − 12 960) ÷ 2 592 000 × 100 = 99.5.
# Beyond target: 12 960 − 2 592 = 10 368 s = 2.88 h → 3 started hours; − 1 grace = 2 × 50.00 = 100.00.
DETAIL_99_5 = {"eligible_seconds": MONTH_S, "downtime_seconds": "12960"}


def test_stack_adds_every_amount_on_the_objective() -> None:
    a = assess(
        availability(penalties=PENALTIES),
        evaluation("99.5", detail=DETAIL_99_5),
        EUR_FEE,
        consequences(),
    )
    # credit 10 % × 12000.00 = 1200.00; fixed 500.00; per-unit 2 × 50.00 = 100.00 → 1800.00
    assert amounts(a) == [
        (CREDIT, D("1200.00"), True),
        (FIXED_PENALTY, D("500.00"), True),
        (PER_UNIT_PENALTY, D("100.00"), True),
    ]
    assert a.credits == Money.of("1800.00", "EUR")
    per_unit = a.lines[2]
    assert per_unit.units == D(2)
    assert per_unit.derivation == (
        "breached: downtime 12960 s − allowed 2592 s (2592000 s eligible × (100 − 99.9) ÷ 100)"
        " = 10368 s beyond target = 2.88 hour(s) → 3 started; 3 − 1 grace = 2 hour(s) × 50.00 EUR = 100.00 EUR"
    )


def test_highest_applies_keeps_only_the_highest_and_shows_the_rest() -> None:
    a = assess(
        availability(penalties=PENALTIES),
        evaluation("99.5", detail=DETAIL_99_5),
        EUR_FEE,
        consequences("STACKING_RULE_HIGHEST_APPLIES"),
    )
    # max(1200.00, 500.00, 100.00) = 1200.00: only the credit applies
    assert amounts(a) == [
        (CREDIT, D("1200.00"), True),
        (FIXED_PENALTY, D("500.00"), False),
        (PER_UNIT_PENALTY, D("100.00"), False),
    ]
    assert a.credits == Money.of("1200.00", "EUR")
    assert "not applied: highest applies (CREDIT 1200.00 EUR)" in a.lines[1].derivation


def test_highest_applies_can_pick_a_penalty_and_ties_go_to_the_first() -> None:
    penalties = [
        {"kind": "PENALTY_KIND_FIXED", "amount": "1500.00"},
        {"kind": "PENALTY_KIND_FIXED", "amount": "1500.00"},
    ]
    a = assess(
        availability(penalties=penalties),
        evaluation("99.5"),
        EUR_FEE,
        consequences("STACKING_RULE_HIGHEST_APPLIES"),
    )
    # max(1200.00, 1500.00, 1500.00) = 1500.00, the first fixed penalty
    assert amounts(a) == [
        (CREDIT, D("1200.00"), False),
        (FIXED_PENALTY, D("1500.00"), True),
        (FIXED_PENALTY, D("1500.00"), False),
    ]
    assert a.credits == Money.of("1500.00", "EUR")


def test_unspecified_stacking_refuses_to_guess_when_amounts_compete() -> None:
    o = availability(penalties=[{"kind": "PENALTY_KIND_FIXED", "amount": "500.00"}])
    with pytest.raises(AssessmentError, match="stacking is unspecified"):
        assess(o, evaluation("99.5"), EUR_FEE, consequences(""))
    # one amount only: both rules agree, so it is assessed
    a = assess(availability(), evaluation("99.5"), EUR_FEE, consequences(""))
    assert a.credits == Money.of("1200.00", "EUR")


def test_penalties_only_on_a_breach() -> None:
    o = availability(credit_tiers=[], penalties=PENALTIES)
    a = assess(o, evaluation("99.95", "MET", detail={"eligible_seconds": MONTH_S, "downtime_seconds": "1296"}),
               EUR_FEE, consequences())  # fmt: skip
    assert a.lines == ()


# -- per-unit penalties ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("downtime_s", "started"),
    [
        ("2592", "0"),  # exactly the allowed downtime: nothing beyond
        ("2593", "1"),  # 1 s beyond → 1 started hour
        ("6192", "1"),  # 2592 + 3600: exactly 1 h beyond → 1
        ("6193", "2"),  # 1 h and 1 s beyond → 2 started hours
        ("6192.000001", "2"),  # a microsecond more is a started hour too
        ("100", "0"),  # under the allowance: never negative
    ],
)
def test_started_hours_beyond_the_allowed_downtime(downtime_s: str, started: str) -> None:
    ev = evaluation("99", detail={"eligible_seconds": MONTH_S, "downtime_seconds": downtime_s})
    assert units_beyond_target(availability(), ev, "hour").started == D(started)


def test_started_minutes_and_plural_unit_names() -> None:
    ev = evaluation("99", detail={"eligible_seconds": MONTH_S, "downtime_seconds": "2653"})
    # 2653 − 2592 = 61 s beyond → 2 started minutes (61 ÷ 60 ≈ 1.016667)
    units = units_beyond_target(availability(), ev, "minutes")
    assert units.started == D(2) and units.unit == "minute"
    assert "≈ 1.016667 minute(s)" in units.derivation


@pytest.mark.parametrize(
    ("downtime_s", "grace", "amount"),
    [
        ("6192", "1", "0.00"),  # 1 started hour − 1 grace = 0 → 0.00
        ("6193", "1", "50.00"),  # 2 started − 1 grace = 1 × 50.00
        ("13393", "1", "150.00"),  # 13393 − 2592 = 10801 s → 4 started − 1 = 3 × 50.00
        ("13393", "0", "200.00"),  # 4 started × 50.00, no grace
        ("13393", "5", "0.00"),  # max(0, 4 − 5) = 0
        ("13393", "0.5", "175.00"),  # 4 started − 0.5 grace = 3.5 × 50.00 (grace after rounding up)
    ],
)
def test_per_unit_penalty_after_grace(downtime_s: str, grace: str, amount: str) -> None:
    o = availability(
        credit_tiers=[], penalties=[{"kind": "PENALTY_KIND_PER_UNIT", "amount": "50.00", "unit": "hour",
                                     "grace_units": grace}]
    )  # fmt: skip
    ev = evaluation("99", detail={"eligible_seconds": MONTH_S, "downtime_seconds": downtime_s})
    a = assess(o, ev, EUR_FEE, consequences())
    assert amounts(a) == [(PER_UNIT_PENALTY, D(amount), True)]


def test_explicit_units_override_the_derivation_and_are_rounded_up() -> None:
    o = availability(
        credit_tiers=[],
        penalties=[{"kind": "PENALTY_KIND_PER_UNIT", "amount": "10.00", "unit": "ticket", "grace_units": "2"}],
    )
    a = assess(o, evaluation("99", units="4.2"), EUR_FEE, consequences())
    # 4.2 tickets → 5 started; − 2 grace = 3 × 10.00 = 30.00
    assert amounts(a) == [(PER_UNIT_PENALTY, D("30.00"), True)]
    # a mapping gives each unit its own quantity: 7 tickets − 2 = 5 × 10.00 = 50.00
    a = assess(o, evaluation("99", units={"ticket": "7", "hour": "1"}), EUR_FEE, consequences())
    assert amounts(a) == [(PER_UNIT_PENALTY, D("50.00"), True)]
    with pytest.raises(AssessmentError, match="negative"):
        assess(o, evaluation("99", units="-1"), EUR_FEE, consequences())


def test_percent_points_short_of_a_percentage_target() -> None:
    o = {
        "objective_id": "service-level",
        "metric": "METRIC_SERVICE_LEVEL",
        "comparator": "COMPARATOR_AT_LEAST",
        "target": "80",
        "penalties": [{"kind": "PENALTY_KIND_PER_UNIT", "amount": "100.00", "unit": "percent_point"}],
    }
    a = assess(o, {"value": "72.5", "status": BREACHED}, EUR_FEE, consequences())
    # 80 − 72.5 = 7.5 points → 8 started × 100.00 = 800.00
    assert amounts(a) == [(PER_UNIT_PENALTY, D("800.00"), True)]


def test_time_units_on_a_duration_metric() -> None:
    o = {
        "objective_id": "asa",
        "metric": "METRIC_ASA",
        "comparator": "COMPARATOR_AT_MOST",
        "target": "30",
        "penalties": [{"kind": "PENALTY_KIND_PER_UNIT", "amount": "20.00", "unit": "minute"}],
    }
    a = assess(o, {"value": "95.5", "status": BREACHED}, EUR_FEE, consequences())
    # 95.5 − 30 = 65.5 s beyond → 2 started minutes × 20.00 = 40.00
    assert amounts(a) == [(PER_UNIT_PENALTY, D("40.00"), True)]


def test_units_that_cannot_be_derived_must_be_given() -> None:
    o = {
        "objective_id": "requests",
        "metric": "METRIC_AVAILABILITY_REQUESTS",
        "comparator": "COMPARATOR_AT_LEAST",
        "target": "99.9",
        "penalties": [{"kind": "PENALTY_KIND_PER_UNIT", "amount": "50.00", "unit": "hour"}],
    }
    with pytest.raises(UnitsUnavailableError, match="explicit `units`"):
        assess(o, {"value": "99.0", "status": BREACHED}, EUR_FEE, consequences())
    a = assess(o, {"value": "99.0", "status": BREACHED, "units": "3"}, EUR_FEE, consequences())
    assert a.credits == Money.of("150.00", "EUR")  # 3 × 50.00


# -- rewards ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reward"),
    [
        ("99.99", None),  # equal to the stretch target: not beaten
        ("99.991", "-200.00"),  # beaten: the customer pays 200.00
        ("100", "-200.00"),
        ("99.95", None),  # met, not beaten
    ],
)
def test_reward_when_the_stretch_target_is_beaten(value: str, reward: str | None) -> None:
    o = availability(reward={"stretch_target": "99.99", "amount": "200.00"})
    a = assess(o, evaluation(value, "MET"), EUR_FEE, consequences("STACKING_RULE_HIGHEST_APPLIES"))
    assert amounts(a) == ([] if reward is None else [(REWARD, D(reward), True)])
    assert a.credits.is_zero()
    assert a.rewards == Money.of(reward or "0", "EUR")


def test_reward_for_a_lower_is_better_objective() -> None:
    o = {
        "objective_id": "asa",
        "metric": "METRIC_ASA",
        "comparator": "COMPARATOR_AT_MOST",
        "target": "30",
        "reward": {"stretch_target": "15", "amount": "75.50"},
    }
    assert amounts(assess(o, {"value": "14.9", "status": "MET"}, EUR_FEE, consequences())) == [
        (REWARD, D("-75.50"), True)  # 14.9 < 15
    ]
    assert assess(o, {"value": "15", "status": "MET"}, EUR_FEE, consequences()).lines == ()


# -- statement totals ------------------------------------------------------------------------


def credit_of(amount: str, objective_id: str = "o", currency: str = "EUR", reward: str = "") -> Assessment:
    """An assessment with one applied credit line (and a reward line when given)."""
    lines = [Line(CREDIT, Money.of(amount, currency), "test")]
    if reward:
        lines.append(Line(REWARD, -Money.of(reward, currency), "test"))
    return Assessment(objective_id, BREACHED, D("99"), currency, "STACKING_RULE_STACK", None, tuple(lines))


def net_of_lines(assessments: list[Assessment], totals_lines: tuple[Any, ...], currency: str = "EUR") -> Money:
    applied = [ln.amount for a in assessments for ln in a.lines if ln.applied]
    return Money.total([*applied, *(ln.amount for ln in totals_lines)], currency)


def test_cap_cuts_the_period_total_and_shows_the_cut() -> None:
    fee = {"amount": "1000.00", "currency": "EUR"}
    items = [credit_of("600.00", "a"), credit_of("200.00", "b")]
    t = statement_totals(items, consequences(cap="50"), fee)
    # credits 600.00 + 200.00 = 800.00; cap 50 % × 1000.00 = 500.00; cut 300.00
    assert t.credits_before_cap == Money.of("800.00", "EUR")
    assert t.cap == Money.of("500.00", "EUR")
    assert t.cap_cut == Money.of("300.00", "EUR")
    assert t.credits_after_cap == t.credits_issued == t.net == Money.of("500.00", "EUR")
    assert [(ln.kind, ln.amount.amount) for ln in t.lines] == [(CAP, D("-300.00"))]
    assert "cut 300.00 EUR" in t.lines[0].derivation
    assert net_of_lines(items, t.lines) == t.net


def test_cap_not_reached_and_no_cap() -> None:
    fee = {"amount": "1000.00", "currency": "EUR"}
    items = [credit_of("500.00")]
    t = statement_totals(items, consequences(cap="50"), fee)
    # 500.00 ≤ cap 500.00: nothing cut
    assert t.cap_cut.is_zero() and t.net == Money.of("500.00", "EUR")
    assert [(ln.kind, ln.amount.amount) for ln in t.lines] == [(CAP, D("0.00"))]
    t = statement_totals([credit_of("5000.00")], consequences(), fee)
    assert t.cap is None and t.lines == () and t.net == Money.of("5000.00", "EUR")


@pytest.mark.parametrize(
    ("credits", "issued"),
    [
        ("9.99", "0.00"),  # under the 10.00 minimum: not issued
        ("10.00", "10.00"),  # equal to the minimum: issued
        ("10.01", "10.01"),
        ("0.00", "0.00"),
    ],
)
def test_minimum_applies_to_the_period_total(credits: str, issued: str) -> None:
    fee = {"amount": "1000.00", "currency": "EUR"}
    t = statement_totals([credit_of(credits)], consequences(minimum="10.00"), fee)
    assert t.credits_issued == Money.of(issued, "EUR")
    assert t.minimum_cut == Money.of(credits, "EUR") - Money.of(issued, "EUR")
    assert t.lines[0].kind == MINIMUM


def test_the_minimum_is_on_the_total_not_on_each_line() -> None:
    fee = {"amount": "1000.00", "currency": "EUR"}
    items = [credit_of("6.00", "a"), credit_of("6.00", "b")]
    t = statement_totals(items, consequences(minimum="10.00"), fee)
    # each line is under 10.00, but the period total 12.00 is not: 12.00 issued
    assert t.credits_issued == Money.of("12.00", "EUR") and t.minimum_cut.is_zero()


def test_cap_comes_before_the_minimum() -> None:
    fee = {"amount": "100.00", "currency": "EUR"}
    t = statement_totals([credit_of("20.00")], consequences(cap="5", minimum="10.00"), fee)
    # cap 5 % × 100.00 = 5.00 → 20.00 capped to 5.00 (cut 15.00); 5.00 < 10.00 → not issued (cut 5.00)
    assert (t.cap_cut.amount, t.credits_after_cap.amount, t.minimum_cut.amount, t.net.amount) == (
        D("15.00"),
        D("5.00"),
        D("5.00"),
        D("0.00"),
    )
    assert [(ln.kind, ln.amount.amount) for ln in t.lines] == [(CAP, D("-15.00")), (MINIMUM, D("-5.00"))]


def test_rewards_are_netted_after_the_cap_and_the_minimum() -> None:
    fee = {"amount": "1000.00", "currency": "EUR"}
    items = [credit_of("1500.00", "a"), credit_of("0.00", "b", reward="200.00")]
    t = statement_totals(items, consequences(cap="100", minimum="10.00"), fee)
    # credits 1500.00 capped at 100 % × 1000.00 = 1000.00; then the reward −200.00 → net 800.00
    assert t.credits_issued == Money.of("1000.00", "EUR")
    assert t.rewards == Money.of("-200.00", "EUR")
    assert t.net == Money.of("800.00", "EUR")
    assert net_of_lines(items, t.lines) == t.net
    # credits under the minimum are dropped, the reward is not: 5.00 < 10.00 → 0; net −200.00
    items = [credit_of("5.00", "a"), credit_of("0.00", "b", reward="200.00")]
    t = statement_totals(items, consequences(cap="100", minimum="10.00"), fee)
    assert t.net == Money.of("-200.00", "EUR")
    assert net_of_lines(items, t.lines) == t.net


def test_the_sample_agreement_end_to_end() -> None:
    # sla_terms(): HIGHEST_APPLIES, cap 100 %, minimum 10.00, fee 12000.00 EUR.
    cons = {"stacking": "STACKING_RULE_HIGHEST_APPLIES", "cap_percent": "100", "minimum_amount": "10.00"}
    a = assess(availability(), evaluation("94.2"), EUR_FEE, cons)
    sl = assess(
        {"objective_id": "service-level", "metric": "METRIC_SERVICE_LEVEL", "comparator": "COMPARATOR_AT_LEAST",
         "target": "80", "credit_tiers": [{"upper": "80", "credit_percent": "5"}]},
        {"value": "78", "status": BREACHED}, EUR_FEE, cons,
    )  # fmt: skip
    t = statement_totals([a, sl], cons, EUR_FEE)
    # 94.2 < 95.0 → 100 % × 12000.00 = 12000.00; 78 < 80 → 5 % × 12000.00 = 600.00; 12600.00 capped at 12000.00
    assert (t.credits_before_cap.amount, t.cap_cut.amount, t.net.amount) == (D("12600.00"), D("600.00"), D("12000.00"))


# -- currencies ------------------------------------------------------------------------------


def test_currencies_are_never_mixed() -> None:
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of("1.00", "EUR") + Money.of("1.00", "USD")
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of("1.00", "EUR") - Money.of("1.00", "USD")
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of("1.00", "EUR") < Money.of("2.00", "USD")
    with pytest.raises(CurrencyMismatchError):
        Money.total([Money.of("1.00", "USD")], "EUR")
    with pytest.raises(CurrencyMismatchError, match="never mixed"):
        statement_totals([credit_of("1.00", "a"), credit_of("1.00", "b", "USD")], consequences(), EUR_FEE)
    with pytest.raises(CurrencyMismatchError):
        statement_totals([credit_of("1.00", "a", "USD")], consequences(), EUR_FEE)


def test_penalties_and_rewards_are_in_the_fee_currency() -> None:
    fee = {"amount": "1000000", "currency": "JPY"}
    o = availability(penalties=[{"kind": "PENALTY_KIND_FIXED", "amount": "5000"}])
    a = assess(o, evaluation("99.5"), fee, consequences())
    # 10 % × 1 000 000 = 100 000 JPY; fixed 5 000 JPY
    assert [str(ln.amount) for ln in a.lines] == ["100000 JPY", "5000 JPY"]
    assert a.currency == "JPY"


def test_unknown_currencies_and_floats_are_refused() -> None:
    with pytest.raises(UnknownCurrencyError):
        Money.of("1", "XYZ")
    with pytest.raises(UnknownCurrencyError):
        assess(availability(), evaluation("99.5"), {"amount": "1", "currency": ""}, consequences())
    with pytest.raises(TypeError):
        Money(0.1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money.of(0.1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        assess(availability(), evaluation(99.5), EUR_FEE, consequences())  # type: ignore[arg-type]


# -- rounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("0.125", "EUR", "0.12"),  # half → the even neighbour 0.12
        ("0.135", "EUR", "0.14"),  # half → the even neighbour 0.14
        ("0.1251", "EUR", "0.13"),  # above half rounds up
        ("-0.125", "EUR", "-0.12"),  # symmetric for negatives
        ("-0.001", "EUR", "0.00"),  # no negative zero
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1234.5", "JPY", "1234"),
        ("0.0125", "BHD", "0.012"),
        ("0.0135", "KWD", "0.014"),
        ("1200", "USD", "1200.00"),  # always shown at the minor unit
    ],
)
def test_half_even_to_the_minor_unit(amount: str, currency: str, rounded: str) -> None:
    assert str(Money.of(amount, currency)) == f"{rounded} {currency}"
    assert str(round_half_even(D(amount), currency)) == rounded


@pytest.mark.parametrize(
    ("fee", "currency", "credit"),
    [
        ("1000.25", "EUR", "100.02"),  # 10 % × 1000.25 = 100.025 → 100.02
        ("1000.35", "EUR", "100.04"),  # 10 % × 1000.35 = 100.035 → 100.04
        ("12345", "JPY", "1234"),  # 10 % × 12345 = 1234.5 → 1234
        ("12355", "JPY", "1236"),  # 10 % × 12355 = 1235.5 → 1236
    ],
)
def test_each_line_is_rounded_half_even_at_its_end(fee: str, currency: str, credit: str) -> None:
    a = assess(availability(), evaluation("99.5"), {"amount": fee, "currency": currency}, consequences())
    assert a.lines[0].amount == Money.of(credit, currency)
    assert "(half-even)" in a.lines[0].derivation


def test_lines_are_rounded_before_they_are_added() -> None:
    fee = {"amount": "0.25", "currency": "EUR"}
    tiers = [{"upper": "99.9", "credit_percent": "50"}]
    items = [
        assess(availability(objective_id="a", credit_tiers=tiers), evaluation("99", objective_id="a"), fee,
               consequences()),
        assess(availability(objective_id="b", credit_tiers=tiers), evaluation("99", objective_id="b"), fee,
               consequences()),
    ]  # fmt: skip
    # each line 50 % × 0.25 = 0.125 → 0.12; the total is 0.12 + 0.12 = 0.24 (never round(0.25) = 0.25)
    t = statement_totals(items, consequences(), fee)
    assert t.net == Money.of("0.24", "EUR")


def test_cap_is_rounded_once() -> None:
    fee = {"amount": "0.25", "currency": "EUR"}
    t = statement_totals([credit_of("1.00")], consequences(cap="50"), fee)
    # cap 50 % × 0.25 = 0.125 → 0.12; 1.00 − 0.12 = 0.88 cut
    assert (t.cap, t.cap_cut, t.net) == (
        Money.of("0.12", "EUR"),
        Money.of("0.88", "EUR"),
        Money.of("0.12", "EUR"),
    )
