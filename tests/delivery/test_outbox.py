"""The outbox on a real store: group commits, rows elided when a push is final before its commit, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pushstr.delivery.outbox import Outbox
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.storage import OutboxWrite
from pushstr.store import SqlStore, open_store
from pushstr.transports.base import Notification

ALICE = "a" * 64


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = open_store(f"sqlite+aiosqlite:///{tmp_path / 'outbox.sqlite3'}")
    await opened.open()
    yield opened  # type: ignore[misc]
    await opened.close()


def _device(token: str = "phone", persistent: bool = True) -> Registration:
    return Registration(ALICE, token, Platform.IOS, "app", persistent=persistent)


def _note(n: int, **fields: object) -> Notification:
    values: dict[str, object] = {
        "event_id": f"{n:064x}",
        "kind": 1059,
        "recipient": ALICE,
        "sender": None,
        "created_at": 1_700_000_000 + n,
        "app": "app",
        "mode": Mode.ALERT_EVENT,
        "event_json": b'{"id": "x"}',
        "relay": "wss://relay.example",
        "conversation": "c",
        "extra": {"sats": "21"},
    }
    values.update(fields)
    return Notification(**values)  # type: ignore[arg-type]


async def _outbox(store: SqlStore, max_pending: int = 100) -> Outbox:
    outbox = Outbox(store, max_pending=max_pending, commit_interval=0.001)
    await outbox.start()
    return outbox


async def test_a_push_final_before_its_commit_is_never_written(store: SqlStore) -> None:
    outbox = await _outbox(store)
    try:
        outbox.record(_note(1).event_id)
        assert outbox.add(_note(1), _device(), 3600)
        outbox.finish(_note(1), _device(), "delivered")
        await outbox.durable()
    finally:
        await outbox.close()
    assert await store.load_outbox() == []
    assert await store.pushed_since(0) == [_note(1).event_id]


async def test_pending_rows_are_committed_updated_and_deleted(store: SqlStore) -> None:
    outbox = await _outbox(store)
    try:
        assert outbox.add(_note(1), _device(), 3600)
        await outbox.durable()
        (row,) = await store.load_outbox()
        assert (row.event_id, row.pubkey, row.device_token, row.app, row.attempts) == (
            _note(1).event_id,
            ALICE,
            "phone",
            "app",
            0,
        )
        assert row.expires_at == pytest.approx(row.enqueued_at + 3600)
        outbox.retrying(_note(1), _device(), 2, row.enqueued_at + 30, "http-503")
        await outbox.durable()
        (retried,) = await store.load_outbox()
        assert (retried.attempts, retried.last_reason) == (2, "http-503")
        outbox.finish(_note(1), _device(), "delivered")
        await outbox.durable()
        assert await store.load_outbox() == []
    finally:
        await outbox.close()


async def test_recovery_brings_back_the_notification_as_it_was(store: SqlStore) -> None:
    first = await _outbox(store)
    merged = _note(2, count=2, merged=(_note(1).event_id,))
    assert first.add(merged, _device(), 3600)
    await first.close()
    second = await _outbox(store)
    try:
        recovered = await second.recover()
        assert len(second) == 2
        assert sorted(row.event_id for row, _ in recovered) == sorted(merged.event_ids)
        _row, notification = recovered[0]
        assert (notification.mode, notification.event_json, notification.extra) == (
            Mode.ALERT_EVENT,
            b'{"id": "x"}',
            {"sats": "21"},
        )
        for row, _ in recovered:
            second.forget(row)
        await second.durable()
        assert len(second) == 0 and await store.load_outbox() == []
    finally:
        await second.close()


async def test_memory_only_devices_never_reach_the_disk(store: SqlStore) -> None:
    outbox = await _outbox(store)
    try:
        assert outbox.add(_note(1), _device(persistent=False), 3600)
        await outbox.durable()
        assert len(outbox) == 1 and await store.load_outbox() == []
        outbox.finish(_note(1), _device(persistent=False), "delivered")
        assert len(outbox) == 0
    finally:
        await outbox.close()


async def test_a_full_outbox_refuses_and_counts(store: SqlStore) -> None:
    before = REGISTRY.get_sample_value("pushstr_push_dropped_total", {"app": "app", "reason": "outbox_full"}) or 0.0
    outbox = await _outbox(store, max_pending=2)
    try:
        assert outbox.add(_note(1), _device("one"), 60) and outbox.add(_note(1), _device("two"), 60)
        assert not outbox.add(_note(1), _device("three"), 60)
        assert outbox.add(_note(1), _device("one"), 60)  # already pending: taken as it is
    finally:
        await outbox.close()
    after = REGISTRY.get_sample_value("pushstr_push_dropped_total", {"app": "app", "reason": "outbox_full"})
    assert after == before + 1


class FlakyStore:
    """A store whose first write fails, as a locked or unreachable database would."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.failures = 1
        self.failed = asyncio.Event()

    async def write_outbox(self, write: OutboxWrite) -> None:
        if self.failures:
            self.failures -= 1
            self.failed.set()
            raise OSError("database is locked")
        await self.inner.write_outbox(write)


