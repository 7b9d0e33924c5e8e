"""The dispatcher: render once at submit, resend the same bytes on every retry, final outcomes, bounds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from pushstr.config import parse_app
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Encoded, Notification, Rendered, SendResult

RECIPIENT = "a" * 64


class ScriptedTransport:
    """Answers each attempt with the next scripted result and remembers every encode and send."""

    name = "scripted"

    def __init__(self, results: list[SendResult], *, refuse: SendResult | None = None) -> None:
        self._results: Iterator[SendResult] = iter(results)
        self._refuse = refuse
        self.encoded: list[Rendered] = []
        self.sent: list[Encoded] = []
        self.done: asyncio.Queue[SendResult] = asyncio.Queue()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def measure(self, rendered: Rendered, device: Registration) -> int:
        return len(str(rendered))

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        self.encoded.append(rendered)
        if self._refuse is not None:
            return self._refuse
        return Encoded(f"{notification.event_id}:{rendered.body}".encode(), {"x-count": rendered.data["count"]})

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        self.sent.append(encoded)
        result = next(self._results)
        self.done.put_nowait(result)
        return result


def _app_id() -> str:
    return f"disp-{uuid.uuid4().hex[:8]}"


def _lane(transport: ScriptedTransport, **settings: object) -> Lane:
    app = parse_app({"transport": "log", "mode": "alert", "backoff_base_seconds": 0.001, **settings})
    return Lane(transport, Renderer(app))  # type: ignore[arg-type]


def _note(app: str, n: int = 0) -> Notification:
    return Notification(f"{n:064x}", 4, RECIPIENT, "b" * 64, 1, app)


def _device(app: str) -> Registration:
    return Registration(RECIPIENT, "tok", Platform.ANDROID, app)


async def _no_dead(_device: Registration, _stamp: float | None) -> None:
    raise AssertionError("no push here reports a dead token")


def _outcome(app: str, outcome: str) -> float:
    labels = {"app": app, "transport": "scripted", "outcome": outcome}
    return REGISTRY.get_sample_value("pushstr_push_outcomes_total", labels) or 0.0


async def _push_once(app: str, transport: ScriptedTransport, **settings: object) -> None:
    """Submit one push and wait until it is finished, whatever its outcome."""
    dispatcher = Dispatcher({app: _lane(transport, **settings)}, _no_dead)
    await dispatcher.start()
    try:
        assert dispatcher.submit(_note(app), _device(app))
        assert await dispatcher.idle(5)
    finally:
        await dispatcher.close()


async def test_retries_resend_the_bytes_rendered_once() -> None:
    app = _app_id()
    results = [SendResult.retry("busy", 503), SendResult.retry("busy", 503), SendResult.delivered(200)]
    transport = ScriptedTransport(results)
    await _push_once(app, transport)
    assert len(transport.encoded) == 1
    assert len(transport.sent) == 3 and all(sent is transport.sent[0] for sent in transport.sent)
    assert (_outcome(app, "retry"), _outcome(app, "delivered")) == (2, 1)


async def test_gives_up_after_max_attempts() -> None:
    app = _app_id()
    transport = ScriptedTransport([SendResult.retry("busy", 503)] * 3)
    await _push_once(app, transport, max_attempts=3)
    assert len(transport.sent) == 3
    assert (_outcome(app, "retry"), _outcome(app, "gave_up")) == (2, 1)


async def test_a_push_that_cannot_be_encoded_is_final_without_any_attempt() -> None:
    app = _app_id()
    transport = ScriptedTransport([], refuse=SendResult.rejected("BadDeviceToken"))
    await _push_once(app, transport)
    assert transport.sent == []
    assert _outcome(app, "rejected") == 1


@pytest.mark.parametrize("reason", ["unknown_app", "queue_full", "shutdown"])
async def test_refusals_are_counted_drops(reason: str) -> None:
    app = _app_id()
    transport = ScriptedTransport([SendResult.delivered()] * 2)
    dispatcher = Dispatcher({app: _lane(transport, queue_size=1, concurrency=1)}, _no_dead)
    target = "elsewhere" if reason == "unknown_app" else app
    labels = {"app": target, "reason": reason}
    before = REGISTRY.get_sample_value("pushstr_push_dropped_total", labels) or 0.0
    if reason != "shutdown":
        await dispatcher.start()
    try:
        if reason == "queue_full":
            # No worker has run yet: the first push fills the one slot, the second finds it full.
            assert dispatcher.submit(_note(app, 1), _device(app))
        assert not dispatcher.submit(_note(target, 2), _device(target))
    finally:
        await dispatcher.close()
    assert (REGISTRY.get_sample_value("pushstr_push_dropped_total", labels) or 0.0) == before + 1


class Kept:
    """A ledger that remembers what became final."""

    def __init__(self) -> None:
        self.final: list[str] = []

    def retrying(self, notification: Notification, device: Registration, attempts: int, at: float, reason: str) -> None:
        return None

    def finish(self, notification: Notification, device: Registration, outcome: str) -> None:
        self.final.append(outcome)


async def test_shutdown_does_not_wait_for_retries_and_leaves_them_pending() -> None:
    app = _app_id()
    transport = ScriptedTransport([SendResult.retry("unavailable", 503)] * 10)
    ledger = Kept()
    dispatcher = Dispatcher({app: _lane(transport, backoff_base_seconds=60)}, _no_dead, ledger=ledger)
    await dispatcher.start()
    assert dispatcher.submit(_note(app, 1), _device(app))
    assert dispatcher.submit(_note(app, 2), _device(app))  # behind the first: same device
    await transport.done.get()  # the first attempt failed and is parked for a minute
    started = asyncio.get_running_loop().time()
    await dispatcher.close(timeout=30)
    assert asyncio.get_running_loop().time() - started < 5
    assert ledger.final == [] and len(transport.sent) == 1  # nothing final, the second never sent ahead
