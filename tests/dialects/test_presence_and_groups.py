"""Presence ordering and expiry with an injected clock; the group index and group matching."""

from __future__ import annotations

from pushstr.engine.match import match_event
from pushstr.engine.presence import Presence
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys
from pushstr.nostr.nip29 import group_key
from pushstr.registry.index import RegistryIndex
from pushstr.registry.model import Platform, Registration

GROUP_A = "aa" * 32
GROUP_B = "bb" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_presence_follows_created_at_and_times_out() -> None:
    clock = Clock(1000.0)
    presence = Presence(timeout=150, clock=clock)
    assert presence.report("bob", "phone", True, 1000)
    assert presence.is_online("bob", "phone")
    assert not presence.is_online("bob", "tablet")
    # An offline notice made before the heartbeat, delivered after it, changes nothing.
    assert not presence.report("bob", "phone", False, 999)
    assert presence.is_online("bob", "phone")
    clock.now = 1149.0
    assert presence.is_online("bob", "phone")
    clock.now = 1150.5
    assert not presence.is_online("bob", "phone")
    # A heartbeat older than the timeout is stale: it cannot bring the device online.
    assert not presence.report("bob", "phone", True, 1000)
    assert presence.report("bob", "phone", True, 1150)
    assert presence.report("bob", "phone", False, 1151)
    assert not presence.is_online("bob", "phone")


def test_presence_forgets_what_can_no_longer_matter() -> None:
    clock = Clock(1000.0)
    presence = Presence(timeout=10, clock=clock, max_devices=2)
    presence.report("a", "1", True, 1000)
    presence.report("b", "1", False, 1000)
    assert not presence.report("c", "1", True, 1000)  # full: not tracked, so never held back
    clock.now = 1011.0
    assert presence.expire() == 2
    assert presence.report("c", "1", True, 1011)


def reg(pubkey: str, token: str, groups: tuple[str, ...] = (), kinds: frozenset[int] = frozenset({42})) -> Registration:
    return Registration(pubkey, token, Platform.ANDROID, "default", kinds=kinds, groups=groups)


def test_group_index_follows_replacement_and_removal() -> None:
    index = RegistryIndex()
    index.put(reg("alice", "phone", (GROUP_A, GROUP_B)))
    index.put(reg("bob", "phone", (GROUP_A,), frozenset({42, 1059})))
    assert [r.pubkey for r in index.devices_for_group(GROUP_A)] == ["alice", "bob"]
    assert index.group_interest() == {
        frozenset({42, 1059}): frozenset({GROUP_A}),
        frozenset({42}): frozenset({GROUP_B}),
    }
    index.put(reg("alice", "phone", (GROUP_B,)))
    assert [r.pubkey for r in index.devices_for_group(GROUP_A)] == ["bob"]
    assert index.devices_for_group(GROUP_B)[0] is index.get("alice", "phone")
    index.remove("bob", "phone")
    assert index.devices_for_group(GROUP_A) == ()
    assert index.group_interest() == {frozenset({42}): frozenset({GROUP_B})}
    index.put(reg("carol", "phone"))  # no groups: the group interest is left as it is
    first = index.group_interest()
    assert index.group_interest() is first


def test_group_messages_match_members_but_not_the_author() -> None:
    author, member = Keys.generate(), Keys.generate()
    index = RegistryIndex()
    index.put(reg(author.public_hex, "a", (GROUP_A,)))
    index.put(reg(member.public_hex, "m", (GROUP_A,)))
    message = sign_event(author, 42, "hi", [["e", GROUP_A, "", "root"], ["p", member.public_hex]])
    found = match_event(message, index.devices_for, index.devices_for_group)
    assert [(m.recipient, m.device.device_token) for m in found] == [(member.public_hex, "m")]
    assert match_event(message, index.devices_for) == [found[0]]


