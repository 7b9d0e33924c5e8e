"""The storage interface the registry and the dedupe write through; `pushstr.store` implements it.

The hot path never reads the store; it reads the in-memory index the registry rebuilds from
`iter_registration_batches` at start. So the interface is shaped for rare writes, one streaming read at start, and a
few small queries for the API and health checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field, replace
from typing import Protocol

from pushstr.registry.model import Registration

OutboxKey = tuple[str, str, str]
"""(event_id, pubkey, device_token): one push of one event to one device."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A pending push as stored: its key, its app, the notification (JSON) and where its retries stand."""

    event_id: str
    pubkey: str
    device_token: str
    app: str
    notification: str
    enqueued_at: float
    expires_at: float
    next_attempt_at: float
    attempts: int = 0
    last_reason: str | None = None

    @property
    def key(self) -> OutboxKey:
        return (self.event_id, self.pubkey, self.device_token)


@dataclass(frozen=True, slots=True)
class OutboxAttempt:
    """A pending push that failed an attempt and waits for its next one."""

    key: OutboxKey
    attempts: int
    next_attempt_at: float
    last_reason: str


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """The last final outcome of a device's pushes, and when (Unix seconds): what its owner can look up."""

    pubkey: str
    device_token: str
    at: float
    outcome: str


@dataclass(frozen=True, slots=True)
class HeldPush:
    """The pushes held for one device in its quiet hours: how many, the latest (`outbox.encode_notification`), its
    kind, whether they were of several kinds, and when the window ends (Unix seconds)."""

    pubkey: str
    device_token: str
    app: str
    ends_at: float
    count: int
    kind: int
    mixed: bool
    notification: str


def merge_held(stored: HeldPush, added: HeldPush) -> HeldPush:
    """One device's row after `added` was held too: counts add up, the latest notification and kind replace the
    stored ones, `mixed` once kinds differ, the later window end wins (what `Store.add_held` does in SQL)."""
    mixed = stored.mixed or added.mixed or stored.kind != added.kind
    ends_at = max(stored.ends_at, added.ends_at)
    return replace(added, ends_at=ends_at, count=stored.count + added.count, mixed=mixed)


@dataclass(slots=True)
class OutboxWrite:
    """What one group commit writes, in one transaction: new pending pushes, retries, final outcomes (rows to
    delete) and the ids of events now handled (pushed, or held back by policy)."""

    added: list[OutboxRow] = field(default_factory=list)
    retried: list[OutboxAttempt] = field(default_factory=list)
    finished: list[OutboxKey] = field(default_factory=list)
    handled: list[tuple[str, int]] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    handled_shards: list[tuple[str, int, int]] = field(default_factory=list)
    """(event id, shard, seen at): with several instances, the shards an event was handled for."""

    def __bool__(self) -> bool:
        return bool(self.added or self.retried or self.finished or self.handled or self.statuses or self.handled_shards)


@dataclass(frozen=True, slots=True)
class StoredFilter:
    """A user's notification filter (Verse kind 3081): the app the client named, the filter's id and canonical
    JSON, and the `created_at` of the event that upserted it."""

    app: str
    pubkey: str
    filter_id: str
    filter_json: str
    created_at: float


class FilterStore(Protocol):
    """Users' notification filters, kept beside their registrations."""

    async def save_filter(self, stored: StoredFilter) -> None:
        """Insert or replace the filter keyed by (app, pubkey, filter_id)."""

    async def delete_filters(self, app: str, pubkey: str, filter_ids: Collection[str]) -> int:
        """Delete these filters of one user in one app; how many there were."""

    async def load_filters(self) -> list[StoredFilter]:
        """Every stored filter (the start-up read); rows that do not open are left out."""


class Store(FilterStore, Protocol):
    """Durable registrations and the ids of events already pushed."""

    async def open(self) -> None:
        """Connect and bring the schema up to date; call once before anything else."""

    async def close(self) -> None:
        """Release every connection; the store cannot be used afterwards."""

    async def ping(self) -> bool:
        """Whether the database answers right now (health checks); never raises."""

    async def save_registration(self, reg: Registration) -> None:
        """Insert or replace the registration keyed by (pubkey, device_token).

        Raises ValueError for a memory-only registration (`persistent=False` or an `expires_at`), and for one
        whose `groups`, `authors` or `relays` hold an empty value or one with whitespace (see `store.schema`).
        """

    async def delete_registration(self, pubkey: str, device_token: str) -> bool:
        """Delete one registration; whether it existed."""

    async def delete_token(self, device_token: str) -> list[Registration]:
        """Delete a device token under every pubkey; the registrations that were deleted."""

    def iter_registration_batches(self, batch_size: int = 10_000) -> AsyncIterator[list[Registration]]:
        """Every stored registration, in lists of up to `batch_size`: the start-up read, with no per-row await."""

    async def write_outbox(self, write: OutboxWrite) -> None:
        """Apply one group commit in one transaction: insert `added` (a key already present is kept as it is),
        update `retried`, delete `finished`, record `handled` event ids (an id already recorded keeps its first
        `seen_at`) and set the `statuses` of the devices they concern."""

    async def load_outbox(self) -> list[OutboxRow]:
        """Every pending push, oldest first (the recovery read at start)."""

    async def delivery_statuses(self, pubkey: str) -> dict[str, DeliveryStatus]:
        """The last delivery outcome of each of a pubkey's stored devices that has had one, by device token."""

    async def pushed_since(self, since: int) -> list[str]:
        """Ids of events recorded with `seen_at >= since`, to seed the in-memory dedupe at start."""

    async def forget_pushed(self, before: int) -> int:
        """Drop ids recorded with `seen_at < before`; how many were dropped."""

    async def use_token(self, event_id: str, expires_at: int) -> bool:
        """Record a NIP-98 authorization id as used until `expires_at`; False when it was used already (a replay,
        also one made through another instance or before a restart)."""

    async def forget_tokens(self, before: int) -> int:
        """Drop used authorization ids that expired before `before`; how many were dropped."""

    async def save_preferences(self, pubkey: str, device_token: str, preferences: bytes) -> None:
        """Insert or replace a device's notification preferences (`registry.preferences`, as JSON)."""

    async def delete_preferences(self, pubkey: str, device_token: str) -> bool:
        """Delete a device's preferences; whether there were any."""

    async def registrations_of(self, pubkey: str) -> list[Registration]:
        """The stored registrations of one pubkey (another instance changed them)."""

    async def preferences_of(self, pubkey: str) -> list[tuple[str, bytes]]:
        """(device token, preferences) of one pubkey's stored preferences."""

    async def handled_in_shards(self, shards: Collection[int], since: int) -> list[tuple[str, int]]:
        """(event id, shard) of the events handled for `shards` since `since` (Unix seconds)."""

    async def load_preferences(self) -> list[tuple[str, str, bytes]]:
        """Every device's stored preferences as (pubkey, device token, JSON): the start-up read."""

    async def add_held(self, holds: Collection[HeldPush]) -> None:
        """Add held pushes to their devices' rows as `merge_held` says (one row per device, whichever instance
        held the push)."""

    async def take_due_held(self, now: float) -> list[HeldPush]:
        """Delete and return the rows whose window ended by `now` (Unix seconds): each row goes to one caller."""
