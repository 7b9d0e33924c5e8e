"""One typed settings object: embedded defaults ← TOML file ← `PUSHSTR_*` environment.

Every section forbids unknown keys, so a typo stops the start with a message naming the key instead of being
silently ignored. Environment overrides nest with `__` (`PUSHSTR_SERVER__PORT=9000`); their values are read as
TOML literals when they parse as one (numbers, booleans, arrays) and as plain strings otherwise.

The models are also the configuration reference: every default is stated here once, every field has a
`description`, and `pushstr.config_reference` renders the README tables from them.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from pushstr.registry.model import Mode

ENV_PREFIX = "PUSHSTR_"
DEFAULT_CONFIG_FILE = Path("pushstr.toml")
STORE_FILE_NAME = "pushstr.sqlite3"

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


MIN_DASHBOARD_TOKEN = 16
MAX_DASHBOARD_TOKEN = 512


def dashboard_token_problem(token: str) -> str | None:
    """What is wrong with `token` as the dashboard's bearer token, or None.

    A short token could be guessed by trying (the dashboard does not slow down wrong guesses); it travels in an
    `Authorization` header, so it is visible ASCII without spaces, and bounded like any input compared with it.
    """
    if not MIN_DASHBOARD_TOKEN <= len(token) <= MAX_DASHBOARD_TOKEN:
        return f"must be {MIN_DASHBOARD_TOKEN} to {MAX_DASHBOARD_TOKEN} characters"
    if not all("!" <= char <= "~" for char in token):
        return "must be visible ASCII characters without spaces"
    return None


def _is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerConfig(_Section):
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8080, ge=0, le=65535, description="listen port (HTTP API and the built-in relay endpoint)")
    data_dir: Path = Field(Path("./data"), description="where the SQLite file, the server key and the VAPID key live")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="larger HTTP request bodies get 413")
    public_url: str | None = Field(
        None, description="the absolute base URL clients sign in NIP-98 `u` tags, when pushstr runs behind a proxy"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="reverse proxies (IP addresses or CIDR networks) whose `X-Forwarded-For` names the client; "
        "empty: the TCP peer is the client",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="processes `pushstr serve` runs on this host, splitting shards and the outbox by the cluster's "
        "leases and sharing the listen port; more than 1 needs `cluster.enabled`; unset: the number of cores with "
        "`cluster.enabled`, else 1",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="with several workers, worker k (from 0) also serves its `/metrics` on this port + k, so each "
        "can be scraped (on the listen port a scrape reaches whichever worker accepts it)",
    )
    dashboard: Literal["auto", "public", "token", "off"] = Field(
        "auto",
        description="the live dashboard (`/dashboard`) and its data (`/status`): `public`, `token` (a bearer token "
        "asked for), `off` (404); `auto`: `token` when a token is set, else `public` when `host` is a loopback "
        "address and neither `public_url` nor `trusted_proxies` says a proxy serves it to others, else `off`",
    )
    dashboard_token: SecretStr | None = Field(
        None,
        description="the dashboard's bearer token: 16 to 512 visible ASCII characters (see `dashboard_token_file`)",
    )
    dashboard_token_file: Path | None = Field(
        None,
        description="file holding the dashboard's bearer token instead (surrounding whitespace ignored), read at start",
    )

    @field_validator("dashboard_token")
    @classmethod
    def _usable_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and (problem := dashboard_token_problem(token.get_secret_value())) is not None:
            raise ValueError(problem)
        return token

    @model_validator(mode="after")
    def _dashboard_token_source(self) -> Self:
        if self.dashboard_token is not None and self.dashboard_token_file is not None:
            raise ValueError("set dashboard_token or dashboard_token_file, not both")
        if self.dashboard == "token" and self.dashboard_token is None and self.dashboard_token_file is None:
            raise ValueError('dashboard = "token" needs dashboard_token or dashboard_token_file')
        return self

    @property
    def dashboard_mode(self) -> Literal["public", "token", "off"]:
        """What `dashboard` comes to: `auto` shows the page unprotected only where it looks like nobody but this
        machine's users can reach it (a loopback bind with no proxy in front)."""
        if self.dashboard != "auto":
            return self.dashboard
        if self.dashboard_token is not None or self.dashboard_token_file is not None:
            return "token"
        behind_proxy = self.public_url is not None or bool(self.trusted_proxies)
        return "public" if _is_loopback(self.host) and not behind_proxy else "off"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        """Every entry parses as an address or a network, so a typo stops the start instead of trusting nobody."""
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR network: {entry!r}") from None
        return entries


def _relay_urls(relays: list[str]) -> list[str]:
    """Refuse at start what the relay pool would refuse later: it connects to `ws://` and `wss://` only."""
    for url in relays:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"relay URL must start with ws:// or wss://: {url!r}")
    return relays


