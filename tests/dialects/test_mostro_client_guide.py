"""docs/clients/mostro-register.mjs, run by node with @noble's curves, hashes and ciphers, against a real pushstr.

The script seals the token as the Mostro mobile app does (HKDF over the raw x of the ECDH point); pushstr must
open it, file it under the trade pubkey and say which derivation it used.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from tests.guides import run_guide
from tests.harness import RunningServer, make_settings

SCRIPT = "mostro-register.mjs"
FCM_TOKEN = "dGVzdC1mY20tdG9rZW4:APA91bH-mostro-client-guide_0123456789"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = RunningServer(make_settings(tmp_path, [], Keys.generate().secret_hex))
    await running.start()
    yield running
    await running.stop()


def _opened_the_app_way() -> float:
    return REGISTRY.get_sample_value("pushstr_mostro_token_derivations_total", {"derivation": "ecdh-x"}) or 0.0


async def test_the_guide_script_registers_an_encrypted_token(server: RunningServer) -> None:
    before = _opened_the_app_way()
    trade = os.urandom(32).hex()
    code, answer = await run_guide(SCRIPT, server.base_url, trade, FCM_TOKEN, "ios")
    assert code == 0, answer
    assert answer == {"success": True, "message": "Token registered successfully", "platform": "ios"}
    (device,) = server.service.registry.devices_for(trade)
    assert (device.platform, device.device_token, device.dialect) == (Platform.IOS, FCM_TOKEN, "mostro")
    assert _opened_the_app_way() == before + 1


async def test_the_guide_script_reads_the_environment_and_shows_a_refusal(server: RunningServer) -> None:
    trade = os.urandom(32).hex()
    env = {"PUSHSTR_URL": server.base_url, "TRADE_PUBKEY": trade, "DEVICE_TOKEN": FCM_TOKEN}
    code, answer = await run_guide(SCRIPT, env=env)
    assert (code, answer["platform"]) == (0, "android")
    code, answer = await run_guide(SCRIPT, env=env | {"TRADE_PUBKEY": "not-a-pubkey"})
    assert code == 1
    assert (
        answer["success"] is False and answer["message"] == "Invalid trade_pubkey format (expected 64 hex characters)"
    )
