"""The pool against relays that enforce strfry's limits: plans fit, refusals shrink them, nothing is lost.

The large test registers 20 000 users in bursts (the interest is built directly, as the registry would build it)
against a relay holding 20 subscriptions per connection and 128 KiB frames, with and without a NIP-11 document,
and then expects every one of 300 events to registered users (NIP-04 DMs and backdated gift wraps) to arrive.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayState
from pushstr.relays.limits import DEFAULT_LIMITS, RelayLimits
from pushstr.relays.paging import PAGES
from pushstr.relays.planner import Interest
from pushstr.relays.pool import RelayPool
from tests.fakes.strict_relay import StrictRelay
from tests.relays.support import Sink, eventually, fast_config, publish, tagged_event

DEFAULT_KINDS = frozenset({1, 4, 1059, 9735})
SERVER_FILTER = {"kinds": [22456], "#p": ["f" * 64]}


class Relays:
    """Starts strict relays and pools and stops them all at teardown."""

    def __init__(self) -> None:
        self.relays: list[StrictRelay] = []
        self.pools: list[RelayPool] = []

    async def relay(self, **options: Any) -> StrictRelay:
        relay = StrictRelay(**options)
        await relay.start()
        self.relays.append(relay)
        return relay

    def pool(self, relay: StrictRelay, firehose: str = "off", **options: Any) -> tuple[RelayPool, Sink]:
        sink = Sink()
        pool = RelayPool([relay.url], Keys.generate(), sink, fast_config(firehose=firehose), **options)
        self.pools.append(pool)
        return pool, sink


@pytest.fixture
async def relays() -> AsyncIterator[Relays]:
    started = Relays()
    yield started
    for pool in started.pools:
        await pool.close()
    for relay in started.relays:
        await relay.stop()


def holds_its_plan(pool: RelayPool, relay: StrictRelay) -> bool:
    """The pool's every connection is up and the relay holds exactly the planned subscriptions."""
    plan = pool.plan_for(relay.url)
    (status,) = pool.status()
    return plan is not None and status.state is RelayState.CONNECTED and relay.held == plan.req_count


async def test_limits_are_read_from_nip11_and_default_to_strfry(relays: Relays) -> None:
    document = {"limitation": {"max_subscriptions": 50, "max_message_length": 262_144, "max_filters": 20}}
    described = await relays.relay(max_subscriptions=50, max_message_length=262_144, max_filters=20, nip11=document)
    bare = await relays.relay()
    for relay, expected in ((described, RelayLimits(50, 262_144, 20, "nip11")), (bare, DEFAULT_LIMITS)):
        pool, _ = relays.pool(relay)
        await pool.start()
        url = relay.url
        await eventually(lambda: pool.plan_for(url) is not None, what="limits")  # noqa: B023 (awaited right here)
        assert pool.limits_for(url) == expected


async def test_a_relay_stricter_than_it_says_is_replanned_and_loses_nothing(relays: Relays) -> None:
    """The relay holds 4 subscriptions while its document claims 20: its NOTICEs shrink the plan until it fits."""
    relay = await relays.relay(
        max_subscriptions=4,
        nip11={"limitation": {"max_subscriptions": 20, "max_message_length": 8192}},
        max_message_length=8192,
    )
    users = [Keys.generate() for _ in range(300)]
    pool, sink = relays.pool(relay, update_interval=0.2)
    pool.set_interest(Interest(p={DEFAULT_KINDS: frozenset(u.public_hex for u in users)}, extra=(SERVER_FILTER,)))
    await pool.start()
    await eventually(lambda: relay.counters.refused > 0, what="a refusal")
    await eventually(lambda: holds_its_plan(pool, relay), timeout=20, what="a plan that fits")

    limits = pool.limits_for(relay.url)
    assert limits is not None and limits.max_subscriptions <= 4
    plan = pool.plan_for(relay.url)
    assert plan is not None and len(plan.lanes) >= plan.req_count / 4
    assert pool.status()[0].closed >= 1  # refusals are counted per relay
    author = Keys.generate()
    events = [tagged_event(author, 4 if index % 2 else 1059, [user.public_hex]) for index, user in enumerate(users)]
    await publish(relay.url, *events)
    await sink.wait_for_ids({event.id for event in events}, timeout=20)


