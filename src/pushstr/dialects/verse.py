"""Verse's kinds 3079–3082 (verse-pbc/nostr_push_service)."""

from __future__ import annotations

from pushstr.dialects.base import Dialect, DialectContext


def build(context: DialectContext) -> Dialect | None:
    return None
