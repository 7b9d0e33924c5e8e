"""Whether one relay is asked for pubkey lists or for whole kinds (the firehose), and why.

The lists cost subscriptions: a REQ per few thousand pubkeys, and a connection per `max_subscriptions` REQs. The
firehose costs events: every event of the kinds on the relay, most of them for nobody, each parsed and matched
here. Which is cheaper depends on the relay, so in `nostr.firehose = "auto"` each relay has its own
`FirehoseChooser`, fed two figures:

- the size of its list plan: subscriptions beyond `firehose_above_subscriptions` (by default one connection's
  worth) make the firehose the smaller ask; connections beyond `max_connections_per_relay` make it the only way
  to cover every pubkey, whatever it costs;
- the rate of live firehose events the relay sends while it is asked for the kinds (`RateMeter`, an exponentially
  weighted average over about a minute): above `firehose_max_events_per_second` the relay is too busy to be
  taken whole, and goes back to the lists if they fit within the connection cap. The lists are kept for
  `firehose_retry_seconds` before the firehose is tried again (twice that after a second such fallback in a row,
  and so on, up to `MAX_RETRY_FACTOR` times), since its rate cannot be seen while the lists are in use.

A relay that closes the firehose subscription for good (some refuse filters without authors or tags) goes back
to the lists at once, for `firehose_retry_seconds`.

Every switch is held for `firehose_hold_seconds` before another may follow, so a plan hovering around the
threshold or a rate around the limit cannot make a relay flap. Two switches are not held: to the firehose when
the lists need more connections than the cap (the lists would leave pubkeys uncovered), and to the lists when the
firehose was refused (it delivers nothing). The chooser does no I/O and reads time only from its `clock`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pushstr.config import NostrConfig

RATE_WINDOW_SECONDS = 60.0
"""The time constant of the firehose rate's moving average: a burst of seconds barely moves it."""
MAX_RETRY_FACTOR = 24
"""After repeated fallbacks for the rate, the firehose is retried at most this many retry periods apart."""


class Reason(StrEnum):
    """Why a relay is in its mode (`GET /relays` `mode_reason`, the `reason` label of the mode metrics)."""

    CONFIGURED = "configured"
    """`nostr.firehose` is `off` or `always`."""
    FITS = "fits"
    """The lists need no more subscriptions than `firehose_above_subscriptions`."""
    SUBSCRIPTIONS = "subscriptions"
    """The lists need more subscriptions than that: the kinds are the smaller ask."""
    CONNECTIONS = "connections"
    """The lists need more connections than `max_connections_per_relay`: only the kinds cover every pubkey."""
    RATE = "rate"
    """The firehose brought more than `firehose_max_events_per_second`: the lists, though over the threshold."""
    REFUSED = "refused"
    """The relay closed the firehose subscription: the lists."""


@dataclass(frozen=True, slots=True)
class Choice:
    firehose: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class FirehosePolicy:
    """The settings every relay's chooser follows (`NostrConfig`)."""

    mode: Literal["auto", "off", "always"] = "auto"
    above_subscriptions: int | None = None
    max_events_per_second: float = 2000.0
    max_connections: int = 8
    hold_seconds: float = 300.0
    retry_seconds: float = 3600.0

    @classmethod
    def from_config(cls, config: NostrConfig) -> FirehosePolicy:
        return cls(
            mode=config.firehose,
            above_subscriptions=config.firehose_above_subscriptions,
            max_events_per_second=config.firehose_max_events_per_second,
            max_connections=config.max_connections_per_relay,
            hold_seconds=config.firehose_hold_seconds,
            retry_seconds=config.firehose_retry_seconds,
        )


class RateMeter:
    """Events per second from counts added at irregular times, smoothed with time constant `window`.

    Each addition moves the average towards the rate since the previous one by `1 - e^(-dt/window)`, so the
    weights follow time, not the number of samples. The first addition after `reset` sets the rate outright; the
    rate counts as `warm` once a whole `window` has been seen.
    """

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self._window = window
        self._started: float | None = None
        self._last = 0.0
        self.rate: float | None = None

    def reset(self, now: float) -> None:
        self._started = self._last = now
        self.rate = None

    def add(self, count: int, now: float) -> None:
        if self._started is None:
            self.reset(now)
            return
        elapsed = now - self._last
        if elapsed <= 0:
            return  # counted at the next addition, over its whole interval
        self._last = now
        current = count / elapsed
        if self.rate is None:
            self.rate = current
        else:
            self.rate += (1.0 - math.exp(-elapsed / self._window)) * (current - self.rate)

    def warm(self, now: float) -> bool:
        return self._started is not None and self.rate is not None and now - self._started >= self._window