class NostrConfig(_Section):
    relays: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RELAYS), description="relays to watch (`ws://` or `wss://`)"
    )
    secret_key: str | None = Field(None, description="server key, 64-hex or `nsec1…`")
    secret_key_file: Path | None = Field(
        None,
        description="file holding the server key; if neither is set, `<data_dir>/server.key` is generated (0600)",
    )
    max_event_bytes: int = Field(64 * 1024, ge=1024, description="larger events are refused")
    max_event_age_seconds: int = Field(3 * 24 * 3600, ge=60, description="older events are not pushed")
    since_window_seconds: int = Field(3600, ge=0, description="catch-up window for ordinary kinds on (re)subscribe")
    giftwrap_since_window_seconds: int = Field(
        3 * 24 * 3600, ge=0, description="catch-up window for kind 1059 (backdated timestamps)"
    )
    filter_chunk_size: int = Field(500, ge=1, le=10000, description="pubkeys per filter")
    reconnect_min_seconds: float = Field(1.0, gt=0, description="first relay reconnect delay (exponential, jittered)")
    reconnect_max_seconds: float = Field(300.0, gt=0, description="longest relay reconnect delay")
    connect_timeout_seconds: float = Field(10.0, gt=0, description="relay connect timeout")
    dedupe_memory: int = Field(200_000, ge=1000, description="event ids remembered in memory")
    relay_update_interval_seconds: float = Field(
        1.0, gt=0, description="shortest time between two subscription updates sent to one relay"
    )
    firehose: Literal["auto", "off", "always"] = Field(
        "auto",
        description="ask a relay for whole kinds and match locally instead of listing pubkeys: `auto` where the "
        "lists would need more subscriptions than `firehose_above_subscriptions`",
    )
    firehose_above_subscriptions: int | None = Field(
        None, ge=1, description="the `auto` threshold; unset: more than one connection to the relay may hold"
    )
    firehose_max_events_per_second: float = Field(
        2000.0,
        gt=0,
        description="in `auto`, a relay whose firehose brings more live events per second than this (averaged over "
        "a minute) goes back to pubkey lists, if they fit in `max_connections_per_relay`",
    )
    firehose_hold_seconds: float = Field(
        300.0, gt=0, description="least time between two switches of one relay between lists and the firehose"
    )
    firehose_retry_seconds: float = Field(
        3600.0,
        gt=0,
        description="a relay sent back to the lists for its rate (or refusing the firehose) tries the firehose "
        "again after this long; doubled after each further fallback for the rate, up to 24 times",
    )
    max_connections_per_relay: int = Field(
        8,
        ge=1,
        le=1000,
        description="connections one relay's pubkey lists may use; a plan needing more is cut (its uncovered "
        "pubkeys counted), and in `auto` goes to the firehose instead",
    )

    @field_validator("relays")
    @classmethod
    def _relay_urls(cls, relays: list[str]) -> list[str]:
        return _relay_urls(relays)


class DiscoveryConfig(_Section):
    """The inbox relays users name themselves (NIP-17 kind 10050, NIP-65 kind 10002), watched for them only."""

    enabled: bool = Field(
        True, description="read registered users' kind 10050 and 10002 relay lists and watch the relays they name"
    )
    indexer_relays: list[str] = Field(
        default_factory=list, description="relays asked for those lists only, besides `nostr.relays`"
    )
    max_relays_per_user: int = Field(5, ge=0, le=50, description="listed relays watched for one user")
    max_relays: int = Field(
        200, ge=0, description="listed relays watched in total; past it, those serving the fewest users are left out"
    )
    allow_private_relays: bool = Field(False, description="accept loopback/private relay addresses from relay lists")

    @field_validator("indexer_relays")
    @classmethod
    def _relay_urls(cls, relays: list[str]) -> list[str]:
        return _relay_urls(relays)


class StoreConfig(_Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL; `postgresql+asyncpg://user@host/db` for PostgreSQL",
        # The real default depends on `server.data_dir` (see `Settings.store_url`); this is how the reference shows it.
        json_schema_extra={"readable_default": f"sqlite+aiosqlite:///<data_dir>/{STORE_FILE_NAME}"},
    )


class LogTransportConfig(_Section):
    path: str = Field("-", description="where the log transport writes (`-` = stdout)")
    identities: bool = Field(
        False, description="write recipient pubkeys and event ids as they are; off: as short digests"
    )


class TransportsConfig(_Section):
    log: LogTransportConfig = Field(LogTransportConfig(), description="the `log` transport")


class EndpointConfig(_Section):
    """The built-in relay endpoint (`/` WebSocket)."""

    enabled: bool = Field(True, description='accept `["EVENT", …]` on `ws://host:port/`')
    max_message_bytes: int = Field(128 * 1024, ge=1024, description="larger messages get a NOTICE")
    events_per_minute: int = Field(600, ge=1, description='per connection; over it `OK false "rate-limited: …"`')
    max_connections: int = Field(1000, ge=1, description="concurrent endpoint connections")
    max_connections_per_address: int = Field(
        32, ge=1, description="concurrent endpoint connections from one client address"
    )
    idle_timeout_seconds: float = Field(
        300.0, gt=0, description="a connection that sends nothing for this long is closed"
    )


