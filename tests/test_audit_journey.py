"""The auditor's replay over a three-month journey, on both stores: the merged history of an
agreement equals, event for event, what each service recorded about it (found here
independently, by searching every event of every log for the agreement's id), in an order
where each service's events keep their log order and every event follows its cause; each
event carries its record's chain hash; and every log verifies intact."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from accord.events.v1 import events_pb2
from accord_billing.domain import BilledAgreement, TerminationWatch
from accord_cli.history import Entry, causal_order, short_type
from accord_kit.application import AccordApplication
from accord_kit.audit import agreement_history
from accord_kit.chain import generate_chain_keypair, load_private_key, load_public_key, seal, verify_store
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, calls, outage


@pytest.fixture
def suite(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Suite]:
    s = Suite(make_store_env)
    yield s
    s.close()


def three_months(suite: Suite) -> str:
    m = suite.metrics
    aid = an_active_agreement(suite)
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    suite.tick(f"2026-02-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    suite.tick(f"2026-03-01T02:00{AMS}")
    m.record(COLLECTOR, [outage("mar", f"2026-03-04T08:00{AMS}", 60)])
    m.record(COLLECTOR, [outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])  # restates January
    suite.tick(f"2026-03-10T12:00{AMS}")
    suite.tick(f"2026-04-01T02:00{AMS}")
    return aid


def _mentions(value: Any, names: set[str]) -> bool:
    if isinstance(value, dict):
        return any(_mentions(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, names) for v in value)
    return value in names


def recorded_about(
    app: AccordApplication, agreement_id: str, statements: set[str], aggregates: set[str]
) -> list[events_pb2.EventEnvelope]:
    """Every event of the app's log whose payload names the agreement, or one of its
    statements, anywhere, or that belongs to one of the aggregates kept for it."""
    found, after = [], 0
    names = {agreement_id, *statements, *(f"statement:{s}" for s in statements)}
    while True:
        envs, _ = app.read_events(after, 5000)
        if not envs:
            return found
        for env in envs:
            payload = json_format.MessageToDict(env.payload, preserving_proto_field_name=True)
            if _mentions(payload, names) or env.aggregate_id in aggregates:
                found.append(env)
        after = envs[-1].position


def test_replay_of_three_months_equals_what_each_service_recorded(suite: Suite, tmp_path: Any) -> None:
    aid = three_months(suite)
    apps = {"agreements": suite.agreements, "metrics": suite.metrics, "billing": suite.billing}
    per_service = {name: [Entry(e.envelope, e.chain_hash) for e in agreement_history(app, aid)]
                   for name, app in apps.items()}  # fmt: skip
    history = causal_order(per_service)

    statements = {str(s.id) for s in suite.billing.statements(None, aid)}
    assert len(statements) == 3
    # Billing's aggregates kept for the agreement: its versions, and its breach history per objective.
    aggregates = {str(BilledAgreement.create_id(aid))}
    aggregates |= {str(TerminationWatch.create_id(aid, o)) for o in ("availability", "service-level")}
    for name, app in apps.items():
        mine = [e for e in history if e.service == name]
        expected = recorded_about(app, aid, statements, aggregates)
        assert [e.envelope.SerializeToString(deterministic=True) for e in mine] == [
            x.SerializeToString(deterministic=True) for x in expected
        ], f"{name}: the replay differs from what the service recorded"
        chain = app.recorder.select_chain_hashes(0)  # type: ignore[attr-defined]
        assert all(e.chain_hash == chain[e.envelope.position] for e in mine)
    # Every event follows the event that caused it.
    seen: set[str] = set()
    ids = {e.envelope.event_id for e in history}
    for e in history:
        if e.envelope.causation_id in ids:
            assert e.envelope.causation_id in seen, f"{e.envelope.event_id} replayed before its cause"
        seen.add(e.envelope.event_id)
    kinds = {short_type(e.envelope) for e in history}
    assert {"AgreementAccepted", "WindowClosed", "EvaluationRestated", "BreachDetected", "AssessmentRecorded",
            "AdjustmentRecorded", "StatementIssued", "TerminationRightGranted", "BreachHistoryNoted",
            "AgreementVersionKnown"} <= kinds  # fmt: skip
    billing_aggregates = {e.envelope.aggregate_id for e in history if e.service == "billing"}
    assert aggregates <= billing_aggregates, "every billing aggregate kept for the agreement is replayed"
    assert len({e.service for e in history}) == 3
    assert any(e.service == "billing" for e in history)
    # The proof: each log verifies intact after sealing.
    for name, app in apps.items():
        private, public = generate_chain_keypair(tmp_path / name, name)
        seal(app, load_private_key(private))
        report = verify_store(app, [load_public_key(public)])
        assert report.ok, f"{name}: {report.problem}"
    json.dumps([e.as_dict() for e in history])  # the export form is plain JSON


def all_events(app: AccordApplication) -> list[events_pb2.EventEnvelope]:
    out, after = [], 0
    while True:
        envs, _ = app.read_events(after, 5000)
        if not envs:
            return out
        out.extend(envs)
        after = envs[-1].position


def test_rederivation_after_three_months_finds_nothing(suite: Suite) -> None:
    from accord_metrics.audit import MetricsAudit

    aid = three_months(suite)
    evaluations = MetricsAudit(suite.metrics).rederive(aid)
    assert evaluations.checked >= 6 and evaluations.mismatches == []  # 3 months × 2 objectives, January restated
    assessments = suite.billing.rederive(all_events(suite.metrics), all_events(suite.agreements), aid)
    assert assessments.checked >= 6
    assert (assessments.mismatches, assessments.missing, assessments.unexplained) == ([], [], [])
