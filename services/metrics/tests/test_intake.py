"""The NATS signal intake with poison and failing messages (real nats-server, real SQLite):
a message that can never be recorded goes to the DEADLETTER stream with the reason and is
then acknowledged (alert, health, a reply to a producer who asked) and the next valid batch
is recorded; a batch the store cannot take now is never acknowledged, and is recorded once
the store is back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from structlog.testing import capture_logs

from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.application import Agreements
from accord_agreements.samples import EMAIL, IT
from accord_kit import deadletter
from accord_kit.auth import TokenVerifier
from accord_kit.nats_util import connect
from accord_kit.runtime import HealthBoard
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys
from accord_kit.testing.streams import eventually
from accord_metrics.application import Metrics
from accord_metrics.domain import KnownService
from accord_metrics.intake import MSG_ID, REPLY_TO, STATUS, STREAM, SignalIntake
from tests.suite import feed

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SUBJECT = f"accord.signals.v1.{EMAIL}"


def outages(first: int, n: int) -> bytes:
    def ts(dt: datetime) -> Timestamp:
        t = Timestamp()
        t.FromDatetime(dt)
        return t

    signals = [
        spb.Signal(
            signal_id=f"o{i}",
            service_id=EMAIL,
            outage=spb.Outage(start=ts(T0 + timedelta(hours=i)), end=ts(T0 + timedelta(hours=i, minutes=3))),
        )
        for i in range(first, first + n)
    ]
    return spb.SignalBatch(signals=signals).SerializeToString()


@dataclass
class Intake:
    intake: SignalIntake
    metrics: Metrics
    health: HealthBoard
    keys: Keys
    db: Path

    @property
    def provider(self) -> str:
        return dict(self.keys.metadata("department", IT))["authorization"]


@asynccontextmanager
async def intake_of(nats_url: str, tmp_path: Path) -> AsyncIterator[Intake]:
    """Metrics (with e-mail registered by it-operations, learned from agreements) and its
    signal intake running against `nats_url`."""
    agreements = Agreements(sqlite_env(tmp_path / "a.db"))
    agreements.register_department(IT, "IT")
    agreements.register_service(EMAIL, "E-mail", IT)
    db = tmp_path / "m.db"
    learned = Metrics(sqlite_env(db))
    feed("agreements", agreements, learned)
    learned.close()
    agreements.close()
    metrics = Metrics(sqlite_env(db))  # knows no provider yet: reads the store for it
    keys = make_keys(tmp_path / "keys")
    health = HealthBoard()
    intake = SignalIntake(
        metrics, nats_url, TokenVerifier(keys.public_file.read_bytes()), health=health, retry_delay=0.2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    try:
        nc = await connect(nats_url, name="check")
        try:

            async def ready() -> bool:
                try:
                    await nc.jetstream().consumer_info(STREAM, "metrics-SIGNALS")
                    return True
                except Exception:
                    return False

            await eventually(ready, timeout=20, what="the intake's durable consumer")
        finally:
            await nc.close()
        yield Intake(intake, metrics, health, keys, db)
    finally:
        stop.set()
        await task
        metrics.close()


async def test_a_malformed_message_is_dead_lettered_with_its_reason_and_the_next_batch_is_recorded(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        async with intake_of(own_nats_server.url, tmp_path) as it:
            nc = await connect(own_nats_server.url, name="producer")
            try:
                js = nc.jetstream()
                replies = await nc.subscribe("producer.replies")
                auth = {"Authorization": it.provider, REPLY_TO: "producer.replies"}
                await js.publish(SUBJECT, b"\xff\x00garbage", headers=auth)
                rejected = await replies.next_msg(timeout=20)
                assert (rejected.headers or {}).get(STATUS) == "rejected"
                assert b"not an accord.metrics.v1.SignalBatch" in rejected.data
                await js.publish(SUBJECT, outages(0, 10), headers=auth)
                recorded = await replies.next_msg(timeout=20)
                assert (recorded.headers or {}).get(STATUS) == "recorded"
                assert len(it.metrics.signals(EMAIL)) == 10

                copy = await js.get_last_msg(deadletter.STREAM, deadletter.subject_for("metrics", SUBJECT))
                assert copy.data == b"\xff\x00garbage"
                headers = copy.headers or {}
                assert "not an accord.metrics.v1.SignalBatch" in headers[deadletter.REASON]
                assert headers[deadletter.ORIGINAL_SUBJECT] == SUBJECT
                assert headers[deadletter.ORIGINAL_STREAM] == STREAM
                assert headers[REPLY_TO] == "producer.replies"
                assert "Authorization" not in headers
                # Acknowledged: nothing left to deliver, nothing pending.
                info = await js.consumer_info(STREAM, "metrics-SIGNALS")
                assert info.num_ack_pending == 0 and info.num_pending == 0
            finally:
                await nc.close()
            assert it.intake.rejected == 1
            serving, detail = it.health.statuses[deadletter.HEALTH]
            assert not serving and "not an accord.metrics.v1.SignalBatch" in detail
    alerts = [e for e in logs if e.get("event") == "signal_batch_dead_lettered"]
    assert len(alerts) == 1 and alerts[0]["alert"] is True


async def test_a_batch_the_store_cannot_read_is_never_acknowledged_and_is_recorded_once_it_is_back(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    async with intake_of(own_nats_server.url, tmp_path) as it:
        # Who provides e-mail is stored in a record that cannot be read now.
        conn = sqlite3.connect(it.db, isolation_level=None)
        oid = str(KnownService.create_id(EMAIL))
        rows = conn.execute(
            "SELECT rowid, state FROM stored_events WHERE originator_id IN (?, ?)", (oid, oid.replace("-", ""))
        ).fetchall()
        assert rows, "the KnownService record"
        (rowid, state), *_ = rows
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (b"\xff unreadable", rowid))
        nc = await connect(own_nats_server.url, name="producer")
        try:
            js = nc.jetstream()
            await js.publish(SUBJECT, outages(0, 10), headers={"Authorization": it.provider})
            await eventually(lambda: it.intake.retried >= 2, timeout=20, what="the batch retried")
            assert it.metrics.signals(EMAIL) == []
            info = await js.consumer_info(STREAM, "metrics-SIGNALS")
            assert info.num_ack_pending == 1, "the batch was acknowledged while the store could not take it"
            conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state, rowid))  # the store is back
            await eventually(lambda: len(it.metrics.signals(EMAIL)) == 10, timeout=30, what="the batch recorded")
            assert it.intake.rejected == 0

            async def settled() -> bool:  # acknowledged once stored: the ack reaches the server just after
                info = await js.consumer_info(STREAM, "metrics-SIGNALS")
                return bool(info.num_ack_pending == 0 and info.num_pending == 0)

            await eventually(settled, timeout=10, what="the batch acknowledged")
        finally:
            await nc.close()
            conn.close()
        assert deadletter.HEALTH not in it.health.statuses


async def test_the_producer_hears_each_batchs_outcome_on_the_subject_it_names(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    """Not only the JetStream ack: accepted, duplicates and corrections of a recorded batch, or
    the rejection with its code and reason, as JSON on the producer's reply subject, matched
    to the batch by its Nats-Msg-Id."""
    async with intake_of(own_nats_server.url, tmp_path) as it:
        nc = await connect(own_nats_server.url, name="producer")
        try:
            js = nc.jetstream()
            inbox = nc.new_inbox()
            replies = await nc.subscribe(inbox)

            async def send(data: bytes, msg_id: str, token: str | None = None) -> tuple[dict[str, str], dict]:
                headers = {"Authorization": token or it.provider, REPLY_TO: inbox, "Nats-Msg-Id": msg_id}
                ack = await js.publish(SUBJECT, data, headers=headers)
                reply = await replies.next_msg(timeout=20)
                body = json.loads(reply.data)
                assert body["msg_id"] == msg_id and (reply.headers or {})[MSG_ID] == msg_id
                assert body["stream_sequence"] == ack.seq and body["subject"] == SUBJECT
                return dict(reply.headers or {}), body

            headers, body = await send(outages(0, 3), "batch-1")
            assert headers[STATUS] == "recorded"
            assert (body["accepted"], body["duplicates"], body["corrections"]) == (3, 0, 0)
            # o1 and o2 again (duplicates), o2 with a corrected end, o3 new: one correction.
            batch = spb.SignalBatch.FromString(outages(1, 3))
            batch.signals[1].outage.end.seconds += 60
            headers, body = await send(batch.SerializeToString(), "batch-2")
            assert (body["status"], body["accepted"], body["duplicates"], body["corrections"]) == (
                "recorded", 1, 1, 1,
            )  # fmt: skip
            stored = it.metrics.signals(EMAIL)
            assert {s.provenance.source for s in stored} == {"nats"}

            invalid = spb.SignalBatch.FromString(outages(10, 1))
            invalid.signals[0].outage.end.CopyFrom(invalid.signals[0].outage.start)
            headers, body = await send(invalid.SerializeToString(), "batch-3")
            assert headers[STATUS] == "rejected" and body["code"] == "invalid_argument"
            assert body["reason"] == "signals[0].outage.end: must be after start"

            customer = dict(it.keys.metadata("department", "finance"))["authorization"]
            headers, body = await send(outages(20, 1), "batch-4", token=customer)
            assert body["code"] == "permission_denied" and "only the provider of service" in body["reason"]
            headers, body = await send(outages(20, 1), "batch-5", token="Bearer not-a-token")
            assert body["code"] == "unauthenticated"
            assert len(it.metrics.signals(EMAIL)) == 5  # 4 first contents and one correction
        finally:
            await nc.close()


def correction_reasons(metrics: Metrics) -> list[str]:
    """The reason of every correction metrics stored, in log order."""
    from accord_metrics.signal_index import CORRECTION_TOPIC

    notes = metrics.recorder.select_notifications(start=0, limit=100, topics=[CORRECTION_TOPIC])
    return [metrics.mapper.to_domain_event(n).reason for n in notes]  # type: ignore[attr-defined]


async def test_a_batch_says_why_its_corrections_are_sent(own_nats_server: NatsServer, tmp_path: Path) -> None:
    """A SignalBatch's correction_reason is the reason of the corrections it brings; one that
    is not printable text is rejected naming the field, and nothing of the batch is stored."""
    async with intake_of(own_nats_server.url, tmp_path) as it:
        nc = await connect(own_nats_server.url, name="producer")
        try:
            js = nc.jetstream()
            inbox = nc.new_inbox()
            replies = await nc.subscribe(inbox)

            async def send(batch: spb.SignalBatch, msg_id: str) -> dict:
                headers = {"Authorization": it.provider, REPLY_TO: inbox, "Nats-Msg-Id": msg_id}
                await js.publish(SUBJECT, batch.SerializeToString(), headers=headers)
                return json.loads((await replies.next_msg(timeout=20)).data)  # type: ignore[no-any-return]

            assert (await send(spb.SignalBatch.FromString(outages(0, 2)), "first"))["accepted"] == 2
            fixed = spb.SignalBatch.FromString(outages(0, 2))
            fixed.signals[0].outage.end.seconds += 60
            fixed.correction_reason = "  end read again from the incident log  "
            assert (await send(fixed, "fixed"))["corrections"] == 1
            assert correction_reasons(it.metrics) == ["end read again from the incident log"]

            bad = spb.SignalBatch.FromString(outages(0, 2))
            bad.signals[1].outage.end.seconds += 60
            bad.correction_reason = "two\nlines"
            body = await send(bad, "bad")
            assert (body["status"], body["code"]) == ("rejected", "invalid_argument")
            assert body["reason"].startswith("correction_reason: must be printable text on one line")
            too_long = spb.SignalBatch.FromString(bad.SerializeToString())
            too_long.correction_reason = "x" * 501
            body = await send(too_long, "long")
            assert body["reason"] == "correction_reason: 501 characters; at most 500"
            assert len(it.metrics.signals(EMAIL)) == 3 and len(correction_reasons(it.metrics)) == 1
            # Without one, the fixed text, as before.
            bad.ClearField("correction_reason")
            assert (await send(bad, "none"))["corrections"] == 1
            assert correction_reasons(it.metrics)[-1] == "re-sent with a known signal id and different content"
        finally:
            await nc.close()
