"""Agreement terms as a value: validation with field-level messages, the merge of a parent
chain into effective terms, and the difference between two versions.

Terms are held in the canonical JSON form of `accord.agreements.v1.AgreementTerms`
(field names as in the proto, enums as their names, decimals as strings, instants as
RFC 3339 strings), so that stored events are plain, upcastable data and the domain needs
no protobuf. See docs/domain.md §1, §3 and §5."""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from accord.agreements.v1 import terms_pb2

TermsDict = dict[str, Any]

KINDS = ("AGREEMENT_KIND_SLA", "AGREEMENT_KIND_OLA", "AGREEMENT_KIND_UNDERPINNING_CONTRACT")
UNDERPINNING_KINDS = ("AGREEMENT_KIND_OLA", "AGREEMENT_KIND_UNDERPINNING_CONTRACT")
LEVELS = ("SCOPE_LEVEL_CORPORATE", "SCOPE_LEVEL_CUSTOMER", "SCOPE_LEVEL_SERVICE")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
PERCENT_METRICS = {
    "METRIC_AVAILABILITY_TIME",
    "METRIC_AVAILABILITY_REQUESTS",
    "METRIC_ABANDONMENT_RATE",
    "METRIC_SERVICE_LEVEL",
    "METRIC_FIRST_CONTACT_RESOLUTION",
    "METRIC_TICKET_RESPONSE",
    "METRIC_TICKET_RESOLUTION",
    "METRIC_TASK_TURNAROUND",
    "METRIC_CLOSE_RATE",
    "METRIC_MARKETING_REVENUE_SHARE",
    "METRIC_FOLLOW_UP_SPEED",
}
OTHER_METRICS = {
    "METRIC_MTTR",
    "METRIC_MTBF",
    "METRIC_ASA",
    "METRIC_AVERAGE_HANDLE_TIME",
    "METRIC_LEADS_NEEDED",
    "METRIC_DEAL_SIZE",
    "METRIC_FOLLOW_UP_DEPTH",
}
SERVICE_LEVEL_VARIANTS = (
    "ANSWERED_OVER_OFFERED",
    "ANSWERED_OVER_ANSWERED",
    "ABANDONS_NEUTRAL",
    "ABANDONS_SUCCESS",
    "SHORT_ABANDONS_SUCCESS",
)
WINDOWS = (
    "WINDOW_KIND_DAY",
    "WINDOW_KIND_WEEK",
    "WINDOW_KIND_MONTH",
    "WINDOW_KIND_QUARTER",
    "WINDOW_KIND_YEAR",
    "WINDOW_KIND_ROLLING",
)
BUDGETING = ("BUDGETING_OCCURRENCES", "BUDGETING_TIMESLICES", "BUDGETING_RATIO_TIMESLICES")
NO_DATA = ("NO_DATA_POLICY_NOT_COUNTED", "NO_DATA_POLICY_COUNTS_AS_MET", "NO_DATA_POLICY_COUNTS_AS_BREACHED")
COMPARATORS = ("COMPARATOR_AT_LEAST", "COMPARATOR_AT_MOST")
STACKING = ("STACKING_RULE_STACK", "STACKING_RULE_HIGHEST_APPLIES")
FEE_PERIODS = ("FEE_PERIOD_MONTH", "FEE_PERIOD_QUARTER", "FEE_PERIOD_YEAR")
PROPOSERS = ("PROPOSER_EITHER_PARTY", "PROPOSER_PROVIDER", "PROPOSER_CUSTOMER")
PRIORITIES = ("P1", "P2", "P3", "P4")
CALENDAR_24X7 = "24x7"
# ISO 4217 currencies and their minor units (the ones an organisation's departments use).
CURRENCIES = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2,
    "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0, "CNY": 2, "INR": 2, "SGD": 2, "HKD": 2, "ZAR": 2, "BRL": 2,
    "MXN": 2, "KRW": 0, "ISK": 0, "BHD": 3, "KWD": 3,
}  # fmt: skip
# Decimals are written in plain notation with at most 18 digits before and after the point.
MAX_NUMBER = Decimal("1E+18")
MAX_PLACES = 18
OBJECTIVE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_TEXT = 4000


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class TermsInvalidError(ValueError):
    """The terms break one or more rules; every broken rule is named with its field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def dec(value: Any) -> Decimal | None:
    """A finite decimal from a string, or None."""
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _in_bounds(d: Decimal) -> bool:
    exponent = d.as_tuple().exponent
    return abs(d) < MAX_NUMBER and isinstance(exponent, int) and exponent >= -MAX_PLACES


def plain(value: Any) -> Any:
    """A decimal written in exponent form ("2E+1"), with a sign or spaces ("+20 "), or given
    as a JSON number (20, 99.9) → its plain string ("20", "99.9"); anything that is not a
    finite decimal of at most 18 digits before and after the point is returned unchanged,
    for `validate` to refuse with its field."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return value
    d = dec(value)
    if d is None or not _in_bounds(d):
        return value
    return format(d.copy_abs() if d.is_zero() else d, "f")  # "-0" → "0"


