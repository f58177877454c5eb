"""A whole suite in one process for cross-service tests: the agreements, metrics and billing
applications on real stores with one fake clock, fed to each other the way their consumers
would (every new upstream event applied once, in order)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp

from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.application import Agreements
from accord_agreements.domain import Actor
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_billing.application import Billing
from accord_kit.application import AccordApplication
from accord_kit.clock import FakeClock
from accord_kit.consumer import Applier, NotYetError
from accord_kit.context import Principal
from accord_kit.nats_util import connect
from accord_kit.relay import Relay
from accord_kit.testing.nats import free_port
from accord_kit.testing.service import Keys, running_service, service_environ
from accord_metrics.application import BATCH_TOPIC, Metrics

PROVIDER = Actor("alice", "department", IT)
CUSTOMER = Actor("bob", "department", FINANCE)
P_PROVIDER = Principal("alice", "department", IT)
P_CUSTOMER = Principal("bob", "department", FINANCE)
COLLECTOR = Principal("collector", "service")
AMS = "+01:00"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def outage(sid: str, start: str, minutes: float) -> pb.Signal:
    s = at(start)
    return pb.Signal(
        signal_id=sid, service_id=EMAIL, outage=pb.Outage(start=ts(s), end=ts(s + timedelta(minutes=minutes)))
    )


def calls(prefix: str, day: str, fast: int, slow: int) -> list[pb.Signal]:
    out = []
    for i in range(fast + slow):
        entered = at(day) + timedelta(minutes=i)
        wait = 10 if i < fast else 40
        c = pb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=wait)), talk_seconds="60")
        out.append(pb.Signal(signal_id=f"{prefix}{i}", service_id=EMAIL, call=c))
    return out


def feed(source: str, upstream: AccordApplication, downstream: Applier, limit: int = 5000) -> None:
    """What a consumer does: apply the new upstream events once, in order (at most `limit`).
    An event that must wait for another stream's (NotYetError) stops the feed there, as the
    consumer puts it back: the next feed tries it again."""
    envs, _ = upstream.read_events(downstream.tracked_position(source), limit)
    for env in envs:
        try:
            downstream.apply_upstream(source, env)
        except NotYetError:
            return


class Suite:
    def __init__(self, make_env: Callable[[str], dict[str, str]]) -> None:
        self.clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
        # Each store's settings, for tests that open a second instance on the same store.
        self.envs = {name: make_env(name) for name in ("agreements", "metrics", "billing")}
        self.agreements = Agreements(self.envs["agreements"], clock=self.clock)
        self.metrics = Metrics(self.envs["metrics"], clock=self.clock)
        self.billing = Billing(self.envs["billing"], clock=self.clock)
        self.interleave: random.Random | None = None  # see tick

    def tick(self, when: str) -> None:
        """Move the clock and let every service do what its consumers and tasks would. With
        `interleave` set, first a random run of those steps in a random order — each consumer
        a few events at a time, rounds and billing's clock in between, billing's metrics
        consumer ahead of its agreements consumer — as independent processes may interleave
        them; then the usual full pass, so every tick ends with everything applied."""
        self.clock.set(at(when))
        rng = self.interleave
        if rng is not None:

            def views(n: int) -> None:
                feed("agreements", self.agreements, self.metrics, n)

            def billed_agreements(n: int) -> None:
                feed("agreements", self.agreements, self.billing, n)

            def windows(n: int) -> None:
                feed("metrics", self.metrics, self.billing, n)

            def statements(n: int) -> None:
                feed("billing", self.billing, self.agreements, n)

            def round_(_: int) -> None:
                self.metrics.evaluate()

            def due(_: int) -> None:
                self.billing.process_due()

            if rng.random() < 0.5:  # billing's agreements consumer behind everything else
                for step in (views, round_, windows, due):
                    step(5000)
            steps = [views, billed_agreements, windows, statements, round_, due]
            for _ in range(rng.randint(2, 10)):
                rng.choice(steps)(rng.choice([1, 2, 5, 5000]))
        for _ in range(2):
            feed("agreements", self.agreements, self.metrics)
            feed("agreements", self.agreements, self.billing)
            self.metrics.evaluate()
            feed("metrics", self.metrics, self.billing)
            self.billing.process_due()
            feed("billing", self.billing, self.agreements)

    def close(self) -> None:
        for app in (self.agreements, self.metrics, self.billing):
            app.close()


@contextlib.asynccontextmanager
async def gateway_over(
    suite: Suite, nats_url: str, tmp_path: Path, keys: Keys, **env: str
) -> AsyncIterator[tuple[Any, int, list[Relay]]]:
    """The gateway as it runs (gRPC and HTTP on free ports), fed by relays publishing the
    suite's three stores to their streams; `env`: more of its settings. Yields (runtime,
    HTTP port, relays)."""
    from accord_gateway.bootstrap import build
    from accord_gateway.settings import load

    nc = await connect(nats_url, name="relays")
    relays = [
        Relay(app, nc, stream=app.service.upper(), poll_seconds=0.05)
        for app in (suite.agreements, suite.metrics, suite.billing)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    http_port = free_port()
    settings = load(service_environ("gateway", tmp_path, nats_url, "sqlite", GATEWAY_HTTP_PORT=str(http_port), **env))
    try:
        async with running_service(build, settings, keys) as gateway:
            yield gateway, http_port, relays
    finally:
        for r in relays:
            r.stop()
        await asyncio.gather(*tasks)
        await nc.close()


def spy_lookups(monkeypatch: Any) -> list[str]:
    """The signal ids the metrics signal index reads from its store by id (`SignalStore.lookup`,
    which still runs): a list filled as it is called."""
    from accord_metrics.signal_store import SignalStore

    asked: list[str] = []
    lookup = SignalStore.lookup

    def spied(self: SignalStore, service_id: str, signal_ids: Any) -> Any:
        asked.extend(signal_ids)
        return lookup(self, service_id, signal_ids)

    monkeypatch.setattr(SignalStore, "lookup", spied)
    return asked


def spy_burn_rates(monkeypatch: Any, objective_id: str = "availability") -> list[dict[timedelta, Any]]:
    """The burn rates each round judges `objective_id` by, as judging hands them to its alerts
    (`judging._burn_alerts`, which still runs): a list filled as rounds go."""
    from accord_metrics import judging

    judged: list[dict[timedelta, Any]] = []
    alerts = judging._burn_alerts

    def spy(agg: Any, rates: dict[timedelta, Any], window: Any) -> None:
        if agg.objective_id == objective_id:
            judged.append(rates)
        alerts(agg, rates, window)

    monkeypatch.setattr(judging, "_burn_alerts", spy)
    return judged


def an_active_agreement(suite: Suite, services: tuple[str, ...] = (EMAIL,)) -> str:
    """Departments, the e-mail service and the sample SLA, accepted; returns its id."""
    return an_agreement_with(suite, None, f"2026-01-10T10:00{AMS}", services)


def active_agreements_alike(suite: Suite, n: int) -> list[str]:
    """`an_active_agreement` and `n - 1` more like it (the sample SLA on the e-mail service, each
    titled apart), accepted; their ids."""
    from accord_agreements.samples import sla_terms

    ids = [an_active_agreement(suite)]
    for i in range(1, n):
        aid = str(suite.agreements.draft(PROVIDER, sla_terms(title=f"E-mail #{i}")).id)
        suite.agreements.propose(PROVIDER, aid)
        suite.agreements.accept(CUSTOMER, aid)
        ids.append(aid)
    return ids


def monthly_objective(oid: str, metric: str, parameters: dict[str, str]) -> dict[str, Any]:
    """An objective of `metric` judged by month, at least 90, NO_DATA not counted."""
    return {
        "objective_id": oid, "name": oid, "metric": metric, "parameters": parameters,
        "comparator": "COMPARATOR_AT_LEAST", "target": "90", "window": {"kind": "WINDOW_KIND_MONTH"},
        "calendar_id": "24x7", "no_data": "NO_DATA_POLICY_NOT_COUNTED",
    }  # fmt: skip


def open_windows_against_every_stored_signal(
    m: Metrics, aid: str, objective_ids: Iterable[str], starts: Iterable[str]
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Each of these objectives' windows (by start) recomputed from every stored signal
    (`recompute`): a closed one must match whole (asserted here); an open one's value and
    status must too, and it is yielded — (objective, start, recorded, recomputed) — for the
    caller to compare what its formula's recorded evaluation holds of it (that evaluation is as
    of the last round that changed its outcome, which may be earlier than now)."""
    for start in starts:
        for oid in objective_ids:
            check = m.recompute(aid, oid, start)
            if check["recorded"]["closed"]:
                assert check["matches"], (oid, start, check["differences"])
                continue
            recorded, recomputed = check["recorded"], check["recomputed"]
            for key in ("value", "status"):
                assert recorded[key] == recomputed[key], (oid, start, key)
            yield oid, start, recorded, recomputed


