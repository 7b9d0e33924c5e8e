"""The delivery stage the service wires in: outbox → batcher → render once → dispatcher → one transport per app.

A notification enters the outbox before anything else happens to it and leaves it with its final outcome; see
`delivery.outbox` for what that guarantees across crashes and restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from pushstr.config import AnyAppConfig, ApnsAppConfig, FcmAppConfig, Settings, WebPushAppConfig
from pushstr.delivery.batch import Batcher, Timing
from pushstr.delivery.dispatcher import Dispatcher, Lane, OnDead
from pushstr.delivery.outbox import Outbox
from pushstr.delivery.render import Encrypt, ProfileCache, Renderer
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Registration
from pushstr.registry.storage import Store
from pushstr.transports import vapid
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification, SendResult, Transport
from pushstr.transports.fcm import FcmTransport
from pushstr.transports.log import LogTransport
from pushstr.transports.webpush import WebPushTransport

log = logging.getLogger(__name__)


class Delivery:
    """Accepts notifications without blocking and gets them to devices; start it before use, close it to drain."""

    def __init__(
        self,
        batcher_timings: Mapping[str, Timing],
        dispatcher: Dispatcher,
        transports: Mapping[str, Transport],
        *,
        outbox: Outbox | None = None,
        ttls: Mapping[str, int] | None = None,
        drain_seconds: float = 5.0,
        vapid_public_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Without an `outbox` nothing is kept durable (tests and benchmarks of the stage alone); `ttls` are the
        apps' `ttl_seconds`, how long a push is worth keeping."""
        self._dispatcher = dispatcher
        self._transports = transports
        self._outbox = outbox
        self._ttls = ttls or {}
        self._drain_seconds = drain_seconds
        self._vapid_public_key = vapid_public_key
        self._batcher = Batcher(batcher_timings, self._emit, clock=clock)

    @property
    def transport_names(self) -> list[str]:
        """The push services in use (`apns`, `fcm`, `webpush`, `log`), sorted, each once."""
        return sorted({transport.name for transport in self._transports.values()})

    @property
    def vapid_public_key(self) -> str | None:
        """The server's VAPID public key (base64url, uncompressed point) when a Web Push app is configured."""
        return self._vapid_public_key

    @property
    def pending(self) -> int:
        """Pushes accepted by the dispatcher and not finished (queued, in flight or waiting to retry)."""
        return self._dispatcher.queued()

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox

    async def start(
        self, device_of: Callable[[str, str], Registration | None] | None = None, *, resume: bool = True
    ) -> None:
        """Start delivering, first resuming what the outbox kept from the last run (`device_of(pubkey, token)`
        finds the registration of a stored push; one that is gone drops it). Instances that split the pubkeys
        resume nothing here: each resumes its shards' pushes as it takes them (`resume_pubkeys`)."""
        await self._dispatcher.start()
        await self._batcher.start()
        if self._outbox is not None:
            await self._outbox.start()
            if resume:
                await self._resume(self._outbox, device_of or (lambda pubkey, token: None))

    async def resume_pubkeys(
        self, select: Callable[[str], bool], device_of: Callable[[str, str], Registration | None]
    ) -> None:
        """Resume the stored pushes of the pubkeys `select` picks that are not tracked here yet (shards just
        taken from another instance)."""
        if self._outbox is not None:
            await self._resume(self._outbox, device_of, select)

    def deliver_elsewhere(self, elsewhere: Callable[[Registration], bool] | None) -> None:
        """See `Dispatcher.deliver_elsewhere`."""
        self._dispatcher.deliver_elsewhere(elsewhere)

    async def _resume(
        self,
        outbox: Outbox,
        device_of: Callable[[str, str], Registration | None],
        select: Callable[[str], bool] | None = None,
    ) -> None:
        resumed = 0
        for row, notification in await outbox.recover(select):
            device = device_of(row.pubkey, row.device_token)
            if device is None or device.app != row.app:
                outbox.forget(row)
                continue
            taken = self._dispatcher.resume(
                notification,
                device,
                attempts=row.attempts,
                not_before=row.next_attempt_at,
                expires_at=row.expires_at,
            )
            if taken:
                resumed += 1
            else:
                outbox.forget(row)
        if resumed:
            log.info("delivery resumed %d pending pushes from the outbox", resumed)

    def record(self, event_id: str, shards: Sequence[int] = ()) -> None:
        """Mark an event handled (for `shards`, with several instances), in the same commit as its pushes (see
        `delivery.outbox`)."""
        if self._outbox is not None:
            self._outbox.record(event_id, shards)

    async def durable(self) -> None:
        """Wait until every notification taken so far is in the store (or final)."""
        if self._outbox is not None:
            await self._outbox.durable()

    def submit(self, notification: Notification, device: Registration) -> bool:
        """Hand one notification over; False (and a drop counted) when it cannot be taken.

        A notification held by the batcher counts as taken: it is in the outbox and goes out when its window ends
        (a full queue then drops it, counted, as it would have dropped it now).
        """
        outbox = self._outbox
        if outbox is not None and not outbox.add(notification, device, self._ttls.get(notification.app, 0)):
            return False
        return self._batcher.submit(notification, device)

    async def send_once(self, notification: Notification, device: Registration) -> SendResult:
        """Push once, now, and answer with the provider's result (`Dispatcher.send_once`)."""
        return await self._dispatcher.send_once(notification, device)

    def _emit(self, notification: Notification, device: Registration) -> bool:
        """The batcher's way out: a push the dispatcher refuses is final, so it leaves the outbox."""
        if self._dispatcher.submit(notification, device):
            return True
        if self._outbox is not None:
            self._outbox.finish(notification, device, "dropped")
        return False

    async def close(self, timeout: float | None = None) -> None:
        """Hand what the batcher holds to the dispatcher, give requests in flight `timeout` seconds (default
        `drain_seconds`), then stop; what is not final stays in the outbox for the next start."""
        await self._batcher.close()
        await self._dispatcher.close(self._drain_seconds if timeout is None else timeout)
        if self._outbox is not None:
            await self._outbox.close()


