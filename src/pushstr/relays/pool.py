"""All outbound relays, each planned within its own limits and followed by one or more connections.

Registrations change in bursts (a dialect importing a list, a client re-registering every device), so
`set_interest` only records the newest interest and plans it on a later loop iteration: at most once per
`coalesce_seconds`, and less often when planning itself turns out to be expensive, so that a flood of changes
cannot starve the event loop. A relay is then sent an update at most once per `update_interval` seconds: every
update re-sends the subscriptions it touches, each with its catch-up window, so a burst of registrations costs
one REQ per touched subscription per interval instead of one per registration.

Each relay is planned for its limits (`limits.RelayLimits`): those of its NIP-11 document, read once before the
first connect, or strfry's defaults. A plan that needs more subscriptions than one connection may hold is spread
over several connections (the planner's lanes). A relay that refuses a subscription for holding too many (a
CLOSED saying so, or strfry's bare NOTICE) is re-planned with the budget it showed it has, and the refused
subscriptions are re-sent within it: none is silently lost.

A relay may also be asked for filters of its own (`set_relay_filters`): a NIP-29 group exists on one relay
only, so asking every relay for it would be wasted subscriptions.

A relay users listed as their inbox (`relays.discovery`) gets an interest of its own (`set_relay_interest`): only
the pubkeys that named it, with only the kinds they need there, planned by the same planner within that relay's
limits. Such a relay is connected when first given an interest and dropped when it has none, unless it is also in
the shared set (configured, or added with `add_relay`), whose relays get the whole shared interest anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from pushstr.config import NostrConfig
from pushstr.logutil import ident, shown_url
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import EventCallback, RelayConnection, RelayState, RelayStatus
from pushstr.relays.limits import RelayLimits, fetch_limits
from pushstr.relays.planner import FIRST_LANE, Interest, Planner, RelayPlan
from pushstr.relays.urls import normalize_relay_url

log = logging.getLogger(__name__)

PLAN_COST_FACTOR = 4.0
"""After a plan that took t seconds, the next one waits at least this many times t (planning ≤ 20% of the loop)."""
UPDATE_INTERVAL_SECONDS = 1.0
"""Default for `update_interval`: the shortest time between two plan updates sent to one relay."""
_STATE_ORDER = (RelayState.CLOSED, RelayState.BACKOFF, RelayState.CONNECTING, RelayState.CONNECTED)

LimitsSource = Callable[[str], Awaitable[RelayLimits]]


@dataclass(eq=False)
class _Relay:
    """One relay: its limits, what it is asked for and the connections (lanes) that follow its plan, known by its
    normalised URL (`relay_key`)."""

    url: str  # what is connected to and shown: see `RelayPool._spelling`
    key: str
    shared: bool = True  # asked for the shared interest (configured, or added with `add_relay`)
    interest: Interest | None = None  # its own interest (see `set_relay_interest`); unused while `shared`
    planned_for: tuple[Interest, RelayLimits, bytes] | None = None  # what `plan` was made from, for an own interest
    limits: RelayLimits | None = None  # None until its NIP-11 document was read (or found missing)
    budget: int | None = None  # subscriptions per connection after refusals; None: what `limits` say
    lanes: dict[str, RelayConnection] = field(default_factory=dict)
    plan: RelayPlan | None = None
    timer: asyncio.TimerHandle | None = None
    next_update_at: float = 0.0
    lookup: asyncio.Task[None] | None = None

    def effective_limits(self) -> RelayLimits | None:
        if self.limits is None or self.budget is None:
            return self.limits
        return self.limits.with_subscriptions(self.budget)


class RelayPool:
    """Connections to `urls`, started by `start()` and stopped by `close()`.

    Call `set_interest`, `add_relay` and `remove_relay` from the event loop's thread (sync code is fine).
    `limits` fixes every relay's limits instead of reading their NIP-11 documents.
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
        update_interval: float = UPDATE_INTERVAL_SECONDS,
        limits: RelayLimits | None = None,
        limits_source: LimitsSource = fetch_limits,
    ) -> None:
        self._keys = keys
        self._on_event = on_event
        self._config = config
        self._planner = planner or Planner(config.filter_chunk_size)
        self._own_planner = Planner(self._planner.chunk_size)
        """Plans the small interests of single relays: the shared planner keeps the shared interest's sorted values
        between plans, and planning another interest with it would make it sort them all again."""
        self._coalesce_seconds = coalesce_seconds
        self._update_interval = update_interval
        self._fixed_limits = limits
        self._limits_source = limits_source
        self._interest = Interest()
        self._pending: Interest | None = None
        self._plans: dict[tuple[RelayLimits, bytes], RelayPlan] = {}  # for the current interest
        self._timer: asyncio.TimerHandle | None = None
        self._next_plan_at = 0.0
        self._started = False
        self._relays: dict[str, _Relay] = {}
        self._removing: set[asyncio.Task[None]] = set()
        self._own: dict[str, tuple[Mapping[str, Any], ...]] = {}
        self._configured = {relay_key(url): url for url in urls}
        """The operator's relays, named in metrics; relays users listed are named by a digest (their choice of
        relay is theirs to know)."""
        for url in urls:
            self.add_relay(url)

    @property
    def urls(self) -> list[str]:
        return [relay.url for relay in self._relays.values()]

    def watches(self, url: str) -> bool:
        """Whether the relay at `url`, however it is spelled, is in the pool."""
        return relay_key(url) in self._relays

    @property
    def connected_count(self) -> int:
        """Relays whose every connection is up."""
        return sum(status.state is RelayState.CONNECTED for status in self.status())

    def plan_for(self, url: str) -> RelayPlan | None:
        """What the relay at `url` is being sent (None before its limits are known)."""
        relay = self._relays.get(relay_key(url))
        return None if relay is None else relay.plan

    def limits_for(self, url: str) -> RelayLimits | None:
        """The limits the relay at `url` is planned for, after any refusals shrank its budget."""
        relay = self._relays.get(relay_key(url))
        return None if relay is None else relay.effective_limits()

    def status(self) -> list[RelayStatus]:
        """One status per relay, summed over its connections (its state is that of its least connected one)."""
        return [_merged(relay.url, [lane.status() for lane in relay.lanes.values()]) for relay in self._relays.values()]

    async def start(self) -> None:
        """Start every relay. Returns at once: limits are read and relays connect in the background."""
        self._started = True
        if self._pending is not None:
            self._apply()
        for relay in self._relays.values():
            self._begin(relay)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every connection, waiting at most about `timeout` seconds in total."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        relays = list(self._relays.values())
        self._relays.clear()
        waits = [self._stop(relay, timeout) for relay in relays]
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
        """Ask one more relay for the shared interest (no-op when it already is): its limits are read, then it is
        given its plan."""
        _check_scheme(url)
        key = relay_key(url)
        relay = self._relays.get(key)
        if relay is None:
            self._add(_Relay(self._spelling(url, key), key))
        elif not relay.shared:
            relay.shared = True
            self._schedule(relay)

    def set_relay_interest(self, url: str, interest: Interest | None) -> None:
        """Ask the relay at `url` for `interest` only (connecting to it if needed); None: stop, and drop the relay
        unless it is in the shared set. A relay in the shared set keeps getting the shared interest meanwhile."""
        key = relay_key(url)
        relay = self._relays.get(key)
        if interest is None:
            if relay is None or relay.interest is None:
                return
            relay.interest = None
            if relay.shared:
                return
            self._drop(key)
            return
        _check_scheme(url)
        if relay is None:
            self._add(_Relay(self._spelling(url, key), key, shared=False, interest=interest))
            return
        relay.interest = interest
        if not relay.shared:
            self._schedule(relay)

    def _spelling(self, url: str, key: str) -> str:
        """The URL a relay is connected by: as configured for an operator's relay (it may carry credentials), else
        as it was first named, unless its scheme is not in lowercase."""
        return self._configured.get(key) or (url if url.startswith(("ws://", "wss://")) else key)

    def _add(self, relay: _Relay) -> None:
        self._relays[relay.key] = relay
        if self._started:
            self._begin(relay)

    def set_relay_filters(self, url: str, filters: Sequence[Mapping[str, Any]]) -> None:
        """Ask the relay at `url` (only) for `filters` too, beside the shared plan; none: stop asking.

        Kept when the relay is not connected yet (or removed): `add_relay` gives it its filters.
        """
        key = relay_key(url)
        if filters:
            self._own[key] = tuple(dict(filter_) for filter_ in filters)
        elif self._own.pop(key, None) is None:
            return
        relay = self._relays.get(key)
        if relay is not None:
            self._schedule(relay)

    def remove_relay(self, url: str) -> None:
        """Stop asking a relay for the shared interest: it is then dropped (its connections closed in the
        background, awaited by `close()`), or asked for its own interest only when it has one."""
        relay = self._relays.get(relay_key(url))
        if relay is None or not relay.shared:
            return
        if relay.interest is not None:
            relay.shared = False
            self._schedule(relay)
            return
        self._drop(relay.key)

    def _drop(self, key: str) -> None:
        relay = self._relays.pop(key, None)
        if relay is None or not self._started:
            return
        task = asyncio.get_running_loop().create_task(self._stop(relay))
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)

    # -- planning ---------------------------------------------------------------------------------------------

    def _apply(self) -> None:
        self._timer = None
        interest, self._pending = self._pending, None
        if interest is None:
            return
        started = time.perf_counter()
        self._interest = interest
        self._plans.clear()
        for relay in self._relays.values():
            self._schedule(relay)
        elapsed = time.perf_counter() - started
        self._next_plan_at = asyncio.get_running_loop().time() + max(self._coalesce_seconds, PLAN_COST_FACTOR * elapsed)

    def _begin(self, relay: _Relay) -> None:
        """Find the relay's limits (once), then plan it."""
        if self._fixed_limits is not None:
            relay.limits = self._fixed_limits
            self._schedule(relay)
        elif relay.limits is None and relay.lookup is None:
            relay.lookup = asyncio.get_running_loop().create_task(self._look_up(relay), name=f"nip11 {relay.url}")

    async def _look_up(self, relay: _Relay) -> None:
        limits = await self._limits_source(relay.url)
        log.info(
            "relay %s: %d subscriptions, %d-byte frames, %d filters per REQ (%s)",
            relay.url,
            limits.max_subscriptions,
            limits.max_message_length,
            limits.max_filters,
            limits.source,
        )
        relay.limits = limits
        relay.lookup = None
        if self._relays.get(relay.key) is relay and self._started:
            self._schedule(relay)

    def _schedule(self, relay: _Relay) -> None:
        """Update the relay now, or when its update interval has passed (once, however often this is called)."""
        if relay.timer is not None or relay.limits is None or not self._started:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= relay.next_update_at:
            self._update(relay)
        else:
            relay.timer = loop.call_at(relay.next_update_at, self._update, relay)

    def _update(self, relay: _Relay) -> None:
        relay.timer = None
        limits = relay.effective_limits()
        if limits is None or self._relays.get(relay.key) is not relay:
            return
        own = self._own.get(relay.key, ())
        own_key = orjson.dumps(own)
        if relay.shared or relay.interest is None:
            relay.planned_for = None
            plan = self._plans.get((limits, own_key))
            if plan is None:
                plan = self._choose(self._planner, self._interest, limits, own)
                self._plans[(limits, own_key)] = plan
        else:
            planned_for = (relay.interest, limits, own_key)
            if relay.planned_for == planned_for:
                return  # the shared interest changed, not this relay's
            relay.planned_for = planned_for
            plan = self._choose(self._own_planner, relay.interest, limits, own)
        relay.next_update_at = asyncio.get_running_loop().time() + self._update_interval
        if relay.plan is not None and relay.plan.firehose != plan.firehose:
            log.info(
                "relay %s: %s",
                self.label(relay.url),
                "whole kinds, matched here" if plan.firehose else "pubkey lists again",
            )
        relay.plan = plan
        self._assign(relay, plan)
        log.debug("relay %s: %d subscriptions over %d connections", relay.url, plan.req_count, len(plan.lanes))

    def _choose(
        self, planner: Planner, interest: Interest, limits: RelayLimits, own: Sequence[Mapping[str, Any]]
    ) -> RelayPlan:
        """The pubkey-list plan, or the firehose one (`NostrConfig.firehose`): in `auto`, where the lists need more
        subscriptions than `firehose_above_subscriptions` (by default, more than one connection holds) — a big
        relay with many of our users, where the kinds are the smaller ask and one connection is enough."""
        mode = self._config.firehose
        if mode == "always":
            return planner.plan(interest, limits, own, firehose=True)
        plan = planner.plan(interest, limits, own)
        if mode == "off":
            return plan
        threshold = self._config.firehose_above_subscriptions or limits.max_subscriptions
        listed = sum(lane.req_count for name, lane in plan.lanes.items() if name.startswith(FIRST_LANE))
        return planner.plan(interest, limits, own, firehose=True) if listed > threshold else plan

    def _assign(self, relay: _Relay, plan: RelayPlan) -> None:
        """Give every lane of `plan` a connection. A lane that replaces a split or merged one takes over its
        connection (whose relay then needs only the difference); connections left without a lane are closed."""
        old = relay.lanes
        lanes: dict[str, RelayConnection] = {}
        for name in plan.lanes:
            if name in old:
                lanes[name] = old.pop(name)
        for name, lane_plan in plan.lanes.items():
            connection = lanes.get(name)
            if connection is None:
                related = next((other for other in old if _related(name, other)), None)
                connection = old.pop(related) if related is not None else self._connect(relay)
                lanes[name] = connection
            connection.set_plan(lane_plan)
        relay.lanes = lanes
        for connection in old.values():
            self._close_later(connection)

    def label(self, url: str) -> str:
        """How a relay is named in metrics and status pages: a configured relay by its URL without user info or
        query, any other (one a user listed) by a digest."""
        key = relay_key(url)
        configured = self._configured.get(key)
        return shown_url(configured) if configured is not None else f"user-{ident(key, 12)}"

    def _connect(self, relay: _Relay) -> RelayConnection:
        connection = RelayConnection(
            relay.url,
            self._keys,
            self._on_event,
            self._config,
            on_refused=lambda held: self._refused(relay, held),
            label=self.label(relay.url),
        )
        connection.start()
        return connection

    def _refused(self, relay: _Relay, held: int) -> None:
        """A connection of `relay` was refused a subscription while holding about `held`: plan it within that
        (never below one per connection), at its next update."""
        limits = relay.effective_limits()
        if limits is None:
            return
        budget = max(1, min(held, limits.max_subscriptions - 1))
        if budget < limits.max_subscriptions:
            relay.budget = budget
            log.warning("relay %s refuses subscriptions: planning %d per connection", relay.url, budget)
            self._schedule(relay)
        # At one per connection there is nothing smaller to plan: the refused ones are re-sent with the next plan.

    def _close_later(self, connection: RelayConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.close())
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)

    async def _stop(self, relay: _Relay, timeout: float = 5.0) -> None:
        if relay.timer is not None:
            relay.timer.cancel()
            relay.timer = None
        if relay.lookup is not None:
            relay.lookup.cancel()
            relay.lookup = None
        lanes, relay.lanes = list(relay.lanes.values()), {}
        await asyncio.gather(*(connection.close(timeout) for connection in lanes))


