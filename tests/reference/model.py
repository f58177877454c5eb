"""A reference model of the money pipeline, written from the domain rules (docs/domain.md
§3–§5) and not from the services' code: agreement terms + raw signals + the clock →
each window's availability and judgement → each fee period's credits.

It is deliberately plain: exact fractions, datetimes from the standard library, one
function per rule, no shared code with the services. The property test in
`tests/test_reference_model.py` runs generated journeys through the real services and
demands the same windows and the same money, to the minor unit.

Scope (what the model knows): objectives on every one of the 18 metrics of terms.proto's
`Metric` — time-based availability on a 24x7 or business-hours calendar (weekly opening hours
and holidays in a zone) with a minimum outage length; request-based availability
(OCCURRENCES over request counts and probes); MTTR (the four "R"s, incidents still running
counting to the window's end) and MTBF (undefined, and met, without a failure; no data without
eligible time); the contact centre's service level in its five variants, ASA, abandonment
rate, first-contact resolution (FLAGGED, or inferred from repeat contacts of a customer for a
reason) and average handle time; ticket response and resolution compliance per priority and
task turnaround, with pauses, on the objective's calendar; leads needed, close rate, deal size,
marketing's share of revenue, follow-up speed and follow-up depth — tickets, tasks, first contacts
inferred from repeats and the follow-ups each judged once, in the window in which its outcome
became known — with calendar windows (DAY, WEEK, MONTH, QUARTER, YEAR
in the agreement's zone) or rolling N-day windows, declared maintenance exclusions, credit
tiers with explicit bounds, a monthly fee, a cap and a minimum per fee period, an agreement
that may end (a window it cuts judged as of the end), amendments in force from an instant
(each window judged and credited by the version in force at its measured start; the fee
charged by each version's share of the month — a parent's amendment splits its inheriting
child's month the same way), a fee charged only for the time in the term (a month the agreement
starts or ends inside charges its share) with band and cap percentages of the fee so charged
(`charged_share`; rule 1, the billing rule before it, as `fee_basis=1`), suspensions (left out
of time-based measurement and of request-based availability, like exclusions, and not charged;
the other counted metrics count what happened whether or not the agreement was suspended, the
metrics service's stated rule), an agreement with a fee and no objectives; and the services
measured (docs/domain.md §1 "Services measured"): outages given per service are read by a window
only for the services of the version in force at its measured start (an amendment that changes
the list changes the windows from its date on, never an earlier one).
Where docs/domain.md leaves a rule open the model follows the rule the metrics service states
(services/metrics/README.md, "Rules the reference model holds it to"), each written here in
the function that applies it.
Corrections and inheritance need nothing of their own here: the caller passes each signal's
latest content, and a child's effective terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

Span = tuple[datetime, datetime]  # half-open [start, end), aware datetimes


@dataclass(frozen=True)
class Tier:
    lower: Fraction | None
    lower_inclusive: bool
    upper: Fraction | None
    upper_inclusive: bool
    credit_percent: Fraction

    def holds(self, value: Fraction) -> bool:
        if self.lower is not None and (value < self.lower or (value == self.lower and not self.lower_inclusive)):
            return False
        return not (
            self.upper is not None and (value > self.upper or (value == self.upper and not self.upper_inclusive))
        )


@dataclass(frozen=True)
class Objective:
    objective_id: str
    target: Fraction  # availability at least this, in percent
    window: str  # DAY WEEK MONTH QUARTER YEAR ROLLING
    rolling_days: int = 0
    min_outage_seconds: int = 0
    tiers: tuple[Tier, ...] = ()
    metric: str = "AVAILABILITY_TIME"  # or AVAILABILITY_REQUESTS (occurrences)
    calendar: BusinessHours | None = None  # None: 24x7
    # Contact centre (metric SERVICE_LEVEL, ASA or ABANDONMENT_RATE): (variant, threshold T
    # seconds, short-abandon S seconds or None); the variant and T matter to SERVICE_LEVEL only.
    service_level: tuple[str, int, int | None] | None = None
    comparator: str = "AT_LEAST"  # or AT_MOST (ASA, abandonment)
    # The metric's other parameters (terms.proto `Objective.parameters`), as (name, value) pairs.
    parameters: tuple[tuple[str, str], ...] = ()

    def parameter(self, name: str, default: str = "") -> str:
        return dict(self.parameters).get(name, default)


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening hours in a zone, and holidays (docs/domain.md §3 "Calendars")."""

    time_zone: str
    hours: tuple[tuple[int, str, str], ...]  # (ISO weekday 1–7, opens HH:MM, closes HH:MM)
    holidays: tuple[str, ...] = ()  # YYYY-MM-DD, closed all day

    def open_spans(self, window: Span) -> list[Span]:
        """The open hours inside `window`, in UTC."""
        zone = ZoneInfo(self.time_zone)
        day = window[0].astimezone(zone).date() - timedelta(days=1)
        last = window[1].astimezone(zone).date() + timedelta(days=1)
        out: list[Span] = []
        while day <= last:
            if day.isoformat() not in self.holidays:
                for weekday, opens, closes in self.hours:
                    if weekday == day.isoweekday():
                        (oh, om), (ch, cm) = (map(int, opens.split(":")), map(int, closes.split(":")))
                        a = datetime(day.year, day.month, day.day, oh, om, tzinfo=zone).astimezone(UTC)
                        b = datetime(day.year, day.month, day.day, ch, cm, tzinfo=zone).astimezone(UTC)
                        out.append((a, b))
            day += timedelta(days=1)
        return overlap(out, [window])


