"""Typed protocol errors.

Each error carries a human-readable reason and a NIP-01 machine prefix (`invalid`, `blocked`, ...) so that the
built-in relay endpoint can answer `["OK", id, false, "<prefix>: <reason>"]` straight from the exception.
"""

from __future__ import annotations


class NostrError(Exception):
    """Base class of every error this package raises on bad input."""

    prefix: str = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def message(self) -> str:
        """The NIP-01 `OK`/`CLOSED` message: `"<prefix>: <reason>"`."""
        return f"{self.prefix}: {self.reason}"


class InvalidEvent(NostrError):
    """Malformed event, wrong id or bad signature."""

    prefix = "invalid"


class InvalidKey(NostrError):
    """A key that is not a valid secp256k1 key (or not in the expected encoding)."""

    prefix = "invalid"


class Bech32Error(NostrError):
    """A NIP-19 string that does not decode (checksum, prefix, TLV)."""

    prefix = "invalid"


class DecryptError(NostrError):
    """Ciphertext that does not decrypt: bad MAC, bad padding, bad encoding, wrong key."""

    prefix = "invalid"


class AuthError(NostrError):
    """A NIP-98 / NIP-42 authentication event that does not authorize the request."""

    prefix = "restricted"


class InvalidFilter(NostrError):
    """A NIP-01 subscription filter that is malformed (unknown field, wrong type, too many values)."""

    prefix = "invalid"
