"""Kind 22456 push settings (0xchat's draft NIP): registration and presence as encrypted, signed events.

A client publishes kind 22456 events tagged `["p", <server pubkey>]`, signed by the user and encrypted to the
server key with NIP-04 (what 0xchat sends) or NIP-44 v2; the format is told apart by its shape. The decrypted
JSON (read by `push_settings_message`) is one of:

* settings — `{"authors", "kinds", "deviceId", "relays", "#e", "#p"}` (0xchat sends no `online` and no
  platform): registers the device under the signer. The push service is read from `deviceId` (a UnifiedPush
  URL, an iOS bundle id + APNs token, else an FCM token); `kinds: []` keeps the device but pushes it nothing;
  `#e` names NIP-28 channels and NIP-29 relay groups (`"<host>'<id>"`), whose relay is asked for the group's
  messages; `authors` narrows senders (see `engine.presence`); `relays` are watched on the device's behalf.
  `#p` is not read: a device always gets what is addressed to its signer and nobody else, or anyone could have
  themselves woken by a stranger's messages. A device registers offline: pushes start at once;
* heartbeat `{"online": 1}` / offline `{"online": 0}` — presence, for the device named by `deviceId` or, without
  one (what 0xchat sends), for every 22456 device of the signer;
* logout `{"online": 0, "deviceId": ""}` — every 22456 device of the signer is unregistered (the message names
  no device, so none can be singled out).

Everything is ordered by the event's `created_at`: 0xchat re-sends an unacknowledged settings event on a later
reconnect, so one may arrive long after it was made. An older settings event never replaces a newer
registration, a logout is remembered for `stale_after_seconds` so that an older settings event cannot bring the
device back, and settings older than that window are ignored; heartbeats older than the heartbeat timeout are.
Changes run one at a time on a worker task, in arrival order, because the registry is async and the pipeline's
kind handlers are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter
from pydantic import ValidationError

from pushstr.config import ApnsAppConfig, AppConfig, PushSettingsDialectConfig, WebPushAppConfig
from pushstr.dialects.base import Dialect, DialectContext, Refused
from pushstr.dialects.push_settings_message import (
    Device,
    Message,
    read_authors,
    read_device_id,
    read_groups,
)
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.engine.pipeline import KindHandler
from pushstr.engine.presence import Presence
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import Resolver, resolve_host
from pushstr.nostr import nip04, nip44
from pushstr.nostr.errors import DecryptError
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.nostr.nip29 import GROUP_KINDS, group_host, group_id_of, is_group_key, relay_host, relay_url
from pushstr.registry.model import Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.tokens import InvalidToken, check_device_token

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "push-settings"
QUEUE_SIZE = 10_000
GROUP_IDS_PER_FILTER = 500

RESULTS = (
    "settings",
    "heartbeat",
    "offline",
    "logout",
    "not_for_us",
    "undecryptable",
    "malformed",
    "stale",
    "unknown_device",
    "unusable_device",
    "too_many_devices",
    "overloaded",
)
EVENTS = Counter("pushstr_push_settings_events_total", "Kind 22456 events by outcome", ["result"])
ENTRIES_IGNORED = Counter(
    "pushstr_push_settings_entries_ignored_total", "Settings list entries left out", ["field", "reason"]
)
for _result in RESULTS:
    EVENTS.labels(_result)
for _field, _reasons in (("groups", ("invalid", "limit", "no_relay")), ("authors", ("invalid", "over_limit"))):
    for _reason in _reasons:
        ENTRIES_IGNORED.labels(_field, _reason)

GroupFilters = Callable[[str, Sequence[Mapping[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class _Job:
    event: Event
    message: Message


def _count_ignored(field: str, ignored: Tally[str]) -> None:
    for reason, count in ignored.items():
        ENTRIES_IGNORED.labels(field, reason).inc(count)


class PushSettings(Dialect):
    """Turns 22456 events into registrations, presence reports, relays to watch and relay groups to follow."""

    name = DIALECT

    def __init__(
        self,
        keys: Keys,
        registry: Registry,
        presence: Presence,
        config: PushSettingsDialectConfig,
        *,
        app_for: Callable[[str, str | None], str | None],
        apps: Mapping[str, AppConfig],
        default_kinds: Iterable[int],
        relays: RegistrationRelays,
        set_relay_filters: GroupFilters,
        clock: Callable[[], float] = time.time,
        resolve: Resolver = resolve_host,
    ) -> None:
        """`app_for(platform, None)` is the app of a platform and `apps` the configured apps (an iOS device goes to
        the APNs app whose topic is its bundle id); `relays` watches the relays devices list (configured relays
        are watched anyway) and `set_relay_filters` changes what one relay is asked for (NIP-29 groups);
        `resolve` is the name lookup behind the device token check."""
        self._keys = keys
        self._server = keys.public_hex
        self._registry = registry
        self._presence = presence
        self._config = config
        self._app_for = app_for
        self._apps = apps
        self._topics = {app.topic: app_id for app_id, app in apps.items() if isinstance(app, ApnsAppConfig)}
        self._default_kinds = frozenset(default_kinds)
        self._relays = relays
        self._set_relay_filters = set_relay_filters
        self._clock = clock
        self._resolve = resolve
        self._configured_relays = relays.configured
        self._group_follows: dict[str, dict[tuple[str, str], tuple[frozenset[int], tuple[str, ...]]]] = {}
        self._device_group_relays: dict[tuple[str, str], tuple[str, ...]] = {}
        self._logouts: dict[str, int] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(QUEUE_SIZE)
        self._worker: asyncio.Task[None] | None = None

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        return {Kind.PUSH_SETTINGS: self.handle}

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Settings events addressed to this server, from every relay watched."""
        return ({"kinds": [Kind.PUSH_SETTINGS], "#p": [self._server]},)

    def restore(self) -> None:
        """Watch the relays and follow the groups of the devices loaded from the store (after `Registry.load`)."""
        changed: set[str] = set()
        for reg in self._registry.registrations():
            if reg.dialect == DIALECT:
                self._relays.watch(reg.key, reg.relays)
                changed |= self._follow_groups(reg)
        self._ask_for_groups(changed)

    def adopt(self, reg: Registration) -> None:
        self._relays.watch(reg.key, reg.relays)
        self._ask_for_groups(self._follow_groups(reg))

    async def start(self) -> None:
        self.restore()
        self._worker = asyncio.create_task(self._work(), name="push-settings")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def handle(self, event: Event) -> None:
        """The pipeline's handler for kind 22456: decrypt and parse now, apply on the worker in order."""
        try:
            message = self._open(event)
            self._queue.put_nowait(_Job(event, message))
        except Refused as exc:
            self._count(exc, event)
        except asyncio.QueueFull:
            self._count(Refused("overloaded", "too many settings events waiting"), event)

    def _open(self, event: Event) -> Message:
        if self._server not in event.p_tags:
            raise Refused("not_for_us", "not addressed to this server")
        try:
            if nip44.looks_like_nip44(event.content):
                text = nip44.decrypt_from(self._keys, event.pubkey, event.content)
            elif nip04.looks_like_nip04(event.content):
                text = nip04.decrypt(self._keys, event.pubkey, event.content)
            else:
                raise Refused("undecryptable", "content is neither NIP-04 nor NIP-44")
        except DecryptError as exc:
            raise Refused("undecryptable", exc.reason) from None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Refused("malformed", "not JSON") from None
        if not isinstance(data, dict):
            raise Refused("malformed", "not a JSON object")
        try:
            return Message.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise Refused("malformed", f"{where}: {first['msg']}") from None

    def _count(self, exc: Refused, event: Event) -> None:
        EVENTS.labels(exc.result).inc()
        _rate_log.info(f"22456-{exc.result}", "22456 event from %s ignored: %s", ident(event.pubkey), exc)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                EVENTS.labels(await self._apply(job.event, job.message)).inc()
            except Refused as exc:
                self._count(exc, job.event)
            except Exception:
                _rate_log.warning("22456-error", "applying a 22456 event failed", exc_info=True)

    async def _apply(self, event: Event, message: Message) -> str:
        pubkey, created_at = event.pubkey, event.created_at
        if message.device_id == "" and message.online == 0:
            self._check_fresh(created_at)
            return await self._logout(pubkey, created_at)
        if message.kinds is not None:
            if not message.device_id:
                raise Refused("malformed", "settings without a deviceId")
            self._check_fresh(created_at)
            token = await self._register(event, message, message.device_id)
            if message.online is not None:
                self._presence.report(pubkey, token, message.online == 1, created_at)
            return "settings"
        if message.online is None:
            raise Refused("malformed", "neither settings nor presence")
        named = self._device(message.device_id).token if message.device_id else None
        devices = [
            reg
            for reg in self._registry.devices_for(pubkey)
            if reg.dialect == DIALECT and (named is None or reg.device_token == named)
        ]
        if not devices:
            raise Refused("unknown_device", "presence for a device that is not registered")
        applied = [self._presence.report(pubkey, reg.device_token, message.online == 1, created_at) for reg in devices]
        if not any(applied):
            raise Refused("stale", "older than the presence already known or than the heartbeat timeout")
        return "heartbeat" if message.online == 1 else "offline"

    def _check_fresh(self, created_at: int) -> None:
        if created_at < self._clock() - self._config.stale_after_seconds:
            raise Refused("stale", "older than the accepted window")

    def _device(self, device_id: str) -> Device:
        return read_device_id(device_id, self._topics)

    async def _register(self, event: Event, message: Message, device_id: str) -> str:
        """Register the device a settings message describes; its token as the push service knows it."""
        pubkey = event.pubkey
        if self._logouts.get(pubkey, -1) >= event.created_at:
            raise Refused("stale", "older than a logout")
        device = self._device(device_id)
        if message.platform is not None and message.platform is not device.platform:
            device = Device(message.platform, device_id)  # a client that names its platform is taken at its word
        current = self._registry.device(pubkey, device.token)
        if current is not None and current.dialect == DIALECT and current.created_at > event.created_at:
            raise Refused("stale", "older than the registration already known")
        app = await self._usable_app(device)
        config = self._config
        groups = read_groups(message.groups, config.max_groups_per_device)
        _count_ignored("groups", groups.ignored)
        authors, ignored_authors = read_authors(message.authors, config.max_authors_per_device)
        _count_ignored("authors", ignored_authors)
        relays = await self._relays.accepted(self._wanted_relays(message.relays, groups.values))
        kinds = self._default_kinds if message.kinds is None else frozenset(message.kinds)
        registration = Registration(
            pubkey=pubkey,
            device_token=device.token,
            platform=device.platform,
            app=app,
            dialect=DIALECT,
            kinds=kinds,
            created_at=float(event.created_at),
            mode=config.mode,
            groups=groups.values,
            authors=authors,
            relays=tuple(relays),
        )
        try:
            await self._registry.add(registration)
        except TooManyDevices as exc:
            raise Refused("too_many_devices", str(exc)) from None
        self._relays.watch(registration.key, relays)
        self._ask_for_groups(self._follow_groups(registration))
        return device.token

    def _wanted_relays(self, listed: Sequence[Any], groups: Iterable[str]) -> list[object]:
        """The device's relays, then `wss://<host>` for each relay group whose host no listed or configured relay
        has (0xchat rebuilds a group's relay URL the same way)."""
        wanted: list[object] = list(listed)
        named = [url for url in listed if isinstance(url, str)]
        known_hosts = {relay_host(url) for url in (*self._configured_relays, *named)}
        for host in dict.fromkeys(group_host(entry) for entry in groups if is_group_key(entry)):
            if host not in known_hosts:
                wanted.append(relay_url(host))
        return wanted

    async def _usable_app(self, device: Device) -> str:
        """The app a device is pushed through, once its token is known to be usable there (else `Refused`)."""
        app_id = self._config.app or (self._topics.get(device.bundle_id) if device.bundle_id else None)
        app_id = app_id or self._app_for(device.platform, None)
        app = self._apps.get(app_id) if app_id is not None else None
        if app_id is None or app is None:
            raise Refused("unusable_device", f"no app configured for platform {device.platform}")
        webpush = app if isinstance(app, WebPushAppConfig) else None
        if webpush is not None and not webpush.allow_plaintext:
            # 0xchat's UnifiedPush endpoints come without p256dh/auth keys: only plaintext can reach them.
            raise Refused("unusable_device", f"app {app_id!r} does not allow plaintext UnifiedPush (allow_plaintext)")
        try:
            await check_device_token(
                device.platform,
                device.token,
                allowed_hosts=webpush.allowed_hosts if webpush is not None else (),
                resolve=self._resolve,
            )
        except InvalidToken as exc:
            raise Refused("unusable_device", str(exc)) from None
        return app_id

    async def _logout(self, pubkey: str, created_at: int) -> str:
        self._logouts[pubkey] = max(created_at, self._logouts.get(pubkey, created_at))
        self._forget_old_logouts()
        for reg in list(self._registry.devices_for(pubkey)):
            if reg.dialect == DIALECT and reg.created_at <= created_at:
                await self._registry.remove(pubkey, reg.device_token)
                self._presence.forget(pubkey, reg.device_token)
                self._relays.release(reg.key)
                self._ask_for_groups(self._follow_groups(reg, following=False))
        return "logout"

    def _forget_old_logouts(self) -> None:
        horizon = self._clock() - self._config.stale_after_seconds
        if len(self._logouts) > 1000 or any(at < horizon for at in self._logouts.values()):
            self._logouts = {pubkey: at for pubkey, at in self._logouts.items() if at >= horizon}

    def _follow_groups(self, reg: Registration, *, following: bool = True) -> set[str]:
        """Record the NIP-29 groups `reg` follows (none when not `following`); the relays whose filters changed.

        A group's relay is the first relay of the device, else of the configuration, whose host is the group's;
        a group without one (its `wss://<host>` was refused) is followed by nobody. The caller then asks those
        relays (`_ask_for_groups`): once per change, or once for a whole restore.
        """
        key = reg.key
        wanted: dict[str, tuple[frozenset[int], list[str]]] = {}
        kinds = reg.kinds & GROUP_KINDS
        if following and kinds:
            hosts = {relay_host(url): url for url in reversed((*reg.relays, *self._configured_relays))}
            for entry in reg.groups:
                if not is_group_key(entry):
                    continue
                host, group_id = group_host(entry), group_id_of(entry)
                url = hosts.get(host)
                if url is None:
                    ENTRIES_IGNORED.labels("groups", "no_relay").inc()
                    continue
                wanted.setdefault(url, (kinds, []))[1].append(group_id)
        previous = self._device_group_relays.pop(key, ())
        for url, (group_kinds, ids) in wanted.items():
            self._group_follows.setdefault(url, {})[key] = (group_kinds, tuple(ids))
        if wanted:
            self._device_group_relays[key] = tuple(wanted)
        for url in set(previous).difference(wanted):
            follows = self._group_follows.get(url, {})
            follows.pop(key, None)
            if not follows:
                self._group_follows.pop(url, None)
        return set(previous).union(wanted)

    def _ask_for_groups(self, urls: Iterable[str]) -> None:
        for url in urls:
            self._set_relay_filters(url, self._group_filters(url))

    def _group_filters(self, url: str) -> list[dict[str, Any]]:
        """What one relay is asked for: its followers' groups, one filter per set of kinds, in bounded chunks."""
        by_kinds: dict[frozenset[int], set[str]] = {}
        for kinds, ids in self._group_follows.get(url, {}).values():
            by_kinds.setdefault(kinds, set()).update(ids)
        filters: list[dict[str, Any]] = []
        for kinds, followed in sorted(by_kinds.items(), key=lambda item: sorted(item[0])):
            ordered = sorted(followed)
            for start in range(0, len(ordered), GROUP_IDS_PER_FILTER):
                filters.append({"kinds": sorted(kinds), "#h": ordered[start : start + GROUP_IDS_PER_FILTER]})
        return filters


def build(context: DialectContext) -> PushSettings | None:
    settings = context.settings
    config = settings.dialects.push_settings
    if not config.enabled:
        return None
    return PushSettings(
        context.keys,
        context.registry,
        context.presence,
        config,
        app_for=settings.app_for,
        apps=settings.apps,
        default_kinds=settings.registration.default_kinds,
        relays=context.relays,
        set_relay_filters=context.set_relay_filters,
    )