class OutboxConfig(_Section):
    """Pushes matched and not final yet, kept in the store until their outcome is final."""

    enabled: bool = Field(
        True, description="keep pending pushes in the store; off: in memory only (a restart or crash loses them)"
    )
    max_pending: int = Field(
        1_000_000, ge=1, description="pushes pending at most; past it new pushes are refused (counted)"
    )
    commit_interval_seconds: float = Field(
        0.005, gt=0, le=1, description="group commit window: changes in it are written in one transaction"
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="at shutdown, how long requests in flight may finish; the rest stays pending"
    )


class RegistrationConfig(_Section):
    default_kinds: list[int] = Field(
        default_factory=lambda: [4, 1059, 1, 9735], description="kinds a device gets when it names none"
    )
    max_devices_per_pubkey: int = Field(20, ge=1, description="more get 409")
    nip98_window_seconds: int = Field(60, ge=1, description="accepted clock skew of NIP-98 tokens")
    max_relays_per_registration: int = Field(
        8, ge=0, le=100, description="relays a registration may have watched (0xchat, Amethyst and Nos name relays)"
    )
    max_registration_relays: int = Field(100, ge=0, description="relays watched on behalf of registrations, in total")
    allow_private_relays: bool = Field(False, description="accept loopback/private relay addresses from registrations")


class AppConfig(_Section):
    """What every app has, whichever push service it uses: how payloads look, batching and delivery limits.

    The concrete app sections below add their transport's credentials; `transport` picks one (a discriminated
    union), so a missing credential is a configuration error naming the key, found before anything starts.
    """

    transport: str = Field(
        "log", description="the push service: `apns`, `fcm`, `webpush` (Web Push, UnifiedPush) or `log`"
    )
    base_url: str | None = Field(
        None, description="point the transport elsewhere (a test server, a proxy); unset: the provider's"
    )
    mode: Mode = Field(Mode.SILENT, description="payload mode; a registration may override it")
    ca_file: Path | None = Field(None, description="extra CA bundle to trust for this app's push service")
    # payload and batching
    preview_length: int = Field(
        0, ge=0, le=1000, description="characters of a mention shown in `alert` mode (0 = none)"
    )
    alert_title: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="fixed title of every `alert` push instead of the sender's name; this or `alert_body` makes "
        "alerts generic (they say nothing about who or what)",
    )
    alert_body: str | None = Field(
        None, min_length=1, max_length=1000, description="fixed text of every `alert` push instead of the text by kind"
    )
    alert_data: dict[str, str] = Field(
        default_factory=dict, description="data keys (string values) a generic alert hands the app, and only these"
    )
    android_channel_id: str | None = Field(
        None, min_length=1, description="Android notification channel of alerts (FCM `android.notification.channel_id`)"
    )
    batch_window_seconds: float = Field(
        0.0, ge=0, description="coalesce pushes per device within this window (0 = off)"
    )
    cooldown_seconds: float = Field(0.0, ge=0, description="after a push, hold further pushes to that device this long")
    ttl_seconds: int = Field(86400, ge=0, le=28 * 86400, description="how long the push service keeps a push")
    urgency: Literal["very-low", "low", "normal", "high"] = Field("high", description="Web Push `Urgency`")
    # delivery
    queue_size: int = Field(10_000, ge=1, description="pushes waiting for this app before new ones are dropped")
    concurrency: int = Field(64, ge=1, le=10_000, description="requests in flight to the push service")
    timeout_seconds: float = Field(10.0, gt=0, description="one request to the push service")
    max_attempts: int | None = Field(
        None, ge=1, description="tries per push before giving up; unset: retried until `ttl_seconds` have passed"
    )
    backoff_base_seconds: float = Field(1.0, gt=0, description="first retry delay (doubles per attempt)")
    backoff_max_seconds: float = Field(300.0, gt=0, description="longest retry delay")

    @field_validator("alert_data")
    @classmethod
    def _data_keys(cls, data: dict[str, str]) -> dict[str, str]:
        """Keys FCM reserves (`from`, `message_type`, `google…`, `gcm…`) or APNs uses (`aps`) would make every push
        fail or be misread; say so at the start."""
        for key in data:
            if not key or key in ("from", "message_type", "aps") or key.startswith(("google", "gcm")):
                raise ValueError(f"reserved or empty data key: {key!r}")
        return data

    @property
    def generic_alert(self) -> bool:
        """`alert` pushes show the fixed `alert_title`/`alert_body` (see `delivery.render`)."""
        return self.alert_title is not None or self.alert_body is not None


class LogAppConfig(AppConfig):
    """Every push becomes a JSON line (`transports.log.path`): what a fresh install uses."""

    transport: Literal["log"] = "log"


