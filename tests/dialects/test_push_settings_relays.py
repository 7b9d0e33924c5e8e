"""Relays a kind 22456 device lists pass the URL guard: names resolving inside the network are never connected to."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
import pytest

from pushstr.config import LogAppConfig, PushSettingsDialectConfig, RegistrationConfig
from pushstr.dialects.push_settings import PushSettings
from pushstr.dialects.registration_relays import RegistrationRelays
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
    tmp_path: Path,
    relays: list[str],
    *,
    allow_private: bool = False,
    groups: list[str] | None = None,
    filters: dict[str, Sequence[Mapping[str, Any]]] | None = None,
) -> tuple[list[str], tuple[str, ...]]:
    """Apply one settings event listing `relays` (and `groups` as `#e`); the relays the pool was asked to add and
    those stored. What single relays were asked for is collected in `filters`."""
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
        PushSettingsDialectConfig(),
        app_for=lambda platform, app: "default",
        apps={"default": LogAppConfig()},
        default_kinds=(4, 1059),
        relays=RegistrationRelays(
            RegistrationConfig(allow_private_relays=allow_private),
            configured=(),
            add_relay=added.append,
            remove_relay=lambda url: None,
            resolve=_resolve,
        ),
        set_relay_filters=(filters if filters is not None else {}).__setitem__,
        resolve=_resolve,
    )
    await dialect.start()
    try:
        message = {"kinds": [1059, 9], "deviceId": "fcm-token", "relays": relays, "#e": groups or [], "authors": []}
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
    assert added == ["wss://public.example/"]  # in the one spelling every relay URL is kept in
    assert stored == ("wss://public.example/",)


async def test_private_relays_pass_when_the_operator_allows_them(tmp_path: Path) -> None:
    added, stored = await _register(tmp_path, ["wss://lan.example", "ws://127.0.0.1:7777"], allow_private=True)
    assert added == ["wss://lan.example/", "ws://127.0.0.1:7777/"] and stored == tuple(added)


async def test_a_group_relay_is_guarded_and_asked_for_its_group_only(tmp_path: Path) -> None:
    """`"<host>'<id>"` names the relay `wss://<host>` unless the device lists one of that host; it passes the guard."""
    filters: dict[str, Sequence[Mapping[str, Any]]] = {}
    groups = ["public.example'pizza", "lan.example'secret", "public.example'chess"]
    added, stored = await _register(tmp_path, [], groups=groups, filters=filters)
    assert added == ["wss://public.example/"] and stored == ("wss://public.example/",)
    assert filters == {"wss://public.example/": [{"kinds": [9], "#h": ["chess", "pizza"]}]}


async def test_a_listed_relay_of_the_group_host_is_used(tmp_path: Path) -> None:
    filters: dict[str, Sequence[Mapping[str, Any]]] = {}
    added, _ = await _register(tmp_path, ["ws://public.example:80/"], groups=["public.example'pizza"], filters=filters)
    assert added == ["ws://public.example/"]
    assert filters == {"ws://public.example/": [{"kinds": [9], "#h": ["pizza"]}]}
