"""Web Push (RFC 8030) and UnifiedPush: one POST to the endpoint the device registered.

The body is encrypted with RFC 8291 `aes128gcm` to the subscription's `p256dh`/`auth` keys and authorised with
the server's VAPID key (RFC 8292). A keyless UnifiedPush endpoint gets the body in plaintext only when its app sets
`allow_plaintext`. Every endpoint passes the SSRF guard before any connection. 404/410 mean the subscription is
gone; 429 and 5xx are retried; other 4xx are rejected.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from typing import Any

import http_ece
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from pushstr.config import AppConfig
from pushstr.engine.render import MAX_PAYLOAD_BYTES, Encrypt, ProfileCache, Rendered, render
from pushstr.logutil import RateLimitedLog
from pushstr.registry.model import Platform, Registration
from pushstr.transports import metrics
from pushstr.transports.apns import TransportConfigError
from pushstr.transports.base import Notification, SendResult
from pushstr.transports.http import LazyClient, generic, network_failure
from pushstr.transports.ssrf import EndpointRefused, check_endpoint
from pushstr.transports.vapid import VapidSigner

#: aes128gcm adds a header (16 salt + 4 rs + 1 idlen + 65 key id), a 16-byte tag and a 1-byte delimiter.
ENCRYPTION_OVERHEAD = 86 + 16 + 1

_quiet = RateLimitedLog(logging.getLogger(__name__))


def webpush_body(rendered: Rendered) -> bytes:
    """The JSON a service worker or UnifiedPush connector receives."""
    body: dict[str, Any] = {"data": rendered.data}
    if rendered.style != "silent":
        body["title"] = rendered.title
        body["body"] = rendered.body
    if rendered.collapse_id:
        body["tag"] = rendered.collapse_id
    return orjson.dumps(body)


def _encrypted_size(rendered: Rendered) -> int:
    return len(webpush_body(rendered)) + ENCRYPTION_OVERHEAD


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class WebPushTransport:
    """See the module docstring."""

    name = "webpush"

    def __init__(
        self,
        app_id: str,
        app: AppConfig,
        vapid_key: ec.EllipticCurvePrivateKey,
        *,
        profiles: ProfileCache | None = None,
        encrypt: Encrypt | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not app.vapid_subject or not app.vapid_subject.startswith(("mailto:", "https://")):
            raise TransportConfigError(f"apps.{app_id}.vapid_subject: required, a mailto: or https: URL")
        self._app_id = app_id
        self._app = app
        self._signer = VapidSigner(vapid_key, app.vapid_subject, clock)
        self._profiles = profiles
        self._encrypt = encrypt
        # Endpoints are spread over many hosts: HTTP/1.1 and HTTP/2 both occur.
        self._http = LazyClient(ca_file=app.ca_file, timeout=app.timeout_seconds, connections=64)

    async def start(self) -> None:
        self._http.get()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, notification: Notification, device: Registration) -> SendResult:
        client = self._http.get()
        endpoint = device.device_token
        try:
            await check_endpoint(endpoint, self._app.allowed_hosts)
        except EndpointRefused as exc:
            metrics.SSRF_REFUSED.labels(self._app_id).inc()
            _quiet.warning(f"ssrf-{self._app_id}", "refused Web Push endpoint of device %s: %s", device.token_id, exc)
            return SendResult.rejected(f"endpoint refused: {exc}")
        keyed = bool(device.webpush_p256dh and device.webpush_auth)
        if not keyed and not (device.platform == Platform.UNIFIEDPUSH and self._app.allow_plaintext):
            return SendResult.rejected("endpoint has no encryption keys and plaintext is not allowed")
        rendered = render(
            notification,
            device,
            self._app,
            profiles=self._profiles,
            encrypt=self._encrypt,
            measure=_encrypted_size if keyed else lambda r: len(webpush_body(r)),
        )
        headers = {
            "ttl": str(self._app.ttl_seconds),
            "urgency": self._app.urgency,
            "authorization": self._signer.header(endpoint),
        }
        if rendered.collapse_id:
            headers["topic"] = rendered.collapse_id
        body = webpush_body(rendered)
        if keyed:
            try:
                body = self._seal(body, device)
            except (ValueError, binascii.Error, http_ece.ECEException) as exc:
                return SendResult.rejected(f"bad subscription keys: {type(exc).__name__}")
            headers["content-encoding"] = "aes128gcm"
            headers["content-type"] = "application/octet-stream"
        else:
            headers["content-type"] = "application/json"
        if len(body) > MAX_PAYLOAD_BYTES:
            return SendResult.rejected("payload too large")
        try:
            response = await client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return network_failure(exc)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.delivered(status)
        if status in (404, 410):
            return SendResult.dead(f"http-{status}", status)
        return generic(response, f"http-{status}")

    @staticmethod
    def _seal(body: bytes, device: Registration) -> bytes:
        """RFC 8291: ECDH with a fresh key against the subscription's key, mixed with its auth secret."""
        assert device.webpush_p256dh and device.webpush_auth
        receiver = _b64decode(device.webpush_p256dh)
        auth = _b64decode(device.webpush_auth)
        if len(receiver) != 65 or len(auth) != 16:
            raise ValueError("p256dh must be 65 bytes and auth 16")
        sender = ec.generate_private_key(ec.SECP256R1())
        sealed: bytes = http_ece.encrypt(body, private_key=sender, dh=receiver, auth_secret=auth, version="aes128gcm")
        return sealed
