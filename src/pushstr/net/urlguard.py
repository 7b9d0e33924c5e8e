"""The one guard every user-supplied URL passes before pushstr connects to it: push endpoints and relays.

Web Push / UnifiedPush endpoints and the relays a kind 22456 device asks pushstr to watch are chosen by whoever
registers. Without this guard, anyone could make the server POST to (or hold a WebSocket open to) its own loopback
services, the LAN or a cloud metadata service. A URL is refused unless its scheme is one the caller allows and
every address its host resolves to (through the event loop's `getaddrinfo`, with a timeout) is globally routable;
hosts listed in `allowed_hosts` (a private UnifiedPush distributor, say) skip the address check, and so does every
host when the operator turned the address check off (`allow_private`). All of this happens before any connection.

What this cannot stop on its own: a host whose DNS answer changes between this check and the HTTP client's own
lookup (DNS rebinding). Short TTLs make that possible; deployments that care should also filter egress.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from urllib.parse import urlsplit

#: Cloud instance-metadata services (AWS/GCP/Azure/OCI, AWS IPv6, Alibaba) named for clearer errors.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port → the addresses the host resolves to (as text); raises OSError when it does not resolve."""
HTTP_SCHEMES = ("http", "https")
RELAY_SCHEMES = ("ws", "wss")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


async def resolve_host(host: str, port: int) -> list[str]:
    """The event loop's `getaddrinfo` (the system resolver, in a thread), addresses only."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


class EndpointRefused(Exception):
    """The endpoint must not be contacted; the message says why (safe to log: no token parts)."""


def address_problem(address: IPAddress) -> str | None:
    """Why pushing to `address` is not allowed, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return "not a public address"
    return None


async def check_url(
    url: str,
    *,
    schemes: Collection[str] = HTTP_SCHEMES,
    allowed_hosts: Collection[str] = (),
    allow_private: bool = False,
    timeout: float = RESOLVE_TIMEOUT_SECONDS,
    resolve: Resolver = resolve_host,
) -> None:
    """Raise `EndpointRefused` unless `url` may be contacted; see the module docstring."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError as exc:
        raise EndpointRefused(f"endpoint is not a valid URL: {exc}") from exc
    if parts.scheme not in schemes:
        raise EndpointRefused(f"endpoint scheme {parts.scheme!r} is not {' or '.join(schemes)}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise EndpointRefused("endpoint has no host")
    if allow_private or host in {allowed.lower() for allowed in allowed_hosts}:
        return
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(timeout):
                found = await resolve(host, port)
            addresses = [ipaddress.ip_address(address) for address in found]
        except (OSError, TimeoutError, ValueError) as exc:
            raise EndpointRefused(f"endpoint host {host!r} does not resolve") from exc
        if not addresses:
            raise EndpointRefused(f"endpoint host {host!r} does not resolve")
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            raise EndpointRefused(
                f"endpoint host {host!r} resolves to {address}, {problem}; list it in allowed_hosts to permit it"
            )


async def check_endpoint(url: str, allowed_hosts: Collection[str], timeout: float = RESOLVE_TIMEOUT_SECONDS) -> None:
    """`check_url` for a Web Push / UnifiedPush endpoint (http or https)."""
    await check_url(url, allowed_hosts=allowed_hosts, timeout=timeout)
