"""Display names for alert titles: watch the kind-0 profiles of the people who trigger alerts.

Only senders of alert-mode notifications are watched (bounded, most recent first), so pushstr does not mirror
the profiles of everyone on its relays. The first alert from a new sender shows a short npub; the profile
arrives through the relay pool and later alerts show the name.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import Counter

from pushstr.delivery.render import clip_text
from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind

AUTHORS_PER_FILTER = 500

PROFILES = Counter("pushstr_profiles_total", "Kind-0 profiles seen for watched senders", ["result"])


class MemoryProfileCache:
    """A bounded in-memory `ProfileCache` whose entries expire after `ttl` seconds (names change)."""

    def __init__(self, ttl: float = 6 * 3600, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._names: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def put(self, pubkey: str, name: str) -> None:
        """Remember `name` for `pubkey` (hex); the oldest entry goes when the cache is full."""
        self._names[pubkey] = (self._clock() + self._ttl, name)
        self._names.move_to_end(pubkey)
        while len(self._names) > self._max:
            self._names.popitem(last=False)

    def display_name(self, pubkey: str) -> str | None:
        entry = self._names.get(pubkey)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._names[pubkey]
            return None
        return entry[1]


def profile_name(metadata_json: str) -> str | None:
    """The name to show from a kind-0 `content`: `display_name`, else `name`; None when unusable."""
    try:
        meta = orjson.loads(metadata_json)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(meta, dict):
        return None
    for key in ("display_name", "displayName", "name"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return clip_text(" ".join(value.split()), 64)
    return None


class ProfileWatch:
    def __init__(
        self,
        cache: MemoryProfileCache,
        on_change: Callable[[], None],
        max_authors: int = 5000,
    ) -> None:
        self._cache = cache
        self._on_change = on_change
        self._max_authors = max_authors
        self._authors: OrderedDict[str, int] = OrderedDict()  # pubkey → created_at of the newest profile applied

    def want(self, pubkey: str) -> None:
        """Note a sender whose name an alert would show; a new one changes the relay subscriptions."""
        if pubkey in self._authors:
            self._authors.move_to_end(pubkey)
            return
        self._authors[pubkey] = -1
        if len(self._authors) > self._max_authors:
            self._authors.popitem(last=False)
        self._on_change()

    def filters(self) -> tuple[dict[str, Any], ...]:
        """Kind-0 filters for the watched senders. `since: 0` because a current profile may be years old."""
        authors = sorted(self._authors)
        return tuple(
            {"kinds": [Kind.METADATA], "authors": authors[index : index + AUTHORS_PER_FILTER], "since": 0}
            for index in range(0, len(authors), AUTHORS_PER_FILTER)
        )

    def on_metadata(self, event: Event) -> None:
        """Kind handler: keep the display name of a watched sender's newest profile."""
        newest = self._authors.get(event.pubkey)
        if newest is None:
            PROFILES.labels("unwatched").inc()
            return
        if event.created_at <= newest:
            PROFILES.labels("older").inc()
            return
        name = profile_name(event.content)
        if name is None:
            PROFILES.labels("no_name").inc()
            return
        self._authors[event.pubkey] = event.created_at
        self._cache.put(event.pubkey, name)
        PROFILES.labels("applied").inc()
