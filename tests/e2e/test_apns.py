"""A gift wrap published on a real relay reaches the fake APNs (HTTP/2, TLS, JWT checked) as one request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nostr_sdk

from pushstr.config import load_settings
from pushstr.nostr.keys import Keys
from tests.conftest import free_port
from tests.e2e.clients import gift_wrap, publish, register
from tests.fakes import APNS_TOPIC, ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.harness import RunningServer, make_settings, wait_until


async def test_gift_wrap_reaches_apns(tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey) -> None:
    relay = await local_relay()
    app = apns_app(fake_apns, apns_key).model_dump(mode="json", exclude_none=True)
    settings = make_settings(
        tmp_path,
        [relay.url],
        Keys.generate().secret_hex,
        apps={"phone": app},
        platform_apps={"ios": "phone"},
    )
    server = RunningServer(settings)
    await server.start()
    alice, bob = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    token = "c0ffee" * 10 + "abcd"
    try:
        await register(server, bob, token, platform="ios")
        await publish(relay.url, gift_wrap(alice, bob, "wake up"))
        request = await fake_apns.next_request(timeout=15)
        await wait_until(lambda: server.service.delivery.pending == 0)
    finally:
        await server.stop()
    assert len(fake_apns.requests) == 1
    assert request.device_token == token
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert "apns-expiration" in request.headers
    aps = request.payload["aps"]
    assert isinstance(aps, dict) and aps.get("content-available") == 1
    assert "alert" not in aps
    assert "wake up" not in str(request.payload)


async def test_a_first_config_with_one_ios_app_pushes_ios_through_it(
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey
) -> None:
    """A newcomer's first file: `[server]`, `[nostr]` and one `[apps.ios]` APNs section, nothing else."""
    relay = await local_relay()
    config = tmp_path / "pushstr.toml"
    config.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"
port = {free_port()}

[nostr]
relays = ["{relay.url}"]

[apps.ios]
transport = "apns"
key_file = "{apns_key.key_file}"
key_id = "{apns_key.key_id}"
team_id = "{apns_key.team_id}"
topic = "{APNS_TOPIC}"
environment = "sandbox"
base_url = "{fake_apns.url}"
ca_file = "{fake_apns.ca_file}"
"""
    )
    settings = load_settings(config, environ={})
    assert settings.routing_summary().startswith("ios → ios (apns)")
    server = RunningServer(settings)
    await server.start()
    alice, bob = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    token = "beef" * 16
    try:
        await register(server, bob, token, platform="ios")
        await publish(relay.url, gift_wrap(alice, bob, "hello"))
        request = await fake_apns.next_request(timeout=15)
    finally:
        await server.stop()
    assert request.device_token == token