def relay_key(url: str) -> str:
    """What the pool knows a relay by: its normalised URL (one relay, one entry, however it is spelled), or the URL
    as given when it has no plain form (an operator's relay with user info or a query)."""
    return normalize_relay_url(url) or url


def _check_scheme(url: str) -> None:
    if not url.lower().startswith(("ws://", "wss://")):
        raise ValueError("relay URL must start with ws:// or wss://")


def _related(lane: str, other: str) -> bool:
    """Lanes that share keys: one is the other's half (after a split), or its whole (after a merge)."""
    return lane.startswith(other) or other.startswith(lane) if lane.startswith(FIRST_LANE) else False


def _merged(url: str, statuses: list[RelayStatus]) -> RelayStatus:
    """One relay's status over its connections: counters summed, the least connected state, any last error."""
    values: dict[str, Any] = {}
    for item in fields(RelayStatus):
        column = [getattr(status, item.name) for status in statuses]
        if item.name == "url":
            values["url"] = url
        elif item.name == "state":  # no connection yet: its limits are being read
            values["state"] = min(column, key=_STATE_ORDER.index, default=RelayState.CONNECTING)
        elif item.name == "authenticated":
            values["authenticated"] = bool(column) and all(column)
        elif item.name == "last_error":
            values["last_error"] = next((error for error in column if error is not None), None)
        else:
            values[item.name] = sum(column)
    return RelayStatus(**values)
