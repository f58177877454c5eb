"""`accord openslo export|import`: Accord objectives as OpenSLO v1 documents and back.

Export writes, per objective that has an OpenSLO meaning, an SLI, an SLO and — for the
objectives metrics judges with multi-window burn-rate alerts (docs/domain.md §3
"Warnings") — one AlertPolicy per burn-rate pair. Import turns OpenSLO SLOs and SLIs into
Accord objectives and refuses, naming the document and field, what has no Accord meaning.
What OpenSLO has no field for (the Accord metric and its parameters, calendar, no-data
policy, warning levels, exclusions, underpinning agreements, credit tiers, penalties,
reward) travels in `accord/…` annotations and the SLI's `metricSource.spec` (type `Accord`),
so that export → import gives the same objectives. The mapping is in the README ("Terms
files")."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
import yaml
from google.protobuf import json_format
from jsonschema import Draft202012Validator

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord_agreements import terms as rules
from accord_cli import termsfile
from accord_cli.core import app, channel, metadata
from accord_kit.timeline import calendar_window
from accord_metrics.formulas.reliability import burn_windows

openslo_app = typer.Typer(help="OpenSLO v1: export objectives, import SLOs and SLIs.", no_args_is_help=True)
app.add_typer(openslo_app, name="openslo")

SCHEMA_PATH = termsfile.SCHEMA_PATH.with_name("openslo-v1.schema.json")
API = "openslo/v1"
SOURCE = "Accord"  # the metricSource type of an SLI measured by Accord's metrics service
PREFIX = "accord/"
# The metrics whose value is a share: exported as a ratio SLI. The first set is in % (99.9),
# the second a ratio already (0.2, docs/domain.md §4 "Marketing ↔ sales").
PERCENT = {
    "METRIC_AVAILABILITY_TIME",
    "METRIC_AVAILABILITY_REQUESTS",
    "METRIC_ABANDONMENT_RATE",
    "METRIC_SERVICE_LEVEL",
    "METRIC_FIRST_CONTACT_RESOLUTION",
    "METRIC_TICKET_RESPONSE",
    "METRIC_TICKET_RESOLUTION",
    "METRIC_TASK_TURNAROUND",
    "METRIC_FOLLOW_UP_SPEED",
}
RATIO = {"METRIC_CLOSE_RATE", "METRIC_MARKETING_REVENUE_SHARE"}
# The metrics that judge each item against a threshold parameter: a thresholdMetric SLI.
THRESHOLD = {
    "METRIC_TICKET_RESPONSE": ("target_minutes", "minutes"),
    "METRIC_TICKET_RESOLUTION": ("target_minutes", "minutes"),
    "METRIC_TASK_TURNAROUND": ("target_minutes", "minutes"),
    "METRIC_FOLLOW_UP_SPEED": ("target_hours", "hours"),
    "METRIC_SERVICE_LEVEL": ("threshold_seconds", "seconds"),
}
# Burn-rate alerts: what metrics judges with them (accord_metrics.evaluation.BUDGETED).
BURNED = {"METRIC_AVAILABILITY_TIME", "METRIC_AVAILABILITY_REQUESTS"}
CALENDAR = {"WINDOW_KIND_DAY": "1d", "WINDOW_KIND_WEEK": "1w", "WINDOW_KIND_MONTH": "1M",
            "WINDOW_KIND_QUARTER": "1Q", "WINDOW_KIND_YEAR": "1Y"}  # fmt: skip
# Nominal lengths for the burn-rate windows of calendar windows (a month is scaled to its real
# length by metrics; the exported lookbacks are those of a 30-day month).
NOMINAL = {"WINDOW_KIND_DAY": 1, "WINDOW_KIND_WEEK": 7, "WINDOW_KIND_MONTH": 30,
           "WINDOW_KIND_QUARTER": 91, "WINDOW_KIND_YEAR": 365}  # fmt: skip
BUDGETING = {"BUDGETING_OCCURRENCES": "Occurrences", "BUDGETING_TIMESLICES": "Timeslices",
             "BUDGETING_RATIO_TIMESLICES": "RatioTimeslices"}  # fmt: skip
# Accord-only objective fields and the annotations that carry them.
JSON_ANNOTATIONS = {"exclusions": "exclusions", "credit_tiers": "credit-tiers", "penalties": "penalties",
                    "reward": "reward"}  # fmt: skip
LIST_ANNOTATIONS = {"warning_levels": "warning-levels", "underpinned_by": "underpinned-by"}


class RefusedError(Exception):
    """An OpenSLO document (or an objective) with no Accord meaning; the message says why."""


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _plain(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (s or "objective")[:63].rstrip("-")


def _minutes_text(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


@cache
def schema_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def schema_problems(doc: Any) -> list[str]:
    return sorted(f"{termsfile.path_of(e.absolute_path)}: {e.message}" for e in schema_validator().iter_errors(doc))


# -- export ------------------------------------------------------------------------------------------------
def _window(o: dict[str, Any], terms: dict[str, Any]) -> dict[str, Any]:
    w = o.get("window") or {}
    kind = str(w.get("kind"))
    if kind == "WINDOW_KIND_ROLLING":
        return {"duration": f"{w['rolling_days']}d", "isRolling": True}
    tz = terms.get("time_zone") or "UTC"
    start = rules.parse_instant((terms.get("term") or {}).get("effective_from")) or datetime.now(UTC)
    anchor = calendar_window(kind.removeprefix("WINDOW_KIND_"), start, tz).start.astimezone(ZoneInfo(tz))
    return {
        "duration": CALENDAR[kind],
        "isRolling": False,
        "calendar": {"startTime": anchor.strftime("%Y-%m-%d %H:%M:%S"), "timeZone": tz},
    }


def _window_days(o: dict[str, Any]) -> int:
    w = o.get("window") or {}
    return int(w["rolling_days"]) if w.get("kind") == "WINDOW_KIND_ROLLING" else NOMINAL[w["kind"]]


def exportable(o: dict[str, Any]) -> str:
    """Why an objective has no OpenSLO meaning ("" when it has one)."""
    metric, comparator = o.get("metric"), o.get("comparator")
    if metric not in PERCENT | RATIO:
        return (
            f"{metric} is one value per window compared with the target, not a share of good events or time, "
            "which is what an OpenSLO objective's target is"
        )
    target = _dec(o["target"])
    share = target.scaleb(-2) if metric in PERCENT else target
    budgeting = o.get("budgeting") or "BUDGETING_OCCURRENCES"
    if budgeting != "BUDGETING_OCCURRENCES" and metric != "METRIC_AVAILABILITY_REQUESTS":
        return f"{budgeting} has a meaning for request counts only"
    if metric in THRESHOLD and comparator != "COMPARATOR_AT_LEAST":
        return f"{metric} at most a share has no OpenSLO threshold meaning"
    good = share if comparator == "COMPARATOR_AT_LEAST" else 1 - share
    if not 0 <= good < 1:
        return f"target {o['target']} leaves no error budget: an OpenSLO target is below 1 (100 %)"
    return ""


def _source(metric: str, part: str, params: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"metric": metric, "counts": part}
    if params:
        spec["parameters"] = dict(params)
    return {"metricSource": {"type": SOURCE, "spec": spec}}


def export_objective(
    o: dict[str, Any], terms: dict[str, Any], agreement_id: str = "", name: str = ""
) -> list[dict[str, Any]]:
    """The OpenSLO documents of one exportable objective: SLI, SLO, AlertPolicies; `name` (by
    default from the objective id) names the SLO, and the SLI and policies after it."""
    metric, comparator = o["metric"], o["comparator"]
    name = name or _slug(o["objective_id"])
    params = dict(o.get("parameters") or {})
    target = _dec(o["target"])
    # Shifting the point keeps the digits as written: 99.0 % ⇄ 0.990 ⇄ 99.0 %.
    share = target.scaleb(-2) if metric in PERCENT else target
    at_least = comparator == "COMPARATOR_AT_LEAST"
    objective: dict[str, Any] = {"displayName": o.get("name") or o["objective_id"]}
    if metric in THRESHOLD:
        param, unit = THRESHOLD[metric]
        threshold = params.pop(param)
        sli_spec: dict[str, Any] = {"thresholdMetric": _source(metric, f"time of each item, in {unit}", params)}
        objective.update(op="lte", value=_dec(threshold))
    elif at_least:
        sli_spec = {"ratioMetric": {"counter": False, "good": _source(metric, "good", params),
                                    "total": _source(metric, "total", params)}}  # fmt: skip
    else:
        sli_spec = {"ratioMetric": {"counter": False, "bad": _source(metric, "bad", params),
                                    "total": _source(metric, "total", params)}}  # fmt: skip
    objective["target"] = share if at_least else 1 - share
    budgeting = o.get("budgeting") or "BUDGETING_OCCURRENCES"
    if budgeting == "BUDGETING_TIMESLICES":
        objective["timeSliceTarget"] = _dec(o["slice_target"]).scaleb(-2)
    if budgeting != "BUDGETING_OCCURRENCES":
        objective["timeSliceWindow"] = _minutes_text(int(o["slice_minutes"]))
    annotations = {f"{PREFIX}objective-id": o["objective_id"]}
    if agreement_id:
        annotations[f"{PREFIX}agreement-id"] = agreement_id
    if o.get("calendar_id"):
        annotations[f"{PREFIX}calendar-id"] = o["calendar_id"]
    if o.get("no_data"):
        annotations[f"{PREFIX}no-data"] = o["no_data"]
    for field, key in LIST_ANNOTATIONS.items():
        if o.get(field):
            annotations[PREFIX + key] = ",".join(o[field])
    for field, key in JSON_ANNOTATIONS.items():
        if o.get(field):
            annotations[PREFIX + key] = json.dumps(o[field], sort_keys=True, separators=(",", ":"))
    sli = {
        "apiVersion": API,
        "kind": "SLI",
        "metadata": {"name": f"{name[:59]}-sli", "displayName": f"{metric} ({SOURCE})"},
        "spec": {"description": f"Measured by Accord's metrics service ({metric}).", **sli_spec},
    }
    service = ((terms.get("service") or {}).get("service_ids") or [""])[0]
    slo_spec: dict[str, Any] = {
        "description": f"{terms.get('title', '')}: {o.get('name') or o['objective_id']}"[:1050],
        "service": service or (terms.get("parties") or {}).get("provider_department_id", ""),
        "indicatorRef": f"{name[:59]}-sli",
        "timeWindow": [_window(o, terms)],
        "budgetingMethod": BUDGETING[budgeting],
        "objectives": [objective],
    }
    policies = _alert_policies(o, name) if metric in BURNED and at_least else []
    if policies:
        slo_spec["alertPolicies"] = [{"alertPolicyRef": p["metadata"]["name"]} for p in policies]
    slo = {
        "apiVersion": API,
        "kind": "SLO",
        "metadata": {"name": name, "displayName": o.get("name") or o["objective_id"], "annotations": annotations},
        "spec": slo_spec,
    }
    return [sli, slo, *policies]


NOTIFICATION_TARGET = "accord-ledger"


def _alert_policies(o: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The multi-window burn-rate pairs of docs/domain.md §3 for this objective's window, one
    AlertPolicy each (an OpenSLO policy has one condition, with one lookback window: the
    pair's short window goes in an annotation)."""
    out = []
    for pair in burn_windows(timedelta(days=_window_days(o))):
        long_m, short_m = (max(1, round(w / timedelta(minutes=1))) for w in (pair.long, pair.short))
        factor = _plain(pair.factor)
        policy_name = f"{name[:50]}-burn-{factor.replace('.', '-')}x"
        out.append(
            {
                "apiVersion": API,
                "kind": "AlertPolicy",
                "metadata": {
                    "name": policy_name,
                    "annotations": {f"{PREFIX}short-window": _minutes_text(short_m)},
                },
                "spec": {
                    "description": (
                        f"Burn rate above {factor} over {_minutes_text(long_m)} and over {_minutes_text(short_m)} "
                        "(docs/domain.md §3 multi-window burn-rate alerts; windows of a 30-day month, scaled by "
                        "metrics to the real length of each window)"
                    ),
                    "alertWhenBreaching": True,
                    "alertWhenResolved": False,
                    "alertWhenNoData": False,
                    "conditions": [
                        {
                            "kind": "AlertCondition",
                            "metadata": {"name": f"{policy_name}-condition"},
                            "spec": {
                                "severity": "page" if pair.factor >= 6 else "ticket",
                                "condition": {
                                    "kind": "burnrate",
                                    "op": "gt",
                                    "threshold": pair.factor,
                                    "lookbackWindow": _minutes_text(long_m),
                                    "alertAfter": "0m",
                                },
                            },
                        }
                    ],
                    "notificationTargets": [{"targetRef": NOTIFICATION_TARGET}],
                },
            }
        )
    return out


