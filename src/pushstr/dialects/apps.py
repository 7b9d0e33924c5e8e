"""Which configured app a dialect's tokens are pushed with.

Several dialects take tokens of one kind only (APNs, FCM, push URLs) and let the operator name the app for them,
falling back to the platform's app. The rule is the same everywhere, and so is the error an operator gets when the
named app cannot push those tokens, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Collection

from pushstr.config import ConfigError, Settings
from pushstr.registry.model import Platform


def token_app(
    settings: Settings,
    platform: Platform,
    configured: str | None,
    transports: Collection[str],
    *,
    key: str,
    tokens: str,
) -> str | None:
    """The configured app when its transport is one of `transports` (else a ConfigError naming `key`), or, with
    none configured, the platform's app when its transport can push `tokens`; None when no app can."""
    if configured is not None:
        app = settings.apps.get(configured)
        if app is None:
            raise ConfigError(f"invalid configuration: {key}: no app {configured!r}")
        if app.transport not in transports:
            raise ConfigError(f"invalid configuration: {key}: a {app.transport} app cannot push {tokens}")
        return configured
    chosen = settings.app_for(platform, None)
    return chosen if chosen is not None and settings.apps[chosen].transport in transports else None
