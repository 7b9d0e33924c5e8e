"""The one rule for the app a dialect's tokens go to, and the operator's error when the named app cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushstr.config import ConfigError, Settings
from pushstr.dialects.apps import token_app
from pushstr.registry.model import Platform

APNS = ("apns", "log")


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "server": {"data_dir": str(tmp_path)},
            "apps": {
                "default": {"transport": "log"},
                "ios": {"transport": "apns", "team_id": "T", "key_id": "K", "key_file": "k.p8", "topic": "t"},
                "android": {"transport": "fcm", "service_account_file": "sa.json"},
            },
            "platform_apps": {"ios": "ios", "android": "android"},
        }
    )


def test_the_configured_app_wins_when_it_can_push_the_tokens(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert token_app(settings, Platform.IOS, "default", APNS, key="dialects.x.app", tokens="APNs tokens") == "default"
    assert token_app(settings, Platform.ANDROID, "ios", APNS, key="dialects.x.app", tokens="APNs tokens") == "ios"


def test_without_one_the_platforms_app_is_taken_only_when_it_can(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert token_app(settings, Platform.IOS, None, APNS, key="dialects.x.app", tokens="APNs tokens") == "ios"
    assert token_app(settings, Platform.ANDROID, None, APNS, key="dialects.x.app", tokens="APNs tokens") is None


def test_a_named_app_that_cannot_push_them_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError, match=r"^invalid configuration: dialects\.x\.app: a fcm app cannot push APNs"):
        token_app(settings, Platform.IOS, "android", APNS, key="dialects.x.app", tokens="APNs tokens")
    with pytest.raises(ConfigError, match=r"dialects\.x\.app: no app 'missing'"):
        token_app(settings, Platform.IOS, "missing", APNS, key="dialects.x.app", tokens="APNs tokens")
