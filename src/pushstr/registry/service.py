"""The registry: the one place registrations change, keeping the store and the in-memory index in step.

Every change goes through one lock, which spans the store write and the index update. Without it a concurrent
`add` and `remove_token` for the same token could reach the database in one order and the index in the
other, and the two would disagree until the next restart. Registrations change rarely next to the event
rate, and SQLite serializes writers anyway, so the lock costs little; reads (`devices_for`, `interest`, …)
never take it.

The store is written before the index: when the write fails, the exception reaches the caller and the index
still describes what the store holds.

With several instances on one database (`pushstr.cluster`), every instance keeps every registration (any of them
answers the API), and a second index holds the ones this instance matches events for: those of the pubkeys in
its shards, and its own memory-only ones. Matching and the relay plan read that one (`matched_devices_for`,
`interest`); a single instance has one index serving both. Changes other instances make reach the index through
`refresh`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence

from pushstr.logutil import ident
from pushstr.registry.index import KindInterest, RegistryIndex
from pushstr.registry.metrics import REGISTRATIONS
from pushstr.registry.model import Registration
from pushstr.registry.storage import DeliveryStatus, Store

logger = logging.getLogger(__name__)

Listener = Callable[[], None]


class TooManyDevices(Exception):
    """A pubkey already has the maximum number of devices; the new one was not registered."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} devices per pubkey")
        self.limit = limit


