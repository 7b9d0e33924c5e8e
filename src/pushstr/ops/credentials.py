"""Each app's push credentials, checked offline (the key loads and signs) and online (the provider takes them).

The online checks ask the provider only what proves the credentials work and delivers nothing: APNs gets one
background push to a device token no device has (Apple answers 400 `BadDeviceToken` when it accepted the
provider token and the topic, 403 when it did not); FCM hands out an OAuth token and then gets a send with
`validate_only` set, which FCM checks and does not deliver. The transports' own code loads the keys and talks to
the providers, so a key that passes here is a key `serve` can use.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import httpx
import jwt
import orjson

from pushstr.config import ApnsAppConfig, FcmAppConfig, Settings, WebPushAppConfig
from pushstr.net.httpclient import ResponseTooLarge, make_client, post_bounded
from pushstr.ops.relay_probe import describe_error
from pushstr.ops.report import Check, fail, file_mode_problem, ok, shown_text, warn
from pushstr.registry.model import Platform, Registration
from pushstr.transports import vapid
from pushstr.transports.apns import PRODUCTION_URL, SANDBOX_URL, ApnsTransport, load_signing_key
from pushstr.transports.base import Notification, Outcome, Rendered, SendResult, TransportConfigError
from pushstr.transports.fcm import FCM_URL, AccessTokens, ServiceAccount
from pushstr.transports.jwt_cache import ProviderTokens

#: A device token of the right shape that no device has: APNs judges the provider token before the device token.
PROBE_DEVICE_TOKEN = "0" * 64
#: FCM's answers to the validate-only probe (a token no app has) that show the credentials and project are fine.
_FCM_ACCEPTED = frozenset({200, 400})
_APNS_KEY_ADVICE = (
    "download the .p8 key again from Apple's developer portal (Certificates, Identifiers & Profiles → Keys) "
    "and point key_file at it"
)
_APNS_REASON_ADVICE = {
    "InvalidProviderToken": "check key_id and team_id against the key in Apple's developer portal, and that the "
    "key is enabled for APNs",
    "ExpiredProviderToken": "the server's clock is off: sync it (NTP)",
    "BadTopic": "topic must be the app's bundle id",
    "TopicDisallowed": "topic must be a bundle id of the key's team",
    "DeviceTokenNotForTopic": "topic must be the app's bundle id",
    "MissingTopic": "set topic to the app's bundle id",
}


def secret_file_check(subject: str, path: Path) -> Check | None:
    """A warning when a file holding a secret is readable by other users, else None."""
    try:
        problem = file_mode_problem(path.stat().st_mode)
    except OSError:
        return None  # unreadable files are reported by the check that loads them
    return warn(subject, f"{path}: {problem}", f"chmod 600 {path}") if problem else None


async def http2_handshake(base_url: str, ca_file: Path | None, timeout: float) -> float:
    """Open TLS with ALPN `h2` to `base_url`, exchange HTTP/2 SETTINGS, close; the milliseconds it took.

    Raises OSError (TLS errors included), TimeoutError, or ConnectionError when the server does not speak HTTP/2.
    """
    url = urlsplit(base_url)
    host, port = url.hostname or "", url.port or 443
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                raise ConnectionError("the server did not agree to HTTP/2 (ALPN h2)")
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            writer.write(connection.data_to_send())
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection before its HTTP/2 SETTINGS")
                events = connection.receive_data(data)
                if any(isinstance(event, h2.events.RemoteSettingsChanged) for event in events):
                    break
            connection.close_connection()
            writer.write(connection.data_to_send())
        finally:
            writer.close()
    return (time.monotonic() - started) * 1000


def _apns_url(app: ApnsAppConfig) -> str:
    default = SANDBOX_URL if app.environment == "sandbox" else PRODUCTION_URL
    return (app.base_url or default).rstrip("/")


async def check_apns(app_id: str, app: ApnsAppConfig, timeout: float) -> list[Check]:
    """The `.p8` key loads and signs, the endpoint speaks TLS + HTTP/2, and APNs accepts the provider token."""
    subject = f"apps.{app_id}"
    try:
        key = load_signing_key(app_id, app.key_file)
    except TransportConfigError as exc:
        return [fail(f"{subject}.key_file", f"{app.key_file}: {_reason(exc)}", _APNS_KEY_ADVICE)]
    token = jwt.encode(
        {"iss": app.team_id, "iat": int(time.time())}, key, algorithm="ES256", headers={"kid": app.key_id}
    )
    jwt.decode(token, key.public_key(), algorithms=["ES256"])  # the signature verifies with the key's own half
    checks = [
        ok(
            f"{subject}.key_file",
            f"{app.key_file} is a P-256 key and signs ES256 provider tokens (key id {app.key_id}, team {app.team_id})",
        )
    ]
    if (mode := secret_file_check(f"{subject}.key_file", app.key_file)) is not None:
        checks.append(mode)
    endpoint = _apns_url(app)
    try:
        took = await http2_handshake(endpoint, app.ca_file, timeout)
    except (OSError, ConnectionError, TimeoutError) as exc:
        what = (
            f"no TLS + HTTP/2 connection within {timeout:g} s" if isinstance(exc, TimeoutError) else describe_error(exc)
        )
        advice = (
            "check DNS, the firewall (TCP 443 outbound) and ca_file"
            if app.base_url
            else "check DNS and that TCP 443 to Apple is open"
        )
        return [*checks, fail(f"{subject} endpoint", f"{endpoint}: {what}", advice)]
    checks.append(ok(f"{subject} endpoint", f"{endpoint} accepts TLS + HTTP/2 ({took:.0f} ms)"))
    checks.append(await _apns_probe(app_id, app, timeout))
    return checks


async def _apns_probe(app_id: str, app: ApnsAppConfig, timeout: float) -> Check:
    subject = f"apps.{app_id} provider token"
    transport = ApnsTransport(app_id, app, tokens=ProviderTokens())
    nobody = "0" * 64
    device = Registration(nobody, PROBE_DEVICE_TOKEN, Platform.IOS, app_id, persistent=False)
    notification = Notification(nobody, 0, nobody, None, int(time.time()), app_id)
    encoded = transport.encode(notification, Rendered("silent"), device)
    try:
        async with asyncio.timeout(timeout):
            result = encoded if isinstance(encoded, SendResult) else await transport.send(encoded, device)
    except TimeoutError:
        return fail(subject, f"APNs did not answer a probe push within {timeout:g} s", "check the network to Apple")
    finally:
        await transport.close()
    answer = f"HTTP {result.status} {result.reason}".strip() if result.status else result.reason
    if result.outcome is Outcome.DELIVERED or result.reason == "BadDeviceToken":
        return ok(
            subject, f"APNs accepted the provider token and topic {app.topic} (probe push to a dummy device: {answer})"
        )
    advice = _APNS_REASON_ADVICE.get(result.reason, "see Apple's 'Handling notification responses from APNs'")
    return fail(subject, f"APNs refused a probe push: {answer}", advice)


def _reason(exc: TransportConfigError) -> str:
    """The reason of a transport's configuration error without its `invalid configuration: <key>:` prefix."""
    return shown_text(str(exc).split(": ", 2)[-1])