def notification_target() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AlertNotificationTarget",
        "metadata": {"name": NOTIFICATION_TARGET},
        "spec": {
            "target": "accord",
            "description": "Accord records each burn-rate alert as an event of the objective's window (metrics).",
        },
    }


def export_terms(terms: dict[str, Any], agreement_id: str = "") -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The documents per objective (by SLO name), and one line per objective not exported."""
    out: dict[str, list[dict[str, Any]]] = {}
    skipped = []
    for o in terms.get("objectives") or []:
        why = exportable(o)
        if why:
            skipped.append(f"objective {o['objective_id']!r} not exported: {why}")
            continue
        base = name = _slug(o["objective_id"])
        n = 2
        while name in out or name == NOTIFICATION_TARGET:  # ids that differ only in case or '_'
            name, n = f"{base[:50]}-{n}", n + 1
        out[name] = export_objective(o, terms, agreement_id, name)
    return out, skipped


def canonical_terms(doc: Any) -> dict[str, Any]:
    """A terms document as the agreements service stores it (its canonical JSON form)."""
    message = termsfile.to_message(doc)
    return rules.normalise(json_format.MessageToDict(message, preserving_proto_field_name=True))


# -- import ------------------------------------------------------------------------------------------------
DURATION = re.compile(r"^([0-9]+)([mhdwMQY])$")


def _number(d: Decimal) -> Decimal:
    """A decimal in plain notation (its digits as written), for the terms file as a YAML number."""
    return Decimal(format(d, "f"))


def _percent(share: Decimal) -> Decimal:
    return _number(share.scaleb(2))


def _rolling_days(duration: str, where: str) -> int:
    m = DURATION.match(duration)
    n, unit = (int(m.group(1)), m.group(2)) if m else (0, "")
    days = {"d": n, "w": 7 * n}.get(unit)
    if unit == "h" and n % 24 == 0:
        days = n // 24
    if days is None or not 1 <= days <= 366:
        raise RefusedError(
            f"{where}: a rolling window of {duration} has no Accord meaning: Accord's rolling windows are "
            "1 to 366 whole days (e.g. 28d, 4w)"
        )
    return days


def _calendar_kind(window: dict[str, Any], where: str) -> tuple[str, str]:
    duration = window["duration"]
    kinds = {v: k for k, v in CALENDAR.items()}
    if duration not in kinds:
        hint = " (m is minutes; a month is 1M)" if duration.endswith("m") else ""
        raise RefusedError(
            f"{where}.duration: a calendar-aligned window of {duration}{hint} has no Accord meaning: Accord's "
            "calendar windows are 1d, 1w, 1M, 1Q or 1Y"
        )
    kind = kinds[duration]
    calendar = window.get("calendar") or {}
    tz = calendar.get("timeZone") or ""
    if tz and not rules.valid_time_zone(tz):
        raise RefusedError(f"{where}.calendar.timeZone: unknown IANA time zone {tz!r}")
    start_text = str(calendar.get("startTime") or "")
    if start_text:
        try:
            start = datetime.fromisoformat(start_text)
        except ValueError:
            raise RefusedError(f"{where}.calendar.startTime: {start_text!r} is not a date with a time") from None
        unit = kind.removeprefix("WINDOW_KIND_")
        zone = ZoneInfo(tz or "UTC")
        aligned = calendar_window(unit, start.replace(tzinfo=zone), tz or "UTC").start.astimezone(zone)
        if start.replace(tzinfo=None) != aligned.replace(tzinfo=None):
            first = {"DAY": "a day", "WEEK": "a Monday", "MONTH": "a month's first day",
                     "QUARTER": "a quarter's first day", "YEAR": "1 January"}[unit]  # fmt: skip
            raise RefusedError(
                f"{where}.calendar.startTime: {start_text} is not the start of a {unit.lower()}: Accord's calendar "
                f"windows begin at midnight on {first} in the agreement's time zone"
            )
    return kind, tz


def _slice_minutes(value: Any, where: str) -> int:
    if not isinstance(value, str):
        minutes = _dec(value)  # a number: minutes
    else:
        m = DURATION.match(value)
        unit_minutes = {"m": 1, "h": 60, "d": 1440}.get(m.group(2) if m else "")
        if m is None or unit_minutes is None:
            raise RefusedError(f"{where}: a time slice of {value} has no Accord meaning (1 to 1440 minutes)")
        minutes = Decimal(int(m.group(1)) * unit_minutes)
    if minutes != minutes.to_integral_value() or not 1 <= minutes <= 1440:
        raise RefusedError(f"{where}: a time slice of {value} has no Accord meaning (1 to 1440 whole minutes)")
    return int(minutes)


def _sli_metric(sli: dict[str, Any], where: str) -> tuple[str, dict[str, str], str]:
    """(Accord metric, its parameters, "good" | "bad" | "threshold") of an SLI spec."""
    spec = sli.get("spec") or {}
    if "ratioMetric" in spec:
        ratio = spec["ratioMetric"]
        if "raw" in ratio:
            raise RefusedError(
                f"{where}.ratioMetric.raw: a precomputed ratio has no Accord meaning: Accord computes its "
                "ratios from the counts (give good or bad, and total)"
            )
        part = "good" if "good" in ratio else "bad"
        source = (ratio[part].get("metricSource") or {}) if isinstance(ratio[part], dict) else {}
        if source.get("type") != SOURCE:  # any other source: requests; the target is the good share either way
            return "METRIC_AVAILABILITY_REQUESTS", {}, "good"
    else:
        source = (spec.get("thresholdMetric") or {}).get("metricSource") or {}
        part = "threshold"
        if source.get("type") != SOURCE:
            raise RefusedError(
                f"{where}.thresholdMetric: a threshold on {source.get('type') or 'an outside'} values has no Accord "
                "meaning: Accord's thresholds are its own (ticket response and resolution, task turnaround, "
                f"follow-up speed, the contact centre's service level; metricSource type {SOURCE})"
            )
    accord = source.get("spec") or {}
    metric = str(accord.get("metric") or "")
    params = {str(k): v if isinstance(v, str) else _plain(_dec(v)) for k, v in (accord.get("parameters") or {}).items()}
    allowed = set(THRESHOLD) if part == "threshold" else (PERCENT | RATIO) - set(THRESHOLD)
    if metric not in allowed:
        raise RefusedError(
            f"{where}: metricSource.spec.metric {metric!r} is not one of {', '.join(sorted(allowed))} "
            f"(the Accord metrics a {'thresholdMetric' if part == 'threshold' else 'ratioMetric'} can carry)"
        )
    return metric, params, part


def _annotations(slo: dict[str, Any], o: dict[str, Any]) -> None:
    notes = (slo.get("metadata") or {}).get("annotations") or {}
    for key, value in notes.items():
        if key == f"{PREFIX}calendar-id":
            o["calendar_id"] = value
        elif key == f"{PREFIX}no-data":
            o["no_data"] = value
    for field, key in LIST_ANNOTATIONS.items():
        if notes.get(PREFIX + key):
            o[field] = [x.strip() for x in notes[PREFIX + key].split(",") if x.strip()]
    for field, key in JSON_ANNOTATIONS.items():
        if notes.get(PREFIX + key):
            try:
                o[field] = json.loads(notes[PREFIX + key])
            except json.JSONDecodeError as e:
                raise RefusedError(f"metadata.annotations.{PREFIX}{key}: not JSON ({e.msg})") from None


def import_slo(slo: dict[str, Any], slis: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The Accord objectives of one SLO document, and the time zone its calendar names.
    RefusedError names the field (from `spec`, or the SLI it refers to) and why."""
    spec = slo["spec"]
    name = slo["metadata"]["name"]
    for i, obj in enumerate(spec["objectives"]):
        if "indicator" in obj or "indicatorRef" in obj:
            raise RefusedError(
                f"spec.objectives[{i}]: a composite SLO has no Accord meaning: an Accord objective "
                "measures one metric (export each part as its own SLO)"
            )
    if "indicator" in spec:
        sli = spec["indicator"]
        sli_where = "spec.indicator.spec"
    elif spec.get("indicatorRef") in slis:
        sli = slis[spec["indicatorRef"]]
        sli_where = f"(SLI {spec['indicatorRef']}) spec"
    else:
        ref = spec.get("indicatorRef")
        raise RefusedError(
            f"spec.indicatorRef: no SLI named {ref!r} among the documents read"
            if ref
            else "spec: neither indicator nor indicatorRef"
        )
    metric, params, part = _sli_metric(sli, sli_where)
    if not spec.get("timeWindow"):
        raise RefusedError("spec.timeWindow: is required: an Accord objective is judged per window")
    tw = spec["timeWindow"][0]
    tw_where = "spec.timeWindow[0]"
    tz = ""
    if tw.get("isRolling") is True:
        window: dict[str, Any] = {
            "kind": "WINDOW_KIND_ROLLING",
            "rolling_days": _rolling_days(tw["duration"], tw_where),
        }
    else:
        kind, tz = _calendar_kind(tw, tw_where)
        window = {"kind": kind}
    budgeting = {v: k for k, v in BUDGETING.items()}[spec["budgetingMethod"]]
    if budgeting != "BUDGETING_OCCURRENCES" and metric != "METRIC_AVAILABILITY_REQUESTS":
        raise RefusedError(
            f"spec.budgetingMethod: {spec['budgetingMethod']} has no Accord meaning for {metric}: "
            "Accord counts time slices of requests only (METRIC_AVAILABILITY_REQUESTS)"
        )
    notes = (slo.get("metadata") or {}).get("annotations") or {}
    out = []
    for i, obj in enumerate(spec["objectives"]):
        o_where = f"spec.objectives[{i}]"
        share = _dec(obj["target"]) if "target" in obj else _dec(obj["targetPercent"]).scaleb(-2)
        objective: dict[str, Any] = {
            "objective_id": notes.get(f"{PREFIX}objective-id")
            or (name if len(spec["objectives"]) == 1 else f"{name}-{i + 1}"),
            "name": obj.get("displayName") or (slo["metadata"].get("displayName") or name),
            "metric": metric,
        }
        objective_params: dict[str, Any] = dict(params)
        if part == "threshold":
            param, _unit = THRESHOLD[metric]
            if obj.get("op") != "lte" or "value" not in obj:
                raise RefusedError(
                    f"{o_where}.op: {obj.get('op')!r} has no Accord meaning for {metric}: an item meets its "
                    "target when its time is at most the threshold (op lte with a value)"
                )
            objective_params[param] = _number(_dec(obj["value"]))
        if objective_params:
            objective["parameters"] = objective_params
        # An OpenSLO target is the share of good; an Accord objective on `bad` counts the bad share.
        at_most = part == "bad"
        value = 1 - share if at_most else share
        objective.update(
            comparator="COMPARATOR_AT_MOST" if at_most else "COMPARATOR_AT_LEAST",
            target=_number(value if metric in RATIO else value.scaleb(2)),
            window=window,
            calendar_id=rules.CALENDAR_24X7,
        )
        objective["budgeting"] = budgeting
        if budgeting != "BUDGETING_OCCURRENCES":
            if "timeSliceWindow" not in obj:
                raise RefusedError(f"{o_where}.timeSliceWindow: is required with {spec['budgetingMethod']}")
            objective["slice_minutes"] = _slice_minutes(obj["timeSliceWindow"], f"{o_where}.timeSliceWindow")
        if budgeting == "BUDGETING_TIMESLICES":
            if "timeSliceTarget" not in obj:
                raise RefusedError(f"{o_where}.timeSliceTarget: is required with Timeslices")
            objective["slice_target"] = _percent(_dec(obj["timeSliceTarget"]))
        _annotations(slo, objective)
        out.append(objective)
    return out, tz


