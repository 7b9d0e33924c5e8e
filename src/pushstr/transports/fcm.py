"""Firebase Cloud Messaging, HTTP v1 API, authenticated with a service-account key.

The OAuth2 access token comes from the JWT-bearer grant at the key file's `token_uri` and is reused until shortly
before it expires; one refresh at a time. Errors map from FCM's `errorCode` (falling back to the HTTP status):
UNREGISTERED → dead; INVALID_ARGUMENT and other client errors → rejected; QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL
→ retry (with `Retry-After` when given). A 401 means our access token went bad: it is dropped and the push retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pushstr.config import AppConfig, FcmAppConfig
from pushstr.net.httpclient import LazyClient, ResponseTooLarge, post_bounded
from pushstr.registry.model import Platform, Registration
from pushstr.transports import metrics
from pushstr.transports.apns import aps_payload, delivery_headers
from pushstr.transports.base import (
    ENCRYPTED_EVENT_KEY,
    MAX_PAYLOAD_BYTES,
    PAYLOAD_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    Encoded,
    Notification,
    Rendered,
    SendResult,
    TransportConfigError,
)
from pushstr.transports.replies import generic, network_failure, retry_after

FCM_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
#: Refresh this long before Google's stated expiry, so no request carries a token that dies on the way.
EXPIRY_MARGIN_SECONDS = 120
_RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
_DEAD_CODES = frozenset({"UNREGISTERED"})
#: The data key that marks a data-only push as a wake-up.
WAKE_KEY = "content_available"


class ServiceAccount:
    """The parts of a service-account JSON key we use."""

    def __init__(self, app_id: str, path: Any) -> None:
        try:
            with open(path, "rb") as handle:
                info = orjson.loads(handle.read())
            key = load_pem_private_key(info["private_key"].encode(), password=None)
            self.client_email: str = info["client_email"]
            self.project_id: str = info["project_id"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TransportConfigError(f"apps.{app_id}.service_account_file", f"unusable key file: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TransportConfigError(f"apps.{app_id}.service_account_file", "private_key is not an RSA key")
        self.key = key
        self.key_id: str | None = info.get("private_key_id")
        self.token_uri: str = info.get("token_uri") or DEFAULT_TOKEN_URI

    def assertion(self, now: int) -> str:
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600}
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)


class AccessTokens:
    """The OAuth2 access token of one service account, fetched when missing or about to expire."""

    def __init__(self, account: ServiceAccount, clock: Callable[[], float] = time.time) -> None:
        self._account = account
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, client: httpx.AsyncClient) -> str:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            now = self._clock()
            form = urlencode(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": self._account.assertion(int(now)),
                }
            )
            response = await post_bounded(
                client,
                self._account.token_uri,
                content=form.encode(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            if response.status_code != 200:
                raise ValueError(f"token endpoint answered {response.status_code}")
            reply = orjson.loads(response.content)
            self._token = str(reply["access_token"])
            self._expires_at = now + float(reply.get("expires_in", 3600)) - EXPIRY_MARGIN_SECONDS
            metrics.CREDENTIALS.labels("fcm").inc()
            return self._token

    def drop(self, token: str) -> None:
        if self._token == token:
            self._token = None


def fcm_message(rendered: Rendered, device: Registration, app: AppConfig) -> dict[str, Any]:
    """The v1 `message` (without `token`): notification for alerts, data-only otherwise; APNs overrides for iOS.

    Encrypted payloads go data-only to Android so the app itself decrypts and shows them; iOS needs an alert
    with `mutable-content` for its extension to do the same. A `wrapped` push is data-only too, its one key
    `encryptedEvent` holding the wrap's JSON, as Amethyst's push server sends it (at the app's priority: high, the
    default, lets the app run at once to show the message, where the reference leaves FCM's normal). An alert is
    shown in the app's `android_channel_id` when it has one, and its collapse id is also the notification's `tag`,
    so a newer alert of a conversation replaces the older one on Android as on iOS (`collapse_key` only collapses
    pushes FCM still holds). A silent push says so in its data, `content_available: "true"` — FCM's spelling of
    APNs' `content-available`, what Marmot's reference server sends for a wake-up — unless it is a wrap, which
    goes exactly as Amethyst's push server sends it.
    """
    wake = rendered.style == "silent" and ENCRYPTED_EVENT_KEY not in rendered.data
    data = {name: _fcm_value(value) for name, value in rendered.data.items()}
    if wake:
        data[WAKE_KEY] = "true"
    message: dict[str, Any] = {"data": data}
    android: dict[str, Any] = {"priority": "high" if app.urgency == "high" else "normal", "ttl": f"{app.ttl_seconds}s"}
    if rendered.collapse_id:
        android["collapse_key"] = rendered.collapse_id
    message["android"] = android
    if rendered.style == "alert":
        message["notification"] = {
            name: text for name, text in (("title", rendered.title), ("body", rendered.body)) if text
        }
        shown = (("channel_id", app.android_channel_id), ("tag", rendered.collapse_id))
        if any(value for _, value in shown):
            android["notification"] = {name: value for name, value in shown if value}
    if device.platform == Platform.IOS:
        aps = aps_payload(rendered)["aps"]
        message["apns"] = {"headers": delivery_headers(rendered, app.urgency), "payload": {"aps": aps}}
    return message


def _fcm_value(value: str | bool) -> str:
    """A data value as FCM takes it: strings only, so a flag becomes `"true"` / `"false"`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class FcmTransport:
    """See the module docstring."""

    name = "fcm"

    def __init__(self, app_id: str, app: FcmAppConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._app = app
        self._account = ServiceAccount(app_id, app.service_account_file)
        self._tokens = AccessTokens(self._account, clock)
        base = (app.base_url or FCM_URL).rstrip("/")
        self._send_url = f"{base}/v1/projects/{self._account.project_id}/messages:send"
        self._http = LazyClient(ca_file=app.ca_file, timeout=app.timeout_seconds, connections=4)

    async def start(self) -> None:
        self._http.get()

    async def close(self) -> None:
        await self._http.aclose()

    def measure(self, rendered: Rendered, device: Registration) -> int:
        return len(orjson.dumps(fcm_message(rendered, device, self._app)))

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        message = fcm_message(rendered, device, self._app)
        if len(orjson.dumps(message)) > MAX_PAYLOAD_BYTES:
            return SendResult.rejected(PAYLOAD_TOO_LARGE)
        body = orjson.dumps({"message": {**message, "token": device.device_token}})
        return Encoded(body, {"content-type": "application/json"})

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        client = self._http.get()
        try:
            token = await self._tokens.get(client)
        except (httpx.HTTPError, ResponseTooLarge, ValueError, KeyError, TypeError) as exc:
            return SendResult.retry(f"oauth:{type(exc).__name__}")
        headers = {"authorization": f"Bearer {token}", **encoded.headers}
        try:
            response = await post_bounded(client, self._send_url, content=encoded.body, headers=headers)
        except ResponseTooLarge:
            return SendResult.retry(RESPONSE_TOO_LARGE)
        except httpx.HTTPError as exc:
            return network_failure(exc)
        return self._outcome(response, token)

    def _outcome(self, response: httpx.Response, token: str) -> SendResult:
        status = response.status_code
        if status == 200:
            return SendResult.delivered(status)
        code = _error_code(response)
        if status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
            self._tokens.drop(token)
            return SendResult.retry(code or "unauthenticated", status)
        if code in _DEAD_CODES:  # only on FCM's word: a bare 404 may be a wrong project id, not a dead token
            return SendResult.dead(code, status)
        if code in _RETRY_CODES:
            return SendResult.retry(code, status, retry_after(response))
        return generic(response, code or f"http-{status}")


def _error_code(response: httpx.Response) -> str:
    """FCM's `errorCode` from the error details, else the error's canonical `status`."""
    try:
        error = orjson.loads(response.content).get("error", {})
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")
