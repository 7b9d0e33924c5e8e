"""Pushes held in quiet hours, stored on SQLite and PostgreSQL: one row per device that adds up, taken once when the
window ends, sealed at rest — and the same rules in `MemoryHolds`, the stage's store when it has none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pushstr.engine.policy import MemoryHolds
from pushstr.registry.storage import HeldPush
from pushstr.store import SqlStore, open_store
from pushstr.store.schema import held_pushes
from pushstr.store.sealing import TokenSeal
from tests.postgres import reset_schema

PUBKEY = "ab" * 32
OTHER = "cd" * 32


def hold(pubkey: str, ends_at: float, kind: int = 4, count: int = 1, note: str = "first") -> HeldPush:
    return HeldPush(pubkey, "phone", "ios", ends_at, count, kind, False, f'{{"note": "{note}"}}')


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
async def holds(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str
) -> AsyncIterator[SqlStore | MemoryHolds]:
    """Each store of held pushes: the SQL store on both backends, and the stage's own without one."""
    if request.param == "memory":
        yield MemoryHolds()
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'pushstr.sqlite3'}"
    if request.param == "postgresql":
        url = postgres_database
        await reset_schema(url)
    store = open_store(url)
    assert isinstance(store, SqlStore)
    await store.open()
    yield store
    await store.close()


async def test_holds_of_one_device_add_up_and_the_latest_wins(holds: SqlStore | MemoryHolds) -> None:
    await holds.add_held([hold(PUBKEY, 100.0)])
    await holds.add_held([hold(PUBKEY, 90.0, count=2, note="second")])  # an earlier end never shortens the window
    assert await holds.take_due_held(99.0) == []
    (taken,) = await holds.take_due_held(100.0)
    assert (taken.count, taken.kind, taken.mixed, taken.ends_at) == (3, 4, False, 100.0)
    assert taken.notification == '{"note": "second"}'
    assert await holds.take_due_held(1e12) == [], "a row is taken once"


async def test_kinds_that_differ_mark_the_row_mixed(holds: SqlStore | MemoryHolds) -> None:
    await holds.add_held([hold(PUBKEY, 100.0, kind=4)])
    await holds.add_held([hold(PUBKEY, 100.0, kind=7), hold(OTHER, 200.0, kind=1)])
    taken = {row.pubkey: row for row in await holds.take_due_held(300.0)}
    assert (taken[PUBKEY].mixed, taken[PUBKEY].kind, taken[PUBKEY].count) == (True, 7, 2)
    assert (taken[OTHER].mixed, taken[OTHER].count) == (False, 1)


async def test_only_rows_whose_window_ended_are_taken(holds: SqlStore | MemoryHolds) -> None:
    await holds.add_held([hold(PUBKEY, 100.0), hold(OTHER, 200.0)])
    assert [row.pubkey for row in await holds.take_due_held(150.0)] == [PUBKEY]
    assert [row.pubkey for row in await holds.take_due_held(250.0)] == [OTHER]


async def test_memory_holds_are_bounded_per_device() -> None:
    holds = MemoryHolds(limit=1)
    await holds.add_held([hold(PUBKEY, 100.0)])
    await holds.add_held([hold(OTHER, 100.0), hold(PUBKEY, 100.0)])  # a second device is refused, the first adds
    assert [(row.pubkey, row.count) for row in await holds.take_due_held(100.0)] == [(PUBKEY, 2)]


async def test_the_token_and_the_notification_are_sealed_at_rest(store_url: str) -> None:
    sealed = open_store(store_url, TokenSeal(bytes(range(32))))
    assert isinstance(sealed, SqlStore)
    await sealed.open()
    try:
        await sealed.add_held([HeldPush(PUBKEY, "secret-apns-token", "ios", 5.0, 1, 4, False, '{"preview": "hi"}')])
        async with sealed._engine.connect() as conn:
            token, notification = (
                await conn.execute(select(held_pushes.c.device_token, held_pushes.c.notification))
            ).one()
        assert "secret-apns-token" not in token and "preview" not in notification
        (taken,) = await sealed.take_due_held(5.0)
        assert (taken.device_token, taken.notification) == ("secret-apns-token", '{"preview": "hi"}')
    finally:
        await sealed.close()
