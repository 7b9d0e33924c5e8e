"""The server's own Nostr key: from the config, from a file, or generated once and kept in the data dir.

The key must be stable across restarts: clients encrypt kind 22456 settings and Mostro tokens to it, and relays
that require NIP-42 AUTH may have it on an allow-list.
"""

from __future__ import annotations

import os
from pathlib import Path

from pushstr.config import ConfigError, Settings
from pushstr.nostr import nip19
from pushstr.nostr.errors import NostrError
from pushstr.nostr.keys import Keys
from pushstr.private_files import private_dir

KEY_FILE_NAME = "server.key"


def parse_secret(value: str, where: str) -> Keys:
    """Keys from a 64-hex secret or an `nsec1…` string; `where` names the config key in errors."""
    text = value.strip()
    try:
        if text.startswith("nsec1"):
            return Keys.from_hex(nip19.nsec_decode(text))
        return Keys.from_hex(text)
    except NostrError as exc:
        raise ConfigError(f"{where}: {exc.reason}") from None


def _write_private(path: Path, text: str) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")


def load_server_keys(settings: Settings) -> Keys:
    """`nostr.secret_key`, else `nostr.secret_key_file`, else `<data_dir>/server.key` (created 0600 if missing)."""
    nostr = settings.nostr
    if nostr.secret_key:
        return parse_secret(nostr.secret_key, "nostr.secret_key")
    if nostr.secret_key_file is not None:
        try:
            text = nostr.secret_key_file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"nostr.secret_key_file: cannot read {nostr.secret_key_file}: {exc}") from None
        return parse_secret(text, "nostr.secret_key_file")
    path = settings.server.data_dir / KEY_FILE_NAME
    if path.exists():
        return parse_secret(path.read_text(encoding="ascii"), str(path))
    keys = Keys.generate()
    try:
        _write_private(path, keys.secret_hex)
    except FileExistsError:  # another process created it first: use theirs
        return parse_secret(path.read_text(encoding="ascii"), str(path))
    return keys
