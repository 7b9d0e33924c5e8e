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

Whether a relay gets pubkey lists or whole kinds (the firehose) is its own `firehose.FirehoseChooser`'s choice,
from the size of its list plan and, while it is on the firehose, the rate of live events it sends, counted by its
connections and sampled every `rate_interval` seconds. Lists are cut to `max_connections_per_relay` connections;
the pubkeys the cut lanes held are not asked of that relay, and are counted (`uncovered`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from pushstr.config import NostrConfig
from pushstr.logutil import ident, shown_url
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import EventCallback, RelayConnection, RelayState, RelayStatus
from pushstr.relays.firehose import RATE_WINDOW_SECONDS, Choice, FirehoseChooser, FirehosePolicy, ListSizes, Reason
from pushstr.relays.limits import RelayLimits, fetch_limits
from pushstr.relays.planner import FIRST_LANE, Interest, Planner, RelayPlan, cap_lanes
from pushstr.relays.urls import normalize_relay_url

log = logging.getLogger(__name__)

PLAN_COST_FACTOR = 4.0
"""After a plan that took t seconds, the next one waits at least this many times t (planning ≤ 20% of the loop)."""
UPDATE_INTERVAL_SECONDS = 1.0
"""Default for `update_interval`: the shortest time between two plan updates sent to one relay."""
RATE_INTERVAL_SECONDS = 5.0
"""Default for `rate_interval`: how often the firehose events of every relay are counted into its rate."""
_STATE_ORDER = (RelayState.CLOSED, RelayState.BACKOFF, RelayState.CONNECTING, RelayState.CONNECTED)

LimitsSource = Callable[[str], Awaitable[RelayLimits]]


class _Plans:
    """The list plan and the firehose plan of one interest for one relay's limits, each made when first needed,
    and the list plan cut to the connection cap."""

    def __init__(
        self, planner: Planner, interest: Interest, limits: RelayLimits, own: Sequence[Mapping[str, Any]]
    ) -> None:
        self._planner = planner
        self._interest = interest
        self.limits = limits
        self._own = own
        self._lists: RelayPlan | None = None
        self._firehose: RelayPlan | None = None
        self._capped: tuple[int, RelayPlan, int] | None = None

    def lists(self) -> RelayPlan:
        if self._lists is None:
            self._lists = self._planner.plan(self._interest, self.limits, self._own)
        return self._lists

    def firehose(self) -> RelayPlan:
        if self._firehose is None:
            self._firehose = self._planner.plan(self._interest, self.limits, self._own, firehose=True)
        return self._firehose

    def capped(self, cap: int) -> tuple[RelayPlan, int]:
        """The lists on at most `cap` connections, and the pubkeys left out (`planner.cap_lanes`)."""
        if self._capped is None or self._capped[0] != cap:
            plan, uncovered = cap_lanes(self.lists(), cap)
            self._capped = (cap, plan, uncovered)
        return self._capped[1], self._capped[2]


@dataclass(frozen=True, slots=True)
class RelayMode:
    """Why a relay is asked for what it is asked for (`RelayPool.mode_for`)."""

    firehose: bool
    reason: Reason
    events_per_second: float | None
    """The smoothed rate of live firehose events, while the relay is on the firehose and one was measured."""
    uncovered_pubkeys: int
    """Pubkeys left out of the relay's lists by `max_connections_per_relay`."""
    switches: int


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
    own_plans: _Plans | None = None  # the plans of its own interest (see `planned_for`)
    chooser: FirehoseChooser | None = None  # lists or firehose, from its first plan on (see `RelayPool._choose`)
    reason: Reason | None = None  # why `plan` is in its mode
    uncovered: int = 0  # pubkeys the connection cap left out of `plan`
    switches: dict[Reason, int] = field(default_factory=dict)  # mode switches so far, by the reason of the new mode
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
    `limits` fixes every relay's limits instead of reading their NIP-11 documents. `rate_interval` is how often
    firehose events are counted into each relay's rate, `rate_window` that rate's time constant, `clock` the time
    the firehose choices are made by.
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
        rate_interval: float = RATE_INTERVAL_SECONDS,
        rate_window: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
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
        self._policy = FirehosePolicy.from_config(config)
        self._rate_interval = rate_interval
        self._rate_window = rate_window
        self._clock = clock
        self._rate_timer: asyncio.TimerHandle | None = None
        self._interest = Interest()
        self._pending: Interest | None = None
        self._plans: dict[tuple[RelayLimits, bytes], _Plans] = {}  # for the current interest
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

    def mode_for(self, url: str) -> RelayMode | None:
        """Whether the relay at `url` is on the firehose, why, and what was measured (None before its first plan)."""
        relay = self._relays.get(relay_key(url))
        if relay is None or relay.plan is None or relay.reason is None:
            return None
        return RelayMode(
            firehose=relay.plan.firehose,
            reason=relay.reason,
            events_per_second=relay.chooser.rate if relay.chooser is not None else None,
            uncovered_pubkeys=relay.uncovered,
            switches=sum(relay.switches.values()),
        )

    def status(self) -> list[RelayStatus]:
        """One status per relay, summed over its connections (its state is that of its least connected one)."""
        return [_merged(relay.url, [lane.status() for lane in relay.lanes.values()]) for relay in self._relays.values()]

    async def start(self) -> None:
        """Start every relay. Returns at once: limits are read and relays connect in the background."""
        self._started = True
        _METRICS.pools.add(self)
        if self._pending is not None:
            self._apply()
        for relay in self._relays.values():
            self._begin(relay)
        self._rate_timer = asyncio.get_running_loop().call_later(self._rate_interval, self._sample)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every connection, waiting at most about `timeout` seconds in total."""
        self._started = False
        _METRICS.pools.discard(self)
        for timer in (self._timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._rate_timer = None
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
            relay.planned_for = relay.own_plans = None
            plans = self._plans.get((limits, own_key))
            if plans is None:
                plans = self._plans[(limits, own_key)] = _Plans(self._planner, self._interest, limits, own)
        else:
            planned_for = (relay.interest, limits, own_key)
            if relay.planned_for != planned_for or relay.own_plans is None:
                relay.planned_for = planned_for
                relay.own_plans = _Plans(self._own_planner, relay.interest, limits, own)
            plans = relay.own_plans
        plan, choice, uncovered = self._choose(relay, plans)
        if plan is relay.plan and choice.reason is relay.reason:
            return  # the shared interest changed, not this relay's (or its mode did not after all)
        relay.next_update_at = asyncio.get_running_loop().time() + self._update_interval
        label = self.label(relay.url)
        if relay.plan is not None and relay.plan.firehose != plan.firehose:
            relay.switches[choice.reason] = relay.switches.get(choice.reason, 0) + 1
            rate = relay.chooser.meter.rate if relay.chooser is not None else None
            log.info(
                "relay %s: %s (%s; firehose rate %s)",
                label,
                "whole kinds, matched here" if plan.firehose else "pubkey lists again",
                choice.reason,
                "not measured" if rate is None else f"{rate:.0f} events/s",
            )
        if uncovered != relay.uncovered:
            log.warning(
                "relay %s: %d pubkeys not asked for, the lists needing more than %d connections",
                label,
                uncovered,
                self._policy.max_connections,
            )
        relay.plan, relay.reason, relay.uncovered = plan, choice.reason, uncovered
        self._assign(relay, plan)
        log.debug("relay %s: %d subscriptions over %d connections", label, plan.req_count, len(plan.lanes))

    def _choose(self, relay: _Relay, plans: _Plans) -> tuple[RelayPlan, Choice, int]:
        """The relay's plan, why it is in its mode, and the pubkeys the connection cap left out of it.

        `always` takes the firehose without planning the lists. Otherwise the relay's chooser decides from the
        lists' subscriptions on the lanes of the key space (beyond `firehose_above_subscriptions`, by default more
        than one connection holds, the kinds are the smaller ask: a big relay with many of our users) and their
        connections, and from the firehose's rate while the relay is on it (see `firehose`)."""
        policy = self._policy
        if relay.chooser is None:
            relay.chooser = FirehoseChooser(policy, self._clock, window=self._rate_window)
        if policy.mode == "always":
            return plans.firehose(), relay.chooser.choose(None), 0
        lists = plans.lists()
        threshold = policy.above_subscriptions or plans.limits.max_subscriptions
        listed = sum(lane.req_count for name, lane in lists.lanes.items() if name.startswith(FIRST_LANE))
        choice = relay.chooser.choose(ListSizes(listed, len(lists.lanes), threshold))
        if choice.firehose:
            return plans.firehose(), choice, 0
        plan, uncovered = plans.capped(policy.max_connections)
        return plan, choice, uncovered

    def _sample(self) -> None:
        """Count every relay's firehose events into its rate, and re-plan those whose mode would now change."""
        self._rate_timer = asyncio.get_running_loop().call_later(self._rate_interval, self._sample)
        for relay in list(self._relays.values()):
            events = sum(connection.take_firehose_events() for connection in relay.lanes.values())
            chooser = relay.chooser
            if chooser is None:
                continue
            chooser.observe(events)
            if chooser.due():
                self._schedule(relay)

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
            on_firehose_refused=lambda: self._firehose_refused(relay),
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

    def _firehose_refused(self, relay: _Relay) -> None:
        """The relay closed the firehose subscription: in `auto`, it is given the lists instead (for a while)."""
        if relay.chooser is not None and self._policy.mode == "auto":
            relay.chooser.refused()
            self._schedule(relay)

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


