"""Prometheus's names for streamscope's metrics and attributes, derived from `streamscope._names`.

Prometheus translates OpenTelemetry names: dots become ``_``, unit ``s`` adds ``_seconds``, counters end in
``_total``, ``{...}`` units are dropped. The dashboard tests check each name against the ``/metrics`` output of a
real instrumented process scraped by a real Prometheus.
"""

from __future__ import annotations

from typing import Literal

from streamscope import _names as n


def prometheus_name(name: str, unit: str, kind: Literal["counter", "gauge", "histogram"]) -> str:
    """The name Prometheus gives an OpenTelemetry metric (histograms then add ``_bucket``/``_sum``/``_count``)."""
    base = name.replace(".", "_")
    if unit == "s":
        base += "_seconds"
    return base + "_total" if kind == "counter" else base


FINISHED = prometheus_name(n.METRIC_STREAMS_FINISHED, "{stream}", "counter")
ACTIVE = prometheus_name(n.METRIC_STREAMS_ACTIVE, "{stream}", "gauge")
EVENTS = prometheus_name(n.METRIC_STREAM_EVENTS, "{event}", "counter")
VIOLATIONS = prometheus_name(n.METRIC_POLICY_VIOLATIONS, "{violation}", "counter")
DURATION = prometheus_name(n.METRIC_OPERATION_DURATION, "s", "histogram")
TTFC = prometheus_name(n.METRIC_TIME_TO_FIRST_CHUNK, "s", "histogram")
TPOC = prometheus_name(n.METRIC_TIME_PER_OUTPUT_CHUNK, "s", "histogram")
GAP_LONGEST = prometheus_name(n.METRIC_CHUNK_GAP_LONGEST, "s", "histogram")
GAP_MEAN = prometheus_name(n.METRIC_CHUNK_GAP_MEAN, "s", "histogram")
TOKEN_USAGE = prometheus_name(n.METRIC_TOKEN_USAGE, "{token}", "histogram")
COST = prometheus_name(n.METRIC_COST, n.COST_UNIT, "counter")
STREAM_COST = prometheus_name(n.METRIC_STREAM_COST, n.COST_UNIT, "histogram")
STALLED = prometheus_name(n.METRIC_STREAMS_STALLED, "{stream}", "gauge")
OLDEST_AGE = prometheus_name(n.METRIC_STREAMS_OLDEST_AGE, "s", "gauge")
USAGE_COUNTERS: tuple[tuple[str, str], ...] = tuple(
    (legend, prometheus_name(metric, "{token}", "counter"))
    for legend, metric in (
        ("input", n.METRIC_USAGE_INPUT_TOKENS),
        ("output", n.METRIC_USAGE_OUTPUT_TOKENS),
        ("cache read", n.METRIC_USAGE_CACHE_READ_TOKENS),
        ("cache write", n.METRIC_USAGE_CACHE_CREATION_TOKENS),
        ("reasoning", n.METRIC_USAGE_REASONING_TOKENS),
    )
)


def label(attribute: str) -> str:
    return attribute.replace(".", "_")


JOB = "job"
PROVIDER = label(n.GEN_AI_PROVIDER_NAME)
MODEL = label(n.GEN_AI_REQUEST_MODEL)
OUTCOME = label(n.STREAM_OUTCOME)
ERROR_TYPE = label(n.ERROR_TYPE)
TOKEN_TYPE = label(n.GEN_AI_TOKEN_TYPE)
RESPONSE_MODEL = label(n.GEN_AI_RESPONSE_MODEL)
EVENT_KIND = label(n.EVENT_KIND)
SERVER = label(n.SERVER_ADDRESS)
POLICY = label(n.POLICY_NAME)
INTERRUPTED = f"{n.OUTCOME_INTERRUPTED}|{n.OUTCOME_INCOMPLETE}"
