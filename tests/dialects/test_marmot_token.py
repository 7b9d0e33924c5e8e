"""Marmot Push v1 chunks: the HKDF vector, chunks sealed the way Marmot clients seal them, and every refusal."""

from __future__ import annotations

import base64
import hmac
import json
import os
from pathlib import Path

import coincurve
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pushstr.dialects.marmot_token import (
    CHUNK_SIZE,
    MAX_CONTENT_CHARS,
    PLATFORM_APNS,
    PLATFORM_FCM,
    ChunkError,
    decrypt_chunk,
    shared_x,
    split_chunks,
    token_key,
)
from pushstr.nostr import nip44
from pushstr.nostr.keys import Keys
from tests.dialects.marmot_client import APNS, FCM, content_of, hkdf_key, padding_chunk, raw_shared_x, seal_token

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "marmot-push-vectors.json"
SERVER = Keys.generate()
APNS_TOKEN = bytes(range(32))
FCM_TOKEN = b"fcm:APA91b-example_token.123"


def test_hkdf_vector() -> None:
    vector = json.loads(VECTORS.read_text())["marmot_push_v1_hkdf"]
    shared = bytes.fromhex(vector["shared_x"])
    assert token_key(shared).hex() == vector["encryption_key"]
    # The vector's own formula, written out: HKDF-extract then one expand block.
    prk = hmac.digest(vector["salt_ascii"].encode(), shared, "sha256")
    assert hmac.digest(prk, vector["info_ascii"].encode() + b"\x01", "sha256").hex() == vector["encryption_key"]


def test_raw_x_ecdh_is_the_nip44_conversation_key_input() -> None:
    """Both sides agree on the raw x, and it is what NIP-44 (checked against its vectors) hashes."""
    ephemeral = Keys.generate()
    ours = shared_x(SERVER, bytes.fromhex(ephemeral.public_hex))
    assert ours == raw_shared_x(ephemeral.secret, bytes.fromhex(SERVER.public_hex))
    assert hmac.digest(b"nip44-v2", ours, "sha256") == nip44.derive_conversation_key(SERVER, ephemeral.public_hex)


@pytest.mark.parametrize(
    ("platform", "raw", "expected"), [(APNS, APNS_TOKEN, APNS_TOKEN.hex()), (FCM, FCM_TOKEN, FCM_TOKEN.decode())]
)
def test_client_sealed_chunks_open(platform: int, raw: bytes, expected: str) -> None:
    chunk = seal_token(SERVER.public_hex, platform, raw)
    assert len(chunk) == CHUNK_SIZE
    token = decrypt_chunk(SERVER, chunk)
    assert (token.platform, token.token) == (platform, expected)
    assert token.platform in (PLATFORM_APNS, PLATFORM_FCM)


def test_longest_token_opens() -> None:
    long = b"x" * 1021
    assert decrypt_chunk(SERVER, seal_token(SERVER.public_hex, FCM, long)).token == long.decode()


def _tampered(chunk: bytes, at: int) -> bytes:
    return chunk[:at] + bytes([chunk[at] ^ 1]) + chunk[at + 1 :]


@pytest.mark.parametrize("at", [50, 44 + 1024 + 3, 40])  # ciphertext, tag, nonce
def test_tampered_chunks_do_not_open(at: int) -> None:
    chunk = seal_token(SERVER.public_hex, APNS, APNS_TOKEN)
    with pytest.raises(ChunkError) as caught:
        decrypt_chunk(SERVER, _tampered(chunk, at))
    assert caught.value.reason == "undecryptable"


def test_chunk_for_another_server_and_padding_do_not_open() -> None:
    other = seal_token(Keys.generate().public_hex, APNS, APNS_TOKEN)
    with pytest.raises(ChunkError):
        decrypt_chunk(SERVER, other)
    for _ in range(20):  # random x: off the curve about half the time, else a failed tag
        with pytest.raises(ChunkError) as caught:
            decrypt_chunk(SERVER, padding_chunk())
        assert caught.value.reason in {"undecryptable", "bad_ephemeral_key"}


def test_zero_x_key_is_refused() -> None:
    chunk = bytes(32) + os.urandom(CHUNK_SIZE - 32)
    with pytest.raises(ChunkError) as caught:
        decrypt_chunk(SERVER, chunk)
    assert caught.value.reason == "bad_ephemeral_key"


def _sealed_plaintext(plaintext: bytes) -> bytes:
    """A chunk whose plaintext is given verbatim (to check the fields the decoder reads)."""
    ephemeral = coincurve.PrivateKey()
    key = hkdf_key(raw_shared_x(ephemeral.secret, bytes.fromhex(SERVER.public_hex)))
    nonce = os.urandom(12)
    return ephemeral.public_key.format()[1:] + nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, None)


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"\x03\x00\x20" + bytes(1021), "bad_platform"),
        (b"\x01\x00\x00" + bytes(1021), "bad_token_length"),
        (b"\x02\x03\xfe" + bytes(1021), "bad_token_length"),  # 1022 > 1021
        (b"\x01\x00\x10" + bytes(1021), "bad_token"),  # a 16-byte APNs token
        (b"\x02\x00\x03ab " + bytes(1018), "bad_token"),  # a space in an FCM token
    ],
)
def test_bad_plaintexts_are_refused(plaintext: bytes, reason: str) -> None:
    with pytest.raises(ChunkError) as caught:
        decrypt_chunk(SERVER, _sealed_plaintext(plaintext))
    assert caught.value.reason == reason


def test_split_chunks() -> None:
    chunks = [padding_chunk() for _ in range(32)]
    assert split_chunks(content_of(chunks)) == chunks
    assert len(content_of(chunks)) == MAX_CONTENT_CHARS


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "bad_size"),
        (base64.b64encode(bytes(CHUNK_SIZE - 1)).decode(), "bad_size"),
        (base64.b64encode(bytes(CHUNK_SIZE + 1)).decode(), "bad_size"),
        (base64.b64encode(bytes(CHUNK_SIZE * 33)).decode(), "bad_size"),
        (base64.urlsafe_b64encode(b"\xfb" * CHUNK_SIZE).decode(), "bad_base64"),
        (base64.b64encode(bytes(CHUNK_SIZE)).decode().rstrip("="), "bad_size"),  # unpadded
        ("!" * 1448, "bad_base64"),
    ],
)
def test_split_refuses_malformed_content(content: str, reason: str) -> None:
    with pytest.raises(ChunkError) as caught:
        split_chunks(content)
    assert caught.value.reason == reason
