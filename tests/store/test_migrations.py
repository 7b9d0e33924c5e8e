"""Upgrading a database written by an older release, on SQLite and PostgreSQL alike (see conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from pushstr.registry.model import NO_AUTHORS, Mode, Platform, Registration
from pushstr.store import migrations, open_store
from pushstr.store.migrations import MIGRATIONS
from pushstr.store.rows import REGISTRATION_COLUMNS
from pushstr.store.schema import schema_version
from tests.store.helpers import stored_registrations

ALICE = "a" * 64
BOB = "b" * 64
GROUP_1 = "1" * 64
GROUP_2 = "2" * 64
AUTHOR_1 = "c" * 64
AUTHOR_2 = "d" * 64

# Rows as version 1 wrote them: every column, `extra` as JSON text or NULL.
V1_ROWS: list[dict[str, Any]] = [
    {
        "pubkey": ALICE,
        "device_token": "http-phone",
        "platform": "ios",
        "app": "default",
        "dialect": "http",
        "kinds": "1,4,1059,9735",
        "created_at": 1_700_000_000.5,
        "mode": None,
        "webpush_p256dh": None,
        "webpush_auth": None,
        "device_pubkey": None,
        "extra": None,
    },
    {
        "pubkey": ALICE,
        "device_token": "0xchat-phone",
        "platform": "android",
        "app": "oxchat",
        "dialect": "push-settings",
        "kinds": "4,42,1059",
        "created_at": 1_700_000_001.0,
        "mode": "alert",
        "webpush_p256dh": None,
        "webpush_auth": None,
        "device_pubkey": None,
        "extra": (
            f'{{"groups": "{GROUP_2} {GROUP_1}", "authors": "{AUTHOR_2}  {AUTHOR_1}",'
            ' "relays": "wss://relay.example wss://other.example/x"}'
        ),
    },
    {
        "pubkey": BOB,
        "device_token": "https://push.example/endpoint",
        "platform": "webpush",
        "app": "web",
        "dialect": "http",
        "kinds": "4",
        "created_at": 5.0,
        "mode": "encrypted",
        "webpush_p256dh": "BNc",
        "webpush_auth": "tBH",
        "device_pubkey": "e" * 64,
        "extra": '{"relays": "wss://relay.example", "device_id": "only version 1 knew this"}',
    },
    {
        "pubkey": BOB,
        "device_token": "mostro-token",
        "platform": "android",
        "app": "mostro",
        "dialect": "mostro",
        "kinds": "1059",
        "created_at": 6.0,
        "mode": "silent",
        "webpush_p256dh": None,
        "webpush_auth": None,
        "device_pubkey": None,
        "extra": '{"source": "an unknown key"}',
    },
    # Rows version 1 could not read (it skipped them at every start): they go.
    {
        "pubkey": BOB,
        "device_token": "not-an-object",
        "platform": "ios",
        "app": "default",
        "dialect": "http",
        "kinds": "4",
        "created_at": 7.0,
        "mode": None,
        "webpush_p256dh": None,
        "webpush_auth": None,
        "device_pubkey": None,
        "extra": "[1]",
    },
    {
        "pubkey": BOB,
        "device_token": "not-strings",
        "platform": "ios",
        "app": "default",
        "dialect": "http",
        "kinds": "4",
        "created_at": 8.0,
        "mode": None,
        "webpush_p256dh": None,
        "webpush_auth": None,
        "device_pubkey": None,
        "extra": '{"groups": 5}',
    },
]

EXPECTED = [
    Registration(
        ALICE, "http-phone", Platform.IOS, "default", "http-nip98", frozenset({1, 4, 1059, 9735}), 1_700_000_000.5
    ),
    Registration(
        ALICE,
        "0xchat-phone",
        Platform.ANDROID,
        "oxchat",
        "push-settings",
        frozenset({4, 42, 1059}),
        1_700_000_001.0,
        Mode.ALERT,
        groups=(GROUP_2, GROUP_1),
        authors=frozenset({AUTHOR_1, AUTHOR_2}),
        relays=("wss://relay.example", "wss://other.example/x"),
    ),
    Registration(
        BOB,
        "https://push.example/endpoint",
        Platform.WEBPUSH,
        "web",
        "http-nip98",
        frozenset({4}),
        5.0,
        Mode.ENCRYPTED,
        "BNc",
        "tBH",
        "e" * 64,
        relays=("wss://relay.example",),
    ),
    Registration(BOB, "mostro-token", Platform.ANDROID, "mostro", "mostro", frozenset({1059}), 6.0, Mode.SILENT),
]


async def write_version_1(url: str) -> None:
    """A database exactly as version 1 left it: its step applied, recorded, and `V1_ROWS` in the table."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database is not None
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            [step] = [step for step in MIGRATIONS if step.version == 1]
            for statement in step.statements:
                assert isinstance(statement, str)
                await conn.execute(text(statement))
            await conn.run_sync(schema_version.create)
            await conn.execute(schema_version.insert().values(version=1, applied_at=0.0))
            columns = ", ".join(V1_ROWS[0])
            values = ", ".join(f":{name}" for name in V1_ROWS[0])
            await conn.execute(text(f"INSERT INTO registrations ({columns}) VALUES ({values})"), V1_ROWS)
    finally:
        await engine.dispose()


