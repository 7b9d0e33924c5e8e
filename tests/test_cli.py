"""The `pushstr` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from pushstr.cli import QUIET_LOGGERS, main
from tests.conftest import free_port

PUSHSTR = [sys.executable, "-m", "pushstr.cli"]


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSHSTR_")}
    env.update(
        PUSHSTR_SERVER__PORT=str(port),
        PUSHSTR_SERVER__DATA_DIR=str(tmp_path / "data"),
        # A relay that refuses connections: the server must run (and retry) without any reachable relay.
        PUSHSTR_NOSTR__RELAYS=f'["ws://127.0.0.1:{free_port()}"]',
        PUSHSTR_TRANSPORTS__LOG__PATH=str(tmp_path / "push.log"),
    )
    return env


def test_serve_answers_health_without_relays_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([*PUSHSTR, "serve"], env=_env(tmp_path, port), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    key_file = tmp_path / "data" / "server.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_bad_configuration_stops_the_start_with_the_key_named(tmp_path: Path) -> None:
    env = _env(tmp_path, free_port()) | {"PUSHSTR_SERVER__PROT": "1"}
    result = subprocess.run(
        [*PUSHSTR, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "server.prot: unknown key" in result.stderr


def test_keygen_and_info(tmp_path: Path) -> None:
    keygen = subprocess.run([*PUSHSTR, "keygen"], capture_output=True, text=True, timeout=30, check=True)
    assert "nsec1" in keygen.stdout and "npub1" in keygen.stdout
    env = _env(tmp_path, free_port())
    info = subprocess.run([*PUSHSTR, "info"], env=env, cwd=tmp_path, capture_output=True, timeout=30, check=True)
    again = subprocess.run([*PUSHSTR, "info"], env=env, cwd=tmp_path, capture_output=True, timeout=30, check=True)
    first, second = orjson.loads(info.stdout), orjson.loads(again.stdout)
    assert first["npub"].startswith("npub1")
    assert first["pubkey"] == second["pubkey"]  # the generated key is kept


def test_missing_credential_stops_serve_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "pushstr.toml"
    config.write_text('[apps.default]\ntransport = "apns"\nkey_id = "K1"\nteam_id = "T1"\ntopic = "org.example.app"\n')
    env = _env(tmp_path, free_port())
    result = subprocess.run(
        [*PUSHSTR, "serve", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration: apps.default.key_file: required for apns" in result.stderr
    assert "Traceback" not in result.stderr


def test_loggers_that_print_sql_parameters_stay_at_warning() -> None:
    """SQLAlchemy logs statements with their parameters at INFO, aiosqlite at DEBUG: identities, either way."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert main(["keygen"]) == 0
        assert all(logging.getLogger(name).level == logging.WARNING for name in QUIET_LOGGERS)
        assert not logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(level)
    assert "aiosqlite" in QUIET_LOGGERS


def test_demo_shows_a_dm_become_a_push_in_under_ten_seconds(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSHSTR_")}
    started = time.monotonic()
    result = subprocess.run(
        [*PUSHSTR, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 10
    assert "the push arrived (log transport line):" in result.stdout
    assert '"kind":1059' in result.stdout
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_send_test_names_its_devices_one_way_or_the_other() -> None:
    for argv in (["send-test", "--token", "ab" * 32], ["send-test", "--app", "default"]):
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
