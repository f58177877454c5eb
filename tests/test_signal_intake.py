"""Signals the way departments already produce them, through the gateway's HTTP port: a
SignalBatch as JSON (`POST /v1/signals`) and a real Alertmanager's webhook notifications
(`POST /v1/intake/alertmanager`), both forwarded to the metrics service over gRPC with the
caller's own token. The agreements, metrics and gateway services run as they do in
production (their real bootstraps, real NATS, SQLite, gRPC and HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from accord.metrics.v1 import signals_pb2 as spb
from accord_gateway.bootstrap import build as build_gateway
from accord_gateway.intake import IntakeError, MetricsForwarder
from accord_gateway.settings import load as load_gateway
from accord_kit.auth import mint_token
from accord_kit.testing.monitoring import http_json, running_alertmanager
from accord_kit.testing.nats import NatsServer, free_port
from accord_kit.testing.service import Keys, running_service, service_environ
from accord_kit.testing.streams import eventually
from tests.test_journey_signals import agreements_and_metrics


@dataclass
class Intake:
    keys: Keys
    metrics: Any  # the metrics application
    url: str  # the gateway's HTTP root

    def token(self, role: str = "department", department: str = "it-operations") -> str:
        return f"Bearer {mint_token(self.keys.private, subject='producer', role=role, department=department)}"

    async def post(self, path: str, body: Any, token: str | None = None) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}

        def call() -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(self.url + path, data=raw, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        return await asyncio.to_thread(call)

    def stored(self, service_id: str = "email") -> list[spb.Signal]:
        return list(self.metrics.signals(service_id))


@contextlib.asynccontextmanager
async def intake(nats_url: str, tmp_path: Path) -> AsyncIterator[Intake]:
    async with agreements_and_metrics(nats_url, tmp_path) as (keys, agreements, metrics, _a, _m):
        app = metrics.parts.app

        def learned() -> bool:
            try:
                return bool(app.provider_of("email") == "it-operations")
            except Exception:
                return False

        await eventually(learned, timeout=20, what="metrics learned the provider of email")
        http_port = free_port()
        env = service_environ(
            "gateway",
            tmp_path / "g",
            nats_url,
            "sqlite",
            GATEWAY_HTTP_PORT=str(http_port),
            ACCORD_METRICS_ADDR=f"127.0.0.1:{metrics.port}",
            ACCORD_AGREEMENTS_ADDR=f"127.0.0.1:{agreements.port}",
        )
        async with running_service(build_gateway, load_gateway(env), keys):
            yield Intake(keys, app, f"http://127.0.0.1:{http_port}")


T0 = "2026-03-01T10:00:00Z"


def outage(sid: str, start: str = T0, end: str = "2026-03-01T10:05:00Z") -> dict[str, Any]:
    return {"signal_id": sid, "service_id": "email", "outage": {"start": start, "end": end}}


async def test_a_signal_batch_as_json_is_recorded_with_the_same_rules_and_answers_as_grpc(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    async with intake(own_nats_server.url, tmp_path) as it:
        provider = it.token()
        call = {
            "signalId": "c1",
            "serviceId": "email",
            "call": {"enteredQueue": T0, "answeredAt": "2026-03-01T10:00:20Z", "talkSeconds": 120.50},
        }
        raw = json.dumps({"signals": [outage("o1"), call]}).replace("120.5", "120.50")  # a number as written
        status, body = await it.post("/v1/signals", raw.encode(), provider)
        assert (status, body) == (200, {"accepted": 2, "duplicates": 0, "corrections": 0})
        stored = {s.signal_id: s for s in it.stored()}
        assert stored["c1"].call.talk_seconds == "120.50", "a plain number kept exactly as written"
        assert stored["o1"].provenance == spb.Provenance(source="http")

        # A retry is a duplicate; another end of o1 a correction; a named source is kept.
        fixed = outage("o1", end="2026-03-01T10:07:00Z")
        fixed["provenance"] = {"source": "status-page", "manual": True, "reference": "incident 42"}
        raw = json.dumps({"signals": [call, fixed]}).replace("120.5", "120.50")
        status, body = await it.post("/v1/signals", raw.encode(), provider)
        assert (status, body) == (200, {"accepted": 0, "duplicates": 1, "corrections": 1})
        assert it.stored()[-1].provenance == spb.Provenance(source="status-page", manual=True, reference="incident 42")

        count = len(it.stored())
        refusals = [
            # (body, token) → (status, field, words in the error)
            ({"signals": [outage("x", end=T0)]}, provider, 400, "signals[0].outage.end", "must be after start"),
            ({"signals": [outage("x", start="10:00")]}, provider, 400, "signals[0].outage.start", "cannot be read"),
            ({"signals": [{**outage("x"), "colour": "red"}]}, provider, 400, "signals[0].colour", "no such field"),
            ({"signals": []}, provider, 400, "signals", "at least one signal"),
            (b"{not json", provider, 400, None, "not JSON"),
            ({"signals": [{**outage("x"), "service_id": "payroll"}]}, provider, 400, None, "not registered"),
            ({"signals": [outage("x")]}, None, 401, None, "no bearer token"),
            ({"signals": [outage("x")]}, "Bearer forged", 401, None, ""),
            ({"signals": [outage("x")]}, it.token(department="finance"), 403, None, "only the provider"),
            ({"signals": [outage("x")]}, it.token(role="auditor", department=""), 403, None, ""),
            ({"signals": [outage(f"m{i}") for i in range(10_001)]}, provider, 413, "signals", "at most 10000"),
        ]
        for body_in, token, want, field, words in refusals:
            status, body = await it.post("/v1/signals", body_in, token)
            assert status == want, (body_in if isinstance(body_in, bytes) else str(body_in)[:200], body)
            assert words in body["error"], body
            if field is not None:
                assert body["field"] == field, body
        assert len(it.stored()) == count, "a refused request stored something"

        # The metrics service unreachable: 503, to be retried.
        down = MetricsForwarder(f"127.0.0.1:{free_port()}")
        with pytest.raises(IntakeError) as refused:
            await down.record(provider, [spb.Signal(signal_id="x", service_id="email")])
        assert refused.value.status == 503 and "try again" in refused.value.error
        await down.close()

        doc = await asyncio.to_thread(http_json, it.url + "/openapi.json")
        for path in ("/v1/signals", "/v1/intake/alertmanager"):
            assert set(doc["paths"][path]["post"]["responses"]) == {
                "200",
                "400",
                "401",
                "403",
                "413",
                "422",
                "502",
                "503",
            }
        assert "outage" in doc["components"]["schemas"]["Signal"]["properties"]


def alert(start: datetime, end: datetime | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "labels": {"alertname": "EmailDown", "job": "smtp"},
        "annotations": {"summary": "SMTP refuses connections"},
        "startsAt": start.isoformat().replace("+00:00", "Z"),
    }
    if end is not None:
        doc["endsAt"] = end.isoformat().replace("+00:00", "Z")
    return doc


@pytest.mark.slow
async def test_a_real_alertmanager_reports_an_outage_firing_then_resolved(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    async with intake(own_nats_server.url, tmp_path) as it:
        config = {
            "global": {"resolve_timeout": "5m"},
            "route": {
                "receiver": "accord",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "accord",
                    "webhook_configs": [
                        {
                            "url": f"{it.url}/v1/intake/alertmanager?service=email",
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": it.token()[7:]}},
                        }
                    ],
                }
            ],
        }
        async with running_alertmanager(config, tmp_path / "am") as am:
            now = datetime.now(UTC).replace(microsecond=0)
            start, end = now - timedelta(minutes=10), now - timedelta(seconds=2)
            await asyncio.to_thread(http_json, am.url + "/api/v2/alerts", [alert(start)], method="POST")

            def outages() -> list[spb.Signal]:
                return [s for s in it.stored() if s.provenance.source == "alertmanager"]

            await eventually(lambda: len(outages()) == 1, timeout=30, what="the firing alert recorded")
            firing = outages()[0]
            assert firing.outage.start.ToDatetime(tzinfo=UTC) == start
            assert not firing.outage.HasField("end"), "under way while firing"
            assert firing.outage.cause == "SMTP refuses connections"
            fingerprint = firing.provenance.reference
            assert firing.signal_id == f"am:{fingerprint}:{start.isoformat().replace('+00:00', 'Z')}"

            await asyncio.to_thread(http_json, am.url + "/api/v2/alerts", [alert(start, end)], method="POST")
            await eventually(lambda: len(outages()) == 2, timeout=30, what="the resolved alert recorded")
            resolved = outages()[1]
            assert resolved.signal_id == firing.signal_id, "the same outage, completed"
            assert resolved.outage.start.ToDatetime(tzinfo=UTC) == start
            assert resolved.outage.end.ToDatetime(tzinfo=UTC) == end

        # Repeated notifications (Alertmanager retries, a firing one arriving late) change nothing.
        for status_of, ends in (("resolved", end), ("firing", None)):
            payload = {
                "version": "4",
                "status": status_of,
                "alerts": [{**alert(start, ends), "status": status_of, "fingerprint": fingerprint}],
            }
            status, body = await it.post("/v1/intake/alertmanager?service=email", payload, it.token())
            assert (status, body) == (200, {"accepted": 0, "duplicates": 1, "corrections": 0})
        assert len(outages()) == 2
        status, body = await it.post("/v1/intake/alertmanager?service=email", payload, None)
        assert status == 401
        payload["alerts"][0]["labels"]["accord_service"] = "payroll"  # the label names the service
        status, body = await it.post("/v1/intake/alertmanager?service=email", payload, it.token())
        assert status == 400 and "payroll" in body["error"]


async def test_a_signal_batch_as_json_says_why_its_corrections_are_sent(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    """`correction_reason` (or `correctionReason`) of the JSON batch is the reason metrics
    keeps with the corrections it brings; one metrics refuses is a 400 naming the field, and
    nothing is stored."""
    from accord_metrics.signal_index import CORRECTION_TOPIC

    def reasons(app: Any) -> list[str]:
        notes = app.recorder.select_notifications(start=0, limit=100, topics=[CORRECTION_TOPIC])
        return [app.mapper.to_domain_event(n).reason for n in notes]

    async with intake(own_nats_server.url, tmp_path) as it:
        provider = it.token()
        assert (await it.post("/v1/signals", {"signals": [outage("o1")]}, provider))[0] == 200
        fixed = outage("o1", end="2026-03-01T10:07:00Z")
        body_in = {"signals": [fixed], "correctionReason": "the status page's end"}
        assert await it.post("/v1/signals", body_in, provider) == (
            200, {"accepted": 0, "duplicates": 0, "corrections": 1},
        )  # fmt: skip
        assert reasons(it.metrics) == ["the status page's end"]
        count = len(it.stored())
        again = outage("o1", end="2026-03-01T10:09:00Z")
        for reason, words in (("line\nbreak", "must be printable text"), ("y" * 501, "at most 500"),
                              (["a"], "must be a JSON string")):  # fmt: skip
            status, body = await it.post("/v1/signals", {"signals": [again], "correction_reason": reason}, provider)
            assert (status, body.get("field")) == (400, "correction_reason"), body
            assert words in body["error"], body
        assert len(it.stored()) == count and len(reasons(it.metrics)) == 1, "a refused request stored something"
