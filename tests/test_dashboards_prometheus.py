"""Every PromQL query of every dashboard panel returns data from a real Prometheus.

A real Prometheus (Debian's package) scrapes `tests/workload.py`, a process running instrumented streams that
complete, are broken out of, cancelled, fail and are denied by `check_allow_model_requests`, and serving
/metrics through `streamscope.configure()`'s Prometheus endpoint. Template variables are resolved through
Prometheus's label API, exactly as Grafana's `label_values()` does, and substituted like Grafana does.

Every label a query matches on or groups by is one the metric's stored series carry (a missing one would not fail
the query: it would return series without it), and every legend and grouping label is set on every series a query
returns. What titles and units promise is checked without a server, in `test_dashboard_meaning.py`.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import pytest
from dashboards import alerts

from streamscope import _names as n
from tests import workload
from tests.dashboard_checks import alert_problems, analyse, label_values_problems
from tests.dashboard_promql import Aggregate, Binary, Matcher, parse, parse_label_values, selectors, walk
from tests.dashboard_schema import Part, Schema, Series, library_schema
from tests.servers import ROOT, Process, Prometheus, get_json, http_get, start_prometheus, wait_until

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULES = ROOT / "dashboards" / alerts.RULES_FILE
JOB = "streamscope-workload"
# Grafana's built-in interval variables, as Grafana would fill them for a 1 s scrape interval.
BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "5m"}
# Single-value (drill-down) choices: the user-defined model goes through every scenario and reports every kind
# of usage, cache writes included (OpenAI reports none).
PREFERRED = {"service": JOB, "provider": workload.CUSTOM_PROVIDER, "model": workload.CUSTOM_MODEL}
REASONING_COUNTER = next(s.name for s in library_schema().values() if s.metric == n.METRIC_USAGE_REASONING_TOKENS)
DATA_TIMEOUT = 60.0
# Labels a series has only sometimes (error.type on failed streams' timings): a grouping may keep them empty.
OPTIONAL_LABELS = frozenset({"error_type"})


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}: {self.expr}"

    def expr_names(self) -> set[str]:
        return metric_names(self.expr)


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
    """The metric names of a PromQL expression or a label_values() definition, parsed exactly."""
    if expr.startswith("label_values("):
        return {parse_label_values(expr).selector.name or ""}
    return {selector.name or "" for selector in selectors(parse(expr))}


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
    expect_empty = {q for q, _ in queries if REASONING_COUNTER in q.expr_names() and not workload.HAS_REASONING_TOKENS}
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


# --- labels, against the series Prometheus really stores ------------------------------------------------------------
STORED = "Prometheus stores for the workload"
PARTS: dict[tuple[str, str], Part] = {
    ("counter", "_total"): "total",
    ("histogram", "_bucket"): "bucket",
    ("histogram", "_sum"): "sum",
    ("histogram", "_count"): "count",
}


def stored_schema(prometheus: Prometheus, names: set[str]) -> Schema:
    """Each of `names` that Prometheus stores for the workload: its kind (Prometheus's metadata) and every label on
    its series. No units: what is measured is the server-free tests' business."""
    metadata: dict[str, list[dict[str, str]]] = get_json(f"{prometheus.url}/api/v1/metadata")["data"]
    schema: Schema = {}
    for name in names:
        series = prometheus.series(f'{{__name__="{name}", job="{JOB}"}}')
        if not series:
            continue
        suffix = next((x for x in ("_total", "_bucket", "_sum", "_count") if name.endswith(x)), "")
        family = next(f for f in (name, name.removesuffix(suffix)) if f in metadata)
        kind = metadata[family][0]["type"]
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        part: Part = "value" if kind == "gauge" else PARTS[(kind, suffix)]
        labels = frozenset(label for found in series for label in found) - {"__name__"}
        schema[name] = Series(name, family.removesuffix("_total"), kind, part, labels, "", "")
    return schema


def used_names() -> set[str]:
    used: set[str] = set()
    for path in DASHBOARDS:
        dashboard = load(path)
        used |= {name for query in prometheus_queries(dashboard) for name in metric_names(query.expr)}
        used |= {name for v in dashboard["templating"]["list"] if v["type"] == "query"
                 for name in metric_names(v["definition"])}  # fmt: skip
    used |= {name for alert in alerts.ALERTS for name in metric_names(alert.expr)}
    if not workload.HAS_REASONING_TOKENS:
        used.discard(REASONING_COUNTER)
    return used


def test_every_label_a_query_uses_is_on_the_stored_series(prometheus: Prometheus) -> None:
    """Every label matcher, by (...), without (...) and on (...) of every panel, variable and alert rule names a
    label that the metric's series in Prometheus carry, and every function fits the metric's stored type."""
    names = used_names()
    exported = names & set(library_schema())  # the others are reported below, not waited for
    wait_until(lambda: exported <= set(stored_schema(prometheus, names)), DATA_TIMEOUT, "series of every metric")
    schema = stored_schema(prometheus, names)
    problems: list[str] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        for query in prometheus_queries(dashboard):
            if query.expr_names() & names != query.expr_names():
                continue  # the reasoning counter, with no reasoning tokens in this Pydantic AI
            problems += [f"{query}: {p}" for p in analyse(query.expr, schema, source=STORED)[1]]
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                problems += label_values_problems(variable["definition"], schema, STORED)
    for alert in alerts.ALERTS:
        problems += alert_problems(alert.name, alert.expr, (alert.summary, alert.description), schema, STORED)
    assert problems == []


def test_every_legend_and_grouping_label_is_set_on_every_result(prometheus: Prometheus) -> None:
    """A label that is not on a metric does not make a query fail: ``sum by (typo)`` returns one series without it.
    So each series a panel query returns carries, non-empty, every label its legend shows and its outer grouping
    keeps."""
    schema = library_schema()
    checks: list[tuple[PanelQuery, str, set[str]]] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        values = resolve_variables(prometheus, dashboard)
        for panel in all_panels(dashboard):
            for target in panel.get("targets", []):
                if "expr" not in target:
                    continue
                query = PanelQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"])
                result_labels = analyse(query.expr, schema)[0].labels or frozenset()
                legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                checks.append((query, substitute(query.expr, values), legend | (result_labels - OPTIONAL_LABELS)))
    assert sum(bool(labels) for _, _, labels in checks) >= 20
    failures: dict[PanelQuery, list[str]] = {}

    def every_label_is_set() -> bool:
        failures.clear()
        for query, expr, labels in checks:
            missing = [
                f"{sorted(labels - {k for k, v in r['metric'].items() if v})} missing on {r['metric']}"
                for r in prometheus.query(expr)
                if any(not r["metric"].get(label) for label in labels)
            ]
            if missing or (labels and not prometheus.query(expr) and REASONING_COUNTER not in query.expr_names()):
                failures[query] = missing or ["no result"]
        return not failures

    try:
        wait_until(every_label_is_set, DATA_TIMEOUT, "every legend and grouping label set", interval=1.0)
    except TimeoutError:
        pytest.fail("\n".join(f"{q}\n  -> {m}" for q, m in failures.items()))


def value_at(prometheus: Prometheus, expr: str, at: float) -> float:
    """The single value of an instant query evaluated at `at` (0 if it returns nothing)."""
    data = get_json(f"{prometheus.url}/api/v1/query?{urlencode({'query': expr, 'time': f'{at:.3f}'})}")
    assert data["status"] == "success", (expr, data)
    result = data["data"]["result"]
    assert len(result) <= 1, (expr, result)
    return float(result[0]["value"][1]) if result else 0.0


TOKEN_TITLE = re.compile(r"\b(input|output) tokens/s\b", re.IGNORECASE)
AGREEMENT = 0.25  # relative: the workload's input and output token rates differ by more than twice that


def test_token_panels_show_the_tokens_their_title_names(prometheus: Prometheus) -> None:
    """A panel titled input (or output) tokens/s shows, in total, what the library's input (output) token counter
    says at the same instant: its numbers are those tokens, whichever metric it reads."""
    counters = {s.token_type: s.name for s in library_schema().values() if s.token_type is not None}
    checks: list[tuple[PanelQuery, str, str]] = []
    for path in DASHBOARDS:
        dashboard = load(path)
        values = resolve_variables(prometheus, dashboard)
        operator = "=~" if any(v.get("multi") for v in dashboard["templating"]["list"]) else "="
        reference_filter = ", ".join(
            f'{label}{operator}"{values[variable]}"'
            for label, variable in (("job", "service"), ("gen_ai_provider_name", "provider"),
                                    ("gen_ai_request_model", "model"))
        )  # fmt: skip
        for query in prometheus_queries(dashboard):
            named = TOKEN_TITLE.search(query.panel)
            if named is None:
                continue
            counter = counters[named.group(1).lower()]
            reference = f"sum(rate({counter}{{{reference_filter}}}[{BUILTINS['__rate_interval']}]))"
            checks.append((query, f"sum({substitute(query.expr, values)})", reference))
    assert len(checks) >= 3, [q for q, _, _ in checks]
    failures: dict[PanelQuery, str] = {}

    def every_panel_agrees() -> bool:
        failures.clear()
        at = time.time()
        for query, expr, reference in checks:
            shown, expected = (value_at(prometheus, e, at) for e in (expr, reference))
            if not (expected > 0 and abs(shown - expected) <= AGREEMENT * expected):
                failures[query] = f"shows {shown}, the counter says {expected} ({reference})"
        return not failures

    try:
        wait_until(every_panel_agrees, DATA_TIMEOUT, "token panels agreeing with the counters", interval=1.0)
    except TimeoutError:
        pytest.fail("\n".join(f"{q}\n  -> {m}" for q, m in failures.items()))


# --- the alert rules, evaluated by the same real Prometheus --------------------------------------------------------
def rule_selectors(expr: str) -> tuple[list[tuple[str, tuple[Matcher, ...]]], set[str]]:
    """(metric name, its label matchers) for each selector, and the labels of every by/on clause, of a rule."""
    node = parse(expr)
    grouping = {
        label
        for found in walk(node)
        for clause in (
            found.grouping if isinstance(found, Aggregate) else found.matching if isinstance(found, Binary) else None,
        )
        if clause is not None and clause.kind in ("by", "on")
        for label in clause.labels
    }
    return [(s.name or "", s.matchers) for s in selectors(node)], grouping


def test_rule_selectors_are_read_exactly() -> None:
    found, grouping = rule_selectors(
        'sum by (job, a_b) (rate(x_total{o="e"}[5m])) / on (job) sum(y_bucket) and z offset 5m > 0'
    )
    assert found == [("x_total", (Matcher("o", "=", "e"),)), ("y_bucket", ()), ("z", ())]
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
        found, grouping = rule_selectors(alert.expr)
        assert found, alert.name
        for name, matchers in found:
            assert name in exposed, (alert.name, name)
            selector = f'{name}{{job="{JOB}"{"".join(f", {m}" for m in matchers)}}}'
            wait_until(lambda s=selector: bool(prometheus.series(s)), DATA_TIMEOUT, f"series for {selector}")
            for series in prometheus.series(selector):
                missing = grouping - set(series)
                assert not missing, (alert.name, selector, missing)
