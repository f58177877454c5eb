"""Ticket, task and marketing ↔ sales formulas (docs/domain.md §4 "Tickets and tasks" and
"Marketing ↔ sales").

The clock for tickets and tasks: elapsed time from start (opened / received) to stop
(first response, resolution / completion) is the business time of the objective's calendar
(`calendar.open_intervals`, DST-correct, holidays excluded) in [start, stop), minus the
paused intervals. Pauses are merged first, so overlapping pauses count once, and only the
part of a pause inside business time is taken off (a pause over a weekend changes nothing
on a 9-to-5 calendar). Elapsed is exact to the microsecond; a target is met when
elapsed ≤ target (inclusive).

Which tickets are *due in a window* — each ticket is judged exactly once, in the window
holding the instant its outcome became known:
- its *deadline* is the last instant at which a stop still meets the target: the clock
  reads exactly the target there and more just after (when the target is reached at the
  close of business, the deadline is the next opening, because a reply before then still
  reads the target);
- a ticket that stopped within the target is decided at its stop (met); any other ticket
  is decided at its deadline (late) — whether it stopped late or is still open;
- it is due in the window [start, end) when that decision instant lies in it (and, with
  `as_of`, before `as_of`: an open ticket whose deadline has not passed yet is not due).
So a ticket answered on time in March counts in March even if its deadline was in April,
a ticket late in March counts in March even if answered in April, and no ticket counts in
two windows. Compliance = met ÷ due × 100; no ticket due → undefined (NO_DATA). A ticket
that stopped before a window's start was decided before it (met: at its stop; late: at a
deadline the clock passed before its stop), so its clock is not run for that window.

Versions of "ticket.compliance" and "task.turnaround": v2 digests the records of the items
due in the window (those it counts: met and late); v1, kept for the windows recorded with it,
digests every item it was passed (every priority's tickets, from the first one recorded) — so
a window's v1 digest changed with every ticket passed to it, and a round had to pass every
ticket of history. The value and detail are the same in both.

The marketing rates (`close_rate`, `marketing_revenue_share`) are ratios in [0, 1], as
docs/domain.md writes them and as `leads_needed` takes them; their percentage is in detail.

Every function digests its inputs sorted by id (instants as UTC) with its parameters (and
the calendar's definition where one is used); duplicate ids are refused (ValueError).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from accord_kit.timeline import BusinessCalendar, Calendar, Interval, subtract, total
from accord_metrics.formulas.common import HUNDRED, ZERO, Evaluated, percent, ratio, seconds
from accord_metrics.formulas.contact import evaluated, instant_param, sorted_records, td_param

VERSION = 1
# The versions of "ticket.compliance" and "task.turnaround" computed: v2 judges, v1 is kept for
# the windows recorded with it (restated and re-derived by the version they closed with).
CLOCKED_VERSION = 2
CLOCKED_VERSIONS = (1, 2)
PRIORITIES = ("P1", "P2", "P3", "P4")
TicketKind = Literal["RESPONSE", "RESOLUTION"]


def _aware(owner: str, name: str, t: datetime | None) -> None:
    if t is not None and (t.tzinfo is None or t.utcoffset() is None):
        raise ValueError(f"{owner}: {name} must be timezone-aware")


def _not_before(owner: str, name: str, t: datetime | None, start: datetime) -> None:
    if t is not None and t < start:
        raise ValueError(f"{owner}: {name} is before the start")


def _decimal(name: str, v: object, *, positive: bool = False) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (Decimal, int)):
        raise TypeError(f"{name} must be a Decimal (never a float), got {type(v).__name__}")
    d = Decimal(v)
    if not d.is_finite():
        raise ValueError(f"{name} must be finite")
    if positive and d <= 0:
        raise ValueError(f"{name} must be greater than zero")
    if d < 0:
        raise ValueError(f"{name} must not be negative")
    return d


def _coerce(owner: object, name: str) -> None:
    object.__setattr__(owner, name, _decimal(name, getattr(owner, name)))


def _pauses(owner: str, paused: tuple[Interval, ...]) -> None:
    if not all(isinstance(p, Interval) for p in paused):
        raise TypeError(f"{owner}: paused must be a tuple of Interval")


@dataclass(frozen=True)
class Ticket:
    """A support ticket. `paused` are the intervals its clock stops (e.g. waiting on the customer)."""

    ticket_id: str
    priority: str
    opened: datetime
    first_response: datetime | None = None
    resolved: datetime | None = None
    paused: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        owner = f"ticket {self.ticket_id}"
        if self.priority not in PRIORITIES:
            raise ValueError(f"{owner}: priority {self.priority!r} is not one of {PRIORITIES}")
        for name in ("opened", "first_response", "resolved"):
            _aware(owner, name, getattr(self, name))
        _not_before(owner, "first_response", self.first_response, self.opened)
        _not_before(owner, "resolved", self.resolved, self.opened)
        _pauses(owner, self.paused)


@dataclass(frozen=True)
class Task:
    """A task with a turnaround target: received → completed, same clock rules as tickets."""

    task_id: str
    received: datetime
    completed: datetime | None = None
    paused: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        owner = f"task {self.task_id}"
        _aware(owner, "received", self.received)
        _aware(owner, "completed", self.completed)
        _not_before(owner, "completed", self.completed, self.received)
        _pauses(owner, self.paused)


@dataclass(frozen=True)
class Lead:
    """A marketing lead. `follow_ups` are sales' attempts to reach it; `revenue` is what it
    closed for (zero unless converted)."""

    lead_id: str
    created: datetime
    handed_off: datetime | None = None
    follow_ups: tuple[datetime, ...] = ()
    converted: bool = False
    revenue: Decimal = ZERO

    def __post_init__(self) -> None:
        owner = f"lead {self.lead_id}"
        _aware(owner, "created", self.created)
        _aware(owner, "handed_off", self.handed_off)
        _not_before(owner, "handed_off", self.handed_off, self.created)
        for f in self.follow_ups:
            _aware(owner, "follow_ups", f)
        _coerce(self, "revenue")
        if not self.converted and self.revenue != 0:
            raise ValueError(f"{owner}: a lead that did not convert has no revenue")


@dataclass(frozen=True)
class Deal:
    """A closed deal; `marketing_sourced` when it came from a marketing lead."""

    deal_id: str
    closed_at: datetime
    revenue: Decimal
    marketing_sourced: bool

    def __post_init__(self) -> None:
        _aware(f"deal {self.deal_id}", "closed_at", self.closed_at)
        _coerce(self, "revenue")


# -- the clock -----------------------------------------------------------------------------------
def calendar_definition(calendar: Calendar) -> dict[str, Any]:
    """What of a calendar goes into a digest: its id, version and, for business hours, the hours
    themselves (so a changed calendar changes the digest even if someone forgot the version)."""
    out: dict[str, Any] = {"calendar_id": calendar.calendar_id, "version": calendar.version}
    if isinstance(calendar, BusinessCalendar):
        out["time_zone"] = calendar.time_zone
        out["hours"] = sorted([list(h) for h in calendar.hours])
        out["holidays"] = sorted(d.isoformat() for d in calendar.holidays)
    return out


def _calendar_params(calendar: Calendar) -> dict[str, str]:
    return {"calendar": calendar.calendar_id, "calendar_version": str(calendar.version)}


def _clock_params(target: timedelta, window: Interval, as_of: datetime | None, calendar: Calendar) -> dict[str, str]:
    """The parameters of a formula that runs an item's clock to a target in the window, as of
    an instant, on a calendar (compliance, follow-up speed)."""
    return {
        "target_seconds": td_param(target),
        "window_start": instant_param(window.start),
        "window_end": instant_param(window.end),
        "as_of": instant_param(as_of),
        **_calendar_params(calendar),
    }


def _counted(start: datetime, until: datetime, paused: Sequence[Interval], calendar: Calendar) -> list[Interval]:
    if until <= start:
        return []
    return subtract(calendar.open_intervals(Interval(start, until)), paused)


def business_elapsed(start: datetime, until: datetime, paused: Sequence[Interval], calendar: Calendar) -> timedelta:
    """The clock: business time of [start, until) in the calendar, minus the union of the pauses."""
    return total(_counted(start, until, paused, calendar))


def deadline(
    start: datetime, paused: Sequence[Interval], target: timedelta, calendar: Calendar, horizon: datetime
) -> datetime | None:
    """The last instant at which the clock still reads ≤ target (a stop then meets the target,
    any later stop does not), searched before `horizon`; None when it is not before it."""
    remaining = target
    for iv in _counted(start, horizon, paused, calendar):
        if iv.duration > remaining:
            return iv.start + remaining
        remaining -= iv.duration
    return None


@dataclass(frozen=True)
class _Clocked:
    item_id: str
    start: datetime
    stop: datetime | None
    paused: tuple[Interval, ...]
    source: Any  # the ticket or task: its record is digested when it is due (v2)


def _compliance(
    formula: str,
    items: list[_Clocked],
    records: list[Any] | None,
    window: Interval,
    target: timedelta,
    calendar: Calendar,
    as_of: datetime | None,
    params: dict[str, str],
    version: int,
    id_of: Callable[[Any], str],
    what: str,
) -> Evaluated:
    """`records`: what v1 digests (every item passed); None for v2, which digests the records of
    the items due (their ids `id_of`; `what` names them)."""
    if version not in CLOCKED_VERSIONS:
        raise ValueError(f"{formula} has versions {CLOCKED_VERSIONS}, not {version}")
    if target < timedelta(0):
        raise ValueError("the target must not be negative")
    _aware("evaluation", "as_of", as_of)
    horizon = window.end if as_of is None else min(as_of, window.end)
    ws, we = window.start, window.end
    due = met = 0
    stopped_elapsed: list[timedelta] = []
    late: list[tuple[str, datetime, timedelta, bool]] = []
    counted: list[Any] = []
    for it in items:
        # Decided at or after its start, and — stopped — at or before its stop: not in this window.
        if it.start >= we or (it.stop is not None and it.stop < ws):
            continue
        if it.stop is not None:
            elapsed = business_elapsed(it.start, it.stop, it.paused, calendar)
            ok = elapsed <= target
            decided = it.stop if ok else deadline(it.start, it.paused, target, calendar, it.stop)
        else:
            ok = False
            decided = deadline(it.start, it.paused, target, calendar, horizon)
        if decided is None or not window.contains(decided) or (as_of is not None and decided >= as_of):
            continue
        if it.stop is None:  # late and still open: the clock so far
            elapsed = business_elapsed(it.start, horizon, it.paused, calendar)
        due += 1
        counted.append(it.source)
        if it.stop is not None:
            stopped_elapsed.append(elapsed)
        if ok:
            met += 1
        else:
            late.append((it.item_id, decided, elapsed, it.stop is None))
    if records is None:
        records = sorted_records(counted, id_of, what)
    late.sort()
    mean = ratio(sum((seconds(e) for e in stopped_elapsed), ZERO), len(stopped_elapsed))
    detail: dict[str, str] = {
        "unit": "percent",
        "due": str(due),
        "met": str(met),
        "late": ",".join(i for i, *_ in late),
        "late_open": ",".join(i for i, _, _, still_open in late if still_open),
        "mean_elapsed_seconds": "none" if mean is None else str(mean),
    }
    for item_id, decided, elapsed, _ in late:
        detail[f"late.{item_id}.deadline"] = instant_param(decided)
        detail[f"late.{item_id}.elapsed_seconds"] = str(seconds(elapsed))
    params = {**params, **_clock_params(target, window, as_of, calendar)}
    extra = {"calendar": calendar_definition(calendar)}
    return evaluated(formula, percent(met, due), params, records, detail, "nothing due in the window", extra, version)


def _ticket_id(t: Ticket) -> str:
    return t.ticket_id


def _task_id(t: Task) -> str:
    return t.task_id


def _unique(ids: Sequence[str], what: str) -> None:
    """A repeated id is refused (whatever a version digests)."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what} {i!r} appears twice")
        seen.add(i)


