"""Runs the npm package `web-push-testing` (a real Web Push server that checks VAPID and decrypts aes128gcm).

Installed by `make node-tools` into ./node_modules; started here as a child process on a free local port and
stopped by its pid. Its endpoints name the host `localhost`.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = ROOT / "node_modules" / "web-push-testing" / "src" / "bin" / "server.js"
BINARY = ROOT / "node_modules" / ".bin" / "web-push-testing"


class WebPushTestingServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, workdir: Path) -> None:
        if not BINARY.exists():
            raise RuntimeError("web-push-testing is not installed: run `make node-tools`")
        self._process = await asyncio.create_subprocess_exec(
            "node",
            str(SERVER_SCRIPT),
            str(self.port),
            cwd=workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 20)
        if b"running" not in line:
            raise RuntimeError(f"web-push-testing did not start: {line!r}")

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)

    async def _post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            return await client.post(self.base + path, json=payload)

    async def subscribe(self, application_server_key: str) -> dict[str, Any]:
        response = await self._post(
            "/subscribe", {"userVisibleOnly": "true", "applicationServerKey": application_server_key}
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    async def expire(self, client_hash: str) -> None:
        (await self._post(f"/expire-subscription/{client_hash}", {})).raise_for_status()

    async def messages(self, client_hash: str) -> list[str]:
        response = await self._post("/get-notifications", {"clientHash": client_hash})
        response.raise_for_status()
        return list(response.json()["data"]["messages"])