@dataclass(frozen=True)
class Terms:
    time_zone: str
    effective_from: datetime
    effective_to: datetime | None
    fee: Fraction  # per calendar month of the agreement's zone
    currency_exponent: int
    cap_percent: Fraction | None
    minimum_amount: Fraction | None
    objectives: tuple[Objective, ...]
    exclusions: tuple[Span, ...] = ()
    # Amendments: (instant from which in force, that version's terms), in order. A version's
    # own effective_from/effective_to are ignored: the term is the first version's.
    amendments: tuple[tuple[datetime, Terms], ...] = ()
    suspensions: tuple[Span, ...] = ()  # [suspended, resumed) spans
    # The services this version is measured on, resolved (a version naming none lists every
    # service of its provider); None: every service whose signals are given.
    services: tuple[str, ...] | None = None

    def in_force(self, instant: datetime) -> Terms:
        """The version in force at `instant` (docs/domain.md §2 "Effective dating"): the latest
        whose effective start is not after it; the first before any."""
        found = self
        for since, version in self.amendments:
            if since <= instant:
                found = version
        return found


@dataclass(frozen=True)
class Judged:
    objective_id: str
    start: datetime  # the window's own start (before cutting to the term): its name
    window: Span  # the measured span: the window cut to the agreement's term
    value: Fraction | None  # percent; None when nothing was eligible
    status: str  # MET BREACHED NO_DATA
    version: Terms | None = None  # the version that judged it (in force at the measured start)


@dataclass
class Period:
    start: datetime
    end: datetime
    credits_by_objective: dict[str, Fraction] = field(default_factory=dict)
    issued: Fraction = Fraction(0)


# -- intervals ---------------------------------------------------------------------------


