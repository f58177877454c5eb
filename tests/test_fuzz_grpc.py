"""Every RPC of every service, fuzzed over real gRPC channels against the running suite
(agreements, metrics, billing, the gateway and the notifier on real SQLite stores and a real
nats-server):
request messages built from the proto descriptors with edge values (instants outside
0001–9999, nanos out of range, the largest integers, unknown enum numbers, NaN and garbage
in decimals, unknown time zones) and bytes that do not decode, sent with admin, service,
auditor and department tokens so authorisation does not hide a fault. No call may answer
INTERNAL or UNKNOWN, and a rejected call stores nothing (the service's log head is
unchanged). Bounded and reproducible: a fixed number of derandomized examples per method."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_agreements.settings import load as load_agreements
from accord_billing.bootstrap import build as build_billing
from accord_billing.settings import load as load_billing
from accord_gateway.bootstrap import build as build_gateway
from accord_gateway.settings import load as load_gateway
from accord_kit.auth import mint_token
from accord_kit.runtime import ServiceRuntime
from accord_kit.testing.fuzz import Generator, call, methods_of
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics
from accord_notifier.bootstrap import build as build_notifier
from accord_notifier.settings import load as load_notifier

pytestmark = pytest.mark.slow
# A deeper run: ACCORD_FUZZ_EXAMPLES=500 (the suite runs the bounded default).
EXAMPLES_PER_METHOD = int(os.environ.get("ACCORD_FUZZ_EXAMPLES", "40"))
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
PUBLIC_SERVICES = ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]  # no token needed


def stamp(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


@dataclass
class Outcome:
    service: str
    method: str
    code: grpc.StatusCode
    details: str
    stored_anyway: bool


@dataclass
class Running:
    runtimes: dict[str, ServiceRuntime]
    keys: Keys
    agreement_id: str


@contextlib.asynccontextmanager
async def running_suite(url: str, tmp_path: Path) -> AsyncIterator[Running]:
    """Agreements, metrics, billing, the gateway and the notifier as they run, with an accepted
    SLA seeded."""
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    # No periodic seal while the calls run: a checkpoint stored beside a refused call would look
    # like the refusal storing something (each service still seals at stop).
    common = {"ACCORD_SERVICE_TOKEN_FILE": str(token_file)} | {
        f"{s}_SEAL_SECONDS": "3600" for s in ("AGREEMENTS", "METRICS", "BILLING", "NOTIFIER")
    }
    a_env = service_environ("agreements", tmp_path / "a", url, "sqlite", **common)
    async with running_service(build_agreements, load_agreements(a_env), keys) as agreements:
        addrs = {"ACCORD_AGREEMENTS_ADDR": f"127.0.0.1:{agreements.port}", **common}
        m_env = service_environ("metrics", tmp_path / "m", url, "sqlite", **addrs)
        async with running_service(build_metrics, load_metrics(m_env), keys, evaluate_every=3600) as metrics:
            addrs["ACCORD_METRICS_ADDR"] = f"127.0.0.1:{metrics.port}"
            b_env = service_environ("billing", tmp_path / "b", url, "sqlite", **addrs)
            g_env = service_environ("gateway", tmp_path / "g", url, "sqlite", GATEWAY_HTTP_PORT=str(free_port()))
            n_env = service_environ("notifier", tmp_path / "n", url, "sqlite", **addrs)
            async with (
                running_service(build_billing, load_billing(b_env), keys, due_every=3600) as billing,
                running_service(build_gateway, load_gateway(g_env), keys) as gateway,
                running_service(build_notifier, load_notifier(n_env), keys) as notifier,
            ):
                aid = await seed(agreements, keys)
                head = agreements.parts.app.head_position()  # type: ignore[union-attr]
                for downstream in (metrics, billing):
                    app: Any = downstream.parts.app
                    await eventually(lambda app=app: app.tracked_position("agreements") >= head, what="consumed")
                runtimes = {"gateway": gateway, "notifier": notifier, "billing": billing, "metrics": metrics}
                yield Running({**runtimes, "agreements": agreements}, keys, aid)


@pytest.fixture
async def suite(own_nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_suite(own_nats_server.url, tmp_path) as running:
        yield running


async def seed(agreements: ServiceRuntime, keys: Keys) -> str:
    """Departments, the e-mail service and an accepted SLA, so calls reach past the lookups."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as ch:
        a = apb_grpc.AgreementsServiceStub(ch)
        admin = keys.metadata("admin")
        for dept in (IT, FINANCE):
            await a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
        await a.RegisterService(
            apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=admin
        )
        terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
        it, fin = keys.metadata("department", IT), keys.metadata("department", FINANCE)
        drafted = await a.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=it)
        aid = drafted.agreement.agreement_id
        await a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=it)
        await a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=fin)
        return aid


