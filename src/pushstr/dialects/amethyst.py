"""Amethyst's `POST /register` (vitorpamplona/amethyst-push-notif-server): kind 22242 events, one per account.

Amethyst posts `{"events": [...]}` whenever its FCM token (Play build) or UnifiedPush endpoint (F-Droid build)
changes or its accounts do, each event signed by the account and tagged with the account's read and DM relays and
`["challenge", <token>]` (see `amethyst_request`). The answer is `[{"pubkey", "added"}]`, one entry per event, in
order; Amethyst itself only looks at the status.

The reference server checks nothing but the signature. Here an event is added only when it is a valid kind 22242
whose `created_at` is within `window_seconds` of now (Amethyst signs as it sends, so a captured request soon
stops working), whose token can work (`registry.tokens`) and an app can push, and which is not older than the
registration already known for that account and token. A refused event is `added: false` with a `reason`; a body
without a challenge, or with too many events, is a 400. The device gets DMs (4), zaps (9735) and gift wraps (1059)
addressed to the account, from pushstr's relays and those the event lists (the shared `RegistrationRelays` guard
and caps), each pushed as the event itself in a one-layer wrap to the account (`Mode.WRAPPED`), as the reference
server pushes.

`POST /register` is also the HTTP + NIP-98 dialect's route. Its requests always carry `Authorization: Nostr …`
and Amethyst's never do, so this route only takes requests without that header (it is mounted first), and of those
only bodies with `events`; any other body is answered exactly as the NIP-98 route answers a missing header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import Counter
from starlette.routing import Match
from starlette.types import Scope

from pushstr.config import Settings, WebPushAppConfig
from pushstr.dialects.amethyst_request import NotAmethyst, read_events, relay_urls, stated_pubkey
from pushstr.dialects.apps import token_app
from pushstr.dialects.base import Dialect, DialectContext, Refused
from pushstr.dialects.http_nip98 import AUTH_FAILURES
from pushstr.dialects.registration_relays import RegistrationRelays
from pushstr.dialects.routes import ApiError
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import Resolver, resolve_host
from pushstr.nostr import nip98
from pushstr.nostr.errors import AuthError, InvalidEvent
from pushstr.nostr.event import Event
from pushstr.nostr.kinds import Kind
from pushstr.registry.model import Mode, Platform, Registration
from pushstr.registry.service import Registry, TooManyDevices
from pushstr.registry.tokens import MAX_TOKEN_BYTES, InvalidToken, check_device_token

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "amethyst"
#: What the reference server watches for and Amethyst shows: DMs, zaps and NIP-17 gift wraps.
KINDS: frozenset[int] = frozenset({Kind.ENCRYPTED_DM, Kind.ZAP_RECEIPT, Kind.GIFT_WRAP})

RESULTS = (
    "added",
    "malformed",
    "wrong_kind",
    "bad_signature",
    "stale",
    "superseded",
    "bad_token",
    "no_app",
    "too_many_devices",
    "no_challenge",
    "too_many_events",
    "bad_request",
)
REGISTRATIONS = Counter("pushstr_amethyst_registrations_total", "Amethyst kind 22242 events by outcome", ["result"])
for _result in RESULTS:
    REGISTRATIONS.labels(_result)

Key = tuple[str, str]
_TOKEN_NAMES = {"fcm": Platform.ANDROID, "push-url": Platform.UNIFIEDPUSH}


@dataclass(frozen=True, slots=True)
class PushApp:
    """The app one kind of token (FCM token, push URL) goes to, and the endpoint hosts it exempts."""

    app_id: str
    allowed_hosts: tuple[str, ...] = ()


class UnsignedRoute(APIRoute):
    """A route that takes only requests without an `Authorization` header: NIP-98 requests go on to theirs."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and any(name == b"authorization" for name, _ in scope.get("headers", ())):
            return Match.NONE, {}
        return match, child


