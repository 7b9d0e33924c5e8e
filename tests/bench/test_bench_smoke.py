"""The benchmark harnesses at tiny sizes: each must run to the end and report its rows.

The figures of a smoke run mean nothing; what is checked is that `make bench` still works: the feeder, the
fakes, the child processes and the report format. The ingest harness also checks its own correctness (every
distinct event admitted once, every expected notification produced) and fails otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run_all import BENCHES, ROOT


@pytest.mark.parametrize("name", list(BENCHES))
def test_benchmark_harness_runs_and_reports_rows(name: str, tmp_path: Path) -> None:
    report_path = tmp_path / f"{name}.json"
    script = ROOT / "bench" / BENCHES[name][0]
    finished = subprocess.run(
        [sys.executable, str(script), "--smoke", "--json", str(report_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["name"] == name
    assert report["rows"], "a benchmark must report at least one row"
    for row in report["rows"]:
        assert row["what"] and row["figure"] and row["target"] and row["command"].startswith(".venv/bin/python bench/")