class ApnsAppConfig(AppConfig):
    """Apple Push Notification service with token (`.p8` key) authentication."""

    transport: Literal["apns"]
    key_file: Path = Field(description="the `.p8` signing key from Apple's developer portal")
    key_id: str = Field(min_length=1, description="the key's id")
    team_id: str = Field(min_length=1, description="the Apple developer team id")
    topic: str = Field(min_length=1, description="the app's bundle id")
    environment: Literal["production", "sandbox"] = Field("production", description="which APNs servers")


class FcmAppConfig(AppConfig):
    """Firebase Cloud Messaging, HTTP v1 API."""

    transport: Literal["fcm"]
    service_account_file: Path = Field(description="service-account JSON key (its `token_uri` is honoured)")


class WebPushAppConfig(AppConfig):
    """Web Push and UnifiedPush endpoints (RFC 8030 / 8291 / 8292)."""

    transport: Literal["webpush"]
    vapid_subject: str = Field(description="VAPID contact, a `mailto:` or `https:` URL")
    allowed_hosts: list[str] = Field(default_factory=list, description="endpoint hosts exempt from the address check")
    allow_plaintext: bool = Field(False, description="push keyless UnifiedPush endpoints in plaintext")

    @field_validator("vapid_subject")
    @classmethod
    def _contact_url(cls, subject: str) -> str:
        """RFC 8292 asks for a contact push services can use; a bare string is a mistake, said in those words."""
        if not subject.startswith(("mailto:", "https://")):
            raise ValueError(f"must be a mailto: or https:// URL: {subject!r}")
        return subject


# Each transport's config class, by the `transport` value that selects it.
APP_CONFIGS: dict[str, type[AppConfig]] = {
    "log": LogAppConfig,
    "apns": ApnsAppConfig,
    "fcm": FcmAppConfig,
    "webpush": WebPushAppConfig,
}


def _transport_of(app: Any) -> Any:
    """The union tag of one app section; `log` when it names no transport, as `AppConfig.transport` says."""
    if isinstance(app, Mapping):
        return app.get("transport", "log")
    return getattr(app, "transport", None)


AnyAppConfig = Annotated[
    Annotated[LogAppConfig, Tag("log")]
    | Annotated[ApnsAppConfig, Tag("apns")]
    | Annotated[FcmAppConfig, Tag("fcm")]
    | Annotated[WebPushAppConfig, Tag("webpush")],
    Discriminator(_transport_of),
]
_APP_ADAPTER: TypeAdapter[AnyAppConfig] = TypeAdapter(AnyAppConfig)


def parse_app(data: Mapping[str, Any]) -> LogAppConfig | ApnsAppConfig | FcmAppConfig | WebPushAppConfig:
    """One `[apps.<id>]` section as its transport's config class (ValidationError when it is not valid)."""
    return _APP_ADAPTER.validate_python(dict(data))


class PushSettingsDialectConfig(_Section):
    """Kind 22456 push settings (0xchat's draft NIP): registrations and presence sent as encrypted events."""

    enabled: bool = Field(True, description="subscribe to and handle kind 22456")
    app: str | None = Field(
        None,
        description="the app these devices get; unset: the APNs app whose topic is the bundle id, else the platform's",
    )
    mode: Mode | None = Field(
        Mode.ALERT,
        description="payload mode of these devices (0xchat shows what it is sent); unset: their app's mode",
    )
    heartbeat_timeout_seconds: float = Field(
        150.0, gt=0, description="a device with no heartbeat for this long is offline (0xchat beats every 60 s)"
    )
    stale_after_seconds: int = Field(
        3 * 24 * 3600,
        ge=1,
        description="settings and logouts older than this are ignored (0xchat re-sends unacknowledged settings later)",
    )
    max_groups_per_device: int = Field(
        500, ge=0, le=10_000, description="`#e` channels and relay groups per device (the rest are left out, counted)"
    )
    max_authors_per_device: int = Field(
        10_000,
        ge=0,
        le=100_000,
        description="`authors` per device; a longer list narrows nothing (the event size limit comes first)",
    )


class MostroDialectConfig(_Section):
    """The Mostro push API (`/api/*`), wire-compatible with MostroP2P/mostro-push-server."""

    enabled: bool = Field(True, description="serve `/api/*`")
    app: str = Field("mostro", description="the app Mostro devices get; added (log transport) when not configured")
    privacy_mode: bool = Field(True, description="tokens in memory only, never on disk, with a TTL")
    token_ttl_seconds: int = Field(48 * 3600, ge=60, description="lifetime of a registration in privacy mode")
    trusted_instances: list[str] = Field(
        default_factory=list,
        description="Mostro instance pubkeys (64 hex) allowed to register (`mostro_pubkey`); empty = any",
    )
    notify_per_pubkey_per_minute: float = Field(30, gt=0, description="`/api/notify` rate per trade pubkey")
    notify_per_pubkey_burst: int = Field(10, ge=1, description="`/api/notify` burst per trade pubkey")
    notify_per_ip_per_minute: float = Field(120, gt=0, description="`/api/notify` rate per client IP")
    notify_per_ip_burst: int = Field(30, ge=1, description="`/api/notify` burst per client IP")

    @field_validator("trusted_instances")
    @classmethod
    def _hex_pubkeys(cls, pubkeys: list[str]) -> list[str]:
        for pubkey in pubkeys:
            if len(pubkey) != 64 or pubkey.strip("0123456789abcdef"):
                raise ValueError(f"not a 64-hex lowercase pubkey: {pubkey!r}")
        return pubkeys


