"""The dashboards and alert rules mean what they say, checked without any server.

Every Prometheus query of every panel, variable and alert rule is parsed (`tests.dashboard_promql`) and checked
(`tests.dashboard_checks`) against the library's metrics as Prometheus names them (`tests.dashboard_schema`):
exact metric names, labels that exist on each metric, functions that fit each metric's kind, and a title, unit and
legends that agree with the query. The metric schema itself is checked against real streams exported by the real
Prometheus exporter, in this process.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from dashboards import alerts
from dashboards import names as dashboard_names
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from pydantic_ai import Agent

import streamscope
from streamscope import _names as n
from tests import workload
from tests.dashboard_checks import alert_problems, analyse, label_values_problems, panel_problems
from tests.dashboard_promql import (
    Aggregate,
    Binary,
    Call,
    Grouping,
    Matcher,
    Number,
    PromQLError,
    Selector,
    Token,
    Variable,
    parse,
    parse_label_values,
    tokenize,
)
from tests.dashboard_schema import (
    CONDITIONAL_ATTRIBUTES,
    SCRAPE_LABELS,
    TOKEN_TYPES,
    Schema,
    declared_attributes,
    exposition_labels,
    label,
    library_schema,
)
from tests.servers import ROOT

DASHBOARDS = ROOT / "dashboards"
DASHBOARD_FILES = ("streamscope-overview.json", "streamscope-model.json")


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for panel in dashboard["panels"] for p in [panel, *panel.get("panels", [])]]


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / name).read_text())


def prometheus_panels() -> list[tuple[str, dict[str, Any]]]:
    """(dashboard file, panel) for every panel with a Prometheus query, in the committed JSON."""
    return [
        (name, panel)
        for name in DASHBOARD_FILES
        for panel in all_panels(load(name))
        if panel["type"] != "row" and panel["datasource"]["type"] == "prometheus"
    ]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return library_schema()


# --- the tokenizer and parser ---------------------------------------------------------------------------------------
def test_tokenizer_reads_a_dashboard_query_exactly() -> None:
    tokens = tokenize('sum by (le) (rate(x_bucket{a=~"$v|b", c!=""}[$__rate_interval])) / 2e3')
    assert [(t.kind, t.text) for t in tokens] == [
        ("ident", "sum"), ("ident", "by"), ("op", "("), ("ident", "le"), ("op", ")"), ("op", "("),
        ("ident", "rate"), ("op", "("), ("ident", "x_bucket"), ("op", "{"), ("ident", "a"), ("op", "=~"),
        ("string", '"$v|b"'), ("op", ","), ("ident", "c"), ("op", "!="), ("string", '""'), ("op", "}"),
        ("op", "["), ("variable", "$__rate_interval"), ("op", "]"), ("op", ")"), ("op", ")"), ("op", "/"),
        ("number", "2e3"), ("end", ""),
    ]  # fmt: skip
    assert tokenize("x[1h30m] offset 5m")[2:4] == [Token("duration", "1h30m", 2), Token("op", "]", 7)]


def test_parser_builds_the_tree_of_a_dashboard_query() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate(ttfc_bucket{job=~"$service", '
        'streamscope_stream_outcome=~"interrupted|incomplete"}[$__rate_interval])))'
    )
    selector = Selector(
        "ttfc_bucket",
        (Matcher("job", "=~", "$service"), Matcher("streamscope_stream_outcome", "=~", "interrupted|incomplete")),
        "$__rate_interval",
    )
    assert parse(expr) == Call(
        "histogram_quantile",
        (Number(0.95), Aggregate("sum", Grouping("by", ("le", "gen_ai_request_model")), (Call("rate", (selector,)),))),
    )


def test_parser_follows_promql_precedence_and_modifiers() -> None:
    a, b, c = Selector("a"), Selector("b"), Selector("c")
    assert parse("a - b - c") == Binary("-", Binary("-", a, b), c)
    assert parse("a + b * c") == Binary("+", a, Binary("*", b, c))
    assert parse("a ^ b ^ c") == Binary("^", a, Binary("^", b, c))
    assert parse("a > 0 and on (job) b == 0 or c") == Binary(
        "or",
        Binary("and", Binary(">", a, Number(0)), Binary("==", b, Number(0)), Grouping("on", ("job",))),
        c,
    )
    assert parse("sum(a) by (x)") == Aggregate("sum", Grouping("by", ("x",)), (a,))
    assert parse("a unless a offset 5m") == Binary("unless", a, Selector("a", offset="5m"))
    assert parse("a / ignoring (le) group_left b") == Binary(
        "/", a, b, Grouping("ignoring", ("le",)), ("group_left", ())
    )
    assert parse("histogram_quantile($q, a)") == Call("histogram_quantile", (Variable("q"), a))
    assert parse_label_values('label_values(x{job="$service"}, model)').label == "model"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("sum by (a, (x)", "expected a label name"),
        ("sum by (a (x)", "expected ','"),
        ("rate(x[5m:1m])", "subqueries are not supported"),
        ("frobnicate(x)", "unknown function 'frobnicate'"),
        ('x{a="b"', "expected ','"),
        ('x{a=="b"}', "expected =, !=, =~ or !~"),
        ("sum(x) by (a) by (b)", "two groupings"),
        ("x y", "unexpected token"),
        ("x ~ y", "cannot read"),
    ],
)
def test_parser_rejects_what_it_does_not_read(expr: str, message: str) -> None:
    with pytest.raises(PromQLError, match=re.escape(message)):
        parse(expr)


# --- the metric schema ----------------------------------------------------------------------------------------------
def test_schema_has_each_kind_with_only_its_prometheus_suffixes(schema: Schema) -> None:
    by_family: dict[str, set[str]] = {}
    for series in schema.values():
        by_family.setdefault(series.family, set()).add(series.name.removeprefix(series.family))
        assert series.labels >= SCRAPE_LABELS, series.name
    for family, suffixes in by_family.items():
        kind = {s.kind for s in schema.values() if s.family == family}
        assert (kind, suffixes) in (
            ({"counter"}, {"_total"}),
            ({"gauge"}, {""}),
            ({"histogram"}, {"_bucket", "_sum", "_count"}),
        ), (family, kind, suffixes)
    # the up-down counter and the gauges are bare; counters end in _total; seconds add _seconds
    assert schema["streamscope_streams_active"].kind == "gauge"
    assert "streamscope_streams_active_total" not in schema
    assert schema["streamscope_streams_finished_total"].kind == "counter"
    assert "streamscope_streams_finished" not in schema
    assert schema["streamscope_streams_oldest_age_seconds"].unit == "s"
    assert "le" in schema["gen_ai_client_token_usage_bucket"].labels
    assert "le" not in schema["gen_ai_client_token_usage_sum"].labels
    assert schema["gen_ai_client_token_usage_bucket"].labels - SCRAPE_LABELS - {"le"} == {
        "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
        "gen_ai_token_type", "server_address", "server_port", "otel_scope_name", "otel_scope_version",
        "otel_scope_schema_url",
    }  # fmt: skip
    assert len({s.metric for s in schema.values()}) == len(declared_attributes()) == 19


def test_every_usage_counter_says_which_tokens_it_counts() -> None:
    assert set(TOKEN_TYPES) == {metric for _, metric, _ in n.USAGE_FIELDS}


def test_the_generator_names_are_the_exporters(schema: Schema) -> None:
    """`dashboards.names`, which the generator writes queries from, names each family as the exporter does."""
    kinds = {s.family: s.kind for s in schema.values()}
    for constant, kind in (
        ("FINISHED", "counter"), ("ACTIVE", "gauge"), ("EVENTS", "counter"), ("VIOLATIONS", "counter"),
        ("DURATION", "histogram"), ("TTFC", "histogram"), ("TPOC", "histogram"), ("GAP_LONGEST", "histogram"),
        ("GAP_MEAN", "histogram"), ("TOKEN_USAGE", "histogram"), ("COST", "counter"), ("STREAM_COST", "histogram"),
        ("STALLED", "gauge"), ("OLDEST_AGE", "gauge"),
    ):  # fmt: skip
        name: str = getattr(dashboard_names, constant)
        family = name.removesuffix("_total") if kind == "counter" else name
        assert kinds.get(family) == kind, f"dashboards.names.{constant} = {name}: the exporter has {kinds.get(family)}"
        assert kind != "counter" or name == f"{family}_total", constant
    for legend, counter in dashboard_names.USAGE_COUNTERS:
        assert schema[counter].kind == "counter", legend
    labels = set().union(*(s.labels for s in schema.values()))
    for constant in ("JOB", "PROVIDER", "MODEL", "OUTCOME", "ERROR_TYPE", "TOKEN_TYPE", "RESPONSE_MODEL",
                     "EVENT_KIND", "SERVER", "POLICY"):  # fmt: skip
        assert getattr(dashboard_names, constant) in labels, constant


@pytest.mark.anyio
async def test_declared_attributes_are_what_real_streams_export() -> None:
    """Real streams (every way the test workload ends one) through the real Prometheus exporter: the same sample
    names, kinds and labels as the schema; the conditional labels aside, every declared label appears."""
    registry = CollectorRegistry()
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    model = streamscope.instrument(
        workload.CachingModel(),
        tracer_provider=TracerProvider(),
        meter_provider=meter_provider,
        logger_provider=LoggerProvider(),
        chunk_timing="per_chunk",
    )
    await workload.scenarios(Agent(model), lambda _scenario: None)
    exported = exposition_labels(generate_latest(registry).decode())
    meter_provider.shutdown()
    exported.pop("target_info")
    schema = library_schema()
    expected = set(schema)
    if not workload.HAS_REASONING_TOKENS:
        expected.discard(label(n.METRIC_USAGE_REASONING_TOKENS) + "_total")
    assert set(exported) == expected
    conditional = {metric: {label(a) for a in attributes} for metric, attributes in CONDITIONAL_ATTRIBUTES.items()}
    for name, (kind, labels) in exported.items():
        series = schema[name]
        assert kind == series.kind, name
        assert labels == series.labels - SCRAPE_LABELS - conditional.get(series.metric, set()), name


# --- the dashboards -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dashboard", "panel"), prometheus_panels(), ids=[f"{d}:{p['title']}" for d, p in prometheus_panels()]
)
def test_panel_queries_mean_what_the_panel_says(dashboard: str, panel: dict[str, Any], schema: Schema) -> None:
    assert panel_problems(panel, schema) == [], dashboard


def test_no_query_escapes_the_checks() -> None:
    """Every panel but the rows is a Prometheus one (checked above) or a Tempo one, with targets of its datasource."""
    for name in DASHBOARD_FILES:
        for found in all_panels(load(name)):
            if found["type"] == "row":
                continue
            kind = found["datasource"]["type"]
            assert kind in ("prometheus", "tempo"), (name, found["title"])
            assert found["targets"], (name, found["title"])
            assert all((t.get("datasource") or found["datasource"])["type"] == kind for t in found["targets"])
    assert len(prometheus_panels()) >= 50


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_variables_query_labels_the_metric_has(name: str, schema: Schema) -> None:
    definitions = [v["definition"] for v in load(name)["templating"]["list"] if v["type"] == "query"]
    assert len(definitions) == 3
    for definition in definitions:
        assert label_values_problems(definition, schema) == [], definition


def test_alert_rules_use_the_metrics_and_labels_the_library_exports(schema: Schema) -> None:
    for alert in alerts.ALERTS:
        assert alert_problems(alert.name, alert.expr, (alert.summary, alert.description), schema) == []


# --- each kind of mistake is caught ---------------------------------------------------------------------------------
def panel(dashboard: str, title: str) -> dict[str, Any]:
    (found,) = [p for d, p in prometheus_panels() if d == dashboard and p["title"] == title]
    return copy.deepcopy(found)


def mutated(title: str, *replacements: tuple[str, str], dashboard: str = "streamscope-overview.json") -> dict[str, Any]:
    """The committed panel with each (old, new) replaced in its first target's query."""
    changed = panel(dashboard, title)
    expr = changed["targets"][0]["expr"]
    for old, new in replacements:
        assert old in expr, (old, expr)
        expr = expr.replace(old, new)
    changed["targets"][0]["expr"] = expr
    return changed


