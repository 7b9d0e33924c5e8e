"""Notification preferences as the HTTP APIs read and show them, and the private mutes a user hands over.

A user's kind 10000 keeps its private mutes NIP-44-encrypted to the user's own key, which pushstr cannot read. A
client that wants them honoured encrypts the same plaintext (a JSON array of NIP-51 tags) from the user's key to
the server key and sends it as `private_mutes`; pushstr decrypts it once, keeps the mutes with the device's
preferences and never shows them back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from pushstr.nostr import nip44
from pushstr.nostr.errors import DecryptError
from pushstr.nostr.keys import Keys
from pushstr.registry.preferences import (
    HELLTHREAD_MAX,
    HELLTHREAD_MIN,
    MAX_MUTES,
    Mutes,
    Preferences,
    QuietAction,
    QuietHours,
    clock_text,
    mutes_from_tags,
    parse_clock,
)

MAX_PRIVATE_MUTES_CHARS = 200_000


class PrivateMutesError(ValueError):
    """`private_mutes` that do not decrypt to a JSON array of tags."""


def private_mutes(keys: Keys, pubkey: str, ciphertext: str) -> Mutes:
    """The mutes in `ciphertext` (NIP-44 from `pubkey` to the server's `keys`); an empty string clears them."""
    if not ciphertext:
        return Mutes()
    if len(ciphertext) > MAX_PRIVATE_MUTES_CHARS:
        raise PrivateMutesError(f"private_mutes: at most {MAX_PRIVATE_MUTES_CHARS} characters")
    try:
        plaintext = nip44.decrypt_from(keys, pubkey, ciphertext)
    except DecryptError as exc:
        raise PrivateMutesError(f"private_mutes: {exc.reason}; encrypt with NIP-44 to the server key") from None
    try:
        tags = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise PrivateMutesError("private_mutes: the plaintext is not JSON (a list of NIP-51 tags)") from None
    if not isinstance(tags, list):
        raise PrivateMutesError("private_mutes: the plaintext must be a JSON list of NIP-51 tags")
    return mutes_from_tags(tags, MAX_MUTES)


class QuietHoursBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin")
    start: str = Field(pattern=r"^\d{1,2}:\d{2}$", description="local time the window starts, HH:MM")
    end: str = Field(pattern=r"^\d{1,2}:\d{2}$", description="local time it ends, HH:MM (before start: overnight)")
    action: Literal["summary", "drop"] = Field(
        "summary", description="summary: held and told in one push when the window ends; drop: not pushed"
    )


class PreferencesBody(BaseModel):
    """`PUT /preferences`: the fields sent are changed, the others kept. Booleans default to today's behaviour."""

    model_config = ConfigDict(extra="forbid")

    device_token: str | None = Field(None, max_length=4096, description="one device; absent: every device")
    dms: bool | None = None
    mentions: bool | None = None
    replies: bool | None = None
    reposts: bool | None = None
    reactions: bool | None = None
    zaps: bool | None = None
    group_messages: bool | None = None
    follows_only: bool | None = Field(None, description="only from authors in your kind 3")
    hellthread_limit: int | None = Field(
        None,
        ge=0,
        le=HELLTHREAD_MAX,
        description=f"nothing tagging more pubkeys ({HELLTHREAD_MIN}–{HELLTHREAD_MAX}; 0: no limit)",
    )
    zap_min_sats: int | None = Field(None, ge=0, le=21_000_000 * 100_000_000, description="no push for smaller zaps")
    thread_following: bool | None = None
    mute_list: bool | None = Field(None, description="honour your kind 10000 mute list")
    private_mutes: str | None = Field(
        None, max_length=MAX_PRIVATE_MUTES_CHARS, description="NIP-44 from you to the server key; empty: none"
    )
    quiet_hours: QuietHoursBody | Literal[False] | None = Field(None, description="false: no quiet hours")


class QuietHoursView(BaseModel):
    timezone: str
    start: str
    end: str
    action: Literal["summary", "drop"]


class PreferencesView(BaseModel):
    dms: bool
    mentions: bool
    replies: bool
    reposts: bool
    reactions: bool
    zaps: bool
    group_messages: bool
    follows_only: bool
    hellthread_limit: int | None
    zap_min_sats: int
    thread_following: bool
    mute_list: bool
    private_mutes: int = Field(description="how many private mutes were handed over")
    quiet_hours: QuietHoursView | None


_FLAGS = (
    "dms",
    "mentions",
    "replies",
    "reposts",
    "reactions",
    "zaps",
    "group_messages",
    "follows_only",
    "zap_min_sats",
    "thread_following",
    "mute_list",
)


def preferences_view(prefs: Preferences) -> dict[str, Any]:
    quiet = prefs.quiet_hours
    return {
        **{name: getattr(prefs, name) for name in _FLAGS},
        "hellthread_limit": prefs.hellthread_limit,
        "private_mutes": len(prefs.private_mutes),
        "quiet_hours": None
        if quiet is None
        else {
            "timezone": quiet.timezone,
            "start": clock_text(quiet.start),
            "end": clock_text(quiet.end),
            "action": str(quiet.action),
        },
    }


def applied(prefs: Preferences, body: PreferencesBody, keys: Keys, pubkey: str) -> Preferences:
    """`prefs` with the fields `body` sets; ValueError (with a reason for the client) for a bad value."""
    changes: dict[str, Any] = {name: getattr(body, name) for name in _FLAGS if getattr(body, name) is not None}
    if body.hellthread_limit is not None:
        if 0 < body.hellthread_limit < HELLTHREAD_MIN:
            raise ValueError(f"hellthread_limit: at least {HELLTHREAD_MIN} (0: no limit)")
        changes["hellthread_limit"] = body.hellthread_limit or None
    if body.private_mutes is not None:
        changes["private_mutes"] = private_mutes(keys, pubkey, body.private_mutes)
    if body.quiet_hours is False:
        changes["quiet_hours"] = None
    elif body.quiet_hours is not None:
        quiet = body.quiet_hours
        try:
            changes["quiet_hours"] = QuietHours(
                quiet.timezone, parse_clock(quiet.start), parse_clock(quiet.end), QuietAction(quiet.action)
            )
        except ValueError as exc:
            raise ValueError(f"quiet_hours: {exc}") from None
    return replace(prefs, **changes)
