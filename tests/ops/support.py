"""What the operator-tool tests share: a pushstr.toml written as an operator writes one, and the CLI run in a
thread (its `asyncio.run` needs a loop of its own, while the fakes and relays serve on the test's loop)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pushstr.cli import main
from pushstr.identity import KEY_FILE_NAME
from pushstr.nostr.keys import Keys
from tests.fakes import APNS_TOPIC, ApnsKey
from tests.fakes.apns import FakeAPNs
from tests.fakes.fcm import FakeFCM


@pytest.fixture
async def fake_fcm(tmp_path: Path) -> AsyncIterator[FakeFCM]:
    fake = FakeFCM(tmp_path / "fcm")
    (tmp_path / "fcm").mkdir()
    await fake.start()
    yield fake
    await fake.stop()


def write_server_key(data_dir: Path) -> Keys:
    """The server key where `serve` would have created it (0600)."""
    keys = Keys.generate()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE_NAME
    path.write_text(keys.secret_hex + "\n")
    os.chmod(path, 0o600)
    return keys


def apns_section(
    app_id: str, fake: FakeAPNs, key: ApnsKey, key_file: Path | None = None, key_id: str | None = None
) -> str:
    return f"""
[apps.{app_id}]
transport = "apns"
key_file = "{key_file or key.key_file}"
key_id = "{key_id or key.key_id}"
team_id = "{key.team_id}"
topic = "{APNS_TOPIC}"
environment = "sandbox"
base_url = "{fake.url}"
ca_file = "{fake.ca_file}"
"""


def fcm_section(app_id: str, fake: FakeFCM) -> str:
    return f"""
[apps.{app_id}]
transport = "fcm"
service_account_file = "{fake.write_service_account()}"
base_url = "{fake.url}"
ca_file = "{fake.ca_file}"
"""


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path


def write_config(tmp_path: Path, relays: list[str], *sections: str) -> Config:
    data_dir = tmp_path / "data"
    quoted = ", ".join(f'"{url}"' for url in relays)
    path = tmp_path / "pushstr.toml"
    path.write_text(
        f"""
[server]
data_dir = "{data_dir}"

[nostr]
relays = [{quoted}]

[discovery]
enabled = false

[transports.log]
path = "{data_dir / "push.log"}"
"""
        + "".join(sections)
    )
    return Config(path, data_dir)


async def run_cli(*argv: str) -> int:
    """`pushstr <argv>` as the command line runs it, beside the running test loop."""
    return await asyncio.to_thread(main, list(argv))
