"""HTTP/2 frames (RFC 9113 §4 and §6) as a client of one origin needs them: packing the few it sends, and cutting
the byte stream it receives into frames.

There is no state machine here; `h2client._Connection` keeps the little state such a client needs (stream ids,
flow-control windows, the server's settings). A general-purpose library validates every transition for every
role, and at thousands of requests a second that bookkeeping was most of a push's CPU. Frames that break the
framing rules raise `ProtocolViolation`: a connection error, after which the connection is closed.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

# Error codes (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME_SIZE = 16_384
LARGEST_FRAME_SIZE = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1
MAX_STREAM_ID = (1 << 31) - 1

_HEAD = struct.Struct(">IBI")  # 24-bit length and 8-bit type in one word, flags, stream id
_SETTING = struct.Struct(">HI")
_WORD = struct.Struct(">I")
_TWO_WORDS = struct.Struct(">II")


class ProtocolViolation(Exception):
    """The server broke HTTP/2's framing rules: a connection error (RFC 9113 §5.4.1)."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(code, value) for code, value in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _WORD.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _WORD.pack(code))


def goaway(last_stream_id: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, _TWO_WORDS.pack(last_stream_id, code))


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    """HEADERS, and CONTINUATION frames when the block is larger than one frame may carry."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[start : start + max_frame_size] for start in range(0, len(block), max_frame_size)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    out += [frame(CONTINUATION, 0, stream_id, part) for part in parts[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolViolation("SETTINGS payload not a multiple of 6 bytes", FRAME_SIZE_ERROR)
    return [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), 6)]


def word(payload: bytes, offset: int = 0) -> int:
    """A 32-bit number of a payload; `ProtocolViolation` when the payload is too short."""
    if len(payload) < offset + 4:
        raise ProtocolViolation("frame payload too short", FRAME_SIZE_ERROR)
    return int(_WORD.unpack_from(payload, offset)[0])


def unpadded(flags: int, payload: bytes) -> bytes:
    """The payload without its padding (PADDED flag: a length byte first, that many bytes at the end)."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation("padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def header_fragment(flags: int, payload: bytes) -> bytes:
    """A HEADERS frame's header block fragment: without padding and without the priority fields."""
    fragment = unpadded(flags, payload)
    if flags & PRIORITY_FLAG:
        if len(fragment) < 5:
            raise ProtocolViolation("HEADERS too short for its priority fields", FRAME_SIZE_ERROR)
        fragment = fragment[5:]
    return fragment


class FrameReader:
    """Cuts received bytes into frames; a frame over `max_frame_size` (what we advertised) is a violation."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self.max_frame_size = max_frame_size

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """The complete frames the bytes so far hold, as (type, flags, stream id, payload); the rest is kept."""
        buffer = self._buffer
        buffer += data
        frames = []
        position, end = 0, len(buffer)
        unpack = _HEAD.unpack_from
        while end - position >= 9:
            head, flags, stream_id = unpack(buffer, position)
            length = head >> 8
            if length > self.max_frame_size:
                raise ProtocolViolation(f"a frame of {length} bytes", FRAME_SIZE_ERROR)
            stop = position + 9 + length
            if stop > end:
                break
            frames.append((head & 0xFF, flags, stream_id & MAX_STREAM_ID, bytes(buffer[position + 9 : stop])))
            position = stop
        if position:
            del buffer[:position]
        return frames
