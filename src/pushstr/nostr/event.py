"""NIP-01 events: strict parsing, canonical serialization, id and signature checks, signing.

Parsing is strict on purpose: an event that a lenient parser accepts and another implementation rejects (or
hashes differently) is an interop bug or a forgery vector, so anything off-spec is an `InvalidEvent`: from
`parse_event` for the shape, from `Event.verify` for the characters of `id` and `sig` (see `Event`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from hashlib import sha256
from typing import Any

import orjson

from pushstr.nostr.errors import InvalidEvent
from pushstr.nostr.keys import Keys, is_hex, verify_schnorr
from pushstr.nostr.kinds import Kind

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
_GIFT_WRAP = int(Kind.GIFT_WRAP)  # a plain int: compared for every verified event
_FIELDS = frozenset(("id", "pubkey", "created_at", "kind", "tags", "content", "sig"))
_MAX_TIMESTAMP = 2**53 - 1


class KindClass(Enum):
    """How relays store a kind (NIP-01 "Kinds")."""

    REGULAR = "regular"
    REPLACEABLE = "replaceable"
    EPHEMERAL = "ephemeral"
    ADDRESSABLE = "addressable"


def kind_class(kind: int) -> KindClass:
    """The NIP-01 storage class of `kind`."""
    if kind in (0, 3) or 10000 <= kind < 20000:
        return KindClass.REPLACEABLE
    if 20000 <= kind < 30000:
        return KindClass.EPHEMERAL
    if 30000 <= kind < 40000:
        return KindClass.ADDRESSABLE
    return KindClass.REGULAR


def serialize_for_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> bytes:
    """The canonical NIP-01 serialization `[0,pubkey,created_at,kind,tags,content]` as UTF-8 bytes.

    orjson emits compact JSON, UTF-8 verbatim (DEL, U+2028 and U+2029 included), the short escapes for
    `\\n \\" \\\\ \\r \\t \\b \\f` and `\\u00xx` (lowercase) for the other control characters, which
    is byte-for-byte what JSON.stringify and serde_json (nostr-tools, rust-nostr) hash; a property test keeps
    it that way. A string with a lone surrogate has no UTF-8 encoding and so no id: `InvalidEvent`.
    """
    try:
        return orjson.dumps([0, pubkey, created_at, kind, tags, content])
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent("event fields cannot be serialized (lone surrogate or non-string tag)") from exc


def compute_id(pubkey: str, created_at: int, kind: int, tags: Sequence[Sequence[str]], content: str) -> str:
    """sha256 of the canonical serialization, as lowercase hex."""
    return sha256(serialize_for_id(pubkey, created_at, kind, tags, content)).hexdigest()


@dataclass(slots=True)
class Event:
    """A signed Nostr event. Construct through `parse_event`, `Event.from_dict` or `sign_event`.

    Treat it as immutable: nothing assigns to an event after it is built. It is not declared frozen because one is
    parsed for every frame a relay sends, most of them dropped a few microseconds later, and a frozen init costs
    several times a plain one.

    Parsing checks what matching reads (the pubkey as lowercase hex, kind, time, tags of strings) and only the type
    and length of `id` and `sig`; their characters are checked where they are used, by `verify` (the id is
    recomputed and compared as lowercase hex, a `sig` that is not lowercase hex fails the signature check). So a
    malformed id or sig is still refused, with its reason, only one step later: an event that reaches nobody is
    dropped before that step and never pays for it.
    """

    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: list[list[str]]
    content: str
    sig: str

    @classmethod
    def from_dict(cls, obj: object) -> Event:
        """Validate the shape of a decoded JSON object (no id/signature check: see `verify`)."""
        if not isinstance(obj, dict):
            raise InvalidEvent("event must be a JSON object")
        keys = obj.keys()
        if keys != _FIELDS:
            missing = _FIELDS - keys
            if missing:
                raise InvalidEvent(f"missing field {sorted(missing)[0]!r}")
            raise InvalidEvent(f"unknown field {next(iter(keys - _FIELDS))!r:.64}")
        event_id, pubkey, sig = obj["id"], obj["pubkey"], obj["sig"]
        if type(event_id) is not str or len(event_id) != 64:
            raise InvalidEvent("id must be 64 lowercase hex characters")
        if type(pubkey) is not str or len(pubkey) != 64:
            raise InvalidEvent("pubkey must be 64 lowercase hex characters")
        try:
            lowercase_hex = bytes.fromhex(pubkey).hex() == pubkey  # is_hex, inlined: this runs for every frame
        except ValueError:
            lowercase_hex = False
        if not lowercase_hex:
            raise InvalidEvent("pubkey must be 64 lowercase hex characters")
        if type(sig) is not str or len(sig) != 128:
            raise InvalidEvent("sig must be 128 lowercase hex characters")
        created_at = obj["created_at"]
        if type(created_at) is not int or not 0 <= created_at <= _MAX_TIMESTAMP:
            raise InvalidEvent("created_at must be a non-negative integer")
        kind = obj["kind"]
        if type(kind) is not int or not 0 <= kind <= 65535:
            raise InvalidEvent("kind must be an integer in 0..65535")
        content = obj["content"]
        if not isinstance(content, str):
            raise InvalidEvent("content must be a string")
        tags = obj["tags"]
        if not isinstance(tags, list):
            raise InvalidEvent("tags must be a list")
        for tag in tags:
            if not isinstance(tag, list):
                raise InvalidEvent("each tag must be a list of strings")
            for value in tag:
                if not isinstance(value, str):
                    raise InvalidEvent("each tag must be a list of strings")
        return cls(event_id, pubkey, created_at, kind, tags, content, sig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "tags": self.tags,
            "content": self.content,
            "sig": self.sig,
        }

    def to_json(self) -> bytes:
        """Compact JSON of the whole event."""
        try:
            return orjson.dumps(self.to_dict())
        except orjson.JSONEncodeError as exc:
            raise InvalidEvent("event fields cannot be serialized") from exc

    def computed_id(self) -> str:
        """The id this event's fields hash to (may differ from `self.id` for a forged event)."""
        return self.id_digest().hex()

    def id_digest(self) -> bytes:
        """The sha256 digest of the canonical serialization: what the signature signs when the id is right."""
        return sha256(serialize_for_id(self.pubkey, self.created_at, self.kind, self.tags, self.content)).digest()

    def signs(self, digest: bytes) -> bool:
        """BIP-340 check of `sig` by `pubkey` over `digest`; False, never an exception, for malformed hex.

        `sig` must be lowercase hex, as parsing no longer checks its characters (`bytes.fromhex` alone would take
        upper case). A gift wrap is signed by a one-time key, so its parsed key is not cached.
        """
        sig = self.sig
        try:
            signature = bytes.fromhex(sig)
            if signature.hex() != sig:
                return False
            return verify_schnorr(bytes.fromhex(self.pubkey), digest, signature, cache=self.kind != _GIFT_WRAP)
        except (ValueError, TypeError):
            return False

    def has_valid_id(self) -> bool:
        try:
            return self.computed_id() == self.id
        except InvalidEvent:
            return False

    def has_valid_signature(self) -> bool:
        """BIP-340 check of `sig` over the stated id (does not check that the id matches the fields)."""
        if not is_hex(self.id, 64):
            return False
        return self.signs(bytes.fromhex(self.id))

    def verify(self) -> None:
        """Raise `InvalidEvent` unless the id matches the fields and the signature is valid.

        This is the admission hot path: the digest is hashed once and handed to the verifier as bytes, and the
        author's parsed key comes from the bounded cache in `keys`.
        """
        digest = self.id_digest()
        if digest.hex() != self.id:
            raise InvalidEvent("event id does not match its serialization")
        if not self.signs(digest):
            raise InvalidEvent("bad signature")

    def is_valid(self) -> bool:
        try:
            self.verify()
        except InvalidEvent:
            return False
        return True

    @property
    def kind_class(self) -> KindClass:
        return kind_class(self.kind)

    def tag_values(self, name: str) -> list[str]:
        """Second element of every tag called `name` (`["p", <pubkey>, ...]` → pubkey)."""
        return [tag[1] for tag in self.tags if len(tag) >= 2 and tag[0] == name]

    def first_tag_value(self, name: str) -> str | None:
        for tag in self.tags:
            if len(tag) >= 2 and tag[0] == name:
                return tag[1]
        return None

    @property
    def p_tags(self) -> list[str]:
        return self.tag_values("p")

    @property
    def e_tags(self) -> list[str]:
        return self.tag_values("e")


