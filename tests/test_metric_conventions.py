"""Metrics as the GenAI conventions (v1.41) write them, and exemplars that point at the stream span.

- Attributes: `server.port` beside `server.address`; `gen_ai.response.model` where the stream reported one;
  `error.type` on the timing histograms of a failed stream; nothing with unbounded cardinality (ids, content).
- Descriptions and units exactly as the semantic-conventions package writes them.
- Every histogram point of a stream is recorded in the stream span's context: with the SDK's default
  (trace-based) exemplar filter its exemplar carries the stream span's trace and span id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.trace import SpanContext
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope
from tests.composition import MESSAGES
from tests.conftest import Instrument, Otel
from tests.test_cost import GrowingModel
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

TPOC = "gen_ai.client.operation.time_per_output_chunk"
HISTOGRAMS = (
    "gen_ai.client.token.usage",
    "gen_ai.client.operation.duration",
    "gen_ai.client.operation.time_to_first_chunk",
    TPOC,
    "streamscope.stream.chunk_gap.mean",
    "streamscope.stream.chunk_gap.longest",
)
# Attributes the conventions allow on the GenAI client histograms (plus gen_ai.token.type on token usage).
ALLOWED = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
    "error.type",
    "gen_ai.token.type",
}


def span_context(span: ReadableSpan) -> SpanContext:
    assert span.context is not None
    return span.context


async def drain(model: Any) -> None:
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass


async def failing_midway(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "half "
    yield "an answer"
    raise ConnectionError("reset")


def histogram_points(otel: Otel) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    metrics = otel.metrics()
    return {name: metrics[name] for name in HISTOGRAMS if name in metrics}


async def test_histogram_attributes_follow_the_conventions(otel: Otel, instrument: Instrument) -> None:
    """A user model with a base URL: server.address and server.port, the response model, no error.type."""
    model = instrument(make_model_class(WordStream)())
    await drain(model)
    points = histogram_points(otel)
    assert set(points) == set(HISTOGRAMS) - {TPOC}  # the conventions' per-chunk metric is an option
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "acme",
        "gen_ai.request.model": "words-1",
        "gen_ai.response.model": "words-1",
        "server.address": "llm.acme.example",
        "server.port": 8443,
    }
    for name, series in points.items():
        for attributes, _ in series:
            assert {k: v for k, v in attributes.items() if k != "gen_ai.token.type"} == expected, name
    assert [a["gen_ai.token.type"] for a, _ in points["gen_ai.client.token.usage"]] == ["output"]


async def test_failed_stream_timings_carry_error_type(otel: Otel, instrument: Instrument) -> None:
    model = instrument(FunctionModel(stream_function=failing_midway, model_name="fn"))
    with pytest.raises(ConnectionError):
        await drain(model)
    points = histogram_points(otel)
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"):
        ((attributes, _),) = points[name]
        assert attributes["error.type"] == "ConnectionError", name
    for series in points.values():
        for attributes, _ in series:
            assert set(attributes) <= ALLOWED


async def test_descriptions_and_units_are_the_conventions(otel: Otel) -> None:
    """Each histogram is exported with the description and unit the semantic-conventions package's factory gives."""
    reader = InMemoryMetricReader()
    reference = MeterProvider(metric_readers=[reader]).get_meter("reference")
    for factory in (
        gen_ai_metrics.create_gen_ai_client_token_usage,
        gen_ai_metrics.create_gen_ai_client_operation_duration,
        gen_ai_metrics.create_gen_ai_client_operation_time_to_first_chunk,
        gen_ai_metrics.create_gen_ai_client_operation_time_per_output_chunk,
    ):
        factory(reference).record(1)
    await drain(streamscope.instrument(make_model_class(WordStream)(), **otel.providers, chunk_timing="per_chunk"))
    ours = _described(otel.metric_reader)
    assert _described(reader) == {name: v for name, v in ours.items() if name.startswith("gen_ai.")}


