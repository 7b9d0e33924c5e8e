"""A small HTTP/2 client for one origin on asyncio: one kept-open TLS connection, many streams on it.

A push gateway sends many small requests to one host (APNs) and wants them multiplexed on a single connection,
as Apple asks. General-purpose pools (httpx/httpcore) spend most of their time on pool bookkeeping once hundreds
of streams are in flight, and a general HTTP/2 state machine (`h2`) spent about half of a push's CPU on
validating transitions a client of one origin never makes. This client keeps one `asyncio.Protocol` per
connection with its own framing (`h2frames`), HPACK encoding (`hpack_encoder`) and decoding (`hpack_decoder`), and one
future per stream, so a request costs one HEADERS (+ DATA) frame out and one dict lookup per frame in.

Behaviour callers rely on:

- The connection opens on first use, and again transparently after it was lost or the server sent GOAWAY.
- GOAWAY (RFC 9113 §6.8) drains the connection: no new streams go on it (new requests get a new connection), and
  it is read on so that the streams at or below the GOAWAY's last stream id, which the server may have processed,
  get their answers; it is closed once none is left (each ends at the latest at its request's deadline). The
  streams above it the server guarantees it did not process: they fail with `StreamRefused`, as does a stream
  reset with REFUSED_STREAM.
- `H2Client.request` sends a refused request once more by itself (on a new connection after GOAWAY), so a
  caller sees `StreamRefused` only when the second attempt was refused too. Nothing else is resent: a request
  that may have reached the server is never sent twice by this client.
- No more streams are opened than the server's MAX_CONCURRENT_STREAMS allows; extra requests wait for a slot.
- Request bodies respect flow control (sent as the server's windows allow).
- Every request has a deadline; on expiry its stream is reset and `RequestTimeout` raised.
- A response body is kept up to a cap (`MAX_RESPONSE_BYTES` unless set): one byte more and its stream is reset and
  `ResponseTooLarge` raised, while the connection and the other streams on it go on. Header blocks over 64 KiB
  are refused; a header block in CONTINUATION frames holds up the whole connection, so that fails all of it
  (`ConnectionLost`).
- A server breaking HTTP/2's rules (framing, flow control, HPACK) gets GOAWAY and the connection is closed; its
  requests in flight fail with `ConnectionLost` and new ones go on a new connection.
- Failures are `H2Error`s, and their type tells whether the server may have processed the request:
  `StreamRefused` means it guarantees it did not, so resending is safe; `ConnectionLost` (the connection died
  before the answer, also one draining after GOAWAY), `RequestTimeout` and `StreamReset` leave it unknown.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pushstr.net import h2frames, hpack_decoder
from pushstr.net.hpack_encoder import HeaderEncoder

#: Response body bytes kept per request by default. Provider replies are a status and at most a small JSON error;
#: anything longer is not one, and a server (or whoever stands in for it) must not make us buffer without bound.
MAX_RESPONSE_BYTES = 64 * 1024
#: Receive window we grant the server for the connection as a whole: responses never wait on our acknowledgements.
#: It stays large although bodies are capped: it is shared by every stream in flight (hundreds of small replies at
#: once), and received data is acknowledged as it arrives, so memory is bounded by the per-stream cap, not by this.
_CONNECTION_WINDOW = 1 << 24
#: Largest header list we accept (advertised as SETTINGS_MAX_HEADER_LIST_SIZE, enforced on the coded block as it
#: arrives and on the decoded list): provider replies carry a handful of short headers.
_MAX_HEADER_LIST_SIZE = 64 * 1024
#: Requests of one loop turn written together at most (see `_Connection._flush_soon`).
_WRITE_BATCH = 8


class H2Error(Exception):
    """A request got no complete response."""


class ConnectError(H2Error):
    """No HTTP/2 connection could be made (refused, TLS failure, no ALPN h2, or too slow)."""


class ConnectionLost(H2Error):
    """The connection died with the request in flight; the server may or may not have processed it."""


class StreamRefused(H2Error):
    """The server guarantees it did not process the request; sending it again is safe.

    Raised for a stream above a GOAWAY's last stream id and for RST_STREAM REFUSED_STREAM. `H2Client.request` has
    already sent the request a second time when a caller sees this.
    """


class StreamReset(H2Error):
    """The server reset the stream (RST_STREAM) with an error code other than REFUSED_STREAM."""


class RequestTimeout(H2Error):
    """No complete response within the request's deadline; the stream was reset."""


