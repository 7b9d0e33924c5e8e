"""Rendering: modes, texts, zap amounts and the 4 KB degrade rule (pure functions, real NIP-44)."""

from __future__ import annotations

import orjson
import pytest

from pushstr.config import AppConfig
from pushstr.delivery.render import (
    SIZE_CLASSES,
    Rendered,
    render,
)
from pushstr.engine.profiles import MemoryProfileCache, profile_name
from pushstr.nostr import nip44
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip19 import npub_encode
from pushstr.registry.model import Mode, Platform, Registration

SENDER = Keys.generate().public_hex
RECIPIENT = "a" * 64


def _size(rendered: Rendered) -> int:
    return len(orjson.dumps({"title": rendered.title, "body": rendered.body, "data": rendered.data}))


def _device(mode: str | Mode | None = None, device_pubkey: str | None = None) -> Registration:
    return Registration(RECIPIENT, "tok", Platform.IOS, "app", mode=mode, device_pubkey=device_pubkey)


def _note(kind: int = 4, **fields: object) -> object:
    from pushstr.transports.base import Notification

    values: dict[str, object] = {"event_id": "e" * 64, "kind": kind, "recipient": RECIPIENT, "sender": SENDER}
    values.update({"created_at": 1, "app": "app", **fields})
    return Notification(**values)  # type: ignore[arg-type]


def _render(note: object, app: AppConfig, device: Registration | None = None, **kw: object) -> Rendered:
    return render(note, device or _device(), app, measure=_size, **kw)  # type: ignore[arg-type]


def test_silent_says_nothing_identifying() -> None:
    rendered = _render(_note(conversation="c"), AppConfig(mode="silent"))
    assert rendered.style == "silent" and rendered.title is None and rendered.body is None
    assert SENDER not in str(rendered) and "e" * 64 not in str(rendered)


def test_registration_mode_overrides_the_app() -> None:
    assert _render(_note(), AppConfig(mode="silent"), _device(mode="alert")).style == "alert"


def test_alert_title_from_profile_cache_else_short_npub() -> None:
    profiles = MemoryProfileCache()
    assert _render(_note(), AppConfig(mode="alert"), profiles=profiles).title == (
        f"{npub_encode(SENDER)[:9]}…{npub_encode(SENDER)[-4:]}"
    )
    profiles.put(SENDER, "Alice")
    rendered = _render(_note(), AppConfig(mode="alert"), profiles=profiles)
    assert (rendered.title, rendered.body) == ("Alice", "Encrypted message")


def test_profile_cache_entries_expire() -> None:
    now = [0.0]
    profiles = MemoryProfileCache(ttl=60, clock=lambda: now[0])
    profiles.put(SENDER, "Alice")
    now[0] = 59
    assert profiles.display_name(SENDER) == "Alice"
    now[0] = 60
    assert profiles.display_name(SENDER) is None


def test_profile_name_prefers_display_name() -> None:
    assert profile_name('{"name": "alice", "display_name": " Alice  W "}') == "Alice W"
    assert profile_name('{"name": "alice"}') == "alice"
    assert profile_name("not json") is None and profile_name("[]") is None


@pytest.mark.parametrize(
    ("kind", "fields", "length", "body"),
    [
        (1059, {}, 0, "Encrypted message"),
        (1, {"preview": "hello   world, a long note"}, 11, "mentioned you: hello worl…"),
        (1, {"preview": "hello"}, 0, "mentioned you"),
        (9735, {"extra": {"sats": "2100"}}, 0, "zapped you 2100 sats"),
        (4, {"count": 3}, 0, "3 new messages"),
        (4, {"count": 3, "extra": {"mixed": "1"}}, 0, "3 new notifications"),
        (9, {}, 0, "New message in a group"),
        (42, {"count": 2}, 0, "2 new group messages"),
    ],
)
def test_alert_bodies(kind: int, fields: dict[str, object], length: int, body: str) -> None:
    assert _render(_note(kind, **fields), AppConfig(mode="alert", preview_length=length)).body == body


