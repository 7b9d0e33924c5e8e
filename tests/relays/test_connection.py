"""One connection against a scripted fake relay: since windows, AUTH, garbage and reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.logutil import ident
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.relays.connection import RelayConnection, RelayState, backoff_delay
from pushstr.relays.planner import FIRST_LANE, Interest, Plan, Planner
from pushstr.relays.session import FRAME_OVERHEAD_BYTES, MAX_ADDRESSED_EVENT_BYTES
from tests.conftest import free_port
from tests.relays.support import FakeRelay, Sink, eventually, fast_config

T0 = 1_800_000_000
ALICE = "a" * 64


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lane(interest: Interest) -> Plan:
    """The plan of the one connection a small interest needs."""
    return Planner().plan(interest).lanes[FIRST_LANE]


def dm_plan() -> Plan:
    return lane(Interest(p={frozenset({4, 1059}): frozenset({ALICE})}))


@pytest.fixture
async def fake_relay() -> AsyncIterator[FakeRelay]:
    relay = FakeRelay()
    await relay.start()
    yield relay
    await relay.stop()


def since_by_kind(req: list[object]) -> dict[int, object]:
    return {f["kinds"][0]: f["since"] for f in req[2:]}  # type: ignore[index]


async def test_since_windows_on_first_subscribe_reconnect_and_clamp(fake_relay: FakeRelay) -> None:
    clock = Clock(T0)
    config = fast_config(since_window_seconds=600, giftwrap_since_window_seconds=86_400, max_event_age_seconds=1800)
    connection = RelayConnection(fake_relay.url, Keys.generate(), Sink(), config, plan=dm_plan(), clock=clock)
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        # one REQ for both, each filter with its own window
        assert since_by_kind(await fake_relay.next_message("REQ")) == {4: T0 - 600, 1059: T0 - 86_400}

        # dropped at T0, back at T0+1000: regular kinds reach back to just before the drop
        await server_side.close()
        await eventually(lambda: connection.status().state is not RelayState.CONNECTED, what="disconnect")
        clock.now = T0 + 1000
        server_side = await fake_relay.next_connection()
        assert since_by_kind(await fake_relay.next_message("REQ")) == {4: T0 - 60, 1059: T0 + 1000 - 86_400}

        # dropped at T0+1000, back at T0+10000: never further back than max_event_age
        await server_side.close()
        await eventually(lambda: connection.status().state is not RelayState.CONNECTED, what="disconnect")
        clock.now = T0 + 10_000
        await fake_relay.next_connection()
        assert since_by_kind(await fake_relay.next_message("REQ")) == {
            4: T0 + 10_000 - 1800,
            1059: T0 + 10_000 - 86_400,
        }

        # a subscription changed later while connected gets the normal window
        connection.set_plan(lane(Interest(p={frozenset({4, 1059}): frozenset({ALICE, "b" * 64})})))
        assert since_by_kind(await fake_relay.next_message("REQ")) == {4: T0 + 10_000 - 600, 1059: T0 + 10_000 - 86_400}
        assert connection.status().reconnects == 2
    finally:
        await connection.close()


async def test_auth_challenge_is_answered_and_refused_subscriptions_are_resent(fake_relay: FakeRelay) -> None:
    keys = Keys.generate()
    plan = lane(Interest(p={frozenset({4}): frozenset({ALICE})}))
    (sub_id,) = plan.subscriptions
    connection = RelayConnection(fake_relay.url, keys, Sink(), fast_config(), plan=plan)
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        await fake_relay.next_message("REQ")
        await server_side.send(orjson.dumps(["CLOSED", sub_id, "auth-required: log in first"]).decode())
        await server_side.send('["AUTH","challenge-123"]')

        auth = await fake_relay.next_message("AUTH")
        event = Event.from_dict(auth[1])
        event.verify()
        assert event.kind == 22242
        assert event.pubkey == keys.public_hex
        assert ["relay", fake_relay.url] in event.tags
        assert ["challenge", "challenge-123"] in event.tags
        assert connection.status().reqs_sent == 1  # nothing re-sent before the relay accepts the AUTH

        await server_side.send(orjson.dumps(["OK", event.id, True, ""]).decode())
        resent = await fake_relay.next_message("REQ")
        assert resent[1] == sub_id
        await eventually(lambda: connection.status().authenticated, what="authenticated")
        status = connection.status()
        assert (status.auth, status.reqs_sent, status.closed) == (1, 2, 0)
    finally:
        await connection.close()


async def test_garbage_frames_do_not_break_the_connection(fake_relay: FakeRelay) -> None:
    config = fast_config(max_event_bytes=4096)
    sink = Sink()
    connection = RelayConnection(fake_relay.url, Keys.generate(), sink, config, plan=dm_plan())
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        garbage = [
            "not json at all",
            "{}",
            "[]",
            "[1, 2]",
            '"EVENT"',
            '["EVENT"]',
            '["EVENT", "sub", [1, 2]]',
            '["EVENT", 7, {}]',
            '["EOSE"]',
            '["CLOSED", 5]',
            '["NOTICE", {"a": 1}]',
            '["OK", "id"]',
            '["OK", "id", "yes"]',
            '["AUTH"]',
            '["AUTH", 12345]',
            '["AUTH", ""]',
            '["SOMETHING", "else"]',
            '["EVENT", "sub", {"id": "' + "x" * (MAX_ADDRESSED_EVENT_BYTES + FRAME_OVERHEAD_BYTES) + '"}]',  # too large
            "\x00\xff",
        ]
        for frame in garbage:
            await server_side.send(frame)
        await server_side.send(b"\x81\x00 binary junk")
        await server_side.send('["NOTICE", "still here?"]')
        await server_side.send('["EVENT", "sub", {"id": "fine"}]')
        await sink.wait_for_ids({"fine"})

        status = connection.status()
        assert status.garbage == len(garbage) + 1
        assert status.notices == 1
        assert status.events == 1
        assert status.state is RelayState.CONNECTED
        assert (status.reconnects, fake_relay.accepted) == (0, 1)
        assert sink.received == [({"id": "fine"}, fake_relay.url)]
    finally:
        await connection.close()


async def test_a_failing_consumer_does_not_stop_reading(fake_relay: FakeRelay) -> None:
    seen: list[str] = []

    def consumer(event: dict[str, object], url: str) -> None:
        seen.append(str(event["id"]))
        if event["id"] == "boom":
            raise RuntimeError("downstream bug")

    connection = RelayConnection(fake_relay.url, Keys.generate(), consumer, fast_config(), plan=dm_plan())
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        await server_side.send('["EVENT", "s", {"id": "boom"}]')
        await server_side.send('["EVENT", "s", {"id": "after"}]')
        await eventually(lambda: seen == ["boom", "after"], what="both events")
        assert connection.status().reconnects == 0
    finally:
        await connection.close()


async def test_refused_connections_are_retried_until_a_relay_appears() -> None:
    port = free_port()
    connection = RelayConnection(f"ws://127.0.0.1:{port}", Keys.generate(), Sink(), fast_config(), plan=dm_plan())
    connection.start()
    relay = FakeRelay()
    try:
        await eventually(lambda: connection.status().connect_failures >= 3, what="three refused attempts")
        status = connection.status()
        assert status.state in (RelayState.BACKOFF, RelayState.CONNECTING)
        assert status.last_error is not None

        await relay.start(port)
        await relay.next_message("REQ")
        await eventually(lambda: connection.connected, what="connected")
        assert connection.status().reconnects == 0
    finally:
        await connection.close()
        await relay.stop()
    assert connection.status().state is RelayState.CLOSED


def test_backoff_grows_to_a_cap_with_jitter() -> None:
    rng = random.Random(7)
    delays = [[backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(200)] for attempt in range(12)]
    assert delays[0] == [1.0] * 200
    for attempt, samples in enumerate(delays):
        cap = min(300.0, 2.0**attempt)
        assert all(1.0 <= delay <= cap for delay in samples)
    assert max(delays[11]) > 250  # the cap is reached ...
    assert len({round(delay, 3) for delay in delays[11]}) > 150  # ... with the attempts spread out


@pytest.mark.parametrize(
    ("send_timeout", "max_outgoing", "reason"),
    [(0.3, 100_000, "send timed out"), (5.0, 10, "outgoing buffer full")],
)
async def test_a_relay_that_stops_reading_is_dropped_and_retried(
    send_timeout: float, max_outgoing: int, reason: str
) -> None:
    stalled = FakeRelay(reading=False)
    await stalled.start()
    connection = RelayConnection(
        stalled.url, Keys.generate(), Sink(), fast_config(), send_timeout=send_timeout, max_outgoing=max_outgoing
    )
    connection.start()
    planner = Planner()
    try:
        await stalled.next_connection()
        await eventually(lambda: connection.connected, what="connected")
        # keep replacing the subscription until the socket buffers are full and sending stalls
        for _ in range(5000):
            if connection.status().last_error is not None:
                break
            pubkeys = frozenset(os.urandom(32).hex() for _ in range(1500))
            connection.set_plan(planner.plan(Interest(p={frozenset({4}): pubkeys})).lanes[FIRST_LANE])
            await asyncio.sleep(0)  # let the writer run
        assert connection.status().last_error == f"ConnectionAbortedError: {reason}"
        await stalled.next_connection()  # and it came back
    finally:
        await connection.close()
        await stalled.stop()


async def test_relay_text_is_logged_without_pubkeys(fake_relay: FakeRelay, caplog: pytest.LogCaptureFixture) -> None:
    pubkey = Keys.generate().public_hex
    connection = RelayConnection(fake_relay.url, Keys.generate(), Sink(), fast_config(), plan=dm_plan())
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        with caplog.at_level(logging.INFO, logger="pushstr.relays.connection"):
            await server_side.send(orjson.dumps(["NOTICE", f"pubkey {pubkey} is rate limited"]).decode())
            await server_side.send(orjson.dumps(["CLOSED", "x", f"blocked: {pubkey.upper()}"]).decode())
            await eventually(lambda: connection.status().closed == 1, what="CLOSED handled")
    finally:
        await connection.close()
    assert connection.status().notices == 1
    assert f"<{ident(pubkey)}>" in caplog.text
    assert pubkey not in caplog.text.lower()


async def test_metrics_are_read_from_the_connection_and_leave_with_it(fake_relay: FakeRelay) -> None:
    connection = RelayConnection(fake_relay.url, Keys.generate(), Sink(), fast_config(), plan=dm_plan())
    connection.start()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"relay": fake_relay.url, **labels})

    try:
        server_side = await fake_relay.next_connection()
        for _ in range(3):
            await server_side.send('["NOTICE", "hello"]')
        await server_side.send("not json")
        await eventually(lambda: connection.status().garbage == 1)
        assert sample("pushstr_relay_messages_total", type="NOTICE") == connection.status().notices == 3
        assert sample("pushstr_relay_garbage_total") == 1
        assert sample("pushstr_relay_connected") == 1
        assert sample("pushstr_relay_sent_total", type="REQ") == connection.status().reqs_sent
    finally:
        await connection.close()
    assert sample("pushstr_relay_messages_total", type="NOTICE") is None


async def test_fragmented_and_binary_messages_keep_their_place_among_single_frames(fake_relay: FakeRelay) -> None:
    """Single text frames go from the parser straight to the session; a fragmented or binary message waits in
    websockets' queue, and the frames behind it wait with it, so the order of events is the relay's."""
    sink = Sink()
    connection = RelayConnection(fake_relay.url, Keys.generate(), sink, fast_config(), plan=dm_plan())
    connection.start()
    try:
        server_side = await fake_relay.next_connection()
        sub_id = (await fake_relay.next_message("REQ"))[1]

        def frame(number: int) -> str:
            event = {"id": f"{number:064x}", "kind": 4, "tags": [["p", ALICE]], "content": "", "created_at": T0}
            return orjson.dumps(["EVENT", sub_id, event]).decode()

        await server_side.send(frame(1))
        whole = frame(2)
        await server_side.send([whole[:40], whole[40:90], whole[90:]])  # one message in three frames
        await server_side.send(frame(3))
        await server_side.send(frame(4).encode())  # a binary message
        await server_side.send(frame(5))
        await eventually(lambda: len(sink.received) == 5, what="five events")
        assert [int(event["id"], 16) for event, _ in sink.received] == [1, 2, 3, 4, 5]
        assert connection.status().garbage == 0
    finally:
        await connection.close()