def generator(aid: str) -> Generator:
    terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    outage = spb.Signal(
        signal_id="fuzz-1", service_id=EMAIL, outage=spb.Outage(start=stamp(start), end=stamp(start + timedelta(1)))
    )
    return Generator(
        strings=[aid, IT, FINANCE, EMAIL, "availability", "service-level", "24x7", "default", "metrics", "agreements"],
        bases={"accord.agreements.v1.AgreementTerms": [terms], "accord.metrics.v1.Signal": [outage]},
    )


def fuzz_service(name: str, runtime: ServiceRuntime, keys: Keys, gen: Generator) -> list[Outcome]:
    """Runs in a worker thread (the services' event loop keeps serving): every method of the
    service, EXAMPLES_PER_METHOD requests each, over a blocking channel."""
    assert runtime.server is not None
    app = runtime.parts.app
    tokens = [
        keys.metadata("admin"), keys.metadata("service"), keys.metadata("auditor"),
        keys.metadata("department", IT), keys.metadata("department", FINANCE),
    ]  # fmt: skip
    outcomes: list[Outcome] = []
    with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        for path, method in methods_of([*runtime.server.service_names, *PUBLIC_SERVICES]):
            fuzz_method(channel, path, method, gen, tokens, lambda: app.head_position() if app else 0)(name, outcomes)
    return outcomes


def fuzz_method(
    channel: grpc.Channel, path: str, method: Any, gen: Generator, tokens: list[Any], head: Any
) -> Callable[[str, list[Outcome]], None]:
    max_responses = 1 if method.name.startswith("Watch") else 50

    @settings(
        max_examples=EXAMPLES_PER_METHOD, derandomize=True, database=None, deadline=None,
        phases=[Phase.generate], suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(payload=gen.request(method), md=st.sampled_from(tokens))
    def run(name: str, outcomes: list[Outcome], payload: bytes, md: tuple[tuple[str, str], ...]) -> None:
        before = head()
        code, details = call(channel, path, method, payload, md, max_responses=max_responses)
        stored = code != grpc.StatusCode.OK and head() != before
        outcomes.append(Outcome(name, method.name, code, details, stored))

    return run


async def test_no_input_answers_internal_or_unknown_and_no_rejected_call_stores(suite: Running) -> None:
    gen = generator(suite.agreement_id)
    outcomes: list[Outcome] = []
    for name, runtime in suite.runtimes.items():  # agreements last: the others consume its events
        outcomes += await asyncio.to_thread(fuzz_service, name, runtime, suite.keys, gen)
    codes = Counter(o.code.name for o in outcomes)
    bad = [o for o in outcomes if o.code in BAD or o.stored_anyway]
    by_method = Counter((o.service, o.method, o.code.name, o.stored_anyway) for o in bad)
    report = "\n".join(f"  {s}.{m}: {c}{' (stored)' if st_ else ''} x{n}" for (s, m, c, st_), n in by_method.items())
    first = {(o.method, o.code, o.details[:40]): o for o in reversed(bad)}
    examples = "\n".join(f"  {o.method}: {o.code.name} {o.details[:200]}" for o in first.values())
    print(f"{len(outcomes)} calls: {dict(codes)}")
    assert not bad, f"{len(bad)} of {len(outcomes)} calls failed ({dict(codes)}):\n{report}\none of each:\n{examples}"
