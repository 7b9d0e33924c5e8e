"""The registry change feed: changes made through one instance reach another by PostgreSQL notification, the
cursor neither skips a change committed late nor stalls on a number that never appears."""

from __future__ import annotations

from collections.abc import Sequence

from pushstr.cluster.changes import GAP_SECONDS, ChangeFeed, Cursor
from pushstr.registry.model import Platform, Registration
from pushstr.registry.preferences import PreferenceBook, Preferences
from pushstr.registry.service import Registry
from pushstr.store.cluster import ClusterTables
from tests.cluster.conftest import OpenStore
from tests.harness import wait_until

ALICE = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cursor_waits_for_a_late_commit_and_passes_a_number_that_never_comes() -> None:
    clock = Clock()
    cursor = Cursor(10, clock)
    rows = [(11, "a"), (13, "c")]
    assert cursor.fresh(rows) == rows
    cursor.advance([11, 13])
    assert cursor.floor == 11, "12 may still be committing"
    assert cursor.fresh([*rows, (12, "b")]) == [(12, "b")], "what was read above the floor is not read again"
    cursor.advance([12])
    assert cursor.floor == 13
    cursor.advance([15])
    clock.now += GAP_SECONDS - 1
    cursor.advance([])
    assert cursor.floor == 13
    clock.now += 1
    cursor.advance([])
    assert cursor.floor == 15, "14 was rolled back: passed after the gap time"


async def test_changes_through_one_instance_reach_the_other_by_notification(open_store: OpenStore) -> None:
    writer, reader = await open_store(), await open_store()
    writer.enable_change_log()
    registry = Registry(reader)
    await registry.load()
    book = PreferenceBook(reader)
    applied: list[str] = []

    async def apply(pubkeys: Sequence[str]) -> None:
        for pubkey in pubkeys:
            applied.append(pubkey)
            before = {reg.device_token for reg in registry.devices_for(pubkey)}
            stored = await reader.registrations_of(pubkey)
            await registry.refresh(pubkey, stored)
            tokens = before | {reg.device_token for reg in stored}
            book.refresh(pubkey, tokens, await reader.preferences_of(pubkey))

    # A poll far away: only the notification can bring the changes in time.
    feed = ChangeFeed(ClusterTables(reader.engine), reader.engine, poll_seconds=600, apply=apply)
    await feed.mark()
    feed.start()
    try:
        await wait_until(lambda: feed._listening is not None, 10)
        phone = Registration(ALICE, "phone", Platform.IOS, "default", created_at=1.0)
        await writer.save_registration(phone)
        await wait_until(lambda: registry.device(ALICE, "phone") == phone, 5)
        await writer.save_preferences(ALICE, "phone", Preferences(dms=False).to_json())
        await wait_until(lambda: not book.get(ALICE, "phone").dms, 5)
        await writer.delete_registration(ALICE, "phone")
        await writer.delete_preferences(ALICE, "phone")
        await wait_until(lambda: registry.device(ALICE, "phone") is None and book.get(ALICE, "phone").dms, 5)
        assert set(applied) == {ALICE}
    finally:
        await feed.stop()


async def test_a_lost_notification_heals_at_the_next_poll(open_store: OpenStore) -> None:
    writer, reader = await open_store(), await open_store()
    writer.enable_change_log()
    seen: list[str] = []

    async def apply(pubkeys: Sequence[str]) -> None:
        seen.extend(pubkeys)

    feed = ChangeFeed(ClusterTables(reader.engine), reader.engine, poll_seconds=0.2, apply=apply)
    await feed.mark()
    await writer.save_registration(Registration(ALICE, "phone", Platform.IOS, "default"))  # before anyone listens
    feed.start()
    try:
        await wait_until(lambda: seen == [ALICE], 5)
    finally:
        await feed.stop()


async def test_a_memory_only_device_stays_when_the_store_has_changed(open_store: OpenStore) -> None:
    store = await open_store()
    registry = Registry(store)
    await registry.load()
    local = Registration(ALICE, "trade", Platform.ANDROID, "default", persistent=False)
    await registry.add(local)
    stored = Registration(ALICE, "phone", Platform.IOS, "default")
    assert await registry.refresh(ALICE, [stored])
    assert {reg.device_token for reg in registry.devices_for(ALICE)} == {"trade", "phone"}
    assert not await registry.refresh(ALICE, [stored]), "the same state again changes nothing"
    assert await registry.refresh(ALICE, [])
    assert registry.devices_for(ALICE) == (local,)