@pytest.mark.parametrize("firehose", ["off", "auto"])
@pytest.mark.parametrize("nip11", [False, True], ids=["strfry-defaults", "nip11"])
async def test_twenty_thousand_registrations_in_bursts_fit_and_every_event_arrives(
    relays: Relays, nip11: bool, firehose: str
) -> None:
    """With pubkey lists only (`off`) the plan spreads over connections within the limits; in `auto`, where the
    lists need more than one connection (strfry's 20 subscriptions), the relay is asked for the kinds instead."""
    limits = {"max_subscriptions": 30, "max_message_length": 262_144} if nip11 else {}
    relay = await relays.relay(**limits, nip11={"name": "strict", "limitation": limits} if nip11 else None)
    pool, sink = relays.pool(relay, firehose)
    await pool.start()
    keys = [os.urandom(32).hex() for _ in range(20_000)]
    started = time.monotonic()
    for end in range(500, len(keys) + 1, 500):  # registrations arrive in 40 bursts of 500
        pool.set_interest(Interest(p={DEFAULT_KINDS: frozenset(keys[:end])}, extra=(SERVER_FILTER,)))
        await asyncio.sleep(0.05)  # the time between bursts, during which the pool runs
    registering = time.monotonic() - started
    await eventually(lambda: holds_its_plan(pool, relay), timeout=20, what="the whole plan held")
    plan = pool.plan_for(relay.url)
    assert plan is not None
    assert plan.firehose is (firehose == "auto" and not nip11)
    assert len(plan.lanes) == (2 if firehose == "off" and not nip11 else 1)

    rng = random.Random(1)
    now = int(time.time())
    sender = Keys.generate()
    events = [tagged_event(sender, 4, [rng.choice(keys)], created_at=now - rng.randint(0, 60)) for _ in range(150)]
    # gift wraps come from a fresh key each and are backdated by up to two days (NIP-59)
    events += [
        tagged_event(Keys.generate(), 1059, [rng.choice(keys)], created_at=now - rng.randint(0, 2 * 86_400))
        for _ in range(150)
    ]
    await publish(relay.url, *events)
    await sink.wait_for_ids({event.id for event in events}, timeout=30)

    counters = relay.counters
    print(
        f"\n{'nip11' if nip11 else 'strfry defaults'}, firehose {firehose}: {counters.req_frames} REQ frames "
        f"({counters.bytes_received / 2**20:.1f} MiB) for 20 000 registrations in {registering:.1f}s; "
        f"{plan.req_count} subscriptions over {len(plan.lanes)} connections; {len(sink.ids())} of 300 events"
    )
    assert (counters.refused, counters.closed_oversized) == (0, 0)
    assert counters.max_held <= relay.max_subscriptions
    assert counters.req_frames <= 600


def pages_sent() -> float:
    return float(PAGES.labels("sent")._value.get())


async def test_a_new_registration_catches_up_its_own_pubkeys_not_the_whole_subscription(relays: Relays) -> None:
    """Stored gift wraps (backdated, within the window) to 200 users are read once; when one more user joins, only
    that user's stored events come again, though the whole subscription is re-sent."""
    relay = await relays.relay()
    users = [Keys.generate() for _ in range(200)]
    newcomer = Keys.generate()
    now = int(time.time())
    stored = [tagged_event(Keys.generate(), 1059, [user.public_hex], created_at=now - 3600) for user in users]
    theirs = tagged_event(Keys.generate(), 1059, [newcomer.public_hex], created_at=now - 3600)
    await publish(relay.url, *stored, theirs)
    pages = pages_sent()
    pool, sink = relays.pool(relay, update_interval=0.05)
    interest = {DEFAULT_KINDS: frozenset(user.public_hex for user in users)}
    pool.set_interest(Interest(p=interest))
    await pool.start()
    await sink.wait_for_ids({event.id for event in stored})
    plan = pool.plan_for(relay.url)
    assert plan is not None and plan.req_count == 1
    # 200 stored events may be a relay's cap: the catch-up reads below them (`paging`) until a page comes back
    # short. Each page is answered by an EOSE and the next is sent as it arrives.
    await eventually(lambda: pool.status()[0].eose == 1 + pages_sent() - pages, what="the catch-up done")
    before, answered = len(sink.received), pool.status()[0].eose

    pool.set_interest(Interest(p={DEFAULT_KINDS: interest[DEFAULT_KINDS] | {newcomer.public_hex}}))
    # The relay sends stored events before its EOSE, on the one socket: at the next EOSE all of them are in.
    await eventually(lambda: pool.status()[0].eose == answered + 1, what="the re-sent REQ answered")
    assert [event["id"] for event, _ in sink.received[before:]] == [theirs.id]