# The defaults of the Mostro dialect's dedicated app: Mostro's documented batching (5 s delay, 60 s cooldown per
# device) and the push Mostro's own server sends for a trade event: a generic visible alert, which wakes the app and
# says nothing about the trade (`mode = "silent"` is the operator's option).
MOSTRO_APP_DEFAULTS: dict[str, Any] = {
    "batch_window_seconds": 5.0,
    "cooldown_seconds": 60.0,
    "mode": "alert",
    "alert_title": "Mostro",
    "alert_body": "You have an update on your trade",
    "alert_data": {"type": "trade_update"},
    "android_channel_id": "mostro_notifications",
}


class MarmotDialectConfig(_Section):
    """Marmot Push v1 (White Noise): gift-wrapped kind 446 triggers carrying encrypted device tokens; nothing stored."""

    enabled: bool = Field(True, description="subscribe to and handle gift wraps addressed to the server")
    apns_app: str | None = Field(
        None, description="the app APNs tokens are pushed with (apns or log); unset: the ios platform's app"
    )
    fcm_app: str | None = Field(
        None, description="the app FCM tokens are pushed with (fcm or log); unset: the android platform's app"
    )
    mode: Mode = Field(Mode.SILENT, description="payload mode of Marmot pushes (the protocol asks for silent)")
    unwraps_per_minute: int = Field(600, ge=1, description="gift wraps opened per minute, all senders together")
    per_token_per_minute: int = Field(
        240, ge=1, description="pushes per minute per encrypted token and per device token"
    )
    per_token_per_hour: int = Field(5000, ge=1, description="pushes per hour per encrypted token and per device token")
    dedupe_seconds: float = Field(
        300.0, gt=0, description="a trigger with the same decoded content is ignored this long"
    )
    max_age_seconds: int = Field(
        3600, ge=1, description="older triggers are ignored (the rumor's time is real; the wrap's is backdated)"
    )
    max_future_seconds: int = Field(300, ge=0, description="triggers dated further ahead are ignored")


#: The kinds a Verse app's users may ask pushes for unless its `allowed_kinds` says otherwise: what the reference
#: server's apps allow together (nostrpushdemo, universes, peek), and the text notes of its NIP's examples.
VERSE_FILTER_KINDS: tuple[int, ...] = (1, 3, 4, 6, 7, 9, 1059, 1111, 4552, 9735, 30023, 34550, 34551, 34552, 34553)


class VerseAppConfig(_Section):
    """One Verse app, as its events' `app` tag names it: where its FCM tokens go, what its filters may ask for."""

    app: str | None = Field(
        None, description="the app its FCM tokens are pushed with (fcm or log); unset: the android platform's app"
    )
    allowed_kinds: list[Annotated[int, Field(ge=0, le=65535)]] = Field(
        default_factory=lambda: list(VERSE_FILTER_KINDS),
        max_length=1000,
        description="the kinds its users' filters may name",
    )


class VerseDialectConfig(_Section):
    """Verse's kinds 3079–3082: FCM tokens and notification filters sent as NIP-44 events to the server key."""

    enabled: bool = Field(True, description="subscribe to and handle kinds 3079–3082")
    apps: dict[Annotated[str, Field(min_length=1, max_length=100)], VerseAppConfig] = Field(
        default_factory=lambda: {"default": VerseAppConfig()},
        description="the Verse apps served, by `app` tag (`default` when an event has none), each with `app` and "
        "`allowed_kinds`; events for any other app are ignored",
        json_schema_extra={"readable_default": "{default = {}}"},
    )
    mode: Mode | None = Field(
        Mode.ALERT,
        description="payload mode of Verse devices (the reference pushes a title and body); unset: their app's mode",
    )
    max_age_seconds: int = Field(
        3 * 24 * 3600,
        ge=60,
        description="older control events are ignored; deregistrations and deletes are remembered this long, so "
        "that an older event cannot undo them",
    )
    max_future_seconds: int = Field(600, ge=0, description="control events dated further ahead are ignored")
    forget_after_days: int = Field(
        90,
        ge=0,
        description="a device not registered again for this long is removed (the reference's token cleanup); 0: never",
    )
    max_filters_per_user: int = Field(100, ge=1, le=10_000, description="filters one user keeps in one app")
    max_filter_bytes: int = Field(
        16 * 1024, ge=256, le=60 * 1024, description="the largest filter taken, as canonical JSON"
    )
    max_filters: int = Field(200_000, ge=1, description="filters kept for all users together")


