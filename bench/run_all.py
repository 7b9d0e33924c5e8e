"""`make bench`: every benchmark in turn, then bench/RESULTS.md and the README's benchmark table.

Each benchmark runs in its own process (the scale run holds a million registrations, and no figure should pay
for another's heap) and writes a JSON report; this script only collects their rows. A benchmark that fails is
reported as failed and the others still run; the exit status is then 1.

    .venv/bin/python bench/run_all.py [--smoke] [--only NAME ...]

`--smoke` runs every harness at tiny sizes: the test suite uses it to keep the harnesses working. Only a full run
of all of them rewrites RESULTS.md and the README table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT_DIR, ROOT, machine

BENCHES = {
    "ingest": ("bench_ingest.py", ["--profile"]),
    "firehose": ("bench_firehose.py", []),
    "latency": ("bench_latency.py", []),
    "delivery": ("bench_delivery.py", []),
    "scale": ("bench_scale.py", []),
    "subscriptions": ("bench_subscriptions.py", []),
    "nostr": ("bench_nostr.py", []),
    "marmot": ("bench_marmot.py", []),
    "cluster": ("bench_cluster.py", []),
}
"""Name → (script, extra arguments of the full run). The order is the order of the table."""
RESULTS = ROOT / "bench" / "RESULTS.md"
README = ROOT / "README.md"
TABLE_START = "<!-- bench-table:start -->"
TABLE_END = "<!-- bench-table:end -->"
PROFILE_LINES = 45


def run_one(name: str, out_dir: Path, smoke: bool) -> dict[str, Any] | None:
    script, extra = BENCHES[name]
    path = out_dir / f"{name}.json"
    command = [sys.executable, str(ROOT / "bench" / script), "--json", str(path)]
    command += ["--smoke"] if smoke else extra
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, check=False)
    if finished.returncode != 0 or not path.exists():
        print(f"== {name} FAILED (exit {finished.returncode})", flush=True)
        return None
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def table(reports: dict[str, dict[str, Any] | None]) -> str:
    lines = [
        "| what | figure | raw limit, same run | ratio | target | met | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        if report is None:
            lines.append(f"| {name} | failed | | | | no | `{BENCHES[name][0]}` |")
            continue
        for row in report["rows"]:
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}×"
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            cells = (row["what"], row["figure"], row["limit"], ratio, row["target"], met, f"`{row['command']}`")
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _machine_line(info: dict[str, Any]) -> str:
    load = " ".join(str(value) for value in info["load_average"])
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['system']}, Python {info['python']}; "
        f"load average before the run: {load}"
    )


def _details(name: str, report: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "", f"{report['seconds']} s for this benchmark.", ""]
    profile = None
    for key, value in report["details"].items():
        if key == "profile":
            profile = value
            continue
        lines.append(f"- `{key}`: {json.dumps(value)}")
    if profile:
        top = "\n".join(str(profile).strip("\n").splitlines()[:PROFILE_LINES])
        lines += ["", "Where pushstr's time goes (pyinstrument, one extra round):", "", "```", top, "```"]
    return [*lines, ""]


def results_markdown(reports: dict[str, dict[str, Any] | None], info: dict[str, Any], seconds: float) -> str:
    lines = [
        "# pushstr benchmark results",
        "",
        f"Written by `make bench` (bench/run_all.py) on {info['date']}; the whole run took {seconds / 60:.1f} min.",
        "",
        f"Machine: {_machine_line(info)}.",
        "",
        table(reports),
        "",
        "## Details",
        "",
    ]
    for name, report in reports.items():
        lines += _details(name, report) if report else [f"### {name}", "", "failed: see the run's output", ""]
    return "\n".join(lines)


def update_readme(reports: dict[str, dict[str, Any] | None], info: dict[str, Any]) -> None:
    """Replace the README's table between its markers, so the README shows what RESULTS.md shows."""
    text = README.read_text(encoding="utf-8")
    measured = f"Measured by `make bench` on {info['date']}: {_machine_line(info)}."
    block = f"{TABLE_START}\n{measured}\n\n{table(reports)}\n{TABLE_END}"
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {TABLE_START} … {TABLE_END} block")
    README.write_text(pattern.sub(lambda _match: block, text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    info = machine()
    out_dir = OUT_DIR / f"{'smoke' if args.smoke else 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.perf_counter()
    reports = {name: run_one(name, out_dir, args.smoke) for name in args.only}
    seconds = time.perf_counter() - started
    if not args.smoke and args.only == list(BENCHES):
        RESULTS.write_text(results_markdown(reports, info, seconds) + "\n", encoding="utf-8")
        update_readme(reports, info)
        print(f"written {RESULTS.relative_to(ROOT)} and the README table")
    print(f"{len(args.only)} benchmarks in {seconds:.0f} s")
    if any(report is None for report in reports.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
