"""Platform names and device tokens, checked when a device registers rather than when its first push fails.

A token that cannot work (an APNs token that is not hex, a Web Push endpoint on the server's own network) would
otherwise be stored and only fail at delivery, where nobody is told; refusing it at registration gives the
client a reason it can act on. Every dialect that accepts tokens uses these checks, so one rule holds for all.

Endpoint URLs (Web Push, UnifiedPush) pass the one URL guard, `pushstr.net.urlguard.check_url`; nothing here
parses URLs on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pushstr.net.urlguard import HTTP_SCHEMES, EndpointRefused, Resolver, check_url, resolve_host
from pushstr.registry.model import Platform

MAX_TOKEN_BYTES = 4096
"""The longest token of any platform: FCM's limit, and more than any push endpoint URL needs."""

_PLATFORMS: dict[str, Platform] = {
    **{platform.value: platform for platform in Platform},
    "apns": Platform.IOS,
    "fcm": Platform.ANDROID,
    "up": Platform.UNIFIEDPUSH,
}
ACCEPTED_PLATFORMS = "ios (or apns), android (or fcm), unifiedpush (or up), webpush"

_APNS_TOKEN = re.compile(r"(?:[0-9a-fA-F]{2}){32,100}")
_FCM_TOKEN = re.compile(rf"[!-~]{{1,{MAX_TOKEN_BYTES}}}")  # printable ASCII, no space


class InvalidToken(ValueError):
    """A device token that cannot work for its platform; `str(exc)` is a reason safe to show the client.

    The reason names the rule, never what a host resolved to: a client must not learn the server's view of
    internal DNS by registering names and reading the refusals.
    """


def parse_platform(value: str) -> Platform:
    """The platform `value` names, in any case, including the provider names clients also use (apns, fcm, up).

    Clients spell the platform the way their push provider does; accepting those names costs nothing and none
    of them is ambiguous. Anything else raises ValueError naming the accepted values.
    """
    platform = _PLATFORMS.get(value.lower())
    if platform is None:
        raise ValueError(f"platform {value[:40]!r} is not one of {ACCEPTED_PLATFORMS}")
    return platform


async def check_device_token(
    platform: Platform,
    token: str,
    *,
    allowed_hosts: Iterable[str] = (),
    allow_private: bool = False,
    resolve: Resolver = resolve_host,
) -> None:
    """Raise `InvalidToken` unless `token` can be a device token of `platform`.

    APNs: even-length hex, 64–200 characters (Apple's tokens are 32 bytes today and may grow; either case).
    FCM: printable ASCII without whitespace, 1–4096 bytes (FCM tokens are opaque, so only their alphabet and
    size are known). Web Push and UnifiedPush: an http(s) endpoint URL that the URL guard lets pushstr contact,
    with the app's `allowed_hosts` and, when the operator turned the address check off, `allow_private`;
    `resolve` stands in for DNS (tests).
    """
    if platform is Platform.IOS:
        if not _APNS_TOKEN.fullmatch(token):
            raise InvalidToken("device_token: an APNs token is even-length hex, 64–200 characters")
    elif platform is Platform.ANDROID:
        if not _FCM_TOKEN.fullmatch(token):
            raise InvalidToken(
                f"device_token: an FCM token is printable ASCII without spaces, 1–{MAX_TOKEN_BYTES} characters"
            )
    else:
        await _check_endpoint(platform, token, frozenset(allowed_hosts), allow_private, resolve)


async def _check_endpoint(
    platform: Platform, url: str, allowed_hosts: frozenset[str], allow_private: bool, resolve: Resolver
) -> None:
    """The URL guard, asked twice so that its refusal can be told to the client without what DNS answered.

    With `allow_private` the guard checks only the URL itself (scheme, host present) and resolves nothing, so
    its reason speaks of what the client sent and is passed on. The full check then adds the address rule;
    its reason can name the addresses a host resolved to, so the client gets the rule instead.
    """
    if len(url) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"device_token: a push endpoint URL is at most {MAX_TOKEN_BYTES} characters")
    try:
        await check_url(url, schemes=HTTP_SCHEMES, allow_private=True, resolve=resolve)
    except EndpointRefused as exc:
        raise InvalidToken(f"device_token: a {platform} token is the push endpoint URL; {exc}") from None
    try:
        await check_url(
            url, schemes=HTTP_SCHEMES, allowed_hosts=allowed_hosts, allow_private=allow_private, resolve=resolve
        )
    except EndpointRefused:
        raise InvalidToken(
            "device_token: the push endpoint's host must resolve to public addresses only "
            "(not loopback, private, link-local or metadata), or be in the app's allowed_hosts"
        ) from None
