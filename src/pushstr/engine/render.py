"""Rendering: Notification + Registration + app settings → a platform-neutral payload. Pure; no I/O.

Each transport maps a `Rendered` onto its wire format (APNs `aps`, FCM `message`, a Web Push body) and passes its
own `measure` so the 4 KB rule is checked against the bytes that will really be sent.

Modes, chosen per app and overridable per registration:

- `silent`: wake the app and say nothing. No event id, no kind, no identity: the app syncs from its relays.
- `alert`: a visible notification. Title: the sender's display name (kind-0 cache) or a short npub; body by kind.
- `alert+event`: the alert plus the signed event in the data when the whole payload fits, else the event id and a
  relay hint; `mutable-content` lets an iOS extension decrypt and rewrite it.
- `encrypted`: a placeholder alert (data-only on Android / Web) whose data is one NIP-44 payload to the device's
  key, padded to fixed size classes so the push service sees neither content nor identities nor sizes.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from pushstr.config import AppConfig
from pushstr.registry.model import Registration
from pushstr.transports.base import Notification

#: The largest payload APNs, FCM and Web Push accept.
MAX_PAYLOAD_BYTES = 4096
#: Plaintext sizes (bytes) an `encrypted` payload is padded to; the largest still fits 4 KB once encrypted.
SIZE_CLASSES = (512, 1024, 2048)
#: Shown by iOS until the app's extension replaces it with the decrypted text.
ENCRYPTED_PLACEHOLDER = "New notification"

Style = Literal["silent", "alert", "encrypted"]
Measure = Callable[["Rendered"], int]
Encrypt = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class Rendered:
    """What to show and what to hand the app, before any platform's framing.

    `data` values are strings because FCM data messages allow nothing else. `collapse_id` lets a newer push
    replace an older one of the same conversation (APNs `apns-collapse-id`, FCM `collapse_key`, Web Push
    `Topic`); it is a digest, so it says nothing about who talks to whom.
    """

    style: Style
    title: str | None = None
    body: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    collapse_id: str | None = None
    mutable_content: bool = False
    degraded: bool = False


class ProfileCache(Protocol):
    """Display names from kind-0 metadata, filled by the engine from the relays; misses are fine."""

    def display_name(self, pubkey: str) -> str | None: ...


class MemoryProfileCache:
    """A bounded in-memory `ProfileCache` whose entries expire after `ttl` seconds (names change)."""

    def __init__(self, ttl: float = 6 * 3600, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._names: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def put(self, pubkey: str, name: str) -> None:
        """Remember `name` for `pubkey` (hex); the oldest entry goes when the cache is full."""
        self._names[pubkey] = (self._clock() + self._ttl, name)
        self._names.move_to_end(pubkey)
        while len(self._names) > self._max:
            self._names.popitem(last=False)

    def display_name(self, pubkey: str) -> str | None:
        entry = self._names.get(pubkey)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._names[pubkey]
            return None
        return entry[1]


def profile_name(metadata_json: str) -> str | None:
    """The name to show from a kind-0 `content`: `display_name`, else `name`; None when unusable."""
    try:
        meta = orjson.loads(metadata_json)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(meta, dict):
        return None
    for key in ("display_name", "displayName", "name"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return _clip(" ".join(value.split()), 64)
    return None


def short_npub(pubkey_hex: str) -> str:
    """`npub1abcd…wxyz`: recognisable, short enough for a notification title."""
    from pushstr.nostr.nip19 import npub_encode

    npub = npub_encode(pubkey_hex)
    return f"{npub[:9]}…{npub[-4:]}"


_BOLT11_AMOUNT = re.compile(r"^ln(?:bcrt|bc|tbs|tb|sb)(\d+)([munp]?)$")
_MSAT_PER_UNIT = {"": 100_000_000_000, "m": 100_000_000, "u": 100_000, "n": 100}


def bolt11_msat(invoice: str) -> int | None:
    """Amount of a BOLT-11 invoice in millisatoshis from its human-readable part; None without an amount."""
    hrp = invoice.strip().lower().rpartition("1")[0]
    match = _BOLT11_AMOUNT.match(hrp)
    if match is None:
        return None
    digits, unit = match.groups()
    if unit == "p":
        return int(digits) // 10
    return int(digits) * _MSAT_PER_UNIT[unit]


def zap_sats(receipt: Mapping[str, Any]) -> int | None:
    """Sats of a zap receipt (kind 9735): the `amount` tag of the zap request in `description`, else the bolt11.

    The zap request's amount is what the sender meant to send; the invoice is the fallback when a wallet left
    the request without one.
    """
    tags = [tag for tag in receipt.get("tags", []) if isinstance(tag, list) and len(tag) >= 2]
    for tag in tags:
        if tag[0] == "description" and isinstance(tag[1], str):
            try:
                request = orjson.loads(tag[1])
            except orjson.JSONDecodeError:
                break
            for inner in request.get("tags", []) if isinstance(request, dict) else []:
                if isinstance(inner, list) and len(inner) >= 2 and inner[0] == "amount":
                    try:
                        return int(inner[1]) // 1000
                    except (TypeError, ValueError):
                        break
            break
    for tag in tags:
        if tag[0] == "bolt11" and isinstance(tag[1], str):
            msat = bolt11_msat(tag[1])
            return None if msat is None else msat // 1000
    return None


_ONE = {4: "Encrypted message", 1059: "Encrypted message", 7: "reacted to your note", 6: "reposted your note"}
_MANY = {4: "new messages", 1059: "new messages", 1: "new mentions", 7: "new reactions", 6: "new reposts"}


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
        preview = _clip(" ".join((notification.preview or "").split()), preview_length)
        return f"mentioned you: {preview}" if preview else "mentioned you"
    if kind == 9735:
        return f"zapped you {sats} sats" if sats else "zapped you"
    return _ONE.get(kind, "New activity")


def collapse_id(notification: Notification) -> str | None:
    """A per-conversation digest (32 hex chars: valid as APNs collapse id and Web Push `Topic`)."""
    if not notification.conversation:
        return None
    seed = f"{notification.app}\0{notification.recipient}\0{notification.conversation}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


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

    The mode is the registration's when it chose one, else the app's (`Notification.mode` is informational).

    `encrypt(device_pubkey_hex, plaintext)` is NIP-44 to the device key with the server's keys bound in; without
    it, or without a device key, the `encrypted` mode falls back to `silent` rather than leak anything.
    """
    mode = device.mode or app.mode
    collapse = collapse_id(notification)
    if mode == "encrypted":
        if encrypt is not None and device.device_pubkey:
            return _encrypted(
                notification, device.device_pubkey, encrypt, collapse=collapse, measure=measure, limit=limit
            )
        mode = "silent"
    if mode not in ("alert", "alert+event"):
        return Rendered("silent", data={"count": str(notification.count)}, collapse_id=collapse)
    name = profiles.display_name(notification.sender) if profiles and notification.sender else None
    if name is None and notification.sender:
        name = short_npub(notification.sender)
    title = name or "Nostr"
    body = alert_body(notification, app.preview_length)
    ids = {"event_id": notification.event_id, "kind": str(notification.kind), "count": str(notification.count)}
    if mode == "alert":
        return Rendered("alert", title, body, ids, collapse)
    if notification.event_json is not None:
        full = Rendered("alert", title, body, {**ids, "event": notification.event_json.decode()}, collapse, True)
        if measure(full) <= limit:
            return full
    hint = {"relay": notification.relay} if notification.relay else {}
    return Rendered("alert", title, body, {**ids, **hint}, collapse, True, degraded=notification.event_json is not None)


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


def _clip(text: str, length: int) -> str:
    if length <= 0:
        return ""
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"
