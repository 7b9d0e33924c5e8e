"""The store contract, run against SQLite and PostgreSQL alike (see conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from pushstr.registry.model import NO_AUTHORS, Mode, Platform, Registration
from pushstr.registry.storage import OutboxAttempt, OutboxRow, OutboxWrite
from pushstr.store import SqlStore, StoreError, open_store
from pushstr.store.migrations import LATEST_VERSION, MIGRATIONS
from pushstr.store.rows import REGISTRATION_COLUMNS, RowDecoder, registration_to_row
from pushstr.store.schema import registrations, schema_version
from tests.store.helpers import stored_counts, stored_of, stored_registrations


def pubkey(n: int) -> str:
    return f"{n:064x}"


def reg(n: int, token: str | None = None, **changes: Any) -> Registration:
    fields: dict[str, Any] = {
        "pubkey": pubkey(n),
        "device_token": token or f"token-{n}",
        "platform": Platform.ANDROID,
        "app": "default",
    }
    fields.update(changes)
    return Registration(**fields)


async def insert_rows(url: str, regs: Iterable[Registration]) -> None:
    """Write rows straight into the table, bypassing the store (fast bulk setup, or rows it would refuse)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(registrations), [registration_to_row(r) for r in regs])
    finally:
        await engine.dispose()