async def check_fcm(app_id: str, app: FcmAppConfig, timeout: float) -> list[Check]:
    """The service account parses, an OAuth token is obtained, and FCM validates a send without delivering it."""
    subject = f"apps.{app_id}"
    try:
        account = ServiceAccount(app_id, app.service_account_file)
    except TransportConfigError as exc:
        return [
            fail(
                f"{subject}.service_account_file",
                f"{app.service_account_file}: {_reason(exc)}",
                "download a new JSON key (Google Cloud console → IAM → Service accounts → Keys)",
            )
        ]
    account.assertion(int(time.time()))
    checks = [
        ok(
            f"{subject}.service_account_file",
            f"{app.service_account_file}: {account.client_email} of project {account.project_id}, RSA key signs",
        )
    ]
    if (mode := secret_file_check(f"{subject}.service_account_file", app.service_account_file)) is not None:
        checks.append(mode)
    token_host = urlsplit(account.token_uri).netloc
    client = make_client(ca_file=app.ca_file, timeout=timeout, connections=1)
    try:
        try:
            started = time.monotonic()
            async with asyncio.timeout(timeout):
                access = await AccessTokens(account).get(client)
            took = (time.monotonic() - started) * 1000
        except (httpx.HTTPError, ResponseTooLarge, ValueError, KeyError, TypeError, TimeoutError) as exc:
            what = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else describe_error(exc)
            return [
                *checks,
                fail(
                    f"{subject} oauth",
                    f"no access token from {token_host}: {what}",
                    "the key may be deleted or disabled: check it in Google Cloud console → IAM → Service accounts",
                ),
            ]
        checks.append(ok(f"{subject} oauth", f"access token obtained from {token_host} ({took:.0f} ms)"))
        checks.append(
            await _fcm_probe(app_id, app, project=account.project_id, access=access, client=client, timeout=timeout)
        )
    finally:
        await client.aclose()
    return checks


