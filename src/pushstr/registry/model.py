"""The registration model every dialect produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pushstr.logutil import ident

DEFAULT_KINDS: frozenset[int] = frozenset({4, 1059, 1, 9735})


class Mode(StrEnum):
    """What a push carries (see `delivery.render`): chosen per app, overridable per registration."""

    SILENT = "silent"
    ALERT = "alert"
    ALERT_EVENT = "alert+event"
    ENCRYPTED = "encrypted"
    WRAPPED = "wrapped"
    """The signed event itself, NIP-44-encrypted to the recipient in a one-layer kind 1059 (Amethyst)."""
    NOTEPUSH = "notepush"
    """An alert that wakes the app and may be rewritten, the signed event in `nostr_event` (damus notepush)."""


class Platform(StrEnum):
    """Where the device token is delivered."""

    IOS = "ios"
    ANDROID = "android"
    UNIFIEDPUSH = "unifiedpush"
    WEBPUSH = "webpush"


def token_hash(device_token: str) -> str:
    """Short stable digest of a device token: the only form a token may take in logs and metrics."""
    return ident(device_token, 16)


NO_AUTHORS: frozenset[str] = frozenset()
"""The shared empty `Registration.authors`: CPython makes a new empty frozenset each time (216 bytes apiece)."""


@dataclass(frozen=True, slots=True)
class Registration:
    """One device of one Nostr identity.

    `pubkey` is hex. `device_token` is the APNs/FCM token or the UnifiedPush / Web Push endpoint URL.
    A registration is keyed by (`pubkey`, `device_token`); the same token under another pubkey is another
    registration (one phone, several accounts).

    `mode` overrides the app's mode when set. `groups` are what the device follows besides its own pubkey:
    NIP-28 channel ids (64 hex; events whose `e` tags name one reach it) and NIP-29 relay groups
    (`"<host>'<id>"`, see `nostr.nip29`; events of that relay whose `h` tag names the id reach it).
    `authors` (64 hex) narrows pushes to those senders; empty means anyone. `relays` are the relays the device
    asked pushstr to watch on its behalf. Most devices have none of the three, so their defaults are shared
    objects (`()`, `NO_AUTHORS`): a million registrations must not carry a million empty containers.

    `expires_at` (Unix seconds) gives a memory-only registration a lifetime: presence-style dialects renew it
    with heartbeats, and the registry drops it once the time has passed. It is never persisted.
    """

    pubkey: str
    device_token: str
    platform: Platform
    app: str
    dialect: str = "http-nip98"
    kinds: frozenset[int] = DEFAULT_KINDS
    created_at: float = 0.0
    mode: Mode | None = None
    webpush_p256dh: str | None = None
    webpush_auth: str | None = None
    device_pubkey: str | None = None
    persistent: bool = True
    groups: tuple[str, ...] = ()
    authors: frozenset[str] = NO_AUTHORS
    relays: tuple[str, ...] = ()
    expires_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.pubkey, self.device_token)

    @property
    def token_id(self) -> str:
        return token_hash(self.device_token)


class _Unfrozen:
    """`Registration`'s exact slot layout without the frozen guard (see `stored_registration`)."""

    __slots__ = Registration.__slots__

    pubkey: str
    device_token: str
    platform: Platform
    app: str
    dialect: str
    kinds: frozenset[int]
    created_at: float
    mode: Mode | None
    webpush_p256dh: str | None
    webpush_auth: str | None
    device_pubkey: str | None
    persistent: bool
    groups: tuple[str, ...]
    authors: frozenset[str]
    relays: tuple[str, ...]
    expires_at: float | None


def stored_registration(  # noqa: PLR0917 - the column order of a stored row, called once per row
    pubkey: str,
    device_token: str,
    platform: Platform,
    app: str,
    dialect: str,
    kinds: frozenset[int],
    created_at: float,
    mode: Mode | None,
    webpush_p256dh: str | None,
    webpush_auth: str | None,
    device_pubkey: str | None,
    groups: tuple[str, ...],
    authors: frozenset[str],
    relays: tuple[str, ...],
) -> Registration:
    """`Registration(..., persistent=True, groups=…, authors=…, relays=…)` for the store's loader, several times faster.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`: about 2 µs for these sixteen,
    two seconds of a million-row start. Here the fields are plain slot stores on a twin class of identical
    layout (about 0.3 µs), and the finished object is then retyped to `Registration` (Python allows `__class__`
    assignment between classes with the same slots): the result is an ordinary `Registration`. The caller
    passes values already validated; nothing is checked here.
    """
    reg = _Unfrozen()
    reg.pubkey = pubkey
    reg.device_token = device_token
    reg.platform = platform
    reg.app = app
    reg.dialect = dialect
    reg.kinds = kinds
    reg.created_at = created_at
    reg.mode = mode
    reg.webpush_p256dh = webpush_p256dh
    reg.webpush_auth = webpush_auth
    reg.device_pubkey = device_pubkey
    reg.persistent = True
    reg.groups = groups
    reg.authors = authors
    reg.relays = relays
    reg.expires_at = None
    reg.__class__ = Registration  # type: ignore[assignment]
    return reg  # type: ignore[return-value]
