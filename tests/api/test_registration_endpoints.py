"""Web Push / UnifiedPush endpoints registered over HTTP + NIP-98 pass the URL guard, with the app's allowed_hosts.

DNS is a table: the dialect gets the guard's `resolve`, so no test here looks a name up for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from pushstr.api.app import create_app
from pushstr.api.errors import install_error_handlers
from pushstr.app import Service
from pushstr.dialects.http_nip98 import HttpNip98
from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from pushstr.registry.model import Registration
from tests.harness import make_settings

USER = Keys.generate()
KEYS = {
    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "auth": "tBHItJI5svbpez7KI4CCXg",
}
DNS = {
    "push.example": ["93.184.215.14"],
    "intranet.example": ["10.1.2.3"],
    "rebound.example": ["93.184.215.14", "127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
}
WEB_APP = {"transport": "webpush", "vapid_subject": "mailto:ops@example.org", "allowed_hosts": ["127.0.0.1"]}


async def table_resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(f"unknown host {host}")
    return DNS[host]


class Client:
    def __init__(self, service: Service, http: httpx.AsyncClient, base: str) -> None:
        self.service = service
        self.http = http
        self.base = base

    async def register(self, platform: str, endpoint: str, **fields: Any) -> httpx.Response:
        body = orjson.dumps(
            {
                "npub": nip19.npub_encode(USER.public_hex),
                "device_token": endpoint,
                "platform": platform,
                **KEYS,
                **fields,
            }
        )
        header = build_authorization(USER, "POST", self.base + "/register", body)
        return await self.http.post("/register", content=body, headers={"authorization": header})

    def stored(self) -> list[Registration]:
        return self.service.registry.registrations_of(USER.public_hex)


async def _service(data_dir: Path) -> Service:
    service = Service(make_settings(data_dir, [], Keys.generate().secret_hex, apps={"web": WEB_APP}))
    await service.start()
    return service


@pytest.fixture
async def dialect(tmp_path: Path) -> AsyncIterator[Client]:
    """The dialect alone, over a real registry and store, with table DNS and a proxy's public URL."""
    service = await _service(tmp_path)
    settings = service.settings
    http_nip98 = HttpNip98(
        service.registry,
        settings.app_for,
        frozenset(settings.registration.default_kinds),
        window_seconds=60,
        public_url="HTTPS://Push.Gateway.Example:443/",
        endpoint_hosts={"web": ["127.0.0.1", "intranet.example"]},
        use_token=service.store.use_token,
        resolve=table_resolve,
    )
    app = FastAPI()
    install_error_handlers(app)
    router = http_nip98.router()
    app.include_router(router)
    # Reached through a proxy at 10.0.0.5:8080; clients sign the public URL, spelled as they like.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.5:8080") as http:
        yield Client(service, http, "https://push.gateway.example")
    await service.stop()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Client]:
    """The whole app as `pushstr serve` builds it: the dialect's allowed hosts come from `[apps.web]`."""
    service = await _service(tmp_path)
    transport = httpx.ASGITransport(app=create_app(service, manage_service=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://pushstr.test") as http:
        yield Client(service, http, "http://pushstr.test")
    await service.stop()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://push.example/wpush/v2/gAAAAABk",
        "http://127.0.0.1:8080/push",
        "https://intranet.example/push",
    ],
)
async def test_public_and_allowed_endpoints_register(dialect: Client, endpoint: str) -> None:
    response = await dialect.register("webpush", endpoint)
    assert response.status_code == 201, response.text
    assert [reg.device_token for reg in dialect.stored()] == [endpoint]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.2/push",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/push",
        "http://10.0.0.7/push",
        "https://localhost/push",
        "https://rebound.example/push",
        "https://nowhere.example/push",
    ],
)
async def test_internal_endpoints_are_400(dialect: Client, endpoint: str) -> None:
    response = await dialect.register("WebPush", endpoint)
    assert response.status_code == 400, response.text
    reason = response.json()["reason"]
    assert reason.startswith("device_token: the push endpoint's host must resolve to public addresses only")
    assert "10.1.2.3" not in reason and "127.0.0.1" not in reason
    assert dialect.stored() == []


@pytest.mark.parametrize(
    ("platform", "endpoint", "reason"),
    [
        ("webpush", "https:///x", "device_token: a webpush token is the push endpoint URL; endpoint has no host"),
        ("up", "ftp://push.example/x", "device_token: a unifiedpush token is the push endpoint URL; endpoint scheme"),
    ],
)
async def test_malformed_endpoints_are_400(dialect: Client, platform: str, endpoint: str, reason: str) -> None:
    response = await dialect.register(platform, endpoint)
    assert response.status_code == 400
    assert response.json()["reason"].startswith(reason)


async def test_unifiedpush_alias_registers_as_unifiedpush(dialect: Client) -> None:
    response = await dialect.register("UP", "https://push.example/up?token=abc")
    assert response.status_code == 201, response.text
    assert response.json()["registration"]["platform"] == "unifiedpush"


async def test_the_configured_apps_allowed_hosts_apply(served: Client) -> None:
    assert (await served.register("webpush", "http://127.0.0.1:9/push")).status_code == 201
    refused = await served.register("unifiedpush", "http://127.0.0.1:9/up", app="default")
    assert refused.status_code == 400
    assert "allowed_hosts" in refused.json()["reason"]
    assert (await served.register("webpush", "http://10.0.0.7/push")).status_code == 400
    assert [reg.app for reg in served.stored()] == ["web"]
