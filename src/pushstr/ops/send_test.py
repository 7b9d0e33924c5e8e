"""`pushstr send-test`: one test notification through an app's real transport, and the provider's answer.

The push is built as the gateway builds every push (the app's transport from `build_transport`, the payload from
`delivery.render` in the device's mode) and sent once: no queue, no retry, no outbox. A token the provider calls
dead is reported, not pruned; the gateway prunes it when its own push meets the same answer. Devices come from
the command line (`--app`, `--token`) or from the store (`--npub`: that user's stored devices; memory-only
registrations such as heartbeat-kept ones live in the running gateway only).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import replace
from typing import TextIO

from pushstr.config import ApnsAppConfig, FcmAppConfig, Settings, WebPushAppConfig
from pushstr.delivery.render import Renderer
from pushstr.delivery.stage import build_transport, nip44_encrypter
from pushstr.dialects.http_nip98 import TEST_KIND
from pushstr.identity import load_server_keys
from pushstr.nostr import nip19
from pushstr.nostr.errors import NostrError
from pushstr.nostr.keys import Keys
from pushstr.ops.report import shown_text
from pushstr.ops.store_read import NoDatabase, SchemaMismatch, registrations_of
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.tokens import InvalidToken, check_device_token, parse_platform
from pushstr.store.sealing import TokenSeal
from pushstr.transports.base import Notification, Outcome, SendResult, Transport, TransportConfigError
from pushstr.transports.log import LogTransport

#: What an operator can do about the provider answers seen most.
HINTS = {
    "Unregistered": "the token is no longer valid (app uninstalled or token rotated): the device must register again",
    "BadDeviceToken": "not a token of this app in this environment: check topic, and environment (a sandbox "
    "token works only with sandbox, and the other way round)",
    "DeviceTokenNotForTopic": "the token belongs to another app: check topic",
    "InvalidProviderToken": "check key_id, team_id and the .p8 key (pushstr doctor)",
    "ExpiredProviderToken": "the server's clock is off: sync it (NTP)",
    "TopicDisallowed": "the key's team may not push to this topic",
    "UNREGISTERED": "the token is no longer valid (app uninstalled or token rotated): the device must register again",
    "INVALID_ARGUMENT": "FCM does not take this token or payload: check the token",
    "SENDER_ID_MISMATCH": "the token belongs to another Firebase project than the service account's",
    "THIRD_PARTY_AUTH_ERROR": "the APNs credentials in the Firebase console are refused",
    "payload-too-large": "the payload does not fit 4 KB even degraded",
}
#: The platform a token given on the command line is taken for, by its app's transport.
PLATFORM_BY_TRANSPORT = {
    "apns": Platform.IOS,
    "fcm": Platform.ANDROID,
    "webpush": Platform.UNIFIEDPUSH,
    "log": Platform.ANDROID,
}


class UsageError(Exception):
    """The command names something that does not exist or cannot work (exit status 2)."""


def _allowed_hosts(settings: Settings, app_id: str) -> list[str]:
    app = settings.apps[app_id]
    return list(app.allowed_hosts) if isinstance(app, WebPushAppConfig) else []


async def device_from_token(
    settings: Settings, keys: Keys, app_id: str, token: str, platform: str | None
) -> Registration:
    """A registration for a token given on the command line, checked as `POST /register` checks it."""
    if app_id not in settings.apps:
        raise UsageError(f"no app {app_id!r} in [apps]; configured: {', '.join(settings.apps)}")
    try:
        chosen = parse_platform(platform) if platform else PLATFORM_BY_TRANSPORT[settings.apps[app_id].transport]
    except ValueError as exc:
        raise UsageError(f"--platform: {exc}") from None
    try:
        await check_device_token(chosen, token, allowed_hosts=_allowed_hosts(settings, app_id))
    except InvalidToken as exc:
        raise UsageError(str(exc)) from None
    return Registration(keys.public_hex, token, chosen, app_id, dialect="send-test", persistent=False)


async def devices_of(settings: Settings, keys: Keys, npub: str, timeout: float) -> list[Registration]:
    try:
        pubkey = nip19.parse_pubkey(npub)
    except NostrError as exc:
        raise UsageError(f"--npub: {exc.reason}") from None
    try:
        return await registrations_of(settings.store_url, pubkey, TokenSeal(keys.secret), timeout)
    except NoDatabase as exc:
        raise UsageError(f"no database at {exc}: nothing is registered yet") from None
    except SchemaMismatch as exc:
        raise UsageError(f"{exc}: start pushstr serve once to migrate it") from None


def describe(result: SendResult) -> str:
    """The provider's answer in a line: outcome, HTTP status, reason, and what to do about it."""
    answer = str(result.outcome)
    if result.status is not None:
        answer += f" — HTTP {result.status}"
    if result.reason:
        answer += f" {result.reason}"
    hint = HINTS.get(result.reason)
    return f"{answer} ({hint})" if hint else answer