async def select_rows(url: str) -> Sequence[Sequence[Any]]:
    """Every registration row as stored, in `REGISTRATION_COLUMNS` order, bypassing the store."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(*(registrations.c[name] for name in REGISTRATION_COLUMNS)))).all()
    finally:
        await engine.dispose()


async def scalar(url: str, statement: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(statement))).scalar_one()
    finally:
        await engine.dispose()


async def test_open_migrates_once_and_is_idempotent(store_url: str) -> None:
    for _ in range(2):
        store = open_store(store_url)
        await store.open()
        await store.close()
    engine = create_async_engine(store_url)
    async with engine.connect() as conn:
        versions = (await conn.execute(select(schema_version.c.version).order_by(schema_version.c.version))).all()
    await engine.dispose()
    assert [row[0] for row in versions] == [step.version for step in MIGRATIONS]
    assert versions[-1][0] == LATEST_VERSION


async def test_concurrent_opens_migrate_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.close()
    assert await scalar(store_url, "SELECT count(*) FROM schema_version") == len(MIGRATIONS)


async def test_open_refuses_a_schema_from_a_newer_release(store: SqlStore, store_url: str) -> None:
    engine = create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.execute(insert(schema_version).values(version=LATEST_VERSION + 1, applied_at=0.0))
    await engine.dispose()
    newer = open_store(store_url)
    with pytest.raises(StoreError, match="newer"):
        await newer.open()
    await newer.close()


async def test_registration_round_trips_every_field(store: SqlStore) -> None:
    full = reg(
        1,
        platform=Platform.WEBPUSH,
        app="web",
        dialect="kind22456",
        kinds=frozenset({1, 7, 1059, 30_000}),
        created_at=1_700_000_000.25,
        mode=Mode.ENCRYPTED,
        webpush_p256dh="BNc...",
        webpush_auth="tBH...",
        device_pubkey=pubkey(99),
        groups=(pubkey(20), pubkey(10)),
        authors=frozenset({pubkey(5), pubkey(6)}),
        relays=("wss://b.example", "wss://a.example/path?x=1"),
    )
    bare = reg(2, kinds=frozenset())
    await store.save_registration(full)
    await store.save_registration(bare)
    [loaded] = await stored_of(store, pubkey(1))
    assert loaded == full
    assert loaded.mode is Mode.ENCRYPTED and loaded.groups == (pubkey(20), pubkey(10))  # order kept
    assert await stored_of(store, pubkey(2)) == [bare]
    assert await stored_of(store, pubkey(3)) == []


async def test_list_values_the_encoding_cannot_carry_are_refused(store: SqlStore) -> None:
    for unstorable in ({"groups": ("a b",)}, {"relays": ("",)}, {"authors": frozenset({" x"})}):
        with pytest.raises(ValueError, match="whitespace"):
            await store.save_registration(reg(1, **unstorable))
    assert await stored_of(store, pubkey(1)) == []


async def test_loaded_registrations_share_their_values(store: SqlStore, store_url: str) -> None:
    """A million loaded registrations must not bring a million empty containers, nor equal lists, with them."""
    relays = ("wss://a.example", "wss://b.example")
    await insert_rows(store_url, [*(reg(n) for n in range(20)), *(reg(n, relays=relays) for n in range(20, 40))])
    loaded = [r async for batch in store.iter_registration_batches(batch_size=7) for r in batch]
    bare = [r for r in loaded if not r.relays]
    assert len(bare) == 20
    assert {id(r.authors) for r in loaded} == {id(NO_AUTHORS)}
    assert len({id(r.groups) for r in loaded}) == 1
    assert len({id(r.relays) for r in bare}) == 1
    assert len({id(r.relays) for r in loaded if r.relays}) == 1


async def test_save_is_an_upsert_by_pubkey_and_token(store: SqlStore) -> None:
    await store.save_registration(reg(1, "t", kinds=frozenset({4}), relays=("wss://a.example",)))
    await store.save_registration(reg(1, "t", platform=Platform.IOS, kinds=frozenset({1059}), created_at=5.0))
    await store.save_registration(reg(1, "other"))
    stored = {r.device_token: r for r in await stored_of(store, pubkey(1))}
    assert set(stored) == {"t", "other"}
    assert stored["t"].platform is Platform.IOS
    assert stored["t"].kinds == frozenset({1059})
    assert stored["t"].created_at == 5.0
    assert stored["t"].relays == ()
    assert await stored_counts(store) == {"ios": 1, "android": 1}


@pytest.mark.parametrize("memory_only", [{"persistent": False}, {"persistent": False, "expires_at": 9.0}])
async def test_memory_only_registrations_are_refused(store: SqlStore, memory_only: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="persistent"):
        await store.save_registration(reg(1, **memory_only))
    with pytest.raises(ValueError, match="expires_at"):
        await store.save_registration(reg(1, expires_at=9.0))
    assert await stored_of(store, pubkey(1)) == []


async def test_delete_registration(store: SqlStore) -> None:
    await store.save_registration(reg(1, "t"))
    await store.save_registration(reg(2, "t"))
    assert await store.delete_registration(pubkey(1), "t") is True
    assert await store.delete_registration(pubkey(1), "t") is False
    assert await stored_of(store, pubkey(2)) == [reg(2, "t")]


async def test_delete_token_removes_it_under_every_pubkey(store: SqlStore) -> None:
    shared = [reg(n, "shared-phone") for n in (1, 2, 3)]
    for r in [*shared, reg(1, "tablet"), reg(4, "other")]:
        await store.save_registration(r)
    deleted = await store.delete_token("shared-phone")
    assert sorted(deleted, key=lambda r: r.pubkey) == shared
    assert await store.delete_token("shared-phone") == []
    remaining = sorted((r.pubkey, r.device_token) for r in await stored_registrations(store))
    assert remaining == [(pubkey(1), "tablet"), (pubkey(4), "other")]


async def test_registrations_keep_their_platform(store: SqlStore) -> None:
    assert await stored_counts(store) == {}
    platforms = [Platform.IOS, Platform.IOS, Platform.ANDROID, Platform.UNIFIEDPUSH]
    for n, platform in enumerate(platforms):
        await store.save_registration(reg(n, platform=platform))
    assert await stored_counts(store) == {"ios": 2, "android": 1, "unifiedpush": 1}


async def test_registration_batches_stream_50k_rows(store: SqlStore, store_url: str) -> None:
    total = 50_000
    await insert_rows(store_url, (reg(n, platform=Platform.IOS if n % 3 else Platform.ANDROID) for n in range(total)))
    assert await stored_counts(store) == {"ios": total - (total + 2) // 3, "android": (total + 2) // 3}

    gc.collect()
    tracemalloc.start()
    try:
        seen = 0
        last = None
        async for batch in store.iter_registration_batches(batch_size=1000):
            for item in batch:
                seen += 1
                last = item
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == total
    assert last is not None and last.pubkey == pubkey(int(last.device_token.removeprefix("token-")))
    # 50 000 decoded registrations take well over 20 MB; one batch of 1000 and its rows take a few.
    assert peak < 8_000_000, f"peak {peak} bytes: rows are not streamed"

    keys = {r.key async for batch in store.iter_registration_batches(batch_size=7_777) for r in batch}
    assert keys == {(pubkey(n), f"token-{n}") for n in range(total)}


async def test_streamed_registrations_share_kind_sets(store: SqlStore, store_url: str) -> None:
    await insert_rows(store_url, (reg(n, kinds=frozenset({4, 1059})) for n in range(100)))
    loaded = [r async for batch in store.iter_registration_batches(batch_size=10) for r in batch]
    assert len({id(r.kinds) for r in loaded}) == 1
    assert len({id(r.app) for r in loaded}) == 1


async def test_unreadable_rows_are_skipped(store: SqlStore, store_url: str) -> None:
    await insert_rows(store_url, [reg(1), reg(2), reg(3)])
    engine = create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.execute(registrations.update().where(registrations.c.pubkey == pubkey(2)).values(platform="pager"))
        await conn.execute(registrations.update().where(registrations.c.pubkey == pubkey(3)).values(mode="shouting"))
    await engine.dispose()
    assert [r.pubkey for r in await stored_registrations(store)] == [pubkey(1)]
    assert await stored_of(store, pubkey(2)) == []


async def test_pushed_ids_dedupe_round_trip(store: SqlStore) -> None:
    await store.write_outbox(OutboxWrite(handled=[("a", 100), ("b", 200)]))
    await store.write_outbox(OutboxWrite(handled=[("a", 300), ("c", 300), ("c", 301)]))
    await store.write_outbox(OutboxWrite(handled=[]))
    assert sorted(await store.pushed_since(150)) == ["b", "c"]
    assert sorted(await store.pushed_since(0)) == ["a", "b", "c"]  # "a" kept its first seen_at
    assert await store.forget_pushed(250) == 2
    assert await store.pushed_since(0) == ["c"]
    assert await store.forget_pushed(250) == 0


async def test_handled_ids_in_a_large_batch(store: SqlStore) -> None:
    items = [(f"{n:064x}", 1_000 + n % 10) for n in range(20_000)]
    await store.write_outbox(OutboxWrite(handled=list(items)))
    await store.write_outbox(OutboxWrite(handled=list(items[:5_000])))
    assert len(await store.pushed_since(1_005)) == 10_000
    assert await store.forget_pushed(2_000) == 20_000


async def test_data_survives_close_and_open(store_url: str) -> None:
    first = open_store(store_url)
    await first.open()
    await first.save_registration(reg(1, authors=frozenset({pubkey(2)})))
    await first.write_outbox(OutboxWrite(handled=[("event", 42)]))
    await first.close()
    assert await first.ping() is False

    second = open_store(store_url)
    await second.open()
    try:
        [loaded] = await stored_of(second, pubkey(1))
        assert loaded == reg(1, authors=frozenset({pubkey(2)})) and loaded.authors == {pubkey(2)}
        assert await second.pushed_since(0) == ["event"]
    finally:
        await second.close()


async def test_concurrent_writes_all_land(store: SqlStore) -> None:
    await asyncio.gather(
        *(store.save_registration(reg(n)) for n in range(40)),
        *(store.write_outbox(OutboxWrite(handled=[(f"e{n}", n)])) for n in range(40)),
        *(store.delete_token(f"token-{n}") for n in range(40, 60)),
    )
    assert await stored_counts(store) == {"android": 40}
    assert len(await store.pushed_since(0)) == 40


async def test_ping(store: SqlStore) -> None:
    assert await store.ping() is True


async def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "pushstr.sqlite3"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.close()
    assert path.is_file()
    assert await scalar(f"sqlite+aiosqlite:///{path}", "PRAGMA journal_mode") == "wal"


async def test_unreachable_postgres_fails_clearly() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:9/nowhere")
    assert await store.ping() is False
    with pytest.raises(StoreError, match="cannot open store"):
        await store.open()
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+aiomysql://u@h/db", "unsupported store URL scheme"),
        ("sqlite+pysqlite:///x.db", "not async"),
        ("postgresql+psycopg2://u@h/db", "not async"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_store_url_password_stays_out_of_messages() -> None:
    store = open_store("postgresql://user:secret@127.0.0.1/db")
    assert isinstance(store, SqlStore)
    assert "secret" not in store.safe_url


async def test_schema_indexes_the_device_token(store: SqlStore, store_url: str) -> None:
    """delete_token must not scan the table: the token column is indexed."""

    def index_names(sync_conn: Connection) -> list[str | None]:
        return [index["name"] for index in inspect(sync_conn).get_indexes("registrations")]

    engine = create_async_engine(store_url)
    async with engine.connect() as conn:
        names = await conn.run_sync(index_names)
    await engine.dispose()
    assert "registrations_device_token" in names


async def test_sqlite_directory_that_cannot_be_created_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = open_store(f"sqlite:///{blocker / 'sub' / 'pushstr.sqlite3'}")
    with pytest.raises(StoreError, match="cannot open store"):
        await store.open()
    await store.close()


async def test_registration_batches_hold_at_most_batch_size(store: SqlStore, store_url: str) -> None:
    await insert_rows(store_url, (reg(n) for n in range(25)))
    batches = [batch async for batch in store.iter_registration_batches(batch_size=10)]
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert {r.key for batch in batches for r in batch} == {(pubkey(n), f"token-{n}") for n in range(25)}
    with pytest.raises(ValueError, match="batch_size"):
        await anext(store.iter_registration_batches(batch_size=0))


async def test_batched_rows_decode_like_single_rows(store: SqlStore, store_url: str) -> None:
    """The loader's inlined common case and the full decoder agree on every shape of row."""
    shapes: list[dict[str, Any]] = [
        {},
        {"kinds": frozenset()},
        {"kinds": frozenset({1, 7, 1059, 30_000}), "mode": Mode.ALERT, "created_at": 1_700_000_000.25},
        {"platform": Platform.WEBPUSH, "webpush_p256dh": "BNc", "webpush_auth": "tBH", "app": "web"},
        {"mode": Mode.ENCRYPTED, "device_pubkey": pubkey(7), "dialect": "push-settings"},
        {"groups": ("e" * 64,), "relays": ("wss://a", "wss://b")},
        {"authors": frozenset({pubkey(8), pubkey(9)}), "groups": ("f" * 64, "e" * 64), "mode": Mode.SILENT},
    ]
    regs = [reg(n, **shapes[n % len(shapes)]) for n in range(3 * len(shapes))]
    await insert_rows(store_url, regs)
    batched = {r.key: r async for batch in store.iter_registration_batches(batch_size=4) for r in batch}
    decoder = RowDecoder()
    single = {r.key: r for r in map(decoder.registration, await select_rows(store_url))}
    expected = {r.key: r for r in regs}
    assert batched == single == expected
    for key in expected:
        assert batched[key].mode is single[key].mode
        assert type(batched[key]) is Registration


