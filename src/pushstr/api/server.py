"""How uvicorn serves the app: one configuration for `pushstr serve` and the tests, and its HTTP layer's own
refusals in the JSON error format.

Requests that never reach the app — malformed request lines, headers past h11's size limit — are answered by
uvicorn itself, with `text/plain` and a warning logged per request. pushstr promises JSON errors with a reason
for every refusal and no log flood a client can cause, so the protocol class below answers those in JSON and
the warning passes once a minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import h11
import orjson
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from pushstr.config import Settings
from pushstr.dialects.routes import HTTP_ERRORS, error_body

INVALID_REQUEST = "Invalid HTTP request received."  # uvicorn's warning text
_REASON = "malformed HTTP request, or its headers are larger than the server accepts"


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose 400 for a request it cannot parse is a JSON error body."""

    def send_400_response(self, msg: str) -> None:
        HTTP_ERRORS.labels("400").inc()
        body = orjson.dumps(error_body(400, _REASON))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()


class _OncePerInterval(logging.Filter):
    """Lets uvicorn's per-request warning about an unparseable request through once per `interval` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self._interval = interval
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != INVALID_REQUEST:
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval
        return True


_QUIET = _OncePerInterval()


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for `app` under `settings`; `overrides` replace single options (tests)."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if _QUIET not in uvicorn_errors.filters:
        uvicorn_errors.addFilter(_QUIET)
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "http": JsonErrorsH11Protocol,
        "ws_max_size": settings.endpoint.max_message_bytes * 2,
        "log_level": "info",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
        # `request.client` stays the TCP peer: `X-Forwarded-For` is read only from the proxies the operator trusts
        # (`server.trusted_proxies`, `net.clientaddr.client_address`), never on uvicorn's own terms.
        "proxy_headers": False,
        **overrides,
    }
    return uvicorn.Config(app, **options)
