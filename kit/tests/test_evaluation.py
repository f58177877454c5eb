"""The kit's typed Evaluation: exact round trips through the public message and the stored
records, and the records an earlier release stored convert without loss."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.metrics.v1 import events_pb2 as ev
from accord_kit.evaluation import BILLING_FIELDS, GATEWAY_FIELDS, Evaluation, Status

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "upgrade"
EXAMPLES = settings(max_examples=150, derandomize=True, database=None, deadline=None)

texts = st.text(max_size=12)
counts = st.integers(min_value=0, max_value=2**32 - 1)
maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
# Decimals as metrics writes them: str() of a finite Decimal, "" when undefined.
decimals = st.decimals(allow_nan=False, allow_infinity=False).map(str)
maybe_decimals = st.one_of(st.just(""), decimals)
statuses = st.sampled_from([s.value for s in Status])


@st.composite
def messages(draw: st.DrawFn) -> ev.Evaluation:
    return ev.Evaluation(
        agreement_id=draw(texts),
        objective_id=draw(texts),
        window_start=draw(texts),
        window_end=draw(texts),
        value=draw(maybe_decimals),
        target=draw(maybe_decimals),
        comparator=draw(texts),
        status=draw(st.sampled_from(list(ev.EvaluationStatus.values()))),
        closed=draw(st.booleans()),
        agreement_version=draw(counts),
        formula_id=draw(texts),
        formula_version=draw(counts),
        parameters=draw(maps),
        input_digest=draw(texts),
        detail=draw(maps),
        undefined=draw(texts),
        budget_consumed=draw(maybe_decimals),
        budget_remaining=draw(maybe_decimals),
        calendar_id=draw(texts),
        calendar_version=draw(counts),
        burn_rate=draw(maybe_decimals),
    )


@st.composite
def metrics_records(draw: st.DrawFn) -> dict[str, Any]:
    """A record as metrics stores it: every key, the budget and burn rate only when known."""
    record: dict[str, Any] = {
        "value": draw(maybe_decimals),
        "target": draw(decimals),
        "comparator": draw(texts),
        "status": draw(statuses),
        "closed": draw(st.booleans()),
        "version": draw(counts),
        "formula_id": draw(texts),
        "formula_version": draw(counts),
        "parameters": draw(maps),
        "input_digest": draw(texts),
        "detail": draw(maps),
        "undefined": draw(texts),
    }
    if draw(st.booleans()):
        record["budget_consumed"], record["budget_remaining"] = draw(decimals), draw(decimals)
    record.update(
        agreement_id=draw(texts),
        objective_id=draw(texts),
        window_start=draw(texts),
        window_end=draw(texts),
        calendar_id=draw(texts),
        calendar_version=draw(counts),
    )
    if draw(st.booleans()):
        record["burn_rate"] = draw(decimals)
    return record


@EXAMPLES
@given(messages())
def test_a_message_round_trips_through_the_typed_evaluation(msg: ev.Evaluation) -> None:
    assert Evaluation.from_message(msg).to_message() == msg


@EXAMPLES
@given(metrics_records())
def test_a_metrics_record_round_trips_through_the_typed_evaluation(record: dict[str, Any]) -> None:
    typed = Evaluation.from_record(record)
    assert typed.to_record() == record
    # and through the public message, as billing and the gateway receive it
    assert Evaluation.from_message(typed.to_message()) == typed


@EXAMPLES
@given(metrics_records())
def test_a_billing_record_round_trips_through_the_typed_evaluation(full: dict[str, Any]) -> None:
    record = {k: full[k] for k in BILLING_FIELDS}
    assert Evaluation.from_record(record).to_record(BILLING_FIELDS) == record


def test_fields_are_typed_and_frozen() -> None:
    e = Evaluation.from_record({"value": "99.5", "status": "BREACHED", "version": 3, "detail": {"late": "T-1"}})
    assert (e.value, e.status, e.agreement_version, e.budget_consumed) == (Decimal("99.5"), Status.BREACHED, 3, None)
    with pytest.raises(TypeError):
        e.detail["late"] = "T-2"  # type: ignore[index]
    # an undefined value or budget is "" wherever a record names it
    assert Evaluation().to_record(GATEWAY_FIELDS)["budget_remaining"] == ""
    assert "budget_remaining" not in Evaluation().to_record()


def test_a_record_that_is_not_an_evaluation_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="value 'fast' is not a decimal"):
        Evaluation.from_record({"value": "fast"})
    with pytest.raises(ValueError, match="status 'GOOD' is not one of MET, AT_RISK, BREACHED, NO_DATA"):
        Evaluation.from_record({"status": "GOOD"})


def _states(store: str, topic: str) -> list[dict[str, Any]]:
    with sqlite3.connect(FIXTURES / store) as db:
        rows = db.execute("SELECT state FROM stored_events WHERE topic = ? ORDER BY rowid", (topic,)).fetchall()
    return [json.loads(bytes(r[0]) if isinstance(r[0], bytes) else r[0]) for r in rows]


def test_the_releases_stored_evaluations_convert_without_loss() -> None:
    """Metrics' WindowEvaluation events and billing's Statement assessments, as the release
    of the upgrade fixtures stored them."""
    recorded = [
        s["evaluation"]
        for topic in ("Evaluated", "Closed")
        for s in _states("metrics.sqlite", f"accord_metrics.domain:WindowEvaluation.{topic}")
    ]
    assert len(recorded) == 15
    for record in recorded:
        typed = Evaluation.from_record(record)
        assert typed.to_record() == record
        assert Evaluation.from_message(typed.to_message()).to_record() == record
    closed = {(r["objective_id"], r["window_start"]): r for r in recorded if r["closed"]}

    statements = _states("billing.sqlite", "accord_billing.domain:Statement.Assessed")
    assessed = [s["assessment"]["evaluation"] for s in statements]
    assert assessed
    for record in assessed:
        assert Evaluation.from_record(record).to_record(BILLING_FIELDS) == record
        # what billing stored is what it reads today from metrics' published message
        published = Evaluation.from_record(closed[(record["objective_id"], record["window_start"])]).to_message()
        assert Evaluation.from_message(published).to_record(BILLING_FIELDS) == record
