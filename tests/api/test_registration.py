"""HTTP registration with NIP-98, through the real ASGI app, store and registry."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pushstr.api.app import create_app
from pushstr.app import Service
from pushstr.logutil import shown_url
from pushstr.nostr import nip19
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.harness import make_settings, wait_until

BASE = "http://pushstr.test"
SERVER_SECRET = Keys.generate().secret_hex
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
    settings = make_settings(data_dir, [], SERVER_SECRET)  # one key: the store's tokens are sealed with it
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


REGISTER_BYTES = orjson.dumps(_register_body())


def _signed_event(alteration: str) -> Event:
    """The NIP-98 event for `POST /register` of REGISTER_BYTES, signed now; then its kind, id or sig altered."""
    tags = [["u", BASE + "/register"], ["method", "POST"], ["payload", hashlib.sha256(REGISTER_BYTES).hexdigest()]]
    event = sign_event(USER, 27236 if alteration == "kind" else 27235, "", tags)
    if alteration == "id":
        return Event.from_dict({**event.to_dict(), "content": "altered after signing"})
    if alteration == "sig":
        other = sign_event(OTHER, event.kind, "", event.tags, event.created_at)
        return Event.from_dict({**event.to_dict(), "sig": other.sig})
    return event


@pytest.mark.parametrize(
    ("alteration", "status", "reason"),
    [
        ("none", 201, None),
        ("kind", 401, "wrong kind 27236: a NIP-98 authorization is kind 27235"),
        ("id", 401, "bad id: the event id is not the sha256 of the serialized event"),
        ("sig", 401, "bad signature: sig does not verify for the event's pubkey"),
    ],
)
async def test_the_event_itself_is_checked(api: Api, alteration: str, status: int, reason: str | None) -> None:
    header = "Nostr " + base64.b64encode(_signed_event(alteration).to_json()).decode()
    response = await api.call("POST", "/register", raw=REGISTER_BYTES, header=header)
    assert response.status_code == status, response.text
    assert response.json().get("reason") == reason
    assert len(api.stored()) == (status == 201)


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"signer": OTHER}, "signer is not the npub being registered"),
        ({"signed_url": BASE + "/elsewhere"}, f"u tag does not match the request URL: expected {BASE}/register"),
        (
            {"signed_url": "http://evil.test/register"},
            f"u tag does not match the request URL: expected {BASE}/register",
        ),
        ({"signed_url": "https://pushstr.test/register"}, f"expected {BASE}/register"),
        ({"signed_method": "GET"}, "method tag does not match the request: expected POST"),
        ({"created_at": int(time.time()) - 600}, "token too old: created_at is"),
        ({"created_at": int(time.time()) + 600}, "token too far in the future"),
        ({"signed_body": b'{"npub": "someone else"}'}, "payload tag does not match the sha256 of the body"),
        ({"signed_body": b""}, "missing payload tag"),
        ({"header": "Nostr !!!not-base64"}, "Authorization token is not base64"),
        ({"header": "Nostr " + base64.b64encode(b"<event/>").decode()}, "Authorization token is not JSON"),
        ({"header": "Bearer abc"}, "Authorization scheme is not Nostr"),
    ],
)
async def test_forged_authorization_is_refused_and_stores_nothing(
    api: Api, forgery: dict[str, Any], reason: str
) -> None:
    response = await api.call("POST", "/register", raw=REGISTER_BYTES, **forgery)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized"
    assert reason in body["reason"]
    assert api.stored() == []


async def test_the_window_in_the_reason_is_the_configured_one(api: Api) -> None:
    response = await api.call("POST", "/register", _register_body(), created_at=int(time.time()) - 600)
    assert "accepted within ±60 s of the server's clock" in response.json()["reason"]


async def test_missing_authorization(api: Api) -> None:
    response = await api.client.post("/register", content=orjson.dumps(_register_body()))
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "reason": "missing Authorization header: send 'Authorization: Nostr <base64 of a signed kind 27235 event>'",
    }
    assert api.stored() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/registrations", None), ("DELETE", "/unregister", {"device_token": TOKEN})],
)
async def test_other_routes_say_which_rule_failed(api: Api, method: str, path: str, body: Any) -> None:
    wrong_url = await api.call(method, path, body, signed_url=BASE + "/register")
    assert wrong_url.json()["reason"] == f"u tag does not match the request URL: expected {BASE}{path}"
    wrong_method = await api.call(method, path, body, signed_method="PUT")
    assert wrong_method.json()["reason"] == f"method tag does not match the request: expected {method}"
    assert (wrong_url.status_code, wrong_method.status_code) == (401, 401)


@pytest.mark.parametrize(
    "signed_url",
    ["HTTP://PushStr.Test/register", "http://pushstr.test:80/register", "http://pushstr.test/register/"],
)
async def test_u_spelled_differently_still_authorizes(api: Api, signed_url: str) -> None:
    response = await api.call("POST", "/register", _register_body(), signed_url=signed_url)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("platform", "stored"),
    [
        ("ios", "ios"),
        ("iOS", "ios"),
        ("APNs", "ios"),
        ("apns", "ios"),
        ("Android", "android"),
        ("fcm", "android"),
        ("FCM", "android"),
    ],
)
async def test_platform_names_and_aliases(api: Api, platform: str, stored: str) -> None:
    response = await api.call("POST", "/register", _register_body(platform=platform))
    assert response.status_code == 201, response.text
    assert response.json()["registration"]["platform"] == stored
    [registration] = api.stored()
    assert registration.platform == stored


async def test_an_unknown_platform_names_the_accepted_values(api: Api) -> None:
    response = await api.call("POST", "/register", _register_body(platform="blackberry"))
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "reason": "platform 'blackberry' is not one of ios (or apns), android (or fcm), unifiedpush (or up), webpush",
    }


@pytest.mark.parametrize(
    ("platform", "token", "reason"),
    [
        ("ios", "not-a-hex-token", "device_token: an APNs token is even-length hex, 64–200 characters"),
        ("ios", "abc" * 31, "device_token: an APNs token is even-length hex, 64–200 characters"),
        ("apns", "a1" * 31, "device_token: an APNs token is even-length hex, 64–200 characters"),
        ("android", "two words", "device_token: an FCM token is printable ASCII without spaces, 1–4096 characters"),
        ("up", "a1" * 32, "device_token: a unifiedpush token is the push endpoint URL; endpoint scheme ''"),
        ("unifiedpush", "https:///x", "device_token: a unifiedpush token is the push endpoint URL; endpoint has no"),
    ],
)
async def test_unusable_tokens_are_400_with_a_reason(api: Api, platform: str, token: str, reason: str) -> None:
    response = await api.call("POST", "/register", _register_body(platform=platform, device_token=token))
    assert response.status_code == 400, response.text
    assert response.json()["reason"].startswith(reason)
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


async def test_a_replay_after_a_restart_is_refused(tmp_path: Path) -> None:
    """The used ids are in the store: a captured token replayed after a restart, inside its window, is refused and
    cannot bring back a device its owner removed."""
    body = orjson.dumps(_register_body())
    header = build_authorization(USER, "POST", BASE + "/register", body)
    async for api in _open(tmp_path):
        assert (await api.call("POST", "/register", raw=body, header=header)).status_code == 201
        await api.service.registry.remove(USER.public_hex, TOKEN)
    async for restarted in _open(tmp_path):
        replay = await restarted.call("POST", "/register", raw=body, header=header)
        assert replay.status_code == 401 and "replay" in replay.json()["reason"]
        assert restarted.stored() == []


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        (
            [["u", BASE + "/register"], ["u", "https://elsewhere.example/register"], ["method", "POST"]],
            "more than one u",
        ),
        ([["u", BASE + "/register"], ["method", "post"]], "method tag does not match"),
        ([["u", BASE + "/register"], ["method", "POST"], ["method", "GET"]], "more than one method"),
    ],
)
async def test_u_and_method_tags_are_exact(api: Api, tags: list[list[str]], reason: str) -> None:
    body = orjson.dumps(_register_body())
    event = sign_event(USER, 27235, "", [*tags, ["payload", hashlib.sha256(body).hexdigest()]])
    header = "Nostr " + base64.b64encode(event.to_json()).decode()
    response = await api.call("POST", "/register", raw=body, header=header)
    assert response.status_code == 401 and reason in response.json()["reason"], response.text


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
        (orjson.dumps(_register_body(platform="webpush", p256dh="k", auth="a")), "endpoint URL"),
        (orjson.dumps(_register_body(platform="webpush", device_token="https://push.example/x")), "p256dh"),
        (orjson.dumps(_register_body(kinds=[70000])), "kinds"),
        (orjson.dumps(_register_body(mode="encrypted")), "device_pubkey"),
        (orjson.dumps(_register_body(mode="encrypted", device_pubkey="00" * 32)), "not on the curve"),
        (orjson.dumps(_register_body(device_pubkey="AB" * 32)), "device_pubkey"),
        (orjson.dumps(_register_body(device_token="ab" * 31 + "\u0000\u0007")), "device_token"),
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


async def test_a_wrong_method_is_405_with_allow(api: Api) -> None:
    response = await api.client.delete("/health")
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    assert response.json()["error"] == "method_not_allowed"


async def test_health_ready_info_metrics(api: Api) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    assert (await api.client.get("/ready")).status_code == 200
    info = (await api.client.get("/info")).json()
    assert info["pubkey"] == api.service.keys.public_hex
    assert info["npub"].startswith("npub1")
    assert "http-nip98" in info["dialects"]
    assert "log" in info["transports"]
    assert shown_url("wss://user:pw@relay.example.com:7777/inbox?auth=SECRET#x") == "wss://relay.example.com:7777/inbox"
    assert shown_url("wss://[::1]:7777") == "wss://[::1]:7777"
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
