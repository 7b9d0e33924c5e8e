"""The built-in relay endpoint: apps and relay forwarders push `["EVENT", …]` straight to pushstr.

It answers `OK` per NIP-01 and feeds the same admission path as the relay pool, so an event seen both here and on
a relay is pushed once. It serves no reads: `REQ` is answered with `CLOSED`. An event that matched is answered
`OK` only once its pushes are durable (`durable`): no relay may hold it, so nothing else could replay it.

It is open to anyone, so it is bounded: connections in total and per client address, an idle timeout, a size
limit per message and an event rate per connection. Binary frames are read as UTF-8 text (NIP-01 messages are
JSON text, and some clients send them as binary frames). Whatever a client sends costs at most one counted reply:
a connection whose handling fails unexpectedly is closed and logged once per kind of failure, never per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from prometheus_client import Counter, Gauge

from pushstr.config import EndpointConfig
from pushstr.engine.pipeline import IngestResult
from pushstr.logutil import RateLimitedLog
from pushstr.net.clientaddr import TrustedProxies, client_address
from pushstr.ratelimit import TokenBucket

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

MESSAGES = Counter("pushstr_endpoint_messages_total", "Messages received on the built-in endpoint", ["type"])
CONNECTIONS = Gauge("pushstr_endpoint_connections", "Open connections to the built-in endpoint")
CLOSED = Counter("pushstr_endpoint_closed_total", "Endpoint connections refused or closed by pushstr", ["reason"])
for _reason in ("too_many", "too_many_from_address", "idle", "error"):
    CLOSED.labels(_reason)

Ingest = Callable[[Any, str | None], IngestResult]
Durable = Callable[[], Awaitable[None]]


class RelayEndpoint:
    def __init__(self, config: EndpointConfig, ingest: Ingest, durable: Durable, trusted: TrustedProxies) -> None:
        """`trusted` are the reverse proxies whose `X-Forwarded-For` names the client (see `net.clientaddr`)."""
        self._config = config
        self._trusted = trusted
        self._ingest = ingest
        self._durable = durable
        self._open = 0
        self._by_address: Tally[str] = Tally()

    async def serve(self, websocket: WebSocket) -> None:
        address = client_address(websocket, self._trusted)
        if self._open >= self._config.max_connections:
            await self._refuse(websocket, "too_many", "too many connections")
            return
        if self._by_address[address] >= self._config.max_connections_per_address:
            await self._refuse(websocket, "too_many_from_address", "too many connections from this address")
            return
        await websocket.accept()
        self._open += 1
        self._by_address[address] += 1
        CONNECTIONS.inc()
        try:
            await self._converse(websocket)
        except WebSocketDisconnect:
            pass
        except Exception as exc:  # a bug must cost one log line and one connection, not the server
            CLOSED.labels("error").inc()
            _rate_log.warning(f"endpoint-{type(exc).__name__}", "endpoint connection failed", exc_info=True)
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)
        finally:
            self._open -= 1
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]
            CONNECTIONS.dec()

    async def _converse(self, websocket: WebSocket) -> None:
        bucket = TokenBucket(self._config.events_per_minute, burst=self._config.events_per_minute)
        while True:
            try:
                frame = await asyncio.wait_for(websocket.receive(), self._config.idle_timeout_seconds)
            except TimeoutError:
                CLOSED.labels("idle").inc()
                await websocket.close(code=1000, reason="idle")
                return
            if frame["type"] == "websocket.disconnect":
                return
            raw = _text(frame)
            if raw is None:
                MESSAGES.labels("garbage").inc()
                reply: bytes | None = _notice("invalid: binary frame is not UTF-8 text")
                matched = False
            else:
                reply, matched = self.handle(raw, bucket)
            if matched:
                await self._durable()
            if reply is not None:
                await websocket.send_text(reply.decode())

    @staticmethod
    async def _refuse(websocket: WebSocket, reason: str, text: str) -> None:
        MESSAGES.labels("refused_connection").inc()
        CLOSED.labels(reason).inc()
        await websocket.close(code=1013, reason=text)

    def handle(self, raw: str, bucket: TokenBucket) -> tuple[bytes | None, bool]:
        """The reply to one client message (None when NIP-01 wants no reply), and whether it must wait until what
        the message caused is durable (an accepted event: its pushes, or its mark as handled)."""
        if len(raw) > self._config.max_message_bytes:
            MESSAGES.labels("too_large").inc()
            return _notice(f"invalid: message larger than {self._config.max_message_bytes} bytes"), False
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            MESSAGES.labels("garbage").inc()
            return _notice("invalid: message is not JSON"), False
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            MESSAGES.labels("garbage").inc()
            return _notice("invalid: message must be a JSON array starting with a type"), False
        kind = message[0]
        if kind == "EVENT":
            MESSAGES.labels("event").inc()
            return self._event(message, bucket)
        if kind == "REQ":
            MESSAGES.labels("req").inc()
            sub_id = message[1] if len(message) > 1 and isinstance(message[1], str) else ""
            return orjson.dumps(["CLOSED", sub_id[:64], "restricted: this endpoint accepts events only"]), False
        if kind == "CLOSE":
            MESSAGES.labels("close").inc()
            return None, False
        MESSAGES.labels("unknown").inc()
        return _notice(f"invalid: unsupported message type {kind[:20]!r}"), False

    def _event(self, message: list[Any], bucket: TokenBucket) -> tuple[bytes, bool]:
        event = message[1] if len(message) == 2 else None
        event_id = event.get("id") if isinstance(event, dict) else None
        reply_id = event_id if isinstance(event_id, str) and len(event_id) <= 64 else ""
        if event is None:
            return orjson.dumps(["OK", reply_id, False, "invalid: EVENT takes exactly one event"]), False
        if not bucket.take():
            MESSAGES.labels("rate_limited").inc()
            return orjson.dumps(["OK", reply_id, False, "rate-limited: slow down"]), False
        result = self._ingest(event, None)
        return orjson.dumps(["OK", reply_id, result.accepted, result.message]), result.accepted


def _text(frame: Any) -> str | None:
    """A frame's message as text: text frames as they are, binary ones decoded as UTF-8 (None when they are not)."""
    text = frame.get("text")
    if text is not None:
        return str(text)
    try:
        return bytes(frame.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None


def _notice(text: str) -> bytes:
    return orjson.dumps(["NOTICE", text])
