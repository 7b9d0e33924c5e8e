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

from pushstr.config import AppConfig
from pushstr.engine.render import MAX_PAYLOAD_BYTES, Encrypt, ProfileCache, Rendered, render
from pushstr.registry.model import Registration
from pushstr.transports import jwt_cache
from pushstr.transports.base import Notification, SendResult
from pushstr.transports.h2client import H2Client, H2Error, H2Response
from pushstr.transports.http import generic, retry_after

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"


class TransportConfigError(ValueError):
    """An app's push credentials are missing or unusable; the message names the key."""


def load_signing_key(app_id: str, path: Any) -> ec.EllipticCurvePrivateKey:
    """The `.p8` key from Apple's developer portal (a PKCS#8 PEM P-256 key)."""
    try:
        with open(path, "rb") as handle:
            key = load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TransportConfigError(f"apps.{app_id}.key_file: cannot load the APNs key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TransportConfigError(f"apps.{app_id}.key_file: not a P-256 (ES256) key")
    return key


def aps_payload(rendered: Rendered) -> dict[str, Any]:
    """The JSON APNs delivers to the app: `aps` plus our data keys at the top level."""
    aps: dict[str, Any] = {}
    if rendered.style == "silent":
        aps["content-available"] = 1
    else:
        alert = {"title": rendered.title, "body": rendered.body} if rendered.title else {"body": rendered.body}
        aps["alert"] = alert
        aps["sound"] = "default"
        if rendered.mutable_content:
            aps["mutable-content"] = 1
        if rendered.collapse_id:
            aps["thread-id"] = rendered.collapse_id
    return {"aps": aps, **rendered.data}


_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{1,200}")


def _is_hex_token(token: str) -> bool:
    """APNs device tokens are hex; anything else would be spliced into the request path."""
    return _HEX_TOKEN.fullmatch(token) is not None


def _encoded_size(rendered: Rendered) -> int:
    return len(orjson.dumps(aps_payload(rendered)))


class ApnsTransport:
    """See the module docstring."""

    name = "apns"

    def __init__(
        self,
        app_id: str,
        app: AppConfig,
        *,
        profiles: ProfileCache | None = None,
        encrypt: Encrypt | None = None,
        tokens: jwt_cache.ProviderTokens = jwt_cache.SHARED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for key in ("key_file", "key_id", "team_id", "topic"):
            if not getattr(app, key):
                raise TransportConfigError(f"apps.{app_id}.{key}: required for the apns transport")
        assert app.key_id and app.team_id and app.topic
        self._app = app
        self._key = load_signing_key(app_id, app.key_file)
        self._key_id, self._team_id, self._topic = app.key_id, app.team_id, app.topic
        self._profiles = profiles
        self._encrypt = encrypt
        self._tokens = tokens
        self._clock = clock
        default = SANDBOX_URL if app.environment == "sandbox" else PRODUCTION_URL
        self._base_url = (app.base_url or default).rstrip("/")
        url = urlsplit(self._base_url)
        if url.scheme != "https" or not url.hostname or url.path or url.query:
            raise TransportConfigError(f"apps.{app_id}.base_url: APNs is reached at an https:// origin, no path")
        self._client: H2Client | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = H2Client(self._base_url, ca_file=self._app.ca_file, timeout=self._app.timeout_seconds)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _headers(self, rendered: Rendered, token: str) -> dict[str, str]:
        background = rendered.style == "silent"
        expiration = int(self._clock()) + self._app.ttl_seconds if self._app.ttl_seconds else 0
        headers = {
            "authorization": f"bearer {token}",
            "apns-topic": self._topic,
            "apns-push-type": "background" if background else "alert",
            # Apple requires 5 for background pushes; 10 wakes the device at once.
            "apns-priority": "5" if background or self._app.urgency != "high" else "10",
            "apns-expiration": str(expiration),
        }
        if rendered.collapse_id:
            headers["apns-collapse-id"] = rendered.collapse_id
        return headers

    async def send(self, notification: Notification, device: Registration) -> SendResult:
        if self._client is None:
            await self.start()
        assert self._client is not None
        if not _is_hex_token(device.device_token):
            return SendResult.rejected("BadDeviceToken")
        rendered = render(
            notification, device, self._app, profiles=self._profiles, encrypt=self._encrypt, measure=_encoded_size
        )
        body = orjson.dumps(aps_payload(rendered))
        if len(body) > MAX_PAYLOAD_BYTES:
            return SendResult.rejected("PayloadTooLarge")
        token = self._tokens.token(self._team_id, self._key_id, self._key)
        try:
            response = await self._client.request(
                "POST", f"/3/device/{device.device_token}", headers=self._headers(rendered, token), body=body
            )
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
            self._tokens.expired(self._team_id, self._key_id, token)
            return SendResult.retry(reason, status, retry_after(response))
        return generic(response, reason or f"http-{status}")
