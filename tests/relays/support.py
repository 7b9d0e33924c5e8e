"""Test helpers for relay I/O: a scriptable fake relay, an event sink, a publisher and condition waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve

from pushstr.config import NostrConfig
from pushstr.nostr.event import Event, sign_event
from pushstr.nostr.keys import Keys

WAIT_SECONDS = 5.0


def fast_config(**overrides: Any) -> NostrConfig:
    """Settings for tests: no default relays, reconnects within a fraction of a second."""
    values: dict[str, Any] = {
        "relays": [],
        "reconnect_min_seconds": 0.05,
        "reconnect_max_seconds": 0.2,
        "connect_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return NostrConfig(**values)


async def eventually(condition: Callable[[], bool], timeout: float = WAIT_SECONDS, what: str = "condition") -> None:
    """Wait until `condition()` holds, checking after every few loop iterations; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Sink:
    """Collects what a connection hands to `on_event`, so tests can await particular events."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any], url: str, *, size_checked: bool = True) -> None:
        self.received.append((event, url))
        self._changed.set()

    def ids(self) -> set[str]:
        return {event["id"] for event, _ in self.received}

    async def wait_for_ids(self, ids: set[str], timeout: float = WAIT_SECONDS) -> None:
        async with asyncio.timeout(timeout):
            while not ids <= self.ids():
                self._changed.clear()
                await self._changed.wait()


def tagged_event(author: Keys, kind: int, recipients: Sequence[str], created_at: int | None = None) -> Event:
    return sign_event(author, kind, "", [["p", pubkey] for pubkey in recipients], created_at)


async def publish(url: str, *events: Event) -> None:
    """Publish events to a relay and wait until it accepted each one."""
    async with connect(url) as ws:
        for event in events:
            await ws.send(orjson.dumps(["EVENT", event.to_dict()]).decode())
            async with asyncio.timeout(WAIT_SECONDS):
                while True:
                    reply = orjson.loads(await ws.recv())
                    if reply[0] == "OK" and reply[1] == event.id:
                        break
            assert reply[2] is True, reply


class FakeRelay:
    """A tiny websocket server on 127.0.0.1 whose replies each test scripts by hand."""

    def __init__(self, reading: bool = True) -> None:
        """`reading=False` makes a relay that accepts connections and then never reads from them."""
        self.reading = reading
        self.messages: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.accepted = 0
        self._server: Server | None = None

    async def start(self, port: int = 0) -> None:
        # a short close timeout: a connection whose reading is paused never sees its peer go away
        self._server = await serve(self._handle, "127.0.0.1", port, close_timeout=0.5)
        self.port = self._server.sockets[0].getsockname()[1] if port == 0 else port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        self.connections.put_nowait(ws)
        if not self.reading:
            await ws.wait_closed()
            return
        async for message in ws:
            self.messages.put_nowait(orjson.loads(message))

    async def next_connection(self) -> ServerConnection:
        async with asyncio.timeout(WAIT_SECONDS):
            return await self.connections.get()

    async def next_message(self, kind: str) -> list[Any]:
        """The next message of type `kind` the client sent (others are skipped)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                message = await self.messages.get()
                if message[0] == kind:
                    return message
