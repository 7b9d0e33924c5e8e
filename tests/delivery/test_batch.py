"""Batching and coalescing per device, driven with explicit times (the clock is injectable)."""

from __future__ import annotations

import asyncio

from pushstr.delivery.batch import Batcher, Coalescer, Timing, merge
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification

DEVICE = Registration("a" * 64, "token-1", Platform.IOS, "chat")
OTHER = Registration("a" * 64, "token-2", Platform.IOS, "chat")


def _note(n: int, kind: int = 4, **fields: object) -> Notification:
    values: dict[str, object] = {"event_id": f"{n:064x}", "kind": kind, "recipient": "a" * 64, "sender": None}
    values.update({"created_at": n, "app": "chat", **fields})
    return Notification(**values)  # type: ignore[arg-type]


def test_ten_events_in_two_seconds_make_one_push_that_says_ten() -> None:
    core = Coalescer({"chat": Timing(window=5.0)})
    for n in range(10):
        assert core.offer(_note(n, conversation="dm-1"), DEVICE, now=100.0 + n * 0.2) is None
    assert core.due(104.99) == []
    ((pushed, device),) = core.due(105.0)
    assert (pushed.count, pushed.event_id, pushed.conversation) == (10, f"{9:064x}", "dm-1")
    assert device == DEVICE
    assert core.due(200.0) == []


def test_cooldown_holds_what_comes_after_a_push() -> None:
    core = Coalescer({"chat": Timing(window=5.0, cooldown=30.0)})
    core.offer(_note(1), DEVICE, now=0.0)
    assert [n.count for n, _ in core.due(5.0)] == [1]
    assert core.offer(_note(2), DEVICE, now=6.0) is None
    assert core.offer(_note(3), DEVICE, now=20.0) is None
    assert core.due(34.9) == []
    ((pushed, _),) = core.due(35.0)
    assert (pushed.count, pushed.event_id) == (2, f"{3:064x}")
    assert core.due(64.9) == []  # the second push starts a new cooldown, with nothing waiting
    assert core.offer(_note(4), DEVICE, now=70.0) is None  # cooldown over: a new window opens
    assert [n.count for n, _ in core.due(75.0)] == [1]


def test_cooldown_without_window_sends_the_first_at_once() -> None:
    core = Coalescer({"chat": Timing(cooldown=10.0)})
    assert core.offer(_note(1), DEVICE, now=0.0) is not None
    assert core.offer(_note(2), DEVICE, now=1.0) is None
    assert core.offer(_note(3), DEVICE, now=2.0) is None
    ((pushed, _),) = core.due(10.0)
    assert pushed.count == 2
    assert core.offer(_note(4), DEVICE, now=25.0) is not None
    assert len(core) == 1


def test_devices_are_batched_separately_and_defaults_pass_through() -> None:
    core = Coalescer({"chat": Timing(window=1.0)})
    core.offer(_note(1), DEVICE, now=0.0)
    core.offer(_note(2), OTHER, now=0.0)
    core.offer(_note(3), DEVICE, now=0.5)
    assert sorted((d.device_token, n.count) for n, d in core.due(1.0)) == [("token-1", 2), ("token-2", 1)]
    assert core.offer(_note(4, app="other"), DEVICE, now=0.0) is not None


def test_merge_of_mixed_kinds_and_conversations() -> None:
    merged = merge(_note(1, kind=4, conversation="a"), _note(2, kind=9735, conversation="b", extra={"sats": "21"}))
    assert merged.count == 2 and merged.extra["mixed"] == "1" and merged.conversation is None
    zaps = merge(_note(1, kind=9735, extra={"sats": "21"}), _note(2, kind=9735, extra={"sats": "100"}))
    assert zaps.extra == {"sats": "121"}


def test_full_batcher_lets_new_devices_through_unbatched() -> None:
    core = Coalescer({"chat": Timing(window=1.0)}, max_devices=1)
    assert core.offer(_note(1), DEVICE, now=0.0) is None
    assert core.offer(_note(2), OTHER, now=0.0) is not None


async def test_batcher_runs_on_its_clock_and_flushes_on_close() -> None:
    emitted: asyncio.Queue[Notification] = asyncio.Queue()
    batcher = Batcher({"chat": Timing(window=0.1)}, lambda n, _d: emitted.put_nowait(n))
    await batcher.start()
    try:
        for n in range(3):
            batcher.submit(_note(n), DEVICE)
        first = await asyncio.wait_for(emitted.get(), 5)
        batcher.submit(_note(9), OTHER)
    finally:
        await batcher.close()
    assert first.count == 3
    assert (await asyncio.wait_for(emitted.get(), 1)).event_id == f"{9:064x}"
