"""Evaluating one objective over one window (docs/domain.md §3–4): picks the signals that belong
to the window, calls the objective's formula with its variant parameters, and judges the
value against the target — MET, AT_RISK (open window, failing so far), BREACHED (closed and
failing, or certain already) or NO_DATA. Pure: the same inputs give the same answer."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from accord_kit.timeline import Calendar, Interval, union
from accord_metrics.domain import AT_RISK, BREACHED, MET, NO_DATA
from accord_metrics.formulas import contact, reliability, work
from accord_metrics.formulas.common import HUNDRED, Evaluated, percent

if TYPE_CHECKING:
    from accord_metrics.running import Running

# The end an outage still under way is stored with (see signal_index._add).
ONGOING = datetime(9999, 1, 1, tzinfo=UTC)
PERCENT_AS_FRACTION = {"METRIC_CLOSE_RATE", "METRIC_MARKETING_REVENUE_SHARE"}
# Metrics whose value can only get worse as a window's signals arrive: failing is certain early.
MONOTONE_WORSENING = {"METRIC_AVAILABILITY_TIME"}
BUDGETED = {"METRIC_AVAILABILITY_TIME", "METRIC_AVAILABILITY_REQUESTS"}


@dataclass
class SignalSet:
    """The signals of an agreement's services, as the formulas take them."""

    outages: list[Interval] = field(default_factory=list)
    maintenance: list[tuple[Interval, datetime | None]] = field(default_factory=list)  # window, announced_at
    requests: list[reliability.RequestCount] = field(default_factory=list)
    incidents: list[reliability.Incident] = field(default_factory=list)
    calls: list[contact.Call] = field(default_factory=list)
    tickets: list[work.Ticket] = field(default_factory=list)
    tasks: list[work.Task] = field(default_factory=list)
    leads: list[work.Lead] = field(default_factory=list)
    deals: list[work.Deal] = field(default_factory=list)
    # Where the calls, outages and request counts came from (`running.Running`): per list, per
    # service, (its kept selection, that selection's changes other than appends, its length) —
    # None when not from kept selections (then nothing is folded between rounds).
    lineage: dict[str, tuple[tuple[int, int, int], ...]] | None = field(default=None, compare=False, repr=False)
    # Per list, per service (as `lineage`): the replacements in place its kept selection logged —
    # (its change's number, place, input before, input after) — read by a running evaluation to
    # take a correction out and in rather than fold every input again (running.py).
    edits: dict[str, tuple[Sequence[tuple[int, int, Any, Any]], ...]] | None = field(
        default=None, compare=False, repr=False
    )


# The lists of formula inputs a SignalSet holds.
INPUT_LISTS = ("outages", "maintenance", "requests", "incidents", "calls", "tickets", "tasks", "leads", "deals")

# The lists each metric reads — its formula, its running form, its burn rates — beside the
# maintenance every window's exclusions read. A signal in no list a window's metric reads cannot
# change its evaluation, so a round does not judge the window again for it (judging). A metric
# not named (`METRIC_READS.get` gives None) is taken to read every list.
_METRIC_READS = {
    "METRIC_AVAILABILITY_TIME": ("outages",),
    "METRIC_MTBF": ("outages",),
    "METRIC_AVAILABILITY_REQUESTS": ("requests",),
    "METRIC_MTTR": ("incidents",),
    "METRIC_ASA": ("calls",),
    "METRIC_ABANDONMENT_RATE": ("calls",),
    "METRIC_SERVICE_LEVEL": ("calls",),
    "METRIC_AVERAGE_HANDLE_TIME": ("calls",),
    "METRIC_FIRST_CONTACT_RESOLUTION": ("calls",),
}
METRIC_READS = {metric: frozenset({*lists, "maintenance"}) for metric, lists in _METRIC_READS.items()}


def _dec(raw: Any, default: str = "0") -> Decimal:
    return Decimal(str(raw)) if raw not in (None, "") else Decimal(default)


