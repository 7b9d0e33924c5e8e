"""HTTP registration authenticated with NIP-98 (the Sigil-style `POST /register` dialect).

The signer of the `Authorization: Nostr …` event must be the pubkey being registered, so nobody can route
another user's notifications to their own device. Each authorization event is single-use (replay cache), and
every refusal says which NIP-98 rule failed. Platform names and device tokens are read by `registry.tokens`, so
a token that cannot work is a 400 at registration instead of a push that fails unseen.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from pushstr.config import WebPushAppConfig
from pushstr.dialects.base import Dialect, DialectContext
from pushstr.dialects.preferences_body import (
    PreferencesBody,
    PreferencesView,
    PrivateMutesError,
    applied,
    preferences_view,
)
from pushstr.dialects.routes import ApiError, answers, json_request, parse_body, success
from pushstr.net.urlguard import Resolver, resolve_host
from pushstr.nostr import nip19, nip98
from pushstr.nostr.errors import AuthError, InvalidKey, NostrError
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys, public_key_bytes
from pushstr.nostr.nip98 import ReplayCache
from pushstr.ratelimit import KeyedRateLimiter
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.preferences import PreferenceBook
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.storage import DeliveryStatus
from pushstr.registry.tokens import MAX_TOKEN_BYTES, InvalidToken, check_device_token, parse_platform
from pushstr.transports.base import Notification, Outcome, SendResult

DIALECT = "http-nip98"
MAX_KINDS = 64

AUTH_FAILURES = Counter("pushstr_nip98_failures_total", "Refused NIP-98 authorizations")
REGISTRATIONS = Counter("pushstr_http_registrations_total", "HTTP registration changes", ["action"])
TEST_PUSHES = Counter("pushstr_test_pushes_total", "Test pushes sent on request, by the provider's answer", ["outcome"])
for _outcome in Outcome:
    TEST_PUSHES.labels(str(_outcome))
TEST_PUSHES_PER_MINUTE = 2.0
TEST_PUSH_BURST = 3
TEST_KIND = 0
"""The kind a test push says it is: none that is ever notified, so its alert reads as plain "New activity"."""

KindNumber = Annotated[int, Field(ge=0, le=65535)]


class RegisterBody(BaseModel):
    """`POST /register`. Unknown fields are ignored so that newer clients keep working.

    `platform` stays text here: `parse_platform` reads it (any case, provider aliases) and says what it accepts.
    """

    model_config = ConfigDict(extra="ignore")

    npub: str = Field(min_length=1, max_length=200)
    device_token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES)
    platform: str = Field(min_length=1, max_length=40)
    app: str | None = Field(None, max_length=100)
    kinds: list[KindNumber] | None = Field(None, max_length=MAX_KINDS)
    mode: Mode | None = None
    p256dh: str | None = Field(None, max_length=200)
    auth: str | None = Field(None, max_length=100)
    device_pubkey: str | None = Field(None, max_length=100)


class UnregisterBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    device_token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES)


class LastPush(BaseModel):
    at: float = Field(description="Unix time the last push to the device ended")
    outcome: str = Field(description="delivered, rejected, expired, dead, …")


class RegistrationView(BaseModel):
    """A registration as `registration_view` shows it."""

    pubkey: str
    npub: str
    device_token: str
    platform: Platform
    app: str
    kinds: list[int]
    mode: Mode | None
    created_at: int
    last_push: LastPush | None = Field(None, description="only in `GET /registrations`")


class Registered(BaseModel):
    ok: bool
    registration: RegistrationView


class Removed(BaseModel):
    ok: bool
    removed: int


class Registrations(BaseModel):
    pubkey: str
    registrations: list[RegistrationView]


class DevicePreferences(BaseModel):
    device_token: str
    dialect: str
    preferences: PreferencesView


class PreferencesList(BaseModel):
    pubkey: str
    devices: list[DevicePreferences]


class TestPushResult(BaseModel):
    device_token: str
    platform: Platform
    app: str
    outcome: str = Field(description="the provider's answer: delivered, retry, dead or rejected")
    reason: str = Field(description="the provider's error code, or why pushstr did not send")
    status: int | None = Field(description="the provider's HTTP status, when it answered")


class TestPushes(BaseModel):
    pubkey: str
    results: list[TestPushResult]


def registration_view(reg: Registration, status: DeliveryStatus | None = None) -> dict[str, Any]:
    """A registration as the API shows it; with `status`, also when its last push ended and how."""
    last = {"at": round(status.at, 3), "outcome": status.outcome} if status is not None else None
    return {
        "pubkey": reg.pubkey,
        "npub": nip19.npub_encode(reg.pubkey),
        "device_token": reg.device_token,
        "platform": str(reg.platform),
        "app": reg.app,
        "kinds": sorted(reg.kinds),
        "mode": reg.mode,
        "created_at": int(reg.created_at),
        "last_push": last,
    }


def _platform(body: RegisterBody) -> Platform:
    try:
        return parse_platform(body.platform)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _validate_transport_fields(body: RegisterBody, platform: Platform) -> None:
    """The fields beside the token that a platform or mode needs (cheap checks, before any DNS lookup)."""
    if platform is Platform.WEBPUSH and not (body.p256dh and body.auth):
        raise ApiError(400, "webpush registrations need p256dh and auth keys")
    if (body.p256dh is None) != (body.auth is None):
        raise ApiError(400, "p256dh and auth go together")
    if body.device_pubkey is not None:
        try:
            public_key_bytes(body.device_pubkey)  # pushes are encrypted to it: it must be a real key
        except InvalidKey as exc:
            raise ApiError(400, f"device_pubkey: {exc.reason}") from None
    if body.mode is Mode.ENCRYPTED and body.device_pubkey is None:
        raise ApiError(400, "mode 'encrypted' needs device_pubkey")


class HttpNip98(Dialect):
    """`POST /register`, `/unregister` and `GET /registrations`, each authorized by a NIP-98 event."""

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        app_for: Callable[[str, str | None], str | None],
        default_kinds: frozenset[int],
        *,
        window_seconds: int,
        public_url: str | None,
        endpoint_hosts: Mapping[str, Collection[str]],
        use_token: Callable[[str, int], Awaitable[bool]],
        clock: Callable[[], float] = time.time,
        resolve: Resolver = resolve_host,
        preferences: PreferenceBook | None = None,
        keys: Keys | None = None,
        send_now: Callable[[Notification, Registration], Awaitable[SendResult]] | None = None,
    ) -> None:
        """`app_for(platform, app)` is the configured app a registration belongs to, None when `app` is unknown;
        `public_url` is the base URL clients sign when pushstr runs behind a proxy; `endpoint_hosts` maps an app
        to the endpoint hosts exempt from the URL guard's address check (a Web Push app's `allowed_hosts`);
        `use_token(id, expires_at)` records an authorization as used in the store (False: it was used before,
        perhaps before a restart or through another instance); `resolve` is the URL guard's DNS lookup (tests
        answer it without DNS); with `preferences` (and the server's `keys`, which private mutes are encrypted
        to), `GET`/`PUT /preferences` are served too; with `send_now` (one push now, with the provider's answer),
        `POST /test-push`."""
        self._registry = registry
        self._preferences = preferences
        self._keys = keys
        self._send_now = send_now
        self._test_pushes = KeyedRateLimiter(TEST_PUSHES_PER_MINUTE, TEST_PUSH_BURST)
        self._app_for = app_for
        self._endpoint_hosts = endpoint_hosts
        self._resolve = resolve
        self._default_kinds = default_kinds
        self._window = window_seconds
        self._public_url = public_url
        self._clock = clock
        self._replays = ReplayCache(window=window_seconds)
        self._use_token = use_token

    def router(self) -> APIRouter:
        """Routes `/register`, `/unregister` and `/registrations`."""
        router = APIRouter(tags=["registration (HTTP + NIP-98)"])
        registry = self._registry
        clock = self._clock

        def request_url(request: Request) -> str:
            public = self._public_url
            if public:
                query = f"?{request.url.query}" if request.url.query else ""
                return public.rstrip("/") + request.url.path + query
            return str(request.url)

        async def authenticate(request: Request, body: bytes) -> Event:
            """The verified authorization, used up: the memory cache refuses a replay at once, the store after a
            restart (and across instances), before the request can change anything."""
            try:
                auth = nip98.verify_authorization(
                    request.headers.get("authorization"),
                    request.method,
                    request_url(request),
                    body or None,
                    now=clock(),
                    window=self._window,
                    seen=self._replays,
                )
            except AuthError as exc:
                AUTH_FAILURES.inc()
                raise ApiError(401, exc.reason) from None
            if not await self._use_token(auth.id, auth.created_at + self._window):
                AUTH_FAILURES.inc()
                raise ApiError(401, nip98.REPLAYED)
            return auth

        @router.post(
            "/register",
            status_code=201,
            summary="Register a device for a pubkey (NIP-98 signed by it)",
            openapi_extra=json_request(RegisterBody),
            response_model=None,
            responses={**success(Registered, 201), **answers(400, 401, 409, 413)},
        )
        async def register(request: Request) -> JSONResponse:
            body = await request.body()
            auth = await authenticate(request, body)
            data: RegisterBody = parse_body(body, RegisterBody)
            try:
                pubkey = nip19.parse_pubkey(data.npub)
            except NostrError as exc:
                raise ApiError(400, f"npub: {exc.reason}") from None
            if pubkey != auth.pubkey:
                AUTH_FAILURES.inc()
                raise ApiError(401, "signer is not the npub being registered: sign with that npub's key")
            platform = _platform(data)
            _validate_transport_fields(data, platform)
            app = self._app_for(platform, data.app)
            if app is None:
                raise ApiError(400, f"app: unknown app {data.app!r}")
            await self._check_token(platform, data.device_token, app)
            registration = Registration(
                pubkey=pubkey,
                device_token=data.device_token,
                platform=platform,
                app=app,
                dialect=DIALECT,
                kinds=frozenset(data.kinds) if data.kinds else self._default_kinds,
                created_at=clock(),
                mode=data.mode,
                webpush_p256dh=data.p256dh,
                webpush_auth=data.auth,
                device_pubkey=data.device_pubkey,
            )
            try:
                await registry.add(registration)
            except TooManyDevices as exc:
                raise ApiError(409, str(exc)) from None
            REGISTRATIONS.labels("register").inc()
            return JSONResponse({"ok": True, "registration": registration_view(registration)}, status_code=201)

        async def unregister(request: Request) -> JSONResponse:
            body = await request.body()
            auth = await authenticate(request, body)
            data: UnregisterBody = parse_body(body, UnregisterBody)
            removed = await registry.remove(auth.pubkey, data.device_token)
            if not removed:
                raise ApiError(404, "no such device registered for this pubkey")
            REGISTRATIONS.labels("unregister").inc()
            return JSONResponse({"ok": True, "removed": 1})

        for method in ("DELETE", "POST"):
            router.add_api_route(
                "/unregister",
                unregister,
                methods=[method],
                summary="Remove a device (NIP-98)",
                operation_id=f"unregister_{method}",
                openapi_extra=json_request(UnregisterBody),
                response_model=None,
                responses={**success(Removed), **answers(400, 401, 404, 413)},
            )

        @router.get(
            "/registrations",
            summary="The caller's registered devices (NIP-98)",
            response_model=None,
            responses={**success(Registrations), **answers(401)},
        )
        async def registrations(request: Request) -> JSONResponse:
            auth = await authenticate(request, b"")
            devices = registry.registrations_of(auth.pubkey)
            statuses = await registry.delivery_statuses(auth.pubkey)
            views = [registration_view(reg, statuses.get(reg.device_token)) for reg in devices]
            return JSONResponse({"pubkey": auth.pubkey, "registrations": views})

        if self._preferences is not None and self._keys is not None:
            self._preference_routes(router, authenticate, self._preferences, self._keys)
        if self._send_now is not None:
            self._test_push_route(router, authenticate, self._send_now)
        return router

    def _test_push_route(
        self,
        router: APIRouter,
        authenticate: Callable[[Request, bytes], Awaitable[Event]],
        send_now: Callable[[Notification, Registration], Awaitable[SendResult]],
    ) -> None:
        """`POST /test-push`: a test notification to each of the caller's devices, now, with each provider's answer."""

        @router.post(
            "/test-push",
            summary="Push a test notification to the caller's devices and report each provider's answer (NIP-98)",
            response_model=None,
            responses={**success(TestPushes), **answers(401, 404, 429)},
        )
        async def test_push(request: Request) -> JSONResponse:
            auth = await authenticate(request, await request.body())
            wait = self._test_pushes.wait(auth.pubkey)
            if wait > 0:
                raise ApiError(429, f"at most {TEST_PUSH_BURST} test pushes at once; try again in {math.ceil(wait)} s")
            devices = self._registry.registrations_of(auth.pubkey)
            if not devices:
                raise ApiError(404, "no device registered for this pubkey")
            now = self._clock()
            event_id = hashlib.sha256(f"pushstr test push {auth.id}".encode()).hexdigest()
            results = []
            for reg in devices:
                notification = Notification(event_id, TEST_KIND, auth.pubkey, None, int(now), reg.app)
                result = await send_now(notification, reg)
                TEST_PUSHES.labels(str(result.outcome)).inc()
                results.append(
                    {
                        "device_token": reg.device_token,
                        "platform": str(reg.platform),
                        "app": reg.app,
                        "outcome": str(result.outcome),
                        "reason": result.reason,
                        "status": result.status,
                    }
                )
            return JSONResponse({"pubkey": auth.pubkey, "results": results})

    def _preference_routes(
        self,
        router: APIRouter,
        authenticate: Callable[[Request, bytes], Awaitable[Event]],
        book: PreferenceBook,
        keys: Keys,
    ) -> None:
        """`GET`/`PUT /preferences`: the caller's devices' notification preferences, whatever they registered with."""
        registry = self._registry

        def listing(pubkey: str) -> dict[str, Any]:
            devices = [
                {
                    "device_token": reg.device_token,
                    "dialect": reg.dialect,
                    "preferences": preferences_view(book.get(pubkey, reg.device_token)),
                }
                for reg in registry.registrations_of(pubkey)
            ]
            return {"pubkey": pubkey, "devices": devices}

        @router.get(
            "/preferences",
            summary="The notification preferences of the caller's devices (NIP-98)",
            response_model=None,
            responses={**success(PreferencesList), **answers(401)},
        )
        async def get_preferences(request: Request) -> JSONResponse:
            auth = await authenticate(request, b"")
            return JSONResponse(listing(auth.pubkey))

        @router.put(
            "/preferences",
            summary="Change notification preferences of one or every device of the caller (NIP-98)",
            openapi_extra=json_request(PreferencesBody),
            response_model=None,
            responses={**success(PreferencesList), **answers(400, 401, 404, 413)},
        )
        async def put_preferences(request: Request) -> JSONResponse:
            body = await request.body()
            auth = await authenticate(request, body)
            data: PreferencesBody = parse_body(body, PreferencesBody)
            devices = registry.registrations_of(auth.pubkey)
            if data.device_token is not None:
                devices = [reg for reg in devices if reg.device_token == data.device_token]
            if not devices:
                raise ApiError(404, "no such device registered for this pubkey")
            try:
                changed = [
                    (reg, applied(book.get(auth.pubkey, reg.device_token), data, keys, auth.pubkey)) for reg in devices
                ]
            except (ValueError, PrivateMutesError) as exc:
                raise ApiError(400, str(exc)) from None
            for reg, prefs in changed:
                await book.put(auth.pubkey, reg.device_token, prefs)
            return JSONResponse(listing(auth.pubkey))

    async def _check_token(self, platform: Platform, token: str, app: str) -> None:
        """400 for a token its platform cannot deliver to, before it is stored and fails unseen at delivery."""
        try:
            await check_device_token(
                platform, token, allowed_hosts=self._endpoint_hosts.get(app, ()), resolve=self._resolve
            )
        except InvalidToken as exc:
            raise ApiError(400, str(exc)) from None


def build(context: DialectContext) -> HttpNip98:
    settings = context.settings
    return HttpNip98(
        context.registry,
        settings.app_for,
        frozenset(settings.registration.default_kinds),
        window_seconds=settings.registration.nip98_window_seconds,
        public_url=settings.server.public_url,
        endpoint_hosts={
            app_id: tuple(app.allowed_hosts)
            for app_id, app in settings.apps.items()
            if isinstance(app, WebPushAppConfig)
        },
        use_token=context.use_token,
        preferences=context.preferences,
        keys=context.keys,
        send_now=context.send_now,
    )
