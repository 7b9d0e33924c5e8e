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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    ca_file: Path | None = Field(None, description="extra CA bundle to trust for this app's push service")
    # payload and batching
    preview_length: int = Field(0, ge=0, le=1000)
    batch_window_seconds: float = Field(0.0, ge=0)
    cooldown_seconds: float = Field(0.0, ge=0)
    ttl_seconds: int = Field(86400, ge=0, le=28 * 86400, description="how long the push service keeps a push")
    urgency: Literal["very-low", "low", "normal", "high"] = Field("high", description="Web Push `Urgency`")
    # delivery
    queue_size: int = Field(10_000, ge=1, description="pushes waiting for this app before new ones are dropped")
    concurrency: int = Field(64, ge=1, le=10_000, description="requests in flight to the push service")
    timeout_seconds: float = Field(10.0, gt=0, description="one request to the push service")
    max_attempts: int = Field(5, ge=1, le=100, description="tries per push before giving up")
    backoff_base_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)


class PushSettingsDialectConfig(_Section):
    """Kind 22456 push settings (0xchat's draft NIP): registrations and presence sent as encrypted events."""

    enabled: bool = True
    app: str | None = Field(None, description="the app these devices get; default: their platform's app")
    heartbeat_timeout_seconds: float = Field(
        150.0, gt=0, description="a device with no heartbeat for this long is offline (0xchat beats every 60 s)"
    )
    stale_after_seconds: int = Field(600, ge=1, description="settings and logouts older than this are ignored")
    max_relays_per_device: int = Field(8, ge=0, le=100)
    max_relays: int = Field(100, ge=0, description="relays added on behalf of devices, in total")
    allow_private_relays: bool = Field(False, description="accept loopback/private relay addresses from devices")
    max_groups_per_device: int = Field(500, ge=0, le=10_000)
    max_authors_per_device: int = Field(1000, ge=0, le=10_000)


class MostroDialectConfig(_Section):
    """The Mostro push API (`/api/*`), wire-compatible with MostroP2P/mostro-push-server."""

    enabled: bool = True
    app: str = Field("mostro", description="the app Mostro devices get; added (log transport) when not configured")
    privacy_mode: bool = Field(True, description="tokens in memory only, with a TTL; silent pushes")
    token_ttl_seconds: int = Field(48 * 3600, ge=60)
    trusted_instances: list[str] = Field(
        default_factory=list, description="Mostro instance pubkeys (64 hex) allowed to register; empty = any"
    )
    notify_per_pubkey_per_minute: float = Field(30, gt=0)
    notify_per_pubkey_burst: int = Field(10, ge=1)
    notify_per_ip_per_minute: float = Field(120, gt=0)
    notify_per_ip_burst: int = Field(30, ge=1)
    register_per_ip_per_minute: float = Field(120, gt=0)
    register_per_ip_burst: int = Field(100, ge=1)

    @field_validator("trusted_instances")
    @classmethod
    def _hex_pubkeys(cls, pubkeys: list[str]) -> list[str]:
        for pubkey in pubkeys:
            if len(pubkey) != 64 or pubkey.strip("0123456789abcdef"):
                raise ValueError(f"not a 64-hex lowercase pubkey: {pubkey!r}")
        return pubkeys


# Mostro's documented batching (5 s delay, 60 s cooldown per device), the defaults of its dedicated app.
MOSTRO_APP_DEFAULTS: dict[str, Any] = {"batch_window_seconds": 5.0, "cooldown_seconds": 60.0, "mode": "silent"}


class DialectsConfig(_Section):
    push_settings: PushSettingsDialectConfig = PushSettingsDialectConfig()
    mostro: MostroDialectConfig = MostroDialectConfig()


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
    dialects: DialectsConfig = DialectsConfig()

    @model_validator(mode="before")
    @classmethod
    def _mostro_app(cls, data: Any) -> Any:
        """Give the Mostro dialect its dedicated app, with Mostro's batching unless the operator set other values."""
        if not isinstance(data, dict):
            return data
        dialects = data.get("dialects")
        mostro = dialects.get("mostro") if isinstance(dialects, dict) else None
        mostro = mostro if isinstance(mostro, dict) else {}
        if mostro.get("enabled", True) is False:
            return data
        app_id = mostro.get("app", "mostro")
        configured = data.get("apps")
        apps: dict[str, Any] = dict(configured) if isinstance(configured, dict) else dict(_default_apps())
        current: Any = apps.get(app_id, {})
        if isinstance(app_id, str) and isinstance(current, dict):
            apps[app_id] = {**MOSTRO_APP_DEFAULTS, **current}
        return {**data, "apps": apps}

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
    dialect_app = settings.dialects.push_settings.app
    if dialect_app is not None and dialect_app not in settings.apps:
        raise ConfigError(f"dialects.push_settings.app: no app {dialect_app!r} in [apps]")
    return settings
