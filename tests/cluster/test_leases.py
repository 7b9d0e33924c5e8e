"""Shard leases on a real PostgreSQL: fair shares as instances come and go, takeover of a dead instance's shards
after its lease, an instance that cannot renew giving its shards up, and a cluster that refuses a stranger."""

from __future__ import annotations

import time

import pytest

from pushstr.cluster.leases import ClusterError, LeaseKeeper, fair_share
from pushstr.config import ClusterConfig
from pushstr.registry.shards import ShardTable
from pushstr.store.cluster import ClusterTables, Round
from tests.cluster.conftest import OpenStore

SHARDS = 16
LEASE = 3.0
KEY = "a" * 64


class Recorder:
    """A Handover that notes what it was told, in order."""

    def __init__(self, table: ShardTable) -> None:
        self.table = table
        self.events: list[tuple[str, frozenset[int]]] = []

    async def gain(self, shards: frozenset[int]) -> None:
        assert shards <= self.table.owned, "gain is told after the shards are held"
        self.events.append(("gain", shards))

    async def lose(self, shards: frozenset[int]) -> None:
        assert not shards & self.table.owned, "lose is told after the shards stopped being matched"
        self.events.append(("lose", shards))


class Unreachable(ClusterTables):
    """The database as seen through a broken network, once `down` is set."""

    down = False

    async def renew(self, instance_id: str, lease_seconds: float) -> Round:
        if self.down:
            raise OSError("connection refused")
        return await super().renew(instance_id, lease_seconds)


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def keeper(open_store: OpenStore, name: str, **config: object) -> tuple[LeaseKeeper, Recorder]:
    store = await open_store()
    table = ShardTable(int(config.get("shards", SHARDS)))  # type: ignore[call-overload]
    recorder = Recorder(table)
    settings = ClusterConfig.model_validate({"enabled": True, "shards": SHARDS, "lease_seconds": LEASE, **config})
    return LeaseKeeper(ClusterTables(store.engine), settings, name, table, recorder), recorder


def held(*keepers: LeaseKeeper) -> list[int]:
    return [len(k._table.owned) for k in keepers]


def test_the_fair_share_splits_evenly_in_id_order() -> None:
    assert [fair_share(64, ["a", "b", "c"], me) for me in "abc"] == [22, 21, 21]
    assert fair_share(64, ["b"], "a") == 32  # an instance not seen alive yet counts itself
    assert fair_share(4, ["a", "b", "c", "d", "e"], "e") == 0


async def test_one_instance_takes_every_shard(open_store: OpenStore) -> None:
    a, recorder = await keeper(open_store, "a")
    await a.join(KEY, None)
    assert a._table.owned == frozenset(range(SHARDS))
    assert recorder.events == [("gain", frozenset(range(SHARDS)))]


async def test_shares_rebalance_as_instances_join_and_leave(open_store: OpenStore) -> None:
    a, _ = await keeper(open_store, "a")
    b, b_seen = await keeper(open_store, "b")
    c, _ = await keeper(open_store, "c")
    await a.join(KEY, None)
    await b.join(KEY, None)
    assert held(a, b) == [16, 0]  # nothing is free until a sees b
    await a.round()  # a gives up what is b's share, at once
    await b.round()
    assert held(a, b) == [8, 8]
    await c.join(KEY, None)
    await a.round()
    await b.round()
    await c.round()
    assert held(a, b, c) == [6, 5, 5]
    everything = a._table.owned | b._table.owned | c._table.owned
    assert everything == frozenset(range(SHARDS)) and sum(held(a, b, c)) == SHARDS
    await b.stop()  # a clean stop releases everything and leaves
    assert b_seen.events[-1][0] == "lose" and not b._table.owned
    await a.round()
    await c.round()
    assert held(a, c) == [8, 8]


async def test_a_dead_instance_is_taken_over_after_its_lease(open_store: OpenStore) -> None:
    a, _ = await keeper(open_store, "a")
    b, _ = await keeper(open_store, "b")
    await a.join(KEY, None)
    await b.join(KEY, None)
    await a.round()
    await b.round()
    b_shards = b._table.owned
    died = time.monotonic()  # b stops renewing: no stop, no release, as after kill -9
    await a.round()
    assert held(a) == [8], "a live lease is not taken"
    while len(a._table.owned) < SHARDS:
        assert time.monotonic() - died < LEASE + 2, "not taken over within the lease"
        await a.round()
    assert b_shards <= a._table.owned
    assert time.monotonic() - died >= LEASE - 0.5, "taken before the lease could have expired"


async def test_an_instance_that_cannot_renew_gives_its_shards_up_after_a_lease(open_store: OpenStore) -> None:
    clock = Clock()
    store = await open_store()
    table = ShardTable(SHARDS)
    recorder = Recorder(table)
    settings = ClusterConfig.model_validate({"enabled": True, "shards": SHARDS, "lease_seconds": LEASE})
    tables = Unreachable(store.engine)
    a = LeaseKeeper(tables, settings, "a", table, recorder, clock=clock)
    await a.join(KEY, None)
    tables.down = True
    await a.tick()
    assert len(table.owned) == SHARDS, "within the lease the shards are still this instance's"
    clock.now += LEASE
    await a.tick()
    assert not table.owned
    assert recorder.events[-1] == ("lose", frozenset(range(SHARDS)))


async def test_an_instance_with_another_key_or_url_is_refused(open_store: OpenStore) -> None:
    a, _ = await keeper(open_store, "a")
    await a.join(KEY, "https://push.example/")
    b, _ = await keeper(open_store, "b")
    with pytest.raises(ClusterError, match="another server key"):
        await b.join("b" * 64, "https://push.example/")
    with pytest.raises(ClusterError, match="public_url"):
        await b.join(KEY, "https://other.example/")
    assert not b._table.owned


async def test_another_shard_count_is_refused(open_store: OpenStore) -> None:
    a, _ = await keeper(open_store, "a")
    await a.join(KEY, None)
    b, _ = await keeper(open_store, "b", shards=SHARDS * 2)
    with pytest.raises(ClusterError, match="same count"):
        await b.join(KEY, None)
