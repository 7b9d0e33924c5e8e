"""Shared fixtures: official vectors, free ports and real local relays."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


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

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self._relay: Any = None

    async def start(self) -> None:
        relay = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(self.port).build()
        await relay.run()
        self._relay = relay

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.shutdown()
            self._relay = None


@pytest.fixture
async def local_relay() -> AsyncIterator[Callable[[], Awaitable[RelayHandle]]]:
    """Factory: `relay = await local_relay()` starts a relay; all are stopped at teardown."""
    handles: list[RelayHandle] = []

    async def start() -> RelayHandle:
        handle = RelayHandle(free_port())
        await handle.start()
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
