"""What the dashboard tests know about streamscope's metrics in Prometheus: each sample name, its kind, labels and
unit, derived from the library's own definitions and translated by the real Prometheus exporter.

- The instruments (name, OpenTelemetry kind, unit) are the ones `streamscope._metrics` creates: a recording meter
  provider is handed to `instruments_for`.
- Their attributes are `DECLARED_ATTRIBUTES`, written from `streamscope._names` as `_recorder` and `_violations`
  record them (a stream's model attributes are what `_stream.model_attributes` gives a model with every one).
  `test_dashboard_meaning.py` checks them against real streams.
- One point per instrument, with every declared attribute, goes through the real `PrometheusMetricReader`: its
  exposition gives the Prometheus names (``_total``, ``_seconds``, ``_bucket``/``_sum``/``_count``) and label names
  (dots to underscores, plus ``otel_scope_*``); a scrape adds ``job`` and ``instance``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamscope import _metrics
from streamscope import _names as n
from tests.user_models import WordStream, make_model_class

InstrumentKind = Literal["counter", "up_down_counter", "histogram", "gauge"]
PrometheusKind = Literal["counter", "gauge", "histogram"]
Part = Literal["total", "bucket", "sum", "count", "value"]

SCRAPE_LABELS = frozenset({"job", "instance"})  # added by the scrape to every series


def label(attribute: str) -> str:
    """The Prometheus exporter's label name for an attribute (`sanitize_attribute`: dots and dashes to ``_``)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in attribute)


# --- what the library records ---------------------------------------------------------------------------------------
def stream_attributes() -> frozenset[str]:
    """The attributes every per-stream metric carries: the library's own, for a model with all of them."""
    # `_stream` is imported the way the package imports it (through `_model`): imported first, it meets a cycle.
    import streamscope._model
    from streamscope._stream import model_attributes

    assert streamscope._model
    _, _, metric_attributes = model_attributes(make_model_class(WordStream)())
    return frozenset(metric_attributes)


def declared_attributes() -> dict[str, frozenset[str]]:
    """Metric name → the attributes the library may record on it (from `_recorder` and `_violations`)."""
    stream = stream_attributes()
    timed = stream | {n.GEN_AI_RESPONSE_MODEL, n.ERROR_TYPE}  # the timing histograms of a stream
    per_stream = dict.fromkeys(
        (n.METRIC_STREAMS_ACTIVE, n.METRIC_STREAMS_STALLED, n.METRIC_STREAMS_OLDEST_AGE, n.METRIC_COST), stream
    )
    per_stream |= dict.fromkeys((metric for _, metric, _ in n.USAGE_FIELDS), stream)
    return {
        **per_stream,
        n.METRIC_STREAMS_FINISHED: stream | {n.STREAM_OUTCOME},
        n.METRIC_STREAM_EVENTS: stream | {n.EVENT_KIND},
        n.METRIC_OPERATION_DURATION: timed,
        n.METRIC_TIME_TO_FIRST_CHUNK: timed,
        n.METRIC_TIME_PER_OUTPUT_CHUNK: timed,
        n.METRIC_CHUNK_GAP_MEAN: timed,
        n.METRIC_CHUNK_GAP_LONGEST: timed,
        n.METRIC_STREAM_COST: timed | {n.STREAM_OUTCOME},
        n.METRIC_TOKEN_USAGE: stream | {n.GEN_AI_RESPONSE_MODEL, n.GEN_AI_TOKEN_TYPE},
        n.METRIC_POLICY_VIOLATIONS: frozenset(
            {n.POLICY_NAME, n.GEN_AI_PROVIDER_NAME, n.GEN_AI_REQUEST_MODEL, n.POLICY_LIMIT_NAME}
        ),
    }


# Attributes recorded only in some cases the dashboards' test workload may not produce.
CONDITIONAL_ATTRIBUTES: dict[str, frozenset[str]] = {
    n.METRIC_POLICY_VIOLATIONS: frozenset({n.POLICY_LIMIT_NAME}),  # usage and concurrency limits only
}

