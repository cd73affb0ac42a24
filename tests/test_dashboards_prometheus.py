"""Every PromQL query of every dashboard panel returns data from a real Prometheus.

A real Prometheus (Debian's package) scrapes `tests/workload.py`, a process running instrumented streams that
complete, are broken out of, cancelled, fail and are denied by `check_allow_model_requests`, and serving
/metrics through `streamscope.configure()`'s Prometheus endpoint. Template variables are resolved through
Prometheus's label API, exactly as Grafana's `label_values()` does, and substituted like Grafana does.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dashboards import alerts
from dashboards.generate import USAGE_COUNTERS

from tests import workload
from tests.servers import ROOT, Process, Prometheus, http_get, start_prometheus, wait_until

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "dashboards" / alerts.RULES_FILE
JOB = "streamscope-workload"
# Grafana's built-in interval variables, as Grafana would fill them for a 1 s scrape interval.
BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "5m"}
# Single-value (drill-down) choices: the user-defined model goes through every scenario and reports every kind
# of usage, cache writes included (OpenAI reports none).
PREFERRED = {"service": JOB, "provider": workload.CUSTOM_PROVIDER, "model": workload.CUSTOM_MODEL}
REASONING_COUNTER = dict(USAGE_COUNTERS)["reasoning"]
DATA_TIMEOUT = 60.0


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for panel in dashboard["panels"] for p in [panel, *panel.get("panels", [])]]


def prometheus_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    queries: list[PanelQuery] = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("type") == "prometheus":
                queries.append(PanelQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"]))
    return queries


def regex_escape(value: str) -> str:
    """Grafana's escaping of a value inside a Prometheus regex."""
    return re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def resolve_variables(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable's real values from Prometheus, formatted as Grafana substitutes them."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        found = prometheus.label_values(match.group(2), substitute(match.group(1), values))
        assert found, f"{dashboard['uid']}: variable {variable['name']} has no values"
        name = variable["name"]
        if variable["multi"]:
            values[name] = "(" + "|".join(regex_escape(v) for v in found) + ")"
        else:
            assert PREFERRED[name] in found, (name, found)
            values[name] = PREFERRED[name]
    return values


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression or label_values() definition (every one here has a selector)."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr)) | set(
        re.findall(r"label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[,{]", expr)
    )


@dataclass(frozen=True)
class Workload:
    metrics_url: str


@pytest.fixture(scope="module")
def workload_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    directory = tmp_path_factory.mktemp("workload")
    args = [sys.executable, "-m", "tests.workload", "--port", "0", "--duration", "300"]
    process = Process(args, directory / "workload.log")
    try:
        process.wait_ready(lambda: "READY http" in process.output(), 60, "the workload")
        url = re.search(r"READY (http://\S+)", process.output())
        assert url
        yield Workload(url.group(1))
    finally:
        process.stop()


