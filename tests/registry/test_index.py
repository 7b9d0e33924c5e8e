"""RegistryIndex: lookups, replacement, token fan-out, interest groups, counts and expiry."""

from __future__ import annotations

from typing import Any

from pushstr.registry.index import GROUPS_KEY, RegistryIndex
from pushstr.registry.model import Platform, Registration


def reg(pubkey: str, token: str, **changes: Any) -> Registration:
    fields: dict[str, Any] = {"pubkey": pubkey, "device_token": token, "platform": Platform.IOS, "app": "default"}
    fields.update(changes)
    return Registration(**fields)


def test_devices_for_returns_the_stored_tuple_without_copying() -> None:
    index = RegistryIndex()
    index.put(reg("alice", "phone"))
    index.put(reg("alice", "tablet"))
    devices = index.devices_for("alice")
    assert [r.device_token for r in devices] == ["phone", "tablet"]
    assert index.devices_for("alice") is devices
    assert index.devices_for("nobody") == ()


def test_put_replaces_the_same_key_in_place() -> None:
    index = RegistryIndex()
    first = reg("alice", "phone", kinds=frozenset({4}))
    index.put(first)
    index.put(reg("alice", "tablet"))
    newer = reg("alice", "phone", kinds=frozenset({1059}), platform=Platform.ANDROID)
    assert index.put(newer) == first
    assert index.devices_for("alice") == (newer, reg("alice", "tablet"))
    assert index.counts() == {"android": 1, "ios": 1}
    assert index.pubkeys_of_token("phone") == ("alice",)
    assert len(index) == 2


def test_remove_and_remove_token_across_pubkeys() -> None:
    index = RegistryIndex()
    for pubkey in ("alice", "bob", "carol"):
        index.put(reg(pubkey, "shared"))
    index.put(reg("alice", "own"))
    assert index.remove("bob", "shared") == reg("bob", "shared")
    assert index.remove("bob", "shared") is None
    assert index.pubkeys_of_token("shared") == ("alice", "carol")
    removed = index.remove_token("shared")
    assert sorted(r.pubkey for r in removed) == ["alice", "carol"]
    assert index.pubkeys_of_token("shared") == ()
    assert index.devices_for("alice") == (reg("alice", "own"),)
    assert index.devices_for("carol") == ()
    assert index.pubkey_count == 1
    assert index.counts() == {"ios": 1}
    assert index.remove_token("shared") == []


def test_equal_kind_sets_share_one_object() -> None:
    index = RegistryIndex()
    for n in range(100):
        index.put(reg(f"p{n}", "t", kinds=frozenset([4, 1059])))
    assert len({id(r.kinds) for r in index}) == 1


def test_interest_groups_pubkeys_by_the_union_of_their_kinds() -> None:
    index = RegistryIndex()
    assert index.interest() == {}
    index.put(reg("alice", "phone", kinds=frozenset({4})))
    index.put(reg("alice", "tablet", kinds=frozenset({1059})))
    index.put(reg("bob", "phone", kinds=frozenset({4, 1059})))
    index.put(reg("carol", "phone", kinds=frozenset({4})))
    assert index.interest() == {
        frozenset({4, 1059}): frozenset({"alice", "bob"}),
        frozenset({4}): frozenset({"carol"}),
    }
    index.remove("alice", "tablet")
    assert index.interest() == {
        frozenset({4, 1059}): frozenset({"bob"}),
        frozenset({4}): frozenset({"alice", "carol"}),
    }
    index.remove_token("phone")
    assert index.interest() == {}


def test_interest_is_cached_until_it_changes() -> None:
    index = RegistryIndex()
    index.put(reg("alice", "phone", kinds=frozenset({4})))
    first = index.interest()
    assert index.interest() is first
    # Another device with the same kinds leaves alice's union, and so the interest, unchanged.
    index.put(reg("alice", "tablet", kinds=frozenset({4}), created_at=9.0))
    assert index.interest() is first
    index.put(reg("bob", "phone", kinds=frozenset({4})))
    second = index.interest()
    assert second is not first
    assert first == {frozenset({4}): frozenset({"alice"})}  # a handed-out mapping never changes
    assert second == {frozenset({4}): frozenset({"alice", "bob"})}


def test_expire_drops_due_registrations_and_ignores_renewed_ones() -> None:
    index = RegistryIndex()
    index.put(reg("alice", "phone", persistent=False, expires_at=100.0))
    index.put(reg("bob", "phone", persistent=False, expires_at=100.0))
    index.put(reg("bob", "phone", persistent=False, expires_at=300.0))  # renewed by a heartbeat
    index.put(reg("carol", "phone", persistent=False, expires_at=200.0))
    index.put(reg("dave", "phone"))
    assert index.expire(99.0) == []
    assert [r.pubkey for r in index.expire(100.0)] == ["alice"]
    assert [r.pubkey for r in index.expire(250.0)] == ["carol"]
    assert sorted(r.pubkey for r in index) == ["bob", "dave"]
    assert [r.pubkey for r in index.expire(1e12)] == ["bob"]
    assert [r.pubkey for r in index] == ["dave"]


def test_removed_registration_is_not_expired_again() -> None:
    index = RegistryIndex()
    index.put(reg("alice", "phone", persistent=False, expires_at=100.0))
    index.remove("alice", "phone")
    index.put(reg("alice", "phone"))
    assert index.expire(200.0) == []
    assert len(index.devices_for("alice")) == 1


def test_group_followers_track_replacement_and_removal() -> None:
    index = RegistryIndex()
    group = "e" * 64
    following = reg("alice", "phone", kinds=frozenset({9}), extra={GROUPS_KEY: group})
    index.put(following)
    index.put(reg("bob", "phone", kinds=frozenset({9}), extra={GROUPS_KEY: group}))
    assert [r.pubkey for r in index.devices_for_group(group)] == ["alice", "bob"]
    assert index.group_interest() == {frozenset({9}): frozenset({group})}
    index.put(reg("alice", "phone", kinds=frozenset({9})))  # re-registered without the group
    assert [r.pubkey for r in index.devices_for_group(group)] == ["bob"]
    index.remove("bob", "phone")
    assert index.devices_for_group(group) == ()
    assert index.group_interest() == {}