def _endpoint(settings: Settings, app_id: str) -> str:
    app = settings.apps[app_id]
    if isinstance(app, ApnsAppConfig | FcmAppConfig):
        return f" via {app.base_url}" if app.base_url else ""
    return ""


class Sender:
    """Builds each app's transport once, as delivery does, and sends single pushes through it."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self._settings = settings
        self._keys = keys
        self._log = LogTransport(settings.transports.log.path, identities=settings.transports.log.identities)
        self._transports: dict[str, Transport] = {}

    def _transport(self, app_id: str) -> Transport:
        if app_id not in self._transports:
            self._transports[app_id] = build_transport(app_id, self._settings.apps[app_id], self._settings, self._log)
        return self._transports[app_id]

    async def send(self, device: Registration, notification: Notification) -> SendResult:
        app = self._settings.apps.get(device.app)
        if app is None:
            return SendResult.rejected("unknown_app")
        try:
            transport = self._transport(device.app)
        except TransportConfigError as exc:
            return SendResult.rejected(shown_text(str(exc)))
        renderer = Renderer(app, encrypt=nip44_encrypter(self._keys))
        encoded = renderer.encode(notification, device, transport)
        if isinstance(encoded, SendResult):
            return encoded
        try:
            async with asyncio.timeout(app.timeout_seconds):
                return await transport.send(encoded, device)
        except TimeoutError:
            return SendResult.retry("timeout")

    async def close(self) -> None:
        unique = {id(transport): transport for transport in [*self._transports.values(), self._log]}
        for transport in unique.values():  # every log app shares the one log transport
            await transport.close()


async def run_send_test(
    settings: Settings,
    out: TextIO,
    *,
    app_id: str | None = None,
    token: str | None = None,
    platform: str | None = None,
    npub: str | None = None,
    mode: Mode | None = None,
    timeout: float = 10.0,
) -> int:
    """Send the test push to each device and print each answer; 0 when every device got it, 1 otherwise, 2 for a
    command that cannot work (unknown app, malformed token or npub)."""
    keys = load_server_keys(settings)
    try:
        if npub is not None:
            devices = await devices_of(settings, keys, npub, timeout)
            if not devices:
                out.write(f"no stored device for {npub}\n")
                return 1
        elif app_id is not None and token is not None:
            devices = [await device_from_token(settings, keys, app_id, token, platform)]
        else:
            raise UsageError("give --app and --token, or --npub")
    except UsageError as exc:
        out.write(f"pushstr send-test: {exc}\n")
        return 2
    event_id = hashlib.sha256(b"pushstr send-test " + secrets.token_bytes(16)).hexdigest()
    sender = Sender(settings, keys)
    delivered = 0
    try:
        for registered in devices:
            device = registered if mode is None else replace(registered, mode=mode)
            notification = Notification(event_id, TEST_KIND, device.pubkey, None, int(time.time()), device.app)
            result = await sender.send(device, notification)
            app = settings.apps.get(device.app)
            transport = app.transport if app is not None else "?"
            out.write(
                f"apps.{device.app} ({transport}{_endpoint(settings, device.app) if app else ''}) {device.platform} "
                f"device {device.token_id}: {describe(result)}\n"
            )
            delivered += result.outcome is Outcome.DELIVERED
    finally:
        await sender.close()
    return 0 if delivered == len(devices) else 1
