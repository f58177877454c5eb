"""The services an agreement covers through its provider (docs/domain.md §1 "Services
measured"), as the gateway answers them: the agreements listed for a service over gRPC and HTTP
and the SLO gauges' `service` label are those whose effective terms measure it — naming it, or
naming no service when the service's provider is theirs, one registered later included. The
gateway runs as it does in production over a real nats-server, fed by relays from real stores;
a registration wakes the watchers of the agreements that measure the new service; its snapshot
keeps the service registry (format 4) and a format-3 snapshot is rebuilt."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord_agreements.samples import EMAIL, FINANCE, IT, NETWORK, sla_terms
from accord_gateway.projection import ReadModel, service_view
from accord_gateway.snapshot import FORMAT, load_snapshot, write_snapshot
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys
from accord_kit.testing.streams import eventually
from tests.suite import AMS, CUSTOMER, PROVIDER, Suite, feed, gateway_over

VPN, PAYROLL = "vpn", "payroll"


def _accepted(suite: Suite, terms: dict[str, Any]) -> str:
    ag = suite.agreements
    aid = str(ag.draft(PROVIDER, terms).id)
    ag.propose(PROVIDER, aid)
    ag.accept(CUSTOMER, aid)
    return aid


def _agreements(suite: Suite) -> tuple[str, str, str]:
    """IT's e-mail and the network team's payroll registered; a corporate agreement naming
    e-mail, a customer-level agreement naming no service (every service IT provides), and a
    customer-level child of the corporate one naming none itself (its effective terms name
    e-mail, its parent's)."""
    ag = suite.agreements
    for dept in (IT, FINANCE, NETWORK):
        ag.register_department(dept, dept)
    ag.register_service(EMAIL, "E-mail", IT)
    ag.register_service(PAYROLL, "Payroll", NETWORK)
    named = _accepted(suite, sla_terms(level="SCOPE_LEVEL_CORPORATE", title="Corporate e-mail"))
    every = sla_terms(level="SCOPE_LEVEL_CUSTOMER", title="Everything IT runs for Finance")
    every["service"] = {"description": "every service IT provides", "hours_of_coverage": "24x7"}
    every_id = _accepted(suite, every)
    child = sla_terms(level="SCOPE_LEVEL_CUSTOMER", title="Finance e-mail", parent_agreement_id=named)
    del child["service"]
    child_id = _accepted(suite, child)
    suite.tick(f"2026-01-10T10:00{AMS}")
    return named, every_id, child_id


def _listed(doc: dict[str, Any]) -> list[str]:
    return sorted(a["agreement_id"] for a in doc["agreements"])


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_service_lists_every_agreement_measuring_it_over_grpc_http_and_the_slo_gauges(
    own_nats_server: NatsServer, tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    suite = Suite(make_store_env)
    named, every, child = _agreements(suite)
    keys = make_keys(tmp_path / "keys")
    auditor = keys.metadata("auditor")
    token = dict(auditor)["authorization"].split()[1]
    try:
        async with (
            gateway_over(suite, own_nats_server.url, tmp_path, keys, GATEWAY_METRICS_PORT="0") as (gateway, port, _),
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            stub = pb_grpc.GatewayServiceStub(ch)

            async def listed(service_id: str) -> list[str]:
                r = await stub.GetServiceStatus(pb.GetServiceStatusRequest(service_id=service_id), metadata=auditor)
                return sorted(a.agreement_id for a in r.service.agreements)

            async def caught_up() -> bool:
                r = await stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=auditor)
                return r.positions["agreements"] == suite.agreements.head_position()

            await eventually(caught_up, timeout=20, what="the agreements stream in the read model")
            # E-mail: named by the corporate agreement, inherited by its child, and IT's — so the agreement naming none.
            assert await listed(EMAIL) == sorted([named, every, child])
            # Payroll is the network team's: no agreement measures it.
            assert await listed(PAYROLL) == []
            r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=every), metadata=auditor)
            assert list(r.agreement.measured_service_ids) == [EMAIL] and list(r.agreement.service_ids) == []

            # A service IT registers later is measured by the agreement naming none, and listed for it.
            suite.agreements.register_service(VPN, "VPN", IT)
            await eventually(caught_up, timeout=20, what="the registration in the read model")
            assert await listed(VPN) == [every]
            r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=every), metadata=auditor)
            assert list(r.agreement.measured_service_ids) == [EMAIL, VPN]

            def get(url: str) -> Any:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    body = resp.read()
                return json.loads(body) if "/metrics" not in url else body.decode()

            doc = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/v1/services/{VPN}")
            assert _listed(doc["status"]) == [every]
            assert doc["status"]["agreements"][0]["measured_service_ids"] == [EMAIL, VPN]
            doc = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/v1/services/{EMAIL}")
            assert _listed(doc["status"]) == sorted([named, every, child])

            # The SLO gauges label each objective with the services its agreement measures.
            text = await asyncio.to_thread(get, f"http://127.0.0.1:{gateway.metrics_port}/metrics")
            labels = [
                line.split("{", 1)[1].split("}", 1)[0]
                for line in text.splitlines()
                if line.startswith("accord_slo_status{") and f'agreement="{every}"' in line
            ]
            assert labels and all(f'service="{EMAIL},{VPN}"' in x for x in labels)
    finally:
        suite.close()


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_snapshot_keeps_the_service_registry_and_an_older_format_is_rebuilt(
    make_store_env: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    suite = Suite(make_store_env)
    try:
        _, every, _ = _agreements(suite)
        model = ReadModel()
        feed("agreements", suite.agreements, model)
        path = tmp_path / "gateway-snapshot.json"
        write_snapshot(model, path)
        # Format 3 holds the registry: restored, the agreement naming none measures IT's services,
        # and one registered after the snapshot joins them as the stream reads on.
        restored = ReadModel()
        assert load_snapshot(restored, path)
        assert _listed(service_view(restored, EMAIL, "auditor", "")) == _listed(
            service_view(model, EMAIL, "auditor", "")
        )
        heard: list[str] = []
        restored.add_listener(heard.append)
        suite.agreements.register_service(VPN, "VPN", IT)
        feed("agreements", suite.agreements, restored)
        assert _listed(service_view(restored, VPN, "auditor", "")) == [every]
        assert heard == [every]  # its watchers hear that it measures one more service
        # A format-3 snapshot knew no registry: it is ignored and the model rebuilt from the streams.
        assert FORMAT == 4
        path.write_bytes(json.dumps({**json.loads(path.read_bytes()), "format": 3}).encode())
        older = ReadModel()
        with capture_logs() as logs:
            assert load_snapshot(older, path) is False
        assert "format" in next(e["reason"] for e in logs if e["event"] == "snapshot_ignored")
        assert older.positions()["agreements"] == 0
        feed("agreements", suite.agreements, older)
        assert _listed(service_view(older, VPN, "auditor", "")) == [every]
        assert _listed(service_view(older, EMAIL, "auditor", "")) == _listed(service_view(model, EMAIL, "auditor", ""))
    finally:
        suite.close()
