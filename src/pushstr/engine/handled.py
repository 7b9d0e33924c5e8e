"""Which (event, shard) pairs are handled, for instances that split the pubkeys by shard (`pushstr.cluster`).

A single instance knows an event is handled by its id (`SeenIds`, the outbox's `pushed_events`). Instances that
split the pubkeys need one step more: an event naming users of two shards is handled by each shard's owner for
its own users, and an instance taking a shard over re-reads the relays' window for the shard's pubkeys (which
brings back events it handled for its other shards, so its `SeenIds` is cleared). This memory, seeded for a new
shard with what its previous owner committed (`handled_shards`), lets through exactly the devices of the shards
the event was not handled for yet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from pushstr.engine.match import Match
from pushstr.registry.shards import ShardTable


class HandledShards:
    """A bounded memory of (event id, shard) pairs; the oldest fall out first."""

    def __init__(self, table: ShardTable, capacity: int) -> None:
        self._table = table
        self._capacity = capacity
        self._pairs: OrderedDict[tuple[str, int], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def owns(self, pubkey: str) -> bool:
        """Whether this instance handles what `pubkey` sends (its registration events, for one)."""
        return self._table.owns(pubkey)

    def fresh(self, event_id: str, matches: list[Match]) -> list[Match]:
        """The matches whose device's shard has not had this event yet."""
        pairs, count = self._pairs, self._table.count
        return [m for m in matches if (event_id, int(m.device.pubkey[:8], 16) % count) not in pairs]

    def record(self, event_id: str, matches: Iterable[Match]) -> list[int]:
        """Remember the event as handled for its matches' shards; the shards this instance holds among them (the
        ones written to the store, for whoever holds them next; a memory-only device of another shard is only
        remembered here)."""
        shards = {self._table.shard(m.device.pubkey) for m in matches}
        for shard in shards:
            self._add((event_id, shard))
        return sorted(shard for shard in shards if self._table.holds(shard))

    def seed(self, pairs: Iterable[tuple[str, int]], shards: frozenset[int]) -> None:
        """A shard was taken: forget what this instance noted for `shards` itself, take what the store holds."""
        for pair in [pair for pair in self._pairs if pair[1] in shards]:
            del self._pairs[pair]
        for pair in pairs:
            self._add(pair)

    def _add(self, pair: tuple[str, int]) -> None:
        self._pairs[pair] = None
        self._pairs.move_to_end(pair)
        if len(self._pairs) > self._capacity:
            self._pairs.popitem(last=False)
