"""Versioned schema migrations: an ordered list of steps, each applied once, each in its own transaction.

A step is a sequence of SQL statements in the subset SQLite and PostgreSQL share and, where data must be
reshaped in ways that subset cannot express (parsing JSON, say), Python functions run on the same connection
inside the step's transaction. Steps are frozen once released: `schema.py` describes the current shape for
queries, while a step describes a change, so adding a column later means appending a step, never editing an
old one. For the same reason a Python action is written out in full here and never calls into the code that
follows the current schema (`rows.py`): that code moves on, a released step must not. `schema_version` holds
one row per applied step.

Several processes may open the same database at once (instances sharing PostgreSQL, or a restart overlapping
the old process on SQLite). Every step therefore runs under the database's writer lock (a transaction-scoped
advisory lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) and re-reads the version under that lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pushstr.store.errors import StoreError
from pushstr.store.schema import schema_version

logger = logging.getLogger(__name__)

# An arbitrary constant naming pushstr's migration lock among PostgreSQL advisory locks.
_PG_LOCK_KEY = 0x7075_7368_7374_72


PythonAction = Callable[[Connection], None]
"""A migration action in Python: given the step's (synchronous) connection, inside the step's transaction."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str | PythonAction, ...]
    """Run in order: a string is one SQL statement, a callable a `PythonAction`."""


def _split_extra(conn: Connection) -> None:
    """Version 2: copy `groups`, `authors` and `relays` out of each row's `extra` JSON into their own columns.

    Version 1 stored them as `{"groups": "id id", "authors": "…", "relays": "…"}`, each value space-separated;
    the new columns hold the same words single-space-joined (`authors` sorted), NULL when there are none. Other
    keys had no reader and go with the column. A row whose `extra` is not a JSON object of strings was skipped
    by every version 1 start, so it never had an effect; it is deleted rather than brought back without the
    `authors` that narrowed it.
    """
    rows = conn.execute(text("SELECT pubkey, device_token, extra FROM registrations WHERE extra IS NOT NULL"))
    updates: list[dict[str, str | None]] = []
    unreadable: list[dict[str, str]] = []
    for pubkey, device_token, extra in rows.all():
        try:
            value = orjson.loads(extra)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            unreadable.append({"pubkey": pubkey, "device_token": device_token})
            continue
        authors = sorted(set(value.get("authors", "").split()))
        updates.append(
            {
                "pubkey": pubkey,
                "device_token": device_token,
                "groups": " ".join(value.get("groups", "").split()) or None,
                "authors": " ".join(authors) or None,
                "relays": " ".join(value.get("relays", "").split()) or None,
            }
        )
    key = "pubkey = :pubkey AND device_token = :device_token"
    if updates:
        conn.execute(
            text(f'UPDATE registrations SET "groups" = :groups, authors = :authors, relays = :relays WHERE {key}'),
            updates,
        )
    if unreadable:
        conn.execute(text(f"DELETE FROM registrations WHERE {key}"), unreadable)
        logger.warning("store migration deleted %d registrations with an unreadable extra column", len(unreadable))