def depth_days(parameters: dict[str, Any]) -> int:
    """Follow-up depth's days after a hand-off (`window_days`, 14 unless set): when a lead's depth
    is decided, and how far before a window its selection of leads starts (judging)."""
    return int(_dec(parameters.get("window_days"), "14"))


def repeat_window(parameters: dict[str, Any]) -> timedelta:
    """First-contact resolution's repeat window (`repeat_window_days`, 7 unless set): within it
    a contact of the same customer and reason is a repeat — what the formula judges by, and how
    far back its window's calls are read (judging, `ServiceSignals.select`)."""
    return timedelta(days=float(_dec(parameters.get("repeat_window_days"), "7")))


def fcr_method(parameters: dict[str, Any]) -> str:
    """First-contact resolution's method (`method`, FLAGGED unless set): the formula's, and its
    running form's (running.py)."""
    return str(parameters.get("method") or "FLAGGED")


def _minutes(raw: Any) -> timedelta:
    return timedelta(minutes=float(_dec(raw)))


def exclusions_for(
    objective: dict[str, Any], signals: SignalSet, window: Interval, notice: timedelta
) -> list[Interval]:
    """Declared maintenance windows plus provider announcements made with the notice the
    agreement requires; overlapping ones count once."""
    declared = []
    for ex in objective.get("exclusions") or []:
        s, e = (
            datetime.fromisoformat(ex["start"].replace("Z", "+00:00")),
            datetime.fromisoformat(ex["end"].replace("Z", "+00:00")),
        )
        declared.append(Interval(s, e))
    announced = [iv for iv, at in signals.maintenance if at is not None and iv.start - at >= notice]
    return [iv for iv in union(declared + announced) if iv.intersect(window)]


def _overlaps(a: Interval, b: Interval) -> bool:
    """Whether `a.intersect(b)` is not None (a non-empty common part), without building it."""
    return max(a.start, b.start) < min(a.end, b.end)


def _overlapping(intervals: list[Interval], window: Interval) -> list[Interval]:
    """The intervals that overlap `window` (`_overlaps`), in their order: max(a.start, b.start)
    < min(a.end, b.end) is each start before each end, compared without a call per interval."""
    ws, we = window.start, window.end
    if not ws < we:
        return []
    return [o for o in intervals if o.start < we and ws < o.end and o.start < o.end]


def _known_outages(signals: SignalSet, as_of: datetime) -> list[Interval]:
    """The outages as known at `as_of`: one still under way (no end reported) has lasted until
    then; one with a reported end is taken as reported, whenever it is evaluated."""
    return [
        Interval(o.start, as_of) if o.end >= ONGOING else o
        for o in signals.outages
        if o.start < as_of or o.end < ONGOING
    ]


