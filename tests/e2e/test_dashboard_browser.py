"""The dashboard in a real browser (Debian's chromium, driven by Playwright): the operator gives the token, events
flow from a real relay to the fake APNs and the log transport, the charts draw, and the numbers on the page are
the ones /metrics shows.

The page's screenshot is saved in the test's tmp_path; with `PUSHSTR_SCREENSHOT_TO=<file>` it is also written
there (`PUSHSTR_SCREENSHOT_TO=docs/dashboard.png` makes the README's picture).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
from playwright.async_api import ConsoleMessage, Page, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from pushstr.nostr.keys import Keys
from tests.e2e.clients import dm, publish, register
from tests.fakes import ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.harness import RunningServer, make_settings, wait_until

CHROMIUM = "/usr/bin/chromium"
TOKEN = "operator-only-dashboard-token-42"
ROUNDS = 6
TIMEOUT_MS = 20_000


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def summed(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> int:
    wanted = set(labels.items())
    return int(sum(value for (sample, have), value in metrics.items() if sample == name and wanted <= have))


async def shown(page: Page, selector: str) -> int:
    """The number the page shows in `selector`, read from its text (as the operator reads it)."""
    text = await page.locator(selector).inner_text()
    digits = text.replace(",", "")
    assert digits.isdigit(), text
    return int(digits)


async def wait_shown(page: Page, selector: str, value: int, *, at_least: bool = False) -> None:
    """Until the page shows `value` (or more, `at_least`) in `selector`."""
    await page.wait_for_function(
        "([selector, value, atLeast]) => {"
        " const shown = Number(document.querySelector(selector)?.dataset.value);"
        " return atLeast ? shown >= value : shown === value; }",
        arg=[selector, value, at_least],
        timeout=TIMEOUT_MS,
    )


async def test_the_dashboard_shows_what_metrics_counts(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    relay = await local_relay(notes_per_minute=10_000)
    phone = apns_app(fake_apns, apns_key).model_dump(mode="json", exclude_none=True)
    settings = make_settings(
        tmp_path,
        [relay.url],
        Keys.generate().secret_hex,
        apps={"phone": phone},
        platform_apps={"ios": "phone"},
        server={"dashboard": "token", "dashboard_token": TOKEN},
    )
    server = RunningServer(settings)
    await server.start()
    alice, ios_user, android_user = (nostr_sdk.Keys.generate() for _ in range(3))
    ios_token, android_token = "a1" * 32, "android-device-token-0001"
    identities = [key.public_key().to_hex() for key in (alice, ios_user, android_user)] + [ios_token, android_token]
    problems: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            await register(server, ios_user, ios_token, platform="ios")
            await register(server, android_user, android_token, platform="android")
            trade = nostr_sdk.Keys.generate().public_key().to_hex()
            mostro = await client.post(
                "/api/register", json={"trade_pubkey": trade, "token": "fcm-1", "platform": "android"}
            )
            assert mostro.status_code == 200, mostro.text
            await wait_until(lambda: any(status.subscriptions for status in server.service.pool.status()))

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM)
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})

                def refused_by_policy(message: ConsoleMessage) -> None:
                    if "Content Security Policy" in message.text:
                        problems.append(message.text)

                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.on("console", refused_by_policy)
                await page.goto(f"{server.base_url}/dashboard")

                # Without the token the page shows nothing but the form asking for it.
                await page.locator("#login").wait_for(state="visible", timeout=TIMEOUT_MS)
                assert await page.locator("#board").is_hidden()
                await page.fill("#token", TOKEN)
                await page.click("#login button")
                await page.locator("#board").wait_for(state="visible", timeout=TIMEOUT_MS)

                apns_before, log_before = len(fake_apns.requests), len(server.pushes())
                for round_ in range(1, ROUNDS + 1):
                    await publish(relay.url, dm(alice, ios_user, f"round {round_}"))
                    for copy in range(round_ % 3 + 1):  # uneven rounds, so the chart has a shape
                        await publish(relay.url, dm(alice, android_user, f"round {round_}.{copy}"))
                    await wait_until(lambda round_=round_: len(fake_apns.requests) - apns_before >= round_)
                    status = (await client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})).json()
                    # The next round once the page has drawn this one: its samples show the rounds apart.
                    await wait_shown(page, "#events-admitted", status["events"]["admitted"], at_least=True)
                await wait_until(
                    lambda: len(server.pushes()) - log_before == sum(r % 3 + 1 for r in range(1, ROUNDS + 1))
                )
                await wait_until(lambda: server.service.delivery.pending == 0)
                metrics = scrape((await client.get("/metrics")).text)

                admitted = summed(metrics, "pushstr_events_admitted_total")
                delivered = summed(metrics, "pushstr_push_outcomes_total", outcome="delivered")
                await wait_shown(page, "#events-admitted", admitted)
                await wait_shown(page, "#pushes-delivered", delivered)
                for chart in ("events", "pushes", "outbox", "latency"):
                    await page.wait_for_function(
                        "id => Number(document.getElementById(id).dataset.points) >= 3"
                        " && document.getElementById(id).querySelector('path') !== null",
                        arg=f"chart-{chart}",
                        timeout=TIMEOUT_MS,
                    )

                assert await shown(page, "#events-admitted") == admitted
                assert await shown(page, "#pushes-delivered") == delivered
                assert await shown(page, "#events-matched") == summed(metrics, "pushstr_events_matched_total")
                assert await shown(page, "#outbox-pending") == 0
                rows = page.locator("#registrations tbody tr")
                on_page = {}
                for index in range(await rows.count()):
                    row = rows.nth(index)
                    source = (await row.get_attribute("data-dialect"), await row.get_attribute("data-platform"))
                    on_page[source] = int((await row.locator("td.num").inner_text()).replace(",", ""))
                in_metrics = {
                    (dict(labels)["dialect"], dict(labels)["platform"]): int(value)
                    for (name, labels), value in metrics.items()
                    if name == "pushstr_registrations"
                }
                assert on_page == in_metrics
                assert on_page[("http-nip98", "ios")] >= 1 and on_page[("mostro", "android")] >= 1
                outcome_rows = page.locator("#outcomes tbody tr")
                for index in range(await outcome_rows.count()):
                    row = outcome_rows.nth(index)
                    outcome = await row.get_attribute("data-outcome")
                    assert outcome is not None
                    total = int((await row.locator("td.num").inner_text()).replace(",", ""))
                    assert total == summed(metrics, "pushstr_push_outcomes_total", outcome=outcome)
                relay_row = page.locator("#relays tbody tr").first
                assert (await relay_row.locator("td").nth(1).inner_text()) == "connected"

                text = await page.locator("body").inner_text()
                for identity in identities:
                    assert identity not in text
                screenshot = tmp_path / "dashboard.png"
                await page.screenshot(path=str(screenshot), full_page=True)

                # A token in the fragment is taken and removed from the address; a wrong one asks again.
                linked = await browser.new_page()
                await linked.goto(f"{server.base_url}/dashboard#token={TOKEN}")
                await linked.locator("#board").wait_for(state="visible", timeout=TIMEOUT_MS)
                assert await linked.evaluate("window.location.hash") == ""
                wrong = await browser.new_page()
                await wrong.goto(f"{server.base_url}/dashboard#token=not-the-{TOKEN}")
                await wrong.locator("#login").wait_for(state="visible", timeout=TIMEOUT_MS)
                assert await wrong.locator("#login-error").inner_text() == "wrong dashboard token"
                await browser.close()
    finally:
        await server.stop()
    assert problems == []
    assert screenshot.stat().st_size > 10_000
    target = os.environ.get("PUSHSTR_SCREENSHOT_TO")
    if target:
        shutil.copyfile(screenshot, target)
