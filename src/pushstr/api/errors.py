"""Every error response is JSON `{"error": <code>, "reason": <text>}`, whatever raised it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pushstr.dialects.routes import HTTP_ERRORS, ApiError, error_body, error_response

log = logging.getLogger(__name__)


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{location}: {item.get('msg', 'invalid')}" if location else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at the request's path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.reason, exc.code)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        response = error_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:  # HTTP requires `Allow`: every method the path takes, not the first route's
            response.headers["Allow"] = _allowed_methods(request)
        return response

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, _validation_reason(exc))

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in request", exc_info=exc)
        return error_response(500, "internal error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


TooLarge = Callable[[str, int], tuple[int, dict[str, Any]] | None]
"""A dialect's own answer to an oversized body on its path (`Dialect.body_too_large`), else None."""


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, by header or by what arrives.

    The body is read (up to the limit) before the app runs and replayed to it: request bodies here are small
    JSON documents, and refusing before any route code runs means an oversized request can change nothing. A
    dialect whose wire format documents another answer (Mostro's 400) gives it through `too_large`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: TooLarge | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large

    async def _refuse(self, scope: Scope, send: Send) -> None:
        own = self.too_large(scope.get("path", ""), self.max_bytes) if self.too_large is not None else None
        status, document = own or (413, error_body(413, f"request body larger than {self.max_bytes} bytes"))
        HTTP_ERRORS.labels(str(status)).inc()
        body = orjson.dumps(document)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, send)
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away before sending the whole body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
