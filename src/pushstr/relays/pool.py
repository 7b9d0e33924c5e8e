"""All outbound relays: one `RelayConnection` each, all following one shared subscription plan.

Registrations change in bursts (a dialect importing a list, a client re-registering every device), so
`set_interest` only records the newest interest and plans it on a later loop iteration: at most once per
`coalesce_seconds`, and less often when planning itself turns out to be expensive, so that a flood of changes
cannot starve the event loop. Each connection then sends its relay only the difference.

A relay may also be asked for filters of its own (`set_relay_filters`): a NIP-29 group exists on one relay
only, so asking every relay for it would be wasted subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pushstr.config import NostrConfig
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import EventCallback, RelayConnection, RelayStatus
from pushstr.relays.planner import EMPTY_PLAN, Interest, Plan, Planner

log = logging.getLogger(__name__)

PLAN_COST_FACTOR = 4.0
"""After a plan that took t seconds, the next one waits at least this many times t (planning ≤ 20% of the loop)."""


class RelayPool:
    """Connections to `urls`, started by `start()` and stopped by `close()`.

    Call `set_interest`, `add_relay` and `remove_relay` from the event loop's thread (sync code is fine).
    """

    def __init__(
        self,
        urls: Sequence[str],
        keys: Keys,
        on_event: EventCallback,
        config: NostrConfig,
        *,
        planner: Planner | None = None,
        coalesce_seconds: float = 0.1,
    ) -> None:
        self._keys = keys
        self._on_event = on_event
        self._config = config
        self._planner = planner or Planner(config.filter_chunk_size)
        self._coalesce_seconds = coalesce_seconds
        self._plan: Plan = EMPTY_PLAN
        self._pending: Interest | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_plan_at = 0.0
        self._started = False
        self._connections: dict[str, RelayConnection] = {}
        self._removing: set[asyncio.Task[None]] = set()
        self._own: dict[str, Plan] = {}
        for url in urls:
            self.add_relay(url)

    @property
    def plan(self) -> Plan:
        """The plan every relay follows (or is about to)."""
        return self._plan

    @property
    def urls(self) -> list[str]:
        return list(self._connections)

    @property
    def connected_count(self) -> int:
        return sum(connection.connected for connection in self._connections.values())

    def status(self) -> list[RelayStatus]:
        return [connection.status() for connection in self._connections.values()]

    async def start(self) -> None:
        """Start every connection. Returns at once: relays connect (and keep retrying) in the background."""
        self._started = True
        if self._pending is not None:
            self._apply()
        for connection in self._connections.values():
            connection.start()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every connection, waiting at most about `timeout` seconds in total."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connections = list(self._connections.values())
        self._connections.clear()
        waits = [connection.close(timeout) for connection in connections]
        await asyncio.gather(*waits)
        if self._removing:
            await asyncio.wait(self._removing, timeout=timeout)

    def set_interest(self, interest: Interest) -> None:
        """Make `interest` what relays are asked for, soon; calls in quick succession are planned once."""
        self._pending = interest
        if not self._started or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(max(loop.time(), self._next_plan_at), self._apply)

    def add_relay(self, url: str) -> None:
        """Connect to one more relay (no-op when already present); it is given the current plan."""
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("relay URL must start with ws:// or wss://")
        if url in self._connections:
            return
        connection = RelayConnection(url, self._keys, self._on_event, self._config, plan=self._plan_for(url))
        self._connections[url] = connection
        if self._started:
            connection.start()

    def set_relay_filters(self, url: str, filters: Sequence[Mapping[str, Any]]) -> None:
        """Ask the relay at `url` (only) for `filters` too, beside the shared plan; none: stop asking.

        Kept when the relay is not connected yet (or removed): `add_relay` gives it its filters.
        """
        if filters:
            self._own[url] = Plan(self._planner.plan_fixed(filters, prefix="r"))
        elif self._own.pop(url, None) is None:
            return
        connection = self._connections.get(url)
        if connection is not None:
            connection.set_plan(self._plan_for(url))

    def _plan_for(self, url: str) -> Plan:
        """The shared plan, plus the relay's own subscriptions when it has some."""
        own = self._own.get(url)
        if own is None:
            return self._plan
        return Plan({**self._plan.subscriptions, **own.subscriptions})

    def remove_relay(self, url: str) -> None:
        """Stop using a relay; its connection is closed in the background (and awaited by `close()`)."""
        connection = self._connections.pop(url, None)
        if connection is None or not self._started:
            return
        task = asyncio.get_running_loop().create_task(connection.close())
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)

    def _apply(self) -> None:
        self._timer = None
        interest, self._pending = self._pending, None
        if interest is None:
            return
        started = time.perf_counter()
        self._plan = self._planner.plan(interest)
        for url, connection in self._connections.items():
            connection.set_plan(self._plan_for(url))
        elapsed = time.perf_counter() - started
        self._next_plan_at = asyncio.get_running_loop().time() + max(self._coalesce_seconds, PLAN_COST_FACTOR * elapsed)
        log.debug(
            "planned %d subscriptions, %d filters in %.3fs", self._plan.req_count, self._plan.filter_count, elapsed
        )
