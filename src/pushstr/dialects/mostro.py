"""The Mostro push API, wire-compatible with MostroP2P/mostro-push-server (`/api/*`).

The Mostro mobile app registers, per trade, the trade's one-time pubkey and its device token (plaintext, or
sealed to the server key — see `mostro_token`). Mostro daemons talk to traders through NIP-59 gift wraps
addressed to those trade pubkeys, so a registration here is a kind-1059-only device under the trade pubkey, and
the relays are asked for gift wraps `#p` those pubkeys only (not every gift wrap, as Mostro's server does).

Bodies and status codes follow Mostro's server: `{"success", "message", "platform"?}` with 200 for
register/unregister, 400 for bad input (also for oversized bodies), 403 for the trusted-instance filter, 202
`{"accepted": true}` from `/api/notify` whether or not the pubkey is registered (it must not tell), and one
identical 429 body for every rate limit. Error bodies also carry pushstr's `error` and `reason` fields.

Privacy mode (the default) keeps tokens in memory only, with a TTL, and makes every push silent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from pushstr import __version__
from pushstr.config import MostroDialectConfig
from pushstr.dialects.base import Dialect, DialectContext
from pushstr.dialects.mostro_token import TokenError, decrypt_token, server_pubkey_compressed
from pushstr.dialects.routes import HTTP_ERRORS, ApiError, error_body, json_object
from pushstr.engine.pipeline import Submitter
from pushstr.logutil import RateLimitedLog
from pushstr.nostr.keys import Keys, is_hex
from pushstr.nostr.kinds import Kind
from pushstr.ratelimit import KeyedRateLimiter
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.transports.base import Notification

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "mostro"
MAX_TOKEN_BYTES = 4096
MAX_REGISTER_BODY = 8 * 1024
MAX_SMALL_BODY = 1024

REQUESTS = Counter("pushstr_mostro_requests_total", "Mostro API requests by route and outcome", ["route", "result"])
BAD_PUBKEY = "Invalid trade_pubkey format (expected 64 hex characters)"
RATE_LIMITED = {"success": False, "message": "rate limited"}


def _fail(route: str, status: int, message: str, **fields: Any) -> JSONResponse:
    """Mostro's error shape plus pushstr's `error`/`reason`, counted."""
    REQUESTS.labels(route, str(status)).inc()
    HTTP_ERRORS.labels(str(status)).inc()
    return JSONResponse({"success": False, "message": message, **error_body(status, message), **fields}, status)


def _limited(route: str, wait: float) -> JSONResponse:
    REQUESTS.labels(route, "429").inc()
    HTTP_ERRORS.labels("429").inc()
    return JSONResponse(RATE_LIMITED, 429, headers={"Retry-After": str(max(1, math.ceil(wait)))})


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await request.body()
    if len(body) > limit:
        raise _BadRequest(400, "Request body too large")
    try:
        return json_object(body)
    except ApiError:
        raise _BadRequest(400, "Invalid JSON body") from None  # Mostro's text for both


def _trade_pubkey(data: dict[str, Any]) -> str:
    value = data.get("trade_pubkey")
    pubkey = value.lower() if isinstance(value, str) else None
    if pubkey is None or not is_hex(pubkey, 64):
        raise _BadRequest(400, BAD_PUBKEY)
    return pubkey


def _client_ip(request: Request) -> str:
    """The peer address; proxy headers are not trusted (run pushstr behind a proxy that limits on its own)."""
    return request.client.host if request.client is not None else "unknown"


class MostroApi(Dialect):
    """The dialect: which trade pubkeys were registered here, the rate limiters, and the `/api` routes."""

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        delivery: Submitter,
        keys: Keys,
        config: MostroDialectConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._config = config
        self._clock = clock
        self._keys = keys
        self.server_pubkey = server_pubkey_compressed(keys)
        self._pubkeys: dict[str, None] = {}
        config = self._config
        self.register_limit = KeyedRateLimiter(config.register_per_ip_per_minute, config.register_per_ip_burst)
        self.notify_ip_limit = KeyedRateLimiter(config.notify_per_ip_per_minute, config.notify_per_ip_burst)
        self.notify_pubkey_limit = KeyedRateLimiter(config.notify_per_pubkey_per_minute, config.notify_per_pubkey_burst)

    def devices(self, pubkey: str) -> list[Registration]:
        return [reg for reg in self._registry.devices_for(pubkey) if reg.dialect == DIALECT]

    def counts(self) -> dict[str, int]:
        """Registered tokens by platform (`total`, `android`, `ios`); forgets pubkeys whose tokens are gone."""
        counts = {"total": 0, "android": 0, "ios": 0}
        gone = []
        for pubkey in self._pubkeys:
            devices = self.devices(pubkey)
            if not devices:
                gone.append(pubkey)
            for reg in devices:
                counts["total"] += 1
                counts[str(reg.platform)] = counts.get(str(reg.platform), 0) + 1
        for pubkey in gone:
            del self._pubkeys[pubkey]
        return counts

    def _check_instance(self, data: dict[str, Any]) -> None:
        instance = data.get("mostro_pubkey")
        if instance is not None and not (isinstance(instance, str) and is_hex(instance.lower(), 64)):
            raise _BadRequest(400, "Invalid mostro_pubkey format (expected 64 hex characters)")
        trusted = self._config.trusted_instances
        if trusted and instance is None:
            raise _BadRequest(403, "Mostro instance pubkey required")
        if trusted and isinstance(instance, str) and instance.lower() not in trusted:
            raise _BadRequest(403, "Mostro instance not trusted")

    def _token(self, data: dict[str, Any]) -> tuple[Platform, str]:
        sealed = data.get("encrypted_token")
        if sealed is not None:
            if data.get("token") is not None:
                raise _BadRequest(400, "Send either token or encrypted_token, not both")
            if not isinstance(sealed, str) or len(sealed) > 1024:
                raise _BadRequest(400, "Invalid encrypted token encoding")
            try:
                blob = base64.b64decode(sealed, validate=True)
            except (binascii.Error, ValueError):
                raise _BadRequest(400, "Invalid encrypted token encoding (expected base64)") from None
            try:
                token = decrypt_token(self._keys, blob)
            except TokenError as exc:
                raise _BadRequest(400, str(exc)) from None
            return token.platform, token.device_token
        token_value = data.get("token")
        if not isinstance(token_value, str) or not token_value:
            raise _BadRequest(400, "Token cannot be empty")
        if len(token_value.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
            raise _BadRequest(400, "Token exceeds maximum length")
        platform = data.get("platform")
        if platform not in ("android", "ios"):
            shown = platform[:20] if isinstance(platform, str) else ""
            raise _BadRequest(400, f"Invalid platform '{shown}' (expected 'android' or 'ios')")
        return Platform(platform), token_value

    async def register(self, data: dict[str, Any]) -> Platform:
        pubkey = _trade_pubkey(data)
        self._check_instance(data)
        platform, token = self._token(data)
        now = self._clock()
        privacy = self._config.privacy_mode
        registration = Registration(
            pubkey=pubkey,
            device_token=token,
            platform=platform,
            app=self._config.app,
            dialect=DIALECT,
            kinds=frozenset({Kind.GIFT_WRAP}),
            created_at=now,
            mode=Mode.SILENT if privacy else None,
            persistent=not privacy,
            expires_at=now + self._config.token_ttl_seconds if privacy else None,
        )
        # Mostro keeps one token per trade pubkey: a new registration replaces the old one.
        for old in self.devices(pubkey):
            if old.device_token != token:
                await self._registry.remove(pubkey, old.device_token)
        try:
            await self._registry.add(registration)
        except TooManyDevices as exc:
            raise _BadRequest(409, str(exc)) from None
        self._pubkeys[pubkey] = None
        return platform

    async def unregister(self, data: dict[str, Any]) -> bool:
        pubkey = _trade_pubkey(data)
        removed = False
        for reg in self.devices(pubkey):
            removed = await self._registry.remove(pubkey, reg.device_token) or removed
        return removed

    def notify(self, pubkey: str) -> int:
        """A silent push to the trade's device, if there is one; how many were handed to delivery."""
        sent = 0
        for device in self.devices(pubkey):
            notification = Notification(
                event_id=secrets.token_hex(32),  # no event behind it: a random id keeps pushes apart
                kind=Kind.GIFT_WRAP,
                recipient=pubkey,
                sender=None,
                created_at=int(self._clock()),
                app=device.app,
                mode=Mode.SILENT,
                extra={"source": "notify"},
            )
            sent += self._delivery.submit(notification, device)
        return sent

    def router(self) -> APIRouter:
        return _build_router(self)


