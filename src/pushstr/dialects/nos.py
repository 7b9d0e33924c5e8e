"""Nos's kind 6666 registrations (planetary-social/nos; its server is planetary-social/nos-notification-service-go).

At every launch, once iOS hands it the device token, Nos signs a kind 6666 event with no tags whose plaintext
content is `{"apnsToken", "publicKey", "relays": [{"address"}]}` (see `nos_registration`) and sends it over a
one-shot WebSocket to its notification server, which is a relay (`wss://notifications.nos.social`); it waits for no
answer. Pointed at pushstr, that relay is the built-in endpoint (`relays.endpoint`): the pipeline verifies the
event and hands it to this dialect's kind handler. The endpoint answers `OK true` once the event is admitted; the
app reads nothing back, and what became of the registration is counted here.

A registration is taken when `publicKey` is the signer (Nos's server refuses the others too: anyone could
otherwise have their phone woken for a stranger), its `created_at` is within `max_age_seconds` before and
`max_future_seconds` after now, the token is an APNs token (`registry.tokens`), an APNs app is there to push it,
and it is not older than what is known for that token. The device then gets text notes (kind 1) whose `p` tag
names the account, pushed silently (`Mode.SILENT`: `content-available`, priority 5). That is what Nos's server
sends, for exactly those events, and all the app can use: it has no notification service extension; woken, it
fetches the account's mentions and replies from its relays and shows them as local notifications. Its relays are
the `relays` of the registration, watched here through the shared guard and caps (`RegistrationRelays`).

Nos holds one account at a time, so a token registered by a newer account replaces the Nos registrations of that
token under other accounts: a logged-out account must not keep spending the phone's budget of background pushes,
which iOS throttles. (The registry would allow both; other dialects keep one phone's several accounts.) Nos
re-registers at every launch; a device not registered again for `forget_after_days` is removed, as Nos's server
stops pushing a token after six months.

Kind 6666 is not asked of relays unless `subscribe` is on. Nos publishes registrations only to its notification
server, and any 6666 event a public relay holds was meant for some other server: taken here it would have
pushstr watch that user's relays and push a token that only the other server's APNs key can reach. An operator
whose app publishes to a relay in front of pushstr turns `subscribe` on; the session's `since` window bounds what
is read back.

Registrations are applied one at a time by a worker task, in arrival order, because the pipeline's kind handlers
are synchronous and the registry is not; the periodic removal of old devices runs on the same worker, so it cannot
remove a registration the worker is renewing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from pushstr.config import NosDialectConfig
from pushstr.dialects.apps import token_app
from pushstr.dialects.base import Dialect, DialectContext, Refused
from pushstr.dialects.nos_registration import BadRegistration, NosRegistration, read_registration
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.engine.pipeline import KindHandler
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import Resolver, resolve_host
from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.tokens import InvalidToken, check_device_token

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "nos"
REGISTRATION_KIND = 6666
#: Mentions and replies: what Nos's server pushes for and what the woken app fetches.
KINDS: frozenset[int] = frozenset({Kind.TEXT_NOTE})
QUEUE_SIZE = 10_000
SWEEP_INTERVAL = 3600.0
_APNS_TRANSPORTS = ("apns", "log")

RESULTS = (
    "registered",
    "not_signer",
    "bad_json",
    "too_large",
    "bad_token",
    "stale",
    "superseded",
    "no_app",
    "too_many_devices",
    "overloaded",
)
REGISTRATIONS = Counter("pushstr_nos_registrations_total", "Nos kind 6666 registrations by outcome", ["result"])
for _result in RESULTS:
    REGISTRATIONS.labels(_result)
REPLACED = Counter("pushstr_nos_devices_replaced_total", "Nos devices whose token a newer account registered")
FORGOTTEN = Counter("pushstr_nos_devices_forgotten_total", "Nos devices removed after forget_after_days unregistered")

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Job:
    event: Event
    registration: NosRegistration


class _Sweep:
    """The worker's cue to remove devices not registered again for `forget_after_days`."""