def test_authors_narrow_pushes_but_never_gift_wraps() -> None:
    friend, stranger = Keys.generate(), Keys.generate()
    presence = Presence(clock=Clock(1000.0))
    narrowed = Registration("bob", "phone", Platform.ANDROID, "default", authors=frozenset({friend.public_hex}))
    anyone = Registration("bob", "tablet", Platform.ANDROID, "default")
    assert presence.allows(sign_event(friend, 4, "hi", []), narrowed)
    assert not presence.allows(sign_event(stranger, 4, "hi", []), narrowed)
    assert presence.allows(sign_event(stranger, 4, "hi", []), anyone)
    # A gift wrap is signed by a one-time key: its author says nothing about the sender.
    assert presence.allows(sign_event(stranger, 1059, "sealed", []), narrowed)


def _zap_receipt(lnurl_server: Keys, zapper: Keys, recipient: str) -> Event:
    """A kind 9735 receipt as an LNURL server signs it, embedding the zapper's signed request (NIP-57)."""
    request = sign_event(zapper, 9734, "", [["p", recipient], ["amount", "21000"]])
    return sign_event(lnurl_server, 9735, "", [["p", recipient], ["description", request.to_json().decode()]])


def test_authors_narrow_zap_receipts_by_the_zapper_not_the_signer() -> None:
    friend, stranger, lnurl = Keys.generate(), Keys.generate(), Keys.generate()
    presence = Presence(clock=Clock(1000.0))
    narrowed = Registration("bob", "phone", Platform.ANDROID, "default", authors=frozenset({friend.public_hex}))
    assert presence.allows(_zap_receipt(lnurl, friend, "bob"), narrowed)
    assert not presence.allows(_zap_receipt(lnurl, stranger, "bob"), narrowed)
    # Without a readable zap request the zapper is unknown: nothing to narrow by, so the device is woken.
    assert presence.allows(sign_event(lnurl, 9735, "", [["p", "bob"]]), narrowed)


def test_group_messages_are_not_narrowed_by_authors() -> None:
    stranger = Keys.generate()
    presence = Presence(clock=Clock(1000.0))
    narrowed = Registration("bob", "phone", Platform.ANDROID, "default", authors=frozenset({"aa" * 32}))
    for kind in (9, 10, 11, 12, 42):
        assert presence.allows(sign_event(stranger, kind, "in the group", []), narrowed), kind
    assert not presence.allows(sign_event(stranger, 1, "a mention", []), narrowed)


def test_relay_groups_match_by_h_tag_only_from_their_relay() -> None:
    author, member = Keys.generate(), Keys.generate()
    index = RegistryIndex()
    follows = (group_key("groups.example.com", "pizza"), group_key("127.0.0.1:7777", "chess"))
    index.put(reg(member.public_hex, "m", follows, frozenset({9, 10})))
    index.put(reg(author.public_hex, "a", follows, frozenset({9})))
    message = sign_event(author, 9, "hi", [["h", "pizza"], ["previous", "abcd1234"]])

    def found(event: Event, relay: str | None) -> list[tuple[str, str]]:
        matches = match_event(event, index.devices_for, index.devices_for_group, relay)
        return [(m.recipient, m.device.device_token) for m in matches]

    assert found(message, "wss://groups.example.com") == [(member.public_hex, "m")]
    assert found(message, "wss://GROUPS.example.com:443/") == [(member.public_hex, "m")]
    # The same group id on another relay is another group; without a relay, no group is known.
    assert found(message, "wss://elsewhere.example.com") == []
    assert found(message, None) == []
    assert found(sign_event(author, 9, "hi", [["h", "chess"]]), "ws://127.0.0.1:7777") == [(member.public_hex, "m")]
    # Kinds still filter: the member did not ask for threads (kind 11).
    assert found(sign_event(author, 11, "a thread", [["h", "pizza"]]), "wss://groups.example.com") == []
    # Relay groups are asked of their own relay, never of every relay by `e` tag.
    assert index.group_interest() == {}
