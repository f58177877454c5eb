"""What an evaluation pass reads, on both stores: agreement views are discovered from the
log by position (nothing read twice); an agreement that has ended and whose windows are all
closed is settled — the pass loads neither its view nor its windows — until a late signal
from before its last window's end arrives (then its closed window is restated, as before)
or its view changes; and a fresh instance that evaluates everything finds nothing left
undone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest

from accord_agreements.samples import sla_terms
from accord_metrics.application import VIEW_EVENT_TOPICS, Metrics
from accord_metrics.domain import AgreementView
from tests.suite import AMS, COLLECTOR, CUSTOMER, PROVIDER, Suite, an_active_agreement, at, outage

JAN = "2025-12-31T23:00:00+00:00"  # January's window in Amsterdam


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


class Reads:
    """Counts what the application reads from its store: the agreement each loaded aggregate
    belongs to, and notifications returned per topic filter."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loaded: Counter[str] = Counter()
        self.notifications: Counter[tuple[str, ...]] = Counter()
        get, select = app.repository.get, app.recorder.select_notifications

        def counted_get(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
            agg = get(aggregate_id, *args, **kwargs)
            self.loaded[str(getattr(agg, "agreement_id", ""))] += 1
            return agg

        def counted_select(*args: Any, **kwargs: Any) -> Any:
            notes = select(*args, **kwargs)
            self.notifications[tuple(kwargs.get("topics") or ())] += len(notes)
            return notes

        monkeypatch.setattr(app.repository, "get", counted_get)
        monkeypatch.setattr(app.recorder, "select_notifications", counted_select)

    def reset(self) -> None:
        self.loaded.clear()
        self.notifications.clear()


def test_an_ended_agreement_is_skipped_until_a_late_signal(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> None:
    ag, m = suite.agreements, suite.metrics
    # Two agreements on the same e-mail service; the first is terminated with notice on
    # 9 February, so its last window (February) closes on 1 March.
    ended = an_active_agreement(suite)
    active = str(ag.draft(PROVIDER, sla_terms()).id)
    ag.propose(PROVIDER, active)
    ag.accept(CUSTOMER, active)
    ag.terminate(CUSTOMER, ended, "moving to another provider")
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    suite.clock.set(at(f"2026-02-10T09:00{AMS}"))
    assert ag.process_due() == 1
    suite.tick(f"2026-02-10T09:00{AMS}")
    suite.tick(f"2026-03-01T02:00{AMS}")
    assert m.agreement_view(None, ended).ended_at
    assert all(w.closed for w in m.window_evaluations(ended))

    # Settled: a pass loads the active agreement's view and windows, none of the ended
    # one's, and reads no view notification again — even with new signals of the shared
    # service, when they are after the ended agreement's last window.
    reads = Reads(m, monkeypatch)
    m.record(COLLECTOR, [outage("mar", f"2026-03-02T10:00{AMS}", 5)])
    for hour in ("03", "04", "05"):
        suite.clock.set(at(f"2026-03-02T{hour}:00{AMS}"))
        m.evaluate()
    assert reads.loaded[active] > 0
    assert reads.loaded[ended] == 0
    assert reads.notifications[tuple(VIEW_EVENT_TOPICS)] == 0

    # A late outage in January: the ended agreement is evaluated again and its closed
    # January window restated (as is the active one's); then it is settled again.
    reads.reset()
    m.record(COLLECTOR, [outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])
    assert m.evaluate() == 2
    assert reads.loaded[ended] > 0
    assert len(m.window(None, ended, "availability", JAN).restatements) == 1
    assert len(m.window(None, active, "availability", JAN).restatements) == 1
    reads.reset()
    m.evaluate()
    assert reads.loaded[ended] == 0

    # A change to its view (here a draft noted, which evaluation ignores): evaluated once
    # more, then settled again.
    view: Any = m.repository.get(AgreementView.create_id(ended))
    view.note_draft({"note": "not a version"})
    m.save(view)
    reads.reset()
    assert m.evaluate() == 0
    assert reads.loaded[ended] > 0
    reads.reset()
    m.evaluate()
    assert reads.loaded[ended] == 0

    # An instance that skips nothing (a fresh one: every signal is new to it) finds nothing
    # left to record; every view event's topic is one the index follows.
    fresh = Metrics(suite.envs["metrics"], clock=suite.clock)
    try:
        assert fresh.evaluate() == 0
        assert [str(v.id) for v in fresh.views()] == [str(v.id) for v in m.views()]
        view_ids = {UUID(str(i)) for i in m.view_ids()}
        notes = m.recorder.select_notifications(start=0, limit=100_000)
        topics = {n.topic for n in notes if UUID(str(n.originator_id)) in view_ids}
        assert topics and topics <= set(VIEW_EVENT_TOPICS)
    finally:
        fresh.close()
