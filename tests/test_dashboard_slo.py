"""The dashboard's SLO page in a real headless Chromium (Debian's package, driven by
Playwright), over the gateway as it runs and a metrics gRPC server on the suite's metrics
store: a journey with a breach, a credit, a late outage adjusting the open statement and a
dispute. The page shows the error budget over time (current and previous windows, dates in
the agreement's zone), the burn-rate alerts and budget warnings metrics raised, the breach
timeline with the outages behind it, and every statement amount as soon as billing knows it
(the accepted dispute's amount arrives live). The portfolio is searched and sorted. `/docs`
loads with no request leaving the gateway, and "Authorize" + "Try it out" answers. The
screenshots (under the test's tmp dir) are checked: the expected size, not blank."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat
from playwright.async_api import Page, async_playwright

from accord_kit.auth import TokenVerifier, mint_token
from accord_kit.eventlog import register_event_log
from accord_kit.grpc_server import build_server
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import Keys, make_keys
from accord_kit.testing.streams import eventually
from accord_metrics.bootstrap import POLICY as METRICS_POLICY
from accord_metrics.server import ERROR_MAP as METRICS_ERRORS
from accord_metrics.server import register_metrics
from tests.suite import (
    FINANCE,
    P_CUSTOMER,
    P_PROVIDER,
    Suite,
    gateway_over,
    slo_journey,
)

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
WIDTH, HEIGHT = 1200, 900
ZONE = "Europe/Amsterdam"


@asynccontextmanager
async def metrics_server(suite: Suite, keys: Keys) -> AsyncIterator[int]:
    """MetricsService (and its log) over the suite's metrics application, on a free port."""
    server = build_server(
        host="127.0.0.1",
        port=0,
        policy=METRICS_POLICY,
        verifier=TokenVerifier(keys.public_file.read_bytes()),
        register=[register_metrics(suite.metrics), register_event_log(suite.metrics)],
        error_map=METRICS_ERRORS,
    )
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop(0)


def check_screenshot(path: Path, width: int, min_height: int) -> None:
    """The expected size, and not blank: many colours, and real contrast."""
    with Image.open(path) as image:
        assert image.width == width and image.height >= min_height, image.size
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "a blank (or nearly single-colour) screenshot"
        assert max(ImageStat.Stat(rgb.convert("L")).stddev) > 20, "no contrast: nothing drawn"


