"""Stores written by an earlier release (tests/fixtures/upgrade/, made by
tools/make_upgrade_fixtures.py) opened with this code, on both stores (the SQLite files copied,
the PostgreSQL dumps loaded into fresh databases): every stored event loads and every aggregate
rebuilds (from its snapshot too), each log's hash chain and sealed checkpoint verify with the key it was sealed with,
re-derivation in metrics and in billing finds no difference, and the suite carries on — an
amendment of the old agreement, signals judged and a statement issued — with the logs still
verifying, sealed again under a new key."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord_agreements.domain import ACTIVE
from accord_agreements.samples import sla_terms, with_target
from accord_billing.domain import ISSUED
from accord_kit.application import AccordApplication
from accord_kit.chain import generate_chain_keypair, load_private_key, load_public_key, seal, verify_store
from accord_kit.testing.fixtures import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, postgres_env, sqlite_env
from accord_metrics.audit import MetricsAudit
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, PROVIDER, Suite, at, outage

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
SERVICES = ("agreements", "metrics", "billing")
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())


def load_dump(dbname: str, dump: Path) -> None:
    """Run a `pg_dump` plain-SQL file on an empty database (psql's backslash lines left out)."""
    sql = "\n".join(line for line in dump.read_text().splitlines() if not line.startswith("\\"))
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None, dbname=dbname, autocommit=True
    ) as conn:
        conn.execute(sql.encode())


@pytest.fixture
def old_stores(
    store_kind: str, tmp_path: Path, postgres_db: Callable[[], str]
) -> Iterator[tuple[Suite, dict[str, Any]]]:
    """The release's stores, copied, opened by the current applications on the suite's clock."""
    envs: dict[str, dict[str, str]] = {}
    for name in SERVICES:
        if store_kind == "sqlite":
            copy = tmp_path / f"{name}.sqlite"
            shutil.copyfile(FIXTURES / f"{name}.sqlite", copy)
            envs[name] = sqlite_env(copy)
        else:
            db = postgres_db()
            load_dump(db, FIXTURES / "postgres" / f"{name}.sql")
            envs[name] = postgres_env(db)
    suite = Suite(lambda name: envs[name])
    suite.clock.set(at(f"2026-03-06T12:00{AMS}"))  # where the release's journey stopped
    yield suite, MANIFEST[store_kind]
    suite.close()


def public_key(store_kind: str, name: str) -> Any:
    return load_public_key(FIXTURES / "keys" / store_kind / f"{name}.pub.pem")


def whole_log(app: AccordApplication) -> list[events_pb2.EventEnvelope]:
    out: list[events_pb2.EventEnvelope] = []
    while True:
        envs, head = app.read_events(out[-1].position if out else 0, 5000)
        out.extend(envs)
        if not envs or out[-1].position >= head:
            return out


def snapshots_load(app: AccordApplication, aggregate_ids: list[str], aggregate_topic: str) -> None:
    """Each snapshot names the aggregate's declared name, and the aggregate loaded from it (with
    the events after it) equals the one rebuilt from all its events."""
    assert app.snapshots is not None
    for aggregate_id in map(UUID, aggregate_ids):
        snapshots: list[Any] = list(app.snapshots.get(aggregate_id))
        assert snapshots and all(s.topic == aggregate_topic for s in snapshots)
        replayed: Any = None
        for e in app.events.get(aggregate_id):
            replayed = e.mutate(replayed)
        loaded = app.repository.get(aggregate_id)
        # Compared as read (getattr): an attribute added since the release (e.g. the agreement's
        # suspended_at) comes from its class default on an aggregate restored from an old snapshot.
        names = set(vars(loaded)) | set(vars(replayed))
        assert {n: getattr(loaded, n) for n in names} == {n: getattr(replayed, n) for n in names}


def every_event_loads(app: AccordApplication) -> Counter[str]:
    """Each stored event read back as its class, each aggregate rebuilt; the topics counted."""
    topics: Counter[str] = Counter()
    ids: set[UUID] = set()
    after = 0
    while page := app.select_notifications(after, 500):
        for n in page:
            event = app.mapper.to_domain_event(StoredEvent(n.originator_id, n.originator_version, n.topic, n.state))
            assert n.topic == type(event).TOPIC  # type: ignore[attr-defined]
            topics[n.topic] += 1
            ids.add(n.originator_id)  # type: ignore[arg-type]
        after = page[-1].id
    for aggregate_id in ids:
        aggregate = app.repository.get(aggregate_id)
        assert aggregate.version == len(app.recorder.select_events(aggregate_id))
    return topics


