"""Ticket, task and marketing ↔ sales formulas (docs/domain.md §4 "Tickets and tasks", "Marketing ↔ sales")."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord_kit.timeline import AlwaysOpen, BusinessCalendar, Interval, calendar_window
from accord_metrics.evaluation import SignalSet, judge
from accord_metrics.formulas.work import (
    Deal,
    Lead,
    Task,
    Ticket,
    business_elapsed,
    close_rate,
    deal_size,
    follow_up_depth,
    follow_up_speed,
    leads_needed,
    marketing_revenue_share,
    task_turnaround,
    ticket_compliance,
)

H = timedelta(hours=1)
AMS = "Europe/Amsterdam"


def t(s: str) -> datetime:
    """An instant; without an offset it is UTC."""
    d = datetime.fromisoformat(s)
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).astimezone(UTC)


def iv(a: str, b: str) -> Interval:
    return Interval(t(a), t(b))


# Monday–Friday 09:00–17:00 in Amsterdam; Friday 25 December 2026 is a holiday.
OFFICE = BusinessCalendar(
    AMS, tuple((d, "09:00", "17:00") for d in range(1, 6)), frozenset({date(2026, 12, 25)}), "office", 3
)
MARCH_AMS = calendar_window("MONTH", t("2026-03-15T12:00"), AMS)
MARCH = iv("2026-03-01T00:00", "2026-04-01T00:00")
APRIL = iv("2026-04-01T00:00", "2026-05-01T00:00")
FEBRUARY = iv("2026-02-01T00:00", "2026-03-01T00:00")


# -- the clock: business time minus pauses counted once -----------------------------------------
PAUSED = Ticket(
    "PAUSED",
    "P2",
    opened=t("2026-03-02T10:00+01:00"),  # Monday
    resolved=t("2026-03-03T14:00+01:00"),  # Tuesday
    paused=(
        iv("2026-03-02T11:00+01:00", "2026-03-02T13:00+01:00"),
        iv("2026-03-02T12:00+01:00", "2026-03-02T14:00+01:00"),  # overlaps the first: together 11–14
        iv("2026-03-02T11:00+01:00", "2026-03-02T13:00+01:00"),  # the first again, recorded twice
        iv("2026-03-02T16:00+01:00", "2026-03-03T10:00+01:00"),  # over the night: only 16–17 and 09–10 count
        iv("2026-03-07T10:00+01:00", "2026-03-07T12:00+01:00"),  # after the resolution: irrelevant
    ),
)


def test_business_time_minus_overlapping_pauses() -> None:
    # business time Mon 10–17 (7 h) + Tue 09–14 (5 h) = 12 h
    # pauses: Mon 11–14 once (3 h, not 2 + 2 + 2 = 6 h) + Mon 16–17 and Tue 09–10 (2 h, not the 18 h wall clock)
    # elapsed = 12 − 3 − 2 = 7 h
    assert business_elapsed(PAUSED.opened, t("2026-03-03T14:00+01:00"), PAUSED.paused, OFFICE) == 7 * H
    r = ticket_compliance([PAUSED], MARCH_AMS, "RESOLUTION", "P2", 7 * H, OFFICE)
    assert r.value == Decimal(100)  # 7 h ≤ 7 h: met (the target is inclusive)
    assert r.detail["mean_elapsed_seconds"] == "25200"
    # target 6 h 59 min: late. Counted clock: Mon 10–11 (1 h), Mon 14–16 (2 h), Tue 10–14 (4 h);
    # 1 h + 2 h = 3 h, the remaining 3 h 59 min run out at Tue 13:59 CET = 12:59 UTC.
    r = ticket_compliance([PAUSED], MARCH_AMS, "RESOLUTION", "P2", 6 * H + 59 * timedelta(minutes=1), OFFICE)
    assert r.value == Decimal(0)
    assert r.detail["late"] == "PAUSED"
    assert r.detail["late.PAUSED.deadline"] == "2026-03-03T12:59:00+00:00"
    assert r.detail["late.PAUSED.elapsed_seconds"] == "25200"
    assert r.parameters == {
        "kind": "RESOLUTION",
        "priority": "P2",
        "target_seconds": "25140",
        "window_start": "2026-02-28T23:00:00+00:00",
        "window_end": "2026-03-31T22:00:00+00:00",
        "as_of": "none",
        "calendar": "office",
        "calendar_version": "3",
    }


# -- DST inside a business day (Europe/Amsterdam) ------------------------------------------------
# Sunday hours 01:00–05:00 local: on 29 March 2026 the clocks jump 02:00 → 03:00 inside them,
# on 25 October 2026 they fall back 03:00 → 02:00 inside them.
SUNDAY_NIGHT = BusinessCalendar(AMS, ((7, "01:00", "05:00"),), calendar_id="sunday-night")


def test_a_spring_dst_change_inside_business_hours_makes_the_day_an_hour_shorter() -> None:
    # 01:00 CET (00:00 UTC) → 05:00 CEST (03:00 UTC): 3 h of business time, though the wall clock shows 4 h
    tk = Ticket("SPRING", "P1", t("2026-03-29T01:00+01:00"), first_response=t("2026-03-29T05:00+02:00"))
    assert business_elapsed(tk.opened, t("2026-03-29T05:00+02:00"), (), SUNDAY_NIGHT) == 3 * H
    assert ticket_compliance([tk], MARCH_AMS, "RESPONSE", "P1", 3 * H, SUNDAY_NIGHT).value == Decimal(100)
    # target 2 h 30 min: late; the deadline is 00:00 UTC + 2 h 30 = 02:30 UTC (04:30 CEST)
    r = ticket_compliance([tk], MARCH_AMS, "RESPONSE", "P1", 2 * H + 30 * timedelta(minutes=1), SUNDAY_NIGHT)
    assert r.value == Decimal(0) and r.detail["late.SPRING.deadline"] == "2026-03-29T02:30:00+00:00"


def test_an_autumn_dst_change_inside_business_hours_makes_the_day_an_hour_longer() -> None:
    # 01:00 CEST (24 Oct 23:00 UTC) → 05:00 CET (04:00 UTC): 5 h of business time; the wall clock shows 4 h
    tk = Ticket("AUTUMN", "P1", t("2026-10-25T01:00+02:00"), first_response=t("2026-10-25T05:00+01:00"))
    october = calendar_window("MONTH", t("2026-10-15T00:00"), AMS)
    target = 4 * H + 30 * timedelta(minutes=1)
    r = ticket_compliance([tk], october, "RESPONSE", "P1", target, SUNDAY_NIGHT)
    # 5 h > 4 h 30: late (a wall-clock reading of 4 h would have called it met);
    # deadline 23:00 UTC + 4 h 30 = 03:30 UTC (04:30 CET)
    assert r.value == Decimal(0)
    assert r.detail["late.AUTUMN.deadline"] == "2026-10-25T03:30:00+00:00"
    assert r.detail["late.AUTUMN.elapsed_seconds"] == "18000"


# -- holidays --------------------------------------------------------------------------------------
def test_a_holiday_stops_the_clock() -> None:
    # opened Thu 24 Dec 2026 15:00; Fri 25 Dec is a holiday, then the weekend.
    # Thu 15–17 (2 h) + Mon 28 Dec 09–11 (2 h) = 4 h at Mon 11:00 CET.
    on_time = Ticket("ON-TIME", "P3", t("2026-12-24T15:00+01:00"), resolved=t("2026-12-28T11:00+01:00"))
    half_second_late = Ticket("LATE", "P3", t("2026-12-24T15:00+01:00"), resolved=t("2026-12-28T11:00:00.500000+01:00"))
    december = calendar_window("MONTH", t("2026-12-10T00:00"), AMS)
    r = ticket_compliance([on_time, half_second_late], december, "RESOLUTION", "P3", 4 * H, OFFICE)
    # met 1 of 2 due = 50 %; the late one missed by half a second (no rounding to minutes)
    assert r.value == Decimal(50)
    assert r.detail["late"] == "LATE" and r.detail["late.LATE.elapsed_seconds"] == "14400.5"
    assert r.detail["late.LATE.deadline"] == "2026-12-28T10:00:00+00:00"
    # without the holiday both would be late: the deadline would be Fri 25 Dec 11:00
    no_holiday = replace(OFFICE, holidays=frozenset())
    assert ticket_compliance([on_time, half_second_late], december, "RESOLUTION", "P3", 4 * H, no_holiday).value == 0


# -- which tickets are due in a window ------------------------------------------------------------
def p1(ticket_id: str, opened: str, response: str | None) -> Ticket:
    return Ticket(ticket_id, "P1", t(opened), first_response=None if response is None else t(response))


DUE = [
    p1("A", "2026-03-10T08:00", "2026-03-10T10:00"),  # 2 h: met, decided at its response, 10 Mar
    p1("B", "2026-03-10T08:00", "2026-03-10T13:00"),  # 5 h: late, decided at its deadline 12:00, 10 Mar
    p1("C", "2026-03-31T22:00", "2026-04-01T01:00"),  # 3 h: met on 1 Apr → April
    p1("D", "2026-03-31T22:00", "2026-04-01T03:00"),  # 5 h: late, deadline 1 Apr 02:00 → April
    p1("E", "2026-03-31T18:00", None),  # open, deadline 31 Mar 22:00 → late in March
    p1("F", "2026-03-31T21:00", None),  # open, deadline 1 Apr 01:00 → not yet late at the end of March
    p1("G", "2026-02-28T23:00", "2026-03-01T01:00"),  # opened in February, met on 1 Mar → March
    p1("H", "2026-02-28T20:00", "2026-03-01T02:00"),  # 6 h: late, deadline exactly 1 Mar 00:00 → March
    p1("I", "2026-03-28T08:00", "2026-03-28T12:00"),  # exactly 4 h: met
    Ticket("J", "P2", t("2026-03-10T08:00")),  # another priority
]


def test_due_in_the_window_is_decided_by_the_outcome_instant() -> None:
    always = AlwaysOpen()
    march = ticket_compliance(DUE, MARCH, "RESPONSE", "P1", 4 * H, always)
    # due in March: A, B, E, G, H, I (6); met: A, G, I (3) → 3 ÷ 6 = 50 %
    assert march.value == Decimal(50)
    assert march.detail["due"] == "6" and march.detail["met"] == "3"
    assert march.detail["late"] == "B,E,H" and march.detail["late_open"] == "E"
    assert march.detail["late.H.deadline"] == "2026-03-01T00:00:00+00:00"
    assert march.detail["late.E.deadline"] == "2026-03-31T22:00:00+00:00"
    assert march.detail["late.E.elapsed_seconds"] == "21600"  # open: 18:00 → end of the window, 6 h
    # due in April: C (met), D (late), F (late, open) → 1 ÷ 3 = 33.333333…%
    april = ticket_compliance(DUE, APRIL, "RESPONSE", "P1", 4 * H, always)
    assert april.reported == Decimal("33.333333") and april.detail["late"] == "D,F"
    # nothing is due in February (H's deadline is 1 Mar 00:00, G answered on 1 Mar): NO_DATA, not met
    feb = ticket_compliance(DUE, FEBRUARY, "RESPONSE", "P1", 4 * H, always)
    assert feb.value is None and feb.undefined == "nothing due in the window"
    # every P1 ticket is due in exactly one window: 0 + 6 + 3 = 9
    assert sum(int(r.detail["due"]) for r in (feb, march, april)) == 9


def test_as_of_leaves_undecided_tickets_out() -> None:
    # as of 10 Mar 11:00: A (answered 10:00), G and H (1 Mar) are decided; B's deadline (12:00) has not passed.
    # met A, G of 3 → 66.666667 %
    r = ticket_compliance(DUE, MARCH, "RESPONSE", "P1", 4 * H, AlwaysOpen(), as_of=t("2026-03-10T11:00"))
    assert r.reported == Decimal("66.666667") and r.detail["late"] == "H"


def test_a_target_reached_at_closing_time_is_late_only_from_the_next_opening() -> None:
    # target 1 h on office hours; opened Fri 6 Mar 16:00 CET: the clock reads 1 h from Fri 17:00 to Mon 09:00
    fri = "2026-03-06T16:00+01:00"
    tickets = [
        Ticket("K", "P3", t(fri)),  # never answered: late from Mon 9 Mar 09:00 CET (08:00 UTC)
        Ticket("L", "P3", t(fri), first_response=t("2026-03-07T10:00+01:00")),  # Sat: still 1 h → met
        Ticket("M", "P3", t(fri), first_response=t("2026-03-09T09:00+01:00")),  # Mon 09:00: 1 h → met
        Ticket("N", "P3", t(fri), first_response=t("2026-03-09T09:01+01:00")),  # 1 h 01 → late
    ]
    week1 = calendar_window("WEEK", t("2026-03-04T12:00"), AMS)  # Mon 2 Mar – Mon 9 Mar 00:00
    week2 = calendar_window("WEEK", t("2026-03-11T12:00"), AMS)
    # week 1: only L (answered Sat 7 Mar) is decided → 1 ÷ 1; K is not late yet at the week's end
    assert ticket_compliance(tickets, week1, "RESPONSE", "P3", H, OFFICE).value == Decimal(100)
    # week 2: K late, M met, N late → 1 ÷ 3
    r = ticket_compliance(tickets, week2, "RESPONSE", "P3", H, OFFICE)
    assert r.reported == Decimal("33.333333") and r.detail["late"] == "K,N" and r.detail["late_open"] == "K"
    assert r.detail["late.K.deadline"] == r.detail["late.N.deadline"] == "2026-03-09T08:00:00+00:00"


def test_ticket_validation() -> None:
    with pytest.raises(ValueError, match="priority"):
        Ticket("X", "P5", t("2026-03-01T00:00"))
    with pytest.raises(ValueError, match="before the start"):
        Ticket("X", "P1", t("2026-03-01T00:00"), first_response=t("2026-02-28T00:00"))
    with pytest.raises(ValueError, match="appears twice"):
        ticket_compliance([DUE[0], DUE[0]], MARCH, "RESPONSE", "P1", H, AlwaysOpen())
    with pytest.raises(ValueError, match="kind"):
        ticket_compliance(DUE, MARCH, "ACK", "P1", H, AlwaysOpen())  # type: ignore[arg-type]


# -- tasks -------------------------------------------------------------------------------------------
def test_task_turnaround() -> None:
    tasks = [
        Task("T1", t("2026-03-02T09:00"), t("2026-03-03T09:00")),  # 24 h: met
        # 48 h minus a 24 h pause = 24 h: met
        Task("T2", t("2026-03-02T09:00"), t("2026-03-04T09:00"), (iv("2026-03-02T12:00", "2026-03-03T12:00"),)),
        Task("T3", t("2026-03-02T09:00"), t("2026-03-05T09:00")),  # 72 h: late, deadline 3 Mar 21:00
    ]
    r = task_turnaround(tasks, MARCH, 36 * H, AlwaysOpen())
    # 2 ÷ 3 = 66.666667 %; mean TAT (24 + 24 + 72) ÷ 3 = 40 h = 144000 s
    assert r.formula_id == "task.turnaround" and r.reported == Decimal("66.666667")
    assert r.detail["mean_elapsed_seconds"] == "144000"
    assert r.detail["late"] == "T3" and r.detail["late.T3.deadline"] == "2026-03-03T21:00:00+00:00"
    assert r.parameters["calendar"] == "24x7"
    assert task_turnaround([], MARCH, 36 * H, AlwaysOpen()).value is None


# -- order independence ----------------------------------------------------------------------------
TICKETS = [*DUE, PAUSED]


@settings(max_examples=40, deadline=None)
@given(st.permutations(TICKETS), st.randoms(use_true_random=False))
def test_ticket_arrival_order_does_not_matter(shuffled: list[Ticket], rnd: random.Random) -> None:
    def shuffle_pauses(tk: Ticket) -> Ticket:
        pauses = list(tk.paused)
        rnd.shuffle(pauses)
        return replace(tk, paused=tuple(pauses))

    mixed = [shuffle_pauses(tk) for tk in shuffled]
    for kind, priority, window in (("RESPONSE", "P1", MARCH), ("RESOLUTION", "P2", MARCH_AMS)):
        a = ticket_compliance(TICKETS, window, kind, priority, 4 * H, OFFICE)  # type: ignore[arg-type]
        b = ticket_compliance(mixed, window, kind, priority, 4 * H, OFFICE)  # type: ignore[arg-type]
        assert (a.value, a.input_digest, a.detail) == (b.value, b.input_digest, b.detail)


_OPENED = st.integers(0, 24 * 75)  # hours after 2026-02-10: February to April


@st.composite
def _tickets(draw: st.DrawFn) -> list[Ticket]:
    """Tickets of any priority, answered and resolved early, late or never, some paused."""
    out = []
    for n in range(draw(st.integers(0, 12))):
        opened = t("2026-02-10T00:00") + draw(_OPENED) * H + draw(st.integers(0, 59)) * timedelta(minutes=1)
        stops = [None if draw(st.booleans()) and draw(st.booleans()) else opened + draw(st.integers(0, 200)) * H
                 for _ in range(2)]  # fmt: skip
        paused = tuple(
            Interval(opened + a * H, opened + (a + b) * H)
            for a, b in draw(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 20)), max_size=2))
        )
        priority = draw(st.sampled_from(["P1", "P1", "P2"]))
        out.append(Ticket(f"T{n}", priority, opened, stops[0], stops[1], paused))
    return out


@settings(max_examples=80, deadline=None)
@given(_tickets(), st.sampled_from([MARCH, MARCH_AMS, APRIL]), st.sampled_from(["RESPONSE", "RESOLUTION"]),
       st.sampled_from([AlwaysOpen(), OFFICE]), st.booleans())  # fmt: skip
def test_compliance_v2_digests_the_tickets_due_so_any_ticket_not_due_can_be_left_out(
    tickets: list[Ticket], window: Interval, kind: str, calendar: Any, judged_as_of: bool
) -> None:
    """v2 counts exactly as v1 but digests the tickets it counts (due in the window), so what a
    window is passed beyond them does not change it: a round may pass only the tickets that can
    be decided in it — not stopped before its start — rather than every ticket of history. v1,
    kept for the windows recorded with it, digests every ticket passed."""
    as_of = window.start + 20 * 24 * H if judged_as_of else None
    args = (window, kind, "P1", 4 * H, calendar)

    def v2(passed: list[Ticket]) -> Any:
        return ticket_compliance(passed, *args, as_of=as_of)  # type: ignore[arg-type]

    def stop(tk: Ticket) -> datetime | None:
        return tk.first_response if kind == "RESPONSE" else tk.resolved

    whole, v1 = v2(tickets), ticket_compliance(tickets, *args, as_of=as_of, version=1)  # type: ignore[arg-type]
    assert (whole.formula_version, v1.formula_version) == (2, 1)
    assert (whole.value, whole.detail, whole.parameters) == (v1.value, v1.detail, v1.parameters)
    # The tickets that can be decided in the window: opened before its end, not stopped before its start.
    relevant = [tk for tk in tickets if tk.opened < window.end and not ((s := stop(tk)) and s < window.start)]
    selected = v2(relevant)
    assert (selected.value, selected.input_digest, selected.detail) == (whole.value, whole.input_digest, whole.detail)
    # ... and the digest is the due tickets' records alone (a ticket is due alone as among others).
    due = [tk for tk in relevant if tk.priority == "P1" and v2([tk]).detail["due"] == "1"]
    assert v2(due).input_digest == whole.input_digest and len(due) == int(whole.detail["due"])
    # A ticket answered long before the window changes v1's digest, not v2's.
    old = Ticket("OLD", "P1", t("2025-01-06T09:00"), t("2025-01-06T10:00"), t("2025-01-06T11:00"))
    assert v2([*tickets, old]).input_digest == whole.input_digest
    assert ticket_compliance([*tickets, old], *args, as_of=as_of, version=1).input_digest != v1.input_digest  # type: ignore[arg-type]


def test_compliance_v2_digest_changes_with_a_due_ticket_and_refuses_a_repeated_id() -> None:
    always = AlwaysOpen()
    march = ticket_compliance(DUE, MARCH, "RESPONSE", "P1", 4 * H, always)
    answered_later = [replace(DUE[0], first_response=t("2026-03-10T10:30")), *DUE[1:]]  # A: still met, 2.5 h
    changed = ticket_compliance(answered_later, MARCH, "RESPONSE", "P1", 4 * H, always)
    assert changed.value == march.value and changed.input_digest != march.input_digest
    # another priority, and a ticket of this one due in April: not March's inputs
    assert ticket_compliance([t_ for t_ in DUE if t_.ticket_id not in "CDFJ"], MARCH, "RESPONSE", "P1", 4 * H,
                             always).input_digest == march.input_digest  # fmt: skip
    with pytest.raises(ValueError, match="'A' appears twice"):
        ticket_compliance([DUE[0], DUE[2], DUE[0]], FEBRUARY, "RESPONSE", "P1", H, always)
    with pytest.raises(ValueError, match="has versions"):
        ticket_compliance(DUE, MARCH, "RESPONSE", "P1", H, always, version=3)


def test_task_turnaround_v2_digests_the_tasks_due() -> None:
    early = Task("T0", t("2026-02-02T09:00"), t("2026-02-03T09:00"))  # completed in February
    tasks = [Task("T1", t("2026-03-02T09:00"), t("2026-03-03T09:00")), Task("T3", t("2026-03-02T09:00"), None)]
    a, b = (task_turnaround(ts_, MARCH, 36 * H, AlwaysOpen()) for ts_ in (tasks, [early, *tasks]))
    assert (a.formula_version, a.value, a.detail, a.input_digest) == (2, b.value, b.detail, b.input_digest)
    v1 = [task_turnaround(ts_, MARCH, 36 * H, AlwaysOpen(), version=1) for ts_ in (tasks, [early, *tasks])]
    assert v1[0].input_digest != v1[1].input_digest and v1[0].value == a.value


def test_a_window_recorded_with_compliance_v1_is_judged_again_by_v1() -> None:
    """A closed window recorded with "ticket.compliance" or "task.turnaround" v1 is restated,
    re-derived and recomputed by v1 (its digest over every ticket passed); any other by v2."""
    objective = {"metric": "METRIC_TICKET_RESPONSE", "comparator": "COMPARATOR_AT_LEAST", "target": "90",
                 "parameters": {"priority": "P1", "target_minutes": "240"}}  # fmt: skip
    signals = SignalSet(tickets=list(DUE))

    def judged(recorded: tuple[str, int] | None) -> tuple[int, str, str]:
        e = judge(objective, MARCH, AlwaysOpen(), [], signals, MARCH.end, "UTC", 1, MARCH, recorded)
        return e["formula_version"], e["value"], e["input_digest"]

    v1, v2 = judged(("ticket.compliance", 1)), judged(None)
    assert (v1[0], v2[0]) == (1, 2) and v1[1] == v2[1] == "50.0" and v1[2] != v2[2]
    assert judged(("ticket.compliance", 2)) == judged(("task.turnaround", 1)) == v2
    tasks = {**objective, "metric": "METRIC_TASK_TURNAROUND", "parameters": {"target_minutes": "2160"}}
    e = judge(tasks, MARCH, AlwaysOpen(), [], SignalSet(tasks=[]), MARCH.end, "UTC", 1, MARCH, ("task.turnaround", 1))
    assert e["formula_version"] == 1


def test_the_calendar_is_part_of_the_digest() -> None:
    a = ticket_compliance(DUE, MARCH, "RESPONSE", "P1", 4 * H, OFFICE)
    b = ticket_compliance(DUE, MARCH, "RESPONSE", "P1", 4 * H, replace(OFFICE, holidays=frozenset()))
    assert a.input_digest != b.input_digest


# -- marketing ↔ sales -------------------------------------------------------------------------------
FEB_AMS = calendar_window("MONTH", t("2026-02-14T12:00"), AMS)


def needed(elapsed_until: str, period: Interval = MARCH_AMS, **kw: Decimal) -> Decimal | None:
    args = {
        "sales_target": Decimal(1_000_000),
        "marketing_share": Decimal("0.6"),
        "average_deal_size": Decimal(25_000),
        "close_rate": Decimal("0.2"),
        **kw,
    }
    return leads_needed(period=period, elapsed_until=t(elapsed_until), time_zone=AMS, **args).value


def test_leads_needed_pro_rated_to_days() -> None:
    # customers needed = 1 000 000 × 0.6 ÷ 25 000 = 24; leads needed = 24 ÷ 0.2 = 120 for the period
    # February (28 days), 14 days elapsed: 120 × 14 ÷ 28 = 60
    r = leads_needed(
        Decimal(1_000_000), Decimal("0.6"), Decimal(25_000), Decimal("0.2"), FEB_AMS, t("2026-02-15T00:00+01:00"),
        time_zone=AMS,
    )  # fmt: skip
    assert r.value == Decimal(60) and r.formula_id == "marketing.leads_needed"
    assert r.detail["customers_needed"] == "24.0" and Decimal(r.detail["leads_needed_period"]) == 120
    assert r.detail["days_elapsed"] == "14" and r.detail["days_in_period"] == "28"
    # March (31 days, though 743 hours long), 10 days elapsed: 120 × 10 ÷ 31 = 38.709677… kept exact; ceil 39
    r = leads_needed(
        Decimal(1_000_000), Decimal("0.6"), Decimal(25_000), Decimal("0.2"), MARCH_AMS, t("2026-03-11T00:00+01:00"),
        time_zone=AMS,
    )  # fmt: skip
    assert r.value == Decimal(1200) / Decimal(31)
    assert r.detail["leads_needed_ceil"] == "39"
    assert needed("2026-03-11T13:00+01:00") == Decimal(1200) / Decimal(31)  # a started day does not count yet
    # after the DST change: 29 whole local days → 120 × 29 ÷ 31 = 112.258064…
    assert needed("2026-03-30T00:00+02:00") == Decimal(3480) / Decimal(31)
    assert needed("2026-04-01T00:00+02:00") == Decimal(120)  # the whole period
    assert needed("2026-04-20T00:00+02:00") == Decimal(120)  # clamped to the period
    assert needed("2026-02-20T00:00+01:00") == Decimal(0)  # before it


def test_leads_needed_over_a_window_cut_inside_one_day() -> None:
    """A day window the agreement's end cuts at 13:59 (or its start at 09:00) spans part of one
    local day: that day is its one day, needed whole once the window is over — not a
    ValueError that stops the objective being judged; and a window cut mid-day after several
    days counts its last, started day too."""
    args = dict(sales_target=Decimal(1_000_000), marketing_share=Decimal("0.6"), average_deal_size=Decimal(25_000),
                close_rate=Decimal("0.2"), time_zone=AMS)  # fmt: skip
    day = iv("2026-02-20T00:00+01:00", "2026-02-20T13:59+01:00")
    r = leads_needed(period=day, elapsed_until=day.end, **args)  # type: ignore[arg-type]
    assert r.value == Decimal(120) and r.detail["days_in_period"] == "1" and r.detail["days_elapsed"] == "1"
    assert leads_needed(period=day, elapsed_until=t("2026-02-20T12:00+01:00"), **args).value == 0  # type: ignore[arg-type]
    cut = iv("2026-02-01T00:00+01:00", "2026-02-14T13:59+01:00")
    r = leads_needed(period=cut, elapsed_until=t("2026-02-14T00:00+01:00"), **args)  # type: ignore[arg-type]
    assert r.detail["days_in_period"] == "14" and r.value == Decimal(120) * 13 / 14


def test_leads_needed_of_a_window_the_agreement_cuts_is_its_days_share() -> None:
    """v3: a closed window the agreement is in force for part of needs the figure × the days it
    is in force ÷ the calendar window's days — March (31 days) from an agreement starting on
    10 March at 09:00 (that day is one of its days): 120 × 22 ÷ 31; one ending on 14 March:
    120 × 13 ÷ 31 — exact, ceiling in detail. Open, only its days over count. v2, kept for the
    windows recorded with it, needed the whole 120 of both."""
    args = dict(sales_target=Decimal(1_000_000), marketing_share=Decimal("0.6"), average_deal_size=Decimal(25_000),
                close_rate=Decimal("0.2"), time_zone=AMS)  # fmt: skip
    started = Interval(t("2026-03-10T09:00+01:00"), MARCH_AMS.end)
    r = leads_needed(period=started, elapsed_until=started.end, window=MARCH_AMS, **args)  # type: ignore[arg-type]
    assert r.value == Decimal(120) * 22 / 31 and r.formula_version == 3
    assert r.detail["days_in_force"] == "22" and r.detail["days_in_period"] == "31" and r.detail["days_elapsed"] == "22"
    assert r.detail["leads_needed_ceil"] == "86"
    assert r.parameters["window_start"] == "2026-02-28T23:00:00+00:00"
    ended = Interval(MARCH_AMS.start, t("2026-03-14T00:00+01:00"))
    assert leads_needed(period=ended, elapsed_until=ended.end, window=MARCH_AMS, **args).value == Decimal(120) * 13 / 31  # type: ignore[arg-type]
    # open: 10 and 11 March over
    assert leads_needed(period=started, elapsed_until=t("2026-03-12T08:00+01:00"), window=MARCH_AMS, **args).value == (  # type: ignore[arg-type]
        Decimal(120) * 2 / 31
    )
    # uncut, the same figure as v2
    assert leads_needed(period=MARCH_AMS, elapsed_until=MARCH_AMS.end, window=MARCH_AMS, **args).value == 120  # type: ignore[arg-type]
    v2 = leads_needed(period=started, elapsed_until=started.end, window=MARCH_AMS, version=2, **args)  # type: ignore[arg-type]
    assert v2.value == 120 and v2.formula_version == 2 and "window_start" not in v2.parameters
    with pytest.raises(ValueError, match="versions"):
        leads_needed(period=started, elapsed_until=started.end, window=MARCH_AMS, version=1, **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inside the window"):
        leads_needed(period=MARCH_AMS, elapsed_until=MARCH_AMS.end, window=started, **args)  # type: ignore[arg-type]


def test_a_window_recorded_with_leads_needed_v2_is_judged_again_by_v2() -> None:
    """Judging takes the formula version a closed window was recorded with while it is kept (a
    restatement, re-derivation, what-if): v2 judges it again with the whole figure; a version no
    longer kept (v1), another formula's or none: the current v3."""
    objective = {
        "metric": "METRIC_LEADS_NEEDED", "comparator": "COMPARATOR_AT_LEAST", "target": "0",
        "parameters": {"sales_target": "1000000", "marketing_revenue_share": "0.6", "average_deal_size": "25000",
                       "close_rate": "0.2"},
    }  # fmt: skip
    started = Interval(t("2026-03-10T09:00+01:00"), MARCH_AMS.end)

    def judged(recorded: tuple[str, int] | None) -> tuple[int, Decimal]:
        e = judge(objective, started, AlwaysOpen(), [], SignalSet(), started.end, AMS, 1, MARCH_AMS, recorded)
        return e["formula_version"], Decimal(e["target"])

    assert judged(("marketing.leads_needed", 2)) == (2, Decimal(120))
    share = Decimal(120) * 22 / 31
    assert judged(("marketing.leads_needed", 3)) == (3, share)
    assert judged(("marketing.leads_needed", 1)) == judged(("sales.follow_up_depth", 2)) == judged(None) == (3, share)


