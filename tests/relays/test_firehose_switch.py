"""The pool's per-relay mode against a relay that enforces strfry's limits (`tests.fakes.strict_relay`).

A firehose busier than `firehose_max_events_per_second` sends the relay back to pubkey lists, and every event to
a registered user published before, during and after the switch still arrives. Lists that need more connections
than `max_connections_per_relay` are cut to the cap (the pubkeys left out counted) or, in `auto`, replaced by the
firehose whatever its rate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayState
from pushstr.relays.firehose import Reason
from pushstr.relays.limits import RelayLimits
from pushstr.relays.planner import FIREHOSE_SUBSCRIPTION, Interest
from pushstr.relays.pool import RelayPool
from tests.fakes.strict_relay import StrictRelay
from tests.relays.support import WAIT_SECONDS, FakeRelay, Sink, eventually, fast_config, tagged_event

NOTES_AND_DMS = frozenset({1, 4})
SMALL_FRAMES = RelayLimits(max_subscriptions=20, max_message_length=8192)
"""About 115 pubkeys per REQ: a few hundred users need several subscriptions."""


class Setup:
    """A strict relay and a pool on it, both stopped at teardown."""

    def __init__(self) -> None:
        self.relay = StrictRelay(max_message_length=SMALL_FRAMES.max_message_length)
        self.pools: list[RelayPool] = []

    def pool(self, limits: RelayLimits = SMALL_FRAMES, **config: Any) -> tuple[RelayPool, Sink]:
        sink = Sink()
        pool = RelayPool(
            [self.relay.url],
            Keys.generate(),
            sink,
            fast_config(**config),
            limits=limits,
            update_interval=0.05,
            rate_interval=0.05,
            rate_window=0.3,
        )
        self.pools.append(pool)
        return pool, sink


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    made = Setup()
    await made.relay.start()
    yield made
    for pool in made.pools:
        await pool.close()
    await made.relay.stop()


def holds_its_plan(pool: RelayPool, relay: StrictRelay) -> bool:
    plan = pool.plan_for(relay.url)
    statuses = pool.status()
    return plan is not None and all(s.state is RelayState.CONNECTED for s in statuses) and relay.held == plan.req_count


class Publisher:
    """One websocket publishing events one after the other, each awaited until the relay accepted it."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def __aenter__(self) -> Publisher:
        self._ws = await connect(self._url).__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()

    async def send(self, event: Event) -> None:
        await self._ws.send(orjson.dumps(["EVENT", event.to_dict()]).decode())
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                reply = orjson.loads(await self._ws.recv())
                if reply[0] == "OK" and reply[1] == event.id:
                    assert reply[2] is True, reply
                    return


