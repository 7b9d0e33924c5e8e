"""A small in-memory relay on 127.0.0.1 that enforces strfry's default limits, and counts what clients ask of it.

Real relays are stricter than nostr-sdk's LocalRelay: strfry holds at most 20 concurrent subscriptions per
connection and answers one more REQ with nothing but `["NOTICE", "ERROR: too many concurrent REQs"]` (no CLOSED),
and closes a connection that sends a frame over 131 072 bytes. This relay does the same, so that tests can prove
that pushstr plans within such limits and notices when it did not:

- REQ: stored matches (NIP-01 filters: ids, authors, kinds, #<tag>, since, until, limit, newest first) then EOSE,
  then live matches. Re-sending a sub id replaces that subscription and does not count twice. A new sub id
  beyond `max_subscriptions` gets only the NOTICE; more than `max_filters` filters a CLOSED.
- EVENT: verified, stored, answered with OK, forwarded to every matching subscription. CLOSE ends one.
- A frame over `max_message_length` bytes closes the connection (websocket close code 1009).
- `GET /` with `Accept: application/nostr+json` returns `nip11` when given (with `limitation` as it is); without
  one the request gets no document.

Counters: REQ frames and bytes received, refusals, subscriptions held now and at most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pushstr.nostr.errors import InvalidEvent, InvalidFilter
from pushstr.nostr.event import Event
from pushstr.nostr.filters import Filter, matches, parse_filter

STRFRY_MAX_SUBSCRIPTIONS = 20
STRFRY_MAX_MESSAGE_LENGTH = 131_072
STRFRY_MAX_FILTERS = 200
TOO_MANY = "ERROR: too many concurrent REQs"


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    subscriptions: dict[str, list[Filter]] = field(default_factory=dict)


@dataclass
class RelayCounters:
    req_frames: int = 0
    bytes_received: int = 0
    refused: int = 0
    events_stored: int = 0
    connections: int = 0
    closed_oversized: int = 0
    max_held: int = 0  # the most subscriptions one connection held at once


class StrictRelay:
    """`await relay.start()`, use `relay.url`, `await relay.stop()`. Limits default to strfry's."""

    def __init__(
        self,
        *,
        max_subscriptions: int = STRFRY_MAX_SUBSCRIPTIONS,
        max_message_length: int = STRFRY_MAX_MESSAGE_LENGTH,
        max_filters: int = STRFRY_MAX_FILTERS,
        nip11: dict[str, Any] | None = None,
    ) -> None:
        self.max_subscriptions = max_subscriptions
        self.max_message_length = max_message_length
        self.max_filters = max_filters
        self.nip11 = nip11
        self.counters = RelayCounters()
        self.events: dict[str, Event] = {}
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def held(self) -> int:
        """Subscriptions held now, over every connection."""
        return sum(len(client.subscriptions) for client in self._clients)

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            max_size=self.max_message_length,
            process_request=self._document,
            close_timeout=0.5,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _document(self, connection: ServerConnection, request: Request) -> Response | None:
        if "application/nostr+json" not in request.headers.get("Accept", ""):
            return None  # a websocket handshake (or a plain GET, which then fails as one)
        if self.nip11 is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "no relay information\n")
        body = orjson.dumps(self.nip11)
        headers = Headers({"Content-Type": "application/nostr+json", "Content-Length": str(len(body))})
        return Response(HTTPStatus.OK, "OK", headers, body)

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self.counters.connections += 1
        try:
            async for frame in ws:
                self.counters.bytes_received += len(frame)
                await self._message(client, frame)
        except ConnectionClosed:
            pass  # the client went away, or sent a frame too large (close code 1009)
        finally:
            if ws.close_code == 1009:
                self.counters.closed_oversized += 1
            self._clients.discard(client)

    async def _message(self, client: _Client, frame: str | bytes) -> None:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            await client.ws.send('["NOTICE","ERROR: bad msg: not JSON"]')
            return
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            await client.ws.send('["NOTICE","ERROR: bad msg: not an array"]')
            return
        match message[0]:
            case "REQ":
                await self._req(client, message)
            case "EVENT":
                await self._event(client, message)
            case "CLOSE":
                if len(message) == 2 and isinstance(message[1], str):
                    client.subscriptions.pop(message[1], None)
            case _:
                await client.ws.send('["NOTICE","ERROR: bad msg: unknown command"]')

    async def _req(self, client: _Client, message: list[Any]) -> None:
        self.counters.req_frames += 1
        if len(message) < 3 or not isinstance(message[1], str) or not message[1]:
            await client.ws.send('["NOTICE","ERROR: bad req: no subscription id"]')
            return
        sub_id = message[1]
        if sub_id not in client.subscriptions and len(client.subscriptions) >= self.max_subscriptions:
            self.counters.refused += 1
            await client.ws.send(orjson.dumps(["NOTICE", TOO_MANY]).decode())
            return
        if len(message) - 2 > self.max_filters:
            client.subscriptions.pop(sub_id, None)
            await client.ws.send(orjson.dumps(["CLOSED", sub_id, "error: too many filters"]).decode())
            return
        try:
            filters = [parse_filter(item) for item in message[2:]]
        except InvalidFilter as exc:
            client.subscriptions.pop(sub_id, None)
            await client.ws.send(orjson.dumps(["CLOSED", sub_id, f"error: {exc}"]).decode())
            return
        client.subscriptions[sub_id] = filters
        self.counters.max_held = max(self.counters.max_held, len(client.subscriptions))
        for event in self._stored(filters):
            await client.ws.send(orjson.dumps(["EVENT", sub_id, event.to_dict()]).decode())
        await client.ws.send(orjson.dumps(["EOSE", sub_id]).decode())

    def _stored(self, filters: list[Filter]) -> list[Event]:
        """Stored events matching any filter, newest first, each filter's `limit` applied to its own matches."""
        found: dict[str, Event] = {}
        newest_first = sorted(self.events.values(), key=lambda event: (-event.created_at, event.id))
        for flt in filters:
            hits = [event for event in newest_first if matches(flt, event)]
            for event in hits if flt.limit is None else hits[: flt.limit]:
                found[event.id] = event
        return sorted(found.values(), key=lambda event: (-event.created_at, event.id))

    async def _event(self, client: _Client, message: list[Any]) -> None:
        try:
            if len(message) != 2:
                raise InvalidEvent("EVENT must be [EVENT, object]")
            event = Event.from_dict(message[1])
            event.verify()
        except InvalidEvent as exc:
            event_id = message[1].get("id", "") if len(message) > 1 and isinstance(message[1], dict) else ""
            await client.ws.send(orjson.dumps(["OK", str(event_id), False, f"invalid: {exc}"]).decode())
            return
        duplicate = event.id in self.events
        if not duplicate:
            self.events[event.id] = event
            self.counters.events_stored += 1
        await client.ws.send(orjson.dumps(["OK", event.id, True, "duplicate:" if duplicate else ""]).decode())
        if duplicate:
            return
        for other in list(self._clients):
            for sub_id, filters in list(other.subscriptions.items()):
                if any(matches(flt, event) for flt in filters):
                    try:
                        await other.ws.send(orjson.dumps(["EVENT", sub_id, event.to_dict()]).decode())
                    except ConnectionClosed:  # that client is gone; the others still get the event
                        break