def parse_instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else None


_ZONES: set[str] | None = None


def valid_time_zone(name: str) -> bool:
    global _ZONES
    if _ZONES is None:
        _ZONES = set(available_timezones())
    if name in _ZONES:
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class _Checker:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def text(self, field: str, value: Any, *, required: bool = False, max_len: int = MAX_TEXT) -> None:
        if value is None or value == "":
            if required:
                self.fail(field, "is required")
            return
        if not isinstance(value, str) or len(value) > max_len:
            self.fail(field, f"must be text of at most {max_len} characters")

    def enum(self, field: str, value: Any, allowed: tuple[str, ...] | set[str], *, required: bool = True) -> None:
        if value in (None, "") or str(value).endswith("_UNSPECIFIED"):
            if required:
                self.fail(field, f"is required (one of {', '.join(sorted(allowed))})")
            return
        if value not in allowed:
            self.fail(field, f"must be one of {', '.join(sorted(allowed))}, not {value!r}")

    def decimal(
        self,
        field: str,
        value: Any,
        *,
        required: bool = False,
        lo: Decimal | None = None,
        hi: Decimal | None = None,
        lo_open: bool = False,
        unit: str = "",
    ) -> Decimal | None:
        if value in (None, ""):
            if required:
                self.fail(field, "is required")
            return None
        what = f"a decimal number of {unit}" if unit and unit != "money" else "a decimal number"
        d = dec(value) if isinstance(value, str) else None
        if d is None:
            self.fail(field, f'must be {what} as a string of plain digits (e.g. "12.5"), not {value!r}')
            return None
        if not _in_bounds(d):
            self.fail(field, f"{value!r} is out of range: at most 18 digits before and 18 after the decimal point")
            return None
        if format(d, "f") != value:
            self.fail(field, f"must be written in plain notation ({format(d, 'f')!r}), not {value!r}")
            return None
        if lo is not None and (d < lo or (lo_open and d == lo)):
            self.fail(field, f"must be {'greater than' if lo_open else 'at least'} {lo} (got {value})")
        if hi is not None and d > hi:
            self.fail(field, f"must be at most {hi} (got {value})")
        return d

    def whole(self, field: str, value: Any, lo: int, hi: int) -> None:
        try:
            n = int(value or 0)
        except (TypeError, ValueError):
            self.fail(field, f"must be a whole number, not {value!r}")
            return
        if not lo <= n <= hi:
            self.fail(field, f"must be between {lo} and {hi} (got {n})")


HUNDRED = Decimal(100)
ZERO = Decimal(0)


