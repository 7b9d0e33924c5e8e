"""NIP-44 v2 encrypted payloads: ECDH x coordinate → HKDF → ChaCha20 + HMAC-SHA256, padded, base64.

Includes the extended length prefix (NIP-44 amendment of 2026-06-28): a plaintext of 65536 bytes or more is
prefixed with two zero bytes and its length as a big-endian u32 instead of the u16 length. Only an empty
plaintext is invalid now. A payload whose extended prefix carries a length below 65536 is rejected, so every
length has exactly one encoding.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pushstr.nostr.errors import DecryptError, InvalidKey
from pushstr.nostr.keys import Keys, public_key_bytes, shared_point_x

VERSION = 2
SALT = b"nip44-v2"
CONVERSATION_CACHE_SIZE = 4096
EXTENDED_PREFIX_THRESHOLD = 65536
MAX_PLAINTEXT_BYTES = 0xFFFFFFFF
# The NIP no longer caps payloads; pushstr does, so that one hostile string cannot cost unbounded work.
# 16 MiB of base64 is far beyond any event a relay forwards (callers bound events first anyway).
DEFAULT_MAX_PAYLOAD_CHARS = 16 << 20
_MIN_PAYLOAD_CHARS = 132
_MIN_DECODED_BYTES = 99
_NIP44_RE = re.compile(r"A[g-v][A-Za-z0-9+/]*={0,2}")


def calc_padded_len(unpadded_len: int) -> int:
    """NIP-44 padded size (without the length prefix): 32 bytes minimum, then power-of-two-based chunks."""
    if unpadded_len <= 32:
        return 32
    next_power = 1 << (unpadded_len - 1).bit_length()
    chunk = 32 if next_power <= 256 else next_power // 8
    return chunk * ((unpadded_len - 1) // chunk + 1)


def pad(plaintext: bytes) -> bytes:
    """Length prefix (u16, or 0x0000 + u32 from 65536 bytes on) + plaintext + zero bytes."""
    length = len(plaintext)
    if not 1 <= length <= MAX_PLAINTEXT_BYTES:
        raise ValueError("plaintext must be 1..4294967295 bytes")
    if length < EXTENDED_PREFIX_THRESHOLD:
        prefix = length.to_bytes(2, "big")
    else:
        prefix = b"\x00\x00" + length.to_bytes(4, "big")
    return prefix + plaintext + bytes(calc_padded_len(length) - length)


def unpad(padded: bytes) -> bytes:
    """Inverse of `pad`; `DecryptError` unless the prefix and the total size agree exactly."""
    if len(padded) < 2:
        raise DecryptError("invalid padding")
    length = int.from_bytes(padded[:2], "big")
    prefix_len = 2
    if length == 0:
        if len(padded) < 6:
            raise DecryptError("invalid padding")
        length = int.from_bytes(padded[2:6], "big")
        prefix_len = 6
        if length < EXTENDED_PREFIX_THRESHOLD:
            raise DecryptError("invalid padding: extended prefix for a short plaintext")
    if len(padded) != prefix_len + calc_padded_len(length):
        raise DecryptError("invalid padding")
    return padded[prefix_len : prefix_len + length]


def derive_conversation_key(keys: Keys, peer_pubkey_hex: str) -> bytes:
    """HKDF-extract(salt="nip44-v2", ikm=shared x), symmetric between the two parties; not cached.

    For one-off peers such as a gift wrap's ephemeral key, which would only evict useful cache entries.
    Raises `InvalidKey` for a bad peer pubkey.
    """
    return hmac.digest(SALT, shared_point_x(keys, public_key_bytes(peer_pubkey_hex)), "sha256")


@lru_cache(maxsize=CONVERSATION_CACHE_SIZE)
def conversation_key(keys: Keys, peer_pubkey_hex: str) -> bytes:
    """`derive_conversation_key`, cached per key pair (bounded LRU): the same peers write again and again."""
    return derive_conversation_key(keys, peer_pubkey_hex)


def message_keys(conversation: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF-expand(conversation key, info=nonce, 76) split into (chacha_key, chacha_nonce, hmac_key)."""
    if len(conversation) != 32:
        raise DecryptError("conversation key must be 32 bytes")
    if len(nonce) != 32:
        raise DecryptError("nonce must be 32 bytes")
    block1 = hmac.digest(conversation, nonce + b"\x01", "sha256")
    block2 = hmac.digest(conversation, block1 + nonce + b"\x02", "sha256")
    block3 = hmac.digest(conversation, block2 + nonce + b"\x03", "sha256")
    okm = block1 + block2 + block3
    return okm[:32], okm[32:44], okm[44:76]


