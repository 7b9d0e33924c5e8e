"""Marmot Push v1 token chunks: x-only ECDH on secp256k1 → HKDF-SHA256 → ChaCha20-Poly1305, fixed size.

A trigger's content is standard padded base64 of 1–32 concatenated chunks of 1084 bytes. One chunk:
ephemeral x-only pubkey (32) ‖ nonce (12) ‖ ciphertext of a 1024-byte plaintext ‖ Poly1305 tag (16), no
associated data. Plaintext: platform (0x01 APNs, 0x02 FCM) ‖ token length (u16 big-endian, 1–1021) ‖ raw token
bytes ‖ random padding. Every chunk has the same size and senders add chunks of random bytes, so neither the
size of a trigger nor of a chunk says how many devices or which kinds of token it carries.

The key is HKDF-SHA256(salt "marmot-push-token-v1", info "marmot-push-token-encryption", 32 bytes) over the raw
x coordinate of the shared point (the ephemeral key lifted to even Y, as BIP-340 keys are): the same ECDH input as
NIP-44's conversation key, not coincurve's hashed `ecdh()`.

Everything here is pure: bytes in, a token or a `ChunkError` out. A chunk that does not open (padding, a chunk
for another server, a tampered one) fails the Poly1305 tag and is told apart from nothing else.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.nostr.errors import InvalidKey
from pushstr.nostr.keys import Keys, shared_point_x

HKDF_SALT = b"marmot-push-token-v1"
HKDF_INFO = b"marmot-push-token-encryption"
EPHEMERAL_PUBKEY_SIZE = 32
NONCE_SIZE = 12
PLAINTEXT_SIZE = 1024
TAG_SIZE = 16
CHUNK_SIZE = EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE + PLAINTEXT_SIZE + TAG_SIZE
MAX_CHUNKS = 32
MAX_TOKEN_BYTES = PLAINTEXT_SIZE - 3
MAX_CONTENT_CHARS = 4 * -(-MAX_CHUNKS * CHUNK_SIZE // 3)
"""The base64 length of the largest trigger: longer content is refused before it is decoded."""
PLATFORM_APNS = 0x01
PLATFORM_FCM = 0x02
_APNS_TOKEN_BYTES = range(32, 101)  # hex-encoded: 64–200 characters, the rule every APNs registration follows
_ZERO_X = bytes(32)


class ChunkError(ValueError):
    """A trigger or chunk that cannot be used; `reason` is the metric label (no input is ever in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceToken:
    platform: int
    """`PLATFORM_APNS` or `PLATFORM_FCM`."""
    token: str
    """As the push service takes it: APNs tokens hex-encoded, FCM tokens as sent (printable ASCII)."""


def split_chunks(content: str) -> list[bytes]:
    """The chunks of a trigger's content; `ChunkError` for anything but padded base64 of 1–32 whole chunks.

    The length is checked before decoding and the decoding is strict, so refusing a malformed trigger costs no
    more than reading it, and no key agreement.
    """
    if not content or len(content) > MAX_CONTENT_CHARS or len(content) % 4:
        raise ChunkError("bad_size")
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise ChunkError("bad_base64") from None
    if len(raw) % CHUNK_SIZE:
        raise ChunkError("bad_size")
    return [raw[start : start + CHUNK_SIZE] for start in range(0, len(raw), CHUNK_SIZE)]


def token_key(shared_x: bytes) -> bytes:
    """The ChaCha20-Poly1305 key of a chunk from the raw x of its ECDH."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(shared_x)


def shared_x(keys: Keys, ephemeral_xonly: bytes) -> bytes:
    """The raw x of `secret · lift_x(ephemeral)`; `ChunkError` for a key off the curve or an all-zero result."""
    try:
        x = shared_point_x(keys, ephemeral_xonly)
    except InvalidKey:
        raise ChunkError("bad_ephemeral_key") from None
    if x == _ZERO_X:
        raise ChunkError("bad_ephemeral_key")
    return x


def decrypt_chunk(keys: Keys, chunk: bytes) -> DeviceToken:
    """The device token sealed in one chunk; `ChunkError` for padding, tampering or an unusable token."""
    if len(chunk) != CHUNK_SIZE:
        raise ChunkError("bad_size")
    ephemeral = chunk[:EPHEMERAL_PUBKEY_SIZE]
    nonce = chunk[EPHEMERAL_PUBKEY_SIZE : EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE]
    key = token_key(shared_x(keys, ephemeral))
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(nonce, chunk[EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE :], None)
    except InvalidTag:
        raise ChunkError("undecryptable") from None
    return _read_plaintext(plaintext)


def _read_plaintext(plaintext: bytes) -> DeviceToken:
    """Platform, length and token of an opened chunk, each checked; `ChunkError` otherwise."""
    platform = plaintext[0]
    length = int.from_bytes(plaintext[1:3], "big")
    if not 1 <= length <= MAX_TOKEN_BYTES:
        raise ChunkError("bad_token_length")
    raw = plaintext[3 : 3 + length]
    if platform == PLATFORM_APNS:
        if length not in _APNS_TOKEN_BYTES:
            raise ChunkError("bad_token")
        return DeviceToken(platform, raw.hex())
    if platform == PLATFORM_FCM:
        if any(byte < 0x21 or byte > 0x7E for byte in raw):  # printable ASCII without spaces, as FCM tokens are
            raise ChunkError("bad_token")
        return DeviceToken(platform, raw.decode("ascii"))
    raise ChunkError("bad_platform")
