"""Sample agreement terms (canonical JSON form) for tests, benchmarks and the README's
worked example: an IT operations → finance SLA with an availability and a contact-centre
objective."""

from __future__ import annotations

import copy
from typing import Any

IT = "it-operations"
FINANCE = "finance"
NETWORK = "network-team"
EMAIL = "email"


def sla_terms(**overrides: Any) -> dict[str, Any]:
    terms: dict[str, Any] = {
        "title": "E-mail service for Finance",
        "kind": "AGREEMENT_KIND_SLA",
        "level": "SCOPE_LEVEL_SERVICE",
        "parties": {"provider_department_id": IT, "customer_department_id": FINANCE},
        "service": {
            "service_ids": [EMAIL],
            "hours_of_coverage": "24x7",
            "coverage_calendar_id": "24x7",
            "delivered": "mailboxes, webmail, mobile sync",
            "description": "Corporate e-mail for the finance department",
        },
        "objectives": [
            {
                "objective_id": "availability",
                "name": "Monthly availability",
                "metric": "METRIC_AVAILABILITY_TIME",
                "parameters": {"min_outage_seconds": "60"},
                "comparator": "COMPARATOR_AT_LEAST",
                "target": "99.9",
                "window": {"kind": "WINDOW_KIND_MONTH"},
                "calendar_id": "24x7",
                "budgeting": "BUDGETING_OCCURRENCES",
                "warning_levels": ["50", "75", "90"],
                "no_data": "NO_DATA_POLICY_NOT_COUNTED",
                "credit_tiers": [
                    {"lower": "99.0", "lower_inclusive": True, "upper": "99.9", "credit_percent": "10"},
                    {"lower": "95.0", "lower_inclusive": True, "upper": "99.0", "credit_percent": "25"},
                    {"upper": "95.0", "credit_percent": "100"},
                ],
            },
            {
                "objective_id": "service-level",
                "name": "Calls answered within 20 s",
                "metric": "METRIC_SERVICE_LEVEL",
                "parameters": {"variant": "ANSWERED_OVER_OFFERED", "threshold_seconds": "20"},
                "comparator": "COMPARATOR_AT_LEAST",
                "target": "80",
                "window": {"kind": "WINDOW_KIND_MONTH"},
                "calendar_id": "24x7",
            },
        ],
        "support": {
            "contacts": [{"name": "Service desk", "role": "first line", "email": "desk@example.org"}],
            "how_to_report": "portal or phone",
            "priorities": [{"priority": "P1", "response_minutes": 15, "resolution_minutes": 240}],
        },
        "monitoring": {"statistics": ["availability", "service level"], "frequency": "monthly", "audience": [FINANCE]},
        "consequences": {
            "stacking": "STACKING_RULE_HIGHEST_APPLIES",
            "cap_percent": "100",
            "minimum_amount": "10.00",
            "claim_window_days": 30,
            "termination": {"consecutive_periods": 3, "breaches": 4, "within_months": 12},
        },
        "fee": {"amount": "12000.00", "currency": "EUR", "period": "FEE_PERIOD_MONTH"},
        "term": {"effective_from": "2026-01-01T00:00:00Z", "notice_days": 30},
        "amendment": {"who_may_propose": "PROPOSER_EITHER_PARTY", "notice_days": 7},
        "time_zone": "Europe/Amsterdam",
    }
    for key, value in overrides.items():
        terms[key] = value
    return copy.deepcopy(terms)


def with_target(terms: dict[str, Any], objective_id: str, target: str) -> dict[str, Any]:
    t = copy.deepcopy(terms)
    for o in t["objectives"]:
        if o["objective_id"] == objective_id:
            o["target"] = target
    return t


def ola_terms(availability_target: str = "99.95") -> dict[str, Any]:
    """The network team's OLA underpinning IT operations' e-mail availability."""
    t = sla_terms(
        title="Network for e-mail",
        kind="AGREEMENT_KIND_OLA",
        parties={"provider_department_id": NETWORK, "customer_department_id": IT},
    )
    t["objectives"] = [o for o in t["objectives"] if o["objective_id"] == "availability"]
    t["objectives"][0]["target"] = availability_target
    t["objectives"][0]["objective_id"] = "network-availability"
    return t