@dataclass(frozen=True, slots=True)
class ListSizes:
    """What one relay's pubkey lists would take."""

    listed: int
    """Their subscriptions on the lanes of the key space (fixed filters' own lanes aside)."""
    lanes: int
    """The connections they need."""
    threshold: int
    """The subscriptions beyond which the firehose is the smaller ask."""


class FirehoseChooser:
    """The mode of one relay: `choose` it from the list plan's size when planning, `observe` the firehose's live
    events as they come, and re-plan when `due` says the choice would now change. Outside `auto` the choice is the
    configured one, and the rate is still measured while the relay is on the firehose."""

    def __init__(
        self,
        policy: FirehosePolicy,
        clock: Callable[[], float],
        *,
        window: float = RATE_WINDOW_SECONDS,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self.meter = RateMeter(window)
        self.current: Choice | None = None
        self.switched_at = -math.inf
        self._sizes: ListSizes | None = None
        self._retry_at = -math.inf  # lists after a rate fallback until then
        self._fallbacks = 0  # rate fallbacks in a row: each doubles the wait before the next try
        self._refused_until = -math.inf

    def choose(self, sizes: ListSizes | None) -> Choice:
        """The mode for lists of `sizes` (None: not planned, which only `always` may leave them); the sizes are
        remembered, so that `due` can tell when time alone would change the choice."""
        if sizes is None and self._policy.mode == "auto":
            raise ValueError("auto chooses from the lists' sizes")
        self._sizes = sizes
        now = self._clock()
        wanted = self._wanted(sizes, now)
        current = self.current
        if current is not None and wanted.firehose != current.firehose and self._held(wanted, now):
            return current
        if current is None or wanted.firehose != current.firehose:
            self._switch(wanted, now)
        self.current = wanted
        return wanted

    def observe(self, events: int) -> None:
        """`events` live firehose events arrived since the last call (ignored while on the lists)."""
        now = self._clock()
        if self.current is None or not self.current.firehose:
            return
        self.meter.add(events, now)
        rate = self.meter.rate
        settled = self.meter.warm(now) and now - self.switched_at >= self._policy.hold_seconds
        if settled and rate is not None and rate <= self._policy.max_events_per_second:
            self._fallbacks = 0  # the firehose held its own: a later fallback waits the base time again

    def refused(self) -> None:
        """The relay closed the firehose subscription: the lists, now and for `retry_seconds`."""
        self._refused_until = self._clock() + self._policy.retry_seconds

    def due(self) -> bool:
        """Whether the choice made from the last plan would change now (its hold, a retry or the rate)."""
        if self.current is None:
            return False
        now = self._clock()
        wanted = self._wanted(self._sizes, now)
        return wanted != self.current and (wanted.firehose == self.current.firehose or not self._held(wanted, now))

    @property
    def rate(self) -> float | None:
        """The smoothed rate of the firehose's live events, while the relay is on it (None otherwise)."""
        return self.meter.rate if self.current is not None and self.current.firehose else None

    def _wanted(self, sizes: ListSizes | None, now: float) -> Choice:
        policy = self._policy
        if policy.mode != "auto" or sizes is None:
            return Choice(policy.mode == "always", Reason.CONFIGURED)
        if now < self._refused_until:
            return Choice(False, Reason.REFUSED)
        if sizes.lanes > policy.max_connections:
            return Choice(True, Reason.CONNECTIONS)
        if sizes.listed <= sizes.threshold:
            return Choice(False, Reason.FITS)
        current = self.current
        if current is not None and current.firehose:
            rate = self.meter.rate
            if self.meter.warm(now) and rate is not None and rate > policy.max_events_per_second:
                return Choice(False, Reason.RATE)
        elif current is not None and current.reason is Reason.RATE and now < self._retry_at:
            return Choice(False, Reason.RATE)
        return Choice(True, Reason.SUBSCRIPTIONS)

    def _held(self, wanted: Choice, now: float) -> bool:
        """A switch to `wanted` must wait for the hold after the last one (unless coverage needs it now)."""
        if wanted.reason in (Reason.CONNECTIONS, Reason.REFUSED):
            return False
        return now - self.switched_at < self._policy.hold_seconds

    def _switch(self, wanted: Choice, now: float) -> None:
        if self.current is not None:
            self.switched_at = now
        if wanted.firehose:
            self.meter.reset(now)
        if wanted.reason is Reason.RATE:
            self._retry_at = now + self._policy.retry_seconds * min(2**self._fallbacks, MAX_RETRY_FACTOR)
            self._fallbacks += 1
