"""The one spelling of a relay URL, so that one relay is one connection however clients write it.

Configured relays, the relays users list (kind 10050 / 10002) and the relays registrations name all reach the
pool; `wss://Relay.Example:443` and `wss://relay.example/` are the same relay, and watching it twice would cost a
second connection and every event twice.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pushstr.nostr.nip29 import relay_host

MAX_URL_LENGTH = 512


def normalize_relay_url(url: str) -> str | None:
    """The one spelling of a relay URL: scheme and host lowercase, the default port dropped, one trailing slash;
    None for anything that is not a plain `ws://`/`wss://` URL (user info, a query or fragment, odd characters)."""
    if len(url) > MAX_URL_LENGTH:
        return None
    host = relay_host(url)  # refuses other schemes, user info and hosts with odd characters
    if host is None:
        return None
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return None
    path = parts.path.rstrip("/")
    if not path.isprintable() or any(char.isspace() for char in path):
        return None
    return f"{parts.scheme}://{host}{path}/"
