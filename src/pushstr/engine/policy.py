"""The preferences stage: after matching, before delivery, each device's own wishes are applied.

Three steps, each cheap enough for every event:

* `select(event, matches)`: drops the matches a device's preferences rule out (kind toggles, mutes, follows-only,
  hellthreads, small zaps) and adds the devices following a thread the event replies to. It reads only
  in-memory sets (the preference book, the users' lists, the thread memory) and computes the event's facts
  (kind class, tag counts, hashtags, words) at most once, so it costs O(tags) whatever the size of a mute or
  follow list. Devices without stored preferences, nearly all of them, cost one dict lookup; with no stored
  preferences at all the matches are returned as they came. It changes no state, so it may run before the
  event is verified.
* `record(event, matches)`: after verification, remembers who was notified about the event, for the users who
  follow threads: a later reply naming the event reaches them without a `p` tag. Bounded (`thread_memory`
  events, least recent first out) and time-limited (`thread_ttl`).
* `defer(notification, device)`: inside a device's quiet hours the push is dropped or held; held pushes are
  coalesced into one summary that is submitted when the window ends (`release_due`, run by `start`'s worker
  and callable with an injected clock). Holds go to the store (`HeldStore`, one row per device that every
  instance adds to) within `HOLD_FLUSH_SECONDS`, coalesced per device; a summary is sent by whichever instance
  takes (deletes) the row once the window has ended, so a restart inside the window keeps it and a device gets
  one summary however its shard moved. A crash loses at most the holds of the last flush (their count in the
  summary, never a push outside the window); a crash between submitting a summary and the outbox's commit
  loses that summary, as it would any push not yet committed. Without a store (`MemoryHolds`) they live in
  this process only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Protocol

from prometheus_client import Counter

from pushstr.delivery.outbox import decode_notification, encode_notification
from pushstr.engine.lists import UserLists
from pushstr.engine.match import MAX_E_TAGS_CONSIDERED, MAX_P_TAGS_CONSIDERED, DevicesFor, Match
from pushstr.logutil import RateLimitedLog
from pushstr.metrics import LoopCounter
from pushstr.nostr.event import Event
from pushstr.nostr.zaps import bolt11_msat, zap_sats, zap_sender
from pushstr.registry.model import Registration
from pushstr.registry.preferences import Mutes, PreferenceBook, Preferences, QuietAction, phrase_text, words_of
from pushstr.registry.storage import HeldPush, merge_held
from pushstr.transports.base import Notification

SUPPRESSED = LoopCounter(
    "pushstr_policy_suppressed",
    "Matched devices left out by their preferences",
    ["reason"],
    initial=[("kind",), ("muted",), ("not_followed",), ("hellthread",), ("zap_amount",)],
)
QUIET = Counter("pushstr_quiet_hours_total", "Pushes inside quiet hours", ["result"])  # held, dropped, summary
QUIET_STORE_FAILURES = Counter(
    "pushstr_quiet_hours_store_failures_total", "Reads and writes of held pushes the store failed (retried)"
)
THREADS = Counter("pushstr_thread_following_total", "Devices reached by following a thread")
for _result in ("held", "dropped", "summary"):
    QUIET.labels(_result)

THREAD_MEMORY = 100_000
"""Events whose notified thread followers are remembered."""
THREAD_TTL = 7 * 24 * 3600.0
"""How long replies to a notified event are followed after its push (notepush ignores events older than 7 days)."""
THREADS_SUBSCRIBED = 5_000
"""The most recent followed threads whose replies relays are asked for by `e` tag (the rest are matched only when
a relay sends them anyway, as by kind in firehose mode)."""
THREAD_KINDS = frozenset({1, 6, 7, 16, 9735})
"""What replies in a thread can be: notes, reposts, reactions, zaps."""
QUIET_CHECK_SECONDS = 15.0
MAX_HELD_DEVICES = 100_000
HOLD_FLUSH_SECONDS = 0.5
"""How long a new hold may wait before it is written to the store (holds of that time are written in one go)."""

logger = logging.getLogger(__name__)


class HeldStore(Protocol):
    """Where held pushes are kept across restarts and shared between instances (`Store`'s part for them)."""

    async def add_held(self, holds: Collection[HeldPush]) -> None: ...

    async def take_due_held(self, now: float) -> list[HeldPush]: ...


class MemoryHolds:
    """`HeldStore` in this process only, for a stage without a store; at most `limit` devices at a time."""

    def __init__(self, limit: int = MAX_HELD_DEVICES) -> None:
        self._rows: dict[tuple[str, str], HeldPush] = {}
        self._limit = limit

    async def add_held(self, holds: Collection[HeldPush]) -> None:
        rows = self._rows
        for hold in holds:
            key = (hold.pubkey, hold.device_token)
            stored = rows.get(key)
            if stored is not None:
                rows[key] = merge_held(stored, hold)
            elif len(rows) < self._limit:
                rows[key] = hold
            else:
                QUIET.labels("dropped").inc(hold.count)

    async def take_due_held(self, now: float) -> list[HeldPush]:
        due = [key for key, hold in self._rows.items() if hold.ends_at <= now]
        return [self._rows.pop(key) for key in due]


_DMS = frozenset({4, 1059})
_REPOSTS = frozenset({6, 16})
_GROUPS = frozenset({9, 10, 11, 12, 42})
_HELLTHREAD_KINDS = frozenset({1, 6, 16, 7, 9735})
_ZAP = 9735
_NO_WORDS_KINDS = _DMS  # encrypted content has no words


class _Facts:
    """What preferences ask about one event, each computed once and only when asked."""

    __slots__ = (
        "_event",
        "_hashtags",
        "_sats",
        "_sats_read",
        "_text",
        "_words",
        "e_ids",
        "kind",
        "kind_class",
        "p_count",
        "sender",
    )

    def __init__(self, event: Event) -> None:
        self._event = event
        self.kind = kind = event.kind
        p_tags: set[str] = set()
        e_ids: list[str] = []
        for tag in event.tags:
            if len(tag) < 2:
                continue
            if tag[0] == "p" and len(p_tags) < MAX_P_TAGS_CONSIDERED:
                p_tags.add(tag[1])
            elif tag[0] == "e" and len(e_ids) < MAX_E_TAGS_CONSIDERED:
                e_ids.append(tag[1])
        self.p_count = len(p_tags)
        self.e_ids = e_ids
        self.kind_class = _kind_class(kind, e_ids)
        self.sender = None if kind == 1059 else zap_sender(event.tags) if kind == _ZAP else event.pubkey
        self._hashtags: frozenset[str] | None = None
        self._words: frozenset[str] | None = None
        self._text: str | None = None
        self._sats: int | None = None
        self._sats_read = False

    @property
    def hashtags(self) -> frozenset[str]:
        if self._hashtags is None:
            self._hashtags = frozenset(tag[1].lower() for tag in self._event.tags if len(tag) >= 2 and tag[0] == "t")
        return self._hashtags

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "" if self._event.kind in _NO_WORDS_KINDS else phrase_text(self._event.content)
        return self._text

    @property
    def words(self) -> frozenset[str]:
        if self._words is None:
            self._words = frozenset() if self._event.kind in _NO_WORDS_KINDS else words_of(self._event.content)
        return self._words

    @property
    def sats(self) -> int | None:
        """A zap's amount: the paid invoice's, else the zap request's."""
        if not self._sats_read:
            self._sats_read = True
            msat = next(
                (
                    bolt11_msat(tag[1])
                    for tag in self._event.tags
                    if len(tag) >= 2 and tag[0] == "bolt11" and isinstance(tag[1], str)
                ),
                None,
            )
            self._sats = msat // 1000 if msat is not None else zap_sats(self._event.tags)
        return self._sats


def _kind_class(kind: int, e_ids: list[str]) -> str | None:
    """Which per-type toggle governs an event of `kind`; None for kinds no toggle names."""
    if kind == 1:
        return "replies" if e_ids else "mentions"
    if kind in _DMS:
        return "dms"
    if kind in _REPOSTS:
        return "reposts"
    if kind == 7:
        return "reactions"
    if kind == _ZAP:
        return "zaps"
    if kind in _GROUPS:
        return "group_messages"
    return None


@dataclass(slots=True)
class _Held:
    """The pushes of one device held during its quiet hours: how many, of which kinds, and the latest."""

    ends_at: float
    latest: Notification
    count: int = 1
    kinds: set[int] = field(default_factory=set)

    def merge(self, later: _Held) -> None:
        """Take in pushes held after these."""
        self.count += later.count
        self.latest = later.latest
        self.kinds |= later.kinds
        self.ends_at = max(self.ends_at, later.ends_at)

    def stored(self, pubkey: str, device_token: str) -> HeldPush:
        latest = self.latest
        mixed = len(self.kinds) > 1
        text = encode_notification(latest)
        return HeldPush(pubkey, device_token, latest.app, self.ends_at, self.count, latest.kind, mixed, text)


def _held_of(stored: HeldPush) -> _Held:
    """The in-memory form of a stored row; ValueError (KeyError, TypeError) when its notification is unreadable."""
    latest = decode_notification(stored.notification, stored.app)
    kinds = {latest.kind, -1} if stored.mixed else {latest.kind}  # -1: "other kinds", enough to mark it mixed
    return _Held(stored.ends_at, latest, stored.count, kinds)


class PolicyStage:
    """Preferences, mutes, follows, thread following and quiet hours between matching and delivery."""

    def __init__(
        self,
        book: PreferenceBook,
        lists: UserLists,
        devices_for: DevicesFor,
        submit: Callable[[Notification, Registration], bool],
        *,
        clock: Callable[[], float] = time.time,
        thread_memory: int = THREAD_MEMORY,
        thread_ttl: float = THREAD_TTL,
        check_interval: float = QUIET_CHECK_SECONDS,
        on_threads: Callable[[], None] | None = None,
        store: HeldStore | None = None,
        all_devices_for: DevicesFor | None = None,
    ) -> None:
        """`devices_for(pubkey)` is the registry's lookup (thread followers are found through it); `submit` hands a
        quiet-hours summary to delivery; `clock` is Unix time (tests inject theirs); `on_threads` is told when a
        thread starts being followed (the relays are then asked for its replies, `thread_interest`); `store`
        keeps held pushes across restarts and instances (None: in memory only); `all_devices_for` finds the
        device a summary goes to, whichever instance's shard it is in (default `devices_for`)."""
        self._book = book
        self._by_device = book.by_device
        self._followers = book.thread_followers
        self._lists = lists
        self._devices_for = devices_for
        self._all_devices_for = all_devices_for or devices_for
        self._submit = submit
        self.clock = clock
        self.check_interval = check_interval
        self._thread_memory = thread_memory
        self._thread_ttl = thread_ttl
        self._on_threads = on_threads
        self._threads: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._worker: asyncio.Task[None] | None = None
        self._store: HeldStore = MemoryHolds() if store is None else store
        self._unsaved: dict[tuple[str, str], _Held] = {}  # holds since the last write to the store, per device
        self._wake = asyncio.Event()
        self._warn = RateLimitedLog(logger)

    def select(self, event: Event, matches: list[Match]) -> list[Match]:
        """The matches the devices' preferences let through, plus thread followers (see the module docstring)."""
        by_device = self._by_device
        if not by_device:
            return matches
        if self._threads and self._followers:
            matches = self._with_thread_followers(event, matches)
        facts: _Facts | None = None
        kept: list[Match] | None = None
        for position, found in enumerate(matches):
            device = found.device
            prefs = by_device.get((device.pubkey, device.device_token))
            if prefs is None:
                if kept is not None:
                    kept.append(found)
                continue
            if facts is None:
                facts = _Facts(event)
            reason = self._refusal(prefs, found.recipient, facts)
            if reason is None:
                if kept is not None:
                    kept.append(found)
                continue
            SUPPRESSED.inc(reason)
            if kept is None:
                kept = matches[:position]
        return matches if kept is None else kept

    def _refusal(self, prefs: Preferences, recipient: str, facts: _Facts) -> str | None:
        """Why a device's preferences rule the event out, or None."""
        kind_class = facts.kind_class
        if kind_class is not None and not getattr(prefs, kind_class):
            return "kind"
        sender = facts.sender
        limit = prefs.hellthread_limit
        if limit is not None and facts.p_count > limit and facts.kind in _HELLTHREAD_KINDS:
            return "hellthread"
        if kind_class == "zaps" and prefs.zap_min_sats > 0:
            sats = facts.sats
            if sats is None or sats < prefs.zap_min_sats:
                return "zap_amount"
        if prefs.follows_only and sender is not None:
            follows = self._lists.follows.get(recipient)
            if follows is None or sender not in follows:
                return "not_followed"
        if prefs.private_mutes and _muted(prefs.private_mutes, facts):
            return "muted"
        if prefs.mute_list:
            mutes = self._lists.mutes.get(recipient)
            if mutes is not None and _muted(mutes, facts):
                return "muted"
        return None

    def _with_thread_followers(self, event: Event, matches: list[Match]) -> list[Match]:
        """`matches` plus the devices that follow threads and were notified about an event this one names."""
        threads = self._threads
        now = self.clock()
        added: list[Match] | None = None
        reached: set[tuple[str, str]] | None = None
        considered = 0
        for tag in event.tags:
            if len(tag) < 2 or tag[0] != "e":
                continue
            considered += 1
            if considered > MAX_E_TAGS_CONSIDERED:
                break
            entry = threads.get(tag[1])
            if entry is None or entry[0] < now:
                continue
            for recipient in entry[1]:
                if recipient == event.pubkey:
                    continue
                for device in self._devices_for(recipient):
                    prefs = self._by_device.get((device.pubkey, device.device_token))
                    if prefs is None or not prefs.thread_following or event.kind not in device.kinds:
                        continue
                    if reached is None:
                        reached = {(m.device.pubkey, m.device.device_token) for m in matches}
                    key = (device.pubkey, device.device_token)
                    if key in reached:
                        continue
                    reached.add(key)
                    if added is None:
                        added = list(matches)
                    added.append(Match(recipient, device))
                    THREADS.inc()
        return matches if added is None else added

    def record(self, event: Event, matches: list[Match]) -> None:
        """Remember the thread followers notified about a verified event (see the module docstring)."""
        followers = self._followers
        if not followers:
            return
        recipients = tuple(dict.fromkeys(m.recipient for m in matches if m.recipient in followers))
        if not recipients:
            return
        threads = self._threads
        new = event.id not in threads
        threads[event.id] = (self.clock() + self._thread_ttl, recipients)
        threads.move_to_end(event.id)
        while len(threads) > self._thread_memory:
            threads.popitem(last=False)
        if new and self._on_threads is not None:
            self._on_threads()

    def thread_interest(self) -> dict[frozenset[int], frozenset[str]]:
        """The followed threads relays are asked for replies to (`e` tags): the most recent `THREADS_SUBSCRIBED`
        that have not expired."""
        now = self.clock()
        ids: list[str] = []
        for event_id, (expires, _) in reversed(self._threads.items()):
            if expires >= now:
                ids.append(event_id)
                if len(ids) >= THREADS_SUBSCRIBED:
                    break
        return {THREAD_KINDS: frozenset(ids)} if ids else {}

    def defer(self, notification: Notification, device: Registration) -> bool:
        """True when the device is inside its quiet hours: the push is dropped or held for the summary."""
        prefs = self._by_device.get((device.pubkey, device.device_token))
        if prefs is None or prefs.quiet_hours is None:
            return False
        quiet = prefs.quiet_hours
        ends_at = quiet.ends_at(self.clock())
        if ends_at is None:
            return False
        if quiet.action is QuietAction.DROP:
            QUIET.labels("dropped").inc()
            return True
        key = (device.pubkey, device.device_token)
        held = _Held(ends_at, notification, notification.count, {notification.kind})
        unsaved = self._unsaved.get(key)
        if unsaved is None:
            self._unsaved[key] = held
            self._wake.set()
        else:
            unsaved.merge(held)
        QUIET.labels("held").inc()
        return True

    async def release_due(self, now: float | None = None) -> int:
        """Submit the summary of every device whose quiet hours ended by `now`; how many were submitted. The rows
        are taken from the store, so each goes to one instance only, with what every instance held for it."""
        now = self.clock() if now is None else now
        if not await self.flush():
            return 0  # the store is down: the next check tries again
        try:
            due = await self._store.take_due_held(now)
        except Exception:  # any store failure: the rows stay and are taken next time
            QUIET_STORE_FAILURES.inc()
            self._warn.warning("quiet-take", "held pushes could not be read from the store; retrying")
            return 0
        released = 0
        for stored in due:
            held = self._readable(stored)
            devices = self._all_devices_for(stored.pubkey)
            device = next((d for d in devices if d.device_token == stored.device_token), None)
            if held is None or device is None:
                continue  # unreadable, or unregistered meanwhile
            if self._submit(_summary(held), device):
                QUIET.labels("summary").inc()
                released += 1
        return released

    async def flush(self) -> bool:
        """Write the holds made since the last flush to the store; False when the store failed (they stay)."""
        if not self._unsaved:
            return True
        batch, self._unsaved = self._unsaved, {}
        try:
            await self._store.add_held([held.stored(pubkey, token) for (pubkey, token), held in batch.items()])
        except Exception:  # any store failure: keep them for the next flush
            QUIET_STORE_FAILURES.inc()
            self._warn.warning("quiet-save", "held pushes could not be written to the store; retrying")
            for key, later in self._unsaved.items():  # held while the write was failing
                if key in batch:
                    batch[key].merge(later)
                else:
                    batch[key] = later
            self._unsaved = batch
            return False
        return True

    def _readable(self, stored: HeldPush) -> _Held | None:
        try:
            return _held_of(stored)
        except (ValueError, KeyError, TypeError):
            self._warn.warning("quiet-row", "a stored summary of held pushes was unreadable and was left out")
            return None

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="quiet-hours")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await self.flush()

    async def _run(self) -> None:
        next_check = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_interval)
            if self._wake.is_set():
                self._wake.clear()
                await asyncio.sleep(HOLD_FLUSH_SECONDS)  # let the holds of a burst share one write
                await self.flush()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.check_interval
                await self.release_due()


def _muted(mutes: Mutes, facts: _Facts) -> bool:
    """Whether an event hits a mute list: its sender, a thread it names, a hashtag or a word."""
    if facts.sender is not None and facts.sender in mutes.pubkeys:
        return True
    if mutes.events and not mutes.events.isdisjoint(facts.e_ids):
        return True
    if mutes.hashtags and not mutes.hashtags.isdisjoint(facts.hashtags):
        return True
    if mutes.words and not mutes.words.isdisjoint(facts.words):
        return True
    return bool(mutes.phrases) and any(phrase in facts.text for phrase in mutes.phrases)


def _summary(held: _Held) -> Notification:
    """One push standing for everything held: the latest notification, counted, marked mixed when kinds differ."""
    latest = held.latest
    if held.count <= 1:
        return latest
    extra = {"mixed": "1"} if len(held.kinds) > 1 else {k: v for k, v in latest.extra.items() if k != "sats"}
    return replace(latest, count=held.count, preview=None, extra=extra, conversation=None)
