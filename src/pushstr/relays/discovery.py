"""Relay discovery (the outbox model): watch the inbox relays registered users name themselves.

A NIP-17 client sends a gift wrap to the relays in the recipient's kind 10050 list (`["relay", url]` tags), and a
NIP-65 client sends a mention to the recipient's kind 10002 read relays (`["r", url]` or `["r", url, "read"]`;
`"write"` marks a relay the user only writes to). A user whose inbox is not among pushstr's configured relays
would never be pushed. So pushstr asks its configured relays (and any `discovery.indexer_relays`) for the newest
10002 and 10050 of every registered pubkey and keeps them live; these kinds are replaceable, so the newest
`created_at` wins and an older copy arriving later changes nothing.

Each listed relay is then asked only for what the users who listed it need there (`RelayPool.set_relay_interest`):
DMs and gift wraps (kinds 4, 1059) on a user's 10050 relays, or on the 10002 read relays when the user has no
usable 10050; every other kind the user's devices want on the 10002 read relays. What users publish themselves
and pushstr must read (their own kind 3 and 10000, for follows-only and mute lists: `want_authored`) is asked of
their 10002 write relays (`["r", url]` or `["r", url, "write"]`), where NIP-65 clients publish it, and of the
indexer relays. The configured relays keep getting everyone. A listed relay is connected when first needed and
dropped when nobody needs it any more.

Everything here is user-supplied, so it is bounded and guarded: a list is read up to `MAX_TAGS_READ` tags and
`max_relays_per_user` relays, every URL is normalised (`normalize_relay_url`) and passes the one URL guard
(`check_url`; private and loopback addresses only with `allow_private_relays`) before anything connects to it, and
at most `max_relays` listed relays are watched in total: past that, the ones serving the fewest users are left out
(`pushstr_discovery_relays{state="over_budget"}`). Only relays someone listed are ever connected to.

Author filters are cut by pubkey prefix (a trie, like the planner's), not evenly by position, so one registration
more changes one filter: these filters ask for the whole history (`since: 0`, a relay list may be years old), and
re-sending all of them after every registration would make every relay send every list again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from pushstr.config import DiscoveryConfig
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import RELAY_SCHEMES, EndpointRefused, Resolver, check_url, resolve_host
from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind
from pushstr.relays.planner import Interest
from pushstr.relays.urls import normalize_relay_url

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

RELAY_LIST = int(Kind.RELAY_LIST)
DM_RELAYS = int(Kind.DM_RELAYS)
LIST_KINDS = (RELAY_LIST, DM_RELAYS)
DM_KINDS = frozenset({Kind.ENCRYPTED_DM, Kind.GIFT_WRAP})
"""Delivered to the 10050 relays (NIP-17); every other kind to the 10002 read relays (NIP-65)."""
AUTHORS_PER_FILTER = 500
MAX_TAGS_READ = 100
"""Tags of one list looked at; real lists name a handful of relays."""
VERDICT_TTL_SECONDS = 3600.0
"""How long the URL guard's answer for one relay is reused: many users list the same relays."""
MAX_VERDICTS = 10_000
IDLE_LISTS = 10_000
"""Lists of pubkeys no longer registered, kept (at most this many) in case they register again: their events
were already seen, so a relay re-sending them would be dropped as duplicates."""
COALESCE_SECONDS = 0.1

LISTS = Counter(
    "pushstr_discovery_lists_total", "Kind 10002/10050 relay lists seen", ["result"]
)  # applied, older, unwatched
REFUSED = Counter(
    "pushstr_discovery_relays_refused_total", "Listed relays not watched", ["reason"]
)  # invalid, guard, user_limit
RELAYS = Gauge("pushstr_discovery_relays", "Relays users listed, by state", ["state"])  # watched, over_budget
for _result in ("applied", "older", "unwatched"):
    LISTS.labels(_result)
for _reason in ("invalid", "guard", "user_limit"):
    REFUSED.labels(_reason)

