"""The operator's live dashboard: `GET /dashboard` (a static page, its script and stylesheet) and its data,
`GET /status`, guarded as `server.dashboard` says.

- off: neither path exists (404, like any unknown path).
- public: both open.
- token: `/status` answers only `Authorization: Bearer <token>`, compared in constant time; the page itself holds
  no data and loads without it, then asks for the token (or takes it from the URL fragment `#token=…`, which no
  request carries) and keeps it in the tab's sessionStorage.

The page is three files shipped in the package (`api/static`), read once when the app is built; its script polls
`/status` and keeps the rolling window of samples itself, so the server holds no history and serves nothing but
totals. Its headers forbid inline script, framing, MIME sniffing and referrers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from pushstr.api.schemas import Status
from pushstr.api.status import status_document
from pushstr.app import Service
from pushstr.config import ConfigError, ServerConfig, dashboard_token_problem
from pushstr.dialects.routes import answers, error_response, success

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
STATUS_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class DashboardAccess:
    """Who may read `/status`: anyone (`token` None) or whoever presents `token`."""

    mode: Literal["public", "token"]
    token: bytes | None

    @classmethod
    def from_config(cls, server: ServerConfig) -> DashboardAccess | None:
        """The access `server` asks for, the token file read now; None when the dashboard is off.

        Raises ConfigError for a token file that cannot be read or holds no usable token, so a mistake stops the
        start instead of locking the operator out later.
        """
        mode = server.dashboard_mode
        if mode == "off":
            return None
        if mode == "public":
            return cls("public", None)
        if server.dashboard_token is not None:
            return cls("token", server.dashboard_token.get_secret_value().encode())
        path = server.dashboard_token_file
        assert path is not None  # the settings model refuses token mode without either
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"server.dashboard_token_file: cannot read {path}: {exc}") from None
        problem = dashboard_token_problem(text)
        if problem is not None:
            raise ConfigError(f"server.dashboard_token_file: the token in {path} {problem}")
        return cls("token", text.encode())

    def refusal(self, authorization: str | None) -> str | None:
        """Why a request with this `Authorization` header may not read `/status`, or None when it may."""
        if self.token is None:
            return None
        if authorization is None or not authorization.lower().startswith(_BEARER):
            return "the dashboard needs its token: send Authorization: Bearer <server.dashboard_token>"
        presented = authorization[len(_BEARER) :].strip().encode("latin-1")
        # Digests of both, so that the comparison takes the same time whatever the length presented.
        if not hmac.compare_digest(hashlib.sha256(presented).digest(), hashlib.sha256(self.token).digest()):
            return "wrong dashboard token"
        return None


def _asset(name: str) -> bytes:
    return files("pushstr.api").joinpath("static", name).read_bytes()


def dashboard_router(service: Service) -> APIRouter | None:
    """The dashboard's routes under `service`'s settings; None when `server.dashboard` comes to off."""
    access = DashboardAccess.from_config(service.settings.server)
    if access is None:
        return None
    page = _asset("dashboard.html")
    assets = {name: (_asset(name), media_type) for name, media_type in ASSETS.items()}
    router = APIRouter()

    @router.get(
        "/status",
        summary="The dashboard's numbers: totals since start (the same series as /metrics) and current states; "
        "with `server.dashboard = token`, only for `Authorization: Bearer <token>`",
        response_model=None,
        responses={**success(Status), **answers(401)},
    )
    async def status(request: Request) -> JSONResponse:
        refusal = access.refusal(request.headers.get("authorization"))
        if refusal is not None:
            response = error_response(401, refusal)
            response.headers.update({**STATUS_HEADERS, "WWW-Authenticate": 'Bearer realm="pushstr dashboard"'})
            return response
        return JSONResponse(status_document(service, access.mode), headers=STATUS_HEADERS)

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @router.get("/dashboard/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return error_response(404, "no such dashboard file")
        body, media_type = found
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)

    return router
