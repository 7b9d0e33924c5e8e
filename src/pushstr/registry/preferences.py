"""Notification preferences: what one device wants to be woken for, stored beside its registration.

Every dialect's devices share one model, so the policy stage (`engine.policy`) reads one thing whatever the
device registered through. A device without stored preferences has `DEFAULT`, which is exactly today's
behaviour: every kind the device registered for, from anyone, at any hour. Each field can only narrow that
(`thread_following` adds recipients, but only for a device that turned it on).

The `PreferenceBook` keeps every stored preference in memory, keyed by (pubkey, device token), plus the few
derived sets the hot path asks about (who follows threads, who needs their mute list or follows): the policy stage
never queries the store. Writes go to the store first, then to memory, as the registry does.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from pushstr.nostr.keys import is_hex

logger = logging.getLogger(__name__)

MAX_MUTES = 10_000
"""Entries of one mute list kept (public or private); the rest are ignored."""
MAX_WORD_BYTES = 100
HELLTHREAD_MIN, HELLTHREAD_MAX = 2, 1000
_WORD = re.compile(r"\w+")


def words_of(text: str) -> frozenset[str]:
    """The lowercase words of a text, as muted words are compared: a muted `word` matches a whole word."""
    return frozenset(_WORD.findall(text.lower()))


def phrase_text(text: str) -> str:
    """A text's lowercase words single-spaced: where muted phrases (entries of several words) are looked for."""
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True, slots=True)
class Mutes:
    """What a user muted (NIP-51 kind 10000 tags): authors (`p`), threads (`e`), hashtags (`t`), words (`word`).

    Hashtags and words are lowercase. `words` are single words, found by set lookup among the words of a note;
    `phrases` (muted entries of several words) are looked for as substrings, and are rare.
    """

    pubkeys: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    hashtags: frozenset[str] = frozenset()
    words: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pubkeys or self.events or self.hashtags or self.words or self.phrases)

    def __len__(self) -> int:
        return len(self.pubkeys) + len(self.events) + len(self.hashtags) + len(self.words) + len(self.phrases)

    def union(self, other: Mutes) -> Mutes:
        if not other:
            return self
        if not self:
            return other
        return Mutes(
            self.pubkeys | other.pubkeys,
            self.events | other.events,
            self.hashtags | other.hashtags,
            self.words | other.words,
            tuple(dict.fromkeys((*self.phrases, *other.phrases))),
        )

    def as_tags(self) -> list[list[str]]:
        """The mutes as NIP-51 tags (how they are stored)."""
        return [
            *(["p", value] for value in sorted(self.pubkeys)),
            *(["e", value] for value in sorted(self.events)),
            *(["t", value] for value in sorted(self.hashtags)),
            *(["word", value] for value in sorted(self.words)),
            *(["word", value] for value in self.phrases),
        ]


NO_MUTES = Mutes()


def mutes_from_tags(tags: Iterable[Sequence[Any]], limit: int = MAX_MUTES) -> Mutes:
    """The mutes named by NIP-51 tags (a kind 10000's public tags, or its decrypted private part); other tags and
    malformed values are skipped, and at most `limit` entries are read."""
    pubkeys: set[str] = set()
    events: set[str] = set()
    hashtags: set[str] = set()
    words: set[str] = set()
    phrases: dict[str, None] = {}
    read = 0
    for tag in tags:
        if read >= limit:
            break
        if not isinstance(tag, list | tuple) or len(tag) < 2 or not isinstance(tag[1], str):
            continue
        name, value = tag[0], tag[1]
        if name == "p" and is_hex(value, 64):
            pubkeys.add(value)
        elif name == "e" and is_hex(value, 64):
            events.add(value)
        elif name == "t" and 0 < len(value) <= MAX_WORD_BYTES:
            hashtags.add(value.lower().lstrip("#"))
        elif name == "word" and 0 < len(value) <= MAX_WORD_BYTES:
            found = _WORD.findall(value.lower())
            if len(found) == 1:
                words.add(found[0])
            elif found:
                phrases[" ".join(found)] = None
            else:
                continue
        else:
            continue
        read += 1
    if not (pubkeys or events or hashtags or words or phrases):
        return NO_MUTES
    return Mutes(frozenset(pubkeys), frozenset(events), frozenset(hashtags), frozenset(words), tuple(phrases))