async def test_a_busy_firehose_goes_back_to_the_lists_and_loses_no_event(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    users = [Keys.generate().public_hex for _ in range(300)]
    pool, sink = setup.pool(
        firehose_above_subscriptions=1,  # several REQs of lists: the firehose, until its rate says otherwise
        firehose_max_events_per_second=50,
        firehose_hold_seconds=0.5,
    )
    pool.set_interest(Interest(p={NOTES_AND_DMS: frozenset(users)}))
    caplog.set_level(logging.INFO, logger="pushstr.relays.pool")
    await pool.start()
    relay = setup.relay
    await eventually(lambda: holds_its_plan(pool, relay), what="the firehose held")
    mode = pool.mode_for(relay.url)
    assert mode is not None and (mode.firehose, mode.reason) == (True, Reason.SUBSCRIPTIONS)

    author = Keys.generate()
    dms: list[str] = []
    seen_rate = 0.0
    after_switch = 0
    deadline = time.monotonic() + 30
    async with Publisher(relay.url) as publisher:
        # Notes to nobody (which only the firehose brings) and, every tenth, a DM to a user, some of them a few
        # seconds old, as fast as the relay takes them, until twenty DMs went out after the switch.
        for index in range(100_000):
            assert time.monotonic() < deadline, "no switch back to the lists"
            if index % 10:
                await publisher.send(sign_event(author, 1, f"note {index}", []))
                continue
            dm = tagged_event(author, 4, [users[index % len(users)]], created_at=int(time.time()) - index % 5)
            await publisher.send(dm)
            dms.append(dm.id)
            mode = pool.mode_for(relay.url)
            assert mode is not None
            if mode.events_per_second is not None:
                seen_rate = max(seen_rate, mode.events_per_second)
            after_switch += not mode.firehose
            if after_switch >= 20:
                break
    await sink.wait_for_ids(set(dms), timeout=10)

    mode = pool.mode_for(relay.url)
    assert mode is not None
    assert (mode.firehose, mode.reason, mode.events_per_second, mode.switches) == (False, Reason.RATE, None, 1)
    assert seen_rate > 50
    plan = pool.plan_for(relay.url)
    assert plan is not None and not plan.firehose and plan.req_count > 1
    await eventually(lambda: holds_its_plan(pool, relay), what="the lists held")
    switches = [r.getMessage() for r in caplog.records if "pubkey lists again" in r.getMessage()]
    assert len(switches) == 1 and "(rate; firehose rate" in switches[0]
    label = pool.label(relay.url)
    assert REGISTRY.get_sample_value("pushstr_relay_mode_switches_total", {"relay": label, "reason": "rate"}) == 1
    assert REGISTRY.get_sample_value("pushstr_relay_mode_reason", {"relay": label, "reason": "rate"}) == 1
    assert REGISTRY.get_sample_value("pushstr_relay_firehose", {"relay": label}) == 0


TINY = RelayLimits(max_subscriptions=2, max_message_length=8192)
"""Two REQs of about 115 pubkeys per connection: 600 users need three connections or more."""


async def test_lists_past_the_connection_cap_are_cut_and_counted(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    users = [os.urandom(32).hex() for _ in range(600)]
    pool, sink = setup.pool(TINY, firehose="off", max_connections_per_relay=2)
    caplog.set_level(logging.WARNING, logger="pushstr.relays.pool")
    pool.set_interest(Interest(p={NOTES_AND_DMS: frozenset(users)}))
    await pool.start()
    relay = setup.relay
    await eventually(lambda: holds_its_plan(pool, relay), what="the capped plan held")

    plan, mode = pool.plan_for(relay.url), pool.mode_for(relay.url)
    assert plan is not None and mode is not None
    assert len(plan.lanes) == 2 and len(pool.status()) == 1 and relay.counters.connections == 2
    covered = {value for sub in plan.subscriptions.values() for f in sub.filters for value in f["#p"]}
    assert mode.uncovered_pubkeys == len(users) - len(covered) > 0
    assert (mode.firehose, mode.reason) == (False, Reason.CONFIGURED)
    label = pool.label(relay.url)
    assert REGISTRY.get_sample_value("pushstr_relay_uncovered_pubkeys", {"relay": label}) == mode.uncovered_pubkeys
    assert relay.counters.max_held <= TINY.max_subscriptions and relay.counters.refused == 0

    # the same interest again: planned anew, the same pubkeys left out, no second log line
    pool.set_interest(Interest(p={NOTES_AND_DMS: frozenset(users)}))
    await eventually(lambda: pool.plan_for(relay.url) is not plan, what="a new plan")
    warnings = [r for r in caplog.records if "pubkeys not asked for" in r.getMessage()]
    assert len(warnings) == 1 and str(mode.uncovered_pubkeys) in warnings[0].getMessage()

    left_out = sorted(set(users) - covered)
    author = Keys.generate()
    reached = tagged_event(author, 4, [sorted(covered)[0]])
    async with Publisher(relay.url) as publisher:
        await publisher.send(reached)
    await sink.wait_for_ids({reached.id})

    # in `auto` the same lists go to the firehose instead, whatever its rate: every user is covered
    auto, auto_sink = setup.pool(TINY, max_connections_per_relay=2, firehose_max_events_per_second=0.001)
    auto.set_interest(Interest(p={NOTES_AND_DMS: frozenset(users)}))
    await auto.start()
    await eventually(lambda: (auto.mode_for(relay.url) or mode).firehose, what="the firehose")
    mode = auto.mode_for(relay.url)
    assert mode is not None and (mode.reason, mode.uncovered_pubkeys) == (Reason.CONNECTIONS, 0)
    await eventually(lambda: relay.held == plan.req_count + 1, what="the firehose REQ held")
    missed = tagged_event(author, 4, [left_out[0]])
    async with Publisher(relay.url) as publisher:
        await publisher.send(missed)
    await auto_sink.wait_for_ids({missed.id})


async def test_a_relay_that_closes_the_firehose_gets_the_lists_at_once() -> None:
    """Some relays refuse filters without authors or tags: the CLOSED of the firehose REQ brings the lists."""
    relay = FakeRelay()
    await relay.start()
    users = [Keys.generate().public_hex for _ in range(300)]
    sink = Sink()
    config = fast_config(firehose_above_subscriptions=1, firehose_hold_seconds=3600)  # the hold does not apply
    pool = RelayPool([relay.url], Keys.generate(), sink, config, limits=SMALL_FRAMES, rate_interval=0.05)
    pool.set_interest(Interest(p={NOTES_AND_DMS: frozenset(users)}))
    try:
        await pool.start()
        ws = await relay.next_connection()
        req = await relay.next_message("REQ")
        assert req[1] == FIREHOSE_SUBSCRIPTION
        await ws.send(orjson.dumps(["CLOSED", FIREHOSE_SUBSCRIPTION, "blocked: filter too broad"]).decode())
        lists = [await relay.next_message("REQ") for _ in range(2)]
        assert all(message[1].startswith("n") and "#p" in message[2] for message in lists)
        mode = pool.mode_for(relay.url)
        assert mode is not None and (mode.firehose, mode.reason, mode.switches) == (False, Reason.REFUSED, 1)
    finally:
        await pool.close()
        await relay.stop()
