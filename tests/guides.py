"""Running the client guides' example programs (docs/clients/*.mjs) with Node.js, as a reader would."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

REPOSITORY = Path(__file__).resolve().parents[1]
GUIDES = REPOSITORY / "docs" / "clients"


async def run_guide(script: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """Run `docs/clients/<script>` from the repository root (where node_modules is); its exit code and the JSON it
    printed."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(GUIDES / script),
        *args,
        cwd=REPOSITORY,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    assert stdout, stderr.decode()
    return process.returncode, orjson.loads(stdout)
