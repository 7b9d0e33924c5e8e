"""NIP-59 gift wraps: rumor (unsigned) → seal (kind 13, signed by the author) → gift wrap (kind 1059, signed by
an ephemeral key), each layer NIP-44-encrypted to the recipient.

Unwrapping authenticates the author through the seal: its signature must verify and its pubkey must equal the
rumor's, otherwise anyone could wrap a rumor that claims another author. Wrap and seal timestamps are randomly
backdated up to two days, so nothing downstream may treat them as arrival times.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pushstr.nostr import nip44
from pushstr.nostr.errors import DecryptError, InvalidEvent, InvalidKey
from pushstr.nostr.event import Event, compute_id, parse_event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind

MAX_BACKDATE_SECONDS = 2 * 24 * 3600
# An inner layer is always smaller than the encrypted (base64) outer layer, which the caller has bounded.
_INNER_LIMIT = 1 << 62
_RUMOR_FIELDS = frozenset(("id", "pubkey", "created_at", "kind", "tags", "content"))


@dataclass(frozen=True, slots=True)
class Rumor:
    """An unsigned event. Its id always matches its fields (checked on parse, computed on creation)."""

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: list[list[str]]
    content: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": self.tags,
            "content": self.content,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def tag_values(self, name: str) -> list[str]:
        """Second element of every tag called `name`."""
        return [tag[1] for tag in self.tags if len(tag) >= 2 and tag[0] == name]


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """The result of `unwrap`: the rumor and the (verified) seal it came in."""

    rumor: Rumor
    seal: Event


def _rumor_from_obj(obj: object) -> Rumor:
    """Validate a decoded rumor with the event shape rules (a rumor is an event without `sig`)."""
    if not isinstance(obj, dict):
        raise InvalidEvent("rumor must be a JSON object")
    extra = obj.keys() - _RUMOR_FIELDS
    if extra:
        raise InvalidEvent(f"unknown rumor field {next(iter(extra))!r:.64}")
    fields = dict(obj)
    stated_id = fields.get("id")
    fields.setdefault("id", "0" * 64)
    fields["sig"] = "0" * 128
    shape = Event.from_dict(fields)
    computed = compute_id(shape.pubkey, shape.created_at, shape.kind, shape.tags, shape.content)
    if stated_id is not None and stated_id != computed:
        raise InvalidEvent("rumor id does not match its serialization")
    return Rumor(computed, shape.pubkey, shape.created_at, shape.kind, shape.tags, shape.content)


def parse_rumor(data: str | bytes) -> Rumor:
    """A rumor from JSON; a missing id is computed, a present one must match."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("rumor is not valid JSON") from exc
    return _rumor_from_obj(obj)


def make_rumor(
    pubkey_hex: str, kind: int, content: str, tags: Iterable[Sequence[str]] = (), created_at: int | None = None
) -> Rumor:
    """A rumor by `pubkey_hex` with its id computed (`created_at` defaults to now: the rumor's time is real)."""
    when = int(time.time()) if created_at is None else created_at
    fields = {"pubkey": pubkey_hex, "created_at": when, "kind": kind, "tags": [list(tag) for tag in tags]}
    return _rumor_from_obj({**fields, "content": content})


def _backdated(now: int | None = None) -> int:
    return (int(time.time()) if now is None else now) - secrets.randbelow(MAX_BACKDATE_SECONDS + 1)


def seal(sender_keys: Keys, recipient_pubkey_hex: str, rumor: Rumor) -> Event:
    """Kind 13 by the sender: the rumor encrypted to the recipient, no tags, backdated."""
    if rumor.pubkey != sender_keys.public_hex:
        raise InvalidEvent("the rumor's pubkey must be the sender's")
    content = nip44.encrypt(nip44.conversation_key(sender_keys, recipient_pubkey_hex), rumor.to_json().decode())
    return sign_event(sender_keys, Kind.SEAL, content, (), _backdated())


