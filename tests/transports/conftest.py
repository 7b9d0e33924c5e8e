"""Fixtures for the transport tests: the fakes, and helpers to run a dispatcher against them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from pushstr.registry.model import Registration
from tests.fakes import apns_key, fake_apns

__all__ = ["DeadHook", "apns_key", "fake_apns", "outcomes"]


@dataclass
class DeadHook:
    """Stands in for the registry's dead-token hook and remembers what it was told."""

    calls: list[tuple[Registration, float | None]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, device: Registration, stamp: float | None) -> None:
        self.calls.append((device, stamp))
        self.called.set()


@pytest.fixture
def dead_hook() -> DeadHook:
    return DeadHook()


def outcomes(app: str, transport: str) -> dict[str, float]:
    """This app's outcome counters (tests use an app id of their own, so counts start at zero)."""
    names = ("delivered", "retry", "dead", "stale_dead", "rejected", "gave_up")
    return {
        name: REGISTRY.get_sample_value(
            "pushstr_push_outcomes_total", {"app": app, "transport": transport, "outcome": name}
        )
        or 0.0
        for name in names
    }
