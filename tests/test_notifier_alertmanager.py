"""Burn-rate alerts reach a real Alertmanager (Debian's prometheus-alertmanager, installed by
tools/test_deps.sh): metrics fires the 14.4x alert during an outage and resolves it once the
short window is clean; the notifier posts the firing alert (startsAt, labels alertname,
agreement, objective, severity) and then the resolved one (endsAt), and Alertmanager's own
API shows it active, then no longer."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from accord_kit.testing.nats import free_port
from accord_kit.testing.streams import eventually
from accord_notifier.application import Notifier, Rules
from accord_notifier.delivery import Deliverer, DeliveryPolicy
from accord_notifier.domain import ALERTMANAGER, BURN_RATE_FIRING, BURN_RATE_RESOLVED, DELIVERED, Notification
from tests.suite import AMS, COLLECTOR, Suite, an_active_agreement, at, feed, outage

CONFIG = """
route:
  receiver: nobody
receivers:
  - name: nobody
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is not installed: run tools/test_deps.sh (Debian prometheus-alertmanager)")
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    log = (tmp_path / "am.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Suite]:
    from accord_kit.testing.fixtures import sqlite_env

    s = Suite(lambda name: sqlite_env(tmp_path / f"{name}.sqlite"))
    yield s
    s.close()


async def _alerts(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(f"{url}/api/v2/alerts", params={"filter": 'alertname="AccordBurnRate"'})
        r.raise_for_status()
        alerts: list[dict[str, Any]] = r.json()
        return alerts


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/-/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def test_a_burn_rate_alert_fires_and_resolves_in_alertmanager(
    alertmanager: str, suite: Suite, tmp_path: Path
) -> None:
    await eventually(lambda: _ready(alertmanager), timeout=30, what="Alertmanager ready")
    notifier = Notifier(
        {"PERSISTENCE_MODULE": "accord_kit.persistence:DurableSQLiteFactory",
         "SQLITE_DBNAME": str(tmp_path / "notifier.sqlite")},
        clock=suite.clock, rules=Rules(alertmanager=True),
    )  # fmt: skip
    deliverer = Deliverer(notifier, DeliveryPolicy(alertmanager_url=alertmanager, retry_base=0.1))
    sent: Callable[[str], list[Notification]] = lambda kind: [  # noqa: E731
        n for n in notifier.list_deliveries(None, "", limit=1000) if n.kind == kind
    ]
    try:
        aid = an_active_agreement(suite)
        # A ten-minute outage seen two minutes after its end: the fast pairs fire.
        suite.clock.set(at(f"2026-01-20T11:12{AMS}"))
        suite.metrics.record(COLLECTOR, [outage("o1", f"2026-01-20T11:00{AMS}", 10)])
        suite.tick(f"2026-01-20T11:12{AMS}")
        feed("agreements", suite.agreements, notifier)
        feed("metrics", suite.metrics, notifier)
        async with httpx.AsyncClient(timeout=5) as client:
            assert await deliverer.deliver_due(client) >= 1
            firing = [a for a in await _alerts(alertmanager) if a["labels"]["pair"].startswith("14.4x")]
            assert len(firing) == 1, firing
            labels = firing[0]["labels"]
            assert (labels["agreement"], labels["objective"], labels["severity"]) == (aid, "availability", "critical")
            assert firing[0]["status"]["state"] == "active"
            # The short window clean again: metrics resolves the alert; Alertmanager is told it ended.
            suite.tick(f"2026-01-20T11:30{AMS}")
            feed("metrics", suite.metrics, notifier)
            assert await deliverer.deliver_due(client) >= 1
        remaining = [a for a in await _alerts(alertmanager) if a["labels"]["pair"].startswith("14.4x")]
        assert remaining == [], remaining
        for n in sent(BURN_RATE_FIRING) + sent(BURN_RATE_RESOLVED):
            assert n.target == ALERTMANAGER and n.state == DELIVERED, (n.kind, n.outcome)
        resolved = [n for n in sent(BURN_RATE_RESOLVED) if n.body["labels"]["pair"].startswith("14.4x")]
        assert len(resolved) == 1 and resolved[0].body["endsAt"] >= firing[0]["startsAt"][:19]
    finally:
        notifier.close()
