"""Pushes pending at a shutdown are resumed by the next start, once each and in order per device."""

from __future__ import annotations

from pathlib import Path

from pushstr.delivery.batch import Timing
from pushstr.delivery.dispatcher import Dispatcher
from pushstr.delivery.outbox import Outbox
from pushstr.delivery.stage import Delivery
from pushstr.registry.model import Platform, Registration
from pushstr.store import open_store
from pushstr.transports.base import Notification, SendResult
from tests.delivery.test_dispatcher import ScriptedTransport, _lane

DEVICES = {token: Registration("a" * 64, token, Platform.ANDROID, "app") for token in ("one", "two")}


async def _no_dead(_device: Registration, _stamp: float | None) -> None:
    raise AssertionError("no push here reports a dead token")


def _delivery(store: object, transport: ScriptedTransport) -> tuple[Delivery, Dispatcher]:
    outbox = Outbox(store, max_pending=100, commit_interval=0.001)  # type: ignore[arg-type]
    dispatcher = Dispatcher({"app": _lane(transport, backoff_base_seconds=0.01)}, _no_dead, ledger=outbox)
    delivery = Delivery({"app": Timing()}, dispatcher, {"app": transport}, outbox=outbox, ttls={"app": 3600})
    return delivery, dispatcher


def _note(n: int) -> Notification:
    return Notification(f"{n:064x}", 4, "a" * 64, "b" * 64, n, "app")


async def test_pending_pushes_survive_a_shutdown_and_resume_in_order(tmp_path: Path) -> None:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    await store.open()
    try:
        down = ScriptedTransport([SendResult.retry("unavailable", 503)] * 100)
        delivery, _dispatcher = _delivery(store, down)
        await delivery.start()
        for n in range(6):
            assert delivery.submit(_note(n), DEVICES["one" if n % 2 else "two"])
        await delivery.durable()
        await delivery.close(timeout=0.05)
        assert len(await store.load_outbox()) == 6

        up = ScriptedTransport([SendResult.delivered(200)] * 6)
        delivery, dispatcher = _delivery(store, up)
        await delivery.start(lambda pubkey, token: DEVICES.get(token))
        assert await dispatcher.idle(10)
        await delivery.durable()
        await delivery.close()
        assert await store.load_outbox() == []
    finally:
        await store.close()
    sent = [body.body.split(b":")[0].decode() for body in up.sent]
    assert sorted(sent) == sorted(_note(n).event_id for n in range(6))  # each once
    per_device = [[e for e in sent if int(e, 16) % 2 == parity] for parity in (0, 1)]
    assert per_device == [[_note(n).event_id for n in range(parity, 6, 2)] for parity in (0, 1)]
