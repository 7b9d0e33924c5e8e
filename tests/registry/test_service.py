"""Registry: the store and the index kept in step, limits, listeners, expiry and dead-token pruning."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.store import SqlStore
from tests.store.helpers import stored_counts, stored_registrations

ALICE = "a" * 64
BOB = "b" * 64


def reg(pubkey: str = ALICE, token: str = "phone-token", **changes: Any) -> Registration:
    fields: dict[str, Any] = {"pubkey": pubkey, "device_token": token, "platform": Platform.IOS, "app": "default"}
    fields.update(changes)
    return Registration(**fields)


class FlakyStore(SqlStore):
    """A real store whose writes can be made to fail, as a lost database connection would."""

    failing = False

    async def save_registration(self, reg: Registration) -> None:
        if self.failing:
            raise OSError("connection lost")
        await super().save_registration(reg)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    store = FlakyStore(f"sqlite+aiosqlite:///{tmp_path / 'pushstr.sqlite3'}")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def registry(store: FlakyStore) -> Registry:
    registry = Registry(store, max_devices_per_pubkey=3)
    await registry.load()
    return registry


async def stored(store: SqlStore) -> set[tuple[str, str]]:
    return {r.key for r in await stored_registrations(store)}


async def test_persistent_registration_is_stored_and_reloaded(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(kinds=frozenset({4}), relays=("wss://x",)))
    assert registry.devices_for(ALICE) == (reg(kinds=frozenset({4}), relays=("wss://x",)),)
    assert await stored(store) == {(ALICE, "phone-token")}

    fresh = Registry(store)
    assert await fresh.load() == 1
    assert fresh.devices_for(ALICE) == (reg(kinds=frozenset({4}), relays=("wss://x",)),)
    assert fresh.devices_for(ALICE)[0].relays == ("wss://x",)
    assert fresh.interest() == {frozenset({4}): frozenset({ALICE})}


async def test_memory_only_registration_never_reaches_the_store(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(persistent=False))
    assert registry.is_registered(ALICE)
    assert await stored(store) == set()
    await registry.load()  # a reload keeps what only memory knows
    assert registry.is_registered(ALICE)
    fresh = Registry(store)
    await fresh.load()
    assert not fresh.is_registered(ALICE)


async def test_replacing_stored_with_memory_only_deletes_the_stored_copy(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg())
    await registry.add(reg(persistent=False, mode="encrypted"))
    assert [r.mode for r in registry.devices_for(ALICE)] == ["encrypted"]
    assert await stored(store) == set()


async def test_add_replaces_the_same_key(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(platform=Platform.IOS))
    await registry.add(reg(platform=Platform.ANDROID, created_at=10.0))
    assert registry.registrations_of(ALICE) == [reg(platform=Platform.ANDROID, created_at=10.0)]
    assert registry.counts() == {"android": 1}
    assert await stored_counts(store) == {"android": 1}


async def test_device_limit(registry: Registry) -> None:
    for n in range(3):
        await registry.add(reg(token=f"t{n}"))
    with pytest.raises(TooManyDevices) as raised:
        await registry.add(reg(token="t3", persistent=False))
    assert raised.value.limit == 3
    await registry.add(reg(token="t1", created_at=5.0))  # re-registering a known device is allowed
    await registry.add(reg(pubkey=BOB, token="t3"))  # the limit is per pubkey
    assert len(registry.devices_for(ALICE)) == 3


async def test_concurrent_adds_cannot_overshoot_the_limit(registry: Registry) -> None:
    results = await asyncio.gather(*(registry.add(reg(token=f"t{n}")) for n in range(10)), return_exceptions=True)
    assert sum(isinstance(result, TooManyDevices) for result in results) == 7
    assert len(registry.devices_for(ALICE)) == 3


async def test_failed_store_write_leaves_the_index_alone(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(kinds=frozenset({4})))
    version = registry.version
    store.failing = True
    with pytest.raises(OSError, match="connection lost"):
        await registry.add(reg(kinds=frozenset({1059})))
    with pytest.raises(OSError, match="connection lost"):
        await registry.add(reg(pubkey=BOB))
    assert registry.devices_for(ALICE) == (reg(kinds=frozenset({4})),)
    assert not registry.is_registered(BOB)
    assert registry.version == version


async def test_persistent_registration_with_a_lifetime_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match="expires_at"):
        await registry.add(reg(expires_at=100.0))
    assert not registry.is_registered(ALICE)


async def test_remove(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(token="stored"))
    await registry.add(reg(token="memory", persistent=False))
    assert await registry.remove(ALICE, "stored") is True
    assert await registry.remove(ALICE, "memory") is True
    assert await registry.remove(ALICE, "memory") is False
    assert not registry.is_registered(ALICE)
    assert await stored(store) == set()


async def test_remove_reaches_rows_this_instance_never_loaded(registry: Registry, store: FlakyStore) -> None:
    await store.save_registration(reg(pubkey=BOB))  # written by another instance sharing the database
    assert await registry.remove(BOB, "phone-token") is True
    assert await stored(store) == set()


async def test_remove_token_across_pubkeys(registry: Registry, store: FlakyStore) -> None:
    await registry.add(reg(ALICE, "shared"))
    await registry.add(reg(BOB, "shared", persistent=False))
    await registry.add(reg(BOB, "own"))
    assert await registry.remove_token("shared") == 2
    assert registry.devices_for(ALICE) == ()
    assert registry.devices_for(BOB) == (reg(BOB, "own"),)
    assert await stored(store) == {(BOB, "own")}
    assert await registry.remove_token("shared") == 0


async def test_remove_dead_respects_a_newer_registration(registry: Registry, store: FlakyStore) -> None:
    old = reg(created_at=1_000.0)
    await registry.add(old)
    await registry.add(reg(created_at=2_000.0))  # the app registered the same token again at t=2000
    assert await registry.remove_dead(old, provider_timestamp=1_500.0) is False
    assert await registry.remove_dead(old) is False  # the push was planned for the older registration
    assert registry.is_registered(ALICE)
    assert await registry.remove_dead(old, provider_timestamp=2_500.0) is True
    assert not registry.is_registered(ALICE)
    assert await stored(store) == set()
    assert await registry.remove_dead(old, provider_timestamp=2_500.0) is False


async def test_remove_dead_without_a_timestamp(registry: Registry) -> None:
    current = reg(created_at=1_000.0, persistent=False)
    await registry.add(current)
    assert await registry.remove_dead(current) is True
    assert not registry.is_registered(ALICE)


async def test_expire_drops_only_due_memory_only_registrations(registry: Registry) -> None:
    await registry.add(reg(token="due", persistent=False, expires_at=100.0))
    await registry.add(reg(token="later", persistent=False, expires_at=300.0))
    await registry.add(reg(token="forever"))
    assert registry.expire(now=50.0) == 0
    assert registry.expire(now=200.0) == 1
    assert sorted(r.device_token for r in registry.devices_for(ALICE)) == ["forever", "later"]
    assert registry.expire() == 1  # the wall clock is far past t=300
    assert [r.device_token for r in registry.devices_for(ALICE)] == ["forever"]


async def test_listeners_and_version(registry: Registry) -> None:
    calls: list[int] = []
    unsubscribe = registry.subscribe(lambda: calls.append(registry.version))
    start = registry.version
    await registry.add(reg())
    await registry.remove(ALICE, "phone-token")
    await registry.remove(ALICE, "phone-token")  # nothing changed: no call
    assert calls == [start + 1, start + 2]
    unsubscribe()
    unsubscribe()
    await registry.add(reg())
    assert calls == [start + 1, start + 2]
    assert registry.version == start + 3


async def test_a_failing_listener_does_not_break_registration(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    calls: list[str] = []
    registry.subscribe(broken)
    registry.subscribe(lambda: calls.append("ok"))
    await registry.add(reg())
    assert registry.is_registered(ALICE)
    assert calls == ["ok"]
    assert "listener failed" in caplog.text


async def test_interest_follows_changes(registry: Registry) -> None:
    await registry.add(reg(ALICE, "p", kinds=frozenset({4})))
    await registry.add(reg(BOB, "p", kinds=frozenset({4, 1059})))
    before = registry.interest()
    assert before == {frozenset({4}): frozenset({ALICE}), frozenset({4, 1059}): frozenset({BOB})}
    await registry.add(reg(ALICE, "q", kinds=frozenset({1059})))
    assert registry.interest() == {frozenset({4, 1059}): frozenset({ALICE, BOB})}


async def test_logs_never_carry_raw_pubkeys_or_tokens(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pushstr")
    token = "secret-device-token"
    await registry.add(reg(token=token, created_at=1.0))
    await registry.remove_dead(reg(token=token, created_at=1.0), provider_timestamp=2.0)
    await registry.add(reg(token=token, persistent=False, expires_at=1.0))
    registry.expire(now=5.0)
    await registry.add(reg(token=token))
    await registry.remove_token(token)
    await registry.load()
    ours = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("pushstr."))
    assert "registered" in ours and "pruned" in ours and "expired" in ours
    assert ALICE not in ours
    assert token not in ours


async def test_load_pauses_the_collector_and_restores_it(store: FlakyStore) -> None:
    for n in range(3):
        await store.save_registration(reg(token=f"t{n}"))
    assert await Registry(store).load() == 3
    assert gc.isenabled()
    gc.disable()
    try:
        registry = Registry(store)
        assert await registry.load() == 3
        assert not gc.isenabled()  # a caller that paused it (Service.start) keeps it paused
    finally:
        gc.enable()
    assert {r.key for r in registry.registrations()} == await stored(store)


async def test_load_restores_every_field_and_keeps_memory_only_registrations(registry: Registry) -> None:
    stored_one = reg(ALICE, "a", kinds=frozenset({4}), mode=Mode.ALERT, created_at=3.0, groups=("e" * 64,))
    stored_two = reg(ALICE, "b", platform=Platform.WEBPUSH, webpush_p256dh="k", webpush_auth="s")
    stored_three = reg(BOB, "a", dialect="push-settings", device_pubkey="d" * 64)
    memory_only = reg(BOB, "m", persistent=False, expires_at=1e12)
    for item in (stored_one, stored_two, stored_three, memory_only):
        await registry.add(item)
    assert await registry.load() == 3
    loaded = {r.key: r for r in registry.registrations()}
    assert loaded == {r.key: r for r in (stored_one, stored_two, stored_three, memory_only)}
    assert loaded[stored_one.key].groups == stored_one.groups
    assert registry.devices_for_group("e" * 64) == (stored_one,)
    assert registry.counts() == {"ios": 3, "webpush": 1}
    # the hot-path lookups follow the new index, and keep following it
    assert registry.devices_for(BOB) == (stored_three, memory_only)
    await registry.add(reg(BOB, "c", groups=("e" * 64,)))
    assert [r.device_token for r in registry.devices_for(BOB)] == ["a", "m", "c"]
    assert [r.key for r in registry.devices_for_group("e" * 64)] == [(ALICE, "a"), (BOB, "c")]
