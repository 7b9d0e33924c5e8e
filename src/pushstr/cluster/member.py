"""This instance as one of several: what it does when shards come and go and when others change the registry.

Built by the service when `cluster.enabled`. The order at start (`Service.start`): `prepare` before the registry
loads (the change log is switched on and its cursor set, so no change falls between the load and the feed),
`join` once delivery runs and before the relays are asked for anything (it checks the cluster's identity and takes
the first share), `start` last. `stop` hands every shard over before the relays close.

Taking shards (`gain`): what their previous owner handled is read (`engine.handled`), the dedupe memory is cleared
so the relays' window for the new pubkeys is matched again, their pending pushes are resumed from the outbox, and
only then does matching include them (the registry's matched index, which re-plans the relay subscriptions; the
relay session's catch-up asks for the new pubkeys' window). Giving shards up (`lose`): matching drops them, their
queued pushes are handed back unsent as their turn comes, and what the outbox holds for them is committed before
the lease goes (`leases`).

Duplicates. Within a handover nothing is pushed twice: the outbox row and the handled mark of a push are
committed together, and the new owner resumes the row and skips the mark. After a crash (`kill -9`) what the dead
instance did in its last `outbox.commit_interval` was not committed: its pushes sent then (at most its push rate
times that interval, plus the requests in flight) may be sent again by the new owner. Nothing matched is lost:
an uncommitted push is re-read from the relays' window.

Memory-only registrations (Mostro's privacy mode) stay on the instance that accepted them, matched there
whatever their shard; when that instance dies they are gone, as they are on a restart of a single instance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Info

from pushstr.cluster.changes import ChangeFeed
from pushstr.cluster.leases import LeaseKeeper
from pushstr.config import Settings
from pushstr.delivery.stage import Delivery
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.handled import HandledShards
from pushstr.registry.model import Registration
from pushstr.registry.preferences import PreferenceBook
from pushstr.registry.service import Registry
from pushstr.registry.shards import ShardTable
from pushstr.store.cluster import ClusterTables
from pushstr.store.sql import SqlStore

log = logging.getLogger(__name__)

# Which instance a scrape came from, beside Prometheus's own target label: the id `cluster status` shows.
INSTANCE = Info("pushstr_cluster_instance", "This instance's id among those sharing the database")


def default_instance_id() -> str:
    """host-pid-random: unique across restarts (a restarted instance must not inherit a dead one's leases)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class ClusterMember:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: SqlStore,
        registry: Registry,
        preferences: PreferenceBook,
        *,
        delivery: Delivery,
        seen: SeenIds,
        adopt: Callable[[Registration], None],
    ) -> None:
        """`adopt` is told of each registration another instance made or changed (its dialect watches its relays)."""
        config = settings.cluster
        self.table = ShardTable(config.shards)
        self.handled = HandledShards(self.table, settings.nostr.dedupe_memory)
        self.instance_id = config.instance_id or default_instance_id()
        self._settings = settings
        self._store = store
        self._registry = registry
        self._preferences = preferences
        self._delivery = delivery
        self._seen = seen
        self._adopt = adopt
        self.tables = ClusterTables(store.engine)
        self.leases = LeaseKeeper(self.tables, config, self.instance_id, self.table, self)
        self.feed = ChangeFeed(self.tables, store.engine, config.poll_seconds, self._apply)

    async def prepare(self) -> None:
        self._store.enable_change_log()
        await self.feed.mark()
        self._registry.set_owner(self.table.owns)
        self._delivery.deliver_elsewhere(self._elsewhere)

    async def join(self, server_pubkey: str) -> None:
        public_url = self._settings.server.public_url
        await self.leases.join(server_pubkey, str(public_url) if public_url is not None else None)
        INSTANCE.info({"instance_id": self.instance_id})
        log.info(
            "cluster: joined as %s with %d of %d shards", self.instance_id, len(self.table.owned), self.table.count
        )

    def start(self) -> None:
        self.feed.start()
        self.leases.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.leases.stop()

    # -- Handover -----------------------------------------------------------------------------------------------

    async def gain(self, shards: frozenset[int]) -> None:
        started = time.monotonic()
        horizon = int(time.time()) - self._settings.nostr.max_event_age_seconds
        self.handled.seed(await self._store.handled_in_shards(shards, horizon), shards)
        self._seen.clear()
        table = self.table
        await self._delivery.resume_pubkeys(lambda pubkey: table.shard(pubkey) in shards, self._registry.device)
        self._registry.set_owner(table.owns)
        log.info(
            "cluster: took %d shards (%d held) in %.2f s", len(shards), len(table.owned), time.monotonic() - started
        )

    async def lose(self, shards: frozenset[int]) -> None:
        self._registry.set_owner(self.table.owns)
        try:
            async with asyncio.timeout(self._settings.cluster.lease_seconds):
                await self._delivery.durable()
        except TimeoutError:
            log.warning("cluster: pushes of %d shards given up could not be committed in time", len(shards))
        log.info("cluster: gave up %d shards (%d held)", len(shards), len(self.table.owned))

    def _elsewhere(self, device: Registration) -> bool:
        return device.persistent and not self.table.owns(device.pubkey)

    # -- registry changes from the others -----------------------------------------------------------------------

    async def _apply(self, pubkeys: Sequence[str]) -> None:
        for pubkey in pubkeys:
            before = {reg.device_token: reg for reg in self._registry.devices_for(pubkey)}
            stored = await self._store.registrations_of(pubkey)
            await self._registry.refresh(pubkey, stored)
            for reg in stored:
                if before.get(reg.device_token) != reg:
                    self._adopt(reg)
            self._preferences.refresh(pubkey, _tokens(before, stored), await self._store.preferences_of(pubkey))


def _tokens(before: dict[str, Registration], stored: Iterable[Registration]) -> set[str]:
    return {*before, *(reg.device_token for reg in stored)}
