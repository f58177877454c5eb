"""Validation of every field rule of the terms, merge of parent chains, and diffs."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from accord_agreements.samples import sla_terms
from accord_agreements.terms import PARAMETERS, TermsInvalidError, check_not_ended, diff, merge, normalise, validate


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


def with_objective(metric: str, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The sample terms with one more objective of `metric` (a valid one unless `params` breaks it)."""
    terms = sla_terms()
    terms["objectives"].append(
        {
            "objective_id": "extra",
            "metric": metric,
            "parameters": params,
            "comparator": "COMPARATOR_AT_LEAST",
            "target": "10",
            "window": {"kind": "WINDOW_KIND_MONTH"},
            "calendar_id": "24x7",
            **fields,
        }
    )
    return terms


LEADS = {
    "sales_target": "1000000",
    "marketing_revenue_share": "0.4",
    "average_deal_size": "20000",
    "close_rate": "0.25",
}
# A valid set of parameters for every metric that takes any (every declared parameter given).
VALID_PARAMETERS: dict[str, dict[str, str]] = {
    "METRIC_AVAILABILITY_TIME": {"min_outage_seconds": "60", "maintenance_notice_hours": "48"},
    "METRIC_AVAILABILITY_REQUESTS": {"maintenance_notice_hours": "12"},
    "METRIC_MTTR": {"r": "RESOLVE", "maintenance_notice_hours": "0"},
    "METRIC_MTBF": {"maintenance_notice_hours": "72.5"},
    "METRIC_ABANDONMENT_RATE": {"short_abandon_seconds": "5"},
    "METRIC_SERVICE_LEVEL": {
        "variant": "SHORT_ABANDONS_SUCCESS",
        "threshold_seconds": "20",
        "short_abandon_seconds": "5",
    },
    "METRIC_FIRST_CONTACT_RESOLUTION": {"method": "REPEAT_CONTACT", "repeat_window_days": "7"},
    "METRIC_TICKET_RESPONSE": {"priority": "P1", "target_minutes": "15"},
    "METRIC_TICKET_RESOLUTION": {"priority": "P4", "target_minutes": "2880"},
    "METRIC_TASK_TURNAROUND": {"target_minutes": "240"},
    "METRIC_LEADS_NEEDED": LEADS,
    "METRIC_FOLLOW_UP_SPEED": {"target_hours": "24"},
    "METRIC_FOLLOW_UP_DEPTH": {"window_days": "14"},
}


@pytest.mark.parametrize("metric", sorted(VALID_PARAMETERS))
def test_every_declared_parameter_of_every_metric_is_accepted(metric: str) -> None:
    validate(with_objective(metric, dict(VALID_PARAMETERS[metric])))