def ticket_compliance(
    tickets: Sequence[Ticket],
    window: Interval,
    kind: TicketKind,
    priority: str,
    target: timedelta,
    calendar: Calendar,
    *,
    as_of: datetime | None = None,
    version: int = CLOCKED_VERSION,
) -> Evaluated:
    """Response- or resolution-time compliance for one priority, "ticket.compliance" v2
    (docs/domain.md §4 "Tickets and tasks"): tickets meeting the target ÷ tickets due in the
    window × 100. RESPONSE measures opened → first response, RESOLUTION opened → resolved,
    on the module's clock (business time of `calendar` minus pauses counted once). Due in
    the window and late are as in the module docstring; detail lists the late ticket ids
    (`late`, comma-separated; `late_open` those still open) and each one's deadline and
    elapsed business seconds, for its breach record. Tickets of other priorities are
    ignored. The digest covers the tickets due; v1 (`version=1`, kept for the windows recorded
    with it) digests every ticket passed, of every priority. A repeated id is refused."""
    if kind not in ("RESPONSE", "RESOLUTION"):
        raise ValueError(f"kind must be RESPONSE or RESOLUTION, not {kind!r}")
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
    if version == 1:
        records: list[Any] | None = sorted_records(tickets, _ticket_id, "ticket")
    else:
        records = None
        _unique([t.ticket_id for t in tickets], "ticket")
    items = [
        _Clocked(t.ticket_id, t.opened, t.first_response if kind == "RESPONSE" else t.resolved, t.paused, t)
        for t in tickets
        if t.priority == priority
    ]
    params = {"kind": kind, "priority": priority}
    return _compliance(
        "ticket.compliance", items, records, window, target, calendar, as_of, params, version, _ticket_id, "ticket"
    )


