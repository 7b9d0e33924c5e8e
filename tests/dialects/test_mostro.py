"""The Mostro push API end to end: every route's JSON, encrypted tokens sealed with `cryptography`'s primitives
(not pushstr's code), a gift wrap to a trade pubkey turning into one silent, batched push, and no token left on disk.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.nostr.keys import Keys
from tests.conftest import RelayHandle
from tests.e2e.clients import gift_wrap, publish
from tests.harness import RunningServer, make_settings, wait_until

SERVER = Keys.generate()
TRADE = nostr_sdk.Keys.generate()
OTHER_TRADE = nostr_sdk.Keys.generate()
MOSTRO = nostr_sdk.Keys.generate()
ANDROID_TOKEN = "fcm-token-for-a-mostro-trade-" + "x" * 60
IOS_TOKEN = "apns-token-plaintext-registration-0123456789"
WINDOW = 1.0

# secp256k1, for the y parity of the shared point that `cryptography`'s ECDH does not expose.
P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


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


def seal_token(server_pubkey_hex: str, platform: int, token: str) -> str:
    """A Mostro encrypted token as the mobile app builds it, from `cryptography` primitives."""
    server = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), bytes.fromhex(server_pubkey_hex))
    ephemeral = ec.generate_private_key(ec.SECP256K1())
    shared_x = ephemeral.exchange(ec.ECDH(), server)
    numbers = server.public_numbers()
    shared = _multiply(ephemeral.private_numbers().private_value, (numbers.x, numbers.y))
    assert shared[0].to_bytes(32, "big") == shared_x
    digest = hashes.Hash(hashes.SHA256())
    digest.update(bytes([0x02 | (shared[1] & 1)]) + shared_x)
    key = HKDF(hashes.SHA256(), 32, salt=b"mostro-push-v1", info=b"mostro-token-encryption").derive(digest.finalize())
    raw = token.encode()
    payload = bytes([platform]) + len(raw).to_bytes(2, "big") + raw
    payload += os.urandom(220 - len(payload))
    nonce = os.urandom(12)
    compressed = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    blob = compressed + nonce + ChaCha20Poly1305(key).encrypt(nonce, payload, None)
    assert len(blob) == 281
    return base64.b64encode(blob).decode()


async def test_mostro_api_end_to_end(tmp_path: Path, local_relay: Any) -> None:
    relay: RelayHandle = await local_relay()
    settings = make_settings(
        tmp_path,
        [relay.url],
        SERVER.secret_hex,
        apps={"mostro": {"batch_window_seconds": WINDOW}},
        dialects={"mostro": {"notify_per_pubkey_burst": 2, "notify_per_ip_burst": 3}},
    )
    assert settings.apps["mostro"].cooldown_seconds == 60  # Mostro's default, kept where not overridden
    server = RunningServer(settings)
    await server.start()
    trade = TRADE.public_key().to_hex()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as client:

            async def post(path: str, body: dict[str, Any]) -> httpx.Response:
                return await client.post(path, json=body)

            assert (await client.get("/api/health")).json() == {"status": "ok"}
            info = (await client.get("/api/info")).json()
            expected_key = (
                ec.derive_private_key(int(SERVER.secret_hex, 16), ec.SECP256K1())
                .public_key()
                .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
                .hex()
            )
            assert info == {
                "server_pubkey": expected_key,
                "version": info["version"],
                "encrypted_token_size": 281,
                "encryption_enabled": True,
            }
            status = (await client.get("/api/status")).json()
            assert status["tokens"] == {"total": 0, "android": 0, "ios": 0}
            assert status["server_pubkey"] == expected_key and status["status"] and status["version"]
            assert {"mostro", "push-settings", "http-nip98"} <= set((await client.get("/info")).json()["dialects"])

            # An encrypted token registers; the same token tampered with is refused with a reason.
            sealed = seal_token(expected_key, 0x02, ANDROID_TOKEN)
            response = await post("/api/register", {"trade_pubkey": trade, "encrypted_token": sealed})
            assert response.status_code == 200
            assert response.json() == {
                "success": True,
                "message": "Token registered successfully",
                "platform": "android",
            }
            blob = bytearray(base64.b64decode(sealed))
            blob[100] ^= 0x01
            tampered = await post(
                "/api/register", {"trade_pubkey": trade, "encrypted_token": base64.b64encode(blob).decode()}
            )
            assert tampered.status_code == 400
            assert tampered.json()["success"] is False and tampered.json()["message"] == "Decryption failed"
            short = await post(
                "/api/register", {"trade_pubkey": trade, "encrypted_token": base64.b64encode(blob[:280]).decode()}
            )
            assert short.status_code == 400 and "size" in short.json()["message"]
            bad = await post("/api/register", {"trade_pubkey": "xyz", "token": "t", "platform": "android"})
            assert bad.status_code == 400
            assert bad.json()["message"] == "Invalid trade_pubkey format (expected 64 hex characters)"
            wrong_platform = await post("/api/register", {"trade_pubkey": trade, "token": "t", "platform": "symbian"})
            assert wrong_platform.status_code == 400 and "platform" in wrong_platform.json()["message"]

            # The plaintext form, as the Mostro app sends it today.
            other = OTHER_TRADE.public_key().to_hex()
            plain = {
                "trade_pubkey": other,
                "token": IOS_TOKEN,
                "platform": "ios",
                "mostro_pubkey": MOSTRO.public_key().to_hex(),
            }
            response = await post("/api/register", plain)
            assert response.json() == {"success": True, "message": "Token registered successfully", "platform": "ios"}
            assert (await client.get("/api/status")).json()["tokens"] == {"total": 2, "android": 1, "ios": 1}

            # Two gift wraps to the trade pubkey: one silent push, after the batching window.
            published = time.time()
            first = gift_wrap(MOSTRO, TRADE, "order update")
            second = gift_wrap(MOSTRO, TRADE, "another update")
            await publish(relay.url, first)
            # The trade key's subscription may reach the relay after both are stored, and a relay replays stored
            # events newest created_at first (random for gift wraps): publish the second once the first is in.
            await wait_until(lambda: first.id().to_hex() in server.service.seen)
            await publish(relay.url, second)
            pushes = await server.wait_for_pushes(1)
            push = pushes[0]
            assert push["app"] == "mostro" and push["mode"] == "silent" and push["kind"] == 1059
            assert push["recipient"] == trade and push["platform"] == "android"
            assert push["ts"] - published >= WINDOW - 0.05
            assert (push["event_id"], push["count"]) == (second.id().to_hex(), 2)

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
            assert per_ip.json() == {"success": False, "message": "rate limited"}
            assert (await post("/api/notify", {"trade_pubkey": "nope"})).status_code == 400

            # Unregister: removed, then already gone.
            response = await post("/api/unregister", {"trade_pubkey": other})
            assert response.json() == {"success": True, "message": "Token unregistered successfully"}
            response = await post("/api/unregister", {"trade_pubkey": other})
            assert response.json()["message"] == "Token not found (may have already been unregistered)"
            assert (await client.get("/api/status")).json()["tokens"] == {"total": 1, "android": 1, "ios": 0}
    finally:
        await server.stop()

    assert_not_on_disk(tmp_path, [ANDROID_TOKEN, IOS_TOKEN, sealed])


def assert_not_on_disk(data_dir: Path, secrets: list[str]) -> None:
    """Privacy mode: no token, in any form the client sent, in any file under the data dir."""
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name.startswith("pushstr.sqlite3") for path in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path


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
            ok = await client.post("/api/register", json=body | {"mostro_pubkey": trusted})
            assert ok.status_code == 200
    finally:
        await server.stop()
