"""deploy/prometheus-rules.yml and deploy/grafana-dashboard.json against promtool and a running pushstr.

The rules are checked and unit-tested by promtool (Debian's `prometheus` package; `make promtool`). Every metric the
rules and the dashboard query must be one that `pushstr serve` really exposes: a renamed metric would otherwise
leave an alert that can never fire, which no one notices until the outage it was meant for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus-rules.yml"
RULE_TESTS = DEPLOY / "prometheus-rules.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
#: Series Prometheus makes itself for every target; pushstr does not expose them.
PROMETHEUS_OWN = {"up"}
SEVERITIES = {"critical", "warning"}
START_SECONDS = 20.0


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make promtool` installs Debian's prometheus package")
    return subprocess.run([path, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


# --- PromQL metric names -------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(r"(?P<number>\d[\w.]*)|(?P<name>[A-Za-z_:][\w:]*)(?P<call>\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every bare identifier that is not a function, an aggregation, a
    keyword, or a label name inside matchers and grouping clauses."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name is not None and token.group("call") is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (app, le) (rate(pushstr_a_total{outcome=~"retry|dead", relay!~"user-.*"}[$__rate_interval]))'
        " / on (app) group_left (x) pushstr_b > 0.5 and histogram_quantile(0.95, pushstr_c_bucket[5m:1m])"
        ' unless max_over_time(pushstr_d[1h]) offset 5m or count_values("value", up) == bool 1e3'
    )
    assert metric_names(expr) == {"pushstr_a_total", "pushstr_b", "pushstr_c_bucket", "pushstr_d", "up"}


# --- what a running pushstr exposes --------------------------------------------------------------------------------


def exposed_series_names(exposition: str) -> set[str]:
    """Series names from the `# TYPE` lines of a text exposition: a histogram's `_bucket`, `_count` and `_sum`, a
    summary's `_count` and `_sum`. Labelled metrics without children have no samples yet, but a TYPE line."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "summary":
            names |= {name, f"{name}_count", f"{name}_sum"}
        elif kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
        else:
            names.add(name)
    return names


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The series names of a `pushstr serve` process started as an operator starts it, scraped once."""
    workdir = tmp_path_factory.mktemp("alerting")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUSHSTR_")}
    env.update(
        PUSHSTR_SERVER__PORT=str(port),
        PUSHSTR_SERVER__DATA_DIR=str(workdir / "data"),
        PUSHSTR_NOSTR__RELAYS=f'["ws://127.0.0.1:{free_port()}"]',
        PUSHSTR_TRANSPORTS__LOG__PATH=str(workdir / "push.log"),
    )
    process = subprocess.Popen([sys.executable, "-m", "pushstr.cli", "serve"], env=env, cwd=workdir)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"pushstr serve exited with {process.returncode}"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        yield exposed_series_names(response.text)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_exposition_is_read_with_suffixes(exposed: set[str]) -> None:
    assert {"pushstr_push_send_seconds_bucket", "pushstr_push_send_seconds_count"} <= exposed
    assert {"pushstr_relay_connected", "pushstr_relay_refused_total", "pushstr_events_matched_total"} <= exposed
    assert {"pushstr_outbox_oldest_seconds", "pushstr_registrations", "process_start_time_seconds"} <= exposed


# --- the rules -----------------------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_waits_says_how_bad_and_what_to_check() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name} has no `for`"
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description"} <= rule["annotations"].keys(), name


def test_every_alert_is_tested_firing_and_quiet() -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"


def test_the_rules_query_only_metrics_pushstr_exposes(exposed: set[str]) -> None:
    used = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert "pushstr_push_outcomes_total" in used and "pushstr_relay_connected" in used
    assert used - exposed - PROMETHEUS_OWN == set()


# --- the dashboard -------------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: the panels' targets and the variables' `label_values(…)`."""
    board = dashboard()
    queries = [target["expr"] for panel in panels(board["panels"]) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert found is not None, variable
            queries.append(found.group(1))
    return queries


def test_the_dashboard_asks_for_its_prometheus_on_import() -> None:
    board = dashboard()
    assert [item["name"] for item in board["__inputs"]] == ["DS_PROMETHEUS"]
    sources = [panel["datasource"] for panel in panels(board["panels"]) if "datasource" in panel]
    sources += [target["datasource"] for panel in panels(board["panels"]) for target in panel.get("targets", [])]
    assert sources and all(source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for source in sources)


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables filled in as Grafana fills them."""
    substitute = {"$__rate_interval": "5m", "$job": "pushstr", "$instance": ".*"}
    rules = []
    for number, query in enumerate(dashboard_queries()):
        filled = query
        for variable, value in substitute.items():
            filled = filled.replace(variable, value)
        assert "$" not in filled, filled
        rules.append({"record": f"dashboard:query_{number}", "expr": filled})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_the_figures_and_queries_only_exposed_metrics(exposed: set[str]) -> None:
    used = {name for query in dashboard_queries() for name in metric_names(query)}
    figures = {
        "pushstr_relay_messages_total",
        "pushstr_events_matched_total",
        "pushstr_push_outcomes_total",
        "pushstr_outbox_pending",
        "pushstr_outbox_oldest_seconds",
        "pushstr_relay_connected",
        "pushstr_registrations",
        "pushstr_push_send_seconds_bucket",
    }
    assert figures <= used
    assert used - exposed - PROMETHEUS_OWN == set()
