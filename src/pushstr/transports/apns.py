"""Apple Push Notification service over HTTP/2 with token (JWT) authentication.

One kept-open HTTP/2 connection per app (`h2client`; every push is a stream on it, as Apple asks). Provider
tokens come from `jwt_cache` so every app and connection of a team shares one token. Status codes and `reason`s
follow Apple's "Handling notification responses from APNs".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pushstr.config import ApnsAppConfig
from pushstr.net.h2client import H2Client, H2Error, H2Response, ResponseTooLarge
from pushstr.registry.model import Registration
from pushstr.transports import jwt_cache
from pushstr.transports.base import (
    MAX_PAYLOAD_BYTES,
    PAYLOAD_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    Encoded,
    Notification,
    Rendered,
    SendResult,
    TransportConfigError,
)
from pushstr.transports.replies import generic, retry_after

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"


def load_signing_key(app_id: str, path: Any) -> ec.EllipticCurvePrivateKey:
    """The `.p8` key from Apple's developer portal (a PKCS#8 PEM P-256 key)."""
    try:
        with open(path, "rb") as handle:
            key = load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TransportConfigError(f"apps.{app_id}.key_file", f"cannot load the APNs key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TransportConfigError(f"apps.{app_id}.key_file", "not a P-256 (ES256) key")
    return key


def aps_payload(rendered: Rendered) -> dict[str, Any]:
    """The JSON APNs delivers to the app: `aps` plus our data keys at the top level.

    An alert that also wakes the app (`Rendered.wake`, a generic alert) carries `content-available` beside the
    alert; it stays an `alert` push at its priority (`delivery_headers`), as Apple asks of a visible push.
    """
    aps: dict[str, Any] = {}
    if rendered.style == "silent":
        aps["content-available"] = 1
    else:
        alert = {name: text for name, text in (("title", rendered.title), ("body", rendered.body)) if text}
        aps["alert"] = alert
        aps["sound"] = "default"
        if rendered.wake:
            aps["content-available"] = 1
        if rendered.mutable_content:
            aps["mutable-content"] = 1
        if rendered.collapse_id:
            aps["thread-id"] = rendered.collapse_id
    return {"aps": aps, **rendered.data}


_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{1,200}")


def _is_hex_token(token: str) -> bool:
    """APNs device tokens are hex; anything else would be spliced into the request path."""
    return _HEX_TOKEN.fullmatch(token) is not None


def delivery_headers(rendered: Rendered, urgency: str) -> dict[str, str]:
    """Apple's push type, priority and collapse id for a payload: the rule both APNs and FCM's `apns` block follow.

    Background pushes must go at priority 5; 10 wakes the device at once.
    """
    background = rendered.style == "silent"
    headers = {
        "apns-push-type": "background" if background else "alert",
        "apns-priority": "5" if background or urgency != "high" else "10",
    }
    if rendered.collapse_id:
        headers["apns-collapse-id"] = rendered.collapse_id
    return headers


def apns_headers(rendered: Rendered, app: ApnsAppConfig, now: float) -> dict[str, str]:
    """The request headers of one push that do not change between attempts (the bearer token is added per attempt).

    `apns-expiration` is an absolute time: fixing it when the push is built keeps a retried push from living
    longer than `ttl_seconds`.
    """
    expiration = int(now) + app.ttl_seconds if app.ttl_seconds else 0
    return {"apns-topic": app.topic, **delivery_headers(rendered, app.urgency), "apns-expiration": str(expiration)}


class ApnsTransport:
    """See the module docstring."""

    name = "apns"

    def __init__(
        self,
        app_id: str,
        app: ApnsAppConfig,
        *,
        tokens: jwt_cache.ProviderTokens = jwt_cache.SHARED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app = app
        self._key = load_signing_key(app_id, app.key_file)
        self._tokens = tokens
        self._clock = clock
        default = SANDBOX_URL if app.environment == "sandbox" else PRODUCTION_URL
        self._base_url = (app.base_url or default).rstrip("/")
        url = urlsplit(self._base_url)
        if url.scheme != "https" or not url.hostname or url.path or url.query:
            raise TransportConfigError(f"apps.{app_id}.base_url", "APNs is reached at an https:// origin, no path")
        self._client: H2Client | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = H2Client(self._base_url, ca_file=self._app.ca_file, timeout=self._app.timeout_seconds)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def measure(self, rendered: Rendered, device: Registration) -> int:
        return len(orjson.dumps(aps_payload(rendered)))

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        if not _is_hex_token(device.device_token):
            return SendResult.rejected("BadDeviceToken")
        body = orjson.dumps(aps_payload(rendered))
        if len(body) > MAX_PAYLOAD_BYTES:
            return SendResult.rejected(PAYLOAD_TOO_LARGE)
        return Encoded(body, apns_headers(rendered, self._app, self._clock()))

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        if self._client is None:
            await self.start()
        assert self._client is not None
        token = self._tokens.token(self._app.team_id, self._app.key_id, self._key)
        try:
            response = await self._client.request(
                "POST",
                f"/3/device/{device.device_token}",
                headers={"authorization": f"bearer {token}", **encoded.headers},
                body=encoded.body,
            )
        except ResponseTooLarge:
            return SendResult.retry(RESPONSE_TOO_LARGE)
        except H2Error as exc:
            # No answer: APNs may never have seen the push, so it is worth another attempt.
            return SendResult.retry(f"network:{type(exc).__name__}")
        return self._outcome(response, token)

    def _outcome(self, h2_response: H2Response, token: str) -> SendResult:
        status = h2_response.status
        if status == 200:
            return SendResult.delivered(status)
        # Errors are rare: read them with the helpers every HTTP transport shares (Retry-After, status rules).
        response = httpx.Response(status, headers=h2_response.headers, content=h2_response.content)
        try:
            reply = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            reply = {}
        reason = str(reply.get("reason", "")) if isinstance(reply, dict) else ""
        if status == 410:
            stamp = reply.get("timestamp") if isinstance(reply, dict) else None
            seconds = stamp / 1000 if isinstance(stamp, int | float) else None
            return SendResult.dead(reason or "Unregistered", status, seconds)
        if status == 403 and reason == "ExpiredProviderToken":
            self._tokens.expired(self._app.team_id, self._app.key_id, token)
            return SendResult.retry(reason, status, retry_after(response))
        return generic(response, reason or f"http-{status}")
