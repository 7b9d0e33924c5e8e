"""Device tokens and Web Push keys sealed at rest, so that a copied database file names no device.

A push token is a capability: whoever holds it can push to the device. pushstr keeps them in memory as they are
(it must send to them) but stores them sealed with AES-256-GCM under a key derived from the server key (HKDF), so
the SQLite file or a PostgreSQL dump alone reveals none of them.

The sealing is deterministic: the nonce is an HMAC of the value, so one token always seals to one stored text.
The store looks rows up by token (a dead token is removed under every pubkey, a device by pubkey and token), and
those lookups then work on the sealed column as they did on the plain one, with its index and primary key. What
that reveals is only which rows share a token, which a keyed-hash lookup column would reveal as well.

What is not protected: pubkeys, kinds, relays and the other columns stay readable (matching needs them at start,
and they are public on relays anyway), and anyone with the server key can open the tokens. Changing the server key
makes stored tokens unreadable: those devices are skipped at start (logged) and must register again.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "~s1~"
"""Starts every sealed value; no token, endpoint URL or Web Push key of any platform starts so."""
_PREFIX_LENGTH = len(PREFIX)
_SALT = b"pushstr-store"
_INFO = b"device-token-seal-v1"
_AAD = b"pushstr device token"
_NONCE_SIZE = 12


class SealError(ValueError):
    """A sealed value that does not open: damaged, or sealed under another server key."""


class Sealer(Protocol):
    """How the store writes and reads tokens: `TokenSeal`, or `UNSEALED` for stores opened without a server key."""

    def seal(self, value: str) -> str: ...

    def open(self, stored: str) -> str: ...

    def seal_optional(self, value: str | None) -> str | None: ...

    def open_optional(self, stored: str | None) -> str | None: ...


class _Unsealed:
    """Tokens stored as they are: a store opened without the server key (tools and tests reading a store)."""

    def seal(self, value: str) -> str:
        return value

    def open(self, stored: str) -> str:
        return stored

    def seal_optional(self, value: str | None) -> str | None:
        return value

    def open_optional(self, stored: str | None) -> str | None:
        return stored


UNSEALED: Sealer = _Unsealed()


class TokenSeal:
    """Seals and opens stored tokens and Web Push keys under keys derived from the server's secret."""

    __slots__ = ("_aead", "_mac_key")

    def __init__(self, server_secret: bytes) -> None:
        material = HKDF(algorithm=hashes.SHA256(), length=64, salt=_SALT, info=_INFO).derive(server_secret)
        self._aead = AESGCM(material[:32])
        self._mac_key = material[32:]

    def seal(self, value: str) -> str:
        """The stored form of `value`: the same text each time for the same value (see the module docstring)."""
        plain = value.encode("utf-8", "surrogatepass")
        nonce = hmac.digest(self._mac_key, plain, hashlib.sha256)[:_NONCE_SIZE]
        return PREFIX + binascii.b2a_base64(nonce + self._aead.encrypt(nonce, plain, _AAD), newline=False).decode()

    def open(self, stored: str) -> str:
        """The value a stored text seals; a text without the prefix is returned as it is (stored before sealing
        and not yet resealed at open). `SealError` when it does not open."""
        if not stored.startswith(PREFIX):
            return stored
        try:  # binascii rather than base64's wrappers: this runs for every stored device at start
            raw = binascii.a2b_base64(stored[_PREFIX_LENGTH:])
            plain = self._aead.decrypt(raw[:_NONCE_SIZE], raw[_NONCE_SIZE:], _AAD)
        except (ValueError, InvalidTag):  # binascii.Error is a ValueError
            raise SealError("a stored token does not open with this server key") from None
        return plain.decode("utf-8", "surrogatepass")

    def seal_optional(self, value: str | None) -> str | None:
        return None if value is None else self.seal(value)

    def open_optional(self, stored: str | None) -> str | None:
        return None if stored is None else self.open(stored)
