"""Tamper evidence in a running service: the runtime seals the log periodically and at
stop; the checkpoints travel like any other event (ReadEvents, the relay); the common
AuditService serves the raw chain, verifies the log, gives the signing keys and an
agreement's history — and a log edited behind the service's back is caught, offline from
the ReadChain pages and by the service itself, at the record that was edited."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.utils import get_topic
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.audit.v1 import audit_pb2, audit_pb2_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.testing.v1 import counter_pb2, counter_pb2_grpc
from accord_kit.audit import (
    MAX_CHAIN_LIMIT,
    VERIFY_PAGE,
    VerifyProgress,
    agreement_history,
    history_page,
    problem_of,
    public_keys_of,
    verify_chain,
    verify_pages,
)
from accord_kit.auth import INFRA_POLICY, Policy, TokenVerifier
from accord_kit.chain import (
    Checkpoint,
    Kind,
    key_id,
    latest_checkpoint,
    load_private_key,
    load_public_key,
    seal,
    verify_store,
)
from accord_kit.clock import FakeClock
from accord_kit.envelope import unpack
from accord_kit.keys import chain_key_files, write_keys
from accord_kit.nats_util import connect
from accord_kit.runtime import CHAIN_HEALTH, ServiceParts, ServiceRuntime
from accord_kit.settings import ServiceSettings, SettingsError, env_names
from accord_kit.testing.counter import Counter, Counters, build_counter_service
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, ensure_chain_key, make_keys, running_service, service_environ
from accord_kit.testing.streams import assert_exactly_once_in_order, eventually, read_stream

SEALED_TYPE = "accord.audit.v1.ChainCheckpointSealed"
OPENED_TYPE = "accord.audit.v1.ChainCheckpointsOpened"


# -- a running counter service -------------------------------------------------------------


@dataclass
class Running:
    runtime: ServiceRuntime
    app: Counters
    settings: ServiceSettings
    keys: Keys
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.runtime.port}"

    @property
    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    def md(self, role: str = "auditor", department: str = "") -> tuple[tuple[str, str], ...]:
        return self.keys.metadata(role, department)

    async def increment(self, name: str, amount: int = 1) -> None:
        await counter_pb2_grpc.CounterServiceStub(self.channel).Increment(
            counter_pb2.IncrementRequest(counter_id=name, amount=amount), metadata=self.md("department", "it")
        )

    @property
    def public_key(self) -> Any:
        return load_private_key(self.settings.chain_key_file).public_key()


def counter_settings(
    tmp_path: Path, nats_url: str, unique: str, store: str = "sqlite", db: str = "", **own: str
) -> Any:
    service = f"counter{unique.lower()}"
    extra = {f"{service.upper()}_{k}": v for k, v in own.items()}
    return ServiceSettings.from_env(service, service_environ(service, tmp_path, nats_url, store, db, **extra))


@asynccontextmanager
async def counter_service(
    settings: ServiceSettings, tmp_path: Path, app_class: type[Counters] = Counters
) -> AsyncIterator[Running]:
    keys = make_keys(tmp_path / "keys")
    async with running_service(
        build_counter_service, settings, keys, clock=FakeClock(), app_class=app_class
    ) as runtime:
        app = runtime.parts.app
        assert isinstance(app, Counters)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield Running(runtime, app, settings, keys, channel)


def last_sealed(app: Counters) -> int:
    cp, _ = latest_checkpoint(app)
    return cp.position if cp is not None else 0


def non_checkpoint_head(app: Counters) -> int:
    """The position of the last event that is not a checkpoint."""
    records = app.recorder.select_notifications(start=0, limit=100_000)
    return max((n.id for n in records if not n.topic.startswith("accord_kit.chain:")), default=0)


class Sqlite:
    """The service's SQLite file, edited behind its back."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def state(self, position: int) -> bytes:
        return bytes(self.conn.execute("SELECT state FROM stored_events WHERE rowid = ?", (position,)).fetchone()[0])

    def alter(self, position: int, old: bytes, new: bytes) -> None:
        state = self.state(position)
        assert old in state, state
        self.conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state.replace(old, new), position))

    def delete(self, position: int) -> None:
        self.conn.execute("DELETE FROM stored_events WHERE rowid = ?", (position,))

    def close(self) -> None:
        self.conn.close()


