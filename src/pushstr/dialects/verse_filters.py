"""Verse users' filters in memory: which of them an event matches, and what the relays are asked for them.

Matching runs for every event a relay sends, before it is verified (`Pipeline.on_relay_event`), so an event no
filter can match costs a few lookups: the kinds of all filters are counted, and each filter is indexed by the
values of one field that narrows it (`verse_message.narrowing_field`: its ids, its authors, or a tag — usually
`#p`). An event looks up its id, its author and each of its tags whose name some filter is indexed by; only the
filters found so are matched in full (`nostr.filters.matches`).

A filter matches an event when NIP-01 says so, the event is not its own user's (the reference skips the sender),
and the event was made after the filter: a subscription does not push what happened before it (the reference's
rule; the relays' catch-up window after a reconnect would otherwise push old events). Gift wraps are exempt from
the last rule, since NIP-59 backdates their `created_at` by up to two days on purpose (the reference pushes DMs
without it too).

Relays are asked for the filters merged: filters equal but for the values of their narrowing field become one
filter with those values together, cut into chunks of `CHUNK` values, so the many `{"kinds": [...], "#p": [<me>]}`
of many users are a few filters. The merge follows each change (a value is counted once per filter naming it), and
the relay filters of a group that did not change are not rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pushstr.dialects.verse_message import canonical_fields, field_values, narrowing_field
from pushstr.nostr.event import Event
from pushstr.nostr.filters import Filter, matches
from pushstr.nostr.kinds import Kind

CHUNK = 500
"""Values in one relay filter at most (some relays cap the values of a filter)."""
MAX_TAGS_CONSIDERED = 2000
"""Tags of one event looked up (the event size limit bounds them first)."""

User = tuple[str, str]
"""(app, pubkey): whose filters, in which app."""
_IndexKey = tuple[str, str]
"""(`ids`, `authors` or a tag's name, value)."""
_Group = tuple[str, str]
"""(the narrowing field, the JSON of every other field): filters that merge into one."""
_GIFT_WRAP = int(Kind.GIFT_WRAP)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One stored filter of one user: `created_at` is the upsert event's, `canonical` its JSON."""

    app: str
    pubkey: str
    filter_id: str
    canonical: str
    filter: Filter
    created_at: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.app, self.pubkey, self.filter_id)

    @property
    def user(self) -> User:
        return (self.app, self.pubkey)


def _spread(sub: Subscription) -> str:
    field = narrowing_field(sub.filter)
    if field is None:  # `check_subscribable` refuses such filters before they get here
        raise ValueError("a subscription needs a narrowing field")
    return field


def _group_of(sub: Subscription, spread: str) -> _Group:
    rest = {name: values for name, values in canonical_fields(sub.filter).items() if name != spread}
    return (spread, orjson.dumps(rest).decode())


def _index_name(spread: str) -> str:
    """The name an event is looked up under: `ids`, `authors`, or the tag's name without its `#`."""
    return spread[1:] if spread.startswith("#") else spread


def _add(counts: dict[Any, int], key: Any, delta: int) -> None:
    count = counts.get(key, 0) + delta
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)


class FilterBook:
    """Every stored filter by user, indexed for matching and merged for the relays; see the module docstring."""

    def __init__(self, chunk: int = CHUNK) -> None:
        if chunk < 1:
            raise ValueError("chunk must be positive")
        self._chunk = chunk
        self._by_user: dict[User, dict[str, Subscription]] = {}
        self._index: dict[_IndexKey, dict[tuple[str, str, str], Subscription]] = {}
        self._kinds: dict[int, int] = {}
        self._letters: dict[str, int] = {}
        self._groups: dict[_Group, dict[str, int]] = {}
        self._merged: dict[_Group, tuple[dict[str, Any], ...]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def users(self) -> list[User]:
        return list(self._by_user)

    def of(self, user: User) -> Mapping[str, Subscription]:
        """A user's filters by id (empty when none)."""
        return self._by_user.get(user, {})

    def __iter__(self) -> Iterator[Subscription]:
        for subs in self._by_user.values():
            yield from subs.values()

    def put(self, sub: Subscription) -> Subscription | None:
        """Add `sub`, replacing the filter with the same key; the one replaced, if any."""
        replaced = self.remove(*sub.key)
        self._by_user.setdefault(sub.user, {})[sub.filter_id] = sub
        self._count += 1
        self._account(sub, 1)
        return replaced

    def remove(self, app: str, pubkey: str, filter_id: str) -> Subscription | None:
        """Remove one filter; the one removed, if it was there."""
        subs = self._by_user.get((app, pubkey))
        sub = subs.pop(filter_id, None) if subs is not None else None
        if sub is None:
            return None
        if not subs:
            del self._by_user[(app, pubkey)]
        self._count -= 1
        self._account(sub, -1)
        return sub

    def remove_user(self, user: User) -> list[Subscription]:
        """Remove every filter of a user; those removed."""
        return [removed for filter_id in list(self.of(user)) if (removed := self.remove(*user, filter_id))]

    def _account(self, sub: Subscription, delta: int) -> None:
        """Enter `sub` in (delta 1) or take it out of (delta -1) the index, the kind counts and its merge group."""
        spread = _spread(sub)
        name = _index_name(spread)
        values = field_values(sub.filter, spread)
        for value in values:
            key = (name, value)
            if delta > 0:
                self._index.setdefault(key, {})[sub.key] = sub
            else:
                bucket = self._index.get(key)
                if bucket is not None:
                    bucket.pop(sub.key, None)
                    if not bucket:
                        del self._index[key]
        if name not in ("ids", "authors"):
            _add(self._letters, name, delta)
        for kind in sub.filter.kinds or ():
            _add(self._kinds, kind, delta)
        group = _group_of(sub, spread)
        counts = self._groups.setdefault(group, {})
        for value in values:
            _add(counts, value, delta)
        if not counts:
            del self._groups[group]
        self._merged.pop(group, None)

    def matching(self, event: Event) -> list[Subscription]:
        """The filters `event` matches (see the module docstring), each once."""
        if event.kind not in self._kinds:
            return []
        index = self._index
        found: dict[tuple[str, str, str], Subscription] = {}
        for key in (("ids", event.id), ("authors", event.pubkey)):
            bucket = index.get(key)
            if bucket:
                found.update(bucket)
        letters = self._letters
        if letters:
            for tag in event.tags[:MAX_TAGS_CONSIDERED]:
                if len(tag) >= 2 and tag[0] in letters:
                    bucket = index.get((tag[0], tag[1]))
                    if bucket:
                        found.update(bucket)
        if not found:
            return []
        backdated = event.kind == _GIFT_WRAP
        return [
            sub
            for sub in found.values()
            if sub.pubkey != event.pubkey
            and (backdated or event.created_at > sub.created_at)
            and matches(sub.filter, event)
        ]

    def relay_filters(self) -> list[dict[str, Any]]:
        """What relays are asked for all the filters: merged, in a stable order (see the module docstring)."""
        filters: list[dict[str, Any]] = []
        for group in sorted(self._groups):
            merged = self._merged.get(group)
            if merged is None:
                merged = self._merged[group] = self._build(group)
            filters.extend(merged)
        return filters

    def _build(self, group: _Group) -> tuple[dict[str, Any], ...]:
        spread, rest = group
        values = sorted(self._groups[group])
        fields: dict[str, Any] = orjson.loads(rest)
        return tuple(
            {**fields, spread: values[start : start + self._chunk]} for start in range(0, len(values), self._chunk)
        )