class AmethystDialectConfig(_Section):
    """Amethyst's `POST /register` with kind 22242 events: an FCM token or push URL and the account's relays."""

    enabled: bool = Field(True, description="serve `POST /register` (beside HTTP + NIP-98, told apart by the body)")
    fcm_app: str | None = Field(
        None, description="the app FCM tokens are pushed with (fcm or log); unset: the android platform's app"
    )
    push_url_app: str | None = Field(
        None,
        description="the app push URLs (UnifiedPush, ntfy) are pushed with (webpush or log); unset: the unifiedpush "
        "platform's app",
    )
    max_events: int = Field(
        50, ge=1, le=1000, description="kind 22242 events in one request (Amethyst sends one per account)"
    )
    window_seconds: int = Field(
        600,
        ge=1,
        le=7 * 24 * 3600,
        description="accepted distance of an event's `created_at` from now (Amethyst signs each request as it sends)",
    )


class NosDialectConfig(_Section):
    """Nos's kind 6666: an APNs token and the account's relays in a plaintext, signed event."""

    enabled: bool = Field(True, description="handle kind 6666 registrations sent to the built-in relay endpoint")
    app: str | None = Field(
        None,
        description="the APNs app Nos tokens are pushed with (topic: the app's bundle id, com.verse.Nos for the App "
        "Store build); unset: the ios platform's app",
    )
    mode: Mode = Field(
        Mode.SILENT,
        description="payload mode of Nos devices (Nos wakes on a silent push and fetches its mentions itself)",
    )
    subscribe: bool = Field(
        False,
        description="also ask every watched relay for kind 6666 (a relay that takes the app's registrations for "
        "pushstr); off: only the built-in endpoint registers",
    )
    max_age_seconds: int = Field(
        24 * 3600, ge=60, description="older registrations are ignored (Nos signs one at every launch as it sends it)"
    )
    max_future_seconds: int = Field(600, ge=0, description="registrations dated further ahead are ignored")
    forget_after_days: int = Field(
        180,
        ge=0,
        description="a device not registered again for this long is removed (Nos's own server stops after 6 "
        "months); 0: never",
    )


class NotepushDialectConfig(_Section):
    """damus notepush's HTTP API: `PUT /user-info/:pubkey/:deviceToken`, its preferences and encryption key."""

    enabled: bool = Field(True, description="serve the `/user-info/…` routes and `GET /server-pubkey`")
    ios_app: str | None = Field(None, description="the app iOS tokens are pushed with; unset: the ios platform's app")
    android_app: str | None = Field(
        None, description="the app Android tokens are pushed with; unset: the android platform's app"
    )
    mode: Mode | None = Field(
        Mode.NOTEPUSH,
        description="payload mode of these devices (notepush: the event in `nostr_event`, as damus reads it); unset: "
        "their app's mode",
    )


class DialectsConfig(_Section):
    push_settings: PushSettingsDialectConfig = Field(
        PushSettingsDialectConfig(), description="kind 22456 push settings"
    )
    mostro: MostroDialectConfig = Field(MostroDialectConfig(), description="the Mostro push API")
    marmot: MarmotDialectConfig = Field(MarmotDialectConfig(), description="Marmot Push v1 triggers")
    verse: VerseDialectConfig = Field(VerseDialectConfig(), description="Verse's kinds 3079–3082")
    amethyst: AmethystDialectConfig = Field(AmethystDialectConfig(), description="Amethyst's `POST /register`")
    nos: NosDialectConfig = Field(NosDialectConfig(), description="Nos's kind 6666")
    notepush: NotepushDialectConfig = Field(NotepushDialectConfig(), description="damus notepush's HTTP API")


class ClusterConfig(_Section):
    """Several `pushstr serve` processes on one PostgreSQL database, splitting the pubkeys between them."""

    enabled: bool = Field(
        False, description="share the store with other instances and split the work by shard leases (PostgreSQL only)"
    )
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="this instance's name among the others (logs, `pushstr cluster status`); unset: host-pid-random",
    )
    shards: int = Field(
        64,
        ge=1,
        le=4096,
        description="how many parts the pubkey space is split into; the same for every instance of the database",
    )
    lease_seconds: float = Field(
        15.0, ge=3.0, le=600.0, description="a shard whose owner stopped renewing is taken over after this long"
    )
    renew_seconds: float = Field(
        0.0, ge=0.0, description="how often leases are renewed and shares rebalanced; 0: a third of lease_seconds"
    )
    poll_seconds: float = Field(
        2.0,
        gt=0.0,
        le=60.0,
        description="how often the registry change log is read besides the database's notifications (a lost "
        "notification heals within it)",
    )

    @property
    def renew_interval(self) -> float:
        return self.renew_seconds or self.lease_seconds / 3


