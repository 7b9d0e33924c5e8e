"""Versioned schema migrations: an ordered list of steps, each applied once, each in its own transaction.

Steps are plain SQL in the subset SQLite and PostgreSQL share, frozen once released: `schema.py` describes the
current shape for queries, while a step describes a change, so adding a column later means appending a step,
never editing an old one. `schema_version` holds one row per applied step.

Several processes may open the same database at once (instances sharing PostgreSQL, or a restart overlapping
the old process on SQLite). Every step therefore runs under the database's writer lock (a transaction-scoped
advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) and re-reads the version under that lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pushstr.store.base import StoreError
from pushstr.store.schema import schema_version

logger = logging.getLogger(__name__)

# An arbitrary constant naming pushstr's migration lock among PostgreSQL advisory locks.
_PG_LOCK_KEY = 0x7075_7368_7374_72


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "registrations and pushed event ids",
        (
            """
            CREATE TABLE registrations (
                pubkey TEXT NOT NULL,
                device_token TEXT NOT NULL,
                platform TEXT NOT NULL,
                app TEXT NOT NULL,
                dialect TEXT NOT NULL,
                kinds TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                mode TEXT,
                webpush_p256dh TEXT,
                webpush_auth TEXT,
                device_pubkey TEXT,
                extra TEXT,
                PRIMARY KEY (pubkey, device_token)
            )
            """,
            "CREATE INDEX registrations_device_token ON registrations (device_token)",
            "CREATE TABLE pushed_events (event_id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
            "CREATE INDEX pushed_events_seen_at ON pushed_events (seen_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
)


async def _lock(conn: AsyncConnection) -> None:
    """Serialize migrations across processes; SQLite already holds its writer lock (`BEGIN IMMEDIATE`)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


async def _current_version(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0)))).scalar_one())


async def migrate(engine: AsyncEngine) -> int:
    """Apply the steps the database lacks; the schema version it ends at.

    `engine` must open SQLite transactions with `BEGIN IMMEDIATE` (see `SqlStore`), so that the version read
    and the step that follows cannot interleave with another process doing the same.
    """
    async with engine.begin() as conn:
        await _lock(conn)
        await conn.execute(text(_CREATE_VERSION_TABLE))
        version = await _current_version(conn)
    if version > LATEST_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this pushstr understands ({LATEST_VERSION}); "
            "upgrade pushstr or point it at another database"
        )
    for step in MIGRATIONS:
        async with engine.begin() as conn:
            await _lock(conn)
            if await _current_version(conn) >= step.version:
                continue
            for statement in step.statements:
                await conn.execute(text(statement))
            await conn.execute(insert(schema_version).values(version=step.version, applied_at=time.time()))
        logger.info("store schema migrated to version %d: %s", step.version, step.description)
    return LATEST_VERSION