# The values an attribute can take, where the library fixes them.
ATTRIBUTE_VALUES: dict[str, frozenset[str]] = {
    n.STREAM_OUTCOME: frozenset(
        {n.OUTCOME_COMPLETE, n.OUTCOME_INCOMPLETE, n.OUTCOME_INTERRUPTED, n.OUTCOME_SUSPENDED, n.OUTCOME_ERROR}
    ),
    n.GEN_AI_TOKEN_TYPE: frozenset({n.TOKEN_TYPE_INPUT, n.TOKEN_TYPE_OUTPUT}),
    n.POLICY_NAME: frozenset(
        {n.POLICY_ALLOW_MODEL_REQUESTS, n.POLICY_CONTENT_FILTER, n.POLICY_USAGE_LIMIT, n.POLICY_CONCURRENCY_LIMIT}
    ),
    n.GEN_AI_OPERATION_NAME: frozenset({n.OPERATION_CHAT}),
}

# What one observation of a histogram is, for ``_count``: one per stream, but per chunk and per token type.
OBSERVATION_UNITS: dict[str, str] = {
    n.METRIC_OPERATION_DURATION: "{stream}",
    n.METRIC_TIME_TO_FIRST_CHUNK: "{stream}",
    n.METRIC_CHUNK_GAP_MEAN: "{stream}",
    n.METRIC_CHUNK_GAP_LONGEST: "{stream}",
    n.METRIC_STREAM_COST: "{stream}",
    n.METRIC_TIME_PER_OUTPUT_CHUNK: "{chunk}",
    n.METRIC_TOKEN_USAGE: "{stream and token type}",
}

# Which tokens a token metric counts: the usage counters by their name, token usage by its gen_ai.token.type.
TOKEN_TYPES: dict[str, str] = {
    n.METRIC_USAGE_INPUT_TOKENS: n.TOKEN_TYPE_INPUT,
    n.METRIC_USAGE_OUTPUT_TOKENS: n.TOKEN_TYPE_OUTPUT,
    n.METRIC_USAGE_CACHE_READ_TOKENS: "cache read",
    n.METRIC_USAGE_CACHE_CREATION_TOKENS: "cache write",
    n.METRIC_USAGE_REASONING_TOKENS: "reasoning",
}


# --- the instruments, through a recording meter ---------------------------------------------------------------------
@dataclass(frozen=True)
class Instrument:
    name: str
    kind: InstrumentKind
    unit: str


class _RecordingMeter:
    """Creates the library's instruments on a real SDK meter, noting each; observable ones observe `points`."""

    def __init__(self, meter: Meter, found: list[tuple[Instrument, Any]], points: Mapping[str, Mapping[str, Any]]):
        self._meter = meter
        self._found = found
        self._points = points

    def _note(self, name: str, kind: InstrumentKind, unit: str, instrument: Any) -> Any:
        self._found.append((Instrument(name, kind, unit), instrument))
        return instrument

    def _callbacks(self, name: str) -> list[Any]:
        attributes = dict(self._points[name])

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(1, attributes)]

        return [observe]

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._note(name, "counter", unit, self._meter.create_counter(name, unit, description))

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._note(name, "up_down_counter", unit, self._meter.create_up_down_counter(name, unit, description))

    def create_histogram(self, name: str, unit: str = "", description: str = "", **advisory: Any) -> Any:
        return self._note(name, "histogram", unit, self._meter.create_histogram(name, unit, description, **advisory))

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._note(name, "gauge", unit, self._meter.create_gauge(name, unit, description))

    def create_observable_counter(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> Any:
        created = self._meter.create_observable_counter(name, self._callbacks(name), unit, description)
        return self._note(name, "counter", unit, created)

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> Any:
        created = self._meter.create_observable_up_down_counter(name, self._callbacks(name), unit, description)
        return self._note(name, "up_down_counter", unit, created)

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[Any] | None = None, unit: str = "", description: str = ""
    ) -> Any:
        created = self._meter.create_observable_gauge(name, self._callbacks(name), unit, description)
        return self._note(name, "gauge", unit, created)