_FAMILIES: dict[str, tuple[type[CounterMetricFamily | GaugeMetricFamily], str, tuple[str, ...]]] = {
    "pushstr_relay_firehose": (
        GaugeMetricFamily,
        "1 while the relay is asked for whole kinds (matched here), 0 while for pubkey lists",
        ("relay",),
    ),
    "pushstr_relay_mode_reason": (
        GaugeMetricFamily,
        "1 for why the relay is in its mode (configured, fits, subscriptions, connections, rate, refused)",
        ("relay", "reason"),
    ),
    "pushstr_relay_mode_switches": (
        CounterMetricFamily,
        "Switches between pubkey lists and the firehose, by the reason of the new mode",
        ("relay", "reason"),
    ),
    "pushstr_relay_firehose_events_per_second": (
        GaugeMetricFamily,
        "Live events per second the relay's firehose sends (averaged over a minute), while it is on the firehose",
        ("relay",),
    ),
    "pushstr_relay_uncovered_pubkeys": (
        GaugeMetricFamily,
        "Pubkeys not asked of the relay: its lists need more than nostr.max_connections_per_relay connections",
        ("relay",),
    ),
}


class _PoolMetrics:
    """The Prometheus view of every started pool's relay modes, built when /metrics is scraped (like the
    connections' `_RelayMetrics`): a dropped relay's series disappear with it."""

    def __init__(self) -> None:
        self.pools: set[RelayPool] = set()

    def describe(self) -> Iterator[Metric]:
        return iter(_empty_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _empty_families()
        for pool in list(self.pools):
            for relay in list(pool._relays.values()):
                mode = pool.mode_for(relay.url)
                if mode is None:
                    continue
                label = pool.label(relay.url)
                families["pushstr_relay_firehose"].add_metric([label], 1 if mode.firehose else 0)
                families["pushstr_relay_mode_reason"].add_metric([label, mode.reason.value], 1)
                for reason, count in relay.switches.items():
                    families["pushstr_relay_mode_switches"].add_metric([label, reason.value], count)
                if mode.events_per_second is not None:
                    families["pushstr_relay_firehose_events_per_second"].add_metric([label], mode.events_per_second)
                families["pushstr_relay_uncovered_pubkeys"].add_metric([label], mode.uncovered_pubkeys)
        return iter(families.values())


def _empty_families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
    return {name: family(name, text, labels=labels) for name, (family, text, labels) in _FAMILIES.items()}


_METRICS = _PoolMetrics()
REGISTRY.register(_METRICS)