async def table_state(url: str) -> tuple[list[int], set[str]]:
    """The applied schema versions and the columns of `registrations`."""

    def columns(sync_conn: Connection) -> set[str]:
        return {column["name"] for column in inspect(sync_conn).get_columns("registrations")}

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version FROM schema_version ORDER BY version"))).scalars()
            return list(versions), await conn.run_sync(columns)
    finally:
        await engine.dispose()


async def test_version_1_database_is_migrated_with_every_field(store_url: str) -> None:
    await write_version_1(store_url)
    store = open_store(store_url)
    await store.open()
    try:
        loaded = {reg.key: reg for reg in await stored_registrations(store)}
    finally:
        await store.close()
    assert loaded == {reg.key: reg for reg in EXPECTED}
    for expected in EXPECTED:
        got = loaded[expected.key]
        # `==` cannot tell a str from a Mode, so the decoded types are checked on their own.
        assert got.mode is expected.mode
        assert type(got.groups) is tuple and type(got.relays) is tuple and type(got.authors) is frozenset
    assert loaded[(BOB, "mostro-token")].authors is NO_AUTHORS

    versions, columns = await table_state(store_url)
    assert versions == [step.version for step in MIGRATIONS]
    assert columns == {*REGISTRATION_COLUMNS, "last_push_at", "last_outcome"}
    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as conn:
            authors = await conn.execute(text("SELECT authors FROM registrations WHERE device_token = '0xchat-phone'"))
            assert authors.scalar_one() == f"{AUTHOR_1} {AUTHOR_2}"  # the form the store writes: sorted
    finally:
        await engine.dispose()


async def test_a_failing_migration_step_leaves_the_database_as_it_was(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_version_1(store_url)

    def fail(conn: Connection) -> None:
        raise RuntimeError("power cut")

    broken = tuple(
        dataclasses.replace(step, statements=(*step.statements, fail)) if step.version == 2 else step
        for step in MIGRATIONS
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", broken)
    store = open_store(store_url)
    with pytest.raises(RuntimeError, match="power cut"):
        await store.open()
    await store.close()
    versions, columns = await table_state(store_url)
    assert versions == [1]
    assert "extra" in columns and "relays" not in columns
    engine = create_async_engine(store_url)
    try:
        async with engine.connect() as conn:
            dialects = (await conn.execute(text("SELECT dialect FROM registrations"))).scalars().all()
    finally:
        await engine.dispose()
    assert sorted(dialects) == sorted(row["dialect"] for row in V1_ROWS)

    monkeypatch.undo()
    store = open_store(store_url)
    await store.open()
    try:
        assert {reg.key: reg for reg in await stored_registrations(store)} == {reg.key: reg for reg in EXPECTED}
    finally:
        await store.close()
