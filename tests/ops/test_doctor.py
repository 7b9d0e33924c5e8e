"""`pushstr doctor` against real local servers: the fake APNs over TLS + HTTP/2, the fake FCM with its OAuth token
endpoint, nostr-sdk relays (one demanding NIP-42 AUTH) and a strfry-like relay serving NIP-11 with a `Date`."""

from __future__ import annotations

import email.utils
import os
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import nostr_sdk
import orjson
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from pushstr.nostr import nip19
from pushstr.ops.relay_probe import clock_skew
from pushstr.registry.model import Platform, Registration
from pushstr.store import open_store
from pushstr.store.migrations import LATEST_VERSION
from pushstr.store.sealing import TokenSeal
from pushstr.transports import vapid
from tests.conftest import free_port
from tests.fakes import ApnsKey
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM
from tests.fakes.strict_relay import StrictRelay
from tests.ops.support import apns_section, fcm_section, run_cli, write_config, write_server_key

WEBPUSH_APP = """
[apps.browser]
transport = "webpush"
vapid_subject = "mailto:ops@example.org"
"""


class DatedRelay(StrictRelay):
    """A strfry-like relay whose NIP-11 answer carries a `Date` header `offset` seconds off the true time."""

    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(
            nip11={
                "name": "dated",
                "software": "git+https://github.com/hoytech/strfry.git",
                "version": "1.0.4",
                "limitation": {"max_subscriptions": 50},
            }
        )
        self.offset = offset

    def _document(self, connection: ServerConnection, request: Request) -> Response | None:
        if "application/nostr+json" not in request.headers.get("Accept", ""):
            return None
        body = orjson.dumps(self.nip11)
        date = email.utils.formatdate(time.time() + self.offset, usegmt=True)
        headers = Headers({"Content-Type": "application/nostr+json", "Content-Length": str(len(body)), "Date": date})
        return Response(HTTPStatus.OK, "OK", headers, body)


def lines(output: str, status: str, subject: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{status:<4}  {subject}")]


async def test_a_good_configuration_passes_every_check(  # noqa: PLR0917 - pytest fixtures
    tmp_path: Path, local_relay: Any, fake_apns: FakeAPNs, apns_key: ApnsKey, fake_fcm: FakeFCM, capsys: Any
) -> None:
    relay = await local_relay()
    dated = DatedRelay()
    await dated.start()
    config = write_config(
        tmp_path,
        [relay.url, dated.url],
        apns_section("phone", fake_apns, apns_key),
        fcm_section("android", fake_fcm),
        WEBPUSH_APP,
    )
    keys = write_server_key(config.data_dir)
    vapid.load_or_create_key(config.data_dir)
    store = open_store(f"sqlite+aiosqlite:///{config.data_dir / 'pushstr.sqlite3'}", TokenSeal(keys.secret))
    await store.open()
    await store.save_registration(Registration(keys.public_hex, "ab" * 32, Platform.IOS, "phone"))
    await store.close()
    try:
        code = await run_cli("doctor", "--config", str(config.path), "--timeout", "5")
    finally:
        await dated.stop()
    output = capsys.readouterr().out
    assert code == 0, output
    assert not lines(output, "FAIL", "")
    assert lines(output, "ok", "config")
    assert lines(output, "ok", "server key")[0].endswith(
        f"{nip19.npub_encode(keys.public_hex)} from {config.data_dir / 'server.key'} (mode 0600)"
    )
    store_line = lines(output, "ok", "store")[0]
    assert f"schema version {LATEST_VERSION} (latest); 1 registrations, 0 pending pushes" in store_line
    assert lines(output, "ok", "apps.phone.key_file")
    assert lines(output, "ok", "apps.phone endpoint")
    assert "APNs accepted the provider token" in lines(output, "ok", "apps.phone provider token")[0]
    assert len(fake_apns.requests) == 1  # the probe push, to a device token no device has
    assert lines(output, "ok", "apps.android oauth") and fake_fcm.token_requests == 1
    assert "validate-only" in lines(output, "ok", "apps.android send")[0]
    assert fake_fcm.requests[0].message["token"] == "pushstr-doctor-probe"
    assert lines(output, "ok", "apps.browser vapid")
    plain = lines(output, "ok", f"relay {relay.url}")[0]
    assert "no NIP-11 document" in plain and "no AUTH asked" in plain
    strfry = lines(output, "ok", f"relay {dated.url}")[0]
    assert "NIP-11: strfry 1.0.4, 50 subscriptions, 128 KiB messages" in strfry
    assert "within ±" in lines(output, "ok", "clock")[0]
    secret_hex = keys.secret_hex
    assert secret_hex not in output and nip19.nsec_encode(secret_hex) not in output
    assert "ya29." not in output  # no OAuth access token
    assert fake_apns.requests[0].provider_token not in output


async def test_a_corrupt_apns_key_fails_naming_the_file(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    broken = tmp_path / "AuthKey_BROKEN.p8"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key, key_file=broken))
    code = await run_cli("doctor", "--config", str(config.path), "--timeout", "2")
    output = capsys.readouterr().out
    assert code == 1, output
    [line] = lines(output, "FAIL", "apps.phone.key_file")
    assert str(broken) in line and "cannot load the APNs key" in line and "developer portal" in line
    assert not fake_apns.requests


async def test_a_missing_apns_key_makes_the_configuration_invalid(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    missing = tmp_path / "AuthKey_GONE.p8"
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key, key_file=missing))
    code = await run_cli("doctor", "--config", str(config.path))
    output = capsys.readouterr().out
    assert code == 2, output
    [line] = lines(output, "FAIL", "config")
    assert f"apps.phone.key_file: no such file: {missing}" in line


