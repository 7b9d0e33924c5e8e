"""Mostro's encrypted device tokens: ECDH on secp256k1 → HKDF-SHA256 → ChaCha20-Poly1305, fixed size.

Layout (281 bytes): ephemeral pubkey (33, compressed) ‖ nonce (12) ‖ ciphertext of a 220-byte plaintext ‖
Poly1305 tag (16); no associated data. Plaintext: platform (1 byte: 0x01 iOS, 0x02 Android) ‖ token length
(u16 big-endian) ‖ token (UTF-8) ‖ padding. Every token has the same size, so its length says nothing.

The key is HKDF-SHA256(salt "mostro-push-v1", info "mostro-token-encryption", 32 bytes) over the SHA-256 of the
*compressed* shared point (`0x02|y parity ‖ x`). That is what Mostro's server computes (rust-secp256k1's
`SharedSecret`), and so what its clients must send, although its documentation says the raw x coordinate.
coincurve's `ecdh()` computes exactly that hash (libsecp256k1's default), unlike what NIP-04/NIP-44 need.
"""

from __future__ import annotations

from dataclasses import dataclass

from coincurve import PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform

HKDF_SALT = b"mostro-push-v1"
HKDF_INFO = b"mostro-token-encryption"
EPHEMERAL_PUBKEY_SIZE = 33
NONCE_SIZE = 12
PADDED_PAYLOAD_SIZE = 220
TAG_SIZE = 16
ENCRYPTED_TOKEN_SIZE = EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE + PADDED_PAYLOAD_SIZE + TAG_SIZE
MAX_TOKEN_BYTES = PADDED_PAYLOAD_SIZE - 3

_PLATFORMS = {0x01: Platform.IOS, 0x02: Platform.ANDROID}


class TokenError(ValueError):
    """An encrypted token that cannot be used; the message is safe to return to the client."""


@dataclass(frozen=True, slots=True)
class DecryptedToken:
    platform: Platform
    device_token: str


def server_pubkey_compressed(keys: Keys) -> str:
    """The server's public key as Mostro clients expect it: 33-byte compressed secp256k1, 66 hex."""
    return str(keys.private_key.public_key.format(compressed=True).hex())


def token_key(keys: Keys, ephemeral_pubkey: bytes) -> bytes:
    """The ChaCha20-Poly1305 key for a token sealed with `ephemeral_pubkey` (33 bytes, compressed)."""
    try:
        point = PublicKey(ephemeral_pubkey)
    except ValueError:
        raise TokenError("Invalid ephemeral public key") from None
    shared = keys.private_key.ecdh(point.format(compressed=True))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(shared)


def decrypt_token(keys: Keys, blob: bytes) -> DecryptedToken:
    """The platform and device token inside `blob`; `TokenError` for anything malformed or tampered with."""
    if len(blob) != ENCRYPTED_TOKEN_SIZE:
        raise TokenError(f"Invalid encrypted token size (expected {ENCRYPTED_TOKEN_SIZE} bytes)")
    ephemeral = blob[:EPHEMERAL_PUBKEY_SIZE]
    nonce = blob[EPHEMERAL_PUBKEY_SIZE : EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE]
    sealed = blob[EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE :]
    if ephemeral[0] not in (0x02, 0x03):
        raise TokenError("Invalid ephemeral public key")
    try:
        payload = ChaCha20Poly1305(token_key(keys, ephemeral)).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise TokenError("Decryption failed") from None
    platform = _PLATFORMS.get(payload[0])
    if platform is None:
        raise TokenError("Invalid platform identifier")
    length = int.from_bytes(payload[1:3], "big")
    if length > MAX_TOKEN_BYTES:
        raise TokenError("Invalid token length in payload")
    if length == 0:
        raise TokenError("Token cannot be empty")
    try:
        token = payload[3 : 3 + length].decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError("Invalid token encoding") from None
    return DecryptedToken(platform, token)