def test_leads_needed_validation_is_never_a_division_by_zero() -> None:
    with pytest.raises(ValueError, match="close_rate"):
        needed("2026-03-11T00:00+01:00", close_rate=Decimal(0))
    with pytest.raises(ValueError, match="average_deal_size"):
        needed("2026-03-11T00:00+01:00", average_deal_size=Decimal(0))
    with pytest.raises(ValueError):
        needed("2026-03-11T00:00+01:00", marketing_share=Decimal("1.5"))
    with pytest.raises(TypeError):
        needed("2026-03-11T00:00+01:00", close_rate=0.2)  # type: ignore[arg-type]


LEADS = [
    Lead("L1", t("2026-03-02T09:00"), converted=True, revenue=Decimal(30_000)),
    Lead("L2", t("2026-03-02T09:00"), converted=True, revenue=Decimal(20_000)),
    *(Lead(f"N{i}", t("2026-03-02T09:00")) for i in range(8)),
]


def test_close_rate_deal_size_and_revenue_share() -> None:
    # close rate: 2 converted ÷ 10 leads = 0.2 (a ratio; 20 % in detail)
    r = close_rate(LEADS)
    assert r.value == Decimal("0.2") and Decimal(r.detail["percent"]) == 20
    # deal size: (30 000 + 20 000) ÷ 2 = 25 000
    assert deal_size(LEADS).value == Decimal(25_000)
    # share of revenue from marketing: (30 000 + 30 000) ÷ (30 000 + 30 000 + 40 000) = 0.6
    deals = [
        Deal("m1", t("2026-03-05T00:00"), Decimal(30_000), True),
        Deal("m2", t("2026-03-06T00:00"), Decimal(30_000), True),
        Deal("s1", t("2026-03-07T00:00"), Decimal(40_000), False),
    ]
    s = marketing_revenue_share(deals)
    assert s.value == Decimal("0.6") and Decimal(s.detail["percent"]) == 60
    # zero denominators
    assert close_rate([]).value is None
    assert deal_size(LEADS[2:]).value is None
    assert marketing_revenue_share([Deal("z", t("2026-03-05T00:00"), Decimal(0), True)]).value is None
    with pytest.raises(ValueError, match="no revenue"):
        Lead("X", t("2026-03-02T09:00"), revenue=Decimal(5))