@pytest.fixture(scope="module")
def prometheus(workload_process: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    directory = tmp_path_factory.mktemp("prometheus")
    process, server = start_prometheus(
        directory, {JOB: urlparse(workload_process.metrics_url).netloc}, rule_files=(RULES,)
    )
    try:
        wait_until(
            lambda: any(r["value"][1] == "1" for r in server.query(f'up{{job="{JOB}"}}')), 30, "the first scrape"
        )
        yield server
    finally:
        process.stop()


def test_every_panel_query_returns_data(prometheus: Prometheus) -> None:
    queries: list[tuple[PanelQuery, str]] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        values = resolve_variables(prometheus, dashboard)
        queries += [(query, substitute(query.expr, values)) for query in prometheus_queries(dashboard)]
    assert len(queries) >= 40, len(queries)
    # Pydantic AI 2.0 (the lowest supported release) has no reasoning-token usage, so nothing is counted.
    expect_empty = {q for q, _ in queries if REASONING_COUNTER in q.expr and not workload.HAS_REASONING_TOKENS}
    failures: dict[PanelQuery, Any] = {}

    def every_query_answers() -> bool:
        failures.clear()
        for query, expr in queries:
            result = prometheus.query(expr)
            finite = [r for r in result if math.isfinite(float(r["value"][1]))]
            if bool(finite) == (query in expect_empty):
                failures[query] = result
        return not failures

    try:
        wait_until(every_query_answers, DATA_TIMEOUT, "data for every panel", interval=1.0)
    except TimeoutError:
        pytest.fail("panel queries without data:\n" + "\n".join(f"{q}\n  -> {r}" for q, r in failures.items()))


def test_dashboards_use_only_metrics_the_library_emits(workload_process: Workload, prometheus: Prometheus) -> None:
    status, body = http_get(workload_process.metrics_url)
    assert status == 200
    exposed = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in body.decode().splitlines() if line and line[0] != "#"}
    used: set[str] = set()
    for path in DASHBOARDS:
        dashboard = load(path)
        for query in prometheus_queries(dashboard):
            used |= metric_names(query.expr)
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                used |= metric_names(variable["definition"])
    if not workload.HAS_REASONING_TOKENS:
        used.discard(REASONING_COUNTER)
    assert used, "no metric names found"
    assert used <= exposed, f"not in the real /metrics output: {sorted(used - exposed)}"
    # ... and Prometheus stored them under those names.
    stored = set(prometheus.label_values("__name__", f'{{job="{JOB}"}}'))
    assert used <= stored, sorted(used - stored)

    # Every metric family streamscope emits is on a dashboard.
    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name)

    ours = {family(name) for name in exposed if name.startswith(("streamscope_", "gen_ai_"))}
    assert ours <= {family(name) for name in used}, sorted(ours - {family(name) for name in used})


# --- the alert rules, evaluated by the same real Prometheus --------------------------------------------------------
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "by", "on", "without", "ignoring", "group_left", "group_right"}


def rule_selectors(expr: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(metric name, its label matchers) for each selector, and the labels of every by/on clause, of a rule."""
    grouping = {
        label.strip()
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr)
        for label in clause.split(",")
        if label.strip()
    }
    bare = re.sub(r"\b(?:by|on)\s*\([^)]*\)", " ", expr)
    # an identifier not followed by "(" (a function) nor by more of a name, with its matchers if any
    selectors = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?(?![\w:{]|\s*\()", bare)
    found = [(name, matchers) for name, matchers in selectors if name not in PROMQL_WORDS]
    return found, grouping


def test_rule_selectors_are_read_exactly() -> None:
    found, grouping = rule_selectors(
        'sum by (job, a_b) (rate(x_total{o="e"}[5m])) / on (job) sum(y_bucket) and z offset 5m > 0'
    )
    assert found == [("x_total", '{o="e"}'), ("y_bucket", ""), ("z", "")]
    assert grouping == {"job", "a_b"}


def test_every_alert_rule_is_evaluated_without_error(prometheus: Prometheus) -> None:
    expected = [alert.name for alert in alerts.ALERTS]

    def all_evaluated() -> bool:
        rules = prometheus.rules()
        return [r["name"] for r in rules] == expected and all(
            r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules
        )

    wait_until(all_evaluated, DATA_TIMEOUT, "every rule evaluated")
    assert all(rule.get("lastError", "") == "" for rule in prometheus.rules())


def test_alert_rules_use_only_metrics_and_labels_the_library_emits(
    workload_process: Workload, prometheus: Prometheus
) -> None:
    """Each selector of each rule matches series the workload exports (label matchers included), and each label a
    rule groups or matches on is on every series of the metrics it combines, in the real /metrics output."""
    status, body = http_get(workload_process.metrics_url)
    assert status == 200
    exposed = {re.split(r"[{ ]", line, maxsplit=1)[0] for line in body.decode().splitlines() if line and line[0] != "#"}
    for alert in alerts.ALERTS:
        selectors, grouping = rule_selectors(alert.expr)
        assert selectors, alert.name
        for name, matchers in selectors:
            assert name in exposed, (alert.name, name)
            selector = f'{name}{{job="{JOB}"{", " + matchers[1:-1] if matchers else ""}}}'
            wait_until(lambda s=selector: bool(prometheus.series(s)), DATA_TIMEOUT, f"series for {selector}")
            for series in prometheus.series(selector):
                missing = grouping - set(series)
                assert not missing, (alert.name, selector, missing)