def merge(spans: list[Span]) -> list[Span]:
    """Sorted, with overlapping and touching spans joined."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def subtract(spans: list[Span], holes: list[Span]) -> list[Span]:
    out = []
    for s, e in spans:
        pieces = [(s, e)]
        for hs, he in merge(holes):
            nxt = []
            for ps, pe in pieces:
                if he <= ps or hs >= pe:
                    nxt.append((ps, pe))
                    continue
                if ps < hs:
                    nxt.append((ps, hs))
                if he < pe:
                    nxt.append((he, pe))
            pieces = nxt
        out.extend(pieces)
    return out


def overlap(spans: list[Span], within: list[Span]) -> list[Span]:
    out = []
    for s, e in spans:
        for ws, we in within:
            a, b = max(s, ws), min(e, we)
            if a < b:
                out.append((a, b))
    return merge(out)


def length(spans: list[Span]) -> Fraction:
    total = Fraction(0)
    for s, e in spans:
        d = e.astimezone(UTC) - s.astimezone(UTC)
        total += Fraction(d.days * 86400 + d.seconds) + Fraction(d.microseconds, 1_000_000)
    return total


# -- windows -----------------------------------------------------------------------------


def _local_midnight(day: datetime, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _next_start(start: datetime, kind: str, zone: ZoneInfo) -> datetime:
    """The local start of the calendar window after the one starting at local `start`."""
    if kind == "DAY":
        d = start.date() + timedelta(days=1)
    elif kind == "WEEK":
        d = start.date() + timedelta(days=7)
    else:
        months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[kind]
        m = start.month - 1 + months
        return datetime(start.year + m // 12, m % 12 + 1, 1, tzinfo=zone)
    return datetime(d.year, d.month, d.day, tzinfo=zone)


def _calendar_start(instant: datetime, kind: str, zone: ZoneInfo) -> datetime:
    local = instant.astimezone(zone)
    if kind == "DAY":
        return _local_midnight(local, zone)
    if kind == "WEEK":  # ISO weeks: Monday
        monday = local.date() - timedelta(days=local.weekday())
        return datetime(monday.year, monday.month, monday.day, tzinfo=zone)
    if kind == "MONTH":
        return datetime(local.year, local.month, 1, tzinfo=zone)
    if kind == "QUARTER":
        return datetime(local.year, 3 * ((local.month - 1) // 3) + 1, 1, tzinfo=zone)
    return datetime(local.year, 1, 1, tzinfo=zone)


def windows(objective: Objective, terms: Terms, until: datetime) -> list[tuple[datetime, Span]]:
    """Every window of the objective that has closed by `until`: its own start, and the window
    cut to the term."""
    zone = ZoneInfo(terms.time_zone)
    begin = terms.effective_from
    end = min(until, terms.effective_to) if terms.effective_to else until
    out: list[tuple[datetime, Span]] = []
    if objective.window == "ROLLING":
        # Judged at each local midnight over the N × 24 hours before it (elapsed time, the
        # metrics service's documented rule), from the first midnight after the start to the
        # first midnight at or after the end (that last window measured up to the end).
        day = _local_midnight(begin.astimezone(zone), zone)
        while True:
            if terms.effective_to and day >= end:
                break
            nd = day.date() + timedelta(days=1)
            day = datetime(nd.year, nd.month, nd.day, tzinfo=zone)
            if day > until:
                break
            start = (day.astimezone(UTC) - timedelta(days=objective.rolling_days)).astimezone(zone)
            cut = (max(start, begin), min(day, end))
            if cut[0] < cut[1]:
                out.append(_utc(start, cut))
        return out
    start = _calendar_start(begin, objective.window, zone)
    while True:
        nxt = _next_start(start, objective.window, zone)
        # A window straddling the end closes at the end.
        closes = min(nxt, terms.effective_to) if terms.effective_to else nxt
        if closes > until or (terms.effective_to and start >= terms.effective_to):
            break
        cut = (max(start, begin), min(nxt, terms.effective_to) if terms.effective_to else nxt)
        if cut[0] < cut[1]:
            out.append(_utc(start, cut))
        start = nxt
    return out


def calendar_window(objective: Objective, terms: Terms, start: datetime) -> Span:
    """The whole window of the objective starting at `start` (as `windows` gives it), uncut by
    the term."""
    if objective.window == "ROLLING":
        return start, start + timedelta(days=objective.rolling_days)
    zone = ZoneInfo(terms.time_zone)
    return start, _next_start(start.astimezone(zone), objective.window, zone).astimezone(UTC)


def _utc(start: datetime, cut: Span) -> tuple[datetime, Span]:
    """In UTC: Python compares and subtracts two datetimes of one zone by their wall clocks."""
    return start.astimezone(UTC), (cut[0].astimezone(UTC), cut[1].astimezone(UTC))


# -- judgement ---------------------------------------------------------------------------


def availability(
    window: Span,
    outages: list[Span],
    exclusions: list[Span],
    min_outage_seconds: int,
    calendar: BusinessHours | None = None,
) -> Fraction | None:
    """(eligible − downtime) ÷ eligible × 100, eligible = window ∩ open hours − exclusions;
    touching reports are one outage, judged against the minimum on its whole length."""
    eligible = subtract(calendar.open_spans(window) if calendar else [window], exclusions)
    whole = [o for o in merge(outages) if length([o]) >= min_outage_seconds]
    e = length(eligible)
    if e == 0:
        return None
    return (e - length(overlap(whole, eligible))) / e * 100


def request_availability(
    window: Span,
    requests: list[tuple[datetime, int, int]],
    exclusions: Sequence[Span] = (),
    calendar: BusinessHours | None = None,
) -> Fraction | None:
    """Σ good ÷ Σ total × 100 over the counts that start in the window's eligible time —
    window ∩ open hours − exclusions (and suspended time), as for time-based availability
    (docs/domain.md §3 "Exclusions", §4 "Availability, request-based", OCCURRENCES); a probe
    is one request, good when it succeeded. No request measured → no value."""
    eligible = subtract(calendar.open_spans(window) if calendar else [window], list(exclusions))
    inside = [(g, t) for at, g, t in requests if any(a <= at < b for a, b in eligible)]
    total = sum(t for _, t in inside)
    return Fraction(sum(g for g, _ in inside) * 100, total) if total else None


Call = tuple[datetime, int, bool]  # entered the queue, waited (seconds), abandoned (else answered)


def service_level(window: Span, calls: list[Call], variant: str, t: int, short: int | None) -> Fraction | None:
    """docs/domain.md §4 "Contact centre": the calls that entered the queue in the window; A
    answered, Ab abandoned; "within T" inclusive, "before S" exclusive. With S set, short
    abandons leave Ab in the first four variants and count as successes in the fifth."""
    inside = [(wait, abandoned) for at, wait, abandoned in calls if window[0] <= at < window[1]]
    answered = [w for w, ab in inside if not ab]
    abandoned = [w for w, ab in inside if ab]
    short_ab = [w for w in abandoned if short is not None and w < short]
    if variant != "SHORT_ABANDONS_SUCCESS":
        abandoned = [w for w in abandoned if not (short is not None and w < short)]
    a_in_t = sum(1 for w in answered if w <= t)
    num, den = {
        "ANSWERED_OVER_OFFERED": (a_in_t, len(answered) + len(abandoned)),
        "ANSWERED_OVER_ANSWERED": (a_in_t, len(answered)),
        "ABANDONS_NEUTRAL": (a_in_t, len(answered) + sum(1 for w in abandoned if w > t)),
        "ABANDONS_SUCCESS": (a_in_t + sum(1 for w in abandoned if w <= t), len(answered) + len(abandoned)),
        "SHORT_ABANDONS_SUCCESS": (a_in_t + len(short_ab), len(answered) + len(abandoned)),
    }[variant]
    return Fraction(num * 100, den) if den else None


def asa(window: Span, calls: list[Call]) -> Fraction | None:
    """Σ queue wait of the answered calls ÷ their number, in seconds; zero waits count."""
    waits = [wait for at, wait, abandoned in calls if window[0] <= at < window[1] and not abandoned]
    return Fraction(sum(waits), len(waits)) if waits else None


def abandonment_rate(window: Span, calls: list[Call], short: int | None) -> Fraction | None:
    """(Ab − Ab<S) ÷ (O − Ab<S) × 100: short abandons are neither offered nor abandoned."""
    inside = [(wait, abandoned) for at, wait, abandoned in calls if window[0] <= at < window[1]]
    short_ab = sum(1 for w, ab in inside if ab and short is not None and w < short)
    offered = len(inside) - short_ab
    return Fraction((sum(1 for _, ab in inside if ab) - short_ab) * 100, offered) if offered else None


# -- incidents and failures (docs/domain.md §4 "MTTR / MTRS", "MTBF") ---------------------


@dataclass(frozen=True)
class Incident:
    failure_start: datetime
    responded: datetime | None = None
    restored: datetime | None = None
    resolved: datetime | None = None

    def stop(self, r: str) -> datetime | None:
        """Where the clock stops for the "R" the objective means."""
        return {"REPAIR": self.restored, "RESTORE": self.restored, "RESOLVE": self.resolved}.get(r, self.responded)


def eligible_time(window: Span, holes: list[Span], calendar: BusinessHours | None) -> list[Span]:
    """The window ∩ the calendar's open hours − exclusions (and suspended time)."""
    return subtract(calendar.open_spans(window) if calendar else [window], holes)


