"""The tables several instances share their work through: who is alive, who holds which shard, what changed.

Every time here is the database's clock (`clock_timestamp()`), never an instance's: instances on different hosts
disagree about the time, and a lease must expire at the same moment for all of them. A lease is taken with
`FOR UPDATE SKIP LOCKED`, so two instances reaching for the same free shard never both get it, and one waiting
for the other's transaction is never blocked by it. PostgreSQL only (`SqlStore.enable_change_log` says why).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


@dataclass(frozen=True, slots=True)
class Instance:
    """One row of `cluster_instances`, with its age as the database sees it."""

    instance_id: str
    server_pubkey: str
    public_url: str | None
    started_at: float
    heartbeat_age: float


@dataclass(frozen=True, slots=True)
class Lease:
    shard: int
    owner: str | None
    expires_in: float  # seconds from the database's now; negative once expired


@dataclass(frozen=True, slots=True)
class Round:
    """What one renewal saw: the live instances (sorted) and the shards this instance holds after renewing."""

    live: tuple[str, ...]
    held: frozenset[int]


class ClusterTables:
    """The SQL of `cluster_instances`, `shard_leases` and `registry_changes`; no policy (see `pushstr.cluster`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def prepare_shards(self, count: int) -> int:
        """Create the lease rows of `count` shards when there are none (the first instance does); the count the
        table holds, which differs from `count` when the database was split otherwise."""
        async with self._engine.begin() as conn:
            await conn.execute(text("LOCK TABLE shard_leases IN EXCLUSIVE MODE"))  # two first instances at once
            held = int((await conn.execute(text("SELECT count(*) FROM shard_leases"))).scalar_one())
            if held:
                return held
            await conn.execute(
                text(
                    "INSERT INTO shard_leases (shard, owner, expires_at) "
                    "SELECT s, NULL, 0 FROM generate_series(0, :last) AS s"
                ),
                {"last": count - 1},
            )
            return count

    async def instances(self) -> list[Instance]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT instance_id, server_pubkey, public_url, started_at, "
                    f"{_NOW} - heartbeat_at FROM cluster_instances ORDER BY instance_id"
                )
            )
            return [Instance(str(r[0]), str(r[1]), r[2], float(r[3]), float(r[4])) for r in rows.all()]

    async def leases(self) -> list[Lease]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT shard, owner, expires_at - {_NOW} FROM shard_leases ORDER BY shard")
            )
            return [Lease(int(r[0]), r[1], float(r[2])) for r in rows.all()]

    async def join(self, instance_id: str, server_pubkey: str, public_url: str | None) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO cluster_instances (instance_id, server_pubkey, public_url, started_at, heartbeat_at) "
                    f"VALUES (:id, :pubkey, :url, {_NOW}, {_NOW}) ON CONFLICT (instance_id) DO UPDATE SET "
                    "server_pubkey = EXCLUDED.server_pubkey, public_url = EXCLUDED.public_url, "
                    "started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at"
                ),
                {"id": instance_id, "pubkey": server_pubkey, "url": public_url},
            )

    async def renew(self, instance_id: str, lease_seconds: float) -> Round:
        """Heartbeat, renew every lease this instance holds, and list the instances alive within a lease."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE cluster_instances SET heartbeat_at = {_NOW} WHERE instance_id = :id"),
                {"id": instance_id},
            )
            live = await conn.execute(
                text(f"SELECT instance_id FROM cluster_instances WHERE heartbeat_at > {_NOW} - :lease ORDER BY 1"),
                {"lease": lease_seconds},
            )
            held = await conn.execute(
                text(
                    f"UPDATE shard_leases SET expires_at = {_NOW} + :lease WHERE owner = :id AND expires_at > {_NOW} "
                    "RETURNING shard"
                ),
                {"id": instance_id, "lease": lease_seconds},
            )
            return Round(tuple(str(row[0]) for row in live.all()), frozenset(int(row[0]) for row in held.all()))

    async def acquire(self, instance_id: str, count: int, lease_seconds: float) -> frozenset[int]:
        """Take up to `count` free or expired shards; the ones taken."""
        if count <= 0:
            return frozenset()
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                text(
                    f"UPDATE shard_leases SET owner = :id, expires_at = {_NOW} + :lease WHERE shard IN ("
                    f"SELECT shard FROM shard_leases WHERE owner IS NULL OR expires_at <= {_NOW} ORDER BY shard "
                    "LIMIT :count FOR UPDATE SKIP LOCKED) RETURNING shard"
                ),
                {"id": instance_id, "count": count, "lease": lease_seconds},
            )
            return frozenset(int(row[0]) for row in rows.all())

    async def release(self, instance_id: str, shards: Collection[int] | None = None) -> None:
        """Give shards up at once (all of them when `shards` is None), so another instance need not wait."""
        async with self._engine.begin() as conn:
            await self._release(conn, instance_id, shards)

    async def leave(self, instance_id: str) -> None:
        """Release every shard and remove this instance's row (a clean stop)."""
        async with self._engine.begin() as conn:
            await self._release(conn, instance_id, None)
            await conn.execute(text("DELETE FROM cluster_instances WHERE instance_id = :id"), {"id": instance_id})

    @staticmethod
    async def _release(conn: AsyncConnection, instance_id: str, shards: Collection[int] | None) -> None:
        statement = "UPDATE shard_leases SET owner = NULL, expires_at = 0 WHERE owner = :id"
        params: dict[str, object] = {"id": instance_id}
        if shards is not None:
            statement += " AND shard = ANY(:shards)"
            params["shards"] = sorted(shards)
        await conn.execute(text(statement), params)

    async def prune(self, dead_after_seconds: float, changes_kept_seconds: float) -> None:
        """Forget instances silent for long and registry changes every instance has long read."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text(f"DELETE FROM cluster_instances WHERE heartbeat_at < {_NOW} - :dead"),
                {"dead": dead_after_seconds},
            )
            await conn.execute(
                text(f"DELETE FROM registry_changes WHERE changed_at < {_NOW} - :kept"),
                {"kept": changes_kept_seconds},
            )

    async def last_change(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(text("SELECT coalesce(max(seq), 0) FROM registry_changes"))).scalar_one())

    async def changes_after(self, seq: int, limit: int) -> Sequence[tuple[int, str]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT seq, pubkey FROM registry_changes WHERE seq > :seq ORDER BY seq LIMIT :limit"),
                {"seq": seq, "limit": limit},
            )
            return [(int(row[0]), str(row[1])) for row in rows.all()]

    async def pending_by_shard(self, shards: int) -> dict[int, int]:
        """Outbox rows per shard (a pubkey's shard is its first 32 bits modulo the count, as `registry.shards`)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT ('x' || substr(pubkey, 1, 8))::bit(32)::bigint % :shards AS shard, count(*) FROM outbox "
                    "GROUP BY 1"
                ),
                {"shards": shards},
            )
            return {int(row[0]): int(row[1]) for row in rows.all()}