def _build_router(api: MostroApi) -> APIRouter:
    """Routes under `/api`: health, info, status, register, unregister, notify."""
    router = APIRouter(prefix="/api", tags=["Mostro push API"])

    @router.get("/health", summary="Liveness (Mostro)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/info", summary="Server key for encrypted tokens (Mostro)")
    async def info() -> dict[str, Any]:
        return {
            "server_pubkey": api.server_pubkey,
            "version": __version__,
            "encrypted_token_size": 281,
            "encryption_enabled": True,
        }

    @router.get("/status", summary="Token counts (Mostro)")
    async def status() -> dict[str, Any]:
        return {"status": "running", "version": __version__, "server_pubkey": api.server_pubkey, "tokens": api.counts()}

    @router.post("/register", summary="Register a device token for a trade pubkey (Mostro)")
    async def register(request: Request) -> JSONResponse:
        wait = api.register_limit.wait(_client_ip(request))
        if wait:
            return _limited("register", wait)
        try:
            platform = await api.register(await _json_body(request, MAX_REGISTER_BODY))
        except _BadRequest as exc:
            _rate_log.info(f"mostro-register-{exc.status}", "mostro registration refused: %s", exc.message)
            return _fail("register", exc.status, exc.message)
        REQUESTS.labels("register", "200").inc()
        return JSONResponse({"success": True, "message": "Token registered successfully", "platform": str(platform)})

    @router.post("/unregister", summary="Remove a trade pubkey's token (Mostro)")
    async def unregister(request: Request) -> JSONResponse:
        wait = api.register_limit.wait(_client_ip(request))
        if wait:
            return _limited("unregister", wait)
        try:
            removed = await api.unregister(await _json_body(request, MAX_SMALL_BODY))
        except _BadRequest as exc:
            return _fail("unregister", exc.status, exc.message)
        REQUESTS.labels("unregister", "200").inc()
        message = (
            "Token unregistered successfully" if removed else "Token not found (may have already been unregistered)"
        )
        return JSONResponse({"success": True, "message": message})

    @router.post("/notify", status_code=202, summary="Wake a trade pubkey's device (Mostro); always 202")
    async def notify(request: Request) -> JSONResponse:
        try:
            pubkey = _trade_pubkey(await _json_body(request, MAX_SMALL_BODY))
        except _BadRequest as exc:
            return _fail("notify", exc.status, exc.message)
        # Both limits are charged on every request, so neither can be probed through the other.
        wait = max(api.notify_ip_limit.wait(_client_ip(request)), api.notify_pubkey_limit.wait(pubkey))
        if wait:
            return _limited("notify", wait)
        api.notify(pubkey)
        REQUESTS.labels("notify", "202").inc()
        return JSONResponse({"accepted": True}, 202)

    return router


def build(context: DialectContext) -> MostroApi | None:
    config = context.settings.dialects.mostro
    if not config.enabled:
        return None
    return MostroApi(context.registry, context.delivery, context.keys, config)
