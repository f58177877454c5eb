"""The production topology (`make run-cluster`: three NATS nodes at R=3, PostgreSQL, an active
and a standby instance of each event-sourced service, two gateways) under faults, during a
journey of agreements commands and signal batches sent over gRPC to the services' failover
addresses: a NATS node killed (-9) and started again, the active instance of each service
killed (-9) so that its standby takes over, and a NATS node frozen (SIGSTOP) for longer than
the cluster's election timeout, then thawed.

Afterwards nothing is lost or duplicated (every agreement once, every signal once), every
service's log equals its stream, the money equals the same journey's on the fault-free
in-process suite (each agreement's statements, every department's balance), and the auditor's
`accord audit verify` and `accord audit rederive` find nothing. The failover time of each
service (kill → the standby SERVING) is printed, not asserted. An active agreements instance is
also frozen (SIGSTOP) rather than killed: its standby takes over once PostgreSQL ends the silent
lease session, and the thawed zombie exits instead of writing on."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as agrpc
from accord.agreements.v1 import terms_pb2 as tpb
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bgrpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import events_pb2 as mev
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mgrpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_kit.eventlog import failover_options
from accord_kit.nats_util import connect
from accord_kit.testing.cluster import RunningCluster
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.streams import answered, assert_exactly_once_in_order, read_stream
from tests.suite import AMS, COLLECTOR, CUSTOMER, P_CUSTOMER, PROVIDER, Suite, calls, outage

# Part of `make test` (slow); `make test-cluster` runs it alone.
pytestmark = pytest.mark.slow
T = TypeVar("T")

# Each agreement is judged on every signal of the service (its evaluations cost agreements ×
# signals): few agreements and many signals, and the bulk of the commands are registrations.
AGREEMENTS = int(os.environ.get("ACCORD_CLUSTER_FAULT_AGREEMENTS", "20"))
SIGNAL_BATCHES = int(os.environ.get("ACCORD_CLUSTER_FAULT_BATCHES", "20"))  # 100 signals each
MIN_REGISTRATIONS = int(os.environ.get("ACCORD_CLUSTER_FAULT_REGISTRATIONS", "600"))
FREEZE_SECONDS = 8.0  # longer than NATS's raft election timeout (≈ 4–6 s)
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION,  # e.g. metrics does not know the service yet
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


def journey_terms(i: int) -> dict[str, Any]:
    return sla_terms(title=f"fault journey {i}", term={"effective_from": "2026-10-01T00:00:00Z", "notice_days": 30})


def signal_batches() -> list[list[spb.Signal]]:
    """October an hour and a half down, November four hours; call batches on as many days."""
    batches: list[list[spb.Signal]] = [
        [outage("oct-outage", f"2026-10-14T10:00{AMS}", 90), outage("nov-outage", f"2026-11-05T08:00{AMS}", 240)]
    ]
    for k in range(SIGNAL_BATCHES):
        month, day = (10, 1 + k) if k < 28 else (11, k - 27)
        slow = 10 + (k % 3) * 15
        batches.append(calls(f"c{k}-", f"2026-{month}-{day:02d}T09:00{AMS}", 100 - slow, slow))
    return batches


async def retrying(call: Callable[[], Awaitable[T]], what: str, timeout: float = 120.0) -> T:
    """A command sent until it is answered: a retry carries the same request id (or signal ids),
    so a command that was applied before its answer was lost is applied once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS and what.startswith("register"):
                return None  # type: ignore[return-value]  # registered by the attempt whose answer was lost
            if e.code() not in RETRYABLE or time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e.code().name}: {e.details()}") from e
        await asyncio.sleep(0.2)


