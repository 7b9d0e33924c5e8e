"""What every benchmark shares: the machine description, the result rows and where reports are written.

Each benchmark script writes one JSON report (`--json PATH`) holding `rows` (what `run_all.py` puts in
bench/RESULTS.md and the README table) and `details` (everything else it measured). Figures are compared with a
raw limit measured in the same run where one exists, because on a small shared machine the ratio is what
survives the noise.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    what: str
    figure: str
    limit: str
    ratio: float | None
    target: str
    met: bool | None
    command: str


def grouped(value: float) -> str:
    """An integer with thin groups of three digits ("21 034"), as the tables print figures."""
    return f"{round(value):,}".replace(",", " ")


def machine() -> dict[str, Any]:
    """CPU, core count, Python and load: enough to tell whether two reports are comparable."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }


def write_report(path: Path | None, name: str, rows: list[Row], details: dict[str, Any]) -> Path:
    """Write the JSON report (to `path`, or a timestamped file in bench/out/) and print the rows."""
    if path is None:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUT_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"name": name, "machine": machine(), "rows": [asdict(row) for row in rows], "details": details}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for row in rows:
        ratio = "" if row.ratio is None else f"  ({row.ratio:.2f}×)"
        verdict = {True: "met", False: "MISSED", None: "-"}[row.met]
        print(f"{row.what}: {row.figure}{ratio}  target {row.target}: {verdict}")
    print(f"written {path}")
    return path
