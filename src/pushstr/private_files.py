"""pushstr's own files, readable by its user only: the data directory 0700, every file pushstr writes there 0600.

The store holds who registered which device and the server key signs as pushstr; on a shared host neither may be
readable by other accounts, whatever the umask. Files are created with their final mode (never briefly wider),
and existing ones are narrowed at start, so an install made before this rule is fixed by its next start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) if missing, and make it 0700 and the files directly in it 0600: it is
    pushstr's directory (symbolic links and subdirectories are left as they are)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    for entry in os.scandir(path):
        if (
            entry.is_file(follow_symlinks=False)
            and stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) != FILE_MODE
        ):
            os.chmod(entry.path, FILE_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty if missing, created 0600, and make it 0600 if it exists with a wider mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path