class Amethyst(Dialect):
    """`POST /register` with kind 22242 events; keeps the relays of its registrations watched."""

    name = DIALECT

    def __init__(
        self,
        registry: Registry,
        relays: RegistrationRelays,
        *,
        fcm_app: PushApp | None,
        push_url_app: PushApp | None,
        max_events: int,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
        resolve: Resolver = resolve_host,
    ) -> None:
        """`fcm_app` / `push_url_app` are where FCM tokens and push URLs go (None: refused, no app can push them);
        `resolve` is the URL guard's DNS lookup behind the push URL check (tests answer it without DNS)."""
        self._registry = registry
        self._relays = relays
        self._apps = {Platform.ANDROID: fcm_app, Platform.UNIFIEDPUSH: push_url_app}
        self._max_events = max_events
        self._window = window_seconds
        self._clock = clock
        self._resolve = resolve
        self._lock = asyncio.Lock()
        self._watching: set[Key] = set()
        self._changed = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._worker: asyncio.Task[None] | None = None

    def describe(self) -> Mapping[str, Any]:
        return {
            "route": "POST /register",
            "body": {"events": "kind 22242 events, one per account: relay tags and a challenge tag (the token)"},
            "answer": [{"pubkey": "hex", "added": "bool (reason when false)"}],
            "tokens": [name for name, platform in _TOKEN_NAMES.items() if self._apps[platform] is not None],
            "kinds": sorted(KINDS),
            "payload": "FCM data encryptedEvent, or the push URL's body: a kind 1059 wrap of the event to the account",
            "max_events": self._max_events,
            "window_seconds": self._window,
        }

    def router(self) -> APIRouter:
        router = APIRouter(tags=["registration (Amethyst)"], route_class=UnsignedRoute)

        async def amethyst_register(request: Request) -> JSONResponse:
            body = await request.body()
            try:
                events = read_events(body, self._max_events)
            except NotAmethyst:
                _refuse_as_nip98(request)
            except ApiError as exc:
                REGISTRATIONS.labels(exc.code).inc()
                raise
            return JSONResponse([await self._register_one(event) for event in events])

        router.add_api_route(
            "/register",
            amethyst_register,
            methods=["POST"],
            include_in_schema=False,  # the path's documented operation is the NIP-98 one; `/info` describes this
        )
        return router

    async def start(self) -> None:
        """Watch the relays of the registrations loaded from the store, and follow registry changes (a device
        pruned as dead, or taken over by another dialect, lets go of its relays)."""
        for reg in self._registry.registrations():
            if reg.dialect == DIALECT:
                self.adopt(reg)
        self._unsubscribe = self._registry.subscribe(self._changed.set)
        self._worker = asyncio.create_task(self._release_gone(), name="amethyst-relays")

    def adopt(self, reg: Registration) -> None:
        self._relays.watch(reg.key, reg.relays)
        self._watching.add(reg.key)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _register_one(self, obj: object) -> dict[str, Any]:
        """One event of the request, as its answer entry; counted by outcome, never raising for bad input."""
        try:
            pubkey = await self._register(obj)
        except Refused as exc:
            REGISTRATIONS.labels(exc.result).inc()
            _rate_log.info(
                f"amethyst-{exc.result}", "Amethyst registration of %s refused: %s", ident(str(stated_pubkey(obj))), exc
            )
            return {"pubkey": stated_pubkey(obj), "added": False, "reason": str(exc)}
        REGISTRATIONS.labels("added").inc()
        return {"pubkey": pubkey, "added": True}

    async def _register(self, obj: object) -> str:
        event = self._verified(obj)
        token = event.first_tag_value("challenge")
        assert token is not None  # `read_events` refused events without one
        platform = Platform.UNIFIEDPUSH if token.lower().startswith(("https://", "http://")) else Platform.ANDROID
        app = await self._usable_app(platform, token)
        relays = tuple(await self._relays.accepted(relay_urls(event.tags)))
        registration = Registration(
            pubkey=event.pubkey,
            device_token=token,
            platform=platform,
            app=app,
            dialect=DIALECT,
            kinds=KINDS,
            created_at=float(event.created_at),
            mode=Mode.WRAPPED,
            relays=relays,
        )
        async with self._lock:  # the newest-wins check and the write, with no other registration between them
            current = self._registry.device(event.pubkey, token)
            if current is not None and current.dialect == DIALECT and current.created_at > event.created_at:
                raise Refused("superseded", "older than the registration already known for this token")
            try:
                await self._registry.add(registration)
            except TooManyDevices as exc:
                raise Refused("too_many_devices", str(exc)) from None
            self._relays.watch(registration.key, relays)
            self._watching.add(registration.key)
        return event.pubkey

    def _verified(self, obj: object) -> Event:
        """The event, once its shape, kind, id, signature and age are right."""
        try:
            event = Event.from_dict(obj)
        except InvalidEvent as exc:
            raise Refused("malformed", exc.reason) from None
        if event.kind != Kind.CLIENT_AUTH:
            raise Refused("wrong_kind", f"kind {event.kind}: a registration is kind {int(Kind.CLIENT_AUTH)}")
        try:
            event.verify()
        except InvalidEvent as exc:
            raise Refused("bad_signature", exc.reason) from None
        if abs(event.created_at - self._clock()) > self._window:
            raise Refused("stale", f"created_at is more than {self._window} s from now: sign the registration anew")
        return event

    async def _usable_app(self, platform: Platform, token: str) -> str:
        """The app a token goes to, once it is known to be usable there (else `Refused`)."""
        app = self._apps[platform]
        kind = "FCM tokens" if platform is Platform.ANDROID else "push URLs"
        if app is None:
            raise Refused("no_app", f"this server has no app for {kind}")
        if len(token) > MAX_TOKEN_BYTES:
            raise Refused("bad_token", f"the challenge (device token) is longer than {MAX_TOKEN_BYTES} characters")
        try:
            await check_device_token(platform, token, allowed_hosts=app.allowed_hosts, resolve=self._resolve)
        except InvalidToken as exc:
            raise Refused("bad_token", str(exc)) from None
        return app.app_id

    async def _release_gone(self) -> None:
        """Let go of the relays of registrations that are gone. A key another dialect took over keeps its relays
        when that dialect names relays itself (it watches them now), and lets go of them otherwise."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            for key in list(self._watching):
                reg = self._registry.device(*key)
                if reg is not None and (reg.dialect == DIALECT or reg.relays):
                    if reg.dialect != DIALECT:
                        self._watching.discard(key)
                    continue
                self._relays.release(key)
                self._watching.discard(key)


def _refuse_as_nip98(request: Request) -> NoReturn:
    """Answer as the NIP-98 `POST /register` answers a request without its `Authorization` header (the NIP-98
    check refuses a missing header before it reads anything else)."""
    AUTH_FAILURES.inc()
    try:
        nip98.verify_authorization(None, request.method, str(request.url))
    except AuthError as exc:
        raise ApiError(401, exc.reason) from None
    raise ApiError(401, "missing Authorization header")


def _push_app(
    settings: Settings, platform: Platform, configured: str | None, transports: Collection[str], key: str
) -> PushApp | None:
    """The app one kind of token goes to: the configured one (which must be able to push it), else the platform's
    app when its transport can; None when no app can."""
    app_id = token_app(
        settings, platform, configured, transports, key=f"dialects.amethyst.{key}", tokens="these tokens"
    )
    if app_id is None:
        return None
    app = settings.apps[app_id]
    hosts = tuple(app.allowed_hosts) if isinstance(app, WebPushAppConfig) else ()
    return PushApp(app_id, hosts)


def build(context: DialectContext) -> Amethyst | None:
    """The dialect, or None when it is off; a ConfigError when a configured app cannot push its tokens."""
    settings = context.settings
    config = settings.dialects.amethyst
    if not config.enabled:
        return None
    return Amethyst(
        context.registry,
        context.relays,
        fcm_app=_push_app(settings, Platform.ANDROID, config.fcm_app, ("fcm", "log"), "fcm_app"),
        push_url_app=_push_app(settings, Platform.UNIFIEDPUSH, config.push_url_app, ("webpush", "log"), "push_url_app"),
        max_events=config.max_events,
        window_seconds=config.window_seconds,
    )
