"""Tickets and tasks selected by when they settle: a round reads the tickets and tasks that can
still be decided in the windows it judges (those that did not settle before the window's span),
not every one ever recorded — and every window it records equals the formula over every
stored signal (`recompute`); a window recorded with "ticket.compliance" v1 keeps reading them
whole; a store indexed before keeps its rows, keyed once at start."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_metrics import signal_index
from accord_metrics.application import Metrics
from accord_metrics.formulas import reliability, work
from accord_metrics.signal_store import LIST_CODE, SignalStore
from tests.suite import (
    AMS,
    COLLECTOR,
    EMAIL,
    Suite,
    an_agreement_with,
    at,
    open_windows_against_every_stored_signal,
    ts,
)
from tests.suite import monthly_objective as _objective

JAN, FEB = "2025-12-31T23:00:00+00:00", "2026-01-31T23:00:00+00:00"
OBJECTIVES = ("response", "resolution", "turnaround")


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _agreement(suite: Suite, objectives: list[dict[str, Any]] | None = None) -> str:
    """An agreement with these objectives, accepted; by default P1 response within 1 h,
    resolution within 8 h, task turnaround within 1 day, monthly."""
    return an_agreement_with(
        suite,
        objectives
        or [
            _objective("response", "METRIC_TICKET_RESPONSE", {"priority": "P1", "target_minutes": "60"}),
            _objective("resolution", "METRIC_TICKET_RESOLUTION", {"priority": "P1", "target_minutes": "480"}),
            _objective("turnaround", "METRIC_TASK_TURNAROUND", {"target_minutes": "1440"}),
        ],
    )


def _ticket(sid: str, opened: datetime, response: float | None, resolved: float | None) -> pb.Signal:
    """A P1 ticket answered and resolved `response` and `resolved` hours after it opened (None: not yet)."""
    body = pb.Ticket(priority="P1", opened=ts(opened))
    if response is not None:
        body.first_response.CopyFrom(ts(opened + timedelta(hours=response)))
    if resolved is not None:
        body.resolved.CopyFrom(ts(opened + timedelta(hours=resolved)))
    return pb.Signal(signal_id=sid, service_id=EMAIL, ticket=body)


def _task(sid: str, received: datetime, completed: float | None) -> pb.Signal:
    body = pb.Task(received=ts(received))
    if completed is not None:
        body.completed.CopyFrom(ts(received + timedelta(hours=completed)))
    return pb.Signal(signal_id=sid, service_id=EMAIL, task=body)


def _history(m: Metrics) -> set[str]:
    """A year of settled tickets and tasks before the agreement (every one answered, resolved or
    completed), and a few from then still open: returns the ids of the open ones."""
    start = at(f"2025-01-06T09:00{AMS}")
    settled = [_ticket(f"old-{i}", start + timedelta(hours=20 * i), 0.5, 3) for i in range(400)]
    settled += [_task(f"old-task-{i}", start + timedelta(hours=50 * i), 10) for i in range(150)]
    still_open = [
        _ticket("open-1", start, None, None),
        _ticket("open-2", start, 0.5, None),
        _task("open-3", start, None),
    ]
    m.record(COLLECTOR, settled + still_open)
    return {"open-1", "open-2", "open-3"}


class _Reads:
    """The tickets and tasks rounds pass their formulas, and those read whole from the store's index."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passed: set[str] = set()
        self.whole: list[str] = []
        whole, tickets, tasks = SignalStore.whole, work.ticket_compliance, work.task_turnaround

        def spy_whole(store: SignalStore, service_id: str, names: Any) -> Any:
            found = whole(store, service_id, names)
            self.whole += [
                sid for n in ("tickets", "tasks", "leads", "deals", "incidents") for _, sid, _ in found.get(n, [])
            ]
            return found

        def spy_tickets(passed: Any, *args: Any, **kwargs: Any) -> Any:
            self.passed.update(t.ticket_id for t in passed)
            return tickets(passed, *args, **kwargs)

        def spy_tasks(passed: Any, *args: Any, **kwargs: Any) -> Any:
            self.passed.update(t.task_id for t in passed)
            return tasks(passed, *args, **kwargs)

        monkeypatch.setattr(SignalStore, "whole", spy_whole)
        monkeypatch.setattr(work, "ticket_compliance", spy_tickets)
        monkeypatch.setattr(work, "task_turnaround", spy_tasks)


