"""The `wrapped` mode: the event in a one-layer kind 1059 to the recipient, else a wrapped kind 23903 wake-up
(real NIP-44, opened with nostr-sdk)."""

from __future__ import annotations

from typing import Any

import nostr_sdk
import orjson

from pushstr.config import AppConfig
from pushstr.delivery.render import WRAP_LIMIT, render
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.transports.base import Notification, Rendered

RECIPIENT = nostr_sdk.Keys.generate()
SENDER = nostr_sdk.Keys.generate()
RELAY = "wss://relay.example.com/"


def _note(event: Any, **fields: Any) -> Notification:
    return Notification(
        event_id=event.id().to_hex(),
        kind=event.kind().as_u16(),
        recipient=RECIPIENT.public_key().to_hex(),
        sender=SENDER.public_key().to_hex(),
        created_at=event.created_at().as_secs(),
        app="app",
        mode=Mode.WRAPPED,
        event_json=event.as_json().encode(),
        relay=RELAY,
        conversation="c",
        **fields,
    )


def _dm(text: str) -> Any:
    content = nostr_sdk.nip04_encrypt(SENDER.secret_key(), RECIPIENT.public_key(), text)
    tags = [nostr_sdk.Tag.parse(["p", RECIPIENT.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(4), content).tags(tags).finalize(SENDER)


def _device(mode: Mode | None = Mode.WRAPPED) -> Registration:
    return Registration(RECIPIENT.public_key().to_hex(), "tok", Platform.ANDROID, "app", dialect="amethyst", mode=mode)


def _opened(rendered: Rendered) -> dict[str, Any]:
    assert set(rendered.data) == {"encryptedEvent"} and rendered.style == "silent"
    wrap = nostr_sdk.Event.from_json(rendered.data["encryptedEvent"])
    assert wrap.verify() and wrap.kind().as_u16() == 1059 and wrap.tags() == []
    opened: dict[str, Any] = orjson.loads(
        nostr_sdk.nip44_decrypt(RECIPIENT.secret_key(), wrap.author(), wrap.content())
    )
    return opened


def _size(rendered: Rendered) -> int:
    return len(orjson.dumps(rendered.data))


def test_the_event_itself_is_wrapped_without_a_collapse_id() -> None:
    event = _dm("hi")
    rendered = render(_note(event), _device(), AppConfig(), measure=_size)
    assert _opened(rendered) == orjson.loads(event.as_json())
    assert rendered.collapse_id is None and not rendered.degraded
    assert RECIPIENT.public_key().to_hex() not in str(rendered.data)


def test_the_apps_mode_applies_when_the_registration_names_none() -> None:
    event = _dm("hi")
    rendered = render(_note(event), _device(mode=None), AppConfig(mode="wrapped"), measure=_size)
    assert _opened(rendered)["id"] == event.id().to_hex()


def test_a_wrap_over_4000_bytes_becomes_a_wake_up_even_where_the_transport_has_no_limit() -> None:
    event = _dm("x" * 3000)
    rendered = render(_note(event), _device(), AppConfig(), measure=lambda _: 0)
    assert rendered.degraded and len(rendered.data["encryptedEvent"]) <= WRAP_LIMIT
    wake = _opened(rendered)
    assert (wake["kind"], wake["content"]) == (23903, "")
    assert wake["tags"] == [["e", event.id().to_hex(), RELAY], ["k", "4"], ["p", SENDER.public_key().to_hex()]]


def test_a_wrap_the_transport_cannot_fit_becomes_a_wake_up() -> None:
    event = _dm("hi")
    rendered = render(_note(event), _device(), AppConfig(), measure=_size, limit=1000)
    assert _opened(rendered)["kind"] == 23903 and rendered.degraded


def test_a_notification_without_its_event_is_announced_by_a_wake_up() -> None:
    event = _dm("hi")
    rendered = render(_without_event(event), _device(), AppConfig(), measure=_size)
    wake = _opened(rendered)
    assert wake["tags"] == [["e", event.id().to_hex(), RELAY], ["k", "4"]] and not rendered.degraded


def _without_event(event: Any) -> Notification:
    note = _note(event)
    note.event_json = None
    return note
