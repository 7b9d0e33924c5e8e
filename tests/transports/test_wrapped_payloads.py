"""A `wrapped` push on the wire: FCM data `{"encryptedEvent": <wrap>}` (data-only, no collapse key), and the wrap
itself as the body of a POST to a push URL — in plaintext to a keyless UnifiedPush endpoint (the wrap is NIP-44
ciphertext already), sealed with RFC 8291 to a keyed Web Push subscription."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nostr_sdk
import orjson

from pushstr.config import AppConfig, WebPushAppConfig
from pushstr.delivery.render import Renderer, render
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.transports.base import Encoded, Notification, Outcome, Transport
from pushstr.transports.fcm import fcm_message
from pushstr.transports.vapid import load_or_create_key, vapid_public_key
from pushstr.transports.webpush import WebPushTransport
from tests.fakes.webpush_server import WebPushTestingServer
from tests.transports.conftest import OneShot
from tests.transports.test_webpush import push_server  # noqa: F401 - the fixture

RECIPIENT = nostr_sdk.Keys.generate()
SENDER = nostr_sdk.Keys.generate()
ENDPOINT = "https://up.example.com/upAbc"


def _event() -> Any:
    content = nostr_sdk.nip04_encrypt(SENDER.secret_key(), RECIPIENT.public_key(), "hi")
    tags = [nostr_sdk.Tag.parse(["p", RECIPIENT.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(4), content).tags(tags).finalize(SENDER)


def _note(event: Any, app: str) -> Notification:
    return Notification(
        event_id=event.id().to_hex(),
        kind=4,
        recipient=RECIPIENT.public_key().to_hex(),
        sender=SENDER.public_key().to_hex(),
        created_at=event.created_at().as_secs(),
        app=app,
        mode=Mode.WRAPPED,
        event_json=event.as_json().encode(),
        conversation="c",
    )


def _opened(wrap_json: str | bytes) -> dict[str, Any]:
    wrap = nostr_sdk.Event.from_json(wrap_json if isinstance(wrap_json, str) else wrap_json.decode())
    assert wrap.verify() and wrap.kind().as_u16() == 1059
    opened: dict[str, Any] = orjson.loads(
        nostr_sdk.nip44_decrypt(RECIPIENT.secret_key(), wrap.author(), wrap.content())
    )
    return opened


def _encode(transport: Transport, app: AppConfig, note: Notification, device: Registration) -> Encoded:
    encoded = Renderer(app).encode(note, device, transport)
    assert isinstance(encoded, Encoded), encoded
    return encoded


def test_fcm_carries_the_wrap_as_data_only() -> None:
    event = _event()
    app = AppConfig(mode="wrapped")
    device = Registration(RECIPIENT.public_key().to_hex(), "fcm-token", Platform.ANDROID, "a")
    rendered = render(_note(event, "a"), device, app, measure=lambda r: len(orjson.dumps(fcm_message(r, device, app))))
    message = fcm_message(rendered, device, app)
    assert set(message) == {"data", "android"} and set(message["data"]) == {"encryptedEvent"}
    assert "collapse_key" not in message["android"] and message["android"]["priority"] == "high"
    assert _opened(message["data"]["encryptedEvent"]) == orjson.loads(event.as_json())


def test_a_keyless_unifiedpush_endpoint_gets_the_wrap_as_the_body(tmp_path: Path) -> None:
    event = _event()
    app = WebPushAppConfig(transport="webpush", vapid_subject="mailto:ops@example.org")  # no allow_plaintext
    transport = WebPushTransport("up", app, load_or_create_key(tmp_path))
    device = Registration(
        RECIPIENT.public_key().to_hex(), ENDPOINT, Platform.UNIFIEDPUSH, "up", dialect="amethyst", mode=Mode.WRAPPED
    )
    encoded = _encode(transport, app, _note(event, "up"), device)
    assert encoded.headers["content-type"].startswith("text/plain") and "topic" not in encoded.headers
    assert _opened(encoded.body) == orjson.loads(event.as_json())
    # Other modes still need `allow_plaintext` for a keyless endpoint.
    alert = Registration(RECIPIENT.public_key().to_hex(), ENDPOINT, Platform.UNIFIEDPUSH, "up", mode=Mode.ALERT)
    refused = Renderer(app).encode(_note(event, "up"), alert, transport)
    assert not isinstance(refused, Encoded) and refused.outcome is Outcome.REJECTED


async def test_a_keyed_subscription_gets_the_wrap_sealed(
    push_server: WebPushTestingServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    event = _event()
    key = load_or_create_key(tmp_path / "data")
    subscription = await push_server.subscribe(vapid_public_key(tmp_path / "data"))
    app = WebPushAppConfig(transport="webpush", vapid_subject="mailto:ops@example.org", allowed_hosts=["localhost"])
    transport = OneShot(WebPushTransport("web", app, key), app)
    keys = subscription["keys"]
    device = Registration(
        RECIPIENT.public_key().to_hex(),
        subscription["endpoint"],
        Platform.WEBPUSH,
        "web",
        mode=Mode.WRAPPED,
        webpush_p256dh=keys["p256dh"],
        webpush_auth=keys["auth"],
    )
    try:
        result = await transport.send(_note(event, "web"), device)
    finally:
        await transport.close()
    assert result.outcome is Outcome.DELIVERED, result
    (message,) = await push_server.messages(subscription["clientHash"])
    assert _opened(message) == orjson.loads(event.as_json())
