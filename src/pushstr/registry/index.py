"""The in-memory index every event is matched against: pubkey → devices, token → pubkeys, kinds → pubkeys.

Pure data structure, no I/O. It is shaped by two pressures:

* Speed on the hot path. `devices_for` runs for every admitted event, so the index stores each pubkey's
  devices as the very tuple it returns: a dict lookup and nothing else.
* Memory at scale. A million registrations must fit comfortably in RAM, so there is no per-pubkey dict and no
  per-token set (a tuple is a fraction of their size; a pubkey has at most a few dozen devices, so scanning
  its tuple on a write is cheap), a token used by one pubkey (nearly all of them) maps to the pubkey string
  itself rather than to a one-element tuple, and equal kind sets share one frozenset object.

`interest()` is what the relay pool subscribes with. It groups pubkeys by the union of their devices' kinds
(one filter per distinct set). The groups are kept up to date on every write; the frozen mapping handed out
is rebuilt lazily, only for groups that changed, and stays the same object until something changes, so a
caller can tell "nothing to re-plan" with an identity check.

Groups are the second key: a registration whose `groups` lists NIP-28 channel ids or NIP-29 relay groups
(`nostr.nip29.group_key`) is also found by `devices_for_group(entry)`, for events whose `e` tags name the
channel or whose `h` tag names the group on its relay. Few registrations have groups, so that map
and its interest are kept simply: the interest is rebuilt from the group map when a registration with groups
changed. (A registration's `authors` and `relays` are no concern of the index.)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from itertools import chain
from types import MappingProxyType

from pushstr.nostr.nip29 import is_group_key
from pushstr.registry.model import Platform, Registration

KindInterest = Mapping[frozenset[int], frozenset[str]]

_EMPTY_INTEREST: KindInterest = MappingProxyType({})


class RegistryIndex:
    """pubkey → devices, device token → pubkeys, kind set → pubkeys, counts by dialect and platform, expiry order."""

    __slots__ = (
        "_by_group",
        "_by_pubkey",
        "_by_token",
        "_counts",
        "_dirty",
        "_expiry",
        "_frozen",
        "_group_interest",
        "_groups",
        "_interest",
        "_kinds",
    )

    # Distinct kind sets kept for sharing; past this many (only hostile input gets there) the table restarts.
    MAX_SHARED_KIND_SETS = 10_000

    def __init__(self) -> None:
        self._by_pubkey: dict[str, tuple[Registration, ...]] = {}
        self._by_token: dict[str, str | tuple[str, ...]] = {}
        self._groups: dict[frozenset[int], set[str]] = {}
        self._frozen: dict[frozenset[int], frozenset[str]] = {}
        self._dirty: set[frozenset[int]] = set()
        self._interest: KindInterest | None = _EMPTY_INTEREST
        self._kinds: dict[frozenset[int], frozenset[int]] = {}
        self._counts: dict[tuple[str, Platform], int] = {}  # (dialect, platform) → registrations
        self._expiry: list[tuple[float, str, str]] = []
        self._by_group: dict[str, tuple[Registration, ...]] = {}
        self._group_interest: KindInterest | None = _EMPTY_INTEREST

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __iter__(self) -> Iterator[Registration]:
        return chain.from_iterable(self._by_pubkey.values())

    @property
    def pubkey_count(self) -> int:
        return len(self._by_pubkey)

    @property
    def devices_by_pubkey(self) -> Mapping[str, tuple[Registration, ...]]:
        """pubkey → devices, read-only: the same live dict for the life of the index, so a hot path may keep it."""
        return self._by_pubkey

    @property
    def devices_by_group(self) -> Mapping[str, tuple[Registration, ...]]:
        """group id → following devices, read-only and live like `devices_by_pubkey`."""
        return self._by_group

    def devices_for(self, pubkey: str) -> tuple[Registration, ...]:
        return self._by_pubkey.get(pubkey, ())

    def devices_for_group(self, group_id: str) -> tuple[Registration, ...]:
        """The devices following a group (an event id named in `e` tags)."""
        return self._by_group.get(group_id, ())

    def get(self, pubkey: str, device_token: str) -> Registration | None:
        for reg in self._by_pubkey.get(pubkey, ()):
            if reg.device_token == device_token:
                return reg
        return None

    def pubkeys_of_token(self, device_token: str) -> tuple[str, ...]:
        pubkeys = self._by_token.get(device_token, ())
        return (pubkeys,) if isinstance(pubkeys, str) else pubkeys

    def counts(self) -> dict[str, int]:
        """Registrations per platform."""
        totals: dict[str, int] = {}
        for (_dialect, platform), count in self._counts.items():
            totals[platform.value] = totals.get(platform.value, 0) + count
        return totals

    def counts_by_source(self) -> dict[tuple[str, str], int]:
        """Registrations per (dialect, platform): kept on every write, so reading them costs no walk."""
        return {(dialect, platform.value): count for (dialect, platform), count in self._counts.items()}

    def put(self, reg: Registration) -> Registration | None:
        """Add `reg`, replacing the registration with the same key; the one replaced, if any."""
        reg = self._share_kinds(reg)
        pubkey = reg.pubkey
        token = reg.device_token
        devices = self._by_pubkey.get(pubkey, ())
        old: Registration | None = None
        for position, current in enumerate(devices):
            if current.device_token == token:
                old = current
                updated = (*devices[:position], reg, *devices[position + 1 :])
                break
        else:
            updated = (*devices, reg)
            pubkeys = self._by_token.get(token)
            if pubkeys is None:
                self._by_token[token] = pubkey
            else:
                self._by_token[token] = (pubkeys, pubkey) if isinstance(pubkeys, str) else (*pubkeys, pubkey)
        self._by_pubkey[pubkey] = updated
        if old is not None:
            self._count(old, -1)
        self._count(reg, 1)
        if reg.expires_at is not None:
            heapq.heappush(self._expiry, (reg.expires_at, pubkey, token))
        self._regroup(pubkey, self._union(devices), self._union(updated))
        if reg.groups or (old is not None and old.groups):
            self._follow(old, reg)
        return old

    def put_many(self, registrations: Iterable[Registration]) -> None:
        """`put` each registration in turn, with the common case inlined: the loader's hot loop.

        A registration without groups or lifetime that adds a device (rather than replacing one) only needs its
        dict entries, a count by dialect and platform and, when it changes the pubkey's kind union, a move
        between kind groups. That is nearly every row of a start; the rest takes `put`, so the result is the same
        as putting one by one.
        """
        by_pubkey = self._by_pubkey
        by_token = self._by_token
        groups = self._groups
        dirty = self._dirty
        shared_kinds = self._kinds
        counts = self._counts
        put = self.put
        for item in registrations:
            if item.groups or item.expires_at is not None:
                put(item)
                continue
            kinds = item.kinds
            shared = shared_kinds.get(kinds)
            if shared is None:
                shared = self._shared(kinds)
            reg = item if shared is kinds else replace(item, kinds=shared)
            pubkey = reg.pubkey
            token = reg.device_token
            devices = by_pubkey.get(pubkey)
            if devices is None:
                by_pubkey[pubkey] = (reg,)
                group = groups.get(shared)
                if group is None:
                    group = groups[shared] = set()
                group.add(pubkey)
                dirty.add(shared)
                self._interest = None
            else:
                for device in devices:
                    if device.device_token == token:
                        break
                else:
                    device = None
                if device is not None:
                    put(reg)  # replaces a device
                    continue
                union = self._devices_union(devices)
                by_pubkey[pubkey] = (*devices, reg)
                if not shared <= union:
                    self._regroup(pubkey, union, self._shared(union | shared))
            pubkeys = by_token.setdefault(token, pubkey)
            if pubkeys is not pubkey:
                by_token[token] = (pubkeys, pubkey) if isinstance(pubkeys, str) else (*pubkeys, pubkey)
            source = (reg.dialect, reg.platform)
            counts[source] = counts.get(source, 0) + 1

    def remove(self, pubkey: str, device_token: str) -> Registration | None:
        """Remove one registration; the one removed, if it existed."""
        current = self.get(pubkey, device_token)
        if current is None:
            return None
        devices = self._by_pubkey[pubkey]
        updated = tuple(reg for reg in devices if reg is not current)
        if updated:
            self._by_pubkey[pubkey] = updated
        else:
            del self._by_pubkey[pubkey]
        others = tuple(other for other in self.pubkeys_of_token(device_token) if other != pubkey)
        if not others:
            del self._by_token[device_token]
        else:
            self._by_token[device_token] = others[0] if len(others) == 1 else others
        self._count(current, -1)
        self._regroup(pubkey, self._union(devices), self._union(updated))
        if current.groups:
            self._follow(current, None)
        return current

    def remove_token(self, device_token: str) -> list[Registration]:
        """Remove a token under every pubkey; the registrations removed."""
        removed = []
        for pubkey in self.pubkeys_of_token(device_token):
            reg = self.remove(pubkey, device_token)
            if reg is not None:
                removed.append(reg)
        return removed

    def expire(self, now: float) -> list[Registration]:
        """Remove the registrations whose `expires_at` is at or before `now`; those removed.

        The expiry heap is never searched: a renewed or removed registration leaves a stale entry behind,
        which is recognised (the current registration has another `expires_at`) and dropped when it comes due.
        """
        expired = []
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, pubkey, token = heapq.heappop(self._expiry)
            current = self.get(pubkey, token)
            if current is not None and current.expires_at == expires_at:
                self.remove(pubkey, token)
                expired.append(current)
        return expired

    def interest(self) -> KindInterest:
        """Kind set → pubkeys whose devices want (the union of) those kinds; each pubkey is in one group."""
        if self._interest is None:
            for kinds in self._dirty:
                group = self._groups.get(kinds)
                if group:
                    self._frozen[kinds] = frozenset(group)
                else:
                    self._frozen.pop(kinds, None)
            self._dirty.clear()
            self._interest = MappingProxyType(dict(self._frozen))
        return self._interest

    def group_interest(self) -> KindInterest:
        """Kind set → channel ids (`e` tags) whose devices want (the union of) those kinds; rebuilt only after a
        change. NIP-29 relay groups are left out: they are asked of their own relay, by `h` tag, not of every
        relay by `e` tag."""
        if self._group_interest is None:
            kinds_of: dict[str, frozenset[int]] = {
                group: frozenset().union(*(reg.kinds for reg in devices))
                for group, devices in self._by_group.items()
                if not is_group_key(group)
            }
            grouped: dict[frozenset[int], set[str]] = {}
            for group, kinds in kinds_of.items():
                grouped.setdefault(kinds, set()).add(group)
            self._group_interest = MappingProxyType({kinds: frozenset(ids) for kinds, ids in grouped.items()})
        return self._group_interest

    def _follow(self, old: Registration | None, new: Registration | None) -> None:
        """Move a registration between the group lists it leaves (`old`) and joins (`new`)."""
        left = groups_of(old) if old is not None else frozenset()
        joined = groups_of(new) if new is not None else frozenset()
        if not left and not joined:
            return
        for group in left:
            kept = tuple(reg for reg in self._by_group.get(group, ()) if reg is not old)
            if kept:
                self._by_group[group] = kept
            else:
                self._by_group.pop(group, None)
        if new is not None:
            for group in joined:
                self._by_group[group] = (*self._by_group.get(group, ()), new)
        self._group_interest = None

    def _share_kinds(self, reg: Registration) -> Registration:
        shared = self._shared(reg.kinds)
        return reg if shared is reg.kinds else replace(reg, kinds=shared)

    def _shared(self, kinds: frozenset[int]) -> frozenset[int]:
        shared = self._kinds.get(kinds)
        if shared is None:
            if len(self._kinds) >= self.MAX_SHARED_KIND_SETS:
                self._kinds.clear()
            shared = self._kinds[kinds] = kinds
        return shared

    def _union(self, devices: tuple[Registration, ...]) -> frozenset[int] | None:
        return self._devices_union(devices) if devices else None

    def _devices_union(self, devices: tuple[Registration, ...]) -> frozenset[int]:
        """The shared union of the kinds of one or more devices."""
        if len(devices) == 1:
            return devices[0].kinds
        return self._shared(frozenset().union(*(reg.kinds for reg in devices)))

    def _regroup(self, pubkey: str, old: frozenset[int] | None, new: frozenset[int] | None) -> None:
        if old == new:
            return
        if old is not None:
            group = self._groups[old]
            group.discard(pubkey)
            if not group:
                del self._groups[old]
            self._dirty.add(old)
        if new is not None:
            self._groups.setdefault(new, set()).add(pubkey)
            self._dirty.add(new)
        self._interest = None

    def _count(self, reg: Registration, delta: int) -> None:
        source = (reg.dialect, reg.platform)
        count = self._counts.get(source, 0) + delta
        if count:
            self._counts[source] = count
        else:
            del self._counts[source]


def groups_of(reg: Registration) -> frozenset[str]:
    """The group ids a registration follows, each once (a device is listed once per group)."""
    return frozenset(reg.groups)
