"""A minimal HTTP/2 server on asyncio + `h2`, the base of the APNs and FCM fakes.

Requests are answered synchronously by a handler (no awaits on the hot path), so the fake is fast enough to
benchmark a client against it. Every request is recorded unless recording is switched off. Response bodies of any
size are sent as the client's flow-control windows allow; a stream the client resets gets nothing more.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Request], Response]


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set[_Connection]) -> None:
        self._handler = handler
        self._connections = connections
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=False)
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, Request] = {}
        #: Response body still to send per stream, waiting for the client to open its windows.
        self._unsent: dict[int, memoryview] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            },
        )
        self._conn.initiate_connection()
        self._conn.increment_flow_control_window(1 << 24)
        transport.write(self._conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            events = self._conn.receive_data(data)
        except Exception:
            self._transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {str(k): str(v) for k, v in event.headers or []}
                self._streams[event.stream_id] = Request(headers.pop(":method", ""), headers.pop(":path", ""), headers)
            elif isinstance(event, h2.events.DataReceived):
                request = self._streams.get(event.stream_id)
                if request is not None:
                    request.body += event.data or b""
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                request = self._streams.pop(event.stream_id, None)
                if request is not None:
                    self._respond(event.stream_id, self._handler(request))
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
                self._unsent.pop(event.stream_id, None)
        if self._unsent:  # a WINDOW_UPDATE or SETTINGS may have opened a window
            self._send_unsent()
        self._transport.write(self._conn.data_to_send())

    def _respond(self, stream_id: int, response: Response) -> None:
        headers = [(":status", str(response.status)), ("content-length", str(len(response.body)))]
        headers += list(response.headers.items())
        self._conn.send_headers(stream_id, headers, end_stream=not response.body)
        if response.body:
            self._unsent[stream_id] = memoryview(response.body)
            self._send_unsent()

    def _send_unsent(self) -> None:
        """Queue as much of each unsent body as the stream and connection windows and the frame size allow."""
        for stream_id, view in list(self._unsent.items()):
            rest = view
            while rest:
                size = min(
                    len(rest), self._conn.local_flow_control_window(stream_id), self._conn.max_outbound_frame_size
                )
                if size <= 0:
                    break
                self._conn.send_data(stream_id, rest[:size].tobytes(), end_stream=size == len(rest))
                rest = rest[size:]
            if rest:
                self._unsent[stream_id] = rest
            else:
                del self._unsent[stream_id]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class H2Server:
    """Serves `handler` over HTTP/2 (TLS with ALPN h2 when given a context) on 127.0.0.1."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None, port: int = 0) -> None:
        self._handler = handler
        self._tls = tls
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """TCP connections open right now (a client that keeps its connection shows 1 throughout)."""
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self._connections), "127.0.0.1", self._port, ssl=self._tls
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None
