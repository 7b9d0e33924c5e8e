"""Marmot Push v1 triggers built the way a Marmot client builds them, independently of pushstr's decoder.

Each token is sealed as the reference client does: a fresh secp256k1 key whose x-only pubkey leads the chunk,
the raw x of ECDH with the server's x-only key (lifted to even Y) through HKDF-SHA256, then ChaCha20-Poly1305
over the 1024-byte plaintext with a random nonce and no associated data. Padding chunks are random bytes.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import coincurve
import nostr_sdk
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.nostr import nip59
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys

APNS, FCM = 0x01, 0x02
CHUNK = 1084
TAGS = [["v", "marmot-push-v1"]]


def raw_shared_x(secret: bytes, xonly: bytes) -> bytes:
    """x of `secret · lift_x(xonly)`, computed with coincurve's point arithmetic directly."""
    return bytes(coincurve.PublicKey(b"\x02" + xonly).multiply(secret).format(compressed=True)[1:])


def hkdf_key(shared_x: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"marmot-push-token-v1", info=b"marmot-push-token-encryption"
    ).derive(shared_x)


def seal_token(server_xonly_hex: str, platform: int, token: bytes) -> bytes:
    """One 1084-byte chunk carrying `token` for the server."""
    ephemeral = coincurve.PrivateKey()
    ephemeral_x = ephemeral.public_key.format(compressed=True)[1:]
    key = hkdf_key(raw_shared_x(ephemeral.secret, bytes.fromhex(server_xonly_hex)))
    nonce = os.urandom(12)
    plaintext = bytes([platform]) + len(token).to_bytes(2, "big") + token + os.urandom(1021 - len(token))
    return ephemeral_x + nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, None)


def padding_chunk() -> bytes:
    return os.urandom(CHUNK)


def content_of(chunks: list[bytes]) -> str:
    return base64.b64encode(b"".join(chunks)).decode()


def trigger(
    server_hex: str, content: str, *, kind: int = 446, tags: Any = None, created_at: int | None = None
) -> Event:
    """A gift wrap to the server around a kind 446 rumor by a fresh key (pushstr's NIP-59 helpers)."""
    sender = Keys.generate()
    return nip59.wrap(sender, server_hex, kind, content, TAGS if tags is None else tags, created_at)


def sdk_trigger(server_hex: str, content: str) -> Any:
    """The same trigger gift-wrapped by nostr-sdk (a second NIP-59 implementation)."""
    sender = nostr_sdk.Keys.generate()
    rumor = (
        nostr_sdk.EventBuilder(nostr_sdk.Kind(446), content)
        .tags([nostr_sdk.Tag.parse(tag) for tag in TAGS])
        .finalize_unsigned(sender.public_key())
    )
    return nostr_sdk.nip59_make_gift_wrap(sender, nostr_sdk.PublicKey.parse(server_hex), rumor)
