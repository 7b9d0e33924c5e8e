"""Registry changes made through other instances, brought into this one within a second.

Every write of a registration or preference appends the pubkey to `registry_changes` in its own transaction and
notifies a PostgreSQL channel (`SqlStore.enable_change_log`). The feed listens on that channel and, woken or every
`poll_seconds` anyway (a notification lost with a dropped connection heals at the next poll), reads the rows
after its cursor and has each changed pubkey re-read from the store. Re-reading rather than shipping the change
makes the feed idempotent: this instance's own changes come back too and change nothing, and two changes of one
pubkey cost one read.

Sequence numbers are handed out when a transaction inserts, but become visible when it commits, so a later
number can be seen before an earlier one. The cursor therefore keeps a floor (everything at or below it was read)
and the numbers read above it; a gap is waited for `GAP_SECONDS` (a transaction still committing) and then passed
(a rolled-back insert leaves a number that never appears).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pushstr.logutil import RateLimitedLog
from pushstr.store.cluster import ClusterTables
from pushstr.store.sql import CHANGES_CHANNEL

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log)

GAP_SECONDS = 10.0
BATCH = 5000

APPLIED = Counter("pushstr_cluster_registry_changes_total", "Pubkeys re-read after a registry change")
FEED_FAILURES = Counter("pushstr_cluster_feed_failures_total", "Reads of the registry change log that failed")

Apply = Callable[[Sequence[str]], Awaitable[None]]


class Cursor:
    """How far the change log has been read; see the module docstring."""

    def __init__(self, floor: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = floor
        self._read: set[int] = set()
        self._gaps: dict[int, float] = {}
        self._clock = clock

    def fresh(self, rows: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        """The rows not read yet."""
        return [(seq, pubkey) for seq, pubkey in rows if seq > self.floor and seq not in self._read]

    def advance(self, seqs: Sequence[int]) -> None:
        """Note `seqs` as read and move the floor over what is read or given up."""
        self._read.update(seqs)
        top = max(self._read, default=self.floor)
        now = self._clock()
        while self.floor < top:
            following = self.floor + 1
            if following in self._read:
                self._read.discard(following)
            elif now - self._gaps.setdefault(following, now) < GAP_SECONDS:
                return
            else:
                self._gaps.pop(following, None)
            self.floor = following
        self._gaps.clear()


class ChangeFeed:
    """Reads `registry_changes` after a cursor and hands the changed pubkeys to `apply`."""

    def __init__(self, tables: ClusterTables, engine: AsyncEngine, poll_seconds: float, apply: Apply) -> None:
        self._tables = tables
        self._engine = engine
        self._poll = poll_seconds
        self._apply = apply
        self._wake = asyncio.Event()
        self._cursor: Cursor | None = None
        self._listening: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def mark(self) -> None:
        """Start the cursor at the newest change: call before the registry loads, so no change falls between."""
        self._cursor = Cursor(await self._tables.last_change())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unlisten()

    async def catch_up(self) -> int:
        """Read and apply every change after the cursor; how many pubkeys were re-read."""
        if self._cursor is None:
            await self.mark()
        assert self._cursor is not None
        total = 0
        while True:
            rows = self._cursor.fresh(await self._tables.changes_after(self._cursor.floor, BATCH))
            if not rows:
                self._cursor.advance(())
                return total
            pubkeys = list(dict.fromkeys(pubkey for _, pubkey in rows))
            await self._apply(pubkeys)
            APPLIED.inc(len(pubkeys))
            total += len(pubkeys)
            self._cursor.advance([seq for seq, _ in rows])

    async def _run(self) -> None:
        while True:
            if self._listening is None:
                await self._listen()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception as exc:
                FEED_FAILURES.inc()
                _quiet.warning("feed", "cluster: reading registry changes failed (%s)", type(exc).__name__)
                await self._unlisten()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own (asyncpg's listener); polling covers the time without one."""
        try:
            conn = await self._engine.connect()
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(CHANGES_CHANNEL, self._notified)
            self._listening = conn
        except Exception as exc:
            _quiet.warning("listen", "cluster: cannot listen for registry changes (%s); polling", type(exc).__name__)

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def _unlisten(self) -> None:
        conn, self._listening = self._listening, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()