def parse_event(data: bytes | str | dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Parse an event from JSON text (or an already-decoded object) with strict validation.

    Does not verify id or signature; call `Event.verify()` (admission does both in one place).
    """
    if isinstance(data, dict):
        return Event.from_dict(data)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8 below
    elif not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEvent("event must be JSON text")
    if len(data) > max_bytes:
        raise InvalidEvent(f"event larger than {max_bytes} bytes")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("event is not valid JSON") from exc
    return Event.from_dict(obj)


def parse_verified_event(data: bytes | str | dict[str, Any], max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """`parse_event` followed by `Event.verify()`."""
    event = parse_event(data, max_bytes)
    event.verify()
    return event


def sign_event(
    keys: Keys,
    kind: int,
    content: str,
    tags: Iterable[Sequence[str]] = (),
    created_at: int | None = None,
) -> Event:
    """Build and sign an event with `keys` (server AUTH events, gift wraps, test fixtures).

    `kind` is stored as a plain int (a `Kind` member becomes its number), so the event passes the same strict
    shape rules as one received from a relay.
    """
    kind = int(kind)
    tag_list = [list(tag) for tag in tags]
    when = int(time.time()) if created_at is None else created_at
    unsigned = {
        "id": "0" * 64,
        "pubkey": keys.public_hex,
        "created_at": when,
        "kind": kind,
        "tags": tag_list,
        "content": content,
        "sig": "0" * 128,
    }
    Event.from_dict(unsigned)  # same shape rules as for received events
    digest = sha256(serialize_for_id(keys.public_hex, when, kind, tag_list, content)).digest()
    return Event(digest.hex(), keys.public_hex, when, kind, tag_list, content, keys.sign_schnorr(digest).hex())
