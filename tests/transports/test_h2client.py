"""The HTTP/2 client against the local fake HTTP/2 server (TLS, ALPN h2, 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import h2.errors
import h2.settings
import pytest

from pushstr.net.h2client import (
    _WRITE_BATCH,
    MAX_RESPONSE_BYTES,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    H2Client,
    H2Error,
    H2Response,
    RequestTimeout,
    ResponseTooLarge,
    StreamRefused,
    _Connection,
)
from tests.fakes import h2server
from tests.fakes.h2server import H2Server, Request, Response
from tests.fakes.tls import SelfSigned, make_self_signed

BIG = 4 * 1024 * 1024


def echo(request: Request) -> Response:
    """Answers with what it was asked, so a test can tell whose response it got."""
    return Response(200, {"x-path": request.path, "x-size": str(len(request.body))}, request.body[:64])


def echo_or_oversized(request: Request) -> Response:
    """As `echo`, but `/big` gets a 4 MiB body and `/huge-headers` a 100 kB header."""
    if request.path == "/big":
        return Response(200, {"x-path": "/big"}, bytes(BIG))
    if request.path == "/huge-headers":
        return Response(200, {"x-huge": "a" * 100_000})
    return echo(request)


class HeldServer(H2Server):
    """The fake server, but it answers only when the test says so, and it can limit, refuse streams or send GOAWAY.

    `held` lists (connection, stream id, response) for every request answered by the handler and not yet sent;
    `arrived` is set whenever one is added. `received` counts the requests that arrived per path, `answered` those
    the server processed and answered: a request is processed once exactly when its path is answered once.
    """

    def __init__(self, tls: SelfSigned, max_streams: int = 1000) -> None:
        super().__init__(echo, tls.server_context())
        self.max_streams = max_streams
        self.held: list[tuple[HeldConnection, int, Response]] = []
        self.arrived = asyncio.Event()
        self.live: list[HeldConnection] = []
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HeldConnection(self), "127.0.0.1", 0, ssl=self._tls)

    async def wait_held(self, count: int) -> None:
        """Until `count` requests are waiting for their answer."""
        async with asyncio.timeout(5):
            while len(self.held) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def release(self) -> None:
        held, self.held = self.held, []
        for connection, stream_id, response in held:
            connection.answer(stream_id, response)


class HeldConnection(h2server._Connection):
    def __init__(self, server: HeldServer) -> None:
        super().__init__(echo, server._connections)
        self._server = server
        server.live.append(self)
        #: Set when the connection is closed (by either side).
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # As the fake does, but with the test's stream limit in the very first SETTINGS frame.
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._server.max_streams},
        )
        self._conn.initiate_connection()
        transport.write(self._conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()

    def _respond(self, stream_id: int, response: Response) -> None:
        self._server.received[response.headers["x-path"]] += 1
        self._server.held.append((self, stream_id, response))
        self._server.arrived.set()

    def answer(self, stream_id: int, response: Response) -> None:
        self._server.answered[response.headers["x-path"]] += 1
        super()._respond(stream_id, response)
        assert self._transport is not None
        self._transport.write(self._conn.data_to_send())

    def goaway(self, last_stream_id: int) -> None:
        """As the fake does, and the held requests above `last_stream_id` are dropped: they were not processed."""
        super().goaway(last_stream_id)
        self._server.held = [
            (connection, stream_id, response)
            for connection, stream_id, response in self._server.held
            if connection is not self or stream_id <= last_stream_id
        ]

    def refuse(self, stream_id: int) -> None:
        """RST_STREAM REFUSED_STREAM for a held request (which is dropped: it was not processed)."""
        self._server.held = [entry for entry in self._server.held if entry[:2] != (self, stream_id)]
        self._conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        assert self._transport is not None
        self._transport.write(self._conn.data_to_send())


@pytest.fixture
def tls(tmp_path: Path) -> SelfSigned:
    return make_self_signed(tmp_path / "tls")


@pytest.fixture
async def server(tls: SelfSigned) -> AsyncIterator[H2Server]:
    fake = H2Server(echo, tls.server_context())
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def oversized_server(tls: SelfSigned) -> AsyncIterator[H2Server]:
    fake = H2Server(echo_or_oversized, tls.server_context())
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def held_server(tls: SelfSigned) -> AsyncIterator[HeldServer]:
    fake = HeldServer(tls, max_streams=2)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client_for(tls: SelfSigned) -> AsyncIterator[Callable[[H2Server], H2Client]]:
    clients: list[H2Client] = []

    def make(server: H2Server, timeout: float = 5.0, **options: int) -> H2Client:
        url = f"https://127.0.0.1:{server.port}"
        clients.append(H2Client(url, ca_file=tls.cert_file, timeout=timeout, **options))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def test_concurrent_requests_share_one_connection_and_get_their_own_answers(
    server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(server)
    responses = await asyncio.gather(
        *(client.request("POST", f"/n/{n}", headers={"X-Test": "1"}, body=b"x" * n) for n in range(300))
    )
    assert [(r.status, r.headers["x-path"], r.headers["x-size"]) for r in responses] == [
        (200, f"/n/{n}", str(n)) for n in range(300)
    ]
    assert server.connections == 1


async def test_requests_of_one_loop_turn_share_writes_after_the_first(
    server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(server)
    await client.request("GET", "/warm-up")
    connection = client._connection
    assert connection is not None and connection._transport is not None
    transport = connection._transport
    writes: list[int] = []
    original = transport.write

    def counting(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        original(data)

    transport.write = counting  # type: ignore[method-assign]
    responses = await asyncio.gather(*(client.request("POST", f"/n/{n}", body=b"x" * 10) for n in range(20)))
    transport.write = original  # type: ignore[method-assign]
    assert [r.headers["x-path"] for r in responses] == [f"/n/{n}" for n in range(20)]
    # The first request went out at once (the server can start on it), the other 19 in writes of at most
    # _WRITE_BATCH (8): 8, 8, then the last 3 at the start of the next turn.
    assert _WRITE_BATCH == 8
    assert len(writes) == 4
    assert writes[0] < writes[3] < min(writes[1], writes[2])


async def test_body_larger_than_the_flow_control_window_is_sent_whole(
    server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    body = bytes(range(256)) * 12_000  # ~3 MB: the fake's stream window is 1 MB, so WINDOW_UPDATEs are needed
    response = await client_for(server).request("PUT", "/big", body=body)
    assert response.headers["x-size"] == str(len(body))
    assert response.content == body[:64]


async def test_waits_for_a_free_stream_slot(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    requests = [asyncio.create_task(client.request("GET", f"/{n}")) for n in range(5)]
    # The fake's h2 refuses a stream over its limit with a connection error, which would fail these requests: all
    # five succeeding on one connection shows the client kept to two streams at a time.
    answered = 0
    while answered < 5:
        await held_server.wait_held(min(2, 5 - answered))
        assert len(held_server.held) <= 2
        answered += len(held_server.held)
        held_server.release()
    assert sorted(r.headers["x-path"] for r in await asyncio.gather(*requests)) == [f"/{n}" for n in range(5)]
    assert held_server.connections == 1


async def test_timeout_resets_the_stream_and_frees_its_slot(
    held_server: HeldServer, client_for: Callable[..., H2Client]
) -> None:
    client = client_for(held_server, timeout=0.2)
    with pytest.raises(RequestTimeout):
        await client.request("GET", "/slow-1")
    with pytest.raises(RequestTimeout):
        await client.request("GET", "/slow-2")
    await held_server.wait_held(2)
    held_server.held.clear()  # never answered
    # Both slots (the server allows 2) were given back: a third request is sent at once and answered.
    third = asyncio.create_task(client.request("GET", "/third", timeout=5))
    await held_server.wait_held(1)
    held_server.release()
    assert (await third).headers["x-path"] == "/third"
    assert held_server.connections == 1


async def test_goaway_drains_the_streams_in_flight_and_new_requests_go_to_a_new_connection(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    held_server.max_streams = 10
    client = client_for(held_server)
    before = [asyncio.create_task(client.request("GET", f"/before-{n}")) for n in range(4)]
    await held_server.wait_held(4)
    (old,) = held_server.live
    old.goaway(last_stream_id=max(stream_id for _, stream_id, _ in held_server.held))
    after = [asyncio.create_task(client.request("GET", f"/after-{n}")) for n in range(2)]
    await held_server.wait_held(6)
    assert [connection is old for connection, _, _ in held_server.held] == [True] * 4 + [False] * 2
    # The server answers the streams it kept after its GOAWAY: the client reads them on the old connection.
    held_server.release()
    assert [(await task).headers["x-path"] for task in before] == [f"/before-{n}" for n in range(4)]
    assert [(await task).headers["x-path"] for task in after] == [f"/after-{n}" for n in range(2)]
    paths = [f"/before-{n}" for n in range(4)] + [f"/after-{n}" for n in range(2)]
    assert held_server.received == held_server.answered == Counter(paths)
    # Its last stream done, the client closed the old connection; the new one stays.
    await asyncio.wait_for(old.lost.wait(), 5)
    assert held_server.connections == 1
    assert len(held_server.live) == 2


async def test_goaway_below_streams_in_flight_resends_those_above_once_on_a_new_connection(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    held_server.max_streams = 10
    client = client_for(held_server)
    first = asyncio.create_task(client.request("GET", "/first"))
    await held_server.wait_held(1)
    later = [asyncio.create_task(client.request("GET", f"/later-{n}")) for n in range(2)]
    await held_server.wait_held(3)
    (old,) = held_server.live
    old.goaway(last_stream_id=held_server.held[0][1])  # the server keeps /first, drops the two later streams
    await held_server.wait_held(3)  # the two later requests again, on a new connection
    assert [(connection is old, response.headers["x-path"]) for connection, _, response in held_server.held] == [
        (True, "/first"),
        (False, "/later-0"),
        (False, "/later-1"),
    ]
    held_server.release()
    assert [(await task).headers["x-path"] for task in (first, *later)] == ["/first", "/later-0", "/later-1"]
    assert held_server.answered == Counter(["/first", "/later-0", "/later-1"])
    assert held_server.received == Counter({"/first": 1, "/later-0": 2, "/later-1": 2})
    assert len(held_server.live) == 2


async def test_goaway_then_close_before_the_answer_is_connection_lost_and_not_resent(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    pending = asyncio.create_task(client.request("GET", "/kept"))
    await held_server.wait_held(1)
    (old,) = held_server.live
    old.goaway(last_stream_id=held_server.held[0][1])
    held_server.held.clear()
    old.close()
    # The server may have acted on it: unknown, so not StreamRefused, and the client does not send it again.
    with pytest.raises(ConnectionLost):
        await pending
    assert held_server.received == Counter(["/kept"])
    assert len(held_server.live) == 1


async def test_refused_stream_is_resent_once_on_the_same_connection(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    pending = asyncio.create_task(client.request("GET", "/refused-once"))
    await held_server.wait_held(1)
    (connection,) = held_server.live
    connection.refuse(held_server.held[0][1])
    await held_server.wait_held(1)
    held_server.release()
    assert (await pending).headers["x-path"] == "/refused-once"
    assert held_server.received == Counter({"/refused-once": 2})
    assert held_server.answered == Counter(["/refused-once"])
    assert held_server.connections == 1


async def test_stream_refused_twice_reaches_the_caller(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    pending = asyncio.create_task(client.request("GET", "/refused-twice"))
    for _ in range(2):
        await held_server.wait_held(1)
        held_server.live[0].refuse(held_server.held[0][1])
    with pytest.raises(StreamRefused):
        await pending
    assert held_server.received == Counter({"/refused-twice": 2})
    assert not held_server.answered


async def test_close_also_closes_a_connection_still_draining(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    draining = asyncio.create_task(client.request("GET", "/draining"))
    await held_server.wait_held(1)
    (old,) = held_server.live
    old.goaway(last_stream_id=held_server.held[0][1])
    fresh = asyncio.create_task(client.request("GET", "/fresh"))
    await held_server.wait_held(2)
    await client.aclose()
    for task in (draining, fresh):
        with pytest.raises(ClientClosed):
            await task
    await asyncio.wait_for(asyncio.gather(*(connection.lost.wait() for connection in held_server.live)), 5)
    assert held_server.connections == 0


async def test_lost_connection_fails_in_flight_requests_and_reconnects(
    held_server: HeldServer, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(held_server)
    pending = asyncio.create_task(client.request("GET", "/lost"))
    await held_server.wait_held(1)
    held_server.held.clear()
    held_server.live[0].close()
    with pytest.raises(ConnectionLost):
        await pending
    retry = asyncio.create_task(client.request("GET", "/again"))
    await held_server.wait_held(1)
    held_server.release()
    assert (await retry).status == 200
    assert len(held_server.live) == 2


async def test_connect_failure_and_closed_client(tls: SelfSigned, server: H2Server) -> None:
    port = server.port
    await server.stop()
    client = H2Client(f"https://127.0.0.1:{port}", ca_file=tls.cert_file, timeout=5)
    with pytest.raises(ConnectError):
        await client.request("GET", "/")
    await client.aclose()
    with pytest.raises(ClientClosed):
        await client.request("GET", "/")


async def test_untrusted_certificate_is_refused(server: H2Server) -> None:
    client = H2Client(f"https://127.0.0.1:{server.port}", timeout=5)
    with pytest.raises(ConnectError, match="SSL"):
        await client.request("GET", "/")
    await client.aclose()


class Received:
    """Watches a client connection's reads: bytes that came in, and the most body bytes it held for one stream."""

    def __init__(self, connection: _Connection) -> None:
        self.bytes = 0
        self.most_buffered = 0
        original = connection.data_received

        def watching(data: bytes) -> None:
            self.bytes += len(data)
            original(data)
            held = (len(stream.body) for stream in connection._streams.values())
            self.most_buffered = max(self.most_buffered, *held, 0)

        connection.data_received = watching  # type: ignore[method-assign]


