"""The contract between delivery and the push services.

Delivery renders a `Notification` once into a platform-neutral `Rendered` payload, the transport turns that into
the exact bytes and headers its provider receives (`encode`, once), and every attempt resends those (`send`). A
retry therefore never re-renders: no second NIP-44 encryption, no second profile lookup, the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from pushstr.config import ConfigError
from pushstr.registry.model import Mode, Registration

#: The largest payload APNs, FCM and Web Push accept.
MAX_PAYLOAD_BYTES = 4096
#: The one spelling of the refusal for a payload that cannot be made to fit.
PAYLOAD_TOO_LARGE = "payload-too-large"
#: The one spelling of the retry for a provider reply larger than we read.
RESPONSE_TOO_LARGE = "response-too-large"

Style = Literal["silent", "alert", "encrypted"]


class TransportConfigError(ConfigError):
    """An app's push credentials are unusable (unreadable key, wrong key type); the message names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid configuration: {key}: {reason}")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt to push one notification to one device came to.

    `retry_after` (seconds) is the provider's `Retry-After` when it gave one; `reason` is the provider's error
    code or a short explanation, safe to log (no tokens, no content). `provider_timestamp` (Unix seconds) is when
    the provider says the token stopped being valid (APNs 410): a registration made after it is newer than the
    provider's knowledge and must not be pruned.
    """

    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None
    status: int | None = None
    provider_timestamp: float | None = None

    @classmethod
    def delivered(cls, status: int | None = None) -> SendResult:
        return cls(Outcome.DELIVERED, status=status)

    @classmethod
    def retry(cls, reason: str, status: int | None = None, retry_after: float | None = None) -> SendResult:
        return cls(Outcome.RETRY, reason=reason, status=status, retry_after=retry_after)

    @classmethod
    def dead(cls, reason: str, status: int | None = None, provider_timestamp: float | None = None) -> SendResult:
        return cls(Outcome.DEAD, reason=reason, status=status, provider_timestamp=provider_timestamp)

    @classmethod
    def rejected(cls, reason: str, status: int | None = None) -> SendResult:
        return cls(Outcome.REJECTED, reason=reason, status=status)


@dataclass(slots=True)
class Notification:
    """One thing to tell one device: the event that triggered it, never its decrypted content.

    `count` > 1 when batching coalesced several events into one push; `event_json` is the raw signed event for
    the `alert+event` mode; `relay` is a relay the event was seen on (a hint for id-only payloads).

    Treat it as immutable (batching builds new ones with `dataclasses.replace`). It is not declared frozen
    because one is built per matched device on the ingest path, where a frozen init costs three times as much.
    """

    event_id: str
    kind: int
    recipient: str
    sender: str | None
    created_at: int
    app: str
    mode: Mode = Mode.SILENT
    count: int = 1
    event_json: bytes | None = None
    relay: str | None = None
    conversation: str | None = None
    preview: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    merged: tuple[str, ...] = ()
    """Ids of the earlier events batching merged into this one (each has its own outbox row)."""

    @property
    def event_ids(self) -> tuple[str, ...]:
        """Every event this push stands for: the merged ones, then its own."""
        return (*self.merged, self.event_id)


ENCRYPTED_EVENT_KEY = "encryptedEvent"
"""The data key a `wrapped` push carries its kind 1059 in (what Amethyst's FCM service reads; a push URL gets its
value alone as the body)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """What to show and what to hand the app, before any platform's framing.

    `data` values are strings, or flags (`bool`) where a client reads a JSON boolean (notepush's `encrypted`):
    APNs and Web Push carry a flag as JSON `true`/`false`, FCM data messages, which allow strings only, as
    `"true"`/`"false"`. `collapse_id` lets a newer push
    replace an older one of the same conversation (APNs `apns-collapse-id`, FCM `collapse_key` and the Android
    notification `tag`, Web Push `Topic`); it is a digest, so it says nothing about who talks to whom.
    `wake` asks an alert to also wake the app in the background (APNs `content-available`), as a generic alert
    does: it shows fixed text, so the app has to fetch what happened itself.
    """

    style: Style
    title: str | None = None
    body: str | None = None
    data: Mapping[str, str | bool] = field(default_factory=dict)
    collapse_id: str | None = None
    mutable_content: bool = False
    degraded: bool = False
    wake: bool = False


@dataclass(frozen=True, slots=True)
class Encoded:
    """One push as its provider receives it, built once: the body and the headers that do not change per attempt.

    Per-attempt parts (an APNs or FCM bearer token, a VAPID signature) are added by `Transport.send`.
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """One push service (or the log). Implementations never raise for provider errors: they return a result."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def measure(self, rendered: Rendered, device: Registration) -> int:
        """The size the provider's payload limit is checked against, for the 4 KB degrade rule."""
        ...

    def encode(self, notification: Notification, rendered: Rendered, device: Registration) -> Encoded | SendResult:
        """The wire form of `rendered` for `device`, or the final result when it cannot be sent at all."""
        ...

    async def send(self, encoded: Encoded, device: Registration) -> SendResult:
        """One attempt; called again with the same `encoded` on every retry."""
        ...
