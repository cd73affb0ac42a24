"""Generate streamscope's Grafana dashboards, provisioning files and alert rules from code.

    python -m dashboards.generate           # rewrite the files in dashboards/
    python -m dashboards.generate --check   # exit 1 if a committed file differs from what this generates

Also the Prometheus alerting rules and their promtool unit tests (`dashboards.alerts`). Metric names come from
`dashboards.names`, Prometheus's translation of `streamscope._names`; the tests check each one against the
``/metrics`` output of a real instrumented process scraped by a real Prometheus, and run every query and rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dashboards import alerts
from dashboards._grafana import (
    JSON,
    WIDTH,
    Layout,
    dashboard,
    datasource_variable,
    prometheus_target,
    query_variable,
    stat,
    timeseries,
    traces_table,
)
from dashboards.names import (
    ACTIVE,
    COST,
    DURATION,
    ERROR_TYPE,
    EVENT_KIND,
    EVENTS,
    FINISHED,
    GAP_LONGEST,
    GAP_MEAN,
    INTERRUPTED,
    JOB,
    MODEL,
    OLDEST_AGE,
    OUTCOME,
    POLICY,
    PROVIDER,
    RESPONSE_MODEL,
    SERVER,
    STALLED,
    STREAM_COST,
    TOKEN_TYPE,
    TOKEN_USAGE,
    TPOC,
    TTFC,
    USAGE_COUNTERS,
    VIOLATIONS,
)
from streamscope import _names as n

HERE = Path(__file__).resolve().parent
OVERVIEW_UID = "streamscope-overview"
MODEL_UID = "streamscope-model"


class Queries:
    """PromQL for one dashboard: every selector carries the dashboard's service/provider/model filter."""

    def __init__(self, operator: str) -> None:
        self.filter = f'{JOB}{operator}"$service", {PROVIDER}{operator}"$provider", {MODEL}{operator}"$model"'

    def select(self, metric: str, extra: str = "") -> str:
        return f"{metric}{{{self.filter}{', ' + extra if extra else ''}}}"

    def rate(self, metric: str, extra: str = "", by: str = "") -> str:
        grouping = f" by ({by})" if by else ""
        return f"sum{grouping} (rate({self.select(metric, extra)}[$__rate_interval]))"

    def ratio(self, outcome_regex: str, by: str = "") -> str:
        """Share of finished streams whose outcome matches."""
        matching = self.rate(FINISHED, f'{OUTCOME}=~"{outcome_regex}"', by)
        return f"{matching} / {self.rate(FINISHED, by=by)}"

    def quantile(self, q: float, histogram: str, extra: str = "", by: str = "") -> str:
        buckets = self.rate(f"{histogram}_bucket", extra, f"le, {by}" if by else "le")
        return f"histogram_quantile({q}, {buckets})"

    def mean(self, histogram: str, extra: str) -> str:
        return f"{self.rate(f'{histogram}_sum', extra)} / {self.rate(f'{histogram}_count', extra)}"

    def violations_in_range(self) -> str:
        return f"sum(increase({self.select(VIOLATIONS)}[$__range]))"


def quantile_targets(q: Queries, histogram: str, exemplar: bool = True) -> list[JSON]:
    return [
        prometheus_target(q.quantile(p, histogram), f"p{round(p * 100)}", exemplar=exemplar) for p in (0.5, 0.95, 0.99)
    ]


def headline_stats(layout: Layout, q: Queries) -> None:
    width = WIDTH // 6
    for panel in (
        stat(
            "Streams/s",
            "Streams finished per second, whatever their outcome.",
            prometheus_target(q.rate(FINISHED)),
            unit="reqps",
            thresholds=[],
        ),
        stat(
            "Error rate",
            "Share of streams that ended in an error (provider failures, refused requests and policy denials).",
            prometheus_target(q.ratio(n.OUTCOME_ERROR)),
            unit="percentunit",
            thresholds=[(0.01, "orange"), (0.05, "red")],
        ),
        stat(
            "Interruption rate",
            "Share of streams cancelled (task cancelled, cancel()) or abandoned by the consumer before the end.",
            prometheus_target(q.ratio(INTERRUPTED)),
            unit="percentunit",
            thresholds=[(0.05, "orange"), (0.2, "red")],
        ),
        stat(
            "Streams in flight",
            "Streams opened and not finished yet, now.",
            prometheus_target(f"sum({q.select(ACTIVE)})"),
            unit="short",
            thresholds=[],
        ),
        stat(
            "p95 time to first chunk",
            "95th percentile of the time from opening the stream to its first chunk.",
            prometheus_target(q.quantile(0.95, TTFC)),
            unit="s",
            thresholds=[(2, "orange"), (5, "red")],
        ),
        stat(
            "Policy violations",
            "Model requests denied and answers stopped by a policy in the selected time range: allow_model_requests, "
            "content_filter, usage_limit and concurrency_limit (by policy in the Stream events and policy row).",
            prometheus_target(q.violations_in_range()),
            unit="short",
            thresholds=[(1, "red")],
        ),
    ):
        layout.add(panel, width, 4)


