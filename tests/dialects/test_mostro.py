"""The Mostro push API end to end: every route's JSON, encrypted tokens sealed with `cryptography`'s primitives
(not pushstr's code) both ways Mostro's two sides derive the key, a gift wrap to a trade pubkey turning into the
generic alert Mostro's server sends (checked in the FCM request itself), and no token left on disk.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import orjson
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.app import Service
from pushstr.config import ConfigError, Settings
from pushstr.dialects.mostro_token import DERIVATIONS, decrypt_token, token_key
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Mode, Platform, Registration
from tests.conftest import RelayHandle
from tests.e2e.clients import gift_wrap, publish
from tests.fakes import ApnsKey, apns_key
from tests.fakes.fcm import FakeFCM
from tests.harness import RunningServer, make_settings, wait_until

__all__ = ["apns_key"]

SERVER = Keys.generate()
TRADE = nostr_sdk.Keys.generate()
OTHER_TRADE = nostr_sdk.Keys.generate()
MOSTRO = nostr_sdk.Keys.generate()
ANDROID_TOKEN = "fcm-token-for-a-mostro-trade:" + "x" * 60
IOS_TOKEN = "fcm-token-of-an-ios-device:APA91b-0123456789"
WINDOW = 1.0
APP_WAY, SERVER_WAY = "ecdh-x", "ecdh-sha256"
ANDROID, IOS = 0x02, 0x01

# secp256k1, for the y parity of the shared point that `cryptography`'s ECDH does not expose.
P = 2**256 - 2**32 - 977


def _add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    tangent = a == b
    slope = (3 * a[0] * a[0] * pow(2 * a[1], -1, P) if tangent else (b[1] - a[1]) * pow(b[0] - a[0], -1, P)) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def _multiply(scalar: int, point: tuple[int, int]) -> tuple[int, int]:
    result: tuple[int, int] | None = None
    addend: tuple[int, int] | None = point
    while scalar:
        if scalar & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        scalar >>= 1
    assert result is not None
    return result


def _compressed(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def ecdh_secret(ephemeral: ec.EllipticCurvePrivateKey, server: ec.EllipticCurvePublicKey, derivation: str) -> bytes:
    """The HKDF input the `derivation` way: `cryptography`'s ECDH (the raw x, as the Mostro app) or SHA-256 of the
    compressed point (as Mostro's server), the parity from textbook point arithmetic."""
    shared_x = ephemeral.exchange(ec.ECDH(), server)
    if derivation == APP_WAY:
        return shared_x
    numbers = server.public_numbers()
    shared = _multiply(ephemeral.private_numbers().private_value, (numbers.x, numbers.y))
    assert shared[0].to_bytes(32, "big") == shared_x
    return hashlib.sha256(bytes([0x02 | (shared[1] & 1)]) + shared_x).digest()


def seal_token(server_pubkey_hex: str, platform: int, token: str, derivation: str = APP_WAY) -> str:
    """A Mostro encrypted token as the mobile app (`ecdh-x`) or a client of Mostro's server (`ecdh-sha256`)
    builds it, from `cryptography` primitives."""
    server = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), bytes.fromhex(server_pubkey_hex))
    ephemeral = ec.generate_private_key(ec.SECP256K1())
    secret = ecdh_secret(ephemeral, server, derivation)
    key = HKDF(hashes.SHA256(), 32, salt=b"mostro-push-v1", info=b"mostro-token-encryption").derive(secret)
    raw = token.encode()
    payload = bytes([platform]) + len(raw).to_bytes(2, "big") + raw
    payload += os.urandom(220 - len(payload))
    nonce = os.urandom(12)
    blob = _compressed(ephemeral.public_key()) + nonce + ChaCha20Poly1305(key).encrypt(nonce, payload, None)
    assert len(blob) == 281
    return base64.b64encode(blob).decode()


def server_pubkey(keys: Keys) -> str:
    """The compressed server key, computed by `cryptography` rather than pushstr."""
    return _compressed(ec.derive_private_key(int(keys.secret_hex, 16), ec.SECP256K1()).public_key()).hex()


SERVER_KEY = server_pubkey(SERVER)


