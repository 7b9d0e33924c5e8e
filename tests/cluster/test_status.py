"""`pushstr cluster status` against a real database: who holds what, how much waits for each, whether it is whole."""

from __future__ import annotations

import io
from pathlib import Path

from pushstr.cli import main
from pushstr.cluster.leases import LeaseKeeper
from pushstr.config import Settings
from pushstr.ops.cluster_status import run_cluster_status
from pushstr.registry.shards import ShardTable, shard_of
from pushstr.registry.storage import OutboxRow, OutboxWrite
from pushstr.store.cluster import ClusterTables
from tests.cluster.conftest import OpenStore
from tests.cluster.test_leases import KEY, Recorder

SHARDS = 4


def settings(url: str, tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "server": {"data_dir": str(tmp_path)},
            "store": {"url": url},
            "cluster": {"enabled": True, "shards": SHARDS, "lease_seconds": 3},
        }
    )


async def test_status_lists_instances_shards_and_pending_pushes(
    open_store: OpenStore, cluster_db: str, tmp_path: Path
) -> None:
    config = settings(cluster_db, tmp_path)
    store = await open_store()
    out = io.StringIO()
    assert await run_cluster_status(config, out) == 1, "no instance: not whole"
    table = ShardTable(SHARDS)
    keeper = LeaseKeeper(ClusterTables(store.engine), config.cluster, "node-a", table, Recorder(table))
    await keeper.join(KEY, None)
    pubkey = next(f"{n:08x}" + "0" * 56 for n in range(100) if shard_of(f"{n:08x}" + "0" * 56, SHARDS) == 2)
    row = OutboxRow("e" * 64, pubkey, "token", "default", "{}", 0.0, 1e12, 0.0)
    await store.write_outbox(OutboxWrite(added=[row]))
    out = io.StringIO()
    assert await run_cluster_status(config, out) == 0
    report = out.getvalue()
    assert "1 live instances of 1 known, 4 shards" in report
    assert "node-a  live" in report and "4 shards" in report and "1 pending pushes" in report
    assert report.rstrip().endswith("whole: every shard is held by a live instance")
    await keeper.stop()
    out = io.StringIO()
    assert await run_cluster_status(config, out) == 1
    assert "4 shards held by nobody (1 pending pushes wait for an owner)" in out.getvalue()


def test_a_single_instance_configuration_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "pushstr.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n')
    assert main(["cluster", "status", "--config", str(config)]) == 2
