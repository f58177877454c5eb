"""A starting gateway is SERVING only once its read model holds what the streams held when it
started: the first moment gRPC health or HTTP readiness says SERVING, every agreement answers
(no 404) and every answer reflects each stream's head. A stream that does not exist yet does
not hold it back. A restarted gateway reads on from its read-model snapshot's positions and
answers as one rebuilt from every event."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.agreements.v1 import terms_pb2
from accord.billing.v1 import events_pb2 as billing_events
from accord.events.v1 import events_pb2
from accord.gateway.v1 import gateway_pb2 as pb
from accord.gateway.v1 import gateway_pb2_grpc as pb_grpc
from accord.metrics.v1 import events_pb2 as metric_events
from accord_gateway.bootstrap import build
from accord_gateway.settings import load
from accord_kit.nats_util import HDR_MSG_ID, HDR_POSITION, HDR_PREVIOUS, HDR_TYPE, connect, ensure_stream
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import Keys, make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually

PROVIDER, CUSTOMER = "it", "finance"
SERVING = health_pb2.HealthCheckResponse.SERVING
N = 1500  # agreements; three events each (one per stream), enough that catching up takes a while


async def publish(nc: NATS, source: str, payloads: list[tuple[str, Message]], first: int = 1, previous: int = 0) -> int:
    """Publish events as the source's relay would (envelope, headers, the previous-position
    chain from `previous`), at positions first, first+2, … (a log's positions may have gaps).
    Returns the last."""
    await ensure_stream(nc, source.upper(), source)
    js = nc.jetstream()
    acks = []
    for i, (aggregate_id, msg) in enumerate(payloads):
        position = first + 2 * i
        env = events_pb2.EventEnvelope(
            event_id=f"{source}:{aggregate_id}:{position}",
            source_service=source,
            aggregate_id=aggregate_id,
            aggregate_version=1,
            position=position,
            previous_position=previous,
            type=msg.DESCRIPTOR.full_name,
        )
        env.payload.Pack(msg)
        headers = {HDR_MSG_ID: env.event_id, HDR_POSITION: str(position), HDR_PREVIOUS: str(previous)}
        headers[HDR_TYPE] = env.type
        subject = f"accord.{source}.v1.{msg.DESCRIPTOR.name}"
        acks.append(await js.publish_async(subject, env.SerializeToString(), headers=headers))
        previous = position
    await asyncio.gather(*acks)
    return previous


def drafted(aid: str) -> tuple[str, Message]:
    terms = terms_pb2.AgreementTerms(
        title=f"SLA {aid}",
        parties=terms_pb2.Parties(provider_department_id=PROVIDER, customer_department_id=CUSTOMER),
    )
    return aid, agreement_events.AgreementDrafted(agreement_id=aid, terms=terms)


def breach(aid: str) -> tuple[str, Message]:
    msg = metric_events.BreachDetected(
        agreement_id=aid, objective_id="availability", window_start="2026-01", window_end="2026-02"
    )
    return f"ev-{aid}", msg


def statement(aid: str) -> tuple[str, Message]:
    msg = billing_events.StatementOpened(statement_id=f"st-{aid}", agreement_id=aid, currency="EUR")
    return f"st-{aid}", msg


def gateway_settings(nats_url: str, tmp_path: Path) -> tuple[Any, int]:
    http_port = free_port()
    env = service_environ("gateway", tmp_path, nats_url, "sqlite", GATEWAY_HTTP_PORT=str(http_port))
    return load(env), http_port


def http_get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def token(keys: Keys, role: str, department: str = "") -> str:
    return dict(keys.metadata(role, department))["authorization"].split()[1]


async def test_serving_only_once_the_read_model_holds_every_stream_at_start(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    ids = [f"ag-{i:05d}" for i in range(N)]
    nc = await connect(own_nats_server.url, name="publisher")
    try:
        heads = {
            "agreements": await publish(nc, "agreements", [drafted(a) for a in ids]),
            "metrics": await publish(nc, "metrics", [breach(a) for a in ids], first=5),
            "billing": await publish(nc, "billing", [statement(a) for a in ids], first=3),
        }
    finally:
        await nc.close()
    keys = make_keys(tmp_path / "keys")
    settings, http_port = gateway_settings(own_nats_server.url, tmp_path)
    auditor, customer = keys.metadata("auditor"), keys.metadata("department", CUSTOMER)
    base = f"http://127.0.0.1:{http_port}"

    async def first_serving_over_grpc(port: int) -> tuple[int, pb.StatusResponse, list[str]]:
        """Poll gRPC health in a tight loop; the moment it says SERVING, ask for the portfolio,
        then for every agreement. Returns how many polls said NOT_SERVING, the portfolio, and the
        agreements that answered NOT_FOUND."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            health, stub = health_pb2_grpc.HealthStub(ch), pb_grpc.GatewayServiceStub(ch)
            not_serving = 0
            while (await health.Check(health_pb2.HealthCheckRequest())).status != SERVING:
                not_serving += 1
            portfolio = await stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=auditor)
            missing = []
            for aid in ids:
                try:
                    await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=customer)
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND, e
                    missing.append(aid)
            return not_serving, portfolio, missing

    def first_serving_over_http() -> tuple[list[dict[str, Any]], tuple[int, Any], tuple[int, Any]]:
        """The same over HTTP: /healthz until SERVING, then the portfolio and the last agreement.
        Returns the NOT_SERVING answers seen and the two answers."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _, doc = http_get(f"{base}/healthz")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.01)  # not listening yet
                continue
            if doc["status"] == "SERVING":
                portfolio = http_get(f"{base}/v1/portfolio", token(keys, "auditor"))
                last = http_get(f"{base}/v1/agreements/{ids[-1]}", token(keys, "department", CUSTOMER))
                return seen, portfolio, last
            seen.append(doc)
        raise AssertionError("HTTP readiness never said SERVING")

    logging_config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as logs:
            async with running_service(build, settings, keys, wait_ready=False) as gateway:
                (not_serving, portfolio, missing), (seen, http_portfolio, http_last) = await asyncio.gather(
                    first_serving_over_grpc(gateway.port), asyncio.to_thread(first_serving_over_http)
                )
                consumers = {c.config.stream: c for c in gateway.consumers}
    finally:
        structlog.configure(wrapper_class=logging_config["wrapper_class"])

    # The first moment it said SERVING, the read model held everything: no 404, the heads …
    assert portfolio.portfolio.agreements == N
    assert dict(portfolio.positions) == heads
    assert missing == []
    status, body = http_portfolio
    assert status == 200 and body["status"]["agreements"] == N and body["positions"] == heads
    status, body = http_last
    assert status == 200 and len(body["status"]["breaches"]) == 1 and len(body["status"]["statements"]) == 1
    # … and before, it was seen catching up, and HTTP readiness said so.
    assert not_serving > 0
    catching_up = [d for d in seen if d.get("reason") == "catching_up"]
    assert catching_up, seen
    assert all(set(d["streams"]) <= {"AGREEMENTS", "METRICS", "BILLING"} for d in catching_up), catching_up
    # The log says how many events it caught up with, and how long that took.
    assert {s: c.caught_up_events for s, c in consumers.items()} == {"AGREEMENTS": N, "METRICS": N, "BILLING": N}
    ready = [e for e in logs if e["event"] == "service_ready"]
    assert len(ready) == 1 and ready[0]["caught_up_events"] == 3 * N and ready[0]["catch_up_seconds"] > 0
    caught_up = {e["durable"]: e for e in logs if e["event"] == "consumer_caught_up"}
    assert {d: e["events"] for d, e in caught_up.items()} == {
        "gateway-AGREEMENTS": N,
        "gateway-METRICS": N,
        "gateway-BILLING": N,
    }


async def test_a_stream_not_created_yet_does_not_hold_serving_back(own_nats_server: NatsServer, tmp_path: Path) -> None:
    """One stream is empty, the others do not exist yet (their producers have not started):
    SERVING at once, as before, and the events are applied once the streams appear."""
    keys = make_keys(tmp_path / "keys")
    settings, http_port = gateway_settings(own_nats_server.url, tmp_path)
    nc = await connect(own_nats_server.url, name="publisher")
    try:
        await ensure_stream(nc, "METRICS", "metrics")
        async with (
            running_service(build, settings, keys, wait_ready=False) as gateway,
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            health = health_pb2_grpc.HealthStub(ch)

            async def serving() -> bool:
                return bool((await health.Check(health_pb2.HealthCheckRequest())).status == SERVING)

            await eventually(serving, timeout=10, what="SERVING without streams")
            assert await asyncio.to_thread(http_get, f"http://127.0.0.1:{http_port}/healthz") == (
                200,
                {"status": "SERVING"},
            )
            await publish(nc, "agreements", [drafted("late")])
            stub = pb_grpc.GatewayServiceStub(ch)
            auditor = keys.metadata("auditor")
            request = pb.GetAgreementStatusRequest(agreement_id="late")

            async def visible() -> bool:
                try:
                    await stub.GetAgreementStatus(request, metadata=auditor)
                except grpc.aio.AioRpcError:
                    return False
                return True

            await eventually(visible, timeout=20, what="the late stream's agreement")
    finally:
        await nc.close()


async def test_a_restarted_gateway_reads_on_from_its_snapshot_and_answers_as_a_rebuilt_one(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    first, more = [f"ag-{i:04d}" for i in range(200)], [f"ag-{i:04d}" for i in range(200, 220)]
    keys = make_keys(tmp_path / "keys")
    auditor = keys.metadata("auditor")
    nc = await connect(own_nats_server.url, name="publisher")
    try:
        heads = {
            "agreements": await publish(nc, "agreements", [drafted(a) for a in first]),
            "metrics": await publish(nc, "metrics", [breach(a) for a in first], first=5),
            "billing": await publish(nc, "billing", [statement(a) for a in first], first=3),
        }
        settings, _ = gateway_settings(own_nats_server.url, tmp_path / "restarted")
        assert settings.snapshot_path == settings.var_dir / "gateway-snapshot.json"
        async with running_service(build, settings, keys):
            pass  # caught up with every stream, then stopped: the snapshot is written at stop
        snapshot = json.loads(settings.snapshot_path.read_bytes())
        assert snapshot["state"]["positions"] == heads
        # More events once it has stopped: new agreements, and another breach of ten old ones.
        new_breaches = [breach(a) for a in first[:10]]
        events_after = 2 * len(more) + len(new_breaches)
        heads = {
            "agreements": await publish(
                nc, "agreements", [drafted(a) for a in more], heads["agreements"] + 2, heads["agreements"]
            ),
            "metrics": await publish(nc, "metrics", new_breaches, heads["metrics"] + 2, heads["metrics"]),
            "billing": await publish(
                nc, "billing", [statement(a) for a in more], heads["billing"] + 2, heads["billing"]
            ),
        }
    finally:
        await nc.close()
    every = first + more
    events = 3 * len(first) + events_after

    async def answers(settings: Any) -> tuple[int, dict[str, bytes], dict[str, Any], Any]:
        """Start a gateway on `settings`; the events it applied to catch up, every agreement's
        typed answer, the portfolio, and one agreement's HTTP answer."""
        async with (
            running_service(build, settings, keys) as gateway,
            grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch,
        ):
            applied = sum(c.caught_up_events for c in gateway.consumers)
            stub = pb_grpc.GatewayServiceStub(ch)
            typed = {}
            for aid in every:
                r = await stub.GetAgreementStatus(pb.GetAgreementStatusRequest(agreement_id=aid), metadata=auditor)
                assert dict(r.positions) == heads
                typed[aid] = r.agreement.SerializeToString(deterministic=True)
            portfolio = await stub.GetPortfolio(pb.GetPortfolioRequest(), metadata=auditor)
            assert portfolio.portfolio.agreements == len(every)
            http = await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{settings.http_port}/v1/agreements/{first[0]}", token(keys, "auditor")
            )
            return applied, typed, json_format.MessageToDict(portfolio.portfolio), http

    settings, _ = gateway_settings(own_nats_server.url, tmp_path / "restarted")
    applied, typed, portfolio, http = await answers(settings)
    scratch_settings, _ = gateway_settings(own_nats_server.url, tmp_path / "scratch")
    scratch_applied, scratch_typed, scratch_portfolio, scratch_http = await answers(scratch_settings)
    # Resumed from the snapshot: only the events published after it were applied …
    assert applied == events_after < events == scratch_applied
    # … and the answers are those of a gateway that rebuilt its read model from every event.
    assert typed == scratch_typed and portfolio == scratch_portfolio and http == scratch_http
    assert http[0] == 200 and len(http[1]["status"]["breaches"]) == 2 and http[1]["status"]["version"] == 0