def run_formula(
    objective: dict[str, Any],
    window: Interval,
    calendar: Calendar,
    exclusions: list[Interval],
    signals: SignalSet,
    as_of: datetime,
    time_zone: str,
    full_window: Interval | None = None,
    recorded: tuple[str, int] | None = None,
    *,
    digested: bool = True,
    running: Running | None = None,
) -> Evaluated:
    """The objective's formula over `window` (the part of the calendar `full_window` the
    agreement is in force; `full_window` defaults to it). `recorded`: the (formula id, version)
    a closed window was recorded with — that version computes it again if it is still
    computable (`work.LEADS_NEEDED_VERSIONS`, `reliability.REQUESTS_VERSIONS`,
    `contact.FCR_VERSIONS`, `work.FOLLOW_UP_VERSIONS`, `work.CLOCKED_VERSIONS`,
    `reliability.MTTR_VERSIONS`, `reliability.OUTAGES_VERSIONS`, `contact.VERSIONS`), else the
    current one. `digested` false:
    the caller reads only the value — availability (time- and request-based) computes no input digest.
    `running`: an open window's running evaluation (`running.Running`), which computes it when it
    can from the inputs appended since the last round (the same evaluation)."""
    if running is not None:
        kept = running.evaluate(objective, window, calendar, exclusions, signals, as_of, recorded)
        if kept is not None:
            return kept
    metric = objective["metric"]
    p = objective.get("parameters") or {}
    in_w = window.contains
    if metric == "METRIC_AVAILABILITY_TIME":
        outages = _overlapping(_known_outages(signals, as_of), window)
        return reliability.availability_time(
            window,
            calendar,
            outages,
            exclusions,
            timedelta(seconds=float(_dec(p.get("min_outage_seconds")))),
            digested=digested,
            version=judging_version(
                recorded, "availability.time", reliability.OUTAGES_VERSIONS, reliability.OUTAGES_VERSION
            ),
        )
    if metric == "METRIC_AVAILABILITY_REQUESTS":
        method, slice_minutes, slice_target = _budgeting(objective)
        version = judging_version(
            recorded, "availability.requests", reliability.REQUESTS_VERSIONS, reliability.REQUESTS_VERSION
        )
        return reliability.availability_requests(
            [r for r in signals.requests if in_w(r.start)],
            method,
            window,
            slice_minutes,
            slice_target,
            calendar,
            exclusions,
            version=version,
            digested=digested,
        )
    if metric == "METRIC_MTTR":
        incidents = [i for i in signals.incidents if i.failure_start < window.end]
        version = judging_version(recorded, "mttr", reliability.MTTR_VERSIONS, reliability.MTTR_VERSION)
        return reliability.mttr(
            incidents, window, calendar, p.get("r") or "RESTORE", exclusions=exclusions, version=version
        )
    if metric == "METRIC_MTBF":
        failures = _overlapping(_known_outages(signals, as_of), window)
        version = judging_version(recorded, "mtbf", reliability.OUTAGES_VERSIONS, reliability.OUTAGES_VERSION)
        return reliability.mtbf(window, calendar, failures, exclusions=exclusions, version=version)
    calls = [c for c in signals.calls if in_w(c.entered_queue)]
    short = timedelta(seconds=float(_dec(p["short_abandon_seconds"]))) if p.get("short_abandon_seconds") else None
    if metric in CALL_FORMULAS:
        version = judging_version(recorded, CALL_FORMULAS[metric], contact.VERSIONS, contact.VERSION)
    if metric == "METRIC_ASA":
        return contact.asa(calls, version=version)
    if metric == "METRIC_ABANDONMENT_RATE":
        return contact.abandonment_rate(calls, short, version=version)
    if metric == "METRIC_SERVICE_LEVEL":
        threshold = timedelta(seconds=float(_dec(p["threshold_seconds"])))
        return contact.service_level(calls, p["variant"], threshold, short, version=version)
    if metric == "METRIC_FIRST_CONTACT_RESOLUTION":
        repeat = repeat_window(p)
        method = fcr_method(p)
        version = judging_version(recorded, "contact.fcr", contact.FCR_VERSIONS, contact.FCR_VERSION)
        return contact.fcr(
            contact.fcr_contacts(signals.calls, method), method, repeat, window=window, as_of=as_of, version=version
        )
    if metric == "METRIC_AVERAGE_HANDLE_TIME":
        return contact.aht(calls, version=version)
    if metric in ("METRIC_TICKET_RESPONSE", "METRIC_TICKET_RESOLUTION"):
        kind: work.TicketKind = "RESPONSE" if metric == "METRIC_TICKET_RESPONSE" else "RESOLUTION"
        tickets = [t for t in signals.tickets if t.opened < window.end]
        version = judging_version(recorded, "ticket.compliance", work.CLOCKED_VERSIONS, work.CLOCKED_VERSION)
        return work.ticket_compliance(
            tickets, window, kind, p["priority"], _minutes(p["target_minutes"]), calendar, as_of=as_of,
            version=version,
        )  # fmt: skip
    if metric == "METRIC_TASK_TURNAROUND":
        tasks = [t for t in signals.tasks if t.received < window.end]
        version = judging_version(recorded, "task.turnaround", work.CLOCKED_VERSIONS, work.CLOCKED_VERSION)
        return work.task_turnaround(
            tasks, window, _minutes(p["target_minutes"]), calendar, as_of=as_of, version=version
        )
    handed = [lead for lead in signals.leads if lead.handed_off is not None and in_w(lead.handed_off)]
    if metric == "METRIC_LEADS_NEEDED":
        version = judging_version(
            recorded, "marketing.leads_needed", work.LEADS_NEEDED_VERSIONS, work.LEADS_NEEDED_VERSION
        )
        return work.leads_needed(
            _dec(p["sales_target"]), _dec(p["marketing_revenue_share"]), _dec(p["average_deal_size"]),
            _dec(p["close_rate"]), window, min(as_of, window.end), time_zone=time_zone, handed_off=handed,
            window=full_window, version=version,
        )  # fmt: skip
    created = [lead for lead in signals.leads if in_w(lead.created)]
    if metric == "METRIC_CLOSE_RATE":
        return work.close_rate(created)
    if metric == "METRIC_DEAL_SIZE":
        return work.deal_size(created)
    if metric == "METRIC_MARKETING_REVENUE_SHARE":
        return work.marketing_revenue_share([d for d in signals.deals if in_w(d.closed_at)])
    if metric in ("METRIC_FOLLOW_UP_SPEED", "METRIC_FOLLOW_UP_DEPTH"):
        formula = "sales.follow_up_speed" if metric == "METRIC_FOLLOW_UP_SPEED" else "sales.follow_up_depth"
        version = judging_version(recorded, formula, work.FOLLOW_UP_VERSIONS, work.FOLLOW_UP_VERSION)
        # v2 judges each lead in the window its outcome became known (it may have been handed off
        # before it): every handed-off lead; v1 those handed off in the window.
        leads = handed if version == 1 else [lead for lead in signals.leads if lead.handed_off is not None]
        if metric == "METRIC_FOLLOW_UP_SPEED":
            target = timedelta(hours=float(_dec(p["target_hours"])))
            return work.follow_up_speed(leads, target, calendar, as_of=as_of, window=window, version=version)
        days = depth_days(p)
        return work.follow_up_depth(leads, days, as_of=as_of, window=window, version=version)
    raise ValueError(f"no formula for metric {metric!r}")


