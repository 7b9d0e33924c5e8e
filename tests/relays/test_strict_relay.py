"""The strict test relay itself: NIP-01 answers, strfry's limits and refusals, its NIP-11 document, its counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.relays.limits import DEFAULT_LIMITS, RelayLimits, fetch_limits
from tests.fakes.strict_relay import TOO_MANY, StrictRelay
from tests.relays.support import WAIT_SECONDS, publish, tagged_event

ALICE = Keys.generate().public_hex


@pytest.fixture
async def relay() -> AsyncIterator[StrictRelay]:
    started = StrictRelay()
    await started.start()
    yield started
    await started.stop()


async def send(ws: ClientConnection, *message: Any) -> None:
    await ws.send(orjson.dumps(list(message)).decode())


async def receive(ws: ClientConnection) -> list[Any]:
    async with asyncio.timeout(WAIT_SECONDS):
        reply: list[Any] = orjson.loads(await ws.recv())
        return reply


async def until_eose(ws: ClientConnection, sub_id: str) -> list[list[Any]]:
    """Every message up to and including the EOSE of `sub_id`."""
    seen = []
    while True:
        message = await receive(ws)
        seen.append(message)
        if message[:2] == ["EOSE", sub_id]:
            return seen


async def test_req_answers_stored_matches_then_eose_then_live_ones(relay: StrictRelay) -> None:
    author, other = Keys.generate(), Keys.generate()
    old = tagged_event(author, 4, [ALICE], created_at=1_700_000_000)
    newer = tagged_event(author, 4, [ALICE], created_at=1_700_000_100)
    wrong_kind = tagged_event(author, 7, [ALICE])
    not_tagged = tagged_event(other, 4, ["b" * 64])
    await publish(relay.url, old, newer, wrong_kind, not_tagged)

    async with connect(relay.url) as ws:
        await send(ws, "REQ", "dms", {"kinds": [4], "#p": [ALICE]})
        assert [m[2]["id"] for m in (await until_eose(ws, "dms"))[:-1]] == [newer.id, old.id]  # newest first
        await send(ws, "REQ", "window", {"kinds": [4], "since": 1_700_000_050, "until": 1_700_000_200})
        assert [m[2]["id"] for m in (await until_eose(ws, "window"))[:-1]] == [newer.id]
        await send(ws, "REQ", "limited", {"kinds": [4], "#p": [ALICE], "limit": 1}, {"ids": [wrong_kind.id]})
        assert {m[2]["id"] for m in (await until_eose(ws, "limited"))[:-1]} == {newer.id, wrong_kind.id}
        await send(ws, "REQ", "by-author", {"authors": [other.public_hex]})
        assert [m[2]["id"] for m in (await until_eose(ws, "by-author"))[:-1]] == [not_tagged.id]

        live = tagged_event(author, 4, [ALICE])
        await publish(relay.url, live)
        forwarded = {tuple(await receive(ws))[:2] for _ in range(2)}  # "dms" and "limited" match; "window" is over
        assert forwarded == {("EVENT", "dms"), ("EVENT", "limited")}
    assert relay.counters.req_frames == 4
    assert relay.counters.events_stored == 5


async def test_bad_events_and_filters_are_refused(relay: StrictRelay) -> None:
    event = sign_event(Keys.generate(), 1, "hello").to_dict()
    async with connect(relay.url) as ws:
        await send(ws, "EVENT", {**event, "content": "changed"})
        reply = await receive(ws)
        assert reply[:3] == ["OK", event["id"], False]
        await send(ws, "REQ", "bad", {"kinds": "four"})
        assert (await receive(ws))[:2] == ["CLOSED", "bad"]
        await ws.send("not json")
        assert (await receive(ws))[0] == "NOTICE"
    assert relay.events == {}


async def test_a_req_past_twenty_gets_a_notice_alone(relay: StrictRelay) -> None:
    async with connect(relay.url) as ws:
        for index in range(20):
            await send(ws, "REQ", f"s{index}", {"kinds": [4], "#p": [ALICE]})
            assert await receive(ws) == ["EOSE", f"s{index}"]
        await send(ws, "REQ", "s0", {"kinds": [1059], "#p": [ALICE]})  # replaces, does not count twice
        assert await receive(ws) == ["EOSE", "s0"]
        await send(ws, "REQ", "s20", {"kinds": [4]})
        assert await receive(ws) == ["NOTICE", TOO_MANY]
        await send(ws, "CLOSE", "s3")
        await send(ws, "REQ", "s20", {"kinds": [4]})
        assert await receive(ws) == ["EOSE", "s20"]
        assert relay.held == 20
    assert (relay.counters.refused, relay.counters.max_held, relay.counters.req_frames) == (1, 20, 23)


async def test_too_many_filters_are_closed() -> None:
    relay = StrictRelay(max_filters=2)
    await relay.start()
    try:
        async with connect(relay.url) as ws:
            await send(ws, "REQ", "wide", {"kinds": [1]}, {"kinds": [4]}, {"kinds": [7]})
            assert await receive(ws) == ["CLOSED", "wide", "error: too many filters"]
    finally:
        await relay.stop()


async def test_a_frame_over_the_limit_closes_the_connection(relay: StrictRelay) -> None:
    pubkeys = [f"{index:064x}" for index in range(131_072 // 67 + 10)]
    async with connect(relay.url, max_size=None) as ws:
        fits = orjson.dumps(["REQ", "big", {"#p": pubkeys[: 131_000 // 67 - 10]}]).decode()
        assert len(fits) <= 131_072
        await ws.send(fits)
        assert await receive(ws) == ["EOSE", "big"]
        too_big = orjson.dumps(["REQ", "big", {"#p": pubkeys}]).decode()
        assert len(too_big) > 131_072
        await ws.send(too_big)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert relay.counters.req_frames == 1
    assert relay.counters.bytes_received == len(fits)


async def test_nip11_document_is_served_and_read_as_limits() -> None:
    document = {"name": "strict", "limitation": {"max_subscriptions": 50, "max_message_length": 262_144}}
    served = StrictRelay(nip11=document)
    bare = StrictRelay()
    await served.start()
    await bare.start()
    try:
        assert await fetch_limits(served.url) == RelayLimits(50, 262_144, 200, "nip11")
        assert await fetch_limits(bare.url) == DEFAULT_LIMITS
    finally:
        await served.stop()
        await bare.stop()