_SWEEP = _Sweep()


class Nos(Dialect):
    """Kind 6666 events become iOS registrations whose relays are watched; see the module docstring."""

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        relays: RegistrationRelays,
        config: NosDialectConfig,
        *,
        app: str | None,
        clock: Callable[[], float] = time.time,
        resolve: Resolver = resolve_host,
    ) -> None:
        """`app` is the APNs app the tokens are pushed with (None: registrations are refused, no app can push
        them); `resolve` is the DNS lookup behind the token check (tests)."""
        self._registry = registry
        self._relays = relays
        self._config = config
        self._app = app
        self._clock = clock
        self._resolve = resolve
        self._watching: set[Key] = set()
        self._by_token: dict[str, set[str]] = {}
        self._queue: asyncio.Queue[_Job | _Sweep] = asyncio.Queue(QUEUE_SIZE)
        self._changed = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        return {REGISTRATION_KIND: self.handle}

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Kind 6666 from every watched relay, only when `subscribe` is on (see the module docstring)."""
        return ({"kinds": [REGISTRATION_KIND]},) if self._config.subscribe else ()

    def describe(self) -> Mapping[str, Any]:
        config = self._config
        return {
            "kind": REGISTRATION_KIND,
            "send_to": "the built-in relay endpoint" + (", or a relay pushstr watches" if config.subscribe else ""),
            "content": {"apnsToken": "hex", "publicKey": "hex, the signer", "relays": [{"address": "wss://…"}]},
            "platform": "ios" if self._app is not None else None,
            "kinds": sorted(KINDS),
            "mode": str(config.mode),
            "max_age_seconds": config.max_age_seconds,
            "forget_after_days": config.forget_after_days,
        }

    async def start(self) -> None:
        """Watch the relays of the Nos devices loaded from the store, then follow registry changes (a device
        pruned as dead, or taken over by another dialect, lets go of its relays) and sweep old devices."""
        for reg in self._registry.registrations():
            if reg.dialect == DIALECT:
                self.adopt(reg)
        self._unsubscribe = self._registry.subscribe(self._changed.set)
        self._tasks = [
            asyncio.create_task(self._work(), name="nos"),
            asyncio.create_task(self._release_gone(), name="nos-relays"),
        ]
        if self._config.forget_after_days:
            self._tasks.append(asyncio.create_task(self._schedule_sweeps(), name="nos-sweep"))

    def adopt(self, reg: Registration) -> None:
        self._relays.watch(reg.key, reg.relays)
        self._track(reg.key)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def handle(self, event: Event) -> None:
        """The pipeline's handler for kind 6666 (verified events): read and check now, apply on the worker."""
        try:
            self._queue.put_nowait(_Job(event, self._read(event)))
        except Refused as exc:
            self._count(exc, event)
        except asyncio.QueueFull:
            self._count(Refused("overloaded", "too many registrations waiting"), event)

    def _read(self, event: Event) -> NosRegistration:
        now = self._clock()
        if event.created_at < now - self._config.max_age_seconds:
            raise Refused("stale", f"signed more than {self._config.max_age_seconds} s ago")
        if event.created_at > now + self._config.max_future_seconds:
            raise Refused("stale", "dated in the future")
        try:
            registration = read_registration(event.content)
        except BadRegistration as exc:
            raise Refused(exc.result, str(exc)) from None
        if registration.public_key != event.pubkey:
            raise Refused("not_signer", "publicKey is not the event's signer")
        return registration

    def _count(self, exc: Refused, event: Event) -> None:
        REGISTRATIONS.labels(exc.result).inc()
        _rate_log.info(f"nos-{exc.result}", "Nos registration from %s refused: %s", ident(event.pubkey), exc)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if isinstance(job, _Sweep):
                    await self._forget_old()
                    continue
                await self._apply(job.event, job.registration)
                REGISTRATIONS.labels("registered").inc()
            except Refused as exc:
                assert isinstance(job, _Job)
                self._count(exc, job.event)
            except Exception:
                _rate_log.warning("nos-error", "applying a Nos registration failed", exc_info=True)

    async def _apply(self, event: Event, content: NosRegistration) -> None:
        pubkey, token, created_at = event.pubkey, content.apns_token, float(event.created_at)
        if self._app is None:
            raise Refused("no_app", "no APNs app is configured for Nos devices")
        try:
            await check_device_token(Platform.IOS, token, resolve=self._resolve)
        except InvalidToken as exc:
            raise Refused("bad_token", str(exc)) from None
        holders = [self._registry.device(holder, token) for holder in self._by_token.get(token, ())]
        if any(reg is not None and reg.dialect == DIALECT and reg.created_at > created_at for reg in holders):
            raise Refused("superseded", "older than the registration already known for this token")
        relays = tuple(await self._relays.accepted(content.relays))
        registration = Registration(
            pubkey=pubkey,
            device_token=token,
            platform=Platform.IOS,
            app=self._app,
            dialect=DIALECT,
            kinds=KINDS,
            created_at=created_at,
            mode=self._config.mode,
            relays=relays,
        )
        try:
            await self._registry.add(registration)
        except TooManyDevices as exc:
            raise Refused("too_many_devices", str(exc)) from None
        self._relays.watch(registration.key, relays)
        self._track(registration.key)
        await self._replace_others(pubkey, token, created_at)

    async def _replace_others(self, pubkey: str, token: str, created_at: float) -> None:
        """Remove the Nos registrations of `token` under other accounts: the phone moved to `pubkey`."""
        for other in sorted(self._by_token.get(token, set()) - {pubkey}):
            reg = self._registry.device(other, token)
            if reg is None or reg.dialect != DIALECT or reg.created_at > created_at:
                continue
            await self._registry.remove(other, token)
            self._relays.release(reg.key)
            self._untrack(reg.key)
            REPLACED.inc()

    async def _schedule_sweeps(self) -> None:
        """Queue a sweep now (devices loaded from the store may be old already) and every `SWEEP_INTERVAL`."""
        while True:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_SWEEP)  # a full queue skips one round: the next one catches up
            await asyncio.sleep(SWEEP_INTERVAL)

    async def _forget_old(self) -> None:
        horizon = self._clock() - self._config.forget_after_days * 86400
        for key in sorted(self._watching):
            reg = self._registry.device(*key)
            if reg is None or reg.dialect != DIALECT or reg.created_at >= horizon:
                continue
            await self._registry.remove(*key)
            self._relays.release(key)
            self._untrack(key)
            FORGOTTEN.inc()

    async def _release_gone(self) -> None:
        """Let go of the relays of registrations that are gone. A key another dialect took over keeps its relays
        when that dialect names relays itself (it watches them now), and lets go of them otherwise."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            for key in list(self._watching):
                reg = self._registry.device(*key)
                if reg is not None and reg.dialect == DIALECT:
                    continue
                if reg is None or not reg.relays:
                    self._relays.release(key)
                self._untrack(key)

    def _track(self, key: Key) -> None:
        self._watching.add(key)
        self._by_token.setdefault(key[1], set()).add(key[0])

    def _untrack(self, key: Key) -> None:
        self._watching.discard(key)
        holders = self._by_token.get(key[1])
        if holders is not None:
            holders.discard(key[0])
            if not holders:
                del self._by_token[key[1]]


def build(context: DialectContext) -> Nos | None:
    """The dialect, or None when it is off; a ConfigError when the configured app cannot push APNs tokens."""
    settings = context.settings
    config = settings.dialects.nos
    if not config.enabled:
        return None
    return Nos(
        context.registry,
        context.relays,
        config,
        app=token_app(
            settings, Platform.IOS, config.app, _APNS_TRANSPORTS, key="dialects.nos.app", tokens="APNs tokens"
        ),
    )
