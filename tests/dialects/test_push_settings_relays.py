"""Relays a kind 22456 device lists pass the URL guard: names resolving inside the network are never connected to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nostr_sdk
import orjson
import pytest

from pushstr.config import PushSettingsDialectConfig
from pushstr.dialects.push_settings import PushSettings
from pushstr.engine.presence import Presence
from pushstr.nostr.event import Event
from pushstr.registry.service import Registry
from pushstr.store import open_store
from tests.dialects.test_push_settings import SERVER, settings_event

USER = nostr_sdk.Keys.generate()
ADDRESSES = {
    "loopback.example": ["127.0.0.1"],
    "lan.example": ["10.20.30.40"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "192.168.1.1"],
    "public.example": ["93.184.216.34"],
}


async def _resolve(host: str, port: int) -> list[str]:
    """The names of this test and what they resolve to; anything else does not resolve."""
    if host not in ADDRESSES:
        raise OSError(f"{host} does not resolve")
    return ADDRESSES[host]


async def _register(
    tmp_path: Path, relays: list[str], *, allow_private: bool = False
) -> tuple[list[str], tuple[str, ...]]:
    """Apply one settings event listing `relays`; the relays the pool was asked to add and those stored."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await store.open()
    registry = Registry(store)
    changed = asyncio.Event()
    registry.subscribe(changed.set)
    added: list[str] = []
    dialect = PushSettings(
        SERVER,
        registry,
        Presence(),
        PushSettingsDialectConfig(allow_private_relays=allow_private),
        app_for=lambda platform, app: "default",
        default_kinds=(4, 1059),
        configured_relays=(),
        add_relay=added.append,
        remove_relay=lambda url: None,
        resolve=_resolve,
    )
    await dialect.start()
    try:
        message = {"kinds": [1059], "deviceId": "fcm-token", "relays": relays, "#e": [], "#p": [], "authors": []}
        dialect.handle(Event.from_dict(orjson.loads(settings_event(USER, message).as_json())))
        await asyncio.wait_for(changed.wait(), 5)
        (device,) = registry.devices_for(USER.public_key().to_hex())
        return added, device.relays
    finally:
        await dialect.stop()
        await store.close()


@pytest.mark.parametrize(
    "relay",
    [
        "wss://loopback.example",
        "wss://lan.example/",
        "ws://metadata.example:7777",
        "wss://mixed.example",
        "wss://nowhere.example",
        "wss://127.0.0.1:7777",
        "wss://[::1]",
        "ws://localhost:4848",
        "https://public.example",
    ],
)
async def test_relays_inside_the_network_are_refused(tmp_path: Path, relay: str) -> None:
    added, stored = await _register(tmp_path, [relay, "wss://public.example"])
    assert added == ["wss://public.example"]
    assert stored == ("wss://public.example",)


async def test_private_relays_pass_when_the_operator_allows_them(tmp_path: Path) -> None:
    added, stored = await _register(tmp_path, ["wss://lan.example", "ws://127.0.0.1:7777"], allow_private=True)
    assert added == ["wss://lan.example", "ws://127.0.0.1:7777"] and stored == tuple(added)
