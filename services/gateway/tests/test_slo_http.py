"""The SLO reads over real HTTP (the app served by uvicorn on a free port), the read model fed
by a suite's real stores and the breach timeline's signals read over a real gRPC channel from
a metrics server on the suite's metrics store: the error budget over time per window, bounded
and filtered by range; the breach timeline with the outages behind each breached window, and
what it says when metrics does not answer; statements with the adjustment on the open one and
an accepted dispute's amount — and the net it makes — before the statement is final; the refusals (401, 404, 422)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from accord_gateway import projection
from accord_gateway.explain import MetricsWindowSignals
from accord_gateway.http import create_app
from accord_gateway.projection import ReadModel
from accord_kit.auth import TokenVerifier, mint_token
from accord_kit.grpc_server import build_server
from accord_kit.testing.nats import free_port
from accord_kit.testing.service import make_keys
from accord_metrics.bootstrap import POLICY as METRICS_POLICY
from accord_metrics.server import ERROR_MAP as METRICS_ERRORS
from accord_metrics.server import register_metrics
from tests.suite import FINANCE, P_CUSTOMER, P_PROVIDER, Suite, feed, slo_journey


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def get(url: str, token: str | None) -> tuple[int, Any]:
    def call() -> tuple[int, Any]:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    return await asyncio.to_thread(call)


def fill(model: ReadModel, suite: Suite) -> None:
    for source, app in (("agreements", suite.agreements), ("metrics", suite.metrics), ("billing", suite.billing)):
        feed(source, app, model)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_budget_breaches_and_money_over_http(
    tmp_path: Path, make_store_env: Callable[[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # At most 3 points a window here, to see the bound hold (and the first and last kept).
    monkeypatch.setattr(projection, "SERIES_POINTS", 3)
    suite = Suite(make_store_env)
    try:
        aid, feb_statement = slo_journey(suite)
        keys = make_keys(tmp_path / "keys")
        verifier = TokenVerifier(keys.public_file.read_bytes())
        fin = mint_token(keys.private, subject="fin", role="department", department=FINANCE)
        stranger = mint_token(keys.private, subject="mkt", role="department", department="marketing")
        service = mint_token(keys.private, subject="gateway", role="service")
        metrics = build_server(
            host="127.0.0.1", port=0, policy=METRICS_POLICY, verifier=verifier,
            register=[register_metrics(suite.metrics)], error_map=METRICS_ERRORS,
        )  # fmt: skip
        await metrics.start()
        reader = MetricsWindowSignals(f"127.0.0.1:{metrics.port}", token=lambda: service)
        model = ReadModel()
        fill(model, suite)
        recorded = {
            w.window_start: w.latest for w in suite.metrics.window_evaluations(aid) if w.objective_id == "availability"
        }
        jan, feb, mar = sorted(recorded, key=lambda s: s)
        try:
            async with serving(create_app(lambda: True, model, verifier, window_signals=reader)) as base:
                objective = f"{base}/v1/agreements/{aid}/objectives/availability"

                # The error budget per window, as metrics recorded it, in the agreement's zone.
                code, body = await get(f"{objective}/budget", fin)
                assert code == 200, body
                doc = body["status"]
                assert (doc["time_zone"], doc["target"], doc["name"]) == (
                    "Europe/Amsterdam",
                    "99.9",
                    "Monthly availability",
                )
                assert [w["window_start"] for w in doc["windows"]] == [jan, feb, mar]
                for w in doc["windows"]:
                    latest = recorded[w["window_start"]]
                    assert w["budget_remaining"] == latest["budget_remaining"] and w["status"] == latest["status"]
                    assert 1 <= len(w["points"]) <= 3
                    assert [p["at"] for p in w["points"]] == sorted(p["at"] for p in w["points"])
                closing = doc["windows"][1]["points"][-1]  # February's closing point, as of its end
                assert (closing["at"], closing["closed"], closing["status"]) == (
                    "2026-02-28T23:00:00+00:00",
                    True,
                    "BREACHED",
                )
                assert doc["windows"][1]["points"][0]["budget_remaining"] == "100"  # the first is kept
                restated = doc["windows"][0]["points"][-1]  # January restated by the late outage
                assert restated["restated"] and restated["status"] == "BREACHED"

                # A range: February only (from and to with offsets); a range without an offset is refused.
                q = urllib.parse.urlencode({"from": "2026-02-01T00:00:00+01:00", "to": "2026-03-01T00:00:00+01:00"})
                code, body = await get(f"{objective}/budget?{q}", fin)
                assert code == 200 and [w["window_start"] for w in body["status"]["windows"]] == [feb]
                assert body["status"]["from"] == "2026-02-01T00:00:00+01:00"
                code, body = await get(f"{objective}/budget?from=2026-02-01T00:00:00", fin)
                assert code == 422 and body["detail"][0]["loc"] == ["query", "from"], body
                code, body = await get(f"{objective}/budget?to=yesterday", fin)
                assert code == 422 and body["detail"][0]["loc"] == ["query", "to"], body

                # The breach timeline: each breached window with the outages metrics holds for it.
                code, body = await get(f"{objective}/breaches", fin)
                assert code == 200, body
                windows = {w["window_start"]: w for w in body["status"]["windows"]}
                assert set(windows) == {jan, feb}
                assert [s["signal_id"] for s in windows[feb]["signals"]] == ["feb"]
                assert windows[feb]["signals"][0]["minutes"] == "60" and windows[feb]["signals_error"] == ""
                assert windows[feb]["breaches"][0]["certain_before_close"] is True
                assert [s["signal_id"] for s in windows[jan]["signals"]] == ["jan", "jan-late"]

                # Money as billing knows it: March's open statement carries January's adjustment.
                code, body = await get(f"{base}/v1/agreements/{aid}", fin)
                statements = body["status"]["statements"]
                assert [s["state"] for s in statements] == ["FINAL", "ISSUED", "OPEN"]
                assert statements[1]["totals"]["credits_issued"] == "1200.00"
                assert statements[1]["assessments"][0]["net"] == "1200.00"
                # January's: 10 % of the 11,983.87 January charges (the agreement starts an hour into it).
                assert [(a["objective_id"], a["difference"]) for a in statements[2]["adjustments"]] == [
                    ("availability", "1198.39")
                ]
                # A dispute accepted with an amount: shown as soon as billing records it.
                dispute = suite.billing.dispute(P_CUSTOMER, feb_statement, "availability", feb, "the hour cost us")
                suite.billing.resolve(P_PROVIDER, feb_statement, dispute, True, "2000.00", "agreed")
                fill(model, suite)
                code, body = await get(f"{base}/v1/agreements/{aid}", fin)
                (d,) = body["status"]["disputes"]
                assert (d["state"], d["amount"], d["window_start"], d["resolution"]) == (
                    "ACCEPTED",
                    "2000.00",
                    feb,
                    "agreed",
                )
                # … and in the statement's net and totals at once, while it is still only issued.
                assert body["status"]["statements"][1]["state"] == "ISSUED"
                assert Decimal(body["status"]["statements"][1]["net"]) == Decimal("2000.00")
                assert Decimal(body["status"]["statements"][1]["totals"]["disputes"]) == Decimal("800.00")

                # Refusals: no token, another department, an unknown objective or agreement.
                assert (await get(f"{objective}/budget", None))[0] == 401
                assert (await get(f"{objective}/breaches", stranger))[0] == 404
                code, body = await get(f"{base}/v1/agreements/{aid}/objectives/latency/budget", fin)
                assert code == 404 and "no objective 'latency'" in body["error"]
                assert (await get(f"{base}/v1/agreements/nope/objectives/availability/breaches", fin))[0] == 404

                # Metrics down: the timeline is still given, each window saying why it has no signals.
                await metrics.stop(0)
                code, body = await get(f"{objective}/breaches", fin)
                assert code == 200
                assert all(
                    w["signals"] == [] and w["signals_error"].startswith("metrics did not answer: UNAVAILABLE")
                    for w in body["status"]["windows"]
                ), body
        finally:
            await reader.close()
            await metrics.stop(0)
    finally:
        suite.close()
