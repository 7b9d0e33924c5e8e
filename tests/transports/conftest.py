"""Fixtures for the transport tests: the fakes, and helpers to run a dispatcher against them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from pushstr.config import AppConfig
from pushstr.delivery.render import Renderer
from pushstr.registry.model import Registration
from pushstr.transports.base import Notification, SendResult, Transport
from tests.fakes import apns_key, fake_apns

__all__ = ["DeadHook", "OneShot", "apns_key", "fake_apns", "outcomes"]


class OneShot:
    """A transport driven as the dispatcher drives it, without the queue: render and encode once, then send."""

    def __init__(self, transport: Transport, app: AppConfig) -> None:
        self.transport = transport
        self._renderer = Renderer(app)

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    async def send(self, notification: Notification, device: Registration) -> SendResult:
        encoded = self._renderer.encode(notification, device, self.transport)
        if isinstance(encoded, SendResult):
            return encoded
        return await self.transport.send(encoded, device)


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
