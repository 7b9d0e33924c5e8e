"""The dashboard's data (`GET /status`) and page (`GET /dashboard`): the numbers are the ones /metrics shows, no
identity appears, and `server.dashboard` decides who may see them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from pushstr.api.app import create_app
from pushstr.api.dashboard import DashboardAccess
from pushstr.api.schemas import Status
from pushstr.api.status import quantile
from pushstr.app import Service
from pushstr.config import ConfigError, ServerConfig
from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from tests.conftest import free_port
from tests.e2e.clients import dm, publish, register
from tests.harness import RunningServer, make_settings, wait_until

BASE = "http://pushstr.test"
TOKEN = "k3y-for-the-dashboard-0123456789"
Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Scraped:
    """/metrics as (sample name, labels) → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def summed(metrics: Scraped, name: str, **labels: str) -> int:
    wanted = set(labels.items())
    return int(sum(value for (sample, have), value in metrics.items() if sample == name and wanted <= have))


async def read_both(
    server: RunningServer,
) -> tuple[dict[str, Any], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        status = (await client.get("/status")).json()
        metrics = scrape((await client.get("/metrics")).text)
    Status.model_validate(status)
    return status, metrics


def registrations(status: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(entry["dialect"], entry["platform"]): entry["count"] for entry in status["registrations"]}


async def test_status_reports_what_metrics_counts_and_names_nobody(tmp_path: Path, local_relay: Any) -> None:
    relay = await local_relay()
    server = RunningServer(make_settings(tmp_path, [relay.url], Keys.generate().secret_hex))
    await server.start()
    alice, bob = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    token = "d00d" * 16
    user_relay = f"ws://127.0.0.1:{free_port()}/bobs-private-path"
    try:
        await wait_until(lambda: any(s.subscriptions for s in server.service.pool.status()), timeout=10)
        before, _ = await read_both(server)
        await register(server, bob, token)
        server.service.pool.add_relay(user_relay)
        for text in ("one", "two"):
            await publish(relay.url, dm(alice, bob, text))
        await server.wait_for_pushes(2)
        await wait_until(lambda: server.service.delivery.pending == 0)
        status, metrics = await read_both(server)
    finally:
        await server.stop()

    # The same numbers as /metrics, read a moment apart with nothing flowing in between.
    assert status["events"]["admitted"] == summed(metrics, "pushstr_events_admitted_total")
    assert status["events"]["matched"] == summed(metrics, "pushstr_events_matched_total")
    for reason, count in status["events"]["rejected"].items():
        assert count == summed(metrics, "pushstr_events_rejected_total", reason=reason)
    for outcome, count in status["pushes"]["outcomes"].items():
        assert count == summed(metrics, "pushstr_push_outcomes_total", outcome=outcome)
    assert status["latency"]["count"] == summed(metrics, "pushstr_push_send_seconds_count")
    assert status["latency"]["cumulative"][-1] == status["latency"]["count"]
    assert status["outbox"]["pending"] == summed(metrics, "pushstr_outbox_pending") == 0
    for (dialect, platform), count in registrations(status).items():
        assert count == summed(metrics, "pushstr_registrations", dialect=dialect, platform=platform)

    # What this test made happen, and nothing else.
    assert status["events"]["admitted"] - before["events"]["admitted"] == 2
    assert status["events"]["matched"] - before["events"]["matched"] == 2
    delivered = status["pushes"]["outcomes"]["delivered"] - before["pushes"]["outcomes"]["delivered"]
    assert delivered == 2
    assert status["latency"]["count"] - before["latency"]["count"] == 2
    assert status["latency"]["p50"] is not None
    grown = registrations(status)
    assert grown[("http-nip98", "android")] - registrations(before).get(("http-nip98", "android"), 0) == 1

    operator, named = status["relays"]
    assert operator["configured"] is True and operator["state"] == "connected"
    assert operator["subscriptions"]["open"] >= 1
    assert named["configured"] is False and named["relay"].startswith("user-")
    assert status["user_relays"]["total"] == status["user_relays"]["shown"] == 1
    assert status["dashboard"] == "public"

    body = httpx.Response(200, json=status).text
    bob_hex = bob.public_key().to_hex()
    for private in (bob_hex, nip19.npub_encode(bob_hex), alice.public_key().to_hex(), token, "bobs-private-path"):
        assert private not in body


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    bounds = [0.1, 0.5, 1.0]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 10, 10, 10]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 4, 8, 8]) == pytest.approx(0.5)  # rank 4 ends the second bucket
    assert quantile(0.75, bounds, [0, 4, 8, 8]) == pytest.approx(0.75)
    assert quantile(0.99, bounds, [0, 4, 8, 10]) == 1.0  # in the +Inf bucket: the last finite bound


