"""The Web Push transport against `web-push-testing`, a real Web Push server checking VAPID and decrypting."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pushstr.config import AppConfig, parse_app
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification, Outcome
from pushstr.transports.vapid import KEY_FILE_NAME, load_or_create_key, vapid_public_key
from pushstr.transports.webpush import WebPushTransport
from tests.conftest import free_port
from tests.fakes.webpush_server import WebPushTestingServer
from tests.transports.conftest import DeadHook, OneShot, outcomes

RECIPIENT = "a" * 64


@pytest.fixture
async def push_server(tmp_path: Path) -> AsyncIterator[WebPushTestingServer]:
    server = WebPushTestingServer(free_port())
    await server.start(tmp_path)
    yield server
    await server.stop()


def _app(**overrides: object) -> AppConfig:
    values: dict[str, object] = {
        "transport": "webpush",
        "vapid_subject": "mailto:ops@example.org",
        "allowed_hosts": ["localhost"],
        "backoff_base_seconds": 0.01,
    }
    values.update(overrides)
    return parse_app(values)


def _device(subscription: dict[str, Any], app: str) -> Registration:
    keys = subscription["keys"]
    return Registration(
        RECIPIENT,
        subscription["endpoint"],
        Platform.WEBPUSH,
        app,
        webpush_p256dh=keys["p256dh"],
        webpush_auth=keys["auth"],
    )


def _note(app: str, **fields: object) -> Notification:
    values: dict[str, object] = {"event_id": "e" * 64, "kind": 1, "recipient": RECIPIENT, "sender": None}
    values.update({"created_at": 1, "app": app, **fields})
    return Notification(**values)  # type: ignore[arg-type]


async def test_encrypted_vapid_push_is_decrypted_by_the_server(
    push_server: WebPushTestingServer, tmp_path: Path
) -> None:
    key = load_or_create_key(tmp_path / "data")
    subscription = await push_server.subscribe(vapid_public_key(tmp_path / "data"))
    app = _app(mode="alert", preview_length=20)
    transport = OneShot(WebPushTransport("web", app, key), app)
    note = _note("web", preview="gm fren, see you at the meetup", conversation="thread-1")
    try:
        result = await transport.send(note, _device(subscription, "web"))
    finally:
        await transport.close()
    assert result.outcome is Outcome.DELIVERED, result
    (message,) = await push_server.messages(subscription["clientHash"])
    body = orjson.loads(message)
    assert body["notification"]["title"] == "Nostr"
    assert body["notification"]["body"] == "mentioned you: gm fren, see you at…"
    assert len(body["notification"]["tag"]) == 32
    assert body["data"]["event_id"] == "e" * 64


async def test_a_wrong_vapid_key_is_refused_by_the_server(push_server: WebPushTestingServer, tmp_path: Path) -> None:
    subscription = await push_server.subscribe(vapid_public_key(tmp_path / "one"))
    app = _app()
    transport = OneShot(WebPushTransport("web", app, load_or_create_key(tmp_path / "other")), app)
    try:
        result = await transport.send(_note("web"), _device(subscription, "web"))
    finally:
        await transport.close()
    assert result.outcome is Outcome.REJECTED
    assert await push_server.messages(subscription["clientHash"]) == []


async def test_expired_subscription_is_pruned(push_server: WebPushTestingServer, tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "data")
    subscription = await push_server.subscribe(vapid_public_key(tmp_path / "data"))
    await push_server.expire(subscription["clientHash"])
    app_id = f"web-{uuid.uuid4().hex[:8]}"
    app = _app()
    hook = DeadHook()
    dispatcher = Dispatcher({app_id: Lane(WebPushTransport(app_id, app, key), Renderer(app))}, hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(subscription, app_id))
        assert await dispatcher.idle(10)
    finally:
        await dispatcher.close()
    assert [device.device_token for device, _ in hook.calls] == [subscription["endpoint"]]
    assert outcomes(app_id, "webpush")["dead"] == 1


async def test_large_event_degrades_to_id_only_and_stays_under_4096(
    push_server: WebPushTestingServer, tmp_path: Path
) -> None:
    key = load_or_create_key(tmp_path / "data")
    subscription = await push_server.subscribe(vapid_public_key(tmp_path / "data"))
    app = _app(mode="alert+event")
    transport = OneShot(WebPushTransport("web", app, key), app)
    big = orjson.dumps({"id": "e" * 64, "content": "x" * 3950})
    try:
        result = await transport.send(
            _note("web", event_json=big, relay="wss://r.example"), _device(subscription, "web")
        )
    finally:
        await transport.close()
    assert result.outcome is Outcome.DELIVERED
    (message,) = await push_server.messages(subscription["clientHash"])
    data = orjson.loads(message)["data"]
    assert "event" not in data
    assert data["relay"] == "wss://r.example"


def test_vapid_key_is_kept_private_and_stable(tmp_path: Path) -> None:
    first = vapid_public_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE_NAME).st_mode) == 0o600
    assert vapid_public_key(tmp_path) == first
    point = base64.urlsafe_b64decode(first + "=")
    assert len(point) == 65 and point[0] == 4
    x = load_or_create_key(tmp_path).public_key().public_numbers().x.to_bytes(32, "big")
    assert point[1:33] == x and "=" not in first
