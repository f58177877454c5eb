"""Every amount in the gateway's totals as soon as billing states it, through real NATS: an
open statement's adjustment shows in its net and totals (provisional) and in the credits this
period and to date; a dispute accepted on an issued statement shows in its net, its totals'
`disputes`, the credits to date, the typed gRPC answer and the HTTP answer at once, not once
the statement is final. Billing events recorded before they stated totals leave the totals
the read model held."""

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
            assert Decimal((await status()).credits_this_period) == Decimal("1198.39")
            # January final at 0, February issued at 1,200.00, March 1,198.39 so far.
            assert Decimal((await status()).credits_to_date) == Decimal("2398.39")
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
            assert Decimal(now.credits_to_date) == Decimal("4198.39")
            # The HTTP answer and the dashboard's data say the same.
            doc = await asyncio.to_thread(http_status, f"http://127.0.0.1:{http_port}/v1/agreements/{aid}", fin)
            by_id = {s["statement_id"]: s for s in doc["statements"]}
            assert Decimal(by_id[feb_id]["net"]) == Decimal("3000.00")
            assert Decimal(by_id[feb_id]["totals"]["disputes"]) == Decimal("1800.00")
            assert by_id[march_id]["totals"]["provisional"] is True and Decimal(doc["credits_to_date"]) == Decimal(
                "4198.39"
            )
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
