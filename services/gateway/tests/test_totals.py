"""Every amount in the gateway's totals as soon as billing states it, through real NATS, and
never a provisional one as settled: an open statement's adjustment shows in its net and totals
(provisional) and in the credits this period, never in the credits to date (final statements
only); a dispute accepted on an issued statement shows in its net, its totals' `disputes`, the
credits awaiting final, the typed gRPC answer and the HTTP answer at once, not once the
statement is final. An open statement's fee is stated when a suspension or resumption changes
it. Billing events recorded before they stated totals leave the totals the read model held."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from accord.billing.v1 import events_pb2 as billing_events
from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord_agreements.samples import FINANCE
from accord_gateway.projection import ReadModel
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys
from accord_kit.testing.streams import eventually
from tests.suite import P_CUSTOMER, P_PROVIDER, Suite, feed, gateway_over, slo_journey


def http_status(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["status"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_adjustments_and_accepted_disputes_are_in_the_totals_at_once(
    own_nats_server: NatsServer, tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    suite = Suite(make_store_env)
    # Jan final (met), Feb issued 1,200.00, March open with Jan's +1,198.39 (10 % of the 11,983.87
    # January charges: the agreement starts an hour into it).
    aid, feb_id = slo_journey(suite)
    b = suite.billing
    march_id = str(b.statements(P_CUSTOMER, aid)[2].id)
    keys = make_keys(tmp_path / "keys")
    fin = dict(keys.metadata("department", FINANCE))["authorization"].split()[1]
    try:
        async with (
            gateway_over(suite, own_nats_server.url, tmp_path, keys) as (gateway, http_port, _),
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            stub = pb_grpc.GatewayServiceStub(ch)
            md = keys.metadata("department", FINANCE)

            async def status() -> pb.AgreementStatus:
                r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
                return r.agreement

            async def caught_up() -> bool:
                try:
                    r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
                except grpc.aio.AioRpcError:
                    return False
                return bool(r.positions["billing"] == b.head_position())

            await eventually(caught_up, timeout=20, what="the read model caught up with billing")
            got = {s.statement_id: s for s in (await status()).statements}
            # March, open: January's adjustment in its net and totals so far.
            march = got[march_id]
            assert march.state == "OPEN" and march.totals.provisional
            assert (Decimal(march.net), Decimal(march.totals.adjustments)) == (Decimal("1198.39"), Decimal("1198.39"))
            # January final at 0 (settled), February issued at 1,200.00 (awaiting final), March
            # 1,198.39 so far (this period): never a provisional amount in the credits to date.
            now = await status()
            assert [Decimal(x) for x in (now.credits_to_date, now.credits_this_period, now.credits_awaiting_final,
                                         now.credits_provisional)] == [0, Decimal("1198.39"), Decimal("1200.00"),
                                                                       Decimal("2398.39")]  # fmt: skip
            assert Decimal(got[feb_id].net) == Decimal("1200.00") and not got[feb_id].totals.provisional

            # The provider accepts the customer's dispute of February at 3,000.00.
            window = next(iter(b.statement(None, feb_id).assessments)).split("|")[1]
            dispute = b.dispute(P_CUSTOMER, feb_id, "availability", window, "the hour cost us the close")
            b.resolve(P_PROVIDER, feb_id, dispute, True, "3000.00", "agreed")
            await eventually(caught_up, timeout=20, what="the resolution in the read model")
            now = await status()
            feb = next(s for s in now.statements if s.statement_id == feb_id)
            assert feb.state == "ISSUED"
            assert (Decimal(feb.net), Decimal(feb.totals.disputes)) == (Decimal("3000.00"), Decimal("1800.00"))
            assert (Decimal(now.credits_to_date), Decimal(now.credits_awaiting_final)) == (0, Decimal("3000.00"))
            assert Decimal(now.credits_provisional) == Decimal("4198.39")
            # The HTTP answer and the dashboard's data say the same.
            doc = await asyncio.to_thread(http_status, f"http://127.0.0.1:{http_port}/v1/agreements/{aid}", fin)
            by_id = {s["statement_id"]: s for s in doc["statements"]}
            assert Decimal(by_id[feb_id]["net"]) == Decimal("3000.00")
            assert Decimal(by_id[feb_id]["totals"]["disputes"]) == Decimal("1800.00")
            assert by_id[march_id]["totals"]["provisional"] is True and Decimal(doc["credits_to_date"]) == 0
            assert Decimal(doc["credits_provisional"]) == Decimal("4198.39")
            # The department's balance: final statements only, and apart what is not final yet.
            r = await stub.GetDepartmentStatus(pb.GetDepartmentStatusRequest(department_id=FINANCE), metadata=md)
            assert Decimal(r.department.balance) == 0 and not r.department.as_provider
            briefs = {a.agreement_id: Decimal(a.credits_provisional) for a in r.department.as_customer}
            assert briefs[aid] == Decimal("4198.39")  # the other agreement: the same outages of e-mail
            assert Decimal(r.department.balance_provisional) == sum(briefs.values())
    finally:
        suite.close()


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_events_recorded_before_billing_stated_totals_keep_the_totals_held(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """A DisputeResolved and an AdjustmentRecorded without totals (as billing recorded them
    before it stated them) change no totals: the issued ones stay, the open one stays empty."""
    suite = Suite(make_store_env)
    try:
        aid, feb_id = slo_journey(suite)
        b = suite.billing
        window = next(iter(b.statement(None, feb_id).assessments)).split("|")[1]
        dispute = b.dispute(P_CUSTOMER, feb_id, "availability", window, "the hour cost us the close")
        b.resolve(P_PROVIDER, feb_id, dispute, True, "3000.00", "agreed")
        model = ReadModel()
        for source, app in (("agreements", suite.agreements), ("metrics", suite.metrics)):
            feed(source, app, model)
        stripped = 0
        for env in b.read_events(0, 5000)[0]:
            name = env.type.rsplit(".", 1)[-1]
            if name in ("DisputeResolved", "AdjustmentRecorded", "AssessmentRecorded"):
                msg: Any = getattr(billing_events, name)()
                env.payload.Unpack(msg)
                if msg.HasField("totals"):
                    msg.ClearField("totals")
                    env.payload.Pack(msg)
                    stripped += 1
            model.apply_upstream("billing", env)
        assert stripped >= 2
        status = model.agreement(aid)
        assert status is not None
        by_id = {s["statement_id"]: s for s in status["statements"]}
        assert by_id[feb_id]["state"] == "ISSUED" and Decimal(by_id[feb_id]["net"]) == Decimal("1200.00")
        assert Decimal(by_id[feb_id]["totals"]["disputes"]) == 0
        march = status["statements"][-1]
        assert march["state"] == "OPEN" and march["totals"] is None and march["net"] == "0"
        assert [d["amount"] for d in status["disputes"]] == ["3000.00"]  # the row itself, as before
    finally:
        suite.close()


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_an_open_statements_fee_is_stated_as_soon_as_a_suspension_or_resumption_changes_it(
    make_store_env: Callable[[str], dict[str, str]],
) -> None:
    """March's statement is open (12,000.00 a month). The agreement is suspended from 16 March
    00:00 and resumed on the 23rd: billing states March's totals with the fee each change makes
    (StatementTotalsStated), and the read model shows it at once — not once the next amount
    lands; the credits are unchanged by a fee."""
    from accord_agreements.domain import Actor
    from accord_agreements.samples import IT
    from tests.suite import AMS

    provider = Actor("alice", "department", IT)
    suite = Suite(make_store_env)
    try:
        aid, _ = slo_journey(suite)
        b = suite.billing
        march_id = str(b.statements(P_CUSTOMER, aid)[2].id)
        model = ReadModel()

        def march_now() -> dict[str, Any]:
            for source, app in (("agreements", suite.agreements), ("metrics", suite.metrics), ("billing", b)):
                feed(source, app, model)
            status = model.agreement(aid)
            assert status is not None
            return next(s for s in status["statements"] if s["statement_id"] == march_id)

        def stated() -> int:
            return len([e for e in b.read_events(0, 5000)[0] if e.type.endswith(".StatementTotalsStated")])

        march = march_now()
        assert march["state"] == "OPEN" and Decimal(march["totals"]["fee"]) == Decimal("12000.00")
        net = march["net"]
        suite.tick(f"2026-03-16T00:00{AMS}")
        suite.agreements.suspend(provider, aid, "office move")
        suite.tick(f"2026-03-16T00:00{AMS}")
        assert stated() == 1
        march = march_now()
        billed = Decimal(b.current_totals(b.statement(None, march_id))["fee"])
        assert Decimal(march["totals"]["fee"]) == billed < Decimal("12000.00")
        assert march["totals"]["provisional"] is True and march["net"] == net
        suite.tick(f"2026-03-23T00:00{AMS}")
        suite.agreements.resume(provider, aid, "back")
        suite.tick(f"2026-03-23T00:00{AMS}")
        assert stated() == 2
        march = march_now()
        resumed = Decimal(b.current_totals(b.statement(None, march_id))["fee"])
        assert Decimal(march["totals"]["fee"]) == resumed and billed < resumed < Decimal("12000.00")
        status = model.agreement(aid)
        assert status is not None and Decimal(status["credits_this_period"]) == Decimal(net)
    finally:
        suite.close()
