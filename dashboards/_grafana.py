"""Small typed builders for Grafana 11 dashboard JSON (schema version 39): variables, panels, targets, layout.

Every panel queries through a datasource template variable (``${datasource}`` for Prometheus, ``${tempo}``
for Tempo), never a hard-coded uid; `__inputs` lets Grafana's import dialog pick the Prometheus datasource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 11.0
GRAFANA_MIN_VERSION = "11.0.0"
PROMETHEUS: JSON = {"type": "prometheus", "uid": "${datasource}"}
TEMPO: JSON = {"type": "tempo", "uid": "${tempo}"}
WIDTH = 24  # Grafana's grid is 24 columns wide


def prometheus_target(expr: str, legend: str = "__auto", *, instant: bool = False, exemplar: bool = False) -> JSON:
    """A PromQL query (`refId` is assigned by the panel)."""
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "exemplar": exemplar,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def traceql_target(query: str, limit: int = 20) -> JSON:
    """A Tempo TraceQL search, shown as a table of traces that link to the trace view."""
    return {"datasource": TEMPO, "limit": limit, "query": query, "queryType": "traceql", "tableType": "traces"}


def datasource_variable(name: str, label: str, plugin: str, default: str | None = None) -> JSON:
    current: JSON = {"selected": False, "text": default, "value": default} if default else {}
    return {
        "current": current,
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [],
        "query": plugin,
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool, description: str) -> JSON:
    """A Prometheus `label_values(...)` variable; a multi-value one has an "All" option matching anything."""
    variable: JSON = {
        "current": {},
        "datasource": PROMETHEUS,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": query,  # the classic string form, which every Grafana 11 Prometheus datasource understands
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


@dataclass
class Layout:
    """Places panels left to right in rows of the 24-column grid and numbers them."""

    y: int = 0
    x: int = 0
    row_height: int = 0
    next_id: int = 1
    panels: list[JSON] = field(default_factory=list[JSON])

    def add(self, panel: JSON, width: int, height: int) -> JSON:
        if self.x + width > WIDTH:
            self._new_line()
        panel["id"] = self.next_id
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.next_id += 1
        self.x += width
        self.row_height = max(self.row_height, height)
        self.panels.append(panel)
        return panel

    def row(self, title: str) -> None:
        """Start a new (open) row; the panels added next go under it."""
        self._new_line()
        self.add({"collapsed": False, "panels": [], "title": title, "type": "row"}, WIDTH, 1)
        self._new_line()

    def collapsed_row(self, title: str, panels: list[tuple[JSON, int, int]]) -> None:
        """A row shown closed: its (panel, width, height)s live inside it, laid out below it when opened."""
        self._new_line()
        row = self.add({"collapsed": True, "panels": [], "title": title, "type": "row"}, WIDTH, 1)
        self._new_line()
        inner = Layout(y=self.y, next_id=self.next_id)
        for panel, width, height in panels:
            inner.add(panel, width, height)
        row["panels"] = inner.panels
        self.next_id = inner.next_id

    def _new_line(self) -> None:
        self.y, self.x, self.row_height = self.y + self.row_height, 0, 0


def _with_ref_ids(targets: list[JSON]) -> list[JSON]:
    return [{**target, "refId": chr(ord("A") + index)} for index, target in enumerate(targets)]


def timeseries(
    title: str,
    description: str,
    targets: list[JSON],
    *,
    unit: str,
    stack: bool = False,
    links: list[JSON] | None = None,
) -> JSON:
    return {
        "datasource": PROMETHEUS,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "palette-classic"},
                "custom": {
                    "axisSoftMin": 0,
                    "drawStyle": "line",
                    "fillOpacity": 20 if stack else 8,
                    "lineWidth": 1,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"group": "A", "mode": "normal" if stack else "none"},
                },
                "links": links or [],
                "unit": unit,
            },
            "overrides": [],
        },
        "options": {
            "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _with_ref_ids(targets),
        "title": title,
        "type": "timeseries",
    }


def stat(title: str, description: str, target: JSON, *, unit: str, thresholds: list[tuple[float, str]]) -> JSON:
    """A single number with a sparkline; `thresholds` are (from value, colour) above the base green."""
    steps: list[JSON] = [{"color": "green", "value": None}] + [
        {"color": color, "value": value} for value, color in thresholds
    ]
    return {
        "datasource": PROMETHEUS,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": steps},
                "unit": unit,
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": _with_ref_ids([target]),
        "title": title,
        "type": "stat",
    }


def traces_table(title: str, description: str, query: str) -> JSON:
    return {
        "datasource": TEMPO,
        "description": description,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"cellHeight": "sm", "showHeader": True},
        "targets": _with_ref_ids([traceql_target(query)]),
        "title": title,
        "type": "table",
    }


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: list[JSON],
    layout: Layout,
    links: list[JSON],
) -> JSON:
    panel_types = sorted({p["type"] for p in _all_panels(layout.panels)} - {"row"})
    plugins = {"timeseries": "Time series", "stat": "Stat", "table": "Table"}
    return {
        "__inputs": [
            {
                "description": "Prometheus holding streamscope's metrics",
                "label": "Prometheus",
                "name": "DS_PROMETHEUS",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
                "type": "datasource",
            }
        ],
        "__elements": {},
        "__requires": [
            {"id": "grafana", "name": "Grafana", "type": "grafana", "version": GRAFANA_MIN_VERSION},
            {"id": "prometheus", "name": "Prometheus", "type": "datasource", "version": "1.0.0"},
            {"id": "tempo", "name": "Tempo", "type": "datasource", "version": "1.0.0"},
            *({"id": t, "name": plugins[t], "type": "panel", "version": ""} for t in panel_types),
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": links,
        "panels": layout.panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["streamscope", "genai", "pydantic-ai", "opentelemetry"],
        "templating": {"list": variables},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def _all_panels(panels: list[JSON]) -> list[JSON]:
    return [q for p in panels for q in [p, *p.get("panels", [])]]