class _RecordingProvider(MeterProvider):
    def __init__(self, provider: SdkMeterProvider, points: Mapping[str, Mapping[str, Any]]) -> None:
        self.provider = provider
        self.points = points
        self.found: list[tuple[Instrument, Any]] = []

    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None
    ) -> Meter:
        meter = self.provider.get_meter(name, version, schema_url, attributes)
        return cast(Meter, _RecordingMeter(meter, self.found, self.points))


# --- the Prometheus view --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """One sample name of a library metric as Prometheus stores it."""

    name: str  # e.g. gen_ai_client_operation_duration_seconds_bucket
    family: str  # e.g. gen_ai_client_operation_duration_seconds
    kind: PrometheusKind
    part: Part  # which sample of the family: value (gauge), total (counter), bucket/sum/count (histogram)
    labels: frozenset[str]  # every label a series of it may carry, the scrape's included
    unit: str  # of the sample's value: the instrument's unit, or the observation's for a histogram's _count
    metric: str  # the OpenTelemetry instrument name

    @property
    def token_type(self) -> str | None:
        return TOKEN_TYPES.get(self.metric)


Schema = dict[str, Series]


def exposition_labels(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Sample name → (its family's TYPE, the label names over its samples) of a Prometheus text exposition."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = found.get(sample.name, (family.type, frozenset()))[1]
            found[sample.name] = (family.type, labels | frozenset(sample.labels))
    return found


def _part(kind: PrometheusKind, sample: str, family: str) -> Part:
    suffix = sample.removeprefix(family)
    parts: dict[tuple[str, str], Part] = {
        ("counter", "_total"): "total",
        ("gauge", ""): "value",
        ("histogram", "_bucket"): "bucket",
        ("histogram", "_sum"): "sum",
        ("histogram", "_count"): "count",
    }
    assert (kind, suffix) in parts, f"unexpected sample {sample} of the {kind} {family}"
    return parts[(kind, suffix)]


@functools.cache
def library_schema() -> Schema:
    """Every sample name the library's metrics have in Prometheus, with its kind, labels and unit."""
    declared = declared_attributes()
    # Every attribute's value is the instrument's name, so that each exported series says where it comes from.
    points = {name: dict.fromkeys(attributes, name) for name, attributes in declared.items()}
    registry = CollectorRegistry()
    provider = SdkMeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    recording = _RecordingProvider(provider, points)
    _metrics.instruments_for(recording, "0.0.0")
    instruments = {instrument.name: instrument for instrument, _ in recording.found}
    assert len(instruments) == len(recording.found), "an instrument name is created twice"
    assert set(instruments) == set(declared), (
        f"instruments without declared attributes: {sorted(set(instruments) - set(declared))}; declared but not "
        f"created: {sorted(set(declared) - set(instruments))}"
    )
    for instrument, created in recording.found:
        if instrument.kind == "histogram":
            created.record(1.0, points[instrument.name])
        elif hasattr(created, "add"):  # a synchronous counter (the observable ones observe `points`)
            created.add(1, points[instrument.name])
    text = generate_latest(registry).decode()
    provider.shutdown()
    schema: Schema = {}
    for family in text_string_to_metric_families(text):
        if family.name == "target_info":  # the resource's attributes
            continue
        kind = cast(PrometheusKind, family.type)
        for sample in family.samples:
            (metric,) = {value for value in sample.labels.values() if value in instruments}
            part = _part(kind, sample.name, family.name)
            unit = OBSERVATION_UNITS[metric] if part == "count" else instruments[metric].unit
            labels = frozenset(sample.labels) | SCRAPE_LABELS
            found = schema.setdefault(sample.name, Series(sample.name, family.name, kind, part, labels, unit, metric))
            assert found == Series(sample.name, family.name, kind, part, labels, unit, metric), (found, sample)
    assert {s.metric for s in schema.values()} == set(instruments), "an instrument is missing from the exposition"
    return schema
