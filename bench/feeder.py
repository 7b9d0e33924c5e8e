"""A feeder relay for the benchmarks: a NIP-01 server on 127.0.0.1 that answers a connection's first REQ by
streaming a prepared feed of signed events.

It runs in a child process, so the consumer being measured has its own core. Frames are encoded once, up front,
and written straight to the socket (server frames are unmasked and compression is declined), so the feeder costs
next to nothing and the consumer is what limits the rate.

Each URL path (`/a`, `/b`, …) has its own feed; every connection to a path gets that whole feed again, so the same
feeder serves pushstr and the raw consumer in one run. With `rate`, a feed is paced instead: event i is written
at t0 + i/rate (after EOSE, as live events), and the `time.perf_counter()` of each write (the same clock in every
process on Linux) is reported back, for latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _frames(sub_id: str, events: list[bytes]) -> list[bytes]:
    prefix = b'["EVENT",' + orjson.dumps(sub_id) + b","
    return [text_frame(prefix + event + b"]") for event in events]


class _Relay:
    def __init__(self, feeds: dict[str, list[bytes]], rate: float | None, results: Any) -> None:
        self._feeds = feeds
        self._rate = rate
        self._results = results

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        feed = self._feeds.get(path, [])
        streamed = False
        try:
            async for message in ws:
                request = orjson.loads(message)
                if not isinstance(request, list) or not request or request[0] != "REQ":
                    continue
                sub_id = request[1]
                eose = orjson.dumps(["EOSE", sub_id])
                if streamed:
                    await ws.send(eose, text=True)
                    continue
                streamed = True
                frames = _frames(sub_id, feed)
                if self._rate is None:
                    ws.transport.write(b"".join(frames))
                    await ws.send(eose, text=True)
                else:
                    await ws.send(eose, text=True)
                    sent = await self._paced(ws, frames)
                    self._results.put((path, sent))
        except ConnectionClosed:
            pass

    async def _paced(self, ws: ServerConnection, frames: list[bytes]) -> list[float]:
        """Write frame i at t0 + i/rate; catch up in one write when the loop woke late. Returns the write times."""
        assert self._rate is not None
        sent: list[float] = []
        start = time.perf_counter()
        index = 0
        while index < len(frames):
            now = time.perf_counter()
            due = min(len(frames), int((now - start) * self._rate) + 1)
            if due > index:
                ws.transport.write(b"".join(frames[index:due]))
                sent.extend([time.perf_counter()] * (due - index))
                index = due
            await asyncio.sleep(max(0.0, start + index / self._rate - time.perf_counter()))
        return sent


def _serve(feed_file: str, rate: float | None, ready: Any, results: Any) -> None:
    feeds: dict[str, list[bytes]] = pickle.loads(Path(feed_file).read_bytes())

    async def main() -> None:
        relay = _Relay(feeds, rate, results)
        async with serve(
            relay.handle, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=1 << 20
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            ready.put(port)
            await asyncio.Event().wait()

    asyncio.run(main())


class Feeder:
    """Handle on a feeder relay in a child process (`with Feeder(feeds) as feeder: feeder.url("/a")`)."""

    def __init__(self, feeds: dict[str, list[bytes]], rate: float | None = None) -> None:
        # The feed (tens of MB) goes through a file: as a start-up argument, a child that dies while importing
        # would leave the parent blocked writing to a pipe nobody reads.
        self._feed_file = tempfile.NamedTemporaryFile(prefix="pushstr-feed-", suffix=".pickle")  # noqa: SIM115
        self._feed_file.write(pickle.dumps(feeds))
        self._feed_file.flush()
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._results = context.Queue()
        self._process = context.Process(
            target=_serve, args=(self._feed_file.name, rate, self._ready, self._results), daemon=True
        )
        self._port = 0

    def __enter__(self) -> Feeder:
        self._process.start()
        self._port = self._ready.get(timeout=60)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._process.kill()
        self._process.join(5)
        self._feed_file.close()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self._port}{path}"

    def sent_times(self, timeout: float) -> tuple[str, list[float]]:
        """Paced mode: the next finished feed's path and the perf_counter time each of its events was written."""
        path, sent = self._results.get(timeout=timeout)
        return str(path), list(sent)
