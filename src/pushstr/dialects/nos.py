"""Nos's kind 6666 registrations (planetary-social/nos)."""

from __future__ import annotations

from pushstr.dialects.base import Dialect, DialectContext


def build(context: DialectContext) -> Dialect | None:
    return None
