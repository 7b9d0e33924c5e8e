"""The contract between the engine and the push services."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pushstr.registry.model import Registration


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
    mode: str = "silent"
    count: int = 1
    event_json: bytes | None = None
    relay: str | None = None
    conversation: str | None = None
    preview: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """One push service (or the log). Implementations never raise for provider errors: they return a result."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, notification: Notification, device: Registration) -> SendResult: ...