SetRelayInterest = Callable[[str, Interest | None], None]


def author_filters(authors: Iterable[str], per_filter: int = AUTHORS_PER_FILTER) -> tuple[dict[str, Any], ...]:
    """Filters for the relay lists of `authors`: each the authors under one hex prefix, the shortest prefix that
    holds at most `per_filter` of them, so that adding or removing one author changes one filter."""
    ordered = sorted(authors)
    buckets: list[list[str]] = []
    stack = [("", 0, len(ordered))]
    while stack:
        prefix, low, high = stack.pop()
        if high - low <= per_filter or len(prefix) >= 64:
            if high > low:
                buckets.append(ordered[low:high])
            continue
        children = []
        start = low
        for digit in "0123456789abcdef":
            end = high if digit == "f" else bisect_left(ordered, prefix + digit + "g", start, high)
            children.append((prefix + digit, start, end))
            start = end
        stack.extend(reversed(children))
    return tuple({"kinds": list(LIST_KINDS), "authors": bucket, "since": 0} for bucket in buckets)


@dataclass(frozen=True, slots=True)
class _Listed:
    """The relays one list names: where the user reads (10050: receives DMs) and, for a 10002, where they write."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


@dataclass(slots=True)
class _Lists:
    """One user's lists: the newest `created_at` seen per kind, and the relays of the newest one that was checked."""

    seen: dict[int, int] = field(default_factory=dict)
    relays: dict[int, _Listed] = field(default_factory=dict)

    def dm_relays(self) -> tuple[str, ...]:
        dm = self.relays.get(DM_RELAYS)
        return dm.read if dm is not None and dm.read else self.read_relays()

    def read_relays(self) -> tuple[str, ...]:
        listed = self.relays.get(RELAY_LIST)
        return () if listed is None else listed.read

    def write_relays(self) -> tuple[str, ...]:
        listed = self.relays.get(RELAY_LIST)
        return () if listed is None else listed.write