def mttr(
    window: Span, incidents: list[Incident], r: str, holes: list[Span], calendar: BusinessHours | None
) -> Fraction | None:
    """Total downtime ÷ the incidents restored in the window, in minutes: the downtime is the
    union of each incident's [failure start, its stop) in the window's eligible time — one still
    running counting up to the window's end — and an incident is restored in the window when
    its stop falls in it. None restored → no value."""
    restored = [i for i in incidents if (stop := i.stop(r)) is not None and window[0] <= stop < window[1]]
    if not restored:
        return None
    spans = [(i.failure_start, i.stop(r) or window[1]) for i in incidents]
    downtime = length(overlap(merge(spans), eligible_time(window, holes, calendar)))
    return downtime / 60 / len(restored)


def mtbf(window: Span, outages: list[Span], holes: list[Span], calendar: BusinessHours | None) -> Fraction | None:
    """(eligible time − downtime) ÷ the failures that start in the window, in hours; a failure
    is an outage (overlapping or touching ones are one, as for availability). No failure →
    undefined (and the objective counts as met)."""
    whole = merge(outages)
    failures = [o for o in whole if window[0] <= o[0] < window[1]]
    eligible = eligible_time(window, holes, calendar)
    if not failures or not eligible:
        return None
    return (length(eligible) - length(overlap(whole, eligible))) / 3600 / len(failures)


# -- contacts (docs/domain.md §4 "Contact centre": FCR, AHT) ------------------------------


@dataclass(frozen=True)
class Contact:
    """A call with everything the contact-centre metrics read."""

    entered: datetime
    wait: int  # seconds in the queue
    abandoned: bool
    talk: Fraction = Fraction(0)
    hold: Fraction = Fraction(0)
    after_call: Fraction = Fraction(0)
    customer: str = ""
    reason: str = ""
    resolved: bool | None = None  # the agent's flag; None: not flagged


def aht(window: Span, contacts: list[Contact]) -> Fraction | None:
    """(talk + hold + after-call work) ÷ handled contacts (the answered calls that entered the
    queue in the window), in seconds."""
    handled = [c for c in contacts if window[0] <= c.entered < window[1] and not c.abandoned]
    if not handled:
        return None
    return sum((c.talk + c.hold + c.after_call for c in handled), Fraction(0)) / len(handled)


