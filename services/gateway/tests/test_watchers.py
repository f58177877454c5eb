"""What the gateway's watchers (WatchStatus, the live page) are told: the changes of a run of
events its consumer applies together, once, at the run's end — so an evaluation that turned
BREACHED and the breach metrics stored with it reach a watcher together, never the health
without its breach. A lone event is told at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from tests.test_catch_up import drafted, gateway_settings, publish

from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metric_events
from accord_gateway.bootstrap import build
from accord_gateway.projection import ReadModel
from accord_kit.nats_util import connect
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service
from accord_kit.testing.streams import eventually

BREACHED = metric_events.EvaluationStatus.Value("EVALUATION_STATUS_BREACHED")


def breached(aid: str) -> Message:
    e = metric_events.Evaluation(
        agreement_id=aid, objective_id="availability", window_start="2026-01-01T00:00:00+00:00",
        window_end="2026-02-01T00:00:00+00:00", status=BREACHED, value="99.1", target="99.9",
    )  # fmt: skip
    return metric_events.EvaluationUpdated(evaluation=e)


def its_breach(aid: str) -> Message:
    return metric_events.BreachDetected(
        agreement_id=aid, objective_id="availability", window_start="2026-01-01T00:00:00+00:00",
        window_end="2026-02-01T00:00:00+00:00", value="99.1", target="99.9", certain_before_close=True,
    )  # fmt: skip


def envelope(msg: Message, position: int, source: str = "metrics") -> events_pb2.EventEnvelope:
    env = events_pb2.EventEnvelope(
        event_id=f"{source}:x:{position}", source_service=source, position=position,
        previous_position=position - 1, type=msg.DESCRIPTOR.full_name,
    )  # fmt: skip
    env.payload.Pack(msg)
    return env


def seen_by(model: ReadModel) -> list[tuple[str, str, int]]:
    """What a watcher reads each time it is told of a change: (agreement, its health, how many
    breaches it lists)."""
    seen: list[tuple[str, str, int]] = []

    def listener(aid: str) -> None:
        status: Any = model.agreement(aid) or {}
        seen.append((aid, str(status.get("health", "")), len(status.get("breaches") or [])))

    model.add_listener(listener)
    return seen


def test_a_run_of_events_is_told_once_at_its_end_and_a_lone_event_at_once() -> None:
    model = ReadModel()
    for position, aid in enumerate(("a1", "a2"), start=1):
        assert model.apply_upstream("agreements", envelope(drafted(aid)[1], position, "agreements"))
    seen = seen_by(model)
    with model.applying_run():
        assert model.apply_upstream("metrics", envelope(breached("a1"), 1))
        assert model.apply_upstream("metrics", envelope(its_breach("a1"), 2))
        assert seen == []  # nothing told half-way
    assert seen == [("a1", "BREACHED", 1)]
    # Outside a run (a snapshot's tail, a test): each event at once.
    assert model.apply_upstream("metrics", envelope(breached("a2"), 3))
    assert seen[-1] == ("a2", "BREACHED", 0)


async def test_the_consumer_applies_a_fetched_run_so(own_nats_server: NatsServer, tmp_path: Path) -> None:
    """The breached evaluation and its breach wait in the stream before the gateway starts: its
    consumer fetches them together, and its watchers are told once, with both."""
    nc = await connect(own_nats_server.url, name="publisher")
    try:
        await publish(nc, "agreements", [drafted("a1")])
        await publish(nc, "metrics", [("w-a1", breached("a1")), ("w-a1", its_breach("a1"))])
        await publish(nc, "billing", [])  # the stream, empty
    finally:
        await nc.close()
    held: dict[str, list[tuple[str, str, int]]] = {}

    def watched(settings: Any, **kwargs: Any) -> Any:
        parts = build(settings, **kwargs)
        held["seen"] = seen_by(parts.applier)  # listening before its consumers start
        return parts

    settings, _ = gateway_settings(own_nats_server.url, tmp_path)
    async with running_service(watched, settings, make_keys(tmp_path / "keys")) as runtime:
        model = runtime.parts.applier
        assert isinstance(model, ReadModel)
        await eventually(lambda: model.tracked_position("metrics") == 3, timeout=20, what="both metrics events")
        seen = held["seen"]
        await eventually(lambda: ("a1", "BREACHED", 1) in seen, timeout=5, what="told")
    assert [s for s in seen if s[0] == "a1" and s[1] == "BREACHED"] == [("a1", "BREACHED", 1)]
