"""HTTP registration with NIP-98, through the real ASGI app, store and registry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pushstr.api.app import create_app
from pushstr.app import Service
from pushstr.nostr import nip19
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.harness import make_settings, wait_until

BASE = "http://pushstr.test"
USER = Keys.generate()
OTHER = Keys.generate()
TOKEN = "a1" * 32


class Api:
    def __init__(self, service: Service, client: httpx.AsyncClient) -> None:
        self.service = service
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        signer: Keys = USER,
        signed_url: str | None = None,
        signed_method: str | None = None,
        signed_body: bytes | None = None,
        created_at: int | None = None,
        raw: bytes | None = None,
        header: str | None = None,
    ) -> httpx.Response:
        content = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
        if header is None:
            header = build_authorization(
                signer,
                signed_method or method,
                signed_url or BASE + path,
                signed_body if signed_body is not None else (content or None),
                created_at=created_at,
            )
        headers = {"authorization": header, "content-type": "application/json"}
        return await self.client.request(method, path, content=content, headers=headers)

    def stored(self) -> list[Any]:
        return list(self.service.registry.registrations_of(USER.public_hex))


def _register_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"npub": nip19.npub_encode(USER.public_hex), "device_token": TOKEN, "platform": "ios"}
    body.update(overrides)
    return body


async def _open(data_dir: Path) -> AsyncIterator[Api]:
    settings = make_settings(data_dir, [], Keys.generate().secret_hex)
    service = Service(settings)
    await service.start()
    app = create_app(service, manage_service=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Api(service, client)
    await service.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for handle in _open(tmp_path):
        yield handle


async def test_register_list_unregister(api: Api) -> None:
    response = await api.call("POST", "/register", _register_body())
    assert response.status_code == 201, response.text
    assert response.json()["registration"]["pubkey"] == USER.public_hex
    listed = await api.call("GET", "/registrations")
    assert listed.status_code == 200
    assert [item["device_token"] for item in listed.json()["registrations"]] == [TOKEN]
    removed = await api.call("DELETE", "/unregister", {"device_token": TOKEN})
    assert removed.status_code == 200, removed.text
    assert api.stored() == []
    again = await api.call("POST", "/unregister", {"device_token": TOKEN})
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"


async def test_hex_pubkey_and_options(api: Api) -> None:
    response = await api.call("POST", "/register", _register_body(npub=USER.public_hex, kinds=[4], mode="alert"))
    assert response.status_code == 201, response.text
    [stored] = api.stored()
    assert stored.kinds == frozenset({4})
    assert stored.mode == "alert"
    assert stored.app == "default"


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"signer": OTHER}, "npub"),
        ({"signed_url": BASE + "/elsewhere"}, "url"),
        ({"signed_url": "http://evil.test/register"}, "url"),
        ({"signed_method": "GET"}, "method"),
        ({"created_at": int(time.time()) - 600}, ""),
        ({"signed_body": b'{"npub": "someone else"}'}, "payload"),
        ({"header": "Nostr !!!not-base64"}, ""),
        ({"header": "Bearer abc"}, ""),
    ],
)
async def test_forged_authorization_is_refused_and_stores_nothing(
    api: Api, forgery: dict[str, Any], reason: str
) -> None:
    response = await api.call("POST", "/register", _register_body(), **forgery)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized"
    assert reason in body["reason"].lower()
    assert api.stored() == []


async def test_missing_authorization(api: Api) -> None:
    response = await api.client.post("/register", content=orjson.dumps(_register_body()))
    assert response.status_code == 401
    assert response.json()["reason"]
    assert api.stored() == []


async def test_replayed_authorization_is_refused(api: Api) -> None:
    body = orjson.dumps(_register_body())
    header = build_authorization(USER, "POST", BASE + "/register", body)
    first = await api.call("POST", "/register", raw=body, header=header)
    assert first.status_code == 201
    await api.service.registry.remove(USER.public_hex, TOKEN)
    replay = await api.call("POST", "/register", raw=body, header=header)
    assert replay.status_code == 401
    assert "replay" in replay.json()["reason"]
    assert api.stored() == []


async def test_oversized_body_is_413(api: Api) -> None:
    huge = _register_body(device_token="x" * (api.service.settings.server.max_body_bytes + 10))
    response = await api.call("POST", "/register", huge)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert api.stored() == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({"npub": "x"}), "device_token"),
        (orjson.dumps(_register_body(platform="blackberry")), "platform"),
        (orjson.dumps(_register_body(app="nope")), "unknown app"),
        (orjson.dumps(_register_body(npub="npub1garbage")), "npub"),
        (orjson.dumps(_register_body(platform="webpush")), "endpoint URL"),
        (orjson.dumps(_register_body(platform="webpush", device_token="https://push.example/x")), "p256dh"),
        (orjson.dumps(_register_body(kinds=[70000])), "kinds"),
        (orjson.dumps(_register_body(mode="encrypted")), "device_pubkey"),
    ],
)
async def test_bad_bodies_are_400_with_a_reason(api: Api, raw: bytes, reason: str) -> None:
    response = await api.call("POST", "/register", raw=raw)
    assert response.status_code == 400, response.text
    assert reason in response.json()["reason"]
    assert api.stored() == []


async def test_json_errors_everywhere(api: Api) -> None:
    missing = await api.client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong_method = await api.client.put("/register")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["reason"]


async def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    async for api in _open(tmp_path):
        assert (await api.call("POST", "/register", _register_body())).status_code == 201
    async for api in _open(tmp_path):
        assert [reg.device_token for reg in api.stored()] == [TOKEN]


async def test_health_ready_info_metrics(api: Api) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    assert (await api.client.get("/ready")).status_code == 200
    info = (await api.client.get("/info")).json()
    assert info["pubkey"] == api.service.keys.public_hex
    assert info["npub"].startswith("npub1")
    assert "http-nip98" in info["dialects"]
    assert "log" in info["transports"]
    metrics = await api.client.get("/metrics")
    assert "pushstr_events_admitted_total" in metrics.text
    nip11 = await api.client.get("/", headers={"accept": "application/nostr+json"})
    assert nip11.json()["pubkey"] == api.service.keys.public_hex
    assert (await api.client.get("/openapi.json")).json()["paths"]["/register"]


async def test_registrations_show_the_last_delivery(api: Api) -> None:
    assert (await api.call("POST", "/register", _register_body(platform="android"))).status_code == 201
    before = (await api.call("GET", "/registrations")).json()["registrations"]
    assert before[0]["last_push"] is None
    dm = sign_event(OTHER, 4, "hello", [["p", USER.public_hex]]).to_dict()
    assert api.service.pipeline.ingest(dm).notified == 1
    await wait_until(lambda: api.service.delivery.pending == 0)
    await api.service.delivery.durable()
    # A second token of the same second would be the same event: NIP-98 refuses replays.
    after = await api.call("GET", "/registrations", created_at=int(time.time()) + 1)
    (listed,) = after.json()["registrations"]
    assert listed["last_push"]["outcome"] == "delivered"
    assert abs(listed["last_push"]["at"] - time.time()) < 60