FILTER = 'job=~"$service", gen_ai_provider_name=~"$provider", gen_ai_request_model=~"$model"'


def test_a_gauge_queried_as_a_counter_is_caught(schema: Schema) -> None:
    broken = mutated("Streams in flight", ("streamscope_streams_active{", "streamscope_streams_active_total{"))
    expr = broken["targets"][0]["expr"]
    assert panel_problems(broken, schema) == [
        "'Streams in flight' A: streamscope_streams_active_total is not a metric the library exports (the library "
        "exports streamscope_streams_active, a gauge)",
        f"'Streams in flight' A: cannot tell what it measures in {expr}",
    ]


def test_a_title_and_a_query_counting_different_tokens_are_caught(schema: Schema) -> None:
    broken = mutated("Output tokens/s by model", ("streamscope_usage_output_tokens", "streamscope_usage_input_tokens"))
    assert panel_problems(broken, schema) == [
        "'Output tokens/s by model': the title says output tokens, A counts input tokens "
        f"(streamscope_usage_input_tokens_total{{{FILTER}}}[$__rate_interval]): {broken['targets'][0]['expr']}"
    ]
    title = "Output tokens/s by response model"
    by_type = mutated(title, ('gen_ai_token_type="output"', 'gen_ai_token_type="input"'))
    assert panel_problems(by_type, schema) == [
        f"{title!r}: the title says output tokens, A counts input tokens (gen_ai_client_token_usage_sum{{{FILTER}, "
        f'gen_ai_token_type="input"}}[$__rate_interval]): {by_type["targets"][0]["expr"]}'
    ]
    summed = mutated(title, (', gen_ai_token_type="output"', ""))
    expr = summed["targets"][0]["expr"]
    assert panel_problems(summed, schema) == [
        f"{title!r}: A adds input and output tokens up: {expr}",
        f"{title!r}: the title says output tokens, A counts input and output tokens (gen_ai_client_token_usage_sum"
        f"{{{FILTER}}}[$__rate_interval]): {expr}",
    ]


