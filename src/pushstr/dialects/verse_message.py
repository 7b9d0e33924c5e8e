"""Reading Verse's kinds 3079–3082 the way their reference server reads them (verse-pbc/nostr_push_service,
`src/event_handler.rs` and `src/crypto.rs`).

Pure parsing, no state. Every control event names the service in a `p` tag and its app in `["app", <id>]`
(absent: `default`), may carry a NIP-40 `["expiration", <unix seconds>]`, and holds NIP-44 v2 ciphertext to the
service key. Decrypted, a registration or deregistration (3079, 3080) is `{"token": "<FCM token>"}` (the token is
trimmed, as the reference trims it) and a filter upsert or delete (3081, 3082) is `{"filter": {<NIP-01 filter>}}`.

A filter is known by the SHA-256 of its canonical JSON (keys sorted, each list sorted without repeats, `since`,
`until` and `limit` left out), so a delete naming the same filter in another order, or with another `limit`, finds
it. The three are left out because a push filter is about events from now on: the reference drops them when it
shares subscriptions, and a filter ends with its deletion, not at an `until`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from pushstr.dialects.base import Refused
from pushstr.nostr import nip44
from pushstr.nostr.errors import DecryptError, InvalidFilter
from pushstr.nostr.event import Event
from pushstr.nostr.filters import Filter, parse_filter
from pushstr.nostr.keys import Keys
from pushstr.registry.tokens import MAX_TOKEN_BYTES

REGISTER = 3079
DEREGISTER = 3080
FILTER_UPSERT = 3081
FILTER_DELETE = 3082
KINDS = (REGISTER, DEREGISTER, FILTER_UPSERT, FILTER_DELETE)
DEFAULT_APP = "default"
"""The app of an event without an `app` tag (the reference's default)."""
MAX_TOKEN_PLAINTEXT = MAX_TOKEN_BYTES + 256
"""Decrypted registrations longer than this are refused: a token and the JSON around it."""
FILTER_OVERHEAD = 64
"""What `{"filter": …}` adds around a filter in a decrypted upsert or delete."""

_NARROWING_TAG_ORDER = ("p", "e", "a", "h")
"""The tags that usually tell users' filters apart, tried first when a filter is indexed or merged."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the tags of a control event say: the app it is for and its NIP-40 expiration, if any."""

    app: str
    expiration: int | None


def read_envelope(event: Event, server: str, now: float) -> Envelope:
    """The envelope of a control event addressed to `server`, or `Refused`: `missing_tag` without a `p` tag,
    `not_for_us` when none names the server, `malformed` for an expiration that is not a number, `expired` once it
    has passed (NIP-40; the reference's relay client drops such events before reading them)."""
    if not event.p_tags:
        raise Refused("missing_tag", "no p tag")
    if server not in event.p_tags:
        raise Refused("not_for_us", "no p tag names this server")
    app = event.first_tag_value("app")
    expiration: int | None = None
    stated = event.first_tag_value("expiration")
    if stated is not None:
        if not (stated.isascii() and stated.isdigit()) or len(stated) > 12:
            raise Refused("malformed", "expiration: not a Unix time in seconds")
        expiration = int(stated)
        if expiration < now:
            raise Refused("expired", "the event's expiration has passed")
    return Envelope(DEFAULT_APP if app is None else app, expiration)


def open_content(keys: Keys, event: Event, max_chars: int) -> str:
    """The decrypted content, or `Refused`: `not_encrypted` (plaintext, or not NIP-44: the reference refuses it),
    `undecryptable` (not to this key, tampered), `too_large` (more than `max_chars` once decrypted)."""
    if not nip44.looks_like_nip44(event.content):
        raise Refused("not_encrypted", "content is not NIP-44 ciphertext")
    try:
        text = nip44.decrypt_from(keys, event.pubkey, event.content)
    except DecryptError as exc:
        raise Refused("undecryptable", exc.reason) from None
    if len(text) > max_chars:
        raise Refused("too_large", f"decrypted content longer than {max_chars} characters")
    return text


def _object(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Refused("bad_json", "content is not JSON") from None
    if not isinstance(data, dict):
        raise Refused("bad_json", "content is not a JSON object")
    return data


def read_token(text: str) -> str:
    """The FCM token of a decrypted 3079 or 3080, trimmed; `Refused("bad_json")` without a non-empty one."""
    token = _object(text).get("token")
    if not isinstance(token, str) or not token.strip():
        raise Refused("bad_json", "token: not a non-empty string")
    return token.strip()


@dataclass(frozen=True, slots=True)
class UserFilter:
    """One filter as a 3081 or 3082 names it: its id (hex SHA-256 of `canonical`), its canonical JSON, and the
    parsed filter matching uses (without `since`, `until` and `limit`)."""

    filter_id: str
    canonical: str
    filter: Filter


def read_filter(text: str, max_bytes: int) -> UserFilter:
    """The filter of a decrypted 3081 or 3082, or `Refused`: `bad_json`, `bad_filter` (not a NIP-01 filter, or
    empty), `too_large` (canonical JSON over `max_bytes`)."""
    raw = _object(text).get("filter")
    if not isinstance(raw, dict) or not raw:
        raise Refused("bad_filter", "filter: not a non-empty JSON object")
    user_filter = _user_filter(raw)
    if len(user_filter.canonical) > max_bytes:
        raise Refused("too_large", f"filter larger than {max_bytes} bytes")
    return user_filter


def stored_filter(canonical: str) -> UserFilter:
    """A filter as `StoredFilter.filter_json` keeps it (its canonical JSON), read again; `Refused("bad_filter")`
    when it is not one."""
    try:
        raw = orjson.loads(canonical)
    except orjson.JSONDecodeError:
        raise Refused("bad_filter", "stored filter is not JSON") from None
    return _user_filter(raw)


def _user_filter(raw: object) -> UserFilter:
    try:
        parsed = parse_filter(raw)
    except InvalidFilter:
        raise Refused("bad_filter", "not a NIP-01 filter") from None  # the reason may quote the client's field names
    canonical = canonical_json(parsed)
    matching = Filter(ids=parsed.ids, authors=parsed.authors, kinds=parsed.kinds, tags=parsed.tags)
    return UserFilter(hashlib.sha256(canonical.encode()).hexdigest(), canonical, matching)


def canonical_fields(parsed: Filter) -> dict[str, list[Any]]:
    """A filter's fields in canonical form: sorted keys, sorted lists, `since`/`until`/`limit` left out."""
    fields: dict[str, list[Any]] = {}
    if parsed.ids is not None:
        fields["ids"] = sorted(parsed.ids)
    if parsed.authors is not None:
        fields["authors"] = sorted(parsed.authors)
    if parsed.kinds is not None:
        fields["kinds"] = sorted(parsed.kinds)
    for name, values in parsed.tags.items():
        fields["#" + name] = sorted(values)
    return dict(sorted(fields.items()))


def canonical_json(parsed: Filter) -> str:
    return orjson.dumps(canonical_fields(parsed)).decode()


def check_subscribable(parsed: Filter, allowed_kinds: Collection[int]) -> None:
    """Refuse a filter a device may not be pushed for: `bad_filter` for an empty list (it matches nothing),
    `kind_not_allowed` without `kinds` or with one the app does not allow (the reference's per-app list), and
    `too_broad` when it names no ids, authors or tag values, which would push every event of its kinds."""
    lists: list[Collection[Any] | None] = [parsed.ids, parsed.authors, parsed.kinds, *parsed.tags.values()]
    if any(values is not None and not values for values in lists):
        raise Refused("bad_filter", "an empty list matches nothing")
    if parsed.kinds is None:
        raise Refused("kind_not_allowed", "a filter names its kinds")
    refused = sorted(parsed.kinds.difference(allowed_kinds))
    if refused:
        raise Refused("kind_not_allowed", f"kinds {refused[:10]} are not allowed for this app")
    if narrowing_field(parsed) is None:
        raise Refused("too_broad", "a filter names ids, authors or tag values")


def narrowing_field(parsed: Filter) -> str | None:
    """The field a filter is indexed and merged by: `ids`, else `authors`, else its first tag by
    `_NARROWING_TAG_ORDER` and then by name (`"#p"`, …); None when it has none of them."""
    if parsed.ids:
        return "ids"
    if parsed.authors:
        return "authors"
    names = sorted(name for name, values in parsed.tags.items() if values)
    for name in (*_NARROWING_TAG_ORDER, *names):
        if name in names:
            return "#" + name
    return None


def field_values(parsed: Filter, name: str) -> frozenset[str]:
    """The values of the field `narrowing_field` named."""
    if name == "ids":
        return parsed.ids or frozenset()
    if name == "authors":
        return parsed.authors or frozenset()
    return parsed.tags.get(name[1:], frozenset())
