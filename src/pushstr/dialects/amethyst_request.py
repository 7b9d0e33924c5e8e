"""Reading an Amethyst `POST /register` body: `{"events": [<kind 22242>, …]}`, one event per account.

Amethyst signs a NIP-42-shaped event per account (`RelayAuthEvent.create` in its quartz library): `["relay", url]`
for each of the account's NIP-65 read relays and NIP-17 DM relays, then `["challenge", <FCM token or push URL>]`,
empty content, `created_at` the time it sends. Only the shape is read here; what may be trusted (signature, age,
token, relays) is decided by the dialect.
"""

from __future__ import annotations

from typing import Any

import orjson

from pushstr.dialects.routes import ApiError

#: `relay` tags read from one event; Amethyst lists the account's read and DM relays, a few to a dozen or two.
MAX_LISTED_RELAYS = 50


class NotAmethyst(Exception):
    """The body is not an Amethyst registration (no `events` member): the request is for another dialect."""


def read_events(body: bytes, max_events: int) -> list[Any]:
    """The `events` list of a body, not yet validated one by one.

    `NotAmethyst` when the body is not a JSON object with `events`; ApiError 400 when `events` is not a list or
    holds more than `max_events`, or when an event has no challenge (its device token): without one the request
    cannot mean anything, and the client had better hear so than read `added: false`.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotAmethyst from None
    if not isinstance(data, dict) or "events" not in data:
        raise NotAmethyst
    events = data["events"]
    if not isinstance(events, list):
        raise ApiError(400, "events: must be a list of kind 22242 events", code="bad_request")
    if len(events) > max_events:
        raise ApiError(400, f"events: at most {max_events} events in one request", code="too_many_events")
    for index, event in enumerate(events):
        if isinstance(event, dict) and isinstance(event.get("tags"), list) and challenge_of(event["tags"]) is None:
            raise ApiError(400, f"events[{index}]: no challenge tag (the FCM token or push URL)", code="no_challenge")
    return events


def challenge_of(tags: list[Any]) -> str | None:
    """The first non-empty `["challenge", value]`: the device token."""
    for tag in tags:
        if isinstance(tag, list) and len(tag) >= 2 and tag[0] == "challenge" and isinstance(tag[1], str) and tag[1]:
            return tag[1]
    return None


def relay_urls(tags: list[list[str]]) -> list[str]:
    """The values of the `relay` tags, in order, without repeats, at most `MAX_LISTED_RELAYS`."""
    listed = dict.fromkeys(tag[1] for tag in tags if len(tag) >= 2 and tag[0] == "relay" and tag[1])
    return list(listed)[:MAX_LISTED_RELAYS]


def stated_pubkey(event: object) -> str | None:
    """The `pubkey` an answer names for an event, even one that did not parse (the reference server echoes it)."""
    pubkey = event.get("pubkey") if isinstance(event, dict) else None
    return pubkey if isinstance(pubkey, str) and len(pubkey) <= 64 else None