async def text(page: Page, selector: str) -> str:
    return await page.inner_text(selector)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_the_slo_page_shows_budget_alerts_breaches_and_money(
    own_nats_server: NatsServer, tmp_path: Path, make_store_env: Callable[[str], dict[str, str]]
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (`make test` does, as root)")
    suite = Suite(make_store_env)
    aid, feb_statement = slo_journey(suite)
    keys = make_keys(tmp_path / "keys")
    token = mint_token(keys.private, subject="fin", role="department", department=FINANCE)
    service_token = tmp_path / "gateway.token"
    service_token.write_text(mint_token(keys.private, subject="gateway", role="service"))
    # What the owning services recorded: the page must say the same.
    windows = {(w.objective_id, w.window_start): w for w in suite.metrics.window_evaluations(aid)}
    availability = sorted((w for (o, _), w in windows.items() if o == "availability"), key=lambda w: w.window_start)
    jan, feb, mar = availability
    alert_names = {n for w in availability for n in w.burn_alerts}
    statements = suite.billing.statements(P_CUSTOMER, aid)
    march_adjustment = statements[2].adjustments[0]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        async with (
            metrics_server(suite, keys) as metrics_port,
            gateway_over(
                suite,
                own_nats_server.url,
                tmp_path,
                keys,
                ACCORD_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
                ACCORD_SERVICE_TOKEN_FILE=str(service_token),
            ) as (gateway, http_port, _),
        ):
            model = gateway.parts.applier
            # The gateway learns the agreement from its stream: unknown (None) until it has.
            await eventually(
                lambda: len((model.agreement(aid) or {}).get("statements") or []) == 3, timeout=20, what="the journey"
            )
            base = f"http://127.0.0.1:{http_port}"
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                await page.goto(f"{base}/")
                await page.fill("#token", token)
                await page.click("button[type=submit]")

                # The portfolio: title, short id and parties tell the agreements apart; search and sort.
                await page.wait_for_selector("#agreements a", timeout=10_000)
                rows = page.locator("#agreements tbody tr")
                assert await rows.count() == 2
                listed = await text(page, "#agreements")
                assert aid[:8] in listed and "it-operations → finance" in listed
                await page.select_option("#sort", "title")
                assert (await rows.first.inner_text()).startswith("Calendar service for Finance")
                await page.fill("#search", aid[:8])
                assert await rows.count() == 1 and "E-mail service for Finance" in await rows.first.inner_text()
                await page.screenshot(path=str(shots / "portfolio.png"), full_page=True)

                # The SLO page of availability: the current window (March) by default.
                await page.click(f"#agreements a[href='#/agreements/{aid}']")
                await page.wait_for_selector("tr.objective a", timeout=10_000)
                # Money settled apart from money not final: January final (nothing), February
                # issued (1,200.00), March open with January's adjustment so far (10 % of the
                # 11,983.87 January charges: the sample starts an hour into it).
                shown = [await text(page, f"#credits-{k}") for k in ("final", "issued", "open")]
                assert [Decimal(x) for x in shown] == [0, Decimal("1200.00"), Decimal("1198.39")]
                await page.click("tr.objective[data-objective=availability] a")
                await page.wait_for_selector("#budget-chart", timeout=10_000)
                assert await text(page, "#zone") == ZONE
                left = Decimal(mar.latest["budget_remaining"])
                assert await text(page, "#budget-left") == f"{left:.3f} %"
                assert await text(page, "#slo-status") == mar.latest["status"] == "MET"
                march_points = model.budget_series(aid, "availability")[-1]["points"]
                assert await page.locator("#budget-chart circle").count() == len(march_points) >= 2
                # Dates along the axis are the agreement's: March starts on the 1st in Amsterdam.
                ticks = await page.locator("#budget-chart text.xtick").all_text_contents()
                assert ticks[0] == "2026-03-01" and all(t.startswith("2026-03") or t == "2026-04-01" for t in ticks)
                await page.screenshot(path=str(shots / "slo-current.png"), full_page=True)

                # Alerts and warnings, as metrics raised them.
                alerts = await text(page, "#alerts")
                assert alert_names and all(name in alerts for name in alert_names), (alert_names, alerts)
                assert "WINDOW_CLOSED" in alerts  # January's and February's alerts ended with their windows
                warnings = await text(page, "#warnings")
                assert all(f"{level} %" in warnings for level in feb.warnings)

                # The breach timeline: February's window in Amsterdam time, with its outage.
                timeline = page.locator(f"#breach-timeline .window[data-window='{feb.window_start}']")
                assert await timeline.locator("h3").inner_text() == "2026-02-01 00:00 – 2026-03-01 00:00"
                feb_signal = timeline.locator("tr.signal[data-signal=feb]")
                assert await feb_signal.count() == 1
                assert "2026-02-03 08:00" in await feb_signal.inner_text()
                assert "60" in await feb_signal.inner_text()
                assert "2026-01-31 23:00" not in await text(page, "#breach-timeline")
                # January, restated by the late outage, breached too: both of its outages shown.
                jan_window = page.locator(f"#breach-timeline .window[data-window='{jan.window_start}']")
                assert {await r.get_attribute("data-signal") for r in await jan_window.locator("tr.signal").all()} == {
                    "jan",
                    "jan-late",
                }

                # Money: February's credit as issued, and the adjustment on March's still-open statement.
                feb_row = page.locator(f"tr.statement[data-statement='{feb_statement}']")
                assert (await feb_row.locator("td.net").inner_text()).strip() == "1200.00 EUR"
                assert statements[2].state == "OPEN"
                march_row = page.locator(f"tr.statement[data-statement='{statements[2].id}']")
                assert f"{march_adjustment['difference']} EUR" in await march_row.inner_text()
                # Its Net: the adjustment so far, marked as such (not issued).
                march_net = (await march_row.locator("td.net").inner_text()).split()
                assert march_net[:2] == [march_adjustment["difference"], "EUR"] and "so far" in " ".join(march_net)
                assert march_adjustment["difference"] == "1198.39"  # 10 % of the 11,983.87 January charges

                # A previous window: February, read with the range the API takes.
                await page.select_option("#range", feb.window_start)
                await page.wait_for_function(
                    "document.querySelector('#budget-chart text.xtick')?.textContent === '2026-02-01'",
                    timeout=10_000,
                )
                series = model.budget_series(aid, "availability")
                feb_points = next(x for x in series if x["window_start"] == feb.window_start)["points"]
                assert await page.locator("#budget-chart circle").count() == len(feb_points)
                assert await page.locator("#budget-chart circle[fill='#b3261e']").count() >= 1  # breached points
                await page.screenshot(path=str(shots / "slo-february.png"), full_page=True)

                # The customer disputes February; the provider accepts 2,000.00: shown at once, live,
                # while the statement is still only issued.
                dispute = suite.billing.dispute(
                    P_CUSTOMER, feb_statement, "availability", feb.window_start, "the hour cost us the close"
                )
                suite.billing.resolve(P_PROVIDER, feb_statement, dispute, True, "2000.00", "agreed")
                await page.wait_for_function(
                    "document.querySelector(\"tr.statement li.dispute\")?.textContent.includes('2000.00 EUR')",
                    timeout=10_000,
                )
                assert "ACCEPTED" in await feb_row.inner_text()
                await page.wait_for_function(
                    f"document.querySelector(\"tr.statement[data-statement='{feb_statement}'] td.net\")"
                    "?.textContent.trim() === '2000.00 EUR'",
                    timeout=10_000,
                )
                await page.screenshot(path=str(shots / "slo-disputed.png"), full_page=True)

                # /docs: Swagger UI from the gateway itself, no request elsewhere; Authorize + Try it out.
                requested: list[str] = []
                docs = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                docs.on("request", lambda r: requested.append(r.url))
                await docs.goto(f"{base}/docs")
                await docs.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
                assert "Accord gateway" in await docs.inner_text(".swagger-ui .info .title")
                await try_it_out(docs, token)
                await docs.screenshot(path=str(shots / "docs.png"))
                foreign = [u for u in requested if not u.startswith(base + "/") and not u.startswith("data:")]
                assert requested and not foreign, foreign
                await browser.close()
    finally:
        suite.close()
    for name in ("portfolio", "slo-current", "slo-february", "slo-disputed"):
        check_screenshot(shots / f"{name}.png", WIDTH, HEIGHT)
    check_screenshot(shots / "docs.png", WIDTH, HEIGHT)


async def try_it_out(page: Page, token: str) -> None:
    """Authorize with the bearer token and run GET /v1/portfolio from the page: 200."""
    await page.click("button.authorize")
    await page.fill(".modal-ux input[type=text], .modal-ux input[type=password]", token)
    await page.click(".modal-ux button.authorize")
    await page.click(".modal-ux button.btn-done, .modal-ux button.close-modal")
    block = page.locator(".opblock-summary-path[data-path='/v1/portfolio']")
    await block.click()
    await page.click(".opblock.is-open button.try-out__btn")
    await page.click(".opblock.is-open button.execute")
    status: Any = page.locator(".opblock.is-open .live-responses-table tbody .response-col_status").first
    await status.wait_for(timeout=10_000)
    assert (await status.inner_text()).strip().startswith("200")
