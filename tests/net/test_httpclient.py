"""`post_bounded` against real local servers: HTTP/1.1 on 127.0.0.1, and HTTP/2 over TLS as FCM is spoken."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from pushstr.net.httpclient import MAX_RESPONSE_BYTES, ResponseTooLarge, make_client, post_bounded
from tests.fakes.h2server import H2Server, Request, Response
from tests.fakes.http1 import Http1Endpoint, Http1Reply, Http1Request
from tests.fakes.tls import make_self_signed

BIG = 4 * 1024 * 1024
REPLY = b'{"error": {"status": "UNAVAILABLE"}}'

Endpoint = Callable[[Callable[[Http1Request], Http1Reply]], Awaitable[Http1Endpoint]]


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    """Factory: `await endpoint(reply)` starts an HTTP/1.1 server answering with `reply(request)`."""
    servers: list[Http1Endpoint] = []

    async def start(reply: Callable[[Http1Request], Http1Reply]) -> Http1Endpoint:
        servers.append(Http1Endpoint(reply=reply))
        await servers[-1].start()
        return servers[-1]

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(ca_file=None, timeout=5, connections=4) as http:
        yield http


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_small_reply_comes_back_whole_with_status_and_headers(
    endpoint: Endpoint, client: httpx.AsyncClient, chunked: bool
) -> None:
    server = await endpoint(lambda _request: Http1Reply(429, {"retry-after": "7"}, REPLY, chunked=chunked))
    url = f"http://127.0.0.1:{server.port}/send"
    response = await post_bounded(client, url, content=b"payload", headers={"X-Test": "yes"})
    assert (response.status_code, response.headers["retry-after"], response.content) == (429, "7", REPLY)
    assert response.json() == {"error": {"status": "UNAVAILABLE"}}
    (request,) = server.requests
    assert (request.method, request.path, request.body) == ("POST", "/send", b"payload")
    assert request.headers["x-test"] == "yes"
    # Asked uncompressed: the limit is then on what comes over the wire, and no small body inflates past it.
    assert request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_four_mebibyte_reply_raises(endpoint: Endpoint, client: httpx.AsyncClient, chunked: bool) -> None:
    server = await endpoint(lambda _request: Http1Reply(200, {}, bytes(BIG), chunked=chunked))
    with pytest.raises(ResponseTooLarge) as caught:
        await post_bounded(client, f"http://127.0.0.1:{server.port}/", content=b"x", headers={})
    assert (caught.value.status, caught.value.limit) == (200, MAX_RESPONSE_BYTES)


async def test_declared_length_over_the_limit_fails_without_waiting_for_the_body(
    endpoint: Endpoint, client: httpx.AsyncClient
) -> None:
    # The server claims 4 MiB and sends none of it: reading any would wait until the client's timeout.
    server = await endpoint(lambda _request: Http1Reply(200, {}, b"", declared_length=BIG))
    with pytest.raises(ResponseTooLarge):
        await post_bounded(client, f"http://127.0.0.1:{server.port}/", content=b"x", headers={})


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_limit_is_inclusive(endpoint: Endpoint, client: httpx.AsyncClient, chunked: bool) -> None:
    server = await endpoint(lambda request: Http1Reply(200, {}, b"y" * int(request.path[1:]), chunked=chunked))
    url = f"http://127.0.0.1:{server.port}"
    assert (await post_bounded(client, f"{url}/10", content=b"", headers={}, limit=10)).content == b"y" * 10
    with pytest.raises(ResponseTooLarge):
        await post_bounded(client, f"{url}/11", content=b"", headers={}, limit=10)


async def test_over_http2_the_connection_survives_a_reply_over_the_limit(tmp_path: Path) -> None:
    def handle(request: Request) -> Response:
        return Response(200, {}, bytes(BIG) if request.path == "/big" else REPLY)

    tls = make_self_signed(tmp_path)
    server = H2Server(handle, tls.server_context())
    await server.start()
    try:
        async with make_client(ca_file=tls.cert_file, timeout=5, connections=1) as http:
            url = f"https://127.0.0.1:{server.port}"
            with pytest.raises(ResponseTooLarge):
                await post_bounded(http, f"{url}/big", content=b"x", headers={})
            response = await post_bounded(http, f"{url}/small", content=b"x", headers={})
            assert (response.http_version, response.status_code, response.content) == ("HTTP/2", 200, REPLY)
            assert server.connections == 1
    finally:
        await server.stop()
