"""The planner is pure: these tests check structure, bounds and stability of plans, and the diff between them."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pushstr.nostr.kinds import Kind
from pushstr.relays.planner import Interest, Plan, Planner, diff_plans

DM_KINDS = frozenset({4, 1059, 1, 9735})


def pubkeys(count: int) -> frozenset[str]:
    return frozenset(os.urandom(32).hex() for _ in range(count))


def planned_values(plan: Plan, tag: str, kinds: list[int]) -> list[str]:
    return [
        value
        for sub in plan.subscriptions.values()
        for filter_ in sub.filters
        if filter_.get("kinds") == kinds
        for value in filter_.get(f"#{tag}", [])
    ]


def check_bounds(plan: Plan, planner: Planner) -> None:
    for sub_id, sub in plan.subscriptions.items():
        assert len(sub_id) <= 64
        assert 1 <= len(sub.filters) <= planner.filters_per_req
        for filter_ in sub.filters:
            values = filter_.get("#p", filter_.get("#e", []))
            assert len(values) <= planner.chunk_size
            assert "since" not in filter_


def test_giftwraps_are_planned_apart_with_every_pubkey_exactly_once() -> None:
    keys = pubkeys(1200)
    planner = Planner(chunk_size=100, filters_per_req=2)
    plan = planner.plan(Interest(p={DM_KINDS: keys}))

    check_bounds(plan, planner)
    regular = planned_values(plan, "p", [1, 4, 9735])
    giftwrap = planned_values(plan, "p", [Kind.GIFT_WRAP])
    assert sorted(regular) == sorted(keys)
    assert sorted(giftwrap) == sorted(keys)
    for sub in plan.subscriptions.values():
        kinds = {kind for filter_ in sub.filters for kind in filter_["kinds"]}
        assert sub.giftwrap == (kinds == {Kind.GIFT_WRAP})


def test_kinds_sets_that_share_kinds_are_merged() -> None:
    alice, bob = pubkeys(1), pubkeys(1)
    plan = Planner().plan(Interest(p={frozenset({1059}): alice, frozenset({4, 1059}): bob}))

    assert sorted(planned_values(plan, "p", [Kind.GIFT_WRAP])) == sorted(alice | bob)
    assert planned_values(plan, "p", [4]) == list(bob)
    assert plan.req_count == 2


def test_adding_or_removing_one_pubkey_resends_one_subscription_per_kinds_group() -> None:
    planner = Planner(chunk_size=50, filters_per_req=2)
    base = pubkeys(2000)
    kinds = frozenset({4})
    before = planner.plan(Interest(p={kinds: base}))
    changes = [len(diff_plans(before, planner.plan(Interest(p={kinds: base | pubkeys(1)}))).send) for _ in range(50)]
    # A node at its size bound splits in two, which touches at most three subscriptions; all others are one.
    assert max(changes) <= 3
    assert changes.count(1) >= 40

    removed = next(iter(base))
    diff = diff_plans(before, planner.plan(Interest(p={kinds: base - {removed}})))
    assert len(diff.send) + len(diff.close) <= 3
    assert len(diff.send) + len(diff.close) >= 1


def test_same_interest_gives_same_plan_and_empty_diff() -> None:
    keys = pubkeys(3000)
    interest = Interest(p={DM_KINDS: keys}, e={frozenset({9}): pubkeys(10)})
    first = Planner(chunk_size=100).plan(interest)
    again = Planner(chunk_size=100).plan(Interest(p={DM_KINDS: frozenset(keys)}, e=dict(interest.e)))
    assert first == again
    assert diff_plans(first, again).empty


def test_removed_groups_are_closed() -> None:
    planner = Planner()
    before = planner.plan(Interest(p={frozenset({4}): pubkeys(3)}, extra=({"kinds": [22456]},)))
    after = planner.plan(Interest(extra=({"kinds": [22456]},)))
    diff = diff_plans(before, after)
    assert not diff.send
    assert set(diff.close) == set(before.subscriptions) - set(after.subscriptions)
    assert len(diff.close) == 1


def test_group_ids_and_extra_filters() -> None:
    groups = frozenset({"f" * 64, "not-hex-group-id"})
    extra: tuple[dict[str, Any], ...] = (
        {"kinds": [22456], "#p": ["a" * 64]},
        {"kinds": [1059], "#p": ["b" * 64]},
    )
    plan = Planner().plan(Interest(e={frozenset({9, 10}): groups}, extra=extra))

    assert sorted(planned_values(plan, "e", [9, 10])) == sorted(groups)
    filters = [(f, sub.giftwrap) for sub in plan.subscriptions.values() for f in sub.filters]
    assert (extra[0], False) in filters
    assert (extra[1], True) in filters


def test_large_interest_stays_within_relay_limits() -> None:
    """100 000 registrations: the shape the benchmark reports (REQs and filters per relay)."""
    keys = pubkeys(100_000)
    planner = Planner()
    plan = planner.plan(Interest(p={DM_KINDS: keys}))

    check_bounds(plan, planner)
    assert len(planned_values(plan, "p", [Kind.GIFT_WRAP])) == 100_000
    # two kinds groups; each subscription holds between half and all of its 1500-value capacity on average
    assert 2 * 100_000 / 1500 <= plan.req_count <= 2 * 2 * 100_000 / 1500
    assert plan.filter_count <= 2 * 2 * 100_000 / 500


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Planner(chunk_size=0)
