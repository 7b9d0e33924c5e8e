"""The registration model every dialect produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pushstr.logutil import ident

DEFAULT_KINDS: frozenset[int] = frozenset({4, 1059, 1, 9735})


class Platform(StrEnum):
    """Where the device token is delivered."""

    IOS = "ios"
    ANDROID = "android"
    UNIFIEDPUSH = "unifiedpush"
    WEBPUSH = "webpush"


def token_hash(device_token: str) -> str:
    """Short stable digest of a device token: the only form a token may take in logs and metrics."""
    return ident(device_token, 16)


@dataclass(frozen=True, slots=True)
class Registration:
    """One device of one Nostr identity.

    `pubkey` is hex. `device_token` is the APNs/FCM token or the UnifiedPush / Web Push endpoint URL.
    A registration is keyed by (`pubkey`, `device_token`); the same token under another pubkey is another
    registration (one phone, several accounts).

    `expires_at` (Unix seconds) gives a memory-only registration a lifetime: presence-style dialects renew it
    with heartbeats, and the registry drops it once the time has passed. It is never persisted.
    """

    pubkey: str
    device_token: str
    platform: Platform
    app: str
    dialect: str = "http"
    kinds: frozenset[int] = DEFAULT_KINDS
    created_at: float = 0.0
    mode: str | None = None
    webpush_p256dh: str | None = None
    webpush_auth: str | None = None
    device_pubkey: str | None = None
    persistent: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    expires_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.pubkey, self.device_token)

    @property
    def token_id(self) -> str:
        return token_hash(self.device_token)