def _matches_every_stored_signal(m: Metrics, aid: str, starts: tuple[str, ...] = (JAN,)) -> None:
    """Each window as recorded equals the formula over every stored signal (every ticket passed):
    whole when closed; an open one's value, status and counts (its `as_of`, the digest with it
    and an open late item's elapsed time so far may be earlier)."""
    for oid, start, recorded, recomputed in open_windows_against_every_stored_signal(m, aid, OBJECTIVES, starts):
        for key in ("due", "met", "late", "late_open"):
            assert recorded["detail"][key] == recomputed["detail"][key], (oid, start, key)


def test_a_round_reads_only_the_tickets_and_tasks_that_did_not_settle_before_its_windows(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a year of tickets and tasks before the agreement, a round reads from the index only
    those that can still count in January (the open ones, and those recorded since) — each
    before read every ticket and task ever recorded, and its formula ran every ticket's clock
    (≈ 12 µs a ticket of history, every round). What it records is the formula's over every
    stored ticket, with the v2 digest of the ones due."""
    m = suite.metrics
    reads = _Reads(monkeypatch)
    aid = _agreement(suite)
    still_open = _history(m)
    jan = at(f"2026-01-12T09:00{AMS}")
    batch = [_ticket(f"jan-{i}", jan + timedelta(hours=i), 0.5 + i % 3, 4 + 3 * (i % 3)) for i in range(12)]
    batch += [_task(f"jan-task-{i}", jan + timedelta(hours=5 * i), 20 + 5 * i) for i in range(3)]
    m.record(COLLECTOR, batch)
    suite.tick(f"2026-01-14T09:00{AMS}")
    assert reads.whole == []
    assert reads.passed == still_open | {s.signal_id for s in batch}  # none of last year's settled
    current = {oid: m.window(None, aid, oid, JAN).current for oid in OBJECTIVES}
    assert current["response"]["formula_id"] == "ticket.compliance" and current["response"]["formula_version"] == 2
    assert current["turnaround"]["formula_id"] == "task.turnaround" and current["turnaround"]["formula_version"] == 2
    # The 12 of January: those open since 2025 were passed (nothing settles them) but turned late then.
    assert current["response"]["detail"]["due"] == "12" and current["turnaround"]["detail"]["due"] == "3"
    _matches_every_stored_signal(m, aid)


def test_tickets_that_reopen_settle_or_are_corrected_are_kept_in_step(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random lifecycles over the kept selection: a settled ticket of last year reopened (no
    resolution) enters January's, one corrected to have settled before January leaves it, new
    ones arrive answered late, early or not at all — after every round each window equals the
    formula over every stored ticket; January closes, February opens, both hold."""
    m = suite.metrics
    rng = random.Random(7)
    aid = _agreement(suite)
    _history(m)
    jan = at(f"2026-01-12T09:00{AMS}")
    live: dict[str, datetime] = {}
    now = jan
    for step in range(14):
        batch = []
        for i in range(rng.randint(1, 6)):
            opened = now - timedelta(hours=rng.randint(0, 60))
            sid = f"s{step}-{i}"
            live[sid] = opened
            batch.append(_ticket(sid, opened, rng.choice([None, 0.2, 2.0]), rng.choice([None, 3.0, 12.0])))
        if step % 3 == 0:  # a ticket of last year reopened, or settled again
            old = f"old-{rng.randrange(400)}"
            opened = at(f"2025-01-06T09:00{AMS}") + timedelta(hours=20 * int(old.split("-")[1]))
            batch.append(_ticket(old, opened, 0.5, rng.choice([None, 3.0])))
        if step % 4 == 1 and live:  # one of this month's corrected: opened and settled in December
            sid = rng.choice(sorted(live))
            batch.append(_ticket(sid, at(f"2025-12-20T09:00{AMS}"), 0.5, 2))
        if step % 5 == 2:
            batch.append(_task(f"task-{step}", now - timedelta(hours=30), rng.choice([None, 5.0, 40.0])))
        m.record(COLLECTOR, batch)
        now += timedelta(days=2, hours=rng.randint(0, 12))
        suite.tick(now.isoformat())
        _matches_every_stored_signal(m, aid, (JAN, FEB) if now >= at(FEB) else (JAN,))
    assert now > at(FEB) and m.window(None, aid, "response", JAN).closed


def test_a_window_recorded_with_compliance_v1_reads_every_ticket_at_its_restatement(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January closed with v1 (every ticket passed is in its digest): a late ticket restates it
    by v1 over every stored ticket — read whole for that window — while February, open, is v2."""
    m = suite.metrics
    with monkeypatch.context() as v1:
        v1.setattr(work, "CLOCKED_VERSION", 1)
        aid = _agreement(suite)
        _history(m)
        m.record(COLLECTOR, [_ticket("jan-1", at(f"2026-01-12T09:00{AMS}"), 2, 3)])
        suite.tick(f"2026-02-02T09:00{AMS}")
    closed = m.window(None, aid, "response", JAN).closed
    assert (closed["formula_version"], closed["value"]) == (1, "0")  # answered after 2 h
    reads = _Reads(monkeypatch)
    m.record(COLLECTOR, [_ticket("jan-2", at(f"2026-01-20T09:00{AMS}"), 0.5, 3)])  # late: restates January
    suite.tick(f"2026-02-02T10:00{AMS}")
    restated = m.window(None, aid, "response", JAN).latest
    assert (restated["formula_version"], restated["value"]) == (1, "50.0")
    assert {"old-0", "old-399", "jan-1", "jan-2"} <= set(reads.whole)
    assert m.window(None, aid, "response", FEB).current["formula_version"] == 2
    _matches_every_stored_signal(m, aid, (JAN, FEB))


def test_a_store_indexed_before_keys_its_tickets_and_tasks_once_at_start(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of tickets and tasks written when they were read whole (time key 0) are given the
    instant they settle when the service starts, once (marked done in the same transaction): a
    round then selects them as if recorded now."""
    m = suite.metrics
    aid = _agreement(suite)
    _history(m)
    m.record(COLLECTOR, [_ticket("jan-1", at(f"2026-01-12T09:00{AMS}"), 0.5, 3)])
    store = m._signal_store
    codes = (LIST_CODE["tickets"], LIST_CODE["tasks"])
    with store._cursor(write=True) as cur:  # as the index was written before
        cur.execute(store._q(f"UPDATE {store.rows} SET time_key = 0 WHERE list IN (?, ?)"), codes)
        cur.execute(store._q(f"DELETE FROM {store.position_table} WHERE name LIKE ?"), ("signals.settled%",))
    m.close()
    logged: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(signal_index.log, "info", lambda event, **kw: logged.append((event, kw)))
    again = suite.metrics = Metrics(suite.envs["metrics"], clock=suite.clock)
    assert [(e, kw["rows"]) for e, kw in logged if e == "signal_index_keyed"] == [("signal_index_keyed", 554)]
    store = again._signal_store
    with store._cursor(write=False) as cur:
        cur.execute(store._q(f"SELECT time_key, content FROM {store.rows} WHERE list IN (?, ?)"), codes)
        rows = cur.fetchall()
    assert len(rows) == 400 + 150 + 3 + 1
    assert all(int(key) == signal_index.settled_key(bytes(content)) for key, content in rows)
    assert sum(int(key) == signal_index._FAR_FUTURE_US for key, _ in rows) == 3
    assert store.key_settled(["tickets", "tasks", "leads", "deals"], signal_index.settled_key) == 0  # once
    suite.tick(f"2026-01-14T09:00{AMS}")
    assert again.window(None, aid, "response", JAN).current["detail"]["due"] == "1"
    _matches_every_stored_signal(again, aid)


def test_a_ticket_corrected_out_of_a_window_and_again_is_read_afresh_by_its_kept_selection(suite: Suite) -> None:
    """A ticket's row is selected by the earliest instant any of its contents had: first recorded
    opening in January and corrected to open in March, it stays in January's kept selection (a
    superset: the formula leaves it out); its next correction — every content but the first
    after January — still reaches that selection, which holds what the index gives now."""
    m = suite.metrics
    _agreement(suite)
    march = at(f"2026-03-05T09:00{AMS}")
    m.record(COLLECTOR, [_ticket("moved", at(f"2026-01-20T09:00{AMS}"), 0.5, None)])
    suite.tick(f"2026-01-21T09:00{AMS}")
    m.record(COLLECTOR, [_ticket("moved", march, 0.5, None)])
    suite.tick(f"2026-01-22T09:00{AMS}")
    m.record(COLLECTOR, [_ticket("moved", march, 0.5, 3)])
    suite.tick(f"2026-01-23T09:00{AMS}")
    held = [
        item
        for kept in m._services[EMAIL].selections.values()
        for ids, items in [kept.lists.get("tickets", ((), [], []))[1:]]
        for sid, item in zip(ids, items, strict=True)
        if sid == "moved"
    ]
    assert held and all(t.opened == march and t.resolved == march + timedelta(hours=3) for t in held)


# -- leads and deals ------------------------------------------------------------------------------------
SALES = {"sales_target": "100000", "marketing_revenue_share": "0.4", "average_deal_size": "1000", "close_rate": "0.5"}
LEAD_OBJECTIVES = (
    ("needed", "METRIC_LEADS_NEEDED", "WINDOW_KIND_MONTH", SALES),
    ("close-rate", "METRIC_CLOSE_RATE", "WINDOW_KIND_MONTH", {}),
    ("deal-size", "METRIC_DEAL_SIZE", "WINDOW_KIND_MONTH", {}),
    ("share", "METRIC_MARKETING_REVENUE_SHARE", "WINDOW_KIND_MONTH", {}),
    ("speed", "METRIC_FOLLOW_UP_SPEED", "WINDOW_KIND_MONTH", {"target_hours": "8"}),
    ("depth", "METRIC_FOLLOW_UP_DEPTH", "WINDOW_KIND_DAY", {"window_days": "3"}),
)


def _sales_agreement(suite: Suite) -> str:
    objectives = []
    for oid, metric, window, parameters in LEAD_OBJECTIVES:
        o = _objective(oid, metric, parameters)
        o.update(target="0", window={"kind": window})
        objectives.append(o)
    return _agreement(suite, objectives)


def _lead(sid: str, created: datetime, handed: float | None, follow_ups: list[float], revenue: int = 0) -> pb.Signal:
    """A lead created at `created`, handed off `handed` hours later, followed up at those hours."""
    body = pb.Lead(created=ts(created), converted=revenue > 0, revenue=str(revenue) if revenue else "")
    if handed is not None:
        body.handed_off.CopyFrom(ts(created + timedelta(hours=handed)))
    body.follow_ups.extend(ts(created + timedelta(hours=h)) for h in follow_ups)
    return pb.Signal(signal_id=sid, service_id=EMAIL, lead=body)


def _deal(sid: str, closed: datetime, revenue: int, marketing: bool) -> pb.Signal:
    deal = pb.Deal(closed_at=ts(closed), revenue=str(revenue), marketing_sourced=marketing)
    return pb.Signal(signal_id=sid, service_id=EMAIL, deal=deal)


def test_leads_and_deals_are_selected_by_when_they_settle_every_window_as_from_every_signal(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A year of leads (created, handed off, followed up, some converted) and deals before the
    agreement: a round reads none of them from the index but those that never settled (a lead
    handed off and never followed up) — each before read every lead and deal ever recorded.
    Then random leads over January and February: handed off late or not at all, followed up
    within hours, days or never, converted later; deals closing. After every round each window
    of leads needed, close rate, deal size, revenue share, follow-up speed and depth (decided
    three days after the hand-off: a window's selection starts those days earlier, though the
    lead settled at its first follow-up) equals the formula over every stored signal."""
    m = suite.metrics
    rng = random.Random(11)
    reads = _Reads(monkeypatch)
    aid = _sales_agreement(suite)
    start = at(f"2025-01-06T09:00{AMS}")
    history = [_lead(f"old-{i}", start + timedelta(hours=20 * i), 2, [3, 30], 1000 * (i % 3)) for i in range(300)]
    history += [_deal(f"old-deal-{i}", start + timedelta(hours=50 * i), 1000 + i, i % 2 == 0) for i in range(100)]
    history.append(_lead("never-followed", start, 1, []))
    m.record(COLLECTOR, history)
    leads_seen: set[str] = set()
    selected = SignalStore.unsettled

    def spy(store: SignalStore, service_id: str, name: str, lo: int, hi: int, each: Any = None) -> Any:
        def seen(rows: Any) -> None:
            if name in ("leads", "deals"):
                leads_seen.update(sid for _, sid, _ in rows)
            if each is not None:
                each(rows)

        if each is not None:  # the rows given to it a page at a time
            return selected(store, service_id, name, lo, hi, seen)
        rows = selected(store, service_id, name, lo, hi)
        seen(rows)
        return rows

    monkeypatch.setattr(SignalStore, "unsettled", spy)
    now = at(f"2026-01-12T09:00{AMS}")
    leads: dict[str, tuple[datetime, float | None, list[float], int]] = {}
    for step in range(16):
        batch = []
        for i in range(rng.randint(1, 4)):
            sid = f"l{step}-{i}"
            leads[sid] = (now - timedelta(hours=rng.randint(1, 40)), rng.choice([None, 1.0, 5.0]), [], 0)
            batch.append(sid)
        for sid in rng.sample(sorted(leads), min(3, len(leads))):  # follow-ups and conversions arrive later
            created, handed, follow_ups, revenue = leads[sid]
            if handed is not None and rng.random() < 0.7:
                follow_ups = sorted({*follow_ups, handed + rng.choice([0.5, 4.0, 20.0, 60.0])})
            if rng.random() < 0.3:
                revenue = rng.choice([500, 2000])
            leads[sid] = (created, handed, follow_ups, revenue)
            batch.append(sid)
        signals = [_lead(sid, *leads[sid]) for sid in sorted(set(batch))]
        if step % 3 == 0:
            signals.append(_deal(f"deal-{step}", now - timedelta(hours=3), 1000 + step, step % 2 == 0))
        m.record(COLLECTOR, signals)
        now += timedelta(days=1, hours=rng.randint(0, 30))
        suite.tick(now.isoformat())
        _windows_match(m, aid, now)
    assert now > at(FEB)
    assert reads.whole == []  # no lead or deal read whole
    assert "never-followed" in leads_seen and not any(sid.startswith("old-") for sid in leads_seen)


def _windows_match(m: Metrics, aid: str, now: datetime) -> None:
    """Every month window and the last days' depth windows as from every stored signal."""
    for oid, _, kind, _ in LEAD_OBJECTIVES:
        starts = [w.window_start for w in m.window_evaluations(aid) if w.objective_id == oid]
        if kind == "WINDOW_KIND_DAY":
            starts = [s for s in starts if at(s) >= now - timedelta(days=6)]
        for start in starts:
            check = m.recompute(aid, oid, start)
            recorded, recomputed = check["recorded"], check["recomputed"]
            if recorded["closed"]:
                assert check["matches"], (oid, start, check["differences"])
            else:
                for key in ("value", "status"):
                    assert recorded[key] == recomputed[key], (oid, start, key, recorded, recomputed)


# -- incidents ------------------------------------------------------------------------------------------
def _incident(sid: str, start: datetime, stops: tuple[float | None, float | None, float | None]) -> pb.Signal:
    """An incident failing at `start`, responded to, restored and resolved those hours later (None: not yet)."""
    body = pb.Incident(failure_start=ts(start))
    for name, hours in zip(("responded_at", "restored_at", "resolved_at"), stops, strict=True):
        if hours is not None:
            getattr(body, name).CopyFrom(ts(start + timedelta(hours=hours)))
    return pb.Signal(signal_id=sid, service_id=EMAIL, incident=body)


def _mttr_agreement(suite: Suite) -> str:
    objectives = []
    for r in ("RESTORE", "RESPOND"):
        o = _objective(r.lower(), "METRIC_MTTR", {"r": r})
        o.update(comparator="COMPARATOR_AT_MOST", target="120")
        objectives.append(o)
    return _agreement(suite, objectives)


def test_incidents_are_selected_by_when_their_clock_stopped_every_window_as_from_every_signal(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A year of incidents before the agreement, each responded to, restored and resolved: a
    round reads none of them but those missing a stop (still running for some "R"); with
    `mttr` v2 the digest covers the incidents that reach the window. Random incidents and their
    later stops over January and February: every MTTR window (RESTORE and RESPOND) equals the
    formula over every stored signal; a January closed with v1 restates by v1 over every
    incident, read whole."""
    m = suite.metrics
    rng = random.Random(5)
    with monkeypatch.context() as v1:
        v1.setattr(reliability, "MTTR_VERSION", 1)
        aid = _mttr_agreement(suite)
        start = at(f"2025-01-06T09:00{AMS}")
        history = [_incident(f"old-{i}", start + timedelta(hours=30 * i), (0.2, 1.0, 3.0)) for i in range(250)]
        history.append(_incident("no-response", start, (None, 1.0, 2.0)))
        m.record(COLLECTOR, history)
        m.record(COLLECTOR, [_incident("jan-0", at(f"2026-01-12T09:00{AMS}"), (0.5, 2.0, 4.0))])
        suite.tick(f"2026-02-01T09:30{AMS}")
    assert m.window(None, aid, "restore", JAN).closed["formula_version"] == 1
    reads = _Reads(monkeypatch)
    live: dict[str, tuple[datetime, list[float | None]]] = {}
    now = at(f"2026-02-01T09:30{AMS}")
    for step in range(12):
        batch = [f"i{step}"]
        live[f"i{step}"] = (now - timedelta(hours=rng.randint(1, 30)), [None, None, None])
        for sid in rng.sample(sorted(live), min(2, len(live))):  # stops reported later
            stops = live[sid][1]
            which = rng.randrange(3)
            stops[which] = stops[which] or rng.choice([0.3, 2.0, 9.0])
            batch.append(sid)
        signals = [_incident(sid, live[sid][0], (live[sid][1][0], live[sid][1][1], live[sid][1][2])) for sid in batch]
        if step == 4:  # a late incident of January: restates the v1 window, read whole
            signals.append(_incident("jan-late", at(f"2026-01-20T09:00{AMS}"), (0.5, 1.5, 2.0)))
        m.record(COLLECTOR, signals)
        now += timedelta(hours=rng.randint(10, 40))
        suite.tick(now.isoformat())
        for oid in ("restore", "respond"):
            for window in m.window_evaluations(aid):
                if window.objective_id != oid:
                    continue
                check = m.recompute(aid, oid, window.window_start)
                recorded, recomputed = check["recorded"], check["recomputed"]
                if recorded["closed"]:
                    assert check["matches"], (oid, window.window_start, check["differences"])
                else:
                    assert (recorded["value"], recorded["status"]) == (recomputed["value"], recomputed["status"])
    jan = m.window(None, aid, "restore", JAN).latest
    assert jan["formula_version"] == 1 and "old-0" in reads.whole and "jan-late" in reads.whole
    assert m.window(None, aid, "restore", FEB).current["formula_version"] == 2
    # February's selection (not read whole): the incident missing a response, none of the old ones.
    held = {
        sid
        for key, kept in m._services[EMAIL].selections.items()
        if not key[4]
        for sid in kept.lists.get("incidents", ((), [], []))[1]
    }
    assert "no-response" in held and not any(sid.startswith("old-") for sid in held)