class RelayDiscovery:
    """Reads registered users' relay lists and gives each listed relay the interest of the users who listed it.

    `update` is told the registry's interest (kinds → pubkeys) on every change, `want_authored` whose own events
    of which kinds are needed; `filters` are the list filters to ask the configured relays for; `on_relay_list` is
    the kind handler for 10002 and 10050 (verified events only); `set_relay_interest` is the relay pool's. Relay
    URLs are checked by a worker task between `start` and `stop`.
    """

    def __init__(
        self,
        config: DiscoveryConfig,
        configured: Iterable[str],
        set_relay_interest: SetRelayInterest,
        *,
        resolve: Resolver = resolve_host,
        clock: Callable[[], float] = time.monotonic,
        coalesce_seconds: float = COALESCE_SECONDS,
    ) -> None:
        self._config = config
        self._set_relay_interest = set_relay_interest
        self._resolve = resolve
        self._clock = clock
        self._coalesce_seconds = coalesce_seconds
        self._configured = frozenset(normalize_relay_url(url) or url for url in configured)
        """Relays that get everyone already: listing one costs nothing and uses none of a user's budget."""
        self._indexers = tuple(
            dict.fromkeys(
                url
                for url in (normalize_relay_url(url) or url for url in config.indexer_relays)
                if url not in self._configured
            )
        )
        self._kinds: Mapping[frozenset[int], frozenset[str]] = {}
        self._authors: frozenset[str] = frozenset()
        self._filters: tuple[dict[str, Any], ...] = ()
        self._lists: dict[str, _Lists] = {}
        self._authored_kinds: tuple[int, ...] = ()
        self._authored: frozenset[str] = frozenset()
        self._pending: dict[tuple[str, int], tuple[int, _Listed]] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._verdicts: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._watched: dict[str, Interest] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def watched(self) -> Mapping[str, Interest]:
        """Listed (and indexer) relays and what each is asked for."""
        return self._watched

    def relays_of(self, pubkey: str) -> dict[int, tuple[str, ...]]:
        """The read (10050: DM) relays of a user's newest checked lists, by kind."""
        lists = self._lists.get(pubkey)
        return {} if lists is None else {kind: listed.read for kind, listed in lists.relays.items()}

    def write_relays_of(self, pubkey: str) -> tuple[str, ...]:
        """The write relays of a user's newest checked 10002."""
        lists = self._lists.get(pubkey)
        return () if lists is None else lists.write_relays()

    def filters(self) -> tuple[dict[str, Any], ...]:
        """The relay-list filters for every registered pubkey (the same objects until the pubkeys change)."""
        return self._filters

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="relay-discovery")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def update(self, kinds: Mapping[frozenset[int], frozenset[str]]) -> None:
        """The registry's interest changed (or may have: the same mapping object means it did not)."""
        if kinds is self._kinds:
            return
        self._kinds = kinds
        authors = frozenset[str]().union(*kinds.values())
        if authors != self._authors:
            self._authors = authors
            self._filters = author_filters(authors)
        self._schedule()

    def want_authored(self, kinds: tuple[int, ...], pubkeys: frozenset[str]) -> None:
        """Events of `kinds` that `pubkeys` publish themselves are needed (their own kind 3 and 10000): ask their
        10002 write relays and the indexers for them. Only registered users' lists are known, so only they count."""
        if (kinds, pubkeys) == (self._authored_kinds, self._authored):
            return
        self._authored_kinds, self._authored = kinds, pubkeys
        self._schedule()

    def on_relay_list(self, event: Event) -> None:
        """Kind handler for 10002 and 10050: note the newest list of a registered user; its relays are checked by
        the worker before they count."""
        if event.pubkey not in self._authors:
            LISTS.labels("unwatched").inc()
            return
        lists = self._lists.setdefault(event.pubkey, _Lists())
        if event.created_at <= lists.seen.get(event.kind, -1):
            LISTS.labels("older").inc()
            return
        lists.seen[event.kind] = event.created_at
        self._pending[(event.pubkey, event.kind)] = (event.created_at, self._listed(event))
        self._wake.set()

    def _listed(self, event: Event) -> _Listed:
        """Read (DM) relays and, for a 10002, write relays of a list, each at most `max_relays_per_user`."""
        if event.kind == DM_RELAYS:
            return _Listed(read=self._urls(event, "relay", None))
        return _Listed(read=self._urls(event, "r", "write"), write=self._urls(event, "r", "read"))

    def _urls(self, event: Event, name: str, not_marked: str | None) -> tuple[str, ...]:
        """The relays of the list's `name` tags not marked `not_marked`, normalised, in order, at most
        `max_relays_per_user` besides configured ones."""
        urls: dict[str, None] = {}
        counted = 0
        for tag in event.tags[:MAX_TAGS_READ]:
            if len(tag) < 2 or tag[0] != name or (len(tag) > 2 and tag[2] == not_marked):
                continue
            url = normalize_relay_url(tag[1])
            if url is None:
                REFUSED.labels("invalid").inc()
                continue
            if url in urls:
                continue
            if url not in self._configured:
                if counted >= self._config.max_relays_per_user:
                    REFUSED.labels("user_limit").inc()
                    continue
                counted += 1
            urls[url] = None
        return tuple(urls)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key = next(iter(self._pending))
                created_at, listed = self._pending.pop(key)
                try:
                    allowed = {url for url in dict.fromkeys((*listed.read, *listed.write)) if await self._allowed(url)}
                except Exception:
                    log.warning("relay list of %s not checked", ident(key[0]), exc_info=True)
                    continue
                lists = self._lists.get(key[0])
                if lists is None or lists.seen.get(key[1]) != created_at:
                    continue  # a newer list arrived meanwhile (and is pending), or the user is gone
                lists.relays[key[1]] = _Listed(
                    read=tuple(url for url in listed.read if url in allowed),
                    write=tuple(url for url in listed.write if url in allowed),
                )
                LISTS.labels("applied").inc()
                self._schedule()

    async def _allowed(self, url: str) -> bool:
        """Whether pushstr may connect to a listed relay: the URL guard's verdict, reused for a while."""
        if url in self._configured:
            return True
        now = self._clock()
        verdict = self._verdicts.get(url)
        if verdict is None or verdict[0] <= now:
            try:
                await check_url(
                    url, schemes=RELAY_SCHEMES, allow_private=self._config.allow_private_relays, resolve=self._resolve
                )
                allowed = True
            except EndpointRefused:
                allowed = False
                _rate_log.info("discovery-refused", "listed relay %s refused by the URL guard", ident(url))
            verdict = (now + VERDICT_TTL_SECONDS, allowed)
            self._verdicts[url] = verdict
            self._verdicts.move_to_end(url)
            while len(self._verdicts) > MAX_VERDICTS:
                self._verdicts.popitem(last=False)
        if not verdict[1]:
            REFUSED.labels("guard").inc()
        return verdict[1]

    def _authored_filters(self, pubkeys: Iterable[str]) -> tuple[dict[str, Any], ...]:
        """Filters for what `pubkeys` publish of the `want_authored` kinds, their whole history (replaceable lists)."""
        if not self._authored_kinds:
            return ()
        return tuple({**f, "kinds": list(self._authored_kinds)} for f in author_filters(pubkeys))

    def _schedule(self) -> None:
        """Recompute what every listed relay is asked for, soon: changes come in bursts."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._coalesce_seconds, self._recompute)

    def _recompute(self) -> None:
        self._timer = None
        wanted: dict[str, dict[frozenset[int], set[str]]] = {}
        users: dict[str, set[str]] = {}
        limit = self._config.max_relays_per_user
        for kinds, pubkeys in self._kinds.items():
            dm_kinds, other_kinds = kinds & DM_KINDS, kinds - DM_KINDS
            for pubkey in self._lists.keys() & pubkeys:
                lists = self._lists[pubkey]
                needs: dict[str, set[int]] = {}
                for relays, needed in ((lists.dm_relays(), dm_kinds), (lists.read_relays(), other_kinds)):
                    if not needed:
                        continue
                    for url in relays:
                        if url not in self._configured and (url in needs or len(needs) < limit):
                            needs.setdefault(url, set()).update(needed)
                for url, relay_kinds in needs.items():
                    wanted.setdefault(url, {}).setdefault(frozenset(relay_kinds), set()).add(pubkey)
                    users.setdefault(url, set()).add(pubkey)
        authored: dict[str, set[str]] = {}
        for pubkey in self._authored & self._lists.keys() if self._authored_kinds else ():
            for url in self._lists[pubkey].write_relays():
                if url not in self._configured:
                    authored.setdefault(url, set()).add(pubkey)
                    users.setdefault(url, set()).add(pubkey)
        ranked = sorted(users, key=lambda url: (-len(users[url]), url))
        kept = ranked[: self._config.max_relays]
        RELAYS.labels("watched").set(len(kept))
        RELAYS.labels("over_budget").set(len(ranked) - len(kept))
        watched = {
            url: Interest(
                p={k: frozenset(v) for k, v in wanted.get(url, {}).items()},
                extra=self._authored_filters(authored.get(url, ())),
            )
            for url in kept
        }
        indexed = (*self._filters, *self._authored_filters(self._authored & self._authors))
        for url in self._indexers:
            if indexed:
                current = watched.get(url, Interest())
                watched[url] = Interest(p=current.p, extra=(*indexed, *current.extra))
        for url in self._watched.keys() - watched.keys():
            self._set_relay_interest(url, None)
        for url, interest in watched.items():
            if self._watched.get(url) != interest:
                self._set_relay_interest(url, interest)
        self._watched = watched
        if len(self._lists) > len(self._authors) + IDLE_LISTS:
            self._lists = {pubkey: lists for pubkey, lists in self._lists.items() if pubkey in self._authors}
