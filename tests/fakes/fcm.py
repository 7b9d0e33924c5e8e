"""A fake FCM: the OAuth2 token endpoint and the HTTP v1 `messages:send`, over HTTP/2 + TLS on 127.0.0.1.

The token endpoint verifies the JWT-bearer assertion with the service account's public key (RS256, `aud` = the
token URI, the messaging scope) and hands out random access tokens; `messages:send` accepts only those. Responses
can be scripted with FCM's error shape (`status` and `details[].errorCode`).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.h2server import H2Server, Request, Response
from tests.fakes.tls import SelfSigned, make_self_signed

PROJECT = "pushstr-test"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


@dataclass
class FcmRequest:
    message: dict[str, Any]
    access_token: str
    received_at: float


class FakeFCM:
    """See the module docstring. `write_service_account()` makes a key file whose `token_uri` points here."""

    def __init__(self, workdir: Path, token_lifetime: int = 3600) -> None:
        self._workdir = workdir
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._token_lifetime = token_lifetime
        self._issued: set[str] = set()
        self._script: deque[tuple[int, str, str | None]] = deque()
        self.requests: list[FcmRequest] = []
        self.token_requests = 0
        self._tls: SelfSigned | None = None
        self._server: H2Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def ca_file(self) -> Path:
        assert self._tls is not None
        return self._tls.cert_file

    async def start(self) -> None:
        self._tls = make_self_signed(self._workdir)
        self._server = H2Server(self._handle, self._tls.server_context())
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def write_service_account(self) -> Path:
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "key-1",
            "private_key": pem,
            "client_email": f"pushstr@{PROJECT}.iam.gserviceaccount.com",
            "token_uri": self.token_uri,
        }
        path = self._workdir / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    def set_response(self, status: int, error_status: str, error_code: str | None = None, times: int = 1) -> None:
        """Answer the next `times` sends with an FCM error."""
        self._script.extend([(status, error_status, error_code)] * times)

    def expire_tokens(self) -> None:
        """Forget every access token handed out, as if they had all expired."""
        self._issued.clear()

    def _handle(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/token":
            return self._token(request)
        if request.method == "POST" and request.path == f"/v1/projects/{PROJECT}/messages:send":
            return self._send(request)
        return _error(404, "NOT_FOUND", None)

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = urllib.parse.parse_qs(request.body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return Response(400, {}, b'{"error": "unsupported_grant_type"}')
        try:
            claims = jwt.decode(
                form["assertion"][0], self._key.public_key(), algorithms=["RS256"], audience=self.token_uri
            )
        except (jwt.PyJWTError, KeyError):
            return Response(400, {}, b'{"error": "invalid_grant"}')
        if SCOPE not in str(claims.get("scope", "")).split():
            return Response(400, {}, b'{"error": "invalid_scope"}')
        token = "ya29." + secrets.token_urlsafe(24)
        self._issued.add(token)
        body = {"access_token": token, "expires_in": self._token_lifetime, "token_type": "Bearer"}
        return Response(200, {"content-type": "application/json"}, orjson.dumps(body))

    def _send(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self._issued:
            return _error(401, "UNAUTHENTICATED", None)
        try:
            message = orjson.loads(request.body)["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        self.requests.append(FcmRequest(message, token, time.monotonic()))
        if self._script:
            status, error_status, code = self._script.popleft()
            return _error(status, error_status, code)
        if not message.get("token"):
            return _error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        return Response(
            200, {"content-type": "application/json"}, orjson.dumps({"name": f"projects/{PROJECT}/messages/1"})
        )


def _error(status: int, error_status: str, code: str | None) -> Response:
    error: dict[str, Any] = {"code": status, "message": error_status.lower(), "status": error_status}
    if code is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    headers = {"content-type": "application/json"}
    if status == 429:
        headers["retry-after"] = "1"
    return Response(status, headers, orjson.dumps({"error": error}))
