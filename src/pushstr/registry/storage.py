"""The storage interface the registry and the dedupe write through; `pushstr.store` implements it.

The hot path never reads the store; it reads the in-memory index the registry rebuilds from
`iter_registration_batches` at start. So the interface is shaped for rare writes, one streaming read at start, and a
few small queries for the API and health checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from pushstr.registry.model import Registration


class Store(Protocol):
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

    async def remember_pushed(self, items: Sequence[tuple[str, int]]) -> None:
        """Record (event_id, seen_at) pairs; an id already recorded keeps its first `seen_at`."""

    async def pushed_since(self, since: int) -> list[str]:
        """Ids of events recorded with `seen_at >= since`, to seed the in-memory dedupe at start."""

    async def forget_pushed(self, before: int) -> int:
        """Drop ids recorded with `seen_at < before`; how many were dropped."""
