"""The built-in relay endpoint: apps and relay forwarders push `["EVENT", …]` straight to pushstr.

It answers `OK` per NIP-01 and feeds the same admission path as the relay pool, so an event seen both here and on
a relay is pushed once. It serves no reads: `REQ` is answered with `CLOSED`. An event that matched is answered
`OK` only once its pushes are durable (`durable`): no relay may hold it, so nothing else could replay it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from prometheus_client import Counter, Gauge

from pushstr.config import EndpointConfig
from pushstr.engine.pipeline import IngestResult
from pushstr.logutil import RateLimitedLog
from pushstr.ratelimit import TokenBucket

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

MESSAGES = Counter("pushstr_endpoint_messages_total", "Messages received on the built-in endpoint", ["type"])
CONNECTIONS = Gauge("pushstr_endpoint_connections", "Open connections to the built-in endpoint")

Ingest = Callable[[Any, str | None], IngestResult]
Durable = Callable[[], Awaitable[None]]


class RelayEndpoint:
    def __init__(self, config: EndpointConfig, ingest: Ingest, durable: Durable) -> None:
        self._config = config
        self._ingest = ingest
        self._durable = durable
        self._open = 0

    async def serve(self, websocket: WebSocket) -> None:
        if self._open >= self._config.max_connections:
            MESSAGES.labels("refused_connection").inc()
            await websocket.close(code=1013, reason="too many connections")
            return
        await websocket.accept()
        self._open += 1
        CONNECTIONS.inc()
        bucket = TokenBucket(self._config.events_per_minute, burst=self._config.events_per_minute)
        try:
            while True:
                raw = await websocket.receive_text()
                reply, matched = self.handle(raw, bucket)
                if matched:
                    await self._durable()
                if reply is not None:
                    await websocket.send_text(reply.decode())
        except WebSocketDisconnect:
            pass
        finally:
            self._open -= 1
            CONNECTIONS.dec()

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


def _notice(text: str) -> bytes:
    return orjson.dumps(["NOTICE", text])