# The call formulas by metric (their versions are `contact.VERSIONS`; each has a running form).
CALL_FORMULAS = {
    "METRIC_ASA": "contact.asa",
    "METRIC_ABANDONMENT_RATE": "contact.abandonment_rate",
    "METRIC_SERVICE_LEVEL": "contact.service_level",
    "METRIC_AVERAGE_HANDLE_TIME": "contact.aht",
}


def _budgeting(objective: dict[str, Any]) -> tuple[str, int, Decimal | None]:
    """Request-based availability's (method, slice minutes, slice target) as the objective states them."""
    method = (objective.get("budgeting") or "BUDGETING_OCCURRENCES").removeprefix("BUDGETING_")
    slice_target = _dec(objective["slice_target"]) if objective.get("slice_target") else None
    return method, int(objective.get("slice_minutes") or 5), slice_target


def _measured(
    counts: Sequence[reliability.RequestCount], span: Interval, eligible: Sequence[Interval]
) -> list[reliability.RequestCount]:
    """The counts measured in `span`: those whose start is in it and eligible (`eligible` sorted,
    disjoint), in the order held — as `reliability.availability_requests` (v2 on) takes them."""
    starts, ends = [e.start for e in eligible], [e.end for e in eligible]
    lo, hi = span.start, span.end
    out: list[reliability.RequestCount] = []
    for b in counts:
        t = b.start
        if lo <= t < hi:
            i = bisect_right(starts, t) - 1
            if i >= 0 and t < ends[i]:
                out.append(b)
    return out


_count_start = attrgetter("start")


def _clipped_alike(
    eligible: Sequence[Interval], look: Interval, calendar: Calendar, exclusions: Sequence[Interval]
) -> bool:
    """Whether a look-back's eligible time is the longest one's (`eligible`) clipped to it — so its
    measured counts are the longest one's from its start on."""
    clipped = [x for e in eligible if (x := e.intersect(look)) is not None]
    return reliability.eligible_intervals(look, calendar, exclusions) == clipped