class QuietAction(StrEnum):
    """What happens to a push inside quiet hours."""

    SUMMARY = "summary"
    """Held, and told in one summary push when the window ends."""
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window in a time zone (`start`/`end` minutes after local midnight; `end < start` spans midnight)."""

    timezone: str
    start: int
    end: int
    action: QuietAction = QuietAction.SUMMARY

    def __post_init__(self) -> None:
        if not (0 <= self.start < 1440 and 0 <= self.end < 1440) or self.start == self.end:
            raise ValueError("quiet hours need a start and an end between 00:00 and 23:59, not equal")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}: use an IANA name such as Europe/Berlin") from None

    def ends_at(self, now: float) -> float | None:
        """When the window `now` falls in ends (Unix seconds); None when `now` is outside it."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.start < self.end:
            inside = self.start <= minute < self.end
            end_day = midnight
        else:
            inside = minute >= self.start or minute < self.end
            end_day = midnight + timedelta(days=1) if minute >= self.start else midnight
        if not inside:
            return None
        return (end_day + timedelta(minutes=self.end)).timestamp()  # wall-clock arithmetic, DST-aware


def clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_clock(text: str) -> int:
    """Minutes after midnight of an `HH:MM` time; ValueError otherwise."""
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    return value


@dataclass(frozen=True, slots=True)
class Preferences:
    """One device's preferences. The defaults change nothing (see the module docstring).

    Per-type toggles: `dms` (kinds 4 and 1059), `mentions` (kind 1 naming the user outside a thread), `replies`
    (kind 1 with an `e` tag), `reposts` (6, 16), `reactions` (7), `zaps` (9735), `group_messages` (NIP-28/29).
    `follows_only`: only from authors in the user's kind 3. `hellthread_limit`: nothing for a note, repost,
    reaction or zap tagging more pubkeys than that. `zap_min_sats`: nothing for smaller zaps.
    `thread_following`: replies to events the user was notified about reach them without naming them.
    `mute_list`: honour the user's kind 10000. `private_mutes`: mutes the user handed over themselves (the
    private part of their list, which only they can decrypt). `quiet_hours`: a daily window without pushes.
    """

    dms: bool = True
    mentions: bool = True
    replies: bool = True
    reposts: bool = True
    reactions: bool = True
    zaps: bool = True
    group_messages: bool = True
    follows_only: bool = False
    hellthread_limit: int | None = None
    zap_min_sats: int = 0
    thread_following: bool = False
    mute_list: bool = False
    private_mutes: Mutes = NO_MUTES
    quiet_hours: QuietHours | None = None

    @property
    def needs_lists(self) -> bool:
        """Whether the user's kind 3 or kind 10000 must be followed for this device."""
        return self.follows_only or self.mute_list

    def to_json(self) -> bytes:
        """The stored form (a JSON object; unknown keys are ignored when read back)."""
        value: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "dms",
                "mentions",
                "replies",
                "reposts",
                "reactions",
                "zaps",
                "group_messages",
                "follows_only",
                "hellthread_limit",
                "zap_min_sats",
                "thread_following",
                "mute_list",
            )
        }
        if self.private_mutes:
            value["private_mutes"] = self.private_mutes.as_tags()
        if self.quiet_hours is not None:
            quiet = self.quiet_hours
            value["quiet_hours"] = {
                "timezone": quiet.timezone,
                "start": quiet.start,
                "end": quiet.end,
                "action": str(quiet.action),
            }
        return orjson.dumps(value)

    @classmethod
    def from_json(cls, data: bytes | str) -> Preferences:
        """Read the stored form; ValueError when it is not one."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError("stored preferences are not JSON") from exc
        if not isinstance(value, dict):
            raise ValueError("stored preferences are not a JSON object")
        flags = {
            name: value[name]
            for name in (
                "dms",
                "mentions",
                "replies",
                "reposts",
                "reactions",
                "zaps",
                "group_messages",
                "follows_only",
                "thread_following",
                "mute_list",
            )
            if isinstance(value.get(name), bool)
        }
        limit = value.get("hellthread_limit")
        sats = value.get("zap_min_sats")
        quiet = value.get("quiet_hours")
        return cls(
            **flags,
            hellthread_limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
            zap_min_sats=sats if isinstance(sats, int) and not isinstance(sats, bool) and sats >= 0 else 0,
            private_mutes=mutes_from_tags(value.get("private_mutes") or ()),
            quiet_hours=QuietHours(quiet["timezone"], quiet["start"], quiet["end"], QuietAction(quiet["action"]))
            if isinstance(quiet, dict)
            else None,
        )


DEFAULT = Preferences()


class PreferenceStorage(Protocol):
    """What the book needs of the store (`store.SqlStore` has it)."""

    async def save_preferences(self, pubkey: str, device_token: str, preferences: bytes) -> None: ...

    async def delete_preferences(self, pubkey: str, device_token: str) -> bool: ...

    async def load_preferences(self) -> list[tuple[str, str, bytes]]: ...


Listener = Callable[[], None]


@dataclass(slots=True)
class _Derived:
    """Pubkeys with at least one device that follows threads / needs its lists, with device counts."""

    thread_followers: dict[str, int] = field(default_factory=dict)
    list_users: dict[str, int] = field(default_factory=dict)


class PreferenceBook:
    """Every device's stored preferences in memory; the store written first. Reads never touch the store."""

    def __init__(self, storage: PreferenceStorage) -> None:
        self._storage = storage
        self._by_device: dict[tuple[str, str], Preferences] = {}
        self._derived = _Derived()
        self._listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self._by_device)

    @property
    def by_device(self) -> Mapping[tuple[str, str], Preferences]:
        """(pubkey, device token) → preferences, read-only and live: the hot path keeps it."""
        return self._by_device

    @property
    def thread_followers(self) -> Mapping[str, int]:
        """Pubkeys with a device that follows threads (live)."""
        return self._derived.thread_followers

    @property
    def list_users(self) -> frozenset[str]:
        """Pubkeys whose kind 3 / kind 10000 some device needs."""
        return frozenset(self._derived.list_users)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` after every change (the list follower re-plans what it asks relays for)."""
        self._listeners.append(listener)

    def get(self, pubkey: str, device_token: str) -> Preferences:
        return self._by_device.get((pubkey, device_token), DEFAULT)

    async def load(self, registered: Callable[[str, str], bool]) -> int:
        """Read every stored preference; rows of devices no longer `registered` are deleted."""
        loaded: dict[tuple[str, str], Preferences] = {}
        unreadable = 0
        for pubkey, token, data in await self._storage.load_preferences():
            if not registered(pubkey, token):
                await self._storage.delete_preferences(pubkey, token)
                continue
            try:
                loaded[(pubkey, token)] = Preferences.from_json(data)
            except (ValueError, KeyError, TypeError):
                unreadable += 1  # the device has the defaults until it sets them again
        self._by_device.clear()  # in place: the hot path holds these mappings
        self._by_device.update(loaded)
        self._derived.thread_followers.clear()
        self._derived.list_users.clear()
        for key, prefs in loaded.items():
            self._count(key[0], prefs, 1)
        if unreadable:
            logger.warning("%d stored preferences were unreadable; those devices have the defaults", unreadable)
        self._changed()
        return len(loaded)

    async def put(self, pubkey: str, device_token: str, preferences: Preferences) -> None:
        """Store a device's preferences (the defaults delete the row: they are what no row means)."""
        key = (pubkey, device_token)
        if preferences == DEFAULT:
            await self.remove(pubkey, device_token)
            return
        await self._storage.save_preferences(pubkey, device_token, preferences.to_json())
        old = self._by_device.get(key)
        if old is not None:
            self._count(pubkey, old, -1)
        self._by_device[key] = preferences
        self._count(pubkey, preferences, 1)
        self._changed()

    async def update(self, pubkey: str, device_token: str, **changes: Any) -> Preferences:
        """Change some fields of a device's preferences; the result."""
        updated = replace(self.get(pubkey, device_token), **changes)
        await self.put(pubkey, device_token, updated)
        return updated

    async def remove(self, pubkey: str, device_token: str) -> None:
        """Forget a device's preferences (its registration is gone, or it went back to the defaults)."""
        old = self._by_device.pop((pubkey, device_token), None)
        await self._storage.delete_preferences(pubkey, device_token)
        if old is not None:
            self._count(pubkey, old, -1)
            self._changed()

    def refresh(self, pubkey: str, tokens: Iterable[str], stored: Sequence[tuple[str, bytes]]) -> bool:
        """Make a pubkey's preferences here what the store holds (`stored`: device token and JSON, read after
        another instance changed them), for its device `tokens` and the stored ones; whether anything changed.
        An unreadable row leaves the defaults."""
        wanted: dict[str, Preferences] = {}
        for token, data in stored:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                wanted[token] = Preferences.from_json(data)
        changed = False
        for token in {*tokens, *wanted}:
            key = (pubkey, token)
            old, new = self._by_device.get(key), wanted.get(token)
            if old == new:
                continue
            changed = True
            if old is not None:
                self._count(pubkey, old, -1)
                del self._by_device[key]
            if new is not None:
                self._by_device[key] = new
                self._count(pubkey, new, 1)
        if changed:
            self._changed()
        return changed

    def _count(self, pubkey: str, prefs: Preferences, delta: int) -> None:
        for wanted, counts in (
            (prefs.thread_following, self._derived.thread_followers),
            (prefs.needs_lists, self._derived.list_users),
        ):
            if not wanted:
                continue
            count = counts.get(pubkey, 0) + delta
            if count > 0:
                counts[pubkey] = count
            else:
                counts.pop(pubkey, None)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