def task_turnaround(
    tasks: Sequence[Task],
    window: Interval,
    target: timedelta,
    calendar: Calendar,
    *,
    as_of: datetime | None = None,
    version: int = CLOCKED_VERSION,
) -> Evaluated:
    """Turnaround-time compliance, "task.turnaround" v2 (docs/domain.md §4 "Tickets and tasks"):
    TAT = received → completed on the same clock as tickets (business time minus pauses);
    value = tasks completed within the target ÷ tasks due in the window × 100, due and late
    as for tickets. Detail has the mean TAT of the due, completed tasks and the late ids. The
    digest covers the tasks due; v1 (`version=1`, kept for the windows recorded with it) every
    task passed. A repeated id is refused."""
    if version == 1:
        records: list[Any] | None = sorted_records(tasks, _task_id, "task")
    else:
        records = None
        _unique([t.task_id for t in tasks], "task")
    items = [_Clocked(t.task_id, t.received, t.completed, t.paused, t) for t in tasks]
    return _compliance(
        "task.turnaround", items, records, window, target, calendar, as_of, {}, version, _task_id, "task"
    )


# -- marketing ↔ sales -----------------------------------------------------------------------------
def _local_date(t: datetime, time_zone: str) -> date:
    return t.astimezone(ZoneInfo(time_zone)).date()