async def _fcm_probe(
    app_id: str, app: FcmAppConfig, *, project: str, access: str, client: httpx.AsyncClient, timeout: float
) -> Check:
    subject = f"apps.{app_id} send"
    url = f"{(app.base_url or FCM_URL).rstrip('/')}/v1/projects/{project}/messages:send"
    body = orjson.dumps({"validate_only": True, "message": {"token": "pushstr-doctor-probe", "data": {}}})
    headers = {"authorization": f"Bearer {access}", "content-type": "application/json"}
    try:
        async with asyncio.timeout(timeout):
            response = await post_bounded(client, url, content=body, headers=headers)
    except (httpx.HTTPError, ResponseTooLarge, TimeoutError) as exc:
        what = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else describe_error(exc)
        return fail(subject, f"{urlsplit(url).netloc}: {what}", "check DNS, the firewall and ca_file")
    status = response.status_code
    if status in _FCM_ACCEPTED:
        return ok(
            subject, f"FCM accepted a validate-only send for project {project} (HTTP {status}; nothing delivered)"
        )
    advice = {
        401: "the access token was refused: check the service account's key",
        403: f"enable the Firebase Cloud Messaging API for project {project} and let the service account send "
        "(role Firebase Cloud Messaging API Admin)",
        404: f"project {project} not found: check project_id in the service-account file",
    }.get(status, "see FCM's error codes for HTTP v1")
    return fail(subject, f"FCM refused a validate-only send: HTTP {status}", advice)


def check_vapid(app_id: str, app: WebPushAppConfig, settings: Settings) -> list[Check]:
    """The server's VAPID key (shared by every Web Push app): present, private, P-256, and it signs."""
    subject = f"apps.{app_id} vapid"
    path = settings.server.data_dir / vapid.KEY_FILE_NAME
    if not path.exists():
        return [
            warn(
                subject,
                f"no VAPID key yet at {path}",
                "pushstr serve creates it at first start; keep it afterwards: browsers bind subscriptions to it",
            )
        ]
    try:
        key = vapid.load_or_create_key(settings.server.data_dir)
    except (OSError, ValueError, TypeError) as exc:
        return [
            fail(
                subject,
                f"{path}: {shown_text(str(exc))}",
                "restore the key from a backup; a new key orphans every Web Push subscription",
            )
        ]
    vapid.VapidSigner(key, app.vapid_subject).header("https://push.example")
    public = vapid.public_key_b64(key)
    checks = [ok(subject, f"{path} signs VAPID tokens (public key {public[:16]}…, subject {app.vapid_subject})")]
    if (mode := secret_file_check(subject, path)) is not None:
        checks.append(mode)
    return checks
