"""NIP-04 (legacy) encrypted direct messages: AES-256-CBC under the raw ECDH x coordinate.

Still needed: kind-4 DMs and several push-registration dialects (kind 22456 settings, Mostro tokens) use it.
The content format is `base64(ciphertext) + "?iv=" + base64(iv)` with standard, padded base64.
"""

from __future__ import annotations

import base64
import os
import re
from functools import lru_cache

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pushstr.nostr.errors import DecryptError, InvalidKey
from pushstr.nostr.keys import Keys, public_key_bytes, shared_point_x

# NIP-04 content is bounded by the event size in practice; this bound protects direct callers too.
MAX_CONTENT_CHARS = 1 << 20
SHARED_CACHE_SIZE = 4096

_NIP04_RE = re.compile(
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)\?iv=[A-Za-z0-9+/]{22}=="
)


@lru_cache(maxsize=SHARED_CACHE_SIZE)
def shared_x(keys: Keys, peer_pubkey_hex: str) -> bytes:
    """The raw (unhashed) x coordinate of ECDH(keys.secret, peer), cached per key pair (bounded LRU).

    Both NIP-04 and NIP-44 build on this value; ECDH is the expensive step of both, and the same peers come
    back again and again (settings updates, gift wraps from one sender), so it is kept.
    Raises `InvalidKey` for a pubkey that is not 64 lowercase hex characters or not on the curve.
    """
    return shared_point_x(keys, public_key_bytes(peer_pubkey_hex))


def looks_like_nip04(content: str) -> bool:
    """True when `content` has the NIP-04 shape (`<base64>?iv=<base64 of 16 bytes>`); says nothing of its key."""
    return isinstance(content, str) and len(content) <= MAX_CONTENT_CHARS and _NIP04_RE.fullmatch(content) is not None


def encrypt(keys: Keys, peer_pubkey_hex: str, plaintext: str, iv: bytes | None = None) -> str:
    """NIP-04 content for `plaintext` from `keys` to the peer. `iv` (16 bytes) is random unless given."""
    iv = os.urandom(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("iv must be 16 bytes")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(shared_x(keys, peer_pubkey_hex)), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    return f"{base64.b64encode(ciphertext).decode('ascii')}?iv={base64.b64encode(iv).decode('ascii')}"


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise DecryptError(f"{what} is not base64") from exc


def decrypt(keys: Keys, peer_pubkey_hex: str, content: str) -> str:
    """Plaintext of NIP-04 `content`; `DecryptError` for anything malformed or encrypted under another key."""
    if not isinstance(content, str):
        raise DecryptError("content must be a string")
    if len(content) > MAX_CONTENT_CHARS:
        raise DecryptError("content too large")
    body, separator, iv_text = content.partition("?iv=")
    if not separator:
        raise DecryptError("missing ?iv=")
    ciphertext = _b64decode(body, "ciphertext")
    iv = _b64decode(iv_text, "iv")
    if len(iv) != 16:
        raise DecryptError("iv must be 16 bytes")
    if not ciphertext or len(ciphertext) % 16:
        raise DecryptError("ciphertext length is not a positive multiple of 16")
    try:
        key = shared_x(keys, peer_pubkey_hex)
    except InvalidKey as exc:
        raise DecryptError(f"bad peer pubkey: {exc.reason}") from exc
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        raw = unpadder.update(padded) + unpadder.finalize()
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecryptError("bad padding or not UTF-8 (wrong key?)") from exc