def fcr(window: Span, contacts: list[Contact], method: str, repeat_days: Fraction) -> Fraction | None:
    """Contacts resolved at the first contact ÷ first contacts, in percent. Handled (answered)
    calls of one customer for one reason form episodes: a first contact and the repeats that
    arrive within the repeat window after it (inclusive); the next call after that opens a new
    episode. Each first contact is judged once, in the window in which its outcome became known
    (as tickets are): FLAGGED at the contact itself — resolved when the agent flagged it resolved
    (unflagged: not resolved); REPEAT_CONTACT (calls with a customer only) at its first repeat —
    not resolved — or, without one, once its repeat window has passed, at its arrival + the
    window (a repeat at that very instant would still be one) — resolved."""
    span = timedelta(seconds=int(repeat_days * 86400))
    handled = sorted(
        (c for c in contacts if not c.abandoned and (c.customer or method == "FLAGGED")), key=lambda c: c.entered
    )
    episodes: dict[tuple[str, str], list[tuple[Contact, Contact | None]]] = {}
    for c in handled:
        mine = episodes.setdefault((c.customer, c.reason), [])
        if mine and c.entered <= mine[-1][0].entered + span:
            if mine[-1][1] is None:  # its first repeat
                mine[-1] = (mine[-1][0], c)
        else:
            mine.append((c, None))
    firsts, resolved = 0, 0
    for first, repeat in (e for mine in episodes.values() for e in mine):
        if method == "FLAGGED":
            known, ok = first.entered, first.resolved is True
        elif repeat is not None:
            known, ok = repeat.entered, False
        else:
            known, ok = first.entered + span, True
        if window[0] <= known < window[1]:
            firsts += 1
            resolved += ok
    return Fraction(resolved * 100, firsts) if firsts else None


# -- tickets and tasks (docs/domain.md §4 "Tickets and tasks") ---------------------------


@dataclass(frozen=True)
class Work:
    """A ticket (start: opened; stops: first response, resolution) or a task (start: received;
    stop: completed), its pauses (the last may have no end: not resumed yet)."""

    work_id: str
    start: datetime
    stop: datetime | None
    pauses: tuple[tuple[datetime, datetime | None], ...] = ()
    priority: str = ""


FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


def _counting(start: datetime, until: datetime, w: Work, calendar: BusinessHours | None) -> list[Span]:
    """The spans of [start, until) the clock runs: open hours, not paused."""
    pauses = [(a, b or FOREVER) for a, b in w.pauses]
    return subtract(calendar.open_spans((start, until)) if calendar else [(start, until)], pauses)


def work_deadline(w: Work, target_seconds: int, calendar: BusinessHours | None) -> datetime | None:
    """The last instant at which a stop still meets the target: where the clock reaches the
    target, or, when it reaches it at the end of a counting span, the start of the next one
    (a stop while the clock stands still reads the same). None: the clock never gets there."""
    left, reached, a = Fraction(target_seconds), False, w.start
    for _ in range(40):  # in chunks of 30 days
        for s, e in _counting(a, a + timedelta(days=30), w, calendar):
            if reached:
                return s
            span = length([(s, e)])
            if left < span:
                return s + timedelta(microseconds=int(left * 1_000_000))
            left -= span
            reached = left == 0
        a += timedelta(days=30)
    return None


def compliance(
    window: Span, items: list[Work], target_seconds: int, calendar: BusinessHours | None
) -> tuple[Fraction | None, list[str]]:
    """Items that met the target ÷ items due in the window, in percent, and the late ones'
    ids. An item is judged once, in the window in which its outcome became known: at its stop
    when the clock then read at most the target, otherwise at its deadline."""
    met, due, late = 0, 0, []
    for w in items:
        at: datetime | None
        if w.stop is not None and length(_counting(w.start, w.stop, w, calendar)) <= target_seconds:
            at, ok = w.stop, True
        else:
            at, ok = work_deadline(w, target_seconds, calendar), False
        if at is None or not window[0] <= at < window[1]:
            continue
        due += 1
        met += ok
        if not ok:
            late.append(w.work_id)
    return (Fraction(met * 100, due) if due else None), late


# -- marketing ↔ sales (docs/domain.md §4 "Marketing ↔ sales") ---------------------------


@dataclass(frozen=True)
class Lead:
    created: datetime
    handed_off: datetime | None = None
    follow_ups: tuple[datetime, ...] = ()
    converted: bool = False
    revenue: Fraction = Fraction(0)


@dataclass(frozen=True)
class Deal:
    closed_at: datetime
    revenue: Fraction
    marketing_sourced: bool


def close_rate(window: Span, leads: list[Lead]) -> Fraction | None:
    """Marketing leads (created in the window) that became customers ÷ those leads, in percent."""
    inside = [x for x in leads if window[0] <= x.created < window[1]]
    return Fraction(sum(1 for x in inside if x.converted) * 100, len(inside)) if inside else None