def _occurrences(
    calendar: Calendar, exclusions: Sequence[Interval], counts: Sequence[reliability.RequestCount], as_of: datetime,
    lengths: Iterable[timedelta],
) -> dict[timedelta, Decimal | None]:  # fmt: skip
    """Request-based availability by occurrences over each look-back [as_of − length, as_of), the
    value `reliability.availability_requests` (v2 on) gives — Σgood ÷ Σtotal × 100 of the counts
    whose start is eligible, None when none is — from one pass over the counts: those measured in
    the longest look-back, sorted by start, with their sums from each place to the end; a shorter
    look-back's are those from its start on (a bisection). A look-back whose eligible time is not
    the longest one's clipped to it is left out (the formula computes it)."""
    lengths = sorted(lengths, reverse=True)
    if not lengths:
        return {}
    span = Interval(as_of - lengths[0], as_of)
    eligible = reliability.eligible_intervals(span, calendar, exclusions)
    measured = _measured(counts, span, eligible)
    measured.sort(key=_count_start)
    at = [b.start for b in measured]
    good, total = [0] * (len(measured) + 1), [0] * (len(measured) + 1)  # sums from each place to the end
    for i in range(len(measured) - 1, -1, -1):
        b = measured[i]
        good[i], total[i] = good[i + 1] + b.good, total[i + 1] + b.total
    out: dict[timedelta, Decimal | None] = {}
    for length in lengths:
        since = as_of - length
        if length != lengths[0] and not _clipped_alike(eligible, Interval(since, as_of), calendar, exclusions):
            continue
        i = bisect_left(at, since)
        out[length] = percent(good[i], total[i])
    return out


def _time_slices(
    method: str, slice_minutes: int, slice_target: Decimal | None, calendar: Calendar,
    exclusions: Sequence[Interval], counts: Sequence[reliability.RequestCount], as_of: datetime,
    lengths: Iterable[timedelta],
) -> dict[timedelta, Decimal | None]:  # fmt: skip
    """Request-based availability by time slices (TIMESLICES, RATIO_TIMESLICES) over each look-back
    [as_of − length, as_of), the value `reliability.availability_requests` (v2 on) gives, from one
    pass over the counts. Every look-back a whole number of slices long has its slices on one grid,
    ending at `as_of`: the longest's, whose last ones a shorter look-back's are. So each slice's
    sums (the counts measured in it: their start eligible), whether it touches eligible time, and
    whether it is bad (TIMESLICES: measured, its ratio under the slice target) are worked out once;
    a look-back's slices, empty ones and bad ones are counts from its first slice on, and its mean
    of ratios (RATIO_TIMESLICES) the formula's sum in the formula's order (the slices as the counts
    first reach them), at its precision. Left out (the formula computes it, and raises as it
    does): a look-back not a whole number of slices, one whose eligible time is not the longest
    one's clipped to it, and parameters the formula refuses."""
    lengths = sorted(lengths, reverse=True)
    width = timedelta(minutes=slice_minutes) if slice_minutes > 0 else None
    if width is None or not lengths or lengths[0] % width:
        return {}
    if method == "TIMESLICES":
        if slice_target is None or not Decimal(0) <= slice_target <= HUNDRED:
            return {}
    elif method != "RATIO_TIMESLICES":
        return {}
    span = Interval(as_of - lengths[0], as_of)
    origin, n = span.start, lengths[0] // width
    eligible = reliability.eligible_intervals(span, calendar, exclusions)
    touching = bytearray(n)  # the slices with some eligible time (as `_slices_touching` counts them)
    for e in eligible:
        first, end = (e.start - origin) // width, -(-(e.end - origin) // width)
        touching[max(first, 0) : min(end, n)] = b"\x01" * max(min(end, n) - max(first, 0), 0)
    sums: dict[int, list[int]] = {}  # slice → [good, total], in the order the counts first reach them
    for b in _measured(counts, span, eligible):
        k = (b.start - origin) // width
        held = sums.get(k)
        if held is None:
            sums[k] = [b.good, b.total]
        else:
            held[0] += b.good
            held[1] += b.total
    measured = [(k, g, t) for k, (g, t) in sums.items() if t > 0]
    with localcontext() as ctx:
        ctx.prec = reliability.SUM_PRECISION
        if method == "TIMESLICES":
            assert slice_target is not None
            bad = sorted(k for k, g, t in measured if not Decimal(g) * HUNDRED >= slice_target * t)
        else:
            ratios = [(k, Decimal(g) / Decimal(t)) for k, g, t in measured]
    after = [0] * (n + 1)  # touching slices from each slice to the end
    for k in range(n - 1, -1, -1):
        after[k] = after[k + 1] + touching[k]
    places = sorted(k for k, _, _ in measured)
    out: dict[timedelta, Decimal | None] = {}
    for length in lengths:
        if length % width:
            continue
        if length != lengths[0] and not _clipped_alike(eligible, Interval(as_of - length, as_of), calendar, exclusions):
            continue
        first = n - length // width
        slices = after[first]
        empty = slices - (len(places) - bisect_left(places, first))
        if method == "TIMESLICES":
            out[length] = percent(slices - (len(bad) - bisect_left(bad, first)), slices)
            continue
        if slices == 0:
            out[length] = None
            continue
        with localcontext() as ctx:
            ctx.prec = reliability.SUM_PRECISION
            mean = sum((r for k, r in ratios if k >= first), Decimal(empty)) * HUNDRED / slices
        out[length] = +mean  # rounded to the caller's context, as the formula's
    return out