def an_agreement_with(
    suite: Suite, objectives: list[dict[str, Any]] | None, tick: str = f"2026-01-10T09:30{AMS}",
    services: tuple[str, ...] = (EMAIL,),
) -> str:  # fmt: skip
    """Departments, the e-mail service and the sample SLA (with these objectives, unless None),
    accepted; the clock ticked to `tick`; returns its id. With `services`, measured on those
    (each registered, IT's)."""
    from accord_agreements.samples import sla_terms

    ag = suite.agreements
    for dept in (IT, FINANCE, "marketing"):
        ag.register_department(dept, dept)
    for service in services:
        ag.register_service(service, "E-mail" if service == EMAIL else service, IT)
    terms = sla_terms() if objectives is None else sla_terms(objectives=objectives)
    terms["service"] = {**terms["service"], "service_ids": list(services)}
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    suite.tick(tick)
    return aid


def alter_stored_signal(env: dict[str, str], table: str, signal_id: str, change: Callable[[pb.Signal], None]) -> None:
    """Find the stored SignalBatch event holding `signal_id` in the store `env` names, decode
    its state as the store holds it (JSON; the batch is the public SignalBatch, base64),
    apply `change` to that signal, and write the state back with a plain UPDATE."""
    if "SQLITE_DBNAME" in env:
        conn: Any = sqlite3.connect(env["SQLITE_DBNAME"])
        mark = "?"
    else:
        conn = psycopg.connect(
            host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
            password=env.get("POSTGRES_PASSWORD") or None, dbname=env["POSTGRES_DBNAME"], autocommit=True,
        )  # fmt: skip
        mark = "%s"
    try:
        rows = conn.execute(
            f"SELECT originator_id, originator_version, state FROM {table} WHERE topic = {mark}", (BATCH_TOPIC,)
        ).fetchall()
        for originator_id, version, state in rows:
            record = json.loads(bytes(state))
            batch = pb.SignalBatch.FromString(base64.b64decode(record["batch"]))
            hits = [s for s in batch.signals if s.signal_id == signal_id]
            if not hits:
                continue
            for s in hits:
                change(s)
            record["batch"] = base64.b64encode(batch.SerializeToString()).decode()
            conn.execute(
                f"UPDATE {table} SET state = {mark} WHERE originator_id = {mark} AND originator_version = {mark}",
                (json.dumps(record, separators=(",", ":")).encode(), originator_id, version),
            )
            if isinstance(conn, sqlite3.Connection):
                conn.commit()
            return
        raise AssertionError(f"no stored signal batch holds signal {signal_id!r}")
    finally:
        conn.close()