async def test_an_abandoned_registration_stream_releases_its_connection(store: SqlStore, store_url: str) -> None:
    await insert_rows(store_url, (reg(n) for n in range(30)))
    async with contextlib.aclosing(store.iter_registration_batches(batch_size=10)) as batches:
        assert len(await anext(batches)) == 10
    assert store._engine.pool.checkedout() == 0
    await store.save_registration(reg(99))
    assert await stored_of(store, pubkey(99)) == [reg(99)]


def _row(n: int, **fields: object) -> OutboxRow:
    values: dict[str, object] = {
        "event_id": f"{n:064x}",
        "pubkey": pubkey(n % 3),
        "device_token": f"token-{n % 3}",
        "app": "default",
        "notification": f'{{"n": {n}}}',
        "enqueued_at": 1000.0 + n,
        "expires_at": 90_000.0,
        "next_attempt_at": 1000.0 + n,
    }
    values.update(fields)
    return OutboxRow(**values)  # type: ignore[arg-type]


async def test_outbox_rows_round_trip_retry_and_finish(store: SqlStore) -> None:
    rows = [_row(n) for n in (3, 1, 2)]
    await store.write_outbox(OutboxWrite(added=rows, handled=[(row.event_id, 5) for row in rows]))
    assert await store.load_outbox() == sorted(rows, key=lambda row: row.enqueued_at)  # oldest first
    again = _row(1, notification="changed")
    retry = OutboxAttempt(rows[2].key, 4, 2000.5, "http-503")
    await store.write_outbox(OutboxWrite(added=[again], retried=[retry], finished=[rows[0].key]))
    loaded = {row.key: row for row in await store.load_outbox()}
    assert set(loaded) == {rows[1].key, rows[2].key}
    assert loaded[rows[1].key].notification == '{"n": 1}'  # a key already pending is kept as it is
    assert (loaded[rows[2].key].attempts, loaded[rows[2].key].next_attempt_at) == (4, 2000.5)
    assert loaded[rows[2].key].last_reason == "http-503"
    assert sorted(await store.pushed_since(0)) == sorted(row.event_id for row in rows)


async def test_an_empty_outbox_write_touches_nothing(store: SqlStore) -> None:
    await store.write_outbox(OutboxWrite())
    assert await store.load_outbox() == []
