"""The Mostro push API, wire-compatible with MostroP2P/mostro-push-server (`/api/*`) and the Mostro mobile app.

The Mostro mobile app registers, per trade, the trade's one-time pubkey and its device token (plaintext, or
sealed to the server key — see `mostro_token`). Mostro daemons talk to traders through NIP-59 gift wraps
addressed to those trade pubkeys, so a registration here is a kind-1059-only device under the trade pubkey, and
the relays are asked for gift wraps `#p` those pubkeys only (not every gift wrap, as Mostro's server does).

The app's tokens are Firebase Cloud Messaging registration tokens on Android and on iOS alike (it asks
`FirebaseMessaging.getToken()` on both, and Mostro's server sends both through FCM), so both platforms go to the
dialect's dedicated app, which must be an FCM app (or the log); a token that is an `http(s)://` URL is a
UnifiedPush endpoint and goes to the UnifiedPush platform's app instead, unless the dedicated app is itself a
Web Push app. Every token passes `registry.tokens.check_device_token` before it is kept.

Bodies and status codes follow Mostro's server: `{"success", "message", "platform"?}` with 200 for
register/unregister, 400 for bad input (also for oversized bodies), 403 for the trusted-instance filter, 202
`{"accepted": true}` from `/api/notify` whether or not the pubkey is registered (it must not tell), and one
identical 429 body for every rate limit. Error bodies also carry pushstr's `error` and `reason` fields. As in
Mostro's server only `/api/notify` is rate-limited: the app registers every trade key of a session in a burst.

Privacy mode (the default) keeps tokens in memory only, never on disk, with a TTL. Pushes take their app's mode:
for the dedicated app that is a generic alert ("Mostro" / "You have an update on your trade", see
`config.MOSTRO_APP_DEFAULTS`), which says nothing about the trade, so privacy mode does not need to silence it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field

from pushstr import __version__
from pushstr.config import AppConfig, ConfigError, MostroDialectConfig, WebPushAppConfig
from pushstr.delivery.render import payload_mode
from pushstr.dialects.base import Dialect, DialectContext
from pushstr.dialects.mostro_token import DERIVATIONS, TokenError, decrypt_token, server_pubkey_compressed
from pushstr.dialects.routes import HTTP_ERRORS, ApiError, answers, error_body, json_object, json_request, success
from pushstr.engine.pipeline import Submitter
from pushstr.logutil import RateLimitedLog
from pushstr.net.clientaddr import TrustedProxies, client_address
from pushstr.net.urlguard import Resolver, resolve_host
from pushstr.nostr.keys import Keys, is_hex
from pushstr.nostr.kinds import Kind
from pushstr.ratelimit import KeyedRateLimiter
from pushstr.registry.model import Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.tokens import MAX_TOKEN_BYTES, InvalidToken, check_device_token
from pushstr.transports.base import Notification

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "mostro"
MAX_REGISTER_BODY = 8 * 1024
MAX_SMALL_BODY = 1024
#: Mostro's platform names (the wire's, any case) and the byte inside an encrypted token decide the same thing.
PLATFORMS = {"android": Platform.ANDROID, "ios": Platform.IOS}
#: What an `http(s)://` token is: a UnifiedPush endpoint (Mostro's server reads it the same way).
ENDPOINT_PREFIXES = ("http://", "https://")

REQUESTS = Counter("pushstr_mostro_requests_total", "Mostro API requests by route and outcome", ["route", "result"])
TOKEN_DERIVATIONS = Counter(
    "pushstr_mostro_token_derivations_total", "Encrypted Mostro tokens opened, by key derivation", ["derivation"]
)
BAD_PUBKEY = "Invalid trade_pubkey format (expected 64 hex characters)"
RATE_LIMITED = "rate limited"
TOO_LARGE = "Request body too large"
PREFIX = "/api"
ROUTES = frozenset({"register", "unregister", "notify"})


class MostroError(BaseModel):
    """Mostro's error body, with pushstr's `error` / `reason` beside it."""

    success: bool = False
    message: str
    error: str
    reason: str


PUBKEY_PATTERN = "^[0-9a-fA-F]{64}$"


class MostroPlainToken(BaseModel):
    """`POST /api/register` with a plaintext token: an FCM token, or a UnifiedPush endpoint URL."""

    trade_pubkey: str = Field(pattern=PUBKEY_PATTERN)
    token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES, pattern="^[!-~]+$")
    platform: str = Field(pattern="^([aA][nN][dD][rR][oO][iI][dD]|[iI][oO][sS])$", description="android or ios")
    mostro_pubkey: Any = Field(
        None, description="the Mostro instance (64 hex), checked only when the server trusts some instances alone"
    )


class MostroSealedToken(BaseModel):
    """`POST /api/register` with a token sealed to the server key (it names its platform inside)."""

    trade_pubkey: str = Field(pattern=PUBKEY_PATTERN)
    encrypted_token: str = Field(
        pattern="^[A-Za-z0-9+/]{375}=$", description="base64 of the 281-byte sealed token (only this server opens it)"
    )
    mostro_pubkey: Any = Field(
        None, description="the Mostro instance (64 hex), checked only when the server trusts some instances alone"
    )


class MostroPubkeyBody(BaseModel):
    """`POST /api/unregister` and `/api/notify`."""

    trade_pubkey: str = Field(pattern=PUBKEY_PATTERN)


class MostroResult(BaseModel):
    success: bool
    message: str
    platform: str | None = Field(None, description="the platform the client named (register)")


class MostroAccepted(BaseModel):
    accepted: bool


class MostroTokenCounts(BaseModel):
    total: int
    android: int
    ios: int


class MostroStatus(BaseModel):
    status: str
    version: str
    server_pubkey: str
    tokens: MostroTokenCounts


class MostroInfo(BaseModel):
    server_pubkey: str
    version: str
    encrypted_token_size: int
    encryption_enabled: bool
    token_formats: list[str]
    key_derivations: list[str]


def _failure_body(status: int, message: str) -> dict[str, Any]:
    """Mostro's error shape plus pushstr's `error`/`reason`."""
    return {"success": False, "message": message, **error_body(status, message)}


def _fail(route: str, status: int, message: str) -> JSONResponse:
    """A refusal in Mostro's error shape, counted."""
    REQUESTS.labels(route, str(status)).inc()
    HTTP_ERRORS.labels(str(status)).inc()
    return JSONResponse(_failure_body(status, message), status)