async def test_a_failed_commit_loses_nothing(store: SqlStore) -> None:
    flaky = FlakyStore(store)
    outbox = Outbox(flaky, max_pending=10, commit_interval=0.001)  # type: ignore[arg-type]
    await outbox.start()
    try:
        assert outbox.add(_note(1), _device(), 3600)
        await asyncio.wait_for(flaky.failed.wait(), 5)
        assert outbox.add(_note(2), _device(), 3600)
        await asyncio.wait_for(outbox.durable(), 10)
    finally:
        await outbox.close()
    assert sorted(row.event_id for row in await store.load_outbox()) == [_note(1).event_id, _note(2).event_id]


async def test_the_gauges_show_depth_and_drain_to_zero(store: SqlStore) -> None:
    outbox = await _outbox(store)
    labels = {"app": "gauged"}
    try:
        for n in range(3):
            assert outbox.add(_note(n, app="gauged"), _device(), 3600)
        assert REGISTRY.get_sample_value("pushstr_outbox_pending", labels) == 3
        assert (REGISTRY.get_sample_value("pushstr_outbox_oldest_seconds", labels) or 0.0) >= 0.0
        for n in range(3):
            outbox.finish(_note(n, app="gauged"), _device(), "delivered")
        assert REGISTRY.get_sample_value("pushstr_outbox_pending", labels) == 0
    finally:
        await outbox.close()
    assert REGISTRY.get_sample_value("pushstr_outbox_pending", labels) is None


async def test_with_pushes_kept_in_memory_only_the_handled_ids_are_written(store: SqlStore) -> None:
    outbox = Outbox(store, max_pending=10, commit_interval=0.001, keep_pushes=False)
    await outbox.start()
    try:
        outbox.record(_note(1).event_id)
        assert outbox.add(_note(1), _device(), 3600)
        await outbox.durable()
        assert len(outbox) == 1 and await store.load_outbox() == []
    finally:
        await outbox.close()
    assert await store.pushed_since(0) == [_note(1).event_id]


async def test_a_devices_status_is_written_once_per_outcome_and_minute(store: SqlStore) -> None:
    now = [1000.0]
    await store.save_registration(_device())
    outbox = Outbox(store, max_pending=10, commit_interval=0.001, clock=lambda: now[0])
    await outbox.start()
    try:
        for n, (at, outcome) in enumerate([(1000.0, "delivered"), (1010.0, "delivered"), (1020.0, "dead")]):
            now[0] = at
            outbox.finish(_note(n), _device(), outcome)
            await outbox.durable()
            status = (await store.delivery_statuses(ALICE))["phone"]
            assert (status.at, status.outcome) == ((1000.0, "delivered") if n < 2 else (1020.0, "dead"))
    finally:
        await outbox.close()
