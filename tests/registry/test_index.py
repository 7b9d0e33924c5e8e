"""RegistryIndex: lookups, replacement, token fan-out, interest groups, counts and expiry."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pushstr.registry.index import RegistryIndex
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
    following = reg("alice", "phone", kinds=frozenset({9}), groups=(group,))
    index.put(following)
    index.put(reg("bob", "phone", kinds=frozenset({9}), groups=(group,)))
    assert [r.pubkey for r in index.devices_for_group(group)] == ["alice", "bob"]
    assert index.group_interest() == {frozenset({9}): frozenset({group})}
    index.put(reg("alice", "phone", kinds=frozenset({9})))  # re-registered without the group
    assert [r.pubkey for r in index.devices_for_group(group)] == ["bob"]
    index.remove("bob", "phone")
    assert index.devices_for_group(group) == ()
    assert index.group_interest() == {}


def _snapshot(index: RegistryIndex) -> dict[str, Any]:
    """Everything observable about an index, kind-set identity included (`==` of a registration covers its lists)."""
    regs = list(index)
    return {
        "devices": {r.pubkey: index.devices_for(r.pubkey) for r in regs},
        "order": [r.key for r in regs],
        "tokens": {r.device_token: index.pubkeys_of_token(r.device_token) for r in regs},
        "counts": index.counts(),
        "len": len(index),
        "pubkeys": index.pubkey_count,
        "interest": dict(index.interest()),
        "group_interest": dict(index.group_interest()),
        "followers": {
            group: index.devices_for_group(group) for groups in index.group_interest().values() for group in groups
        },
        "shared_kind_sets": len({id(r.kinds) for r in regs}) == len({r.kinds for r in regs}),
    }


def _random_registrations(rng: random.Random, count: int) -> list[Registration]:
    """Few pubkeys and tokens, so that devices pile up, tokens are shared and keys are replaced."""
    kind_sets = [[4, 1059], [1059], [1, 4, 1059, 9735], [7], []]
    regs = []
    for n in range(count):
        changes: dict[str, Any] = {
            "kinds": frozenset(rng.choice(kind_sets)),  # a fresh, equal frozenset each time
            "platform": rng.choice(list(Platform)),
            "created_at": float(n),
        }
        roll = rng.random()
        if roll < 0.1:
            changes["groups"] = rng.choice([("a" * 64,), ("b" * 64,), ("a" * 64, "c" * 64)])
        elif roll < 0.15:
            changes.update(persistent=False, expires_at=float(rng.randint(1, 50)))
        elif roll < 0.2:  # lists the index has no use for: the bulk path keeps them as they are
            changes.update(authors=frozenset({"d" * 64}), relays=("wss://r",))
        regs.append(reg(f"p{rng.randint(0, 40)}", f"t{rng.randint(0, 60)}", **changes))
    return regs


@pytest.mark.parametrize("seed", range(20))
def test_put_many_builds_the_same_index_as_put_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    before = _random_registrations(rng, 30)
    batches = [_random_registrations(rng, rng.randint(0, 80)) for _ in range(4)]
    one_by_one, bulk = RegistryIndex(), RegistryIndex()
    for index in (one_by_one, bulk):
        for item in before:
            index.put(item)
        index.interest()  # frozen groups now exist and must be marked dirty by what follows
        index.group_interest()
    for batch in batches:
        for item in batch:
            one_by_one.put(item)
        bulk.put_many(batch)
        assert _snapshot(bulk) == _snapshot(one_by_one)
    assert bulk.expire(25.0) == one_by_one.expire(25.0)
    assert _snapshot(bulk) == _snapshot(one_by_one)


def test_put_many_into_an_empty_index() -> None:
    regs = [reg(f"p{n % 7}", f"t{n % 5}", kinds=frozenset({4, n % 3})) for n in range(50)]
    one_by_one, bulk = RegistryIndex(), RegistryIndex()
    for item in regs:
        one_by_one.put(item)
    bulk.put_many(iter(regs))
    assert _snapshot(bulk) == _snapshot(one_by_one)