# -- who may see it ---------------------------------------------------------------------------------------------


@pytest.fixture
async def client_for(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: an HTTP client for an app built with these `[server]` settings (its service not started: the
    routes read what exists)."""
    clients: list[httpx.AsyncClient] = []

    def build(**server: Any) -> httpx.AsyncClient:
        settings = make_settings(tmp_path / str(len(clients)), [], Keys.generate().secret_hex, server=server)
        app = create_app(Service(settings), manage_service=False)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


async def test_off_means_neither_path_exists(client_for: Callable[..., httpx.AsyncClient]) -> None:
    client = client_for(dashboard="off", dashboard_token=TOKEN)
    for path in ("/status", "/dashboard", "/dashboard/dashboard.js"):
        response = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404
        assert response.json()["error"] == "not_found" and response.json()["reason"]


async def test_token_mode_asks_for_the_bearer_token_on_status_only(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    client = client_for(dashboard_token=TOKEN)  # auto with a token: token
    page = await client.get("/dashboard")
    assert page.status_code == 200 and "<svg" in page.text

    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
        refused = await client.get("/status", headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {"error": "unauthorized", "reason": refused.json()["reason"]}
        assert "Bearer" in refused.json()["reason"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * 100_000):
        refused = await client.get("/status", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 401 and refused.json()["reason"] == "wrong dashboard token"

    allowed = await client.get("/status", headers={"Authorization": f"bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert Status.model_validate(allowed.json()).dashboard == "token"
    assert allowed.headers["cache-control"] == "no-store"


async def test_public_mode_is_open(client_for: Callable[..., httpx.AsyncClient]) -> None:
    client = client_for(dashboard="public", host="0.0.0.0")
    assert (await client.get("/status")).json()["dashboard"] == "public"
    assert (await client.get("/dashboard")).status_code == 200


async def test_the_token_file_is_read_once_at_start(
    tmp_path: Path, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    path = tmp_path / "dashboard.token"
    path.write_text(f"  {TOKEN}\n")
    client = client_for(dashboard_token_file=str(path))
    path.write_text("a-different-token-written-later\n")
    assert (await client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    later = await client.get("/status", headers={"Authorization": "Bearer a-different-token-written-later"})
    assert later.status_code == 401


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("short\n", "16 to 512 characters"), ("with spaces inside it\n", "visible ASCII")],
)
def test_a_token_file_without_a_usable_token_stops_the_start(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "dashboard.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        DashboardAccess.from_config(ServerConfig(dashboard_token_file=path))


@pytest.mark.parametrize(
    ("server", "mode"),
    [
        ({}, "public"),
        ({"host": "localhost"}, "public"),
        ({"host": "::1"}, "public"),
        ({"host": "0.0.0.0"}, "off"),
        ({"public_url": "https://push.example"}, "off"),
        ({"trusted_proxies": ["127.0.0.1"]}, "off"),
        ({"host": "0.0.0.0", "dashboard_token": TOKEN}, "token"),
        ({"dashboard": "public", "host": "0.0.0.0"}, "public"),
        ({"dashboard": "off"}, "off"),
        ({"dashboard": "token", "dashboard_token_file": "/run/secrets/dashboard"}, "token"),
    ],
)
def test_auto_is_public_only_where_nobody_else_can_reach_it(server: dict[str, Any], mode: str) -> None:
    assert ServerConfig.model_validate(server).dashboard_mode == mode


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({"dashboard_token": "short"}, "16 to 512 characters"),
        ({"dashboard_token": "a token with spaces"}, "visible ASCII"),
        ({"dashboard_token": TOKEN, "dashboard_token_file": "/t"}, "not both"),
        ({"dashboard": "token"}, "needs dashboard_token"),
    ],
)
def test_unusable_token_settings_are_refused(server: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ServerConfig.model_validate(server)


async def test_the_page_runs_no_inline_script_and_sets_its_headers(
    client_for: Callable[..., httpx.AsyncClient],
) -> None:
    client = client_for()
    page = await client.get("/dashboard")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.DOTALL)
    assert scripts and all('src="' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page.text)  # no inline event handlers either
    script = await client.get("/dashboard/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert "innerHTML" not in script.text  # everything shown is set as text
    style = await client.get("/dashboard/dashboard.css")
    assert style.headers["content-type"].startswith("text/css")
    missing = await client.get("/dashboard/pushstr.toml")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
