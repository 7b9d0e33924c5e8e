"""Running pushstr in-process for tests: a real uvicorn server on 127.0.0.1 around a real `Service`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from pushstr.api.app import create_app
from pushstr.api.server import server_config
from pushstr.app import Service
from pushstr.config import Settings
from tests.conftest import free_port


def make_settings(data_dir: Path, relays: list[str], secret_key: str, **sections: Any) -> Settings:
    """Settings for a test instance: local relays only, fast reconnects, a log file in `data_dir` that names
    recipients and events (tests compare them)."""
    base: dict[str, Any] = {
        "server": {"data_dir": str(data_dir), "port": free_port()},
        "nostr": {
            "relays": relays,
            "secret_key": secret_key,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            "connect_timeout_seconds": 2.0,
        },
        "transports": {"log": {"path": str(data_dir / "push.log"), "identities": True}},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings.model_validate(base)


class RunningServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = Service(settings)
        self.base_url = f"http://127.0.0.1:{settings.server.port}"
        self.ws_url = f"ws://127.0.0.1:{settings.server.port}/"
        config = server_config(create_app(self.service), settings, host="127.0.0.1", log_level="warning")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        await wait_until(lambda: self._server.started or self._task is None or self._task.done(), timeout=15)
        if not self._server.started:
            raise RuntimeError("pushstr did not start")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 15)
            self._task = None

    @property
    def log_path(self) -> Path:
        return Path(self.settings.transports.log.path)

    def pushes(self) -> list[dict[str, Any]]:
        """The log transport's lines so far."""
        if not self.log_path.exists():
            return []
        return [orjson.loads(line) for line in self.log_path.read_bytes().splitlines() if line.strip()]

    async def wait_for_pushes(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        await wait_until(lambda: len(self.pushes()) >= count, timeout)
        return self.pushes()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll `condition` until it holds; fail with TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the conditions watch files and other processes
            await asyncio.sleep(interval)
