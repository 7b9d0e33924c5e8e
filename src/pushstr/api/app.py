"""The FastAPI application: health, readiness, info, relay status, metrics, the dashboard, NIP-11, the relay endpoint
and dialect routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pushstr import __version__
from pushstr.api.dashboard import dashboard_router
from pushstr.api.errors import BodyLimit, install_error_handlers
from pushstr.api.relay_status import relay_state
from pushstr.api.schemas import About, Health, Info, Ready, Relays
from pushstr.app import Service
from pushstr.dialects.routes import success
from pushstr.logutil import shown_url
from pushstr.net.clientaddr import TrustedProxies
from pushstr.nostr import nip19
from pushstr.relays.endpoint import RelayEndpoint


def _info(service: Service) -> dict[str, Any]:
    configured = set(service.settings.nostr.relays)
    return {
        "name": "pushstr",
        "version": __version__,
        "pubkey": service.keys.public_hex,
        "npub": nip19.npub_encode(service.keys.public_hex),
        "dialects": [dialect.name for dialect in service.dialects],
        "dialect_info": {dialect.name: dict(info) for dialect in service.dialects if (info := dialect.describe())},
        "relay_endpoint": service.settings.endpoint.enabled,
        "transports": service.delivery.transport_names,
        "apps": sorted(service.settings.apps),
        "vapid_public_key": service.delivery.vapid_public_key,
        # The operator's relays only, without credentials a URL may carry; relays users named stay private.
        "relays": [shown_url(url) for url in service.settings.nostr.relays],
        "other_relays": sum(status.url not in configured for status in service.pool.status()),
    }


def _nip11(service: Service) -> dict[str, Any]:
    """Relay information document for the built-in endpoint: write-only, nothing stored."""
    return {
        "name": "pushstr",
        "description": "Push-notification gateway: accepts events addressed to registered users, serves no reads.",
        "pubkey": service.keys.public_hex,
        "software": "pushstr",
        "version": __version__,
        "supported_nips": [1, 11],
        "limitation": {
            "max_message_length": service.settings.endpoint.max_message_bytes,
            "auth_required": False,
            "restricted_writes": False,
        },
    }


def create_app(service: Service, manage_service: bool = True) -> FastAPI:
    """The ASGI app; with `manage_service` its lifespan starts and stops `service`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_service:
            await service.start()
        try:
            yield
        finally:
            if manage_service:
                await service.stop()

    app = FastAPI(
        title="pushstr",
        version=__version__,
        description="Push-notification gateway for Nostr.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    def too_large(path: str, limit: int) -> tuple[int, dict[str, Any]] | None:
        return next((own for dialect in service.dialects if (own := dialect.body_too_large(path, limit))), None)

    app.add_middleware(BodyLimit, max_bytes=service.settings.server.max_body_bytes, too_large=too_large)
    for dialect in service.dialects:
        router = dialect.router()
        if router is not None:
            app.include_router(router)
    endpoint = RelayEndpoint(
        service.settings.endpoint,
        service.pipeline.ingest,
        service.delivery.durable,
        TrustedProxies.parse(service.settings.server.trusted_proxies),
    )

    @app.get("/health", summary="Liveness", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="Readiness: store open and the ingest running; the outbox's pending pushes",
        response_model=None,
        responses={**success(Ready), **success(Ready, 503)},
    )
    async def ready() -> JSONResponse:
        is_ready = await service.ready()
        outbox = service.delivery.outbox
        body: dict[str, Any] = {"ready": is_ready}
        if outbox is not None:
            body["outbox"] = {"pending": len(outbox), "oldest_seconds": round(outbox.oldest_age(), 3)}
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @app.get("/info", summary="Server identity, dialects and transports", response_model=None, responses=success(Info))
    async def info() -> JSONResponse:
        return JSONResponse(_info(service))

    @app.get(
        "/relays",
        summary="Every relay connection: state, subscriptions used and allowed, counters",
        response_model=None,
        responses=success(Relays),
    )
    async def relays() -> JSONResponse:
        configured = frozenset(service.settings.nostr.relays)
        return JSONResponse({"relays": [relay_state(service, status, configured) for status in service.pool.status()]})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    dashboard = dashboard_router(service)  # None when `server.dashboard` comes to off: both paths are then 404
    if dashboard is not None:
        app.include_router(dashboard)

    @app.get(
        "/",
        summary="NIP-11 document (Accept: application/nostr+json) or a short description",
        response_model=None,
        responses={
            200: {
                "model": About,
                "description": "a short description; the NIP-11 document when asked for application/nostr+json",
                "content": {"application/nostr+json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def root(request: Request) -> JSONResponse:
        if "application/nostr+json" in request.headers.get("accept", ""):
            return JSONResponse(
                _nip11(service), media_type="application/nostr+json", headers={"Access-Control-Allow-Origin": "*"}
            )
        return JSONResponse({"name": "pushstr", "version": __version__, "docs": "/docs"})

    if service.settings.endpoint.enabled:

        @app.websocket("/")
        async def relay_endpoint(websocket: WebSocket) -> None:
            await endpoint.serve(websocket)

    return app
