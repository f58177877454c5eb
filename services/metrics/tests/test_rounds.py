"""What an evaluation round judges, on both stores: only what changed since the last one. A
round with nothing new judges no window and records nothing; a new signal judges the open
windows it reaches (a late one also the closed window it falls in, restated); a window is
judged when it closes and when it opens; an outage still under way is judged again every
round (it lasts until the round's instant) until its end is reported; a second instance on
the same store, which has judged nothing yet, ends with the same evaluations; and a process
that starts judges only the signals stored after the position the last round recorded as
judged (with its open windows), not every window again; and a window reads only the
signals that reach it, the formula inputs kept converted being those of the windows the
latest round judged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import sla_terms
from accord_kit.timeline import Interval
from accord_metrics import judging, running, signal_index, signal_store
from accord_metrics.application import Metrics
from accord_metrics.domain import WindowEvaluation
from accord_metrics.evaluation import burn_rates
from accord_metrics.signal_index import combined
from accord_metrics.views import SERVICE_TOPIC, VIEW_EVENT_TOPICS
from tests.suite import (
    AMS,
    COLLECTOR,
    CUSTOMER,
    EMAIL,
    PROVIDER,
    Suite,
    active_agreements_alike,
    an_active_agreement,
    at,
    calls,
    open_windows_against_every_stored_signal,
    outage,
    spy_burn_rates,
    ts,
)


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _round(m: Metrics, when: str) -> tuple[int, int]:
    """One round at `when`: (windows judged, events recorded)."""
    head = m.head_position()
    m.evaluate(at(when))
    return m.last_round.windows_judged, m.head_position() - head


def _april_judged(suite: Suite) -> tuple[Metrics, str, signal_index.ServiceSignals]:
    """The sample SLA, an outage and four calls on 10 April judged at 10:00: the metrics
    application, the agreement's id and the e-mail service's signals (its kept selections)."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o1", f"2026-04-10T09:00{AMS}", 5), *calls("a", f"2026-04-10T08:00{AMS}", 3, 1)])
    suite.tick(f"2026-04-10T10:00{AMS}")
    return m, aid, m._services[EMAIL]


def _latest(m: Metrics, aid: str, objective_id: str, window_start: str) -> dict[str, object]:
    return dict(m.window(None, aid, objective_id, window_start).latest)


def test_a_round_judges_only_what_changed(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("jan-1", f"2026-01-12T10:00{AMS}", 30), *calls("a", f"2026-01-12T09:00{AMS}", 8, 2)])
    suite.tick(f"2026-02-01T02:00{AMS}")  # January closes, February opens
    m.record(COLLECTOR, [outage("feb-1", f"2026-02-02T10:00{AMS}", 20)])
    suite.tick(f"2026-02-10T09:00{AMS}")
    feb = _latest(m, aid, "availability", "2026-01-31T23:00:00+00:00")

    # Nothing new (and the last outage more than the longest burn-rate look-back ago):
    # nothing judged, nothing recorded, the agreement not even loaded.
    for when in ("2026-02-10T10:00", "2026-02-11T00:00", "2026-02-20T23:00"):
        assert _round(m, when + AMS) == (0, 0)
        assert m.last_round.agreements_judged == 0
        assert m.last_round.agreements_skipped == 1

    # A new outage in February: February's availability window judged — not its service level,
    # whose calls did not change (it reads no outage) — and January's not.
    m.record(COLLECTOR, [outage("feb-2", f"2026-02-20T08:00{AMS}", 10)])
    judged, recorded = _round(m, f"2026-02-20T23:05{AMS}")
    assert judged == 1
    assert recorded >= 1
    assert m.last_round.windows_changed == 1  # the service level's inputs did not change
    assert _latest(m, aid, "availability", "2026-01-31T23:00:00+00:00")["value"] < feb["value"]  # type: ignore[operator]

    # A late outage in January: its closed availability window is judged too (and restated).
    m.record(COLLECTOR, [outage("jan-2", f"2026-01-20T10:00{AMS}", 60)])
    judged, _ = _round(m, f"2026-02-20T23:10{AMS}")
    assert judged == 2
    jan = m.window(None, aid, "availability", "2025-12-31T23:00:00+00:00")
    assert len(jan.restatements) == 1

    # February closes and March opens: both judged; then quiet again.
    assert _round(m, f"2026-03-01T00:30{AMS}")[0] == 4
    assert _round(m, f"2026-03-01T00:40{AMS}") == (0, 0)


def test_an_outage_under_way_is_judged_every_round_until_it_ends(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    feb = "2026-01-31T23:00:00+00:00"
    start = at(f"2026-02-03T10:00{AMS}")
    ongoing = pb.Signal(signal_id="big", service_id=EMAIL, outage=pb.Outage(start=ts(start)))
    m.record(COLLECTOR, [ongoing])
    suite.tick(f"2026-02-03T11:00{AMS}")
    before = _latest(m, aid, "availability", feb)["value"]

    # No new signal, yet the outage goes on: the availability window (only) is judged again.
    judged, recorded = _round(m, f"2026-02-03T13:00{AMS}")
    assert judged == 1
    assert recorded >= 1
    assert _latest(m, aid, "availability", feb)["value"] < before  # type: ignore[operator]

    # Its end reported: judged once more (the availability window: the service level reads no
    # outage), then left alone once past the burn-rate look-back.
    ended = pb.Signal(
        signal_id="big", service_id=EMAIL, outage=pb.Outage(start=ts(start), end=ts(at(f"2026-02-03T12:00{AMS}")))
    )
    m.record(COLLECTOR, [ended])
    assert _round(m, f"2026-02-03T14:00{AMS}")[0] == 1
    # Within the longest burn-rate look-back its burn rates are judged again (nothing recorded
    # when no alert fires); past it, nothing is.
    assert _round(m, f"2026-02-03T15:00{AMS}") == (1, 0)
    assert _round(m, f"2026-02-10T14:00{AMS}") == (0, 0)


def test_a_fresh_instance_ends_with_the_same_evaluations(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("jan-1", f"2026-01-12T10:00{AMS}", 30), *calls("a", f"2026-01-12T09:00{AMS}", 8, 2)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("feb-1", f"2026-02-02T10:00{AMS}", 20)])
    suite.tick(f"2026-02-10T09:00{AMS}")
    expected = {(w.objective_id, w.window_start): w.latest for w in m.window_evaluations(aid)}

    other = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        head = other.head_position()
        other.evaluate(at(f"2026-02-10T09:00{AMS}"))
        assert other.head_position() == head  # nothing left undone, nothing recorded twice
        assert {(w.objective_id, w.window_start): w.latest for w in other.window_evaluations(aid)} == expected
        assert _round(other, f"2026-02-10T09:30{AMS}") == (0, 0)
    finally:
        other.close()


