"""The committed dashboards are the generator's output, and are shaped for Grafana 11 import and provisioning.
(That every query returns data is test_dashboards_prometheus.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from dashboards import generate

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
                assert "$service" in target["expr"] and "$model" in target["expr"], target["expr"]


def test_overview_has_the_panels_the_issue_asks_for() -> None:
    dashboard = json.loads((DASHBOARDS / "streamscope-overview.json").read_text())
    panels = {p["title"]: p for p in all_panels(dashboard)}
    expressions = {
        title: " ".join(t.get("expr", t.get("query", "")) for t in p.get("targets", [])) for title, p in panels.items()
    }
    assert "streamscope_streams_finished_total" in expressions["Streams/s"]
    assert 'outcome=~"error"' in expressions["Error rate"]
    assert 'outcome=~"interrupted|incomplete"' in expressions["Interruption rate"]
    assert all(f"streamscope_usage_{kind}_total" in expressions["Tokens/s by type"] for kind in (
        "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
        "reasoning_output_tokens",
    ))  # fmt: skip
    for title, histogram in (
        ("Time to first chunk", "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"),
        ("Stream duration", "gen_ai_client_operation_duration_seconds_bucket"),
    ):
        assert [t["legendFormat"] for t in panels[title]["targets"]] == ["p50", "p95", "p99"]
        assert all(histogram in t["expr"] and t["exemplar"] for t in panels[title]["targets"])
    assert "streamscope_streams_active" in expressions["Streams in flight"]
    assert "streamscope_policy_violations_total" in expressions["Policy violations"]
    tempo = [p for p in panels.values() if p.get("datasource", {}).get("type") == "tempo"]
    assert tempo and all(t["queryType"] == "traceql" for p in tempo for t in p["targets"])
    links = panels["Streams/s by model"]["fieldConfig"]["defaults"]["links"]
    assert links[0]["url"].startswith("/d/streamscope-model/")


FILTER = 'job="$service", gen_ai_provider_name="$provider", gen_ai_request_model="$model"'


def test_model_dashboard_filters_on_one_service_provider_and_model() -> None:
    dashboard = json.loads((DASHBOARDS / "streamscope-model.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert not any(variables[name]["multi"] for name in ("service", "provider", "model"))
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                assert (
                    'job="$service", gen_ai_provider_name="$provider", gen_ai_request_model="$model"' in target["expr"]
                )


def test_provisioning_points_at_the_dashboards() -> None:
    dashboards_yaml = (DASHBOARDS / "provisioning" / "dashboards.yaml").read_text()
    assert "apiVersion: 1" in dashboards_yaml
    assert "type: file" in dashboards_yaml
    datasources_yaml = (DASHBOARDS / "provisioning" / "datasources.yaml").read_text()
    assert "type: prometheus" in datasources_yaml
    assert "type: tempo" in datasources_yaml
    assert "exemplarTraceIdDestinations" in datasources_yaml
