"""A minimal HTTP/2 server on asyncio + `h2`, the base of the APNs and FCM fakes.

Requests are answered synchronously by a handler (no awaits on the hot path), so the fake is fast enough to
benchmark a client against it. Every request is recorded unless recording is switched off. Response bodies of any
size are sent as the client's flow-control windows allow; a stream the client resets gets nothing more.

GOAWAY is sent as RFC 9113 §6.8 describes a graceful one: streams up to its last stream id are still answered
on that connection, those above it are dropped unprocessed (the handler never sees them). With `goaway_every=N`
each connection sends one after its N-th request, then closes once it has answered the streams it kept.
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
import hyperframe.frame


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


@dataclass
class Counters:
    """What a server did over its lifetime, for tests that make its clients reconnect."""

    #: Connections accepted.
    connections: int = 0
    #: GOAWAY frames sent.
    goaways: int = 0
    #: Streams dropped without calling the handler because they were above a GOAWAY's last stream id.
    unprocessed: int = 0


class _Connection(asyncio.Protocol):
    def __init__(
        self,
        handler: Handler,
        connections: set[_Connection],
        *,
        goaway_every: int | None = None,
        counters: Counters | None = None,
    ) -> None:
        self._handler = handler
        self._connections = connections
        self._goaway_every = goaway_every
        self.counters = counters or Counters()
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=False)
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, Request] = {}
        #: Response body still to send per stream, waiting for the client to open its windows.
        self._unsent: dict[int, memoryview] = {}
        #: Requests handed to the handler on this connection.
        self._handled = 0
        #: The last stream id of the GOAWAY sent, if one was: streams above it are not processed.
        self._last_stream_id: int | None = None
        #: Set with `goaway_every`: close the connection once the streams up to the last stream id are answered.
        self._close_when_drained = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)
        self.counters.connections += 1
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
                if self._last_stream_id is not None and event.stream_id > self._last_stream_id:
                    self.counters.unprocessed += 1
                    continue
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
                    self._handled += 1
                    if self._handled == self._goaway_every:
                        # Last stream id: the highest stream started; later ones of this read are not.
                        self.goaway(max([event.stream_id, *self._streams]))
                        self._close_when_drained = True
                    self._respond(event.stream_id, self._handler(request))
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
                self._unsent.pop(event.stream_id, None)
        if self._unsent:  # a WINDOW_UPDATE or SETTINGS may have opened a window
            self._send_unsent()
        self._transport.write(self._conn.data_to_send())
        if self._close_when_drained and not self._streams and not self._unsent:
            self._transport.close()

    def goaway(self, last_stream_id: int) -> None:
        """Send GOAWAY, drop the streams above `last_stream_id` unprocessed, and go on serving those up to it.

        h2's `close_connection` would close its state machine, after which it sends nothing more, so the frame is
        written directly instead, after what h2 has queued so far (frames keep their order on the wire).
        """
        assert self._transport is not None
        self._last_stream_id = last_stream_id
        self.counters.goaways += 1
        for stream_id in [stream_id for stream_id in self._streams if stream_id > last_stream_id]:
            del self._streams[stream_id]
            self.counters.unprocessed += 1
        frame = hyperframe.frame.GoAwayFrame(0, last_stream_id=last_stream_id)
        self._transport.write(self._conn.data_to_send() + frame.serialize())

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

    def __init__(
        self, handler: Handler, tls: ssl.SSLContext | None, port: int = 0, *, goaway_every: int | None = None
    ) -> None:
        self._handler = handler
        self._tls = tls
        self._port = port
        self._goaway_every = goaway_every
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.counters = Counters()

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
            lambda: _Connection(
                self._handler, self._connections, goaway_every=self._goaway_every, counters=self.counters
            ),
            "127.0.0.1",
            self._port,
            ssl=self._tls,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None
