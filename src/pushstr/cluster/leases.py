"""Shard leases: each live instance holds a fair share of the shards, renews it, and takes over a dead one's.

Every `renew_interval` an instance heartbeats, renews its leases (`lease_seconds` from the database's now) and
compares what it holds with its share: the shards split evenly over the live instances in the order of their
ids, so every instance computes the same shares without talking to the others. Over its share it hands the
extra shards over and releases them at once; under it, it takes free or expired ones. An instance that joins
is counted by the others at their next round, which release shards for it; one that stops releases everything;
one that dies (`kill -9`) stops renewing, so its leases expire and its heartbeat ages past a lease at the same
moment, and the others' next round takes its shards. Takeover therefore comes at most `lease_seconds` plus one
`renew_interval` after the death.

Safety does not rest on the database alone: an instance that cannot renew (the database is unreachable) stops
using its shards once its last renewal is older than a lease minus a margin, by its own monotonic clock, so it
is never still matching a shard after another instance could have taken it.

Handing over is ordered so nothing is lost: a shard given up stops being matched first, then what its pushes
left in memory is committed (`Handover.lose`), then the lease is released; a shard taken is first leased, then
its pushes and handled events are read (`Handover.gain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge

from pushstr.config import ClusterConfig
from pushstr.logutil import RateLimitedLog
from pushstr.registry.shards import ShardTable
from pushstr.store.cluster import ClusterTables

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log)

#: A lease is used locally only until this long before it would expire in the database.
SAFETY_MARGIN_SECONDS = 1.0
#: Instances silent this long lose their row; registry changes are kept this long for readers.
FORGET_INSTANCES_SECONDS = 3600.0
KEEP_CHANGES_SECONDS = 3600.0
PRUNE_EVERY_ROUNDS = 60

SHARDS_HELD = Gauge("pushstr_cluster_shards_held", "Shards this instance holds")
LIVE_INSTANCES = Gauge("pushstr_cluster_instances", "Live instances sharing the database, this one included")
HANDOVERS = Counter("pushstr_cluster_shard_changes_total", "Shards taken or given up", ["direction"])
ROUND_FAILURES = Counter("pushstr_cluster_lease_failures_total", "Lease renewals that failed")
for _direction in ("gained", "lost", "expired"):
    HANDOVERS.labels(_direction)


class ClusterError(Exception):
    """This instance cannot join the others: the message says why and what to change."""


class Handover(Protocol):
    async def gain(self, shards: frozenset[int]) -> None:
        """Shards just leased: resume their pushes, read what was handled for them."""

    async def lose(self, shards: frozenset[int]) -> None:
        """Shards no longer matched: make what is pending for them durable and stop delivering it."""


def fair_share(shards: int, live: Sequence[str], me: str) -> int:
    """How many of `shards` instance `me` should hold among `live` (sorted ids; `me` counted when missing)."""
    instances = sorted({*live, me})
    base, extra = divmod(shards, len(instances))
    return base + (1 if instances.index(me) < extra else 0)


class LeaseKeeper:
    """See the module docstring. `join()` first (it checks the cluster's identity), then `run()` as a task."""

    def __init__(
        self,
        tables: ClusterTables,
        config: ClusterConfig,
        instance_id: str,
        table: ShardTable,
        handover: Handover,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tables = tables
        self._config = config
        self.instance_id = instance_id
        self._table = table
        self._handover = handover
        self._clock = clock
        self._valid_until = 0.0
        self._rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def join(self, server_pubkey: str, public_url: str | None) -> None:
        """Check that this instance belongs with the live ones (same key, same public URL, same shard count),
        register it and take its first share."""
        count = await self._tables.prepare_shards(self._config.shards)
        if count != self._config.shards:
            raise ClusterError(
                f"cluster.shards is {self._config.shards} but the database is split into {count} shards; every "
                "instance of one database must use the same count"
            )
        for other in await self._tables.instances():
            if other.instance_id == self.instance_id or other.heartbeat_age > self._config.lease_seconds:
                continue
            if other.server_pubkey != server_pubkey:
                raise ClusterError(
                    f"instance {other.instance_id} serves with another server key: every instance needs the same "
                    "nostr.secret_key (or secret_key_file), or clients' encrypted settings and tokens open on "
                    "some instances only"
                )
            if other.public_url != public_url:
                raise ClusterError(
                    f"instance {other.instance_id} has server.public_url {other.public_url!r}, this one "
                    f"{public_url!r}: NIP-98 `u` tags must verify on every instance"
                )
        await self._tables.join(self.instance_id, server_pubkey, public_url)
        await self.round()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-leases")

    async def stop(self) -> None:
        """Hand every shard over and leave: the others take them at their next round, without waiting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            await self._lose(self._table.owned, "lost")
            try:
                await self._tables.leave(self.instance_id)
            except Exception as exc:
                log.warning(
                    "cluster: could not release the leases (%s); they expire in %.0f s", exc, self._config.lease_seconds
                )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.renew_interval)
            await self.tick()

    async def tick(self) -> None:
        """One scheduled round; when it fails and the last renewal is older than a lease (minus the margin), every
        shard is given up here, since another instance may take them from now on."""
        try:
            await self.round()
        except Exception as exc:
            ROUND_FAILURES.inc()
            _quiet.warning("round", "cluster: lease renewal failed (%s)", type(exc).__name__)
            if self._clock() > self._valid_until and self._table.owned:
                async with self._lock:
                    log.warning("cluster: leases not renewed for a lease's time; their shards are given up")
                    await self._lose(self._table.owned, "expired")

    async def round(self) -> None:
        """One renewal: heartbeat, renew, then give up or take shards to reach the fair share."""
        async with self._lock:
            started = self._clock()
            renewed = await self._tables.renew(self.instance_id, self._config.lease_seconds)
            self._valid_until = started + self._config.lease_seconds - SAFETY_MARGIN_SECONDS
            held = set(renewed.held)
            LIVE_INSTANCES.set(len({*renewed.live, self.instance_id}))
            expired = self._table.owned - renewed.held
            if expired:  # not renewed in time: another instance may hold them already
                await self._lose(frozenset(expired), "expired")
            target = fair_share(self._config.shards, renewed.live, self.instance_id)
            if len(held) > target:
                extra = frozenset(sorted(held)[target:])
                await self._lose(extra, "lost")
                await self._tables.release(self.instance_id, extra)
                held -= extra
            elif len(held) < target:
                held |= await self._tables.acquire(self.instance_id, target - len(held), self._config.lease_seconds)
            gained = frozenset(held) - self._table.owned
            if gained:
                self._table.set_owned(held)
                HANDOVERS.labels("gained").inc(len(gained))
                await self._handover.gain(gained)
            SHARDS_HELD.set(len(self._table.owned))
            self._rounds += 1
            if self._rounds % PRUNE_EVERY_ROUNDS == 1:
                await self._tables.prune(FORGET_INSTANCES_SECONDS, KEEP_CHANGES_SECONDS)

    async def _lose(self, shards: frozenset[int], how: str) -> None:
        if not shards:
            return
        self._table.set_owned(self._table.owned - shards)
        HANDOVERS.labels(how).inc(len(shards))
        SHARDS_HELD.set(len(self._table.owned))
        await self._handover.lose(shards)
