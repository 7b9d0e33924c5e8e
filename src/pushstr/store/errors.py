"""Why a store cannot be used."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used as configured (bad URL, schema from a newer release, …)."""


class UnsupportedStoreURL(StoreError, ValueError):
    """The store URL names a database pushstr does not support."""
