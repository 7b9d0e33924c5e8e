"""Relays watched on behalf of registrations: the one place a relay URL named by a client joins the relay pool.

0xchat's settings list relays, Amethyst's `/register` events list the account's read and DM relays, Nos names the
relays its user reads. Every such URL passes the one URL guard (`check_url`: `ws://`/`wss://`, its host resolving
only to public addresses unless `registration.allow_private_relays`) before anything connects to it, at most
`registration.max_relays_per_registration` are taken from one registration and at most
`registration.max_registration_relays` are watched for all registrations together (configured relays are watched
anyway and count for neither). URLs are kept in their normalised spelling (`relays.urls`), so a relay a client
writes differently from the operator is still the configured one. A relay stays in the pool while some
registration names it; the last registration to let go of it disconnects it.

One instance is shared by every dialect (the composition root builds it), so the global cap holds across them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter

from pushstr.config import RegistrationConfig
from pushstr.logutil import RateLimitedLog, ident
from pushstr.net.urlguard import RELAY_SCHEMES, EndpointRefused, Resolver, check_url, resolve_host
from pushstr.relays.urls import normalize_relay_url

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

REASONS = ("invalid", "refused", "limit")
REFUSED = Counter(
    "pushstr_registration_relays_refused_total", "Relays named by registrations and not watched", ["reason"]
)
for _reason in REASONS:
    REFUSED.labels(_reason)

Key = tuple[str, str]


class RegistrationRelays:
    """Which relays each registration (`(pubkey, device token)`) has pushstr watch, and the pool kept in step."""

    def __init__(
        self,
        config: RegistrationConfig,
        *,
        configured: Iterable[str],
        add_relay: Callable[[str], None],
        remove_relay: Callable[[str], None],
        resolve: Resolver = resolve_host,
    ) -> None:
        self._config = config
        self._configured = tuple(dict.fromkeys(configured))
        self._configured_keys = frozenset(normalize_relay_url(url) or url for url in self._configured)
        self._add_relay = add_relay
        self._remove_relay = remove_relay
        self._resolve = resolve
        self._users: dict[str, set[Key]] = {}
        self._of: dict[Key, tuple[str, ...]] = {}

    @property
    def configured(self) -> tuple[str, ...]:
        """The configured relays, in configured order."""
        return self._configured

    def watched(self) -> frozenset[str]:
        """The relays watched for registrations now (configured relays not included)."""
        return frozenset(self._users)

    async def accepted(self, listed: Sequence[object]) -> list[str]:
        """The URLs of a registration's list that may be watched, normalised: plain `ws://`/`wss://` URLs that
        pass the URL guard, in order, without repeats, at most `max_relays_per_registration`. The rest is counted
        by reason; nothing is connected yet (`watch` does that once the registration is accepted)."""
        accepted: list[str] = []
        for named in dict.fromkeys(listed):
            url = normalize_relay_url(named) if isinstance(named, str) else None
            if url is None:
                REFUSED.labels("invalid").inc()
                continue
            if url in accepted:
                continue
            if len(accepted) >= self._config.max_relays_per_registration:
                REFUSED.labels("limit").inc()
                continue
            if url not in self._configured_keys:
                try:
                    await check_url(
                        url,
                        schemes=RELAY_SCHEMES,
                        allow_private=self._config.allow_private_relays,
                        resolve=self._resolve,
                    )
                except EndpointRefused:
                    REFUSED.labels("refused").inc()
                    _rate_log.info("relay-refused", "registration relay %s refused by the URL guard", ident(url))
                    continue
            accepted.append(url)
        return accepted

    def watch(self, key: Key, relays: Iterable[str]) -> tuple[str, ...]:
        """Point registration `key` at `relays` (already `accepted`), connecting to relays new to the pool and
        dropping those nobody names any more; what is watched for it now (the global cap may leave some out)."""
        previous = self._of.pop(key, ())
        kept: list[str] = []
        for url in dict.fromkeys(relays):
            if url in self._configured_keys:
                continue
            users = self._users.get(url)
            if users is None:
                if len(self._users) >= self._config.max_registration_relays:
                    REFUSED.labels("limit").inc()
                    continue
                users = self._users[url] = set()
                self._add_relay(url)
            users.add(key)
            kept.append(url)
        if kept:
            self._of[key] = tuple(kept)
        for url in set(previous).difference(kept):
            users = self._users.get(url)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._users[url]
                    self._remove_relay(url)
        return tuple(kept)

    def release(self, key: Key) -> None:
        """Registration `key` is gone: it no longer keeps any relay watched."""
        self.watch(key, ())
