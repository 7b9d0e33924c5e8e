"""Nos kind 6666 registrations against a real registry and store: what is registered, what is refused and why,
which relays are watched, and how a token moves between accounts. Events are signed by nostr-sdk the way Nos signs
them (see tests/e2e/test_nos.py for the pushes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.config import ConfigError, LogAppConfig, NosDialectConfig, RegistrationConfig, Settings
from pushstr.dialects.base import DialectContext
from pushstr.dialects.nos import Nos, build
from pushstr.dialects.nos_registration import MAX_CONTENT_BYTES, BadRegistration, read_registration
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.nostr.event import Event
from pushstr.registry.model import Mode, Platform
from pushstr.registry.service import Registry
from pushstr.store import open_store
from tests.harness import wait_until

TOKEN = "a1b2c3d4" * 8
OTHER_TOKEN = "0f" * 32
ADDRESSES = {
    "relay.example": ["93.184.216.34"],
    "inbox.example": ["93.184.216.35"],
    "lan.example": ["192.168.1.20"],
}


async def _resolve(host: str, port: int) -> list[str]:
    if host not in ADDRESSES:
        raise OSError(f"{host} does not resolve")
    return ADDRESSES[host]


def metric(result: str) -> float:
    return REGISTRY.get_sample_value("pushstr_nos_registrations_total", {"result": result}) or 0.0


def swift_json(value: object) -> str:
    """What Swift's `JSONEncoder()` writes: compact, with `/` escaped as `\\/`."""
    return orjson.dumps(value).decode().replace("/", "\\/")


def nos_content(token: str, public_key: str, relays: list[str]) -> str:
    """`PushNotificationRegistrar.registrationContent`: the Registration struct, fields in declaration order."""
    return swift_json({"apnsToken": token, "publicKey": public_key, "relays": [{"address": url} for url in relays]})


def nos_event(user: Any, content: str, *, at: int | None = None) -> Event:
    """`JSONEvent(pubKey:, kind: .notificationServiceRegistration, tags: [], content:)`, signed by the user."""
    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(6666), content)
    if at is not None:
        builder = builder.custom_created_at(nostr_sdk.Timestamp.from_secs(at))
    return Event.from_dict(orjson.loads(builder.finalize(user).as_json()))


def registration(user: Any, token: str = TOKEN, relays: list[str] | None = None, *, at: int | None = None) -> Event:
    return nos_event(user, nos_content(token, user.public_key().to_hex(), relays or []), at=at)


@dataclass
class Harness:
    registry: Registry
    dialect: Nos
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changes: asyncio.Event = field(default_factory=asyncio.Event)

    async def apply(self, event: Event) -> None:
        """Hand one event to the dialect and wait until the registry changed."""
        self.changes.clear()
        self.dialect.handle(event)
        await asyncio.wait_for(self.changes.wait(), 5)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started dialect over a fresh registry (the same store for every call: a restart)."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await store.open()
    dialects: list[Nos] = []

    async def start(app: str | None = "nos", clock: Callable[[], float] = time.time, **config: Any) -> Harness:
        registry = Registry(store)
        await registry.load()
        added: list[str] = []
        removed: list[str] = []
        relays = RegistrationRelays(
            RegistrationConfig(),
            configured=("wss://relay.example",),
            add_relay=added.append,
            remove_relay=removed.append,
            resolve=_resolve,
        )
        dialect = Nos(registry, relays, NosDialectConfig(**config), app=app, clock=clock, resolve=_resolve)
        harness = Harness(registry, dialect, added, removed)
        registry.subscribe(harness.changes.set)
        await dialect.start()
        dialects.append(dialect)
        return harness

    yield start
    for dialect in dialects:
        await dialect.stop()
    await store.close()


def test_the_content_nos_writes_is_read() -> None:
    user = nostr_sdk.Keys.generate()
    pubkey = user.public_key().to_hex()
    content = nos_content(TOKEN.upper(), pubkey, ["wss://relay.damus.io", "wss://nos.social/"])
    assert "wss:\\/\\/relay.damus.io" in content
    read = read_registration(content)
    assert (read.apns_token, read.public_key) == (TOKEN, pubkey)
    assert read.relays == ("wss://relay.damus.io", "wss://nos.social/")
    # Keys in another order, entries the relay guard refuses later as invalid.
    other = swift_json({"relays": [{"address": 7}, "wss://x", {}], "publicKey": pubkey.upper(), "apnsToken": TOKEN})
    assert read_registration(other).relays == (None, None, None)
    assert read_registration(other).public_key == pubkey


