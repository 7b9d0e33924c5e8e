"""Users' notification filters (Verse kinds 3081/3082) on SQLite and PostgreSQL: upserted by key, deleted per
user and app, read back at start, and sealed at rest like device tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from pushstr.registry.storage import StoredFilter
from pushstr.store import SqlStore, open_store
from pushstr.store.schema import user_filters
from pushstr.store.sealing import TokenSeal

PUBKEY = "ab" * 32
OTHER = "cd" * 32
MENTIONS = '{"#p":["' + PUBKEY + '"],"kinds":[1,7,9735]}'
GROUP = '{"#h":["pizza-lovers"],"kinds":[9]}'


@pytest.fixture
async def sealed(store_url: str) -> AsyncIterator[SqlStore]:
    store = open_store(store_url, TokenSeal(b"\x01" * 32))
    assert isinstance(store, SqlStore)
    await store.open()
    yield store
    await store.close()


async def test_filters_are_saved_replaced_deleted_and_loaded(sealed: SqlStore) -> None:
    await sealed.save_filter(StoredFilter("default", PUBKEY, "f1", MENTIONS, 100.0))
    await sealed.save_filter(StoredFilter("default", PUBKEY, "f2", GROUP, 100.0))
    await sealed.save_filter(StoredFilter("peek", PUBKEY, "f2", GROUP, 100.0))
    await sealed.save_filter(StoredFilter("default", OTHER, "f1", MENTIONS, 100.0))
    await sealed.save_filter(StoredFilter("default", PUBKEY, "f1", MENTIONS, 200.0))  # the same filter, upserted again
    loaded = sorted(await sealed.load_filters(), key=lambda row: (row.app, row.pubkey, row.filter_id))
    assert loaded == [
        StoredFilter("default", PUBKEY, "f1", MENTIONS, 200.0),
        StoredFilter("default", PUBKEY, "f2", GROUP, 100.0),
        StoredFilter("default", OTHER, "f1", MENTIONS, 100.0),
        StoredFilter("peek", PUBKEY, "f2", GROUP, 100.0),
    ]
    assert await sealed.delete_filters("default", PUBKEY, ["f1", "f2", "unknown"]) == 2
    assert await sealed.delete_filters("default", PUBKEY, []) == 0
    left = {(row.app, row.pubkey) for row in await sealed.load_filters()}
    assert left == {("default", OTHER), ("peek", PUBKEY)}


async def test_a_filter_is_sealed_at_rest_and_does_not_open_under_another_key(sealed: SqlStore, store_url: str) -> None:
    await sealed.save_filter(StoredFilter("default", PUBKEY, "f1", MENTIONS, 100.0))
    async with sealed.engine.connect() as conn:
        (row,) = (await conn.execute(select(user_filters.c.filter_id, user_filters.c.filter_json))).all()
    assert "f1" not in row[0] and "kinds" not in row[1] and PUBKEY not in row[1]
    other = open_store(store_url, TokenSeal(b"\x02" * 32))
    assert isinstance(other, SqlStore)
    await other.open()
    try:
        assert await other.load_filters() == []  # left out, not an error
    finally:
        await other.close()
