"""secp256k1 keys for Nostr: x-only public keys (BIP-340), secret keys and the raw ECDH shared point."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

from coincurve import PrivateKey, PublicKey, PublicKeyXOnly
from coincurve._libsecp256k1 import ffi, lib

from pushstr.nostr.errors import InvalidKey

# Parsing an x-only key costs a square root; relays deliver many events per author, so parsed keys are kept.
# The cache is bounded (LRU), so a flood of fresh pubkeys only costs the parse, never unbounded memory.
PUBKEY_CACHE_SIZE = 16384

_HEX_RE: dict[int, re.Pattern[str]] = {}
# `secp256k1_schnorrsig_extraparams` starts with this magic (SECP256K1_SCHNORRSIG_EXTRAPARAMS_MAGIC).
_EXTRAPARAMS_MAGIC = b"\xda\x6f\xb3\x8c"


def is_hex(value: object, length: int) -> bool:
    """True when `value` is a lowercase hex string of exactly `length` characters.

    For even lengths the check is a round trip through bytes (two C calls, faster than a regex on the admission
    path); `fromhex` alone would accept upper case and whitespace, the re-encoding catches both.
    """
    if type(value) is not str or len(value) != length:
        return False
    if length % 2 == 0:
        try:
            return bytes.fromhex(value).hex() == value
        except ValueError:
            return False
    pattern = _HEX_RE.get(length)
    if pattern is None:
        pattern = _HEX_RE.setdefault(length, re.compile(f"[0-9a-f]{{{length}}}"))
    return pattern.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Keys:
    """A secret key and its x-only public key.

    The coincurve key object is kept so that signing does not re-parse the secret each time.
    """

    secret: bytes
    public: bytes = field(init=False)
    _private: PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
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
        if not isinstance(secret_hex, str) or not is_hex(secret_hex.lower(), 64):
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
        """BIP-340 signature over `message` (32 bytes for Nostr ids; other lengths are allowed by BIP-340).

        `aux_rand` defaults to 32 fresh random bytes; tests pass fixed bytes to reproduce published vectors.
        """
        aux = os.urandom(32) if aux_rand is None else aux_rand
        if len(aux) != 32:
            raise InvalidKey("aux_rand must be 32 bytes")
        if len(message) == 32:
            return self._private.sign_schnorr(message, aux)
        return _sign_any_length(self._private, self.public, message, aux)


def _sign_any_length(private: PrivateKey, public: bytes, message: bytes, aux: bytes) -> bytes:
    """BIP-340 over a message that is not 32 bytes long, which coincurve's wrapper refuses.

    libsecp256k1 supports it through `schnorrsig_sign_custom`; the result is verified before it is returned.
    """
    ctx = private.context.ctx
    keypair = ffi.new("secp256k1_keypair *")
    if not lib.secp256k1_keypair_create(ctx, keypair, private.secret):
        raise InvalidKey("secret key out of range")
    aux_buf = ffi.new("unsigned char[32]", aux)
    params = ffi.new("secp256k1_schnorrsig_extraparams *")
    params.magic = list(_EXTRAPARAMS_MAGIC)
    params.noncefp = ffi.NULL
    params.ndata = aux_buf
    signature = ffi.new("unsigned char[64]")
    if not lib.secp256k1_schnorrsig_sign_custom(ctx, signature, message, len(message), keypair, params):
        raise InvalidKey("signing failed")
    result = bytes(ffi.buffer(signature))
    if not verify_schnorr(public, message, result):  # pragma: no cover - libsecp256k1 fault
        raise InvalidKey("signature self-check failed")
    return result


@lru_cache(maxsize=PUBKEY_CACHE_SIZE)
def xonly_public_key(public: bytes) -> PublicKeyXOnly:
    """The parsed coincurve key for 32 raw bytes (cached); `ValueError` when not a valid x coordinate."""
    return PublicKeyXOnly(public)


def verify_schnorr(public: bytes, message: bytes, signature: bytes, *, cache: bool = True) -> bool:
    """BIP-340 verification; False (never an exception) for any malformed key or signature.

    `cache=False` for keys that will not come again (a gift wrap's one-time key): caching them would only push
    real authors' keys out of the cache.
    """
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        key = xonly_public_key(public) if cache else PublicKeyXOnly(public)
        return bool(key.verify(signature, message))
    except (ValueError, TypeError):
        return False


def public_key_bytes(public_hex: str) -> bytes:
    """Parse and validate a 64-hex x-only public key (it must be a point on the curve)."""
    if not is_hex(public_hex, 64):
        raise InvalidKey("public key must be 64 lowercase hex characters")
    raw = bytes.fromhex(public_hex)
    try:
        xonly_public_key(raw)
    except ValueError as exc:
        raise InvalidKey("public key is not on the curve") from exc
    return raw


def shared_point_x(keys: Keys, public: bytes) -> bytes:
    """The raw 32-byte x coordinate of `secret * lift_x(public)` (even y), as NIP-04 and NIP-44 require.

    coincurve's `ecdh()` hashes the shared point, which is not what Nostr uses, so the point is multiplied
    with a tweak instead and its compressed encoding is cut to the x coordinate.
    """
    try:
        point = PublicKey(b"\x02" + public)
    except ValueError as exc:
        raise InvalidKey("public key is not on the curve") from exc
    return point.multiply(keys.secret).format(compressed=True)[1:]
