"""Rendering, once per (notification, device): a platform-neutral payload, then its transport's wire form.

`render` is pure. It degrades the payload until the transport's own `measure` of it fits the 4 KB limit, so the
rule is checked against the bytes that will really be sent. `Renderer` binds one app's settings, the display
names and the device-key encryption, and asks the transport to `encode` the result; delivery queues what comes
out, and retries resend exactly that.

Modes, chosen per app and overridable per registration (`payload_mode`, the one place that decides):

- `silent`: wake the app and say nothing. No event id, no kind, no identity: the app syncs from its relays.
- `alert`: a visible notification. Title: the sender's display name (kind-0 cache) or a short npub; body by kind.
  An app with `alert_title`/`alert_body` makes it a *generic alert* instead: that fixed text, the app's
  `alert_data` and nothing else (no sender, no event id, no kind, no count), marked to wake the app too (it
  learns what happened from its relays) and mutable (an iOS extension may rewrite it). Every generic alert of
  an app looks the same, so they share one collapse id and a newer one replaces the older.
- `alert+event`: the alert plus the signed event in the data when the whole payload fits, else the event id and a
  relay hint; `mutable-content` lets an iOS extension decrypt and rewrite it.
- `encrypted`: a placeholder alert (data-only on Android / Web) whose data is one NIP-44 payload to the device's
  key, padded to fixed size classes so the push service sees neither content nor identities nor sizes.
- `notepush`: what damus' push server sends: an alert marked mutable and waking the app, the signed event JSON in
  the data's `nostr_event` (the damus notification extension reads it) when it fits and the push stands for one
  event, else the event id; beside it the flag `encrypted: false`. A device that gave notepush a key
  (`device_pubkey`) gets the same waking, mutable alert with only the placeholder text in the clear, `encrypted:
  true` and in `ciphertext` NIP-44 to that key of exactly what `nostr_event` would hold (else of the ids), as
  notepush sends it.
- `wrapped`: data-only, the signed event itself NIP-44-encrypted to the recipient in a one-layer kind 1059 from a
  fresh key (`nostr.nip59.wrap_once`), as Amethyst's push server sends it. A wrap over 4000 bytes, or one the
  transport cannot fit, wraps a kind 23903 wake-up naming the event instead (`nostr.nip59.wake_up`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from pushstr.config import AppConfig
from pushstr.nostr import nip59
from pushstr.registry.model import Mode, Registration
from pushstr.transports.base import (
    ENCRYPTED_EVENT_KEY,
    MAX_PAYLOAD_BYTES,
    Encoded,
    Notification,
    Rendered,
    SendResult,
    Transport,
)

#: Plaintext sizes (bytes) an `encrypted` payload is padded to; the largest still fits 4 KB once encrypted.
SIZE_CLASSES = (512, 1024, 2048)
#: Shown by iOS until the app's extension replaces it with the decrypted text.
ENCRYPTED_PLACEHOLDER = "New notification"
#: Modes whose payload carries the signed event, so only they pay for serializing it.
MODES_WITH_EVENT = frozenset({Mode.ALERT_EVENT, Mode.ENCRYPTED, Mode.WRAPPED, Mode.NOTEPUSH})
#: The largest wrap pushed whole; a larger one becomes a wake-up (the limit Amethyst's push server applies).
WRAP_LIMIT = 4000

Measure = Callable[[Rendered], int]
Encrypt = Callable[[str, str], str]


def payload_mode(device: Registration, app: AppConfig | None) -> Mode:
    """The mode of a device's pushes: the registration's choice, else its app's (silent for an unknown app)."""
    if device.mode is not None:
        return device.mode
    return app.mode if app is not None else Mode.SILENT


class ProfileCache(Protocol):
    """Display names from kind-0 metadata, filled by the engine from the relays; misses are fine."""

    def display_name(self, pubkey: str) -> str | None: ...


def short_npub(pubkey_hex: str) -> str:
    """`npub1abcd…wxyz`: recognisable, short enough for a notification title."""
    from pushstr.nostr.nip19 import npub_encode

    npub = npub_encode(pubkey_hex)
    return f"{npub[:9]}…{npub[-4:]}"


_GROUP_KINDS = (9, 10, 11, 12, 42)  # NIP-29 group chat, threads and replies; NIP-28 channel messages
_ONE = {
    4: "Encrypted message",
    1059: "Encrypted message",
    7: "reacted to your note",
    6: "reposted your note",
    **dict.fromkeys(_GROUP_KINDS, "New message in a group"),
}
_MANY = {
    4: "new messages",
    1059: "new messages",
    1: "new mentions",
    7: "new reactions",
    6: "new reposts",
    **dict.fromkeys(_GROUP_KINDS, "new group messages"),
}