def latency_panels(layout: Layout, q: Queries) -> None:
    layout.row("Latency")
    layout.add(
        timeseries(
            "Time to first chunk",
            "From opening the stream (before the request is sent) to its first chunk. Exemplars link to traces.",
            quantile_targets(q, TTFC),
            unit="s",
        ),
        12,
        8,
    )
    layout.add(
        timeseries(
            "Stream duration",
            "From opening the stream to its end, however it ended (errors and cancellations included).",
            quantile_targets(q, DURATION),
            unit="s",
        ),
        12,
        8,
    )
    layout.add(
        timeseries(
            "Longest gap between chunks",
            "Per stream, the longest time between two consecutive output chunks: a stall shows here even when the "
            "stream's mean is fine. Exemplars link to the streams.",
            quantile_targets(q, GAP_LONGEST),
            unit="s",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Mean gap between chunks",
            "Per stream, the mean time between consecutive output chunks (first to last chunk over their number).",
            quantile_targets(q, GAP_MEAN),
            unit="s",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Time per output chunk (per-chunk timing)",
            "The GenAI conventions' metric: one observation per chunk after the first, the time since the previous "
            'chunk. Recorded only with chunk_timing="per_chunk" (a histogram record per chunk).',
            quantile_targets(q, TPOC),
            unit="s",
        ),
        8,
        8,
    )


def token_panels(layout: Layout, q: Queries, width: int) -> None:
    layout.row("Tokens")
    layout.add(
        timeseries(
            "Tokens/s by type",
            "Usage growth recorded while streams run (streamscope.usage.* counters), so long streams show up "
            "as they happen, not when they end. Cache reads are part of input; reasoning is part of output.",
            [prometheus_target(q.rate(metric), legend) for legend, metric in USAGE_COUNTERS],
            unit="short",
        ),
        width,
        8,
    )
    layout.add(
        timeseries(
            "Tokens per stream",
            "Median and 95th percentile of a stream's input and output tokens (gen_ai.client.token.usage).",
            [
                prometheus_target(q.quantile(p, TOKEN_USAGE, by=TOKEN_TYPE), f"p{round(p * 100)} {{{{{TOKEN_TYPE}}}}}")
                for p in (0.5, 0.95)
            ],
            unit="short",
        ),
        width,
        8,
    )
    layout.add(
        timeseries(
            "Output tokens/s by response model",
            "The model that answered (gen_ai.response.model), which a fallback or a provider's alias can make differ "
            "from the one requested. From gen_ai.client.token.usage, recorded when a stream ends.",
            [
                prometheus_target(
                    q.rate(TOKEN_USAGE + "_sum", f'{TOKEN_TYPE}="output"', RESPONSE_MODEL), f"{{{{{RESPONSE_MODEL}}}}}"
                )
            ],
            unit="short",
        ),
        width,
        8,
    )


def cost_panels(layout: Layout, q: Queries, by_model: bool) -> None:
    layout.row("Cost")
    if by_model:
        cost_rate = prometheus_target(q.rate(COST, by=MODEL), f"{{{{{MODEL}}}}}")
        title, description = "Cost/s by model", "USD per second, counted as streams run (streamscope.cost)"
    else:
        cost_rate = prometheus_target(q.rate(COST), "cost/s")
        title, description = "Cost/s", "USD per second, counted as streams run (streamscope.cost)"
    layout.add(
        timeseries(
            title,
            description + ": priced like Pydantic AI prices a response (genai-prices); a model without a known "
            "price counts nothing.",
            [cost_rate],
            unit="currencyUSD",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Cost per stream",
            "Median and 95th percentile of what one stream cost when it ended (streamscope.stream.cost). Exemplars "
            "link to the streams.",
            [prometheus_target(q.quantile(p, STREAM_COST), f"p{round(p * 100)}", exemplar=True) for p in (0.5, 0.95)],
            unit="currencyUSD",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Spend/s by outcome",
            "What the streams that ended cost, by how they ended: incomplete, interrupted and error are spent on "
            "answers nobody read in full.",
            [prometheus_target(q.rate(STREAM_COST + "_sum", by=OUTCOME), f"{{{{{OUTCOME}}}}}")],
            unit="currencyUSD",
            stack=True,
        ),
        8,
        8,
    )