def nip44_encrypter(keys: Keys) -> Encrypt:
    """NIP-44 from the server's keys to a device key, for the `encrypted` mode."""

    def encrypt(device_pubkey: str, plaintext: str) -> str:
        from pushstr.nostr.nip44 import encrypt_to

        return encrypt_to(keys, device_pubkey, plaintext)

    return encrypt


def build_transport(app_id: str, app: AnyAppConfig, settings: Settings, log: LogTransport) -> Transport:
    """The transport of one configured app; every log app shares `log`. Raises TransportConfigError (a
    ConfigError naming the key) when the app's credentials cannot be loaded."""
    if isinstance(app, WebPushAppConfig):
        return WebPushTransport(app_id, app, vapid.load_or_create_key(settings.server.data_dir))
    if isinstance(app, ApnsAppConfig):
        return ApnsTransport(app_id, app)
    if isinstance(app, FcmAppConfig):
        return FcmTransport(app_id, app)
    return log


def build_delivery(
    settings: Settings,
    keys: Keys,
    on_dead: Callable[[Registration, float | None], Awaitable[object]],
    profiles: ProfileCache | None = None,
    store: Store | None = None,
) -> Delivery:
    """Everything between the engine and the push services, built from the settings (not started).

    `profiles` supplies display names for alert titles (the engine fills it from kind-0 events); `store` keeps
    the outbox (without one, pending pushes live in memory only).
    """
    log = LogTransport(settings.transports.log.path, identities=settings.transports.log.identities)
    transports = {app_id: build_transport(app_id, app, settings, log) for app_id, app in settings.apps.items()}
    encrypt = nip44_encrypter(keys)
    hook: OnDead = on_dead
    lanes = {
        app_id: Lane(transports[app_id], Renderer(app, profiles=profiles, encrypt=encrypt))
        for app_id, app in settings.apps.items()
    }
    timings = {app_id: Timing(app.batch_window_seconds, app.cooldown_seconds) for app_id, app in settings.apps.items()}
    uses_webpush = any(isinstance(app, WebPushAppConfig) for app in settings.apps.values())
    public = vapid.vapid_public_key(settings.server.data_dir) if uses_webpush else None
    config = settings.outbox
    outbox = (
        Outbox(
            store,
            max_pending=config.max_pending,
            commit_interval=config.commit_interval_seconds,
            keep_pushes=config.enabled,
        )
        if store is not None
        else None
    )
    return Delivery(
        timings,
        Dispatcher(lanes, hook, ledger=outbox),
        transports,
        outbox=outbox,
        ttls={app_id: app.ttl_seconds for app_id, app in settings.apps.items()},
        drain_seconds=config.drain_seconds,
        vapid_public_key=public,
    )