def validate(terms: TermsDict) -> None:
    """Check every field rule that needs nothing but the terms themselves; raise
    TermsInvalidError naming every broken rule. (Rules that need other records, such as
    registered departments or the underpinning agreements, are the application's.)"""
    c = _Checker()
    c.text("title", terms.get("title"), required=True, max_len=200)
    c.enum("kind", terms.get("kind"), KINDS)
    c.enum("level", terms.get("level"), LEVELS)
    parent = terms.get("parent_agreement_id") or ""
    if parent and terms.get("level") == "SCOPE_LEVEL_CORPORATE":
        c.fail("parent_agreement_id", "a corporate-level agreement has no parent")
    parties = terms.get("parties") or {}
    provider, customer = parties.get("provider_department_id", ""), parties.get("customer_department_id", "")
    c.text("parties.provider_department_id", provider, required=True, max_len=100)
    c.text("parties.customer_department_id", customer, required=True, max_len=100)
    if provider and provider == customer:
        c.fail("parties", f"provider and customer must differ (both are {provider!r})")
    service = terms.get("service") or {}
    ids = service.get("service_ids") or []
    if len(set(ids)) != len(ids):
        c.fail("service.service_ids", "lists a service twice")
    if terms.get("level") == "SCOPE_LEVEL_SERVICE" and not ids:
        c.fail("service.service_ids", "a service-level agreement names at least one service")
    for f in ("hours_of_coverage", "delivered", "description"):
        c.text(f"service.{f}", service.get(f))
    tz = terms.get("time_zone") or ""
    if not tz:
        c.fail("time_zone", "is required (an IANA name such as Europe/Amsterdam)")
    elif not valid_time_zone(tz):
        c.fail("time_zone", f"unknown IANA time zone {tz!r}")
    _validate_objectives(c, terms.get("objectives") or [])
    _validate_support(c, terms.get("support") or {})
    _validate_consequences(c, terms.get("consequences") or {})
    _validate_fee(c, terms.get("fee") or {})
    _validate_term(c, terms.get("term") or {})
    amendment = terms.get("amendment") or {}
    c.enum("amendment.who_may_propose", amendment.get("who_may_propose"), PROPOSERS, required=False)
    c.whole("amendment.notice_days", amendment.get("notice_days", 0), 0, 3650)
    if c.errors:
        raise TermsInvalidError(c.errors)