def stall_panels(layout: Layout, q: Queries) -> None:
    layout.row("Stalls")
    layout.add(
        timeseries(
            "Stalled streams",
            "Streams in flight whose last chunk (or open, before the first) is older than the stall threshold "
            "(stall_threshold, 30 s by default).",
            [prometheus_target(f"sum by ({MODEL}) ({q.select(STALLED)})", f"{{{{{MODEL}}}}}")],
            unit="short",
            stack=True,
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Oldest stream in flight",
            "Age of the oldest stream opened and not finished yet (0 when none is in flight).",
            [prometheus_target(f"max by ({MODEL}) ({q.select(OLDEST_AGE)})", f"{{{{{MODEL}}}}}")],
            unit="s",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "p95 longest gap between chunks by model",
            "95th percentile, per model, of each stream's longest time between two chunks: where streams stall.",
            [prometheus_target(q.quantile(0.95, GAP_LONGEST, by=MODEL), f"{{{{{MODEL}}}}}")],
            unit="s",
        ),
        8,
        8,
    )


def events_and_policy(layout: Layout, q: Queries) -> None:
    layout.row("Stream events and policy")
    layout.add(
        timeseries(
            "Stream events/s by kind",
            "Pydantic AI stream events seen (part start, delta, end, final result, ...).",
            [prometheus_target(q.rate(EVENTS, by=EVENT_KIND), f"{{{{{EVENT_KIND}}}}}")],
            unit="short",
            stack=True,
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Policy violations/s by model",
            "Model requests denied or answers stopped by a policy (each is also an OTel log record and a span event).",
            [prometheus_target(q.rate(VIOLATIONS, by=f"{PROVIDER}, {MODEL}"), f"{{{{{PROVIDER}}}}} / {{{{{MODEL}}}}}")],
            unit="short",
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Policy violations/s by policy",
            "allow_model_requests (a real model reached while ALLOW_MODEL_REQUESTS is False), content_filter (the "
            "provider filtered the answer), usage_limit (an agent run's UsageLimits broken), concurrency_limit (a "
            "ConcurrencyLimiter's queue was full).",
            [prometheus_target(q.rate(VIOLATIONS, by=POLICY), f"{{{{{POLICY}}}}}")],
            unit="short",
            stack=True,
        ),
        8,
        8,
    )


def variables(operator_multi: bool) -> list[JSON]:
    op = "=~" if operator_multi else "="
    metric = FINISHED
    return [
        datasource_variable("datasource", "Prometheus", "prometheus", "${DS_PROMETHEUS}"),
        datasource_variable("tempo", "Tempo (traces)", "tempo"),
        query_variable(
            "service",
            "Service (job)",
            f"label_values({metric}, {JOB})",
            multi=operator_multi,
            description="The Prometheus job: the scrape job, or the service name when metrics arrive over OTLP.",
        ),
        query_variable(
            "provider",
            "Provider",
            f'label_values({metric}{{{JOB}{op}"$service"}}, {PROVIDER})',
            multi=operator_multi,
            description="gen_ai.provider.name",
        ),
        query_variable(
            "model",
            "Model",
            f'label_values({metric}{{{JOB}{op}"$service", {PROVIDER}{op}"$provider"}}, {MODEL})',
            multi=operator_multi,
            description="gen_ai.request.model",
        ),
    ]


LINKS: list[JSON] = [
    {
        "asDropdown": False,
        "icon": "external link",
        "includeVars": False,
        "keepTime": True,
        "tags": ["streamscope"],
        "targetBlank": False,
        "title": "streamscope",
        "type": "dashboards",
    }
]
DRILL_DOWN_LINK: JSON = {
    "title": "Drill down: ${__field.labels.gen_ai_provider_name} / ${__field.labels.gen_ai_request_model}",
    "url": f"/d/{MODEL_UID}/streamscope-model?${{__url_time_range}}&var-datasource=${{datasource}}"
    "&var-tempo=${tempo}&var-service=${__field.labels.job}&var-provider=${__field.labels.gen_ai_provider_name}"
    "&var-model=${__field.labels.gen_ai_request_model}",
}


