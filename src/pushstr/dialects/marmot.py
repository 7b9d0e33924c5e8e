"""Marmot Push v1 (White Noise, reference server marmot-protocol/transponder): pushes without registrations.

There is no registration step. A group member that wants the other members' devices woken gift-wraps a trigger
to this server: kind 1059 `p`-tagged to the server key → kind 13 seal → unsigned kind 446 rumor whose pubkey is
the seal's (a fresh ephemeral key), tags exactly `[["v", "marmot-push-v1"]]`, content the base64 of 1–32
encrypted token chunks (`marmot_token`). Each chunk that opens is one device to wake, silently: the protocol's
pushes carry nothing but "fetch new messages" (`Mode.SILENT`, APNs `content-available` at priority 5).

The dialect claims only the gift wraps addressed to the server (`Addressed`): every other gift wrap is a user's
NIP-17 message and is matched as before. Nothing is stored: each token becomes a memory-only `Registration`
handed straight to delivery (non-persistent, so the outbox keeps it in memory too) and forgotten.

Order of work, cheapest refusal first: a global budget of unwraps (the server key is public, so anyone can send
valid gift wraps; over budget a trigger is shed before any key agreement), the unwrap (two ECDH), the rumor's
shape, age and base64 content, a dedupe on the SHA-256 of the decoded content (the same trigger re-wrapped or
seen on several relays), then per chunk a limit per encrypted chunk, its ECDH and decryption, and a limit per
device token. The seal and rumor pubkeys are one-time keys and so is the wrap's, so "per sender" can only mean
what the reference server limits: each encrypted token and each device token (240 a minute, 5 000 an hour). Every
refusal is counted by reason; log lines name the reason only, never a token.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from pushstr.config import MarmotDialectConfig
from pushstr.dialects.apps import token_app
from pushstr.dialects.base import Dialect, DialectContext
from pushstr.dialects.marmot_token import PLATFORM_APNS, ChunkError, decrypt_chunk, split_chunks
from pushstr.engine.pipeline import Addressed, KindHandler, Submitter
from pushstr.logutil import RateLimitedLog
from pushstr.nostr import nip59
from pushstr.nostr.errors import NostrError
from pushstr.nostr.event import Event
from pushstr.nostr.keys import Keys
from pushstr.nostr.kinds import Kind
from pushstr.ratelimit import KeyedRateLimiter, TokenBucket
from pushstr.registry.model import Platform, Registration
from pushstr.transports.base import Notification

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)

DIALECT = "marmot"
TRIGGER_KIND = 446
TRIGGER_TAGS = [["v", "marmot-push-v1"]]
MAX_TRIGGER_EVENT_BYTES = 160 * 1024
"""How large a gift wrap addressed to the server may be: a 32-chunk trigger, sealed and wrapped (two NIP-44
layers, each padded and base64-encoded), is about 110 KB, beyond the usual event limit."""
MAX_DEDUPE_ENTRIES = 100_000
#: The push transports that can take each kind of token (the log transport stands in for any of them).
_TRANSPORTS = {Platform.IOS: ("apns", "log"), Platform.ANDROID: ("fcm", "log")}

TRIGGERS = Counter("pushstr_marmot_triggers_total", "Marmot push triggers by outcome", ["result"])
CHUNKS = Counter("pushstr_marmot_chunks_total", "Marmot token chunks by outcome", ["result"])
TRIGGER_RESULTS = (
    "pushed",
    "no_push",
    "shed",
    "unwrap_failed",
    "bad_kind",
    "bad_tags",
    "stale",
    "future",
    "bad_size",
    "bad_base64",
    "duplicate",
)
CHUNK_RESULTS = (
    "pushed",
    "dropped",
    "undecryptable",
    "bad_ephemeral_key",
    "bad_token_length",
    "bad_token",
    "bad_platform",
    "no_app",
    "rate_limited",
)
for _result in TRIGGER_RESULTS:
    TRIGGERS.labels(_result)
for _result in CHUNK_RESULTS:
    CHUNKS.labels(_result)


class _Refused(Exception):
    """A trigger not acted on; `result` is the metric label."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


class _RecentDigests:
    """Digests seen within `ttl` seconds, at most `max_entries` (the oldest forgotten first)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._seen: dict[bytes, float] = {}  # insertion order is expiry order: every entry has the same ttl

    def add(self, digest: bytes) -> bool:
        """Remember `digest`; False when it was already seen within the window."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest, expires = next(iter(seen.items()))
            if expires > now and len(seen) < self._max_entries:
                break
            del seen[oldest]
        if digest in seen:
            return False
        seen[digest] = now + self._ttl
        return True


class _Budget:
    """A limit per key, per minute and per hour (both must allow: a burst of a minute's worth, then the rate)."""

    def __init__(self, per_minute: int, per_hour: int, clock: Callable[[], float]) -> None:
        self._minute = KeyedRateLimiter(per_minute, per_minute, clock=clock)
        self._hour = KeyedRateLimiter(per_hour / 60, per_hour, clock=clock)

    def take(self, key: str) -> bool:
        return self._minute.wait(key) == 0.0 and self._hour.wait(key) == 0.0


