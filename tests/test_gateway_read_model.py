"""The gateway's read model equals what the owning services say — after a journey, and after
a rebuild from empty — and says how fresh it is; its typed answers say what its JSON answers
say; a model restored from a snapshot reads on to the same answers as one rebuilt from every
event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from structlog.testing import capture_logs

from accord.gateway.v1 import gateway_pb2 as gateway_pb
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_gateway import schemas
from accord_gateway.projection import ReadModel
from accord_gateway.snapshot import FORMAT, load_snapshot, write_snapshot
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, PROVIDER, Suite, an_active_agreement, calls, feed, outage


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

    # Each statement's net as billing states it now: the final ones' to date, the open ones' so
    # far and the issued ones' apart.
    def stated(*states: str) -> Decimal:
        return sum((Decimal(b.current_totals(s)["net"]) for s in statements if s.state in states), Decimal(0))

    assert Decimal(status["credits_to_date"]) == stated("FINAL")
    assert Decimal(status["credits_this_period"]) == stated("OPEN")
    assert Decimal(status["credits_awaiting_final"]) == stated("ISSUED")
    assert Decimal(status["credits_provisional"]) == stated("OPEN", "ISSUED")
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


def a_journey(suite: Suite) -> str:
    """An agreement through January and half of February: outages, calls, a breach, statements."""
    ag, m = suite.agreements, suite.metrics
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
    return aid


def _no_nulls(doc: Any) -> Any:
    """The JSON answer as protobuf's JSON gives it: no null fields, the terms left out."""
    if isinstance(doc, dict):
        return {k: _no_nulls(v) for k, v in doc.items() if v is not None and k not in ("terms", "effective_terms")}
    if isinstance(doc, list):
        return [_no_nulls(v) for v in doc]
    return doc


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_typed_answer_says_what_the_json_answer_says_and_integers_stay_integers(suite: Suite) -> None:
    aid = a_journey(suite)
    model = ReadModel()
    fill(model, suite)
    answer = model.answer(aid)
    assert answer is not None
    typed = gateway_pb.AgreementStatus.FromString(model.typed(answer))
    as_json = json.loads(model.json(answer))
    assert as_json == json.loads(schemas.AgreementStatus.model_validate(answer.summary).model_dump_json(by_alias=True))
    as_dict = json_format.MessageToDict(
        typed, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert _no_nulls(as_dict) == _no_nulls(as_json)
    # Integers are integers; the terms are the agreement's own, typed.
    assert typed.version == 1 and as_dict["version"] == 1 and isinstance(as_dict["version"], int)
    assert typed.versions[0].version == 1 and typed.terms.title == answer.summary["terms"]["title"]
    assert [o.objective_id for o in typed.effective_terms.objectives] == ["availability", "service-level"]
    assert typed.statements and typed.breaches and typed.objectives[0].current.window_start
    # Kept: asked again, the same bytes, built once.
    assert model.answer(aid) is answer and model.typed(answer) is model.typed(answer)
    assert model.warm() == 0  # nothing dropped: nothing to build

    # An event touching the agreement drops its kept answer; the next answer says what changed.
    suite.metrics.record(COLLECTOR, [outage("more", f"2026-02-19T08:00{AMS}", 600)])
    suite.tick(f"2026-02-20T03:00{AMS}")
    fill(model, suite)
    # Warmed in the background: built again, typed bytes and JSON included, before any query.
    assert model.warm() == 1
    again = model.answer(aid)
    assert again is not None and again is not answer and again.typed is not None and again.json is not None
    assert gateway_pb.AgreementStatus.FromString(model.typed(again)) != typed


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_a_model_restored_from_a_snapshot_reads_on_to_the_same_answers(suite: Suite, tmp_path: Path) -> None:
    ag, m = suite.agreements, suite.metrics
    for dept in (IT, FINANCE):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    aid = str(ag.draft(PROVIDER, sla_terms()).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(f"2026-01-10T10:00{AMS}")
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    first = ReadModel()
    fill(first, suite)
    path = tmp_path / "var" / "gateway-snapshot.json"
    positions = write_snapshot(first, path)
    assert positions == first.positions() and sum(positions.values()) > 0
    assert not list(path.parent.glob(".*.tmp"))  # written beside, then renamed

    # More events after the snapshot.
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    suite.tick(f"2026-02-20T02:00{AMS}")

    restored = ReadModel()
    assert load_snapshot(restored, path)
    assert restored.positions() == positions
    fill(restored, suite)
    scratch = ReadModel()
    fill(scratch, suite)
    # The same answers as a model rebuilt from every event …
    assert restored.positions() == scratch.positions()
    assert restored.agreement(aid) == scratch.agreement(aid)
    for objective in ("availability", "service-level"):
        assert restored.budget_series(aid, objective) == scratch.budget_series(aid, objective)
    a, b = restored.answer(aid), scratch.answer(aid)
    assert a is not None and b is not None and restored.typed(a) == scratch.typed(b)
    assert restored.json(a) == scratch.json(b)
    # … having applied only the events after the snapshot.
    assert 0 < restored.applied < scratch.applied
    assert restored.applied == scratch.applied - first.applied


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_a_snapshot_unreadable_or_of_another_format_is_ignored_with_a_warning(suite: Suite, tmp_path: Path) -> None:
    aid = an_active_agreement(suite)
    model = ReadModel()
    fill(model, suite)
    path = tmp_path / "gateway-snapshot.json"
    write_snapshot(model, path)
    good = path.read_bytes()
    other_format = json.dumps({**json.loads(good), "format": FORMAT + 1}).encode()
    # Format 1 kept statements without the totals billing states on assessments, adjustments
    # and resolved disputes, format 2 without those of StatementTotalsStated (an open
    # statement's fee changed), format 3 no service registry: such a snapshot is rebuilt, never
    # read on.
    assert FORMAT == 4
    format_1 = json.dumps({**json.loads(good), "format": 1}).encode()
    format_2 = json.dumps({**json.loads(good), "format": 2}).encode()
    format_3 = json.dumps({**json.loads(good), "format": 3}).encode()
    for body, reason in (
        (good[: len(good) // 2], "unreadable"),
        (b"\xff\x00", "unreadable"),
        (other_format, "format"),
        (format_1, "format"),
        (format_2, "format"),
        (format_3, "format"),
    ):
        path.write_bytes(body)
        fresh = ReadModel()
        with capture_logs() as logs:
            assert load_snapshot(fresh, path) is False
        assert [e["log_level"] for e in logs if e["event"] == "snapshot_ignored"] == ["warning"], logs
        assert reason in next(e["reason"] for e in logs if e["event"] == "snapshot_ignored")
        # Nothing restored: the consumers start from the beginning of each stream.
        assert fresh.positions() == {"agreements": 0, "metrics": 0, "billing": 0} and fresh.agreement(aid) is None
        fill(fresh, suite)
        assert fresh.agreement(aid) == model.agreement(aid)
    assert load_snapshot(ReadModel(), tmp_path / "none.json") is False
