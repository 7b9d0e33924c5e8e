"""The delivery stage the service wires in: batcher → render once → dispatcher → one transport per configured app."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

from pushstr.config import AnyAppConfig, ApnsAppConfig, FcmAppConfig, Settings, WebPushAppConfig
from pushstr.delivery.batch import Batcher, Timing
from pushstr.delivery.dispatcher import Dispatcher, Lane, OnDead
from pushstr.delivery.render import Encrypt, ProfileCache, Renderer
from pushstr.nostr.keys import Keys
from pushstr.registry.model import Registration
from pushstr.transports import vapid
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification, Transport
from pushstr.transports.fcm import FcmTransport
from pushstr.transports.log import LogTransport
from pushstr.transports.webpush import WebPushTransport


class Delivery:
    """Accepts notifications without blocking and gets them to devices; start it before use, close it to drain."""

    def __init__(
        self,
        batcher_timings: Mapping[str, Timing],
        dispatcher: Dispatcher,
        transports: Mapping[str, Transport],
        *,
        vapid_public_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
        return self._batcher.submit(notification, device)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what the batcher holds and what is queued (up to `timeout` seconds), then stop."""
        await self._batcher.close()
        await self._dispatcher.close(timeout)


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
) -> Delivery:
    """Everything between the engine and the push services, built from the settings (not started).

    `profiles` supplies display names for alert titles (the engine fills it from kind-0 events).
    """
    log = LogTransport(settings.transports.log.path)
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
    return Delivery(timings, Dispatcher(lanes, hook), transports, vapid_public_key=public)
