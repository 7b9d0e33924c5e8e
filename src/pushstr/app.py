"""Composition root: builds the components from the settings, starts them in order and stops them in reverse.

Start: store (schema migrated) → registry index rebuilt → pushed-ids seeded → delivery → relay pool.
Stop: relay pool (no new events) → pushed ids flushed → delivery drained → store closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pushstr.config import Settings
from pushstr.dialects.push_settings import install_push_settings
from pushstr.engine.admission import Admission, AdmissionLimits
from pushstr.engine.dedupe import PushedLog, SeenIds
from pushstr.engine.pipeline import Pipeline
from pushstr.engine.presence import Presence
from pushstr.engine.profiles import METADATA_KIND, ProfileWatch
from pushstr.engine.render import MemoryProfileCache
from pushstr.identity import load_server_keys
from pushstr.nostr.keys import Keys
from pushstr.registry.service import Registry
from pushstr.relays.planner import Interest
from pushstr.relays.pool import RelayPool
from pushstr.store import open_store
from pushstr.store.base import Store
from pushstr.transports.delivery import Delivery, build_delivery

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
EXPIRE_INTERVAL = 30.0
PRUNE_INTERVAL = 3600.0


class Service:
    """Everything `pushstr serve` runs, minus the HTTP server (see `api.app.create_app`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: Keys = load_server_keys(settings)
        self.store: Store = open_store(settings.store_url)
        self.registry = Registry(self.store, settings.registration.max_devices_per_pubkey)
        self.seen = SeenIds(settings.nostr.dedupe_memory)
        self.pushed = PushedLog(self.store.remember_pushed)
        profiles = MemoryProfileCache()
        self.profile_watch = ProfileWatch(profiles, on_change=self._replan)
        self.delivery: Delivery = build_delivery(settings, self.keys, self.registry.remove_dead, profiles)
        self.presence = Presence(settings.dialects.push_settings.heartbeat_timeout_seconds)
        self.pipeline = Pipeline(
            Admission(AdmissionLimits(settings.nostr.max_event_bytes, settings.nostr.max_event_age_seconds), self.seen),
            self.registry.devices_for,
            self.delivery,
            settings.apps,
            self.pushed,
            devices_for_group=self.registry.devices_for_group,
            policy=self.presence.allows,
            alert_sender=self.profile_watch.want,
        )
        self.pipeline.add_kind_handler(METADATA_KIND, self.profile_watch.on_metadata)
        self.pool = RelayPool(settings.nostr.relays, self.keys, self.pipeline.on_relay_event, settings.nostr)
        self.extra_filters: list[dict[str, Any]] = []
        self.push_settings = install_push_settings(self) if settings.dialects.push_settings.enabled else None
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    def _replan(self) -> None:
        self.pool.set_interest(
            Interest(
                p=self.registry.interest(),
                e=self.registry.group_interest(),
                extra=(*self.extra_filters, *self.profile_watch.filters()),
            )
        )

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
            self.settings.server.data_dir.mkdir(parents=True, exist_ok=True)
            await self.store.open()
            await self.registry.load()
            if self.push_settings is not None:
                self.push_settings.restore()
                await self.push_settings.start()
            horizon = int(time.time()) - self.settings.nostr.max_event_age_seconds
            self.seen.update(await self.store.pushed_since(horizon))
            await self.delivery.start()
            self._unsubscribe = self.registry.subscribe(self._replan)
            self._replan()
            await self.pool.start()
            self._tasks = [
                asyncio.create_task(self._every(FLUSH_INTERVAL, self.pushed.flush), name="flush-pushed"),
                asyncio.create_task(self._every(EXPIRE_INTERVAL, self._expire), name="expire-registrations"),
                asyncio.create_task(self._every(PRUNE_INTERVAL, self._prune), name="prune-pushed"),
            ]
            gc.freeze()
        finally:
            if collecting:
                gc.enable()
        self.started = True
        log.info(
            "pushstr started: %d relays, transports %s", len(self.settings.nostr.relays), self.delivery.transport_names
        )

    async def stop(self) -> None:
        self.started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.push_settings is not None:
            await self.push_settings.stop()
        await self.pool.close()
        await self.pushed.flush()
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
        await self.store.forget_pushed(int(time.time()) - self.settings.nostr.max_event_age_seconds)

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.warning("periodic job %s failed", getattr(job, "__name__", job), exc_info=True)
