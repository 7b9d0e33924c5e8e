"""The relay protocol without sockets: frames into a `RelaySession`, frames and actions out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushstr.config import NostrConfig
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.relays.planner import FIREHOSE_SUBSCRIPTION, Plan, Subscription
from pushstr.relays.session import (
    FRAME_OVERHEAD_BYTES,
    MAX_ADDRESSED_EVENT_BYTES,
    Action,
    Authenticated,
    AuthRejected,
    Closed,
    EventReceived,
    Garbage,
    Notice,
    Outgoing,
    Received,
    Refused,
    RelaySession,
)

T0 = 1_800_000_000
URL = "wss://relay.example"
ALICE = "a" * 64
BOB = "b" * 64
DMS = Subscription(({"kinds": [4], "#p": [ALICE]},))
WRAPS = Subscription(({"kinds": [1059], "#p": [ALICE]},))
PLAN = Plan({"dm": DMS, "gw": WRAPS})
CONFIG = NostrConfig(
    relays=[],
    since_window_seconds=600,
    giftwrap_since_window_seconds=86_400,
    max_event_age_seconds=1800,
    max_event_bytes=4096,
)
AUTH_REQUIRED = "auth-required: log in first"


def new_session(
    plan: Plan = PLAN, *, resumed: bool = False, disconnected_at: float | None = None, keys: Keys | None = None
) -> RelaySession:
    return RelaySession(
        URL,
        keys or Keys.generate(),
        CONFIG,
        plan,
        resumed=resumed,
        disconnected_at=disconnected_at,
        clock=lambda: T0 + 0.75,  # `since` is whole seconds
    )


def frame(*message: Any) -> bytes:
    return orjson.dumps(list(message))


def sent(actions: list[Action] | list[Outgoing]) -> list[list[Any]]:
    """The decoded frames among `actions`, each checked to be labelled with its own message type."""
    frames = [action for action in actions if isinstance(action, Outgoing)]
    decoded = [orjson.loads(outgoing.data) for outgoing in frames]
    assert [outgoing.kind for outgoing in frames] == [message[0] for message in decoded]
    return decoded


def since_by_sub(messages: list[list[Any]]) -> dict[str, list[int]]:
    return {message[1]: [filter_["since"] for filter_ in message[2:]] for message in messages if message[0] == "REQ"}


def answer_challenge(session: RelaySession, challenge: str = "challenge-123") -> Event:
    """Feed an AUTH challenge and return the AUTH event the session answered with."""
    actions = session.receive(frame("AUTH", challenge))
    assert actions[-1] == Received("AUTH")
    ((kind, event),) = sent(actions)
    assert kind == "AUTH"
    return Event.from_dict(event)


# -- subscribing --------------------------------------------------------------------------------------------------


def test_start_sends_one_req_per_subscription_with_its_window() -> None:
    messages = sent(new_session().start())
    assert [message[0] for message in messages] == ["REQ", "REQ"]
    assert since_by_sub(messages) == {"dm": [T0 - 600], "gw": [T0 - 86_400]}
    dm = next(message for message in messages if message[1] == "dm")
    assert dm[2] == {"kinds": [4], "#p": [ALICE], "since": T0 - 600}


def test_a_filter_with_its_own_since_keeps_it() -> None:
    fixed = Subscription(({"kinds": [1], "since": 5}, {"kinds": [7]}))
    assert since_by_sub(sent(new_session(Plan({"x0": fixed})).start())) == {"x0": [5, T0 - 600]}


def test_each_filter_of_a_shared_req_gets_its_own_window() -> None:
    """Regular kinds and gift wraps of the same pubkeys share a REQ when subscriptions are scarce."""
    shared = Subscription(({"kinds": [1, 4], "#p": [ALICE]}, {"kinds": [1059], "#p": [ALICE]}, {"kinds": [4]}))
    session = new_session(Plan({"n0.0": shared}), resumed=True, disconnected_at=T0 - 1000)
    assert since_by_sub(sent(session.start())) == {"n0.0": [T0 - 1060, T0 - 86_400, T0 - 1060]}


@pytest.mark.parametrize(
    ("resumed", "disconnected_at", "regular_since"),
    [
        (True, T0 - 1000, T0 - 1060),  # reaches back to a minute before the drop
        (True, T0 - 100.5, T0 - 600),  # a short gap: the normal window already covers it
        (True, T0 - 5000, T0 - 1800),  # a long gap: never older than max_event_age
        (True, None, T0 - 600),  # no disconnect known
        (False, T0 - 1000, T0 - 600),  # a first connection does not reach back
    ],
)
def test_resume_reaches_back_over_the_gap_but_not_past_max_age(
    resumed: bool, disconnected_at: float | None, regular_since: int
) -> None:
    session = new_session(resumed=resumed, disconnected_at=disconnected_at)
    assert since_by_sub(sent(session.start())) == {"dm": [regular_since], "gw": [T0 - 86_400]}


def test_set_plan_sends_only_the_difference() -> None:
    session = new_session(resumed=True, disconnected_at=T0 - 1000)
    session.start()
    changed = Subscription(({"kinds": [4], "#p": [ALICE, BOB]},))
    added = Subscription(({"kinds": [1059], "#p": [BOB]},))
    new_plan = Plan({"dm": changed, "gw2": added})

    messages = sent(session.set_plan(new_plan))
    assert messages[0] == ["CLOSE", "gw"]
    assert sorted(message[0] for message in messages[1:]) == ["REQ", "REQ"]
    # subscriptions made while connected start now, even on a resumed socket
    assert since_by_sub(messages) == {"dm": [T0 - 600], "gw2": [T0 - 86_400]}
    assert session.plan is new_plan
    assert session.open_subscriptions == 2
    assert session.set_plan(new_plan) == []


def test_a_switch_between_lists_and_firehose_reaches_back_whatever_the_window() -> None:
    """The old subscriptions are closed before the new ones start: with no window at all, the new ones still read
    the last minute, so that an event the relay took in between is not lost."""
    config = CONFIG.model_copy(update={"since_window_seconds": 0, "giftwrap_since_window_seconds": 0})
    lists = Plan({"n0.0": Subscription(({"kinds": [4], "#p": [ALICE]}, {"kinds": [1059], "#p": [ALICE]}))})
    firehose = Plan({FIREHOSE_SUBSCRIPTION: Subscription(({"kinds": [4]}, {"kinds": [1059]}))}, firehose=True)
    session = RelaySession(URL, Keys.generate(), config, firehose, clock=lambda: T0 + 0.75)
    assert since_by_sub(sent(session.start())) == {FIREHOSE_SUBSCRIPTION: [T0, T0]}
    messages = sent(session.set_plan(lists, switch=True))
    assert messages[0] == ["CLOSE", FIREHOSE_SUBSCRIPTION]
    assert since_by_sub(messages) == {"n0.0": [T0 - 60, T0 - 60]}
    assert since_by_sub(sent(session.set_plan(Plan({"n0.1": lists.subscriptions["n0.0"]})))) == {"n0.1": [T0, T0]}


# -- reading ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [bytes, str])
def test_an_event_is_handed_on_with_its_subscription(encode: type) -> None:
    data = frame("EVENT", "dm", {"id": "e1", "kind": 4})
    assert new_session().receive(data if encode is bytes else data.decode()) == [
        EventReceived({"id": "e1", "kind": 4}, "dm")
    ]


def test_eose_and_notice() -> None:
    session = new_session()
    assert session.receive(frame("EOSE", "dm")) == [Received("EOSE")]
    assert session.receive(frame("NOTICE", "slow down", "extra")) == [Notice("slow down"), Received("NOTICE")]


GARBAGE = [
    "not json at all",
    "{}",
    "[]",
    "[1, 2]",
    '"EVENT"',
    '["EVENT"]',
    '["EVENT", "sub", [1, 2]]',
    '["EVENT", 7, {}]',
    '["EVENT", "sub", {}, "extra"]',
    '["EOSE"]',
    '["CLOSED", 5]',
    '["NOTICE", {"a": 1}]',
    '["OK", "id"]',
    '["OK", "id", "yes"]',
    '["AUTH"]',
    '["AUTH", 12345]',
    '["AUTH", ""]',
    '["SOMETHING", "else"]',
    '["EVENT", "sub", {"id": "'
    + "x" * (MAX_ADDRESSED_EVENT_BYTES + FRAME_OVERHEAD_BYTES)
    + '"}]',  # larger than any event may be
    "\x00\xff",
    b"\x81\x00 binary junk",
    b'["NOTICE", "\xff"]',  # not UTF-8
    '["NOTICE", "\\ud800"]',  # a lone surrogate
]


@pytest.mark.parametrize("data", GARBAGE)
def test_bad_frames_become_garbage(data: bytes | str) -> None:
    session = new_session()
    session.start()
    (action,) = session.receive(data)
    assert isinstance(action, Garbage)
    assert action.reason
    assert (session.open_subscriptions, session.authenticated) == (2, False)


def test_garbage_says_what_was_wrong() -> None:
    session = new_session()
    assert session.receive(b"nope") == [Garbage("not JSON")]
    assert session.receive(frame("HELLO", 1)) == [Garbage("unknown message type 'HELLO'")]
    assert session.receive(frame("X" * 50)) == [Garbage(f"unknown message type {'X' * 20!r}")]


def test_frames_up_to_max_event_bytes_plus_overhead_are_read_and_larger_ones_marked() -> None:
    limit = CONFIG.max_event_bytes + FRAME_OVERHEAD_BYTES
    head = b'["EVENT","dm",{"id":"big"}'
    fits = head + b" " * (limit - len(head) - 1) + b"]"
    assert len(fits) == limit
    session = new_session()
    assert session.receive(fits) == [EventReceived({"id": "big"}, "dm")]
    larger = fits[:-1] + b" ]"
    assert session.receive(larger) == [EventReceived({"id": "big"}, "dm", oversized=True)]


def test_closed_refuses_a_subscription_until_it_is_resent() -> None:
    session = new_session()
    session.start()
    assert session.receive(frame("CLOSED", "dm", "blocked: not here")) == [
        Closed("dm", "blocked: not here"),
        Received("CLOSED"),
    ]
    assert session.open_subscriptions == 1
    assert session.receive(frame("CLOSED", "dm")) == [Closed("dm", ""), Received("CLOSED")]
    assert session.receive(frame("CLOSED", "never-sent", "error: what")) == [
        Closed("never-sent", "error: what"),
        Received("CLOSED"),
    ]
    assert session.open_subscriptions == 1

    # an unchanged plan leaves the refused subscription closed; changing it re-sends it
    assert session.set_plan(Plan({"dm": DMS, "gw": WRAPS})) == []
    assert session.open_subscriptions == 1
    changed = Subscription(({"kinds": [4], "#p": [BOB]},))
    assert [message[:2] for message in sent(session.set_plan(Plan({"dm": changed, "gw": WRAPS})))] == [["REQ", "dm"]]
    assert session.open_subscriptions == 2


def test_a_refused_subscription_that_leaves_the_plan_is_closed_and_not_counted() -> None:
    session = new_session()
    session.start()
    session.receive(frame("CLOSED", "gw", "blocked: no"))
    assert sent(session.set_plan(Plan({"dm": DMS}))) == [["CLOSE", "gw"]]
    assert session.open_subscriptions == 1


# -- NIP-42 -------------------------------------------------------------------------------------------------------


def test_an_auth_challenge_is_answered_with_a_signed_auth_event() -> None:
    keys = Keys.generate()
    event = answer_challenge(new_session(keys=keys))
    event.verify()
    assert event.kind == 22242
    assert event.pubkey == keys.public_hex
    assert ["relay", URL] in event.tags
    assert ["challenge", "challenge-123"] in event.tags


def test_auth_required_is_held_until_the_relay_accepts_our_auth() -> None:
    session = new_session(resumed=True, disconnected_at=T0 - 1000)
    session.start()
    assert session.receive(frame("CLOSED", "dm", AUTH_REQUIRED)) == [Received("CLOSED")]
    assert session.open_subscriptions == 2  # held, not refused
    event = answer_challenge(session)

    assert session.receive(frame("OK", "f" * 64, True, "")) == [Received("OK")]  # not our AUTH
    assert not session.authenticated

    actions = session.receive(frame("OK", event.id, True, ""))
    assert actions[0] == Authenticated()
    assert actions[-1] == Received("OK")
    assert since_by_sub(sent(actions)) == {"dm": [T0 - 1060]}  # re-sent as part of the resume
    assert session.authenticated
    assert session.open_subscriptions == 2


def test_a_rejected_auth_leaves_held_subscriptions_unsent() -> None:
    session = new_session()
    session.start()
    session.receive(frame("CLOSED", "dm", AUTH_REQUIRED))
    event = answer_challenge(session)
    assert session.receive(frame("OK", event.id, False, "restricted: not allowed")) == [
        AuthRejected("restricted: not allowed"),
        Received("OK"),
    ]
    assert session.receive(frame("OK", event.id, False)) == [AuthRejected(""), Received("OK")]
    assert not session.authenticated


def test_auth_required_after_authenticating_is_retried_once() -> None:
    session = new_session()
    session.start()
    event = answer_challenge(session)
    assert session.receive(frame("OK", event.id, True)) == [Authenticated(), Received("OK")]

    retry = session.receive(frame("CLOSED", "dm", AUTH_REQUIRED))
    assert [message[:2] for message in sent(retry)] == [["REQ", "dm"]]
    assert session.open_subscriptions == 2
    assert session.receive(frame("CLOSED", "dm", AUTH_REQUIRED)) == [Closed("dm", AUTH_REQUIRED), Received("CLOSED")]
    assert session.open_subscriptions == 1


def test_only_the_latest_challenge_counts() -> None:
    session = new_session()
    first = answer_challenge(session, "one")
    second = answer_challenge(session, "two")
    assert first.id != second.id
    assert session.receive(frame("OK", first.id, True)) == [Received("OK")]
    assert session.receive(frame("OK", second.id, True))[0] == Authenticated()


def test_an_ok_before_any_challenge_is_ignored() -> None:
    session = new_session()
    assert session.receive(frame("OK", "f" * 64, True, "")) == [Received("OK")]
    assert not session.authenticated


def test_a_held_subscription_that_left_the_plan_is_not_resent() -> None:
    session = new_session()
    session.start()
    session.receive(frame("CLOSED", "gw", AUTH_REQUIRED))
    session.set_plan(Plan({"dm": DMS}))
    event = answer_challenge(session)
    assert session.receive(frame("OK", event.id, True)) == [Authenticated(), Received("OK")]


# -- refusals for holding too many ---------------------------------------------------------------------------------

TOO_MANY = "ERROR: too many concurrent REQs"


def numbered_plan(count: int) -> Plan:
    return Plan({f"s{index}": Subscription(({"kinds": [4], "#p": [f"{index:064x}"]},)) for index in range(count)})


def test_a_notice_after_reqs_refuses_those_still_unanswered_and_the_next_plan_resends_them() -> None:
    plan = numbered_plan(5)
    session = new_session(plan)
    session.start()
    for index in range(3):
        session.receive(frame("EOSE", f"s{index}"))
    (refused, received) = session.receive(frame("NOTICE", TOO_MANY))
    assert (refused, received) == (Refused(None, TOO_MANY, 4), Received("NOTICE"))
    assert session.receive(frame("NOTICE", TOO_MANY))[0] == Refused(None, TOO_MANY, 3)
    assert session.open_subscriptions == 3
    session.receive(frame("EOSE", "s3"))  # answered after all: it is held
    assert session.open_subscriptions == 4

    smaller = Plan({sub_id: plan.subscriptions[sub_id] for sub_id in ("s0", "s1", "s4")})
    messages = sent(session.set_plan(smaller))
    assert messages == [
        ["CLOSE", "s2"],
        ["CLOSE", "s3"],
        ["REQ", "s4", {"kinds": [4], "#p": [f"{4:064x}"], "since": T0 - 600}],
    ]
    assert session.open_subscriptions == 3


def test_a_notice_with_nothing_pending_is_only_text() -> None:
    session = new_session()
    session.start()
    session.receive(frame("EOSE", "dm"))
    session.receive(frame("EOSE", "gw"))
    assert session.receive(frame("NOTICE", TOO_MANY)) == [Notice(TOO_MANY), Received("NOTICE")]
    assert session.receive(frame("NOTICE", "hello")) == [Notice("hello"), Received("NOTICE")]


def test_a_closed_for_too_many_is_a_refusal_resent_with_the_next_plan() -> None:
    session = new_session()
    session.start()
    assert session.receive(frame("CLOSED", "gw", "error: too many subscriptions")) == [
        Refused("gw", "error: too many subscriptions", 1),
        Received("CLOSED"),
    ]
    assert session.open_subscriptions == 1
    assert [message[:2] for message in sent(session.set_plan(PLAN))] == [["REQ", "gw"]]
    assert session.open_subscriptions == 2


def test_frames_over_the_event_limit_are_marked_for_admission_up_to_the_addressed_limit() -> None:
    """A gift wrap addressed to the server may be larger than `max_event_bytes` (a Marmot trigger): the session
    passes it on marked oversized, for admission to judge; past `MAX_ADDRESSED_EVENT_BYTES` it is garbage."""
    session = new_session()
    small = {"id": "00" * 32, "content": ""}
    (normal,) = session.receive(frame("EVENT", "s0", small))
    assert isinstance(normal, EventReceived) and not normal.oversized
    (large,) = session.receive(frame("EVENT", "s0", {**small, "content": "x" * 10_000}))
    assert isinstance(large, EventReceived) and large.oversized
    (huge,) = session.receive(frame("EVENT", "s0", {**small, "content": "x" * (MAX_ADDRESSED_EVENT_BYTES + 2048)}))
    assert isinstance(huge, Garbage)


def test_a_changed_subscription_the_relay_holds_catches_up_only_its_new_values() -> None:
    """Adding Bob re-sends the subscription, but stored events are asked for Bob only: Alice's were read."""
    session = new_session()
    session.start()
    for sub_id in ("dm", "gw"):
        session.receive(frame("EOSE", sub_id))
    grown = Plan(
        {
            "dm": Subscription(({"kinds": [4], "#p": [ALICE, BOB]},)),
            "gw": Subscription(({"kinds": [1059], "#p": [ALICE, BOB]}, {"kinds": [7]})),
        }
    )
    requests = {message[1]: message[2:] for message in sent(session.set_plan(grown))}
    assert requests["dm"] == [
        {"kinds": [4], "#p": [ALICE], "limit": 0, "since": T0 - 600},
        {"kinds": [4], "#p": [BOB], "since": T0 - 600},
    ]
    assert requests["gw"] == [
        {"kinds": [1059], "#p": [ALICE], "limit": 0, "since": T0 - 86_400},
        {"kinds": [7], "since": T0 - 600},  # a new fixed filter is read in full
        {"kinds": [1059], "#p": [BOB], "since": T0 - 86_400},
    ]


def test_a_changed_subscription_still_catching_up_or_refused_is_resent_whole() -> None:
    session = new_session()
    session.start()
    session.receive(frame("CLOSED", "gw", "blocked: no"))  # refused; "dm" still awaits its EOSE
    grown = Plan(
        {
            "dm": Subscription(({"kinds": [4], "#p": [ALICE, BOB]},)),
            "gw": Subscription(({"kinds": [1059], "#p": [ALICE, BOB]},)),
        }
    )
    requests = {message[1]: message[2:] for message in sent(session.set_plan(grown))}
    assert requests == {
        "dm": [{"kinds": [4], "#p": [ALICE, BOB], "since": T0 - 600}],
        "gw": [{"kinds": [1059], "#p": [ALICE, BOB], "since": T0 - 86_400}],
    }
