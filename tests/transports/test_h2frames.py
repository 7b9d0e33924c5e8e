"""The HTTP/2 client's own framing, frame by frame: what it writes for a request and what it does with each kind of
frame a server may send, including the ones that break the rules. The end-to-end behaviour against a real HTTP/2
server (`h2`, a second implementation) is in test_h2client.py."""

from __future__ import annotations

import asyncio
from typing import Any

import hpack
import pytest

from pushstr.net import h2frames
from pushstr.net.h2client import ConnectionLost, H2Response, _Connection


class Transport(asyncio.Transport):
    """Collects what the connection writes; says it negotiated h2."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return type("Ssl", (), {"selected_alpn_protocol": lambda _self: "h2"})()
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Peer:
    """The server's side of one `_Connection`: frames in, the client's frames out."""

    def __init__(self, max_body: int = 1024) -> None:
        self.connection = _Connection(asyncio.get_running_loop(), max_body)
        self.transport = Transport()
        self.connection.connection_made(self.transport)
        assert self.transport.written.startswith(h2frames.PREFACE)
        del self.transport.written[: len(h2frames.PREFACE)]
        self._reader = h2frames.FrameReader(h2frames.LARGEST_FRAME_SIZE)
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0

    def send(self, *frames: bytes) -> None:
        self.connection.data_received(b"".join(frames))

    def received(self) -> list[tuple[int, int, int, bytes]]:
        frames = self._reader.feed(bytes(self.transport.written))
        self.transport.written.clear()
        return frames

    def start(self, settings: dict[int, int] | None = None) -> None:
        self.send(h2frames.settings(settings or {}))
        assert self.connection.ready.done()

    def response(self, stream_id: int, status: str, end_stream: bool = True, **headers: str) -> bytes:
        block = self.encoder.encode([(":status", status), *((k.replace("_", "-"), v) for k, v in headers.items())])
        flags = h2frames.END_HEADERS | (h2frames.END_STREAM if end_stream else 0)
        return h2frames.frame(h2frames.HEADERS, flags, stream_id, block)


async def request(peer: Peer, body: bytes = b"", **headers: str) -> asyncio.Task[H2Response]:
    fields = [(":method", "POST"), (":scheme", "https"), (":authority", "push.test"), (":path", "/3/device/ab")]
    fields += [(name.replace("_", "-"), value) for name, value in headers.items()]
    task = asyncio.create_task(peer.connection.request(fields, body))
    await asyncio.sleep(0)  # the request runs up to its first wait
    return task


async def test_the_preface_turns_push_and_the_response_table_off_and_opens_the_connection_window() -> None:
    peer = Peer()
    (settings, update) = peer.received()
    assert settings[0] == h2frames.SETTINGS
    assert dict(h2frames.parse_settings(settings[3])) == {
        h2frames.HEADER_TABLE_SIZE: 0,
        h2frames.ENABLE_PUSH: 0,
        h2frames.INITIAL_WINDOW_SIZE: 1025,
        h2frames.MAX_HEADER_LIST_SIZE: 64 * 1024,
    }
    assert update[0] == h2frames.WINDOW_UPDATE and h2frames.word(update[3]) == 1 << 24


async def test_settings_and_pings_are_acknowledged() -> None:
    peer = Peer()
    peer.received()
    peer.start({h2frames.MAX_CONCURRENT_STREAMS: 10})
    peer.send(h2frames.frame(h2frames.PING, 0, 0, b"12345678"))
    assert [(kind, flags, payload) for kind, flags, _, payload in peer.received()] == [
        (h2frames.SETTINGS, h2frames.ACK, b""),
        (h2frames.PING, h2frames.ACK, b"12345678"),
    ]


async def test_a_request_is_one_headers_frame_and_its_body_one_data_frame() -> None:
    peer = Peer()
    peer.start()
    peer.received()
    task = await request(peer, b'{"aps":{}}', apns_topic="com.example")
    (headers, data) = peer.received()
    assert (headers[0], headers[1], headers[2]) == (h2frames.HEADERS, h2frames.END_HEADERS, 1)
    assert dict(hpack.Decoder().decode(headers[3]))[":path"] == "/3/device/ab"
    assert (data[0], data[1], data[2], data[3]) == (h2frames.DATA, h2frames.END_STREAM, 1, b'{"aps":{}}')
    peer.send(peer.response(1, "200", apns_id="abc"))
    response = await task
    assert (response.status, response.headers, response.content) == (200, {"apns-id": "abc"}, b"")


async def test_a_large_header_block_goes_in_continuation_frames_of_the_servers_frame_size() -> None:
    peer = Peer()
    peer.start()
    peer.received()
    task = await request(peer, authorization="bearer " + "x" * 40_000)
    frames = peer.received()
    assert [kind for kind, *_ in frames] == [h2frames.HEADERS, h2frames.CONTINUATION, h2frames.CONTINUATION]
    assert [flags for _, flags, _, _ in frames] == [h2frames.END_STREAM, 0, h2frames.END_HEADERS]
    assert all(len(payload) <= h2frames.DEFAULT_MAX_FRAME_SIZE for *_, payload in frames)
    block = b"".join(payload for *_, payload in frames)
    assert dict(hpack.Decoder(max_header_list_size=1 << 20).decode(block))["authorization"].endswith("x" * 100)
    peer.send(peer.response(1, "200"))
    assert (await task).status == 200


async def test_a_response_in_continuation_frames_with_a_padded_body() -> None:
    peer = Peer()
    peer.start()
    peer.received()
    task = await request(peer)
    block = peer.encoder.encode([(":status", "410"), ("apns-id", "x" * 30)])
    padded = bytes([5]) + b'{"reason":"Unregistered"}' + bytes(5)
    peer.send(
        h2frames.frame(h2frames.HEADERS, 0, 1, block[:10]),
        h2frames.frame(h2frames.CONTINUATION, h2frames.END_HEADERS, 1, block[10:]),
        h2frames.frame(h2frames.DATA, h2frames.PADDED | h2frames.END_STREAM, 1, padded),
    )
    response = await task
    assert (response.status, response.content) == (410, b'{"reason":"Unregistered"}')
    assert response.headers == {"apns-id": "x" * 30}


async def test_a_body_waits_for_the_servers_window_and_a_settings_change_moves_it() -> None:
    peer = Peer()
    peer.start({h2frames.INITIAL_WINDOW_SIZE: 10})
    peer.received()
    task = await request(peer, b"0123456789abcdef")
    sent = [(kind, payload) for kind, _, _, payload in peer.received()]
    assert sent[1:] == [(h2frames.DATA, b"0123456789")]
    peer.send(h2frames.settings({h2frames.INITIAL_WINDOW_SIZE: 14}))  # +4 for the open stream
    await asyncio.sleep(0)
    assert [(kind, payload) for kind, _, _, payload in peer.received()][1:] == [(h2frames.DATA, b"abcd")]
    peer.send(h2frames.window_update(1, 100))
    await asyncio.sleep(0)
    ((kind, flags, _, payload),) = peer.received()
    assert (kind, flags, payload) == (h2frames.DATA, h2frames.END_STREAM, b"ef")
    peer.send(peer.response(1, "200"))
    assert (await task).status == 200


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # A response naming a dynamic table entry, which the table size 0 we advertised rules out.
        ([h2frames.frame(h2frames.HEADERS, h2frames.END_HEADERS | h2frames.END_STREAM, 1, b"\xbe")], 0x9),
        ([h2frames.frame(h2frames.PUSH_PROMISE, h2frames.END_HEADERS, 1, bytes(8))], h2frames.PROTOCOL_ERROR),
        ([h2frames.frame(h2frames.DATA, 0, 1, bytes(h2frames.DEFAULT_MAX_FRAME_SIZE + 1))], h2frames.FRAME_SIZE_ERROR),
        ([h2frames.frame(h2frames.HEADERS, 0, 1, b"\x88"), h2frames.frame(h2frames.PING, 0, 0, bytes(8))], 0x1),
        ([h2frames.window_update(0, h2frames.MAX_WINDOW)], h2frames.FLOW_CONTROL_ERROR),
        ([h2frames.frame(h2frames.HEADERS, h2frames.END_HEADERS, 2, b"\x88")], h2frames.PROTOCOL_ERROR),
    ],
    ids=["dynamic-index", "push-promise", "frame-too-large", "interrupted-block", "window-overflow", "even-stream"],
)
async def test_a_server_breaking_the_rules_gets_goaway_and_the_request_fails(frames: list[bytes], code: int) -> None:
    peer = Peer()
    peer.start()
    peer.received()
    task = await request(peer)
    peer.received()
    peer.send(*frames)
    with pytest.raises(ConnectionLost):
        await task
    goaway = [payload for kind, _, _, payload in peer.received() if kind == h2frames.GOAWAY]
    assert [h2frames.word(payload, 4) for payload in goaway] == [code]
    assert peer.transport.closed and not peer.connection.usable


async def test_a_first_frame_other_than_settings_is_refused() -> None:
    peer = Peer()
    peer.received()
    peer.send(h2frames.frame(h2frames.PING, 0, 0, bytes(8)))
    assert peer.transport.closed
    assert [kind for kind, *_ in peer.received()] == [h2frames.GOAWAY]
