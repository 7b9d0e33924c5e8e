"""The built-in endpoint under abuse: binary frames, one client holding many connections, idle connections."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import nostr_sdk
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from pushstr.nostr.keys import Keys
from tests.e2e.clients import dm, register
from tests.harness import RunningServer, make_settings

SERVER_SECRET = Keys.generate().secret_hex
ALICE, BOB = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()


async def test_binary_frames_are_read_as_text_and_cost_no_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER_SECRET))
    await server.start()
    caplog.set_level(logging.INFO)
    try:
        async with websockets.connect(server.ws_url) as ws:
            event = dm(ALICE, BOB, "sent as a binary frame")
            await ws.send(f'["EVENT",{event.as_json()}]'.encode())
            assert orjson.loads(await ws.recv()) == ["OK", event.id().to_hex(), True, ""]
            for _ in range(1000):
                await ws.send(b"\xff\xfe not utf-8")
                reply = orjson.loads(await ws.recv())
                assert reply[0] == "NOTICE" and "binary" in reply[1]
    finally:
        await server.stop()
    endpoint_lines = [record for record in caplog.records if record.name.startswith("pushstr.relays.endpoint")]
    assert len(endpoint_lines) <= 3
    assert not any(record.exc_info for record in caplog.records)


async def test_one_address_cannot_hold_every_connection(tmp_path: Path) -> None:
    """Connections from 127.0.0.1 hit the per-address cap; a client at 127.0.0.2 still gets its event pushed."""
    endpoint = {"max_connections": 100, "max_connections_per_address": 20}
    server = RunningServer(make_settings(tmp_path, [], SERVER_SECRET, endpoint=endpoint))
    await server.start()
    held: list[ClientConnection] = []
    try:
        await register(server, BOB, "bob-phone")
        refused = 0
        for _ in range(120):
            try:
                held.append(await websockets.connect(server.ws_url))
            except websockets.InvalidStatus:
                refused += 1
        assert len(held) == 20 and refused == 100
        event = dm(ALICE, BOB, "from another client")
        async with websockets.connect(server.ws_url, local_addr=("127.0.0.2", 0)) as other:
            await other.send(f'["EVENT",{event.as_json()}]')
            assert orjson.loads(await other.recv()) == ["OK", event.id().to_hex(), True, ""]
        pushes = await server.wait_for_pushes(1)
        assert pushes[0]["event_id"] == event.id().to_hex()
    finally:
        for connection in held:
            with contextlib.suppress(Exception):
                await connection.close()
        await server.stop()


async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    server = RunningServer(make_settings(tmp_path, [], SERVER_SECRET, endpoint={"idle_timeout_seconds": 0.3}))
    await server.start()
    try:
        async with websockets.connect(server.ws_url) as ws:
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "idle"
    finally:
        await server.stop()