class Journey:
    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        opts = failover_options()
        self.channels = {
            s: grpc.aio.insecure_channel(cluster.addresses[s], options=opts)
            for s in ("agreements", "metrics", "billing")
        }
        self.agreements = agrpc.AgreementsServiceStub(self.channels["agreements"])
        self.metrics = mgrpc.MetricsServiceStub(self.channels["metrics"])
        self.billing = bgrpc.BillingServiceStub(self.channels["billing"])
        self.md = {
            who: (("authorization", f"Bearer {cluster.token(who)}"),) for who in ("admin", IT, FINANCE, "service")
        }
        self.ids: dict[int, str] = {}
        self.registered: list[str] = []
        self.commands = 0
        self.signals = 0

    async def setup(self) -> None:
        for dept in (IT, FINANCE):
            req = apb.RegisterDepartmentRequest(department_id=dept, name=dept)
            await retrying(
                lambda r=req: self.agreements.RegisterDepartment(r, metadata=self.md["admin"], timeout=10), "register"
            )
        req2 = apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT)
        await retrying(lambda: self.agreements.RegisterService(req2, metadata=self.md["admin"], timeout=10), "register")
        self.commands += 3

    async def one_agreement(self, i: int) -> None:
        terms = json_format.ParseDict(journey_terms(i), tpb.AgreementTerms())
        draft = apb.DraftAgreementRequest(terms=terms, request_id=f"draft-{i}")
        resp = await retrying(lambda: self.agreements.DraftAgreement(draft, metadata=self.md[IT], timeout=10), "draft")
        aid = resp.agreement.agreement_id
        propose = apb.ProposeAgreementRequest(agreement_id=aid, request_id=f"propose-{i}")
        await retrying(lambda: self.agreements.ProposeAgreement(propose, metadata=self.md[IT], timeout=10), "propose")
        accept = apb.AcceptAgreementRequest(agreement_id=aid, request_id=f"accept-{i}")
        await retrying(lambda: self.agreements.AcceptAgreement(accept, metadata=self.md[FINANCE], timeout=10), "accept")
        self.ids[i] = aid
        self.commands += 3

    async def agreements_work(self, workers: int = 2) -> None:
        queue = list(range(AGREEMENTS))

        async def worker() -> None:
            while queue:
                await self.one_agreement(queue.pop(0))
                await asyncio.sleep(0.3)  # spread over the faults

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def registrations_work(self, faults: threading.Thread, workers: int = 4) -> None:
        """Departments registered until the faults are over (at least MIN_REGISTRATIONS)."""
        counter = iter(range(10**6))

        async def worker() -> None:
            while faults.is_alive() or len(self.registered) < MIN_REGISTRATIONS:
                dept = f"dept-{next(counter):05d}"
                req = apb.RegisterDepartmentRequest(department_id=dept, name=dept)
                await retrying(
                    lambda r=req: self.agreements.RegisterDepartment(r, metadata=self.md["admin"], timeout=10),
                    "register",
                )
                self.registered.append(dept)
                self.commands += 1

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def signals_work(self, batches: list[list[spb.Signal]], pause: float = 0.5) -> None:
        for batch in batches:
            await asyncio.sleep(pause)  # spread over the faults
            req = mpb.RecordSignalBatchRequest(signals=batch)
            await retrying(
                lambda r=req: self.metrics.RecordSignalBatch(r, metadata=self.md["service"], timeout=10), "signals"
            )
            self.signals += len(batch)

    async def statements(self, aid: str) -> list[tuple[str, str, Decimal]]:
        resp = await self.billing.ListStatements(
            bpb.ListStatementsRequest(agreement_id=aid), metadata=self.md[FINANCE], timeout=10
        )
        return [
            (
                s.period_start,
                bpb.StatementState.Name(s.state).removeprefix("STATEMENT_STATE_"),
                Decimal(s.totals.net or "0"),
            )
            for s in resp.statements
        ]

    async def balances(self, dept: str) -> dict[str, Decimal]:
        resp = await self.billing.GetBalances(
            bpb.GetBalancesRequest(department_id=dept), metadata=self.md[dept], timeout=10
        )
        return {b.currency: Decimal(b.amount) for b in resp.balances}

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()


