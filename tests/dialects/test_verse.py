"""Verse kinds 3079–3082 against a real registry and store: what is registered, moved, deregistered, which filters
are kept and matched, what is refused and why, and what survives a restart. Events are built as the reference
client builds them (tests/dialects/verse_client.py); tests/e2e/test_verse.py pushes through real relays."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest
from prometheus_client import REGISTRY

from pushstr.config import ConfigError, LogAppConfig, Settings, VerseAppConfig, VerseDialectConfig
from pushstr.dialects import verse as verse_module
from pushstr.dialects.base import DialectContext
from pushstr.dialects.verse import RESULTS, Verse, VerseApp, build
from pushstr.logutil import RateLimitedLog
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform
from pushstr.registry.service import Registry
from pushstr.store import SqlStore, open_store
from tests.dialects.verse_client import (
    DELETE,
    DEREGISTER,
    FCM_TOKEN,
    OTHER_TOKEN,
    REGISTER,
    UPSERT,
    as_event,
    pushstr_event,
    verse_event,
)
from tests.harness import wait_until

SERVER = Keys.generate()
KINDS = frozenset({1, 7, 9, 1059, 1111, 9735})


def outcomes() -> dict[str, float]:
    return {
        result: REGISTRY.get_sample_value("pushstr_verse_events_total", {"result": result}) or 0.0 for result in RESULTS
    }


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@dataclass
class Harness:
    registry: Registry
    dialect: Verse
    store: SqlStore
    relay_changes: list[int] = field(default_factory=list)

    async def send(self, event: Any) -> str:
        """Hand one event to the dialect and wait for its outcome (the result it was counted under)."""
        before = outcomes()
        self.dialect.handle(event if isinstance(event, Event) else as_event(event))

        def counted() -> bool:
            return outcomes() != before

        await wait_until(counted, 5)
        (result,) = [name for name, value in outcomes().items() if value != before[name]]
        return result

    def devices(self, user: Any) -> list[Any]:
        return list(self.registry.devices_for(user.public_key().to_hex()))

    def reached(self, event: Any) -> set[tuple[str, str]]:
        return {(found.recipient, found.device.device_token) for found in self.dialect.match(as_event(event))}


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started dialect over a fresh registry (the same store for every call: a restart)."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    assert isinstance(store, SqlStore)
    await store.open()
    dialects: list[Verse] = []

    async def start(
        apps: dict[str, VerseApp] | None = None, clock: Callable[[], float] = time.time, **config: Any
    ) -> Harness:
        registry = Registry(store)
        await registry.load()
        changes: list[int] = []
        dialect = Verse(
            SERVER,
            registry,
            store,
            VerseDialectConfig(**config),
            apps=apps or {"default": VerseApp("fcm", KINDS), "peek": VerseApp("peek-fcm", frozenset({9}))},
            relay_filters_changed=lambda: changes.append(len(dialect.relay_filters())),
            clock=clock,
        )
        await dialect.start()
        dialects.append(dialect)
        return Harness(registry, dialect, store, changes)

    yield start
    for dialect in dialects:
        await dialect.stop()
    await store.close()


def register(user: Any, token: str = FCM_TOKEN, **options: Any) -> Any:
    return verse_event(user, SERVER.public_hex, REGISTER, {"token": token}, **options)


def deregister(user: Any, token: str = FCM_TOKEN, **options: Any) -> Any:
    return verse_event(user, SERVER.public_hex, DEREGISTER, {"token": token}, **options)


def upsert(user: Any, filter_: dict[str, Any], **options: Any) -> Any:
    return verse_event(user, SERVER.public_hex, UPSERT, {"filter": filter_}, **options)


def delete(user: Any, filter_: dict[str, Any], **options: Any) -> Any:
    return verse_event(user, SERVER.public_hex, DELETE, {"filter": filter_}, expiration=None, **options)


def mention(author: Any, user: Any, kind: int = 1) -> Any:
    tags = [nostr_sdk.Tag.parse(["p", user.public_key().to_hex()])]
    later = nostr_sdk.Timestamp.from_secs(int(time.time()) + 1)  # after the filter, made this second
    return nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), "hi").tags(tags).custom_created_at(later).finalize(author)


def mentions_of(user: Any) -> dict[str, Any]:
    return {"kinds": [1, 7, 9735], "#p": [user.public_key().to_hex()]}


async def test_a_registration_makes_an_android_device_pushed_only_through_filters(make: Callable[..., Any]) -> None:
    harness = await make()
    bob, alice = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    assert await harness.send(register(bob)) == "registered"
    (phone,) = harness.devices(bob)
    assert (phone.dialect, phone.platform, phone.app, phone.device_token) == (
        "verse",
        Platform.ANDROID,
        "fcm",
        FCM_TOKEN,
    )
    assert (phone.kinds, phone.mode) == (frozenset(), Mode.ALERT)
    assert harness.reached(mention(alice, bob)) == set()  # no filter yet: nothing reaches it
    assert await harness.send(upsert(bob, mentions_of(bob))) == "filter_saved"
    assert harness.reached(mention(alice, bob)) == {(bob.public_key().to_hex(), FCM_TOKEN)}
    assert harness.reached(mention(alice, bob, kind=4)) == set()  # a kind the filter does not name
    assert harness.dialect.relay_filters()[0] == {"kinds": [3079, 3080, 3081, 3082], "#p": [SERVER.public_hex]}
    assert {"kinds": [1, 7, 9735], "#p": [bob.public_key().to_hex()]} in harness.dialect.relay_filters()
    assert harness.relay_changes[-1] == 2
    # pushstr's own signing and NIP-44, the same way.
    carol = Keys.generate()
    assert await harness.send(pushstr_event(carol, SERVER.public_hex, REGISTER, {"token": OTHER_TOKEN})) == "registered"
    assert [reg.device_token for reg in harness.registry.devices_for(carol.public_hex)] == [OTHER_TOKEN]


async def test_a_token_moves_to_the_pubkey_that_registers_it_last(make: Callable[..., Any]) -> None:
    harness = await make()
    bob, carol = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    now = int(time.time())
    moved = metric("pushstr_verse_tokens_moved_total")
    assert await harness.send(register(bob, at=now - 20)) == "registered"
    assert await harness.send(register(carol, at=now - 10)) == "registered"
    assert harness.devices(bob) == [] and [reg.device_token for reg in harness.devices(carol)] == [FCM_TOKEN]
    assert metric("pushstr_verse_tokens_moved_total") == moved + 1
    # Bob's registration again, but older than Carol's: the token stays with her.
    assert await harness.send(register(bob, at=now - 15)) == "superseded"
    assert harness.devices(bob) == []
    # In another app the same token is another device (the reference partitions by app).
    assert await harness.send(register(bob, app="peek", at=now - 5)) == "registered"
    assert [reg.app for reg in harness.devices(bob)] == ["peek-fcm"] and len(harness.devices(carol)) == 1


async def test_deregistration_removes_the_signers_device_and_with_the_last_one_its_filters(
    make: Callable[..., Any],
) -> None:
    harness = await make()
    bob, mallory, alice = (nostr_sdk.Keys.generate() for _ in range(3))
    now = int(time.time())
    await harness.send(register(bob, at=now - 30))
    await harness.send(register(bob, OTHER_TOKEN, at=now - 30))
    await harness.send(upsert(bob, mentions_of(bob), at=now - 30))
    assert await harness.send(deregister(mallory, at=now - 20)) == "unknown_device"  # not Mallory's token
    assert len(harness.devices(bob)) == 2
    assert await harness.send(deregister(bob, at=now - 20)) == "deregistered"
    assert [reg.device_token for reg in harness.devices(bob)] == [OTHER_TOKEN]
    assert harness.reached(mention(alice, bob)) == {(bob.public_key().to_hex(), OTHER_TOKEN)}  # filters kept
    assert await harness.send(deregister(bob, OTHER_TOKEN, at=now - 20)) == "deregistered"
    assert harness.devices(bob) == [] and len(harness.dialect.relay_filters()) == 1
    assert await harness.store.load_filters() == []
    # A relay's catch-up sends the older events after the newer ones: they bring nothing back.
    assert await harness.send(register(bob, at=now - 30)) == "superseded"
    assert await harness.send(upsert(bob, mentions_of(bob), at=now - 25)) == "superseded"
    assert await harness.send(register(bob, at=now - 10)) == "registered"  # a new registration does


async def test_filters_are_upserted_deleted_and_kept_across_a_restart(make: Callable[..., Any]) -> None:
    harness = await make()
    bob, alice = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    bob_hex = bob.public_key().to_hex()
    now = int(time.time())
    await harness.send(register(bob, at=now - 60))
    group = {"kinds": [9], "#h": ["pizza-lovers"]}
    assert await harness.send(upsert(bob, mentions_of(bob), at=now - 60)) == "filter_saved"
    assert await harness.send(upsert(bob, group, at=now - 60)) == "filter_saved"
    assert await harness.send(upsert(bob, {"#p": [bob_hex], "kinds": [9735, 7, 1]}, at=now - 50)) == "filter_saved"
    assert len(await harness.store.load_filters()) == 2  # the same filter in another order is one filter
    in_group = nostr_sdk.EventBuilder(nostr_sdk.Kind(9), "hi all").tags([nostr_sdk.Tag.parse(["h", "pizza-lovers"])])
    assert harness.reached(in_group.finalize(alice)) == {(bob_hex, FCM_TOKEN)}
    assert harness.reached(in_group.finalize(bob)) == set()  # his own message

    restarted = await make()
    assert restarted.reached(mention(alice, bob)) == {(bob_hex, FCM_TOKEN)}
    assert restarted.dialect.relay_filters() == harness.dialect.relay_filters()
    assert await restarted.send(delete(bob, {"kinds": [7, 9735, 1], "#p": [bob_hex]}, at=now - 40)) == "filter_deleted"
    assert restarted.reached(mention(alice, bob)) == set()
    assert await restarted.send(delete(bob, mentions_of(bob), at=now - 30)) == "unknown_filter"
    assert await restarted.send(upsert(bob, mentions_of(bob), at=now - 45)) == "superseded"  # older than the delete
    assert await restarted.send(delete(bob, group, at=now - 70)) == "superseded"  # older than the upsert
    assert [stored.filter_json for stored in await restarted.store.load_filters()] == [
        '{"#h":["pizza-lovers"],"kinds":[9]}'
    ]


async def test_what_is_refused_and_why(make: Callable[..., Any]) -> None:
    harness = await make(max_filters_per_user=2)
    bob = nostr_sdk.Keys.generate()
    me = bob.public_key().to_hex()
    now = int(time.time())
    refused = {
        "unknown_app": register(bob, app="universes"),
        "not_for_us": register(bob, p="cd" * 32),
        "missing_tag": register(bob, p=None),
        "expired": register(bob, expiration=now - 1),
        "stale": register(bob, at=now - 4 * 86_400),
        "bad_token": register(bob, "has spaces in it"),
        "bad_json": verse_event(bob, SERVER.public_hex, REGISTER, {"fcm": FCM_TOKEN}),
        "kind_not_allowed": upsert(bob, {"kinds": [1], "#p": [me]}, app="peek"),
        "too_broad": upsert(bob, {"kinds": [1]}),
        "bad_filter": upsert(bob, {"kinds": [1], "#p": [me], "search": "x"}),
        "unknown_device": deregister(bob),
    }
    for result, event in refused.items():
        assert await harness.send(event) == result, result
    future = verse_event(bob, SERVER.public_hex, REGISTER, {"token": FCM_TOKEN}, at=now + 3600)
    assert await harness.send(future) == "stale"
    assert harness.devices(bob) == []
    for group in ("a", "b"):
        assert await harness.send(upsert(bob, {"kinds": [9], "#h": [group]})) == "filter_saved"
    assert await harness.send(upsert(bob, {"kinds": [9], "#h": ["c"]})) == "too_many_filters"
    # Oversize: a filter over max_filter_bytes.
    large = {"kinds": [1], "authors": [f"{index:064x}" for index in range(300)]}
    assert await harness.send(upsert(bob, large)) == "too_large"


async def test_an_app_no_fcm_app_can_push_refuses_its_events(make: Callable[..., Any]) -> None:
    harness = await make(apps={"default": VerseApp(None, KINDS)})
    bob = nostr_sdk.Keys.generate()
    assert await harness.send(register(bob)) == "no_app"
    assert harness.dialect.describe()["apps"] == {"default": {"platform": None, "allowed_kinds": sorted(KINDS)}}


async def test_the_sweep_forgets_old_devices_and_filters_nobody_is_pushed_for(make: Callable[..., Any]) -> None:
    now = [time.time()]
    harness = await make(clock=lambda: now[0], forget_after_days=90, max_age_seconds=3600)
    bob, carol = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    await harness.send(register(bob))
    await harness.send(upsert(bob, mentions_of(bob)))
    await harness.send(upsert(carol, mentions_of(carol)))  # Carol has no device
    forgotten = metric("pushstr_verse_devices_forgotten_total")
    now[0] += 2 * 3600
    await harness.dialect._sweep()
    assert len(harness.devices(bob)) == 1 and [stored.pubkey for stored in await harness.store.load_filters()] == [
        bob.public_key().to_hex()
    ]
    now[0] += 91 * 86_400
    await harness.dialect._sweep()
    assert harness.devices(bob) == [] and await harness.store.load_filters() == []
    assert metric("pushstr_verse_devices_forgotten_total") == forgotten + 1


def _context(settings: Settings, tmp_path: Path) -> DialectContext:
    """`build` reads the settings, the server keys, the registry and the filter store (not touched yet)."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite3'}")
    unused: Any = None
    return DialectContext(
        settings,
        SERVER,
        Registry(store),
        unused,
        unused,
        unused,
        unused,
        unused,
        filters=store,
        relay_filters_changed=lambda: None,
    )


