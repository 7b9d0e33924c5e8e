"""A tiny HTTP/1.1 endpoint on 127.0.0.1 that records requests and counts connections (UnifiedPush stand-in)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Http1Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Http1Endpoint:
    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.requests: list[Http1Request] = []
        self.connections = 0
        self.received = asyncio.Event()
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
                self.requests.append(Http1Request(method, path, headers, body))
                self.received.set()
                writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