class MarmotPush(Dialect):
    """Opens triggers gift-wrapped to the server and hands each decrypted token to delivery, silently."""

    name = DIALECT

    def __init__(
        self,
        keys: Keys,
        delivery: Submitter,
        config: MarmotDialectConfig,
        *,
        apps: Mapping[Platform, str | None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`apps` is the app each platform's tokens are pushed with (None: that platform's tokens are dropped,
        counted); `clock` is the wall time trigger ages are measured on, `monotonic` the limits' and dedupe's."""
        self._keys = keys
        self._server = keys.public_hex
        self._delivery = delivery
        self._config = config
        self._apps = apps
        self._clock = clock
        self._unwraps = TokenBucket(config.unwraps_per_minute, config.unwraps_per_minute, monotonic)
        self._recent = _RecentDigests(config.dedupe_seconds, MAX_DEDUPE_ENTRIES, monotonic)
        self._per_chunk = _Budget(config.per_token_per_minute, config.per_token_per_hour, monotonic)
        self._per_device = _Budget(config.per_token_per_minute, config.per_token_per_hour, monotonic)

    def kind_handlers(self) -> Mapping[int, KindHandler]:
        return {Kind.GIFT_WRAP: Addressed(self._server, self.handle, MAX_TRIGGER_EVENT_BYTES)}

    def relay_filters(self) -> Sequence[Mapping[str, Any]]:
        """Gift wraps to this server; the relay session adds the long gift-wrap `since` (NIP-59 backdating)."""
        return ({"kinds": [Kind.GIFT_WRAP], "#p": [self._server]},)

    def handle(self, event: Event) -> None:
        """The pipeline's handler for a verified gift wrap to the server."""
        try:
            chunks = self._open(event)
        except _Refused as exc:
            TRIGGERS.labels(exc.result).inc()
            _rate_log.info(f"marmot-{exc.result}", "marmot trigger ignored: %s", exc.result)
            return
        sent = sum(self._push(chunk, event) for chunk in chunks)
        TRIGGERS.labels("pushed" if sent else "no_push").inc()

    def _open(self, event: Event) -> list[bytes]:
        """The trigger's chunks, once it is known to be a fresh, well-formed trigger not seen before."""
        if not self._unwraps.take():
            raise _Refused("shed")
        try:
            rumor = nip59.unwrap(self._keys, event, verify_wrap=False).rumor
        except NostrError:
            raise _Refused("unwrap_failed") from None
        if rumor.kind != TRIGGER_KIND:
            raise _Refused("bad_kind")
        if rumor.tags != TRIGGER_TAGS:
            raise _Refused("bad_tags")
        now = self._clock()
        if rumor.created_at < now - self._config.max_age_seconds:
            raise _Refused("stale")
        if rumor.created_at > now + self._config.max_future_seconds:
            raise _Refused("future")
        try:
            chunks = split_chunks(rumor.content)
        except ChunkError as exc:
            raise _Refused(exc.reason) from None
        if not self._recent.add(hashlib.sha256(b"".join(chunks)).digest()):
            raise _Refused("duplicate")
        return chunks

    def _push(self, chunk: bytes, event: Event) -> bool:
        """Decrypt one chunk and submit its push; False (counted) for padding and anything unusable."""
        if not self._per_chunk.take(hashlib.sha256(chunk).hexdigest()):
            CHUNKS.labels("rate_limited").inc()
            return False
        try:
            token = decrypt_chunk(self._keys, chunk)
        except ChunkError as exc:
            CHUNKS.labels(exc.reason).inc()
            return False
        platform = Platform.IOS if token.platform == PLATFORM_APNS else Platform.ANDROID
        app = self._apps.get(platform)
        if app is None:
            CHUNKS.labels("no_app").inc()
            return False
        if not self._per_device.take(hashlib.sha256(f"{platform}:{token.token}".encode()).hexdigest()):
            CHUNKS.labels("rate_limited").inc()
            return False
        now = self._clock()
        device = Registration(
            pubkey=self._server,  # the device belongs to no identity pushstr knows
            device_token=token.token,
            platform=platform,
            app=app,
            dialect=DIALECT,
            kinds=frozenset({TRIGGER_KIND}),
            created_at=now,
            mode=self._config.mode,
            persistent=False,
        )
        notification = Notification(
            event_id=event.id,
            kind=TRIGGER_KIND,
            recipient=self._server,
            sender=None,
            created_at=int(now),
            app=app,
            mode=self._config.mode,
        )
        if self._delivery.submit(notification, device):
            CHUNKS.labels("pushed").inc()
            return True
        CHUNKS.labels("dropped").inc()
        return False


def build(context: DialectContext) -> MarmotPush | None:
    """The dialect, or None when it is off; a ConfigError when a configured app cannot take its tokens."""
    settings = context.settings
    config = settings.dialects.marmot
    if not config.enabled:
        return None
    configured = {
        Platform.IOS: ("apns_app", config.apns_app, "APNs"),
        Platform.ANDROID: ("fcm_app", config.fcm_app, "FCM"),
    }
    apps = {
        platform: token_app(
            settings, platform, app, _TRANSPORTS[platform], key=f"dialects.marmot.{key}", tokens=f"{name} tokens"
        )
        for platform, (key, app, name) in configured.items()
    }
    return MarmotPush(context.keys, context.delivery, config, apps=apps)
