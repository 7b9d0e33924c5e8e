"""What `Service.start` does to the garbage collector: paused while it builds, its heap frozen after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushstr.app import Service
from pushstr.nostr.keys import Keys
from tests.harness import make_settings


@pytest.fixture
def unfrozen_gc() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_gc")
async def test_start_freezes_what_it_built_and_collects_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = Service(make_settings(tmp_path, [], Keys.generate().secret_hex))
    paused_during_load: list[bool] = []
    load = service.registry.load

    async def observed_load() -> int:
        paused_during_load.append(not gc.isenabled())
        return await load()

    monkeypatch.setattr(service.registry, "load", observed_load)
    assert gc.get_freeze_count() == 0
    await service.start()
    try:
        assert paused_during_load == [True]
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        await service.stop()