async def test_a_key_apple_does_not_know_fails_the_provider_token_check(
    tmp_path: Path, fake_apns: FakeAPNs, apns_key: ApnsKey, capsys: Any
) -> None:
    config = write_config(tmp_path, [], apns_section("phone", fake_apns, apns_key, key_id="OTHERKEY01"))
    code = await run_cli("doctor", "--config", str(config.path), "--timeout", "5")
    output = capsys.readouterr().out
    assert code == 1, output
    [line] = lines(output, "FAIL", "apps.phone provider token")
    assert "403 InvalidProviderToken" in line and "check key_id and team_id" in line


async def test_a_relay_that_is_down_fails_naming_it(tmp_path: Path, local_relay: Any, capsys: Any) -> None:
    relay = await local_relay()
    down = f"ws://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, [relay.url, down])
    write_server_key(config.data_dir)
    started = time.monotonic()
    code = await run_cli("doctor", "--config", str(config.path), "--timeout", "2")
    output = capsys.readouterr().out
    assert code == 1, output
    [line] = lines(output, "FAIL", f"relay {down}")
    assert "cannot connect" in line and "ConnectionRefusedError" in line and "remove it" in line
    assert lines(output, "ok", f"relay {relay.url}")
    assert time.monotonic() - started < 10


async def test_a_relay_demanding_auth_is_answered_with_the_server_key(tmp_path: Path, capsys: Any) -> None:
    port = free_port()
    auth = nostr_sdk.LocalRelayBuilderNip42(mode=nostr_sdk.LocalRelayBuilderNip42Mode.READ)
    relay = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port).nip42(auth).build()
    await relay.run()
    url = f"ws://127.0.0.1:{port}"
    config = write_config(tmp_path, [url])
    keys = write_server_key(config.data_dir)
    try:
        code = await run_cli("doctor", "--config", str(config.path), "--timeout", "5")
    finally:
        relay.shutdown()
    output = capsys.readouterr().out
    assert code == 0, output
    [line] = lines(output, "ok", f"relay {url}")
    assert f"demands AUTH to read gift wraps, accepted {nip19.npub_encode(keys.public_hex)}" in line


async def test_a_clock_far_from_the_relays_fails(tmp_path: Path, capsys: Any) -> None:
    relay = DatedRelay(offset=-300)  # the relay's clock is 5 minutes behind ours: ours is 5 minutes ahead
    await relay.start()
    config = write_config(tmp_path, [relay.url])
    write_server_key(config.data_dir)
    try:
        code = await run_cli("doctor", "--config", str(config.path), "--timeout", "5")
    finally:
        await relay.stop()
    output = capsys.readouterr().out
    assert code == 1, output
    [line] = lines(output, "FAIL", "clock")
    assert "ahead of 1 relay's HTTP Date" in line and "NTP" in line


async def test_a_server_key_readable_by_others_fails(tmp_path: Path, capsys: Any) -> None:
    config = write_config(tmp_path, [])
    write_server_key(config.data_dir)
    os.chmod(config.data_dir / "server.key", 0o644)
    code = await run_cli("doctor", "--config", str(config.path))
    output = capsys.readouterr().out
    assert code == 1, output
    [line] = lines(output, "FAIL", "server key")
    assert "mode 0644" in line and f"chmod 600 {config.data_dir / 'server.key'}" in line


async def test_doctor_creates_nothing(tmp_path: Path, capsys: Any) -> None:
    """A fresh install: no key, no database, no VAPID key yet; doctor says so and leaves it that way."""
    config = write_config(tmp_path, [], WEBPUSH_APP)
    code = await run_cli("doctor", "--config", str(config.path))
    output = capsys.readouterr().out
    assert code == 0, output
    assert "pushstr serve (or pushstr info) creates it" in lines(output, "warn", "server key")[0]
    assert "no database yet" in lines(output, "warn", "store")[0]
    assert "no VAPID key yet" in lines(output, "warn", "apps.browser vapid")[0]
    assert not config.data_dir.exists()


@pytest.mark.parametrize(
    ("date", "sent", "received", "skew"),
    [
        ("Thu, 01 Jan 2026 00:00:00 GMT", 1767225600.0, 1767225601.0, 0.0),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 1767225700.0, 1767225700.0, 99.5),
    ],
)
def test_clock_skew_reads_the_date_header_with_its_uncertainty(
    date: str, sent: float, received: float, skew: float
) -> None:
    found = clock_skew(date, sent, received)
    assert found is not None
    assert found[0] == pytest.approx(skew)
    assert found[1] == pytest.approx(0.5 + (received - sent) / 2)
    assert clock_skew("not a date", sent, received) is None


async def test_a_relay_asking_auth_only_for_writes_is_fine(tmp_path: Path, capsys: Any) -> None:
    port = free_port()
    auth = nostr_sdk.LocalRelayBuilderNip42(mode=nostr_sdk.LocalRelayBuilderNip42Mode.WRITE)
    relay = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port).nip42(auth).build()
    await relay.run()
    url = f"ws://127.0.0.1:{port}"
    config = write_config(tmp_path, [url])
    write_server_key(config.data_dir)
    try:
        code = await run_cli("doctor", "--config", str(config.path), "--timeout", "3")
    finally:
        relay.shutdown()
    output = capsys.readouterr().out
    assert code == 0, output
    [line] = lines(output, "ok", f"relay {url}")
    assert "demands AUTH" not in line
