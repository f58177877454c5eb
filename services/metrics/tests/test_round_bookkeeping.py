"""What a round does for each agreement, beside its windows: it looks only at the agreements
something changed for (judging.WatchIndex) — the watches indexed by what can end their quiet
give a superset of those that are not quiet, held to `Watch.quiet` itself over random watches
and rounds — so a batch on one service asks only its agreements, a round with nothing new asks
none, and a round that fails part-way gives back the changes it took; and it works out an
agreement's views and services again only once a view or a service was learned
(`Judging._scope_of`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord_agreements.samples import IT, sla_terms
from accord_metrics.application import Metrics
from accord_metrics.judging import FAR_FUTURE, OpenWindow, Watch, WatchIndex
from accord_metrics.signal_index import ServiceSignals
from accord_metrics.signal_store import Facts
from tests.suite import (
    AMS,
    COLLECTOR,
    CUSTOMER,
    PROVIDER,
    Suite,
    an_active_agreement,
    at,
    calls,
    feed,
    open_windows_against_every_stored_signal,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
JANUARY = "2025-12-31T23:00:00+00:00"
SERVICES = ("s1", "s2", "s3", "s4")
PROVIDERS = ("p1", "p2")
METRICS = (
    "METRIC_SERVICE_LEVEL",
    "METRIC_AVAILABILITY_TIME",
    "METRIC_TICKET_RESOLUTION",
    "METRIC_AVAILABILITY_REQUESTS",
)
HOURS = st.integers(min_value=0, max_value=96)


@st.composite
def watches(draw: Any, views: list[UUID], position: int) -> Watch:
    """A watch made by a round that read the views up to `position`."""
    opened = draw(st.lists(st.tuples(st.sampled_from(METRICS), st.one_of(st.none(), st.integers(1, 72))), max_size=3))
    due = draw(st.one_of(st.just(FAR_FUTURE), HOURS.map(lambda h: T0 + timedelta(hours=h))))
    return Watch(
        position=position,
        calendars=draw(st.integers(0, 2)),
        depends_on=frozenset(draw(st.lists(st.sampled_from(views), min_size=1, max_size=3))),
        services=tuple(draw(st.lists(st.sampled_from(SERVICES), max_size=3, unique=True))),
        due=due,
        open=tuple(OpenWindow(m, None if h is None else timedelta(hours=h)) for m, h in opened),
        providers=frozenset(draw(st.lists(st.sampled_from(PROVIDERS), max_size=1))),
    )


@st.composite
def facts(draw: Any) -> dict[str, ServiceSignals]:
    out = {}
    for service in draw(st.lists(st.sampled_from(SERVICES), unique=True)):
        reaches = draw(st.one_of(st.none(), HOURS.map(lambda h: T0 + timedelta(hours=h))))
        ongoing = {"o": (0, 0)} if draw(st.booleans()) else {}
        reaches_us = (
            None if reaches is None else (reaches - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        )
        out[service] = ServiceSignals(service, None, Facts(reaches=reaches_us), ongoing)  # type: ignore[arg-type]
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_agreement_not_quiet_is_a_candidate(data: Any) -> None:
    """Over random watches set, replaced and dropped, and random rounds (services and views
    changed, calendars, facts, the instant), every watched agreement that is not quiet, and every
    agreement not watched, is a candidate; each is then judged (watched anew, or its watch
    dropped), as a round does. (One settled is skipped instead and its watch left: it stays
    skipped until a change to its services or views, which the index names too.)"""
    views = [uuid4() for _ in range(6)]
    index = WatchIndex()
    held: dict[UUID, Watch | None] = {}
    view_changed: dict[UUID, int] = {}
    position = 0
    now = T0
    for _ in range(data.draw(st.integers(1, 6), label="rounds")):
        for uid in data.draw(st.lists(st.sampled_from(views), max_size=6), label="set"):
            watch = data.draw(st.one_of(st.none(), watches(views, position)), label="watch")
            index.put(uid, watch)
            held[uid] = watch
        changed_views = data.draw(st.lists(st.sampled_from(views), max_size=3, unique=True), label="views")
        for v in changed_views:
            position += 1
            view_changed[v] = position
        now = now + timedelta(hours=data.draw(st.integers(0, 30), label="step"))
        changed = {s: T0 for s in data.draw(st.lists(st.sampled_from(SERVICES), max_size=2), label="changed")}
        provider_of = {s: data.draw(st.sampled_from(PROVIDERS), label="provider") for s in SERVICES}
        calendars = data.draw(st.integers(0, 2), label="calendars")
        service_facts = data.draw(facts(), label="facts")
        candidates = index.candidates(now, changed, provider_of, calendars, service_facts, changed_views)
        judged = []
        for uid, watch in held.items():
            if watch is None:
                assert uid in candidates, "an agreement whose watch was dropped"
                judged.append(uid)
            elif not watch.quiet(now, changed, view_changed, calendars, service_facts, provider_of):
                assert uid in candidates, (watch, now, changed, changed_views, calendars)
                judged.append(uid)
        for v in changed_views:  # a view not watched (new) is looked at until it is
            if v not in held:
                assert v in candidates
        # Each judged: watched anew as of this round (or its watch dropped: it failed).
        for uid in judged:
            watch = data.draw(st.one_of(st.none(), watches(views, position)), label="judged")
            index.put(uid, watch)
            held[uid] = watch
        # Indexed under what the watches now hold, nothing else.
        watched = {uid: w for uid, w in held.items() if w is not None}
        for by, keys in (
            (index.by_service, lambda w: w.services),
            (index.by_provider, lambda w: w.providers),
            (index.by_view, lambda w: w.depends_on),
            (index.by_calendars, lambda w: (w.calendars,)),
        ):
            expected: dict[Any, set[UUID]] = {}
            for uid, w in watched.items():
                for key in keys(w):
                    expected.setdefault(key, set()).add(uid)
            assert by == expected


def test_only_the_agreements_a_change_reaches_are_candidates() -> None:
    """Not everything: a batch on one service names its watchers (and its provider's), not the
    others'; nothing changed names only those with an open window judged as of the instant."""
    a, b, c, d = (uuid4() for _ in range(4))
    index = WatchIndex()

    def watch(uid: UUID, service: str, *metrics: str, providers: frozenset[str] = frozenset()) -> Watch:
        opened = tuple(OpenWindow(metric, None) for metric in metrics)
        return Watch(5, 1, frozenset({uid}), (service,), T0 + timedelta(days=30), opened, providers)

    index.put(a, watch(a, "s1", "METRIC_SERVICE_LEVEL"))
    index.put(b, watch(b, "s2"))
    index.put(c, watch(c, "s3", providers=frozenset({"p"})))
    index.put(d, watch(d, "s4", "METRIC_TICKET_RESOLUTION"))
    assert index.candidates(T0, {"s1": T0}, {"s1": "q"}, 1, {}, ()) == {a, d}
    assert index.candidates(T0, {"s5": T0}, {"s5": "p"}, 1, {}, ()) == {c, d}
    assert index.candidates(T0, {}, {}, 1, {}, [b]) == {b, d}
    assert index.candidates(T0, {}, {}, 2, {}, ()) == {a, b, c, d}  # a calendar changed
    index.put(c, None)
    assert index.candidates(T0, {}, {}, 1, {}, ()) == {c, d}  # dropped: looked at until watched again
    index.put(c, watch(c, "s3"))
    assert index.candidates(T0, {}, {}, 1, {}, ()) == {d}
    # Past their due instant: looked at every round until watched anew.
    for _ in range(2):
        assert index.candidates(T0 + timedelta(days=31), {}, {}, 1, {}, ()) == {a, b, c, d}
    index.put(a, replace(watch(a, "s1"), due=T0 + timedelta(days=60)))
    assert index.candidates(T0 + timedelta(days=31), {}, {}, 1, {}, ()) == {b, c, d}


def test_the_due_instants_held_stay_bounded_by_the_watches() -> None:
    """An agreement judged round after round is watched anew each time: the due instants of the
    watches it replaced are not held beyond a bound (they were, one a judgement, for ever)."""
    index = WatchIndex()
    uids = [uuid4() for _ in range(10)]
    for k in range(1000):
        uid = uids[k % 10]
        index.put(uid, Watch(k, 1, frozenset({uid}), ("s1",), T0 + timedelta(days=30, seconds=k), ()))
    assert len(index._due) <= 2 * 10 + 64 + 1
    # The latest watch of each is still due when its instant comes (and no replaced one is).
    assert index.candidates(T0 + timedelta(days=31), {}, {}, 1, {}, ()) == set(uids)
    assert index.overdue == set(uids)


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def _agreements(suite: Suite, n: int) -> list[str]:
    """The sample SLA accepted `n` times (all on the e-mail service), fed to metrics and judged."""
    ag = suite.agreements
    ids = [an_active_agreement(suite)]
    for _ in range(n - 1):
        aid = str(ag.draft(PROVIDER, sla_terms()).id)
        ag.propose(PROVIDER, aid)
        ag.accept(CUSTOMER, aid)
        ids.append(aid)
    suite.tick(f"2026-01-10T11:00{AMS}")
    return ids


def _asked(monkeypatch: pytest.MonkeyPatch) -> list[Watch]:
    asked: list[Watch] = []
    quiet = Watch.quiet

    def spy(self: Watch, *args: Any, **kwargs: Any) -> bool:
        asked.append(self)
        return quiet(self, *args, **kwargs)

    monkeypatch.setattr(Watch, "quiet", spy)
    return asked


def test_a_round_asks_only_the_agreements_a_change_reaches(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    m = suite.metrics
    ids = _agreements(suite, 4)
    asked = _asked(monkeypatch)
    m.evaluate(at(f"2026-01-10T11:05{AMS}"))
    assert (asked, m.last_round.agreements_judged, m.last_round.agreements_skipped) == ([], 0, 4)

    # One agreement's view changes: it alone is asked, and judged (its windows from the suspension).
    suite.agreements.suspend(PROVIDER, ids[2], "the customer asked for it")
    feed("agreements", suite.agreements, m)
    m.evaluate(at(f"2026-01-10T11:10{AMS}"))
    assert len(asked) == 1
    assert (m.last_round.agreements_judged, m.last_round.agreements_skipped) == (1, 3)

    # Calls on their service: all four are asked and judged, then none is.
    asked.clear()
    m.record(COLLECTOR, calls("c", f"2026-01-10T11:00{AMS}", 3, 1))
    m.evaluate(at(f"2026-01-10T11:15{AMS}"))
    assert (len(asked), m.last_round.agreements_judged) == (4, 4)
    asked.clear()
    m.evaluate(at(f"2026-01-10T11:20{AMS}"))
    assert (asked, m.last_round.agreements_judged) == ([], 0)


def test_a_round_that_fails_part_way_gives_back_the_changes_it_took(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store failing under a round (a view that cannot be loaded) loses no change: the next
    round judges the agreement whose view changed, and the windows the new calls reach."""
    m = suite.metrics
    ids = _agreements(suite, 2)
    view_id = m.agreement_view(None, ids[1]).id
    get = m.repository.get
    failing = [False]

    def flaky(uid: Any, *args: Any, **kwargs: Any) -> Any:
        if uid == view_id and failing[0]:
            failing[0] = False
            raise OSError("disk I/O error")
        return get(uid, *args, **kwargs)

    monkeypatch.setattr(m.repository, "get", flaky)

    # Its view changed, and the round fails loading it: the next round judges it.
    suite.agreements.suspend(PROVIDER, ids[1], "the customer asked for it")
    feed("agreements", suite.agreements, m)
    failing[0] = True
    with pytest.raises(OSError, match="disk I/O error"):
        m.evaluate(at(f"2026-01-10T11:05{AMS}"))
    m.evaluate(at(f"2026-01-10T11:10{AMS}"))
    assert m.last_round.agreements_judged == 1

    # Calls on their service, and the round fails after judging the first (nothing saved): the
    # next round judges both.
    m.record(COLLECTOR, calls("c", f"2026-01-10T11:00{AMS}", 3, 1))
    failing[0] = True
    with pytest.raises(OSError, match="disk I/O error"):
        m.evaluate(at(f"2026-01-10T11:15{AMS}"))
    m.evaluate(at(f"2026-01-10T11:20{AMS}"))
    assert m.last_round.agreements_judged == 2
    for aid in ids:
        opened = open_windows_against_every_stored_signal(m, aid, ("availability", "service-level"), [JANUARY])
        assert len(list(opened)) == 2
        assert m.window(None, aid, "service-level", JANUARY).latest["detail"]["answered"] == "4"


def test_an_agreements_views_and_services_are_worked_out_again_only_once_one_is_learned(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = suite.metrics
    ids = _agreements(suite, 2)
    worked_out: list[str] = []  # by rounds (recording works them out for its own checks too)
    in_round = [False]
    measured = Metrics.measured_services

    def spy(self: Metrics, view: Any, now: datetime) -> tuple[list[str], frozenset[str]]:
        if in_round[0]:
            worked_out.append(view.agreement_id)
        return measured(self, view, now)

    def round_after_calls(prefix: str, when: str) -> None:
        m.record(COLLECTOR, calls(prefix, f"2026-01-10T11:00{AMS}", 1, 0))
        in_round[0] = True
        try:
            m.evaluate(at(when + AMS))
        finally:
            in_round[0] = False
        assert m.last_round.agreements_judged == 2

    monkeypatch.setattr(Metrics, "measured_services", spy)
    round_after_calls("b", "2026-01-10T11:05")

    # Calls judge both agreements: their views and services as the last round worked them out.
    worked_out.clear()
    round_after_calls("c", "2026-01-10T11:10")
    assert worked_out == []

    # A service registered (the provider's): worked out again for each agreement judged.
    suite.agreements.register_service("vpn", "VPN", IT)
    feed("agreements", suite.agreements, m)
    round_after_calls("d", "2026-01-10T11:15")
    assert sorted(worked_out) == sorted(ids)

    # One agreement's view changes: both are worked out again (a view may be another's parent).
    worked_out.clear()
    suite.agreements.suspend(PROVIDER, ids[0], "the customer asked for it")
    feed("agreements", suite.agreements, m)
    round_after_calls("e", "2026-01-10T11:20")
    assert sorted(worked_out) == sorted(ids)
    worked_out.clear()
    round_after_calls("f", "2026-01-10T11:25")
    assert worked_out == []
