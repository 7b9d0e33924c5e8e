"""Registration ↔ table row, shaped for a fast start: a million rows are decoded every time pushstr starts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from pushstr.registry.model import NO_EXTRA, Platform, Registration, stored_registration

_PLATFORMS: dict[str, Platform] = {platform.value: platform for platform in Platform}

# Column order of every registration SELECT; `registration_from_row` unpacks rows in this order.
REGISTRATION_COLUMNS = (
    "pubkey",
    "device_token",
    "platform",
    "app",
    "dialect",
    "kinds",
    "created_at",
    "mode",
    "webpush_p256dh",
    "webpush_auth",
    "device_pubkey",
    "extra",
)


def encode_kinds(kinds: frozenset[int]) -> str:
    return ",".join(map(str, sorted(kinds)))


def _decode_kinds(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",")) if text else frozenset()


class RowDecoder:
    """Turns rows into registrations, sharing one object for each repeated value.

    Most registrations carry one of a handful of kind sets, apps and dialects; decoding each row's copy
    separately would keep a million equal frozensets and strings alive in the index. The caches are bounded
    by the number of distinct values, which is small unless the data is hostile, so they are capped.
    """

    __slots__ = ("_kinds",)

    _MAX_KINDS = 10_000

    def __init__(self) -> None:
        self._kinds: dict[str, frozenset[int]] = {}

    def kinds(self, text: str) -> frozenset[int]:
        kinds = self._kinds.get(text)
        if kinds is None:
            if len(self._kinds) >= self._MAX_KINDS:
                self._kinds.clear()
            kinds = self._kinds[text] = _decode_kinds(text)
        return kinds

    def registrations(
        self, rows: Iterable[Sequence[Any]], skip: Callable[[Sequence[Any], ValueError], None]
    ) -> list[Registration]:
        """The registrations of a batch of rows; `skip` is told about each row this release cannot read.

        The start-up hot loop: a million rows pass through here, so the common row (a known platform, an
        already seen kind set, no `extra`) is built inline through `stored_registration`; anything else takes
        `registration`, which validates and decodes it fully.
        """
        decoded: list[Registration] = []
        append = decoded.append
        platforms = _PLATFORMS
        kinds_seen = self._kinds
        intern = sys.intern
        build = stored_registration
        for row in rows:
            (pubkey, token, platform, app, dialect, kinds, created_at, mode, p256dh, auth, device_pubkey, extra) = row
            platform_value = platforms.get(platform)
            kind_set = kinds_seen.get(kinds)
            if platform_value is None or kind_set is None or extra is not None:
                try:
                    append(self.registration(row))
                except ValueError as exc:
                    skip(row, exc)
                continue
            append(
                build(
                    pubkey,
                    token,
                    platform_value,
                    intern(app),
                    intern(dialect),
                    kind_set,
                    created_at,
                    None if mode is None else intern(mode),
                    p256dh,
                    auth,
                    device_pubkey,
                    NO_EXTRA,
                )
            )
        return decoded

    def registration(self, row: Sequence[Any]) -> Registration:
        """Raises ValueError (or a subclass) for a row this release cannot read."""
        (pubkey, token, platform, app, dialect, kinds, created_at, mode, p256dh, auth, device_pubkey, extra) = row
        try:
            platform_value = _PLATFORMS[platform]
        except KeyError:
            raise ValueError(f"unknown platform {platform!r}") from None
        # Positional: measurably faster than keywords at a million rows; the round-trip test pins the order.
        return Registration(
            pubkey,
            token,
            platform_value,
            sys.intern(app),
            sys.intern(dialect),
            self.kinds(kinds),
            created_at,
            None if mode is None else sys.intern(mode),
            p256dh,
            auth,
            device_pubkey,
            True,
            _decode_extra(extra) if extra else NO_EXTRA,
        )


def _decode_extra(text: str) -> dict[str, str]:
    value = orjson.loads(text)
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ValueError("extra is not a JSON object of strings")
    return value


def registration_to_row(reg: Registration) -> dict[str, Any]:
    """The column values of a registration; ValueError for one that must stay in memory."""
    if not reg.persistent:
        raise ValueError("a registration with persistent=False must not be stored")
    if reg.expires_at is not None:
        raise ValueError("a registration with expires_at lives in memory only and must not be stored")
    return {
        "pubkey": reg.pubkey,
        "device_token": reg.device_token,
        "platform": reg.platform.value,
        "app": reg.app,
        "dialect": reg.dialect,
        "kinds": encode_kinds(reg.kinds),
        "created_at": float(reg.created_at),
        "mode": reg.mode,
        "webpush_p256dh": reg.webpush_p256dh,
        "webpush_auth": reg.webpush_auth,
        "device_pubkey": reg.device_pubkey,
        "extra": orjson.dumps(reg.extra).decode() if reg.extra else None,
    }