def deal_size(window: Span, leads: list[Lead]) -> Fraction | None:
    """Revenue from the leads (created in the window) that became customers ÷ their number."""
    won = [x for x in leads if window[0] <= x.created < window[1] and x.converted]
    return sum((x.revenue for x in won), Fraction(0)) / len(won) if won else None


def revenue_share(window: Span, deals: list[Deal]) -> Fraction | None:
    """Revenue of the marketing-sourced deals closed in the window ÷ all revenue closed in it,
    in percent; no revenue → no value."""
    inside = [d for d in deals if window[0] <= d.closed_at < window[1]]
    total = sum((d.revenue for d in inside), Fraction(0))
    return sum((d.revenue for d in inside if d.marketing_sourced), Fraction(0)) * 100 / total if total else None


def follow_up_speed(
    window: Span, leads: list[Lead], target_hours: int, calendar: BusinessHours | None
) -> Fraction | None:
    """Leads followed up within the target on the objective's calendar ÷ the leads judged, in
    percent. Each handed-off lead is judged once, in the window in which its outcome became
    known, as a ticket's response is (`compliance`): from its hand-off to its first follow-up
    (the earliest at or after the hand-off), within the target when it came then, otherwise
    missed at the deadline — the last instant a follow-up would still have met the target."""
    items = [
        Work("", x.handed_off, min((f for f in x.follow_ups if f >= x.handed_off), default=None))
        for x in leads
        if x.handed_off is not None
    ]
    return compliance(window, items, target_hours * 3600, calendar)[0]


def follow_up_depth(window: Span, leads: list[Lead], days: int) -> Fraction | None:
    """Follow-up attempts per lead, averaged over the leads judged in the window: each handed-off
    lead once, when its `days` after the hand-off have passed — at the hand-off + `days` × 24 h,
    the last instant an attempt still counts — with the attempts in those days (inclusive at both
    ends)."""
    attempts, counted = 0, 0
    for x in leads:
        if x.handed_off is None:
            continue
        until = x.handed_off + timedelta(days=days)
        if not window[0] <= until < window[1]:
            continue
        counted += 1
        attempts += sum(1 for f in x.follow_ups if x.handed_off <= f <= until)
    return Fraction(attempts, counted) if counted else None


def _local_days(span: Span, zone: ZoneInfo) -> int:
    """The local calendar days `span` has any part of: one for each local midnight-to-midnight
    day it overlaps."""
    day, days = span[0].astimezone(zone).date(), 0
    while datetime(day.year, day.month, day.day, tzinfo=zone) < span[1]:
        days += 1
        day += timedelta(days=1)
    return days


def leads_needed(objective: Objective, in_force: Span, window: Span, zone: ZoneInfo) -> Fraction:
    """Sales target × share of revenue from marketing ÷ average deal size ÷ close rate, for a
    whole window; a closed window the agreement is in force for only part of (its start or end
    cuts it) needs that figure × the days it is in force ÷ the window's days — the marketing
    objective covers the days the agreement holds, no more (a day the agreement starts or
    ends in is one of its days)."""
    p = objective.parameter
    whole = (
        Fraction(p("sales_target")) * Fraction(p("marketing_revenue_share"))
        / Fraction(p("average_deal_size")) / Fraction(p("close_rate"))
    )  # fmt: skip
    return whole * _local_days(in_force, zone) / _local_days(window, zone)


@dataclass(frozen=True)
class Signals:
    """The signals of the metrics besides outages, requests and queue calls."""

    incidents: tuple[Incident, ...] = ()
    contacts: tuple[Contact, ...] = ()
    tickets: tuple[tuple[Work, Work], ...] = ()  # (to the first response, to the resolution)
    tasks: tuple[Work, ...] = ()
    leads: tuple[Lead, ...] = ()
    deals: tuple[Deal, ...] = ()