def test_the_raw_x_derivation_is_the_ecdh_x_coordinate_and_the_hashed_one_libsecp256k1s() -> None:
    """Both secrets pushstr derives equal a second implementation's, for either parity of the ephemeral key."""
    server = ec.derive_private_key(int(SERVER.secret_hex, 16), ec.SECP256K1()).public_key()
    parities = set()
    for _ in range(16):
        ephemeral = ec.generate_private_key(ec.SECP256K1())
        compressed = _compressed(ephemeral.public_key())
        parities.add(compressed[0])
        assert DERIVATIONS[APP_WAY](SERVER, compressed) == ecdh_secret(ephemeral, server, APP_WAY)
        assert DERIVATIONS[SERVER_WAY](SERVER, compressed) == ecdh_secret(ephemeral, server, SERVER_WAY)
    assert parities == {0x02, 0x03}


@pytest.mark.parametrize(("derivation", "other"), [(APP_WAY, SERVER_WAY), (SERVER_WAY, APP_WAY)])
def test_a_token_opens_with_its_own_derivation_and_fails_the_others_tag(derivation: str, other: str) -> None:
    for n in range(20):
        token = f"token-{n}-" + "t" * n
        blob = base64.b64decode(seal_token(server_pubkey(SERVER), ANDROID if n % 2 else IOS, token, derivation))
        opened = decrypt_token(SERVER, blob)
        assert (opened.device_token, opened.derivation) == (token, derivation)
        assert opened.platform is (Platform.ANDROID if n % 2 else Platform.IOS)
        with pytest.raises(InvalidTag):
            ChaCha20Poly1305(token_key(SERVER, blob[:33], other)).decrypt(blob[33:45], blob[45:], None)


def test_the_dedicated_app_is_a_generic_alert_unless_the_operator_says_silent(tmp_path: Path) -> None:
    app = make_settings(tmp_path, [], SERVER.secret_hex).apps["mostro"]
    assert (app.mode, app.alert_title, app.alert_body) == (Mode.ALERT, "Mostro", "You have an update on your trade")
    assert (app.alert_data, app.android_channel_id) == ({"type": "trade_update"}, "mostro_notifications")
    silent = make_settings(tmp_path, [], SERVER.secret_hex, apps={"mostro": {"mode": "silent"}}).apps["mostro"]
    assert silent.mode is Mode.SILENT and silent.cooldown_seconds == 60


def test_an_apns_app_for_mostro_is_refused_at_start(tmp_path: Path, apns_key: ApnsKey) -> None:
    """The Mostro app's iOS tokens are FCM registration tokens: APNs could deliver none of them."""
    apns = {
        "transport": "apns",
        "key_file": str(apns_key.key_file),
        "key_id": apns_key.key_id,
        "team_id": apns_key.team_id,
        "topic": "network.mostro.app",
    }
    settings = make_settings(tmp_path, [], SERVER.secret_hex, apps={"mostro": apns})
    with pytest.raises(ConfigError, match=r"apps\.mostro\.transport"):
        Service(settings)


def _mostro_devices(server: RunningServer, pubkey: str) -> list[Registration]:
    return [reg for reg in server.service.registry.devices_for(pubkey) if reg.dialect == "mostro"]


