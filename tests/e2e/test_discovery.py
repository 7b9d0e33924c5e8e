"""Relay discovery end to end: real LocalRelays, lists and messages built by nostr-sdk, Bob registered over HTTP
with NIP-98, pushes read from the log transport.

Relay A is configured; the others are not, so an event published only there reaches Bob only if pushstr found
the relay in Bob's own relay lists. The LocalRelays listen on 127.0.0.1, so the first test allows private relay
addresses; the second shows the guard refusing them otherwise (names resolving inside the network are covered in
tests/relays/test_discovery.py with a table resolver).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
from prometheus_client import REGISTRY

from pushstr.app import Service
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayState
from pushstr.relays.planner import RelayPlan
from pushstr.relays.urls import normalize_relay_url
from tests.conftest import RelayHandle
from tests.e2e.clients import gift_wrap, publish, register
from tests.e2e.test_notepush import pushed_only
from tests.e2e.test_preferences import set_preferences
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def relay_list(user: Any, kind: int, tags: list[list[str]], at: int) -> Any:
    """A kind 10050 (`["relay", url]`) or 10002 (`["r", url, marker?]`) list, as clients build them."""
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), "").tags([nostr_sdk.Tag.parse(tag) for tag in tags])
    return builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at)).finalize(user)


def mention(sender: Any, recipient: Any, text: str) -> Any:
    tags = [nostr_sdk.Tag.parse(["p", recipient.public_key().to_hex()])]
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(1), text).tags(tags).finalize(sender)


def watching(service: Service, url: str) -> bool:
    """The pool holds the relay, connected, and it has answered every subscription of its plan."""
    key = url if url in service.pool.urls else normalize_relay_url(url)
    plan = service.pool.plan_for(str(key))
    status = next((status for status in service.pool.status() if status.url == key), None)
    return (
        plan is not None
        and plan.req_count > 0
        and status is not None
        and status.state is RelayState.CONNECTED
        and status.eose >= plan.req_count
    )


def asked_kinds(service: Service, url: str) -> set[int]:
    plan = service.pool.plan_for(str(normalize_relay_url(url)))
    return (
        set() if plan is None else {k for sub in plan.subscriptions.values() for f in sub.filters for k in f["kinds"]}
    )


async def test_inbox_relays_users_list_are_watched_for_them(tmp_path: Path, local_relay: Any) -> None:
    a: RelayHandle = await local_relay()
    b: RelayHandle = await local_relay()
    c: RelayHandle = await local_relay()
    write_only: RelayHandle = await local_relay()
    strangers: RelayHandle = await local_relay()
    settings = make_settings(tmp_path, [a.url], SERVER.secret_hex, discovery={"allow_private_relays": True})
    server = RunningServer(settings)
    await server.start()
    service = server.service
    bob, alice, carol = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    bob_hex = bob.public_key().to_hex()
    try:
        await register(server, bob, "bob-fcm-token")
        # A is asked for Bob's relay lists (the plan carries the list filter naming him) and has answered.
        await wait_until(
            lambda: (
                any(
                    bob_hex in f.get("authors", ())
                    for sub in (service.pool.plan_for(a.url) or RelayPlan({})).subscriptions.values()
                    for f in sub.filters
                )
                and watching(service, a.url)
            ),
            10,
        )
        now = int(time.time())

        # NIP-17: Bob's DM relays name B, published on A only. A gift wrap sent only to B is pushed.
        await publish(a.url, relay_list(bob, 10050, [["relay", b.url]], now - 10))
        await wait_until(lambda: watching(service, b.url), 10)
        assert asked_kinds(service, b.url) == {4, 1059}
        wrapped = gift_wrap(alice, bob, "over your inbox relay")
        await publish(b.url, wrapped)
        pushes = await server.wait_for_pushes(1)
        assert pushes[0]["event_id"] == wrapped.id().to_hex() and pushes[0]["recipient"] == bob_hex

        # NIP-65: Bob reads at C (no marker: read and write) and only writes to the other relay. A mention sent
        # only to C is pushed; the write relay is never connected to.
        tags = [["r", c.url], ["r", write_only.url, "write"]]
        await publish(a.url, relay_list(bob, 10002, tags, now - 10))
        await wait_until(lambda: watching(service, c.url), 10)
        assert asked_kinds(service, c.url) == {1, 9735}
        mentioned = mention(carol, bob, "hey @bob")
        await publish(c.url, mentioned)
        pushes = await server.wait_for_pushes(2)
        assert pushes[1]["event_id"] == mentioned.id().to_hex() and pushes[1]["recipient"] == bob_hex

        # A newer 10050 names C instead of B: B is dropped, C now also carries Bob's DMs. An older list, arriving
        # late (here at the built-in endpoint), changes nothing.
        await publish(a.url, relay_list(bob, 10050, [["relay", c.url]], now - 5))
        await wait_until(lambda: str(normalize_relay_url(b.url)) not in service.pool.urls, 10)
        await wait_until(lambda: asked_kinds(service, c.url) == {1, 4, 1059, 9735}, 10)
        older = metric("pushstr_discovery_lists_total", result="older")
        late = relay_list(bob, 10050, [["relay", b.url]], now - 8)  # a relay keeps only the newest: sent to pushstr
        assert service.pipeline.ingest(orjson.loads(late.as_json())).accepted
        assert metric("pushstr_discovery_lists_total", result="older") == older + 1
        wrapped_again = gift_wrap(alice, bob, "now at C")
        await publish(c.url, wrapped_again)
        pushes = await server.wait_for_pushes(3)
        assert pushes[2]["event_id"] == wrapped_again.id().to_hex()

        # Carol is not registered: her list is not followed and her relay never connected to.
        unwatched = metric("pushstr_discovery_lists_total", result="unwatched")
        carol_list = relay_list(carol, 10050, [["relay", strangers.url]], now)
        # No relay is asked for it (no filter names Carol); handed to the built-in endpoint, it is ignored.
        assert service.pipeline.ingest(orjson.loads(carol_list.as_json())).accepted
        assert metric("pushstr_discovery_lists_total", result="unwatched") == unwatched + 1
        for relay in (strangers, write_only):
            assert str(normalize_relay_url(relay.url)) not in service.pool.urls
        assert sorted(service.pool.urls) == sorted([a.url, str(normalize_relay_url(c.url))])
        assert [push["event_id"] for push in server.pushes()] == [
            wrapped.id().to_hex(),
            mentioned.id().to_hex(),
            wrapped_again.id().to_hex(),
        ]
    finally:
        await server.stop()


async def test_loopback_inbox_relays_are_refused_unless_allowed(tmp_path: Path, local_relay: Any) -> None:
    a: RelayHandle = await local_relay()
    b: RelayHandle = await local_relay()
    server = RunningServer(make_settings(tmp_path, [a.url], SERVER.secret_hex))
    await server.start()
    service = server.service
    bob = nostr_sdk.Keys.generate()
    try:
        await register(server, bob, "bob-fcm-token")
        await wait_until(lambda: watching(service, a.url) and bool(service.discovery and service.discovery.filters()))
        refused = metric("pushstr_discovery_relays_refused_total", reason="guard")
        applied = metric("pushstr_discovery_lists_total", result="applied")
        await publish(a.url, relay_list(bob, 10050, [["relay", b.url]], int(time.time())))
        await wait_until(lambda: metric("pushstr_discovery_lists_total", result="applied") == applied + 1, 10)
        assert metric("pushstr_discovery_relays_refused_total", reason="guard") == refused + 1
        assert service.pool.urls == [a.url]
    finally:
        await server.stop()


async def test_a_mute_list_and_follows_published_only_to_the_user_s_write_relay_are_honoured(
    tmp_path: Path, local_relay: Any
) -> None:
    """NIP-65 clients publish the user's own kind 3 and 10000 to the user's write relays: pushstr reads them there
    (for users whose preferences need them), never from a read-only relay."""
    a: RelayHandle = await local_relay()
    outbox: RelayHandle = await local_relay()
    settings = make_settings(tmp_path, [a.url], SERVER.secret_hex, discovery={"allow_private_relays": True})
    server = RunningServer(settings)
    await server.start()
    service = server.service
    bob, alice, carol, dave = (nostr_sdk.Keys.generate() for _ in range(4))
    bob_hex = bob.public_key().to_hex()
    try:
        await register(server, bob, "bob-fcm-token")
        await set_preferences(server, bob, {"mute_list": True, "follows_only": True})
        now = int(time.time())
        await publish(outbox.url, contacts(bob, [alice, carol], now - 20))
        await publish(outbox.url, mute_list(bob, [carol], now - 20))
        await publish(a.url, relay_list(bob, 10002, [["r", outbox.url, "write"]], now - 10))
        await wait_until(lambda: watching(service, outbox.url), 10)
        await wait_until(lambda: bob_hex in service.lists.mutes and bob_hex in service.lists.follows, 10)
        assert asked_kinds(service, outbox.url) == {3, 10000}  # his own lists, not what is addressed to him

        for sender in (carol, dave):  # muted; followed by nobody
            await publish(a.url, mention(sender, bob, "hey @bob"))
        followed = mention(alice, bob, "hey @bob, from a friend")
        await publish(a.url, followed)
        await pushed_only(server, followed, 0)
    finally:
        await server.stop()


def contacts(user: Any, followed: list[Any], at: int) -> Any:
    tags = [nostr_sdk.Tag.parse(["p", other.public_key().to_hex()]) for other in followed]
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(3), "").tags(tags)
    return builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at)).finalize(user)


def mute_list(user: Any, muted: list[Any], at: int) -> Any:
    tags = [nostr_sdk.Tag.parse(["p", other.public_key().to_hex()]) for other in muted]
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(10000), "").tags(tags)
    return builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at)).finalize(user)