# -- sealing ---------------------------------------------------------------------------------


async def test_a_service_seals_its_log_periodically_and_its_checkpoints_are_served_and_published(
    nats_server: NatsServer, tmp_path: Path, unique: str, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    settings = counter_settings(tmp_path, nats_server.url, unique, store_kind, db, SEAL_SECONDS="0.2")
    async with counter_service(settings, tmp_path) as svc:
        assert await svc.runtime.startup_verified()  # accord.chain is NOT_SERVING until then
        health = health_pb2_grpc.HealthStub(svc.channel)
        chain_health = await health.Check(health_pb2.HealthCheckRequest(service=CHAIN_HEALTH))
        assert chain_health.status == health_pb2.HealthCheckResponse.SERVING

        # Three increments, then a periodic seal covers them.
        for amount in (1, 2, 3):
            await svc.increment("c1", amount)
        first = svc.app.head_position()
        await eventually(lambda: last_sealed(svc.app) >= first, timeout=10, what="a periodic seal")
        # More events, another seal; an idle log is not sealed again.
        await svc.increment("c2", 5)
        second = non_checkpoint_head(svc.app)
        await eventually(lambda: last_sealed(svc.app) == second, timeout=10, what="a second periodic seal")
        head = svc.app.head_position()
        await asyncio.sleep(0.6)  # three more rounds with nothing new
        assert svc.app.head_position() == head, "an idle log was sealed again"

        # ReadEvents serves the checkpoints as public messages.
        resp = await events_pb2_grpc.EventLogServiceStub(svc.channel).ReadEvents(
            events_pb2.ReadEventsRequest(limit=100), metadata=svc.md()
        )
        assert [e.type for e in resp.events].count(OPENED_TYPE) == 1
        sealed = [unpack(e, audit_pb2.ChainCheckpointSealed) for e in resp.events if e.type == SEALED_TYPE]
        assert len(sealed) >= 2 and sealed[-1].position == second
        assert any(s.position >= first for s in sealed[:-1])
        chain: Any = svc.app.recorder
        for s in sealed:
            assert s.service == settings.service
            assert s.chain_hash == chain.select_chain_hashes(s.position, s.position)[s.position]
            cp = Checkpoint(s.service, s.position, s.chain_hash, s.sealed_at, s.key_id, s.signature)
            svc.public_key.verify(cp.signature, cp.payload())  # raises if it does not verify
            assert s.key_id == key_id(svc.public_key)

        # The relay published them, exactly once and in order, with everything else.
        relay = svc.runtime.relay
        assert relay is not None
        await eventually(lambda: relay.stats.head_position == svc.app.head_position(), what="relay caught up")
        nc = await connect(nats_server.url, name="test")
        try:
            messages = await read_stream(nc, settings.stream)
        finally:
            await nc.close()
        assert_exactly_once_in_order(messages, [n.id for n in svc.app.select_notifications(0, 1000)])
        assert [env.type for _, env in messages].count(SEALED_TYPE) == len(sealed)
        assert all(h["Nats-Msg-Id"] == env.event_id for h, env in messages)

        assert verify_store(svc.app, [svc.public_key]).ok


async def test_a_service_seals_at_stop_after_its_last_write(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    settings = counter_settings(tmp_path, nats_server.url, unique)  # SEAL_SECONDS 60: no periodic seal here
    async with counter_service(settings, tmp_path) as svc:
        await svc.increment("c1", 4)
        await svc.increment("c1", 6)
        written = svc.app.head_position()
        assert last_sealed(svc.app) == 0
    reopened = Counters(settings.event_store_env(), service=settings.service)
    try:
        cp, _ = latest_checkpoint(reopened)
        assert cp is not None and cp.position == written
        assert reopened.head_position() == written + 2  # Checkpoints.Opened, Checkpoints.Sealed
        assert verify_store(reopened, [load_public_key(ensure_chain_key(settings))]).checkpoints == 1
    finally:
        reopened.close()


async def test_sealing_stops_with_an_alert_on_a_tampered_log_and_the_service_keeps_serving(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    # Seals are triggered by hand here (the periodic task calls the same seal_once), so that
    # none can fall between the write and the edit below.
    settings = counter_settings(tmp_path, nats_server.url, unique, SEAL_SECONDS="3600")
    async with counter_service(settings, tmp_path) as svc:
        await svc.increment("c1", 1)
        assert await svc.runtime.seal_once() is not None
        await svc.increment("c1", 1)
        victim = svc.app.head_position()
        db = Sqlite(settings.sqlite_path)
        try:
            db.alter(victim, b'"amount":1', b'"amount":9')  # in place, behind the service's back
        finally:
            db.close()
        await svc.increment("c1", 1)
        health = health_pb2_grpc.HealthStub(svc.channel)
        assert await svc.runtime.startup_verified()
        before = await health.Check(health_pb2.HealthCheckRequest(service=CHAIN_HEALTH))
        assert before.status == health_pb2.HealthCheckResponse.SERVING

        assert await svc.runtime.seal_once() is None
        after = await health.Check(health_pb2.HealthCheckRequest(service=CHAIN_HEALTH))
        assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert svc.runtime.sealing_halted is not None
        assert f"ALTERED at position {victim}" in svc.runtime.sealing_halted
        head = svc.app.head_position()
        await svc.increment("c2", 1)
        assert await svc.runtime.seal_once() is None
        assert svc.app.head_position() == head + 2, "sealing went on after the log was found tampered with"
        # The service itself keeps serving.
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
    # No checkpoint at stop either: the last one is still the first.
    reopened = Counters(settings.event_store_env(), service=settings.service)
    try:
        assert last_sealed(reopened) < victim
    finally:
        reopened.close()


# -- ReadChain, offline verification and VerifyLog ------------------------------------------------------


def _offline(address: str, md: Any, keys: Any, limit: int) -> list[VerifyProgress]:
    """What an auditor's tool does: page through ReadChain over a (blocking) channel."""
    with grpc.insecure_channel(address) as ch:
        stub = audit_pb2_grpc.AuditServiceStub(ch)

        def read(after: int, lim: int, stop: int) -> audit_pb2.ReadChainResponse:
            req = audit_pb2.ReadChainRequest(after_position=after, limit=lim, stop_position=stop)
            return stub.ReadChain(req, metadata=md)

        return list(verify_chain(read, keys, limit=limit))


async def _verify_log(svc: Running, from_checkpoint: bool = False) -> list[audit_pb2.VerifyLogProgress]:
    call = svc.audit.VerifyLog(audit_pb2.VerifyLogRequest(from_checkpoint=from_checkpoint), metadata=svc.md())
    return [m async for m in call]


async def test_read_chain_pages_verify_offline_and_name_an_altered_or_deleted_record(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    settings = counter_settings(tmp_path, nats_server.url, unique)
    async with counter_service(settings, tmp_path) as svc:
        # A log of more than one VerifyLog page: 2,400 + 13 events, a checkpoint, 1,000 more.
        await asyncio.to_thread(svc.app.increment_many, "bulk", [1] * 2399)
        for i in range(10):
            await svc.increment(f"c{i % 3}", i + 1)
        sealed = await svc.runtime.seal_once()
        assert sealed is not None and sealed.position == 2413
        await asyncio.to_thread(svc.app.increment_many, "late", [2] * 999)
        head = svc.app.head_position()
        assert head == 2413 + 2 + 1000

        keys_resp = await svc.audit.GetChainKeys(audit_pb2.GetChainKeysRequest(), metadata=svc.md("department", "x"))
        keys = public_keys_of(keys_resp)
        assert list(keys) == [key_id(svc.public_key)]
        assert keys_resp.service == settings.service and keys_resp.seal_seconds == 60

        # Offline, from the pages alone: clean, every record recomputed, the checkpoint verified.
        steps = await asyncio.to_thread(_offline, svc.address, svc.md(), keys, 500)
        final = steps[-1]
        assert final.done and final.ok, final.problem
        assert (final.records_checked, final.checkpoints_checked, final.verified_through) == (head, 1, head)
        assert len(steps) == 7 and all(s.ok and not s.done for s in steps[:-1])
        assert [s.verified_through for s in steps[:-1]] == [500, 1000, 1500, 2000, 2500, 3000]
        assert final.report is not None and final.report == verify_store(svc.app, [svc.public_key])

        # The service verifies itself the same way, page by page.
        progress = await _verify_log(svc)
        assert [p.done for p in progress] == [False, True]
        assert [p.verified_through for p in progress] == [VERIFY_PAGE, head]
        assert progress[-1].ok and progress[-1].records_checked == head and progress[-1].checkpoints_checked == 1
        assert not progress[-1].HasField("problem")
        tail = (await _verify_log(svc, from_checkpoint=True))[-1]
        assert tail.ok and tail.start_position == sealed.position and tail.records_checked == head - sealed.position

        # One byte of a record before the checkpoint is edited in the SQLite file.
        db = Sqlite(settings.sqlite_path)
        try:
            db.alter(1234, b'"amount":1', b'"amount":7')
            steps = await asyncio.to_thread(_offline, svc.address, svc.md(), keys, 500)
            assert steps[-1].problem is not None
            assert (steps[-1].problem.kind, steps[-1].problem.position) == (Kind.ALTERED, 1234)
            assert steps[-1].verified_through == 1233 and not steps[-1].ok
            assert [s.ok for s in steps[:-1]] == [True, True, False, False, False, False]
            progress = await _verify_log(svc)
            last = progress[-1]
            assert last.done and not last.ok
            assert problem_of(last.problem) == steps[-1].problem
            assert last.problem.kind == audit_pb2.PROBLEM_KIND_ALTERED and last.problem.position == 1234
            assert "1234" in last.problem.detail
            # Only what follows the checkpoint is verified from it: that part is untouched.
            assert (await _verify_log(svc, from_checkpoint=True))[-1].ok

            # A record after the checkpoint deleted with its row: its chain entry is still
            # served, and the verifier says the record is missing there.
            db.alter(1234, b'"amount":7', b'"amount":1')
            db.delete(3000)
            page = await svc.audit.ReadChain(
                audit_pb2.ReadChainRequest(after_position=2990, limit=20), metadata=svc.md()
            )
            assert 3000 not in [r.position for r in page.records]
            assert 3000 in [e.position for e in page.chain]
            assert page.through_position == 3010 and page.more
            steps = await asyncio.to_thread(_offline, svc.address, svc.md(), keys, 1000)
            assert steps[-1].problem is not None
            assert (steps[-1].problem.kind, steps[-1].problem.position) == (Kind.MISSING, 3000)
            for from_checkpoint in (False, True):
                last = (await _verify_log(svc, from_checkpoint))[-1]
                assert (last.problem.kind, last.problem.position) == (audit_pb2.PROBLEM_KIND_MISSING, 3000)
        finally:
            db.close()


async def test_read_chain_pages_are_bounded_by_limit_stop_and_size(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    settings = counter_settings(tmp_path, nats_server.url, unique, MAX_MESSAGE_BYTES="20000")
    async with counter_service(settings, tmp_path) as svc:
        await asyncio.to_thread(svc.app.increment_many, "c", [1] * 199)
        read = svc.audit.ReadChain
        page = await read(audit_pb2.ReadChainRequest(), metadata=svc.md("service"))
        # Records are ~300 bytes: half of a 20,000-byte message holds ~30 of them.
        assert 20 < len(page.records) < 40 and page.more
        assert (
            [r.position for r in page.records]
            == [e.position for e in page.chain]
            == list(range(1, page.through_position + 1))
        )
        assert (page.log_head_position, page.chain_head_position) == (200, 200)
        first = page.records[0]
        stored = svc.app.recorder.select_notifications(start=1, limit=1)[0]
        assert (first.originator_id, first.originator_version, first.topic, first.state) == (
            str(Counter.create_id("c")),
            1,
            stored.topic,
            stored.state,
        )
        page = await read(audit_pb2.ReadChainRequest(after_position=10, limit=5), metadata=svc.md())
        assert [r.position for r in page.records] == [11, 12, 13, 14, 15] and page.through_position == 15
        page = await read(audit_pb2.ReadChainRequest(after_position=190, stop_position=195), metadata=svc.md())
        assert page.through_position == 195 and not page.more and len(page.chain) == 5
        page = await read(audit_pb2.ReadChainRequest(after_position=200), metadata=svc.md())
        assert (len(page.records), page.through_position, page.more) == (0, 200, False)
        # All the pages together: the store's own verification.
        pages, after = [], 0
        while True:
            p = await read(audit_pb2.ReadChainRequest(after_position=after, stop_position=200), metadata=svc.md())
            pages.append(p)
            after = p.through_position
            if not p.more:
                break
        assert len(pages) > 5
        assert verify_pages(pages, [svc.public_key]) == verify_store(svc.app, [svc.public_key])


# -- AgreementHistory --------------------------------------------------------------------------------


class AgreementCounters(Counters):
    """Counters named after agreements: every event of counter `a` concerns agreement `a`
    (its CounterIncremented events name the counter by id only: the override says which)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names: dict[str, str] = {}  # counter id → name, learnt from CounterCreated in log order

    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        if envelope.type == "accord.testing.v1.CounterCreated":
            self.names[envelope.aggregate_id] = unpack(envelope, counter_pb2.CounterCreated).name
        name = self.names.get(envelope.aggregate_id)
        return {name} if name else super().agreement_ids_of(envelope)


async def test_agreement_history_streams_exactly_the_events_of_one_agreement_with_their_chain_hashes(
    nats_server: NatsServer, tmp_path: Path, unique: str, store_kind: str, postgres_db: Callable[[], str]
) -> None:
    db = postgres_db() if store_kind == "postgres" else ""
    settings = counter_settings(tmp_path, nats_server.url, unique, store_kind, db)
    async with counter_service(settings, tmp_path, app_class=AgreementCounters) as svc:
        for i in range(12):
            await svc.increment(("agr-1", "agr-2", "agr-3")[i % 3], i + 1)
        await svc.runtime.seal_once()  # checkpoints concern no agreement
        await asyncio.to_thread(svc.app.increment_many, "agr-2", [1] * 1500)  # more than one page of history
        await svc.increment("agr-1", 100)

        async def history(agreement_id: str) -> list[audit_pb2.AuditedEvent]:
            req = audit_pb2.AgreementHistoryRequest(agreement_id=agreement_id)
            return [e async for e in svc.audit.AgreementHistory(req, metadata=svc.md("service"))]

        everything, _ = await asyncio.to_thread(svc.app.read_events, 0, 5000)
        hashes = svc.app.recorder.select_chain_hashes(0)  # type: ignore[attr-defined]
        for name, count in (("agr-1", 6), ("agr-2", 1505), ("agr-3", 5)):
            expected = [e for e in everything if e.aggregate_id == str(Counter.create_id(name))]
            got = await history(name)
            assert len(got) == len(expected) == count
            assert [e.envelope.SerializeToString() for e in got] == [e.SerializeToString() for e in expected]
            assert [e.chain_hash for e in got] == [hashes[e.position] for e in expected]
            # In-process, the same.
            local = await asyncio.to_thread(lambda n=name: list(agreement_history(svc.app, n)))
            assert local == got
        assert await history("agr-404") == []


class SkippingCounters(AgreementCounters):
    """Declares that its CounterIncremented events never concern an agreement (here untrue,
    so that skipping shows), and notes every envelope `agreement_ids_of` is asked about."""

    history_skip_topics = frozenset({get_topic(Counter.Incremented)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        self.asked.append(envelope.type)
        return super().agreement_ids_of(envelope)


def test_agreement_history_leaves_out_skipped_topics_before_decoding_and_keeps_envelopes_as_served(
    tmp_path: Path,
) -> None:
    env = sqlite_env(tmp_path / "c.sqlite")
    every, skipping = AgreementCounters(env), SkippingCounters(env)  # one store
    try:
        key = Ed25519PrivateKey.generate()
        for i in range(30):
            every.increment_many(("agr-1", "agr-2", "noise")[i % 3], [1] * (i % 4 + 1))
            if i % 7 == 6:
                seal(every, key)  # checkpoints between the agreements' events
        created = "accord.testing.v1.CounterCreated"
        full = list(agreement_history(every, "agr-1"))
        assert {e.envelope.type for e in full} == {created, "accord.testing.v1.CounterIncremented"}
        kept = list(agreement_history(skipping, "agr-1"))
        assert kept and kept == [e for e in full if e.envelope.type == created]
        # Neither the declared topic nor the checkpoints were decoded.
        assert set(skipping.asked) == {created}
        # Page by page, from any position: each event as ReadEvents serves it (its
        # previous_position is the log's, the skipped records before it included).
        served = {e.position: e for e in every.read_events(0, 5000)[0]}
        head = every.head_position()
        for page in (1, 2, 5):
            after, got = 0, []
            while after < head:
                found, after = history_page(skipping, "agr-2", after, head, page)
                got.extend(found)
            assert [e.envelope for e in got] == [served[e.envelope.position] for e in got]
            assert [e.envelope.position for e in got] == [
                p for p, e in served.items() if e.type == created and e.aggregate_id == str(Counter.create_id("agr-2"))
            ]
        for after in (5, 6, 7, head - 1):
            found, _ = history_page(every, "agr-1", after, head, 3)
            assert [e.envelope for e in found] == [served[e.envelope.position] for e in found]
    finally:
        every.close()
        skipping.close()


def _envelope(message: Any) -> events_pb2.EventEnvelope:
    env = events_pb2.EventEnvelope(type=message.DESCRIPTOR.full_name)
    env.payload.Pack(message)
    return env


def _holder_class() -> Any:
    """A message with a repeated message field whose items name agreements (made here: no
    public event has one yet)."""
    pool = descriptor_pool.Default()
    name = "accord.testing.audit_probe.Holder"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    f = descriptor_pb2.FileDescriptorProto(
        name="accord/testing/audit_probe.proto", package="accord.testing.audit_probe"
    )
    item = f.message_type.add(name="Item")
    item.field.add(name="agreement_id", number=1, type=9, label=1)  # string
    holder = f.message_type.add(name="Holder")
    holder.field.add(name="items", number=1, type=11, label=3, type_name=".accord.testing.audit_probe.Item")
    holder.field.add(name="note", number=2, type=9, label=1)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def test_by_default_an_event_concerns_the_agreements_its_payload_names(tmp_path: Path) -> None:
    from accord_kit.testing.fixtures import sqlite_env

    app = Counters(sqlite_env(tmp_path / "c.sqlite"))
    try:
        top = _envelope(agreement_events.AgreementProposed(agreement_id="a-1"))
        assert app.agreement_ids_of(top) == {"a-1"}
        assert app.concerns_agreement(top, "a-1") and not app.concerns_agreement(top, "a-2")
        nested = _envelope(metrics_events.WindowClosed(evaluation=metrics_events.Evaluation(agreement_id="a-2")))
        assert app.agreement_ids_of(nested) == {"a-2"}
        restated = _envelope(
            metrics_events.EvaluationRestated(
                old=metrics_events.Evaluation(agreement_id="a-3"), new=metrics_events.Evaluation(agreement_id="a-4")
            )
        )
        assert app.agreement_ids_of(restated) == {"a-3", "a-4"}
        holder = _holder_class()
        msg = holder(items=[{"agreement_id": "a-5"}, {"agreement_id": "a-6"}, {}], note="a-7")
        assert app.agreement_ids_of(_envelope(msg)) == {"a-5", "a-6"}
        assert app.agreement_ids_of(_envelope(metrics_events.ServiceKnown(service_id="a-1"))) == set()
        unknown = events_pb2.EventEnvelope(type="accord.nowhere.v1.Thing")
        unknown.payload.type_url = "type.googleapis.com/accord.nowhere.v1.Thing"
        assert app.agreement_ids_of(unknown) == set()
        # The checkpoint events are registered with every application's codec.
        assert app.codec.message_type(SEALED_TYPE) is audit_pb2.ChainCheckpointSealed
        assert app.codec.message_type(OPENED_TYPE) is audit_pb2.ChainCheckpointsOpened
    finally:
        app.close()


# -- who may call, and what is refused -----------------------------------------------------------------


async def test_rejected_audit_calls_get_the_right_status_and_store_nothing(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    settings = counter_settings(tmp_path, nats_server.url, unique)
    async with counter_service(settings, tmp_path) as svc:
        await svc.increment("c", 1)
        head = svc.app.head_position()

        async def rejected(call: Any, code: grpc.StatusCode, text: str) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                result = call()
                if hasattr(result, "__aiter__"):
                    _ = [m async for m in result]
                else:
                    await result
            assert err.value.code() == code, err.value.details()
            assert text in (err.value.details() or ""), err.value.details()
            assert svc.app.head_position() == head, "a rejected call stored something"

        a = svc.audit
        dept = svc.md("department", "it")
        for method, request in (
            ("ReadChain", audit_pb2.ReadChainRequest()),
            ("VerifyLog", audit_pb2.VerifyLogRequest()),
            ("AgreementHistory", audit_pb2.AgreementHistoryRequest(agreement_id="x")),
        ):
            await rejected(
                lambda m=method, r=request: getattr(a, m)(r, metadata=dept),
                grpc.StatusCode.PERMISSION_DENIED,
                f"role 'department' may not call /accord.audit.v1.AuditService/{method}; allowed: admin, auditor, "
                "service",
            )
            await rejected(
                lambda m=method, r=request: getattr(a, m)(r), grpc.StatusCode.UNAUTHENTICATED, "missing bearer token"
            )
        await rejected(
            lambda: a.GetChainKeys(audit_pb2.GetChainKeysRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token",
        )
        await rejected(
            lambda: a.ReadChain(audit_pb2.ReadChainRequest(limit=MAX_CHAIN_LIMIT + 1), metadata=svc.md()),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"limit must be at most {MAX_CHAIN_LIMIT}, not {MAX_CHAIN_LIMIT + 1}",
        )
        await rejected(
            lambda: a.ReadChain(audit_pb2.ReadChainRequest(after_position=5, stop_position=3), metadata=svc.md()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "stop_position 3 is before after_position 5",
        )
        for empty in ("", "  "):
            await rejected(
                lambda e=empty: a.AgreementHistory(
                    audit_pb2.AgreementHistoryRequest(agreement_id=e), metadata=svc.md("admin")
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "agreement_id must not be empty",
            )
        # Any authenticated role may read the keys; auditor, admin and service the rest.
        for role, dept_name in (("department", "it"), ("auditor", ""), ("admin", ""), ("service", "")):
            r = await a.GetChainKeys(audit_pb2.GetChainKeysRequest(), metadata=svc.md(role, dept_name))
            assert r.current.key_id == key_id(svc.public_key)
        for role in ("auditor", "admin", "service"):
            page = await a.ReadChain(audit_pb2.ReadChainRequest(), metadata=svc.md(role))
            assert page.through_position == head


# -- keys, settings, and a service without a log ------------------------------------------------------


async def test_a_service_without_its_chain_key_refuses_to_start_unless_it_does_not_seal(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    keys = make_keys(tmp_path / "keys")
    verifier = TokenVerifier(keys.public_file.read_bytes())
    settings = counter_settings(tmp_path, nats_server.url, unique)
    runtime = ServiceRuntime(build_counter_service(settings, verifier=verifier))
    with pytest.raises(SettingsError, match=rf"{settings.service.upper()}_CHAIN_KEY_FILE.*SEAL_SECONDS=0"):
        await runtime.start()
    assert runtime.parts.app is not None
    runtime.parts.app.close()

    unsealed = counter_settings(tmp_path, nats_server.url, unique, SEAL_SECONDS="0")
    runtime = ServiceRuntime(build_counter_service(unsealed, verifier=verifier))
    await runtime.start()
    try:
        await eventually(runtime.parts.readiness.is_ready, what="ready")
        assert not runtime.sealing
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            r = await audit_pb2_grpc.AuditServiceStub(ch).GetChainKeys(
                audit_pb2.GetChainKeysRequest(), metadata=keys.metadata("auditor")
            )
            assert not r.HasField("current") and r.seal_seconds == 0
            done = [p async for p in audit_pb2_grpc.AuditServiceStub(ch).VerifyLog(
                audit_pb2.VerifyLogRequest(), metadata=keys.metadata("auditor"))]  # fmt: skip
            assert done[-1].ok and done[-1].done
    finally:
        await runtime.stop()


async def test_a_service_without_a_log_serves_no_audit_and_does_not_seal(
    nats_server: NatsServer, tmp_path: Path, unique: str
) -> None:
    keys = make_keys(tmp_path / "keys")
    settings = counter_settings(tmp_path, nats_server.url, unique)

    def build(settings: ServiceSettings, *, verifier: TokenVerifier) -> ServiceParts:
        return ServiceParts(settings=settings, policy=Policy.of(INFRA_POLICY), register=[], verifier=verifier)

    async with running_service(build, settings, keys) as runtime:
        assert runtime.chain_keys is None and not runtime.sealing
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await audit_pb2_grpc.AuditServiceStub(ch).GetChainKeys(
                    audit_pb2.GetChainKeysRequest(), metadata=keys.metadata("admin")
                )
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not settings.chain_key_file.exists()


def test_chain_settings_defaults_and_refusals(tmp_path: Path) -> None:
    s = ServiceSettings.from_env("billing", {"ACCORD_VAR_DIR": str(tmp_path)})
    assert s.chain_key_file == tmp_path / "keys" / "billing_chain_private.pem"
    assert (s.seal_seconds, s.chain_previous_public_key_files) == (60.0, ())
    s = ServiceSettings.from_env(
        "billing",
        {"BILLING_SEAL_SECONDS": "0", "BILLING_CHAIN_PREVIOUS_PUBLIC_KEY_FILES": " /k/a.pem, /k/b.pem ,"},
    )
    assert s.seal_seconds == 0 and s.chain_previous_public_key_files == (Path("/k/a.pem"), Path("/k/b.pem"))
    for bad, why in (("-1", "between 0 and 86400"), ("0.01", "at least 0.05"), ("soon", "must be a number")):
        with pytest.raises(SettingsError, match=f"BILLING_SEAL_SECONDS.*{why}"):
            ServiceSettings.from_env("billing", {"BILLING_SEAL_SECONDS": bad})
    names = ("CHAIN_KEY_FILE", "SEAL_SECONDS", "CHAIN_PREVIOUS_PUBLIC_KEY_FILES")
    assert all(f"AGREEMENTS_{n}" in env_names("agreements") for n in names)
    assert not any(f"GATEWAY_{n}" in env_names("gateway") for n in names)


def test_keys_creates_each_services_chain_key_pair_once_and_refuses_half_a_pair(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    lines = write_keys(keys)
    made = {}
    for service in ("agreements", "metrics", "billing"):
        private, public = chain_key_files(keys, service)
        assert private.stat().st_mode & 0o077 == 0
        assert key_id(load_private_key(private).public_key()) == key_id(load_public_key(public))
        assert any(str(private) in line for line in lines)
        made[service] = private.read_bytes()
    write_keys(keys)  # again: the keys stay (the checkpoints in the logs were signed with them)
    assert all(chain_key_files(keys, s)[0].read_bytes() == pem for s, pem in made.items())
    public = chain_key_files(keys, "metrics")[1]
    public.unlink()
    assert any("metrics_chain_public.pem" in line for line in write_keys(keys))  # derived again
    chain_key_files(keys, "billing")[0].unlink()
    with pytest.raises(FileNotFoundError, match=r"billing_chain_private\.pem is missing.*BILLING_CHAIN_PREVIOUS"):
        write_keys(keys)
