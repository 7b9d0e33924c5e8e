"""docs/clients/mostro-register.mjs, run by node with @noble's curves, hashes and ciphers, against a real pushstr.

The script seals the token as the Mostro mobile app does (HKDF over the raw x of the ECDH point); pushstr must
open it, file it under the trade pubkey and say which derivation it used.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from tests.harness import RunningServer, make_settings

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY / "docs" / "clients" / "mostro-register.mjs"
FCM_TOKEN = "dGVzdC1mY20tdG9rZW4:APA91bH-mostro-client-guide_0123456789"


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


def _opened_the_app_way() -> float:
    return REGISTRY.get_sample_value("pushstr_mostro_token_derivations_total", {"derivation": "ecdh-x"}) or 0.0


async def test_the_guide_script_registers_an_encrypted_token(server: RunningServer) -> None:
    before = _opened_the_app_way()
    trade = os.urandom(32).hex()
    code, answer = await _run(server.base_url, trade, FCM_TOKEN, "ios")
    assert code == 0, answer
    assert answer == {"success": True, "message": "Token registered successfully", "platform": "ios"}
    (device,) = server.service.registry.devices_for(trade)
    assert (device.platform, device.device_token, device.dialect) == (Platform.IOS, FCM_TOKEN, "mostro")
    assert _opened_the_app_way() == before + 1


async def test_the_guide_script_reads_the_environment_and_shows_a_refusal(server: RunningServer) -> None:
    trade = os.urandom(32).hex()
    env = {"PUSHSTR_URL": server.base_url, "TRADE_PUBKEY": trade, "DEVICE_TOKEN": FCM_TOKEN}
    code, answer = await _run(env=env)
    assert (code, answer["platform"]) == (0, "android")
    code, answer = await _run(env=env | {"TRADE_PUBKEY": "not-a-pubkey"})
    assert code == 1
    assert (
        answer["success"] is False and answer["message"] == "Invalid trade_pubkey format (expected 64 hex characters)"
    )