# (metric, parameter, bad value, what the error says): a wrong type and an out-of-range value
# for every parameter metrics reads. Before every parameter was declared, most of these were
# stored, and the first metrics round over them failed for every agreement.
BAD_PARAMETERS = [
    ("METRIC_AVAILABILITY_TIME", "maintenance_notice_hours", "48h", "must be a decimal number of hours"),
    ("METRIC_AVAILABILITY_TIME", "maintenance_notice_hours", "9000", "must be at most 8760"),
    ("METRIC_AVAILABILITY_TIME", "maintenance_notice_hours", "-1", "must be at least 0"),
    ("METRIC_AVAILABILITY_TIME", "min_outage_seconds", "1e14", "must be at most 86400"),
    ("METRIC_AVAILABILITY_REQUESTS", "maintenance_notice_hours", "2d", "must be a decimal number of hours"),
    ("METRIC_AVAILABILITY_TIME", "min_outage_seconds", "60s", "must be a decimal number of seconds"),
    ("METRIC_AVAILABILITY_TIME", "min_outage_seconds", "NaN", "must be a decimal number of seconds"),
    ("METRIC_MTTR", "r", "FIX", "must be one of REPAIR, RESOLVE, RESPOND, RESTORE"),
    ("METRIC_MTTR", "maintenance_notice_hours", "1 day", "must be a decimal number of hours"),
    ("METRIC_MTBF", "maintenance_notice_hours", "1E+5", "must be at most 8760"),
    ("METRIC_ABANDONMENT_RATE", "short_abandon_seconds", "0", "must be greater than 0"),
    ("METRIC_ABANDONMENT_RATE", "short_abandon_seconds", "5 s", "must be a decimal number of seconds"),
    ("METRIC_ABANDONMENT_RATE", "short_abandon_seconds", "7200", "must be at most 3600"),
    ("METRIC_SERVICE_LEVEL", "threshold_seconds", "twenty", "must be a decimal number of seconds"),
    ("METRIC_SERVICE_LEVEL", "threshold_seconds", "86400", "must be at most 3600"),
    ("METRIC_SERVICE_LEVEL", "short_abandon_seconds", "-5", "must be greater than 0"),
    ("METRIC_SERVICE_LEVEL", "variant", "SOMETIMES", "must be one of"),
    ("METRIC_FIRST_CONTACT_RESOLUTION", "method", "GUESS", "must be one of FLAGGED, REPEAT_CONTACT"),
    ("METRIC_FIRST_CONTACT_RESOLUTION", "repeat_window_days", "1 week", "must be a decimal number of days"),
    ("METRIC_FIRST_CONTACT_RESOLUTION", "repeat_window_days", "1e9", "must be at most 366"),
    ("METRIC_TICKET_RESPONSE", "priority", "P9", "must be one of P1, P2, P3, P4"),
    ("METRIC_TICKET_RESPONSE", "target_minutes", "15m", "must be a decimal number of minutes"),
    ("METRIC_TICKET_RESOLUTION", "priority", "", "is required (one of P1, P2, P3, P4)"),
    ("METRIC_TICKET_RESOLUTION", "target_minutes", "1e12", "must be at most 525600"),
    ("METRIC_TASK_TURNAROUND", "target_minutes", "0", "must be greater than 0"),
    ("METRIC_LEADS_NEEDED", "sales_target", "1M", "must be a decimal number"),
    ("METRIC_LEADS_NEEDED", "sales_target", "-5", "must be greater than 0"),
    ("METRIC_LEADS_NEEDED", "marketing_revenue_share", "40%", "must be a decimal number of fraction"),
    ("METRIC_LEADS_NEEDED", "marketing_revenue_share", "40", "must be at most 1"),
    ("METRIC_LEADS_NEEDED", "average_deal_size", "0", "must be greater than 0"),
    ("METRIC_LEADS_NEEDED", "close_rate", "1.5", "must be at most 1"),
    ("METRIC_FOLLOW_UP_SPEED", "target_hours", "a day", "must be a decimal number of hours"),
    ("METRIC_FOLLOW_UP_SPEED", "target_hours", "100000", "must be at most 8760"),
    ("METRIC_FOLLOW_UP_DEPTH", "window_days", "0.5", "must be at least 1"),
    ("METRIC_FOLLOW_UP_DEPTH", "window_days", "7.5", "must be a whole number of days"),
    ("METRIC_FOLLOW_UP_DEPTH", "window_days", "400", "must be at most 366"),
]


@pytest.mark.parametrize(("metric", "name", "value", "expected"), BAD_PARAMETERS)
def test_every_parameter_is_typed_and_range_checked(metric: str, name: str, value: str, expected: str) -> None:
    params = dict(VALID_PARAMETERS[metric])
    params[name] = value
    message = errors_of(normalise(with_objective(metric, params)))  # as the service validates them
    assert f"objectives[2].parameters.{name}: {expected}" in message, message


def test_every_parameter_metrics_reads_is_declared_and_tested() -> None:
    declared = {(m, p.name) for m, params in PARAMETERS.items() for p in params}
    assert declared == {(m, n) for m, params in VALID_PARAMETERS.items() for n in params}
    assert declared == {(m, n) for m, n, _, _ in BAD_PARAMETERS}


