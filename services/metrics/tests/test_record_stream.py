"""RecordSignals as it runs (the real bootstrap, gRPC on port 0, a real NATS, SQLite): the
messages of one stream are recorded in order although the next one is read and validated
while the one before it is being stored — a later message completes and corrects what an
earlier one recorded — and a message refused, whether by validation or when it is recorded,
leaves every message before it stored and nothing of it or after it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from accord.metrics.v1 import metrics_pb2 as pb
from accord.metrics.v1 import metrics_pb2_grpc as pb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.application import Agreements
from accord_agreements.samples import EMAIL, IT
from accord_kit.clock import FakeClock
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_metrics.bootstrap import build
from accord_metrics.settings import load
from tests.suite import AMS, at, feed, outage, ts

START = at(f"2026-01-12T10:00{AMS}")


def under_way(sid: str) -> spb.Signal:
    return spb.Signal(signal_id=sid, service_id=EMAIL, outage=spb.Outage(start=ts(START)))


def ended(sid: str, minutes: int) -> spb.Signal:
    end = START + timedelta(minutes=minutes)
    return spb.Signal(signal_id=sid, service_id=EMAIL, outage=spb.Outage(start=ts(START), end=ts(end)))


def many(prefix: str, n: int) -> list[spb.Signal]:
    return [outage(f"{prefix}{i}", f"2026-01-13T{i % 24:02d}:00{AMS}", 1 + i % 5) for i in range(n)]


async def stream(*messages: list[spb.Signal]) -> AsyncIterator[pb.RecordSignalsRequest]:
    for signals in messages:
        yield pb.RecordSignalsRequest(signals=signals)


async def record(
    own_nats_server: NatsServer, tmp_path: Path, *messages: list[spb.Signal], batch: Sequence[spb.Signal] = ()
) -> tuple[Any, Any]:  # fmt: skip
    """Metrics as it runs, told that it-operations provides e-mail; the messages streamed over one
    RecordSignals call as it-operations, then `batch` (when given) over RecordSignalBatch, which must
    be accepted whole. (The stream's response or error, the ids stored in order with each outage's
    end and the way it came.)"""
    settings = load(service_environ("metrics", tmp_path, own_nats_server.url, "sqlite"))
    keys = make_keys(tmp_path / "keys")
    agreements = Agreements(sqlite_env(tmp_path / "agreements.sqlite"))
    agreements.register_department(IT, "IT")
    agreements.register_service(EMAIL, "E-mail", IT)
    try:
        async with (
            running_service(build, settings, keys, clock=FakeClock(START + timedelta(days=1))) as runtime,
            grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel,
        ):
            app = runtime.parts.app
            feed("agreements", agreements, app)
            stub = pb_grpc.MetricsServiceStub(channel)
            try:
                answer: Any = await stub.RecordSignals(stream(*messages), metadata=keys.metadata("department", IT))
            except grpc.aio.AioRpcError as e:
                answer = e
            if batch:
                request = pb.RecordSignalBatchRequest(signals=batch)
                sent = await stub.RecordSignalBatch(request, metadata=keys.metadata("department", IT))
                assert sent.accepted == len(batch), sent
            return answer, [(s.signal_id, s.outage.end.seconds, s.provenance.source) for s in app.signals(EMAIL)]
    finally:
        agreements.close()


async def test_a_streams_messages_are_recorded_in_order(own_nats_server: NatsServer, tmp_path: Path) -> None:
    # An outage under way, its end in the next message (a completion), a corrected end in the
    # one after (a correction), each behind a large message: recorded in the stream's order.
    answer, stored = await record(
        own_nats_server, tmp_path, [*many("a", 500), under_way("o1")], [ended("o1", 30), *many("b", 500)],
        [*many("c", 500), ended("o1", 45)],
    )  # fmt: skip
    assert isinstance(answer, pb.RecordSignalsResponse), answer
    assert (answer.accepted, answer.duplicates, answer.corrections, answer.messages) == (1502, 0, 1, 3)
    o1 = [end for sid, end, _ in stored if sid == "o1"]
    assert o1 == [0, int((START + timedelta(minutes=30)).timestamp()), int((START + timedelta(minutes=45)).timestamp())]
    assert len(stored) == 1503


@pytest.mark.parametrize("refused_when", ["validated", "recorded"])
async def test_a_refused_message_leaves_the_ones_before_it_stored_and_nothing_after(
    own_nats_server: NatsServer, tmp_path: Path, refused_when: str
) -> None:
    # Message 1 breaks a field rule (validated before it is recorded), or re-sends message 0's
    # outage as a call (refused only when recorded, against what the store holds); message 2,
    # read and validated meanwhile, is never recorded.
    call = spb.Signal(signal_id="o1", service_id=EMAIL, call=spb.Call(entered_queue=ts(START)))
    bad = spb.Signal(signal_id="x1", service_id=EMAIL, outage=spb.Outage(start=ts(START), end=ts(START)))
    refused = [*many("b", 300), bad] if refused_when == "validated" else [*many("b", 300), call]
    answer, stored = await record(
        own_nats_server, tmp_path, [*many("a", 300), ended("o1", 30)], refused, many("c", 300)
    )
    assert isinstance(answer, grpc.aio.AioRpcError), answer
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT, answer.details()
    details = answer.details() or ""
    assert details.startswith("message 1 (earlier messages were stored: 301 accepted): signals[300]"), details
    assert ("end: must be after start" if refused_when == "validated" else "correction keeps its kind") in details
    assert [sid for sid, _, _ in stored] == [*(f"a{i}" for i in range(300)), "o1"]


async def test_a_streams_messages_are_validated_in_the_event_loop_unless_large(
    own_nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message of at most `IN_LOOP` signals — and a RecordSignalBatch request — is validated and sent
    # in the event loop itself (a round holding the interpreter makes every hand-off to a thread and
    # back wait); a larger one in a worker thread, as before. All recorded, the stream in order.
    from accord_metrics import server

    threads: dict[str, set[int]] = {}
    real = server.validate

    def validate(signal: spb.Signal, index: int) -> Any:
        threads.setdefault(signal.signal_id[0], set()).add(threading.get_ident())
        return real(signal, index)

    monkeypatch.setattr(server, "validate", validate)
    large = [outage(f"c{i}", f"2026-01-13T{i % 24:02d}:00{AMS}", 1 + i % 5) for i in range(server.IN_LOOP + 1)]
    answer, stored = await record(own_nats_server, tmp_path, many("a", 300), large, many("b", 300), batch=many("d", 50))
    assert isinstance(answer, pb.RecordSignalsResponse), answer
    assert (answer.accepted, answer.messages) == (600 + server.IN_LOOP + 1, 3)
    assert [sid for sid, _, _ in stored][:301] == [*(f"a{i}" for i in range(300)), "c0"]
    assert {source for _, _, source in stored} == {"grpc"}  # filled in on the message sent as it is
    loop = threading.get_ident()
    assert threads["a"] == threads["b"] == threads["d"] == {loop}
    assert loop not in threads["c"]
