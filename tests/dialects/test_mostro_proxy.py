"""The client address behind a reverse proxy: `X-Forwarded-For` counts only from trusted proxies.

The rule is checked on `client_address` itself, then against `pushstr serve` run as an operator runs it: uvicorn
must not rewrite the peer address from proxy headers on its own, or rotating the header would dodge the
`/api/notify` limit from anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from pushstr.config import ServerConfig
from pushstr.net.clientaddr import TrustedProxies, client_address
from pushstr.nostr.keys import Keys
from tests.conftest import free_port
from tests.e2e.durability_support import PUSHSTR_BIN, PUSHSTR_SRC, READY_SECONDS

BURST = 3


def _request(peer: str | None, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope = {"type": "http", "headers": headers, "client": (peer, 50000) if peer is not None else None}
    return Request(scope)


PROXIES = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # an untrusted peer's header is ignored
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted peer without the header is the client
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # what the client wrote is left of its address
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # trusted hops are skipped
        ("127.0.0.1", ["6.6.6.6", "198.51.100.1,10.1.2.3"], "198.51.100.1"),  # several header lines are one list
        ("127.0.0.1", ["198.51.100.1, not-an-ip, 10.1.2.3"], "10.1.2.3"),  # garbage stops at the hop before it
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # only proxies: the left-most
        ("127.0.0.1", ["198.51.100.1:4711"], "198.51.100.1"),
        ("127.0.0.1", ["[2001:db8::1]:4711"], "2001:db8::1"),
        ("fd00::5", ["2001:db8::2"], "2001:db8::2"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # an IPv4-mapped peer is its IPv4 address
        (None, ["198.51.100.1"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], client: str) -> None:
    assert client_address(_request(peer, *forwarded), PROXIES) == client


def test_no_trusted_proxies_means_the_peer_whatever_the_header() -> None:
    assert client_address(_request("127.0.0.1", "198.51.100.1"), TrustedProxies()) == "127.0.0.1"


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert ServerConfig(trusted_proxies=["10.0.0.1", "192.168.0.0/16", "::1"]).trusted_proxies[1] == "192.168.0.0/16"
    with pytest.raises(ValidationError, match="not an IP address or CIDR network"):
        ServerConfig(trusted_proxies=["proxy.local"])


@asynccontextmanager
async def serve(tmp_path: Path, trusted: list[str]) -> AsyncIterator[str]:
    """`pushstr serve` in a process of its own with these trusted proxies; yields its base URL."""
    port = free_port()
    config = tmp_path / "pushstr.toml"
    config.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"
port = {port}
trusted_proxies = {trusted!r}

[nostr]
relays = []
secret_key = "{Keys.generate().secret_hex}"

[transports.log]
path = "{tmp_path / "push.log"}"

[dialects.mostro]
notify_per_ip_burst = {BURST}
"""
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PUSHSTR_SRC), os.environ.get("PYTHONPATH", "")])}
    with (tmp_path / "pushstr.out").open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(PUSHSTR_BIN), "serve", "--config", str(config), stdout=out, stderr=out, env=env, cwd=tmp_path
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while True:  # another process: nothing to await but its answer
                assert process.returncode is None, (tmp_path / "pushstr.out").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(base_url + "/api/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "pushstr did not start"
                await asyncio.sleep(0.05)
        yield base_url
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def _notify(client: httpx.AsyncClient, forwarded_for: str) -> int:
    """One `/api/notify` for a fresh trade pubkey (so only the per-address limit can refuse it)."""
    response = await client.post(
        "/api/notify", json={"trade_pubkey": os.urandom(32).hex()}, headers={"x-forwarded-for": forwarded_for}
    )
    return response.status_code


async def test_without_trusted_proxies_a_rotating_header_does_not_dodge_the_notify_limit(tmp_path: Path) -> None:
    async with serve(tmp_path, []) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        answers = [await _notify(client, f"198.51.100.{n}") for n in range(BURST + 3)]
    assert answers == [202] * BURST + [429] * 3


async def test_behind_a_trusted_proxy_the_forwarded_address_is_limited(tmp_path: Path) -> None:
    async with serve(tmp_path, ["127.0.0.1"]) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        rotating = [await _notify(client, f"6.6.6.6, 198.51.100.{n}") for n in range(BURST + 3)]
        same = [await _notify(client, f"{n}.0.0.1, 203.0.113.7") for n in range(1, BURST + 2)]
    assert rotating == [202] * (BURST + 3)  # each its own client
    assert same == [202] * BURST + [429]  # what the client wrote left of its address changes nothing
