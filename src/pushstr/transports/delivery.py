"""The delivery entry point the service wires in: batcher → dispatcher → one transport per configured app."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pushstr.config import AppConfig, Settings
from pushstr.engine.batch import Batcher, Timing
from pushstr.engine.render import Encrypt, MemoryProfileCache, ProfileCache
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Registration
from pushstr.transports import metrics, vapid
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification, Transport
from pushstr.transports.dispatcher import Dispatcher, Lane, OnDead, RetryPolicy
from pushstr.transports.fcm import FcmTransport
from pushstr.transports.log import LogTransport
from pushstr.transports.webpush import WebPushTransport


class Delivery:
    """Accepts notifications without blocking and gets them to devices; start it before use, close it to drain."""

    def __init__(
        self,
        batcher_timings: dict[str, Timing],
        dispatcher: Dispatcher,
        transports: dict[str, Transport],
        *,
        vapid_public_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        profiles: ProfileCache | None = None,
    ) -> None:
        self.profiles: ProfileCache = profiles if profiles is not None else MemoryProfileCache()
        self._dispatcher = dispatcher
        self._transports = transports
        self._vapid_public_key = vapid_public_key
        self._batcher = Batcher(batcher_timings, self._dispatcher.submit, clock=clock)

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

    async def start(self) -> None:
        await self._dispatcher.start()
        await self._batcher.start()

    def submit(self, notification: Notification, device: Registration) -> bool:
        """Hand one notification over; False (and a drop counted) when it cannot be taken.

        A notification held by the batcher counts as taken: it goes out when its window ends (a full queue
        then drops it, counted, as it would have dropped it now).
        """
        if notification.app not in self._transports:
            metrics.DROPPED.labels(notification.app, "unknown_app").inc()
            return False
        return self._batcher.submit(notification, device)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what the batcher holds and what is queued (up to `timeout` seconds), then stop."""
        await self._batcher.close()
        await self._dispatcher.close(timeout)


def _lane(transport: Transport, app: AppConfig) -> Lane:
    return Lane(
        transport=transport,
        queue_size=app.queue_size,
        concurrency=app.concurrency,
        timeout_seconds=app.timeout_seconds,
        retry=RetryPolicy(app.max_attempts, app.backoff_base_seconds, app.backoff_max_seconds),
    )


def nip44_encrypter(keys: Keys) -> Encrypt:
    """NIP-44 from the server's keys to a device key, for the `encrypted` mode."""

    def encrypt(device_pubkey: str, plaintext: str) -> str:
        from pushstr.nostr.nip44 import encrypt_to

        return encrypt_to(keys, device_pubkey, plaintext)

    return encrypt


def build_transport(
    app_id: str, app: AppConfig, settings: Settings, keys: Keys, profiles: ProfileCache | None = None
) -> Transport:
    """The transport for one configured app (`build_delivery` shares one log transport among log apps)."""
    if app.transport == "webpush":
        vapid_key = vapid.load_or_create_key(settings.server.data_dir)
        return WebPushTransport(app_id, app, vapid_key, profiles=profiles, encrypt=nip44_encrypter(keys))
    if app.transport == "apns":
        return ApnsTransport(app_id, app, profiles=profiles, encrypt=nip44_encrypter(keys))
    if app.transport == "fcm":
        return FcmTransport(app_id, app, profiles=profiles, encrypt=nip44_encrypter(keys))
    return LogTransport(settings.transports.log.path)


def build_delivery(
    settings: Settings,
    keys: Keys,
    on_dead: Callable[[Registration, float | None], Awaitable[object]],
    profiles: ProfileCache | None = None,
) -> Delivery:
    """Everything between the engine and the push services, built from the settings (not started).

    `profiles` supplies display names for alert titles; without it the Delivery keeps its own cache
    (`Delivery.profiles`) for the engine to fill from kind-0 events.
    """
    names = profiles if profiles is not None else MemoryProfileCache()
    log_transport = LogTransport(settings.transports.log.path)
    transports: dict[str, Transport] = {
        app_id: log_transport if app.transport == "log" else build_transport(app_id, app, settings, keys, names)
        for app_id, app in settings.apps.items()
    }
    hook: OnDead = on_dead
    dispatcher = Dispatcher({app_id: _lane(transports[app_id], app) for app_id, app in settings.apps.items()}, hook)
    timings = {app_id: Timing(app.batch_window_seconds, app.cooldown_seconds) for app_id, app in settings.apps.items()}
    uses_webpush = any(app.transport == "webpush" for app in settings.apps.values())
    public = vapid.vapid_public_key(settings.server.data_dir) if uses_webpush else None
    return Delivery(timings, dispatcher, transports, vapid_public_key=public, profiles=names)
