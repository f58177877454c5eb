"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): it asks
for a token, shows the portfolio and an agreement's objectives, and shows a breach after
signals arrive without a reload. A screenshot is saved to test-artifacts/dashboard.png."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from accord_kit.auth import mint_token
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys
from accord_kit.testing.streams import eventually
from tests.suite import AMS, COLLECTOR, FINANCE, Suite, an_active_agreement, gateway_over, outage

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_the_dashboard_shows_a_breach_live(
    own_nats_server: NatsServer, tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (`make test` does, as root)")
    suite = Suite(make_store_env)
    aid = an_active_agreement(suite)
    keys = make_keys(tmp_path / "keys")
    token = mint_token(keys.private, subject="fin", role="department", department=FINANCE)
    try:
        async with gateway_over(suite, own_nats_server.url, tmp_path, keys) as (gateway, http_port, _):
            await eventually(lambda: gateway.parts.applier.agreement(aid) is not None, timeout=20)
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = await browser.new_page(viewport={"width": 1200, "height": 900})
                await page.goto(f"http://127.0.0.1:{http_port}/")
                await page.fill("#token", token)
                await page.click("button[type=submit]")
                await page.wait_for_selector("#agreements a", timeout=10_000)
                assert "E-mail service for Finance" in await page.inner_text("#agreements")
                await page.click("#agreements a")
                await page.wait_for_selector("tr.objective", timeout=10_000)
                assert await page.inner_text("#health") != "BREACHED"
                # Signals arrive: a four-hour outage breaches availability; the page updates itself.
                suite.metrics.record(COLLECTOR, [outage("big", f"2026-01-10T05:00{AMS}", 240)])
                suite.tick(f"2026-01-10T10:05{AMS}")
                # The health and the breach list come from two events the gateway applies one at a
                # time, and the page redraws after each: wait for both, not for the first.
                await page.wait_for_function(
                    "document.getElementById('health').textContent === 'BREACHED'"
                    " && document.getElementById('breaches').textContent.includes('availability')",
                    timeout=10_000,
                )
                assert await page.locator("tr.objective td.BREACHED").count() >= 1
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                await browser.close()
    finally:
        suite.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
