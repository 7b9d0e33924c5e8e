"""NIP-19 bech32 entities: npub, nsec, note (bare 32 bytes) and nprofile, nevent (TLV).

Decoders are strict about what they need (checksum, prefix, 32-byte values) and lenient about what they do not:
unknown TLV types are skipped, as NIP-19 requires, so newer clients' strings still decode here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pushstr.nostr import bech32
from pushstr.nostr.errors import Bech32Error, InvalidKey
from pushstr.nostr.keys import is_hex, public_key_bytes

# A bare key is 63 characters; TLV strings carry relay URLs. 5000 characters holds a few dozen relays and
# keeps the quadratic-free but still per-character decoder cheap on hostile input.
MAX_LENGTH = 5000

_TLV_SPECIAL = 0
_TLV_RELAY = 1
_TLV_AUTHOR = 2
_TLV_KIND = 3


@dataclass(frozen=True, slots=True)
class Profile:
    """A decoded `nprofile`: a pubkey (lowercase hex) and relay hints."""

    pubkey: str
    relays: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventPointer:
    """A decoded `nevent`: an event id (lowercase hex), relay hints, and optional author and kind."""

    id: str
    relays: tuple[str, ...] = ()
    author: str | None = None
    kind: int | None = None


def _hex32(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not is_hex(value.lower(), 64):
        raise Bech32Error(f"{what} must be 64 hex characters")
    return bytes.fromhex(value)


def _encode_bare(hrp: str, value_hex: str, what: str) -> str:
    return bech32.encode(hrp, _hex32(value_hex, what))


def _decode_bare(expected_hrp: str, value: str) -> str:
    hrp, data = bech32.decode(value, MAX_LENGTH)
    if hrp != expected_hrp:
        raise Bech32Error(f"expected a {expected_hrp} string, got {hrp!r:.20}")
    if len(data) != 32:
        raise Bech32Error(f"{expected_hrp} must hold 32 bytes")
    return data.hex()


def npub_encode(pubkey_hex: str) -> str:
    return _encode_bare("npub", pubkey_hex, "pubkey")


def npub_decode(value: str) -> str:
    """Lowercase hex pubkey of an `npub1…` string."""
    return _decode_bare("npub", value)


def nsec_encode(secret_hex: str) -> str:
    return _encode_bare("nsec", secret_hex, "secret key")


def nsec_decode(value: str) -> str:
    """Lowercase hex secret key of an `nsec1…` string."""
    return _decode_bare("nsec", value)


def note_encode(event_id: str) -> str:
    return _encode_bare("note", event_id, "event id")


def note_decode(value: str) -> str:
    """Lowercase hex event id of a `note1…` string."""
    return _decode_bare("note", value)


def _tlv_item(kind: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise Bech32Error("TLV value longer than 255 bytes")
    return bytes((kind, len(value))) + value


def _relay_items(relays: Iterable[str]) -> bytes:
    return b"".join(_tlv_item(_TLV_RELAY, relay.encode("utf-8")) for relay in relays)


def _parse_tlv(data: bytes) -> list[tuple[int, bytes]]:
    items: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise Bech32Error("truncated TLV header")
        kind, length = data[offset], data[offset + 1]
        offset += 2
        if offset + length > len(data):
            raise Bech32Error("truncated TLV value")
        items.append((kind, data[offset : offset + length]))
        offset += length
    return items


def _relays(items: list[tuple[int, bytes]]) -> tuple[str, ...]:
    try:
        return tuple(value.decode("utf-8") for kind, value in items if kind == _TLV_RELAY)
    except UnicodeDecodeError as exc:
        raise Bech32Error("relay hint is not UTF-8") from exc


def _optional32(items: list[tuple[int, bytes]], tlv_type: int, what: str) -> str | None:
    """Hex of the first TLV of `tlv_type` (later duplicates are ignored), None when absent."""
    for kind, value in items:
        if kind == tlv_type:
            if len(value) != 32:
                raise Bech32Error(f"{what} must be 32 bytes")
            return value.hex()
    return None


def _required32(items: list[tuple[int, bytes]], what: str) -> str:
    value = _optional32(items, _TLV_SPECIAL, what)
    if value is None:
        raise Bech32Error(f"missing {what}")
    return value


def nprofile_encode(pubkey_hex: str, relays: Iterable[str] = ()) -> str:
    data = _tlv_item(_TLV_SPECIAL, _hex32(pubkey_hex, "pubkey")) + _relay_items(relays)
    return bech32.encode("nprofile", data)


def _profile_from(data: bytes) -> Profile:
    items = _parse_tlv(data)
    return Profile(_required32(items, "pubkey"), _relays(items))


def nprofile_decode(value: str) -> Profile:
    hrp, data = bech32.decode(value, MAX_LENGTH)
    if hrp != "nprofile":
        raise Bech32Error(f"expected an nprofile string, got {hrp!r:.20}")
    return _profile_from(data)


def nevent_encode(event_id: str, relays: Iterable[str] = (), author: str | None = None, kind: int | None = None) -> str:
    data = _tlv_item(_TLV_SPECIAL, _hex32(event_id, "event id")) + _relay_items(relays)
    if author is not None:
        data += _tlv_item(_TLV_AUTHOR, _hex32(author, "author"))
    if kind is not None:
        if not 0 <= kind <= 0xFFFFFFFF:
            raise Bech32Error("kind must fit in 32 bits")
        data += _tlv_item(_TLV_KIND, kind.to_bytes(4, "big"))
    return bech32.encode("nevent", data)


def _event_pointer_from(data: bytes) -> EventPointer:
    items = _parse_tlv(data)
    event_id = _required32(items, "event id")
    author = _optional32(items, _TLV_AUTHOR, "author")
    kinds = [value for tlv_type, value in items if tlv_type == _TLV_KIND]
    kind = None
    if kinds:
        if len(kinds[0]) != 4:
            raise Bech32Error("kind must be 4 bytes")
        kind = int.from_bytes(kinds[0], "big")
    return EventPointer(event_id, _relays(items), author, kind)


def nevent_decode(value: str) -> EventPointer:
    hrp, data = bech32.decode(value, MAX_LENGTH)
    if hrp != "nevent":
        raise Bech32Error(f"expected an nevent string, got {hrp!r:.20}")
    return _event_pointer_from(data)


def decode(value: str) -> tuple[str, str | Profile | EventPointer]:
    """Any supported entity: `("npub"|"nsec"|"note", hex)`, `("nprofile", Profile)` or `("nevent", EventPointer)`."""
    hrp, data = bech32.decode(value, MAX_LENGTH)
    if hrp in ("npub", "nsec", "note"):
        if len(data) != 32:
            raise Bech32Error(f"{hrp} must hold 32 bytes")
        return hrp, data.hex()
    if hrp == "nprofile":
        return hrp, _profile_from(data)
    if hrp == "nevent":
        return hrp, _event_pointer_from(data)
    raise Bech32Error(f"unsupported NIP-19 prefix {hrp!r:.20}")


def parse_pubkey(value: str) -> str:
    """Lowercase hex of a pubkey given as `npub1…` or as 64 hex characters (either case); it must be on the curve.

    Registration endpoints accept both spellings, so this is the one place that normalises them.
    """
    if not isinstance(value, str):
        raise InvalidKey("pubkey must be a string")
    text = value.strip()
    if text[:5].lower() == "npub1":
        pubkey = npub_decode(text)
    elif is_hex(text.lower(), 64):
        pubkey = text.lower()
    else:
        raise InvalidKey("pubkey must be an npub or 64 hex characters")
    public_key_bytes(pubkey)
    return pubkey
