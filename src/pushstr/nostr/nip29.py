"""NIP-29 relay groups as push registrations name them: `"<relay host>'<group id>"`.

A NIP-29 group id is only unique on its relay, so a group is the pair (relay host, id). 0xchat writes that pair
as the host of the group's relay URL (what follows `wss://` up to the first `/`, port included), an apostrophe,
and the id; it rebuilds the relay URL as `wss://<host>`. Group messages carry the id in an `h` tag and are read
from that relay. Pure functions, no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from pushstr.nostr.kinds import Kind

SEPARATOR = "'"
MAX_GROUP_ID_LENGTH = 256
MAX_HOST_LENGTH = 253 + 6  # a DNS name and a port

#: The NIP-29 kinds a group member is pushed for (chat messages, threads and replies).
GROUP_KINDS: frozenset[int] = frozenset(
    {Kind.GROUP_CHAT, Kind.GROUP_CHAT_THREADED, Kind.GROUP_THREAD, Kind.GROUP_THREAD_REPLY}
)

_DEFAULT_PORTS = {"wss": 443, "ws": 80}


def parse_group(entry: str) -> tuple[str, str] | None:
    """(normalised host, group id) of a `"<host>'<group id>"` entry, or None when it is not one.

    The host is split at the first apostrophe, as 0xchat splits it; a leading `wss://`/`ws://` is tolerated.
    Hosts with characters a host name cannot hold, empty ids and over-long parts are refused.
    """
    host, separator, group_id = entry.partition(SEPARATOR)
    if not separator or not group_id or len(group_id) > MAX_GROUP_ID_LENGTH or len(host) > MAX_HOST_LENGTH:
        return None
    if any(char.isspace() or not char.isprintable() for char in group_id):
        return None
    normalised = relay_host(host if "://" in host else f"wss://{host}")
    if normalised is None:
        return None
    return normalised, group_id


def group_key(host: str, group_id: str) -> str:
    """The one spelling of a relay group in registrations and the index: normalised host, apostrophe, id."""
    return f"{host}{SEPARATOR}{group_id}"


def group_host(key: str) -> str:
    """The relay host of a `group_key`."""
    return key.partition(SEPARATOR)[0]


def group_id_of(key: str) -> str:
    """The group id of a `group_key`."""
    return key.partition(SEPARATOR)[2]


def is_group_key(value: str) -> bool:
    """Whether a registration's group entry is a relay group (else it is a 64-hex NIP-28 channel id)."""
    return SEPARATOR in value


@lru_cache(maxsize=4096)
def relay_host(url: str) -> str | None:
    """The host of a relay URL as groups are keyed by: lowercased, with the scheme's default port dropped.

    Cached: the pipeline asks for the host of the relay every group message came from, and relays are few.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if not all(char.isalnum() or char in ".-:[]" for char in host):
        return None
    if ":" in host:  # an IPv6 literal: urlsplit strips its brackets
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return host


def relay_url(host: str) -> str:
    """The relay a group lives on when the device lists no relay of that host: `wss://<host>`, as 0xchat does."""
    return f"wss://{host}"
