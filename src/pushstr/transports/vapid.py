"""The server's VAPID identity (RFC 8292): one P-256 key in the data dir, and the JWTs it signs.

The key is created on first use with mode 0600 and kept, because browsers bind subscriptions to the public key:
a new key would orphan every Web Push subscription.
"""

from __future__ import annotations

import base64
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushstr.private_files import private_dir
from pushstr.transports import metrics

KEY_FILE_NAME = "vapid_private_key.pem"
#: RFC 8292 caps `exp` at 24 hours; a 12-hour token reused for 11 hours keeps signing rare.
TOKEN_LIFETIME_SECONDS = 12 * 3600
REUSE_SECONDS = 11 * 3600
MAX_AUDIENCES = 10_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_or_create_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key from `data_dir`, generated (and written with mode 0600) when absent."""
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        private_dir(data_dir)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race; use its key
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise ValueError(f"{path}: not a P-256 key")
    return loaded


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as browsers want it for `applicationServerKey`: base64url of the uncompressed point."""
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(point)


def vapid_public_key(data_dir: Path) -> str:
    """The server's VAPID public key (creating the key pair on first call), for `/info`."""
    return public_key_b64(load_or_create_key(data_dir))


class VapidSigner:
    """`Authorization: vapid t=…, k=…` headers, one JWT per push-service origin reused for hours."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._subject = subject
        self._public = public_key_b64(key)
        self._clock = clock
        self._tokens: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is None or now - cached[0] >= REUSE_SECONDS:
            claims = {"aud": audience, "exp": int(now) + TOKEN_LIFETIME_SECONDS, "sub": self._subject}
            cached = (now, jwt.encode(claims, self._key, algorithm="ES256"))
            metrics.CREDENTIALS.labels("webpush").inc()
            self._tokens[audience] = cached
            while len(self._tokens) > MAX_AUDIENCES:
                self._tokens.popitem(last=False)
        self._tokens.move_to_end(audience)
        return f"vapid t={cached[1]}, k={self._public}"
