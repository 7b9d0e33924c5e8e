"""The store read as it is, without migrating or creating anything: its schema version, its counts, one user's devices.

Opening a `SqlStore` migrates the schema, seals plain tokens and creates a missing SQLite file; an operator tool
run beside (or before) the gateway must change none of that. These reads go through their own engine instead
and only select.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from pushstr.registry.model import Registration
from pushstr.store.migrations import LATEST_VERSION
from pushstr.store.rows import REGISTRATION_COLUMNS, RowDecoder
from pushstr.store.schema import outbox, registrations, schema_version
from pushstr.store.sealing import Sealer
from pushstr.store.sql import parse_store_url

#: The first schema version with each table counted here.
_REGISTRATIONS_SINCE = 1
_OUTBOX_SINCE = 3


class NoDatabase(Exception):
    """The SQLite file does not exist yet (`serve` creates it at its first start)."""


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    backend: str
    shown_url: str
    version: int
    registrations: int | None
    pending: int | None

    @property
    def latest(self) -> int:
        return LATEST_VERSION


def _missing_sqlite_file(url: URL) -> str | None:
    """The SQLite file `url` names when it does not exist (connecting would create it), else None."""
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists():
        return database
    return None


@asynccontextmanager
async def connected(url: str, timeout: float) -> AsyncIterator[AsyncConnection]:
    """A connection that only reads; NoDatabase for a SQLite file that is not there (it is not created)."""
    parsed = parse_store_url(url)
    if (missing := _missing_sqlite_file(parsed)) is not None:
        raise NoDatabase(missing)
    connect_args = {"timeout": timeout}
    engine = create_async_engine(parsed, connect_args=connect_args, hide_parameters=True)
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _version(conn: AsyncConnection) -> int:
    """The applied schema version; 0 for a database pushstr never set up (no `schema_version` table)."""
    try:
        value = (await conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0)))).scalar_one()
    except SQLAlchemyError:
        await conn.rollback()
        return 0
    return int(value)


async def snapshot(url: str, timeout: float) -> StoreSnapshot:
    """Schema version and row counts; raises NoDatabase, SQLAlchemyError, OSError or TimeoutError."""
    async with connected(url, timeout) as conn:
        version = await _version(conn)
        count_registrations = count_pending = None
        if version >= _REGISTRATIONS_SINCE:
            count_registrations = int(
                (await conn.execute(select(func.count()).select_from(registrations))).scalar_one()
            )
        if version >= _OUTBOX_SINCE:
            count_pending = int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())
    parsed = parse_store_url(url)
    return StoreSnapshot(
        parsed.get_backend_name(),
        parsed.render_as_string(hide_password=True),
        version,
        count_registrations,
        count_pending,
    )


async def registrations_of(url: str, pubkey: str, seal: Sealer, timeout: float) -> list[Registration]:
    """The stored devices of `pubkey`, tokens unsealed with `seal`; unreadable rows are left out.

    Raises SchemaMismatch when the database is not at the schema this pushstr reads.
    """
    async with connected(url, timeout) as conn:
        version = await _version(conn)
        if version != LATEST_VERSION:
            raise SchemaMismatch(version)
        columns = [registrations.c[name] for name in REGISTRATION_COLUMNS]
        rows = (await conn.execute(select(*columns).where(registrations.c.pubkey == pubkey))).all()
    decoder = RowDecoder(seal)
    found = []
    for row in rows:
        try:
            found.append(decoder.registration(tuple(row)))
        except ValueError:
            continue  # sealed under another server key, or a platform a newer release wrote
    return found


class SchemaMismatch(Exception):
    """The database's schema version is not the one this pushstr reads."""

    def __init__(self, version: int) -> None:
        super().__init__(f"store schema version {version}, this pushstr reads {LATEST_VERSION}")
        self.version = version
