"""`pushstr demo`: a DM becomes a push end to end, in-process, with nothing left behind."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from pushstr.ops.demo import run_demo


async def test_the_demo_shows_the_push_and_cleans_up() -> None:
    out = io.StringIO()
    started = time.monotonic()
    code = await run_demo(out)
    elapsed = time.monotonic() - started
    text = out.getvalue()
    assert code == 0, text
    assert elapsed < 10
    assert "registered a device: POST /register, NIP-98 signed" in text
    assert "NIP-17 DM" in text
    assert re.search(r'"kind":1059,"recipient":"[0-9a-f]{16}","mode":"alert"', text)
    assert "Hello from the pushstr demo" not in text
    data_dir = re.search(r"data in (\S+)", text)
    assert data_dir is not None
    assert not _exists(data_dir.group(1))


def _exists(path: str) -> bool:
    return Path(path).exists()