def _today(tz: str) -> str:
    local = datetime.now(ZoneInfo(tz))
    return datetime.combine(local.date(), datetime.min.time(), ZoneInfo(tz)).isoformat()


def import_documents(
    docs: list[tuple[str, int, Any]], options: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """Terms from OpenSLO documents given as (file, index, document): (terms or None,
    problems, notes). Problems are one line each, naming the file, the document and the field."""
    problems: list[str] = []
    notes: list[str] = []
    slis: dict[str, dict[str, Any]] = {}
    slos: list[tuple[str, dict[str, Any]]] = []
    for file, n, doc in docs:
        label = f"{file}: document {n + 1}"
        if not isinstance(doc, dict):
            problems.append(f"{label}: not an OpenSLO document (a mapping with apiVersion {API})")
            continue
        label = f"{file}: {doc.get('kind', 'document')} {((doc.get('metadata') or {}).get('name')) or n + 1}"
        found = schema_problems(doc)
        if found:
            problems += [f"{label}: {p}" for p in found]
        elif doc["kind"] == "SLI":
            slis[doc["metadata"]["name"]] = doc
        elif doc["kind"] == "SLO":
            slos.append((label, doc))
        else:
            notes.append(
                f"{label}: skipped: Accord's alerts are the burn-rate pairs and budget warnings of docs/domain.md §3"
                if doc["kind"].startswith("Alert")
                else f"{label}: skipped: a {doc['kind']} has no part in Accord's terms"
            )
    objectives: list[dict[str, Any]] = []
    zones: set[str] = set()
    services: list[str] = []
    for label, slo in slos:
        try:
            found_objectives, tz = import_slo(slo, slis)
        except RefusedError as e:
            problems.append(f"{label}: {e}")
            continue
        objectives += found_objectives
        if tz:
            zones.add(tz)
        service = str(slo["spec"].get("service") or "")
        if service and service not in services:
            services.append(service)
    if not slos and not problems:
        problems.append("no SLO among the documents: nothing to import")
    tz = options.get("time_zone") or ""
    if not tz and len(zones) > 1:
        problems.append(
            f"the SLOs' calendars name different time zones ({', '.join(sorted(zones))}): an agreement has one "
            "(give --time-zone)"
        )
    if problems:
        return None, problems, notes
    tz = tz or (zones.pop() if zones else "UTC")
    service_ids = list(options.get("service") or services)
    level = options.get("level") or ("SERVICE" if service_ids else "CUSTOMER")
    names = ", ".join(dict.fromkeys(str(s["metadata"]["name"]) for _, s in slos))
    terms: dict[str, Any] = {
        "title": options.get("title") or f"Imported from OpenSLO: {names}"[:200],
        "kind": f"AGREEMENT_KIND_{options.get('kind') or 'SLA'}",
        "level": f"SCOPE_LEVEL_{level}",
        "parties": {
            "provider_department_id": options.get("provider") or "",
            "customer_department_id": options.get("customer") or "",
        },
    }
    if service_ids:
        terms["service"] = {"service_ids": service_ids}
    terms.update(
        time_zone=tz,
        objectives=objectives,
        term={"effective_from": options.get("effective_from") or _today(tz)},
    )
    return terms, [], notes


def _read_documents(files: list[Path]) -> list[tuple[str, int, Any]]:
    docs = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            loaded = list(yaml.load_all(text, Loader=termsfile._Loader))
        except (OSError, UnicodeDecodeError) as e:
            print(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            raise typer.Exit(2) from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            print(f"{path}: not valid YAML: {getattr(e, 'problem', None) or e}{where}", file=sys.stderr)
            raise typer.Exit(2) from None
        docs += [(str(path), i, d) for i, d in enumerate(loaded) if d is not None]
    return docs


# -- the commands --------------------------------------------------------------------------------------------
@openslo_app.command("export")
def export_command(
    source: Annotated[str, typer.Argument(help="An agreement id (its effective terms), or a terms file")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for one YAML file per objective")] = None,
) -> None:
    """Write OpenSLO v1 documents for the objectives: SLI, SLO and burn-rate AlertPolicies.

    Objectives with no OpenSLO meaning (a value per window such as MTTR) are named on stderr
    and left out; exit 5 if none is left."""
    path = Path(source)
    if path.exists() or source.endswith((".yaml", ".yml", ".json")):
        try:
            doc = termsfile.load(path)
        except termsfile.UnreadableError as e:
            print(f"{path}: {e}", file=sys.stderr)
            raise typer.Exit(2) from None
        found = termsfile.check(doc)
        if found:
            for line in found:
                print(f"{path}: {line}", file=sys.stderr)
            raise typer.Exit(5)
        terms, agreement_id = canonical_terms(doc), ""
    else:
        with channel("agreements") as ch:
            r = apb_grpc.AgreementsServiceStub(ch).GetAgreement(
                apb.GetAgreementRequest(agreement_id=source, effective_terms=True), metadata=metadata()
            )
        effective = r.agreement.effective_terms if r.agreement.HasField("effective_terms") else r.agreement.terms
        terms = json_format.MessageToDict(effective, preserving_proto_field_name=True)
        agreement_id = source
    by_objective, skipped = export_terms(terms, agreement_id)
    for line in skipped:
        print(line, file=sys.stderr)
    if not by_objective:
        print("nothing to export: no objective has an OpenSLO meaning", file=sys.stderr)
        raise typer.Exit(5)
    alerting = any(d["kind"] == "AlertPolicy" for docs in by_objective.values() for d in docs)
    files = dict(by_objective)
    if alerting:
        files[NOTIFICATION_TARGET] = [notification_target()]
    for docs in files.values():
        for d in docs:
            problems = schema_problems(d)
            if problems:  # a bug here, never the user's: say so rather than write it
                raise RuntimeError(f"exported {d['kind']} {d['metadata']['name']} is not OpenSLO v1: {problems}")
    if out is None:
        print(termsfile.dump_yaml_all([d for docs in files.values() for d in docs]), end="")
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, docs in files.items():
        (out / f"{name}.yaml").write_text(termsfile.dump_yaml_all(docs), encoding="utf-8")
        print(out / f"{name}.yaml")


@openslo_app.command("import")
def import_command(
    files: Annotated[list[Path], typer.Argument(help="OpenSLO v1 YAML files (SLO, SLI; others are skipped)")],
    out: Annotated[Path, typer.Option("--out", help="The terms file to write")],
    provider: Annotated[str, typer.Option(help="Provider department id")],
    customer: Annotated[str, typer.Option(help="Customer department id")],
    service: Annotated[list[str] | None, typer.Option(help="Service id (repeat); default: the SLOs' services")] = None,
    title: Annotated[str, typer.Option(help="Agreement title")] = "",
    kind: Annotated[str, typer.Option(help="SLA, OLA or UNDERPINNING_CONTRACT")] = "SLA",
    level: Annotated[str, typer.Option(help="CORPORATE, CUSTOMER or SERVICE (default: SERVICE with services)")] = "",
    time_zone: Annotated[str, typer.Option(help="IANA time zone (default: the SLOs' calendar, else UTC)")] = "",
    effective_from: Annotated[str, typer.Option(help="RFC 3339 instant (default: today 00:00)")] = "",
) -> None:
    """Turn OpenSLO v1 SLOs and SLIs into the objectives of a terms file.

    What has no Accord meaning is refused, one line per problem naming the file, the
    document and the field; nothing is written then (exit 5)."""
    options = {"provider": provider, "customer": customer, "service": service or [], "title": title,
               "kind": kind.upper(), "level": level.upper(), "time_zone": time_zone,
               "effective_from": effective_from}  # fmt: skip
    terms, problems, notes = import_documents(_read_documents(files), options)
    for line in notes:
        print(line, file=sys.stderr)
    if terms is not None:
        problems = [f"{out}: {line}" for line in termsfile.check(terms)]
    if problems or terms is None:
        for line in problems:
            print(line)
        raise typer.Exit(5)
    header = "# Imported from OpenSLO v1 by `accord openslo import` ({}); check with `accord validate`.\n"
    out.write_text(header.format(", ".join(str(f) for f in files)) + termsfile.dump_yaml(terms), encoding="utf-8")
    print(f"{out}: {len(terms['objectives'])} objectives")
