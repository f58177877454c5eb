"""The gateway's SLO gauges on `/metrics`: every objective's current window as the read model
knows it (docs/domain.md §3), for Prometheus to alert on and Grafana to chart.

Exported gauges, each labelled `agreement`, `objective` and `service` (the services the
agreement's effective terms measure, comma-separated: those named, or naming none every
service of its provider — `ReadModel.current_objectives`), for the objectives of ACTIVE and
SUSPENDED agreements only:

* `accord_slo_objective_ratio`: the target as a ratio (99.9 % → 0.999); Sloth/Pyrra
  `slo:objective:ratio`.
* `accord_slo_sli_ratio`: the current window's measured value as a ratio; 1 −
  `slo:sli_error:ratio_rate<period>` over the objective window.
* `accord_slo_error_budget_remaining_ratio`: share of the window's error budget left (below 0
  once overspent); `slo:period_error_budget_remaining:ratio`.
* `accord_slo_error_budget_consumed_ratio`: share used.
* `accord_slo_burn_rate{window="1h"}`: burn rate over the fast alert pair's long window;
  `slo:sli_error:ratio_rate1h` ÷ (1 − `slo:objective:ratio`).
* `accord_slo_status{status}`: 1 for the current status (MET, AT_RISK, BREACHED, NO_DATA).

Ratio gauges exist for objectives with an error budget (availability-like objectives,
`budget_remaining` set); `accord_slo_status` for every objective. The burn rate is the one
metrics records with each open window's evaluation: over the fastest alert pair's long window,
which is 1 h for a 30-day window and scaled by the window's length otherwise (docs/domain.md
§3 "Warnings"); `window="1h"` names that pair. Cardinality is bounded: at most
`MAX_OBJECTIVES` objectives are exported (the first by agreement and objective id);
`accord_slo_objectives_dropped` says how many more there were.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from accord_gateway.projection import ReadModel

MAX_OBJECTIVES = 5000
EXPORTED_STATES = frozenset({"ACTIVE", "SUSPENDED"})
STATUSES = ("MET", "AT_RISK", "BREACHED", "NO_DATA")
LABELS = ["agreement", "objective", "service"]
HUNDRED = Decimal(100)


def _ratio(raw: Any) -> float | None:
    """A percentage as recorded ("99.9") as a ratio (0.999); None when undefined."""
    if raw in (None, ""):
        return None
    try:
        return float(Decimal(str(raw)) / HUNDRED)
    except (InvalidOperation, ValueError):
        return None


def _number(raw: Any) -> float | None:
    if raw in (None, ""):
        return None
    try:
        return float(Decimal(str(raw)))
    except (InvalidOperation, ValueError):
        return None


class SloCollector(Collector):
    """Reads the read model when Prometheus scrapes: nothing is kept on the apply path."""

    def __init__(self, model: ReadModel, max_objectives: int = MAX_OBJECTIVES) -> None:
        self.model = model
        self.max_objectives = max_objectives

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rows = self.model.current_objectives(EXPORTED_STATES)
        dropped = max(0, len(rows) - self.max_objectives)
        rows = rows[: self.max_objectives]
        objective = GaugeMetricFamily("accord_slo_objective_ratio", "The objective's target as a ratio", labels=LABELS)
        sli = GaugeMetricFamily("accord_slo_sli_ratio", "The current window's measured value as a ratio", labels=LABELS)
        remaining = GaugeMetricFamily(
            "accord_slo_error_budget_remaining_ratio", "Share of the window's error budget left", labels=LABELS
        )
        consumed = GaugeMetricFamily(
            "accord_slo_error_budget_consumed_ratio", "Share of the window's error budget used", labels=LABELS
        )
        burn = GaugeMetricFamily(
            "accord_slo_burn_rate",
            "Error budget burn rate over the fast alert pair's long window",
            labels=[*LABELS, "window"],
        )
        status = GaugeMetricFamily(
            "accord_slo_status", "1 for the objective's current status", labels=[*LABELS, "status"]
        )
        for agreement_id, service_ids, objective_id, current in rows:
            labels = [agreement_id, objective_id, ",".join(sorted(service_ids))]
            now = str(current.get("status") or "")
            for name in STATUSES:
                status.add_metric([*labels, name], 1.0 if now == name else 0.0)
            left = _ratio(current.get("budget_remaining"))
            if left is None:
                continue  # no error budget: not a ratio objective
            remaining.add_metric(labels, left)
            used = _ratio(current.get("budget_consumed"))
            if used is not None:
                consumed.add_metric(labels, used)
            for family, value in (
                (objective, _ratio(current.get("target"))),
                (sli, _ratio(current.get("value"))),
            ):
                if value is not None:
                    family.add_metric(labels, value)
            rate = _number(current.get("burn_rate"))
            if rate is not None:
                burn.add_metric([*labels, "1h"], rate)
        yield from (objective, sli, remaining, consumed, burn, status)
        yield GaugeMetricFamily(
            "accord_slo_objectives_dropped",
            f"Objectives not exported (more than {self.max_objectives})",
            value=float(dropped),
        )
