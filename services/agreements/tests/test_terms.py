"""Validation of every field rule of the terms, merge of parent chains, and diffs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from accord_agreements.samples import sla_terms
from accord_agreements.terms import TermsInvalidError, diff, merge, validate


def errors_of(terms: dict[str, Any]) -> str:
    with pytest.raises(TermsInvalidError) as err:
        validate(terms)
    return str(err.value)


def test_the_sample_terms_are_valid() -> None:
    validate(sla_terms())


def objective(terms: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return terms["objectives"][i]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.update(title=""), "title: is required"),
        (lambda t: t.update(kind="AGREEMENT_KIND_UNSPECIFIED"), "kind: is required"),
        (lambda t: t.update(level="SCOPE_LEVEL_GALAXY"), "level: must be one of"),
        (lambda t: t["parties"].update(customer_department_id="it-operations"), "provider and customer must differ"),
        (lambda t: t["parties"].update(provider_department_id=""), "parties.provider_department_id: is required"),
        (lambda t: t.update(time_zone="Mars/Olympus"), "unknown IANA time zone 'Mars/Olympus'"),
        (lambda t: t.update(time_zone=""), "time_zone: is required"),
        (lambda t: objective(t).update(target="120"), "objectives[0].target: must be at most 100 (got 120)"),
        (lambda t: objective(t).update(target="-1"), "objectives[0].target: must be at least 0"),
        (lambda t: objective(t).update(target="abc"), "objectives[0].target: must be a decimal number"),
        (lambda t: objective(t).update(target=""), "objectives[0].target: is required"),
        (lambda t: objective(t, 1).update(objective_id="availability"), "'availability' is used twice"),
        (lambda t: objective(t).update(objective_id="has space"), "objectives[0].objective_id"),
        (lambda t: objective(t).update(comparator=""), "objectives[0].comparator: is required"),
        (
            lambda t: objective(t).update(window={"kind": "WINDOW_KIND_ROLLING"}),
            "rolling_days: must be between 1 and 366",
        ),
        (lambda t: objective(t).update(window={"kind": "WINDOW_KIND_MONTH", "rolling_days": 7}), "only for rolling"),
        (lambda t: objective(t).update(calendar_id=""), "objectives[0].calendar_id: is required"),
        (lambda t: objective(t).update(budgeting="BUDGETING_TIMESLICES"), "objectives[0].slice_minutes"),
        (lambda t: objective(t).update(warning_levels=["90", "50"]), "must be ascending"),
        (lambda t: objective(t).update(warning_levels=["0"]), "warning_levels[0]: must be greater than 0"),
        (
            lambda t: objective(t).update(
                exclusions=[{"start": "2026-02-01T02:00:00Z", "end": "2026-02-01T01:00:00Z"}]
            ),
            "exclusions[0].end: must be after start",
        ),
        (lambda t: objective(t, 1)["parameters"].update(variant="SOMETIMES"), "parameters.variant: must be one of"),
        (lambda t: objective(t, 1)["parameters"].pop("threshold_seconds"), "parameters.threshold_seconds: is required"),
        (
            lambda t: objective(t, 1)["parameters"].update(variant="SHORT_ABANDONS_SUCCESS"),
            "parameters.short_abandon_seconds: is required",
        ),
        (lambda t: t["fee"].update(currency="XXX"), "fee.currency: must be an ISO 4217 code"),
        (lambda t: t["fee"].update(amount="10.001"), "more decimals than EUR has minor units"),
        (lambda t: t["fee"].update(amount="-5"), "fee.amount: must be at least 0"),
        (lambda t: t["term"].update(effective_to="2025-12-01T00:00:00Z"), "term.effective_to: must be after"),
        (lambda t: t["term"].update(effective_from=""), "term.effective_from: is required"),
        (lambda t: t["term"].update(auto_renew=True), "renewal_months: must be between 1 and 120"),
        (lambda t: t["consequences"].update(cap_percent="150"), "consequences.cap_percent: must be at most 100"),
        (
            lambda t: t["consequences"].update(termination={"breaches": 4}),
            "breaches and within_months go together",
        ),
        (
            lambda t: t["support"]["priorities"].append(
                {"priority": "P1", "response_minutes": 5, "resolution_minutes": 9}
            ),
            "P1 is listed twice",
        ),
        (
            lambda t: t["support"]["priorities"].append(
                {"priority": "P2", "response_minutes": 60, "resolution_minutes": 30}
            ),
            "cannot be longer than resolution target",
        ),
        (lambda t: t["support"]["contacts"].append({"name": "x", "email": "nope"}), "is not an e-mail address"),
        (
            lambda t: t.update(level="SCOPE_LEVEL_CORPORATE", parent_agreement_id="abc"),
            "a corporate-level agreement has no parent",
        ),
        (lambda t: t["service"].update(service_ids=[]), "a service-level agreement names at least one service"),
    ],
)
def test_each_broken_rule_is_named_with_its_field(mutate: Any, expected: str) -> None:
    terms = sla_terms()
    mutate(terms)
    assert expected in errors_of(terms)


def leads_objective(close_rate: str) -> dict[str, Any]:
    return {
        "objective_id": "leads",
        "metric": "METRIC_LEADS_NEEDED",
        "parameters": {
            "sales_target": "1000000",
            "marketing_revenue_share": "0.4",
            "average_deal_size": "20000",
            "close_rate": close_rate,
        },
        "comparator": "COMPARATOR_AT_LEAST",
        "target": "100",
        "window": {"kind": "WINDOW_KIND_QUARTER"},
        "calendar_id": "24x7",
    }


def test_a_zero_close_rate_is_a_validation_error_not_a_division_by_zero() -> None:
    terms = sla_terms()
    terms["objectives"].append(leads_objective("0"))
    assert "objectives[2].parameters.close_rate: must not be zero" in errors_of(terms)
    terms["objectives"][2] = leads_objective("0.25")
    validate(terms)


def tiers(*bands: tuple[str | None, bool, str | None, bool]) -> list[dict[str, Any]]:
    out = []
    for lo, lo_inc, hi, hi_inc in bands:
        t: dict[str, Any] = {"credit_percent": "10", "lower_inclusive": lo_inc, "upper_inclusive": hi_inc}
        if lo is not None:
            t["lower"] = lo
        if hi is not None:
            t["upper"] = hi
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("bands", "expected"),
    [
        # 99.0 belongs to both bands.
        ((("99.0", True, "99.9", False), ("95.0", True, "99.0", True)), "overlaps"),
        # Values between 98 and 99 match no band.
        ((("99.0", True, "99.9", False), ("95.0", True, "98.0", False)), "leaves a hole"),
        # 99.0 itself matches no band (both bounds exclusive).
        ((("99.0", False, "99.9", False), ("95.0", True, "99.0", False)), "leaves a hole"),
        ((("99.9", True, "99.0", False),), "must be below upper bound"),
        (((None, False, None, False),), "needs a lower or an upper bound"),
    ],
)
def test_credit_tiers_that_overlap_or_leave_holes_are_refused(bands: Any, expected: str) -> None:
    terms = sla_terms()
    terms["objectives"][0]["credit_tiers"] = tiers(*bands)
    assert expected in errors_of(terms)


def test_contiguous_tiers_with_explicit_bounds_are_accepted() -> None:
    terms = sla_terms()
    terms["objectives"][0]["credit_tiers"] = tiers(
        ("99.0", True, "99.9", False), ("95.0", True, "99.0", False), (None, False, "95.0", False)
    )
    validate(terms)


def test_every_error_is_reported_at_once() -> None:
    terms = sla_terms(title="", time_zone="Nowhere")
    terms["objectives"][0]["target"] = "101"
    with pytest.raises(TermsInvalidError) as err:
        validate(terms)
    assert {e.field for e in err.value.errors} >= {"title", "time_zone", "objectives[0].target"}


def test_merge_overrides_objective_by_objective() -> None:
    parent = sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate terms")
    parent["objectives"].append({**copy.deepcopy(parent["objectives"][0]), "objective_id": "only-parent"})
    child = sla_terms(title="E-mail", parent_agreement_id="p")
    child["objectives"] = [{**copy.deepcopy(child["objectives"][0]), "target": "99.5"}]
    child.pop("fee")
    merged = merge(parent, child)
    by_id = {o["objective_id"]: o for o in merged["objectives"]}
    assert by_id["availability"]["target"] == "99.5"  # overridden by the child
    assert "only-parent" in by_id and "service-level" in by_id  # inherited
    assert merged["fee"] == parent["fee"]  # inherited component
    assert merged["title"] == "E-mail"


def test_diff_names_changes_objective_by_objective_and_term_by_term() -> None:
    old = sla_terms()
    new = copy.deepcopy(old)
    new["objectives"][0]["target"] = "99.5"
    new["objectives"].pop(1)
    new["fee"]["amount"] = "11000.00"
    changes = {(c["path"], c["kind"]) for c in diff(old, new)}
    assert ("objectives[availability].target", "CHANGED") in changes
    assert ("objectives[service-level]", "REMOVED") in changes
    assert ("fee.amount", "CHANGED") in changes
    assert diff(old, old) == []