DEFAULT_APP = "default"


def _default_apps() -> dict[str, AnyAppConfig]:
    return {DEFAULT_APP: LogAppConfig()}


PlatformName = Literal["ios", "android", "unifiedpush", "webpush"]

# The transports that can reach a platform's devices, the most specific first: an iOS device goes to the APNs app
# rather than to an FCM one when both exist.
PLATFORM_TRANSPORTS: dict[PlatformName, tuple[str, ...]] = {
    "ios": ("apns", "fcm"),
    "android": ("fcm",),
    "unifiedpush": ("webpush",),
    "webpush": ("webpush",),
}


def _dedicated_mostro_app(data: Mapping[str, Any]) -> Any:
    """The app id the Mostro dialect reserves in raw settings data, or None when the dialect is off."""
    dialects = data.get("dialects")
    mostro = dialects.get("mostro") if isinstance(dialects, Mapping) else None
    mostro = mostro if isinstance(mostro, Mapping) else {}
    if mostro.get("enabled", True) is False:
        return None
    return mostro.get("app", MostroDialectConfig.model_fields["app"].default)


def _platform_app(apps: Mapping[str, Any], transports: tuple[str, ...], reserved: Any) -> str:
    """The app a platform gets when `platform_apps` does not name one (see `Settings._platform_apps`)."""
    if DEFAULT_APP in apps:
        return DEFAULT_APP
    for transport in transports:
        serving = [app_id for app_id, app in apps.items() if app_id != reserved and _transport_of(app) == transport]
        if serving:
            return serving[0] if len(serving) == 1 else DEFAULT_APP
    return DEFAULT_APP


class Settings(_Section):
    server: ServerConfig = Field(ServerConfig(), description="the HTTP server and local data")
    nostr: NostrConfig = Field(NostrConfig(), description="relays and the server's Nostr key")
    discovery: DiscoveryConfig = Field(DiscoveryConfig(), description="inbox relays users list, watched for them")
    store: StoreConfig = Field(StoreConfig(), description="where registrations are kept")
    transports: TransportsConfig = Field(TransportsConfig(), description="settings shared by all apps of a transport")
    endpoint: EndpointConfig = Field(EndpointConfig(), description="the built-in relay endpoint")
    outbox: OutboxConfig = Field(OutboxConfig(), description="pending pushes, kept until final")
    registration: RegistrationConfig = Field(RegistrationConfig(), description="device registrations")
    apps: dict[str, AnyAppConfig] = Field(
        default_factory=_default_apps, description="the apps pushstr pushes for, by id"
    )
    platform_apps: dict[PlatformName, str] = Field(
        default_factory=dict, description="the app a registration of that platform gets when it names none"
    )
    dialects: DialectsConfig = Field(DialectsConfig(), description="the registration protocols besides HTTP")
    cluster: ClusterConfig = Field(ClusterConfig(), description="several instances on one PostgreSQL database")

    @model_validator(mode="before")
    @classmethod
    def _mostro_app(cls, data: Any) -> Any:
        """Give the Mostro dialect its dedicated app, with Mostro's batching unless the operator set other values."""
        if not isinstance(data, dict):
            return data
        app_id = _dedicated_mostro_app(data)
        if not isinstance(app_id, str):
            return data
        configured = data.get("apps")
        apps: dict[str, Any] = dict(configured) if isinstance(configured, dict) else dict(_default_apps())
        current: Any = apps.get(app_id, {})
        if isinstance(current, dict):
            apps[app_id] = {**MOSTRO_APP_DEFAULTS, **current}
        return {**data, "apps": apps}

    @model_validator(mode="before")
    @classmethod
    def _platform_apps(cls, data: Any) -> Any:
        """Map every platform `platform_apps` leaves out, so that declaring an app never breaks the defaults.

        A platform gets the app named `default`; else the one app of the first transport in
        `PLATFORM_TRANSPORTS` that any app uses (the Mostro dialect's dedicated app excluded); else, when there is
        none or more than one, an implicit `default` log app, added here. Several apps of one transport are
        reachable by naming them in a registration, so that case is no error; `routing_summary` shows the result.
        """
        if not isinstance(data, dict):
            return data
        given = data.get("platform_apps", {})
        configured = data.get("apps")
        if not isinstance(given, Mapping) or not isinstance(configured, Mapping | None):
            return data  # field validation names the mistake
        apps: dict[str, Any] = dict(_default_apps() if configured is None else configured)
        reserved = _dedicated_mostro_app(data)
        derived = {
            platform: _platform_app(apps, transports, reserved)
            for platform, transports in PLATFORM_TRANSPORTS.items()
            if platform not in given
        }
        if DEFAULT_APP in derived.values():
            apps.setdefault(DEFAULT_APP, LogAppConfig())
        in_order = {
            platform: given[platform] if platform in given else derived[platform] for platform in PLATFORM_TRANSPORTS
        }
        return {**data, "apps": apps, "platform_apps": {**in_order, **given}}

    @model_validator(mode="after")
    def _named_apps_exist(self) -> Self:
        """Every app the settings name is configured: an unknown one stops the start, not the first registration."""
        for platform, app_id in self.platform_apps.items():
            self._require_app(f"platform_apps.{platform}", app_id)
        if self.dialects.push_settings.app is not None:
            self._require_app("dialects.push_settings.app", self.dialects.push_settings.app)
        return self

    @model_validator(mode="after")
    def _cluster_on_postgresql(self) -> Self:
        """Instances share their state through PostgreSQL; a SQLite file cannot be shared between hosts."""
        if self.cluster.enabled and not self.store_url.startswith("postgresql"):
            raise PydanticCustomError(
                "cluster_store", "cluster.enabled needs a PostgreSQL store.url", {"key": "cluster.enabled"}
            )
        if (self.server.workers or 1) > 1 and not self.cluster.enabled:
            raise PydanticCustomError(
                "workers_cluster",
                "server.workers above 1 needs cluster.enabled (the workers split the work by its leases)",
                {"key": "server.workers"},
            )
        if self.cluster.renew_interval >= self.cluster.lease_seconds / 2:
            raise PydanticCustomError(
                "cluster_renew",
                "cluster.renew_seconds must be under half of lease_seconds",
                {"key": "cluster.renew_seconds"},
            )
        return self

    def _require_app(self, key: str, app_id: str) -> None:
        if self.app_for(platform="", app=app_id) is None:  # an app named outright does not depend on the platform
            # The error's location would be the whole model; `_describe` reads the key from the context.
            raise PydanticCustomError("unknown_app", "no app {app} in [apps]", {"key": key, "app": repr(app_id)})

    @property
    def workers(self) -> int:
        """How many processes `pushstr serve` runs (`server.workers`, its default resolved)."""
        if self.server.workers is not None:
            return self.server.workers
        return max(1, os.cpu_count() or 1) if self.cluster.enabled else 1

    @property
    def store_url(self) -> str:
        if self.store.url:
            return self.store.url
        return f"sqlite+aiosqlite:///{self.server.data_dir / STORE_FILE_NAME}"

    def app_for(self, platform: str, app: str | None) -> str | None:
        """The configured app id a registration belongs to, or None when `app` is unknown."""
        chosen = app or self.platform_apps.get(platform)  # type: ignore[call-overload]
        return chosen if chosen in self.apps else None

    def routing_summary(self) -> str:
        """Which app each platform's registrations get when they name none: the derived mapping, for the start log."""
        return ", ".join(
            f"{platform} → {app_id} ({self.apps[app_id].transport})" for platform, app_id in self.platform_apps.items()
        )


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


