"""Durable state: registrations and the ids of events already pushed, in SQLite or PostgreSQL."""

from __future__ import annotations

from pushstr.registry.storage import Store
from pushstr.store.errors import StoreError, UnsupportedStoreURL
from pushstr.store.sealing import UNSEALED, Sealer
from pushstr.store.sql import SqlStore

__all__ = ["SqlStore", "Store", "StoreError", "UnsupportedStoreURL", "open_store"]


def open_store(url: str, seal: Sealer = UNSEALED) -> Store:
    """The store for a SQLAlchemy URL (`Settings.store_url`); await its `open()` before use.

    `sqlite:///…` and `postgresql://…` get their async drivers (aiosqlite, asyncpg) filled in. Any other
    database, or a synchronous driver, raises UnsupportedStoreURL naming the URLs that work. `seal` seals
    device tokens and Web Push keys at rest (the service passes one derived from the server key).
    """
    return SqlStore(url, seal)