def overview() -> JSON:
    q = Queries("=~")
    layout = Layout()
    headline_stats(layout, q)
    layout.row("Traffic")
    by_model = f"{JOB}, {PROVIDER}, {MODEL}"
    for title, description, targets, unit, stack, links in (
        (
            "Streams/s by outcome",
            "complete, incomplete (consumer stopped early), interrupted (cancelled), suspended, error.",
            [prometheus_target(q.rate(FINISHED, by=OUTCOME), f"{{{{{OUTCOME}}}}}")],
            "reqps",
            True,
            None,
        ),
        (
            "Streams/s by model",
            "Click a series to open its drill-down dashboard.",
            [prometheus_target(q.rate(FINISHED, by=by_model), f"{{{{{MODEL}}}}} ({{{{{PROVIDER}}}}}, {{{{{JOB}}}}})")],
            "reqps",
            False,
            [DRILL_DOWN_LINK],
        ),
        (
            "Error and interruption rate by model",
            "Share of each model's streams that failed, or were cancelled or abandoned.",
            [
                prometheus_target(q.ratio(n.OUTCOME_ERROR, by=MODEL), f"errors {{{{{MODEL}}}}}"),
                prometheus_target(q.ratio(INTERRUPTED, by=MODEL), f"interrupted {{{{{MODEL}}}}}"),
            ],
            "percentunit",
            False,
            None,
        ),
        (
            "Errors/s by error type",
            "Failed streams by error.type (exception class or HTTP status class).",
            [prometheus_target(q.rate(DURATION + "_count", f'{ERROR_TYPE}!=""', ERROR_TYPE), f"{{{{{ERROR_TYPE}}}}}")],
            "reqps",
            True,
            None,
        ),
        (
            "Streams in flight by model",
            "Streams opened and not finished yet.",
            [prometheus_target(f"sum by ({MODEL}) ({q.select(ACTIVE)})", f"{{{{{MODEL}}}}}")],
            "short",
            True,
            None,
        ),
        (
            "p95 time to first chunk by model",
            "95th percentile time to first chunk, per model.",
            [prometheus_target(q.quantile(0.95, TTFC, by=MODEL), f"{{{{{MODEL}}}}}")],
            "s",
            False,
            None,
        ),
    ):
        layout.add(timeseries(title, description, targets, unit=unit, stack=stack, links=links), 12, 8)
    latency_panels(layout, q)
    token_panels(layout, q, 8)
    layout.add(
        timeseries(
            "Output tokens/s by model",
            "Output token throughput per model (streamscope.usage.output_tokens).",
            [prometheus_target(q.rate(USAGE_COUNTERS[1][1], by=MODEL), f"{{{{{MODEL}}}}}")],
            unit="short",
        ),
        8,
        8,
    )
    cost_panels(layout, q, by_model=True)
    stall_panels(layout, q)
    events_and_policy(layout, q)
    layout.collapsed_row(
        "Traces (needs a Tempo datasource)",
        [
            (
                traces_table(
                    "Failed, cancelled and abandoned streams",
                    "Stream spans whose outcome is not complete; click a trace ID to open it.",
                    '{ span.streamscope.stream.outcome != "complete" && span.gen_ai.provider.name =~ "$provider" '
                    '&& span.gen_ai.request.model =~ "$model" }',
                ),
                WIDTH,
                10,
            )
        ],
    )
    return dashboard(
        uid=OVERVIEW_UID,
        title="streamscope / Overview",
        description="Pydantic AI streamed responses instrumented by streamscope: traffic, outcomes, latency, "
        "tokens, stream events and policy violations.",
        variables=variables(operator_multi=True),
        layout=layout,
        links=LINKS,
    )


