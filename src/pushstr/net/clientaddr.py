"""The address a connection comes from, for per-address limits: the one place that reads `X-Forwarded-For`.

Every per-address limit (the Mostro API's, the relay endpoint's connection cap) asks `client_address`, so one
rule decides for all of them: the TCP peer, unless the operator named that peer as a reverse proxy
(`server.trusted_proxies`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The client address when the ASGI server gives none (a test transport, a Unix socket).
UNKNOWN_CLIENT = "unknown"


def _address(text: str) -> IPAddress | None:
    """One `X-Forwarded-For` entry as an address: bare, `[v6]:port` or `v4:port`; None when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies (`server.trusted_proxies`) whose `X-Forwarded-For` is believed, parsed once."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(entry, strict=False) for entry in entries))

    def __contains__(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)


def client_address(request: HTTPConnection, trusted: TrustedProxies) -> str:
    """The address a request or WebSocket comes from, for rate limits: the TCP peer, unless the peer is a trusted proxy.

    Behind a trusted proxy the client is the right-most `X-Forwarded-For` address that is not itself a trusted
    proxy: every proxy appends the address it was reached from, so entries to the left of that one are whatever
    the client wrote and cannot be believed. An entry that is not an address stops the walk at the hop before it
    (a broken header limits that proxy rather than nobody); a header naming only trusted proxies gives the
    left-most of them. The ASGI server must not rewrite `request.client` from proxy headers itself (`pushstr serve`
    runs uvicorn with `proxy_headers=False`), or any client could choose its own address.
    """
    peer = request.client.host if request.client is not None else UNKNOWN_CLIENT
    nearest = _address(peer)
    if nearest is None:
        return peer
    if nearest not in trusted:
        return str(nearest)
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    for entry in reversed(forwarded.split(",")):
        address = _address(entry)
        if address is None:
            break
        nearest = address
        if address not in trusted:
            break
    return str(nearest)
