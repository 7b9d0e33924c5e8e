"""damus notepush's HTTP API: devices registered under `/user-info/:pubkey/:deviceToken`, with their preferences.

Built to the routes damus' push server serves and the damus app calls. Every route but `GET /server-pubkey` is
authorized by NIP-98, checked as notepush checks it: `u` is the public base URL plus the path (no query), the
`method` tag the request's, a `payload` tag exactly when there is a body, and `created_at` at most 60 s old or 30 s
ahead; the signer must be the `:pubkey` of the path, else 403. The verification itself is `nostr.nip98`'s (one
verifier for every dialect). Unlike `POST /register`, a token is not used up: every route here is idempotent and
its token binds the exact URL, method and body, so a replay within the minute repeats the same request, while a
damus that asks for its preferences twice in one second signs the same event id twice and must not be refused.

A registered device is pushed for notepush's kinds (1, 4, 6, 16, 7, 9735) and gets notepush's semantics as its
preferences: the user's kind 10000 mute list honoured and threads the user was notified about followed. The
preferences route reads and writes notepush's fields; everything else pushstr knows (quiet hours, zap threshold)
stays as it was. Errors have notepush's shape, `{"error", "message"?}`, plus pushstr's `reason`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pushstr.dialects.base import Dialect, DialectContext
from pushstr.dialects.preferences_body import PrivateMutesError, private_mutes
from pushstr.dialects.routes import HTTP_ERRORS, answers, inline_schema, success
from pushstr.nostr import nip98
from pushstr.nostr.errors import AuthError, InvalidKey
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys, public_key_bytes
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.preferences import PreferenceBook, Preferences
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.tokens import MAX_TOKEN_BYTES, InvalidToken, check_device_token

DIALECT = "notepush"
KINDS = frozenset({1, 4, 6, 16, 7, 9735})
"""What notepush notifies: mentions and replies, DMs, reposts (6 and 16), reactions, zaps."""
PAST_SECONDS = 60
FUTURE_SECONDS = 30
HELLTHREAD_DEFAULT, HELLTHREAD_MIN, HELLTHREAD_MAX = 10, 6, 24
DEFAULTS = Preferences(mute_list=True, thread_following=True)
"""A notepush device's preferences until it sets its own: what notepush does for everyone."""

PathPubkey = Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="the user's pubkey, hex")]
PathToken = Annotated[str, Path(min_length=1, max_length=MAX_TOKEN_BYTES, description="the APNs token (hex)")]

REQUESTS = Counter("pushstr_notepush_requests_total", "notepush API requests", ["route", "status"])

Route = Literal["user_info", "remove", "get_preferences", "put_preferences", "encryption_key"]


class UserInfoBody(BaseModel):
    """`PUT /user-info/:pubkey/:deviceToken`'s optional body."""

    model_config = ConfigDict(extra="ignore")

    platform: Literal["ios", "android"] = "ios"


class NotificationSettings(BaseModel):
    """notepush's `UserNotificationSettings`: the six switches are required, the hellthread pair optional.

    `private_mutes` is pushstr's addition: the private part of the user's mute list (NIP-51 tags as JSON),
    NIP-44-encrypted by the user to the server key (`GET /server-pubkey`).
    """

    model_config = ConfigDict(extra="ignore")

    zap_notifications_enabled: bool
    mention_notifications_enabled: bool
    repost_notifications_enabled: bool
    reaction_notifications_enabled: bool
    dm_notifications_enabled: bool
    only_notifications_from_following_enabled: bool
    hellthread_notifications_disabled: bool = False
    hellthread_notifications_max_pubkeys: int = Field(
        HELLTHREAD_DEFAULT, ge=-128, le=127, description="kept within 6–24, as notepush does"
    )
    private_mutes: str | None = Field(None, max_length=200_000, description="pushstr only (see the docs)")


class EncryptionKeyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    device_pubkey: str = Field(min_length=64, max_length=64, description="x-only public key, hex")


class Message(BaseModel):
    message: str


class ServerPubkey(BaseModel):
    pubkey: str
    encryption_enabled: bool


class NotepushError(BaseModel):
    """notepush's error shape and pushstr's `reason`."""

    error: str
    message: str | None = None
    reason: str


