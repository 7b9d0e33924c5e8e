"""The benchmark script keeps working (run with tiny sizes; the numbers are not asserted here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_nostr.py"


def test_bench_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_nostr", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.run(events=20, wraps=4, out_dir=tmp_path)
    assert report["parse_id_verify_per_s"] > 0 and report["unwrap_per_s"] > 0
    written = list(tmp_path.glob("bench_nostr-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["events"] == 20
    assert "ratio to raw" in capsys.readouterr().out
