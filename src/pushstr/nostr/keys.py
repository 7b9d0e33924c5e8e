"""secp256k1 keys for Nostr: x-only public keys (BIP-340) and secret keys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from coincurve import PrivateKey, PublicKeyXOnly

from pushstr.nostr.errors import InvalidKey

_HEX = frozenset("0123456789abcdef")


def is_hex(value: object, length: int) -> bool:
    """True when `value` is a lowercase hex string of exactly `length` characters."""
    return isinstance(value, str) and len(value) == length and not (set(value) - _HEX)


@dataclass(frozen=True, slots=True)
class Keys:
    """A secret key and its x-only public key.

    The coincurve key object is kept so that signing does not re-parse the secret each time.
    """

    secret: bytes
    public: bytes = field(init=False)
    _private: PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise InvalidKey("secret key must be 32 bytes")
        try:
            private = PrivateKey(self.secret)
        except ValueError as exc:
            raise InvalidKey("secret key out of range") from exc
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "public", private.public_key_xonly.format())

    @classmethod
    def generate(cls) -> Keys:
        """A fresh random key pair."""
        while True:
            try:
                return cls(os.urandom(32))
            except InvalidKey:  # pragma: no cover - probability ~2^-128
                continue

    @classmethod
    def from_hex(cls, secret_hex: str) -> Keys:
        """Keys from a 64-hex secret key (either case)."""
        if not is_hex(secret_hex.lower(), 64):
            raise InvalidKey("secret key must be 64 hex characters")
        return cls(bytes.fromhex(secret_hex))

    @property
    def secret_hex(self) -> str:
        return self.secret.hex()

    @property
    def public_hex(self) -> str:
        return self.public.hex()

    @property
    def private_key(self) -> PrivateKey:
        """The coincurve key, for ECDH in the encryption modules."""
        return self._private

    def sign_schnorr(self, message: bytes, aux_rand: bytes | None = None) -> bytes:
        """BIP-340 signature over `message` (32 bytes for Nostr ids; other lengths are allowed by BIP-340)."""
        return self._private.sign_schnorr(message, aux_rand if aux_rand is not None else os.urandom(32))


def verify_schnorr(public: bytes, message: bytes, signature: bytes) -> bool:
    """BIP-340 verification; False (never an exception) for any malformed key or signature."""
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        return bool(PublicKeyXOnly(public).verify(signature, message))
    except (ValueError, TypeError):
        return False


def public_key_bytes(public_hex: str) -> bytes:
    """Parse and validate a 64-hex x-only public key (it must be a point on the curve)."""
    if not is_hex(public_hex, 64):
        raise InvalidKey("public key must be 64 lowercase hex characters")
    raw = bytes.fromhex(public_hex)
    try:
        PublicKeyXOnly(raw)
    except ValueError as exc:
        raise InvalidKey("public key is not on the curve") from exc
    return raw