def test_grouping_by_a_label_the_metric_lacks_is_caught(schema: Schema) -> None:
    title = "Stream events/s by kind"
    broken = mutated(title, ("by (streamscope_event_kind)", "by (event_kind)"))
    expr = broken["targets"][0]["expr"]
    assert panel_problems(broken, schema) == [
        f"{title!r} A: sum by (event_kind): event_kind is not a label of streamscope_stream_events_total",
        f"{title!r} A: the legend's {{{{streamscope_event_kind}}}} is not a label of the result in {expr}",
        f"{title!r}: the title says by kind, A is grouped by (event_kind) without streamscope_event_kind: {expr}",
    ]
    matcher = mutated(
        "Streams/s", ("streamscope_streams_finished_total{", 'streamscope_streams_finished_total{kind="x", ')
    )
    assert panel_problems(matcher, schema) == [
        "'Streams/s' A: label kind is not on streamscope_streams_finished_total (its labels: gen_ai_operation_name, "
        "gen_ai_provider_name, gen_ai_request_model, instance, job, otel_scope_name, otel_scope_schema_url, "
        "otel_scope_version, server_address, server_port, streamscope_stream_outcome)"
    ]


def test_a_by_model_panel_grouped_by_something_else_is_caught(schema: Schema) -> None:
    title = "p95 time to first chunk by model"
    broken = mutated(title, ("by (le, gen_ai_request_model)", "by (le, gen_ai_provider_name)"))
    expr = broken["targets"][0]["expr"]
    assert panel_problems(broken, schema) == [
        f"{title!r} A: the legend's {{{{gen_ai_request_model}}}} is not a label of the result in {expr}",
        f"{title!r}: the title says by model, A is grouped by (gen_ai_provider_name) without gen_ai_request_model: "
        + expr,
    ]


