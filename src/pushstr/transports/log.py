"""The log transport: one JSON line per notification, to stdout or a file.

It is the transport when no push service is configured, so a fresh install shows what it would push. The device
appears only as a token digest, and so do the recipient and the event unless `identities` is on: a log is copied
around more freely than a database, and who gets messages when is exactly what pushstr keeps to itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

import orjson

from pushstr.logutil import ident
from pushstr.private_files import private_file
from pushstr.registry.model import Registration
from pushstr.transports.base import Encoded, Notification, Rendered, SendResult


class LogTransport:
    name = "log"

    def __init__(self, path: str = "-", *, identities: bool = False) -> None:
        self._path = path
        self._identities = identities
        self._file: IO[bytes] | None = None

    async def start(self) -> None:
        if self._path == "-":
            self._file = sys.stdout.buffer
        else:
            path = Path(self._path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(private_file(path), "ab", buffering=0)  # noqa: SIM115, ASYNC230 - opened once, kept open

    async def close(self) -> None:
        if self._file is not None and self._path != "-":
            self._file.close()
        self._file = None

    def measure(self, rendered: Rendered, device: Registration) -> int:
        return 0  # a log line has no provider limit

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        """The line without its timestamp, which `send` puts first when it writes."""
        fields = {
            "app": notification.app,
            "platform": str(device.platform),
            "device": device.token_id,
            "event_id": self._shown(notification.event_id),
            "kind": notification.kind,
            "recipient": self._shown(notification.recipient),
            "mode": str(notification.mode),
            "count": notification.count,
        }
        return Encoded(orjson.dumps(fields))

    def _shown(self, value: str) -> str:
        return value if self._identities else ident(value, 16)

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        if self._file is None:
            await self.start()
        assert self._file is not None
        # `{"ts":…,` + the encoded object without its opening brace: one JSON object per line.
        self._file.write(b'{"ts":%.3f,%s\n' % (time.time(), encoded.body[1:]))
        if self._path == "-":
            self._file.flush()
        return SendResult.delivered()
