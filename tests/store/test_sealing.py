"""Device tokens and Web Push keys sealed at rest, on both backends: what the tables hold, and that every lookup
by token still works."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.registry.storage import DeliveryStatus, OutboxAttempt, OutboxRow, OutboxWrite
from pushstr.store import SqlStore
from pushstr.store.schema import outbox, registrations
from pushstr.store.sealing import PREFIX, SealError, TokenSeal
from tests.store.helpers import stored_registrations

SEAL = TokenSeal(Keys.generate().secret)
TOKEN = "ab" * 32
ENDPOINT = "https://push.example/wpush/abc"
P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def test_sealing_is_deterministic_and_opens_only_with_its_key() -> None:
    sealed = SEAL.seal(TOKEN)
    assert sealed.startswith(PREFIX) and TOKEN not in sealed
    assert SEAL.seal(TOKEN) == sealed and SEAL.seal(TOKEN + "0") != sealed
    assert SEAL.open(sealed) == TOKEN
    assert SEAL.open(TOKEN) == TOKEN  # stored before sealing: read as it is
    with pytest.raises(SealError):
        TokenSeal(Keys.generate().secret).open(sealed)
    with pytest.raises(SealError):
        SEAL.open(sealed[:-4] + "AAAA")


def _devices() -> list[Registration]:
    return [
        Registration("aa" * 32, TOKEN, Platform.IOS, "default"),
        Registration("bb" * 32, TOKEN, Platform.IOS, "default"),  # one phone, two accounts
        Registration("aa" * 32, ENDPOINT, Platform.WEBPUSH, "web", webpush_p256dh=P256DH, webpush_auth=AUTH),
    ]


def _pending(token: str) -> OutboxRow:
    return OutboxRow("ee" * 32, "aa" * 32, token, "default", "{}", 1.0, 2.0, 1.0)


async def _raw_values(store: SqlStore) -> set[str]:
    """Every token-bearing value as the tables hold it."""
    async with store._engine.connect() as conn:
        regs = (await conn.execute(select(registrations.c.device_token, registrations.c.webpush_p256dh))).all()
        boxes = (await conn.execute(select(outbox.c.device_token))).all()
    return {value for row in [*regs, *boxes] for value in row if value is not None}


async def test_tables_hold_no_token_and_lookups_by_token_work(store_url: str) -> None:
    store = SqlStore(store_url, SEAL)
    await store.open()
    try:
        for reg in _devices():
            await store.save_registration(reg)
        await store.write_outbox(OutboxWrite(added=[_pending(TOKEN)]))
        await store.write_outbox(
            OutboxWrite(
                retried=[OutboxAttempt(_pending(TOKEN).key, 1, 5.0, "retry")],
                statuses=[DeliveryStatus("aa" * 32, TOKEN, 3.0, "delivered")],
            )
        )
        raw = await _raw_values(store)
        assert raw and all(value.startswith(PREFIX) for value in raw)
        assert not {TOKEN, ENDPOINT, P256DH} & raw

        assert sorted(await stored_registrations(store), key=repr) == sorted(_devices(), key=repr)
        assert (await store.load_outbox())[0].device_token == TOKEN
        assert (await store.load_outbox())[0].attempts == 1
        assert list(await store.delivery_statuses("aa" * 32)) == [TOKEN]
        await store.write_outbox(OutboxWrite(finished=[_pending(TOKEN).key]))
        assert await store.load_outbox() == []
        removed = await store.delete_token(TOKEN)
        assert sorted(reg.pubkey for reg in removed) == ["aa" * 32, "bb" * 32]
        assert await store.delete_registration("aa" * 32, ENDPOINT)
        assert await stored_registrations(store) == []
    finally:
        await store.close()


async def test_rows_stored_before_sealing_are_sealed_at_open(store_url: str) -> None:
    plain = SqlStore(store_url)
    await plain.open()
    for reg in _devices():
        await plain.save_registration(reg)
    await plain.write_outbox(OutboxWrite(added=[_pending(TOKEN)]))
    assert TOKEN in await _raw_values(plain)
    await plain.close()

    sealed = SqlStore(store_url, SEAL)
    await sealed.open()
    try:
        assert all(value.startswith(PREFIX) for value in await _raw_values(sealed))
        assert sorted(await stored_registrations(sealed), key=repr) == sorted(_devices(), key=repr)
        assert [row.device_token for row in await sealed.load_outbox()] == [TOKEN]
    finally:
        await sealed.close()
    if store_url.startswith("sqlite"):  # the plain pages were zeroed, not left free in the file or the WAL
        database = Path(make_url(store_url).database or "")
        leftovers = [path.name for path in database.parent.iterdir() if TOKEN.encode() in path.read_bytes()]
        assert leftovers == []


async def test_tokens_sealed_under_another_key_are_skipped_not_fatal(store_url: str) -> None:
    first = SqlStore(store_url, SEAL)
    await first.open()
    await first.save_registration(_devices()[0])
    await first.close()
    other = SqlStore(store_url, TokenSeal(Keys.generate().secret))
    await other.open()
    try:
        assert await stored_registrations(other) == []
    finally:
        await other.close()
