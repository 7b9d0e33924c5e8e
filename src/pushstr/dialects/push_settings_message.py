"""Reading a decrypted kind 22456 message the way 0xchat writes it (0xchat-core `lib/src/account/notification.dart`).

Pure parsing, no state: the message model, which push service a `deviceId` belongs to, and which `#e` and
`authors` entries can be used. A settings message is never refused for one odd entry: entries that cannot be
used are left out and counted by reason, so a user with one malformed contact still gets their pushes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pushstr.nostr.keys import is_hex
from pushstr.nostr.nip29 import group_key, parse_group
from pushstr.registry.model import NO_AUTHORS, Platform
from pushstr.registry.tokens import MAX_TOKEN_BYTES, parse_platform

MAX_KINDS = 64
MAX_ENTRIES = 100_000
"""Entries read from one list at most (the event-size limit bounds them first); the configured limits are lower."""
APNS_TOKEN_MIN_HEX = 64

KindNumber = Annotated[int, Field(ge=0, le=65535)]
_TRAILING_HEX = re.compile(r"[0-9a-fA-F]+\Z")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+\Z")


class Message(BaseModel):
    """A decrypted 22456 message; which fields are present decides what it is (see `push_settings`).

    List entries are typed loosely (`Any`) on purpose: they are sorted out by `read_groups` and `read_authors`,
    which leave bad entries out instead of refusing the whole message.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    kinds: list[KindNumber] | None = Field(None, max_length=MAX_KINDS)
    device_id: str | None = Field(None, alias="deviceId", max_length=MAX_TOKEN_BYTES)
    relays: list[Any] = Field(default_factory=list, max_length=MAX_ENTRIES)
    groups: list[Any] = Field(default_factory=list, alias="#e", max_length=MAX_ENTRIES)
    authors: list[Any] | None = Field(None, max_length=MAX_ENTRIES)
    online: Annotated[int, Field(ge=0, le=1)] | None = None
    platform: Platform | None = None

    @field_validator("platform", mode="before")
    @classmethod
    def _platform_name(cls, value: Any) -> Any:
        """Not sent by 0xchat; other clients may name the platform, in any case and with the usual aliases."""
        return parse_platform(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Device:
    """Where a `deviceId` is pushed: its platform, the token the push service knows, and the iOS bundle id."""

    platform: Platform
    token: str
    bundle_id: str | None = None


def read_device_id(device_id: str, apns_topics: Collection[str] = ()) -> Device:
    """The device a 0xchat `deviceId` names.

    0xchat sends, on Android, a UnifiedPush endpoint URL; on iOS, the app's bundle id immediately followed by the
    APNs token in hex (the bundle id is empty in builds without one, leaving the bare token). So: an `http(s)://`
    URL is UnifiedPush; a known APNs topic followed by even-length hex is that app's token; otherwise a trailing
    run of at least 64 hex characters is an APNs token (an odd run's first character belongs to the bundle id)
    and anything before it the bundle id; anything else is an FCM token, as is.
    """
    if device_id.startswith(("https://", "http://")):
        return Device(Platform.UNIFIEDPUSH, device_id)
    for topic in sorted(apns_topics, key=len, reverse=True):
        rest = device_id[len(topic) :]
        if device_id.startswith(topic) and len(rest) >= APNS_TOKEN_MIN_HEX and _HEX.match(rest):
            return Device(Platform.IOS, rest, topic)
    found = _TRAILING_HEX.search(device_id)
    if found is not None and len(found.group()) >= APNS_TOKEN_MIN_HEX:
        run = found.group()
        token = run[len(run) % 2 :]
        bundle_id = device_id[: len(device_id) - len(token)]
        return Device(Platform.IOS, token, bundle_id or None)
    return Device(Platform.ANDROID, device_id)


@dataclass(frozen=True, slots=True)
class Entries:
    """The usable entries of a list and how many were left out, by reason (`invalid`, `limit`, …)."""

    values: tuple[str, ...]
    ignored: Counter[str]


def read_groups(entries: Iterable[Any], limit: int) -> Entries:
    """`#e` as 0xchat fills it: NIP-28 channel ids (64 hex) and NIP-29 relay groups (`"<host>'<group id>"`).

    Channel ids are kept lowercased (as `e` tags carry them), relay groups in `nostr.nip29.group_key` form;
    duplicates once. Past `limit` entries the rest are left out (`limit`), like anything that is neither
    (`invalid`).
    """
    kept: dict[str, None] = {}
    ignored: Counter[str] = Counter()
    for entry in entries:
        value = _group_entry(entry)
        if value is None:
            ignored["invalid"] += 1
        elif value not in kept:
            if len(kept) >= limit:
                ignored["limit"] += 1
            else:
                kept[value] = None
    return Entries(tuple(kept), ignored)


def _group_entry(entry: Any) -> str | None:
    if not isinstance(entry, str):
        return None
    if is_hex(entry.lower(), 64):
        return entry.lower()
    group = parse_group(entry)
    return group_key(*group) if group is not None else None


def read_authors(entries: Iterable[Any] | None, limit: int) -> tuple[frozenset[str], Counter[str]]:
    """The senders a device narrows its pushes to, and what was left out.

    Malformed entries are dropped (`invalid`). A list longer than `limit` narrows nothing (`over_limit`): cutting
    it would silence the contacts past the cut, and a push too many is better than a missed one.
    """
    ignored: Counter[str] = Counter()
    if not entries:
        return NO_AUTHORS, ignored
    authors: set[str] = set()
    for entry in entries:
        if isinstance(entry, str) and is_hex(entry.lower(), 64):
            authors.add(entry.lower())
        else:
            ignored["invalid"] += 1
    if len(authors) > limit:
        ignored["over_limit"] += 1
        return NO_AUTHORS, ignored
    return (frozenset(authors) if authors else NO_AUTHORS), ignored