# The versions of "marketing.leads_needed" computed: the current one judges, the earlier one
# is kept for the windows recorded with it (restated and re-derived by the version they closed with).
LEADS_NEEDED_VERSION = 3
LEADS_NEEDED_VERSIONS = (2, 3)


def _days_touched(period: Interval, time_zone: str) -> int:
    """The local dates `period` touches, from its start up to its (exclusive) end: a period cut
    inside a day has that day."""
    first = _local_date(period.start, time_zone)
    return (_local_date(period.end - timedelta(microseconds=1), time_zone) - first).days + 1


def leads_needed(
    sales_target: Decimal,
    marketing_share: Decimal,
    average_deal_size: Decimal,
    close_rate: Decimal,
    period: Interval,
    elapsed_until: datetime,
    *,
    time_zone: str = "UTC",
    handed_off: Sequence[Lead] = (),
    window: Interval | None = None,
    version: int = LEADS_NEEDED_VERSION,
) -> Evaluated:
    """The marketing objective, "marketing.leads_needed" v3 (docs/domain.md §4 "Marketing ↔ sales"):
    customers needed = sales target × marketing share ÷ average deal size;
    leads needed = customers needed ÷ close rate, pro-rated to the days of the period:
    × days elapsed ÷ days in the window.

    `period` is the part of the calendar `window` the agreement is in force (the window itself
    unless the agreement's start or end cuts it; `window` defaults to `period`). Days are
    calendar days in `time_zone` (pass the agreement's), the local dates a span touches, from
    its start up to its (exclusive) end — a span cut inside a day by the agreement's start or
    end has that day. Days in the window: those of `window`; days elapsed: the whole local days
    of `period` before `elapsed_until` (a day counts once it is over; the period's last day
    once the period is). So a closed window the agreement is in force for 22 of its 31 days
    needs 22/31 of the figure. v2 (`version=2`, kept for the windows recorded with it) divided
    by the days of `period` instead: a closed window needed the whole figure, however little
    of it the agreement was in force. The value is kept exact (a Decimal, not rounded); detail
    has its ceiling (`leads_needed_ceil`, whole leads) and the full-window figures. A zero (or
    negative) close rate or deal size is a validation error (ValueError), never a division by
    zero; so is a share or close rate above 1, a period outside the window, or a version
    other than 2 and 3.

    `handed_off`: the leads handed off in the period, which the objective holds to this figure
    (the evaluation's value). They are the input digest's records, so a late lead changes the
    digest and restates a closed window (v1 digested none, and a late lead restated nothing)."""
    if version not in LEADS_NEEDED_VERSIONS:
        raise ValueError(f"marketing.leads_needed has versions {LEADS_NEEDED_VERSIONS}, not {version}")
    target = _decimal("sales_target", sales_target)
    share = _decimal("marketing_share", marketing_share)
    size = _decimal("average_deal_size", average_deal_size, positive=True)
    rate = _decimal("close_rate", close_rate, positive=True)
    if share > 1 or rate > 1:
        raise ValueError("marketing_share and close_rate are ratios between 0 and 1")
    _aware("leads_needed", "elapsed_until", elapsed_until)
    if period.end <= period.start:
        raise ValueError("the period must not be empty")
    whole = period if window is None or version == 2 else window
    if not (whole.start <= period.start and period.end <= whole.end):
        raise ValueError("the period must lie inside the window")
    first = _local_date(period.start, time_zone)
    days = _days_touched(period, time_zone)
    elapsed_days = min(max((_local_date(elapsed_until, time_zone) - first).days, 0), days)
    if elapsed_until >= period.end:
        elapsed_days = days
    if elapsed_until <= period.start:
        elapsed_days = 0
    window_days = _days_touched(whole, time_zone)
    customers = target * share / size
    full = customers / rate
    value = full * Decimal(elapsed_days) / Decimal(window_days)
    detail = {
        "unit": "leads",
        "customers_needed": str(customers),
        "leads_needed_period": str(full),
        "leads_needed_ceil": str(value.to_integral_value(rounding=ROUND_CEILING)),
        "days_elapsed": str(elapsed_days),
        "days_in_period": str(window_days),
    }
    params = {
        "sales_target": str(target),
        "marketing_share": str(share),
        "average_deal_size": str(size),
        "close_rate": str(rate),
        "period_start": instant_param(period.start),
        "period_end": instant_param(period.end),
        "elapsed_until": instant_param(elapsed_until),
        "time_zone": time_zone,
    }
    if version >= 3:
        detail["days_in_force"] = str(days)
        params["window_start"] = instant_param(whole.start)
        params["window_end"] = instant_param(whole.end)
    records = sorted_records(handed_off, lambda lead: lead.lead_id, "lead")
    return evaluated("marketing.leads_needed", value, params, records, detail, "", version=version)