def test_alert_event_carries_event_when_it_fits_else_id_and_relay() -> None:
    small = orjson.dumps({"id": "e" * 64, "content": "x" * 100})
    rendered = _render(_note(1, event_json=small, relay="wss://r"), AppConfig(mode="alert+event"))
    assert rendered.data["event"] == small.decode() and rendered.mutable_content and not rendered.degraded
    big = orjson.dumps({"id": "e" * 64, "content": "x" * 4100})
    degraded = _render(_note(1, event_json=big, relay="wss://r"), AppConfig(mode="alert+event"))
    assert "event" not in degraded.data and degraded.degraded
    assert (degraded.data["event_id"], degraded.data["relay"]) == ("e" * 64, "wss://r")
    assert _size(degraded) <= 4096


def test_encrypted_mode_round_trips_and_hides_everything() -> None:
    server, device = Keys.generate(), Keys.generate()

    def encrypt(peer: str, text: str) -> str:
        return nip44.encrypt_to(server, peer, text)

    sizes = set()
    for content in ("x", "y" * 100):
        event = orjson.dumps({"id": "e" * 64, "content": content})
        rendered = _render(
            _note(4, event_json=event, relay="wss://r"),
            AppConfig(mode="encrypted"),
            _device(device_pubkey=device.public_hex),
            encrypt=encrypt,
        )
        assert rendered.style == "encrypted" and rendered.mutable_content and rendered.title is None
        assert SENDER not in str(rendered) and "e" * 64 not in str(rendered)
        plaintext = nip44.decrypt_from(device, server.public_hex, rendered.data["encrypted"])
        assert len(plaintext.encode()) in SIZE_CLASSES
        inner = orjson.loads(plaintext)
        assert (inner["id"], inner["pubkey"], inner["event"]["content"]) == ("e" * 64, SENDER, content)
        sizes.add(len(rendered.data["encrypted"]))
    assert len(sizes) == 1  # both land in the same size class: the ciphertext length says nothing


def test_encrypted_mode_drops_an_event_too_big_and_without_device_key_goes_silent() -> None:
    server, device = Keys.generate(), Keys.generate()

    def encrypt(peer: str, text: str) -> str:
        return nip44.encrypt_to(server, peer, text)

    event = orjson.dumps({"id": "e" * 64, "content": "z" * 3000})
    rendered = _render(
        _note(event_json=event), AppConfig(mode="encrypted"), _device(device_pubkey=device.public_hex), encrypt=encrypt
    )
    inner = orjson.loads(nip44.decrypt_from(device, server.public_hex, rendered.data["encrypted"]))
    assert "event" not in inner and rendered.degraded and _size(rendered) <= 4096
    assert _render(_note(), AppConfig(mode="encrypted"), encrypt=encrypt).style == "silent"


def test_notepush_with_a_device_key_seals_what_nostr_event_would_hold() -> None:
    server, device = Keys.generate(), Keys.generate()

    def encrypt(peer: str, text: str) -> str:
        return nip44.encrypt_to(server, peer, text)

    keyed = _device(mode=Mode.NOTEPUSH, device_pubkey=device.public_hex)
    event = orjson.dumps({"id": "e" * 64, "pubkey": SENDER, "content": "gm"})
    rendered = _render(_note(1, event_json=event), AppConfig(), keyed, encrypt=encrypt)
    assert (rendered.style, rendered.title, rendered.body) == ("encrypted", None, "New notification")
    assert rendered.mutable_content and rendered.wake and not rendered.degraded
    assert rendered.data["encrypted"] is True and set(rendered.data) == {"encrypted", "ciphertext"}
    assert SENDER not in str(rendered) and "e" * 64 not in str(rendered)
    assert nip44.decrypt_from(device, server.public_hex, str(rendered.data["ciphertext"])) == event.decode()

    big = orjson.dumps({"id": "e" * 64, "content": "z" * 3000})
    for note, degraded in ((_note(1, event_json=big), True), (_note(1, event_json=event, count=3), False)):
        fallback = _render(note, AppConfig(), keyed, encrypt=encrypt)
        ids = orjson.loads(nip44.decrypt_from(device, server.public_hex, str(fallback.data["ciphertext"])))
        assert ids["event_id"] == "e" * 64 and fallback.degraded is degraded and _size(fallback) <= 4096
    # without a key, the event itself in `nostr_event`, as damus' push server sends it
    plain = _render(_note(1, event_json=event), AppConfig(), _device(mode=Mode.NOTEPUSH), encrypt=encrypt)
    assert plain.data == {"encrypted": False, "nostr_event": event.decode()} and plain.style == "alert" and plain.wake


