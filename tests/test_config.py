from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pushstr.config import ConfigError, Settings, load_settings
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
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, env: dict[str, str], named: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(path, environ=env)


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