def lead(lead_id: str, handed_off: str | None, *follow_ups: str) -> Lead:
    return Lead(
        lead_id,
        t("2026-03-01T00:00"),
        None if handed_off is None else t(handed_off),
        tuple(t(f) for f in follow_ups),
    )


SPEED = [
    lead("L1", "2026-03-02T16:00+01:00", "2026-03-03T15:00+01:00"),  # Mon 16–17 + Tue 09–15 = 7 h: within
    lead("L2", "2026-03-06T16:00+01:00", "2026-03-09T16:00+01:00"),  # Fri 16–17 + Mon 09–16 = 8 h: within
    # the attempt before hand-off is not a follow-up; Mon 10–17 + Tue 8 h + Wed 09–10 = 16 h: missed
    lead("L3", "2026-03-02T10:00+01:00", "2026-03-02T09:00+01:00", "2026-03-04T10:00+01:00"),
    lead("L4", "2026-03-02T10:00+01:00"),  # no follow-up: missed
    lead("L5", None, "2026-03-02T10:00+01:00"),  # never handed off: not counted
    lead("L6", "2026-03-02T09:00+01:00", "2026-03-03T09:00:30+01:00"),  # 8 h 00 min 30 s: missed
]


def test_follow_up_speed_in_business_hours() -> None:
    # within 8 business hours: L1, L2 of L1, L2, L3, L4, L6 → 2 ÷ 5 = 40 %
    r = follow_up_speed(SPEED, 8 * H, OFFICE, window=MARCH)
    assert r.value == Decimal(40) and r.detail["missed"] == "L3,L4,L6"
    assert r.formula_id == "sales.follow_up_speed" and r.parameters["calendar"] == "office"
    assert r.formula_version == 2
    assert follow_up_speed([SPEED[4]], 8 * H, OFFICE, window=MARCH).value is None
    v1 = follow_up_speed(SPEED, 8 * H, OFFICE, version=1)
    assert v1.value == Decimal(40) and v1.detail["missed"] == "L3,L4,L6" and v1.formula_version == 1
    # v1, as of Mon 2 Mar 16:30, L4 has waited 6 h 30 of its 8 h: pending → 2 ÷ 4 = 50 %
    r = follow_up_speed(SPEED, 8 * H, OFFICE, as_of=t("2026-03-02T16:30+01:00"), version=1)
    assert r.value == Decimal(50) and r.detail["pending"] == "1"
    with pytest.raises(ValueError, match="window"):
        follow_up_speed(SPEED, 8 * H, OFFICE)