def test_build_maps_each_verse_app_to_its_own_fcm_app(tmp_path: Path) -> None:
    base: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}}
    fcm = {"transport": "fcm", "service_account_file": str(tmp_path / "sa.json")}
    apps = {"universes-fcm": fcm, "peek-fcm": fcm, "phone": LogAppConfig().model_dump(mode="json")}
    verse = {"apps": {"universes": {"app": "universes-fcm"}, "peek": {"app": "peek-fcm", "allowed_kinds": [9]}}}
    dialect = build(_context(Settings.model_validate({**base, "apps": apps, "dialects": {"verse": verse}}), tmp_path))
    assert dialect is not None
    described = dialect.describe()["apps"]
    assert described["peek"] == {"platform": "android", "allowed_kinds": [9]}
    assert described["universes"]["allowed_kinds"] == sorted(VerseAppConfig().allowed_kinds)
    # By default one app, `default`, pushed with the android platform's app.
    default = build(_context(Settings.model_validate(base), tmp_path))
    assert default is not None and set(default.describe()["apps"]) == {"default"}
    off = Settings.model_validate({**base, "dialects": {"verse": {"enabled": False}}})
    assert build(_context(off, tmp_path)) is None
    shared = {"apps": {"a": {"app": "peek-fcm"}, "b": {"app": "peek-fcm"}}}
    with pytest.raises(ConfigError, match="both push with app 'peek-fcm'"):
        build(_context(Settings.model_validate({**base, "apps": apps, "dialects": {"verse": shared}}), tmp_path))
    webpush = {"transport": "webpush", "vapid_subject": "mailto:ops@example.com"}
    web = {"apps": {"default": {"app": "web"}}}
    with pytest.raises(ConfigError, match="cannot push FCM tokens"):
        build(
            _context(Settings.model_validate({**base, "apps": {"web": webpush}, "dialects": {"verse": web}}), tmp_path)
        )


async def test_refusals_are_logged_without_the_token(
    make: Callable[..., Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh rate limit: nothing is suppressed because an earlier test logged the same reason.
    monkeypatch.setattr(verse_module, "_rate_log", RateLimitedLog(verse_module.log))
    harness = await make()
    bob, carol = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    now = int(time.time())
    secret_token = "secret:APA91b-do-not-log-me"
    with caplog.at_level("INFO", logger="pushstr.dialects.verse"):
        assert await harness.send(register(carol, secret_token, at=now - 5)) == "registered"
        assert await harness.send(register(bob, secret_token, at=now - 10)) == "superseded"
        assert await harness.send(register(bob, secret_token + " x")) == "bad_token"
        assert await harness.send(deregister(bob, secret_token)) == "unknown_device"
        assert (
            await harness.send(upsert(bob, {"kinds": [1], "#p": ["x"], "secret:APA91b-field": ["y"]})) == "bad_filter"
        )
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4
    assert not any("APA91b" in line or bob.public_key().to_hex() in line for line in lines)
