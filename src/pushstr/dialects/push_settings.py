"""Kind 22456 push settings (0xchat's draft NIP): registration and presence as encrypted, signed events.

A client publishes kind 22456 events tagged `["p", <server pubkey>]`, signed by the user and encrypted to the
server key with NIP-04 (what 0xchat sends) or NIP-44 v2; the format is told apart by its shape. The decrypted
JSON is one of:

* settings — `{"kinds", "deviceId", "relays", "#e", "#p", "authors", "online"?, "platform"?}`: registers the
  device (pubkey = the signer, token = `deviceId`), its groups (`#e`), the relays to watch and the senders it
  wants (`authors`). `#p` is not read: a device always gets what is addressed to its signer and nobody else,
  or anyone could have themselves woken by a stranger's messages;
* heartbeat `{"online": 1}` / offline `{"online": 0}` — presence, for the device named by `deviceId` or, without
  one, for every 22456 device of the signer;
* logout `{"online": 0, "deviceId": ""}` — every 22456 device of the signer is unregistered (the message names
  no device, so none can be singled out).

Everything is ordered by the event's `created_at`: an older settings event never replaces a newer registration,
a logout is remembered for `stale_after_seconds` so that an older settings event cannot bring the device back,
and events older than that window are ignored. Changes run one at a time on a worker task, in arrival order,
because the registry is async and the pipeline's kind handlers are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pushstr.config import PushSettingsDialectConfig
from pushstr.dialects.base import Dialect, DialectContext
from pushstr.engine.pipeline import KindHandler
from pushstr.engine.presence import Presence
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import RELAY_SCHEMES, EndpointRefused, Resolver, check_url, resolve_host
from pushstr.nostr import nip04, nip44
from pushstr.nostr.errors import DecryptError
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys, is_hex
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import NO_AUTHORS, Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "push-settings"
MAX_TOKEN_LENGTH = 4096
MAX_KINDS = 64
MAX_LIST = 10_000
MAX_RELAY_URL = 512
QUEUE_SIZE = 10_000

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
    "too_many_devices",
    "overloaded",
)
EVENTS = Counter("pushstr_push_settings_events_total", "Kind 22456 events by outcome", ["result"])
RELAYS_REFUSED = Counter("pushstr_push_settings_relays_refused_total", "Device relays not watched", ["reason"])
for _result in RESULTS:
    EVENTS.labels(_result)
for _reason in ("invalid", "refused", "limit"):
    RELAYS_REFUSED.labels(_reason)

KindNumber = Annotated[int, Field(ge=0, le=65535)]


class Message(BaseModel):
    """A decrypted 22456 message; which fields are present decides what it is (see the module docstring)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    kinds: list[KindNumber] | None = Field(None, max_length=MAX_KINDS)
    device_id: str | None = Field(None, alias="deviceId", max_length=MAX_TOKEN_LENGTH)
    relays: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    groups: list[str] = Field(default_factory=list, alias="#e", max_length=MAX_LIST)
    authors: list[str] | None = Field(None, max_length=MAX_LIST)
    online: Literal[0, 1] | None = None
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    event: Event
    message: Message


