"""Web Push (RFC 8030) and UnifiedPush: one POST to the endpoint the device registered.

The body is encrypted with RFC 8291 `aes128gcm` to the subscription's `p256dh`/`auth` keys and authorised with
the server's VAPID key (RFC 8292). A keyless UnifiedPush endpoint gets the body in plaintext only when its app sets
`allow_plaintext`, or when the push is `wrapped`: its body is then the kind 1059 wrap itself, already NIP-44
ciphertext to the user, which is what Amethyst's UnifiedPush receiver parses. Every endpoint passes the SSRF guard
before any connection. 404/410 mean the subscription is gone; 429 and 5xx are retried; other 4xx are rejected.
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

from pushstr.config import WebPushAppConfig
from pushstr.logutil import RateLimitedLog
from pushstr.net.httpclient import LazyClient, ResponseTooLarge, post_bounded
from pushstr.net.urlguard import EndpointRefused, check_endpoint
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.transports import metrics
from pushstr.transports.base import (
    ENCRYPTED_EVENT_KEY,
    MAX_PAYLOAD_BYTES,
    PAYLOAD_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    Encoded,
    Notification,
    Rendered,
    SendResult,
)
from pushstr.transports.replies import generic, network_failure
from pushstr.transports.vapid import VapidSigner

#: aes128gcm adds a header (16 salt + 4 rs + 1 idlen + 65 key id), a 16-byte tag and a 1-byte delimiter.
ENCRYPTION_OVERHEAD = 86 + 16 + 1

_quiet = RateLimitedLog(logging.getLogger(__name__))


def webpush_body(rendered: Rendered) -> bytes:
    """The JSON a service worker or UnifiedPush connector receives: `{"notification": {"title", "body", "tag"},
    "data": {…}}`, the shape 0xchat's Android app reads from UnifiedPush (and Declarative Web Push's
    `notification` member); a silent push carries `data` only."""
    body: dict[str, Any] = {}
    if rendered.style != "silent":
        notification: dict[str, Any] = {"title": rendered.title or "Nostr", "body": rendered.body or ""}
        if rendered.collapse_id:
            notification["tag"] = rendered.collapse_id
        body["notification"] = notification
    body["data"] = rendered.data
    return orjson.dumps(body)


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class WebPushTransport:
    """See the module docstring."""

    name = "webpush"

    def __init__(
        self,
        app_id: str,
        app: WebPushAppConfig,
        vapid_key: ec.EllipticCurvePrivateKey,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app_id = app_id
        self._app = app
        self._signer = VapidSigner(vapid_key, app.vapid_subject, clock)
        # HTTP/1.1: endpoints are chosen by whoever registers, and over HTTP/2 httpx never gives back the flow-control
        # window of a reply it stopped reading (one over the size cap), so a hostile endpoint could stall a shared
        # connection. Over HTTP/1.1 such a connection is simply closed.
        self._http = LazyClient(ca_file=app.ca_file, timeout=app.timeout_seconds, connections=64, http2=False)

    async def start(self) -> None:
        self._http.get()

    async def close(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _keyed(device: Registration) -> bool:
        return bool(device.webpush_p256dh and device.webpush_auth)

    def _wrapped(self, rendered: Rendered, device: Registration) -> bool:
        """A `wrapped` push: its body is the wrap's JSON alone (the registration's mode, else the app's)."""
        mode = device.mode if device.mode is not None else self._app.mode
        return mode is Mode.WRAPPED and ENCRYPTED_EVENT_KEY in rendered.data

    def _body(self, rendered: Rendered, device: Registration) -> bytes:
        if self._wrapped(rendered, device):
            return str(rendered.data[ENCRYPTED_EVENT_KEY]).encode()
        return webpush_body(rendered)

    def measure(self, rendered: Rendered, device: Registration) -> int:
        plain = len(self._body(rendered, device))
        return plain + ENCRYPTION_OVERHEAD if self._keyed(device) else plain

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        """The body sealed once (RFC 8291, a fresh sender key per push) and the headers that go with it."""
        keyed = self._keyed(device)
        wrapped = self._wrapped(rendered, device)
        if not keyed and not (device.platform == Platform.UNIFIEDPUSH and (self._app.allow_plaintext or wrapped)):
            return SendResult.rejected("endpoint has no encryption keys and plaintext is not allowed")
        headers = {"ttl": str(self._app.ttl_seconds), "urgency": self._app.urgency}
        if rendered.collapse_id:
            headers["topic"] = rendered.collapse_id
        body = self._body(rendered, device)
        if keyed:
            try:
                body = self._seal(body, device)
            except (ValueError, binascii.Error, http_ece.ECEException) as exc:
                return SendResult.rejected(f"bad subscription keys: {type(exc).__name__}")
            headers["content-encoding"] = "aes128gcm"
            headers["content-type"] = "application/octet-stream"
        else:
            # A wrap goes as text, as Amethyst's push server posts it to ntfy and other UnifiedPush distributors.
            headers["content-type"] = "text/plain;charset=UTF-8" if wrapped else "application/json"
        if len(body) > MAX_PAYLOAD_BYTES:
            return SendResult.rejected(PAYLOAD_TOO_LARGE)
        return Encoded(body, headers)

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        """One POST, after the endpoint passed the URL guard (again: its DNS answer may have changed)."""
        client = self._http.get()
        endpoint = device.device_token
        try:
            await check_endpoint(endpoint, self._app.allowed_hosts)
        except EndpointRefused as exc:
            metrics.SSRF_REFUSED.labels(self._app_id).inc()
            _quiet.warning(f"ssrf-{self._app_id}", "refused Web Push endpoint of device %s: %s", device.token_id, exc)
            return SendResult.rejected(f"endpoint refused: {exc}")
        headers = {**encoded.headers, "authorization": self._signer.header(endpoint)}
        try:
            response = await post_bounded(client, endpoint, content=encoded.body, headers=headers)
        except ResponseTooLarge:
            return SendResult.retry(RESPONSE_TOO_LARGE)
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
