"""The pool against real nostr-sdk relays on 127.0.0.1: delivery, live plan updates, catch-up and NIP-42."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nostr_sdk
import pytest

from pushstr.config import NostrConfig
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayState
from pushstr.relays.limits import RelayLimits
from pushstr.relays.planner import FIRST_LANE, Interest, Planner, diff_plans
from pushstr.relays.pool import RelayPool
from tests.conftest import RelayHandle, free_port
from tests.relays.support import Sink, eventually, fast_config, publish, tagged_event

StartRelay = Callable[[], Awaitable[RelayHandle]]
DM = frozenset({4})


class PoolFactory:
    """Builds pools with a fresh server key and closes them all at teardown."""

    def __init__(self) -> None:
        self.pools: list[RelayPool] = []

    async def __call__(
        self,
        urls: list[str],
        interest: Interest,
        config: NostrConfig | None = None,
        planner: Planner | None = None,
        limits: RelayLimits | None = None,
    ) -> tuple[RelayPool, Sink]:
        sink = Sink()
        pool = RelayPool(urls, Keys.generate(), sink, config or fast_config(), planner=planner, limits=limits)
        self.pools.append(pool)
        pool.set_interest(interest)
        await pool.start()
        return pool, sink


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    factory = PoolFactory()
    yield factory
    for pool in factory.pools:
        await pool.close()


async def subscribed(pool: RelayPool) -> None:
    """Every relay planned, connected and has answered each subscription with EOSE."""

    def done() -> bool:
        for status in pool.status():
            plan = pool.plan_for(status.url)
            if plan is None or status.state is not RelayState.CONNECTED or status.eose < plan.req_count:
                return False
        return True

    await eventually(done, what="EOSE")


async def test_matching_events_arrive_with_the_relay_url(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    relays = [await local_relay(), await local_relay()]
    alice, bob, author = Keys.generate(), Keys.generate(), Keys.generate()
    pool, sink = await make_pool([r.url for r in relays], Interest(p={DM: frozenset({alice.public_hex})}))
    await subscribed(pool)

    for_bob = tagged_event(author, 4, [bob.public_hex])
    other_kind = tagged_event(author, 7, [alice.public_hex])
    for_alice = tagged_event(author, 4, [alice.public_hex])
    await publish(relays[0].url, for_bob, other_kind, for_alice)
    await publish(relays[1].url, for_alice)
    await sink.wait_for_ids({for_alice.id})
    await eventually(lambda: len(sink.received) == 2, what="the event from both relays")

    assert sorted(url for _, url in sink.received) == sorted(r.url for r in relays)
    assert all(event == for_alice.to_dict() for event, _ in sink.received)
    assert pool.connected_count == 2


SMALL_FRAMES = RelayLimits(max_subscriptions=100, max_message_length=2048)
"""About 25 pubkeys per REQ: a few dozen registrations already need several subscriptions."""


async def test_a_live_registration_costs_one_req(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    relay = await local_relay()
    registered = frozenset(os.urandom(32).hex() for _ in range(80))
    pool, sink = await make_pool([relay.url], Interest(p={DM: registered}), limits=SMALL_FRAMES)
    await subscribed(pool)
    initial = pool.status()[0].reqs_sent
    plan = pool.plan_for(relay.url)
    assert plan is not None
    assert initial == plan.req_count > 1

    # a newcomer whose subscription has room (a full one would split in two; see the planner tests)
    reference = Planner()
    before = reference.plan(Interest(p={DM: registered}), SMALL_FRAMES).lanes[FIRST_LANE]
    while True:
        newcomer = Keys.generate()
        after = reference.plan(Interest(p={DM: registered | {newcomer.public_hex}}), SMALL_FRAMES)
        diff = diff_plans(before, after.lanes[FIRST_LANE])
        if len(diff.send) == 1 and not diff.close:
            break
    pool.set_interest(Interest(p={DM: registered | {newcomer.public_hex}}))
    await eventually(lambda: pool.status()[0].reqs_sent == initial + 1, what="one more REQ")

    event = tagged_event(Keys.generate(), 4, [newcomer.public_hex])
    await publish(relay.url, event)
    await sink.wait_for_ids({event.id})
    status = pool.status()[0]
    assert (status.reqs_sent, status.closes_sent) == (initial + 1, 0)


async def test_bursts_of_changes_are_coalesced(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    relay = await local_relay()
    pool, _ = await make_pool([relay.url], Interest(p={DM: frozenset({"a" * 64})}))
    await subscribed(pool)
    for index in range(50):
        latest = Interest(p={DM: frozenset({"a" * 64, f"{index:064x}"})})
        pool.set_interest(latest)
        await asyncio.sleep(0)  # other work runs between the changes, as in the server
    await eventually(lambda: pool.plan_for(relay.url) == Planner().plan(latest), what="the last interest")
    await eventually(lambda: pool.status()[0].reqs_sent >= 2, what="an update")
    assert pool.status()[0].reqs_sent == 2  # 50 changes in less than the update interval: one update


async def test_small_chunks_deliver_to_every_pubkey(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    relay = await local_relay()
    users = [Keys.generate() for _ in range(12)]
    planner = Planner(chunk_size=3)
    interest = Interest(p={frozenset({4, 1059}): frozenset(u.public_hex for u in users)})
    pool, sink = await make_pool([relay.url], interest, planner=planner, limits=SMALL_FRAMES)
    await subscribed(pool)
    plan = pool.plan_for(relay.url)
    assert plan is not None
    assert plan.filter_count >= 8  # 12 pubkeys x 2 kinds groups / 3 per filter
    assert plan.req_count >= 2

    author = Keys.generate()
    events = [tagged_event(author, 4 if i % 2 else 1059, [u.public_hex]) for i, u in enumerate(users)]
    await publish(relay.url, *events)
    await sink.wait_for_ids({e.id for e in events})


async def test_events_published_while_disconnected_are_caught_up(
    local_relay: StartRelay, make_pool: PoolFactory
) -> None:
    relay = await local_relay()
    alice = Keys.generate()
    config = fast_config(
        since_window_seconds=0,  # only the reconnect rule can reach back before "now"
        giftwrap_since_window_seconds=2 * 86_400,
        reconnect_min_seconds=1.0,
        reconnect_max_seconds=1.0,
    )
    interest = Interest(p={frozenset({4, 1059}): frozenset({alice.public_hex})})
    pool, sink = await make_pool([relay.url], interest, config)
    await subscribed(pool)

    relay.stop()
    await eventually(lambda: pool.status()[0].state is RelayState.BACKOFF, what="backoff")
    dropped_at = int(time.time())
    await relay.start()
    author = Keys.generate()
    dm = tagged_event(author, 4, [alice.public_hex], created_at=dropped_at - 30)
    wrap = tagged_event(author, 1059, [alice.public_hex], created_at=dropped_at - 86_400)
    await publish(relay.url, dm, wrap)
    assert pool.status()[0].reconnects == 0  # published before pushstr came back

    await sink.wait_for_ids({dm.id, wrap.id})
    assert pool.status()[0].reconnects == 1


async def test_nip42_relay_gets_authenticated_and_then_delivers(make_pool: PoolFactory) -> None:
    port = free_port()
    auth = nostr_sdk.LocalRelayBuilderNip42(mode=nostr_sdk.LocalRelayBuilderNip42Mode.READ)
    relay = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port).nip42(auth).build()
    await relay.run()
    url = f"ws://127.0.0.1:{port}"
    try:
        alice = Keys.generate()
        event = tagged_event(Keys.generate(), 4, [alice.public_hex])
        await publish(url, event)  # writing needs no auth in READ mode

        pool, sink = await make_pool([url], Interest(p={DM: frozenset({alice.public_hex})}))
        await sink.wait_for_ids({event.id})
        status = pool.status()[0]
        assert status.authenticated
        assert status.auth >= 1
        assert status.reqs_sent == 2  # the refused REQ and its re-send after AUTH
    finally:
        relay.shutdown()


async def test_relays_can_be_added_and_removed_live(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    first, second = await local_relay(), await local_relay()
    alice = Keys.generate()
    pool, sink = await make_pool([first.url], Interest(p={DM: frozenset({alice.public_hex})}))
    await subscribed(pool)

    pool.add_relay(second.url)
    await subscribed(pool)
    event = tagged_event(Keys.generate(), 4, [alice.public_hex])
    await publish(second.url, event)
    await sink.wait_for_ids({event.id})
    assert [url for _, url in sink.received] == [second.url]

    pool.remove_relay(first.url)
    assert [s.url for s in pool.status()] == [second.url]
    with pytest.raises(ValueError, match="ws://"):
        pool.add_relay("http://127.0.0.1:1")


async def test_unreachable_relays_are_retried_and_close_is_prompt(
    local_relay: StartRelay, make_pool: PoolFactory
) -> None:
    relay = await local_relay()
    dead = f"ws://127.0.0.1:{free_port()}"
    pool, _ = await make_pool([dead, relay.url], Interest(p={DM: frozenset({"a" * 64})}))
    await eventually(
        lambda: pool.connected_count == 1 and pool.status()[0].connect_failures >= 3, what="retries of the dead relay"
    )
    started = time.monotonic()
    await pool.close()
    assert time.monotonic() - started < 3
    assert pool.status() == []


async def test_a_relay_is_asked_for_its_own_filters_only(local_relay: StartRelay, make_pool: PoolFactory) -> None:
    """NIP-29 groups live on one relay: filters set for it are not sent to the others, and can be taken back."""
    group_relay, other = await local_relay(), await local_relay()
    author = Keys.generate()
    pool, sink = await make_pool([group_relay.url, other.url], Interest())
    pool.set_relay_filters(group_relay.url, [{"kinds": [9], "#h": ["pizza"]}])
    await eventually(
        lambda: {s.url: s.subscriptions for s in pool.status()} == {group_relay.url: 1, other.url: 0}, what="REQ"
    )
    in_group = sign_event(author, 9, "hi", [["h", "pizza"]])
    await publish(other.url, in_group)
    await publish(group_relay.url, in_group)
    await sink.wait_for_ids({in_group.id})
    assert [url for _, url in sink.received] == [group_relay.url]

    pool.set_relay_filters(group_relay.url, [])
    await eventually(lambda: all(s.subscriptions == 0 for s in pool.status()), what="CLOSE")
    # A relay added later gets the filters set for it before it existed.
    late = await local_relay()
    pool.set_relay_filters(late.url, [{"kinds": [9], "#h": ["chess"]}])
    pool.add_relay(late.url)
    await eventually(lambda: any(s.url == late.url and s.subscriptions == 1 for s in pool.status()), what="late REQ")


def test_one_relay_however_it_is_spelled_is_one_entry() -> None:
    """Configured `ws://relay.example`, then named `WS://Relay.Example:80/` by a user: one relay, one label."""
    pool = RelayPool(["ws://relay.example"], Keys.generate(), lambda event, url, **_: None, fast_config())
    pool.add_relay("WS://Relay.Example:80/")
    pool.set_relay_interest("ws://relay.example/", Interest())
    assert pool.urls == ["ws://relay.example"]
    assert pool.watches("ws://relay.example:80") and not pool.watches("ws://other.example")
    assert pool.label("WS://Relay.Example:80/") == pool.label("ws://relay.example") == "ws://relay.example"
    pool.remove_relay("ws://relay.example/")
    assert pool.urls == ["ws://relay.example"]  # it has an interest of its own: kept for that
    pool.set_relay_interest("WS://RELAY.EXAMPLE", None)
    assert pool.urls == []


async def test_every_stored_event_is_read_from_a_relay_that_answers_500(
    local_relay: Callable[..., Awaitable[RelayHandle]], make_pool: PoolFactory
) -> None:
    """nostr-sdk's relay, like strfry, answers a filter with at most 500 stored events. 1 200 DMs to four users, all
    made in one second (so `until` alone cannot page them), reach a pool that subscribes after they were stored."""
    relay = await local_relay(notes_per_minute=60_000)
    users = [Keys.generate().public_hex for _ in range(4)]
    author = Keys.generate()
    created_at = int(time.time()) - 5
    events = [sign_event(author, 4, f"m{n}", [["p", users[n % 4]]], created_at) for n in range(1200)]
    await publish(relay.url, *events)
    _, sink = await make_pool([relay.url], Interest(p={DM: frozenset(users)}))
    await sink.wait_for_ids({event.id for event in events})