def close_rate(leads: Sequence[Lead]) -> Evaluated:
    """Lead-to-customer close rate, "marketing.close_rate" v1 (docs/domain.md §4 "Marketing ↔
    sales"): marketing leads that became customers ÷ marketing leads, a ratio (percent in
    detail). No lead → undefined."""
    records = sorted_records(leads, lambda lead: lead.lead_id, "lead")
    converted = sum(1 for lead in leads if lead.converted)
    value = ratio(converted, len(leads))
    detail = {
        "unit": "ratio",
        "leads": str(len(leads)),
        "converted": str(converted),
        "percent": "none" if value is None else str(value * HUNDRED),
    }
    return evaluated("marketing.close_rate", value, {}, records, detail, "no lead", version=VERSION)


def deal_size(leads: Sequence[Lead]) -> Evaluated:
    """Average deal size, "marketing.deal_size" v1 (docs/domain.md §4 "Marketing ↔ sales"): revenue
    from the leads that became customers ÷ their number. No converted lead → undefined."""
    records = sorted_records(leads, lambda lead: lead.lead_id, "lead")
    won = [lead for lead in leads if lead.converted]
    revenue = sum((lead.revenue for lead in won), ZERO)
    detail = {"unit": "currency", "customers": str(len(won)), "revenue": str(revenue)}
    return evaluated(
        "marketing.deal_size", ratio(revenue, len(won)), {}, records, detail, "no converted lead", version=VERSION
    )


