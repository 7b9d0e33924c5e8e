"""A fake APNs provider API: HTTP/2 over TLS on 127.0.0.1 that checks the ES256 provider token like Apple does.

It answers `POST /3/device/<token>` with 200 and an `apns-id`, or with what a test scripted through
`set_response` (a status, an Apple `reason`, a `Retry-After`, a 410 timestamp). Every request is recorded with its
headers, its JSON payload, the provider token it carried and its arrival time (`time.perf_counter()`, which on
Linux is CLOCK_MONOTONIC and so comparable across processes: the latency benchmark relies on it). `on_request`
sees each request as it arrives, for callers (benchmarks) that keep only a few fields of many requests.
`goaway_every=N` makes each connection send GOAWAY after its N-th request, as APNs does when it rotates
connections, and close once it has answered the streams up to the GOAWAY's last stream id (see `h2server`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.h2server import Counters, H2Server, Request, Response
from tests.fakes.tls import SelfSigned, make_self_signed

#: Apple refuses provider tokens older than an hour.
TOKEN_MAX_AGE = 3600


@dataclass
class ApnsRequest:
    device_token: str
    headers: dict[str, str]
    payload: dict[str, object]
    provider_token: str
    size: int
    #: `time.perf_counter()` when the request was complete (its last frame parsed).
    received_at: float


@dataclass
class _Scripted:
    status: int
    reason: str | None
    retry_after: str | None
    timestamp_ms: int | None


class FakeAPNs:
    """See the module docstring. `start()` → `url`, `ca_file`; `stop()` when done."""

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey,
        key_id: str,
        team_id: str,
        workdir: Path,
        *,
        record: bool = True,
        port: int = 0,
        on_request: Callable[[ApnsRequest], None] | None = None,
        goaway_every: int | None = None,
    ) -> None:
        self._public_key = public_key
        self._key_id = key_id
        self._team_id = team_id
        self._workdir = workdir
        self._record = record
        self._on_request = on_request
        self._script: deque[_Scripted] = deque()
        self._default = _Scripted(200, None, None, None)
        #: Tokens whose signature checked out, with their issue time: a token is verified once, as at Apple.
        self._verified: dict[str, float] = {}
        self._waiters: deque[asyncio.Future[ApnsRequest]] = deque()
        self.requests: list[ApnsRequest] = []
        self.tokens_seen: list[str] = []
        self.count = 0
        self._tls: SelfSigned | None = None
        self._server: H2Server | None = None
        self._port = port
        self._goaway_every = goaway_every
        self._counters: Counters | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.port}"

    @property
    def ca_file(self) -> Path:
        assert self._tls is not None
        return self._tls.cert_file

    @property
    def connections(self) -> int:
        assert self._server is not None
        return self._server.connections

    @property
    def counters(self) -> Counters:
        """Connections accepted, GOAWAYs sent and streams dropped unprocessed, since the last `start` (kept after
        `stop`, so a test can read them once the server is down)."""
        assert self._counters is not None
        return self._counters

    async def start(self) -> None:
        # A restart keeps the certificate: a client that trusted it (its `ca_file`) still does on the same port.
        if self._tls is None:
            self._tls = make_self_signed(self._workdir)
        self._server = H2Server(self._handle, self._tls.server_context(), self._port, goaway_every=self._goaway_every)
        self._counters = self._server.counters
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def set_response(
        self,
        status: int = 200,
        reason: str | None = None,
        *,
        retry_after: str | None = None,
        timestamp_ms: int | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` requests like this (or every request from now on with `times=None`)."""
        scripted = _Scripted(status, reason, retry_after, timestamp_ms)
        if times is None:
            self._default = scripted
        else:
            self._script.extend([scripted] * times)

    async def next_request(self, timeout: float = 5.0) -> ApnsRequest:
        """The next request to arrive from now on."""
        waiter: asyncio.Future[ApnsRequest] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await asyncio.wait_for(waiter, timeout)

    def _check_token(self, token: str) -> str | None:
        """None when the provider token is good, else Apple's reason for refusing it."""
        issued_at = self._verified.get(token)
        if issued_at is None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self._public_key, algorithms=["ES256"], options={"verify_aud": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if header.get("kid") != self._key_id or claims.get("iss") != self._team_id:
                return "InvalidProviderToken"
            issued_at = float(claims["iat"])
            self._verified[token] = issued_at
            self.tokens_seen.append(token)
        if time.time() - issued_at > TOKEN_MAX_AGE:
            return "ExpiredProviderToken"
        return None

    def _handle(self, request: Request) -> Response:
        received_at = time.perf_counter()
        self.count += 1
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        if request.method != "POST" or not request.path.startswith("/3/device/"):
            return _error(405 if request.method != "POST" else 404, "MethodNotAllowed", apns_id)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(403, "MissingProviderToken", apns_id)
        refused = self._check_token(token)
        if self._record or self._waiters or self._on_request is not None:
            try:
                payload = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                payload = {}
            recorded = ApnsRequest(
                request.path.removeprefix("/3/device/"),
                request.headers,
                payload,
                token,
                len(request.body),
                received_at,
            )
            if self._record:
                self.requests.append(recorded)
            if self._on_request is not None:
                self._on_request(recorded)
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(recorded)
        if refused is not None:
            return _error(403, refused, apns_id)
        if len(request.body) > 4096:
            return _error(413, "PayloadTooLarge", apns_id)
        if not request.headers.get("apns-topic"):
            return _error(400, "MissingTopic", apns_id)
        scripted = self._script.popleft() if self._script else self._default
        if scripted.status == 200:
            return Response(200, {"apns-id": apns_id})
        headers = {"apns-id": apns_id}
        if scripted.retry_after is not None:
            headers["retry-after"] = scripted.retry_after
        body: dict[str, object] = {"reason": scripted.reason or "InternalServerError"}
        if scripted.timestamp_ms is not None:
            body["timestamp"] = scripted.timestamp_ms
        return Response(scripted.status, headers, orjson.dumps(body))


def _error(status: int, reason: str, apns_id: str) -> Response:
    return Response(status, {"apns-id": apns_id, "content-type": "application/json"}, orjson.dumps({"reason": reason}))
