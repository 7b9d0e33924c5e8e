"""The content of a Nos kind 6666 registration, read the way Nos's own server reads it.

Nos (`Nos/Service/PushNotificationRegistrar.swift`) encodes
`{"apnsToken": <device token hex>, "publicKey": <account hex>, "relays": [{"address": <relay URL>}, …]}` with
Swift's `JSONEncoder` (keys in no fixed order, `/` written as `\\/`) and publishes it as the plaintext content of an
event with no tags. Its server (nos-notification-service-go, `domain/registration.go`) decodes the token from hex
and refuses a registration whose `publicKey` is not the event's signer; this module reads the JSON and leaves
the checks that need the event, the token rules and the URL guard to the dialect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

MAX_CONTENT_BYTES = 32 * 1024
"""Far above what a Nos account writes (a token, a key and its relays: a few hundred bytes per dozen relays)."""
MAX_RELAYS_READ = 100
"""Relay entries looked at; the rest are ignored. Each one read may cost a DNS lookup in the URL guard."""

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class BadRegistration(ValueError):
    """Content that is not a Nos registration; `result` is the metric label, the message says what is wrong."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result


@dataclass(frozen=True, slots=True)
class NosRegistration:
    """What one registration says. `apns_token` and `public_key` are lowercased (Nos writes lowercase hex; a token
    in another case must still be the same device), `relays` are the addresses as written, `None` for an entry
    without a string `address` (the relay guard counts it as invalid)."""

    apns_token: str
    public_key: str
    relays: tuple[object, ...]


def read_registration(content: str) -> NosRegistration:
    """The registration `content` holds, or `BadRegistration` (`too_large`, `bad_json`)."""
    if len(content) > MAX_CONTENT_BYTES or len(content.encode()) > MAX_CONTENT_BYTES:
        raise BadRegistration("too_large", f"content larger than {MAX_CONTENT_BYTES} bytes")
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise BadRegistration("bad_json", "content is not JSON") from None
    if not isinstance(data, dict):
        raise BadRegistration("bad_json", "content is not a JSON object")
    token = data.get("apnsToken")
    if not isinstance(token, str):
        raise BadRegistration("bad_json", "apnsToken: not a string")
    public_key = data.get("publicKey")
    if not isinstance(public_key, str) or not _HEX_KEY.fullmatch(public_key):
        raise BadRegistration("bad_json", "publicKey: not a 64-character hex key")
    relays = data.get("relays")
    if not isinstance(relays, list):
        raise BadRegistration("bad_json", "relays: not a list")
    addresses = tuple(_address(entry) for entry in relays[:MAX_RELAYS_READ])
    return NosRegistration(token.lower(), public_key.lower(), addresses)


def _address(entry: object) -> object:
    address = entry.get("address") if isinstance(entry, dict) else None
    return address if isinstance(address, str) else None
