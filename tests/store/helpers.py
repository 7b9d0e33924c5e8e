"""Looking into a store from tests, through the one read the registry itself makes (`iter_registration_batches`)."""

from __future__ import annotations

from collections import Counter

from pushstr.registry.model import Registration
from pushstr.registry.storage import Store


async def stored_registrations(store: Store) -> list[Registration]:
    """Every registration the store holds, in the order it streams them."""
    return [reg async for batch in store.iter_registration_batches() for reg in batch]


async def stored_of(store: Store, pubkey: str) -> list[Registration]:
    """The stored registrations of one pubkey."""
    return [reg for reg in await stored_registrations(store) if reg.pubkey == pubkey]


async def stored_counts(store: Store) -> dict[str, int]:
    """Stored registrations per platform."""
    return dict(Counter(reg.platform.value for reg in await stored_registrations(store)))