@pytest.mark.parametrize(
    ("content", "result"),
    [
        ("not json", "bad_json"),
        ("[]", "bad_json"),
        (swift_json({"publicKey": "ab" * 32, "relays": []}), "bad_json"),
        (swift_json({"apnsToken": TOKEN, "publicKey": "npub1xyz", "relays": []}), "bad_json"),
        (swift_json({"apnsToken": TOKEN, "publicKey": "ab" * 32, "relays": {"address": "wss://x"}}), "bad_json"),
        (swift_json({"apnsToken": TOKEN, "publicKey": "ab" * 32}), "bad_json"),
        (" " * (MAX_CONTENT_BYTES + 1), "too_large"),
    ],
)
def test_content_that_is_not_a_registration(content: str, result: str) -> None:
    with pytest.raises(BadRegistration) as caught:
        read_registration(content)
    assert caught.value.result == result


async def test_a_registration_becomes_an_ios_device_watching_its_public_relays(make: Callable[..., Any]) -> None:
    harness: Harness = await make()
    user = nostr_sdk.Keys.generate()
    pubkey = user.public_key().to_hex()
    refused = REGISTRY.get_sample_value("pushstr_registration_relays_refused_total", {"reason": "refused"}) or 0.0
    listed = ["wss://relay.example/", "wss://inbox.example", "wss://lan.example", "ws://10.0.0.7:7777", "https://x.io"]
    before = metric("registered")
    await harness.apply(registration(user, TOKEN.upper(), listed))
    (device,) = harness.registry.devices_for(pubkey)
    assert (device.dialect, device.platform, device.app, device.device_token) == ("nos", Platform.IOS, "nos", TOKEN)
    assert (device.kinds, device.mode) == (frozenset({1}), Mode.SILENT)
    # In their one spelling (`relays.urls`); private addresses and non-relay URLs are left out, and the configured
    # relay is watched anyway (the pool is asked for the other one only).
    assert device.relays == ("wss://relay.example/", "wss://inbox.example/")
    assert harness.added == ["wss://inbox.example/"]
    after = REGISTRY.get_sample_value("pushstr_registration_relays_refused_total", {"reason": "refused"}) or 0.0
    assert after == refused + 2
    assert metric("registered") == before + 1

    # The device goes (APNs said it is dead): its relay is let go.
    assert await harness.registry.remove_dead(device)
    await wait_until(lambda: harness.removed == ["wss://inbox.example/"], 5)


async def test_refusals_are_counted_by_reason(make: Callable[..., Any]) -> None:
    harness: Harness = await make()
    alice, mallory = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    alice_hex = alice.public_key().to_hex()
    now = int(time.time())
    handled_now = {
        "not_signer": nos_event(mallory, nos_content(OTHER_TOKEN, alice_hex, [])),  # a foreign publicKey
        "bad_json": nos_event(alice, '{"apnsToken": '),
        "stale": registration(alice, at=now - 2 * 24 * 3600),
    }
    for result, event in handled_now.items():
        before = metric(result)
        harness.dialect.handle(event)
        assert metric(result) == before + 1, result
    future = metric("stale")
    harness.dialect.handle(registration(alice, at=now + 3600))
    assert metric("stale") == future + 1

    bad_token = metric("bad_token")
    harness.dialect.handle(registration(alice, "not-hex"))
    await wait_until(lambda: metric("bad_token") == bad_token + 1, 5)
    assert not harness.registry.devices_for(alice_hex)
    assert not harness.registry.devices_for(mallory.public_key().to_hex())

    # Newest wins: an older registration arriving later changes nothing.
    await harness.apply(registration(alice, relays=["wss://inbox.example"], at=now))
    superseded = metric("superseded")
    harness.dialect.handle(registration(alice, relays=[], at=now - 60))
    await wait_until(lambda: metric("superseded") == superseded + 1, 5)
    assert harness.registry.devices_for(alice_hex)[0].relays == ("wss://inbox.example/",)


