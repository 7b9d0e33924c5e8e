"""Relay discovery without a server: lists signed for real, a table resolver behind the URL guard, and the pool's
per-relay interests against real LocalRelays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pushstr.config import DiscoveryConfig
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.relays.discovery import (
    DM_RELAYS,
    RELAY_LIST,
    RelayDiscovery,
    author_filters,
)
from pushstr.relays.planner import Interest
from pushstr.relays.urls import normalize_relay_url
from tests.conftest import RelayHandle
from tests.relays.support import eventually, publish, tagged_event
from tests.relays.test_pool import PoolFactory, make_pool, subscribed

__all__ = ["make_pool"]  # the fixture, imported to be used here

StartRelay = Callable[[], Awaitable[RelayHandle]]
ALL = frozenset({4, 1059, 1, 7})
DMS = frozenset({4, 1059})
OTHERS = frozenset({1, 7})
ADDRESSES = {
    "inbox.example": ["93.184.216.34"],
    "second.example": ["93.184.216.35"],
    "third.example": ["93.184.216.36"],
    "loopback.example": ["127.0.0.1"],
    "lan.example": ["10.20.30.40"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "192.168.1.1"],
}
INBOX, SECOND, THIRD = "wss://inbox.example/", "wss://second.example/", "wss://third.example/"


async def _resolve(host: str, port: int) -> list[str]:
    """The names of this test and what they resolve to; anything else does not resolve."""
    if host not in ADDRESSES:
        raise OSError(f"{host} does not resolve")
    return ADDRESSES[host]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def relay_list(user: Keys, kind: int, tags: list[list[str]], created_at: int = 1_700_000_000) -> Event:
    return sign_event(user, kind, "", tags, created_at)


class Recorder:
    """Stands in for `RelayPool.set_relay_interest`: what each relay is currently asked for."""

    def __init__(self) -> None:
        self.interests: dict[str, Interest] = {}
        self.calls = 0

    def __call__(self, url: str, interest: Interest | None) -> None:
        self.calls += 1
        if interest is None:
            del self.interests[url]
        else:
            self.interests[url] = interest

    def kinds(self, pubkey: str) -> dict[str, frozenset[int]]:
        """Relay → the kinds it is asked for on behalf of `pubkey`."""
        return {
            url: frozenset().union(*(kinds for kinds, pubkeys in interest.p.items() if pubkey in pubkeys))
            for url, interest in self.interests.items()
            if any(pubkey in pubkeys for pubkeys in interest.p.values())
        }


@pytest.fixture
async def discovery() -> AsyncIterator[Callable[..., Awaitable[tuple[RelayDiscovery, Recorder]]]]:
    started: list[RelayDiscovery] = []

    async def build(configured: tuple[str, ...] = (), **config: Any) -> tuple[RelayDiscovery, Recorder]:
        recorder = Recorder()
        found = RelayDiscovery(DiscoveryConfig(**config), configured, recorder, resolve=_resolve, coalesce_seconds=0.0)
        await found.start()
        started.append(found)
        return found, recorder

    yield build
    for found in started:
        await found.stop()


def test_relay_urls_have_one_spelling() -> None:
    assert normalize_relay_url("WSS://Relay.Example:443") == "wss://relay.example/"
    assert normalize_relay_url("wss://relay.example///") == "wss://relay.example/"
    assert normalize_relay_url("ws://relay.example:80/inbox/") == "ws://relay.example/inbox/"
    assert normalize_relay_url("ws://relay.example:7777") == "ws://relay.example:7777/"
    for bad in (
        "https://relay.example",
        "wss://user:pw@relay.example",
        "wss://relay.example/?token=1",
        "wss://relay.example/#x",
        "wss://relay example",
        "wss://relay.example/a b",
        "wss://" + "a" * 600,
        "",
    ):
        assert normalize_relay_url(bad) is None, bad


def test_author_filters_change_one_filter_per_new_author() -> None:
    authors = [Keys.generate().public_hex for _ in range(1200)]
    before = author_filters(authors, per_filter=100)
    after = author_filters([*authors, Keys.generate().public_hex], per_filter=100)
    assert sorted(a for f in before for a in f["authors"]) == sorted(authors)
    assert all(len(f["authors"]) <= 100 and f["kinds"] == [10002, 10050] and f["since"] == 0 for f in before)
    changed = [f for f in after if f not in before]
    assert len(changed) == 1 and len(after) == len(before)


async def test_dms_go_to_dm_relays_and_the_rest_to_read_relays(discovery: Any) -> None:
    found, pool = await discovery()
    bob = Keys.generate()
    found.update({ALL: frozenset({bob.public_hex})})
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", "wss://INBOX.example"]]))
    tags = [["r", SECOND, "read"], ["r", "wss://third.example/", "write"], ["r", "wss://mixed.example"]]
    found.on_relay_list(relay_list(bob, RELAY_LIST, tags))
    await eventually(lambda: len(found.relays_of(bob.public_hex)) == 2, what="both lists checked")
    await eventually(lambda: len(pool.interests) == 2, what="both relays asked")
    assert pool.kinds(bob.public_hex) == {INBOX: DMS, SECOND: OTHERS}
    # mixed.example resolves to one private address: refused; third.example is a write relay: never asked.
    assert found.relays_of(bob.public_hex) == {DM_RELAYS: (INBOX,), RELAY_LIST: (SECOND,)}


async def test_without_a_dm_list_dms_go_to_read_relays(discovery: Any) -> None:
    found, pool = await discovery(configured=("wss://inbox.example",))
    bob = Keys.generate()
    found.update({ALL: frozenset({bob.public_hex})})
    found.on_relay_list(relay_list(bob, RELAY_LIST, [["r", "wss://inbox.example/"], ["r", SECOND]]))
    await eventually(lambda: bool(pool.interests), what="the read relay")
    # The configured relay gets everyone already: only the other one is asked, for everything Bob wants.
    assert pool.kinds(bob.public_hex) == {SECOND: ALL}


async def test_a_newer_list_replaces_the_older_and_an_older_one_changes_nothing(discovery: Any) -> None:
    found, pool = await discovery()
    bob = Keys.generate()
    found.update({DMS: frozenset({bob.public_hex})})
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", INBOX]], created_at=100))
    await eventually(lambda: INBOX in pool.interests, what="the first list")
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", SECOND]], created_at=200))
    await eventually(lambda: list(pool.interests) == [SECOND], what="the newer list")
    older = metric("pushstr_discovery_lists_total", result="older")
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", THIRD]], created_at=150))
    assert metric("pushstr_discovery_lists_total", result="older") == older + 1
    assert found.relays_of(bob.public_hex) == {DM_RELAYS: (SECOND,)}
    # Bob's last device goes: nobody needs the relay any more.
    found.update({})
    await eventually(lambda: not pool.interests, what="the relay dropped")


async def test_private_and_unresolvable_relays_are_refused(discovery: Any) -> None:
    found, pool = await discovery()
    bob = Keys.generate()
    found.update({DMS: frozenset({bob.public_hex})})
    refused = metric("pushstr_discovery_relays_refused_total", reason="guard")
    listed = [
        "ws://127.0.0.1:7777",
        "wss://loopback.example",
        "wss://lan.example",
        "wss://metadata.example",
        "wss://mixed.example",
        "wss://nowhere.example",
    ]
    applied = metric("pushstr_discovery_lists_total", result="applied")
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", url] for url in listed]))
    await eventually(lambda: metric("pushstr_discovery_lists_total", result="applied") == applied + 1, what="check")
    assert found.relays_of(bob.public_hex) == {DM_RELAYS: ()}
    assert not pool.interests and pool.calls == 0
    assert metric("pushstr_discovery_relays_refused_total", reason="guard") == refused + 5

    # Allowed by the operator: the loopback relay is watched.
    found, pool = await discovery(allow_private_relays=True)
    found.update({DMS: frozenset({bob.public_hex})})
    found.on_relay_list(relay_list(bob, DM_RELAYS, [["relay", "ws://127.0.0.1:7777"]]))
    await eventually(lambda: list(pool.interests) == ["ws://127.0.0.1:7777/"], what="the allowed relay")


async def test_lists_and_relays_are_bounded(discovery: Any) -> None:
    found, pool = await discovery(max_relays_per_user=2, max_relays=2)
    ADDRESSES.update({f"r{index}.example": ["93.184.216.40"] for index in range(10_000)})
    users = [Keys.generate() for _ in range(3)]
    found.update({DMS: frozenset(user.public_hex for user in users)})
    limited = metric("pushstr_discovery_relays_refused_total", reason="user_limit")
    huge = [["relay", f"wss://r{index}.example"] for index in range(10_000)]
    found.on_relay_list(relay_list(users[0], DM_RELAYS, huge))
    await eventually(lambda: DM_RELAYS in found.relays_of(users[0].public_hex), what="the huge list")
    assert found.relays_of(users[0].public_hex)[DM_RELAYS] == ("wss://r0.example/", "wss://r1.example/")
    assert metric("pushstr_discovery_relays_refused_total", reason="user_limit") > limited  # only 100 tags read
    # Three relays wanted, room for two: the one serving fewest users is left out.
    found.on_relay_list(relay_list(users[1], DM_RELAYS, [["relay", INBOX], ["relay", "wss://r1.example"]]))
    found.on_relay_list(relay_list(users[2], DM_RELAYS, [["relay", INBOX]]))
    await eventually(lambda: all(DM_RELAYS in found.relays_of(user.public_hex) for user in users), what="lists")
    await eventually(lambda: set(pool.interests) == {INBOX, "wss://r1.example/"}, what="the budget")
    assert metric("pushstr_discovery_relays", state="over_budget") == 1
    assert metric("pushstr_discovery_relays", state="watched") == 2


async def test_lists_of_strangers_are_ignored_and_indexers_get_the_list_filters(discovery: Any) -> None:
    found, pool = await discovery(indexer_relays=["wss://indexer.example"])
    bob, stranger = Keys.generate(), Keys.generate()
    found.update({DMS: frozenset({bob.public_hex})})
    await eventually(lambda: "wss://indexer.example/" in pool.interests, what="the indexer")
    assert pool.interests["wss://indexer.example/"] == Interest(extra=found.filters())
    assert found.filters() == ({"kinds": [10002, 10050], "authors": [bob.public_hex], "since": 0},)
    unwatched = metric("pushstr_discovery_lists_total", result="unwatched")
    found.on_relay_list(relay_list(stranger, DM_RELAYS, [["relay", INBOX]]))
    assert metric("pushstr_discovery_lists_total", result="unwatched") == unwatched + 1
    assert found.relays_of(stranger.public_hex) == {}
    assert list(pool.interests) == ["wss://indexer.example/"]


async def test_users_own_lists_are_read_from_their_write_relays_and_the_indexers(discovery: Any) -> None:
    found, pool = await discovery(configured=(SECOND,), indexer_relays=["wss://indexer.example"])
    bob, alice = Keys.generate(), Keys.generate()
    found.update({OTHERS: frozenset({bob.public_hex, alice.public_hex})})
    # Bob reads at inbox, writes at third and at the configured relay (no marker: both); Alice only lists reads.
    tags = [["r", INBOX, "read"], ["r", THIRD, "write"], ["r", SECOND]]
    found.on_relay_list(relay_list(bob, RELAY_LIST, tags))
    found.on_relay_list(relay_list(alice, RELAY_LIST, [["r", INBOX, "read"]]))
    await eventually(lambda: found.write_relays_of(bob.public_hex) == (THIRD, SECOND), what="Bob's write relays")
    await eventually(lambda: INBOX in pool.interests, what="the read relay")
    assert THIRD not in pool.interests  # nobody needs what Bob writes yet

    found.want_authored((3, 10000), frozenset({bob.public_hex, alice.public_hex}))
    await eventually(lambda: THIRD in pool.interests, what="Bob's write relay")
    lists = {"kinds": [3, 10000], "authors": [bob.public_hex], "since": 0}
    assert pool.interests[THIRD] == Interest(extra=(lists,))  # his own lists only, and nothing addressed to him
    assert pool.interests[INBOX].extra == ()  # a read relay is not where Bob publishes
    indexer = pool.interests["wss://indexer.example/"].extra
    both = sorted([bob.public_hex, alice.public_hex])
    assert {"kinds": [3, 10000], "authors": both, "since": 0} in indexer and found.filters()[0] in indexer

    found.want_authored((3, 10000), frozenset())
    await eventually(lambda: THIRD not in pool.interests, what="the write relay dropped")


async def test_a_relay_with_its_own_interest_is_asked_for_it_only(
    local_relay: StartRelay, make_pool: PoolFactory
) -> None:
    """The pool side: a listed relay gets only its own interest, joins and leaves the shared set, and is dropped
    when nobody needs it."""
    shared, listed = await local_relay(), await local_relay()
    alice, bob, author = Keys.generate(), Keys.generate(), Keys.generate()
    pool, sink = await make_pool([shared.url], Interest(p={DMS: frozenset({alice.public_hex})}))
    pool.set_relay_interest(listed.url, Interest(p={DMS: frozenset({bob.public_hex})}))
    await subscribed(pool)
    assert [s.url for s in pool.status()] == [shared.url, listed.url]
    plan = pool.plan_for(listed.url)
    assert plan is not None
    assert [f["#p"] for sub in plan.subscriptions.values() for f in sub.filters] == [[bob.public_hex]] * 2

    for_alice, for_bob = tagged_event(author, 4, [alice.public_hex]), tagged_event(author, 4, [bob.public_hex])
    await publish(listed.url, for_alice, for_bob)
    await sink.wait_for_ids({for_bob.id})
    assert sink.ids() == {for_bob.id}

    # Added to the shared set (a device listed it too): the whole shared interest; removed again: its own only.
    pool.add_relay(listed.url)
    await eventually(lambda: _asks(pool, listed.url) == {alice.public_hex}, what="the shared plan")
    pool.remove_relay(listed.url)
    await eventually(lambda: _asks(pool, listed.url) == {bob.public_hex}, what="its own plan")
    pool.set_relay_interest(listed.url, None)
    assert pool.urls == [shared.url]
    pool.set_relay_interest(listed.url, None)  # twice is fine
    assert pool.urls == [shared.url]


def _asks(pool: Any, url: str) -> set[str]:
    plan = pool.plan_for(url)
    return set() if plan is None else {p for sub in plan.subscriptions.values() for f in sub.filters for p in f["#p"]}
