"""Amethyst's `POST /register` with kind 22242 events (vitorpamplona/amethyst-push-notif-server)."""

from __future__ import annotations

from pushstr.dialects.base import Dialect, DialectContext


def build(context: DialectContext) -> Dialect | None:
    return None
