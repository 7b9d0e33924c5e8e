"""The per-relay choice between pubkey lists and the firehose, on an injected clock (no sockets, no sleeps)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pushstr.relays.firehose import Choice, FirehoseChooser, FirehosePolicy, ListSizes, RateMeter, Reason

HOLD, RETRY, WINDOW, LIMIT = 300.0, 3600.0, 60.0, 1000.0
FITS = ListSizes(listed=10, lanes=1, threshold=20)
OVER = ListSizes(listed=30, lanes=2, threshold=20)  # more subscriptions than the threshold, within the cap
TOO_MANY = ListSizes(listed=200, lanes=10, threshold=20)  # more connections than the cap of 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chooser(clock: Clock, **policy: Any) -> FirehoseChooser:
    settings: dict[str, Any] = {
        "max_events_per_second": LIMIT,
        "max_connections": 8,
        "hold_seconds": HOLD,
        "retry_seconds": RETRY,
        **policy,
    }
    return FirehoseChooser(FirehosePolicy(**settings), clock, window=WINDOW)


def feed(chooser: FirehoseChooser, clock: Clock, rate: float, seconds: float, step: float = 5.0) -> None:
    """The relay's firehose sends `rate` events/s for `seconds`, counted every `step` seconds."""
    for _ in range(round(seconds / step)):
        clock.now += step
        chooser.observe(round(rate * step))


def test_the_rate_meter_averages_over_time_not_samples() -> None:
    meter = RateMeter(window=60)
    meter.reset(0.0)
    assert meter.rate is None and not meter.warm(0.0)
    meter.add(500, 1.0)  # the first interval sets the rate outright
    assert meter.rate == 500
    now = 1.0
    for _ in range(120):  # two minutes at 100/s, sampled every second
        now += 1.0
        meter.add(100, now)
    assert meter.rate == pytest.approx(100 + 400 * math.exp(-120 / 60), rel=1e-9)
    assert meter.warm(now)
    # one sample of 120 s weighs what 120 samples of 1 s do
    other = RateMeter(window=60)
    other.reset(0.0)
    other.add(500, 1.0)
    other.add(100 * 120, 121.0)
    assert other.rate == pytest.approx(meter.rate, rel=1e-9)


def test_lists_that_fit_stay_lists_and_larger_ones_take_the_firehose() -> None:
    clock = Clock()
    relay = chooser(clock)
    assert relay.choose(FITS) == Choice(False, Reason.FITS)
    assert relay.rate is None
    assert relay.choose(OVER) == Choice(True, Reason.SUBSCRIPTIONS)  # the first switch is not held
    feed(relay, clock, 200, 120)
    assert relay.rate == pytest.approx(200)
    assert not relay.due()  # a rate under the limit changes nothing


def test_a_busy_firehose_goes_back_to_the_lists_after_the_hold_and_is_retried_later() -> None:
    clock = Clock()
    relay = chooser(clock)
    assert relay.choose(OVER).firehose
    feed(relay, clock, 5000, HOLD - 10)
    assert relay.rate is not None and relay.rate > LIMIT
    assert relay.due()  # the first choice was no switch: nothing to hold
    assert relay.choose(OVER) == Choice(False, Reason.RATE)
    assert relay.rate is None

    clock.now += RETRY - 1
    assert not relay.due() and relay.choose(OVER) == Choice(False, Reason.RATE)
    clock.now += 1
    assert relay.due()
    assert relay.choose(OVER) == Choice(True, Reason.SUBSCRIPTIONS)  # tried again, with a fresh rate
    assert relay.rate is None

    feed(relay, clock, 5000, WINDOW)  # warm, but within the hold after that switch
    assert not relay.due()
    feed(relay, clock, 5000, HOLD - WINDOW)
    assert relay.due() and relay.choose(OVER) == Choice(False, Reason.RATE)
    clock.now += RETRY  # a second fallback in a row waits twice as long
    assert not relay.due()
    clock.now += RETRY
    assert relay.due() and relay.choose(OVER).firehose


def test_a_quiet_firehose_resets_the_retry_backoff() -> None:
    clock = Clock()
    relay = chooser(clock)
    relay.choose(OVER)
    feed(relay, clock, 5000, HOLD)
    relay.choose(OVER)  # rate: lists
    clock.now += RETRY
    assert relay.choose(OVER).firehose
    feed(relay, clock, 100, HOLD)  # the relay calmed down: the firehose held its own
    feed(relay, clock, 20_000, HOLD)
    assert relay.choose(OVER) == Choice(False, Reason.RATE)
    clock.now += RETRY  # one period again, not two
    assert relay.due()


def test_every_switch_is_held_so_a_plan_at_the_threshold_does_not_flap() -> None:
    clock = Clock()
    relay = chooser(clock)
    assert not relay.choose(FITS).firehose
    assert relay.choose(OVER).firehose
    clock.now += 1
    assert relay.choose(FITS) == Choice(True, Reason.SUBSCRIPTIONS)  # held: the previous choice stands
    assert not relay.due()
    clock.now += HOLD
    assert relay.due()  # the hold is over: the pool re-plans
    assert relay.choose(FITS) == Choice(False, Reason.FITS)
    clock.now += 1
    assert relay.choose(OVER) == Choice(False, Reason.FITS)  # held the other way too


def test_lists_over_the_connection_cap_take_the_firehose_at_once_whatever_its_rate() -> None:
    clock = Clock()
    relay = chooser(clock)
    relay.choose(OVER)
    feed(relay, clock, 5000, HOLD)
    assert relay.choose(OVER) == Choice(False, Reason.RATE)
    clock.now += 1  # within the hold and before the retry: coverage comes first
    assert relay.choose(TOO_MANY) == Choice(True, Reason.CONNECTIONS)
    feed(relay, clock, 5000, 2 * HOLD)
    assert not relay.due()
    assert relay.choose(TOO_MANY) == Choice(True, Reason.CONNECTIONS)


def test_a_refused_firehose_gives_the_lists_at_once_for_the_retry_period() -> None:
    clock = Clock()
    relay = chooser(clock)
    assert relay.choose(TOO_MANY).firehose
    relay.refused()
    assert relay.due()
    assert relay.choose(TOO_MANY) == Choice(False, Reason.REFUSED)  # cut to the cap: better than nothing
    clock.now += RETRY
    assert relay.due() and relay.choose(TOO_MANY) == Choice(True, Reason.CONNECTIONS)


def test_configured_modes_are_kept_and_always_still_measures_the_rate() -> None:
    clock, other = Clock(), Clock()
    off, always = chooser(clock, mode="off"), chooser(other, mode="always")
    assert off.choose(TOO_MANY) == Choice(False, Reason.CONFIGURED)
    assert always.choose(None) == Choice(True, Reason.CONFIGURED)
    feed(off, clock, 5000, HOLD)
    feed(always, other, 5000, HOLD)
    assert not off.due() and not always.due()
    assert off.rate is None and always.rate == pytest.approx(5000)
    with pytest.raises(ValueError, match="sizes"):
        chooser(clock).choose(None)