def _validate_objectives(c: _Checker, objectives: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, o in enumerate(objectives):
        first = len(c.errors)
        _validate_objective(c, i, o, seen)
        oid = o.get("objective_id") or ""
        if OBJECTIVE_ID.match(oid):  # name the objective as well as its place
            c.errors[first:] = [
                e if e.field.endswith(".objective_id") else FieldError(e.field, f"{e.message} (objective {oid!r})")
                for e in c.errors[first:]
            ]


def _validate_objective(c: _Checker, i: int, o: dict[str, Any], seen: set[str]) -> None:
    p = f"objectives[{i}]"
    oid = o.get("objective_id") or ""
    if not OBJECTIVE_ID.match(oid):
        c.fail(f"{p}.objective_id", "is required: letters, digits, '-' or '_', at most 64")
    elif oid in seen:
        c.fail(f"{p}.objective_id", f"{oid!r} is used twice")
    seen.add(oid)
    c.text(f"{p}.name", o.get("name"), max_len=200)
    metric = o.get("metric")
    c.enum(f"{p}.metric", metric, PERCENT_METRICS | OTHER_METRICS)
    c.enum(f"{p}.comparator", o.get("comparator"), COMPARATORS)
    percent = metric in PERCENT_METRICS
    target = c.decimal(f"{p}.target", o.get("target"), required=True, lo=ZERO, hi=HUNDRED if percent else None)
    window = o.get("window") or {}
    c.enum(f"{p}.window.kind", window.get("kind"), WINDOWS)
    if window.get("kind") == "WINDOW_KIND_ROLLING":
        c.whole(f"{p}.window.rolling_days", window.get("rolling_days", 0), 1, 366)
    elif window.get("rolling_days"):
        c.fail(f"{p}.window.rolling_days", "is only for rolling windows")
    if not o.get("calendar_id"):
        c.fail(f"{p}.calendar_id", f"is required ({CALENDAR_24X7!r} or a registered calendar)")
    budgeting = o.get("budgeting") or "BUDGETING_OCCURRENCES"
    c.enum(f"{p}.budgeting", budgeting, BUDGETING)
    if budgeting in ("BUDGETING_TIMESLICES", "BUDGETING_RATIO_TIMESLICES"):
        c.whole(f"{p}.slice_minutes", o.get("slice_minutes", 0), 1, 1440)
    if budgeting == "BUDGETING_TIMESLICES":
        c.decimal(f"{p}.slice_target", o.get("slice_target"), required=True, lo=ZERO, hi=HUNDRED)
    for j, ex in enumerate(o.get("exclusions") or []):
        start, end = parse_instant(ex.get("start")), parse_instant(ex.get("end"))
        if start is None or end is None:
            c.fail(f"{p}.exclusions[{j}]", "start and end are required instants")
        elif end <= start:
            c.fail(f"{p}.exclusions[{j}].end", "must be after start")
    levels = [
        c.decimal(f"{p}.warning_levels[{j}]", w, lo=ZERO, hi=HUNDRED, lo_open=True)
        for j, w in enumerate(o.get("warning_levels") or [])
    ]
    known = [lvl for lvl in levels if lvl is not None]
    if known != sorted(set(known)):
        c.fail(f"{p}.warning_levels", "must be ascending without repeats")
    c.enum(f"{p}.no_data", o.get("no_data"), NO_DATA, required=False)
    _validate_parameters(c, p, metric, o.get("parameters") or {})
    _validate_tiers(c, p, o.get("credit_tiers") or [])
    for j, pen in enumerate(o.get("penalties") or []):
        q = f"{p}.penalties[{j}]"
        c.enum(f"{q}.kind", pen.get("kind"), ("PENALTY_KIND_FIXED", "PENALTY_KIND_PER_UNIT"))
        c.decimal(f"{q}.amount", pen.get("amount"), required=True, lo=ZERO)
        if pen.get("kind") == "PENALTY_KIND_PER_UNIT":
            c.text(f"{q}.unit", pen.get("unit"), required=True, max_len=40)
            c.decimal(f"{q}.grace_units", pen.get("grace_units"), lo=ZERO)
    reward = o.get("reward") or {}
    if reward.get("stretch_target") or reward.get("amount"):
        stretch = c.decimal(f"{p}.reward.stretch_target", reward.get("stretch_target"), required=True, lo=ZERO)
        c.decimal(f"{p}.reward.amount", reward.get("amount"), required=True, lo=ZERO)
        if stretch is not None and target is not None:
            better = stretch > target if o.get("comparator") == "COMPARATOR_AT_LEAST" else stretch < target
            if not better:
                c.fail(f"{p}.reward.stretch_target", f"must be better than the target {target}")
    for j, ref in enumerate(o.get("underpinned_by") or []):
        if not ref:
            c.fail(f"{p}.underpinned_by[{j}]", "must name an agreement")


@dataclass(frozen=True)
class Param:
    """One declared objective parameter: its type, unit, range and default (terms.proto
    documents the same table). `lo_open` excludes the lower bound."""

    name: str
    type: str  # "decimal", "integer" or "enum"
    unit: str = ""
    lo: Decimal | None = None
    hi: Decimal | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    required: bool = False
    default: str = ""


def _d(value: str) -> Decimal:
    return Decimal(value)


_NOTICE = Param("maintenance_notice_hours", "decimal", "hours", _d("0"), _d("8760"), default="24")
_SHORT = Param("short_abandon_seconds", "decimal", "seconds", _d("0"), _d("3600"), lo_open=True)
_TARGET_MINUTES = Param("target_minutes", "decimal", "minutes", _d("0"), _d("525600"), lo_open=True, required=True)
# Every parameter metrics reads, per metric (docs/domain.md §4). A metric that is not listed takes none.
PARAMETERS: dict[str, tuple[Param, ...]] = {
    "METRIC_AVAILABILITY_TIME": (
        Param("min_outage_seconds", "decimal", "seconds", _d("0"), _d("86400"), default="0"),
        _NOTICE,
    ),
    "METRIC_AVAILABILITY_REQUESTS": (_NOTICE,),
    "METRIC_MTTR": (
        Param("r", "enum", choices=("REPAIR", "RESTORE", "RESOLVE", "RESPOND"), default="RESTORE"),
        _NOTICE,
    ),
    "METRIC_MTBF": (_NOTICE,),
    "METRIC_ABANDONMENT_RATE": (_SHORT,),
    "METRIC_SERVICE_LEVEL": (
        Param("variant", "enum", choices=SERVICE_LEVEL_VARIANTS, required=True),
        Param("threshold_seconds", "decimal", "seconds", _d("0"), _d("3600"), lo_open=True, required=True),
        _SHORT,
    ),
    "METRIC_FIRST_CONTACT_RESOLUTION": (
        Param("method", "enum", choices=("FLAGGED", "REPEAT_CONTACT"), default="FLAGGED"),
        Param("repeat_window_days", "decimal", "days", _d("0"), _d("366"), lo_open=True, default="7"),
    ),
    "METRIC_TICKET_RESPONSE": (Param("priority", "enum", choices=PRIORITIES, required=True), _TARGET_MINUTES),
    "METRIC_TICKET_RESOLUTION": (Param("priority", "enum", choices=PRIORITIES, required=True), _TARGET_MINUTES),
    "METRIC_TASK_TURNAROUND": (_TARGET_MINUTES,),
    "METRIC_LEADS_NEEDED": (
        Param("sales_target", "decimal", "money", _d("0"), MAX_NUMBER, lo_open=True, required=True),
        Param("marketing_revenue_share", "decimal", "fraction", _d("0"), _d("1"), required=True),
        Param("average_deal_size", "decimal", "money", _d("0"), MAX_NUMBER, lo_open=True, required=True),
        Param("close_rate", "decimal", "fraction", _d("0"), _d("1"), lo_open=True, required=True),
    ),
    "METRIC_FOLLOW_UP_SPEED": (
        Param("target_hours", "decimal", "hours", _d("0"), _d("8760"), lo_open=True, required=True),
    ),
    "METRIC_FOLLOW_UP_DEPTH": (Param("window_days", "integer", "days", _d("1"), _d("366"), default="14"),),
}


# The objective's own fields (terms.proto `Objective`), named in a refusal of one given as a parameter.
_OBJECTIVE_FIELDS = frozenset(terms_pb2.Objective.DESCRIPTOR.fields_by_name) - {"parameters"}


def _validate_parameters(c: _Checker, p: str, metric: Any, params: Any) -> None:
    if not isinstance(params, dict):
        c.fail(f"{p}.parameters", "must be a map of parameter names to values")
        return
    declared = {d.name: d for d in PARAMETERS.get(str(metric), ())}
    valid = ", ".join(sorted(declared)) or "none"
    for name in sorted(set(params) - set(declared)):
        hint = f"; {name} is a field of the objective: set {p}.{name}" if name in _OBJECTIVE_FIELDS else ""
        c.fail(f"{p}.parameters.{name}", f"is not a parameter of {metric} (valid parameters: {valid}){hint}")
    for d in declared.values():
        field = f"{p}.parameters.{d.name}"
        value = params.get(d.name)
        required = d.required or (
            d.name == "short_abandon_seconds" and params.get("variant") == "SHORT_ABANDONS_SUCCESS"
        )
        if value in (None, ""):
            if required:
                c.fail(field, f"is required ({_describe(d)})")
            continue
        if not isinstance(value, str):
            c.fail(field, f"must be a string ({_describe(d)}), not {value!r}")
        elif d.type == "enum":
            c.enum(field, value, d.choices)
        elif d.name == "close_rate" and dec(value) == 0:
            c.fail(field, "must not be zero: leads needed = customers needed ÷ close rate")
        else:
            n = c.decimal(field, value, lo=d.lo, hi=d.hi, lo_open=d.lo_open, unit=d.unit)
            if n is not None and d.type == "integer" and n != n.to_integral_value():
                c.fail(field, f"must be a whole number of {d.unit}, not {value!r}")


def _describe(d: Param) -> str:
    if d.type == "enum":
        return f"one of {', '.join(d.choices)}"
    what = "a whole number" if d.type == "integer" else "a decimal number"
    return f"{what} of {d.unit}" if d.unit and d.unit != "money" else what


def _validate_tiers(c: _Checker, p: str, tiers: list[dict[str, Any]]) -> None:
    bands: list[tuple[Decimal | None, bool, Decimal | None, bool, int]] = []
    for j, t in enumerate(tiers):
        q = f"{p}.credit_tiers[{j}]"
        lo = c.decimal(f"{q}.lower", t.get("lower"))
        hi = c.decimal(f"{q}.upper", t.get("upper"))
        c.decimal(f"{q}.credit_percent", t.get("credit_percent"), required=True, lo=ZERO, hi=HUNDRED)
        if lo is None and hi is None and (t.get("lower") in (None, "") and t.get("upper") in (None, "")):
            c.fail(q, "needs a lower or an upper bound")
            continue
        if (
            lo is not None
            and hi is not None
            and (lo > hi or (lo == hi and not (t.get("lower_inclusive") and t.get("upper_inclusive"))))
        ):
            c.fail(q, f"lower bound {lo} must be below upper bound {hi}")
            continue
        bands.append((lo, bool(t.get("lower_inclusive")), hi, bool(t.get("upper_inclusive")), j))
    # Sort by lower bound (open lower first) and check neighbours: no overlap, no hole.
    bands.sort(key=lambda b: (b[0] is not None, b[0] or 0, not b[1]))
    for a, b in itertools.pairwise(bands):
        a_hi, a_hi_inc, b_lo, b_lo_inc = a[2], a[3], b[0], b[1]
        qa, qb = f"{p}.credit_tiers[{a[4]}]", f"{p}.credit_tiers[{b[4]}]"
        if a_hi is None or b_lo is None or a_hi > b_lo or (a_hi == b_lo and a_hi_inc and b_lo_inc):
            c.fail(qb, f"overlaps {qa}")
        elif a_hi < b_lo or (not a_hi_inc and not b_lo_inc):
            c.fail(qb, f"leaves a hole after {qa} (values between {a_hi} and {b_lo} match no band)")


def _validate_support(c: _Checker, support: dict[str, Any]) -> None:
    c.text("support.how_to_report", support.get("how_to_report"))
    for j, contact in enumerate(support.get("contacts") or []):
        c.text(f"support.contacts[{j}].name", contact.get("name"), required=True, max_len=200)
        email = contact.get("email") or ""
        if email and not re.match(r"^[^@\s]+@[^@\s]+$", email):
            c.fail(f"support.contacts[{j}].email", f"is not an e-mail address: {email!r}")
    seen: set[str] = set()
    for j, pr in enumerate(support.get("priorities") or []):
        q = f"support.priorities[{j}]"
        c.enum(f"{q}.priority", pr.get("priority"), PRIORITIES)
        if pr.get("priority") in seen:
            c.fail(f"{q}.priority", f"{pr.get('priority')} is listed twice")
        seen.add(pr.get("priority", ""))
        resp, res = int(pr.get("response_minutes") or 0), int(pr.get("resolution_minutes") or 0)
        if resp <= 0 or res <= 0:
            c.fail(q, "response_minutes and resolution_minutes must be positive")
        elif resp > res:
            c.fail(q, f"response target ({resp} min) cannot be longer than resolution target ({res} min)")


def _validate_consequences(c: _Checker, cons: dict[str, Any]) -> None:
    c.enum("consequences.stacking", cons.get("stacking"), STACKING, required=False)
    c.decimal("consequences.cap_percent", cons.get("cap_percent"), lo=ZERO, hi=HUNDRED)
    c.decimal("consequences.minimum_amount", cons.get("minimum_amount"), lo=ZERO)
    c.whole("consequences.claim_window_days", cons.get("claim_window_days", 0), 0, 366)
    rule = cons.get("termination") or {}
    c.whole("consequences.termination.consecutive_periods", rule.get("consecutive_periods", 0), 0, 120)
    breaches, within = int(rule.get("breaches") or 0), int(rule.get("within_months") or 0)
    if (breaches > 0) != (within > 0):
        c.fail("consequences.termination", "breaches and within_months go together (both set or both zero)")
    elif within > 120:
        c.fail("consequences.termination.within_months", f"must be at most 120 (got {within})")


def _validate_fee(c: _Checker, fee: dict[str, Any]) -> None:
    if not fee:
        return
    currency = fee.get("currency") or ""
    if currency not in CURRENCIES:
        c.fail(
            "fee.currency", f"must be an ISO 4217 code Accord knows ({', '.join(sorted(CURRENCIES))}), not {currency!r}"
        )
    amount = c.decimal("fee.amount", fee.get("amount"), required=True, lo=ZERO)
    if amount is not None and currency in CURRENCIES:
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > CURRENCIES[currency]:
            c.fail("fee.amount", f"{amount} has more decimals than {currency} has minor units ({CURRENCIES[currency]})")
    c.enum("fee.period", fee.get("period"), FEE_PERIODS)


def _validate_term(c: _Checker, term: dict[str, Any]) -> None:
    start = parse_instant(term.get("effective_from"))
    if start is None:
        c.fail("term.effective_from", "is required (an instant with a time zone)")
    end_raw = term.get("effective_to")
    end = parse_instant(end_raw)
    if end_raw and end is None:
        c.fail("term.effective_to", f"is not an instant: {end_raw!r}")
    if start is not None and end is not None and end <= start:
        c.fail("term.effective_to", f"must be after effective_from ({start.isoformat()})")
    if term.get("auto_renew"):
        c.whole("term.renewal_months", term.get("renewal_months", 0), 1, 120)
        if end is None:
            c.fail("term.effective_to", "an auto-renewing agreement needs an end to renew at")
    c.whole("term.notice_days", term.get("notice_days", 0), 0, 3650)


_ATOMS = (str, int, float, bool, type(None))


def copy_terms(value: Any) -> Any:
    """A deep copy of terms-shaped data (dicts, lists, strings, numbers, booleans, None), as
    `copy.deepcopy` makes it, at a fraction of its cost; anything else is deep-copied."""
    if type(value) is dict:
        return {k: v if type(v) in _ATOMS else copy_terms(v) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _ATOMS else copy_terms(v) for v in value]
    if type(value) in _ATOMS:
        return value
    return copy.deepcopy(value)


def normalise(terms: TermsDict) -> TermsDict:
    """A copy of the terms with every decimal field in plain notation (see `plain`): what is
    validated and stored, so that "2E+1" is kept as "20" and a JSON number as its string.
    Whole-number parameters lose a zero fraction ("14.0" → "14")."""
    t = copy_terms(terms)

    def fix(d: Any, *keys: str) -> None:
        if isinstance(d, dict):
            for k in keys:
                if k in d:
                    d[k] = plain(d[k])

    for o in t.get("objectives") or []:
        if not isinstance(o, dict):
            continue
        fix(o, "target", "slice_target")
        if isinstance(o.get("warning_levels"), list):
            o["warning_levels"] = [plain(w) for w in o["warning_levels"]]
        params = o.get("parameters")
        if isinstance(params, dict):
            for d in PARAMETERS.get(str(o.get("metric")), ()):
                if d.type == "enum" or d.name not in params:
                    continue
                value = plain(params[d.name])
                n = dec(value) if isinstance(value, str) else None
                if d.type == "integer" and n is not None and n == n.to_integral_value():
                    value = str(int(n))
                params[d.name] = value
        for tier in o.get("credit_tiers") or []:
            fix(tier, "lower", "upper", "credit_percent")
        for pen in o.get("penalties") or []:
            fix(pen, "amount", "grace_units")
        fix(o.get("reward"), "stretch_target", "amount")
    fix(t.get("consequences"), "cap_percent", "minimum_amount")
    fix(t.get("fee"), "amount")
    return t


def check_not_ended(terms: TermsDict, now: datetime, not_before: datetime | None = None) -> None:
    """A term that has already ended cannot be agreed: `term.effective_to` must be after now
    (and after `not_before`, an amendment's effective date). Refused, never ended at once."""
    term = terms.get("term") or {}
    end = parse_instant(term.get("effective_to"))
    if end is None:
        return
    if end <= now:
        raise TermsInvalidError(
            [
                FieldError(
                    "term.effective_to",
                    f"{end.isoformat()} is before now ({now.isoformat()}): terms that have already ended "
                    "cannot be agreed (give a later end, or none)",
                )
            ]
        )
    if not_before is not None and end <= not_before:
        raise TermsInvalidError(
            [
                FieldError(
                    "term.effective_to",
                    f"{end.isoformat()} is before the amendment's effective_from ({not_before.isoformat()}): "
                    "the amended terms would never be in force",
                )
            ]
        )


# -- reading terms ------------------------------------------------------------------------


def objectives_by_id(terms: TermsDict) -> dict[str, dict[str, Any]]:
    return {o["objective_id"]: o for o in terms.get("objectives") or [] if o.get("objective_id")}


def merge(parent_effective: TermsDict, child: TermsDict) -> TermsDict:
    """Effective terms of a child agreement: the parent's (already effective) terms with
    the child's components over them; objectives merged one by one, the child's version of
    an objective replacing the parent's of the same id."""
    merged = copy.deepcopy(parent_effective)
    for key, value in child.items():
        if key == "objectives":
            continue
        if value not in (None, "", [], {}):
            merged[key] = copy.deepcopy(value)
    objectives = objectives_by_id(parent_effective)
    for oid, obj in objectives_by_id(child).items():
        objectives[oid] = copy.deepcopy(obj)
    merged["objectives"] = list(objectives.values())
    for key in ("parties", "kind", "level", "parent_agreement_id", "title"):
        if key in child:
            merged[key] = copy.deepcopy(child[key])
    return merged


def diff(old: TermsDict, new: TermsDict) -> list[dict[str, Any]]:
    """Changes from `old` to `new`: objective by objective (added, removed, changed with the
    changed fields), then every other component that changed."""
    changes: list[dict[str, Any]] = []
    old_o, new_o = objectives_by_id(old), objectives_by_id(new)
    for oid in sorted(old_o.keys() | new_o.keys()):
        a, b = old_o.get(oid), new_o.get(oid)
        if a is None:
            changes.append({"path": f"objectives[{oid}]", "kind": "ADDED", "old": None, "new": b})
        elif b is None:
            changes.append({"path": f"objectives[{oid}]", "kind": "REMOVED", "old": a, "new": None})
        else:
            for field in sorted(a.keys() | b.keys()):
                if a.get(field) != b.get(field):
                    changes.append(
                        {
                            "path": f"objectives[{oid}].{field}",
                            "kind": "CHANGED",
                            "old": a.get(field),
                            "new": b.get(field),
                        }
                    )
    for key in sorted((old.keys() | new.keys()) - {"objectives"}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(a.keys() | b.keys()):
                if a.get(sub) != b.get(sub):
                    changes.append({"path": f"{key}.{sub}", "kind": "CHANGED", "old": a.get(sub), "new": b.get(sub)})
        else:
            changes.append(
                {"path": key, "kind": "CHANGED" if a and b else ("ADDED" if b else "REMOVED"), "old": a, "new": b}
            )
    return changes


def stricter_or_equal(comparator: str, underpinning_target: Decimal, sla_target: Decimal) -> bool:
    """An underpinning objective must be at least as strict as the SLA objective it underpins."""
    if comparator == "COMPARATOR_AT_LEAST":
        return underpinning_target >= sla_target
    return underpinning_target <= sla_target
