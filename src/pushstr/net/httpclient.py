"""HTTP clients for push services: kept-open HTTP/2 connections, an extra CA when configured, no environment proxies.

Replies are read with `post_bounded`, never whole: a push service's answer is external input (for Web Push, from
whatever endpoint a registration names), so its body is capped like `H2Client` caps APNs replies.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

import httpx

from pushstr.net.h2client import MAX_RESPONSE_BYTES, ResponseTooLarge

__all__ = ["MAX_RESPONSE_BYTES", "LazyClient", "ResponseTooLarge", "get_bounded", "make_client", "post_bounded"]


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

    def __init__(self, *, ca_file: Path | None, timeout: float, connections: int, http2: bool = True) -> None:
        self._ca_file = ca_file
        self._timeout = timeout
        self._connections = connections
        self._http2 = http2
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(
                ca_file=self._ca_file, timeout=self._timeout, connections=self._connections, http2=self._http2
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def post_bounded(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    limit: int = MAX_RESPONSE_BYTES,
) -> httpx.Response:
    """POST and read the reply's body up to `limit` bytes; `ResponseTooLarge` as soon as it is declared or seen longer.

    `client.post` would read a body of any size into memory. Here a Content-Length over the limit fails before the
    body is read, and otherwise reading stops at the first chunk past it; closing the stream early makes httpx drop
    an HTTP/1.1 connection rather than read the rest. An uncompressed reply is asked for (unless `headers` say
    otherwise) because a small compressed body can inflate to many times the limit in one chunk; the limit applies
    to the decoded body. The returned response holds the decoded body, so it carries no Content-Encoding.

    Over HTTP/2, httpcore neither resets a stream closed early nor hands back the flow-control credit of what
    still arrives on it (encode/httpcore#943), so each reply cut off here can use up to the rest of its body of the
    connection's 16 MiB receive window; when that is gone the connection stalls until a read timeout replaces it.
    """
    return await _request_bounded(client, "POST", url, content=content, headers=headers, limit=limit)


async def get_bounded(
    client: httpx.AsyncClient, url: str, *, headers: Mapping[str, str], limit: int = MAX_RESPONSE_BYTES
) -> httpx.Response:
    """GET with the reply read up to `limit` bytes, as `post_bounded` reads it (`ResponseTooLarge` past it)."""
    return await _request_bounded(client, "GET", url, content=None, headers=headers, limit=limit)


async def _request_bounded(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None,
    headers: Mapping[str, str],
    limit: int,
) -> httpx.Response:
    request_headers = httpx.Headers(headers)
    request_headers.setdefault("accept-encoding", "identity")
    async with client.stream(method, url, content=content, headers=request_headers) as response:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(limit, response.status_code)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            if len(body) + len(chunk) > limit:
                raise ResponseTooLarge(limit, response.status_code)
            body += chunk
    kept = [(name, value) for name, value in response.headers.multi_items() if name != "content-encoding"]
    return httpx.Response(
        response.status_code,
        headers=kept,
        content=bytes(body),
        request=response.request,
        extensions=response.extensions,
    )
