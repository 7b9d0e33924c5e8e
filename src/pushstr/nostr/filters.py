"""NIP-01 subscription filters: strict parsing and matching against events.

Used by the built-in relay endpoint (REQ from clients) and by tests that check what a subscription would see.
Per current NIP-01, `ids` and `authors` match exactly (64 hex characters; no prefix matching). An empty list
matches nothing. `limit` only concerns stored events, so matching ignores it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from pushstr.nostr.errors import InvalidFilter
from pushstr.nostr.event import Event
from pushstr.nostr.keys import is_hex

MAX_FILTER_VALUES = 5000
MAX_TAG_VALUE_LENGTH = 1024
_TAG_KEYS = frozenset("#" + letter for letter in string.ascii_letters)
_MAX_TIMESTAMP = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Filter:
    """A validated filter; None means the condition is absent (matches everything)."""

    ids: frozenset[str] | None = None
    authors: frozenset[str] | None = None
    kinds: frozenset[int] | None = None
    tags: Mapping[str, frozenset[str]] = field(default_factory=dict)
    since: int | None = None
    until: int | None = None
    limit: int | None = None


def _list(obj: Mapping[str, object], key: str) -> list[object] | None:
    value = obj.get(key)
    if value is None and key not in obj:
        return None
    if not isinstance(value, list):
        raise InvalidFilter(f"{key} must be a list")
    if len(value) > MAX_FILTER_VALUES:
        raise InvalidFilter(f"{key} has more than {MAX_FILTER_VALUES} values")
    return value


def _hex_set(obj: Mapping[str, object], key: str) -> frozenset[str] | None:
    values = _list(obj, key)
    if values is None:
        return None
    result: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not is_hex(value, 64):
            raise InvalidFilter(f"{key} must be 64 lowercase hex characters each")
        result.add(value)
    return frozenset(result)


def _timestamp(obj: Mapping[str, object], key: str) -> int | None:
    if key not in obj:
        return None
    value = obj[key]
    if type(value) is not int or not 0 <= value <= _MAX_TIMESTAMP:
        raise InvalidFilter(f"{key} must be a non-negative integer")
    return value


def _tag_values(obj: Mapping[str, object], key: str) -> frozenset[str]:
    result: set[str] = set()
    for value in _list(obj, key) or ():
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE_LENGTH:
            raise InvalidFilter(f"{key} must be a list of strings (at most {MAX_TAG_VALUE_LENGTH} characters)")
        result.add(value)
    return frozenset(result)


def _kinds(obj: Mapping[str, object]) -> frozenset[int] | None:
    values = _list(obj, "kinds")
    if values is None:
        return None
    result: set[int] = set()
    for kind in values:
        if type(kind) is not int or not 0 <= kind <= 65535:
            raise InvalidFilter("kinds must be integers in 0..65535")
        result.add(kind)
    return frozenset(result)


def parse_filter(obj: object) -> Filter:
    """A `Filter` from a decoded JSON object; `InvalidFilter` on unknown fields or wrong types."""
    if not isinstance(obj, dict):
        raise InvalidFilter("filter must be a JSON object")
    tags: dict[str, frozenset[str]] = {}
    for key in obj:
        if key in ("ids", "authors", "kinds", "since", "until", "limit"):
            continue
        if key not in _TAG_KEYS:
            raise InvalidFilter(f"unknown filter field {key!r:.40}")
        tags[key[1]] = _tag_values(obj, key)
    return Filter(
        ids=_hex_set(obj, "ids"),
        authors=_hex_set(obj, "authors"),
        kinds=_kinds(obj),
        tags=tags,
        since=_timestamp(obj, "since"),
        until=_timestamp(obj, "until"),
        limit=_timestamp(obj, "limit"),
    )


def matches(flt: Filter, event: Event) -> bool:
    """True when `event` satisfies every condition of `flt` (NIP-01: AND across fields, OR within a list)."""
    if flt.ids is not None and event.id not in flt.ids:
        return False
    if flt.authors is not None and event.pubkey not in flt.authors:
        return False
    if flt.kinds is not None and event.kind not in flt.kinds:
        return False
    if flt.since is not None and event.created_at < flt.since:
        return False
    if flt.until is not None and event.created_at > flt.until:
        return False
    for name, wanted in flt.tags.items():
        if not any(len(tag) >= 2 and tag[0] == name and tag[1] in wanted for tag in event.tags):
            return False
    return True
