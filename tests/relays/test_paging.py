"""Catch-ups past a relay's result cap: frames into a `RelaySession`, pages out (a real relay: `test_pool`)."""

from __future__ import annotations

from typing import Any

import orjson

from pushstr.nostr.keys import Keys
from pushstr.relays.paging import PAGE_AT, PAGES
from pushstr.relays.planner import Plan, Subscription
from pushstr.relays.session import Action, Notice, Outgoing, RelaySession
from tests.relays.test_session import CONFIG, T0, URL

ALICE, BOB, CAROL, DAVE = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
USERS = [ALICE, BOB, CAROL, DAVE]
SINCE = int(T0) - CONFIG.since_window_seconds
PLAN = Plan({"dm": Subscription(({"kinds": [4], "#p": USERS},))})


def session() -> tuple[RelaySession, list[Any]]:
    """A session on PLAN and the one filter its REQ sent (with `since`)."""
    relay_session = RelaySession(URL, Keys.generate(), CONFIG, PLAN, clock=lambda: T0 + 0.75)
    (req,) = relay_session.start()
    return relay_session, orjson.loads(req.data)


def stored(relay_session: RelaySession, sub_id: str, created: list[int]) -> None:
    for n, created_at in enumerate(created):
        event = {"id": f"{n:064x}", "kind": 4, "created_at": created_at}
        relay_session.receive(orjson.dumps(["EVENT", sub_id, event]))


def frames(actions: list[Action]) -> list[list[Any]]:
    return [orjson.loads(action.data) for action in actions if isinstance(action, Outgoing)]


def eose(relay_session: RelaySession, sub_id: str) -> list[list[Any]]:
    return frames(relay_session.receive(orjson.dumps(["EOSE", sub_id])))


def test_a_short_catch_up_is_complete() -> None:
    relay_session, _ = session()
    stored(relay_session, "dm", [T0 - 10] * (PAGE_AT - 1))
    assert eose(relay_session, "dm") == []


def test_a_full_catch_up_is_read_below_its_oldest_event_until_a_page_comes_back_short() -> None:
    relay_session, req = session()
    sent = PAGES.labels("sent")._value.get()
    stored(relay_session, "dm", list(range(T0 - 10, T0 - 10 - 500, -1)))
    page = eose(relay_session, "dm")
    assert page == [["REQ", "dm~1", {**req[2], "until": T0 - 509}]]
    assert req[2]["since"] == SINCE
    stored(relay_session, "dm~1", list(range(T0 - 509, T0 - 509 - 500, -1)))
    assert eose(relay_session, "dm~1") == [["CLOSE", "dm~1"], ["REQ", "dm~2", {**req[2], "until": T0 - 1008}]]
    stored(relay_session, "dm~2", [T0 - 1008] * 30)
    assert eose(relay_session, "dm~2") == [["CLOSE", "dm~2"]]
    assert PAGES.labels("sent")._value.get() == sent + 2


def test_a_page_that_makes_no_progress_splits_its_values_and_reads_the_halves_one_at_a_time() -> None:
    relay_session, req = session()
    stored(relay_session, "dm", [T0 - 5] * 500)
    (page,) = eose(relay_session, "dm")
    assert page == ["REQ", "dm~1", {**req[2], "until": T0 - 5}]
    stored(relay_session, "dm~1", [T0 - 5] * 500)  # the same second again: `until` cannot go lower
    close, first_half = eose(relay_session, "dm~1")
    assert close == ["CLOSE", "dm~1"]
    assert first_half == ["REQ", "dm~2", {**req[2], "#p": [ALICE, BOB], "until": T0 - 5}]
    stored(relay_session, "dm~2", [T0 - 5] * 300)  # fewer than the relay has brought: complete
    assert eose(relay_session, "dm~2") == [
        ["CLOSE", "dm~2"],
        ["REQ", "dm~3", {**req[2], "#p": [CAROL, DAVE], "until": T0 - 5}],
    ]
    stored(relay_session, "dm~3", [T0 - 5] * 300)
    assert eose(relay_session, "dm~3") == [["CLOSE", "dm~3"]]


def test_a_single_value_that_cannot_be_paged_is_counted_truncated() -> None:
    plan = Plan({"dm": Subscription(({"kinds": [4], "#p": [ALICE]},))})
    relay_session = RelaySession(URL, Keys.generate(), CONFIG, plan, clock=lambda: T0 + 0.75)
    relay_session.start()
    truncated = PAGES.labels("truncated")._value.get()
    stored(relay_session, "dm", [T0 - 5] * 500)
    eose(relay_session, "dm")
    stored(relay_session, "dm~1", [T0 - 5] * 500)
    assert eose(relay_session, "dm~1") == [["CLOSE", "dm~1"]]
    assert PAGES.labels("truncated")._value.get() == truncated + 1


def test_a_page_refused_for_capacity_is_counted_and_does_not_shrink_the_plan() -> None:
    relay_session, _ = session()
    stored(relay_session, "dm", [T0 - 5 - n for n in range(500)])
    eose(relay_session, "dm")
    truncated = PAGES.labels("truncated")._value.get()
    actions = relay_session.receive(orjson.dumps(["NOTICE", "ERROR: too many concurrent REQs"]))
    assert actions[:-1] == []  # no Refused: the plan's subscriptions all answered
    assert not any(isinstance(action, Notice) for action in actions)
    assert PAGES.labels("truncated")._value.get() == truncated + 1
    assert relay_session.open_subscriptions == 1


def test_pages_of_a_subscription_that_is_closed_are_dropped() -> None:
    relay_session, _ = session()
    stored(relay_session, "dm", [T0 - 5 - n for n in range(500)])
    eose(relay_session, "dm")
    assert frames(relay_session.set_plan(Plan({}))) == [["CLOSE", "dm"]]
    stored(relay_session, "dm~1", [T0 - 600 - n for n in range(500)])
    assert eose(relay_session, "dm~1") == [["CLOSE", "dm~1"]]