class ClientClosed(H2Error):
    """The client was closed (`aclose`)."""


class ResponseTooLarge(H2Error):
    """The response body went over the client's cap; the rest was not read (the stream was reset).

    The server did get the request and may have acted on it. `status` is the response's status code (None if the
    body came without one). The same exception is raised by `pushstr.net.httpclient.post_bounded`.
    """

    def __init__(self, limit: int, status: int | None = None) -> None:
        super().__init__(f"response body over {limit} bytes" + (f" (status {status})" if status else ""))
        self.limit = limit
        self.status = status


#: Which error (if any) a stream id in flight should fail with.
_ErrorFor = Callable[[int], H2Error | None]


class H2Response:
    """A complete response: status, headers (lower-case names, pseudo-headers removed) and body.

    The headers are decoded when first read: most answers are read for their status only (`hpack_decoder`).
    """

    __slots__ = ("_fields", "_headers", "content", "status")

    def __init__(self, status: int, fields: list[hpack_decoder.Field], content: bytes) -> None:
        self.status = status
        self.content = content
        self._fields = fields
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = hpack_decoder.headers(self._fields)
        return self._headers


@dataclass(slots=True)
class _Stream:
    response: asyncio.Future[H2Response]
    #: What the server's flow control lets us send on this stream now.
    send_window: int
    status: int = 0
    fields: list[hpack_decoder.Field] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    #: Set while the request body waits for the server to open its flow-control window.
    window: asyncio.Future[None] | None = None