class Ignored(ValueError):
    """A settings message that is not acted on; `result` is the metric label."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result


def _hex_list(values: Iterable[str], limit: int, what: str) -> list[str]:
    unique = list(dict.fromkeys(values))
    if len(unique) > limit:
        raise Ignored("malformed", f"more than {limit} {what}")
    if not all(is_hex(value, 64) for value in unique):
        raise Ignored("malformed", f"{what} must be 64 lowercase hex characters")
    return unique


class PushSettings(Dialect):
    """Turns 22456 events into registrations, presence reports and relays to watch."""

    name = DIALECT

    def __init__(
        self,
        keys: Keys,
        registry: Registry,
        presence: Presence,
        config: PushSettingsDialectConfig,
        *,
        app_for: Callable[[str, str | None], str | None],
        default_kinds: Iterable[int],
        configured_relays: Iterable[str],
        add_relay: Callable[[str], None],
        remove_relay: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        resolve: Resolver = resolve_host,
    ) -> None:
        """`app_for(platform, None)` is the app of a platform; `configured_relays` are watched anyway, so devices
        listing them add nothing; `add_relay`/`remove_relay` change what the relay pool connects to; `resolve` is
        the name lookup behind the URL guard."""
        self._keys = keys
        self._server = keys.public_hex
        self._registry = registry
        self._presence = presence
        self._config = config
        self._app_for = app_for
        self._default_kinds = frozenset(default_kinds)
        self._add_relay = add_relay
        self._remove_relay = remove_relay
        self._clock = clock
        self._resolve = resolve
        self._configured_relays = frozenset(configured_relays)
        self._relay_users: dict[str, set[tuple[str, str]]] = {}
        self._device_relays: dict[tuple[str, str], tuple[str, ...]] = {}
        self._logouts: dict[str, int] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(QUEUE_SIZE)
        self._worker: asyncio.Task[None] | None = None

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        return {Kind.PUSH_SETTINGS: self.handle}

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Settings events addressed to this server, from every relay watched."""
        return ({"kinds": [Kind.PUSH_SETTINGS], "#p": [self._server]},)

    def restore(self) -> None:
        """Watch the relays of the devices loaded from the store again (call after `Registry.load`)."""
        for reg in self._registry.registrations():
            if reg.dialect == DIALECT:
                self._set_relays(reg.key, reg.relays)

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
        except Ignored as exc:
            self._count(exc, event)
        except asyncio.QueueFull:
            self._count(Ignored("overloaded", "too many settings events waiting"), event)

    def _open(self, event: Event) -> Message:
        if self._server not in event.p_tags:
            raise Ignored("not_for_us", "not addressed to this server")
        try:
            if nip44.looks_like_nip44(event.content):
                text = nip44.decrypt_from(self._keys, event.pubkey, event.content)
            elif nip04.looks_like_nip04(event.content):
                text = nip04.decrypt(self._keys, event.pubkey, event.content)
            else:
                raise Ignored("undecryptable", "content is neither NIP-04 nor NIP-44")
        except DecryptError as exc:
            raise Ignored("undecryptable", exc.reason) from None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Ignored("malformed", "not JSON") from None
        if not isinstance(data, dict):
            raise Ignored("malformed", "not a JSON object")
        try:
            return Message.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise Ignored("malformed", f"{where}: {first['msg']}") from None

    def _count(self, exc: Ignored, event: Event) -> None:
        EVENTS.labels(exc.result).inc()
        _rate_log.info(f"22456-{exc.result}", "22456 event from %s ignored: %s", ident(event.pubkey), exc)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                EVENTS.labels(await self._apply(job.event, job.message)).inc()
            except Ignored as exc:
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
                raise Ignored("malformed", "settings without a deviceId")
            self._check_fresh(created_at)
            await self._register(event, message, message.device_id)
            if message.online is not None:
                self._presence.report(pubkey, message.device_id, message.online == 1, created_at)
            return "settings"
        if message.online is None:
            raise Ignored("malformed", "neither settings nor presence")
        devices = [
            reg
            for reg in self._registry.devices_for(pubkey)
            if reg.dialect == DIALECT and (not message.device_id or reg.device_token == message.device_id)
        ]
        if not devices:
            raise Ignored("unknown_device", "presence for a device that is not registered")
        applied = [self._presence.report(pubkey, reg.device_token, message.online == 1, created_at) for reg in devices]
        if not any(applied):
            raise Ignored("stale", "older than the presence already known")
        return "heartbeat" if message.online == 1 else "offline"

    def _check_fresh(self, created_at: int) -> None:
        if created_at < self._clock() - self._config.stale_after_seconds:
            raise Ignored("stale", "older than the accepted window")

    async def _register(self, event: Event, message: Message, token: str) -> None:
        pubkey = event.pubkey
        if self._logouts.get(pubkey, -1) >= event.created_at:
            raise Ignored("stale", "older than a logout")
        current = next((reg for reg in self._registry.devices_for(pubkey) if reg.device_token == token), None)
        if current is not None and current.dialect == DIALECT and current.created_at > event.created_at:
            raise Ignored("stale", "older than the registration already known")
        config = self._config
        groups = _hex_list(message.groups, config.max_groups_per_device, "#e ids")
        authors = _hex_list(message.authors or (), config.max_authors_per_device, "authors")
        relays = await self._accepted_relays(message.relays)
        platform = message.platform or Platform.ANDROID
        app = config.app or self._app_for(platform, None)
        if app is None:
            raise Ignored("malformed", f"no app configured for platform {platform}")
        registration = Registration(
            pubkey=pubkey,
            device_token=token,
            platform=platform,
            app=app,
            dialect=DIALECT,
            kinds=frozenset(message.kinds) if message.kinds else self._default_kinds,
            created_at=float(event.created_at),
            groups=tuple(groups),
            authors=frozenset(authors) if authors else NO_AUTHORS,
            relays=tuple(relays),
        )
        try:
            await self._registry.add(registration)
        except TooManyDevices as exc:
            raise Ignored("too_many_devices", str(exc)) from None
        self._set_relays(registration.key, relays)

    async def _logout(self, pubkey: str, created_at: int) -> str:
        self._logouts[pubkey] = max(created_at, self._logouts.get(pubkey, created_at))
        self._forget_old_logouts()
        for reg in list(self._registry.devices_for(pubkey)):
            if reg.dialect == DIALECT and reg.created_at <= created_at:
                await self._registry.remove(pubkey, reg.device_token)
                self._presence.forget(pubkey, reg.device_token)
                self._set_relays(reg.key, ())
        return "logout"

    def _forget_old_logouts(self) -> None:
        horizon = self._clock() - self._config.stale_after_seconds
        if len(self._logouts) > 1000 or any(at < horizon for at in self._logouts.values()):
            self._logouts = {pubkey: at for pubkey, at in self._logouts.items() if at >= horizon}

    async def _accepted_relays(self, urls: list[str]) -> list[str]:
        """The relays of a device's list pushstr will connect to: `ws://`/`wss://` URLs that pass the URL guard
        (their host resolves only to public addresses, unless `allow_private_relays`), at most
        `max_relays_per_device` of them."""
        accepted: list[str] = []
        for url in dict.fromkeys(urls):
            if len(accepted) >= self._config.max_relays_per_device:
                RELAYS_REFUSED.labels("limit").inc()
                continue
            if not isinstance(url, str) or len(url) > MAX_RELAY_URL or any(char.isspace() for char in url):
                RELAYS_REFUSED.labels("invalid").inc()
                continue
            if url not in self._configured_relays:
                try:
                    await check_url(
                        url,
                        schemes=RELAY_SCHEMES,
                        allow_private=self._config.allow_private_relays,
                        resolve=self._resolve,
                    )
                except EndpointRefused:
                    RELAYS_REFUSED.labels("refused").inc()
                    _rate_log.info("22456-relay-refused", "device relay %s refused by the URL guard", ident(url))
                    continue
            accepted.append(url)
        return accepted

    def _set_relays(self, key: tuple[str, str], relays: Iterable[str]) -> None:
        """Point a device at `relays`, connecting to new ones and dropping those no device lists any more."""
        previous = self._device_relays.pop(key, ())
        kept: list[str] = []
        for url in dict.fromkeys(relays):
            if url in self._configured_relays:
                continue
            users = self._relay_users.get(url)
            if users is None:
                if len(self._relay_users) >= self._config.max_relays:
                    RELAYS_REFUSED.labels("limit").inc()
                    continue
                users = self._relay_users[url] = set()
                self._add_relay(url)
            users.add(key)
            kept.append(url)
        if kept:
            self._device_relays[key] = tuple(kept)
        for url in set(previous).difference(kept):
            users = self._relay_users.get(url)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._relay_users[url]
                    self._remove_relay(url)


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
        default_kinds=settings.registration.default_kinds,
        configured_relays=settings.nostr.relays,
        add_relay=context.add_relay,
        remove_relay=context.remove_relay,
    )