class Registry:
    """Registrations: durable ones in the store, all of them in the in-memory index the hot path reads."""

    def __init__(self, store: Store, max_devices_per_pubkey: int = 20) -> None:
        if max_devices_per_pubkey < 1:
            raise ValueError("max_devices_per_pubkey must be at least 1")
        self._store = store
        self._max_devices = max_devices_per_pubkey
        self._index = RegistryIndex()
        # The index's lookup dicts, held directly: `devices_for` runs for every p tag of every event, and one
        # Python call less is a measurable share of matching.
        self._by_pubkey = self._index.devices_by_pubkey
        self._by_group = self._index.devices_by_group
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._version = 0
        self._owns: Callable[[str], bool] | None = None
        self._matched = self._index  # the index matching reads: this instance's share of `_index`
        self._match_by_pubkey = self._by_pubkey
        self._match_by_group = self._by_group
        REGISTRATIONS.track(self)

    @property
    def version(self) -> int:
        """Bumped on every change; lets a reader tell whether anything changed since it last looked."""
        return self._version

    async def load(self) -> int:
        """Rebuild the index from the store, keeping the memory-only registrations; how many were loaded.

        Writes wait until the load is over, so none can fall between the snapshot and the swap.

        The cyclic garbage collector is paused while the rows stream in: a million new long-lived objects
        trigger full collections that rescan the growing heap again and again (a third of the load time), and
        nothing the load allocates forms cycles that need collecting early. (`Service.start` keeps the collector
        paused for the rest of the start too and then freezes what it built.)
        """
        started = time.monotonic()
        collecting = gc.isenabled()
        async with self._lock:
            index = RegistryIndex()
            gc.disable()
            try:
                async for batch in self._store.iter_registration_batches():
                    index.put_many(batch)
                # The relay plan asks for these next; built now, while the collector is paused.
                index.interest()
                index.group_interest()
            finally:
                if collecting:
                    gc.enable()
            loaded = len(index)
            for reg in self._index:
                if not reg.persistent:
                    index.put(reg)
            self._index = index
            self._by_pubkey = index.devices_by_pubkey
            self._by_group = index.devices_by_group
            self._rebuild_matched()
            self._changed()
        logger.info(
            "registry loaded %d registrations of %d pubkeys in %.2fs",
            loaded,
            index.pubkey_count,
            time.monotonic() - started,
        )
        return loaded

    async def add(self, reg: Registration) -> None:
        """Register a device, replacing the registration with the same (pubkey, device_token).

        A persistent registration is stored; a memory-only one is not, and replacing a stored registration with
        a memory-only one deletes the stored copy (otherwise it would come back at the next start). Raises
        TooManyDevices when the pubkey is at its device limit and `reg` is a new device, and ValueError for a
        persistent registration with an `expires_at`: a lifetime only makes sense in memory.
        """
        if reg.persistent and reg.expires_at is not None:
            raise ValueError("only a memory-only registration (persistent=False) can have expires_at")
        async with self._lock:
            current = self._index.get(*reg.key)
            if current is None and len(self._index.devices_for(reg.pubkey)) >= self._max_devices:
                raise TooManyDevices(self._max_devices)
            if reg.persistent:
                await self._store.save_registration(reg)
            elif current is not None and current.persistent:
                await self._store.delete_registration(*reg.key)
            self._put(reg)
            self._changed()
        logger.debug(
            "registered %s device %s (%s, %s)", ident(reg.pubkey), ident(reg.device_token), reg.platform, reg.dialect
        )

    async def remove(self, pubkey: str, device_token: str) -> bool:
        """Unregister one device of one pubkey; whether it was registered."""
        async with self._lock:
            current = self._index.get(pubkey, device_token)
            stored = False
            # A pubkey unknown here may still be in a store shared with other instances.
            if current is None or current.persistent:
                stored = await self._store.delete_registration(pubkey, device_token)
            removed = self._remove(pubkey, device_token) is not None
            if removed:
                self._changed()
        if removed or stored:
            logger.debug("unregistered %s device %s", ident(pubkey), ident(device_token))
        return removed or stored

    async def remove_token(self, device_token: str) -> int:
        """Unregister a device token under every pubkey; how many registrations were removed."""
        async with self._lock:
            stored = await self._store.delete_token(device_token)
            removed = self._index.remove_token(device_token)
            if self._matched is not self._index:
                self._matched.remove_token(device_token)
            if removed:
                self._changed()
        count = len({reg.pubkey for reg in stored} | {reg.pubkey for reg in removed})
        if count:
            logger.debug("unregistered device %s from %d pubkeys", ident(device_token), count)
        return count

    async def remove_dead(self, reg: Registration, provider_timestamp: float | None = None) -> bool:
        """Prune a registration the push service reported dead, unless it was registered again since.

        `provider_timestamp` (Unix seconds) is when the provider says the token stopped being valid (APNs
        410); a registration made after it is newer than the provider's knowledge and survives. Without a
        timestamp the cut-off is the `created_at` of `reg`, the registration the failed push was made for: if
        the device registered again after that push was planned, the newer registration is kept, and a
        further failure will prune it. Whether anything was removed.
        """
        cutoff = reg.created_at if provider_timestamp is None else provider_timestamp
        async with self._lock:
            current = self._index.get(*reg.key)
            if current is None or current.created_at > cutoff:
                return False
            if current.persistent:
                await self._store.delete_registration(*reg.key)
            self._remove(*reg.key)
            self._changed()
        logger.info("pruned dead device %s of %s (%s)", ident(reg.device_token), ident(reg.pubkey), reg.platform)
        return True

    def expire(self, now: float | None = None) -> int:
        """Drop the memory-only registrations whose `expires_at` has passed; how many were dropped."""
        at = time.time() if now is None else now
        expired = self._index.expire(at)
        if self._matched is not self._index:
            self._matched.expire(at)
        if expired:
            self._changed()
            logger.debug("expired %d memory-only registrations", len(expired))
        return len(expired)

    def devices_for_group(self, group_id: str) -> Sequence[Registration]:
        """The devices this instance matches that follow a group or channel (an event id in `e` tags): a hot-path
        lookup too."""
        return self._match_by_group.get(group_id, ())

    def group_interest(self) -> KindInterest:
        """Kind set → group ids to subscribe for (`#e` filters), for the devices this instance matches."""
        return self._matched.group_interest()

    def registrations(self) -> list[Registration]:
        """A snapshot of every registration (for a dialect restoring its state after `load`)."""
        return list(self._index)

    def devices_for(self, pubkey: str) -> Sequence[Registration]:
        """The devices of a pubkey (an empty sequence when none), whichever instance matches them."""
        return self._by_pubkey.get(pubkey, ())

    def matched_devices_for(self, pubkey: str) -> Sequence[Registration]:
        """The devices of a pubkey that this instance matches events for: the hot-path lookup, one dict access."""
        return self._match_by_pubkey.get(pubkey, ())

    def device(self, pubkey: str, device_token: str) -> Registration | None:
        """The registration of one device, if it is registered."""
        return self._index.get(pubkey, device_token)

    async def delivery_statuses(self, pubkey: str) -> dict[str, DeliveryStatus]:
        """The last delivery outcome of each of a pubkey's stored devices, by device token (read from the store:
        the outbox writes it there with its commits)."""
        return await self._store.delivery_statuses(pubkey)

    def registrations_of(self, pubkey: str) -> list[Registration]:
        """The devices of a pubkey as a list the caller may keep or change."""
        return list(self._index.devices_for(pubkey))

    def is_registered(self, pubkey: str) -> bool:
        return bool(self._index.devices_for(pubkey))

    def interest(self) -> KindInterest:
        """Kind set → pubkeys to subscribe for (those this instance matches); the same object until a change
        alters it."""
        return self._matched.interest()

    def counts(self) -> dict[str, int]:
        """Registrations per platform, memory-only ones included."""
        return self._index.counts()

    def counts_by_source(self) -> dict[tuple[str, str], int]:
        """Registrations per (dialect, platform), memory-only ones included (`pushstr_registrations`)."""
        return self._index.counts_by_source()

    def set_owner(self, owns: Callable[[str], bool] | None) -> None:
        """Match only the stored registrations of the pubkeys `owns` (and every memory-only one): this
        instance's shards changed. None matches every registration again."""
        self._owns = owns
        self._rebuild_matched()
        self._changed()

    async def refresh(self, pubkey: str, stored: Sequence[Registration]) -> bool:
        """Make a pubkey's stored registrations here what the store holds (`stored`, read after another instance
        changed them); its memory-only ones stay. Whether anything changed."""
        async with self._lock:
            current = {reg.device_token: reg for reg in self._index.devices_for(pubkey) if reg.persistent}
            wanted = {reg.device_token: reg for reg in stored if reg.pubkey == pubkey and reg.persistent}
            changed = False
            for token in current:
                if token not in wanted:
                    self._remove(pubkey, token)
                    changed = True
            for token, reg in wanted.items():
                if current.get(token) != reg:
                    self._put(reg)
                    changed = True
            if changed:
                self._changed()
        return changed

    def _mine(self, reg: Registration) -> bool:
        return self._owns is None or not reg.persistent or self._owns(reg.pubkey)

    def _put(self, reg: Registration) -> None:
        self._index.put(reg)
        if self._matched is not self._index:
            if self._mine(reg):
                self._matched.put(reg)
            else:  # replaced a memory-only registration of a pubkey owned elsewhere
                self._matched.remove(*reg.key)

    def _remove(self, pubkey: str, device_token: str) -> Registration | None:
        if self._matched is not self._index:
            self._matched.remove(pubkey, device_token)
        return self._index.remove(pubkey, device_token)

    def _rebuild_matched(self) -> None:
        """The matching index after a load or a change of shards: the whole index for a single instance."""
        if self._owns is None:
            self._matched = self._index
        else:
            matched = RegistryIndex()
            matched.put_many(reg for reg in self._index if self._mine(reg))
            self._matched = matched
        self._match_by_pubkey = self._matched.devices_by_pubkey
        self._match_by_group = self._matched.devices_by_group

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` after every change; returns the function that stops that."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _changed(self) -> None:
        self._version += 1
        for listener in tuple(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("registry change listener failed")
