"""Mostro's encrypted device tokens: ECDH on secp256k1 → HKDF-SHA256 → ChaCha20-Poly1305, fixed size.

Layout (281 bytes): ephemeral pubkey (33, compressed) ‖ nonce (12) ‖ ciphertext of a 220-byte plaintext ‖
Poly1305 tag (16); no associated data. Plaintext: platform (1 byte: 0x01 iOS, 0x02 Android) ‖ token length
(u16 big-endian) ‖ token (UTF-8) ‖ padding. Every token has the same size, so its length says nothing.

The key is HKDF-SHA256(salt "mostro-push-v1", info "mostro-token-encryption", 32 bytes) over an ECDH secret that
Mostro's two sides compute differently, so both are accepted (`DERIVATIONS`):

- `ecdh-x`: the raw 32-byte x coordinate of the shared point, as the Mostro mobile app seals tokens (and as its
  documentation says);
- `ecdh-sha256`: SHA-256 of the compressed shared point (`0x02|y parity ‖ x`), which is what Mostro's server
  feeds HKDF (rust-secp256k1's `SharedSecret`, libsecp256k1's default ECDH, as coincurve's `ecdh()`).

A blob is opened with one key, then the other: the Poly1305 tag decides, and a token sealed with one key fails
the other's tag (a forgery chance of about 2^-106), so at most one derivation ever opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushstr.nostr.errors import InvalidKey
from pushstr.nostr.keys import Keys, shared_point_x
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
    derivation: str
    """Which key opened it (`DERIVATIONS`): how the client sealed it."""


def server_pubkey_compressed(keys: Keys) -> str:
    """The server's public key as Mostro clients expect it: 33-byte compressed secp256k1, 66 hex."""
    return str(keys.private_key.public_key.format(compressed=True).hex())


def _raw_x(keys: Keys, ephemeral: bytes) -> bytes:
    """The shared point's x coordinate; the y parity of `ephemeral` does not change it (x(k·P) = x(k·-P))."""
    return shared_point_x(keys, ephemeral[1:])


def _hashed(keys: Keys, ephemeral: bytes) -> bytes:
    return bytes(keys.private_key.ecdh(ephemeral))


#: The ECDH secrets a token key may be derived from, in the order they are tried: the app's first.
DERIVATIONS: dict[str, Callable[[Keys, bytes], bytes]] = {"ecdh-x": _raw_x, "ecdh-sha256": _hashed}


def token_key(keys: Keys, ephemeral_pubkey: bytes, derivation: str) -> bytes:
    """The ChaCha20-Poly1305 key for a token sealed with `ephemeral_pubkey` (33 bytes, compressed) the
    `derivation` way; `TokenError` when the pubkey is not a point on the curve."""
    try:
        shared = DERIVATIONS[derivation](keys, ephemeral_pubkey)
    except (ValueError, InvalidKey):
        raise TokenError("Invalid ephemeral public key") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(shared)


def _open(keys: Keys, ephemeral: bytes, nonce: bytes, sealed: bytes) -> tuple[bytes, str]:
    """The plaintext and the derivation whose key opened it; `TokenError` when none does."""
    for derivation in DERIVATIONS:
        try:
            return ChaCha20Poly1305(token_key(keys, ephemeral, derivation)).decrypt(nonce, sealed, None), derivation
        except InvalidTag:
            continue
    raise TokenError("Decryption failed")


def decrypt_token(keys: Keys, blob: bytes) -> DecryptedToken:
    """The platform and device token inside `blob`; `TokenError` for anything malformed or tampered with."""
    if len(blob) != ENCRYPTED_TOKEN_SIZE:
        raise TokenError(f"Invalid encrypted token size (expected {ENCRYPTED_TOKEN_SIZE} bytes)")
    ephemeral = blob[:EPHEMERAL_PUBKEY_SIZE]
    nonce = blob[EPHEMERAL_PUBKEY_SIZE : EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE]
    sealed = blob[EPHEMERAL_PUBKEY_SIZE + NONCE_SIZE :]
    if ephemeral[0] not in (0x02, 0x03):
        raise TokenError("Invalid ephemeral public key")
    payload, derivation = _open(keys, ephemeral, nonce, sealed)
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
    return DecryptedToken(platform, token, derivation)
