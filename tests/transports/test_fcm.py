"""The FCM HTTP v1 transport against the local fake (OAuth2 JWT-bearer grant + messages:send over HTTP/2)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from pushstr.config import AppConfig, parse_app
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer, generic_collapse_id
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification, Outcome, Rendered, SendResult
from pushstr.transports.fcm import FcmTransport, fcm_message
from tests.fakes.fcm import FakeFCM
from tests.transports.conftest import DeadHook, OneShot, outcomes

RECIPIENT = "d" * 64


@pytest.fixture
async def fake_fcm(tmp_path: Path) -> AsyncIterator[FakeFCM]:
    fake = FakeFCM(tmp_path)
    await fake.start()
    yield fake
    await fake.stop()


def _app(fake: FakeFCM, **overrides: object) -> AppConfig:
    values: dict[str, object] = {
        "transport": "fcm",
        "base_url": fake.url,
        "ca_file": fake.ca_file,
        "service_account_file": fake.write_service_account(),
        "backoff_base_seconds": 0.01,
    }
    values.update(overrides)
    return parse_app(values)


def _device(app: str, platform: Platform = Platform.ANDROID) -> Registration:
    return Registration(RECIPIENT, "fcm-token-1", platform, app)


def _note(app: str, **fields: object) -> Notification:
    values: dict[str, object] = {"event_id": "f" * 64, "kind": 4, "recipient": RECIPIENT, "sender": None}
    values.update({"created_at": 1, "app": app, **fields})
    return Notification(**values)  # type: ignore[arg-type]


async def _run(fake: FakeFCM, app: AppConfig, hook: DeadHook, count: int = 1) -> str:
    app_id = f"fcm-{uuid.uuid4().hex[:8]}"
    dispatcher = Dispatcher({app_id: Lane(FcmTransport(app_id, app), Renderer(app))}, hook)
    await dispatcher.start()
    try:
        for n in range(count):
            assert dispatcher.submit(_note(app_id, event_id=f"{n:064x}"), _device(app_id))
        assert await dispatcher.idle(10)
    finally:
        await dispatcher.close()
    return app_id


async def test_data_only_delivery_with_one_oauth_token(fake_fcm: FakeFCM, dead_hook: DeadHook) -> None:
    app_id = await _run(fake_fcm, _app(fake_fcm), dead_hook, count=50)
    assert outcomes(app_id, "fcm")["delivered"] == 50
    assert fake_fcm.token_requests == 1
    message = fake_fcm.requests[0].message
    assert message["token"] == "fcm-token-1"
    assert message["data"] == {"count": "1", "content_available": "true"}
    assert message["android"]["priority"] == "high"
    assert "notification" not in message


async def test_alert_is_a_notification_message_with_apns_override_for_ios(fake_fcm: FakeFCM) -> None:
    app = _app(fake_fcm, mode="alert")
    transport = OneShot(FcmTransport("x", app), app)
    try:
        result = await transport.send(_note("x", conversation="c1"), _device("x", Platform.IOS))
    finally:
        await transport.close()
    assert result.outcome is Outcome.DELIVERED
    message = fake_fcm.requests[0].message
    assert message["notification"] == {"title": "Nostr", "body": "Encrypted message"}
    assert message["apns"]["headers"]["apns-push-type"] == "alert"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["apns"]["headers"]["apns-collapse-id"] == message["android"]["collapse_key"]
    assert message["apns"]["payload"]["aps"]["alert"]["body"] == "Encrypted message"


async def test_unregistered_prunes(fake_fcm: FakeFCM, dead_hook: DeadHook) -> None:
    fake_fcm.set_response(404, "NOT_FOUND", "UNREGISTERED")
    app_id = await _run(fake_fcm, _app(fake_fcm), dead_hook)
    assert [device.device_token for device, _ in dead_hook.calls] == ["fcm-token-1"]
    assert outcomes(app_id, "fcm")["dead"] == 1


async def test_invalid_argument_is_rejected_once(fake_fcm: FakeFCM, dead_hook: DeadHook) -> None:
    fake_fcm.set_response(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
    app_id = await _run(fake_fcm, _app(fake_fcm), dead_hook)
    assert len(fake_fcm.requests) == 1
    assert outcomes(app_id, "fcm")["rejected"] == 1
    assert dead_hook.calls == []


async def test_quota_exceeded_honours_retry_after(fake_fcm: FakeFCM, dead_hook: DeadHook) -> None:
    fake_fcm.set_response(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    app_id = await _run(fake_fcm, _app(fake_fcm), dead_hook)
    first, second = fake_fcm.requests
    assert second.received_at - first.received_at >= 1.0
    assert outcomes(app_id, "fcm")["delivered"] == 1


async def test_unavailable_and_internal_are_retried(fake_fcm: FakeFCM, dead_hook: DeadHook) -> None:
    fake_fcm.set_response(503, "UNAVAILABLE", "UNAVAILABLE")
    fake_fcm.set_response(500, "INTERNAL", "INTERNAL")
    app_id = await _run(fake_fcm, _app(fake_fcm), dead_hook)
    assert len(fake_fcm.requests) == 3
    counts = outcomes(app_id, "fcm")
    assert (counts["retry"], counts["delivered"]) == (2, 1)


async def test_revoked_access_token_is_fetched_again(fake_fcm: FakeFCM) -> None:
    app = _app(fake_fcm)
    transport = OneShot(FcmTransport("x", app), app)
    try:
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
        fake_fcm.expire_tokens()
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.RETRY
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    assert fake_fcm.token_requests == 2


async def test_access_token_reused_until_it_expires(fake_fcm: FakeFCM) -> None:
    start = time.time() - 3500  # the fake checks the assertion's `iat` against the real clock
    now = [start]
    app = _app(fake_fcm)
    transport = OneShot(FcmTransport("x", app, clock=lambda: now[0]), app)
    try:
        for step in (0, 1000, 3000, 3500):  # lifetime 3600 s, refreshed 120 s early
            now[0] = start + step
            assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    tokens = [request.access_token for request in fake_fcm.requests]
    assert tokens[0] == tokens[1] == tokens[2] != tokens[3]
    assert fake_fcm.token_requests == 2


async def test_a_reply_over_the_size_cap_is_a_retry(fake_fcm: FakeFCM) -> None:
    app = _app(fake_fcm)
    transport = OneShot(FcmTransport("x", app), app)
    await transport.start()
    try:
        fake_fcm.set_response(500, "INTERNAL", "x" * (4 * 1024 * 1024))
        result = await transport.send(_note("x"), _device("x"))
        assert (result.outcome, result.reason) == (Outcome.RETRY, "response-too-large")
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()


GENERIC = {
    "mode": "alert",
    "alert_title": "Mostro",
    "alert_body": "You have an update on your trade",
    "alert_data": {"type": "trade_update"},
    "android_channel_id": "mostro_notifications",
}


async def test_a_generic_alert_in_its_android_channel_and_waking_ios(fake_fcm: FakeFCM) -> None:
    """Mostro's server's trade push, byte for byte, to an Android and an iOS FCM token."""
    app = _app(fake_fcm, **GENERIC)
    transport = FcmTransport("x", app)
    note = _note("x", conversation="c1", sender="e" * 64)
    collapse = generic_collapse_id("x").encode()
    alert = b'"notification":{"title":"Mostro","body":"You have an update on your trade"}'
    android = (
        b'"android":{"priority":"high","ttl":"86400s","collapse_key":"' + collapse + b'",'
        b'"notification":{"channel_id":"mostro_notifications","tag":"' + collapse + b'"}}'
    )
    aps = (
        b'{"alert":{"title":"Mostro","body":"You have an update on your trade"},"sound":"default",'
        b'"content-available":1,"mutable-content":1,"thread-id":"' + collapse + b'"}'
    )
    apns = (
        b'"apns":{"headers":{"apns-push-type":"alert","apns-priority":"10","apns-collapse-id":"' + collapse + b'"},'
        b'"payload":{"aps":' + aps + b"}}"
    )
    data = b'"data":{"type":"trade_update"}'
    expected = {
        Platform.ANDROID: b'{"message":{' + data + b"," + android + b"," + alert + b',"token":"fcm-token-1"}}',
        Platform.IOS: b'{"message":{'
        + data
        + b","
        + android
        + b","
        + alert
        + b","
        + apns
        + b',"token":"fcm-token-1"}}',
    }
    try:
        for platform, body in expected.items():
            encoded = Renderer(app).encode(note, _device("x", platform), transport)
            assert not isinstance(encoded, SendResult)
            assert encoded.body == body
            assert (await transport.send(encoded, _device("x", platform))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    assert [request.message for request in fake_fcm.requests] == [
        orjson.loads(body)["message"] for body in expected.values()
    ]


async def test_a_plain_alert_has_no_channel_unless_the_app_names_one(fake_fcm: FakeFCM) -> None:
    plain = fcm_message(Rendered("alert", "Nostr", "Encrypted message"), _device("x"), _app(fake_fcm, mode="alert"))
    assert "notification" not in plain["android"]
    grouped = fcm_message(Rendered("alert", "Nostr", "x", collapse_id="c" * 32), _device("x"), _app(fake_fcm))
    assert grouped["android"]["notification"] == {"tag": "c" * 32} == {"tag": grouped["android"]["collapse_key"]}
    named = fcm_message(Rendered("alert", "Nostr", "x"), _device("x"), _app(fake_fcm, android_channel_id="dms"))
    assert named["android"]["notification"] == {"channel_id": "dms"}
    silent = fcm_message(
        Rendered("silent", data={"count": "1"}), _device("x"), _app(fake_fcm, android_channel_id="dms")
    )
    assert "notification" not in silent["android"] and "notification" not in silent
