"""`pushstr doctor`: what would stop or hamper the gateway, found before users notice, one line per check.

It reads everything `serve` reads and changes nothing: no key is generated, no database created or migrated,
nothing published. Network checks run concurrently, each within `--timeout` seconds, so a whole run takes about
that long however many relays and apps there are. Exit status: 0 when nothing failed (warnings allowed), 1 when
a check failed, 2 when the configuration does not load.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from pushstr.config import (
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    ApnsAppConfig,
    ConfigError,
    FcmAppConfig,
    LogAppConfig,
    Settings,
    WebPushAppConfig,
    load_settings,
)
from pushstr.identity import KEY_FILE_NAME, parse_secret
from pushstr.logutil import shown_url
from pushstr.nostr import nip19
from pushstr.nostr.keys import Keys
from pushstr.ops import credentials
from pushstr.ops.relay_probe import RelayProbe, describe_error, median_skew, probe_relay
from pushstr.ops.report import Check, exit_code, fail, file_mode_problem, ok, shown_text, warn
from pushstr.ops.store_read import NoDatabase, snapshot
from pushstr.store.errors import UnsupportedStoreURL

#: A clock this far from the relays' is worth a warning; past `registration.nip98_window_seconds` it fails.
SKEW_WARN_SECONDS = 10.0


def config_source(path: Path | None, environ: Mapping[str, str]) -> str:
    """Which file `load_settings` reads for `path`, as it decides, and whether the environment adds to it."""
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    source = str(path) if path is not None else "built-in defaults (no pushstr.toml)"
    overrides = [name for name in environ if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG"]
    return f"{source} + {len(overrides)} {ENV_PREFIX}* variables" if overrides else source


def _summary(settings: Settings) -> str:
    apps = ", ".join(f"{app_id} ({app.transport})" for app_id, app in settings.apps.items())
    return f"{len(settings.apps)} apps: {apps}; {len(settings.nostr.relays)} relays"


def check_server_key(settings: Settings) -> tuple[Check, Keys | None]:
    """The server key as `identity.load_server_keys` would find it, without generating one."""
    nostr = settings.nostr
    subject = "server key"
    if nostr.secret_key:
        try:
            keys = parse_secret(nostr.secret_key, "nostr.secret_key")
        except ConfigError as exc:
            return fail(subject, shown_text(str(exc)), "set a 64-hex or nsec1 secret key"), None
        return ok(subject, f"{nip19.npub_encode(keys.public_hex)} from nostr.secret_key"), keys
    path = nostr.secret_key_file or settings.server.data_dir / KEY_FILE_NAME
    where = "nostr.secret_key_file" if nostr.secret_key_file is not None else "the data dir"
    if nostr.secret_key_file is None and not path.exists():
        return warn(subject, f"none yet at {path}", "pushstr serve (or pushstr info) creates it, mode 0600"), None
    advice = "restore the key from a backup: clients encrypt to it and relays may allow-list it"
    try:
        text = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        return fail(subject, f"{path} ({where}): cannot read: {describe_error(exc)}", advice), None
    try:
        keys = parse_secret(text, str(path))
    except ConfigError as exc:
        return fail(subject, shown_text(str(exc)), advice), None
    npub = nip19.npub_encode(keys.public_hex)
    if (problem := file_mode_problem(mode)) is not None:
        return fail(subject, f"{npub} from {path}, but its {problem}", f"chmod 600 {path}"), keys
    return ok(subject, f"{npub} from {path} (mode 0600)"), keys


async def check_store(settings: Settings, timeout: float) -> Check:
    """The store opens, its schema is the one this pushstr writes, and how much it holds."""
    subject = "store"
    try:
        found = await snapshot(settings.store_url, timeout)
    except UnsupportedStoreURL as exc:
        return fail(subject, shown_text(str(exc)), "fix store.url")
    except NoDatabase as exc:
        return warn(subject, f"no database yet at {exc}", "pushstr serve creates it at its first start")
    except TimeoutError:
        return fail(subject, f"no answer within {timeout:g} s", "check that the database is up and reachable")
    except (SQLAlchemyError, OSError) as exc:
        return fail(subject, f"cannot read it: {describe_error(exc)}", "check store.url, credentials and permissions")
    where = f"{found.backend} {found.shown_url.split('://', 1)[-1]}"
    counts = f"{found.registrations or 0} registrations, {found.pending or 0} pending pushes"
    if found.version > found.latest:
        return fail(
            subject,
            f"{where}: schema version {found.version} is newer than this pushstr's {found.latest}",
            "upgrade pushstr, or point store.url at another database",
        )
    if found.version < found.latest:
        return warn(
            subject,
            f"{where}: schema version {found.version}, latest {found.latest}; {counts}",
            "pushstr serve migrates it at its next start (back it up first)",
        )
    return ok(subject, f"{where}: schema version {found.version} (latest); {counts}")


async def check_app(app_id: str, settings: Settings, timeout: float) -> list[Check]:
    app = settings.apps[app_id]
    if isinstance(app, ApnsAppConfig):
        return await credentials.check_apns(app_id, app, timeout)
    if isinstance(app, FcmAppConfig):
        return await credentials.check_fcm(app_id, app, timeout)
    if isinstance(app, WebPushAppConfig):
        return credentials.check_vapid(app_id, app, settings)
    assert isinstance(app, LogAppConfig)
    path = settings.transports.log.path
    return [ok(f"apps.{app_id}", f"log transport, writes to {'stdout' if path == '-' else path}")]


def relay_check(probe: RelayProbe, label: str, npub: str | None) -> Check:
    """One line about one relay: reachable, how fast, its limits, what it makes of AUTH."""
    subject = f"{label} {shown_url(probe.url)}"
    if probe.error is not None:
        return fail(
            subject,
            f"cannot connect or no answer: {probe.error}",
            "check that the relay is up and the URL right (DNS, firewall, TLS), or remove it from the config",
        )
    who = npub or "a temporary key (the server key does not exist yet)"
    if probe.auth_required and not probe.auth_accepted:
        said = f": {probe.auth_reason}" if probe.auth_reason else ""
        return fail(
            subject,
            f"demands AUTH (NIP-42) to read gift wraps and refused {who}{said}",
            "ask its operator to allow the server key, or remove the relay",
        )
    if probe.closed_reason is not None:
        return warn(
            subject,
            f"refused the REQ pushstr sends: {probe.closed_reason}",
            "pushstr gets nothing from this relay: remove it, or ask its operator why",
        )
    parts = [f"connected in {probe.connect_ms or 0:.0f} ms, REQ answered in {probe.answer_ms or 0:.0f} ms"]
    info = probe.nip11
    if info is not None and info.limits is not None:
        limits = info.limits
        software = f"{info.software}, " if info.software else ""
        paid = ", payment required" if info.payment_required else ""
        parts.append(
            f"NIP-11: {software}{limits.max_subscriptions} subscriptions, "
            f"{limits.max_message_length // 1024} KiB messages{paid}"
        )
    else:
        parts.append("no NIP-11 document (strfry's limits assumed)")
    if probe.auth_required:
        parts.append(f"demands AUTH to read gift wraps, accepted {who}")
    elif probe.challenged:
        taken = {True: "accepted", False: "refused", None: "did not answer the AUTH of"}[probe.auth_accepted]
        parts.append(f"asks for AUTH (reads do not need it), {taken} {who}")
    else:
        parts.append("no AUTH asked")
    return ok(subject, "; ".join(parts))


def clock_check(probes: list[RelayProbe], window: int) -> Check:
    """The server's clock against the relays' `Date` headers (median over the relays that sent one)."""
    subject = "clock"
    found = median_skew(probes)
    if found is None:
        return warn(
            subject,
            "no relay answered NIP-11 with a Date header, so the clock could not be compared",
            "make sure the clock is synced (timedatectl, chrony, ntpd)",
        )
    skew, tolerance, relays = found
    direction = "ahead of" if skew > 0 else "behind"
    size = abs(skew)
    whose = "1 relay's" if relays == 1 else f"{relays} relays'"
    measured = f"{size:.1f} s {direction} {whose} HTTP Date (±{tolerance:.1f} s)"
    if size - tolerance > window:
        return fail(
            subject,
            measured,
            f"sync the clock (NTP): NIP-98 registrations are refused beyond ±{window} s and APNs refuses provider "
            "tokens from a wrong clock",
        )
    if size - tolerance > SKEW_WARN_SECONDS:
        return warn(subject, measured, "sync the clock (NTP)")
    return ok(subject, measured if size > tolerance else f"within ±{tolerance:.1f} s of {whose} HTTP Date")


async def run_doctor(config: Path | None, timeout: float, out: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """Run every check, print one line each to `out`; the exit status (see the module docstring)."""
    environ = os.environ if environ is None else environ
    source = config_source(config, environ)
    try:
        settings = load_settings(config, environ)
    except ConfigError as exc:
        out.write(fail("config", f"{source}: {shown_text(str(exc), 1000)}", "fix the key named").line() + "\n")
        return 2
    checks: list[Check] = []

    def emit(*found: Check) -> None:
        for check in found:
            checks.append(check)
            out.write(check.line() + "\n")
        out.flush()

    emit(ok("config", f"{source} loaded: {_summary(settings)}"))
    key_check, keys = check_server_key(settings)
    emit(key_check)
    npub = nip19.npub_encode(keys.public_hex) if keys is not None else None
    relays = [("relay", url) for url in settings.nostr.relays]
    relays += [("indexer relay", url) for url in settings.discovery.indexer_relays if url not in settings.nostr.relays]
    probe_keys = keys or Keys.generate()
    store_task = asyncio.ensure_future(check_store(settings, timeout))
    app_tasks = [asyncio.ensure_future(check_app(app_id, settings, timeout)) for app_id in settings.apps]
    relay_tasks = [asyncio.ensure_future(probe_relay(url, probe_keys, timeout)) for _, url in relays]
    emit(await store_task)
    for task in app_tasks:
        emit(*await task)
    probes = [await task for task in relay_tasks]
    emit(*(relay_check(probe, label, npub) for probe, (label, _) in zip(probes, relays, strict=True)))
    if not relays:
        emit(warn("relays", "none configured", "pushstr then hears only its built-in endpoint; set nostr.relays"))
    emit(clock_check(probes, settings.registration.nip98_window_seconds))
    return exit_code(checks)
