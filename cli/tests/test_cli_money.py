"""The money side through the real `accord` process against the three running services (a
fake clock moves the months): statements and one statement's lines, a dispute opened and
resolved by the window's local month in the agreement's time zone (and the windows listed
when the date matches none), then the ledger and balances once the statement is final.
Also, in-process, how a local date finds its window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
import typer
from google.protobuf import json_format

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import agreements_pb2_grpc as apb_grpc
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import billing_pb2 as bpb
from accord.billing.v1 import billing_pb2_grpc as bpb_grpc
from accord.metrics.v1 import metrics_pb2 as mpb
from accord.metrics.v1 import metrics_pb2_grpc as mpb_grpc
from accord_agreements.bootstrap import build as build_agreements
from accord_agreements.samples import EMAIL, FINANCE, IT, sla_terms
from accord_agreements.settings import load as load_agreements
from accord_billing.bootstrap import build as build_billing
from accord_billing.settings import load as load_billing
from accord_cli.money import Window, find_window
from accord_kit.auth import mint_token
from accord_kit.clock import FakeClock
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_metrics.bootstrap import build as build_metrics
from accord_metrics.settings import load as load_metrics
from cli.tests.cliproc import arun, clean_env, one_line_error
from tests.suite import AMS, at, outage

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def test_a_local_date_finds_its_window() -> None:
    months = [Window("availability", s) for s in ("2025-12-31T23:00:00+00:00", "2026-01-31T23:00:00+00:00")]
    days = [Window("tickets", f"2026-01-{d:02d}T23:00:00+00:00") for d in range(1, 4)]
    weeks = [Window("weekly", "2026-01-04T23:00:00+00:00"), Window("weekly", "2026-01-11T23:00:00+00:00")]

    def find(ws: list[Window], objective: str, when: str, end: str = "") -> str:
        return find_window(ws, objective, when, AMSTERDAM, end, "window").window_start

    assert find(months, "availability", "2026-01") == "2025-12-31T23:00:00+00:00"  # local January
    assert find(months, "availability", "2026-02-14") == "2026-01-31T23:00:00+00:00"  # the month holding it
    assert find(months, "availability", "2026-02-01T00:00:00+01:00") == "2026-01-31T23:00:00+00:00"
    assert find(days, "tickets", "2026-01-03") == "2026-01-02T23:00:00+00:00"
    assert find(weeks, "weekly", "2026-01-14", end="2026-01-18T23:00:00+00:00") == "2026-01-11T23:00:00+00:00"
    ends = {"availability": "2026-02-28T23:00:00+00:00", "tickets": "2026-01-03T23:00:00+00:00",
            "weekly": "2026-01-18T23:00:00+00:00", "latency": ""}  # fmt: skip
    for ws, objective, when, code in (
        (months, "availability", "2026-04", 3),  # no such window: the windows are listed
        (days, "tickets", "2026-01", 2),  # three windows that month: ambiguous
        (months, "latency", "2026-01", 3),  # no such objective
        (months, "availability", "January", 2),
        (weeks, "weekly", "2026-01-20", 3),  # after the period's end
    ):
        with pytest.raises(typer.Exit) as e:
            find_window(ws, objective, when, AMSTERDAM, ends[objective], "window")
        assert e.value.exit_code == code, (objective, when)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_statements_disputes_and_the_ledger(own_nats_server: NatsServer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    tokens = {
        who: mint_token(keys.private, subject=who, role=role, department=dept)
        for who, role, dept in (("admin", "admin", ""), ("it", "department", IT), ("fin", "department", FINANCE))
    }
    service_token = tmp_path / "keys" / "service.token"
    service_token.write_text(mint_token(keys.private, subject="svc", role="service"))
    clock = FakeClock(at(f"2026-01-10T09:00{AMS}"))
    ports = {"agreements": free_port(), "metrics": free_port()}

    def env_of(service: str) -> dict[str, str]:
        return service_environ(
            service, tmp_path / service, own_nats_server.url, "sqlite", ACCORD_SERVICE_TOKEN_FILE=str(service_token),
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{ports['agreements']}",
            ACCORD_METRICS_ADDR=f"127.0.0.1:{ports['metrics']}",
            **({f"{service.upper()}_GRPC_PORT": str(ports[service])} if service in ports else {}),
        )  # fmt: skip

    def md(who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {tokens[who]}")]

    async with (
        running_service(build_agreements, load_agreements(env_of("agreements")), keys, clock=clock,
                        due_interval=0.2) as agreements,
        running_service(build_metrics, load_metrics(env_of("metrics")), keys, clock=clock,
                        evaluate_every=0.2) as metrics,
        running_service(build_billing, load_billing(env_of("billing")), keys, clock=clock, due_every=0.2) as billing,
        grpc.aio.insecure_channel(f"127.0.0.1:{agreements.port}") as a_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{metrics.port}") as m_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{billing.port}") as b_ch,
    ):  # fmt: skip
        ag, me, bi = (apb_grpc.AgreementsServiceStub(a_ch), mpb_grpc.MetricsServiceStub(m_ch),
                      bpb_grpc.BillingServiceStub(b_ch))  # fmt: skip
        for dept in (IT, FINANCE):
            request = apb.RegisterDepartmentRequest(department_id=dept, name=dept)
            await ag.RegisterDepartment(request, metadata=md("admin"))
        await ag.RegisterService(
            apb.RegisterServiceRequest(service_id=EMAIL, name="E-mail", provider_department_id=IT), metadata=md("admin")
        )
        terms = json_format.ParseDict(sla_terms(), terms_pb2.AgreementTerms())
        draft = await ag.DraftAgreement(apb.DraftAgreementRequest(terms=terms), metadata=md("it"))
        aid = draft.agreement.agreement_id
        await ag.ProposeAgreement(apb.ProposeAgreementRequest(agreement_id=aid), metadata=md("it"))
        await ag.AcceptAgreement(apb.AcceptAgreementRequest(agreement_id=aid), metadata=md("fin"))

        async def known() -> bool:
            try:
                await me.GetCompliance(mpb.GetComplianceRequest(agreement_id=aid), metadata=md("it"))
            except grpc.aio.AioRpcError:
                return False
            return True

        await until(known, "metrics to know the agreement")
        # January: 50 minutes down — breached, a 10 % credit. February begins: January is issued.
        jan = outage("jan", f"2026-01-12T10:00{AMS}", 50)
        await me.RecordSignalBatch(mpb.RecordSignalBatchRequest(signals=[jan]), metadata=md("it"))
        clock.set(at(f"2026-02-01T02:00{AMS}"))

        async def statement_state(wanted: int) -> bool:
            try:
                r = await bi.ListStatements(bpb.ListStatementsRequest(agreement_id=aid), metadata=md("fin"))
            except grpc.aio.AioRpcError:
                return False
            return bool(r.statements) and r.statements[0].state == wanted

        await until(lambda: statement_state(bpb.STATEMENT_STATE_ISSUED), "January's statement issued")

        env = clean_env(tmp_path, ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}",
                        ACCORD_BILLING_ADDR=f"127.0.0.1:{billing.port}")  # fmt: skip
        it, fin = {**env, "ACCORD_TOKEN": tokens["it"]}, {**env, "ACCORD_TOKEN": tokens["fin"]}

        r = await arun(fin, "--json", "statements", aid)
        assert r.code == 0, r.err
        (january, *_) = json.loads(r.out)["statements"]
        sid = january["statement_id"]
        assert january["state"] == "STATEMENT_STATE_ISSUED"
        r = await arun(fin, "statements")  # every agreement the customer sees
        assert r.code == 0 and sid in r.out and "ISSUED" in r.out, r.err
        # One statement: the window named by its local month, the credit line and its amount (10 %
        # of the 11,983.87 January charges: the agreement starts an hour into it).
        r = await arun(fin, "statement", sid)
        assert r.code == 0, r.err
        assert "2026-01-01" in r.out and "availability" in r.out and "CREDIT" in r.out and "1198.39" in r.out

        # A dispute for April matches no window: exit 3, and the windows there are, listed.
        r = await arun(fin, "dispute", sid, "availability", "2026-04", "--reason", "wrong month")
        assert r.code == 3
        assert "2026-01-01 (2025-12-31T23:00:00+00:00)" in one_line_error(r)
        # January, named as people name it in Amsterdam.
        r = await arun(fin, "--json", "dispute", sid, "availability", "2026-01", "--reason", "the outage was planned")
        assert r.code == 0, r.err
        opened = json.loads(r.out)
        assert opened["window_start"] == "2025-12-31T23:00:00+00:00" and opened["dispute_id"]
        r = await arun(fin, "statement", sid, "--json")
        (d,) = json.loads(r.out)["statement"]["disputes"]
        assert (d["dispute_id"], d["state"]) == (opened["dispute_id"], "OPEN")
        # The provider resolves it by the same local date: accepted, the credit waived.
        r = await arun(it, "resolve-dispute", sid, "availability", "2026-01-14", "--accept")
        assert r.code == 2 and "--amount" in one_line_error(r)
        r = await arun(it, "--json", "resolve-dispute", sid, "availability", "2026-01", "--accept", "--amount", "0")
        assert r.code == 0, r.err
        (d,) = json.loads(r.out)["statement"]["disputes"]
        assert (d["state"], d["amount"]) == ("ACCEPTED", "0.00")
        # The waived credit is in the totals at once, while January is still only issued.
        r = await arun(fin, "--json", "statement", sid)
        waived = json.loads(r.out)["statement"]
        assert waived["state"] == "STATEMENT_STATE_ISSUED"
        assert (waived["totals"]["disputes"], waived["totals"]["net"]) == ("-1198.39", "0.00")
        r = await arun(fin, "statement", sid)
        assert r.code == 0 and "-1198.39" in r.out, r.out
        r = await arun(it, "resolve-dispute", sid, "availability", "2026-01", "--reject", "--reason", "again")
        assert r.code == 3 and "no open dispute" in one_line_error(r)

        # Past the claim window January is final and posted: the ledger and the balances.
        clock.set(at(f"2026-03-05T02:00{AMS}"))

        async def january_final() -> bool:
            r = await bi.GetStatement(bpb.GetStatementRequest(statement_id=sid), metadata=md("fin"))
            return r.statement.state == bpb.STATEMENT_STATE_FINAL

        await until(january_final, "January's statement final")
        r = await arun(fin, "--json", "ledger")
        assert r.code == 0, r.err
        entries = [e for tx in json.loads(r.out)["transactions"] for e in tx["entries"] if e["account"] == FINANCE]
        assert {e["kind"] for e in entries} >= {"FEE"}
        r = await arun(fin, "--json", "balances")
        assert r.code == 0, r.err
        (balance,) = json.loads(r.out)["balances"]
        assert (balance["department_id"], balance["currency"]) == (FINANCE, "EUR")
        assert balance["amount"] == "-11983.87"  # January's fee, the credit waived by the dispute
        r = await arun(fin, "ledger")
        assert r.code == 0 and "FEE" in r.out and FINANCE in r.out
