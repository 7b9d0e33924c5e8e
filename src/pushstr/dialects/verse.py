"""Verse's kinds 3079–3082 (verse-pbc/nostr_push_service; its spec is `docs/nip-xx-push-notifications.md`).

A client publishes signed control events tagged `["p", <server pubkey>]` and `["app", <app id>]` (absent:
`default`), optionally `["expiration", <unix seconds>]`, with NIP-44 v2 content to the server key (read by
`verse_message`); pushstr asks every watched relay for them and takes them on the built-in endpoint too:

* 3079 `{"token"}` registers the FCM token as an Android device of the app under the signer, pushed with the
  pushstr app configured for that Verse app (`dialects.verse.apps`). A token another pubkey had registered in the
  same app moves to the signer: the reference keeps one pubkey per token and app.
* 3080 `{"token"}` removes the signer's registration of the token (only the signer's: the reference refuses to
  deregister another pubkey's token). When that was the user's last device in the app, their filters there go
  too; the reference drops them at every deregistration, which would silence the user's other devices.
* 3081 `{"filter"}` keeps a NIP-01 filter for the signer in the app, and 3082 `{"filter"}` deletes it, found by
  its id (`verse_message.read_filter`). Events matching a user's filters push that user's devices of that app
  (`verse_filters`); the relays are asked for all filters, merged. That is all a Verse device is pushed for: its
  kinds are empty, so the `p` tags of events do not reach it. A user who wants mentions and DMs asks for them, as
  the NIP's own example does with `{"kinds": [1, 7, 9735], "#p": [<me>]}`; NIP-29 group messages are an `#h`
  filter, NIP-72 community posts an `#a` filter. (The reference also pushes a mention that happens to arrive
  through someone's filter, and checks group membership with its one NIP-29 relay; pushstr does neither.)

A filter names its kinds, all of them allowed for the app (the reference's per-app list), and at least one id,
author or tag value (a filter of kinds alone would push every event of those kinds on every relay); it is at most
`max_filter_bytes` as canonical JSON, a user keeps at most `max_filters_per_user` in an app and the server
`max_filters` in all.

Events older than `max_age_seconds`, dated more than `max_future_seconds` ahead, or past their NIP-40 expiration
are ignored (the reference's relay client drops expired events). A registration or filter does not end at its
event's expiration, as it does not in the reference: devices end by deregistration, when FCM says the token is
gone, or `forget_after_days` after they last registered (the reference's token cleanup); filters of a user with no
device left in the app are dropped once older than `max_age_seconds`.

Everything is ordered by `created_at`, newest wins: an event older than the registration or filter it would
replace is ignored, and deregistrations and deletes are remembered for `max_age_seconds`, so that an older 3079
or 3081 (a relay's catch-up after a restart sends the newest first) cannot bring back what they removed. Changes
run one at a time on a worker task, in arrival order, because the pipeline's kind handlers are synchronous and
the registry and the store are not; the hourly sweep runs on the same worker.

With several instances (`pushstr.cluster`) a control event is applied by the instance owning its author's shard,
which then matches that user's filters. Each instance reads the stored filters at its start, so a shard taken
over from another instance brings the filters stored before that start; later ones arrive with the user's next
3081.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from pushstr.config import ConfigError, VerseDialectConfig
from pushstr.dialects.apps import token_app
from pushstr.dialects.base import Dialect, DialectContext, Refused
from pushstr.dialects.verse_filters import FilterBook, Subscription, User
from pushstr.dialects.verse_message import (
    DEREGISTER,
    FILTER_DELETE,
    FILTER_UPSERT,
    KINDS,
    MAX_TOKEN_PLAINTEXT,
    REGISTER,
    UserFilter,
    check_subscribable,
    open_content,
    read_envelope,
    read_filter,
    read_token,
    stored_filter,
)
from pushstr.engine.match import DevicesFor, Match
from pushstr.engine.pipeline import EventMatcher, KindHandler
from pushstr.logutil import RateLimitedLog, ident
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.storage import FilterStore, StoredFilter
from pushstr.registry.tokens import InvalidToken, check_device_token

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "verse"
NO_KINDS: frozenset[int] = frozenset()
QUEUE_SIZE = 10_000
SWEEP_INTERVAL = 3600.0
MAX_REMEMBERED = 100_000
"""Deregistrations and deletes remembered at most (older ones are forgotten first)."""
_FCM_TRANSPORTS = ("fcm", "log")

RESULTS = (
    "registered",
    "deregistered",
    "filter_saved",
    "filter_deleted",
    "unchanged",
    "not_for_us",
    "missing_tag",
    "malformed",
    "expired",
    "stale",
    "unknown_app",
    "no_app",
    "not_encrypted",
    "undecryptable",
    "too_large",
    "bad_json",
    "bad_token",
    "bad_filter",
    "kind_not_allowed",
    "too_broad",
    "too_many_filters",
    "too_many_devices",
    "superseded",
    "unknown_device",
    "unknown_filter",
    "overloaded",
)
EVENTS = Counter("pushstr_verse_events_total", "Verse kinds 3079–3082 by outcome", ["result"])
for _result in RESULTS:
    EVENTS.labels(_result)
MOVED = Counter("pushstr_verse_tokens_moved_total", "Verse tokens registered again by another pubkey of the app")
FORGOTTEN = Counter("pushstr_verse_devices_forgotten_total", "Verse devices removed after forget_after_days")
FILTERS = Gauge("pushstr_verse_filters", "Verse filters kept, all users together")

Remembered = tuple[str, ...]
"""("device", app, pubkey, token), ("filter", app, pubkey, filter id) or ("user", app, pubkey): what a
deregistration or delete removed."""


@dataclass(frozen=True, slots=True)
class VerseApp:
    """A Verse app served here: the pushstr app its tokens are pushed with (None: no app can push them, so its
    events are refused) and the kinds its users' filters may name."""

    push_app: str | None
    allowed_kinds: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Job:
    """A control event read and checked, waiting for the worker: the token of a 3079/3080, the filter of a
    3081/3082."""

    event: Event
    app: str
    token: str = ""
    filter: UserFilter | None = None