def test_a_unit_that_disagrees_with_the_query_is_caught(schema: Schema) -> None:
    broken = panel("streamscope-overview.json", "Output tokens/s by model")
    broken["fieldConfig"]["defaults"]["unit"] = "s"
    assert panel_problems(broken, schema) == [
        "'Output tokens/s by model' A: unit 's' (a time in seconds) does not fit {token}/s in "
        + broken["targets"][0]["expr"]
    ]
    for title, unit, quantity in (
        ("Streams/s", "short", "{stream}/s"),
        ("Error rate", "reqps", "1"),
        ("Cost/s by model", "short", "{USD}/s"),
        ("Oldest stream in flight", "percentunit", "s"),
    ):
        wrong = panel("streamscope-overview.json", title)
        wrong["fieldConfig"]["defaults"]["unit"] = unit
        (problem,) = panel_problems(wrong, schema)
        assert problem.startswith(f"{title!r} A: unit {unit!r} ("), problem
        assert f") does not fit {quantity} in " in problem, problem


def test_a_histogram_quantile_of_anything_but_buckets_is_caught(schema: Schema) -> None:
    title = "Time to first chunk"
    broken = mutated(title, ("seconds_bucket{", "seconds{"))
    assert panel_problems(broken, schema) == [
        f"{title!r} A: gen_ai_client_operation_time_to_first_chunk_seconds is not a metric the library exports (the "
        "library exports gen_ai_client_operation_time_to_first_chunk_seconds_bucket, a histogram)",
        f"{title!r} A: cannot tell what it measures in {broken['targets'][0]['expr']}",
    ]
    sums = mutated(title, ("seconds_bucket{", "seconds_sum{"))
    assert panel_problems(sums, schema) == [
        f"{title!r} A: sum by (le): le is not a label of gen_ai_client_operation_time_to_first_chunk_seconds_sum",
        f"{title!r} A: histogram_quantile over gen_ai_client_operation_time_to_first_chunk_seconds_sum, not a "
        "histogram's _bucket series",
    ]
    no_le = mutated(title, ("sum by (le) (", "sum ("))
    assert panel_problems(no_le, schema) == [
        f"{title!r} A: histogram_quantile over buckets grouped without le: sum (rate("
        f"gen_ai_client_operation_time_to_first_chunk_seconds_bucket{{{FILTER}}}[$__rate_interval]))"
    ]


