"""Provider tokens (APNs ES256 JWTs) shared by every connection and app of one Apple team and key.

Apple wants one token reused for up to an hour, refreshed no more often than every 20 minutes (else
`TooManyProviderTokenUpdates`) and no less often than every 60 (else `ExpiredProviderToken`). We refresh after
50 minutes. When APNs calls a token expired it is marked stale and replaced on the next use, but still never
sooner than 20 minutes after it was signed: a token refused that early means a clock problem that signing again
cannot fix, and signing in a loop would get the team throttled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from pushstr.transports import metrics

REFRESH_AFTER_SECONDS = 50 * 60
MIN_AGE_SECONDS = 20 * 60


@dataclass(slots=True)
class _Token:
    value: str
    issued_at: float
    stale: bool = False


class ProviderTokens:
    """Signed tokens per (team id, key id); `token()` is cheap after the first call."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str], _Token] = {}

    def token(self, team_id: str, key_id: str, key: ec.EllipticCurvePrivateKey) -> str:
        now = self._clock()
        current = self._tokens.get((team_id, key_id))
        if current is not None:
            age = now - current.issued_at
            if age < MIN_AGE_SECONDS or (age < REFRESH_AFTER_SECONDS and not current.stale):
                return current.value
        issued_at = int(now)
        value = jwt.encode({"iss": team_id, "iat": issued_at}, key, algorithm="ES256", headers={"kid": key_id})
        self._tokens[(team_id, key_id)] = _Token(value, issued_at)
        metrics.CREDENTIALS.labels("apns").inc()
        return value

    def expired(self, team_id: str, key_id: str, value: str) -> None:
        """APNs said `value` is expired: replace it at the next chance (see the module docstring)."""
        current = self._tokens.get((team_id, key_id))
        if current is not None and current.value == value:
            current.stale = True


#: The process-wide cache every APNs transport uses unless given its own.
SHARED = ProviderTokens()
