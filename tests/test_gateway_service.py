"""The gateway as it runs: its consumers fill the read model from the three streams; gRPC and
HTTP answer status queries with the positions they reflect; 401/403/404 as JSON with nothing
leaked; WatchStatus and server-sent events deliver a change within a second; the typed gRPC
answer says what the HTTP answer says (integers as integers; the deprecated Struct only when
asked for); `accord status` reads it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from openapi_spec_validator import validate as validate_openapi

from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord_agreements.samples import FINANCE, IT
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys
from accord_kit.testing.streams import eventually
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, gateway_over, outage

pytestmark = pytest.mark.slow


def http_get(url: str, token: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_gateway_over_grpc_http_and_live(
    own_nats_server: NatsServer, tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    suite = Suite(make_store_env)
    ag, m = suite.agreements, suite.metrics
    aid = an_active_agreement(suite)
    keys = make_keys(tmp_path / "keys")
    fin = dict(keys.metadata("department", FINANCE))["authorization"].split()[1]
    mkt = dict(keys.metadata("department", "marketing"))["authorization"].split()[1]
    try:
        async with (
            gateway_over(suite, own_nats_server.url, tmp_path, keys) as (gateway, http_port, relays),
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            base = f"http://127.0.0.1:{http_port}"
            stub = pb_grpc.GatewayServiceStub(ch)
            md = keys.metadata("department", FINANCE)

            async def visible() -> bool:
                try:
                    r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
                except grpc.aio.AioRpcError:
                    return False
                return r.agreement.state == "ACTIVE"

            await eventually(visible, timeout=20, what="agreement in the read model")
            got = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
            assert got.positions["agreements"] == ag.head_position()
            # Not a party: the same NOT_FOUND as a missing agreement (nothing leaked).
            for who, agreement in ((keys.metadata("department", "marketing"), aid), (md, "nope")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=agreement), metadata=who)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
            # Typed: integers stay integers; the deprecated Struct is empty unless asked for.
            assert got.agreement.version == 1 and not got.HasField("status")
            typed = json_format.MessageToDict(got.agreement, preserving_proto_field_name=True)
            assert typed["version"] == 1 and isinstance(typed["version"], int)
            with_struct = await stub.GetAgreementStatus(
                pb.GetAgreementStatusRequest(agreement_id=aid, include_struct=True), metadata=md
            )
            assert with_struct.status["version"] == 1.0 and with_struct.agreement == got.agreement
            # `accord status` reads the typed answer: the same document as the HTTP answer's.
            env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
            env |= {"ACCORD_CONFIG": str(tmp_path / "none.toml"), "ACCORD_TOKEN": fin}
            env["ACCORD_GATEWAY_ADDR"] = f"127.0.0.1:{gateway.port}"
            accord = str(Path(sys.executable).parent / "accord")
            cli = await asyncio.to_thread(
                subprocess.run, [accord, "--json", "status", aid], env=env, capture_output=True, text=True, timeout=60
            )
            assert cli.returncode == 0, cli.stderr
            from_cli = json.loads(cli.stdout)
            _, from_http = await asyncio.to_thread(http_get, f"{base}/v1/agreements/{aid}", fin)
            assert from_cli["status"]["version"] == 1 and from_cli["status"]["state"] == "ACTIVE"
            assert from_cli["status"]["objectives"] == from_http["status"]["objectives"]
            assert from_cli["positions"] == from_http["positions"]
            portfolio = await stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=keys.metadata("auditor"))
            assert portfolio.portfolio.agreements == 1
            before_restart = got.agreement

            # HTTP: the same, with JSON errors.
            status, body = await asyncio.to_thread(http_get, f"{base}/v1/agreements/{aid}", fin)
            assert status == 200 and body["status"]["state"] == "ACTIVE" and "positions" in body
            assert (await asyncio.to_thread(http_get, f"{base}/v1/agreements/{aid}", None))[0] == 401
            status, body = await asyncio.to_thread(http_get, f"{base}/v1/agreements/{aid}", mkt)
            assert status == 404 and "error" in body and "title" not in json.dumps(body)
            assert (await asyncio.to_thread(http_get, f"{base}/v1/departments/{IT}", fin))[0] == 403
            status, body = await asyncio.to_thread(http_get, f"{base}/v1/departments/{FINANCE}", fin)
            assert status == 200 and [a["agreement_id"] for a in body["status"]["as_customer"]] == [aid]
            status, spec = await asyncio.to_thread(http_get, f"{base}/openapi.json", None)
            assert status == 200 and "/v1/agreements/{agreement_id}" in spec["paths"]
            # Every answer given above is listed in the document.
            assert {"401", "404"} <= set(spec["paths"]["/v1/agreements/{agreement_id}"]["get"]["responses"])
            assert "403" in spec["paths"]["/v1/departments/{department_id}"]["get"]["responses"]
            validate_openapi(spec)  # a valid OpenAPI document, or this raises saying what is wrong

            # Live: a breach reaches WatchStatus within a second of reaching NATS.
            watch = stub.WatchStatus(pb.WatchStatusRequest(agreement_id=aid), metadata=md)
            first = await watch.read()
            assert first.agreement.health != "BREACHED"
            m.record(COLLECTOR, [outage("big", f"2026-01-10T05:00{AMS}", 240)])
            suite.tick(f"2026-01-10T10:05{AMS}")
            await eventually(lambda: relays[1].stats.head_position == m.head_position(), timeout=10)
            published = time.monotonic()
            while True:
                update = await asyncio.wait_for(watch.read(), timeout=5)
                if update.agreement.health == "BREACHED":
                    break
            assert time.monotonic() - published < 1.0
            watch.cancel()

            # Server-sent events: the status now, then the next change.
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
            writer.write(
                f"GET /v1/watch?agreement_id={aid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {fin}\r\n\r\n".encode()
            )
            await writer.drain()

            async def next_event() -> dict[str, Any]:
                while True:
                    line = (await asyncio.wait_for(reader.readline(), timeout=5)).decode().strip()
                    if line.startswith("data: "):
                        return json.loads(line[6:])  # type: ignore[no-any-return]

            try:
                initial = await next_event()
                assert initial["status"]["health"] == "BREACHED"
                m.record(COLLECTOR, [outage("more", f"2026-01-10T09:00{AMS}", 30)])
                suite.tick(f"2026-01-10T10:06{AMS}")
                await eventually(lambda: relays[1].stats.head_position == m.head_position(), timeout=10)
                published = time.monotonic()
                changed = await next_event()
                assert time.monotonic() - published < 1.0
                assert changed["positions"]["metrics"] > initial["positions"]["metrics"]
            finally:
                writer.close()
        # A restarted gateway rebuilds the same read model from the streams.
        async with (
            gateway_over(suite, own_nats_server.url, tmp_path / "again", keys) as (gateway, _, _),
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            stub = pb_grpc.GatewayServiceStub(ch)
            md = keys.metadata("department", FINANCE)

            async def rebuilt() -> bool:
                try:
                    r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
                except grpc.aio.AioRpcError:
                    return False
                return bool(r.positions["metrics"] == m.head_position())

            await eventually(rebuilt, timeout=20, what="read model rebuilt after a restart")
            got = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=md)
            assert got.agreement.state == before_restart.state and got.agreement.health == "BREACHED"
    finally:
        suite.close()
