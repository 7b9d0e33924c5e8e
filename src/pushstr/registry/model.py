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


class _FrozenEmptyDict(dict[str, str]):
    """An empty `extra` that refuses changes, so one object can serve every registration loaded without one."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("Registration.extra of a loaded registration is read-only; build a new registration")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = __ior__ = _refuse  # type: ignore[assignment]

    def __copy__(self) -> dict[str, str]:
        return {}  # a copy is for changing, like `.copy()` and `dict(...)`

    def __deepcopy__(self, memo: object) -> dict[str, str]:
        return {}


NO_EXTRA: dict[str, str] = _FrozenEmptyDict()
"""The shared `extra` of registrations loaded without one: a million empty dicts would cost 64 MB."""


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
    mode: str | None
    webpush_p256dh: str | None
    webpush_auth: str | None
    device_pubkey: str | None
    persistent: bool
    extra: dict[str, str]
    expires_at: float | None


def stored_registration(  # noqa: PLR0917 - the column order of a stored row, called once per row
    pubkey: str,
    device_token: str,
    platform: Platform,
    app: str,
    dialect: str,
    kinds: frozenset[int],
    created_at: float,
    mode: str | None,
    webpush_p256dh: str | None,
    webpush_auth: str | None,
    device_pubkey: str | None,
    extra: dict[str, str],
) -> Registration:
    """`Registration(..., persistent=True, extra=extra)` for the store's loader, several times faster.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`: about 2 µs for these fourteen,
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
    reg.extra = extra
    reg.expires_at = None
    reg.__class__ = Registration  # type: ignore[assignment]
    return reg  # type: ignore[return-value]
