"""What the HTTP push transports share: one kept-open HTTP/2 client each, and reading provider replies."""

from __future__ import annotations

import email.utils
import ssl
import time
from pathlib import Path

import httpx

from pushstr.transports.base import SendResult


def make_client(
    *,
    base_url: str = "",
    ca_file: Path | None,
    timeout: float,
    connections: int,
    http2: bool = True,
) -> httpx.AsyncClient:
    """An HTTP/2 client whose connections stay open between pushes (reconnecting costs a TLS handshake).

    `ca_file` adds a trusted CA (private gateways, local fakes) on top of the system store.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return httpx.AsyncClient(
        base_url=base_url,
        http2=http2,
        verify=context,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=None),
        follow_redirects=False,
        trust_env=False,
    )


class LazyClient:
    """A `make_client` client created on first use and kept open until the transport closes."""

    def __init__(self, *, ca_file: Path | None, timeout: float, connections: int) -> None:
        self._ca_file = ca_file
        self._timeout = timeout
        self._connections = connections
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(ca_file=self._ca_file, timeout=self._timeout, connections=self._connections)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def network_failure(exc: httpx.HTTPError) -> SendResult:
    """A request that got no answer is worth retrying: the push service may never have seen it."""
    return SendResult.retry(f"network:{type(exc).__name__}")


def generic(response: httpx.Response, reason: str) -> SendResult:
    """The outcome for a status a transport has no specific rule for."""
    status = response.status_code
    if status == 429 or status >= 500:
        return SendResult.retry(reason, status, retry_after(response))
    return SendResult.rejected(reason, status)
