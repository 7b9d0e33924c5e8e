"""Batching and coalescing per device: a delay window and a cooldown, both per app.

A burst of events for one device (a busy group chat, ten zaps on one note) should wake the phone once, saying
"10 new messages", not ten times. With a window of W seconds the first notification for a device opens the window
and everything arriving before it closes is merged into it. With a cooldown of C seconds a device that was just
pushed collects what comes next and gets it as one push when the cooldown ends. Both default to 0 (push at once).

`Coalescer` is the pure core: it takes explicit times, so tests can drive ten events over two seconds and a five
second window without waiting. `Batcher` runs it on a clock (injectable, `time.monotonic` by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from pushstr.delivery import metrics
from pushstr.registry.model import Registration
from pushstr.transports.base import Notification

Emit = Callable[[Notification, Registration], object]
#: The longest the runner sleeps without re-checking, so a wrong clock cannot stall it for ever.
MAX_IDLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Timing:
    """Batching settings of one app, in seconds."""

    window: float = 0.0
    cooldown: float = 0.0

    @property
    def immediate(self) -> bool:
        return self.window <= 0 and self.cooldown <= 0


def merge(older: Notification, newer: Notification) -> Notification:
    """One notification standing for both: the newer one's event, the summed count.

    A merged push keeps a conversation (and so a collapse id) only when both belong to it; zap amounts add up;
    mixing kinds is recorded in `extra["mixed"]` so the text can say "notifications" instead of "messages".
    """
    extra = dict(newer.extra)
    if older.kind != newer.kind or older.extra.get("mixed"):
        extra["mixed"] = "1"
    if "sats" in older.extra and "sats" in newer.extra:
        extra["sats"] = str(int(older.extra["sats"]) + int(newer.extra["sats"]))
    return replace(
        newer,
        count=older.count + newer.count,
        merged=(*older.event_ids, *newer.merged),
        conversation=newer.conversation if newer.conversation == older.conversation else None,
        extra=extra,
    )


@dataclass(slots=True)
class _Slot:
    device: Registration
    pending: Notification | None = None
    due: float = 0.0
    quiet_until: float = 0.0


class Coalescer:
    """The batching state machine, with time passed in; see the module docstring."""

    def __init__(self, timings: Mapping[str, Timing], max_devices: int = 100_000) -> None:
        self._timings = dict(timings)
        self._max_devices = max_devices
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._heap: list[tuple[float, int, tuple[str, str, str]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._slots)

    def offer(self, notification: Notification, device: Registration, now: float) -> Notification | None:
        """Take one notification; returns it when it must go out now, None when it is held (or merged)."""
        timing = self._timings.get(notification.app, Timing())
        if timing.immediate:
            return notification
        key = (notification.app, device.pubkey, device.device_token)
        slot = self._slots.get(key)
        if slot is not None and slot.pending is not None:
            slot.pending = merge(slot.pending, notification)
            slot.device = device
            metrics.COALESCED.labels(notification.app).inc()
            return None
        if slot is not None and now < slot.quiet_until:
            slot.pending, slot.due, slot.device = notification, slot.quiet_until, device
            self._schedule(slot.due, key)
            return None
        if slot is None and len(self._slots) >= self._max_devices:
            metrics.BATCH_OVERFLOW.labels(notification.app).inc()
            return notification
        slot = slot or _Slot(device)
        self._slots[key] = slot
        if timing.window > 0:
            slot.pending, slot.due = notification, now + timing.window
            self._schedule(slot.due, key)
            return None
        slot.quiet_until = now + timing.cooldown
        self._schedule(slot.quiet_until, key)
        return notification

    def due(self, now: float) -> list[tuple[Notification, Registration]]:
        """The merged notifications whose time has come, starting each device's cooldown."""
        out: list[tuple[Notification, Registration]] = []
        while self._heap and self._heap[0][0] <= now:
            _when, _seq, key = heapq.heappop(self._heap)
            slot = self._slots.get(key)
            if slot is None:
                continue
            if slot.pending is not None and slot.due <= now:
                out.append((slot.pending, slot.device))
                slot.pending = None
                slot.quiet_until = slot.due + self._timings.get(key[0], Timing()).cooldown
                self._schedule(slot.quiet_until, key)
            elif slot.pending is None and slot.quiet_until <= now:
                del self._slots[key]
        return out

    def flush(self) -> list[tuple[Notification, Registration]]:
        """Everything held, at once (for shutdown)."""
        out = [(slot.pending, slot.device) for slot in self._slots.values() if slot.pending is not None]
        self._slots.clear()
        self._heap.clear()
        return out

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def _schedule(self, when: float, key: tuple[str, str, str]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), key))


class Batcher:
    """Runs a `Coalescer` on a clock and hands what is due to `emit` (the dispatcher's submit)."""

    def __init__(
        self,
        timings: Mapping[str, Timing],
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
        max_devices: int = 100_000,
    ) -> None:
        self._core = Coalescer(timings, max_devices)
        self._emit = emit
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push-batcher")

    def submit(self, notification: Notification, device: Registration) -> bool:
        """Pass the notification on now or hold it; never blocks. False only when `emit` refused it."""
        ready = self._core.offer(notification, device, self._clock())
        if ready is not None:
            return self._emit(ready, device) is not False
        self._wake.set()
        return True

    async def close(self) -> None:
        """Stop the timer and hand over everything still held, so a shutdown loses nothing it could send."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except TimeoutError:
                self._task.cancel()
            self._task = None
        for notification, device in self._core.flush():
            self._emit(notification, device)

    async def _run(self) -> None:
        while not self._stopping:
            for notification, device in self._core.due(self._clock()):
                self._emit(notification, device)
            deadline = self._core.next_deadline()
            wait = MAX_IDLE_SECONDS if deadline is None else min(MAX_IDLE_SECONDS, deadline - self._clock())
            self._wake.clear()
            if wait > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