async def test_mostro_api_end_to_end(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    fcm = FakeFCM(tmp_path)
    await fcm.start()
    mostro_app = {
        "transport": "fcm",
        "base_url": fcm.url,
        "ca_file": str(fcm.ca_file),
        "service_account_file": str(fcm.write_service_account()),
        "batch_window_seconds": WINDOW,
    }
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={"mostro": mostro_app},
        dialects={"mostro": {"notify_per_pubkey_burst": 2, "notify_per_ip_burst": 3}},
    )
    assert settings.apps["mostro"].cooldown_seconds == 60  # Mostro's default, kept where not overridden
    server = RunningServer(settings)
    await server.start()
    trade = TRADE.public_key().to_hex()
    other = OTHER_TRADE.public_key().to_hex()
    expected_key = server_pubkey(SERVER)
    sealed: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:

            async def post(path: str, body: dict[str, Any]) -> httpx.Response:
                return await client.post(path, json=body)

            assert (await client.get("/api/health")).json() == {"status": "ok"}
            info = (await client.get("/api/info")).json()
            assert info == {
                "server_pubkey": expected_key,
                "version": info["version"],
                "encrypted_token_size": 281,
                "encryption_enabled": True,
                "token_formats": ["plaintext", "encrypted"],
                "key_derivations": [APP_WAY, SERVER_WAY],
            }
            status = (await client.get("/api/status")).json()
            assert status["tokens"] == {"total": 0, "android": 0, "ios": 0}
            assert status["server_pubkey"] == expected_key and status["status"] and status["version"]
            assert {"mostro", "push-settings", "http-nip98"} <= set((await client.get("/info")).json()["dialects"])

            # Tokens sealed as the app seals them and as Mostro's server expects them: 100 of 100 each register.
            scratch = nostr_sdk.Keys.generate().public_key().to_hex()
            for derivation in (APP_WAY, SERVER_WAY):
                for n in range(100):
                    token = f"{derivation}-{n:03d}:" + "z" * 100
                    blob = seal_token(expected_key, IOS if n % 2 else ANDROID, token, derivation)
                    response = await post("/api/register", {"trade_pubkey": scratch, "encrypted_token": blob})
                    assert (response.status_code, response.json()["success"]) == (200, True), response.text
                    assert [reg.device_token for reg in _mostro_devices(server, scratch)] == [token]
            assert (await post("/api/unregister", {"trade_pubkey": scratch})).json()["success"] is True

            # The trade's token, encrypted; the same token tampered with is refused with a reason.
            sealed.append(seal_token(expected_key, ANDROID, ANDROID_TOKEN))
            response = await post("/api/register", {"trade_pubkey": trade, "encrypted_token": sealed[0]})
            assert response.status_code == 200
            assert response.json() == {
                "success": True,
                "message": "Token registered successfully",
                "platform": "android",
            }
            flipped = bytearray(base64.b64decode(sealed[0]))
            flipped[100] ^= 0x01
            tampered = await post(
                "/api/register", {"trade_pubkey": trade, "encrypted_token": base64.b64encode(flipped).decode()}
            )
            assert tampered.status_code == 400
            assert tampered.json()["success"] is False and tampered.json()["message"] == "Decryption failed"
            assert tampered.json()["error"] == "bad_request" and tampered.json()["reason"] == "Decryption failed"
            short = await post(
                "/api/register", {"trade_pubkey": trade, "encrypted_token": base64.b64encode(flipped[:280]).decode()}
            )
            assert short.status_code == 400 and "size" in short.json()["message"]
            bad = await post("/api/register", {"trade_pubkey": "xyz", "token": "t", "platform": "android"})
            assert bad.status_code == 400
            assert bad.json()["message"] == "Invalid trade_pubkey format (expected 64 hex characters)"
            wrong_platform = await post("/api/register", {"trade_pubkey": other, "token": "t", "platform": "symbian"})
            assert wrong_platform.status_code == 400
            assert wrong_platform.json()["message"] == "Invalid platform 'symbian' (expected 'android' or 'ios')"
            spaced = await post("/api/register", {"trade_pubkey": other, "token": "a token", "platform": "ios"})
            assert spaced.status_code == 400 and "FCM token" in spaced.json()["message"]

            # The plaintext form, as the Mostro app sends it today; the platform in any case.
            for platform in ("Android", "IOS"):
                response = await post("/api/register", {"trade_pubkey": other, "token": "t1", "platform": platform})
                assert response.json()["platform"] == platform.lower()
            plain = {"trade_pubkey": other, "token": IOS_TOKEN, "platform": "ios", "mostro_pubkey": "not checked"}
            response = await post("/api/register", plain)
            assert response.json() == {"success": True, "message": "Token registered successfully", "platform": "ios"}
            assert (await client.get("/api/status")).json()["tokens"] == {"total": 2, "android": 1, "ios": 1}
            assert all(reg.mode is None and not reg.persistent for reg in _mostro_devices(server, other))

            # Two gift wraps to each trade pubkey: one generic alert per device, after the batching window.
            published = time.time()
            first = gift_wrap(MOSTRO, TRADE, "order update")
            await publish(relay.url, first)
            # The trade key's subscription may reach the relay after the events are stored, and a relay replays
            # stored events newest created_at first (random for gift wraps): publish the rest once one is in.
            await wait_until(lambda: first.id().to_hex() in server.service.seen)
            for wrap in (gift_wrap(MOSTRO, TRADE, "another"), gift_wrap(MOSTRO, OTHER_TRADE, "yours")):
                await publish(relay.url, wrap)
            await wait_until(lambda: len(fcm.requests) >= 2, timeout=10)
            assert time.time() - published >= WINDOW - 0.05
            by_token = {request.message["token"]: request.message for request in fcm.requests}
            android, ios = by_token[ANDROID_TOKEN], by_token[IOS_TOKEN]
            for message in (android, ios):
                assert message["notification"] == {"title": "Mostro", "body": "You have an update on your trade"}
                assert message["data"] == {"type": "trade_update"}
                assert message["android"]["notification"]["channel_id"] == "mostro_notifications"
                assert trade not in orjson.dumps(message).decode() and first.id().to_hex() not in str(message)
            assert "apns" not in android
            assert ios["apns"]["headers"]["apns-push-type"] == "alert"
            assert ios["apns"]["headers"]["apns-priority"] == "10"
            aps = ios["apns"]["payload"]["aps"]
            assert aps["alert"] == {"title": "Mostro", "body": "You have an update on your trade"}
            assert (aps["content-available"], aps["mutable-content"]) == (1, 1)

            # /api/notify: 202 and the same body whether or not anyone is registered; identical 429s.
            nobody = nostr_sdk.Keys.generate().public_key().to_hex()
            for pubkey in (nobody, nobody):
                response = await post("/api/notify", {"trade_pubkey": pubkey})
                assert (response.status_code, response.json()) == (202, {"accepted": True})
            per_pubkey = await post("/api/notify", {"trade_pubkey": nobody})
            assert per_pubkey.status_code == 429 and int(per_pubkey.headers["retry-after"]) >= 1
            fresh = nostr_sdk.Keys.generate().public_key().to_hex()
            per_ip = await post("/api/notify", {"trade_pubkey": fresh})
            assert per_ip.status_code == 429
            assert per_ip.content == per_pubkey.content
            assert per_ip.json() == {
                "success": False,
                "message": "rate limited",
                "error": "rate_limited",
                "reason": "rate limited",
            }
            assert (await post("/api/notify", {"trade_pubkey": "nope"})).status_code == 400

            # Unregister: removed, then already gone.
            response = await post("/api/unregister", {"trade_pubkey": other})
            assert response.json() == {"success": True, "message": "Token unregistered successfully"}
            response = await post("/api/unregister", {"trade_pubkey": other})
            assert response.json()["message"] == "Token not found (may have already been unregistered)"
            assert (await client.get("/api/status")).json()["tokens"] == {"total": 1, "android": 1, "ios": 0}
            assert len(fcm.requests) == 2  # the batch merged the trade's two gift wraps into its one push
    finally:
        await server.stop()
        await fcm.stop()

    assert_not_on_disk(tmp_path, [ANDROID_TOKEN, IOS_TOKEN, *sealed])


