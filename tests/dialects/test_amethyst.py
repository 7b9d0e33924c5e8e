"""Amethyst's `POST /register` through the real HTTP server: what is added, what is refused and why, and that the
HTTP + NIP-98 `POST /register` on the same path is unchanged. Events are signed by nostr-sdk as the app signs them
(see tests/e2e/test_amethyst.py for the pushes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.app import Service
from pushstr.config import ConfigError
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform
from tests.e2e.clients import register
from tests.e2e.test_amethyst import FCM_TOKEN, post_register, register_body, registration_event
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
RELAY = "ws://127.0.0.1:9/"  # nothing listens: watching it costs a refused connection


def metric(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_amethyst_registrations_total", {"result": result}) or 0.0


def signed(user: Any, tags: list[list[str]], *, kind: int = 22242, at: int | None = None) -> Any:
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), "").tags([nostr_sdk.Tag.parse(tag) for tag in tags])
    if at is not None:
        builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at))
    return builder.finalize(user)


def as_dict(event: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(event.as_json())
    return parsed


async def post_json(server: RunningServer, body: object, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(server.base_url + "/register", content=orjson.dumps(body), headers=headers)


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    running = RunningServer(make_settings(tmp_path, [], SERVER.secret_hex, registration={"allow_private_relays": True}))
    await running.start()
    yield running
    await running.stop()


async def test_each_event_is_answered_in_order(server: RunningServer) -> None:
    users = [nostr_sdk.Keys.generate() for _ in range(9)]
    hexes = [user.public_key().to_hex() for user in users]
    now = int(time.time())
    challenge = ["challenge", FCM_TOKEN]
    forged = as_dict(signed(users[1], [challenge]))
    forged["tags"].append(["relay", "wss://evil.example.com"])  # changed after signing
    bad_sig = as_dict(signed(users[2], [challenge]))
    bad_sig["sig"] = ("0" if bad_sig["sig"][0] != "0" else "1") + bad_sig["sig"][1:]
    events: list[object] = [
        as_dict(registration_event(users[0], [RELAY, "https://relay.example.com/"], FCM_TOKEN)),
        forged,
        bad_sig,
        as_dict(signed(users[3], [challenge], kind=22243)),
        as_dict(signed(users[4], [challenge], at=now - 3600)),
        as_dict(signed(users[5], [challenge], at=now + 3600)),
        as_dict(signed(users[6], [["challenge", "not a token"]])),
        as_dict(signed(users[7], [["challenge", "http://127.0.0.1:9/up"]])),  # the URL guard refuses loopback
        "not an event",
    ]
    before = {result: metric(result) for result in ("added", "bad_signature", "wrong_kind", "stale", "bad_token")}
    malformed = metric("malformed")
    answer = await post_json(server, {"events": events})
    assert answer.status_code == 200, answer.text
    entries = answer.json()
    assert [(entry["pubkey"], entry["added"]) for entry in entries] == [
        (hexes[0], True),
        *((pubkey, False) for pubkey in hexes[1:8]),
        (None, False),
    ]
    assert "reason" not in entries[0] and all(entry["reason"] for entry in entries[1:])
    assert "id does not match" in entries[1]["reason"] and "signature" in entries[2]["reason"]
    assert "22242" in entries[3]["reason"] and "from now" in entries[4]["reason"] == entries[5]["reason"]
    assert "FCM token" in entries[6]["reason"] and "public addresses" in entries[7]["reason"]
    assert {result: metric(result) - count for result, count in before.items()} == {
        "added": 1,
        "bad_signature": 2,
        "wrong_kind": 1,
        "stale": 2,
        "bad_token": 2,
    }
    assert metric("malformed") == malformed + 1
    (device,) = server.service.registry.devices_for(hexes[0])
    assert (device.dialect, device.platform, device.device_token, device.mode) == (
        "amethyst",
        Platform.ANDROID,
        FCM_TOKEN,
        Mode.WRAPPED,
    )
    assert device.relays == (RELAY,)  # the URL guard refuses the https:// one; the account is added all the same
    assert not any(server.service.registry.devices_for(pubkey) for pubkey in hexes[1:])


async def test_an_event_without_a_challenge_is_a_400_and_nothing_is_added(server: RunningServer) -> None:
    good, bad = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    before = metric("no_challenge")
    answer = await post_register(
        server, [registration_event(good, [RELAY], FCM_TOKEN), signed(bad, [["relay", RELAY]])]
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "no_challenge",
        "reason": "events[1]: no challenge tag (the FCM token or push URL)",
    }
    assert metric("no_challenge") == before + 1
    assert not server.service.registry.devices_for(good.public_key().to_hex())
    empty = await post_json(server, {"events": [as_dict(signed(bad, [["challenge", ""]]))]})
    assert empty.status_code == 400 and empty.json()["error"] == "no_challenge"


async def test_the_request_itself_is_bounded(server: RunningServer) -> None:
    user = nostr_sdk.Keys.generate()
    events = [as_dict(registration_event(user, [], FCM_TOKEN))] * 51
    too_many = await post_json(server, {"events": events})
    assert too_many.status_code == 400 and too_many.json()["error"] == "too_many_events"
    not_a_list = await post_json(server, {"events": {"pubkey": "x"}})
    assert not_a_list.status_code == 400 and not_a_list.json()["error"] == "bad_request"
    assert (await post_json(server, {"events": []})).json() == []


async def test_the_newest_registration_of_a_token_wins(server: RunningServer) -> None:
    user = nostr_sdk.Keys.generate()
    pubkey = user.public_key().to_hex()
    now = int(time.time())
    first = signed(user, [["relay", RELAY], ["challenge", FCM_TOKEN]], at=now)
    older = signed(user, [["relay", "ws://127.0.0.1:10/"], ["challenge", FCM_TOKEN]], at=now - 10)
    newer = signed(user, [["relay", "ws://127.0.0.1:11/"], ["challenge", FCM_TOKEN]], at=now + 5)
    answer = (await post_register(server, [first, older])).json()
    assert [entry["added"] for entry in answer] == [True, False]
    assert answer[1]["reason"] == "older than the registration already known for this token"
    assert server.service.registry.devices_for(pubkey)[0].relays == (RELAY,)
    assert (await post_register(server, [newer])).json() == [{"pubkey": pubkey, "added": True}]
    (device,) = server.service.registry.devices_for(pubkey)
    assert (device.relays, device.created_at) == (("ws://127.0.0.1:11/",), now + 5)


async def test_the_nip98_register_on_the_same_path_is_unchanged(server: RunningServer) -> None:
    user = nostr_sdk.Keys.generate()
    await register(server, user, "nip98-fcm-token")
    (device,) = server.service.registry.devices_for(user.public_key().to_hex())
    assert device.dialect == "http-nip98"
    body = {"npub": "npub1x", "device_token": "t", "platform": "android"}
    unsigned = await post_json(server, body)
    assert unsigned.status_code == 401
    assert unsigned.json()["reason"].startswith("missing Authorization header")
    garbage = await post_json(server, ["not", "an", "object"])
    assert garbage.status_code == 401
    # An Amethyst body with an Authorization header is the NIP-98 route's, which checks the header.
    signed_body = register_body([registration_event(user, [], FCM_TOKEN)])
    async with httpx.AsyncClient() as client:
        response = await client.post(
            server.base_url + "/register", content=signed_body, headers={"authorization": "Nostr e30="}
        )
    assert response.status_code == 401 and "missing field" in response.json()["reason"]


async def test_info_describes_the_dialect(server: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        info = (await client.get(server.base_url + "/info")).json()
    assert "amethyst" in info["dialects"]
    described = info["dialect_info"]["amethyst"]
    assert described["route"] == "POST /register" and described["kinds"] == [4, 1059, 9735]
    assert described["tokens"] == ["fcm", "push-url"]


async def test_registry_changes_let_go_of_relays(server: RunningServer) -> None:
    user = nostr_sdk.Keys.generate()
    pubkey = user.public_key().to_hex()
    listed = "ws://127.0.0.1:12/"
    assert (await post_register(server, [registration_event(user, [listed], FCM_TOKEN)])).json()[0]["added"]
    assert server.service.pool.watches(listed)
    await server.service.registry.remove(pubkey, FCM_TOKEN)  # as when FCM reports the token dead
    await wait_until(lambda: not server.service.pool.watches(listed), 5)


async def test_switched_off_the_path_is_nip98_alone(tmp_path: Path) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER.secret_hex, dialects={"amethyst": {"enabled": False}}))
    await server.start()
    try:
        answer = await post_register(server, [registration_event(nostr_sdk.Keys.generate(), [], FCM_TOKEN)])
        assert answer.status_code == 401
        assert answer.json()["reason"].startswith("missing Authorization header")
        assert not any(dialect.name == "amethyst" for dialect in server.service.dialects)
    finally:
        await server.stop()


def test_a_configured_app_must_be_able_to_push_its_tokens(tmp_path: Path) -> None:
    webpush = {"transport": "webpush", "vapid_subject": "mailto:ops@example.com"}
    settings = make_settings(
        tmp_path, [], SERVER.secret_hex, apps={"up": webpush}, dialects={"amethyst": {"fcm_app": "up"}}
    )
    with pytest.raises(ConfigError, match=r"dialects\.amethyst\.fcm_app"):
        Service(settings)