def test_the_release_stores_load_verify_rederive_and_carry_on(
    old_stores: tuple[Suite, dict[str, Any]], store_kind: str, tmp_path: Path
) -> None:
    suite, release = old_stores
    apps: dict[str, AccordApplication] = {n: getattr(suite, n) for n in SERVICES}
    aid = release["agreement_id"]

    # Every event loads, as the release wrote it (same names, same counts).
    for name, app in apps.items():
        stored = release["stores"][name]
        assert app.head_position() == stored["head"], name
        assert dict(every_event_loads(app)) == stored["topics"], name
        assert len(whole_log(app)) == stored["events"], f"{name}: every event has its public message"
    snapshots_load(suite.agreements, release["snapshots"]["agreements"], "accord_agreements.domain:Agreement")
    snapshots_load(suite.metrics, release["snapshots"]["metrics"], "accord_metrics.domain:WindowEvaluation")

    # The chains and the sealed checkpoints verify with the keys the release sealed with.
    for name, app in apps.items():
        report = verify_store(app, [public_key(store_kind, name)])
        assert report.ok, f"{name}: {report.problem}"
        assert release["stores"][name]["sealed"]["position"] > 0

    # Re-derivation finds what the release recorded.
    windows = MetricsAudit(suite.metrics).rederive()
    assert windows.checked >= 4 and windows.mismatches == []
    billed = suite.billing.rederive(whole_log(suite.metrics), whole_log(suite.agreements))
    assert billed.checked >= 4
    assert (billed.mismatches, billed.missing, billed.unexplained) == ([], [], [])

    # The suite carries on: the old agreement amended again, March judged and billed.
    heads = {name: app.head_position() for name, app in apps.items()}
    agreement, amendment = suite.agreements.propose_amendment(
        CUSTOMER, aid, with_target(sla_terms(), "availability", "99.5"), at(f"2026-04-01T00:00{AMS}"), "tighten"
    )
    assert suite.agreements.accept_amendment(PROVIDER, aid, amendment).current_version == 3
    assert agreement.state == ACTIVE
    suite.metrics.record(COLLECTOR, [outage("mar-2", f"2026-03-10T08:00{AMS}", 45)])
    suite.tick(f"2026-04-01T02:00{AMS}")
    statements = suite.billing.statements(P_CUSTOMER, aid)
    assert len(statements) == 3 and statements[2].state == ISSUED
    for name, app in apps.items():
        assert app.head_position() > heads[name], f"{name} appended nothing"
    # The release's assessments stated no totals (a reader keeps what it had); those recorded
    # now state the statement's totals after them, and the statement answers take them as
    # they stand on the release's statements too.
    assessed = []
    for env in whole_log(suite.billing):
        if env.type == "accord.billing.v1.AssessmentRecorded":
            msg = billing_events.AssessmentRecorded()
            env.payload.Unpack(msg)
            assessed.append((env.position <= heads["billing"], msg.HasField("totals")))
    assert (True, False) in assessed and (True, True) not in assessed
    assert (False, True) in assessed and (False, False) not in assessed
    assert [suite.billing.current_totals(s)["net"] for s in statements[:2]] == [s.totals["net"] for s in statements[:2]]

    # Sealed again under a new key (the old one trusted for the old checkpoints): all verify.
    for name, app in apps.items():
        old = public_key(store_kind, name)
        private, public = generate_chain_keypair(tmp_path / "new-keys" / name, name)
        cp = seal(app, load_private_key(private), previous_keys=[old])
        assert cp.position > release["stores"][name]["sealed"]["position"]
        report = verify_store(app, [old, load_public_key(public)])
        assert report.ok, f"{name}: {report.problem}"
        every_event_loads(app)
    snapshots_load(suite.agreements, release["snapshots"]["agreements"], "accord_agreements.domain:Agreement")
    assert MetricsAudit(suite.metrics).rederive().mismatches == []
    again = suite.billing.rederive(whole_log(suite.metrics), whole_log(suite.agreements))
    assert (again.mismatches, again.missing, again.unexplained) == ([], [], [])