def marketing_revenue_share(deals: Sequence[Deal]) -> Evaluated:
    """Share of revenue from marketing, "marketing.revenue_share" v1 (docs/domain.md §4 "Marketing ↔
    sales"): revenue of marketing-sourced deals ÷ all revenue closed, a ratio (percent in
    detail). No revenue closed → undefined."""
    records = sorted_records(deals, lambda d: d.deal_id, "deal")
    marketing = sum((d.revenue for d in deals if d.marketing_sourced), ZERO)
    everything = sum((d.revenue for d in deals), ZERO)
    value = ratio(marketing, everything)
    detail = {
        "unit": "ratio",
        "marketing_revenue": str(marketing),
        "revenue": str(everything),
        "percent": "none" if value is None else str(value * HUNDRED),
    }
    return evaluated("marketing.revenue_share", value, {}, records, detail, "no revenue closed", version=VERSION)


def first_follow_up(lead: Lead) -> datetime | None:
    """The earliest follow-up at or after hand-off (attempts before hand-off are not follow-ups)."""
    if lead.handed_off is None:
        return None
    handed_off = lead.handed_off
    return min((f for f in lead.follow_ups if f >= handed_off), default=None)


# The versions of "sales.follow_up_speed" and "sales.follow_up_depth" computed: v2 judges each
# lead once, in the window in which its outcome became known; v1 is kept for the windows
# recorded with it (restated and re-derived by the version they closed with).
FOLLOW_UP_VERSION = 2
FOLLOW_UP_VERSIONS = (1, 2)


@dataclass(frozen=True)
class FollowUpOutcome:
    """One lead as it decides a window (the follow-up formulas' v2 digested record): its
    hand-off, the follow-ups that count (speed: the first one, if any; depth: the attempts in
    its days) and the instant its outcome became known."""

    lead_id: str
    handed_off: datetime
    follow_ups: tuple[datetime, ...]
    decided: datetime


def _follow_up_version(formula: str, version: int, window: Interval | None) -> None:
    if version not in FOLLOW_UP_VERSIONS:
        raise ValueError(f"{formula} has versions {FOLLOW_UP_VERSIONS}, not {version}")
    if version >= 2 and window is None:
        raise ValueError(f"{formula} v2 judges a window: pass it")