def test_collapse_id_is_per_conversation_and_opaque() -> None:
    app = AppConfig(mode="alert")
    one = _render(_note(conversation="dm-1"), app).collapse_id
    assert one is not None and len(one) == 32 and "dm-1" not in one
    assert one == _render(_note(conversation="dm-1", event_id="f" * 64), app).collapse_id
    assert one != _render(_note(conversation="dm-2"), app).collapse_id
    assert _render(_note(), app).collapse_id is None


GENERIC = {
    "mode": "alert",
    "alert_title": "Mostro",
    "alert_body": "You have an update on your trade",
    "alert_data": {"type": "trade_update"},
}


def test_a_generic_alert_shows_the_fixed_text_and_only_the_apps_data() -> None:
    profiles = MemoryProfileCache()
    profiles.put(SENDER, "Alice")
    note = _note(1, conversation="thread", preview="secret words", relay="wss://r", extra={"sats": "21"})
    rendered = _render(note, AppConfig(**GENERIC, preview_length=100), profiles=profiles)
    assert (rendered.style, rendered.title, rendered.body) == ("alert", "Mostro", "You have an update on your trade")
    assert rendered.data == {"type": "trade_update"}
    assert rendered.wake and rendered.mutable_content
    shown = str(rendered)
    for private in ("Alice", SENDER, npub_encode(SENDER)[:12], "e" * 64, "secret", "wss://r", "thread", "21"):
        assert private not in shown, private


def test_generic_alerts_of_an_app_share_one_collapse_id_whatever_they_stand_for() -> None:
    app = AppConfig(**GENERIC)
    one = _render(_note(conversation="dm-1"), app)
    others = [
        _render(_note(conversation="dm-2", count=5), app),
        _render(_note(kind=1059, recipient="b" * 64), app),
    ]
    assert one.collapse_id is not None and len(one.collapse_id) == 32
    assert all(other == one for other in others)  # count, kind, recipient, conversation: none shows
    assert _render(_note(app="other-app"), app).collapse_id != one.collapse_id


def test_only_the_alert_mode_is_made_generic() -> None:
    body_only = _render(_note(), AppConfig(mode="alert", alert_body="Something happened"))
    assert (body_only.title, body_only.body, body_only.data) == (None, "Something happened", {})
    silent = _render(_note(), AppConfig(**{**GENERIC, "mode": "silent"}))
    assert silent.style == "silent" and silent.title is None and not silent.wake
    event = orjson.dumps({"id": "e" * 64, "content": "x"})
    with_event = _render(_note(event_json=event), AppConfig(**{**GENERIC, "mode": "alert+event"}))
    assert with_event.data["event"] == event.decode() and with_event.title != "Mostro" and not with_event.wake
    plain = _render(_note(), AppConfig(mode="alert"))
    assert plain.body == "Encrypted message" and not plain.wake


def test_alert_data_may_not_use_keys_the_push_services_reserve() -> None:
    for key in ("from", "message_type", "google.c.a", "gcm.n", "aps", ""):
        with pytest.raises(ValueError, match="data key"):
            AppConfig(alert_data={key: "x"})