def _described(reader: InMemoryMetricReader) -> dict[str, tuple[str | None, str | None]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: (metric.description, metric.unit)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


@pytest.mark.parametrize("mode", ["explicit", "process-wide"])
async def test_per_chunk_timing_records_each_chunk_after_the_first(otel: Otel, mode: str) -> None:
    """With chunk_timing="per_chunk", the conventions' metric gets one observation per chunk after the first: the
    time from the previous chunk's end to this one's. Two chunks 0.3 s apart record 0.3 s."""

    async def two_chunks_apart(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "one"
        await asyncio.sleep(0.3)
        yield " two"

    model = FunctionModel(stream_function=two_chunks_apart, model_name="slow")
    if mode == "explicit":
        model = streamscope.instrument(model, **otel.providers, chunk_timing="per_chunk")
    else:
        streamscope.instrument(**otel.providers, chunk_timing="per_chunk")
    await drain(model)
    span = otel.one_stream_span()
    ((attributes, point),) = otel.metrics()[TPOC]
    assert point.count == 1
    assert 0.3 <= point.sum < 0.45
    assert attributes["gen_ai.response.model"] == "slow"
    assert dict(span.attributes or {})["streamscope.stream.chunks"] == 2
    assert dict(span.attributes or {})["streamscope.stream.chunk_gap.longest"] == point.sum
    (exemplar,) = point.exemplars
    assert exemplar.span_id == span_context(span).span_id


async def test_per_chunk_timing_counts_only_chunks(otel: Otel) -> None:
    """Synthetic events (final result, part end) are no chunks: a 3-chunk text stream has 2 observations."""
    model = streamscope.instrument(make_model_class(WordStream)(), **otel.providers, chunk_timing="per_chunk")
    await drain(model)
    kinds = [e.name for e in otel.one_stream_span().events]
    assert "streamscope.stream.final_result" in kinds and "streamscope.stream.part_end" in kinds
    ((_, point),) = otel.metrics()[TPOC]
    assert point.count == 2


async def test_exemplars_point_at_the_stream_span(otel: Otel, instrument: Instrument) -> None:
    """Under a sampled caller span, each histogram's exemplar is the stream span's, not the caller's."""
    model = instrument(make_model_class(WordStream)())
    with otel.tracer_provider.get_tracer("app").start_as_current_span("request handler"):
        await drain(model)
    stream_context = span_context(otel.one_stream_span())
    points = histogram_points(otel)
    assert set(points) == set(HISTOGRAMS) - {TPOC}
    for name, series in points.items():
        for _, point in series:
            assert point.exemplars, name
            for exemplar in point.exemplars:
                assert (exemplar.trace_id, exemplar.span_id) == (stream_context.trace_id, stream_context.span_id)


async def test_exemplars_without_a_caller_span_still_point_at_the_stream_span(otel: Otel) -> None:
    model = streamscope.instrument(make_model_class(WordStream)(), **otel.providers)
    await drain(model)
    stream_context = span_context(otel.one_stream_span())
    (_, point) = otel.metrics()["gen_ai.client.operation.duration"][0]
    (exemplar,) = point.exemplars
    assert exemplar.span_id == stream_context.span_id


# Bucket boundaries, written out here rather than imported: a boundary lost or changed in the library must fail.
# The first two are the conventions' ExplicitBucketBoundaries for those metrics (gen-ai-metrics.md).
DURATION_BOUNDARIES = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BOUNDARIES = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
CHUNK_BOUNDARIES = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


async def test_histogram_bucket_boundaries(otel: Otel, instrument: Instrument) -> None:
    """Each histogram's points carry exactly the advised bucket boundaries, in every instrumentation mode."""
    await drain(instrument(make_model_class(WordStream)()))
    metrics = otel.metrics()
    expected = {
        "gen_ai.client.token.usage": TOKEN_BOUNDARIES,
        "gen_ai.client.operation.duration": DURATION_BOUNDARIES,
        "gen_ai.client.operation.time_to_first_chunk": DURATION_BOUNDARIES,
        "streamscope.stream.chunk_gap.mean": CHUNK_BOUNDARIES,
        "streamscope.stream.chunk_gap.longest": CHUNK_BOUNDARIES,
    }
    for name, boundaries in expected.items():
        points = [point for _, point in metrics[name]]
        assert points, name
        for point in points:
            assert tuple(point.explicit_bounds) == boundaries, name


async def test_per_chunk_metric_bucket_boundaries(otel: Otel) -> None:
    """The conventions' per-chunk metric (chunk_timing="per_chunk") likewise."""
    await drain(streamscope.instrument(make_model_class(WordStream)(), **otel.providers, chunk_timing="per_chunk"))
    ((_, per_chunk),) = otel.metrics()[TPOC]
    assert tuple(per_chunk.explicit_bounds) == CHUNK_BOUNDARIES


async def test_counts_are_exported_as_integers(otel: Otel, instrument: Instrument) -> None:
    """Token, event and stream counts are integers (OTLP's as_int), not floats: only the cost, summed as a Decimal,
    is reported as a float."""
    await drain(instrument(make_model_class(WordStream)()))
    metrics = otel.metrics()
    counts = [
        name
        for name in metrics
        if name.startswith("streamscope.usage.")
        or name in ("streamscope.stream.events", "streamscope.streams.finished")
    ]
    assert "streamscope.usage.output_tokens" in counts
    assert "streamscope.stream.events" in counts
    assert "streamscope.streams.finished" in counts
    for name in [*counts, "streamscope.streams.active"]:
        assert {type(point.value) for _, point in metrics[name]} == {int}, name


async def test_streamscopes_own_instruments_have_their_descriptions_and_units(otel: Otel) -> None:
    """What Prometheus and OTLP backends show (HELP, unit suffixes) for streamscope's own instruments."""
    await drain(streamscope.instrument(make_model_class(WordStream)(), **otel.providers))
    ours = {name: v for name, v in _described(otel.metric_reader).items() if name.startswith("streamscope.")}
    assert ours == {
        "streamscope.stream.chunk_gap.longest": (
            "Longest time between two consecutive output chunks of a stream, per stream.",
            "s",
        ),
        "streamscope.stream.chunk_gap.mean": (
            "Mean time between consecutive output chunks of a stream, one value per stream.",
            "s",
        ),
        "streamscope.stream.events": ("Stream events seen, by kind.", "{event}"),
        "streamscope.streams.active": ("Streams opened and not yet finished.", "{stream}"),
        "streamscope.streams.finished": ("Streams finished, by outcome.", "{stream}"),
        "streamscope.streams.oldest_age": ("Age of the oldest stream in flight (0 when none is).", "s"),
        "streamscope.streams.stalled": (
            "Streams in flight whose last chunk (or open, before the first) is older than the stall threshold.",
            "{stream}",
        ),
        "streamscope.usage.output_tokens": ("Growth of the streams' usage.output_tokens, as it happens.", "{token}"),
    }


async def test_the_cost_and_violation_instruments_have_their_descriptions_and_units(instrumented: Otel) -> None:
    def filtered(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("I can")], finish_reason="content_filter")

    await Agent(FunctionModel(filtered, model_name="moderated")).run("hi")
    await drain(GrowingModel("gpt-4o"))  # priced by genai-prices
    described = _described(instrumented.metric_reader)
    assert described["streamscope.policy.violations"] == (
        "Model requests denied, or answers stopped, by a policy (streamscope.policy.name).",
        "{violation}",
    )
    assert described["streamscope.cost"] == (
        "Cost of the streams' usage in USD, recorded as it grows (genai-prices).",
        "{USD}",
    )
    assert described["streamscope.stream.cost"] == (
        "Cost of one stream in USD when it ended, by outcome (genai-prices).",
        "{USD}",
    )