def value_of(
    objective: Objective,
    w: Span,
    holes: list[Span],
    outages: list[Span],
    requests: list[tuple[datetime, int, int]],
    calls: list[Call],
    signals: Signals,
    window: Span | None = None,
    zone: ZoneInfo | None = None,
) -> tuple[Fraction | None, Fraction]:
    """The objective's value over the measured window `w` (the part of the calendar `window`
    the agreement is in force; `w` itself by default), and the target it is held to."""
    metric, target = objective.metric, objective.target
    contacts = list(signals.contacts)
    if metric == "ASA":
        return asa(w, calls), target
    if metric == "ABANDONMENT_RATE":
        return abandonment_rate(w, calls, objective.service_level[2] if objective.service_level else None), target
    if metric == "SERVICE_LEVEL" and objective.service_level is not None:
        return service_level(w, calls, *objective.service_level), target
    if metric == "AVAILABILITY_REQUESTS":
        return request_availability(w, requests, holes, objective.calendar), target
    if metric == "AVAILABILITY_TIME":
        return availability(w, outages, holes, objective.min_outage_seconds, objective.calendar), target
    if metric == "MTTR":
        return mttr(w, list(signals.incidents), objective.parameter("r", "RESTORE"), holes, objective.calendar), target
    if metric == "MTBF":
        return mtbf(w, outages, holes, objective.calendar), target
    if metric == "FIRST_CONTACT_RESOLUTION":
        days = Fraction(objective.parameter("repeat_window_days", "7"))
        return fcr(w, contacts, objective.parameter("method", "FLAGGED"), days), target
    if metric == "AVERAGE_HANDLE_TIME":
        return aht(w, contacts), target
    minutes = int(objective.parameter("target_minutes", "0")) * 60
    if metric in ("TICKET_RESPONSE", "TICKET_RESOLUTION"):
        leg = 0 if metric == "TICKET_RESPONSE" else 1
        tickets = [t[leg] for t in signals.tickets if t[leg].priority == objective.parameter("priority")]
        return compliance(w, tickets, minutes, objective.calendar)[0], target
    if metric == "TASK_TURNAROUND":
        return compliance(w, list(signals.tasks), minutes, objective.calendar)[0], target
    leads = list(signals.leads)
    if metric == "CLOSE_RATE":
        return close_rate(w, leads), target
    if metric == "DEAL_SIZE":
        return deal_size(w, leads), target
    if metric == "MARKETING_REVENUE_SHARE":
        return revenue_share(w, list(signals.deals)), target
    if metric == "FOLLOW_UP_SPEED":
        return follow_up_speed(w, leads, int(objective.parameter("target_hours")), objective.calendar), target
    if metric == "FOLLOW_UP_DEPTH":
        return follow_up_depth(w, leads, int(objective.parameter("window_days", "14"))), target
    if metric == "LEADS_NEEDED":
        # The value is the leads handed off in the window, the target the leads needed.
        handed = sum(1 for x in leads if x.handed_off is not None and w[0] <= x.handed_off < w[1])
        return Fraction(handed), leads_needed(objective, w, window or w, zone or ZoneInfo("UTC"))
    raise ValueError(f"the model has no rule for {metric}")


# Metrics whose value is undefined when nothing failed, and then count as met (docs/domain.md §4 "MTBF").
MET_WHEN_UNDEFINED = {"MTBF"}


def judge(
    terms: Terms,
    outages: list[Span] | dict[str, list[Span]],
    until: datetime,
    requests: list[tuple[datetime, int, int]] | None = None,
    calls: list[Call] | None = None,
    signals: Signals | None = None,
) -> list[Judged]:
    """Every closed window of every objective, judged by the version in force at its measured
    start. Suspended time is left out like an exclusion; a window suspended throughout is
    NO_DATA (docs/domain.md §3 "No data": nothing eligible). `outages` per service (a dict): a
    window reads those of the services of its version (`Terms.services`)."""
    out = []
    for o in terms.objectives:
        for start, w in windows(o, terms, until):
            version = terms.in_force(w[0])
            objective = next((v for v in version.objectives if v.objective_id == o.objective_id), None)
            if objective is None:
                continue
            holes = [*version.exclusions, *terms.suspensions]
            measured = outages_measured(outages, version.services)
            value, target = value_of(
                objective, w, holes, measured, requests or [], calls or [],
                signals or Signals(), calendar_window(o, terms, start), ZoneInfo(terms.time_zone),
            )  # fmt: skip
            suspended = not subtract([w], list(terms.suspensions))
            if suspended:
                value = None
            met = value is not None and (value <= target if objective.comparator == "AT_MOST" else value >= target)
            if value is None:
                # Undefined for want of a failure, not for want of eligible time (no data).
                measured = bool(eligible_time(w, holes, objective.calendar))
                status = "MET" if objective.metric in MET_WHEN_UNDEFINED and measured else "NO_DATA"
            else:
                status = "MET" if met else "BREACHED"
            out.append(Judged(o.objective_id, start, w, value, status, version))
    return out


def outages_measured(outages: list[Span] | dict[str, list[Span]], services: tuple[str, ...] | None) -> list[Span]:
    """The outages a window reads: of the services its version is measured on (all, when the
    outages are not given per service or the version lists none)."""
    if not isinstance(outages, dict):
        return outages
    return [o for sid, spans in sorted(outages.items()) if services is None or sid in services for o in spans]


# -- money -------------------------------------------------------------------------------


def round_money(amount: Fraction, exponent: int) -> Decimal:
    exact = Decimal(amount.numerator) / Decimal(amount.denominator)
    return exact.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_EVEN)


def credit_percent(objective: Objective, value: Fraction | None) -> Fraction:
    if value is None:
        return Fraction(0)
    for t in objective.tiers:
        if t.holds(value):
            return t.credit_percent
    return Fraction(0)


