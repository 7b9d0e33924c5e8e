"""Users' own lists, as the policy stage needs them: who they follow (kind 3) and what they muted (kind 10000).

Only the lists of users with a device that asks for them (`follows_only`, `mute_list`) are wanted; the relays
are asked for them by author (see `filters`), they are replaceable, so the newest `created_at` wins and an older
copy arriving later changes nothing, and they stay live through the same subscription. What is kept per user is
bounded: at most `MAX_FOLLOWS` follows and `preferences.MAX_MUTES` mutes, as frozensets the stage looks into
directly. Only the public part of a mute list is read: its private part is encrypted to the user's own key (the
user may hand it over through the preferences routes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter

from pushstr.nostr.event import Event
from pushstr.nostr.keys import is_hex
from pushstr.registry.preferences import NO_MUTES, Mutes, mutes_from_tags

CONTACTS = 3
MUTE_LIST = 10000
KINDS = (CONTACTS, MUTE_LIST)
MAX_FOLLOWS = 10_000
IDLE_LISTS = 10_000
"""Lists of users nobody needs any more, kept (at most this many) in case a device asks again."""

LISTS = Counter("pushstr_user_lists_total", "Kind 3 and 10000 lists seen", ["result"])
for _result in ("applied", "older", "unwanted"):
    LISTS.labels(_result)

FilterBuilder = Callable[[Iterable[str]], tuple[dict[str, Any], ...]]


class UserLists:
    """Follows and public mutes of the users some device needs them for.

    `want(pubkeys)` says whose lists are needed (the preference book's `list_users`); `on_list` is the kind
    handler for 3 and 10000 (verified events only); `follows`/`mutes` are what the policy stage reads.
    """

    def __init__(self, author_filters: FilterBuilder) -> None:
        """`author_filters(pubkeys)` are filters naming those authors (without kinds: this class adds them)."""
        self._author_filters = author_filters
        self._wanted: frozenset[str] = frozenset()
        self._filters: tuple[dict[str, Any], ...] = ()
        self._seen: dict[tuple[str, int], int] = {}
        self._follows: dict[str, frozenset[str]] = {}
        self._mutes: dict[str, Mutes] = {}

    @property
    def follows(self) -> Mapping[str, frozenset[str]]:
        """pubkey → who they follow (live; absent: no kind 3 seen yet)."""
        return self._follows

    @property
    def mutes(self) -> Mapping[str, Mutes]:
        """pubkey → their public mutes (live; absent: none seen)."""
        return self._mutes

    def mutes_of(self, pubkey: str) -> Mutes:
        return self._mutes.get(pubkey, NO_MUTES)

    def filters(self) -> tuple[dict[str, Any], ...]:
        """Filters asking for the wanted users' lists (the same objects until the users change)."""
        return self._filters

    def want(self, pubkeys: frozenset[str]) -> bool:
        """Whose lists are needed now; True when that changed the filters."""
        if pubkeys == self._wanted:
            return False
        self._wanted = pubkeys
        self._filters = tuple({**f, "kinds": list(KINDS)} for f in self._author_filters(pubkeys))
        if len(self._seen) > 2 * (len(pubkeys) + IDLE_LISTS):
            self._forget_unwanted()
        return True

    def on_list(self, event: Event) -> None:
        """Kind handler for 3 and 10000: keep the newest list of a wanted user."""
        if event.pubkey not in self._wanted:
            LISTS.labels("unwanted").inc()
            return
        key = (event.pubkey, event.kind)
        if event.created_at <= self._seen.get(key, -1):
            LISTS.labels("older").inc()
            return
        self._seen[key] = event.created_at
        if event.kind == CONTACTS:
            self._follows[event.pubkey] = _follows(event.tags)
        else:
            mutes = mutes_from_tags(event.tags)
            if mutes:
                self._mutes[event.pubkey] = mutes
            else:
                self._mutes.pop(event.pubkey, None)
        LISTS.labels("applied").inc()

    def _forget_unwanted(self) -> None:
        wanted = self._wanted
        self._seen = {key: at for key, at in self._seen.items() if key[0] in wanted}
        self._follows = {pubkey: f for pubkey, f in self._follows.items() if pubkey in wanted}
        self._mutes = {pubkey: m for pubkey, m in self._mutes.items() if pubkey in wanted}


def _follows(tags: Iterable[list[str]]) -> frozenset[str]:
    """The followed pubkeys of a kind 3 (`p` tags), at most `MAX_FOLLOWS`."""
    found: set[str] = set()
    for tag in tags:
        if len(tag) >= 2 and tag[0] == "p" and is_hex(tag[1], 64):
            found.add(tag[1])
            if len(found) >= MAX_FOLLOWS:
                break
    return frozenset(found)