def alert_body(notification: Notification, preview_length: int) -> str:
    """The notification text for one event (or a coalesced batch), without any decrypted content."""
    kind, count = notification.kind, notification.count
    sats = notification.extra.get("sats")
    if count > 1:
        if notification.extra.get("mixed"):
            return f"{count} new notifications"
        if kind == 9735:
            return f"{count} zaps, {sats} sats" if sats else f"{count} zaps"
        return f"{count} {_MANY.get(kind, 'new notifications')}"
    if kind == 1:
        preview = clip_text(" ".join((notification.preview or "").split()), preview_length)
        return f"mentioned you: {preview}" if preview else "mentioned you"
    if kind == 9735:
        return f"zapped you {sats} sats" if sats else "zapped you"
    return _ONE.get(kind, "New activity")


def _digest(seed: str) -> str:
    """32 hex chars: valid as APNs collapse id and Web Push `Topic`."""
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def collapse_id(notification: Notification) -> str | None:
    """A per-conversation digest."""
    if not notification.conversation:
        return None
    return _digest(f"{notification.app}\0{notification.recipient}\0{notification.conversation}")


def generic_collapse_id(app_id: str) -> str:
    """The one collapse id of an app's generic alerts (they all say the same)."""
    return _digest(f"{app_id}\0generic-alert")


def render(
    notification: Notification,
    device: Registration,
    app: AppConfig,
    *,
    profiles: ProfileCache | None = None,
    encrypt: Encrypt | None = None,
    measure: Measure,
    limit: int = MAX_PAYLOAD_BYTES,
) -> Rendered:
    """The payload for `notification` on `device`, degraded until `measure(payload) <= limit`.

    The mode is `payload_mode(device, app)` (`Notification.mode` is informational).

    `encrypt(device_pubkey_hex, plaintext)` is NIP-44 to the device key with the server's keys bound in; without
    it, or without a device key, the `encrypted` mode falls back to `silent` rather than leak anything.
    """
    mode = payload_mode(device, app)
    if mode is Mode.WRAPPED:
        return _wrapped(notification, measure=measure, limit=limit)
    collapse = collapse_id(notification)
    if mode is Mode.ENCRYPTED:
        if encrypt is not None and device.device_pubkey:
            return _encrypted(
                notification, device.device_pubkey, encrypt, collapse=collapse, measure=measure, limit=limit
            )
        mode = Mode.SILENT
    if mode is Mode.NOTEPUSH and encrypt is not None and device.device_pubkey:
        return _notepush_sealed(
            notification, device.device_pubkey, encrypt, collapse=collapse, measure=measure, limit=limit
        )
    if mode not in (Mode.ALERT, Mode.ALERT_EVENT, Mode.NOTEPUSH):
        return Rendered("silent", data={"count": str(notification.count)}, collapse_id=collapse)
    if mode is Mode.ALERT and app.generic_alert:
        return Rendered(
            "alert",
            app.alert_title,
            app.alert_body,
            dict(app.alert_data),
            generic_collapse_id(notification.app),
            mutable_content=True,
            wake=True,
        )
    name = profiles.display_name(notification.sender) if profiles and notification.sender else None
    if name is None and notification.sender:
        name = short_npub(notification.sender)
    title = name or "Nostr"
    body = alert_body(notification, app.preview_length)
    ids = _ids(notification)
    if mode is Mode.ALERT:
        return Rendered("alert", title, body, ids, collapse)
    if mode is Mode.NOTEPUSH:
        return _notepush(notification, Rendered("alert", title, body, ids, collapse, True, wake=True), measure, limit)
    if notification.event_json is not None:
        full = Rendered("alert", title, body, {**ids, "event": notification.event_json.decode()}, collapse, True)
        if measure(full) <= limit:
            return full
    hint = {"relay": notification.relay} if notification.relay else {}
    return Rendered("alert", title, body, {**ids, **hint}, collapse, True, degraded=notification.event_json is not None)


def _notepush(notification: Notification, alert: Rendered, measure: Measure, limit: int) -> Rendered:
    """`alert` with the event in `nostr_event` when it fits and stands alone (a batch's text would be replaced by
    one event's); else `alert` as it is, marked degraded when the event did not fit."""
    if notification.event_json is None or notification.count > 1:
        return replace(alert, data={**alert.data, "encrypted": False})
    full = replace(alert, data={"encrypted": False, "nostr_event": notification.event_json.decode()})
    if measure(full) <= limit:
        return full
    return replace(alert, data={**alert.data, "encrypted": False}, degraded=True)