def test_follow_up_speed_v2_judges_each_lead_in_the_window_its_outcome_became_known() -> None:
    """v2: a lead followed up in time is decided at its follow-up; any other at its deadline, the
    last instant a follow-up would still have met the target — on business hours, when the target
    is reached at closing time, the next opening. It counts in the window holding that instant."""
    # decisions: L1 Tue 3 Mar 15:00 ✓, L2 Mon 9 Mar 16:00 ✓, L3 and L4 Tue 3 Mar 10:00 (Mon 10–17 + 1 h) ✗,
    # L6 Tue 3 Mar 09:00 ✗ — its 8 h were reached at Monday's close, so Monday does not count it.
    monday = iv("2026-03-02T00:00+01:00", "2026-03-03T00:00+01:00")
    r = follow_up_speed(SPEED, 8 * H, OFFICE, window=monday, as_of=monday.end)
    assert r.value is None and r.detail["handed_off"] == "0"
    tuesday = iv("2026-03-03T00:00+01:00", "2026-03-04T00:00+01:00")
    r = follow_up_speed(SPEED, 8 * H, OFFICE, window=tuesday, as_of=tuesday.end)
    assert r.value == Decimal(25) and r.detail["missed"] == "L3,L4,L6"
    # open on Tuesday at 10:00 exactly: L3 and L4's deadline is not past yet (pending), L6's is
    r = follow_up_speed(SPEED, 8 * H, OFFICE, window=tuesday, as_of=t("2026-03-03T10:00+01:00"))
    assert r.value == Decimal(0) and r.detail["missed"] == "L6" and r.detail["pending"] == "3"
    # consecutive windows count each handed-off lead once
    days = [iv(f"2026-03-{d:02d}T00:00+01:00", f"2026-03-{d + 1:02d}T00:00+01:00") for d in range(1, 12)]
    assert sum(int(follow_up_speed(SPEED, 8 * H, OFFICE, window=w).detail["handed_off"]) for w in days) == 5
    # the digest is the window's outcomes: a lead decided in another window changes nothing here
    other = [*SPEED, lead("L7", "2026-03-05T10:00+01:00", "2026-03-05T11:00+01:00")]
    assert (
        follow_up_speed(other, 8 * H, OFFICE, window=tuesday, as_of=tuesday.end).input_digest
        == follow_up_speed(SPEED, 8 * H, OFFICE, window=tuesday, as_of=tuesday.end).input_digest
    )