def fault_free(
    tmp_path: Path, batches: list[list[spb.Signal]]
) -> tuple[dict[int, list[Any]], dict[str, dict[str, Decimal]]]:
    """The same journey on the in-process suite (no NATS, no faults), judged at the same instant."""
    suite = Suite(lambda name: sqlite_env(tmp_path / f"expected-{name}.sqlite"))
    try:
        suite.clock.set(datetime.now(UTC))
        ag, m, b = suite.agreements, suite.metrics, suite.billing
        for dept in (IT, FINANCE):
            ag.register_department(dept, dept)
        ag.register_service(EMAIL, "E-mail", IT)
        suite.tick(datetime.now(UTC).isoformat())  # metrics learns the service
        for batch in batches:
            m.record(COLLECTOR, batch)
        ids = {}
        for i in range(AGREEMENTS):
            aid = str(ag.draft(PROVIDER, journey_terms(i)).id)
            ag.propose(PROVIDER, aid)
            ag.accept(CUSTOMER, aid)
            ids[i] = aid
        suite.tick(datetime.now(UTC).isoformat())
        statements = {
            i: [
                (s.period_start, s.state, Decimal(s.totals.get("net", "0") if s.totals else "0"))
                for s in b.statements(P_CUSTOMER, aid)
            ]
            for i, aid in ids.items()
        }
        balances: dict[str, dict[str, Decimal]] = {}
        for dept in (IT, FINANCE):
            balances[dept] = {cur: v for (acct, cur), v in b.balances(None, dept).items() if acct == dept}
        return statements, balances
    finally:
        suite.close()