def follow_up_speed(
    leads: Sequence[Lead],
    target: timedelta,
    calendar: Calendar,
    *,
    as_of: datetime | None = None,
    window: Interval | None = None,
    version: int = FOLLOW_UP_VERSION,
) -> Evaluated:
    """Sales follow-up speed, "sales.follow_up_speed" v2 (docs/domain.md §4 "Marketing ↔ sales"):
    leads followed up within `target` ÷ leads judged × 100, each handed-off lead judged once,
    in the window in which its outcome became known — as a ticket's response (module
    docstring), on the clock of `calendar` from hand-off (no pauses): a lead whose first
    follow-up (the earliest at or after hand-off) came within the target (business time in
    [hand-off, follow-up) ≤ target) is decided at that follow-up (within); any other — followed
    up late or not yet — at its *deadline*, the last instant a follow-up would still have met
    the target (on a business calendar, when the target is reached at closing time, the next
    opening) (missed). It counts in `window` (required) when that instant lies in it
    ([start, end)) and, with `as_of`, before `as_of` (one decided later in the window is
    `pending`). Pass every lead: one handed off before the window may be decided in it. Leads
    never handed off are ignored. Detail lists the missed lead ids. The input digest covers the
    outcomes counted (`FollowUpOutcome`: hand-off, first follow-up, decision), so a closed
    window is restated only when one of them changes. No lead judged → undefined.

    v1 (`version=1`, kept for the windows recorded with it): the leads passed (the caller
    passed those handed off in the window), a lead without a follow-up missed — unless, with
    `as_of`, no more than the target had elapsed by then (pending, left out); so a closed
    window never counted the leads of its last `target` not followed up by its end."""
    if target < timedelta(0):
        raise ValueError("the target must not be negative")
    _aware("follow_up_speed", "as_of", as_of)
    _follow_up_version("sales.follow_up_speed", version, window)
    if version == 1:
        return _follow_up_speed_v1(leads, target, calendar, as_of)
    assert window is not None
    _unique([lead.lead_id for lead in leads], "lead")
    counted: list[tuple[FollowUpOutcome, bool]] = []
    pending = 0
    for lead in leads:
        if lead.handed_off is None:
            continue
        handed_off = lead.handed_off
        if handed_off >= window.end:
            continue  # decided at or after its hand-off
        first = first_follow_up(lead)
        if first is not None and first < window.start:
            continue  # decided at its follow-up, or at a deadline before it: before the window
        ok = first is not None and business_elapsed(handed_off, first, (), calendar) <= target
        decided: datetime | None
        if ok:
            decided = first
        else:  # missed: decided at the deadline (searched before the late follow-up, or the window's end)
            decided = deadline(handed_off, (), target, calendar, first if first is not None else window.end)
        if decided is None or not window.contains(decided):
            continue
        if as_of is not None and decided >= as_of:
            pending += 1
            continue
        counted.append((FollowUpOutcome(lead.lead_id, handed_off, () if first is None else (first,), decided), ok))
    within = sum(1 for _, ok in counted if ok)
    detail = {
        "unit": "percent",
        "handed_off": str(len(counted)),
        "within": str(within),
        "pending": str(pending),
        "missed": ",".join(sorted(o.lead_id for o, ok in counted if not ok)),
    }
    params = _clock_params(target, window, as_of, calendar)
    extra = {"calendar": calendar_definition(calendar)}
    records = sorted_records((o for o, _ in counted), lambda o: o.lead_id, "lead")
    value = percent(within, len(counted))
    return evaluated("sales.follow_up_speed", value, params, records, detail, "no handed-off lead", extra, version)


def _follow_up_speed_v1(
    leads: Sequence[Lead], target: timedelta, calendar: Calendar, as_of: datetime | None
) -> Evaluated:
    """ "sales.follow_up_speed" v1 (see `follow_up_speed`)."""
    records = sorted_records(leads, lambda lead: lead.lead_id, "lead")
    within = pending = counted = 0
    missed: list[str] = []
    for lead in leads:
        if lead.handed_off is None:
            continue
        first = first_follow_up(lead)
        if first is None:
            if as_of is not None and business_elapsed(lead.handed_off, as_of, (), calendar) <= target:
                pending += 1
                continue
            missed.append(lead.lead_id)
        elif business_elapsed(lead.handed_off, first, (), calendar) <= target:
            within += 1
        else:
            missed.append(lead.lead_id)
        counted += 1
    detail = {
        "unit": "percent",
        "handed_off": str(counted),
        "within": str(within),
        "pending": str(pending),
        "missed": ",".join(sorted(missed)),
    }
    params = {"target_seconds": td_param(target), "as_of": instant_param(as_of), **_calendar_params(calendar)}
    extra = {"calendar": calendar_definition(calendar)}
    value = percent(within, counted)
    return evaluated("sales.follow_up_speed", value, params, records, detail, "no handed-off lead", extra, 1)


