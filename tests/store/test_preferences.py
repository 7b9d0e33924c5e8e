"""Stored notification preferences on SQLite and PostgreSQL: upsert, delete, the start-up read, sealed at rest."""

from __future__ import annotations

from sqlalchemy import select

from pushstr.registry.preferences import PreferenceBook, Preferences, QuietHours
from pushstr.store import SqlStore, open_store
from pushstr.store.schema import preferences
from pushstr.store.sealing import TokenSeal

PUBKEY = "ab" * 32


async def test_preferences_are_upserted_read_back_and_deleted(store: SqlStore) -> None:
    await store.save_preferences(PUBKEY, "phone", b'{"reactions": false}')
    await store.save_preferences(PUBKEY, "phone", b'{"reactions": true}')
    await store.save_preferences(PUBKEY, "tablet", b"{}")
    assert sorted(await store.load_preferences()) == [
        (PUBKEY, "phone", b'{"reactions": true}'),
        (PUBKEY, "tablet", b"{}"),
    ]
    assert await store.delete_preferences(PUBKEY, "phone")
    assert not await store.delete_preferences(PUBKEY, "phone")
    assert await store.load_preferences() == [(PUBKEY, "tablet", b"{}")]


async def test_the_device_token_and_the_preferences_are_sealed_at_rest(store_url: str) -> None:
    sealed = open_store(store_url, TokenSeal(bytes(range(32))))
    assert isinstance(sealed, SqlStore)
    await sealed.open()
    try:
        book = PreferenceBook(sealed)
        await book.put(PUBKEY, "secret-apns-token", Preferences(quiet_hours=QuietHours("UTC", 0, 360)))
        async with sealed._engine.connect() as conn:
            stored = (await conn.execute(select(preferences.c.device_token, preferences.c.preferences))).one()
        assert "secret-apns-token" not in stored[0] and "UTC" not in stored[1]
        again = PreferenceBook(sealed)
        assert await again.load(lambda pubkey, token: token == "secret-apns-token") == 1
        assert again.get(PUBKEY, "secret-apns-token").quiet_hours == QuietHours("UTC", 0, 360)
    finally:
        await sealed.close()
