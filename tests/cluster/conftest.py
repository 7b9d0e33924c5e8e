"""Cluster fixtures: the tables several instances share, on a real PostgreSQL database emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pushstr.store import SqlStore
from tests.postgres import postgres_database, reset_schema

__all__ = ["postgres_database"]  # a fixture of these tests

OpenStore = Callable[[], Awaitable[SqlStore]]


@pytest.fixture
async def cluster_db(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    await reset_schema(postgres_database)
    return postgres_database


@pytest.fixture
async def open_store(cluster_db: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the one database, as separate instances would; all closed at the end."""
    opened: list[SqlStore] = []

    async def make() -> SqlStore:
        store = SqlStore(cluster_db)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