@pytest.mark.parametrize(
    ("title", "replacements", "problem"),
    [
        (
            "Streams in flight by model",
            [
                ("(streamscope_streams_active{", "(rate(streamscope_streams_active{"),
                ('"$model"})', '"$model"}[$__rate_interval]))'),
            ],
            "'Streams in flight by model' A: rate() of the gauge streamscope_streams_active: rate and increase are "
            "for counters",
        ),
        (
            "Streams/s",
            [("sum (rate(", "sum (("), ("[$__rate_interval]", "")],
            "'Streams/s' A: streamscope_streams_finished_total is a cumulative counter sample shown raw: take its "
            "rate() or increase()",
        ),
        (
            "Error rate",
            [('outcome=~"error"', 'outcome=~"errors"')],
            "'Error rate' A: streamscope_streams_finished_total{streamscope_stream_outcome=~\"errors\"}: 'errors' "
            "matches no streamscope_stream_outcome the library writes (complete, error, incomplete, interrupted, "
            "suspended)",
        ),
        (
            "Error and interruption rate by model",
            [('"error"', '"complete"')],
            "'Error and interruption rate by model': the title says errors, no query selects "
            'streamscope_stream_outcome="error" or error_type!=""',
        ),
        (
            "Time to first chunk",
            [("histogram_quantile(0.5,", "histogram_quantile(0.9,")],
            "'Time to first chunk' A: the legend says p50, the query's quantile is 0.9",
        ),
        (
            "Streams/s by model",
            [("by (job, ", "by (")],
            "'Streams/s by model' A: the legend's {{job}} is not a label of the result",
        ),
    ],
)
def test_other_mistakes_are_caught(
    title: str, replacements: list[tuple[str, str]], problem: str, schema: Schema
) -> None:
    found = panel_problems(mutated(title, *replacements), schema)
    assert [p for p in found if p.startswith(problem)] != [], found


