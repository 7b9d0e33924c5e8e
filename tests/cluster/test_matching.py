"""What an instance matches when the pubkeys are split by shard: only its shards' stored devices and its own
memory-only ones; each event once per shard, even when the relays' window is read again after a takeover."""

from __future__ import annotations

from pathlib import Path

from pushstr.engine.handled import HandledShards
from pushstr.engine.match import Match
from pushstr.registry.model import Platform, Registration
from pushstr.registry.service import Registry
from pushstr.registry.shards import ShardTable, shard_of
from pushstr.store import SqlStore

SHARDS = 4


def pubkey_in(shard: int, n: int = 0) -> str:
    """A 64-hex pubkey of `shard`."""
    for prefix in range(n * 64, 1 << 16):
        candidate = f"{prefix:08x}" + "0" * 56
        if shard_of(candidate, SHARDS) == shard:
            return candidate
    raise AssertionError("unreachable")


def device(pubkey: str, token: str, persistent: bool = True) -> Registration:
    return Registration(pubkey, token, Platform.IOS, "default", persistent=persistent)


async def test_the_registry_matches_only_this_instances_shards(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}")
    await store.open()
    try:
        registry = Registry(store)
        await registry.load()
        table = ShardTable(SHARDS)
        registry.set_owner(table.owns)
        mine, theirs = pubkey_in(0), pubkey_in(1)
        await registry.add(device(mine, "m"))
        await registry.add(device(theirs, "t"))
        await registry.add(device(theirs, "local", persistent=False))
        assert [d.device_token for d in registry.matched_devices_for(theirs)] == ["local"]
        assert not registry.matched_devices_for(mine), "no shard held yet"
        assert len(registry.devices_for(theirs)) == 2, "the API still sees every device"
        table.set_owned({0})
        registry.set_owner(table.owns)
        assert [d.device_token for d in registry.matched_devices_for(mine)] == ["m"]
        planned = set().union(*registry.interest().values())
        assert planned == {mine, theirs}, "the plan holds the held shard and the memory-only device"
        await registry.remove(mine, "m")
        assert not registry.matched_devices_for(mine)
        table.set_owned({1})
        registry.set_owner(table.owns)
        assert {d.device_token for d in registry.matched_devices_for(theirs)} == {"t", "local"}
    finally:
        await store.close()


def test_an_event_is_handled_once_per_shard() -> None:
    table = ShardTable(SHARDS)
    table.set_owned({0, 1})
    handled = HandledShards(table, capacity=100)
    a, b, c = device(pubkey_in(0), "a"), device(pubkey_in(1), "b"), device(pubkey_in(2), "c", persistent=False)
    matches = [Match(d.pubkey, d) for d in (a, b, c)]
    assert handled.fresh("e1", matches) == matches
    assert handled.record("e1", matches) == [0, 1], "only the held shards are written for the next owner"
    assert handled.fresh("e1", matches) == []
    handled.seed([("e2", 1)], frozenset({1}))  # shard 1 taken over: its previous owner had handled e2
    assert handled.fresh("e1", matches) == [matches[1]], "what this instance noted for a taken shard is replaced"
    assert [m.device for m in handled.fresh("e2", matches)] == [a, c]
    assert handled.owns(pubkey_in(0)) and not handled.owns(pubkey_in(2)) and not handled.owns("not hex")