def follow_up_depth(
    leads: Sequence[Lead],
    window_days: int = 14,
    *,
    minimum: int | None = None,
    as_of: datetime | None = None,
    window: Interval | None = None,
    version: int = FOLLOW_UP_VERSION,
) -> Evaluated:
    """Sales follow-up depth, "sales.follow_up_depth" v2 (docs/domain.md §4 "Marketing ↔ sales"):
    the mean number of follow-up attempts per handed-off lead within `window_days` of hand-off
    (hand-off ≤ attempt ≤ hand-off + window_days × 24 h, elapsed time, inclusive), each lead
    judged once, in the window in which its outcome became known: when its days have passed,
    at hand-off + window_days × 24 h (the last instant an attempt still counts). It counts in
    `window` (required) when that instant lies in it ([start, end)) and, with `as_of`, before
    `as_of` (one decided later in the window is `pending`). Pass every lead: one handed off
    before the window is decided in it. With `minimum`, detail also has how many (and what
    percent of) leads reached it (e.g. ≥ 5 in 14 days). Leads never handed off are ignored.
    The input digest covers the outcomes counted (`FollowUpOutcome`: hand-off, the attempts
    counted, decision). No lead judged → undefined.

    v1 (`version=1`, kept for the windows recorded with it): the leads passed (the caller
    passed those handed off in the window); with `as_of`, leads whose days had not passed by
    then were pending and left out — so on a window shorter than `window_days` (a DAY window
    and 14 days) a closed window never counted any lead."""
    if window_days <= 0:
        raise ValueError("window_days must be positive")
    if minimum is not None and minimum < 0:
        raise ValueError("minimum must not be negative")
    _aware("follow_up_depth", "as_of", as_of)
    _follow_up_version("sales.follow_up_depth", version, window)
    span = timedelta(days=window_days)
    attempts: list[int] = []
    pending = 0
    outcomes: list[FollowUpOutcome] = []
    if version == 1:
        records = sorted_records(leads, lambda lead: lead.lead_id, "lead")
    else:
        _unique([lead.lead_id for lead in leads], "lead")
    for lead in leads:
        if lead.handed_off is None:
            continue
        handed_off = lead.handed_off
        decided = handed_off + span
        if version >= 2:
            assert window is not None
            if not window.contains(decided):
                continue
            if as_of is not None and decided >= as_of:
                pending += 1
                continue
        elif as_of is not None and decided > as_of:
            pending += 1
            continue
        counted = tuple(sorted(f for f in lead.follow_ups if handed_off <= f <= decided))
        attempts.append(len(counted))
        outcomes.append(FollowUpOutcome(lead.lead_id, handed_off, counted, decided))
    detail = {
        "unit": "attempts",
        "leads": str(len(attempts)),
        "attempts": str(sum(attempts)),
        "pending": str(pending),
    }
    if minimum is not None:
        reaching = sum(1 for a in attempts if a >= minimum)
        share = percent(reaching, len(attempts))
        detail["reaching_minimum"] = str(reaching)
        detail["reaching_minimum_percent"] = "none" if share is None else str(share)
    params = {
        "window_days": str(window_days),
        "minimum": "none" if minimum is None else str(minimum),
        "as_of": instant_param(as_of),
    }
    if version >= 2:
        assert window is not None
        params["window_start"] = instant_param(window.start)
        params["window_end"] = instant_param(window.end)
        records = sorted_records(outcomes, lambda o: o.lead_id, "lead")
    value = ratio(sum(attempts), len(attempts))
    return evaluated("sales.follow_up_depth", value, params, records, detail, "no handed-off lead", version=version)
