"""The committed dashboards are the generator's output, and are shaped for Grafana 11 import and provisioning.
(What each panel's queries mean is test_dashboard_meaning.py; that every query returns data, from labels the real
series carry, is test_dashboards_prometheus.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from dashboards import generate

from tests.dashboard_promql import Matcher, parse, selectors
from tests.servers import ROOT

DASHBOARDS = ROOT / "dashboards"


def test_committed_files_equal_the_generator_output() -> None:
    rendered = generate.render()
    for name, content in rendered.items():
        path = DASHBOARDS / name
        assert path.exists(), f"{name} is missing: run `python -m dashboards.generate`"
        assert path.read_text() == content, f"{name} differs from the generator: run `python -m dashboards.generate`"
    assert {p.name for p in DASHBOARDS.glob("*.json")} == {n for n in rendered if n.endswith(".json")}


def test_generator_check_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 file(s) differ" in result.stdout


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for panel in dashboard["panels"] for p in [panel, *panel.get("panels", [])]]


@pytest.fixture(params=["streamscope-overview.json", "streamscope-model.json"])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return json.loads((DASHBOARDS / request.param).read_text())


def test_importable_into_grafana_11(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None
    assert dashboard["uid"] in {"streamscope-overview", "streamscope-model"}
    (prometheus_input,) = dashboard["__inputs"]
    assert prometheus_input == {
        **prometheus_input,
        "name": "DS_PROMETHEUS",
        "type": "datasource",
        "pluginId": "prometheus",
    }
    requires = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert ("grafana", "grafana") in requires
    assert {("panel", p["type"]) for p in all_panels(dashboard) if p["type"] != "row"} <= requires
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"  # filled in by the import dialog
    assert variables["tempo"]["query"] == "tempo"
    assert {"service", "provider", "model"} <= set(variables)


def test_panels_use_datasource_variables_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    text = json.dumps(dashboard)
    hard_coded = sorted(re.findall(r'"uid": "(?!\$\{)[^"]*"', text))
    assert hard_coded == sorted([f'"uid": "{dashboard["uid"]}"', '"uid": "-- Grafana --"'])
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"]["uid"] in {"${datasource}", "${tempo}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            if target["datasource"]["type"] == "prometheus":
                operator = "=~" if dashboard["uid"] == "streamscope-overview" else "="
                wanted = {Matcher("job", operator, "$service"), Matcher("gen_ai_provider_name", operator, "$provider"),
                          Matcher("gen_ai_request_model", operator, "$model")}  # fmt: skip
                for selector in selectors(parse(target["expr"])):
                    assert wanted <= set(selector.matchers), f"{panel['title']}: {selector} lacks the filter"


def metric_names(panel: dict[str, Any]) -> set[str]:
    """The metric names of a panel's PromQL queries, exactly (parsed, not searched for)."""
    return {s.name or "" for t in panel["targets"] if "expr" in t for s in selectors(parse(t["expr"]))}


def outcome_matchers(panel: dict[str, Any]) -> set[Matcher]:
    return {
        m
        for t in panel["targets"]
        for s in selectors(parse(t["expr"]))
        for m in s.matchers
        if m.label == "streamscope_stream_outcome"
    }


def test_overview_has_the_panels_the_issue_asks_for() -> None:
    dashboard = json.loads((DASHBOARDS / "streamscope-overview.json").read_text())
    panels = {p["title"]: p for p in all_panels(dashboard)}
    assert metric_names(panels["Streams/s"]) == {"streamscope_streams_finished_total"}
    assert outcome_matchers(panels["Error rate"]) == {Matcher("streamscope_stream_outcome", "=~", "error")}
    assert outcome_matchers(panels["Interruption rate"]) == {
        Matcher("streamscope_stream_outcome", "=~", "interrupted|incomplete")
    }
    assert [metric_names({"targets": [t]}) for t in panels["Tokens/s by type"]["targets"]] == [
        {f"streamscope_usage_{kind}_total"}
        for kind in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
                     "reasoning_output_tokens")
    ]  # fmt: skip
    for title, histogram in (
        ("Time to first chunk", "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"),
        ("Stream duration", "gen_ai_client_operation_duration_seconds_bucket"),
    ):
        assert [t["legendFormat"] for t in panels[title]["targets"]] == ["p50", "p95", "p99"]
        assert metric_names(panels[title]) == {histogram}
        assert all(t["exemplar"] for t in panels[title]["targets"])
    assert metric_names(panels["Streams in flight"]) == {"streamscope_streams_active"}
    assert metric_names(panels["Policy violations"]) == {"streamscope_policy_violations_total"}
    tempo = [p for p in panels.values() if p.get("datasource", {}).get("type") == "tempo"]
    assert tempo and all(t["queryType"] == "traceql" for p in tempo for t in p["targets"])
    links = panels["Streams/s by model"]["fieldConfig"]["defaults"]["links"]
    assert links[0]["url"].startswith("/d/streamscope-model/")


def test_model_dashboard_filters_on_one_service_provider_and_model() -> None:
    dashboard = json.loads((DASHBOARDS / "streamscope-model.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert not any(variables[name]["multi"] for name in ("service", "provider", "model"))
    wanted = [
        Matcher("job", "=", "$service"),
        Matcher("gen_ai_provider_name", "=", "$provider"),
        Matcher("gen_ai_request_model", "=", "$model"),
    ]
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                for selector in selectors(parse(target["expr"])):
                    assert list(selector.matchers[:3]) == wanted, f"{panel['title']}: {selector}"


def test_provisioning_points_at_the_dashboards() -> None:
    dashboards_yaml = (DASHBOARDS / "provisioning" / "dashboards.yaml").read_text()
    assert "apiVersion: 1" in dashboards_yaml
    assert "type: file" in dashboards_yaml
    datasources_yaml = (DASHBOARDS / "provisioning" / "datasources.yaml").read_text()
    assert "type: prometheus" in datasources_yaml
    assert "type: tempo" in datasources_yaml
    assert "exemplarTraceIdDestinations" in datasources_yaml
