"""`pushstr cluster status`: the instances sharing the database, the shards each holds, lease ages and outbox depth.

Read-only, like the other operator tools (`ops.store_read`): its own engine, nothing migrated or written. The exit
code says whether the cluster is whole: 0 when every shard is held by a live instance, 1 when some shard is free or
its lease has run out (an instance died and nobody took over yet, or no instance runs), 2 for a configuration
that is not a cluster.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from sqlalchemy.ext.asyncio import create_async_engine

from pushstr.config import Settings
from pushstr.store.cluster import ClusterTables
from pushstr.store.sql import parse_store_url


async def run_cluster_status(settings: Settings, out: TextIO, *, timeout: float = 5.0) -> int:
    if not settings.cluster.enabled:
        out.write("cluster.enabled is false: this configuration runs one instance\n")
        return 2
    engine = create_async_engine(
        parse_store_url(settings.store_url), connect_args={"timeout": timeout}, hide_parameters=True
    )
    try:
        tables = ClusterTables(engine)
        instances = await tables.instances()
        leases = await tables.leases()
        pending = await tables.pending_by_shard(max(len(leases), 1))
    finally:
        await engine.dispose()
    lease_seconds = settings.cluster.lease_seconds
    held = Counter(lease.owner for lease in leases if lease.owner is not None and lease.expires_in > 0)
    oldest: dict[str, float] = {}
    depth: Counter[str] = Counter()
    for lease in leases:
        if lease.owner is not None and lease.expires_in > 0:
            oldest[lease.owner] = max(oldest.get(lease.owner, 0.0), lease_seconds - lease.expires_in)
            depth[lease.owner] += pending.get(lease.shard, 0)
    live = [i for i in instances if i.heartbeat_age <= lease_seconds]
    out.write(f"{len(live)} live instances of {len(instances)} known, {len(leases)} shards\n")
    for instance in instances:
        state = "live" if instance.heartbeat_age <= lease_seconds else "silent"
        out.write(
            f"  {instance.instance_id}  {state}, heartbeat {instance.heartbeat_age:.1f} s ago, "
            f"{held[instance.instance_id]} shards (oldest renewal {oldest.get(instance.instance_id, 0.0):.1f} s ago), "
            f"{depth[instance.instance_id]} pending pushes\n"
        )
    unheld = [lease.shard for lease in leases if lease.owner is None or lease.expires_in <= 0]
    orphaned = sum(pending.get(shard, 0) for shard in unheld)
    if unheld or not leases:
        out.write(f"not whole: {len(unheld)} shards held by nobody ({orphaned} pending pushes wait for an owner)\n")
        return 1
    out.write("whole: every shard is held by a live instance\n")
    return 0