def gift_wrap(seal_event: Event, recipient_pubkey_hex: str) -> Event:
    """Kind 1059 from a fresh ephemeral key, p-tagged to the recipient, backdated."""
    ephemeral = Keys.generate()
    key = nip44.derive_conversation_key(ephemeral, recipient_pubkey_hex)
    content = nip44.encrypt(key, seal_event.to_json().decode())
    return sign_event(ephemeral, Kind.GIFT_WRAP, content, [["p", recipient_pubkey_hex]], _backdated())


def wrap(  # noqa: PLR0917 - mirrors sign_event's positional order, which callers already use
    sender_keys: Keys,
    recipient_pubkey_hex: str,
    kind: int,
    content: str,
    tags: Iterable[Sequence[str]] = (),
    created_at: int | None = None,
) -> Event:
    """Rumor → seal → gift wrap in one call (`created_at` is the rumor's; the outer layers are backdated)."""
    rumor = make_rumor(sender_keys.public_hex, kind, content, tags, created_at)
    return gift_wrap(seal(sender_keys, recipient_pubkey_hex, rumor), recipient_pubkey_hex)


def unwrap(keys: Keys, gift_wrap_event: Event, *, verify_wrap: bool = True) -> Unwrapped:
    """Open a gift wrap addressed to `keys`.

    Raises `DecryptError` when a layer does not decrypt (not for us, corrupted) and `InvalidEvent` when a layer
    is malformed, the seal's signature is bad, or the seal's and rumor's authors differ. Pass
    `verify_wrap=False` only when admission has already verified the wrap's id and signature.
    """
    if gift_wrap_event.kind != Kind.GIFT_WRAP:
        raise InvalidEvent("not a gift wrap (kind 1059)")
    if verify_wrap:
        gift_wrap_event.verify()
    try:
        # The wrap key is ephemeral: one use, so it stays out of the conversation-key cache.
        wrap_key = nip44.derive_conversation_key(keys, gift_wrap_event.pubkey)
    except InvalidKey as exc:
        raise DecryptError(f"bad wrap pubkey: {exc.reason}") from exc
    seal_event = parse_event(nip44.decrypt(wrap_key, gift_wrap_event.content), _INNER_LIMIT)
    if seal_event.kind != Kind.SEAL:
        raise InvalidEvent("gift wrap does not contain a seal (kind 13)")
    seal_event.verify()
    rumor = parse_rumor(nip44.decrypt_from(keys, seal_event.pubkey, seal_event.content))
    if rumor.pubkey != seal_event.pubkey:
        raise InvalidEvent("seal and rumor authors differ")
    return Unwrapped(rumor, seal_event)


WAKE_UP_KIND = 23903
"""Amethyst's wake-up event: "something happened about this event, go and fetch it"."""


def wrap_once(event_json: str, recipient_pubkey_hex: str, created_at: int | None = None) -> Event:
    """A push gateway's one-layer wrap: kind 1059 signed by a fresh key, `event_json` NIP-44-encrypted to the
    recipient, no seal and no tags.

    This is how Amethyst's push server hands an event to the phone: the push service carries only ciphertext
    under a key nobody sees twice, and without a `p` tag it does not learn whom the push is for either (the app
    tries each of its accounts). The time is the wrap's real time (now unless given): the layer is made for one
    push, not published, so there is nothing to hide by backdating it.
    """
    ephemeral = Keys.generate()
    content = nip44.encrypt(nip44.derive_conversation_key(ephemeral, recipient_pubkey_hex), event_json)
    return sign_event(ephemeral, Kind.GIFT_WRAP, content, (), created_at)


def wake_up(event_id: str, kind: int, author: str | None, relay: str | None, created_at: int | None = None) -> Event:
    """The kind 23903 event wrapped instead of an event too large for a push: `["e", id, relay]`, `["k", kind]`
    and `["p", author]` (whichever are known), empty content, signed by a fresh key (the phone reads the tags and
    fetches the event; who signed the wake-up does not matter to it)."""
    tags: list[list[str]] = [["e", event_id, relay] if relay else ["e", event_id], ["k", str(kind)]]
    if author:
        tags.append(["p", author])
    return sign_event(Keys.generate(), WAKE_UP_KIND, "", tags, created_at)