def test_a_restart_judges_only_the_signals_after_the_judged_position(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    for month in ("01", "02", "03"):
        day = f"2026-{month}-12T09:00{AMS}"
        m.record(COLLECTOR, [outage(f"o{month}", f"2026-{month}-12T10:00{AMS}", 30), *calls(month, day, 8, 2)])
        suite.tick(f"2026-{month}-20T10:00{AMS}")
    suite.tick(f"2026-04-10T10:00{AMS}")  # January to March closed, April open
    expected = {(w.objective_id, w.window_start): w.latest for w in m.window_evaluations(aid)}
    assert len(expected) == 8
    m.close()

    # Every stored signal was judged: the first round of a new process judges its open
    # windows (it has judged nothing itself), never the closed ones.
    again = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        head = again.head_position()
        judged, recorded = _round(again, f"2026-04-10T10:05{AMS}")
        assert (judged, recorded) == (2, 0)
        assert {(w.objective_id, w.window_start): w.latest for w in again.window_evaluations(aid)} == expected
        # A late outage in February stored, then the process ends before any round judged it.
        again.record(COLLECTOR, [outage("late", f"2026-02-20T10:00{AMS}", 90)])
        assert again.head_position() == head + 1
    finally:
        again.close()

    # The next process judges it: the closed windows it reaches (February's and March's, as a
    # running process would; February's availability restated) beside the open ones — not January's.
    third = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        judged, _ = _round(third, f"2026-04-10T10:10{AMS}")
        assert judged == 6
        feb = third.window(None, aid, "availability", "2026-01-31T23:00:00+00:00")
        assert len(feb.restatements) == 1
        assert len(third.window(None, aid, "availability", "2026-02-28T23:00:00+00:00").restatements) == 0
        assert _round(third, f"2026-04-10T10:15{AMS}")[0] == 0
    finally:
        third.close()
    suite.metrics = Metrics(suite.envs["metrics"], clock=suite.clock)  # closed by the fixture


def test_a_restart_loads_no_closed_window_that_no_change_reaches(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that starts learns which windows are closed from the log's closings and
    restatements (one read), not by loading every window of history in its first round to find
    it closed: only the open windows, and the closed ones a change reaches, are loaded."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    for month in range(1, 13):
        m.record(COLLECTOR, [outage(f"o{month}", f"2026-{month:02d}-12T10:00{AMS}", 30)])
        suite.tick(f"2026-{month:02d}-20T10:00{AMS}")
    suite.tick(f"2027-01-10T10:00{AMS}")  # 2026 closed: 12 windows of each objective
    closed = {w.id for w in m.window_evaluations(aid) if w.closed}
    assert len(closed) == 24
    m.close()

    loaded: list[UUID] = []
    again = Metrics(suite.envs["metrics"], clock=suite.clock)
    suite.metrics = again  # closed by the fixture
    get = again.repository.get

    def spying(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append(aggregate_id)
        return get(aggregate_id, *args, **kwargs)

    monkeypatch.setattr(again.repository, "get", spying)
    assert _round(again, f"2027-01-10T10:05{AMS}") == (2, 0)  # its open windows, nothing recorded
    assert closed & set(loaded) == set()

    # A late outage in November: November's and December's availability windows are loaded and
    # judged (November's restated) with January's, the other closed ones still not — nor the
    # service level's, which reads no outage.
    again.record(COLLECTOR, [outage("late", f"2026-11-20T10:00{AMS}", 90)])
    loaded.clear()
    assert _round(again, f"2027-01-10T10:10{AMS}")[0] == 3
    reached = {
        WindowEvaluation.create_id(aid, "availability", start)
        for start in ("2026-10-31T23:00:00+00:00", "2026-11-30T23:00:00+00:00")
    }
    assert closed & set(loaded) == reached
    assert len(again.window(None, aid, "availability", "2026-10-31T23:00:00+00:00").restatements) == 1


def test_a_window_reads_only_the_signals_that_reach_it(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    for month in ("01", "02", "03"):
        day = f"2026-{month}-12T09:00{AMS}"
        m.record(COLLECTOR, [outage(f"o{month}", f"2026-{month}-12T10:00{AMS}", 30), *calls(month, day, 8, 2)])
        suite.tick(f"2026-{month}-20T10:00{AMS}")
    suite.tick(f"2026-04-10T10:00{AMS}")
    held = m._services[EMAIL]
    assert held.count == 33 and m._signal_store.count() == 33  # indexed in the store, not in memory

    # A batch in April: the round judges April's two windows from April's signals alone — the
    # earlier months' are neither converted again nor kept converted.
    april = [outage("o04", f"2026-04-10T08:00{AMS}", 20), *calls("04", f"2026-04-10T07:00{AMS}", 5, 5)]
    m.record(COLLECTOR, april)
    assert _round(m, f"2026-04-10T10:05{AMS}")[0] == 2
    assert set(held.converted) == {s.signal_id for s in april}
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, "2026-03-31T22:00:00+00:00")  # from every stored signal
        assert check["matches"], check["differences"]

    # A late call in February: February's, March's and April's service-level windows are judged
    # (each from its own signals; availability reads no call: only April's burn rates, whose
    # look-back holds an outage); February's service level restated, exactly as from every
    # stored signal.
    m.record(COLLECTOR, calls("late", f"2026-02-25T09:00{AMS}", 0, 3))
    assert _round(m, f"2026-04-10T10:10{AMS}")[0] == 3 + 1
    feb = "2026-01-31T23:00:00+00:00"
    assert len(m.window(None, aid, "service-level", feb).restatements) == 1
    check = m.recompute(aid, "service-level", feb)
    assert check["matches"], check["differences"]
    assert not any(sid.startswith("01") for sid in held.converted)


def test_a_round_lists_an_agreements_windows_once_a_period_not_every_window_each_round(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round used to list every window since the agreement began, and hash each one's id,
    whatever it judged: its cost grew with history. The list is kept between rounds, made again
    only when a new window opens, and a window known closed that no change reaches is passed
    over without a look (judging.WindowList). When a new window opens, only it is listed and its
    id hashed, added to those kept (it listed every window since the agreement began again: a
    daily window's ten years, ≈ 3,650 windows and ids a day)."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    for month in [f"{y}-{mo:02d}" for y in (2026, 2027) for mo in range(1, 13)][1:]:
        suite.tick(f"{month}-01T02:00{AMS}")
    suite.tick(f"2028-01-10T10:00{AMS}")  # 2026 and 2027 closed: 24 windows of each objective; January open
    ids: list[tuple[str, ...]] = []
    create_id = WindowEvaluation.create_id

    def spying(*args: str, **kwargs: str) -> UUID:
        if args:  # a window listed (a new window's aggregate is created with its id by keywords)
            ids.append(args)
        return create_id(*args, **kwargs)

    monkeypatch.setattr(WindowEvaluation, "create_id", staticmethod(spying))

    def counted_round(when: str) -> int:
        ids.clear()
        return _round(m, when + AMS)[0]

    # A batch in the open month: its two windows judged, no window listed again.
    m.record(COLLECTOR, [outage("now", f"2028-01-10T08:00{AMS}", 20), *calls("now", f"2028-01-10T07:00{AMS}", 5, 5)])
    assert counted_round("2028-01-10T10:05") == 2
    assert ids == []

    # A late call in March 2027: the service-level windows it reaches (those ending after it:
    # March 2027 to January 2028) judged, March's restated — and January's availability for its
    # burn rates alone (its look-back holds an outage) — still none listed.
    m.record(COLLECTOR, calls("late", f"2027-03-10T09:00{AMS}", 0, 3))
    assert counted_round("2028-01-10T10:10") == 11 + 1
    assert ids == []
    march = "2027-02-28T23:00:00+00:00"
    assert len(m.window(None, aid, "service-level", march).restatements) == 1
    assert len(m.window(None, aid, "service-level", "2027-01-31T23:00:00+00:00").restatements) == 0
    check = m.recompute(aid, "service-level", march)
    assert check["matches"], check["differences"]

    # February opens: the round that closes January lists each objective's new window alone
    # (February 2028; the code before listed January 2026 to February 2028 again: 2 × 26), and the
    # next round none; the list is the one made from the agreement's start.
    assert counted_round("2028-02-01T02:00") == 2 * 2
    assert sorted(ids) == sorted((aid, objective, "2028-01-31T23:00:00+00:00") for objective in {i[1] for i in ids})
    assert len(ids) == 2
    assert counted_round("2028-02-01T02:05") == 0
    for (agreement_id, objective_id), kept in m._window_lists.items():
        assert len(kept.windows) == 26
        months = [(y, mo) for y in (2026, 2027) for mo in range(1, 13)] + [(2028, 1), (2028, 2)]
        starts = [datetime(y, mo, 1, tzinfo=ZoneInfo("Europe/Amsterdam")).astimezone(UTC) for y, mo in months]
        assert [w.start for w in kept.windows] == starts
        assert kept.ends == [w.end for w in kept.windows] and kept.ends[:-1] == starts[1:]
        assert kept.ids == [create_id(agreement_id, objective_id, s.isoformat()) for s in starts]
    assert ids == []
    m.record(COLLECTOR, calls("feb", f"2028-02-01T01:00{AMS}", 3, 0))
    assert counted_round("2028-02-01T02:10") == 1  # February's service level
    assert ids == []


def test_a_round_reads_views_calendars_services_and_signals_from_where_the_last_one_read_to(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index that tails some topics of the log started each look at its topics' last event:
    with nothing new of them, every round scanned again every event stored since (a metrics
    log is mostly signal batches and evaluations) — a cost growing with history. Each look now
    starts at the head the last one read up to (accord_kit.application.topic_pages)."""
    m = suite.metrics
    an_active_agreement(suite)
    for day in range(11, 16):  # signal batches after the last view, calendar and service event
        m.record(COLLECTOR, calls(f"d{day}", f"2026-01-{day}T09:00{AMS}", 3, 1))
    head = m.head_position()
    _round(m, f"2026-01-16T10:00{AMS}")
    starts: list[tuple[str, int]] = []
    select = m.recorder.select_notifications

    def spying(*args: Any, **kwargs: Any) -> Any:
        starts.append((",".join(kwargs.get("topics") or ()), kwargs["start"]))
        return select(*args, **kwargs)

    monkeypatch.setattr(m.recorder, "select_notifications", spying)
    _round(m, f"2026-01-16T10:05{AMS}")
    looked = {topics for topics, _ in starts}
    for topics in (VIEW_EVENT_TOPICS, judging.CALENDAR_TOPICS, [SERVICE_TOPIC], signal_index.SIGNAL_TOPICS):
        assert ",".join(topics) in looked
    assert [(topics, start) for topics, start in starts if start < head] == []


def test_a_running_evaluation_is_recorded_only_when_its_outcome_changes(suite: Suite) -> None:
    m, ag = suite.metrics, suite.agreements
    an_active_agreement(suite)
    response = {
        "objective_id": "response",
        "name": "P1 tickets answered within an hour",
        "metric": "METRIC_TICKET_RESPONSE",
        "parameters": {"priority": "P1", "target_minutes": "60"},
        "comparator": "COMPARATOR_AT_LEAST",
        "target": "90",
        "window": {"kind": "WINDOW_KIND_MONTH"},
        "calendar_id": "24x7",
        "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }
    aid = str(ag.draft(PROVIDER, sla_terms(objectives=[response])).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    opened = at(f"2026-02-02T10:00{AMS}")
    ticket = pb.Signal(signal_id="t1", service_id=EMAIL, ticket=pb.Ticket(priority="P1", opened=ts(opened)))
    m.record(COLLECTOR, [ticket])
    suite.tick(f"2026-02-02T10:30{AMS}")
    feb = "2026-01-31T23:00:00+00:00"
    before = m.window(None, aid, "response", feb).current
    assert before["status"] == "NO_DATA"  # not due yet

    # Judged every round (as of its instant), recorded only when the ticket turns late.
    judged, recorded = _round(m, f"2026-02-02T11:30{AMS}")
    assert judged == 1 and recorded >= 1  # the evaluation, and the late ticket's breach
    for hour in ("12", "13", "14"):
        judged, recorded = _round(m, f"2026-02-02T{hour}:30{AMS}")
        assert (judged, recorded) == (1, 0)
    after = m.window(None, aid, "response", feb).current
    assert after["status"] != before["status"]
    assert after["parameters"]["as_of"] == at(f"2026-02-02T11:30{AMS}").isoformat()  # the last change


def test_an_open_window_keeps_its_selection_and_a_correction_replaces_its_input(suite: Suite) -> None:
    m = suite.metrics
    aid = an_active_agreement(suite)
    for month in ("03", "04"):
        day = f"2026-{month}-08T09:00{AMS}"
        m.record(COLLECTOR, [outage(f"o{month}", f"2026-{month}-08T10:00{AMS}", 30), *calls(month, day, 6, 2)])
    suite.tick(f"2026-04-10T10:00{AMS}")  # March closed, April open: its selection kept
    held = m._services[EMAIL]
    assert held.selections

    # New signals and corrections in April after rounds that kept its inputs: a call answered
    # later, an outage moved out of April (into March: a restatement) and one moved into it.
    m.record(COLLECTOR, [*calls("04b", f"2026-04-10T08:00{AMS}", 3, 0), outage("o03b", f"2026-03-20T10:00{AMS}", 5)])
    assert _round(m, f"2026-04-10T10:05{AMS}")[0] >= 2
    reads: list[str] = []
    in_range = held.store.in_range

    def counted(*args: object) -> object:
        reads.append(str(args[1]))
        return in_range(*args)  # type: ignore[arg-type]

    held.store.in_range = counted  # type: ignore[method-assign]
    slow = calls("04", f"2026-04-08T09:00{AMS}", 0, 1)[0]  # "040" answered after 40 s, not 10 s
    m.record(
        COLLECTOR,
        [slow, outage("o04", f"2026-03-28T10:00{AMS}", 30), outage("o03b", f"2026-04-09T10:00{AMS}", 25)],
        reason="corrected",
    )
    assert _round(m, f"2026-04-10T10:10{AMS}")[0] == 4  # April's two, March's two (restated)
    # The selections kept from the last round (April's, and March's: judged in it too) read only
    # the rows of the ids that changed: no range read of the store.
    assert reads == []
    april = "2026-03-31T22:00:00+00:00"
    latest = {o: _latest(m, aid, o, april) for o in ("availability", "service-level")}
    assert latest["service-level"]["detail"]["answered_within"] == "8"  # type: ignore[index]

    # A process with nothing kept judges the same evaluations, and the auditors' recomputation
    # from every stored signal matches.
    fresh = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        for objective, evaluation in latest.items():
            assert fresh.recompute(aid, objective, april)["matches"]
            view = fresh.agreement_view(None, aid)
            agg = fresh.window(None, aid, objective, april)
            check = fresh.check_window(
                view, agg, fresh.signal_sources(fresh.scope(view, suite.clock.now())[2]), suite.clock.now()
            )
            assert check.recomputed is not None
            for field in ("value", "input_digest", "detail", "parameters", "status"):
                assert check.recomputed[field] == evaluation[field], field
    finally:
        fresh.close()


def test_a_selection_converts_its_rows_a_page_at_a_time_as_they_are_read(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """A window's selection converts its rows as the store gives them, a page at a time: their
    contents are never all held at once (a restart's first round selects every signal of the open
    windows, and their contents held together until converted left the restarted process ≈ 10 MiB
    larger at 160,256 in the open window) — and the evaluations are those of every stored signal."""
    monkeypatch.setattr(signal_store, "_PAGE", 40)
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o04", f"2026-04-08T10:00{AMS}", 30), *calls("04", f"2026-04-08T09:00{AMS}", 150, 50)])
    held = m._services[EMAIL]
    converting = held._inputs
    passed: list[int] = []

    def spy(entries: Any, *args: Any, **kwargs: Any) -> Any:
        passed.append(len(entries))
        return converting(entries, *args, **kwargs)

    monkeypatch.setattr(held, "_inputs", spy)
    suite.tick(f"2026-04-10T10:00{AMS}")
    assert sum(passed) >= 201 and max(passed) <= 40  # every call and the outage, 40 rows at most at a time
    april = "2026-03-31T22:00:00+00:00"
    assert _latest(m, aid, "service-level", april)["detail"]["answered_within"] == "150"  # type: ignore[index]
    for objective in ("availability", "service-level"):
        assert m.recompute(aid, objective, april)["matches"]


def test_an_open_windows_burn_rates_keep_its_selection_for_the_next_batch(suite: Suite) -> None:
    m, aid, held = _april_judged(suite)
    reads: list[str] = []
    in_range = held.store.in_range

    def counted(*args: object) -> object:
        reads.append(str(args[1]))
        return in_range(*args)  # type: ignore[arg-type]

    held.store.in_range = counted  # type: ignore[method-assign]
    # Time alone: availability's burn rates judged again (its outage within the look-backs) …
    assert _round(m, f"2026-04-10T10:00:05{AMS}")[0] == 1
    # … and a batch after it: both windows judged whole — from the window's selection kept
    # through both rounds, reading only the new ids' rows.
    m.record(COLLECTOR, [outage("o2", f"2026-04-10T09:30{AMS}", 5), *calls("b", f"2026-04-10T09:40{AMS}", 1, 2)])
    assert _round(m, f"2026-04-10T10:00:10{AMS}")[0] == 2
    assert reads == []
    april = "2026-03-31T22:00:00+00:00"
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, april)  # from every stored signal
        assert check["matches"], check["differences"]
    assert _latest(m, aid, "service-level", april)["detail"]["answered"] == "7"  # type: ignore[index]

    # A query outside a round (a burn rate asked for, its look-backs ending now) keeps nothing.
    kept = set(held.selections)
    look_backs = Interval(at(f"2026-04-10T07:00{AMS}"), at(f"2026-04-10T10:00:15{AMS}"))
    assert m.signal_set([EMAIL], span=look_backs).outages
    assert set(held.selections) == kept


def _conversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The signal ids converted to formula inputs from now on, in order."""
    converted: list[str] = []
    convert_all = signal_index._convert_all
    depth = [0]

    def counting(signals: list[pb.Signal], ids: list[str] | None = None) -> list[object]:
        if not depth[0]:  # (a mix of kinds is converted a kind at a time, each part by a call of its own)
            converted.extend(s.signal_id for s in signals)
        depth[0] += 1
        try:
            return convert_all(signals, ids)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(signal_index, "_convert_all", counting)
    return converted


def test_a_kept_selection_reused_unchanged_is_not_copied_and_what_changes_after_is_read_afresh(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle round that selects a kept span unchanged reuses the selection's inputs as kept:
    none converted again, none copied into the inputs kept apart from the selections. A new call
    and a correction in the span after such rounds give the evaluations of a fresh read; so does
    the selection kept through a longer outage than any before, from the inputs it holds — but for
    the call corrected meanwhile, converted again."""
    m, aid, held = _april_judged(suite)
    first = {"o1", "a0", "a1", "a2", "a3"}
    converted = _conversions(monkeypatch)
    april = "2026-03-31T22:00:00+00:00"

    def fresh_read() -> None:  # every evaluation of April as from every stored signal
        for objective in ("availability", "service-level"):
            check = m.recompute(aid, objective, april)
            assert check["matches"], check["differences"]

    for second in ("05", "10"):  # idle rounds: the burn rates judged again from the kept selection
        assert _round(m, f"2026-04-10T10:00:{second}{AMS}")[0] == 1
        assert converted == []
        assert held.selections and not first & set(held._converted)  # reused, not copied
        assert first <= set(held.converted)

    # A new call, then a correction (a0 answered after 40 s, not 10 s), after those rounds.
    m.record(COLLECTOR, calls("b", f"2026-04-10T09:40{AMS}", 1, 0))
    m.record(COLLECTOR, calls("a", f"2026-04-10T08:00{AMS}", 0, 1), reason="corrected")
    assert _round(m, f"2026-04-10T10:00:15{AMS}")[0] == 2
    assert sorted(converted) == ["a0", "b0"]
    assert _latest(m, aid, "service-level", april)["detail"]["answered_within"] == "3"  # type: ignore[index]
    fresh_read()
    assert _round(m, f"2026-04-10T10:00:20{AMS}")[0] == 1  # unchanged again: reused
    assert sorted(converted) == ["a0", "b0"]

    # A longer outage than any before and a correction (a1 answered after 40 s): the selection
    # kept, the inputs held but a1's reused.
    converted.clear()
    kept_before = dict(held.selections)
    m.record(COLLECTOR, [outage("o2", f"2026-04-10T09:10{AMS}", 30)])
    m.record(COLLECTOR, calls("a", f"2026-04-10T08:00{AMS}", 1, 1)[1:], reason="corrected")
    assert _round(m, f"2026-04-10T10:00:25{AMS}")[0] == 2
    assert sorted(converted) == ["a1", "o2"]
    assert kept_before and all(held.selections.get(key) is kept for key, kept in kept_before.items())
    assert _latest(m, aid, "service-level", april)["detail"]["answered_within"] == "2"  # type: ignore[index]
    fresh_read()


def test_a_longer_outage_than_any_keeps_the_selection_and_the_running_forms_folded(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage longer than any before the service's may reach into the open window from that
    much earlier (a selection's outages are read from the longest outage before its span): the
    kept selection stays, every list as it is, the longer outage placed as any change — it was
    made anew, which read the whole span again and gave every list a new lineage: the outages'
    running form folded the window again at once, and the service level's the next round a call
    came (seconds at a contact centre's density), though no call had changed. The outages a fresh
    read of the span adds from further back are those that end before it, which no window within
    it reads; each round gives the formulas' evaluations over every stored signal."""
    m, aid, held = _april_judged(suite)
    april = "2026-03-31T22:00:00+00:00"
    (calls_held,) = [r for r in m._running.values() if isinstance(r.tally, running.CallTally)]
    (outages_held,) = [r for r in m._running.values() if isinstance(r.tally, running.OutageTally)]
    assert (calls_held.seeded, outages_held.seeded) == (1, 1)

    def fresh_read() -> None:  # every evaluation of April as from every stored signal
        for objective in ("availability", "service-level"):
            check = m.recompute(aid, objective, april)
            assert check["matches"], check["differences"]

    # An outage on 20 March, before the span (April from its longest burn-rate look-back, 3 days
    # before) by more than the longest outage (o1, 5 minutes): not selected; and one in April.
    m.record(COLLECTOR, [outage("early", f"2026-03-20T12:00{AMS}", 2), outage("o2", f"2026-04-10T09:30{AMS}", 1)])
    suite.tick(f"2026-04-10T10:00:05{AMS}")
    assert all("early" not in kept.lists["outages"][1] for kept in held.selections.values())
    converted = _conversions(monkeypatch)
    appended = outages_held.appended
    kept_before = dict(held.selections)

    # Nine days down from 25 March, into April (and March, closed: judged again): "early" now
    # starts within the longest outage before April's span, but ends before it.
    m.record(COLLECTOR, [outage("long", f"2026-03-25T06:00{AMS}", 9 * 24 * 60)])
    suite.tick(f"2026-04-10T10:00:10{AMS}")
    assert held.longest_outage == 9 * 24 * 60 * 60_000_000
    assert "long" in converted and not {"o1", "o2", "a0", "a1", "a2", "a3"} & set(converted)  # April's kept
    assert kept_before and all(held.selections.get(key) is kept for key, kept in kept_before.items())  # kept
    # The longer outage folded in as an append; neither running form folded again.
    assert (calls_held.seeded, outages_held.seeded) == (1, 1) and outages_held.appended == appended + 1
    fresh_read()

    m.record(COLLECTOR, calls("b", f"2026-04-10T09:40{AMS}", 2, 1))
    suite.tick(f"2026-04-10T10:00:15{AMS}")
    assert (calls_held.seeded, calls_held.appended) == (1, 1)  # the new calls folded in, alone
    assert {"b0", "b1", "b2"} <= set(converted) and not {"o1", "o2", "a0", "a1", "a2", "a3"} & set(converted)
    fresh_read()
    for key, kept in held.selections.items():  # a fresh read of the span, less what ends before it
        span, all_calls, repeat, since, whole_settled, peers = key
        fresh = held._select(span, all_calls, since, whole_settled, repeat, None, peers)
        outages = fresh["outages"]
        reaching = [sid for sid, o in zip(outages.ids, outages.items, strict=True) if o.end > span.start]
        assert "early" in outages.ids and "early" not in reaching and "long" in reaching
        assert kept.lists["outages"][1] == reaching
        assert {name: ids for name, (_, ids, _) in kept.lists.items() if ids and name != "outages"} == {
            name: columns.ids for name, columns in fresh.items() if columns.ids and name != "outages"
        }


def test_rows_a_fresh_selection_read_before_they_were_noted_are_no_change(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A selection made afresh (a restart's first round, a window's opening) reads the store's
    index as it is then, which may already hold a batch another process stored after the round
    read the log — the recording process, storing all the time in a live stream. The next round
    notes that batch and reads its rows again: the inputs the selection holds, unchanged. They were
    counted as replacements in place; more of them than the log of replacements keeps (a live
    stream's batches of a few seconds: tens of thousands) and the round after folded the whole open
    window again — seconds at a contact centre's density. They are no change now: the selection's
    lists stay as they are and the running forms fold only what is new. Each round gives the
    formulas' evaluations over every stored signal."""
    m, aid, _ = _april_judged(suite)  # `m` stores the batch the restarted process has not noted
    april = "2026-03-31T22:00:00+00:00"
    again = Metrics(suite.envs["metrics"], clock=suite.clock)  # a restart, beside another process
    racing = [*calls("race", f"2026-04-10T08:10{AMS}", signal_index.EDITS_KEPT + 40, 0)]
    racing.append(outage("race-o", f"2026-04-10T09:20{AMS}", 2))
    stored: list[int] = []
    reading = signal_store.SignalStore.in_range

    def stored_meanwhile(store: signal_store.SignalStore, *args: Any, **kwargs: Any) -> Any:
        # The other process stores its batch after this round read the log, before it selects.
        if not stored:
            stored.append(m.record(COLLECTOR, racing).accepted)
        return reading(store, *args, **kwargs)

    try:
        with monkeypatch.context() as patched:
            patched.setattr(signal_store.SignalStore, "in_range", stored_meanwhile)
            again.evaluate(at(f"2026-04-10T10:00:05{AMS}"))
        assert stored == [len(racing)]
        held = again._services[EMAIL]
        (kept,) = held.selections.values()
        assert {"race0", "race-o"} <= set(kept.lists["calls"][1]) | set(kept.lists["outages"][1])
        forms = {type(r.tally): r for r in again._running.values()}
        calls_held, outages_held = forms[running.CallTally], forms[running.OutageTally]
        assert (calls_held.seeded, outages_held.seeded) == (1, 1)

        # The next round notes the batch (read from the log) and reads its rows again: no change.
        again.evaluate(at(f"2026-04-10T10:00:10{AMS}"))
        assert (calls_held.seeded, outages_held.seeded, calls_held.edited, outages_held.edited) == (1, 1, 0, 0)
        assert list(held.selections.values()) == [kept] and not kept.changes and not kept.edits
        for objective in ("availability", "service-level"):
            check = again.recompute(aid, objective, april)
            assert check["matches"], check["differences"]

        # New calls then: folded alone, as appended.
        appended = calls_held.appended
        again.record(COLLECTOR, calls("b", f"2026-04-10T09:40{AMS}", 2, 1))
        again.evaluate(at(f"2026-04-10T10:00:15{AMS}"))
        assert (calls_held.seeded, calls_held.edited, calls_held.appended) == (1, 0, appended + 1)
        for objective in ("availability", "service-level"):
            check = again.recompute(aid, objective, april)
            assert check["matches"], check["differences"]
    finally:
        again.close()


def test_a_window_closes_from_its_running_evaluation_and_late_signals_restate_it_from_there(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round after an open window's end closes it from its kept selection and running
    evaluations — as of its end, what came since the last round folded in — not from the formulas
    over every input of the window read again (seconds at a contact centre's density, every
    month's end); and keeps them `CLOSED_KEPT` after its end, so that late signals then restate it
    from there too (they were each the whole month read and computed again). After that a late
    signal restates it from its inputs, as any closed window. Every closing and restatement is the
    formulas' over every stored signal."""
    m, aid, _ = _april_judged(suite)
    april = "2026-03-31T22:00:00+00:00"
    forms = {type(r.tally): (wid, r) for wid, r in m._running.items()}
    (calls_wid, calls_held), (outages_wid, outages_held) = forms[running.CallTally], forms[running.OutageTally]
    assert (calls_held.seeded, outages_held.seeded) == (1, 1)
    appended = (calls_held.appended, outages_held.appended)
    converted = _conversions(monkeypatch)

    def fresh_read() -> None:  # April's evaluations as from every stored signal
        for objective in ("availability", "service-level"):
            assert _latest(m, aid, objective, april)["closed"] is True
            check = m.recompute(aid, objective, april)
            assert check["matches"], check["differences"]

    # Late on the last day, then the round after April's end (Amsterdam's: 22:00 UTC): April closes.
    m.record(COLLECTOR, [outage("o2", f"2026-04-30T16:00{AMS}", 2), *calls("b", f"2026-04-30T20:40{AMS}", 2, 1)])
    suite.tick("2026-04-30T22:00:05+00:00")
    fresh_read()
    # Closed from the running evaluations: the new signals folded in, nothing folded again, no
    # input of the window converted again.
    assert (calls_held.seeded, outages_held.seeded) == (1, 1)
    assert (calls_held.appended, outages_held.appended) == (appended[0] + 1, appended[1] + 1)
    assert sorted(converted) == ["b0", "b1", "b2", "o2"]

    # Late calls and an outage (in its coverage hours) within the hour after: April restated from
    # its running evaluations.
    m.record(COLLECTOR, [outage("o3", f"2026-04-30T10:00{AMS}", 5), *calls("c", f"2026-04-30T20:50{AMS}", 1, 1)])
    suite.tick("2026-04-30T22:20:00+00:00")
    assert len(m.window(None, aid, "availability", april).restatements) == 1
    assert len(m.window(None, aid, "service-level", april).restatements) == 1
    fresh_read()
    assert (calls_held.seeded, outages_held.seeded) == (1, 1)
    assert (calls_held.appended, outages_held.appended) == (appended[0] + 2, appended[1] + 2)
    assert sorted(converted) == ["b0", "b1", "b2", "c0", "c1", "o2", "o3"]

    # An hour after April's end the round drops them; a late outage then restates April from its
    # inputs, by the version it was recorded with.
    suite.tick("2026-04-30T23:00:05+00:00")
    assert calls_wid not in m._running and outages_wid not in m._running
    m.record(COLLECTOR, [outage("late", f"2026-04-20T10:00{AMS}", 30)])
    suite.tick("2026-04-30T23:10:00+00:00")
    assert len(m.window(None, aid, "availability", april).restatements) == 2
    fresh_read()


def test_how_long_a_closed_window_keeps_its_running_evaluation_is_a_setting(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """`METRICS_CLOSED_KEPT_SECONDS` (the store env's CLOSED_KEPT_SECONDS; an hour when unset): kept
    ten minutes, a window closed from its running evaluation drops it ten minutes after its end —
    not an hour — and a late signal then restates it from its inputs, as the formulas give it from
    every stored signal."""

    def env(name: str) -> dict[str, str]:
        return {**make_store_env(name), **({judging.CLOSED_KEPT_SECONDS: "600"} if name == "metrics" else {})}

    suite = Suite(env)
    try:
        m, aid, _ = _april_judged(suite)
        assert m.closed_kept == timedelta(minutes=10)
        april = "2026-03-31T22:00:00+00:00"
        held = set(m._running)
        assert len(held) == 2  # availability's outages and the service level's calls

        suite.tick("2026-04-30T22:00:05+00:00")  # April closes from its running evaluations
        assert held <= set(m._running)
        suite.tick("2026-04-30T22:10:10+00:00")  # ten minutes after its end: let go
        assert not held & set(m._running)
        m.record(COLLECTOR, [outage("late", f"2026-04-20T10:00{AMS}", 30)])
        suite.tick("2026-04-30T22:20:00+00:00")
        assert len(m.window(None, aid, "availability", april).restatements) == 1
        for objective in ("availability", "service-level"):
            check = m.recompute(aid, objective, april)
            assert check["matches"], check["differences"]
    finally:
        suite.close()


def test_a_maintenance_announced_into_the_open_window_leaves_the_calls_folded(suite: Suite) -> None:
    """A window's exclusions (declared and announced maintenance, suspended time) and calendar are
    read by the availabilities and MTBF alone: a maintenance announced into the open window folds
    availability's outages again under the new exclusion, and leaves the service level's running
    form as it is — it folded every call of the window again, though the call formulas read no
    exclusion. Each round gives the formulas' evaluations over every stored signal."""
    m, aid, _ = _april_judged(suite)
    april = "2026-03-31T22:00:00+00:00"
    (calls_held,) = [r for r in m._running.values() if isinstance(r.tally, running.CallTally)]
    (outages_held,) = [r for r in m._running.values() if isinstance(r.tally, running.OutageTally)]
    assert (calls_held.seeded, outages_held.seeded) == (1, 1)
    downtime = _latest(m, aid, "availability", april)["detail"]["downtime_seconds"]  # type: ignore[index]

    # Announced two days ahead (the sample's notice is 24 hours), over the first three minutes of o1.
    start, end = at(f"2026-04-10T08:58{AMS}"), at(f"2026-04-10T09:03{AMS}")
    m.record(
        COLLECTOR,
        [
            pb.Signal(
                signal_id="m1",
                service_id=EMAIL,
                maintenance=pb.Maintenance(start=ts(start), end=ts(end), announced_at=ts(at(f"2026-04-08T08:00{AMS}"))),
            )
        ],
    )
    suite.tick(f"2026-04-10T10:00:05{AMS}")
    assert _latest(m, aid, "availability", april)["detail"]["downtime_seconds"] != downtime  # type: ignore[index]
    assert outages_held.seeded == 2 and calls_held.seeded == 1  # the outages under the new exclusion alone
    appended = calls_held.appended
    m.record(COLLECTOR, calls("b", f"2026-04-10T09:40{AMS}", 2, 1))
    suite.tick(f"2026-04-10T10:00:10{AMS}")
    assert (calls_held.seeded, calls_held.appended) == (1, appended + 1)
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, april)
        assert check["matches"], check["differences"]


def test_the_inputs_a_round_selects_and_keeps_are_held_by_the_selection_alone(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the round that converts them (a restart's first round converts every signal of the
    open windows), the inputs of a selection the round keeps are held by it alone — not also in
    the inputs kept apart nor among the round's own, two dicts of every input beside the
    selection before — and each is converted once however many windows read it."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o1", f"2026-04-10T09:00{AMS}", 5), *calls("a", f"2026-04-10T08:00{AMS}", 3, 1)])
    converted = _conversions(monkeypatch)
    held = m._services[EMAIL]
    selected: list[set[str]] = []
    end_round = held.end_round

    def ending(ended_after: datetime | None = None, now: datetime | None = None) -> None:
        selected.append(set(held.selected or ()))
        end_round(ended_after, now)

    monkeypatch.setattr(held, "end_round", ending)
    suite.tick(f"2026-04-10T10:00{AMS}")
    first = {"o1", "a0", "a1", "a2", "a3"}
    assert sorted(converted) == sorted(first)  # once, for both objectives' windows
    kept = {sid for s in held.selections.values() for _, ids, _ in s.lists.values() for sid in ids}
    assert first <= kept and not first & set(held._converted) and not any(first & ids for ids in selected)
    assert first <= set(held.converted)  # found by id all the same
    for objective in ("availability", "service-level"):
        assert m.recompute(aid, objective, "2026-03-31T22:00:00+00:00")["matches"]


def test_the_inputs_a_round_catches_up_with_are_held_by_the_selections_alone(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs of a batch that kept selections are brought up to date with in a round are
    converted once, however many of them take it, and held by those selections alone after the
    round — not kept apart as well until the next round (a live stream's every input between two
    rounds: tens or hundreds of thousands of entries beside the selections)."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("o1", f"2026-04-10T09:00{AMS}", 5), *calls("a", f"2026-04-10T08:00{AMS}", 3, 1)])
    suite.tick(f"2026-04-10T10:00{AMS}")
    held = m._services[EMAIL]
    # Two kept selections of the service's April (spans of a round's own), each brought up to date
    # with the batch below within the next round.
    spans = [Interval(at(f"2026-04-0{d}T00:00{AMS}"), at(f"2026-04-20T00:00{AMS}")) for d in (1, 2)]
    held.begin_round()
    for span in spans:
        held.select(span)
    held.end_round()
    converted = _conversions(monkeypatch)
    caught: list[str] = []
    selected: list[set[str]] = []
    end_round = held.end_round

    def ending(ended_after: datetime | None = None, now: datetime | None = None) -> None:
        del converted[:]  # what the round's windows converted: not these selections'
        for span in spans:
            held.select(span)
        caught.extend(converted)
        selected.append(set(held.selected or ()))
        end_round(ended_after, now)

    monkeypatch.setattr(held, "end_round", ending)
    batch = {"o2", "b0", "b1"}
    m.record(COLLECTOR, [outage("o2", f"2026-04-10T10:20{AMS}", 2), *calls("b", f"2026-04-10T10:10{AMS}", 2, 0)])
    suite.tick(f"2026-04-10T10:30{AMS}")
    assert sorted(caught) == sorted(batch)  # once, for both selections
    kept = [held.selections[held._key(span, False, None, None, False, ())] for span in spans]
    for selection in kept:
        assert batch <= {sid for _, ids, _ in selection.lists.values() for sid in ids} and not selection.changed
    assert not batch & set(held._converted) and not any(batch & ids for ids in selected)
    assert batch <= set(held.converted)  # found by id all the same
    for objective in ("availability", "service-level"):
        assert m.recompute(aid, objective, "2026-03-31T22:00:00+00:00")["matches"]


def test_selections_a_round_makes_after_its_index_of_kept_inputs_find_each_others_inputs(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one round, a selection made after the round's index of kept inputs was made is
    added to it: a third selection reading only what the second one converted finds it there,
    rather than converting it again (those inputs are no longer also kept apart)."""
    m = suite.metrics
    an_active_agreement(suite)
    m.record(COLLECTOR, [*calls("a", f"2026-04-05T08:00{AMS}", 2, 0), *calls("b", f"2026-04-15T08:00{AMS}", 2, 0)])
    suite.tick(f"2026-04-16T10:00{AMS}")
    held = m._services[EMAIL]
    held.end_round()
    held.selections = {}  # nothing kept from earlier rounds
    held._converted = {}
    converted = _conversions(monkeypatch)
    held.begin_round()
    held.select(Interval(at(f"2026-04-01T00:00{AMS}"), at(f"2026-04-10T00:00{AMS}")))  # a*: converted
    held.select(Interval(at(f"2026-04-01T00:00{AMS}"), at(f"2026-04-20T00:00{AMS}")))  # a* found, b* converted
    third = held.select(Interval(at(f"2026-04-12T00:00{AMS}"), at(f"2026-04-20T00:00{AMS}")))  # b* found
    held.end_round()
    assert sorted(converted) == ["a0", "a1", "b0", "b1"]  # each once
    assert sorted(c.call_id for c in third.calls) == ["b0", "b1"]


def test_an_open_window_selects_only_what_its_burn_rates_read_before_its_start(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open window's span reaches back to its longest burn-rate look-back before its start only
    for the lists the burn rates read: after a restart, an outage there is converted, kept and fed
    to the burn rates; a call there (counted by no window of April) is neither converted nor kept.
    The evaluations and burn rates are those over every stored signal."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    march = [outage("o-mar", f"2026-03-31T20:00{AMS}", 30), *calls("mar", f"2026-03-31T21:00{AMS}", 2, 1)]
    m.record(COLLECTOR, [*march, *calls("apr", f"2026-04-01T08:00{AMS}", 2, 1)])
    suite.tick(f"2026-04-01T10:00{AMS}")  # March closed (judged), April open

    judged = spy_burn_rates(monkeypatch)
    converted = _conversions(monkeypatch)
    now = at(f"2026-04-01T10:00:05{AMS}")
    fresh = Metrics(suite.envs["metrics"], clock=suite.clock)  # a restart: nothing converted, nothing kept
    try:
        suite.clock.set(now)
        fresh.evaluate(now)
        assert fresh.last_round.windows_judged == 2  # April's two open windows
        held = fresh._services[EMAIL]
        assert "o-mar" in converted and "o-mar" in held.converted
        assert {"apr0", "apr1", "apr2"} <= set(converted)
        march_calls = {"mar0", "mar1", "mar2"}
        assert not march_calls & set(converted)
        assert not march_calls & set(held.converted)
        assert held.selections

        # The burn rates read the outage before April's start: those over every stored signal.
        april = "2026-03-31T22:00:00+00:00"
        expected = _burn_rates_over_every_signal(suite, fresh, aid, april, now)
        assert any(expected.values())
        assert judged and all(rates == expected for rates in judged)
        for objective_id in ("availability", "service-level"):
            check = fresh.recompute(aid, objective_id, april)  # from every stored signal
            assert check["matches"], check["differences"]
        assert _latest(fresh, aid, "service-level", april) == _latest(m, aid, "service-level", april)
    finally:
        fresh.close()


def test_a_new_months_look_back_finds_its_outages_among_the_kept_ones_without_indexing_the_calls(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round that opens April selects April's windows, whose burn-rate look-back reaches into
    March's last days: the outages there are found among the inputs of March's kept selection, not
    converted again — and only the outages are indexed for that, not the month's calls (a contact
    centre's month: ≈ 1,500,000 of them, a dict of them made at every month's turn). The burn
    rates and evaluations are those over every stored signal."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    march = [outage("o-a", f"2026-03-30T20:00{AMS}", 30), outage("o-b", f"2026-03-31T21:00{AMS}", 20)]
    m.record(COLLECTOR, [*march, *calls("mar", f"2026-03-31T08:00{AMS}", 6, 2)])
    suite.tick(f"2026-03-31T23:00{AMS}")  # a round in March: its selection kept
    indexed: list[set[str]] = []
    index_kept = signal_index.ServiceSignals._index_kept

    def spied(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = index_kept(self, *args, **kwargs)
        indexed.append(set(out))
        return out

    monkeypatch.setattr(signal_index.ServiceSignals, "_index_kept", spied)
    judged = spy_burn_rates(monkeypatch)
    converted = _conversions(monkeypatch)
    now = at(f"2026-04-01T00:00:05{AMS}")
    suite.clock.set(now)
    m.evaluate(now)
    assert m.last_round.windows_judged >= 2  # March closed, April opened
    assert indexed and all(ids <= {"o-a", "o-b"} for ids in indexed)  # no call indexed
    assert {"o-a", "o-b"} <= set().union(*indexed)
    assert not {"o-a", "o-b"} & set(converted)  # found, not converted again
    # April's burn rates read March's outages: those over every stored signal.
    expected = _burn_rates_over_every_signal(suite, m, aid, "2026-03-31T22:00:00+00:00", now)
    assert any(expected.values())
    assert judged and judged[-1] == expected
    _march_matches(m, aid)


def _burn_rates_over_every_signal(
    suite: Suite, m: Metrics, aid: str, window_start: str, now: datetime
) -> dict[timedelta, Any]:  # fmt: skip
    """The burn rates of `aid`'s availability window starting at `window_start`, at `now`, from
    every stored signal (read by a process of its own)."""
    view = m.agreement_view(None, aid)
    agg = m.window(None, aid, "availability", window_start)
    window = Interval(at(agg.window_start), at(agg.window_end))
    version, services = m._judging_version(view, window.start)
    objective = next(o for o in version["terms"]["objectives"] if o["objective_id"] == "availability")
    reader = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        signals = combined(reader.signal_sources(reader.scope(view, now)[2]), services)
    finally:
        reader.close()
    exclusions, _ = judging._exclusions(objective, signals, window, judging.suspensions(view))
    return burn_rates(objective, m._calendar_for(objective, None), exclusions, signals, now, window.duration, "UTC")


def _march_matches(m: Metrics, aid: str) -> None:
    for objective_id in ("availability", "service-level"):
        check = m.recompute(aid, objective_id, "2026-02-28T23:00:00+00:00")
        assert check["matches"], check["differences"]


def test_recording_marks_changed_only_the_kept_selections_it_can_change(suite: Suite) -> None:
    """A round keeps the selections of every window it judged — after a backfill, those of a
    year of closed windows. A batch recorded afterwards is marked changed only in the selections
    it can reach (those ending at or after the earliest instant it reaches, and those reading its
    lists whole), not in every closed window's: marking each batch in each of thousands of
    them was quadratic in time and memory."""
    m = suite.metrics
    aid = an_active_agreement(suite)
    backfill = []
    for month in range(1, 13):
        backfill += [outage(f"o{month}", f"2026-{month:02d}-12T10:00{AMS}", 30)]
        backfill += calls(f"c{month}-", f"2026-{month:02d}-13T09:00{AMS}", 8, 2)
    m.record(COLLECTOR, backfill)
    judged, _ = _round(m, f"2026-12-20T10:00{AMS}")
    assert judged == 24  # the year's windows, December's open
    kept = m._services[EMAIL].selections
    december = at(f"2026-11-30T23:00{AMS}")
    # One selection a closed month (both objectives read the same span), January to October
    # (November's ends a margin into December).
    closed = [k for k in kept.values() if k.hi_us < int(december.timestamp() * 1_000_000)]
    assert len(closed) == 10

    # A batch in December: December's selections marked, no closed window's.
    m.record(COLLECTOR, calls("dec-", f"2026-12-20T09:00{AMS}", 3, 1))
    assert all(not k.changed for k in closed)
    assert any(k.changed for k in kept.values() if k not in closed)
    assert _round(m, f"2026-12-20T10:05{AMS}")[0] == 1  # December's service level (no outage changed)

    # A late call in March: the selections ending at or after it are marked (March's and
    # after), the earlier ones not; March's service level restated as from every stored signal.
    kept = m._services[EMAIL].selections
    march = at(f"2026-03-01T00:00{AMS}")
    m.record(COLLECTOR, calls("late-", f"2026-03-20T09:00{AMS}", 0, 3))
    for k in kept.values():
        assert bool(k.changed) == (k.hi_us >= int(at(f"2026-03-20T09:00{AMS}").timestamp() * 1_000_000))
    _round(m, f"2026-12-20T10:10{AMS}")
    start = march.astimezone(UTC).isoformat()
    assert len(m.window(None, aid, "service-level", start).restatements) == 1
    check = m.recompute(aid, "service-level", start)
    assert check["matches"], check["differences"]


def test_a_round_is_handed_its_kept_selections_lists_and_converts_a_batch_in_bulk(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round reads the lists of the selections it keeps themselves, not copies (a copy a round
    cost a pointer and a reference count an input of the open window); a batch recorded since is
    converted in one loop a kind when the selection catches up with it, not one call a signal."""
    m, aid, held = _april_judged(suite)
    handed: list[Any] = []
    signal_set = m.signal_set

    def spying(*args: Any, **kwargs: Any) -> Any:
        out = signal_set(*args, **kwargs)
        handed.append(out)
        return out

    monkeypatch.setattr(m, "signal_set", spying)
    sizes: list[int] = []
    convert_calls = signal_index.sig.calls

    def counted(signals: Any, ids: Any = None) -> Any:
        sizes.append(len(signals))
        return convert_calls(signals, ids)

    monkeypatch.setattr(signal_index.sig, "calls", counted)
    # Five calls and two outages, as a collector's batch: caught up in the kept selection.
    m.record(COLLECTOR, [*calls("b", f"2026-04-10T09:10{AMS}", 4, 1), outage("o2", f"2026-04-10T09:20{AMS}", 2)])
    m.record(COLLECTOR, [outage("o3", f"2026-04-10T09:30{AMS}", 2)])
    assert _round(m, f"2026-04-10T10:00:05{AMS}")[0] == 2
    assert sizes == [5]
    kept = [items for s in held.selections.values() for _, _, items in s.lists.values()]
    assert handed and all(any(got is items for items in kept) for s in handed for got in (s.calls, s.outages) if got)
    april = "2026-03-31T22:00:00+00:00"
    for objective in ("availability", "service-level"):
        check = m.recompute(aid, objective, april)
        assert check["matches"], check["differences"]


def test_a_query_during_a_round_neither_changes_nor_keeps_a_selection(suite: Suite) -> None:
    """The round's lists are the kept selections' own, read outside the lock: a query from
    another thread while a round is under way (its burn rates, say) gets copies, leaves a kept
    selection with changes pending as it is — the round brings it up to date — and keeps nothing."""
    m, aid, held = _april_judged(suite)
    key, kept = next((k, s) for k, s in held.selections.items() if "calls" in s.lists)
    m.record(COLLECTOR, calls("b", f"2026-04-10T09:10{AMS}", 2, 0))
    assert kept.changed == {"b0", "b1"}
    lengths = {name: len(ids) for name, (_, ids, _) in kept.lists.items()}
    selections = len(held.selections)
    span, all_calls, repeat, since, whole, _ = key
    got: list[Any] = []
    held.begin_round()  # a round under way in this thread
    try:
        query = threading.Thread(target=lambda: got.append(held.select(span, all_calls, since, whole, repeat)))
        query.start()
        query.join()
    finally:
        held.end_round()
    assert kept.changed == {"b0", "b1"}  # not brought up to date by the query
    assert {name: len(ids) for name, (_, ids, _) in kept.lists.items()} == lengths
    assert kept in held.selections.values() and len(held.selections) == selections  # none kept of the query's
    (query_set,) = got
    assert {c.call_id for c in query_set.calls} >= {"a0", "a3", "b0", "b1"}  # read afresh, the new calls in it
    assert all(query_set.calls is not items for _, _, items in kept.lists.values())
    # The round that follows brings the kept selection up to date and judges as a fresh read.
    assert _round(m, f"2026-04-10T10:00:05{AMS}")[0] == 2
    assert not kept.changed and len(kept.lists["calls"][1]) == lengths["calls"] + 2
    for objective in ("availability", "service-level"):
        assert m.recompute(aid, objective, "2026-03-31T22:00:00+00:00")["matches"]


def test_inputs_of_mixed_kinds_are_converted_as_one_by_one() -> None:
    """`_convert_all` of a batch of every kind in any order: each signal's own `_input`."""
    mixed = [
        *calls("c", f"2026-04-10T08:00{AMS}", 2, 1),
        outage("o1", f"2026-04-10T09:00{AMS}", 5),
        pb.Signal(
            signal_id="t1", service_id=EMAIL, ticket=pb.Ticket(priority="P1", opened=ts(at(f"2026-04-10T09:00{AMS}")))
        ),
        outage("o2", f"2026-04-10T09:30{AMS}", 1),
        *calls("d", f"2026-04-10T10:00{AMS}", 1, 0),
    ]
    ids = [s.signal_id for s in mixed]
    assert signal_index._convert_all(mixed, ids) == [signal_index._input(s) for s in mixed]
    assert signal_index._convert_all(mixed) == [signal_index._input(s) for s in mixed]


def _months_recorded_late(suite: Suite, agreements: int = 1) -> tuple[Metrics, list[str], list[str]]:
    """Agreements on the e-mail service (the sample SLA, from 10 January), then February to June
    recorded with no round between — an outage and four calls on the 10th of each month, as a
    backfill of history or a process stopped for months — and the clock at 15 July. Returns the
    metrics application, the agreements' ids and the closed months' window starts."""
    ids = active_agreements_alike(suite, agreements)
    suite.tick(f"2026-01-10T10:00{AMS}")
    suite.clock.set(at("2026-07-15T10:00+02:00"))
    m = suite.metrics
    for month in range(2, 7):
        m.record(
            COLLECTOR,
            [outage(f"o{month}", f"2026-{month:02d}-10T09:00+02:00", 5),
             *calls(f"m{month}-", f"2026-{month:02d}-10T08:00+02:00", 3, 1)],
        )  # fmt: skip
    ams = ZoneInfo("Europe/Amsterdam")
    starts = [datetime(2026, month, 1, tzinfo=ams).astimezone(UTC).isoformat() for month in range(1, 7)]
    return m, ids, starts


def _closed_held(held: signal_index.ServiceSignals, before: datetime) -> int:
    """The inputs the service's selections of spans ending before `before` hold."""
    return sum(len(ids) for key, s in held.selections.items() if key[0].end <= before for _, ids, _ in s.lists.values())


def test_a_round_judging_months_of_history_holds_the_inputs_of_a_few_closed_windows_at_a_time(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round after months recorded late holds the inputs of the closed windows it judged only
    while they fit its budget (`Metrics.closed_held`) and releases the oldest — it held every
    month's until its end: after a backfill of 2,000,000 signals over 100 months, ≈ 1 GiB at its
    peak. Both objectives judge a month from one reading of it (each signal converted once), and
    every window is what the formulas give from every stored signal."""
    m, [aid], starts = _months_recorded_late(suite)
    m.closed_held = 6  # a month's inputs and a few more
    held = m._services[EMAIL]
    cutoff = at("2026-07-15T10:00+02:00") - m.closed_kept
    most: list[int] = []
    select = held.select

    def selecting(*args: Any, **kwargs: Any) -> Any:
        out = select(*args, **kwargs)
        most.append(_closed_held(held, cutoff))
        return out

    monkeypatch.setattr(held, "select", selecting)
    converted = _conversions(monkeypatch)
    m.evaluate()
    assert len(most) >= 5 and max(most) <= 6 + 6  # the budget, and the window just judged
    assert sorted(converted) == sorted({*converted}) and len(converted) == 25  # each once
    assert _closed_held(held, cutoff) <= 12  # nor kept after the round
    assert not any(wid in m._running for wid in m.window_ids(aid) if wid not in m._open_windows)
    for _ in open_windows_against_every_stored_signal(m, aid, ("availability", "service-level"), starts):
        pass


def test_windows_whose_inputs_a_round_released_take_another_agreements_outcome_unread(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agreements that measure a service the same way share each window's outcome in a round —
    also the windows whose inputs the round released by then: their outcome is taken without
    reading those inputs again (each signal converted once for the three agreements)."""
    m, ids, starts = _months_recorded_late(suite, agreements=3)
    m.closed_held = 6
    converted = _conversions(monkeypatch)
    m.evaluate()
    assert sorted(converted) == sorted({*converted}) and len(converted) == 25
    assert m.last_round.windows_shared >= 2 * 2 * 6  # two of the three agreements, two objectives, six months
    for aid in ids:
        for _ in open_windows_against_every_stored_signal(m, aid, ("availability", "service-level"), starts):
            pass
