"""Shared fixtures: official vectors, free ports and real local relays."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
RESTART_SECONDS = 5.0


def load_vector(name: str) -> Any:
    """A file from ../shared/vectors (JSON decoded when it ends in .json)."""
    path = VECTORS / name
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayHandle:
    """A real nostr-sdk LocalRelay on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, port: int, notes_per_minute: int | None = None) -> None:
        """`notes_per_minute` lifts nostr-sdk's default of 60 events per minute per connection (a publisher
        streaming thousands of events needs more); max_reqs stays at its default, 500."""
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self._notes_per_minute = notes_per_minute
        self._relay: Any = None

    async def start(self) -> None:
        """Listen on the port. nostr-sdk's `shutdown()` returns before the old listener is gone, so a restart may
        find the port still taken for a moment: that is retried, for at most `RESTART_SECONDS`."""
        deadline = time.monotonic() + RESTART_SECONDS
        while True:
            builder = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(self.port)
            if self._notes_per_minute is not None:
                builder = builder.rate_limit(nostr_sdk.RateLimit(max_reqs=500, notes_per_minute=self._notes_per_minute))
            relay = builder.build()
            try:
                await relay.run()
            except nostr_sdk.NostrSdkError as exc:
                if "Address already in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)  # nothing to await: the old listener's close is not observable
                continue
            self._relay = relay
            return

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.shutdown()
            self._relay = None


@pytest.fixture
async def local_relay() -> AsyncIterator[Callable[..., Awaitable[RelayHandle]]]:
    """Factory: `relay = await local_relay()` starts a relay; all are stopped at teardown."""
    handles: list[RelayHandle] = []

    async def start(notes_per_minute: int | None = None) -> RelayHandle:
        handle = RelayHandle(free_port(), notes_per_minute)
        await handle.start()
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