def _change_numbers(conn: Connection) -> None:
    """Version 6: on PostgreSQL, registry changes are numbered by a sequence (SQLite, which never runs several
    instances, would number an INTEGER PRIMARY KEY itself; this column is BIGINT, so it gets no numbers there)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("CREATE SEQUENCE registry_changes_seq OWNED BY registry_changes.seq"))
        conn.execute(text("ALTER TABLE registry_changes ALTER COLUMN seq SET DEFAULT nextval('registry_changes_seq')"))


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
    Migration(
        2,
        "typed groups, authors and relays columns instead of extra; dialect 'http' renamed 'http-nip98'",
        (
            # Quoted: GROUPS is a keyword in both databases (window frames), if not a reserved one.
            'ALTER TABLE registrations ADD COLUMN "groups" TEXT',
            "ALTER TABLE registrations ADD COLUMN authors TEXT",
            "ALTER TABLE registrations ADD COLUMN relays TEXT",
            _split_extra,
            "ALTER TABLE registrations DROP COLUMN extra",
            "UPDATE registrations SET dialect = 'http-nip98' WHERE dialect = 'http'",
        ),
    ),
    Migration(
        3,
        "the outbox: pushes matched and not yet final; each device's last delivery outcome",
        (
            """
            CREATE TABLE outbox (
                event_id TEXT NOT NULL,
                pubkey TEXT NOT NULL,
                device_token TEXT NOT NULL,
                app TEXT NOT NULL,
                notification TEXT NOT NULL,
                enqueued_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                next_attempt_at DOUBLE PRECISION NOT NULL,
                attempts BIGINT NOT NULL,
                last_reason TEXT,
                PRIMARY KEY (event_id, pubkey, device_token)
            )
            """,
            "ALTER TABLE registrations ADD COLUMN last_push_at DOUBLE PRECISION",
            "ALTER TABLE registrations ADD COLUMN last_outcome TEXT",
        ),
    ),
    Migration(
        4,
        "NIP-98 authorization ids already used, kept until their window has passed",
        (
            "CREATE TABLE used_tokens (event_id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
            "CREATE INDEX used_tokens_expires_at ON used_tokens (expires_at)",
        ),
    ),
    Migration(
        5,
        "notification preferences per device",
        (
            """
            CREATE TABLE preferences (
                pubkey TEXT NOT NULL,
                device_token TEXT NOT NULL,
                preferences TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (pubkey, device_token)
            )
            """,
        ),
    ),
    Migration(
        6,
        "several instances: instances and shard leases, the registry change log, handled events per shard",
        (
            """
            CREATE TABLE cluster_instances (
                instance_id TEXT PRIMARY KEY,
                server_pubkey TEXT NOT NULL,
                public_url TEXT,
                started_at DOUBLE PRECISION NOT NULL,
                heartbeat_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE shard_leases (
                shard BIGINT PRIMARY KEY,
                owner TEXT,
                expires_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE registry_changes (
                seq BIGINT PRIMARY KEY,
                pubkey TEXT NOT NULL,
                changed_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX registry_changes_changed_at ON registry_changes (changed_at)",
            _change_numbers,
            """
            CREATE TABLE handled_shards (
                event_id TEXT NOT NULL,
                shard BIGINT NOT NULL,
                seen_at BIGINT NOT NULL,
                PRIMARY KEY (event_id, shard)
            )
            """,
            "CREATE INDEX handled_shards_seen_at ON handled_shards (seen_at)",
        ),
    ),
    Migration(
        7,
        "pushes held in a device's quiet hours, coalesced per device until the window ends",
        (
            """
            CREATE TABLE held_pushes (
                pubkey TEXT NOT NULL,
                device_token TEXT NOT NULL,
                app TEXT NOT NULL,
                ends_at DOUBLE PRECISION NOT NULL,
                count BIGINT NOT NULL,
                kind BIGINT NOT NULL,
                mixed BIGINT NOT NULL,
                notification TEXT NOT NULL,
                PRIMARY KEY (pubkey, device_token)
            )
            """,
        ),
    ),
    Migration(
        8,
        "users' notification filters (Verse kinds 3081 and 3082)",
        (
            """
            CREATE TABLE user_filters (
                app TEXT NOT NULL,
                pubkey TEXT NOT NULL,
                filter_id TEXT NOT NULL,
                filter_json TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (app, pubkey, filter_id)
            )
            """,
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
                if isinstance(statement, str):
                    await conn.execute(text(statement))
                else:
                    await conn.run_sync(statement)
            await conn.execute(insert(schema_version).values(version=step.version, applied_at=time.time()))
        logger.info("store schema migrated to version %d: %s", step.version, step.description)
    return LATEST_VERSION
