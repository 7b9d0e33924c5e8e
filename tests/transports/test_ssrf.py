"""The SSRF guard: internal endpoints are refused before any connection, unless their host is allowed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pushstr.config import parse_app
from pushstr.net.urlguard import EndpointRefused, check_endpoint
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification, Outcome
from pushstr.transports.vapid import load_or_create_key
from pushstr.transports.webpush import WebPushTransport
from tests.fakes.http1 import Http1Endpoint
from tests.transports.conftest import OneShot


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/push", "private"),
        ("http://[::1]/push", "loopback"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::ffff:10.1.2.3]/", "private"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://0.0.0.0/", "private address"),
        ("http://localhost/", "loopback"),
    ],
)
async def test_internal_addresses_are_refused(url: str, why: str) -> None:
    with pytest.raises(EndpointRefused, match=why):
        await check_endpoint(url, allowed_hosts=[])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/", "gopher://x/", "not a url"])
async def test_non_http_schemes_are_refused(url: str) -> None:
    with pytest.raises(EndpointRefused, match="scheme"):
        await check_endpoint(url, allowed_hosts=[])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://10.0.0.1/push", "10.0.0.1"),
        ("http://[::1]/push", "::1"),
        ("http://169.254.169.254/", "169.254.169.254"),
        ("https://LocalHost./up", "localhost"),
    ],
)
async def test_allowed_hosts_pass_without_any_connection(url: str, allowed: str) -> None:
    await check_endpoint(url, allowed_hosts=[allowed])


async def test_public_literal_address_passes() -> None:
    await check_endpoint("https://1.1.1.1/push", allowed_hosts=[])


@pytest.fixture
async def endpoint() -> AsyncIterator[Http1Endpoint]:
    server = Http1Endpoint()
    await server.start()
    yield server
    await server.stop()


def _transport(tmp_path_factory: pytest.TempPathFactory, **overrides: object) -> OneShot:
    app = parse_app({"transport": "webpush", "vapid_subject": "mailto:ops@example.org", **overrides})
    return OneShot(WebPushTransport("up", app, load_or_create_key(tmp_path_factory.mktemp("data"))), app)


def _note() -> Notification:
    return Notification("e" * 64, 4, "a" * 64, None, 1, "up")


async def test_transport_refuses_loopback_without_connecting(
    endpoint: Http1Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> None:
    transport = _transport(tmp_path_factory, allow_plaintext=True)
    device = Registration("a" * 64, f"http://127.0.0.1:{endpoint.port}/up", Platform.UNIFIEDPUSH, "up")
    try:
        result = await transport.send(_note(), device)
    finally:
        await transport.close()
    assert result.outcome is Outcome.REJECTED
    assert "loopback" in result.reason and "allowed_hosts" in result.reason
    assert endpoint.connections == 0


async def test_keyless_unifiedpush_plaintext_only_when_allowed(
    endpoint: Http1Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"http://127.0.0.1:{endpoint.port}/up?token=abc"
    device = Registration("a" * 64, url, Platform.UNIFIEDPUSH, "up")
    strict = _transport(tmp_path_factory, allowed_hosts=["127.0.0.1"])
    relaxed = _transport(tmp_path_factory, allowed_hosts=["127.0.0.1"], allow_plaintext=True)
    try:
        refused = await strict.send(_note(), device)
        delivered = await relaxed.send(_note(), device)
    finally:
        await strict.close()
        await relaxed.close()
    assert refused.outcome is Outcome.REJECTED and "plaintext" in refused.reason
    assert delivered.outcome is Outcome.DELIVERED
    (request,) = endpoint.requests
    assert request.path == "/up?token=abc"
    assert request.body == b'{"data":{"count":"1"}}'
    assert request.headers["ttl"] == "86400"
    assert request.headers["authorization"].startswith("vapid t=")
    assert "content-encoding" not in request.headers
