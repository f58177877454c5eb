"""All three services as they run, over gRPC and NATS with one fake clock: an e-mail SLA,
three months of signals with breaches in two, statements issued, one dispute accepted and
one rejected, a late outage restating January, the termination right granted after the
third breached month and the customer terminating at once through agreements. The ledger
balances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord.metrics.v1 import signals_pb2 as spb
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import sla_terms
from accord_agreements.settings import load as load_agreements
from accord_billing.bootstrap import build as build_billing
from accord_billing.settings import load as load_billing
from accord_kit.auth import mint_token
from accord_kit.clock import FakeClock
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics
from tests.suite import AMS, at, outage, ts

pytestmark = pytest.mark.slow


def calls(prefix: str, day: str, fast: int, slow: int) -> list[spb.Signal]:
    out = []
    for i in range(fast + slow):
        entered = at(day) + timedelta(minutes=i)
        c = spb.Call(entered_queue=ts(entered), answered_at=ts(entered + timedelta(seconds=10 if i < fast else 40)))
        out.append(spb.Signal(signal_id=f"{prefix}{i}", service_id="email", call=c))
    return out


async def stream(signals: list[spb.Signal]) -> AsyncIterator[mpb.RecordSignalsRequest]:
    yield mpb.RecordSignalsRequest(signals=signals)


async def test_three_services_a_quarter_of_money(own_nats_server: NatsServer, tmp_path: Path) -> None:
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    keys = make_keys(tmp_path / "keys")
    token_file = tmp_path / "keys" / "service.token"
    token_file.write_text(mint_token(keys.private, subject="accord-services", role="service"))
    nats = own_nats_server.url

    def env(service: str, **extra: str) -> dict[str, str]:
        return service_environ(
            service, tmp_path / service, nats, "sqlite", ACCORD_SERVICE_TOKEN_FILE=str(token_file), **extra
        )

    async with running_service(build_agreements, load_agreements(env("agreements")), keys, clock=clock,
                               due_interval=0.1) as agreements:  # fmt: skip
        addr = {"ACCORD_AGREEMENTS_ADDR": f"127.0.0.1:{agreements.port}"}
        async with running_service(build_metrics, load_metrics(env("metrics", **addr)), keys, clock=clock,
                                   evaluate_every=0.1) as metrics:  # fmt: skip
            addr["ACCORD_METRICS_ADDR"] = f"127.0.0.1:{metrics.port}"
            async with (
                running_service(build_billing, load_billing(env("billing", **addr)), keys, clock=clock,
                                due_every=0.1) as billing,
                grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
                grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
                grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}") as b_ch,
            ):  # fmt: skip
                await journey(clock, keys, agreements, metrics, billing, a_ch, m_ch, b_ch)


async def journey(
    clock: FakeClock, keys: Any, agreements: Any, metrics: Any, billing: Any, a_ch: Any, m_ch: Any, b_ch: Any
) -> None:
    a, m, b = apb_grpc.AgreementsServiceStub(a_ch), mpb_grpc.MetricsServiceStub(m_ch), bpb_grpc.BillingServiceStub(b_ch)
    admin, it, fin = (
        keys.metadata("admin"),
        keys.metadata("department", "it-operations"),
        keys.metadata("department", "finance"),
    )
    for dept in ("it-operations", "finance"):
        await a.RegisterDepartment(apb.RegisterDepartmentRequest(department_id=dept, name=dept), metadata=admin)
    await a.RegisterService(
        apb.RegisterServiceRequest(service_id="email", name="E-mail", provider_department_id="it-operations"),
        metadata=admin,
    )
    terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
    aid = (await a.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=it)).agreement.agreement_id
    await a.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=it)
    await a.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=fin)
    billing_app: Any = billing.parts.app

    async def record(signals: list[spb.Signal]) -> None:
        async def ok() -> bool:
            try:
                await m.RecordSignals(stream(signals), metadata=it)
                return True
            except grpc.aio.AioRpcError:
                return False  # metrics has not learned the service yet

        await eventually(ok, timeout=20, what="signals recorded")

    async def statements() -> list[bpb.Statement]:
        try:
            return list((await b.ListStatements(bpb.ListStatementsRequest(agreement_id=aid), metadata=fin)).statements)
        except grpc.aio.AioRpcError:
            return []

    async def statement_state(index: int, state: int) -> bool:
        rows = await statements()
        return len(rows) > index and rows[index].state == state

    # January met; February breached (an hour down) with slow calls.
    await record([outage("jan", f"2026-01-12T10:00{AMS}", 30), *calls("j", f"2026-01-15T09:00{AMS}", 9, 1)])
    clock.set(at(f"2026-02-10T12:00{AMS}"))
    await record([outage("feb", f"2026-02-03T08:00{AMS}", 60), *calls("f", f"2026-02-15T09:00{AMS}", 7, 3)])
    clock.set(at(f"2026-03-01T02:00{AMS}"))
    await eventually(lambda: statement_state(1, bpb.STATEMENT_STATE_ISSUED), timeout=30, what="February issued")
    feb = (await statements())[1]
    assert Decimal(feb.totals.net) == Decimal("1200.00")

    # One dispute accepted, one rejected.
    by_objective = {x.objective_id: x.window_start for x in feb.assessments}
    d1 = await b.DisputeAssessment(
        bpb.DisputeAssessmentRequest(
            statement_id=feb.statement_id,
            objective_id="availability",
            window_start=by_objective["availability"],
            reason="the hour cost us",
        ),
        metadata=fin,
    )
    d2 = await b.DisputeAssessment(
        bpb.DisputeAssessmentRequest(
            statement_id=feb.statement_id,
            objective_id="service-level",
            window_start=by_objective["service-level"],
            reason="slow calls",
        ),
        metadata=fin,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await b.ResolveDispute(
            bpb.ResolveDisputeRequest(statement_id=feb.statement_id, dispute_id=d1.dispute_id, accept=True, amount="1"),
            metadata=fin,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await b.ResolveDispute(
        bpb.ResolveDisputeRequest(
            statement_id=feb.statement_id, dispute_id=d1.dispute_id, accept=True, amount="2000.00", reason="agreed"
        ),
        metadata=it,
    )
    await b.ResolveDispute(
        bpb.ResolveDisputeRequest(
            statement_id=feb.statement_id, dispute_id=d2.dispute_id, accept=False, reason="no band for it"
        ),
        metadata=it,
    )

    # March breached; a late January outage restates January (adjustment on March).
    clock.set(at(f"2026-03-10T12:00{AMS}"))
    await record([outage("mar", f"2026-03-04T08:00{AMS}", 60), outage("jan-late", f"2026-01-20T02:00{AMS}", 50)])

    async def adjusted() -> bool:
        rows = await statements()
        return len(rows) > 2 and len(rows[2].adjustments) == 1

    await eventually(adjusted, timeout=30, what="January restated onto March")
    clock.set(at(f"2026-04-01T02:00{AMS}"))

    async def right_granted() -> bool:
        got = await a.GetAgreement(apb.GetAgreementRequest(agreement_id=aid), metadata=fin)
        return len(got.agreement.termination_rights) == 1

    await eventually(right_granted, timeout=30, what="termination right granted after the third breached month")
    done = await a.TerminateAgreement(
        apb.TerminateAgreementRequest(agreement_id=aid, reason="three bad months", immediate=True), metadata=fin
    )
    assert done.agreement.state == apb.AGREEMENT_STATE_TERMINATED
    # March is issued once both its windows have arrived (the clock stands at 1 April, 02:00).
    await eventually(lambda: statement_state(2, bpb.STATEMENT_STATE_ISSUED), timeout=30, what="March issued")

    # The claim windows pass: everything final, the ledger balanced.
    clock.set(at(f"2026-05-15T00:00{AMS}"))
    await eventually(lambda: statement_state(2, bpb.STATEMENT_STATE_FINAL), timeout=30, what="March final")
    rows = await statements()
    assert [Decimal(s.totals.net) for s in rows[:3]] == [Decimal("0.00"), Decimal("2000.00"), Decimal("2398.39")]
    balances = await b.GetBalances(bpb.GetBalancesRequest(), metadata=keys.metadata("auditor"))
    by_dept = {x.department_id: Decimal(x.amount) for x in balances.balances}
    # Three monthly fees charged — January 743 of its 744 hours (the agreement starts an hour
    # into it), 11,983.87; 12,000.00 each after — and 0 + 2,000.00 + 2,398.39 (March's own
    # 1,200.00 and January's restatement, 10 % of 11,983.87) credited against them.
    assert by_dept == {"finance": Decimal("-31585.48"), "it-operations": Decimal("31585.48")}
    assert sum(by_dept.values()) == 0
    assert billing_app.head_position() > 0
