"""Registration ↔ table row, shaped for a fast start: a million rows are decoded every time pushstr starts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from pushstr.registry.model import NO_AUTHORS, Mode, Platform, Registration, stored_registration
from pushstr.store.sealing import UNSEALED, Sealer

_PLATFORMS: dict[str, Platform] = {platform.value: platform for platform in Platform}
_MODES: dict[str, Mode] = {mode.value: mode for mode in Mode}

_T = TypeVar("_T")

# Column order of every registration SELECT; `RowDecoder` unpacks rows in this order.
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
    "groups",
    "authors",
    "relays",
)


def encode_kinds(kinds: frozenset[int]) -> str:
    return ",".join(map(str, sorted(kinds)))


def _decode_kinds(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",")) if text else frozenset()


def _encode_words(values: Sequence[str], what: str) -> str | None:
    """The stored form of `groups`, `authors` or `relays` (see `schema.py`): space-joined, None when empty.

    ValueError for a value the encoding cannot carry (empty, or containing whitespace): it would come back
    split differently, so it is refused rather than stored wrong.
    """
    text = " ".join(values)
    if text.split() != list(values):
        raise ValueError(f"{what} must be non-empty values without whitespace to be stored")
    return text or None


def _decode_words(text: str) -> tuple[str, ...]:
    # Interned: the same relay URLs and group ids recur across devices whose lists differ.
    return tuple(map(sys.intern, text.split()))


def _decode_authors(text: str) -> frozenset[str]:
    return frozenset(map(sys.intern, text.split())) or NO_AUTHORS


class RowDecoder:
    """Turns rows into registrations, sharing one object for each repeated value.

    Most registrations carry one of a handful of kind sets, apps and dialects, and devices of one client tend to
    list the same relays; decoding each row's copy separately would keep a million equal frozensets, tuples and
    strings alive in the index. The caches are bounded by the number of distinct values, which is small unless
    the data is hostile, so they are capped.
    """

    __slots__ = ("_authors", "_kinds", "_seal", "_words")

    _MAX_SHARED = 10_000

    def __init__(self, seal: Sealer = UNSEALED) -> None:
        """`seal` opens the stored device tokens and Web Push keys (see `sealing`)."""
        self._seal = seal
        self._kinds: dict[str, frozenset[int]] = {}
        self._words: dict[str, tuple[str, ...]] = {}
        self._authors: dict[str, frozenset[str]] = {}

    def kinds(self, text: str) -> frozenset[int]:
        return self._shared(self._kinds, text, _decode_kinds)

    def words(self, text: str) -> tuple[str, ...]:
        """A stored `groups` or `relays` list."""
        return self._shared(self._words, text, _decode_words)

    def authors(self, text: str) -> frozenset[str]:
        return self._shared(self._authors, text, _decode_authors)

    def _shared(self, cache: dict[str, _T], text: str, decode: Callable[[str], _T]) -> _T:
        value = cache.get(text)
        if value is None:
            if len(cache) >= self._MAX_SHARED:
                cache.clear()
            value = cache[text] = decode(text)
        return value

    def registrations(
        self, rows: Iterable[Sequence[Any]], skip: Callable[[Sequence[Any], ValueError], None]
    ) -> list[Registration]:
        """The registrations of a batch of rows; `skip` is told about each row this release cannot read.

        The start-up hot loop: a million rows pass through here, so the common row (a known platform and mode,
        an already seen kind set, no Web Push keys) is built inline through `stored_registration`, its empty lists
        costing one `is None` test each; anything else takes `registration`, which validates and decodes it fully.
        A token that does not open (sealed under another server key) skips its row like any unreadable one.
        """
        decoded: list[Registration] = []
        append = decoded.append
        platforms = _PLATFORMS
        modes = _MODES
        kinds_seen = self._kinds
        words = self.words
        open_token = self._seal.open
        authors_of = self.authors
        intern = sys.intern
        build = stored_registration
        for row in rows:
            (
                pubkey,
                token,
                platform,
                app,
                dialect,
                kinds,
                created_at,
                mode,
                p256dh,
                auth,
                device_pubkey,
                groups,
                authors,
                relays,
            ) = row
            platform_value = platforms.get(platform)
            kind_set = kinds_seen.get(kinds)
            mode_value = None if mode is None else modes.get(mode)
            if (
                platform_value is None
                or kind_set is None
                or (mode_value is None and mode is not None)
                or p256dh is not None
                or auth is not None
            ):
                try:
                    append(self.registration(row))
                except ValueError as exc:
                    skip(row, exc)
                continue
            try:
                opened = open_token(token)
            except ValueError as exc:
                skip(row, exc)
                continue
            append(
                build(
                    pubkey,
                    opened,
                    platform_value,
                    intern(app),
                    intern(dialect),
                    kind_set,
                    created_at,
                    mode_value,
                    p256dh,
                    auth,
                    device_pubkey,
                    () if groups is None else words(groups),
                    NO_AUTHORS if authors is None else authors_of(authors),
                    () if relays is None else words(relays),
                )
            )
        return decoded

    def registration(self, row: Sequence[Any]) -> Registration:
        """Raises ValueError (or a subclass) for a row this release cannot read."""
        (
            pubkey,
            token,
            platform,
            app,
            dialect,
            kinds,
            created_at,
            mode,
            p256dh,
            auth,
            device_pubkey,
            groups,
            authors,
            relays,
        ) = row
        try:
            platform_value = _PLATFORMS[platform]
        except KeyError:
            raise ValueError(f"unknown platform {platform!r}") from None
        try:
            mode_value = None if mode is None else _MODES[mode]
        except KeyError:
            raise ValueError(f"unknown mode {mode!r}") from None
        seal = self._seal
        # Positional: measurably faster than keywords at a million rows; the round-trip test pins the order.
        return Registration(
            pubkey,
            seal.open(token),
            platform_value,
            sys.intern(app),
            sys.intern(dialect),
            self.kinds(kinds),
            created_at,
            mode_value,
            seal.open_optional(p256dh),
            seal.open_optional(auth),
            device_pubkey,
            True,
            self.words(groups) if groups else (),
            self.authors(authors) if authors else NO_AUTHORS,
            self.words(relays) if relays else (),
        )


def registration_to_row(reg: Registration, seal: Sealer = UNSEALED) -> dict[str, Any]:
    """The column values of a registration, its token and Web Push keys sealed with `seal`; ValueError for one
    that must stay in memory or cannot be encoded."""
    if not reg.persistent:
        raise ValueError("a registration with persistent=False must not be stored")
    if reg.expires_at is not None:
        raise ValueError("a registration with expires_at lives in memory only and must not be stored")
    return {
        "pubkey": reg.pubkey,
        "device_token": seal.seal(reg.device_token),
        "platform": reg.platform.value,
        "app": reg.app,
        "dialect": reg.dialect,
        "kinds": encode_kinds(reg.kinds),
        "created_at": float(reg.created_at),
        "mode": None if reg.mode is None else str(reg.mode),
        "webpush_p256dh": seal.seal_optional(reg.webpush_p256dh),
        "webpush_auth": seal.seal_optional(reg.webpush_auth),
        "device_pubkey": reg.device_pubkey,
        "groups": _encode_words(reg.groups, "groups"),
        "authors": _encode_words(sorted(reg.authors), "authors"),
        "relays": _encode_words(reg.relays, "relays"),
    }