def _chacha20(key: bytes, nonce: bytes, data: bytes) -> bytes:
    # cryptography takes a 16-byte nonce: the 32-bit little-endian block counter (0) then the 96-bit nonce.
    return Cipher(algorithms.ChaCha20(key, b"\x00\x00\x00\x00" + nonce), mode=None).encryptor().update(data)


def encrypt(conversation_key: bytes, plaintext: str, nonce: bytes | None = None) -> str:
    """Base64 NIP-44 v2 payload. `nonce` (32 bytes) is random unless given (tests only)."""
    nonce = os.urandom(32) if nonce is None else nonce
    chacha_key, chacha_nonce, hmac_key = message_keys(conversation_key, nonce)
    ciphertext = _chacha20(chacha_key, chacha_nonce, pad(plaintext.encode("utf-8")))
    mac = hmac.digest(hmac_key, nonce + ciphertext, "sha256")
    return base64.b64encode(bytes((VERSION,)) + nonce + ciphertext + mac).decode("ascii")


def decrypt(conversation_key: bytes, payload: str, *, max_chars: int = DEFAULT_MAX_PAYLOAD_CHARS) -> str:
    """Plaintext of a NIP-44 v2 payload; `DecryptError` for any malformed, forged or wrongly keyed payload.

    The MAC is checked (constant time) before anything is decrypted.
    """
    if not isinstance(payload, str):
        raise DecryptError("payload must be a string")
    if not payload or payload[0] == "#":
        raise DecryptError("unknown encryption version")
    if not _MIN_PAYLOAD_CHARS <= len(payload) <= max_chars:
        raise DecryptError("invalid payload size")
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise DecryptError("invalid base64") from exc
    if len(data) < _MIN_DECODED_BYTES:
        raise DecryptError("invalid data size")
    if data[0] != VERSION:
        raise DecryptError(f"unknown encryption version {data[0]}")
    nonce, ciphertext, mac = data[1:33], data[33:-32], data[-32:]
    chacha_key, chacha_nonce, hmac_key = message_keys(conversation_key, nonce)
    if not hmac.compare_digest(hmac.digest(hmac_key, nonce + ciphertext, "sha256"), mac):
        raise DecryptError("invalid MAC")
    try:
        return unpad(_chacha20(chacha_key, chacha_nonce, ciphertext)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecryptError("plaintext is not UTF-8") from exc


def looks_like_nip44(content: str) -> bool:
    """True when `content` is plausibly a v2 payload: padded base64 of at least the minimum size whose first
    byte is 0x02 (such base64 always starts with "A" and then one of "g".."v"). NIP-04 content never matches:
    its "?iv=" is not base64."""
    return (
        isinstance(content, str)
        and _MIN_PAYLOAD_CHARS <= len(content) <= DEFAULT_MAX_PAYLOAD_CHARS
        and len(content) % 4 == 0
        and _NIP44_RE.fullmatch(content) is not None
    )


def encrypt_to(keys: Keys, peer_pubkey_hex: str, plaintext: str) -> str:
    """Encrypt `plaintext` from `keys` to a peer (conversation key from the cache)."""
    return encrypt(conversation_key(keys, peer_pubkey_hex), plaintext)


def decrypt_from(keys: Keys, peer_pubkey_hex: str, payload: str) -> str:
    """Decrypt a payload a peer sent to `keys`; a bad peer pubkey is a `DecryptError` too."""
    try:
        key = conversation_key(keys, peer_pubkey_hex)
    except InvalidKey as exc:
        raise DecryptError(f"bad peer pubkey: {exc.reason}") from exc
    return decrypt(key, payload)