HANDOFF = "2026-03-02T10:00"


def at(delta: timedelta) -> str:
    return (t(HANDOFF) + delta).isoformat()


D = timedelta(days=1)
DEPTH = [
    Lead(
        "D1",
        t(HANDOFF) - 2 * H,
        t(HANDOFF),
        tuple(
            t(at(d)) for d in (-H, timedelta(0), D, 3 * D, 7 * D, 14 * D, 14 * D + timedelta(seconds=1))
        ),  # counted: 0, 1 d, 3 d, 7 d, 14 d (inclusive) = 5; before hand-off and 14 d + 1 s are not
    ),
    lead("D2", HANDOFF, at(2 * D), at(20 * D)),  # 1
    lead("D3", HANDOFF),  # 0
    lead("D4", None, HANDOFF),  # never handed off: not counted
]


def test_follow_up_depth() -> None:
    # (5 + 1 + 0) ÷ 3 leads = 2 attempts per lead; reaching ≥ 5: D1 only → 1 of 3 = 33.333…%
    r = follow_up_depth(DEPTH, 14, minimum=5, window=MARCH)
    assert r.value == Decimal(2) and r.detail["attempts"] == "6" and r.formula_version == 2
    assert r.detail["reaching_minimum"] == "1"
    assert Decimal(r.detail["reaching_minimum_percent"]).quantize(Decimal("0.01")) == Decimal("33.33")
    assert follow_up_depth(DEPTH, 14, minimum=5, version=1).value == Decimal(2)
    # v1: as of hand-off + 10 days no lead's 14 days are over: all pending, undefined
    assert follow_up_depth(DEPTH, 14, as_of=t(at(10 * D)), version=1).value is None
    # as of exactly hand-off + 14 days they are
    assert follow_up_depth(DEPTH, 14, as_of=t(at(14 * D)), version=1).value == Decimal(2)
    with pytest.raises(ValueError, match="window"):
        follow_up_depth(DEPTH, 14)


