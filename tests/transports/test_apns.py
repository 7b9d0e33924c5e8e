"""The APNs transport through the dispatcher, against the local HTTP/2 fake that verifies provider tokens."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest

from pushstr.config import AppConfig, ConfigError, load_settings, parse_app
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer, generic_collapse_id
from pushstr.registry.model import Platform, Registration
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification, Outcome, SendResult
from pushstr.transports.jwt_cache import ProviderTokens
from tests.fakes import APNS_TOPIC, ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.transports.conftest import DeadHook, OneShot, outcomes

RECIPIENT = "b" * 64
SENDER = "c" * 64


def _app_id() -> str:
    return f"apns-{uuid.uuid4().hex[:8]}"


def _device(app: str, created_at: float = 1000.0) -> Registration:
    return Registration(RECIPIENT, "ab" * 32, Platform.IOS, app, created_at=created_at)


def _note(app: str, **fields: object) -> Notification:
    values: dict[str, object] = {
        "event_id": "e" * 64,
        "kind": 1059,
        "recipient": RECIPIENT,
        "sender": None,
        "created_at": 1,
        "app": app,
    }
    values.update(fields)
    return Notification(**values)  # type: ignore[arg-type]


def _dispatcher(app_id: str, app: AppConfig, hook: DeadHook, tokens: ProviderTokens | None = None) -> Dispatcher:
    transport = ApnsTransport(app_id, app, tokens=tokens or ProviderTokens())
    return Dispatcher({app_id: Lane(transport, Renderer(app))}, hook)


async def test_alert_reaches_apns_with_headers(fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook) -> None:
    app_id = _app_id()
    app = apns_app(fake_apns, apns_key, mode="alert", ttl_seconds=600)
    dispatcher = _dispatcher(app_id, app, dead_hook)
    await dispatcher.start()
    try:
        assert dispatcher.submit(_note(app_id, conversation="room-1"), _device(app_id))
        request = await fake_apns.next_request()
        assert await dispatcher.idle(5)
    finally:
        await dispatcher.close()
    assert request.device_token == "ab" * 32
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert abs(int(request.headers["apns-expiration"]) - (time.time() + 600)) < 10
    assert len(request.headers["apns-collapse-id"]) == 32
    assert request.payload["aps"] == {
        "alert": {"title": "Nostr", "body": "Encrypted message"},
        "sound": "default",
        "thread-id": request.headers["apns-collapse-id"],
    }
    assert outcomes(app_id, "apns")["delivered"] == 1


async def test_silent_push_is_background_priority_5_without_content(
    fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook
) -> None:
    app_id = _app_id()
    dispatcher = _dispatcher(app_id, apns_app(fake_apns, apns_key), dead_hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id))
        request = await fake_apns.next_request()
    finally:
        await dispatcher.close()
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert request.payload == {"aps": {"content-available": 1}, "count": "1"}
    assert "e" * 64 not in orjson.dumps(request.payload).decode()


async def test_410_newer_than_registration_prunes_it(
    fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook
) -> None:
    app_id = _app_id()
    dispatcher = _dispatcher(app_id, apns_app(fake_apns, apns_key), dead_hook)
    fake_apns.set_response(410, "Unregistered", timestamp_ms=2_000_000)
    fake_apns.set_response(410, "Unregistered", timestamp_ms=500_000)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id, created_at=1000.0))
        assert await dispatcher.idle(5)
        dispatcher.submit(_note(app_id), _device(app_id, created_at=1000.0))
        assert await dispatcher.idle(5)
    finally:
        await dispatcher.close()
    assert [(device.device_token, stamp) for device, stamp in dead_hook.calls] == [("ab" * 32, 2000.0)]
    counts = outcomes(app_id, "apns")
    assert counts["dead"] == 1
    assert counts["stale_dead"] == 1
    assert fake_apns.count == 2


async def test_429_waits_for_retry_after(fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook) -> None:
    app_id = _app_id()
    app = apns_app(fake_apns, apns_key, backoff_base_seconds=0.01)
    fake_apns.set_response(429, "TooManyRequests", retry_after="1")
    dispatcher = _dispatcher(app_id, app, dead_hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id))
        assert await dispatcher.idle(10)
    finally:
        await dispatcher.close()
    first, second = fake_apns.requests
    assert second.received_at - first.received_at >= 1.0
    counts = outcomes(app_id, "apns")
    assert (counts["retry"], counts["delivered"]) == (1, 1)


async def test_5xx_is_retried_with_backoff_then_delivered(
    fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook
) -> None:
    app_id = _app_id()
    app = apns_app(fake_apns, apns_key, backoff_base_seconds=0.05)
    fake_apns.set_response(503, "ServiceUnavailable", times=2)
    dispatcher = _dispatcher(app_id, app, dead_hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id))
        assert await dispatcher.idle(10)
    finally:
        await dispatcher.close()
    first, second, third = (request.received_at for request in fake_apns.requests)
    assert second - first >= 0.025  # half of the first backoff step at least (equal jitter)
    assert third - second >= 0.05
    counts = outcomes(app_id, "apns")
    assert (counts["retry"], counts["delivered"]) == (2, 1)


async def test_gives_up_after_max_attempts(fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook) -> None:
    app_id = _app_id()
    app = apns_app(fake_apns, apns_key, backoff_base_seconds=0.01, max_attempts=3)
    fake_apns.set_response(500, "InternalServerError", times=None)
    dispatcher = _dispatcher(app_id, app, dead_hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id))
        assert await dispatcher.idle(10)
    finally:
        await dispatcher.close()
    assert fake_apns.count == 3
    counts = outcomes(app_id, "apns")
    assert (counts["retry"], counts["gave_up"]) == (2, 1)


async def test_400_is_not_retried(fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook) -> None:
    app_id = _app_id()
    fake_apns.set_response(400, "BadDeviceToken")
    dispatcher = _dispatcher(app_id, apns_app(fake_apns, apns_key, backoff_base_seconds=0.01), dead_hook)
    await dispatcher.start()
    try:
        dispatcher.submit(_note(app_id), _device(app_id))
        assert await dispatcher.idle(5)
    finally:
        await dispatcher.close()
    assert fake_apns.count == 1
    assert outcomes(app_id, "apns")["rejected"] == 1
    assert dead_hook.calls == []


async def test_one_provider_token_and_one_connection_for_1000_pushes(
    fake_apns: FakeAPNs, apns_key: ApnsKey, dead_hook: DeadHook
) -> None:
    app_id = _app_id()
    dispatcher = _dispatcher(app_id, apns_app(fake_apns, apns_key, concurrency=100), dead_hook)
    await dispatcher.start()
    try:
        for n in range(1000):
            assert dispatcher.submit(_note(app_id, event_id=f"{n:064x}"), _device(app_id))
        assert await dispatcher.idle(60)
        assert fake_apns.connections == 1
    finally:
        await dispatcher.close()
    assert fake_apns.count == 1000
    assert len(fake_apns.tokens_seen) == 1
    assert outcomes(app_id, "apns")["delivered"] == 1000


async def test_expired_provider_token_is_replaced(fake_apns: FakeAPNs, apns_key: ApnsKey) -> None:
    now = [time.time() - 30 * 60]  # the fake checks `iat` against the real clock: no tokens from the future
    tokens = ProviderTokens(clock=lambda: now[0])
    app = apns_app(fake_apns, apns_key)
    transport = OneShot(ApnsTransport(_app_id(), app, tokens=tokens), app)
    await transport.start()
    try:
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
        now[0] += 25 * 60  # older than the 20-minute floor, younger than the 50-minute refresh
        fake_apns.set_response(403, "ExpiredProviderToken")
        result = await transport.send(_note("x"), _device("x"))
        assert (result.outcome, result.reason) == (Outcome.RETRY, "ExpiredProviderToken")
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    first, second, third = (request.provider_token for request in fake_apns.requests)
    assert first == second != third
    assert len(fake_apns.tokens_seen) == 2


async def test_token_refreshed_after_50_minutes_not_before(fake_apns: FakeAPNs, apns_key: ApnsKey) -> None:
    start = time.time() - 55 * 60  # the fake checks `iat` against the real clock (not future, not over an hour)
    now = [start]
    tokens = ProviderTokens(clock=lambda: now[0])
    app = apns_app(fake_apns, apns_key)
    transport = OneShot(ApnsTransport(_app_id(), app, tokens=tokens), app)
    await transport.start()
    try:
        for offset in (0, 10 * 60, 49 * 60, 51 * 60):
            now[0] = start + offset
            assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    issued = [request.provider_token for request in fake_apns.requests]
    assert issued[0] == issued[1] == issued[2] != issued[3]


@pytest.mark.parametrize(("event_bytes", "expect_event"), [(500, True), (5000, False)])
async def test_alert_event_carries_the_event_only_when_it_fits(
    fake_apns: FakeAPNs, apns_key: ApnsKey, event_bytes: int, expect_event: bool
) -> None:
    event_json = orjson.dumps({"id": "e" * 64, "kind": 1, "content": "x" * event_bytes})
    note = _note("x", kind=1, sender=None, event_json=event_json, relay="wss://relay.example")
    app = apns_app(fake_apns, apns_key, mode="alert+event")
    transport = OneShot(ApnsTransport("x", app, tokens=ProviderTokens()), app)
    await transport.start()
    try:
        assert (await transport.send(note, _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    (request,) = fake_apns.requests
    assert request.size <= 4096
    assert request.payload["aps"]["mutable-content"] == 1  # type: ignore[index]
    assert request.payload["event_id"] == "e" * 64
    if expect_event:
        assert orjson.loads(str(request.payload["event"])) == orjson.loads(event_json)
    else:
        assert "event" not in request.payload
        assert request.payload["relay"] == "wss://relay.example"


async def test_bad_token_never_reaches_the_path(fake_apns: FakeAPNs, apns_key: ApnsKey) -> None:
    app = apns_app(fake_apns, apns_key)
    transport = OneShot(ApnsTransport("x", app, tokens=ProviderTokens()), app)
    device = Registration(RECIPIENT, "../../evil?x=1", Platform.IOS, "x")
    result = await transport.send(_note("x"), device)
    await transport.close()
    assert result.outcome is Outcome.REJECTED
    assert fake_apns.count == 0


def test_missing_credentials_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "pushstr.toml"
    config.write_text('[apps.ios]\ntransport = "apns"\nkey_id = "K"\nteam_id = "T"\ntopic = "org.example"\n')
    with pytest.raises(ConfigError, match=r"apps\.ios\.key_file"):
        load_settings(config, environ={})


def test_unusable_key_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "key.p8").write_text("not a key")
    app = parse_app({"transport": "apns", "key_file": tmp_path / "key.p8", "key_id": "K", "team_id": "T", "topic": "t"})
    with pytest.raises(ConfigError, match=r"invalid configuration: apps\.ios\.key_file: cannot load the APNs key"):
        ApnsTransport("ios", app)


async def test_fake_reports_each_request_with_its_perf_counter_arrival(
    apns_key: ApnsKey, tmp_path: Path, dead_hook: DeadHook
) -> None:
    """The latency benchmark matches arrivals to relay writes by event id on the shared monotonic clock."""
    seen: list[tuple[object, float]] = []
    fake = FakeAPNs(
        apns_key.private.public_key(),
        apns_key.key_id,
        apns_key.team_id,
        tmp_path / "tls",
        record=False,
        on_request=lambda request: seen.append((request.payload.get("event_id"), request.received_at)),
    )
    await fake.start()
    app_id = _app_id()
    dispatcher = _dispatcher(app_id, apns_app(fake, apns_key, mode="alert"), dead_hook)
    await dispatcher.start()
    before = time.perf_counter()
    try:
        for n in range(3):
            assert dispatcher.submit(_note(app_id, event_id=f"{n:064x}"), _device(app_id))
        assert await dispatcher.idle(5)
    finally:
        await dispatcher.close()
        await fake.stop()
    assert sorted(event_id for event_id, _ in seen) == [f"{n:064x}" for n in range(3)]
    assert all(before <= at <= time.perf_counter() for _, at in seen)
    assert fake.requests == []


async def test_a_reply_over_the_size_cap_is_a_retry_and_the_connection_goes_on(
    fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    app = apns_app(fake_apns, apns_key)
    transport = OneShot(ApnsTransport("x", app, tokens=ProviderTokens()), app)
    await transport.start()
    try:
        fake_apns.set_response(400, "x" * (4 * 1024 * 1024))
        result = await transport.send(_note("x"), _device("x"))
        assert (result.outcome, result.reason) == (Outcome.RETRY, "response-too-large")
        assert (await transport.send(_note("x"), _device("x"))).outcome is Outcome.DELIVERED
        assert fake_apns.connections == 1
    finally:
        await transport.close()


async def test_a_generic_alert_is_a_visible_alert_that_also_wakes_the_app(
    fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    """The payload Mostro's server sends for a trade event, byte for byte: fixed text, the app's data, no ids."""
    app = apns_app(
        fake_apns,
        apns_key,
        mode="alert",
        alert_title="Mostro",
        alert_body="You have an update on your trade",
        alert_data={"type": "trade_update"},
    )
    transport = ApnsTransport("x", app, tokens=ProviderTokens())
    note = _note("x", conversation="c1", sender=SENDER)
    encoded = Renderer(app).encode(note, _device("x"), transport)
    assert not isinstance(encoded, SendResult)
    collapse = generic_collapse_id("x")
    assert encoded.body == (
        b'{"aps":{"alert":{"title":"Mostro","body":"You have an update on your trade"},"sound":"default",'
        b'"content-available":1,"mutable-content":1,"thread-id":"' + collapse.encode() + b'"},"type":"trade_update"}'
    )
    assert (encoded.headers["apns-push-type"], encoded.headers["apns-priority"]) == ("alert", "10")
    assert encoded.headers["apns-collapse-id"] == collapse
    try:
        assert (await transport.send(encoded, _device("x"))).outcome is Outcome.DELIVERED
    finally:
        await transport.close()
    (request,) = fake_apns.requests
    assert request.payload == orjson.loads(encoded.body) and request.headers["apns-push-type"] == "alert"