async def test_without_an_apns_app_nothing_is_registered(make: Callable[..., Any]) -> None:
    harness: Harness = await make(app=None)
    user = nostr_sdk.Keys.generate()
    before = metric("no_app")
    harness.dialect.handle(registration(user))
    await wait_until(lambda: metric("no_app") == before + 1, 5)
    assert not harness.registry.devices_for(user.public_key().to_hex())
    assert harness.dialect.describe()["platform"] is None


async def test_a_token_moves_to_the_account_that_registered_it_last(make: Callable[..., Any]) -> None:
    harness: Harness = await make()
    first, second = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    first_hex, second_hex = first.public_key().to_hex(), second.public_key().to_hex()
    now = int(time.time())
    replaced = REGISTRY.get_sample_value("pushstr_nos_devices_replaced_total") or 0.0
    await harness.apply(registration(first, relays=["wss://inbox.example"], at=now - 10))
    await harness.apply(registration(second, at=now))
    await wait_until(lambda: not harness.registry.devices_for(first_hex), 5)
    assert [reg.device_token for reg in harness.registry.devices_for(second_hex)] == [TOKEN]
    assert harness.removed == ["wss://inbox.example/"]
    assert REGISTRY.get_sample_value("pushstr_nos_devices_replaced_total") == replaced + 1

    # The first account's older registration, seen again (a relay's catch-up), does not take the phone back.
    superseded = metric("superseded")
    harness.dialect.handle(registration(first, at=now - 10))
    await wait_until(lambda: metric("superseded") == superseded + 1, 5)
    assert not harness.registry.devices_for(first_hex)
    # Another token of the first account is its own device.
    await harness.apply(registration(first, OTHER_TOKEN, at=now))
    assert len(harness.registry.registrations()) == 2


async def test_a_restart_keeps_devices_and_forgets_those_not_registered_again(make: Callable[..., Any]) -> None:
    now = time.time()
    harness: Harness = await make(max_age_seconds=10 * 24 * 3600, forget_after_days=3)
    fresh, old = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    await harness.apply(registration(fresh, relays=["wss://inbox.example"], at=int(now)))
    await harness.apply(registration(old, OTHER_TOKEN, at=int(now) - 2 * 24 * 3600))
    await harness.dialect.stop()

    # Four days on, with `forget_after_days` 5: the device last registered six days ago is removed, the other one
    # is kept and its relay watched again.
    forgotten = REGISTRY.get_sample_value("pushstr_nos_devices_forgotten_total") or 0.0
    later: Harness = await make(clock=lambda: now + 4 * 24 * 3600, forget_after_days=5)
    await wait_until(lambda: len(later.registry.registrations()) == 1, 5)
    (kept,) = later.registry.registrations()
    assert kept.pubkey == fresh.public_key().to_hex() and kept.relays == ("wss://inbox.example/",)
    assert later.added == ["wss://inbox.example/"]
    assert REGISTRY.get_sample_value("pushstr_nos_devices_forgotten_total") == forgotten + 1


async def test_kind_6666_is_asked_of_relays_only_when_subscribe_is_on(make: Callable[..., Any]) -> None:
    assert (await make()).dialect.relay_filters() == ()
    assert (await make(subscribe=True)).dialect.relay_filters() == ({"kinds": [6666]},)


def _context(settings: Settings) -> DialectContext:
    """Only `settings` is read by `build` before the dialect is made; the rest is never touched there."""
    return DialectContext(settings, *([None] * 7))  # type: ignore[arg-type]


def test_build_picks_the_ios_app_and_refuses_an_app_that_cannot_push_apns(tmp_path: Path) -> None:
    base: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}}
    log_app = LogAppConfig().model_dump(mode="json")
    default = build(_context(Settings.model_validate({**base, "apps": {"phone": log_app}})))
    assert default is not None and default.describe()["platform"] == "ios"
    assert build(_context(Settings.model_validate({**base, "dialects": {"nos": {"enabled": False}}}))) is None
    webpush = {"transport": "webpush", "vapid_subject": "mailto:ops@example.com"}
    with pytest.raises(ConfigError, match="cannot push APNs tokens"):
        build(
            _context(Settings.model_validate({**base, "apps": {"web": webpush}, "dialects": {"nos": {"app": "web"}}}))
        )