def test_follow_up_depth_v2_counts_a_lead_in_the_day_its_days_pass() -> None:
    """v2: a lead is decided when its 14 days after hand-off have passed (hand-off + 14 × 24 h, the
    last instant an attempt still counts) and counts in the window holding that instant — so on
    DAY windows a 14-day depth is judged at all (v1 left every day's window without data)."""
    handed_day = iv("2026-03-02T00:00", "2026-03-03T00:00")
    assert follow_up_depth(DEPTH, 14, window=handed_day, as_of=handed_day.end).value is None
    assert follow_up_depth(DEPTH[1:3], 14, window=handed_day, as_of=handed_day.end, version=1).value is None
    day_16 = iv("2026-03-16T00:00", "2026-03-17T00:00")
    r = follow_up_depth(DEPTH, 14, window=day_16, as_of=day_16.end)
    assert r.value == Decimal(2) and r.detail["leads"] == "3"
    # open: at hand-off + 14 days exactly an attempt still counts, so the leads are pending until then
    r = follow_up_depth(DEPTH, 14, window=day_16, as_of=t(at(14 * D)))
    assert r.value is None and r.detail["pending"] == "3"
    r = follow_up_depth(DEPTH, 14, window=day_16, as_of=t(at(14 * D)) + timedelta(microseconds=1))
    assert r.value == Decimal(2) and r.detail["pending"] == "0"
    # [start, end): decided at 10:00 on the 16th, so a window ending then leaves them to the next
    assert follow_up_depth(DEPTH, 14, window=iv("2026-03-16T00:00", at(14 * D))).value is None
    # the digest covers the attempts counted: one after the 14 days changes nothing
    more = [replace(DEPTH[1], follow_ups=(*DEPTH[1].follow_ups, t(at(15 * D)))), DEPTH[0], DEPTH[2]]
    assert (
        follow_up_depth(more, 14, window=day_16).input_digest == follow_up_depth(DEPTH, 14, window=day_16).input_digest
    )


