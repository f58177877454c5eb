"""The gateway's read model equals what the owning services say — after a journey, and after
a rebuild from empty — and says how fresh it is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_gateway.projection import ReadModel
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, PROVIDER, Suite, calls, feed, outage


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def fill(model: ReadModel, suite: Suite) -> None:
    for source, app in (("agreements", suite.agreements), ("metrics", suite.metrics), ("billing", suite.billing)):
        feed(source, app, model)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_read_model_matches_the_owning_services_and_rebuilds_the_same(suite: Suite) -> None:
    ag, m, b = suite.agreements, suite.metrics, suite.billing
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, sla_terms()).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    suite.tick(f"2026-02-20T02:00{AMS}")

    model = ReadModel()
    fill(model, suite)
    status = model.agreement(aid)
    assert status is not None
    agreement = ag.get_agreement_aggregate(aid)
    assert (status["state"], status["version"], status["parties"]) == (
        agreement.state,
        agreement.current_version,
        agreement.terms["parties"],
    )
    # Each objective's current window as metrics recorded it.
    for o in status["objectives"]:
        recorded = next(w for w in reversed(m.window_evaluations(aid)) if w.objective_id == o["objective_id"]).latest
        assert (o["current"]["value"], o["current"]["status"]) == (recorded["value"], recorded["status"])
    assert status["health"] == "BREACHED"  # February's availability
    availability = next(o for o in status["objectives"] if o["objective_id"] == "availability")
    assert availability["current"]["burn_rate"] != ""  # February is still open
    assert [o["objective_id"] for o in status["effective_terms"]["objectives"]] == ["availability", "service-level"]
    assert {b_["objective_id"] for b_ in status["open_breaches"]} == {"availability"}
    # Statements and credits as billing has them.
    statements = b.statements(P_CUSTOMER, aid)
    assert [s["state"] for s in status["statements"]] == [s.state for s in statements]
    issued = sum((Decimal(s.totals["net"]) for s in statements if s.totals), Decimal(0))
    assert Decimal(status["credits_to_date"]) == issued
    assert model.positions() == {
        "agreements": ag.head_position(),
        "metrics": m.head_position(),
        "billing": b.head_position(),
    }

    # Rebuilt from empty: the same answers; delivered again: nothing changes.
    again = ReadModel()
    fill(again, suite)
    assert again.agreement(aid) == status
    series = model.budget_series(aid, "availability")
    assert [w["window_start"] for w in series] == [
        w.window_start for w in m.window_evaluations(aid) if w.objective_id == "availability"
    ]
    assert again.budget_series(aid, "availability") == series
    for source, app in (("agreements", ag), ("metrics", m), ("billing", b)):
        for env in app.read_events(0, 5000)[0]:
            assert again.apply_upstream(source, env) is False
    assert again.agreement(aid) == status


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_a_burn_rate_alert_shows_firing_then_resolved(suite: Suite) -> None:
    from tests.suite import an_active_agreement, at

    aid = an_active_agreement(suite)
    suite.clock.set(at(f"2026-01-20T11:12{AMS}"))
    suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-20T11:00{AMS}", 10)])
    suite.tick(f"2026-01-20T11:12{AMS}")
    model = ReadModel()
    fill(model, suite)

    def fast() -> dict[str, str]:
        status = model.agreement(aid)
        assert status is not None
        availability = next(o for o in status["objectives"] if o["objective_id"] == "availability")
        return dict(next(a for a in availability["burn_alerts"] if a["name"].startswith("14.4x")))

    assert (fast()["state"], fast()["ended_at"]) == ("FIRING", "")
    suite.tick(f"2026-01-20T11:30{AMS}")  # the short window is clean again
    fill(model, suite)
    assert (fast()["state"], fast()["resolution"]) == ("RESOLVED", "cleared") and fast()["ended_at"]