def assert_not_on_disk(data_dir: Path, secrets: list[str]) -> None:
    """Privacy mode: no token, in any form the client sent, in any file under the data dir."""
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name.startswith("pushstr.sqlite3") for path in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path


async def test_registration_is_not_rate_limited_but_notify_is(tmp_path: Path) -> None:
    """The app registers every trade key at once: 1 000 quick registrations from one address all succeed."""
    settings = make_settings(tmp_path, [], SERVER.secret_hex, dialects={"mostro": {"notify_per_ip_burst": 3}})
    server = RunningServer(settings)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            pubkeys = [os.urandom(32).hex() for _ in range(1000)]
            for n, pubkey in enumerate(pubkeys):
                body = {"trade_pubkey": pubkey, "token": f"token-{n}", "platform": "android"}
                response = await client.post("/api/register", json=body)
                assert response.status_code == 200, (n, response.text)
            assert (await client.get("/api/status")).json()["tokens"]["total"] == 1000
            answers = [
                (await client.post("/api/notify", json={"trade_pubkey": pubkey})).status_code for pubkey in pubkeys[:4]
            ]
            assert answers == [202, 202, 202, 429]
            for pubkey in pubkeys[:10]:
                assert (await client.post("/api/unregister", json={"trade_pubkey": pubkey})).status_code == 200
    finally:
        await server.stop()


