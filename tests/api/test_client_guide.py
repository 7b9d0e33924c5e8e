"""docs/clients/http-nip98-register.mjs, run by node with nostr-tools, against a real pushstr on 127.0.0.1.

nostr-tools signs the NIP-98 event (`nip98.getToken`) the way a web or React Native client does; pushstr must
accept it unchanged, and say why when it refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform
from tests.guides import run_guide
from tests.harness import RunningServer, make_settings

SCRIPT = "http-nip98-register.mjs"
APNS_TOKEN = "5e" * 32


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = RunningServer(make_settings(tmp_path, [], Keys.generate().secret_hex))
    await running.start()
    yield running
    await running.stop()


async def test_the_guide_script_registers_a_device(server: RunningServer) -> None:
    user = Keys.generate()
    code, answer = await run_guide(SCRIPT, server.base_url, user.secret_hex, APNS_TOKEN, "APNs")
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
    code, answer = await run_guide(SCRIPT, env=env)
    assert code == 0, answer
    (device,) = server.service.registry.registrations_of(user.public_hex)
    assert (device.platform, device.device_token) == (Platform.ANDROID, "fcm-token:APA91b_x")


async def test_the_guide_script_shows_the_refusal(server: RunningServer) -> None:
    user = Keys.generate()
    code, answer = await run_guide(SCRIPT, server.base_url, user.secret_hex, "not-hex", "ios")
    assert code == 1
    assert answer == {
        "error": "bad_request",
        "reason": "device_token: an APNs token is even-length hex, 64–200 characters",
    }
    assert server.service.registry.registrations_of(user.public_hex) == []