def _body_schema(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": inline_schema(model)}}}}


def settings_view(prefs: Preferences) -> dict[str, Any]:
    """A device's preferences in notepush's fields."""
    limit = prefs.hellthread_limit
    return {
        "zap_notifications_enabled": prefs.zaps,
        "mention_notifications_enabled": prefs.mentions,
        "repost_notifications_enabled": prefs.reposts,
        "reaction_notifications_enabled": prefs.reactions,
        "dm_notifications_enabled": prefs.dms,
        "only_notifications_from_following_enabled": prefs.follows_only,
        "hellthread_notifications_disabled": limit is not None,
        "hellthread_notifications_max_pubkeys": HELLTHREAD_DEFAULT if limit is None else limit,
    }


class _Refused(Exception):
    def __init__(self, status: int, error: str, reason: str, message: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason, self.message = status, error, reason, message


def _unauthorized(reason: str) -> _Refused:
    return _Refused(401, "Unauthorized", reason, reason)


class Notepush(Dialect):
    """The `/user-info/…` routes and `GET /server-pubkey`."""

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        preferences: PreferenceBook,
        keys: Keys,
        apps: dict[Platform, str | None],
        *,
        mode: Mode | None,
        public_url: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`apps` is the app each platform's tokens are pushed with (None: the server has none for it);
        `mode` the payload mode of the devices until they set an encryption key (None: their app's);
        `public_url` the base URL clients sign behind a proxy."""
        self._registry = registry
        self._preferences = preferences
        self._keys = keys
        self._apps = apps
        self._mode = mode
        self._public_url = public_url
        self._clock = clock

    def describe(self) -> dict[str, Any]:
        return {
            "routes": [
                "PUT /user-info/{pubkey}/{device_token}",
                "DELETE /user-info/{pubkey}/{device_token}",
                "GET|PUT /user-info/{pubkey}/{device_token}/preferences",
                "PUT /user-info/{pubkey}/{device_token}/encryption-key",
                "GET /server-pubkey",
            ],
            "kinds": sorted(KINDS),
        }

    def _url(self, request: Request) -> str:
        if self._public_url:
            return self._public_url.rstrip("/") + request.url.path
        return str(request.url.replace(query=""))

    async def _authorize(self, request: Request, pubkey: str, body: bytes) -> None:
        """NIP-98 as notepush checks it, signed by the path's pubkey (see the module docstring)."""
        now = self._clock()
        try:
            auth: Event = nip98.verify_authorization(
                request.headers.get("authorization"),
                request.method,
                self._url(request),
                body,
                now=now,
                window=PAST_SECONDS,
            )
        except AuthError as exc:
            raise _unauthorized(exc.reason) from None
        if auth.created_at - now > FUTURE_SECONDS:
            raise _unauthorized(f"token too far in the future: at most {FUTURE_SECONDS} s ahead of {int(now)}")
        if auth.pubkey != pubkey:
            raise _Refused(403, "Forbidden", "the authorization is signed by another key than the path's pubkey")

    def router(self) -> APIRouter:
        router = APIRouter(tags=["registration (damus notepush)"])
        path = "/user-info/{pubkey}/{device_token}"
        errors = answers(400, 401, 403, 404, 409, 413, model=NotepushError)

        async def handle(route: Route, request: Request, pubkey: str, token: str) -> JSONResponse:
            body = await request.body()
            try:
                await self._authorize(request, pubkey, body)
                status, document = await self._handle(route, pubkey, token, body)
            except _Refused as refused:
                HTTP_ERRORS.labels(str(refused.status)).inc()
                REQUESTS.labels(route, str(refused.status)).inc()
                document = {"error": refused.error, "reason": refused.reason}
                if refused.message is not None:
                    document["message"] = refused.message
                return JSONResponse(document, refused.status)
            REQUESTS.labels(route, str(status)).inc()
            return JSONResponse(document, status)

        @router.put(
            path,
            summary="Register a device (NIP-98 signed by :pubkey)",
            openapi_extra=_body_schema(UserInfoBody, required=False),
            response_model=None,
            responses={**success(Message), **errors},
        )
        async def user_info(request: Request, pubkey: PathPubkey, device_token: PathToken) -> JSONResponse:
            return await handle("user_info", request, pubkey, device_token)

        @router.delete(
            path,
            summary="Remove a device (NIP-98 signed by :pubkey)",
            response_model=None,
            responses={**success(Message), **errors},
        )
        async def remove(request: Request, pubkey: PathPubkey, device_token: PathToken) -> JSONResponse:
            return await handle("remove", request, pubkey, device_token)

        @router.get(
            path + "/preferences",
            summary="A device's notification preferences (NIP-98)",
            response_model=None,
            responses={**success(NotificationSettings), **errors},
        )
        async def get_preferences(request: Request, pubkey: PathPubkey, device_token: PathToken) -> JSONResponse:
            return await handle("get_preferences", request, pubkey, device_token)

        @router.put(
            path + "/preferences",
            summary="Set a device's notification preferences (NIP-98)",
            openapi_extra=_body_schema(NotificationSettings, required=True),
            response_model=None,
            responses={**success(Message), **errors},
        )
        async def put_preferences(request: Request, pubkey: PathPubkey, device_token: PathToken) -> JSONResponse:
            return await handle("put_preferences", request, pubkey, device_token)

        @router.put(
            path + "/encryption-key",
            summary="Encrypt a device's pushes to its own key with NIP-44 (NIP-98)",
            openapi_extra=_body_schema(EncryptionKeyBody, required=True),
            response_model=None,
            responses={**success(Message), **errors},
        )
        async def encryption_key(request: Request, pubkey: PathPubkey, device_token: PathToken) -> JSONResponse:
            return await handle("encryption_key", request, pubkey, device_token)

        @router.get(
            "/server-pubkey",
            summary="The key pushes are encrypted from and private mutes are encrypted to",
            response_model=None,
            responses=success(ServerPubkey),
        )
        async def server_pubkey() -> JSONResponse:
            return JSONResponse({"pubkey": self._keys.public_hex, "encryption_enabled": True})

        return router

    async def _handle(self, route: Route, pubkey: str, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if route == "user_info":
            return await self._register(pubkey, token, _parse(body, UserInfoBody, "Invalid body", optional=True))
        if route == "remove":
            await self._registry.remove(pubkey, token)
            await self._preferences.remove(pubkey, token)
            return 200, {"message": "User info removed successfully"}
        device = self._registry.device(pubkey, token)
        if device is None:
            raise _Refused(404, "Not found", "no such device registered for this pubkey: PUT /user-info first")
        if route == "get_preferences":
            return 200, settings_view(self._preferences.get(pubkey, token))
        if route == "put_preferences":
            settings = _parse(body, NotificationSettings, "Invalid settings")
            await self._preferences.put(pubkey, token, self._applied(pubkey, token, settings))
            return 200, {"message": "User settings saved successfully"}
        key = _parse(body, EncryptionKeyBody, "Invalid device_pubkey").device_pubkey
        try:
            public_key_bytes(key)
        except InvalidKey as exc:
            raise _Refused(400, "Invalid device_pubkey", f"device_pubkey: {exc.reason}") from None
        await self._registry.add(replace(device, device_pubkey=key, mode=Mode.NOTEPUSH))
        return 200, {"message": "Device encryption key saved successfully"}

    async def _register(self, pubkey: str, token: str, body: UserInfoBody | None) -> tuple[int, dict[str, Any]]:
        platform = Platform.ANDROID if body is not None and body.platform == "android" else Platform.IOS
        app = self._apps.get(platform)
        if app is None:
            raise _Refused(400, "Unsupported platform", f"this server pushes to no {platform} app")
        try:
            await check_device_token(platform, token)
        except InvalidToken as exc:
            raise _Refused(400, "Invalid deviceToken", str(exc)) from None
        current = self._registry.device(pubkey, token)
        if current is None or current.platform is not platform or current.dialect != DIALECT:
            registration = Registration(
                pubkey=pubkey,
                device_token=token,
                platform=platform,
                app=app,
                dialect=DIALECT,
                kinds=KINDS,
                created_at=self._clock(),
                device_pubkey=current.device_pubkey if current is not None else None,
                mode=Mode.NOTEPUSH if current is not None and current.device_pubkey else self._mode,
            )
            try:
                await self._registry.add(registration)
            except TooManyDevices as exc:
                raise _Refused(409, "Too many devices", str(exc)) from None
        if (pubkey, token) not in self._preferences.by_device:
            await self._preferences.put(pubkey, token, DEFAULTS)
        return 200, {"message": "User info saved successfully"}

    def _applied(self, pubkey: str, token: str, settings: NotificationSettings) -> Preferences:
        """The device's preferences with notepush's fields set from `settings` (pushstr's others kept)."""
        limit = min(HELLTHREAD_MAX, max(HELLTHREAD_MIN, settings.hellthread_notifications_max_pubkeys))
        mutes = self._preferences.get(pubkey, token).private_mutes
        if settings.private_mutes is not None:
            try:
                mutes = private_mutes(self._keys, pubkey, settings.private_mutes)
            except PrivateMutesError as exc:
                raise _Refused(400, "Invalid settings", str(exc)) from None
        return replace(
            self._preferences.get(pubkey, token),
            zaps=settings.zap_notifications_enabled,
            mentions=settings.mention_notifications_enabled,
            replies=settings.mention_notifications_enabled,  # notepush's switch covers every kind 1
            reposts=settings.repost_notifications_enabled,
            reactions=settings.reaction_notifications_enabled,
            dms=settings.dm_notifications_enabled,
            follows_only=settings.only_notifications_from_following_enabled,
            hellthread_limit=limit if settings.hellthread_notifications_disabled else None,
            private_mutes=mutes,
        )


Model = TypeVar("Model", bound=BaseModel)


def _parse(body: bytes, model: type[Model], error: str, *, optional: bool = False) -> Model:
    """A JSON body as `model`; notepush's 400 otherwise (an empty body is the defaults where it is optional)."""
    if not body and optional:
        return model()
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        raise _Refused(400, error, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _Refused(400, error, "the body must be a JSON object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _Refused(400, error, f"{where}: {first['msg']}" if where else first["msg"]) from None


def build(context: DialectContext) -> Notepush | None:
    settings = context.settings
    config = settings.dialects.notepush
    if not config.enabled or context.preferences is None:
        return None
    return Notepush(
        context.registry,
        context.preferences,
        context.keys,
        {
            Platform.IOS: settings.app_for("ios", config.ios_app),
            Platform.ANDROID: settings.app_for("android", config.android_app),
        },
        mode=config.mode,
        public_url=settings.server.public_url,
    )
