"""The delivery entry point end to end with the log transport: what the service uses before any push service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from pushstr.config import LogAppConfig, LogTransportConfig, Settings, TransportsConfig
from pushstr.delivery.batch import Timing
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer
from pushstr.delivery.stage import Delivery, build_delivery
from pushstr.logutil import ident
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Encoded, Notification, Rendered, SendResult

RECIPIENT = "a" * 64


def _device(token: str = "tok-1") -> Registration:
    return Registration(pubkey=RECIPIENT, device_token=token, platform=Platform.ANDROID, app="default")


def _note(event_id: str, app: str = "default") -> Notification:
    return Notification(event_id=event_id, kind=1059, recipient=RECIPIENT, sender=None, created_at=1, app=app)


async def _no_dead(_device: Registration, _stamp: float | None) -> None:
    raise AssertionError("the log transport never reports a dead token")


async def test_log_delivery_writes_one_line_per_push_and_drains_on_close(tmp_path: Path) -> None:
    out = tmp_path / "push.log"
    settings = Settings(transports=TransportsConfig(log=LogTransportConfig(path=str(out), identities=True)))
    delivery = build_delivery(settings, Keys.generate(), _no_dead)
    assert delivery.transport_names == ["log"]
    assert delivery.vapid_public_key is None
    await delivery.start()
    for n in range(20):
        assert delivery.submit(_note(f"{n:064x}"), _device())
    await delivery.close(timeout=5.0)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(line["event_id"] for line in lines) == sorted(f"{n:064x}" for n in range(20))
    assert all(line["device"] == _device().token_id for line in lines)
    assert "tok-1" not in out.read_text()


async def test_by_default_the_log_names_no_recipient_and_no_event(tmp_path: Path) -> None:
    out = tmp_path / "push.log"
    settings = Settings(transports=TransportsConfig(log=LogTransportConfig(path=str(out))))
    delivery = build_delivery(settings, Keys.generate(), _no_dead)
    await delivery.start()
    note = _note("ab" * 32)
    assert delivery.submit(note, _device())
    await delivery.close(timeout=5.0)
    (line,) = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert line["event_id"] == ident(note.event_id, 16) and line["recipient"] == ident(note.recipient, 16)
    assert note.event_id not in out.read_text() and note.recipient not in out.read_text()


async def test_unknown_app_is_refused(tmp_path: Path) -> None:
    settings = Settings(transports=TransportsConfig(log=LogTransportConfig(path=str(tmp_path / "x.log"))))
    delivery = build_delivery(settings, Keys.generate(), _no_dead)
    await delivery.start()
    try:
        assert not delivery.submit(_note("00" * 32, app="nope"), _device())
    finally:
        await delivery.close()


class _Recorder:
    """A transport that only remembers what it was asked to send."""

    name = "log"

    def __init__(self) -> None:
        self.sent: asyncio.Queue[Notification] = asyncio.Queue()
        self._encoded: dict[bytes, Notification] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def measure(self, rendered: Rendered, device: Registration) -> int:
        return 0

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded:
        body = str(len(self._encoded)).encode()
        self._encoded[body] = notification
        return Encoded(body)

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        self.sent.put_nowait(self._encoded[encoded.body])
        return SendResult.delivered()


async def test_batched_app_sends_one_push_for_a_burst() -> None:
    recorder = _Recorder()
    dispatcher = Dispatcher({"default": Lane(recorder, Renderer(LogAppConfig()))}, _no_dead)
    delivery = Delivery({"default": Timing(window=0.2)}, dispatcher, {"default": recorder})
    await delivery.start()
    try:
        for n in range(5):
            assert delivery.submit(_note(f"{n:064x}"), _device())
        pushed = await asyncio.wait_for(recorder.sent.get(), 5)
    finally:
        await delivery.close()
    assert (pushed.count, pushed.event_id) == (5, f"{4:064x}")
    assert recorder.sent.empty()
