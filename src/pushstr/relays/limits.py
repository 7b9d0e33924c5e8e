"""What one relay connection may be asked for: concurrent subscriptions, frame size, filters per REQ.

Relays enforce limits that NIP-01 does not state. strfry, the most deployed relay, holds at most 20 subscriptions
per connection (`relay.maxSubsPerConnection`), answers one more REQ with nothing but a NOTICE ("ERROR: too many
concurrent REQs") and closes a connection that sends a frame over 131 072 bytes (`maxWebsocketPayloadSize`). A
relay may publish its own limits in its NIP-11 document (`limitation`); one that does not is assumed to be a strfry
with its defaults, the strictest common case, so that a plan that fits there fits almost everywhere.

The NIP-11 document is external input like any other: fetched once per relay with a short timeout, read up to
`MAX_DOCUMENT_BYTES`, and every number in it is checked and clamped to a sane range before the planner trusts it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from pushstr.net.httpclient import ResponseTooLarge, get_bounded

log = logging.getLogger(__name__)

STRFRY_MAX_SUBSCRIPTIONS = 20
STRFRY_MAX_MESSAGE_LENGTH = 131_072
STRFRY_MAX_FILTERS = 200
"""strfry's `relay.maxReqFilterSize`: filters in one REQ."""
MAX_DOCUMENT_BYTES = 64 * 1024
NIP11_TIMEOUT_SECONDS = 3.0
_SUBSCRIPTIONS_RANGE = (1, 1000)
_MESSAGE_LENGTH_RANGE = (8 * 1024, 1024 * 1024)
"""Below 8 KiB not even one full filter of pubkeys fits; above 1 MiB a single REQ gains nothing but latency."""
_FILTERS_RANGE = (1, 1000)


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """The budget of one connection. `source` says where it came from: "nip11" or "default" (strfry's)."""

    max_subscriptions: int = STRFRY_MAX_SUBSCRIPTIONS
    max_message_length: int = STRFRY_MAX_MESSAGE_LENGTH
    max_filters: int = STRFRY_MAX_FILTERS
    source: str = "default"

    def with_subscriptions(self, count: int) -> RelayLimits:
        """The same limits with a smaller subscription budget (after the relay refused a REQ)."""
        return replace(self, max_subscriptions=max(1, min(count, self.max_subscriptions)))


DEFAULT_LIMITS = RelayLimits()


def _clamped(value: Any, bounds: tuple[int, int], fallback: int) -> int:
    """A positive integer from the document within `bounds`; anything else (absent, text, 0, -1, a bool) falls back."""
    if type(value) is not int or value < 1:
        return fallback
    return max(bounds[0], min(bounds[1], value))


def parse_nip11(body: bytes) -> RelayLimits:
    """The limits a NIP-11 document states; strfry's defaults for whatever it leaves out or gets wrong."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return DEFAULT_LIMITS
    limitation = document.get("limitation") if isinstance(document, dict) else None
    if not isinstance(limitation, dict):
        return DEFAULT_LIMITS
    return RelayLimits(
        max_subscriptions=_clamped(limitation.get("max_subscriptions"), _SUBSCRIPTIONS_RANGE, STRFRY_MAX_SUBSCRIPTIONS),
        max_message_length=_clamped(
            limitation.get("max_message_length"), _MESSAGE_LENGTH_RANGE, STRFRY_MAX_MESSAGE_LENGTH
        ),
        max_filters=_clamped(limitation.get("max_filters"), _FILTERS_RANGE, STRFRY_MAX_FILTERS),
        source="nip11",
    )


def document_url(relay_url: str) -> str:
    """NIP-11 is served on the relay's own URL over HTTP(S): ws → http, wss → https."""
    if relay_url.startswith("wss://"):
        return "https://" + relay_url.removeprefix("wss://")
    return "http://" + relay_url.removeprefix("ws://")


async def fetch_limits(
    relay_url: str, *, timeout: float = NIP11_TIMEOUT_SECONDS, max_bytes: int = MAX_DOCUMENT_BYTES
) -> RelayLimits:
    """The relay's limits from its NIP-11 document, or strfry's defaults when it serves none (or fails to in time).

    One GET with `Accept: application/nostr+json`, no redirects, no environment proxies, `timeout` for all of it;
    the body is read only up to `max_bytes` (`get_bounded`: a declared or actual longer one counts as no document).
    """
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False) as client,
        ):
            response = await get_bounded(
                client, document_url(relay_url), headers={"accept": "application/nostr+json"}, limit=max_bytes
            )
    except (httpx.HTTPError, OSError, ValueError, TimeoutError, ResponseTooLarge) as exc:
        log.debug("relay %s serves no NIP-11 document: %s", relay_url, type(exc).__name__)
        return DEFAULT_LIMITS
    if response.status_code != 200:
        return DEFAULT_LIMITS
    return parse_nip11(response.content)
