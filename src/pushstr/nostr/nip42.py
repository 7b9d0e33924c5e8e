"""NIP-42: the AUTH event a client signs to answer a relay's challenge."""

from __future__ import annotations

from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind

MAX_CHALLENGE_LENGTH = 512


def build_auth_event(keys: Keys, relay_url: str, challenge: str, created_at: int | None = None) -> Event:
    """Kind 22242 with the `relay` and `challenge` tags, signed with `keys`.

    The challenge is truncated defensively: a relay that sends a megabyte challenge gets no amplification.
    """
    tags = [["relay", relay_url], ["challenge", challenge[:MAX_CHALLENGE_LENGTH]]]
    return sign_event(keys, Kind.CLIENT_AUTH, "", tags, created_at)