def fee_periods(terms: Terms, until: datetime) -> list[tuple[datetime, Span]]:
    """Calendar months of the agreement's zone from the month it starts in, cut to its term."""
    month = Objective("fee", Fraction(0), "MONTH")
    return windows(month, terms, until)


def period_of(instant: datetime, periods: list[tuple[datetime, Span]]) -> datetime | None:
    """The fee period (by its own start) holding `instant`."""
    for start, (a, b) in periods:
        if a <= instant < b:
            return start
    return None


def windows_by_period(terms: Terms, judged: list[Judged], until: datetime) -> dict[datetime, list[Judged]]:
    """The windows billed in each fee period (by the period's own start)."""
    periods = fee_periods(terms, until)
    out: dict[datetime, list[Judged]] = {start: [] for start, _ in periods}
    for j in judged:
        start = period_of(j.window[1] - timedelta(microseconds=1), periods)
        if start is not None:
            out[start].append(j)
    return out


def month_of(terms: Terms, period_start: datetime) -> Span:
    """The whole calendar month of the agreement's zone starting at `period_start`, in UTC."""
    zone = ZoneInfo(terms.time_zone)
    local = period_start.astimezone(zone)
    return local.astimezone(UTC), _next_start(local, "MONTH", zone).astimezone(UTC)


def charged(terms: Terms, span: Span, fee_basis: int = 2) -> list[Span]:
    """The part of `span` the fee is charged for: the agreement not suspended and — rule 2, the
    current one — in its term; rule 1 (statements billing issued before rule 2) charged a month
    the agreement was in term for any part of whole, less suspended time."""
    if fee_basis >= 2:
        term = (terms.effective_from, terms.effective_to or span[1])
        span = (max(span[0], term[0]), min(span[1], term[1]))
    return subtract([span], list(terms.suspensions)) if span[0] < span[1] else []


def charged_share(terms: Terms, period_start: datetime, fee_basis: int = 2) -> Fraction:
    """The share of the month the fee is charged for (docs/domain.md §5: the fee is owed for
    the time the agreement is in its term and not suspended), which a band's or the cap's
    "% of the period's fee" is of: 1 under rule 1 (of the terms' fee)."""
    if fee_basis < 2:
        return Fraction(1)
    month = month_of(terms, period_start)
    return length(charged(terms, month)) / length([month])


def credits(terms: Terms, judged: list[Judged], until: datetime, fee_basis: int = 2) -> dict[datetime, Decimal]:
    """Each fee period's credits: per objective the worst window billed in the period (a window
    is billed in the period holding its last measured instant) — the one owing most: its
    band's percentage of the fee the period charges under its judging version (that version's
    fee × the charged share of the month; rule 1: the version's fee); the sum capped, and
    nothing under the minimum, by the cap and minimum of the period's earliest window's version
    (the cap a percentage of that version's fee × the same share) (docs/domain.md §5)."""
    out: dict[datetime, Decimal] = {}
    for start, billed in windows_by_period(terms, judged, until).items():
        share = charged_share(terms, start, fee_basis)
        worst: dict[str, Decimal] = {}
        for j in billed:
            v = j.version or terms
            objective = next(o for o in v.objectives if o.objective_id == j.objective_id)
            pct = credit_percent(objective, j.value) if j.status != "NO_DATA" else Fraction(0)
            amount = round_money(v.fee * share * pct / 100, terms.currency_exponent)
            worst[j.objective_id] = max(worst.get(j.objective_id, Decimal(0)), amount)
        first = (min(billed, key=lambda j: j.start).version or terms) if billed else terms
        amount = sum(worst.values(), Decimal(0))
        if first.cap_percent is not None:
            cap = round_money(first.fee * share * first.cap_percent / 100, terms.currency_exponent)
            amount = min(amount, cap)
        minimum = first.minimum_amount
        if minimum is not None and amount < Decimal(minimum.numerator) / minimum.denominator:
            amount = Decimal(0)
        out[start] = round_money(Fraction(amount), terms.currency_exponent)
    return out


def fee_charged(terms: Terms, period_start: datetime, fee_basis: int = 2) -> Decimal:
    """The fee charged for the fee period starting at `period_start` (a calendar month of the
    agreement's zone): each version's monthly fee × the share of the month it was in force and
    charged (`charged`: in the term, not suspended), summed and rounded once; nothing for a
    month starting at or after the agreement's end."""
    start, end = month_of(terms, period_start)
    if terms.effective_to is not None and terms.effective_to <= start:
        return Decimal(0)
    cuts = sorted({start, *(t for t, _ in terms.amendments if start < t < end)})
    total = Fraction(0)
    for a, b in zip(cuts, [*cuts[1:], end], strict=True):
        version = terms.in_force(max(a, terms.effective_from))
        total += version.fee * length(charged(terms, (a, b), fee_basis)) / length([(start, end)])
    return round_money(total, terms.currency_exponent)