def judging_version(recorded: tuple[str, int] | None, formula: str, kept: tuple[int, ...], current: int) -> int:
    """The version of `formula` that judges a window: the one it was recorded with (a closed
    window: `recorded`) while metrics keeps it, else the current one."""
    if recorded is not None and recorded[0] == formula and recorded[1] in kept:
        return recorded[1]
    return current


def _meets(comparator: str, value: Decimal, target: Decimal) -> bool:
    return value >= target if comparator == "COMPARATOR_AT_LEAST" else value <= target


def judge(
    objective: dict[str, Any],
    window: Interval,
    calendar: Calendar,
    exclusions: list[Interval],
    signals: SignalSet,
    as_of: datetime,
    time_zone: str,
    version: int,
    full_window: Interval | None = None,
    recorded: tuple[str, int] | None = None,
    running: Running | None = None,
) -> dict[str, Any]:
    """The evaluation of one objective over one window (the part of the calendar `full_window`
    the agreement is in force), as recorded in events; `recorded` and `running` as for
    `run_formula`."""
    result = run_formula(
        objective, window, calendar, exclusions, signals, as_of, time_zone, full_window, recorded, running=running
    )
    metric, comparator = objective["metric"], objective["comparator"]
    target = _dec(objective["target"])
    closed = as_of >= window.end
    value = result.value
    if value is not None and metric in PERCENT_AS_FRACTION:
        value = value * HUNDRED
    if metric == "METRIC_LEADS_NEEDED" and result.value is not None:
        # The objective: marketing hands off at least the leads needed (pro-rated so far).
        delivered = Decimal(sum(1 for lead in signals.leads if lead.handed_off and window.contains(lead.handed_off)))
        target, value = result.value, delivered
    if value is None:
        met_when_undefined = result.detail.get("met") == "true"
        status = MET if met_when_undefined else NO_DATA
        if closed and status == NO_DATA:
            policy = objective.get("no_data") or "NO_DATA_POLICY_NOT_COUNTED"
            status = {"NO_DATA_POLICY_COUNTS_AS_MET": MET, "NO_DATA_POLICY_COUNTS_AS_BREACHED": BREACHED}.get(
                policy, NO_DATA
            )
    elif _meets(comparator, value, target):
        status = MET
    elif closed or metric in MONOTONE_WORSENING:
        status = BREACHED
    else:
        status = AT_RISK
    evaluation: dict[str, Any] = {
        "value": "" if value is None else str(value),
        "target": str(target),
        "comparator": comparator,
        "status": status,
        "closed": closed,
        "version": version,
        "formula_id": result.formula_id,
        "formula_version": result.formula_version,
        "parameters": dict(result.parameters),
        "input_digest": result.input_digest,
        "detail": dict(result.detail),
        "undefined": result.undefined,
    }
    consumed = budget_consumed(metric, comparator, value, target)
    if consumed is not None:
        evaluation["budget_consumed"] = str(consumed)
        evaluation["budget_remaining"] = str(max(HUNDRED - consumed, Decimal(0)))
    return evaluation


