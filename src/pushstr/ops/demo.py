"""`pushstr demo`: the whole path from a Nostr DM to a push, in-process, with no credentials and no network.

pushstr starts on 127.0.0.1 with no relays, the log transport and a temporary data dir. A demo user registers a
device over HTTP with a NIP-98 signature, a second user sends them a NIP-17 DM (kind 14 rumor, sealed, gift-wrapped
as kind 1059) to pushstr's built-in relay endpoint, and the log transport's line for the push is shown. Every step
is printed as it happens; the data dir is removed at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson
import uvicorn
import websockets

from pushstr.api.app import create_app
from pushstr.api.server import server_config
from pushstr.app import Service
from pushstr.config import Settings
from pushstr.logutil import ident
from pushstr.nostr import nip19, nip59
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.nostr.nip98 import build_authorization

#: The whole demo, start to stop, gets this long before it gives up.
DEADLINE_SECONDS = 20.0
#: How often the log file is looked at while the push is awaited (it is written by the same process).
POLL_SECONDS = 0.01
DEMO_TOKEN = "pushstr-demo-device"
DM_TEXT = "Hello from the pushstr demo"
#: NIP-17's chat message, the rumor inside the seal.
CHAT_MESSAGE_KIND = 14


def demo_settings(data_dir: Path) -> Settings:
    """No relays, no discovery, an ephemeral port, the log transport writing to a file in `data_dir`."""
    return Settings.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0, "data_dir": str(data_dir)},
            "nostr": {"relays": []},
            "discovery": {"enabled": False},
            "transports": {"log": {"path": str(data_dir / "push.log")}},
            "apps": {"default": {"transport": "log", "mode": "alert"}},
        }
    )


class _Steps:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()
        self._number = 0

    def say(self, text: str) -> None:
        self._number += 1
        self._out.write(f"[{time.monotonic() - self._started:5.2f}s] {self._number}. {text}\n")
        self._out.flush()

    def detail(self, text: str) -> None:
        self._out.write(f"         {text}\n")
        self._out.flush()


async def _register(base_url: str, user: Keys) -> dict[str, Any]:
    body = orjson.dumps({"npub": nip19.npub_encode(user.public_hex), "device_token": DEMO_TOKEN, "platform": "android"})
    url = f"{base_url}/register"
    headers = {"authorization": build_authorization(user, "POST", url, body), "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.post(url, content=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"POST /register answered {response.status_code}: {response.text[:200]}")
    reply: dict[str, Any] = response.json()
    return reply


async def _publish(ws_url: str, event: dict[str, Any]) -> list[Any]:
    async with websockets.connect(ws_url, open_timeout=5.0) as ws:
        await ws.send(orjson.dumps(["EVENT", event]).decode())
        async with asyncio.timeout(5.0):
            while True:
                reply = orjson.loads(await ws.recv())
                if isinstance(reply, list) and reply[:2] == ["OK", event["id"]]:
                    return reply


def _first_line(log_path: Path) -> bytes | None:
    """The log file's first line, when there is one (a small local file: reading it does not hold the loop up)."""
    if not log_path.exists():
        return None
    lines = log_path.read_bytes().splitlines()
    return lines[0] if lines else None


async def _push_line(log_path: Path, timeout: float) -> dict[str, Any]:
    """The log transport's first line, once written."""
    async with asyncio.timeout(timeout):
        while (line := _first_line(log_path)) is None:  # noqa: ASYNC110 - the log transport writes a file
            await asyncio.sleep(POLL_SECONDS)
    push: dict[str, Any] = orjson.loads(line)
    return push


async def _run(data_dir: Path, steps: _Steps) -> None:
    settings = demo_settings(data_dir)
    service = Service(settings)
    server = uvicorn.Server(server_config(create_app(service), settings, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError("pushstr did not start")
            await asyncio.sleep(POLL_SECONDS)
        port = server.servers[0].sockets[0].getsockname()[1]
        base_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/"
        steps.say(f"pushstr runs on {base_url}: no relays, the log transport, data in {data_dir}")
        steps.detail(f"server key {nip19.npub_encode(service.keys.public_hex)}; built-in relay endpoint {ws_url}")

        bob, alice = Keys.generate(), Keys.generate()
        reply = await _register(base_url, bob)
        steps.say(f"bob ({nip19.npub_encode(bob.public_hex)[:20]}…) registered a device: POST /register, NIP-98 signed")
        registration = reply["registration"]
        steps.detail(
            f"201: app {registration['app']}, platform {registration['platform']}, kinds {registration['kinds']}"
        )

        wrap = nip59.wrap(alice, bob.public_hex, CHAT_MESSAGE_KIND, DM_TEXT, [["p", bob.public_hex]])
        steps.say("alice sent bob a NIP-17 DM: kind 14 rumor → kind 13 seal → kind 1059 gift wrap")
        steps.detail(f"wrap {wrap.id[:16]}… from a one-time key, p-tagged to bob; pushstr cannot read it")
        answer = await _publish(ws_url, wrap.to_dict())
        if answer[2] is not True:
            raise RuntimeError(f"the relay endpoint refused the wrap: {answer}")
        steps.say(f'the built-in relay endpoint answered ["OK", "{wrap.id[:16]}…", true]')

        push = await _push_line(Path(settings.transports.log.path), 5.0)
        steps.say("the push arrived (log transport line):")
        steps.detail(orjson.dumps(push).decode())
        if push.get("recipient") != ident(bob.public_hex, 16) or push.get("kind") != int(Kind.GIFT_WRAP):
            raise RuntimeError("the push is not the one for bob's gift wrap")
        steps.detail(f"recipient {push['recipient']} is bob's digest, kind 1059; the message text is not in it")
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10.0)


async def run_demo(out: TextIO) -> int:
    """Run the demo, printing each step to `out`; 0 when the push arrived."""
    steps = _Steps(out)
    with tempfile.TemporaryDirectory(prefix="pushstr-demo-") as directory:
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await _run(Path(directory), steps)
        except Exception as exc:
            out.write(f"demo failed: {type(exc).__name__}: {exc}\n")
            return 1
    steps.say(f"pushstr stopped; {directory} removed")
    return 0
