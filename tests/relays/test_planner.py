"""The planner is pure: these tests check structure, limits and stability of plans, and the diff between them."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from pushstr.nostr.kinds import Kind
from pushstr.relays.limits import DEFAULT_LIMITS, RelayLimits
from pushstr.relays.planner import (
    FIRST_LANE,
    Interest,
    Plan,
    Planner,
    RelayPlan,
    asks_giftwrap,
    cap_lanes,
    diff_plans,
)

DM_KINDS = frozenset({4, 1059, 1, 9735})
SINCE = 1_800_000_000


def pubkeys(count: int) -> frozenset[str]:
    return frozenset(os.urandom(32).hex() for _ in range(count))


def planned_values(plan: RelayPlan | Plan, tag: str, kinds: list[int]) -> list[str]:
    return [
        value
        for sub in plan.subscriptions.values()
        for filter_ in sub.filters
        if filter_.get("kinds") == kinds
        for value in filter_.get(f"#{tag}", [])
    ]


def frame_size(sub_id: str, filters: tuple[dict[str, Any], ...]) -> int:
    """The REQ as the session sends it: every filter with a `since`."""
    return len(orjson.dumps(["REQ", sub_id, *({"since": SINCE, **f} for f in filters)]))


def check_limits(plan: RelayPlan, planner: Planner, limits: RelayLimits) -> None:
    for lane in plan.lanes.values():
        assert lane.req_count <= limits.max_subscriptions
        for sub_id, sub in lane.subscriptions.items():
            assert len(sub_id) <= 64
            assert 1 <= len(sub.filters) <= limits.max_filters
            assert frame_size(sub_id, sub.filters) <= limits.max_message_length
            for filter_ in sub.filters:
                assert len(filter_.get("#p", filter_.get("#e", []))) <= planner.chunk_size
                assert "since" not in filter_ or filter_["kinds"] == [0]  # only the fixed profile filters have one


def test_every_pubkey_is_planned_once_per_kinds_group_and_gift_wraps_get_filters_of_their_own() -> None:
    keys = pubkeys(1200)
    planner = Planner(chunk_size=100)
    plan = planner.plan(Interest(p={DM_KINDS: keys}))

    check_limits(plan, planner, DEFAULT_LIMITS)
    assert sorted(planned_values(plan, "p", [1, 4, 9735])) == sorted(keys)
    assert sorted(planned_values(plan, "p", [Kind.GIFT_WRAP])) == sorted(keys)
    assert list(plan.lanes) == [FIRST_LANE]
    # A pubkey's regular kinds and gift wraps share a REQ (the session gives each filter its own window).
    for sub in plan.subscriptions.values():
        regular = {value for f in sub.filters if f["kinds"] != [Kind.GIFT_WRAP] for value in f["#p"]}
        wraps = {value for f in sub.filters if f["kinds"] == [Kind.GIFT_WRAP] for value in f["#p"]}
        assert regular == wraps
        assert any(asks_giftwrap(f) for f in sub.filters)


def test_kinds_sets_that_share_kinds_are_merged() -> None:
    alice, bob = pubkeys(1), pubkeys(1)
    plan = Planner().plan(Interest(p={frozenset({1059}): alice, frozenset({4, 1059}): bob}))

    assert sorted(planned_values(plan, "p", [Kind.GIFT_WRAP])) == sorted(alice | bob)
    assert planned_values(plan, "p", [4]) == list(bob)
    assert plan.req_count == 1
    assert plan.filter_count == 2


def test_adding_or_removing_one_pubkey_resends_one_subscription() -> None:
    planner = Planner()
    base = pubkeys(20_000)
    before = planner.plan(Interest(p={DM_KINDS: base})).lanes
    changes = []
    for _ in range(50):
        after = planner.plan(Interest(p={DM_KINDS: base | pubkeys(1)})).lanes
        assert after.keys() == before.keys()
        changes.append(sum(len(diff_plans(before[lane], after[lane]).send) for lane in after))
    # A node at its size bound splits in two, which touches three subscriptions; all others are one.
    assert max(changes) <= 3
    assert changes.count(1) >= 40

    removed = next(iter(base))
    after = planner.plan(Interest(p={DM_KINDS: base - {removed}})).lanes
    diffs = [diff_plans(before[lane], after.get(lane, Plan())) for lane in before]
    assert 1 <= sum(len(diff.send) + len(diff.close) for diff in diffs) <= 3


def test_same_interest_gives_same_plan() -> None:
    keys = pubkeys(3000)
    interest = Interest(p={DM_KINDS: keys}, e={frozenset({9}): pubkeys(10)})
    first = Planner(chunk_size=100).plan(interest)
    again = Planner(chunk_size=100).plan(Interest(p={DM_KINDS: frozenset(keys)}, e=dict(interest.e)))
    assert first == again
    assert all(diff_plans(first.lanes[lane], again.lanes[lane]).empty for lane in first.lanes)


def test_removed_groups_are_closed() -> None:
    planner = Planner()
    before = planner.plan(Interest(p={frozenset({4}): pubkeys(3)}, extra=({"kinds": [22456]},))).lanes[FIRST_LANE]
    after = planner.plan(Interest(extra=({"kinds": [22456]},))).lanes[FIRST_LANE]
    diff = diff_plans(before, after)
    assert not diff.send
    assert set(diff.close) == set(before.subscriptions) - set(after.subscriptions)
    assert len(diff.close) == 1


def test_group_ids_and_fixed_filters() -> None:
    groups = frozenset({"f" * 64, "not-hex-group-id"})
    extra: tuple[dict[str, Any], ...] = (
        {"kinds": [22456], "#p": ["a" * 64]},
        {"kinds": [1059], "#p": ["b" * 64]},
    )
    plan = Planner().plan(Interest(e={frozenset({9, 10}): groups}, extra=extra), own=[{"kinds": [9], "#h": ["pizza"]}])

    assert sorted(planned_values(plan, "e", [9, 10])) == sorted(groups)
    assert plan.subscriptions["x0"].filters == extra  # packed into one REQ; each filter gets its own window
    assert plan.subscriptions["r0"].filters == ({"kinds": [9], "#h": ["pizza"]},)


def test_twenty_thousand_users_fit_strfry_defaults_on_two_connections() -> None:
    """40 000 values of 67 bytes cannot fit 20 frames of 128 KiB: the plan spreads over connections instead."""
    keys = pubkeys(20_000)
    planner = Planner()
    extra = tuple({"kinds": [0], "authors": sorted(pubkeys(100)), "since": 0} for _ in range(3))
    plan = planner.plan(Interest(p={DM_KINDS: keys}, extra=({"kinds": [22456], "#p": ["a" * 64]}, *extra)))

    check_limits(plan, planner, DEFAULT_LIMITS)
    assert len(plan.lanes) == 2
    assert sorted(planned_values(plan, "p", [Kind.GIFT_WRAP])) == sorted(keys)
    first = next(iter(plan.lanes.values()))
    assert "x0" in first.subscriptions  # the fixed REQ counts within the first connection's budget


@pytest.mark.parametrize(
    "limits",
    [
        RelayLimits(max_subscriptions=5, max_message_length=16_384, max_filters=3),
        RelayLimits(max_subscriptions=100, max_message_length=1 << 20, max_filters=10),
        RelayLimits(max_subscriptions=1, max_message_length=65_536, max_filters=200),
    ],
)
def test_plans_respect_the_limits_they_are_given(limits: RelayLimits) -> None:
    keys = pubkeys(5000)
    planner = Planner()
    fixed = tuple({"kinds": [22456], "#p": [f"{index:064x}"]} for index in range(4))
    plan = planner.plan(Interest(p={DM_KINDS: keys}, extra=fixed), limits)
    check_limits(plan, planner, limits)
    assert sorted(planned_values(plan, "p", [1, 4, 9735])) == sorted(keys)
    assert [f for sub in plan.subscriptions.values() for f in sub.filters if f["kinds"] == [22456]] == list(fixed)


def test_a_larger_budget_needs_fewer_connections_and_reqs() -> None:
    keys = pubkeys(20_000)
    interest = Interest(p={DM_KINDS: keys})
    strfry = Planner().plan(interest)
    roomy = Planner().plan(interest, RelayLimits(max_subscriptions=100, max_message_length=512 * 1024))
    assert len(roomy.lanes) == 1 < len(strfry.lanes)
    assert roomy.req_count < strfry.req_count


def test_large_interest_stays_within_relay_limits() -> None:
    """100 000 registrations: the shape the benchmark reports (REQs, filters and connections per relay)."""
    keys = pubkeys(100_000)
    planner = Planner()
    plan = planner.plan(Interest(p={DM_KINDS: keys}))

    check_limits(plan, planner, DEFAULT_LIMITS)
    assert len(planned_values(plan, "p", [Kind.GIFT_WRAP])) == 100_000
    values_bytes = 2 * 100_000 * 67
    assert values_bytes / DEFAULT_LIMITS.max_message_length <= plan.req_count <= 3 * values_bytes / 131_072
    assert len(plan.lanes) <= 2 * plan.req_count / DEFAULT_LIMITS.max_subscriptions + 1


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Planner(chunk_size=0)


def test_a_firehose_plan_asks_for_the_kinds_in_one_req_whatever_the_interest() -> None:
    fixed = {"kinds": [22456], "#p": ["f" * 64]}
    interest = Interest(
        p={frozenset({1, 4, 1059, 9735}): pubkeys(20_000), frozenset({7}): pubkeys(10)},
        e={frozenset({42}): frozenset({"c" * 64})},
        extra=(fixed,),
    )
    plan = Planner().plan(interest, DEFAULT_LIMITS, firehose=True)
    assert plan.firehose and list(plan.lanes) == [FIRST_LANE]
    (firehose,) = (sub for sub_id, sub in plan.subscriptions.items() if not sub_id.startswith("x"))
    assert firehose.filters == ({"kinds": [1, 4, 7, 42, 9735]}, {"kinds": [Kind.GIFT_WRAP]})
    assert [filter_ for sub in plan.subscriptions.values() for filter_ in sub.filters].count(fixed) == 1
    assert not Planner().plan(interest, DEFAULT_LIMITS).firehose
    assert Planner().plan(Interest(), DEFAULT_LIMITS, firehose=True).req_count == 0


def test_a_plan_cut_to_a_connection_cap_keeps_its_first_lanes_and_counts_the_pubkeys_left_out() -> None:
    fixed = {"kinds": [22456], "#p": ["f" * 64]}
    users = pubkeys(20_000)
    plan = Planner().plan(Interest(p={DM_KINDS: users}, extra=(fixed,)), DEFAULT_LIMITS)
    assert len(plan.lanes) >= 2
    assert cap_lanes(plan, len(plan.lanes)) == (plan, 0)

    capped, uncovered = cap_lanes(plan, 1)
    first = next(iter(plan.lanes))  # the lane of key 0, which carries the fixed filters
    assert first.startswith(FIRST_LANE) and list(capped.lanes) == [first]
    assert capped.lanes[first] is plan.lanes[first]
    kept = {v for sub in capped.subscriptions.values() for f in sub.filters for v in f.get("#p", [])} - {"f" * 64}
    assert kept < users and uncovered == len(users - kept) > 0  # each pubkey counted once, not once per kinds group
    assert fixed in [f for sub in capped.subscriptions.values() for f in sub.filters]