def budget_consumed(metric: str, comparator: str, value: Decimal | None, target: Decimal) -> Decimal | None:
    """% of the error budget used, for percentages that must be at least a target."""
    if value is None or metric not in BUDGETED or comparator != "COMPARATOR_AT_LEAST" or target >= HUNDRED:
        return None
    return (HUNDRED - value) / (HUNDRED - target) * HUNDRED


def late_subjects(evaluation: dict[str, Any]) -> list[str]:
    """Ids of late tickets/tasks named by a compliance evaluation (each is its own breach)."""
    raw = evaluation.get("detail", {}).get("late", "")
    return [s for s in raw.split(",") if s] if isinstance(raw, str) else []


def burn_lengths(window_length: timedelta) -> set[timedelta]:
    """The look-back lengths the burn-rate pairs of a window of `window_length` read."""
    return {w for pair in reliability.burn_windows(window_length) for w in (pair.long, pair.short)}


def burn_rates(
    objective: dict[str, Any],
    calendar: Calendar,
    exclusions: list[Interval],
    signals: SignalSet,
    as_of: datetime,
    window_length: timedelta,
    time_zone: str,
    values: Mapping[timedelta, Decimal | None] | None = None,
) -> dict[timedelta, Decimal]:
    """Burn rate over each look-back window the multi-window rule needs, ending at `as_of`.
    Each look-back's formula is given only the outages that end after its start and the request
    counts that start at or after it, in the order held: exactly those it would pick from all
    of them (an outage ending by the look-back's start cannot overlap it; a request count is
    counted by its start). Only each look-back's value is read: no input digest is computed.
    `values`: look-backs' values already known (by length: `burning.BurnIndex`, the formula's
    values over the same outages), whose formula is then not run."""
    target = _dec(objective["target"])
    by_requests = objective["metric"] == "METRIC_AVAILABILITY_REQUESTS"  # else by outages: the list it reads
    lengths: Iterable[timedelta] = burn_lengths(window_length)
    known: dict[timedelta, Decimal | None] = dict(values or {})
    budgeting = objective.get("budgeting") or "BUDGETING_OCCURRENCES"
    if by_requests and budgeting == "BUDGETING_OCCURRENCES" and reliability.REQUESTS_VERSION >= 2:
        known = _occurrences(calendar, exclusions, signals.requests, as_of, lengths) | known
    elif by_requests and reliability.REQUESTS_VERSION >= 2:
        sliced = _time_slices(*_budgeting(objective), calendar, exclusions, signals.requests, as_of, lengths)
        known = sliced | known
    # The longest look-back first, each shorter one's inputs picked from the longer one's (in the
    # order held): one pass over the window's inputs, not one a look-back.
    outages, requests = ([], signals.requests) if by_requests else (signals.outages, [])
    for length in sorted(lengths, reverse=True):
        if length in known:
            continue
        look = Interval(as_of - length, as_of)
        since = look.start
        if by_requests:
            requests = [r for r in requests if r.start >= since]
        else:
            outages = [o for o in outages if o.end > since]
        mine = SignalSet(outages=outages, requests=requests)
        known[length] = run_formula(objective, look, calendar, exclusions, mine, as_of, time_zone, digested=False).value
    rates: dict[timedelta, Decimal] = {}
    for length in lengths:
        value = known[length]
        if value is None:
            rates[length] = Decimal(0)
            continue
        error_ratio = (HUNDRED - value) / HUNDRED
        rate = reliability.burn_rate_value(error_ratio, target)
        rates[length] = rate if rate is not None else Decimal(0)
    return rates
