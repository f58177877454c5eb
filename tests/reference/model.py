"""A reference model of the money pipeline, written from the domain rules (docs/domain.md
§3–§5) and not from the services' code: agreement terms + raw signals + the clock →
each window's availability and judgement → each fee period's credits.

It is deliberately plain: exact fractions, datetimes from the standard library, one
function per rule, no shared code with the services. The property test in
`tests/test_reference_model.py` runs generated journeys through the real services and
demands the same windows and the same money, to the minor unit.

Scope (what the model knows): time-based availability objectives on a 24x7 or business-hours
calendar (weekly opening hours and holidays in a zone), with
calendar windows (DAY, WEEK, MONTH, QUARTER, YEAR in the agreement's zone) or rolling N-day
windows, a minimum outage length, declared maintenance exclusions, credit tiers with
explicit bounds, a monthly fee, a cap and a minimum per fee period, an agreement that may end,
amendments in force from an instant (each window judged and credited by the version in force
at its measured start; the fee charged by each version's share of the month), suspensions
(left out of measurement, not charged), an agreement with a fee and no objectives, and
request-based availability (OCCURRENCES over request counts and probes) and the contact
centre's service level in its five variants, ASA and abandonment rate (counted metrics: counted whether or not the
agreement was suspended, the metrics service's stated rule).
Corrections and inheritance need nothing of their own here: the caller passes each signal's
latest content, and a child's effective terms.
"""

from __future__ import annotations

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


def request_availability(window: Span, requests: list[tuple[datetime, int, int]]) -> Fraction | None:
    """Σ good ÷ Σ total × 100 over the counts that start in the window (docs/domain.md §4
    "Availability, request-based", OCCURRENCES); a probe is one request, good when it
    succeeded. No request → no value."""
    inside = [(g, t) for at, g, t in requests if window[0] <= at < window[1]]
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


def judge(
    terms: Terms,
    outages: list[Span],
    until: datetime,
    requests: list[tuple[datetime, int, int]] | None = None,
    calls: list[Call] | None = None,
) -> list[Judged]:
    """Every closed window of every objective, judged by the version in force at its measured
    start. Suspended time is left out like an exclusion; a window suspended throughout is
    NO_DATA (docs/domain.md §3 "No data": nothing eligible)."""
    out = []
    for o in terms.objectives:
        for start, w in windows(o, terms, until):
            version = terms.in_force(w[0])
            objective = next((v for v in version.objectives if v.objective_id == o.objective_id), None)
            if objective is None:
                continue
            holes = [*version.exclusions, *terms.suspensions]
            if objective.metric == "ASA":
                value = asa(w, calls or [])
            elif objective.metric == "ABANDONMENT_RATE":
                value = abandonment_rate(
                    w, calls or [], objective.service_level[2] if objective.service_level else None
                )
            elif objective.service_level is not None:
                value = service_level(w, calls or [], *objective.service_level)
            elif objective.metric == "AVAILABILITY_REQUESTS":
                # Counted, suspended or not (the metrics service's stated rule for counted metrics).
                value = request_availability(w, requests or [])
            else:
                value = availability(w, outages, holes, objective.min_outage_seconds, objective.calendar)
            if not subtract([w], list(terms.suspensions)):
                value = None
            met = value is not None and (
                value <= objective.target if objective.comparator == "AT_MOST" else value >= objective.target
            )
            status = "NO_DATA" if value is None else ("MET" if met else "BREACHED")
            out.append(Judged(o.objective_id, start, w, value, status, version))
    return out


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


def credits(terms: Terms, judged: list[Judged], until: datetime) -> dict[datetime, Decimal]:
    """Each fee period's credits: per objective the worst window billed in the period (a window
    is billed in the period holding its last measured instant) — the one owing most: its
    band's percentage of its judging version's fee; the sum capped, and nothing under the
    minimum, by the cap and minimum of the period's earliest window's version
    (docs/domain.md §5)."""
    out: dict[datetime, Decimal] = {}
    for start, billed in windows_by_period(terms, judged, until).items():
        worst: dict[str, Decimal] = {}
        for j in billed:
            v = j.version or terms
            objective = next(o for o in v.objectives if o.objective_id == j.objective_id)
            pct = credit_percent(objective, j.value) if j.status != "NO_DATA" else Fraction(0)
            amount = round_money(v.fee * pct / 100, terms.currency_exponent)
            worst[j.objective_id] = max(worst.get(j.objective_id, Decimal(0)), amount)
        first = (min(billed, key=lambda j: j.start).version or terms) if billed else terms
        amount = sum(worst.values(), Decimal(0))
        if first.cap_percent is not None:
            amount = min(amount, round_money(first.fee * first.cap_percent / 100, terms.currency_exponent))
        minimum = first.minimum_amount
        if minimum is not None and amount < Decimal(minimum.numerator) / minimum.denominator:
            amount = Decimal(0)
        out[start] = round_money(Fraction(amount), terms.currency_exponent)
    return out


def fee_charged(terms: Terms, period_start: datetime) -> Decimal:
    """The fee charged for the fee period starting at `period_start` (a calendar month of the
    agreement's zone): each version's monthly fee × the share of the month it was in force
    and not suspended (the first version from the month's start), summed and rounded once;
    nothing for a month starting at or after the agreement's end."""
    zone = ZoneInfo(terms.time_zone)
    local = period_start.astimezone(zone)
    start, end = local.astimezone(UTC), _next_start(local, "MONTH", zone).astimezone(UTC)
    if terms.effective_to is not None and terms.effective_to <= start:
        return Decimal(0)
    cuts = sorted({start, *(t for t, _ in terms.amendments if start < t < end)})
    total = Fraction(0)
    for a, b in zip(cuts, [*cuts[1:], end], strict=True):
        version = terms.in_force(max(a, terms.effective_from))
        kept = length(subtract([(a, b)], list(terms.suspensions)))
        total += version.fee * kept / length([(start, end)])
    return round_money(total, terms.currency_exponent)