def _limited(route: str, wait: float) -> JSONResponse:
    response = _fail(route, 429, RATE_LIMITED)
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


class _BadRequest(Exception):
    """A refusal: `message` goes to the client; `log_as` replaces it in the log when it repeats client input."""

    def __init__(self, status: int, message: str, log_as: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.log_as = log_as or message


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await request.body()
    if len(body) > limit:
        raise _BadRequest(400, TOO_LARGE)
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


def _wire_platform(platform: Platform) -> str:
    """How Mostro names a device's platform in `/api/status`: a UnifiedPush endpoint is an Android device."""
    return "ios" if platform is Platform.IOS else "android"


class MostroApi(Dialect):
    """The dialect: which trade pubkeys were registered here, the rate limiters, and the `/api` routes.

    `apps` are the configured apps (the payload mode of `/api/notify` pushes, the UnifiedPush app's settings);
    `unifiedpush_app` is the app UnifiedPush endpoints get; `resolve` stands in for DNS in the URL guard (tests).
    """

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        delivery: Submitter,
        keys: Keys,
        config: MostroDialectConfig,
        *,
        apps: Mapping[str, AppConfig],
        unifiedpush_app: str | None,
        trusted_proxies: TrustedProxies,
        resolve: Resolver = resolve_host,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._config = config
        self._apps = apps
        self._unifiedpush_app = unifiedpush_app
        self._resolve = resolve
        self._clock = clock
        self._keys = keys
        self.trusted_proxies = trusted_proxies
        self.server_pubkey = server_pubkey_compressed(keys)
        self._pubkeys: dict[str, None] = {}
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
                counts[_wire_platform(reg.platform)] += 1
        for pubkey in gone:
            del self._pubkeys[pubkey]
        return counts

    def _check_instance(self, data: dict[str, Any]) -> None:
        """The trusted-instance filter: with no `trusted_instances`, `mostro_pubkey` is not looked at (as in Mostro's
        server, which reads it only while its allow-list is on), so any value the app sends is fine."""
        trusted = self._config.trusted_instances
        if not trusted:
            return
        instance = data.get("mostro_pubkey")
        if instance is None:
            raise _BadRequest(403, "Mostro instance pubkey required")
        if not (isinstance(instance, str) and is_hex(instance.lower(), 64)):
            raise _BadRequest(400, "Invalid mostro_pubkey format (expected 64 hex characters)")
        if instance.lower() not in trusted:
            raise _BadRequest(403, "Mostro instance not trusted")

    def _sent_token(self, data: dict[str, Any]) -> tuple[Platform, str]:
        """The platform the client names and the token it sent, plaintext or sealed (opened here)."""
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
            TOKEN_DERIVATIONS.labels(token.derivation).inc()
            return token.platform, token.device_token
        token_value = data.get("token")
        if not isinstance(token_value, str) or not token_value:
            raise _BadRequest(400, "Token cannot be empty")
        if len(token_value.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
            raise _BadRequest(400, "Token exceeds maximum length")
        named = data.get("platform")
        platform = PLATFORMS.get(named.lower()) if isinstance(named, str) else None
        if platform is None:
            shown = named[:20] if isinstance(named, str) else ""
            raise _BadRequest(
                400, f"Invalid platform '{shown}' (expected 'android' or 'ios')", log_as="Invalid platform"
            )
        return platform, token_value

    async def _usable(self, platform: Platform, token: str) -> tuple[Platform, str]:
        """Where a token is pushed (its platform and app), once it is known to be usable there.

        An `http(s)://` token is a UnifiedPush endpoint, for the UnifiedPush app (the dedicated app when that is
        a Web Push app). Every other token is an FCM registration token, whichever platform the client names
        (see the module docstring), so it is checked as one.
        """
        if not token.lower().startswith(ENDPOINT_PREFIXES):
            await self._check(Platform.ANDROID, token, ())
            return platform, self._config.app
        dedicated = self._apps.get(self._config.app)
        app_id = self._config.app if isinstance(dedicated, WebPushAppConfig) else self._unifiedpush_app
        app = self._apps.get(app_id) if app_id is not None else None
        if app_id is None or app is None:
            raise _BadRequest(400, "No app configured for UnifiedPush endpoints")
        webpush = app if isinstance(app, WebPushAppConfig) else None
        if webpush is not None and not webpush.allow_plaintext:
            # Mostro's UnifiedPush endpoints come without p256dh/auth keys: only plaintext can reach them.
            raise _BadRequest(400, "UnifiedPush endpoints are not accepted here (the app does not allow plaintext)")
        await self._check(Platform.UNIFIEDPUSH, token, webpush.allowed_hosts if webpush is not None else ())
        return Platform.UNIFIEDPUSH, app_id

    async def _check(self, platform: Platform, token: str, allowed_hosts: Iterable[str]) -> None:
        try:
            await check_device_token(platform, token, allowed_hosts=allowed_hosts, resolve=self._resolve)
        except InvalidToken as exc:
            reason = str(exc).removeprefix("device_token: ")
            raise _BadRequest(400, f"Invalid token: {reason}", log_as="Invalid token") from None

    async def register(self, data: dict[str, Any]) -> Platform:
        """Keep the trade pubkey's device; the platform as the client named it (Mostro's answer says it)."""
        pubkey = _trade_pubkey(data)
        self._check_instance(data)
        named, token = self._sent_token(data)
        platform, app_id = await self._usable(named, token)
        now = self._clock()
        privacy = self._config.privacy_mode
        registration = Registration(
            pubkey=pubkey,
            device_token=token,
            platform=platform,
            app=app_id,
            dialect=DIALECT,
            kinds=frozenset({Kind.GIFT_WRAP}),
            created_at=now,
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
        return named

    async def unregister(self, data: dict[str, Any]) -> bool:
        pubkey = _trade_pubkey(data)
        removed = False
        for reg in self.devices(pubkey):
            removed = await self._registry.remove(pubkey, reg.device_token) or removed
        return removed

    def notify(self, pubkey: str) -> int:
        """A push to the trade's device, if there is one; how many were handed to delivery.

        It renders like a gift wrap's push (the device's mode, by default the generic alert) rather than as
        Mostro's silent wake-up: pushes to one device are batched into one, and a wake-up merged into a trade
        alert must not turn it silent. Anyone can trigger the same alert by publishing a gift wrap to the trade
        pubkey, so this route adds no new way to show one; its limits and the app's cooldown bound how often.
        """
        sent = 0
        for device in self.devices(pubkey):
            notification = Notification(
                event_id=secrets.token_hex(32),  # no event behind it: a random id keeps pushes apart
                kind=Kind.GIFT_WRAP,
                recipient=pubkey,
                sender=None,
                created_at=int(self._clock()),
                app=device.app,
                mode=payload_mode(device, self._apps.get(device.app)),
                extra={"source": "notify"},
            )
            sent += self._delivery.submit(notification, device)
        return sent

    def router(self) -> APIRouter:
        return _build_router(self)

    def body_too_large(self, path: str, limit: int) -> tuple[int, dict[str, Any]] | None:
        """Mostro's API answers an oversized body with its 400, whatever the size."""
        if not path.startswith(PREFIX + "/"):
            return None
        route = path.removeprefix(PREFIX + "/")
        REQUESTS.labels(route if route in ROUTES else "other", "400").inc()
        return 400, _failure_body(400, TOO_LARGE)


def _build_router(api: MostroApi) -> APIRouter:
    """Routes under `/api`: health, info, status, register, unregister, notify."""
    router = APIRouter(prefix=PREFIX, tags=["Mostro push API"])

    @router.get("/health", summary="Liveness (Mostro)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/info", summary="Server key and the token formats accepted (Mostro)", responses=success(MostroInfo))
    async def info() -> dict[str, Any]:
        return {
            "server_pubkey": api.server_pubkey,
            "version": __version__,
            "encrypted_token_size": 281,
            "encryption_enabled": True,
            "token_formats": ["plaintext", "encrypted"],
            "key_derivations": list(DERIVATIONS),
        }

    @router.get("/status", summary="Token counts (Mostro)", responses=success(MostroStatus))
    async def status() -> dict[str, Any]:
        return {"status": "running", "version": __version__, "server_pubkey": api.server_pubkey, "tokens": api.counts()}

    @router.post(
        "/register",
        summary="Register a device token for a trade pubkey (Mostro)",
        openapi_extra=json_request(MostroPlainToken, MostroSealedToken),
        response_model=None,
        responses={**success(MostroResult), **answers(400, 403, 409, model=MostroError)},
    )
    async def register(request: Request) -> JSONResponse:
        try:
            platform = await api.register(await _json_body(request, MAX_REGISTER_BODY))
        except _BadRequest as exc:
            _rate_log.info(f"mostro-register-{exc.status}", "mostro registration refused: %s", exc.log_as)
            return _fail("register", exc.status, exc.message)
        REQUESTS.labels("register", "200").inc()
        return JSONResponse({"success": True, "message": "Token registered successfully", "platform": str(platform)})

    @router.post(
        "/unregister",
        summary="Remove a trade pubkey's token (Mostro)",
        openapi_extra=json_request(MostroPubkeyBody),
        response_model=None,
        responses={**success(MostroResult), **answers(400, model=MostroError)},
    )
    async def unregister(request: Request) -> JSONResponse:
        try:
            removed = await api.unregister(await _json_body(request, MAX_SMALL_BODY))
        except _BadRequest as exc:
            return _fail("unregister", exc.status, exc.message)
        REQUESTS.labels("unregister", "200").inc()
        message = (
            "Token unregistered successfully" if removed else "Token not found (may have already been unregistered)"
        )
        return JSONResponse({"success": True, "message": message})

    @router.post(
        "/notify",
        status_code=202,
        summary="Wake a trade pubkey's device (Mostro); 202 whether or not it has one",
        openapi_extra=json_request(MostroPubkeyBody),
        response_model=None,
        responses={**success(MostroAccepted, 202), **answers(400, 429, model=MostroError)},
    )
    async def notify(request: Request) -> JSONResponse:
        try:
            pubkey = _trade_pubkey(await _json_body(request, MAX_SMALL_BODY))
        except _BadRequest as exc:
            return _fail("notify", exc.status, exc.message)
        # Both limits are charged on every request, so neither can be probed through the other.
        client = client_address(request, api.trusted_proxies)
        wait = max(api.notify_ip_limit.wait(client), api.notify_pubkey_limit.wait(pubkey))
        if wait:
            return _limited("notify", wait)
        api.notify(pubkey)
        REQUESTS.labels("notify", "202").inc()
        return JSONResponse({"accepted": True}, 202)

    return router


def build(context: DialectContext) -> MostroApi | None:
    """The dialect, or None when it is off; a ConfigError when its app cannot reach the app's tokens."""
    settings = context.settings
    config = settings.dialects.mostro
    if not config.enabled:
        return None
    if settings.apps[config.app].transport == "apns":
        raise ConfigError(
            f"invalid configuration: apps.{config.app}.transport: the Mostro app's device tokens are FCM "
            "registration tokens on iOS too, which APNs cannot deliver; configure an fcm app"
        )
    return MostroApi(
        context.registry,
        context.delivery,
        context.keys,
        config,
        apps=settings.apps,
        unifiedpush_app=settings.app_for(Platform.UNIFIEDPUSH, None),
        trusted_proxies=TrustedProxies.parse(settings.server.trusted_proxies),
    )
