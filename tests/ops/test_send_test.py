"""`pushstr send-test` through the real APNs transport to the fake APNs (HTTP/2, TLS, provider token checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform, Registration, token_hash
from pushstr.store import open_store
from pushstr.store.sealing import TokenSeal
from tests.fakes import APNS_TOPIC, ApnsKey
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.ops.support import apns_section, fcm_section, run_cli, write_config, write_server_key

TOKEN = "c0ffee" * 10 + "abcd"


async def test_a_delivered_push_prints_the_providers_200(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key))
    code = await run_cli("send-test", "--config", str(config.path), "--app", "phone", "--token", TOKEN)
    output = capsys.readouterr().out
    assert code == 0, output
    assert f"apps.phone (apns via {fake_apns.url}) ios device {token_hash(TOKEN)}: delivered — HTTP 200" in output
    [request] = fake_apns.requests
    assert request.device_token == TOKEN
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert TOKEN not in output


async def test_an_unregistered_token_prints_410_and_its_reason(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key))
    fake_apns.set_response(410, "Unregistered", timestamp_ms=1_700_000_000_000)
    code = await run_cli("send-test", "--config", str(config.path), "--app", "phone", "--token", TOKEN)
    output = capsys.readouterr().out
    assert code == 1, output
    assert "dead — HTTP 410 Unregistered (the token is no longer valid" in output


async def test_a_token_of_another_environment_prints_bad_device_token(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key))
    fake_apns.set_response(400, "BadDeviceToken")
    code = await run_cli(
        "send-test", "--config", str(config.path), "--app", "phone", "--token", TOKEN, "--mode", "alert"
    )
    output = capsys.readouterr().out
    assert code == 1, output
    assert "rejected — HTTP 400 BadDeviceToken (not a token of this app in this environment" in output
    assert fake_apns.requests[0].headers["apns-push-type"] == "alert"


async def test_every_stored_device_of_a_user_gets_one(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, fake_fcm: FakeFCM, capsys: Any
) -> None:
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key), fcm_section("android", fake_fcm))
    server = write_server_key(config.data_dir)
    user, other = Keys.generate(), Keys.generate()
    store = open_store(f"sqlite+aiosqlite:///{config.data_dir / 'pushstr.sqlite3'}", TokenSeal(server.secret))
    await store.open()
    await store.save_registration(Registration(user.public_hex, TOKEN, Platform.IOS, "phone", mode=Mode.ALERT))
    await store.save_registration(Registration(user.public_hex, "fcm-token-1", Platform.ANDROID, "android"))
    await store.save_registration(Registration(other.public_hex, "ab" * 32, Platform.IOS, "phone"))
    await store.close()
    npub = nip19.npub_encode(user.public_hex)
    code = await run_cli("send-test", "--config", str(config.path), "--npub", npub)
    output = capsys.readouterr().out
    assert code == 0, output
    assert output.count("delivered — HTTP 200") == 2
    [apns] = fake_apns.requests
    assert apns.device_token == TOKEN and apns.headers["apns-push-type"] == "alert"  # the device's own mode
    assert [request.message["token"] for request in fake_fcm.requests] == ["fcm-token-1"]


async def test_an_unknown_app_or_user_is_said_plainly(tmp_path: Path, capsys: Any) -> None:
    config = write_config(tmp_path, [])
    write_server_key(config.data_dir)
    assert await run_cli("send-test", "--config", str(config.path), "--app", "nope", "--token", TOKEN) == 2
    assert "no app 'nope' in [apps]" in capsys.readouterr().out
    assert await run_cli("send-test", "--config", str(config.path), "--npub", "npub1nothing") == 2
    assert "--npub:" in capsys.readouterr().out
    assert await run_cli("send-test", "--config", str(config.path), "--app", "default", "--token", "has space") == 2
    assert "device_token: an FCM token" in capsys.readouterr().out
