"""One typed settings object: embedded defaults ← TOML file ← `PUSHSTR_*` environment.

Every section forbids unknown keys, so a typo stops the start with a message naming the key instead of being
silently ignored. Environment overrides nest with `__` (`PUSHSTR_SERVER__PORT=9000`); their values are read as
TOML literals when they parse as one (numbers, booleans, arrays) and as plain strings otherwise.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "PUSHSTR_"
DEFAULT_CONFIG_FILE = Path("pushstr.toml")

DEFAULT_RELAYS = [
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.primal.net",
    "wss://relay.nostr.band",
]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./data")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest HTTP request body accepted")
    public_url: str | None = Field(
        None, description="absolute base URL clients sign in NIP-98 `u` tags when behind a proxy"
    )


class NostrConfig(_Section):
    relays: list[str] = Field(default_factory=lambda: list(DEFAULT_RELAYS))
    secret_key: str | None = None
    secret_key_file: Path | None = None
    max_event_bytes: int = Field(64 * 1024, ge=1024)
    max_event_age_seconds: int = Field(3 * 24 * 3600, ge=60, description="older events are not pushed")
    since_window_seconds: int = Field(3600, ge=0, description="catch-up window on (re)subscribe")
    giftwrap_since_window_seconds: int = Field(3 * 24 * 3600, ge=0, description="kind 1059 is backdated")
    filter_chunk_size: int = Field(500, ge=1, le=10000)
    reconnect_min_seconds: float = Field(1.0, gt=0)
    reconnect_max_seconds: float = Field(300.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    dedupe_memory: int = Field(200_000, ge=1000, description="event ids remembered in memory")

    @field_validator("relays")
    @classmethod
    def _relay_urls(cls, relays: list[str]) -> list[str]:
        for url in relays:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"relay URL must start with ws:// or wss://: {url!r}")
        return relays


class StoreConfig(_Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default sqlite file in the data dir")


class LogTransportConfig(_Section):
    path: str = "-"


class TransportsConfig(_Section):
    log: LogTransportConfig = LogTransportConfig()


class EndpointConfig(_Section):
    """The built-in relay endpoint (`/` WebSocket)."""

    enabled: bool = True
    max_message_bytes: int = Field(128 * 1024, ge=1024)
    events_per_minute: int = Field(600, ge=1, description="per connection")
    max_connections: int = Field(1000, ge=1)


class RegistrationConfig(_Section):
    default_kinds: list[int] = Field(default_factory=lambda: [4, 1059, 1, 9735])
    max_devices_per_pubkey: int = Field(20, ge=1)
    nip98_window_seconds: int = Field(60, ge=1)


class AppConfig(_Section):
    """One app pushstr pushes for: which push service, its credentials, and how payloads look."""

    transport: Literal["apns", "fcm", "webpush", "log"] = "log"
    base_url: str | None = None
    mode: Literal["silent", "alert", "alert+event", "encrypted"] = "silent"
    # APNs
    key_file: Path | None = None
    key_id: str | None = None
    team_id: str | None = None
    topic: str | None = None
    environment: Literal["production", "sandbox"] = "production"
    # FCM
    service_account_file: Path | None = None
    # Web Push / UnifiedPush
    vapid_subject: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    allow_plaintext: bool = False
    # payload and batching
    preview_length: int = Field(0, ge=0, le=1000)
    batch_window_seconds: float = Field(0.0, ge=0)
    cooldown_seconds: float = Field(0.0, ge=0)


def _default_apps() -> dict[str, AppConfig]:
    return {"default": AppConfig()}


PlatformName = Literal["ios", "android", "unifiedpush", "webpush"]


def _default_platform_apps() -> dict[PlatformName, str]:
    return {"ios": "default", "android": "default", "unifiedpush": "default", "webpush": "default"}


class Settings(_Section):
    server: ServerConfig = ServerConfig()
    nostr: NostrConfig = NostrConfig()
    store: StoreConfig = StoreConfig()
    transports: TransportsConfig = TransportsConfig()
    endpoint: EndpointConfig = EndpointConfig()
    registration: RegistrationConfig = RegistrationConfig()
    apps: dict[str, AppConfig] = Field(default_factory=_default_apps)
    platform_apps: dict[PlatformName, str] = Field(
        default_factory=_default_platform_apps, description="the app a registration gets when it names none"
    )

    @property
    def store_url(self) -> str:
        if self.store.url:
            return self.store.url
        return f"sqlite+aiosqlite:///{self.server.data_dir / 'pushstr.sqlite3'}"

    def app_for(self, platform: str, app: str | None) -> str | None:
        """The configured app id a registration belongs to, or None when `app` is unknown."""
        chosen = app or self.platform_apps.get(platform)  # type: ignore[call-overload]
        return chosen if chosen in self.apps else None


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from `PUSHSTR_A__B=value` variables."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another PUSHSTR_ variable")
        node[path[-1]] = _env_value(raw)
    return tree


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path` (or `./pushstr.toml` when it exists) with environment overrides applied."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    data: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data = _merge(data, env_overrides(environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    for platform, app in settings.platform_apps.items():
        if app not in settings.apps:
            raise ConfigError(f"platform_apps.{platform}: no app {app!r} in [apps]")
    return settings
