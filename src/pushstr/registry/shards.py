"""Which shard a pubkey is in, and which shards this instance holds now.

A pubkey's shard is its first 32 bits modulo the shard count: pubkeys are uniformly random, so shards are even,
and every instance computes the same answer without asking anyone. `owns` runs for every device a matched event
reaches, so it is a string slice, an int parse and a list index.
"""

from __future__ import annotations

from collections.abc import Iterable


def shard_of(pubkey: str, count: int) -> int:
    """The shard of a 64-hex pubkey; ValueError for anything else."""
    return int(pubkey[:8], 16) % count


class ShardTable:
    """The shards this instance holds; `generation` counts the changes (a reader can tell its view is stale)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one shard")
        self.count = count
        self.generation = 0
        self._owned = [False] * count

    def owns(self, pubkey: str) -> bool:
        """Whether this instance matches and delivers for `pubkey`; False for what is not a hex pubkey."""
        try:
            return self._owned[int(pubkey[:8], 16) % self.count]
        except ValueError:
            return False

    def holds(self, shard: int) -> bool:
        return self._owned[shard]

    def shard(self, pubkey: str) -> int:
        return shard_of(pubkey, self.count)

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(shard for shard, held in enumerate(self._owned) if held)

    def set_owned(self, shards: Iterable[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Hold exactly `shards` from now on; (gained, lost)."""
        wanted = frozenset(shards)
        if any(not 0 <= shard < self.count for shard in wanted):
            raise ValueError("shard out of range")
        before = self.owned
        gained, lost = wanted - before, before - wanted
        if gained or lost:
            self._owned = [shard in wanted for shard in range(self.count)]
            self.generation += 1
        return gained, lost