class _Unusable(Exception):
    """The connection takes no new streams (lost or GOAWAY) before this request got one: try a fresh connection."""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: its frames (`h2frames`), HPACK state, flow-control windows and streams in flight.

    Only what a client of one origin meets is kept: client streams (odd ids, opened in order), the server's
    settings, the send windows of the connection and of each stream, and how much received data the connection
    window still has to be credited. Server pushes are refused at the preface, so a PUSH_PROMISE is a violation.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self._loop = loop
        self._max_body = max_body
        self._encoder = HeaderEncoder()
        self._reader = h2frames.FrameReader()
        self._out = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._next_stream_id = 1
        # The server's settings (RFC 9113 §6.5.2 defaults until its SETTINGS frame says otherwise).
        self._max_concurrent = h2frames.MAX_STREAM_ID
        self._initial_window = h2frames.DEFAULT_WINDOW
        self._max_frame_size = h2frames.DEFAULT_MAX_FRAME_SIZE
        self._send_window = h2frames.DEFAULT_WINDOW  # the connection's
        self._unacknowledged = 0  # received DATA not yet credited back to the connection window
        #: A header block arriving in CONTINUATION frames: (stream id, fragments so far, END_STREAM).
        self._continued: tuple[int, bytearray, bool] | None = None
        #: Resolved by the server's first SETTINGS frame: only then is its MAX_CONCURRENT_STREAMS known.
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        #: False once no new streams may be opened here (GOAWAY received, connection lost or closing).
        self.usable = True
        #: True after GOAWAY: the connection closes as soon as its last stream is done.
        self._draining = False
        self._flush_scheduled = False
        self._held = 0

    # -- asyncio.Protocol --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self._fail_ready(ConnectError("the server did not agree to HTTP/2 (ALPN h2)"))
            transport.close()
            return
        # The stream window is one byte over the body cap: a body within the cap never waits for a WINDOW_UPDATE,
        # and one byte more shows it is too large. So the server cannot send much more on a stream before our
        # reset reaches it, whatever the body's size.
        local = {
            h2frames.HEADER_TABLE_SIZE: 0,  # no HPACK state for responses: see `hpack_decoder`
            h2frames.ENABLE_PUSH: 0,
            h2frames.INITIAL_WINDOW_SIZE: min(self._max_body + 1, h2frames.MAX_WINDOW),
            h2frames.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST_SIZE,
        }
        preface = h2frames.PREFACE + h2frames.settings(local) + h2frames.window_update(0, _CONNECTION_WINDOW)
        transport.write(preface)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail_ready(ConnectError("connection closed during the HTTP/2 handshake"))
        self._fail_streams(lambda _stream_id: ConnectionLost("connection lost"))
        self._wake_all_slot_waiters()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            for kind, flags, stream_id, payload in self._reader.feed(data):
                if self._continued is not None and kind != h2frames.CONTINUATION:
                    raise h2frames.ProtocolViolation("a header block interrupted")
                if not self.ready.done() and kind != h2frames.SETTINGS:
                    raise h2frames.ProtocolViolation("the server's preface is not a SETTINGS frame")
                handler = self._handlers.get(kind)
                if handler is not None:  # unknown frame types are ignored (RFC 9113 §4.1)
                    handler(self, flags, stream_id, payload)
        except (h2frames.ProtocolViolation, hpack_decoder.HpackViolation) as exc:
            code = exc.code if isinstance(exc, h2frames.ProtocolViolation) else h2frames.COMPRESSION_ERROR
            self._out += h2frames.goaway(0, code)
            self._flush()
            self._shut(ConnectionLost(f"HTTP/2 protocol error from the server: {exc}"))
            return
        self._flush()

    # -- requests ----------------------------------------------------------------------------------------------

    async def request(self, headers: list[tuple[str, str]], body: bytes) -> H2Response:
        """Send one request on a new stream and wait for its response; `_Unusable` when no stream could be opened."""
        await self._acquire_slot()
        stream_id = self._next_stream_id
        if stream_id > h2frames.MAX_STREAM_ID:  # ids exhausted: this request was never sent
            self.usable = False
            self._wake_all_slot_waiters()
            raise _Unusable
        self._next_stream_id += 2
        block = self._encoder.encode(headers)
        self._out += h2frames.header_frames(stream_id, block, not body, self._max_frame_size)
        stream = _Stream(self._loop.create_future(), self._initial_window)
        self._streams[stream_id] = stream
        try:
            if body:
                await self._send_body(stream_id, stream, body)
            self._flush_soon()
            return await stream.response
        except BaseException:
            # Cancelled (deadline) or failed: give the server and our slot count the stream back.
            if self._streams.pop(stream_id, None) is not None:
                self._reset(stream_id)
                self._stream_closed()
            elif stream.response.done() and not stream.response.cancelled():
                stream.response.exception()  # failed in the same turn we were cancelled: nobody else will read it
            raise

    async def _acquire_slot(self) -> None:
        """Wait until one more stream fits under the server's MAX_CONCURRENT_STREAMS."""
        while True:
            if not self.usable:
                raise _Unusable
            if len(self._streams) < self._max_concurrent:
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release_slot()  # we were woken for a free slot we will not use: pass it on
                else:
                    self._slot_waiters.remove(waiter)
                raise

    def _release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _stream_closed(self) -> None:
        """A stream left `_streams`: its slot goes to the next waiter, and a drained connection is closed."""
        self._release_slot()
        if self._draining and not self._streams:
            self._shut(None)

    def _wake_all_slot_waiters(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        """Send as much as the stream and connection windows allow, then wait for WINDOW_UPDATE, until done."""
        view = memoryview(body)
        while view:
            if stream.response.done():
                return  # answered or failed before the body was complete; the caller reads the outcome
            size = min(len(view), stream.send_window, self._send_window, self._max_frame_size)
            if size <= 0:
                stream.window = self._loop.create_future()
                self._flush()
                await stream.window
                stream.window = None
                continue
            chunk, view = view[:size], view[size:]
            stream.send_window -= size
            self._send_window -= size
            self._out += h2frames.frame(h2frames.DATA, 0 if view else h2frames.END_STREAM, stream_id, chunk)

    # -- received frames ---------------------------------------------------------------------------------------

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise h2frames.ProtocolViolation("DATA on stream 0")
        data = h2frames.unpadded(flags, payload)
        # All of it counts against the connection window, also on a stream just reset: credited as it arrives,
        # so the other streams never starve. A stream's own window is over the body cap (see `connection_made`)
        # and only padding could exhaust it, so padding is credited back to the stream.
        self._unacknowledged += len(payload)
        if self._unacknowledged >= _CONNECTION_WINDOW // 2:
            self._out += h2frames.window_update(0, self._unacknowledged)
            self._unacknowledged = 0
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if len(payload) > len(data) and not flags & h2frames.END_STREAM:
            self._out += h2frames.window_update(stream_id, len(payload) - len(data))
        if data:
            if len(stream.body) + len(data) > self._max_body:
                self._too_large(stream_id, stream)
                return
            stream.body += data
        if flags & h2frames.END_STREAM:
            self._on_end(stream_id)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or not stream_id % 2:
            raise h2frames.ProtocolViolation("HEADERS on a stream the client did not open")
        fragment = h2frames.header_fragment(flags, payload)
        end_stream = bool(flags & h2frames.END_STREAM)
        if flags & h2frames.END_HEADERS:
            self._on_header_block(stream_id, fragment, end_stream)
        else:
            self._continued = (stream_id, bytearray(fragment), end_stream)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        continued = self._continued
        if continued is None or continued[0] != stream_id:
            raise h2frames.ProtocolViolation("CONTINUATION without its HEADERS")
        block = continued[1]
        block += payload
        if len(block) > _MAX_HEADER_LIST_SIZE:
            raise h2frames.ProtocolViolation("header block over 64 KiB")
        if flags & h2frames.END_HEADERS:
            self._continued = None
            self._on_header_block(stream_id, bytes(block), continued[2])

    def _on_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        """Cut a complete block into fields (checked even for a stream we gave up on), then apply it."""
        fields = hpack_decoder.fields(block, _MAX_HEADER_LIST_SIZE)
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream we reset or gave up on
        if not stream.status:  # the response's headers; a later block is trailers, which a push never needs
            status = hpack_decoder.status(fields)
            if len(status) != 3 or not status.isdigit():
                raise h2frames.ProtocolViolation("a response without a valid :status")
            code = int(status)
            if code >= 200:
                stream.status = code
                stream.fields = fields
            elif end_stream:
                raise h2frames.ProtocolViolation("an informational response ending its stream")
        if end_stream:
            self._on_end(stream_id)

    def _on_reset_frame(self, _flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise h2frames.ProtocolViolation("RST_STREAM on stream 0")
        code = h2frames.word(payload)
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._stream_closed()
        if code == h2frames.REFUSED_STREAM:
            self._fail(stream, StreamRefused("stream refused by the server"))
        else:
            self._fail(stream, StreamReset(f"stream reset by the server: error code {code}"))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise h2frames.ProtocolViolation("SETTINGS on a stream")
        if flags & h2frames.ACK:
            if payload:
                raise h2frames.ProtocolViolation("SETTINGS ACK with a payload", h2frames.FRAME_SIZE_ERROR)
            return
        more_streams = window_changed = False
        for code, value in h2frames.parse_settings(payload):
            if code == h2frames.HEADER_TABLE_SIZE:
                if value != self._encoder.header_table_size:
                    self._encoder.header_table_size = value
            elif code == h2frames.MAX_CONCURRENT_STREAMS:
                more_streams = value > self._max_concurrent
                self._max_concurrent = value
            elif code == h2frames.INITIAL_WINDOW_SIZE:
                if value > h2frames.MAX_WINDOW:
                    raise h2frames.ProtocolViolation("INITIAL_WINDOW_SIZE too large", h2frames.FLOW_CONTROL_ERROR)
                delta, self._initial_window = value - self._initial_window, value
                for stream in self._streams.values():  # RFC 9113 §6.9.2: open streams' windows move by the change
                    stream.send_window += delta
                window_changed = delta > 0
            elif code == h2frames.MAX_FRAME_SIZE:
                if not h2frames.DEFAULT_MAX_FRAME_SIZE <= value <= h2frames.LARGEST_FRAME_SIZE:
                    raise h2frames.ProtocolViolation("MAX_FRAME_SIZE out of range")
                self._max_frame_size = value
            elif code == h2frames.ENABLE_PUSH and value > 1:
                raise h2frames.ProtocolViolation("ENABLE_PUSH neither 0 nor 1")
        self._out += h2frames.frame(h2frames.SETTINGS, h2frames.ACK, 0)
        if not self.ready.done():
            self.ready.set_result(None)
        if window_changed:
            self._on_window(None)
        if more_streams:
            for _ in range(max(0, self._max_concurrent - len(self._streams))):
                self._release_slot()

    def _on_push_promise(self, _flags: int, _stream_id: int, _payload: bytes) -> None:
        raise h2frames.ProtocolViolation("PUSH_PROMISE although push is disabled")

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0 or len(payload) != 8:
            raise h2frames.ProtocolViolation("a malformed PING", h2frames.FRAME_SIZE_ERROR)
        if not flags & h2frames.ACK:
            self._out += h2frames.frame(h2frames.PING, h2frames.ACK, 0, payload)

    def _on_goaway_frame(self, _flags: int, stream_id: int, payload: bytes) -> None:
        """Drain: no new streams here, those the server did not process fail as refused, the rest get their answers.

        A server may send more than one GOAWAY, each with a last stream id no higher than the one before: each
        refuses what is above its own.
        """
        if stream_id != 0:
            raise h2frames.ProtocolViolation("GOAWAY on a stream")
        last = h2frames.word(payload) & h2frames.MAX_STREAM_ID
        h2frames.word(payload, 4)  # the error code must be there; which one it is changes nothing here
        self.usable = False
        self._draining = True
        self._fail_streams(lambda stream_id: StreamRefused("server sent GOAWAY") if stream_id > last else None)
        self._wake_all_slot_waiters()
        if not self._streams:
            self._shut(None)

    def _on_window_update(self, _flags: int, stream_id: int, payload: bytes) -> None:
        increment = h2frames.word(payload) & h2frames.MAX_WINDOW
        if not increment:
            raise h2frames.ProtocolViolation("WINDOW_UPDATE of 0")
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > h2frames.MAX_WINDOW:
                raise h2frames.ProtocolViolation("connection window over 2^31-1", h2frames.FLOW_CONTROL_ERROR)
            self._on_window(None)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.send_window += increment
        if stream.send_window > h2frames.MAX_WINDOW:
            raise h2frames.ProtocolViolation("stream window over 2^31-1", h2frames.FLOW_CONTROL_ERROR)
        self._on_window(stream_id)

    _handlers: ClassVar[dict[int, Callable[[_Connection, int, int, bytes], None]]] = {
        h2frames.DATA: _on_data,
        h2frames.HEADERS: _on_headers,
        h2frames.CONTINUATION: _on_continuation,
        h2frames.RST_STREAM: _on_reset_frame,
        h2frames.SETTINGS: _on_settings,
        h2frames.PUSH_PROMISE: _on_push_promise,
        h2frames.PING: _on_ping,
        h2frames.GOAWAY: _on_goaway_frame,
        h2frames.WINDOW_UPDATE: _on_window_update,
    }

    # -- stream outcomes ---------------------------------------------------------------------------------------

    def _too_large(self, stream_id: int, stream: _Stream) -> None:
        """Drop the body read so far and cancel the stream: the server stops sending, the slot is free again."""
        del self._streams[stream_id]
        self._reset(stream_id)
        self._stream_closed()
        self._fail(stream, ResponseTooLarge(self._max_body, stream.status or None))

    def _on_end(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._stream_closed()
        if not stream.response.done():
            stream.response.set_result(H2Response(stream.status, stream.fields, bytes(stream.body)))

    def _on_window(self, stream_id: int | None) -> None:
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is not None and stream.window is not None and not stream.window.done():
                stream.window.set_result(None)
            return
        for stream in self._streams.values():  # the connection window opened: every waiting body may go on
            if stream.window is not None and not stream.window.done():
                stream.window.set_result(None)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _fail(self, stream: _Stream, error: H2Error) -> None:
        if not stream.response.done():
            stream.response.set_exception(error)
        if stream.window is not None and not stream.window.done():
            stream.window.set_result(None)  # the body loop sees the failed response and stops

    def _fail_streams(self, error_for: _ErrorFor) -> None:
        for stream_id in list(self._streams):
            error = error_for(stream_id)
            if error is not None:
                self._fail(self._streams.pop(stream_id), error)

    def _fail_ready(self, error: H2Error) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved here: nobody may be waiting any more (connect deadline)

    def _reset(self, stream_id: int) -> None:
        self._out += h2frames.rst_stream(stream_id, h2frames.CANCEL)
        self._flush()

    def _shut(self, error: H2Error | None) -> None:
        """Stop using this connection: fail what is in flight (when `error` is given) and close the socket."""
        self.usable = False
        if error is not None:
            self._fail_streams(lambda _stream_id: error)
        self._wake_all_slot_waiters()
        if self._transport is not None:
            self._transport.close()

    def _flush_soon(self) -> None:
        """Write the first request of a loop turn at once and the others made in the same turn in batches.

        Workers woken by one read of responses all send their next request in the same turn. Writing each at once
        costs one TLS record and one `send` per request, the largest part of a request's cost to both ends;
        holding them all to the end of the turn makes the server idle while they are prepared (client and server
        take turns instead of working in parallel, a third less throughput). So the first goes out at once and
        the server starts on it, every `_WRITE_BATCH`-th writes what has gathered, and the rest is written at the
        start of the next turn: nothing waits longer than the rest of this turn.
        """
        self._held += 1
        if not self._flush_scheduled:
            self._flush()
            self._flush_scheduled = True
            self._loop.call_soon(self._end_of_turn)
        elif self._held >= _WRITE_BATCH:
            self._flush()

    def _end_of_turn(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        """Write what is queued now (acknowledgements, resets, settings, and the requests `_flush_soon` held)."""
        self._held = 0
        if not self._out:
            return
        data, self._out = self._out, bytearray()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def aclose(self) -> None:
        """Say GOAWAY, close the socket and wait (briefly) until it is closed."""
        if self._transport is not None and not self._transport.is_closing():
            self._out += h2frames.goaway(0, h2frames.NO_ERROR)  # no server streams were processed: last id 0
            self._flush()
        self._shut(ClientClosed("client closed"))
        if self._transport is not None:
            try:
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self.closed)
            except TimeoutError:
                self._transport.abort()


class H2Client:
    """HTTP/2 requests to one `https://host[:port]` origin over a single kept-open connection.

    `ca_file` adds a trusted CA (private gateways, local fakes) on top of the system store. `timeout` is the
    default per-request deadline in seconds, connecting included. `max_response_bytes` caps each response body
    (`ResponseTooLarge` beyond it).
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "https" or not url.hostname or url.path.strip("/") or url.query:
            raise ValueError(f"expected an https:// origin without a path, got {base_url!r}")
        if max_response_bytes < 0:
            raise ValueError(f"max_response_bytes must not be negative, got {max_response_bytes}")
        self._max_body = max_response_bytes
        self._host = url.hostname
        self._port = url.port or 443
        self._authority = url.netloc.rpartition("@")[2]
        self._timeout = timeout
        self._ssl = ssl.create_default_context()
        if ca_file is not None:
            self._ssl.load_verify_locations(cafile=str(ca_file))
        self._ssl.set_alpn_protocols(["h2"])
        #: The connection new requests go on (it may have become unusable: `_connect` then opens another).
        self._connection: _Connection | None = None
        #: Every connection not closed yet, including those draining after GOAWAY, so `aclose` closes them all.
        self._open_connections: set[_Connection] = set()
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> H2Response:
        """Send one request and return its complete response; raises `H2Error` (see the module docstring).

        A request the server refused unprocessed (`StreamRefused`) is sent once more, within the same deadline:
        after GOAWAY that goes on a new connection at once, and a second refusal is raised.
        """
        fields = [(":method", method), (":scheme", "https"), (":authority", self._authority), (":path", path)]
        if headers:
            fields.extend((name.lower(), value) for name, value in headers.items())
        if body:
            fields.append(("content-length", str(len(body))))
        deadline = self._timeout if timeout is None else timeout
        refused = False
        try:
            async with asyncio.timeout(deadline):
                while True:
                    connection = await self._connect()
                    try:
                        return await connection.request(fields, body)
                    except _Unusable:
                        continue  # never sent: the next connection gets it
                    except StreamRefused:
                        if refused:
                            raise
                        refused = True  # not processed: sending it again cannot duplicate it
        except TimeoutError as exc:
            raise RequestTimeout(f"no response within {deadline}s") from exc

    async def _connect(self) -> _Connection:
        """The open connection, or a new one; concurrent callers share one connection attempt."""
        if self._closed:
            raise ClientClosed("client closed")
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open())
            self._connecting.add_done_callback(self._opened)
        # Shielded: one caller's deadline must not abort the attempt the others are waiting on.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._max_body),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host,
                )
                await connection.ready
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            if connection is not None:
                await connection.aclose()
            raise ConnectError(f"cannot connect to {self._authority}: {type(exc).__name__}: {exc}") from exc
        except ConnectError:
            if connection is not None:
                await connection.aclose()
            raise
        return connection

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if task.cancelled() or task.exception() is not None:  # retrieved: every waiter may have given up
            return
        connection = self._connection = task.result()
        self._open_connections.add(connection)
        connection.closed.add_done_callback(lambda _closed: self._open_connections.discard(connection))

    async def aclose(self) -> None:
        """Close the connections; requests in flight fail with `ClientClosed`, later ones raise it at once."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        await asyncio.gather(*(connection.aclose() for connection in list(self._open_connections)))
        self._open_connections.clear()
        self._connection = None