async def test_body_over_the_cap_raises_without_buffering_it(
    oversized_server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(oversized_server)
    await client.request("GET", "/warm-up")
    connection = client._connection
    assert connection is not None
    received = Received(connection)
    with pytest.raises(ResponseTooLarge) as caught:
        await client.request("GET", "/big")
    assert (caught.value.status, caught.value.limit) == (200, MAX_RESPONSE_BYTES)
    assert isinstance(caught.value, H2Error)
    assert received.most_buffered <= MAX_RESPONSE_BYTES
    # The server could send no more than the stream window (cap + 1) plus what was acknowledged while the body was
    # within the cap (at most the cap), plus framing: not the 4 MiB it meant to.
    assert received.bytes < 3 * MAX_RESPONSE_BYTES
    # The same connection goes on serving requests.
    response = await client.request("POST", "/after", body=b"abc")
    assert (response.headers["x-path"], response.content) == ("/after", b"abc")
    assert client._connection is connection
    assert oversized_server.connections == 1


async def test_body_over_the_cap_spares_concurrent_streams(
    oversized_server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(oversized_server)
    big, *small = await asyncio.gather(
        client.request("GET", "/big"),
        *(client.request("POST", f"/n/{n}", body=b"x" * n) for n in range(50)),
        return_exceptions=True,
    )
    assert isinstance(big, ResponseTooLarge)
    assert all(isinstance(response, H2Response) for response in small)
    assert [(r.headers["x-path"], r.content) for r in small if isinstance(r, H2Response)] == [
        (f"/n/{n}", b"x" * n) for n in range(50)
    ]
    assert oversized_server.connections == 1


async def test_body_cap_is_inclusive_and_set_per_client(server: H2Server, client_for: Callable[..., H2Client]) -> None:
    client = client_for(server, max_response_bytes=10)
    assert (await client.request("POST", "/ten", body=b"x" * 10)).content == b"x" * 10
    with pytest.raises(ResponseTooLarge):
        await client.request("POST", "/eleven", body=b"x" * 11)
    assert (await client.request("POST", "/empty")).content == b""


async def test_oversized_header_block_fails_the_connection_and_the_next_request_reconnects(
    oversized_server: H2Server, client_for: Callable[[H2Server], H2Client]
) -> None:
    client = client_for(oversized_server)
    with pytest.raises(ConnectionLost):
        await client.request("GET", "/huge-headers")
    assert (await client.request("GET", "/after")).headers["x-path"] == "/after"
