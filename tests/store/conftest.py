"""Store fixtures: every store test runs against SQLite and a real PostgreSQL.

PostgreSQL is reached at `PUSHSTR_TEST_POSTGRES_URL` (default: the local trust-auth server). Each test session
creates its own database and drops it at the end; each test starts from an empty `public` schema. When the
server cannot be reached the PostgreSQL tests fail: CI has one, and a silent skip would hide a broken backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushstr.store import SqlStore, open_store
from tests.postgres import postgres_database, reset_schema

__all__ = ["postgres_database"]  # a fixture of these tests


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of each backend; the SQLite file sits in directories that do not exist yet."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'nested' / 'pushstr.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def store_url(backend_url: str) -> str:
    """`backend_url`, emptied."""
    if backend_url.startswith("postgresql"):
        await reset_schema(backend_url)
    return backend_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    opened = open_store(store_url)
    assert isinstance(opened, SqlStore)
    await opened.open()
    yield opened
    await opened.close()
