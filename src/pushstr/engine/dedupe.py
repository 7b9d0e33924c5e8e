"""Which event ids have been seen, in memory and bounded.

Relays are the log: after a restart pushstr re-reads a since-window from its relays, so the ids of events it
already handled are kept by the outbox's commits (`delivery.outbox`) and seeded back into `SeenIds` at start.
Only handled ids are kept: the stream of events that matched nobody is far larger and harmless to re-read.

While running, only ids whose event passed the id and signature checks are added (`Admission.verify`): an id
here makes later copies duplicates unread, so an unverified, possibly forged copy must never put it here. Relay
events that reach nobody are never verified, so they are not remembered either; their repeats are cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class SeenIds:
    """A bounded insertion-ordered set: the oldest ids fall out first when it is full."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False when it was already there."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def clear(self) -> None:
        """Forget every id: the relays' window is read again (an instance took a shard over; see
        `engine.handled`, which keeps that from pushing anything twice)."""
        self._ids.clear()

    def update(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self.add(event_id)
