"""Kills during catch-up: generated journeys of the reference model through agreements, metrics
and billing as real processes (`python -m tests.reference.service`, the services' own entry
point with their periodic work every second) on a nats-server of their own and SQLite stores.

The services run on the system clock, so a journey's months (from January 2026) are already
history when it starts: metrics has every window since the agreement's start to judge and
billing every period to open, assess and issue — a catch-up. While they catch up, and while
the journey's signals arrive in three parts (the late ones restating closed windows), metrics
and billing are each killed with SIGKILL at random moments and started again on the same
stores. Once everything has settled, the stores are opened here and every window closed by
the start of the current month and every period ended before it must be the model's, to the
minor unit — what an uninterrupted run gives (`tests/test_reference_model.py`).

Journeys without an end, an amendment or a suspension (each needs an instant in the future
of the service's clock); `ACCORD_REFERENCE_KILL_EXAMPLES` journeys (default 1)."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, note, settings

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.events.v1 import events_pb2, events_pb2_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as pb
from accord_agreements.samples import EMAIL, FINANCE, IT
from accord_billing.application import Billing
from accord_kit.auth import mint_token
from accord_kit.testing.fixtures import sqlite_env
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import Keys, make_keys, service_environ
from accord_metrics.application import Metrics
from tests.reference import model
from tests.test_reference_model import (
    PROPERTY,
    ZONE,
    Journey,
    arrivals_of,
    hold_to_model,
    journeys,
    terms_json,
    terms_model,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("ACCORD_REFERENCE_KILL_EXAMPLES", "1"))
KILLS = 4  # SIGKILLs per journey, metrics and billing in turn
SETTLED_POLLS = 5  # consecutive polls, 2 s apart, with no service's log growing


class Service:
    """One service as a real process; killed with SIGKILL and started again on its store."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name, self.env, self.log = name, env, log
        self.port = int(env[f"{name.upper()}_GRPC_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("ACCORD_", "AGREEMENTS_", "METRICS_", "BILLING_"))
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.reference.service", self.name],
                cwd=REPO,
                env={**base, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-3000:]}"
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not become healthy: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextmanager
def running_suite(folder: Path) -> Iterator[tuple[dict[str, Service], Keys]]:
    """nats-server and the three services as processes, on SQLite stores under `folder`."""
    nats = NatsServer(folder / "nats").start()
    keys = make_keys(folder / "keys")
    token = folder / "keys" / "service.token"
    token.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    ports = {name: free_port() for name in ("agreements", "metrics", "billing")}
    addresses = {f"ACCORD_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()}
    services: dict[str, Service] = {}
    try:
        for name, port in ports.items():
            env = service_environ(
                name, folder / name, nats.url, "sqlite",
                ACCORD_AUTH_PUBLIC_KEY_FILE=str(keys.public_file), ACCORD_SERVICE_TOKEN_FILE=str(token),
                ACCORD_LOG_LEVEL="warning", ACCORD_LOG_FORMAT="json",
                **{f"{name.upper()}_GRPC_PORT": str(port), f"{name.upper()}_SEAL_SECONDS": "0",
                   f"{name.upper()}_SQLITE_PATH": str(folder / f"{name}.sqlite")},
                **addresses,
            )  # fmt: skip
            services[name] = Service(name, env, folder / f"{name}.log")
            services[name].start()
        yield services, keys
    finally:
        for s in reversed(services.values()):
            s.stop()
        nats.stop()


def head(service: Service, keys: Keys) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        stub = events_pb2_grpc.EventLogServiceStub(ch)
        answer = stub.ReadEvents(
            events_pb2.ReadEventsRequest(after_position=0, limit=1), metadata=keys.metadata("admin")
        )
        return int(answer.head_position)


def kill_journeys() -> Any:
    """The reference journeys the system clock allows: no end, amendment or suspension; on 24x7
    (no calendar is defined here)."""
    return journeys().map(
        lambda j: dataclasses.replace(
            j, end=None, amendment=None, suspension=None, inherited=False, parent_amended=False,
            business_hours=False, work=j.work and (j.work[0], j.work[1], False),
        )
    )  # fmt: skip


@settings(PROPERTY, max_examples=EXAMPLES)
@given(kill_journeys())
def test_kill_nine_during_catch_up_changes_no_window_and_no_money(
    tmp_path_factory: pytest.TempPathFactory, j: Journey
) -> None:
    note(f"journey {j!r}")
    folder = tmp_path_factory.mktemp("kills")
    rng = random.Random(j.seed)
    now = datetime.now(UTC)
    horizon = datetime(now.year, now.month, 1, tzinfo=ZONE).astimezone(UTC)  # this month's start
    if now - horizon < timedelta(hours=3):  # too close to a month's turn: judge up to the one before
        horizon = (datetime(now.year, now.month, 1) - timedelta(days=1)).replace(day=1, tzinfo=ZONE).astimezone(UTC)
    with running_suite(folder) as (services, keys):
        aid = agree(services, keys, j)
        arrivals = [sig for _, sig in arrivals_of(j, rng)]
        parts = [arrivals[: len(arrivals) // 3], arrivals[len(arrivals) // 3 : 2 * len(arrivals) // 3],
                 arrivals[2 * len(arrivals) // 3 :]]  # fmt: skip
        victims = [services["metrics"], services["billing"]]
        for k in range(KILLS):
            if k < len(parts):
                record(services["metrics"], keys, parts[k])
            time.sleep(rng.uniform(0.2, 3.0))
            victim = victims[k % 2]
            victim.kill()
            victim.start()
        for part in parts[KILLS:]:
            record(services["metrics"], keys, part)
        settle(services, keys, j, aid, horizon)
    note(f"kills: {', '.join(f'{v.name} {v.kills}' for v in victims)}")
    metrics, billing = Metrics(sqlite_env(folder / "metrics.sqlite")), Billing(sqlite_env(folder / "billing.sqlite"))
    try:
        hold_to_model(j, metrics, billing, aid, horizon)
    finally:
        metrics.close()
        billing.close()


def agree(services: dict[str, Service], keys: Keys, j: Journey) -> str:
    """Departments, the e-mail service and the journey's agreement, accepted; its id."""
    admin, it, fin = keys.metadata("admin"), keys.metadata("department", IT), keys.metadata("department", FINANCE)
    with grpc.insecure_channel(f"127.0.0.1:{services['agreements'].port}") as ch:
        a = apb_grpc.AgreementsServiceStub(ch)
        for dept in (IT, FINANCE):
            a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
        a.RegisterService(
            apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=admin
        )
        terms = json_format.ParseDict(terms_json(j), terms_pb2.AgreementTerms())
        aid = str(a.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=it).agreement.agreement_id)
        a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=it)
        a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=fin)
    return aid


def record(metrics: Service, keys: Keys, signals: list[pb.Signal]) -> None:
    """Record the signals in order, an id sent again (a correction) in a later batch; waits
    for metrics to have learned the service from the agreements stream."""
    batches: list[list[pb.Signal]] = [[]]
    for sig in signals:
        if any(b.signal_id == sig.signal_id for b in batches[-1]):
            batches.append([])
        batches[-1].append(sig)
    with grpc.insecure_channel(f"127.0.0.1:{metrics.port}") as ch:
        stub = mpb_grpc.MetricsServiceStub(ch)
        for batch in batches:
            if not batch:
                continue
            deadline = time.monotonic() + 60
            while True:
                try:
                    stub.RecordSignals(iter([mpb.RecordSignalsRequest(signals=batch)]),
                                       metadata=keys.metadata("service", subject="collector"))  # fmt: skip
                    break
                except grpc.RpcError as e:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"signals not recorded: {e}") from e
                    time.sleep(0.3)


def settle(services: dict[str, Service], keys: Keys, j: Journey, aid: str, horizon: datetime) -> None:
    """Wait until billing has issued every period that ended a day before the horizon and no
    service's log has grown for SETTLED_POLLS polls in a row (every window judged, every
    restatement billed)."""
    terms = terms_model(j)
    due = sum(1 for _, cut in model.fee_periods(terms, horizon) if cut[1] <= horizon - timedelta(days=1))
    done = (bpb.STATEMENT_STATE_ISSUED, bpb.STATEMENT_STATE_FINAL)
    quiet, last = 0, None
    deadline = time.monotonic() + 900
    while quiet < SETTLED_POLLS:
        assert time.monotonic() < deadline, f"not settled: {last}"
        time.sleep(2)
        with grpc.insecure_channel(f"127.0.0.1:{services['billing'].port}") as ch:
            rows = (
                bpb_grpc.BillingServiceStub(ch)
                .ListStatements(
                    bpb.ListStatementsRequest(agreement_id=aid), metadata=keys.metadata("department", FINANCE)
                )
                .statements
            )
        heads = tuple(head(s, keys) for s in services.values())
        issued = sum(1 for r in rows if r.state in done)
        state = (heads, issued)
        quiet = quiet + 1 if state == last and issued >= due else 0
        last = state
