"""A small HTTP/2 client for one origin on asyncio and `h2`: one kept-open TLS connection, many streams on it.

A push gateway sends many small requests to one host (APNs) and wants them multiplexed on a single connection,
as Apple asks. General-purpose pools (httpx/httpcore) spend most of their time on pool bookkeeping once hundreds
of streams are in flight; this client keeps one `asyncio.Protocol` per connection and one future per stream, so a
request costs one HEADERS (+ DATA) frame out and one event dispatch in.

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
  are refused; HPACK state is shared by the whole connection, so that fails all of it (`ConnectionLost`).
- Failures are `H2Error`s, and their type tells whether the server may have processed the request:
  `StreamRefused` means it guarantees it did not, so resending is safe; `ConnectionLost` (the connection died
  before the answer, also one draining after GOAWAY), `RequestTimeout` and `StreamReset` leave it unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from pushstr.net.hpack_encoder import HeaderEncoder

#: h2's outbound header validation and normalisation cost about a third of sending a request, and normalisation
#: marks `authorization` never-indexed, so a provider token (hundreds of bytes) would be Huffman-coded anew on
#: every stream instead of being one HPACK index. `H2Client.request` builds the header block itself (pseudo-headers
#: first, lower-case names); a bearer token is high-entropy, so the dictionary attack h2 guards against by not
#: indexing it does not apply. Inbound headers are still validated. Header blocks are encoded by `HeaderEncoder`
#: (see `hpack_encoder`), not by h2's general-purpose encoder.
_CONFIG = h2.config.H2Configuration(
    client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
)
#: Response body bytes kept per request by default. Provider replies are a status and at most a small JSON error;
#: anything longer is not one, and a server (or whoever stands in for it) must not make us buffer without bound.
MAX_RESPONSE_BYTES = 64 * 1024
#: Receive window we grant the server for the connection as a whole: responses never wait on our acknowledgements.
#: It stays large although bodies are capped: it is shared by every stream in flight (hundreds of small replies at
#: once), and received data is acknowledged as it arrives, so memory is bounded by the per-stream cap, not by this.
_CONNECTION_WINDOW = 1 << 24
#: Largest decoded header block we accept (advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced by the
#: decoder): provider replies carry a handful of short headers.
_MAX_HEADER_LIST_SIZE = 64 * 1024
#: The largest flow-control window HTTP/2 allows.
_MAX_WINDOW = (1 << 31) - 1
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


@dataclass(frozen=True, slots=True)
class H2Response:
    """A complete response: status, headers (lower-case names, pseudo-headers removed) and body."""

    status: int
    headers: dict[str, str]
    content: bytes


@dataclass(slots=True)
class _Stream:
    response: asyncio.Future[H2Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    #: Set while the request body waits for the server to open its flow-control window.
    window: asyncio.Future[None] | None = None


def _local_settings(defaults: h2.settings.Settings, max_body: int) -> h2.settings.Settings:
    """h2's settings with our limits, for the connection preface (set before it, so no SETTINGS round trip).

    The stream window is one byte over the body cap: a body within the cap never waits for a WINDOW_UPDATE, and
    one byte more shows it is too large. So the server cannot send much more on a stream before our reset reaches
    it (the window plus what we acknowledged while the body was within the cap), whatever the body's size.
    """
    values = {h2.settings.SettingCodes(code): value for code, value in defaults.items()}
    values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = min(max_body + 1, _MAX_WINDOW)
    values[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = _MAX_HEADER_LIST_SIZE
    return h2.settings.Settings(client=True, initial_values=values)


class _DrainableH2Connection(h2.connection.H2Connection):
    """h2's connection, except that a received GOAWAY leaves it open for the answers the server still owes.

    h2 (4.x) closes its state machine on GOAWAY and drops the frames it had queued to send, so every frame after
    it is a protocol error: the answers RFC 9113 §6.8 lets the server send for the streams at or below the last
    stream id would fail the connection, and body data or acknowledgements queued for those streams would be lost.
    Here a GOAWAY only reports `ConnectionTerminated`; `_Connection` then opens no more streams. This overrides a
    private h2 method (unchanged since h2 2.x); the GOAWAY tests in `tests/transports/test_h2client.py` pin it.
    """

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = h2.errors.ErrorCodes(frame.error_code)
        except ValueError:  # a code this h2 does not know is kept as the number, as h2 does
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class _Unusable(Exception):
    """The connection takes no new streams (lost or GOAWAY) before this request got one: try a fresh connection."""


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: owns the `h2` state machine and the streams in flight on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self._loop = loop
        self._max_body = max_body
        self._h2 = _DrainableH2Connection(_CONFIG)
        self._h2.encoder = HeaderEncoder()
        self._h2.local_settings = _local_settings(self._h2.local_settings, max_body)
        self._h2.decoder.max_header_list_size = _MAX_HEADER_LIST_SIZE
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
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
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW)
        transport.write(self._h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail_ready(ConnectError("connection closed during the HTTP/2 handshake"))
        self._fail_streams(lambda _stream_id: ConnectionLost("connection lost"))
        self._wake_all_slot_waiters()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._shut(ConnectionLost("HTTP/2 protocol error from the server"))
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self._on_headers(event.stream_id, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._on_reset(event)
            elif isinstance(event, h2.events.WindowUpdated):
                self._on_window(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._on_settings(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
        self._flush()

    # -- requests ----------------------------------------------------------------------------------------------

    async def request(self, headers: list[tuple[str, str]], body: bytes) -> H2Response:
        """Send one request on a new stream and wait for its response; `_Unusable` when no stream could be opened."""
        await self._acquire_slot()
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, headers, end_stream=not body)
        except (h2.exceptions.NoAvailableStreamIDError, h2.exceptions.ProtocolError) as exc:
            # Stream ids exhausted or h2 has closed the connection: this request was never sent.
            self.usable = False
            self._wake_all_slot_waiters()
            raise _Unusable from exc
        stream = _Stream(self._loop.create_future())
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
            if len(self._streams) < self._h2.remote_settings.max_concurrent_streams:
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
            size = min(len(view), self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if size <= 0:
                stream.window = self._loop.create_future()
                self._flush()
                await stream.window
                stream.window = None
                continue
            chunk, view = view[:size], view[size:]
            self._h2.send_data(stream_id, chunk.tobytes(), end_stream=not view)

    # -- h2 events ---------------------------------------------------------------------------------------------

    def _on_headers(self, stream_id: int | None, headers: Iterable[tuple[bytes, bytes]]) -> None:
        stream = self._streams.get(stream_id or 0)
        if stream is None:
            return
        for name, value in headers:
            if name == b":status":
                stream.status = int(value)
            elif not name.startswith(b":"):
                stream.headers[name.decode("ascii")] = value.decode("utf-8", "replace")

    def _on_data(self, event: h2.events.DataReceived) -> None:
        assert event.stream_id is not None
        stream = self._streams.get(event.stream_id)
        if stream is not None and event.data:
            if len(stream.body) + len(event.data) > self._max_body:
                self._too_large(event.stream_id, stream)
            else:
                stream.body += event.data
        # Always handed back, also for a stream just reset (h2 then credits only the connection, as it does for
        # DATA still arriving on it): the other streams must not starve.
        self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)

    def _too_large(self, stream_id: int, stream: _Stream) -> None:
        """Drop the body read so far and cancel the stream: the server stops sending, the slot is free again."""
        del self._streams[stream_id]
        self._reset(stream_id)
        self._stream_closed()
        self._fail(stream, ResponseTooLarge(self._max_body, stream.status or None))

    def _on_end(self, stream_id: int | None) -> None:
        stream = self._streams.pop(stream_id or 0, None)
        if stream is None:
            return
        self._stream_closed()
        if not stream.response.done():
            stream.response.set_result(H2Response(stream.status, stream.headers, bytes(stream.body)))

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.pop(event.stream_id or 0, None)
        if stream is None:
            return
        self._stream_closed()
        if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
            self._fail(stream, StreamRefused("stream refused by the server"))
        else:
            self._fail(stream, StreamReset(f"stream reset by the server: {event.error_code!r}"))

    def _on_window(self, stream_id: int | None) -> None:
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is not None and stream.window is not None and not stream.window.done():
                stream.window.set_result(None)
            return
        for stream in self._streams.values():  # the connection window opened: every waiting body may go on
            if stream.window is not None and not stream.window.done():
                stream.window.set_result(None)

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        changed = event.changed_settings
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self._on_window(None)
        if h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            free = self._h2.remote_settings.max_concurrent_streams - len(self._streams)
            for _ in range(max(0, free)):
                self._release_slot()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """Drain: no new streams here, those the server did not process fail as refused, the rest get their answers.

        A server may send more than one GOAWAY, each with a last stream id no higher than the one before: each
        refuses what is above its own.
        """
        self.usable = False
        self._draining = True
        last = event.last_stream_id or 0
        self._fail_streams(lambda stream_id: StreamRefused("server sent GOAWAY") if stream_id > last else None)
        self._wake_all_slot_waiters()
        if not self._streams:
            self._shut(None)

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
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.H2Error:
            return  # already closed on the h2 side, or the connection is gone
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
        """Write what h2 has queued now (acknowledgements, resets, settings, and the requests `_flush_soon` held)."""
        self._held = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def aclose(self) -> None:
        """Say GOAWAY, close the socket and wait (briefly) until it is closed."""
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):  # h2 may already consider it closed
                self._h2.close_connection()
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