@pytest.mark.parametrize(
    ("metric", "params", "expected"),
    [
        (
            "METRIC_SERVICE_LEVEL",
            {"variant": "ANSWERED_OVER_OFFERED", "threshold_seconds": "20", "threshold": "30"},
            "parameters.threshold: is not a parameter of METRIC_SERVICE_LEVEL "
            "(valid parameters: short_abandon_seconds, threshold_seconds, variant)",
        ),
        (
            "METRIC_SERVICE_LEVEL",
            {"variant": "ANSWERED_OVER_OFFERED", "threshold_seconds": "20", "maintenance_notice_hours": "48"},
            "parameters.maintenance_notice_hours: is not a parameter of METRIC_SERVICE_LEVEL",
        ),
        ("METRIC_ASA", {"short_abandon_seconds": "5"}, "is not a parameter of METRIC_ASA (valid parameters: none)"),
        (
            "METRIC_AVAILABILITY_REQUESTS",
            {"budgeting": "BUDGETING_TIMESLICES"},
            "(valid parameters: maintenance_notice_hours); budgeting is a field of the objective: "
            "set objectives[2].budgeting",
        ),
        (
            "METRIC_AVAILABILITY_TIME",
            {"min_outage": "60"},
            "(valid parameters: maintenance_notice_hours, min_outage_seconds)",
        ),
    ],
)
def test_an_unknown_parameter_is_refused_with_the_valid_ones(
    metric: str, params: dict[str, str], expected: str
) -> None:
    assert expected in errors_of(with_objective(metric, params))


def test_a_decimal_in_exponent_form_is_written_plain_and_never_stored_so() -> None:
    terms = sla_terms()
    terms["objectives"][1]["target"] = "2E+1"
    terms["objectives"][0]["parameters"]["min_outage_seconds"] = "6e1"
    terms["objectives"][0]["credit_tiers"][0]["credit_percent"] = "1E+1"
    terms["fee"]["amount"] = "1.2E+4"
    terms["consequences"]["cap_percent"] = " +50 "
    terms["consequences"]["minimum_amount"] = "-0"
    # Validation alone refuses the exponent form, saying the plain one ...
    assert "objectives[1].target: must be written in plain notation ('20'), not '2E+1'" in errors_of(terms)
    # ... and the terms as the service stores them are normalised first.
    stored = normalise(terms)
    validate(stored)
    assert stored["objectives"][1]["target"] == "20"
    assert stored["objectives"][0]["parameters"]["min_outage_seconds"] == "60"
    assert stored["objectives"][0]["credit_tiers"][0]["credit_percent"] == "10"
    assert stored["fee"]["amount"] == "12000"
    assert (stored["consequences"]["cap_percent"], stored["consequences"]["minimum_amount"]) == ("50", "0")
    assert terms["objectives"][1]["target"] == "2E+1"  # the caller's copy is left alone


def test_json_numbers_are_taken_where_a_decimal_string_is_expected() -> None:
    terms = sla_terms()
    terms["objectives"][0]["target"] = 99.9
    terms["objectives"][0]["parameters"]["min_outage_seconds"] = 60
    terms["objectives"][0]["warning_levels"] = [50, 75.5, 90]
    terms["fee"]["amount"] = 12000
    assert "objectives[0].target: must be a decimal number" in errors_of(terms)
    stored = normalise(terms)
    validate(stored)
    assert stored["objectives"][0]["target"] == "99.9"
    assert stored["objectives"][0]["parameters"]["min_outage_seconds"] == "60"
    assert stored["objectives"][0]["warning_levels"] == ["50", "75.5", "90"]
    assert stored["fee"]["amount"] == "12000"


def test_numbers_too_large_or_too_fine_are_refused_not_expanded() -> None:
    terms = sla_terms()
    terms["fee"]["amount"] = "1E+100000"
    terms["objectives"][0]["credit_tiers"][0]["lower"] = "1E-100000"
    message = errors_of(normalise(terms))
    assert "fee.amount: '1E+100000' is out of range" in message
    assert "credit_tiers[0].lower: '1E-100000' is out of range" in message


def test_a_term_that_has_already_ended_is_refused() -> None:
    terms = sla_terms(term={"effective_from": "2026-01-01T00:00:00Z", "effective_to": "2026-03-01T00:00:00Z"})
    with pytest.raises(TermsInvalidError, match=r"term.effective_to: 2026-03-01T00:00:00\+00:00 is before now"):
        check_not_ended(terms, datetime(2026, 4, 1, tzinfo=UTC))
    with pytest.raises(TermsInvalidError, match="is before the amendment's effective_from"):
        check_not_ended(terms, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC))
    check_not_ended(terms, datetime(2026, 2, 1, tzinfo=UTC))
    check_not_ended(sla_terms(), datetime(2099, 1, 1, tzinfo=UTC))  # open-ended