@settings(max_examples=40, deadline=None)
@given(st.permutations(SPEED + DEPTH[:1]), st.randoms(use_true_random=False))
def test_lead_order_does_not_matter(shuffled: list[Lead], rnd: random.Random) -> None:
    def shuffle(ld: Lead) -> Lead:
        f = list(ld.follow_ups)
        rnd.shuffle(f)
        return replace(ld, follow_ups=tuple(f))

    mixed = [shuffle(ld) for ld in shuffled]
    base = SPEED + DEPTH[:1]
    for fn in (
        lambda ls: follow_up_speed(ls, 8 * H, OFFICE, window=MARCH),
        lambda ls: follow_up_depth(ls, 14, minimum=2, window=MARCH),
        lambda ls: follow_up_speed(ls, 8 * H, OFFICE, version=1),
        lambda ls: follow_up_depth(ls, 14, minimum=2, version=1),
        close_rate,
        deal_size,
    ):
        a, b = fn(base), fn(mixed)
        assert (a.value, a.input_digest, a.detail) == (b.value, b.input_digest, b.detail)


def test_a_window_recorded_with_a_follow_up_or_fcr_v1_is_judged_again_by_v1() -> None:
    """Judging takes the version a closed window was recorded with while it is kept (a restatement,
    re-derivation, what-if): a depth window recorded with v1 counts the leads handed off in it,
    as v1 did; any other (none recorded, another formula's) the current v2 — the leads whose 14
    days passed in it. The same dispatch for follow-up speed and first-contact resolution."""
    day_16 = iv("2026-03-16T00:00", "2026-03-17T00:00")
    handed_day = iv("2026-03-02T00:00", "2026-03-03T00:00")

    def judged(objective: dict[str, object], window: Interval, recorded: tuple[str, int] | None) -> tuple[int, str]:
        signals = SignalSet(leads=list(DEPTH), calls=[])
        e = judge(objective, window, OFFICE, [], signals, window.end, "UTC", 1, window, recorded)
        return e["formula_version"], e["value"]

    depth = {"metric": "METRIC_FOLLOW_UP_DEPTH", "comparator": "COMPARATOR_AT_LEAST", "target": "3",
             "parameters": {"window_days": "14"}}  # fmt: skip
    assert judged(depth, day_16, None) == (2, "2")
    assert judged(depth, day_16, ("sales.follow_up_depth", 1)) == (1, "")
    assert judged(depth, handed_day, ("sales.follow_up_depth", 1)) == (1, "")  # v1: handed off, pending at its end
    assert judged(depth, MARCH, ("sales.follow_up_depth", 1)) == (1, "2")
    assert judged(depth, MARCH, None) == (2, "2")
    assert judged(depth, handed_day, None) == judged(depth, handed_day, ("sales.follow_up_speed", 1)) == (2, "")
    speed = {"metric": "METRIC_FOLLOW_UP_SPEED", "comparator": "COMPARATOR_AT_LEAST", "target": "90",
             "parameters": {"target_hours": "8"}}  # fmt: skip
    assert judged(speed, handed_day, ("sales.follow_up_speed", 1))[0] == 1
    assert judged(speed, handed_day, ("sales.follow_up_speed", 3))[0] == 2
    fcr = {"metric": "METRIC_FIRST_CONTACT_RESOLUTION", "comparator": "COMPARATOR_AT_LEAST", "target": "70",
           "parameters": {"method": "REPEAT_CONTACT"}}  # fmt: skip
    assert judged(fcr, handed_day, ("contact.fcr", 1))[0] == 1
    assert judged(fcr, handed_day, None)[0] == 5