async def test_oversized_bodies_get_mostros_400_and_other_routes_the_common_413(tmp_path: Path) -> None:
    """Mostro's API documents 400 for a body too large, at any size; pushstr's own routes answer 413."""
    server = RunningServer(make_settings(tmp_path, [], SERVER.secret_hex))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            padding = "x" * (server.settings.server.max_body_bytes + 1)
            for size, route in ((10_000, "/api/register"), (len(padding), "/api/register"), (2_000, "/api/notify")):
                response = await client.post(
                    route, content=padding[:size], headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, (size, route)
                assert response.json()["message"] == "Request body too large"
                assert response.json()["error"] == "bad_request"
            response = await client.post("/register", content=padding, headers={"content-type": "application/json"})
            assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    finally:
        await server.stop()


async def test_trusted_instances(tmp_path: Path) -> None:
    trusted = MOSTRO.public_key().to_hex()
    settings = make_settings(tmp_path, [], SERVER.secret_hex, dialects={"mostro": {"trusted_instances": [trusted]}})
    server = RunningServer(settings)
    await server.start()
    try:
        body = {"trade_pubkey": TRADE.public_key().to_hex(), "token": "t", "platform": "android"}
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            missing = await client.post("/api/register", json=body)
            assert (missing.status_code, missing.json()["message"]) == (403, "Mostro instance pubkey required")
            stranger = nostr_sdk.Keys.generate().public_key().to_hex()
            untrusted = await client.post("/api/register", json=body | {"mostro_pubkey": stranger})
            assert (untrusted.status_code, untrusted.json()["message"]) == (403, "Mostro instance not trusted")
            malformed = await client.post("/api/register", json=body | {"mostro_pubkey": "xyz"})
            assert malformed.status_code == 400 and "mostro_pubkey" in malformed.json()["message"]
            ok = await client.post("/api/register", json=body | {"mostro_pubkey": trusted.upper()})
            assert ok.status_code == 200
    finally:
        await server.stop()


async def test_unifiedpush_endpoints_go_to_the_unifiedpush_app_through_the_url_guard(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, [], SERVER.secret_hex)
    server = RunningServer(settings)
    await server.start()
    endpoint = "https://8.8.8.8/up/mostro-endpoint-0123"
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            trade, sealed_trade = os.urandom(32).hex(), os.urandom(32).hex()
            plain = {"trade_pubkey": trade, "token": endpoint, "platform": "android"}
            response = await client.post("/api/register", json=plain)
            assert response.json() == {
                "success": True,
                "message": "Token registered successfully",
                "platform": "android",
            }
            sealed = seal_token(server_pubkey(SERVER), ANDROID, endpoint + "/sealed")
            response = await client.post(
                "/api/register", json={"trade_pubkey": sealed_trade, "encrypted_token": sealed}
            )
            assert response.status_code == 200
            for pubkey in (trade, sealed_trade):
                (device,) = _mostro_devices(server, pubkey)
                assert (device.platform, device.app) == (Platform.UNIFIEDPUSH, settings.platform_apps["unifiedpush"])
            assert (await client.get("/api/status")).json()["tokens"] == {"total": 2, "android": 2, "ios": 0}
            for url in ("http://127.0.0.1:8080/up", "https://169.254.169.254/latest", "http://10.0.0.1/up"):
                refused = await client.post("/api/register", json=plain | {"token": url})
                assert refused.status_code == 400, url
                assert "public addresses" in refused.json()["message"]
            assert [reg.device_token for reg in _mostro_devices(server, trade)] == [endpoint]
    finally:
        await server.stop()


@pytest.mark.parametrize("allow_plaintext", [True, False])
async def test_a_web_push_mostro_app_takes_endpoints_it_can_reach(tmp_path: Path, allow_plaintext: bool) -> None:
    """Mostro's UnifiedPush endpoints come without Web Push keys: only an app that allows plaintext can push them."""
    webpush = {"transport": "webpush", "vapid_subject": "mailto:ops@example.org", "allow_plaintext": allow_plaintext}
    settings = make_settings(tmp_path, [], SERVER.secret_hex, apps={"mostro": webpush})
    server = RunningServer(settings)
    await server.start()
    try:
        pubkey = os.urandom(32).hex()
        body = {"trade_pubkey": pubkey, "token": "https://8.8.8.8/up/1", "platform": "android"}
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post("/api/register", json=body)
        if allow_plaintext:
            assert response.status_code == 200
            (device,) = _mostro_devices(server, pubkey)
            assert (device.platform, device.app) == (Platform.UNIFIEDPUSH, "mostro")
        else:
            assert response.status_code == 400 and "plaintext" in response.json()["message"]
            assert _mostro_devices(server, pubkey) == []
    finally:
        await server.stop()


def test_an_apps_mostro_section_keeps_the_generic_alert(tmp_path: Path) -> None:
    """An `[apps.mostro]` section with only credentials keeps the generic alert (merged, not replaced)."""
    settings = Settings.model_validate(
        {"server": {"data_dir": str(tmp_path)}, "apps": {"mostro": {"batch_window_seconds": 1}}}
    )
    app = settings.apps["mostro"]
    assert (app.batch_window_seconds, app.generic_alert, app.mode) == (1, True, Mode.ALERT)
