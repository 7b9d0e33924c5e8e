from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from pushstr.config import ApnsAppConfig, ConfigError, LogAppConfig, Settings, load_settings
from pushstr.identity import load_server_keys
from pushstr.nostr.keys import Keys


def test_embedded_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.data_dir == Path("./data")
    assert settings.nostr.relays and all(url.startswith("wss://") for url in settings.nostr.relays)
    assert settings.transports.log.path == "-"
    assert settings.store_url.startswith("sqlite+aiosqlite:///")
    assert settings.store_url.endswith("data/pushstr.sqlite3")


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "pushstr.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[nostr]\nrelays = ["ws://127.0.0.1:1"]\n')
    settings = load_settings(path, environ={"PUSHSTR_SERVER__PORT": "9100", "PUSHSTR_TRANSPORTS__LOG__PATH": "x.log"})
    assert settings.server.port == 9100
    assert settings.server.host == "0.0.0.0"
    assert settings.nostr.relays == ["ws://127.0.0.1:1"]
    assert settings.transports.log.path == "x.log"


def test_environment_arrays_and_config_path(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[server]\nport = 7000\n")
    settings = load_settings(
        environ={"PUSHSTR_CONFIG": str(path), "PUSHSTR_NOSTR__RELAYS": '["ws://a.example", "wss://b.example"]'}
    )
    assert settings.server.port == 7000
    assert settings.nostr.relays == ["ws://a.example", "wss://b.example"]


@pytest.mark.parametrize(
    ("toml", "env", "named"),
    [
        ("[server]\nprot = 1\n", {}, "server.prot: unknown key"),
        ("[servr]\nport = 1\n", {}, "servr: unknown key"),
        ("", {"PUSHSTR_SERVER__PORT": "eighty"}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ('[nostr]\nrelays = ["http://x"]\n', {}, "nostr.relays"),
        ('[apps.a]\ntransport = "carrier-pigeon"\n', {}, "apps.a.transport"),
        ('[platform_apps]\nios = "missing"\n', {}, "platform_apps.ios"),
        ("[server]\nworkers = 2\n", {}, "server.workers"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, env: dict[str, str], named: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(path, environ=env)


def test_workers_default_to_the_cores_only_in_a_cluster(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).workers == 1  # SQLite: one process
    cluster = {"PUSHSTR_STORE__URL": "postgresql+asyncpg://db/x", "PUSHSTR_CLUSTER__ENABLED": "true"}
    assert load_settings(None, environ=cluster).workers == (os.cpu_count() or 1)
    assert load_settings(None, environ={**cluster, "PUSHSTR_SERVER__WORKERS": "1"}).workers == 1


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})


def _settings(tmp_path: Path, **nostr: object) -> Settings:
    return Settings.model_validate({"server": {"data_dir": str(tmp_path)}, "nostr": nostr})


def test_server_key_generated_once_with_private_mode(tmp_path: Path) -> None:
    first = load_server_keys(_settings(tmp_path))
    key_file = tmp_path / "server.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_server_keys(_settings(tmp_path)).public_hex == first.public_hex


def test_server_key_from_config_and_file(tmp_path: Path) -> None:
    keys = Keys.generate()
    assert load_server_keys(_settings(tmp_path, secret_key=keys.secret_hex)).public == keys.public
    key_file = tmp_path / "k"
    key_file.write_text(keys.secret_hex + "\n")
    assert load_server_keys(_settings(tmp_path, secret_key_file=str(key_file))).public == keys.public
    with pytest.raises(ConfigError, match=r"nostr\.secret_key"):
        load_server_keys(_settings(tmp_path, secret_key="zz"))
    assert not (tmp_path / "server.key").exists()


def _p8_key(path: Path) -> Path:
    """A real APNs-style signing key: P-256, PKCS#8 PEM, as Apple's `.p8` files are."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _apns_section(app_id: str, key_file: Path | None) -> str:
    key_line = f'key_file = "{key_file}"\n' if key_file is not None else ""
    return f'[apps.{app_id}]\ntransport = "apns"\n{key_line}key_id = "K1"\nteam_id = "T1"\ntopic = "org.example.app"\n'


def _load(tmp_path: Path, toml: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "pushstr.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[nostr]\nrelays = ["wss://relay.example"]\n{toml}')
    return load_settings(path, environ={} if environ is None else environ)


def test_one_apns_app_gets_ios_and_the_other_platforms_an_implicit_log_app(tmp_path: Path) -> None:
    settings = _load(tmp_path, _apns_section("ios", _p8_key(tmp_path / "AuthKey.p8")))
    assert isinstance(settings.apps["ios"], ApnsAppConfig)
    assert isinstance(settings.apps["default"], LogAppConfig)
    assert settings.platform_apps == {
        "ios": "ios",
        "android": "default",
        "unifiedpush": "default",
        "webpush": "default",
    }
    assert settings.app_for("ios", None) == "ios"
    assert settings.app_for("android", None) == "default"
    assert settings.apps["mostro"].cooldown_seconds == 60  # the Mostro dialect's app is still added
    assert settings.routing_summary() == (
        "ios → ios (apns), android → default (log), unifiedpush → default (log), webpush → default (log)"
    )


def test_missing_credential_names_the_key_and_the_transport(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[apps.default]\ntransport = "apns"\nkey_id = "K1"\nteam_id = "T1"\ntopic = "org.example.app"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == "invalid configuration: apps.default.key_file: required for apns"


def test_credential_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "x" / "y.p8"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _apns_section("ios", missing))
    assert str(caught.value) == f"invalid configuration: apps.ios.key_file: no such file: {missing}"
    account = tmp_path / "service-account.json"
    with pytest.raises(ConfigError, match=r"apps\.droid\.service_account_file: no such file: "):
        _load(tmp_path, f'[apps.droid]\ntransport = "fcm"\nservice_account_file = "{account}"\n')
    with pytest.raises(ConfigError, match=r"apps\.default\.ca_file: not a file: "):
        _load(tmp_path, f'[apps.default]\nca_file = "{tmp_path}"\n')


def test_unknown_transport_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[apps.a]\ntransport = "carrier-pigeon"\n')
    assert str(caught.value) == (
        "invalid configuration: apps.a.transport: unknown transport 'carrier-pigeon'; "
        "expected one of log, apns, fcm, webpush"
    )


def test_an_app_section_without_transport_is_a_log_app(tmp_path: Path) -> None:
    settings = _load(tmp_path, "[apps.quiet]\nbatch_window_seconds = 2\n")
    assert isinstance(settings.apps["quiet"], LogAppConfig)
    with pytest.raises(ConfigError, match=r"apps\.quiet\.topic: unknown key for transport log"):
        _load(tmp_path, '[apps.quiet]\ntopic = "org.example.app"\n')


def test_two_apns_apps_without_default_leave_ios_to_the_implicit_default(tmp_path: Path) -> None:
    key = _p8_key(tmp_path / "AuthKey.p8")
    settings = _load(tmp_path, _apns_section("one", key) + _apns_section("two", key))
    assert settings.platform_apps["ios"] == "default"
    assert isinstance(settings.apps["default"], LogAppConfig)
    assert settings.app_for("ios", "two") == "two"  # still reachable by registrations naming it


def test_apns_app_is_preferred_for_ios_over_an_fcm_app(tmp_path: Path) -> None:
    account = tmp_path / "service-account.json"
    account.write_text("{}")
    fcm = f'[apps.droid]\ntransport = "fcm"\nservice_account_file = "{account}"\n'
    settings = _load(tmp_path, _apns_section("phone", _p8_key(tmp_path / "AuthKey.p8")) + fcm)
    assert settings.platform_apps == {
        "ios": "phone",
        "android": "droid",
        "unifiedpush": "default",
        "webpush": "default",
    }
    only_fcm = _load(tmp_path, fcm)
    assert only_fcm.platform_apps["ios"] == only_fcm.platform_apps["android"] == "droid"
    assert only_fcm.platform_apps["webpush"] == "default"


def test_a_configured_default_app_wins_and_mostro_app_is_not_a_candidate(tmp_path: Path) -> None:
    key = _p8_key(tmp_path / "AuthKey.p8")
    with_default = _load(tmp_path, _apns_section("ios", key) + "[apps.default]\n")
    assert set(with_default.platform_apps.values()) == {"default"}
    mostro_only = _load(tmp_path, _apns_section("mostro", key))
    assert mostro_only.platform_apps["ios"] == "default"
    assert isinstance(mostro_only.apps["mostro"], ApnsAppConfig)
    mostro_off = _load(tmp_path, _apns_section("mostro", key) + "[dialects.mostro]\nenabled = false\n")
    assert mostro_off.platform_apps["ios"] == "mostro"


def test_explicit_platform_app_and_dialect_app_must_exist(tmp_path: Path) -> None:
    key = _p8_key(tmp_path / "AuthKey.p8")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _apns_section("ios", key) + '[platform_apps]\nandroid = "missing"\n')
    assert str(caught.value) == "invalid configuration: platform_apps.android: no app 'missing' in [apps]"
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[dialects.push_settings]\napp = "gone"\n')
    assert str(caught.value) == "invalid configuration: dialects.push_settings.app: no app 'gone' in [apps]"
    partial = _load(tmp_path, _apns_section("ios", key) + '[platform_apps]\nwebpush = "ios"\n')
    assert partial.platform_apps == {"ios": "ios", "android": "default", "unifiedpush": "default", "webpush": "ios"}


def test_the_model_checks_named_apps_without_load_settings() -> None:
    with pytest.raises(ValidationError, match="no app 'missing' in"):
        Settings.model_validate({"platform_apps": {"ios": "missing"}})
    assert Settings().platform_apps == dict.fromkeys(("ios", "android", "unifiedpush", "webpush"), "default")


def test_environment_overrides_an_app_field(tmp_path: Path) -> None:
    section = _apns_section("ios", _p8_key(tmp_path / "AuthKey.p8"))
    settings = _load(tmp_path, section, {"PUSHSTR_APPS__IOS__TOPIC": "org.example.other"})
    app = settings.apps["ios"]
    assert isinstance(app, ApnsAppConfig)
    assert app.topic == "org.example.other"
    assert app.key_id == "K1"
