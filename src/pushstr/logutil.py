"""Logging helpers that keep the invariants: one line per event, rate-limited, identities hashed."""

from __future__ import annotations

import hashlib
import logging
import time
from urllib.parse import urlsplit, urlunsplit


def ident(value: str, length: int = 12) -> str:
    """A short digest to stand for a pubkey, token or IP in logs: correlatable, not reversible."""
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def shown_url(url: str) -> str:
    """A URL without its user info, query and fragment, fit for status output and metric labels (a token in a
    query string is a secret)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class RateLimitedLog:
    """Logs a given `key` at most once per `interval` seconds and says how many were suppressed.

    Bad input from the network is counted in metrics every time but logged like this, so a flood of garbage
    cannot flood the log.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, max_keys: int = 10_000) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = (now, 0)
        if suppressed:
            message = f"{message} (+{suppressed} similar suppressed)"
        self._logger.log(level, message, *args, exc_info=exc_info)

    def warning(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        self.log(logging.WARNING, key, message, *args, exc_info=exc_info)

    def info(self, key: str, message: str, *args: object) -> None:
        self.log(logging.INFO, key, message, *args)