class _Sweep:
    """The worker's cue to remove old devices, orphaned filters and old memories."""


_SWEEP = _Sweep()


class Verse(Dialect):
    """Kinds 3079–3082 become FCM registrations and users' filters, which match events; see the module docstring."""

    name = DIALECT

    def __init__(
        self,
        keys: Keys,
        registry: Registry,
        store: FilterStore,
        config: VerseDialectConfig,
        *,
        apps: Mapping[str, VerseApp],
        relay_filters_changed: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`apps` are the Verse apps served, by app id; `relay_filters_changed` tells the service that
        `relay_filters()` changed."""
        self._keys = keys
        self._server = keys.public_hex
        self._registry = registry
        self._devices_for: DevicesFor = registry.matched_devices_for
        self._store = store
        self._config = config
        self._apps = dict(apps)
        self._relay_filters_changed = relay_filters_changed
        self._clock = clock
        self._book = FilterBook()
        self._by_token: dict[str, set[str]] = {}
        self._remembered: dict[Remembered, int] = {}
        self._queue: asyncio.Queue[_Job | _Sweep] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        return dict.fromkeys(KINDS, self.handle)

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Control events addressed to this server, and every user's filters, merged (`verse_filters`)."""
        return ({"kinds": list(KINDS), "#p": [self._server]}, *self._book.relay_filters())

    def matcher(self) -> EventMatcher:
        return self.match

    def describe(self) -> Mapping[str, Any]:
        config = self._config
        return {
            "kinds": {
                str(REGISTER): "register a token",
                str(DEREGISTER): "deregister a token",
                str(FILTER_UPSERT): "upsert a filter",
                str(FILTER_DELETE): "delete a filter",
            },
            "send_to": "a relay pushstr watches, or the built-in relay endpoint",
            "tags": {
                "p": "the server pubkey (required)",
                "app": "one of apps (absent: default)",
                "expiration": "NIP-40 Unix seconds (optional; expired events are ignored)",
            },
            "content": "NIP-44 v2 ciphertext to the server pubkey",
            "register": {"token": "FCM token"},
            "filter": {"filter": "NIP-01 filter: kinds allowed for the app, and ids, authors or tag values"},
            "apps": {
                app_id: {"platform": "android" if app.push_app else None, "allowed_kinds": sorted(app.allowed_kinds)}
                for app_id, app in sorted(self._apps.items())
            },
            "mode": None if config.mode is None else str(config.mode),
            "max_filters_per_user": config.max_filters_per_user,
            "max_filter_bytes": config.max_filter_bytes,
            "max_age_seconds": config.max_age_seconds,
            "forget_after_days": config.forget_after_days,
        }

    async def start(self) -> None:
        """Read the stored filters and the tokens of the Verse devices loaded (after `Registry.load`), then start
        the worker and its sweeps."""
        for stored in await self._store.load_filters():
            self._restore(stored)
        for reg in self._registry.registrations():
            if reg.dialect == DIALECT:
                self.adopt(reg)
        self._filters_changed()
        self._tasks = [
            asyncio.create_task(self._work(), name="verse"),
            asyncio.create_task(self._schedule_sweeps(), name="verse-sweep"),
        ]

    def _restore(self, stored: StoredFilter) -> None:
        app = self._apps.get(stored.app)
        if app is None or app.push_app is None:
            return  # an app no longer configured, or without an FCM app: its filters stay stored, unused
        try:
            user_filter = stored_filter(stored.filter_json)
        except Refused as exc:
            _rate_log.warning("verse-restore", "a stored Verse filter was left out: %s", exc)
            return
        self._book.put(
            Subscription(
                stored.app,
                stored.pubkey,
                user_filter.filter_id,
                user_filter.canonical,
                user_filter.filter,
                int(stored.created_at),
            )
        )

    def adopt(self, reg: Registration) -> None:
        self._track(reg.pubkey, reg.device_token)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def match(self, event: Event) -> list[Match]:
        """The devices `event` reaches through their users' filters, each once (the pipeline's matcher)."""
        subs = self._book.matching(event)
        if not subs:
            return []
        found: list[Match] = []
        reached: set[tuple[str, str]] = set()
        for sub in subs:
            app = self._apps.get(sub.app)
            push_app = app.push_app if app is not None else None
            if push_app is None:
                continue
            for reg in self._devices_for(sub.pubkey):
                if reg.dialect == DIALECT and reg.app == push_app and reg.key not in reached:
                    reached.add(reg.key)
                    found.append(Match(sub.pubkey, reg))
        return found

    # -- reading ---------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """The pipeline's handler for kinds 3079–3082 (verified events): read and check now, apply on the worker."""
        try:
            self._queue.put_nowait(self._read(event))
        except Refused as exc:
            self._count(exc, event)
        except asyncio.QueueFull:
            self._count(Refused("overloaded", "too many Verse events waiting"), event)

    def _read(self, event: Event) -> _Job:
        config = self._config
        now = self._clock()
        envelope = read_envelope(event, self._server, now)
        if event.created_at < now - config.max_age_seconds:
            raise Refused("stale", f"signed more than {config.max_age_seconds} s ago")
        if event.created_at > now + config.max_future_seconds:
            raise Refused("stale", "dated in the future")
        app = self._apps.get(envelope.app)
        if app is None:
            raise Refused("unknown_app", "no such app here")
        if app.push_app is None:
            raise Refused("no_app", "no FCM app is configured for this Verse app")
        if event.kind in (REGISTER, DEREGISTER):
            token = read_token(open_content(self._keys, event, MAX_TOKEN_PLAINTEXT))
            return _Job(event, envelope.app, token=token)
        user_filter = read_filter(open_content(self._keys, event, 2 * config.max_filter_bytes), config.max_filter_bytes)
        if event.kind == FILTER_UPSERT:
            check_subscribable(user_filter.filter, app.allowed_kinds)
        return _Job(event, envelope.app, filter=user_filter)

    def _count(self, exc: Refused, event: Event) -> None:
        EVENTS.labels(exc.result).inc()
        _rate_log.info(f"verse-{exc.result}", "Verse kind %d from %s ignored: %s", event.kind, ident(event.pubkey), exc)

    # -- applying --------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if isinstance(job, _Sweep):
                    await self._sweep()
                else:
                    EVENTS.labels(await self._apply(job)).inc()
            except Refused as exc:
                assert isinstance(job, _Job)
                self._count(exc, job.event)
            except Exception:
                _rate_log.warning("verse-error", "applying a Verse event failed", exc_info=True)

    async def _apply(self, job: _Job) -> str:
        """Apply one event; its result (`unchanged`: the same event again, as a relay's catch-up sends it)."""
        kind = job.event.kind
        if kind == REGISTER:
            return await self._register(job)
        if kind == DEREGISTER:
            await self._deregister(job)
            return "deregistered"
        assert job.filter is not None
        if kind == FILTER_UPSERT:
            return await self._upsert(job, job.filter)
        await self._delete(job, job.filter)
        return "filter_deleted"

    def _push_app(self, app_id: str) -> str:
        push_app = self._apps[app_id].push_app
        assert push_app is not None  # `_read` refused the events of an app without one
        return push_app

    def _devices(self, app_id: str, pubkey: str) -> list[Registration]:
        """The user's Verse devices of one app, whichever instance matches them."""
        push_app = self._push_app(app_id)
        return [reg for reg in self._registry.devices_for(pubkey) if reg.dialect == DIALECT and reg.app == push_app]

    async def _register(self, job: _Job) -> str:
        event, token = job.event, job.token
        pubkey, at = event.pubkey, event.created_at
        push_app = self._push_app(job.app)
        try:
            await check_device_token(Platform.ANDROID, token)
        except InvalidToken as exc:
            raise Refused("bad_token", str(exc)) from None
        if self._remembered.get(("device", job.app, pubkey, token), -1) >= at:
            raise Refused("superseded", "older than a deregistration of this token")
        current = self._registry.device(pubkey, token)
        if current is not None and current.dialect == DIALECT and current.created_at > at:
            raise Refused("superseded", "older than the registration already known for this token")
        if current is not None and current.dialect == DIALECT and current.created_at == at and current.app == push_app:
            return "unchanged"
        others = [
            reg
            for holder in sorted(self._by_token.get(token, set()) - {pubkey})
            if (reg := self._registry.device(holder, token)) is not None
            and reg.dialect == DIALECT
            and reg.app == push_app
        ]
        if any(reg.created_at > at for reg in others):
            raise Refused("superseded", "another pubkey registered this token since")
        registration = Registration(
            pubkey=pubkey,
            device_token=token,
            platform=Platform.ANDROID,
            app=push_app,
            dialect=DIALECT,
            kinds=NO_KINDS,
            created_at=float(at),
            mode=self._config.mode,
        )
        try:
            await self._registry.add(registration)
        except TooManyDevices as exc:
            raise Refused("too_many_devices", str(exc)) from None
        self._track(pubkey, token)
        for reg in others:
            await self._registry.remove(reg.pubkey, token)
            self._untrack(reg.pubkey, token)
            MOVED.inc()
        return "registered"

    async def _deregister(self, job: _Job) -> None:
        event, token = job.event, job.token
        pubkey, at = event.pubkey, event.created_at
        self._remember(("device", job.app, pubkey, token), at)
        current = self._registry.device(pubkey, token)
        known = current is not None and current.dialect == DIALECT and current.app == self._push_app(job.app)
        if current is not None and known:
            if current.created_at > at:
                raise Refused("superseded", "older than the registration of this token")
            await self._registry.remove(pubkey, token)
            self._untrack(pubkey, token)
        if not self._devices(job.app, pubkey):
            self._remember(("user", job.app, pubkey), at)
            await self._drop_filters((job.app, pubkey), [sub for sub in self._book.of((job.app, pubkey)).values()])
        if not known:
            raise Refused("unknown_device", "this token is not registered for the signer in this app")

    async def _upsert(self, job: _Job, user_filter: UserFilter) -> str:
        event, user = job.event, (job.app, job.event.pubkey)
        at = event.created_at
        if (
            max(
                self._remembered.get(("filter", *user, user_filter.filter_id), -1),
                self._remembered.get(("user", *user), -1),
            )
            >= at
        ):
            raise Refused("superseded", "older than a delete of this filter")
        current = self._book.of(user).get(user_filter.filter_id)
        if current is not None:
            if current.created_at > at:
                raise Refused("superseded", "older than the upsert already known for this filter")
            if current.created_at == at:
                return "unchanged"
        elif len(self._book.of(user)) >= self._config.max_filters_per_user:
            raise Refused("too_many_filters", f"at most {self._config.max_filters_per_user} filters per user")
        elif len(self._book) >= self._config.max_filters:
            raise Refused("too_many_filters", "this server keeps no more filters")
        sub = Subscription(job.app, event.pubkey, user_filter.filter_id, user_filter.canonical, user_filter.filter, at)
        await self._store.save_filter(StoredFilter(job.app, event.pubkey, sub.filter_id, sub.canonical, float(at)))
        self._book.put(sub)
        if current is None:
            self._filters_changed()
        return "filter_saved"

    async def _delete(self, job: _Job, user_filter: UserFilter) -> None:
        user, at = (job.app, job.event.pubkey), job.event.created_at
        self._remember(("filter", *user, user_filter.filter_id), at)
        current = self._book.of(user).get(user_filter.filter_id)
        if current is None:
            raise Refused("unknown_filter", "no such filter of the signer in this app")
        if current.created_at > at:
            raise Refused("superseded", "older than the upsert of this filter")
        await self._drop_filters(user, [current])

    async def _drop_filters(self, user: User, subs: Sequence[Subscription]) -> None:
        if not subs:
            return
        await self._store.delete_filters(*user, [sub.filter_id for sub in subs])
        for sub in subs:
            self._book.remove(*sub.key)
        self._filters_changed()

    def _filters_changed(self) -> None:
        FILTERS.set(len(self._book))
        self._relay_filters_changed()

    def _remember(self, key: Remembered, at: int) -> None:
        self._remembered[key] = max(at, self._remembered.get(key, at))
        if len(self._remembered) > MAX_REMEMBERED:
            self._forget_memories()

    def _forget_memories(self) -> None:
        """Forget what is older than the window; past `MAX_REMEMBERED`, the oldest half too."""
        horizon = self._clock() - self._config.max_age_seconds
        kept = {key: at for key, at in self._remembered.items() if at >= horizon}
        if len(kept) > MAX_REMEMBERED:
            kept = dict(sorted(kept.items(), key=lambda item: item[1])[len(kept) // 2 :])
        self._remembered = kept

    # -- sweeping --------------------------------------------------------------------------------------------

    async def _schedule_sweeps(self) -> None:
        """Queue a sweep now (devices loaded from the store may be old already) and every `SWEEP_INTERVAL`."""
        while True:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_SWEEP)  # a full queue skips one round: the next one catches up
            await asyncio.sleep(SWEEP_INTERVAL)

    async def _sweep(self) -> None:
        """Remove devices not registered again for `forget_after_days` and the filters of users without devices
        that are older than the window; forget old memories and the tokens of devices that are gone."""
        now = self._clock()
        days = self._config.forget_after_days
        for token, holders in sorted(self._by_token.items()):
            for pubkey in sorted(holders):
                reg = self._registry.device(pubkey, token)
                if reg is not None and reg.dialect == DIALECT and (not days or reg.created_at >= now - days * 86400):
                    continue
                if reg is not None and reg.dialect == DIALECT:
                    await self._registry.remove(pubkey, token)
                    FORGOTTEN.inc()
                self._untrack(pubkey, token)
        horizon = now - self._config.max_age_seconds
        for user in self._book.users():
            subs = list(self._book.of(user).values())
            if not self._devices(*user) and all(sub.created_at < horizon for sub in subs):
                await self._drop_filters(user, subs)
        self._forget_memories()

    def _track(self, pubkey: str, token: str) -> None:
        self._by_token.setdefault(token, set()).add(pubkey)

    def _untrack(self, pubkey: str, token: str) -> None:
        holders = self._by_token.get(token)
        if holders is not None:
            holders.discard(pubkey)
            if not holders:
                del self._by_token[token]


def _apps(context: DialectContext, config: VerseDialectConfig) -> dict[str, VerseApp]:
    """The Verse apps with the pushstr app each pushes through; a ConfigError when a named app cannot push FCM
    tokens, or when two Verse apps would share one (each has its own FCM project, so their tokens cannot mix)."""
    apps: dict[str, VerseApp] = {}
    users: dict[str, str] = {}
    for app_id, app in config.apps.items():
        key = "dialects.verse.apps." + orjson.dumps(app_id).decode() + ".app"
        push_app = token_app(context.settings, Platform.ANDROID, app.app, _FCM_TRANSPORTS, key=key, tokens="FCM tokens")
        if push_app is not None:
            if push_app in users:
                raise ConfigError(
                    f"invalid configuration: dialects.verse.apps: {users[push_app]!r} and {app_id!r} both push "
                    f"with app {push_app!r}; give each Verse app its own (`app`)"
                )
            users[push_app] = app_id
        apps[app_id] = VerseApp(push_app, frozenset(app.allowed_kinds))
    return apps


def build(context: DialectContext) -> Verse | None:
    """The dialect, or None when it is off; a ConfigError when its apps cannot push FCM tokens as configured."""
    config = context.settings.dialects.verse
    if not config.enabled:
        return None
    if context.filters is None or context.relay_filters_changed is None:
        raise ValueError("the Verse dialect needs the filter store and relay_filters_changed")
    return Verse(
        context.keys,
        context.registry,
        context.filters,
        config,
        apps=_apps(context, config),
        relay_filters_changed=context.relay_filters_changed,
    )
