"""A tiny HTTP/1.1 endpoint on 127.0.0.1 that records requests and counts connections (UnifiedPush stand-in).

It answers an empty `status` reply unless given `reply`, which scripts the answer to each request: any body, sent
with a Content-Length (which may claim more than is sent) or in chunked transfer coding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

#: Bytes per write (and per chunk, when chunked) of a scripted body.
_WRITE_SIZE = 64 * 1024


@dataclass
class Http1Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Http1Reply:
    """A scripted answer. `declared_length` is the Content-Length sent (the body's length unless set, as a server
    that stalls or lies would); `chunked` sends the body in chunks and no Content-Length instead."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunked: bool = False
    declared_length: int | None = None


class Http1Endpoint:
    def __init__(self, status: int = 201, reply: Callable[[Http1Request], Http1Reply] | None = None) -> None:
        self.status = status
        self.requests: list[Http1Request] = []
        self.connections = 0
        self.received = asyncio.Event()
        self._reply = reply
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                line, *fields = head.decode("latin-1").split("\r\n")
                method, path, _version = line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Http1Request(method, path, headers, body)
                self.requests.append(request)
                self.received.set()
                if self._reply is None:
                    writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
                    await writer.drain()
                else:
                    await _write_reply(writer, self._reply(request))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


async def _write_reply(writer: asyncio.StreamWriter, reply: Http1Reply) -> None:
    """Write the head, then the body in pieces with a drain after each: a client that stops reading stops us."""
    fields = dict(reply.headers)
    if reply.chunked:
        fields["transfer-encoding"] = "chunked"
    else:
        fields["content-length"] = str(len(reply.body) if reply.declared_length is None else reply.declared_length)
    head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    writer.write(head.encode("latin-1") + b"\r\n")
    for start in range(0, len(reply.body), _WRITE_SIZE):
        piece = reply.body[start : start + _WRITE_SIZE]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if reply.chunked else piece)
        await writer.drain()
    if reply.chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
