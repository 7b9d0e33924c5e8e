"""The data directory is 0700 and every file pushstr writes in it 0600, also for an install made with wider modes."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import nostr_sdk

from pushstr.nostr.keys import Keys
from tests.e2e.clients import register
from tests.harness import RunningServer, make_settings


def _modes(directory: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}


async def test_the_data_dir_and_its_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = make_settings(
        data,
        [],
        Keys.generate().secret_hex,
        apps={"web": {"transport": "webpush", "vapid_subject": "mailto:ops@example.com"}},
    )
    server = RunningServer(settings)
    await server.start()
    token = "fcm-" + secrets.token_urlsafe(24)
    try:
        await register(server, nostr_sdk.Keys.generate(), token)
    finally:
        await server.stop()
    # Sealed at rest: no file in the data directory holds the token's bytes.
    assert not [path.name for path in data.iterdir() if token.encode() in path.read_bytes()]
    modes = _modes(data)
    assert {"pushstr.sqlite3", "vapid_private_key.pem", "push.log"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700

    # An install from before: files and directory readable by everyone. The next start narrows them.
    data.chmod(0o755)
    for path in data.iterdir():
        path.chmod(0o644)
    restarted = RunningServer(settings)
    await restarted.start()
    await restarted.stop()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert set(_modes(data).values()) == {0o600}
