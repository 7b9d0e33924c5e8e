"""Composition root: builds the components from the settings, starts them in order and stops them in reverse.

Start: store (schema migrated) → registry index rebuilt → preferences read → dialects → handled ids seeded →
delivery (resuming the outbox) → quiet hours → relay discovery → relay pool (whose catch-up then skips what the
outbox already holds).
Stop: dialects → relay discovery → relay pool (no new events) → delivery drained (what is not final stays in the
outbox) → store.

With several instances (`cluster.enabled`) the cluster member joins in between (see `cluster.member`): it is
prepared before the registry loads, joins (taking its shards, which resumes their pushes) once delivery runs and
before the relays are asked, and hands its shards over first thing at stop.

Every dialect is wired by the same loop (`DIALECTS`): its kind handlers and event matcher go to the pipeline, its
relay filters into the subscription plan (again whenever it says they changed), its router into the HTTP app
(`api.app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pushstr.cluster.member import ClusterMember
from pushstr.config import ConfigError, Settings
from pushstr.delivery.stage import Delivery, build_delivery
from pushstr.dialects import amethyst, http_nip98, marmot, mostro, nos, notepush, push_settings, verse
from pushstr.dialects.base import Dialect, DialectBuilder, DialectContext
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.engine.admission import Admission, AdmissionLimits
from pushstr.engine.dedupe import SeenIds
from pushstr.engine.lists import KINDS as USER_LIST_KINDS
from pushstr.engine.lists import UserLists
from pushstr.engine.pipeline import Pipeline
from pushstr.engine.policy import PolicyStage
from pushstr.engine.presence import Presence
from pushstr.engine.profiles import MemoryProfileCache, ProfileWatch
from pushstr.identity import load_server_keys
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.private_files import private_dir
from pushstr.registry.model import Registration
from pushstr.registry.preferences import PreferenceBook
from pushstr.registry.service import Registry
from pushstr.registry.storage import Store
from pushstr.relays.discovery import LIST_KINDS, RelayDiscovery, author_filters
from pushstr.relays.planner import Interest
from pushstr.relays.pool import RelayPool
from pushstr.store import SqlStore, open_store
from pushstr.store.sealing import TokenSeal

log = logging.getLogger(__name__)

#: Every registration protocol pushstr speaks; adding one is a module with `build(context)` and a line here.
DIALECTS: tuple[DialectBuilder, ...] = (
    amethyst.build,  # before http_nip98: both serve `POST /register`, Amethyst's route only without Authorization
    http_nip98.build,
    push_settings.build,
    mostro.build,
    marmot.build,
    verse.build,
    nos.build,
    notepush.build,
)

EXPIRE_INTERVAL = 30.0
THREADS_REPLAN_SECONDS = 1.0
PRUNE_INTERVAL = 3600.0


class Service:
    """Everything `pushstr serve` runs, minus the HTTP server (see `api.app.create_app`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: Keys = load_server_keys(settings)
        self.store: Store = open_store(settings.store_url, TokenSeal(self.keys.secret))
        self.registry = Registry(self.store, settings.registration.max_devices_per_pubkey)
        self.seen = SeenIds(settings.nostr.dedupe_memory)
        profiles = MemoryProfileCache()
        self.profile_watch = ProfileWatch(profiles, on_change=self._replan)
        self.delivery: Delivery = build_delivery(
            settings, self.keys, self.registry.remove_dead, profiles, store=self.store
        )
        self.presence = Presence(settings.dialects.push_settings.heartbeat_timeout_seconds)
        self.preferences = PreferenceBook(self.store)
        self.lists = UserLists(author_filters)
        self.cluster: ClusterMember | None = None
        if settings.cluster.enabled:
            if not isinstance(self.store, SqlStore):
                raise ConfigError("invalid configuration: cluster.enabled needs the SQL store")
            self.cluster = ClusterMember(
                settings,
                self.store,
                self.registry,
                self.preferences,
                delivery=self.delivery,
                seen=self.seen,
                adopt=self._adopt,
            )
        self.policy = PolicyStage(
            self.preferences,
            self.lists,
            self.registry.matched_devices_for,
            self.delivery.submit,
            on_threads=self._threads_changed,
            store=self.store,
            all_devices_for=self.registry.devices_for,
        )
        self._threads_timer: asyncio.TimerHandle | None = None
        self.preferences.subscribe(self._lists_changed)
        self.pipeline = Pipeline(
            Admission(
                AdmissionLimits(
                    settings.nostr.max_event_bytes,
                    settings.nostr.max_event_age_seconds,
                    # a current profile or relay list may be years old
                    ageless_kinds=frozenset({Kind.METADATA, *LIST_KINDS, *USER_LIST_KINDS}),
                ),
                self.seen,
            ),
            self.registry.matched_devices_for,
            self.delivery,
            settings.apps,
            self.delivery,
            devices_for_group=self.registry.devices_for_group,
            policy=self.presence.allows,
            alert_sender=self.profile_watch.want,
            preferences=self.policy,
            shards=self.cluster.handled if self.cluster is not None else None,
        )
        self.pipeline.add_kind_handler(Kind.METADATA, self.profile_watch.on_metadata)
        for kind in USER_LIST_KINDS:
            self.pipeline.add_kind_handler(kind, self.lists.on_list)
        self.pool = RelayPool(
            settings.nostr.relays,
            self.keys,
            self.pipeline.on_relay_event,
            settings.nostr,
            update_interval=settings.nostr.relay_update_interval_seconds,
        )
        self.discovery: RelayDiscovery | None = None
        if settings.discovery.enabled:
            self.discovery = RelayDiscovery(settings.discovery, settings.nostr.relays, self.pool.set_relay_interest)
            for kind in LIST_KINDS:
                self.pipeline.add_kind_handler(kind, self.discovery.on_relay_list)
        context = DialectContext(
            settings,
            self.keys,
            self.registry,
            self.delivery,
            self.presence,
            relays=RegistrationRelays(
                settings.registration,
                configured=settings.nostr.relays,
                add_relay=self.pool.add_relay,
                remove_relay=self.pool.remove_relay,
            ),
            set_relay_filters=self.pool.set_relay_filters,
            use_token=self.store.use_token,
            preferences=self.preferences,
            send_now=self.delivery.send_once,
            filters=self.store,
            relay_filters_changed=self._dialect_filters_changed,
        )
        self.dialects: list[Dialect] = [dialect for build in DIALECTS if (dialect := build(context)) is not None]
        for dialect in self.dialects:
            for kind, handler in dialect.kind_handlers().items():
                self.pipeline.add_kind_handler(kind, handler, sharded=True)
            matcher = dialect.matcher()
            if matcher is not None:
                self.pipeline.add_matcher(matcher)
        self._dialect_filters = tuple(f for dialect in self.dialects for f in dialect.relay_filters())
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    def _replan(self) -> None:
        interest = self.registry.interest()
        lists: tuple[dict[str, Any], ...] = ()
        if self.discovery is not None:
            self.discovery.update(interest)
            lists = self.discovery.filters()
        self.pool.set_interest(
            Interest(
                p=interest,
                e=_merged(self.registry.group_interest(), self.policy.thread_interest()),
                extra=(*self._dialect_filters, *self.profile_watch.filters(), *lists, *self.lists.filters()),
            )
        )

    def _dialect_filters_changed(self) -> None:
        """A dialect's relay filters changed (Verse users' filters): ask the relays for them, once started."""
        self._dialect_filters = tuple(f for dialect in self.dialects for f in dialect.relay_filters())
        if self._unsubscribe is not None:
            self._replan()

    def _adopt(self, reg: Registration) -> None:
        """A registration another instance made: its dialect takes up its relays and groups."""
        for dialect in self.dialects:
            if dialect.name == reg.dialect:
                dialect.adopt(reg)

    def _lists_changed(self) -> None:
        """Preferences changed: ask the relays, and those users' own write relays, for the kind 3 and 10000 of the users
        that now need them."""
        users = self.preferences.list_users
        if self.discovery is not None:
            self.discovery.want_authored(USER_LIST_KINDS, users)
        if self.lists.want(users) and self._unsubscribe is not None:
            self._replan()

    def _threads_changed(self) -> None:
        """A thread started being followed: ask the relays for its replies soon (threads come in bursts)."""
        if self._threads_timer is None and self._unsubscribe is not None:
            self._threads_timer = asyncio.get_running_loop().call_later(THREADS_REPLAN_SECONDS, self._threads_replan)

    def _threads_replan(self) -> None:
        self._threads_timer = None
        self._replan()

    async def start(self) -> None:
        """Start everything in order. The cyclic garbage collector is paused for the whole start and what the start
        built is then frozen out of its view (`gc.freeze`): the registry index, the plan and the imports live as
        long as the process, and otherwise each generation's next collection would walk them in turn (passes of
        0.7 s over a million registrations), and every later full collection again (40-100 ms pauses in the
        event path). Objects freed by reference counting are unaffected; only cyclic garbage made during the
        start stays uncollected."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            private_dir(self.settings.server.data_dir)
            await self.store.open()
            if self.cluster is not None:
                await self.cluster.prepare()
            await self.registry.load()
            await self.preferences.load(lambda pubkey, token: self.registry.device(pubkey, token) is not None)
            for dialect in self.dialects:
                await dialect.start()
            if self.cluster is None:  # shards bring their own handled events (`cluster.member`)
                horizon = int(time.time()) - self.settings.nostr.max_event_age_seconds
                self.seen.update(await self.store.pushed_since(horizon))
            await self.delivery.start(self.registry.device, resume=self.cluster is None)
            if self.cluster is not None:
                await self.cluster.join(self.keys.public_hex)
            await self.policy.start()
            if self.discovery is not None:
                await self.discovery.start()
            self._unsubscribe = self.registry.subscribe(self._replan)
            self._replan()
            await self.pool.start()
            if self.cluster is not None:
                self.cluster.start()
            self._tasks = [
                asyncio.create_task(self._every(EXPIRE_INTERVAL, self._expire), name="expire-registrations"),
                asyncio.create_task(self._every(PRUNE_INTERVAL, self._prune), name="prune-pushed"),
            ]
            gc.freeze()
        finally:
            if collecting:
                gc.enable()
        self.started = True
        log.info(
            "pushstr started: %d relays, transports %s, dialects %s",
            len(self.settings.nostr.relays),
            self.delivery.transport_names,
            [dialect.name for dialect in self.dialects],
        )
        log.info("apps by platform: %s", self.settings.routing_summary())

    async def stop(self) -> None:
        self.started = False
        if self.cluster is not None:
            await self.cluster.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._threads_timer is not None:
            self._threads_timer.cancel()
            self._threads_timer = None
        for dialect in reversed(self.dialects):
            await dialect.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        await self.policy.stop()
        await self.pool.close()
        await self.delivery.close()
        await self.store.close()
        log.info("pushstr stopped")

    async def ready(self) -> bool:
        """Store answering and the ingest running."""
        return self.started and await self.store.ping()

    async def _expire(self) -> None:
        self.registry.expire()
        self.presence.expire()

    async def _prune(self) -> None:
        now = int(time.time())
        await self.store.forget_pushed(now - self.settings.nostr.max_event_age_seconds)
        await self.store.forget_tokens(now)

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.warning("periodic job %s failed", getattr(job, "__name__", job), exc_info=True)


def _merged(
    first: Mapping[frozenset[int], frozenset[str]], *others: Mapping[frozenset[int], frozenset[str]]
) -> Mapping[frozenset[int], frozenset[str]]:
    """One `e` interest of several (channels and followed threads): the ids of equal kind sets together; `first`
    itself when the others are empty, so an unchanged interest stays the same object."""
    if not any(others):
        return first
    merged = dict(first)
    for interest in others:
        for kinds, ids in interest.items():
            merged[kinds] = merged[kinds] | ids if kinds in merged else ids
    return merged
