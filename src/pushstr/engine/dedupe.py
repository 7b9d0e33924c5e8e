"""Which event ids have been seen (in memory, bounded) and which were pushed (persisted in batches).

Relays are the log: after a restart pushstr re-reads a since-window from its relays, so the ids it already pushed
must survive the restart or the same DM would wake the phone twice. Only pushed ids are persisted — the stream
of events that matched nobody is far larger and harmless to re-read.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from prometheus_client import Counter

log = logging.getLogger(__name__)

PERSIST_FAILURES = Counter("pushstr_dedupe_persist_failures_total", "Failed writes of pushed event ids")


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

    def update(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self.add(event_id)


PersistFn = Callable[[Sequence[tuple[str, int]]], Awaitable[None]]


class PushedLog:
    """Buffers ids of pushed events and writes them to the store in batches (`flush`)."""

    def __init__(self, persist: PersistFn, max_pending: int = 100_000) -> None:
        self._persist = persist
        self._pending: list[tuple[str, int]] = []
        self._max_pending = max_pending

    def record(self, event_id: str) -> None:
        if len(self._pending) < self._max_pending:
            self._pending.append((event_id, int(time.time())))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write what is pending; on failure keep it for the next flush (bounded) and count the failure."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self._persist(batch)
        except Exception:
            PERSIST_FAILURES.inc()
            log.warning("could not persist %d pushed event ids; will retry", len(batch), exc_info=True)
            self._pending = (batch + self._pending)[: self._max_pending]
