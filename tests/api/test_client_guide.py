"""docs/clients/http-nip98-register.mjs, run by node with nostr-tools, against a real pushstr on 127.0.0.1.

nostr-tools signs the NIP-98 event (`nip98.getToken`) the way a web or React Native client does; pushstr must
accept it unchanged, and say why when it refuses.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from tests.harness import RunningServer, make_settings

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY / "docs" / "clients" / "http-nip98-register.mjs"
APNS_TOKEN = "5e" * 32


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = RunningServer(make_settings(tmp_path, [], Keys.generate().secret_hex))
    await running.start()
    yield running
    await running.stop()


async def _run(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The script's exit code and the JSON it printed."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        *args,
        cwd=REPOSITORY,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    assert stdout, stderr.decode()
    return process.returncode, orjson.loads(stdout)


async def test_the_guide_script_registers_a_device(server: RunningServer) -> None:
    user = Keys.generate()
    code, answer = await _run(server.base_url, user.secret_hex, APNS_TOKEN, "APNs")
    assert code == 0, answer
    assert answer["ok"] is True
    assert answer["registration"]["platform"] == "ios"
    (device,) = server.service.registry.registrations_of(user.public_hex)
    assert (device.platform, device.device_token, device.dialect) == (Platform.IOS, APNS_TOKEN, "http-nip98")


async def test_the_guide_script_reads_the_environment(server: RunningServer) -> None:
    user = Keys.generate()
    env = {
        "PUSHSTR_URL": server.base_url,
        "NOSTR_SECRET_KEY": user.secret_hex,
        "DEVICE_TOKEN": "fcm-token:APA91b_x",
        "PLATFORM": "fcm",
    }
    code, answer = await _run(env=env)
    assert code == 0, answer
    (device,) = server.service.registry.registrations_of(user.public_hex)
    assert (device.platform, device.device_token) == (Platform.ANDROID, "fcm-token:APA91b_x")


async def test_the_guide_script_shows_the_refusal(server: RunningServer) -> None:
    user = Keys.generate()
    code, answer = await _run(server.base_url, user.secret_hex, "not-hex", "ios")
    assert code == 1
    assert answer == {
        "error": "bad_request",
        "reason": "device_token: an APNs token is even-length hex, 64–200 characters",
    }
    assert server.service.registry.registrations_of(user.public_hex) == []
