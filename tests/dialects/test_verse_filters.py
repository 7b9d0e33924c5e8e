"""The in-memory book of Verse filters: matching (checked against nostr-sdk's `Filter.match_event`), the rules a
push filter adds to NIP-01, and the merged filters relays are asked for."""

from __future__ import annotations

import itertools
import time
from typing import Any

import nostr_sdk
import orjson

from pushstr.dialects.verse_filters import FilterBook, Subscription
from pushstr.dialects.verse_message import read_filter
from tests.dialects.verse_client import as_event

NOW = int(time.time())


def subscription(pubkey: str, filter_: dict[str, Any], *, app: str = "default", at: int = NOW - 60) -> Subscription:
    read = read_filter(orjson.dumps({"filter": filter_}).decode(), 16_384)
    return Subscription(app, pubkey, read.filter_id, read.canonical, read.filter, at)


def note(author: Any, kind: int, tags: list[list[str]], *, at: int = NOW) -> Any:
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), "hello").tags([nostr_sdk.Tag.parse(tag) for tag in tags])
    return builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at)).finalize(author)


def test_matching_agrees_with_nostr_sdk() -> None:
    alice, bob, carol = (nostr_sdk.Keys.generate() for _ in range(3))
    a, b, c = (keys.public_key().to_hex() for keys in (alice, bob, carol))
    community = f"34550:{a}:rust"
    filters: list[dict[str, Any]] = [
        {"kinds": [1, 7, 9735], "#p": [c]},
        {"kinds": [9], "#h": ["pizza"]},
        {"kinds": [1111, 1], "#a": [community]},
        {"kinds": [1], "authors": [a, b]},
        {"kinds": [1], "authors": [b], "#t": ["nostr"]},
        {"kinds": [7], "#p": [c], "#e": ["ee" * 32]},
    ]
    events = [
        note(author, kind, tags)
        for author, kind, tags in itertools.product(
            (alice, bob),
            (1, 7, 9, 1111, 9735),
            (
                [],
                [["p", c]],
                [["h", "pizza"]],
                [["a", community]],
                [["t", "nostr"], ["p", c]],
                [["e", "ee" * 32], ["p", c]],
                [["p", a], ["h", "other"]],
            ),
        )
    ]
    book = FilterBook()
    for filter_ in filters:
        book.put(subscription(c, filter_))
    reached = 0
    for event in events:
        expected = {
            orjson.dumps(filter_).decode()
            for filter_ in filters
            if nostr_sdk.Filter.from_json(orjson.dumps(filter_).decode()).match_event(event)
        }
        found = book.matching(as_event(event))
        assert {sub.canonical for sub in found} == {
            read_filter(orjson.dumps({"filter": orjson.loads(text)}).decode(), 16_384).canonical for text in expected
        }
        assert len(found) == len({sub.key for sub in found})
        reached += bool(found)
    assert 0 < reached < len(events)


def test_no_push_for_ones_own_events_nor_for_events_older_than_the_filter() -> None:
    me, other = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    mine = me.public_key().to_hex()
    book = FilterBook()
    book.put(subscription(mine, {"kinds": [1, 1059], "#p": [mine]}, at=NOW))
    assert book.matching(as_event(note(other, 1, [["p", mine]], at=NOW + 1)))
    assert not book.matching(as_event(note(me, 1, [["p", mine]], at=NOW + 1)))  # my own note naming me
    assert not book.matching(as_event(note(other, 1, [["p", mine]], at=NOW)))  # not after the filter
    assert not book.matching(as_event(note(other, 1, [["p", mine]], at=NOW - 3600)))  # a catch-up's old note
    # A gift wrap's created_at is backdated on purpose (NIP-59): it is not held to the filter's time.
    assert book.matching(as_event(note(other, 1059, [["p", mine]], at=NOW - 86_400)))


def test_filters_come_and_go() -> None:
    user, other = "ab" * 32, "cd" * 32
    author = nostr_sdk.Keys.generate()
    event = as_event(note(author, 1, [["p", user], ["p", other]]))
    book = FilterBook()
    first = subscription(user, {"kinds": [1], "#p": [user]})
    book.put(first)
    book.put(subscription(other, {"kinds": [1], "#p": [other]}))
    book.put(subscription(user, {"kinds": [9], "#h": ["g"]}, app="peek"))
    assert len(book) == 3 and {sub.pubkey for sub in book.matching(event)} == {user, other}
    assert book.put(first) == first and len(book) == 3  # the same filter again replaces it
    assert book.remove(*first.key) == first and book.remove(*first.key) is None
    assert {sub.pubkey for sub in book.matching(event)} == {other}
    assert [sub.app for sub in book.remove_user(("default", other))] == ["default"]
    assert not book.matching(event) and len(book) == 1
    assert set(book.of(("peek", user))) == {sub.filter_id for sub in book}


def test_relays_are_asked_for_the_filters_merged() -> None:
    users = [f"{index:064x}" for index in range(1200)]
    book = FilterBook()
    for user in users:
        book.put(subscription(user, {"kinds": [1, 7, 9735], "#p": [user]}))
    book.put(subscription(users[0], {"kinds": [9], "#h": ["pizza"]}))
    book.put(subscription(users[1], {"kinds": [9], "#h": ["tacos"]}))
    book.put(subscription(users[2], {"kinds": [1], "authors": [users[5], users[6]]}))
    filters = book.relay_filters()
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for filter_ in filters:
        by_shape.setdefault(orjson.dumps(sorted(filter_)).decode(), []).append(filter_)
    mentions = by_shape[orjson.dumps(["#p", "kinds"]).decode()]
    assert [len(filter_["#p"]) for filter_ in mentions] == [500, 500, 200]
    assert sorted(value for filter_ in mentions for value in filter_["#p"]) == users
    assert all(filter_["kinds"] == [1, 7, 9735] for filter_ in mentions)
    assert by_shape[orjson.dumps(["#h", "kinds"]).decode()] == [{"kinds": [9], "#h": ["pizza", "tacos"]}]
    assert {"kinds": [1], "authors": [users[5], users[6]]} in filters
    assert book.relay_filters() == filters  # stable while nothing changes
    book.remove_user(("default", users[1]))
    after = book.relay_filters()
    assert {"kinds": [9], "#h": ["pizza"]} in after
    assert sum(len(filter_.get("#p", ())) for filter_ in after) == 1199
    for user in users:
        book.remove_user(("default", user))
    assert book.relay_filters() == [] and len(book) == 0