def model_drilldown() -> JSON:
    q = Queries("=")
    layout = Layout()
    headline_stats(layout, q)
    layout.row("Outcomes and errors")
    layout.add(
        timeseries(
            "Streams/s by outcome",
            "How this model's streams ended.",
            [prometheus_target(q.rate(FINISHED, by=OUTCOME), f"{{{{{OUTCOME}}}}}")],
            unit="reqps",
            stack=True,
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Errors/s by error type",
            "Failed streams of this model by error.type.",
            [prometheus_target(q.rate(DURATION + "_count", f'{ERROR_TYPE}!=""', ERROR_TYPE), f"{{{{{ERROR_TYPE}}}}}")],
            unit="reqps",
            stack=True,
        ),
        8,
        8,
    )
    layout.add(
        timeseries(
            "Streams/s by server",
            "Which endpoint (server.address) served the streams.",
            [prometheus_target(q.rate(FINISHED, by=SERVER), f"{{{{{SERVER}}}}}")],
            unit="reqps",
        ),
        8,
        8,
    )
    latency_panels(layout, q)
    layout.add(
        timeseries(
            "Mean stream duration: successful vs failed",
            "Average duration of streams that succeeded and of those that failed.",
            [
                prometheus_target(q.mean(DURATION, f'{ERROR_TYPE}=""'), "successful"),
                prometheus_target(q.mean(DURATION, f'{ERROR_TYPE}!=""'), "failed"),
            ],
            unit="s",
        ),
        12,
        8,
    )
    token_panels(layout, q, 12)
    cost_panels(layout, q, by_model=False)
    stall_panels(layout, q)
    events_and_policy(layout, q)
    layout.collapsed_row(
        "Traces (needs a Tempo datasource)",
        [
            (
                traces_table(
                    "Recent streams of this model",
                    "Stream spans of this provider and model; click a trace ID to open it.",
                    '{ span.gen_ai.provider.name = "$provider" && span.gen_ai.request.model = "$model" '
                    '&& span.streamscope.stream.outcome != "" }',
                ),
                12,
                10,
            ),
            (
                traces_table(
                    "Failed, cancelled and abandoned streams of this model",
                    "Stream spans of this model whose outcome is not complete.",
                    '{ span.gen_ai.provider.name = "$provider" && span.gen_ai.request.model = "$model" '
                    '&& span.streamscope.stream.outcome != "complete" }',
                ),
                12,
                10,
            ),
        ],
    )
    return dashboard(
        uid=MODEL_UID,
        title="streamscope / Model",
        description="One provider and model: outcomes, errors, latency percentiles, tokens, stream events and "
        "policy violations, with links to its traces.",
        variables=variables(operator_multi=False),
        layout=layout,
        links=LINKS,
    )


PROVISIONING_DASHBOARDS = """\
# Grafana provisioning: load streamscope's dashboards from files. Copy this file to
# /etc/grafana/provisioning/dashboards/ and the dashboards' JSON files to the `path` below.
apiVersion: 1
providers:
  - name: streamscope
    folder: streamscope
    type: file
    disableDeletion: false
    allowUiUpdates: true
    updateIntervalSeconds: 60
    options:
      path: /var/lib/grafana/dashboards/streamscope
      foldersFromFilesStructure: false
"""

PROVISIONING_DATASOURCES = """\
# Example Grafana datasources for streamscope's dashboards; adjust the URLs. Copy to
# /etc/grafana/provisioning/datasources/. The dashboards pick their Prometheus and Tempo datasources through
# the `datasource` and `tempo` variables, so existing datasources work as well.
apiVersion: 1
datasources:
  - name: Prometheus
    uid: prometheus
    type: prometheus
    access: proxy
    url: http://prometheus:9090
    isDefault: true
    jsonData:
      # Exemplars on the latency panels link to the trace that produced them (Prometheus must store
      # exemplars: --enable-feature=exemplar-storage, and receive them, e.g. over OTLP).
      exemplarTraceIdDestinations:
        - name: trace_id
          datasourceUid: tempo
  - name: Tempo
    uid: tempo
    type: tempo
    access: proxy
    url: http://tempo:3200
"""


def render() -> dict[str, str]:
    """File name (relative to dashboards/) → content."""

    def dump(data: JSON) -> str:
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    return {
        "streamscope-overview.json": dump(overview()),
        "streamscope-model.json": dump(model_drilldown()),
        "provisioning/dashboards.yaml": PROVISIONING_DASHBOARDS,
        "provisioning/datasources.yaml": PROVISIONING_DATASOURCES,
        alerts.RULES_FILE: alerts.rules_yaml(),
        alerts.TESTS_FILE: alerts.tests_yaml(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate streamscope's Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for name, content in render().items():
        path = HERE / name
        if path.exists() and path.read_text() == content:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    verb = "differ from the generator" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