def test_a_ratio_of_differently_grouped_sides_is_caught(schema: Schema) -> None:
    _, problems = analyse(
        "sum by (gen_ai_request_model) (rate(streamscope_streams_finished_total[5m])) / "
        "sum (rate(streamscope_streams_finished_total[5m]))",
        schema,
    )
    assert problems == [
        "/ between sum by (gen_ai_request_model) (rate(streamscope_streams_finished_total[5m])) and sum (rate("
        "streamscope_streams_finished_total[5m])): the sides' labels differ (gen_ai_request_model), so no series "
        "match one to one"
    ]


def test_an_alert_or_variable_label_the_metric_lacks_is_caught(schema: Schema) -> None:
    assert alert_problems(
        "A", "sum by (job) (streamscope_streams_stalled) > 0", ("{{ $labels.gen_ai_request_model }}",), schema
    ) == ["A: $labels.gen_ai_request_model is not a label of the result"]
    assert alert_problems("B", "sum by (job, event_kind) (streamscope_streams_stalled) > 0", (), schema) == [
        "B: sum by (job, event_kind): event_kind is not a label of streamscope_streams_stalled"
    ]
    assert label_values_problems("label_values(streamscope_streams_active, streamscope_event_kind)", schema) == [
        "label_values: streamscope_event_kind is not a label of streamscope_streams_active"
    ]


def test_a_description_naming_other_policies_than_the_query_counts_is_caught(schema: Schema) -> None:
    stat = panel("streamscope-overview.json", "Policy violations")
    stat["description"] = "Model requests denied by check_allow_model_requests in the selected time range."
    assert panel_problems(stat, schema) == [
        "'Policy violations': the description names the policies allow_model_requests; the queries count "
        "allow_model_requests, concurrency_limit, content_filter, usage_limit"
    ]
    title = "Policy violations/s by policy"
    only_filtered = mutated(
        title,
        (
            "streamscope_policy_violations_total{",
            'streamscope_policy_violations_total{streamscope_policy_name="content_filter", ',
        ),
    )
    only_filtered["description"] = "The provider's content_filter stopped the answer."
    assert panel_problems(only_filtered, schema) == []
    only_filtered["description"] = "content_filter and usage_limit"
    assert panel_problems(only_filtered, schema) == [
        f"{title!r}: the description names the policies content_filter, usage_limit; the queries count content_filter"
    ]


def test_a_data_link_to_a_label_the_result_lacks_is_caught(schema: Schema) -> None:
    title = "Streams/s by model"
    broken = mutated(title, ("by (job, gen_ai_provider_name, gen_ai_request_model)", "by (job, gen_ai_request_model)"))
    assert panel_problems(broken, schema) == [
        f"{title!r} A: the legend's {{{{gen_ai_provider_name}}}} is not a label of the result in "
        + broken["targets"][0]["expr"],
        f"{title!r}: the data link's gen_ai_provider_name is not a label of A's result",
    ]
