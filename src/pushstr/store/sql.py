"""The store on SQLAlchemy 2 async Core: SQLite through aiosqlite (the default) and PostgreSQL through asyncpg.

One code path serves both; the few differences (upsert syntax, SQLite's connection pragmas and transaction
start) are settled in the constructor.

SQLite notes. The file runs in WAL mode so the start-up stream of registrations and the API's writes do not
block each other; `synchronous=NORMAL` is safe in WAL (a power cut may lose the last commits, never corrupt
the file), and a lost registration is re-sent by its device. pysqlite's own transaction handling is switched
off so that DDL is transactional too, and write transactions start with `BEGIN IMMEDIATE`: a deferred
transaction that reads and then writes can fail at once with "database is locked" when another connection
committed in between, whereas an immediate one waits for the writer lock under the busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, event, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_

from pushstr.logutil import RateLimitedLog, ident
from pushstr.private_files import private_dir, private_file
from pushstr.registry.model import Registration
from pushstr.registry.storage import DeliveryStatus, HeldPush, OutboxRow, OutboxWrite, StoredFilter
from pushstr.store.errors import StoreError, UnsupportedStoreURL
from pushstr.store.migrations import migrate
from pushstr.store.rows import REGISTRATION_COLUMNS, RowDecoder, registration_to_row
from pushstr.store.schema import (
    handled_shards,
    held_pushes,
    outbox,
    preferences,
    pushed_events,
    registrations,
    registry_changes,
    used_tokens,
    user_filters,
)
from pushstr.store.sealing import PREFIX, UNSEALED, Sealer

logger = logging.getLogger(__name__)

# The async driver each supported database is reached through; a URL naming another driver is refused.
DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
PING_TIMEOUT = 5.0

#: The PostgreSQL notification channel told of every registry change (`enable_change_log`).
CHANGES_CHANNEL = "pushstr_registry"

# Execution option marking connections whose transactions write (SQLite starts them with BEGIN IMMEDIATE).
_WRITE = "pushstr_write"

# How long a connection waits, in all, for another one that is turning a new SQLite file to WAL (see `_enable_wal`).
_WAL_ATTEMPTS = 50
_WAL_RETRY_SECONDS = 0.02


def parse_store_url(url: str) -> URL:
    """The URL with its async driver filled in (`sqlite:///x` means aiosqlite); UnsupportedStoreURL otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedStoreURL(f"store URL is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    driver = DRIVERS.get(backend)
    if driver is None:
        raise UnsupportedStoreURL(
            f"unsupported store URL scheme {parsed.drivername!r}: use sqlite+aiosqlite:///path/to/file.sqlite3 "
            "or postgresql+asyncpg://user@host/database"
        )
    if "+" in parsed.drivername and parsed.get_driver_name() != driver:
        raise UnsupportedStoreURL(f"store URL driver {parsed.drivername!r} is not async; use {backend}+{driver}")
    return parsed.set(drivername=f"{backend}+{driver}")


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    _enable_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted and overwritten content is zeroed rather than left in free pages: a removed device's sealed token,
    # and on the first start of sealing the plain tokens it replaced, do not linger in the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Put the file in WAL mode, waiting out another connection doing the same to a brand-new file.

    Converting takes the writer lock, and SQLite answers "database is locked" at once, without calling the busy
    handler, when a connection already reading would have to wait for it (waiting could deadlock). Only a file
    not yet in WAL mode gets there, when several stores or processes create it together; afterwards the pragma
    changes nothing and never contends. The pause is awaited (this runs in SQLAlchemy's async bridge), so the
    event loop keeps running meanwhile.
    """
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or attempt == _WAL_ATTEMPTS - 1:
                raise
        await_(asyncio.sleep(_WAL_RETRY_SECONDS))


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


_OUTBOX_COLUMNS = tuple(outbox.c[name] for name in OutboxRow.__slots__)


def _outbox_values(row: OutboxRow, seal: Sealer) -> dict[str, object]:
    values = {name: getattr(row, name) for name in OutboxRow.__slots__}
    values["device_token"] = seal.seal(row.device_token)
    return values


def _private_sqlite(database: Path) -> None:
    """The SQLite file and its WAL companions 0600, the database created 0600 before SQLite opens it (SQLite
    gives the `-wal` and `-shm` files it creates the mode of the database file). A missing directory is created
    0700; an existing one is the operator's (pushstr narrows its own data directory at start)."""
    if not database.parent.exists():
        private_dir(database.parent)
    private_file(database)
    for companion in (database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        if companion.exists():
            private_file(companion)


class SqlStore:
    """`Store` on a SQLAlchemy URL: `sqlite+aiosqlite:///…` or `postgresql+asyncpg://…`."""

    def __init__(self, url: str, seal: Sealer = UNSEALED) -> None:
        """`seal` seals device tokens and Web Push keys at rest (`sealing.TokenSeal`, from the server key);
        `UNSEALED` stores them as they are."""
        self._url = parse_store_url(url)
        self._seal = seal
        self.backend = self._url.get_backend_name()
        if self.backend == "sqlite":
            engine = create_async_engine(self._url, connect_args={"timeout": CONNECT_TIMEOUT})
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
            upsert: sqlite.Insert | postgresql.Insert = sqlite.insert(registrations)
            insert_pushed: sqlite.Insert | postgresql.Insert = sqlite.insert(pushed_events).on_conflict_do_nothing()
            insert_outbox: sqlite.Insert | postgresql.Insert = sqlite.insert(outbox).on_conflict_do_nothing()
            insert_token: sqlite.Insert | postgresql.Insert = sqlite.insert(used_tokens).on_conflict_do_nothing()
            upsert_preferences: sqlite.Insert | postgresql.Insert = sqlite.insert(preferences)
            insert_handled: sqlite.Insert | postgresql.Insert = sqlite.insert(handled_shards).on_conflict_do_nothing()
            upsert_held: sqlite.Insert | postgresql.Insert = sqlite.insert(held_pushes)
        else:
            engine = create_async_engine(
                self._url,
                pool_pre_ping=True,
                connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT},
            )
            upsert = postgresql.insert(registrations)
            insert_pushed = postgresql.insert(pushed_events).on_conflict_do_nothing()
            insert_outbox = postgresql.insert(outbox).on_conflict_do_nothing()
            insert_token = postgresql.insert(used_tokens).on_conflict_do_nothing()
            upsert_preferences = postgresql.insert(preferences)
            insert_handled = postgresql.insert(handled_shards).on_conflict_do_nothing()
            upsert_held = postgresql.insert(held_pushes)
        self._insert_handled = insert_handled
        self._log_changes = False
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._closed = False
        self._warn = RateLimitedLog(logger)

        self._upsert = upsert.on_conflict_do_update(
            index_elements=[registrations.c.pubkey, registrations.c.device_token],
            set_={
                column.name: upsert.excluded[column.name]
                for column in registrations.columns
                if column.name not in ("pubkey", "device_token")
            },
        )
        self._upsert_preferences = upsert_preferences.on_conflict_do_update(
            index_elements=[preferences.c.pubkey, preferences.c.device_token],
            set_={
                "preferences": upsert_preferences.excluded.preferences,
                "updated_at": upsert_preferences.excluded.updated_at,
            },
        )
        held, added = held_pushes.c, upsert_held.excluded
        self._add_held = upsert_held.on_conflict_do_update(
            index_elements=[held.pubkey, held.device_token],
            set_={
                "app": added.app,
                "ends_at": case((added.ends_at > held.ends_at, added.ends_at), else_=held.ends_at),
                "count": held.count + added.count,
                "kind": added.kind,
                "mixed": case((or_(held.mixed == 1, added.mixed == 1, held.kind != added.kind), 1), else_=0),
                "notification": added.notification,
            },
        )
        self._insert_pushed = insert_pushed
        self._insert_outbox = insert_outbox
        self._insert_token = insert_token
        key = (
            (outbox.c.event_id == bindparam("k_event"))
            & (outbox.c.pubkey == bindparam("k_pubkey"))
            & (outbox.c.device_token == bindparam("k_token"))
        )
        self._update_outbox = (
            update(outbox)
            .where(key)
            .values(
                attempts=bindparam("attempts"),
                next_attempt_at=bindparam("next_attempt_at"),
                last_reason=bindparam("last_reason"),
            )
        )
        self._delete_outbox = delete(outbox).where(key)
        self._update_status = (
            update(registrations)
            .where(
                (registrations.c.pubkey == bindparam("k_pubkey"))
                & (registrations.c.device_token == bindparam("k_token"))
            )
            .values(last_push_at=bindparam("at"), last_outcome=bindparam("outcome"))
        )
        self._columns = [registrations.c[name] for name in REGISTRATION_COLUMNS]
        self._select_registrations = str(select(*self._columns).compile(dialect=engine.dialect))

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for the cluster's own tables (`store.cluster`)."""
        return self._engine

    def enable_change_log(self) -> None:
        """Record every change of a pubkey's registrations or preferences in `registry_changes`, in the same
        transaction, and notify `CHANGES_CHANNEL` (PostgreSQL): other instances sharing the database re-read
        that pubkey (`cluster.changes`)."""
        if self.backend != "postgresql":
            raise StoreError("the registry change log needs PostgreSQL")
        self._log_changes = True

    async def _log(self, conn: AsyncConnection, pubkeys: Iterable[str]) -> None:
        if not self._log_changes:
            return
        rows = [{"pubkey": pubkey, "changed_at": time.time()} for pubkey in dict.fromkeys(pubkeys)]
        if rows:
            await conn.execute(insert(registry_changes), rows)
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANGES_CHANNEL})

    @property
    def safe_url(self) -> str:
        """The URL without its password, fit for logs and error messages."""
        return self._url.render_as_string(hide_password=True)

    async def open(self) -> None:
        try:
            if self.backend == "sqlite" and self._url.database not in (None, "", ":memory:"):
                _private_sqlite(Path(self._url.database))
            version = await migrate(self._writer)
            if self._seal is not UNSEALED:
                await self._seal_plain_rows()
        except (OSError, SQLAlchemyError) as exc:
            raise StoreError(f"cannot open store {self.safe_url}: {exc}") from exc
        logger.info("store open: %s, schema version %d", self.backend, version)

    async def close(self) -> None:
        self._closed = True
        await self._engine.dispose()

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            self._warn.warning("ping", "store ping failed: %s", type(exc).__name__)
            return False
        return True

    async def save_registration(self, reg: Registration) -> None:
        row = registration_to_row(reg, self._seal)
        async with self._writer.begin() as conn:
            await conn.execute(self._upsert, row)
            await self._log(conn, (reg.pubkey,))

    async def delete_registration(self, pubkey: str, device_token: str) -> bool:
        statement = delete(registrations).where(
            registrations.c.pubkey == pubkey, registrations.c.device_token == self._seal.seal(device_token)
        )
        async with self._writer.begin() as conn:
            result = await conn.execute(statement)
            if result.rowcount:
                await self._log(conn, (pubkey,))
        return result.rowcount > 0

    async def delete_token(self, device_token: str) -> list[Registration]:
        # One statement (DELETE … RETURNING), so the transaction never upgrades from reading to writing.
        sealed = self._seal.seal(device_token)
        statement = delete(registrations).where(registrations.c.device_token == sealed).returning(*self._columns)
        async with self._writer.begin() as conn:
            rows = (await conn.execute(statement)).all()
            await self._log(conn, (str(row[0]) for row in rows))
        return self._decode(rows)

    async def registrations_of(self, pubkey: str) -> list[Registration]:
        statement = select(*self._columns).where(registrations.c.pubkey == pubkey)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return self._decode(rows)

    async def iter_registration_batches(self, batch_size: int = 10_000) -> AsyncGenerator[list[Registration], None]:
        """Stream every registration in lists of up to `batch_size`, one database round trip each.

        Unreadable rows (say, a platform a newer release wrote) are skipped and logged rather than stopping the
        start. Iterate to the end, or close the iterator (`contextlib.aclosing`), to release the connection.

        This is the start-up read of every row. On SQLite, the default, rows come straight from the pooled
        aiosqlite cursor as plain tuples: SQLAlchemy's result layer (a `Row` per row) added about a third to
        the fetch of a million rows, and yielding registrations one by one another async generator step each.
        PostgreSQL keeps SQLAlchemy's streaming through a server-side cursor, inside the transaction it manages.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        decoder = RowDecoder(self._seal)
        async with self._engine.connect() as conn:
            if self.backend == "sqlite":
                batches = self._sqlite_rows(conn, batch_size)
            else:
                batches = self._streamed_rows(conn, batch_size)
            async with contextlib.aclosing(batches):
                async for rows in batches:
                    yield decoder.registrations(rows, self._skip)

    async def _sqlite_rows(self, conn: AsyncConnection, batch_size: int) -> AsyncGenerator[Sequence[Any], None]:
        """Batches of plain tuples from the pooled aiosqlite connection (autocommit: one statement, one snapshot)."""
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is None:
            raise StoreError("the store connection is closed")
        cursor = await driver.execute(self._select_registrations)
        try:
            while rows := await cursor.fetchmany(batch_size):
                yield rows
        finally:
            await cursor.close()

    async def _streamed_rows(self, conn: AsyncConnection, batch_size: int) -> AsyncGenerator[Sequence[Any], None]:
        result = await conn.stream(select(*self._columns).execution_options(yield_per=batch_size))
        async for rows in result.partitions():
            yield rows

    async def write_outbox(self, write: OutboxWrite) -> None:
        if not write:
            return
        seal = self._seal
        async with self._writer.begin() as conn:
            if write.added:
                await conn.execute(self._insert_outbox, [_outbox_values(row, seal) for row in write.added])
            if write.retried:
                params = [
                    {
                        "k_event": attempt.key[0],
                        "k_pubkey": attempt.key[1],
                        "k_token": seal.seal(attempt.key[2]),
                        "attempts": attempt.attempts,
                        "next_attempt_at": attempt.next_attempt_at,
                        "last_reason": attempt.last_reason,
                    }
                    for attempt in write.retried
                ]
                await conn.execute(self._update_outbox, params)
            if write.finished:
                params = [{"k_event": e, "k_pubkey": p, "k_token": seal.seal(t)} for e, p, t in write.finished]
                await conn.execute(self._delete_outbox, params)
            if write.statuses:
                statuses = [
                    {"k_pubkey": s.pubkey, "k_token": seal.seal(s.device_token), "at": s.at, "outcome": s.outcome}
                    for s in write.statuses
                ]
                await conn.execute(self._update_status, statuses)
            if write.handled:
                handled = [{"event_id": event_id, "seen_at": int(seen_at)} for event_id, seen_at in write.handled]
                await conn.execute(self._insert_pushed, handled)
            if write.handled_shards:
                await conn.execute(
                    self._insert_handled,
                    [{"event_id": e, "shard": shard, "seen_at": at} for e, shard, at in write.handled_shards],
                )

    async def delivery_statuses(self, pubkey: str) -> dict[str, DeliveryStatus]:
        columns = registrations.c
        statement = select(columns.device_token, columns.last_push_at, columns.last_outcome).where(
            (columns.pubkey == pubkey) & columns.last_outcome.is_not(None)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        statuses = {}
        for stored, at, outcome in rows:
            token = self._seal.open(stored)
            statuses[token] = DeliveryStatus(pubkey, token, float(at), str(outcome))
        return statuses

    async def load_outbox(self) -> list[OutboxRow]:
        statement = select(*_OUTBOX_COLUMNS).order_by(outbox.c.enqueued_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        pending = []
        for row in rows:
            try:
                pending.append(replace(OutboxRow(*row), device_token=self._seal.open(row.device_token)))
            except ValueError:
                self._warn.warning("outbox-seal", "a pending push whose token does not open was left out")
        return pending

    async def pushed_since(self, since: int) -> list[str]:
        statement = select(pushed_events.c.event_id).where(pushed_events.c.seen_at >= since)
        async with self._engine.connect() as conn:
            return list((await conn.execute(statement)).scalars())

    async def forget_pushed(self, before: int) -> int:
        statement = delete(pushed_events).where(pushed_events.c.seen_at < before)
        async with self._writer.begin() as conn:
            result = await conn.execute(statement)
            await conn.execute(delete(handled_shards).where(handled_shards.c.seen_at < before))
        return int(result.rowcount)

    async def handled_in_shards(self, shards: Collection[int], since: int) -> list[tuple[str, int]]:
        columns = handled_shards.c
        statement = select(columns.event_id, columns.shard).where(
            columns.shard.in_(sorted(shards)), columns.seen_at >= since
        )
        async with self._engine.connect() as conn:
            return [(str(event_id), int(shard)) for event_id, shard in (await conn.execute(statement)).all()]

    async def use_token(self, event_id: str, expires_at: int) -> bool:
        async with self._writer.begin() as conn:
            result = await conn.execute(self._insert_token, {"event_id": event_id, "expires_at": expires_at})
        return int(result.rowcount) == 1

    async def forget_tokens(self, before: int) -> int:
        statement = delete(used_tokens).where(used_tokens.c.expires_at < before)
        async with self._writer.begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    async def save_filter(self, stored: StoredFilter) -> None:
        insert_filter = (sqlite.insert if self.backend == "sqlite" else postgresql.insert)(user_filters)
        statement = insert_filter.on_conflict_do_update(
            index_elements=[user_filters.c.app, user_filters.c.pubkey, user_filters.c.filter_id],
            set_={
                "filter_json": insert_filter.excluded.filter_json,
                "created_at": insert_filter.excluded.created_at,
            },
        )
        row = {
            "app": stored.app,
            "pubkey": stored.pubkey,
            "filter_id": self._seal.seal(stored.filter_id),
            "filter_json": self._seal.seal(stored.filter_json),
            "created_at": stored.created_at,
        }
        async with self._writer.begin() as conn:
            await conn.execute(statement, row)

    async def delete_filters(self, app: str, pubkey: str, filter_ids: Collection[str]) -> int:
        if not filter_ids:
            return 0
        columns = user_filters.c
        statement = delete(user_filters).where(
            columns.app == app,
            columns.pubkey == pubkey,
            columns.filter_id.in_(sorted(self._seal.seal(filter_id) for filter_id in filter_ids)),
        )
        async with self._writer.begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    async def load_filters(self) -> list[StoredFilter]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*user_filters.columns))).all()
        loaded = []
        for app, pubkey, filter_id, filter_json, created_at in rows:
            try:
                opened = self._seal.open(filter_id), self._seal.open(filter_json)
            except ValueError:
                self._warn.warning("filter-seal", "stored filters that do not open were left out")
                continue
            loaded.append(StoredFilter(str(app), str(pubkey), opened[0], opened[1], float(created_at)))
        return loaded

    async def save_preferences(self, pubkey: str, device_token: str, value: bytes) -> None:
        row = {
            "pubkey": pubkey,
            "device_token": self._seal.seal(device_token),
            "preferences": self._seal.seal(value.decode()),  # private mutes are in it
            "updated_at": time.time(),
        }
        async with self._writer.begin() as conn:
            await conn.execute(self._upsert_preferences, row)
            await self._log(conn, (pubkey,))

    async def delete_preferences(self, pubkey: str, device_token: str) -> bool:
        statement = delete(preferences).where(
            preferences.c.pubkey == pubkey, preferences.c.device_token == self._seal.seal(device_token)
        )
        async with self._writer.begin() as conn:
            result = await conn.execute(statement)
            if result.rowcount:
                await self._log(conn, (pubkey,))
        return result.rowcount > 0

    async def preferences_of(self, pubkey: str) -> list[tuple[str, bytes]]:
        columns = preferences.c
        statement = select(columns.device_token, columns.preferences).where(columns.pubkey == pubkey)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        found = []
        for stored, value in rows:
            try:
                found.append((self._seal.open(stored), self._seal.open(str(value)).encode()))
            except ValueError:
                self._warn.warning("preferences-seal", "preferences whose token does not open were left out")
        return found

    async def load_preferences(self) -> list[tuple[str, str, bytes]]:
        columns = preferences.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(columns.pubkey, columns.device_token, columns.preferences))).all()
        loaded = []
        for pubkey, stored, value in rows:
            try:
                loaded.append((str(pubkey), self._seal.open(stored), self._seal.open(str(value)).encode()))
            except ValueError:
                self._warn.warning("preferences-seal", "preferences whose token does not open were left out")
        return loaded

    async def add_held(self, holds: Collection[HeldPush]) -> None:
        seal = self._seal
        rows = [
            {
                "pubkey": hold.pubkey,
                "device_token": seal.seal(hold.device_token),
                "app": hold.app,
                "ends_at": hold.ends_at,
                "count": hold.count,
                "kind": hold.kind,
                "mixed": int(hold.mixed),
                "notification": seal.seal(hold.notification),  # it may carry the event
            }
            for hold in holds
        ]
        if rows:
            async with self._writer.begin() as conn:
                await conn.execute(self._add_held, rows)

    async def take_due_held(self, now: float) -> list[HeldPush]:
        statement = delete(held_pushes).where(held_pushes.c.ends_at <= now).returning(*held_pushes.columns)
        async with self._writer.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return [hold for hold in map(self._held_from, rows) if hold is not None]

    def _held_from(self, row: Any) -> HeldPush | None:
        pubkey, token, app, ends_at, count, kind, mixed, notification = row
        try:
            token, notification = self._seal.open(token), self._seal.open(notification)
        except ValueError:
            self._warn.warning("held-seal", "held pushes whose token does not open were left out")
            return None
        return HeldPush(str(pubkey), token, str(app), float(ends_at), int(count), int(kind), bool(mixed), notification)

    async def _seal_plain_rows(self) -> None:
        """Seal the tokens and Web Push keys of rows stored before sealing (or by a store opened without the
        server key), in one transaction: after the first start of this release no row names a device."""
        reg, box, seal = registrations.c, outbox.c, self._seal
        async with self._writer.begin() as conn:
            plain = (
                await conn.execute(
                    select(reg.pubkey, reg.device_token, reg.webpush_p256dh, reg.webpush_auth).where(
                        reg.device_token.not_like(f"{PREFIX}%")
                    )
                )
            ).all()
            if plain:
                await conn.execute(
                    update(registrations)
                    .where((reg.pubkey == bindparam("k_pubkey")) & (reg.device_token == bindparam("k_token")))
                    .values(
                        device_token=bindparam("sealed"),
                        webpush_p256dh=bindparam("p256dh"),
                        webpush_auth=bindparam("auth"),
                    ),
                    [
                        {
                            "k_pubkey": pubkey,
                            "k_token": token,
                            "sealed": seal.seal(token),
                            "p256dh": seal.seal_optional(p256dh),
                            "auth": seal.seal_optional(auth),
                        }
                        for pubkey, token, p256dh, auth in plain
                    ],
                )
            pending = (
                await conn.execute(
                    select(box.event_id, box.pubkey, box.device_token).where(box.device_token.not_like(f"{PREFIX}%"))
                )
            ).all()
            if pending:
                await conn.execute(
                    update(outbox)
                    .where(
                        (box.event_id == bindparam("k_event"))
                        & (box.pubkey == bindparam("k_pubkey"))
                        & (box.device_token == bindparam("k_token"))
                    )
                    .values(device_token=bindparam("sealed")),
                    [
                        {"k_event": event_id, "k_pubkey": pubkey, "k_token": token, "sealed": seal.seal(token)}
                        for event_id, pubkey, token in pending
                    ],
                )
        if plain or pending:
            if self.backend == "sqlite":  # the old pages, zeroed, into the file; the WAL that held them emptied
                async with self._engine.connect() as conn:  # on the driver: a pragma outside any transaction
                    driver = (await conn.get_raw_connection()).driver_connection
                    if driver is not None:
                        await (await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")).close()
            logger.info("sealed %d stored device tokens and %d pending pushes", len(plain), len(pending))

    def _decode(self, rows: Sequence[Sequence[Any]]) -> list[Registration]:
        decoder = RowDecoder(self._seal)
        decoded = []
        for row in rows:
            try:
                decoded.append(decoder.registration(row))
            except ValueError as exc:
                self._skip(row, exc)
        return decoded

    def _skip(self, row: Sequence[Any], exc: ValueError) -> None:
        self._warn.warning("row", "skipped unreadable registration of %s: %s", ident(str(row[0])), type(exc).__name__)