class Faults(threading.Thread):
    """Kill -9 a NATS node (the runner starts it again), then the active instance of each
    service; freeze another NATS node past the election timeout. Records each failover."""

    def __init__(self, cluster: RunningCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.failover: dict[str, float] = {}
        self.log: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    def _run(self) -> None:
        c = self.cluster
        time.sleep(1)
        nats_pid = c.kill("nats-2")
        self._note(f"kill -9 nats-2 (pid {nats_pid})")
        for service in ("agreements", "metrics", "billing"):
            time.sleep(1)
            active = c.active(service)
            standby = f"{service}-{'2' if active.endswith('1') else '1'}"
            killed = time.monotonic()
            c.kill(active)
            self._note(f"kill -9 {active}")
            took_over = c.active(service, timeout=90)
            self.failover[service] = time.monotonic() - killed
            assert took_over == standby, f"{service}: {took_over} serving instead of the standby {standby}"
            self._note(f"{standby} took over after {self.failover[service]:.2f}s")
        c.restarted("nats-2", nats_pid)
        self._note("nats-2 started again")

        # A zombie: the active agreements instance frozen (SIGSTOP), not killed. Its lease session
        # goes silent and PostgreSQL ends it after ACCORD_LEASE_IDLE_SECONDS (10 s); the standby (the instance killed
        # above, started again) takes over. Thawed, the zombie finds its lease gone and exits;
        # meanwhile its relay's publishes are fenced off by Nats-Expected-Last-Msg-Id.
        zombie = c.active("agreements")
        other = f"agreements-{'2' if zombie.endswith('1') else '1'}"
        c.wait_standby(other)
        frozen = time.monotonic()
        zombie_pid = c.kill(zombie, signal.SIGSTOP)
        self._note(f"SIGSTOP {zombie} (zombie)")
        took_over = c.active("agreements", timeout=90, only=other)
        self.failover["agreements (frozen)"] = time.monotonic() - frozen
        self._note(f"{took_over} took over from the frozen {zombie} after {self.failover['agreements (frozen)']:.2f}s")
        c.kill(zombie, signal.SIGCONT)
        self._note(f"SIGCONT {zombie}")
        c.restarted(zombie, zombie_pid)  # it exited (lease lost) and was started again as the standby
        self._note(f"{zombie} exited on thawing and was started again")
        time.sleep(3)
        c.kill("nats-3", signal.SIGSTOP)
        self._note("SIGSTOP nats-3")
        time.sleep(FREEZE_SECONDS)
        c.kill("nats-3", signal.SIGCONT)
        self._note("SIGCONT nats-3")


async def read_log(address: str, token: str) -> list[events_pb2.EventEnvelope]:
    out: list[events_pb2.EventEnvelope] = []
    async with grpc.aio.insecure_channel(address, options=failover_options()) as ch:
        stub = events_pb2_grpc.EventLogServiceStub(ch)
        while True:
            resp = await stub.ReadEvents(
                events_pb2.ReadEventsRequest(after_position=out[-1].position if out else 0, limit=1000),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
            out.extend(resp.events)
            if not resp.events or out[-1].position >= resp.head_position:
                return out


async def assert_log_equals_stream(cluster: RunningCluster, service: str) -> None:
    """The service's log (read over gRPC) and its stream hold the same events exactly once, in order."""
    nc = await connect(cluster.nats_url, name="fault-test", user="admin", password=cluster.nats_password("admin"))
    try:
        store = await read_log(cluster.addresses[service], cluster.token("service"))
        deadline = time.monotonic() + 60
        while True:
            # The faults end by thawing a stopped NATS node: until the cluster has its stream
            # leaders again, its API may not answer within a request's 5 s (asked again).
            info = await answered(functools.partial(nc.jetstream().stream_info, service.upper()), deadline)
            if info.state.last_seq >= len(store) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert info.config.num_replicas == 3
        messages = await read_stream(nc, service.upper())
        assert_exactly_once_in_order(messages, [e.position for e in store])
    finally:
        await nc.close()


def accord_cli(cluster: RunningCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ACCORD_TOKEN=cluster.token("auditor"))
    for s in ("agreements", "metrics", "billing"):
        env[f"ACCORD_{s.upper()}_ADDR"] = f"127.0.0.1:{cluster.ports[cluster.active(s)]}"
    env["ACCORD_GATEWAY_ADDR"] = f"127.0.0.1:{cluster.ports['gateway-1']}"
    return subprocess.run(
        [sys.executable, "-m", "accord_cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_cluster_survives_nats_node_and_active_instance_faults(tmp_path: Path) -> None:
    batches = signal_batches()
    cluster = RunningCluster(tmp_path / "cluster", restart_seconds=6.0)
    started = time.monotonic()
    try:
        asyncio.run(_journey_under_faults(cluster, batches, tmp_path, started))
    finally:
        out = cluster.stop()
    assert "stopped" in out


def say(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


async def _journey_under_faults(
    cluster: RunningCluster, batches: list[list[spb.Signal]], tmp_path: Path, started: float
) -> None:
    journey = Journey(cluster)
    faults = Faults(cluster)
    try:
        await journey.setup()
        # The outages decide the money (the service level, which the call batches feed, carries no
        # credits): recorded before any agreement exists, as in the fault-free run. An agreement
        # accepted first has its October and November windows closed on the next round (they ended
        # before today) and, on billing's next clock, those statements issued without the outages;
        # the outages then restate the windows and credit the difference on a later statement
        # (docs/domain.md, "Statements and restatements") — the same money on other statements
        # than the fault-free run's, which is what two full runs of the suite once saw.
        outages, rest = batches[:1], batches[1:]
        await journey.signals_work(outages, pause=0)
        faults.start()
        say("journey: signals, agreements and registrations, while the faults happen")
        await asyncio.gather(journey.signals_work(rest), journey.agreements_work(), journey.registrations_work(faults))
        say(f"journey done: {journey.commands} commands, {journey.signals} signals")
        await asyncio.to_thread(faults.join, 180)
        say("faults done: " + "; ".join(faults.log))
        assert not faults.is_alive(), "the faults did not finish"
        if faults.error is not None:
            raise faults.error
        journey_seconds = time.monotonic() - started

        expected_statements, expected_balances = await asyncio.to_thread(fault_free, tmp_path, batches)
        say("fault-free run done")
        assert any(net > 0 for rows in expected_statements.values() for _, _, net in rows), "the journey moves no money"

        # The agreements log is complete on its stream before the money is compared: billing
        # and metrics learn agreements from it, so a gap there would show as missing money.
        await assert_log_equals_stream(cluster, "agreements")
        # Converged: every agreement's issued and final statements as in the fault-free run
        # (billing issues on its 30-second clock, after metrics closed the windows from the
        # agreements it consumed), and the balances. A statement still OPEN is the current
        # period's, opened whenever metrics first publishes an evaluation of it — on the system
        # clock that depends on when rounds ran (a restarted metrics judges every open window
        # again), so it is not compared; the money of every ended period is.
        expected_statements = {i: [r for r in rows if r[1] != "OPEN"] for i, rows in expected_statements.items()}
        deadline = time.monotonic() + 150
        while True:
            got = {i: [r for r in await journey.statements(aid) if r[1] != "OPEN"] for i, aid in journey.ids.items()}
            if got == expected_statements or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        differ = [i for i in expected_statements if got.get(i) != expected_statements[i]]
        if differ:
            # What billing holds of the first (OPEN ones too), and what every service warned of:
            # enough to tell a consumer left behind from a clock that did not issue.
            held = await journey.statements(journey.ids[differ[0]])
            raise AssertionError(
                f"{len(differ)} agreements' statements differ (#{', #'.join(map(str, differ))}), e.g. "
                f"#{differ[0]}: {got.get(differ[0])} != {expected_statements[differ[0]]}; "
                f"billing holds {held}\n{cluster.warnings()}"
            )
        for dept in (IT, FINANCE):
            assert await journey.balances(dept) == expected_balances[dept]

        say("statements converged")
        # Nothing lost, nothing duplicated: each agreement once, each signal once.
        service_token = cluster.token("service")
        agreement_log = await read_log(cluster.addresses["agreements"], service_token)
        drafted = [e for e in agreement_log if e.type.endswith("AgreementDrafted")]
        assert len(drafted) == AGREEMENTS == len(set(journey.ids.values()))
        assert {e.aggregate_id for e in drafted} == set(journey.ids.values())
        registered = [e for e in agreement_log if e.type.endswith("DepartmentRegistered")]
        assert len(registered) == len(journey.registered) + 2, "department registrations lost or stored twice"
        metrics_log = await read_log(cluster.addresses["metrics"], service_token)
        recorded: list[str] = []
        for e in metrics_log:
            if e.payload.Is(mev.SignalsRecorded.DESCRIPTOR):
                batch = mev.SignalsRecorded()
                e.payload.Unpack(batch)
                recorded += [s.signal_id for s in batch.batch.signals]
        sent = [s.signal_id for b in batches for s in b]
        assert sorted(recorded) == sorted(sent), "signals lost or stored twice"

        # Every service's log equals its stream (exactly once, in order, none missing).
        for service in ("agreements", "metrics", "billing"):
            await assert_log_equals_stream(cluster, service)
    finally:
        await journey.close()

    verify = await asyncio.to_thread(accord_cli, cluster, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    rederive = await asyncio.to_thread(accord_cli, cluster, "audit", "rederive")
    assert rederive.returncode == 0, rederive.stdout + rederive.stderr

    print(
        f"\ncluster fault run: {journey.commands} commands, {journey.signals} signals in {journey_seconds:.1f}s; "
        + ", ".join(f"{s} failover {t:.2f}s" for s, t in faults.failover.items())
    )
    print("\n".join(faults.log))