def slo_journey(suite: Suite) -> tuple[str, str]:
    """The sample SLA (fee 12,000.00 EUR a month, availability 99.9 % monthly, < 99.9 → 10 %)
    and a second agreement to search among. January: 30 minutes down (met); February: an hour
    down (breached, credited 1,200.00, disputed); March: 20 minutes down so far, and a late
    report of 50 minutes in January restates it — an adjustment of 1,198.39 on March's open
    statement (10 % of the 11,983.87 January charges: the agreement starts an hour into it).
    Returns (agreement id, February's statement id)."""
    from accord_agreements.samples import sla_terms

    m, b = suite.metrics, suite.billing
    aid = an_active_agreement(suite)
    other = str(suite.agreements.draft(PROVIDER, sla_terms(title="Calendar service for Finance")).id)
    suite.agreements.propose(PROVIDER, other)
    suite.agreements.accept(CUSTOMER, other)
    m.record(COLLECTOR, [outage("jan", f"2026-01-12T10:00{AMS}", 30)])
    suite.tick(f"2026-01-12T10:30{AMS}")  # while it is down: burn-rate alerts fire
    suite.tick(f"2026-02-01T02:00{AMS}")  # January closes met; its statement is issued
    m.record(COLLECTOR, [outage("feb", f"2026-02-03T08:00{AMS}", 60)])
    suite.tick(f"2026-02-03T09:00{AMS}")
    suite.tick(f"2026-03-01T02:00{AMS}")  # February closes breached: 1,200.00
    m.record(COLLECTOR, [outage("mar", f"2026-03-04T08:00{AMS}", 20)])
    suite.tick(f"2026-03-04T08:20{AMS}")
    m.record(COLLECTOR, [outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])
    suite.tick(f"2026-03-10T12:00{AMS}")
    feb = b.statements(P_CUSTOMER, aid)[1]
    return aid, str(feb.id)