def _explain(error: ErrorDetails) -> str:
    """`<dotted.key>: <reason>` in the terms of the config file rather than of pydantic's models."""
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    ctx = error.get("ctx", {})
    kind = error["type"]
    # Inside `[apps.<id>]` pydantic puts the union tag (the transport) after the id; the user never wrote it.
    transport = loc.pop(2) if len(loc) > 2 and loc[0] == "apps" else None
    if kind == "extra_forbidden":
        reason = f"unknown key for transport {transport}" if transport else "unknown key"
    elif kind == "missing":
        reason = f"required for {transport}" if transport else "required"
    elif kind == "union_tag_invalid":
        loc.append("transport")
        reason = f"unknown transport {ctx['tag']!r}; expected one of {', '.join(APP_CONFIGS)}"
    elif kind == "union_tag_not_found":
        reason = "must be a table naming its transport"
    elif kind == "unknown_app":
        loc = [ctx["key"]]
        reason = error["msg"]
    elif kind == "value_error":
        reason = str(ctx["error"])
    else:
        reason = error["msg"]
    return f"{'.'.join(loc)}: {reason}"


def _describe(error: ValidationError) -> str:
    return "invalid configuration: " + "; ".join(_explain(item) for item in error.errors())


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be read, or None when it can: opening it is the one check that does not lie."""
    try:
        with path.open("rb"):
            return None
    except FileNotFoundError:
        return f"no such file: {path}"
    except IsADirectoryError:
        return f"not a file: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


def _check_files(settings: Settings) -> None:
    """Every file an app names (keys, service accounts, CA bundles) can be read, so a wrong path stops the start.

    Their contents are checked where they are used, when the transports are built.
    """
    problems = [
        f"apps.{app_id}.{name}: {problem}"
        for app_id, app in settings.apps.items()
        for name, value in app
        if isinstance(value, Path) and (problem := _unreadable(value)) is not None
    ]
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path` (or `./pushstr.toml` when it exists) with environment overrides applied.

    Every mistake is a `ConfigError` naming the key, so the command line can print it and exit without a traceback.
    """
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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data = _merge(data, env_overrides(environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    _check_files(settings)
    return settings