def _notepush_sealed(
    notification: Notification,
    device_pubkey: str,
    encrypt: Encrypt,
    *,
    collapse: str | None,
    measure: Measure,
    limit: int,
) -> Rendered:
    """`_notepush`'s payload for a device with a key: the alert's text is the placeholder (a sender's name or the
    kind's wording would tell the push service who wrote and what), and `ciphertext` seals the event JSON when it
    fits and the push stands for one event, else the ids the plaintext form would carry. It is styled `encrypted`,
    so Android gets it data-only, for the app to decrypt and show, like every sealed payload.

    No padding beyond NIP-44's own: the extension parses the plaintext as the event itself.
    """

    def sealed(plaintext: str, degraded: bool = False) -> Rendered:
        data: dict[str, str | bool] = {"encrypted": True, "ciphertext": encrypt(device_pubkey, plaintext)}
        return Rendered("encrypted", None, ENCRYPTED_PLACEHOLDER, data, collapse, True, degraded, wake=True)

    if notification.event_json is not None and notification.count == 1:
        whole = sealed(notification.event_json.decode())
        if measure(whole) <= limit:
            return whole
        return sealed(orjson.dumps(_ids(notification)).decode(), degraded=True)
    return sealed(orjson.dumps(_ids(notification)).decode())


def _ids(notification: Notification) -> dict[str, str]:
    """What an alert names of the event when it carries no more: its id, kind and how many events it stands for."""
    return {"event_id": notification.event_id, "kind": str(notification.kind), "count": str(notification.count)}


def _encrypted(
    notification: Notification,
    device_pubkey: str,
    encrypt: Encrypt,
    *,
    collapse: str | None,
    measure: Measure,
    limit: int,
) -> Rendered:
    inner: dict[str, Any] = {
        "id": notification.event_id,
        "kind": notification.kind,
        "pubkey": notification.sender,
        "created_at": notification.created_at,
        "count": notification.count,
        "relay": notification.relay,
    }
    degraded = False
    if notification.event_json is not None:
        with_event = _padded({**inner, "event": orjson.loads(notification.event_json)})
        if with_event is not None:
            sealed = {"encrypted": encrypt(device_pubkey, with_event)}
            payload = Rendered("encrypted", None, ENCRYPTED_PLACEHOLDER, sealed, collapse, True)
            if measure(payload) <= limit:
                return payload
        degraded = True
    plaintext = _padded(inner)
    assert plaintext is not None  # ids alone are far below the smallest class
    return Rendered(
        "encrypted",
        None,
        ENCRYPTED_PLACEHOLDER,
        {"encrypted": encrypt(device_pubkey, plaintext)},
        collapse,
        True,
        degraded,
    )


def _wrapped(notification: Notification, *, measure: Measure, limit: int) -> Rendered:
    """The event in a one-layer wrap to the recipient, else a wrapped wake-up about it.

    No collapse id: every push carries a different event, and a push service that collapsed two would lose one.
    A notification that came without its event (matched while the device had another mode) gets a wake-up too.
    Batching would push only the newest of the events it merges, so the apps of wrapped devices should not batch.
    """
    recipient = notification.recipient
    event_json = notification.event_json
    if event_json is not None:
        wrap = nip59.wrap_once(event_json.decode(), recipient).to_json()
        whole = Rendered("silent", data={ENCRYPTED_EVENT_KEY: wrap.decode()})
        if len(wrap) <= WRAP_LIMIT and measure(whole) <= limit:
            return whole
    author = orjson.loads(event_json)["pubkey"] if event_json is not None else None
    wake = nip59.wake_up(notification.event_id, notification.kind, author, notification.relay)
    wrapped_wake = nip59.wrap_once(wake.to_json().decode(), recipient).to_json().decode()
    return Rendered("silent", data={ENCRYPTED_EVENT_KEY: wrapped_wake}, degraded=event_json is not None)


def _padded(inner: Mapping[str, Any]) -> str | None:
    """`inner` as JSON padded with spaces to the smallest size class it fits, or None when it fits none.

    Trailing whitespace is valid JSON, so the app parses the padded text as is.
    """
    text = orjson.dumps(inner).decode()
    size = len(text.encode())
    for size_class in SIZE_CLASSES:
        if size <= size_class:
            return text + " " * (size_class - size)
    return None


def clip_text(text: str, length: int) -> str:
    if length <= 0:
        return ""
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Renderer:
    """Renders one app's pushes: its payload settings, the names to show and the encryption to device keys."""

    app: AppConfig
    profiles: ProfileCache | None = None
    encrypt: Encrypt | None = None

    def encode(self, notification: Notification, device: Registration, transport: Transport) -> Encoded | SendResult:
        """The push as `transport` will send it on every attempt, or the final result when it cannot be sent."""
        rendered = render(
            notification,
            device,
            self.app,
            profiles=self.profiles,
            encrypt=self.encrypt,
            measure=lambda candidate: transport.measure(candidate, device),
        )
        return transport.encode(notification, rendered, device)
