"""Real Pydantic AI paths (`FunctionModel`, `TestModel`) through streamscope, in both instrumentation modes.

Every path a stream can be consumed by — `Model.request_stream`, `Agent.run_stream`, `Agent.run_stream_events`
and `Agent.iter` with `ModelRequestNode.stream` — must give exactly one streamscope span per model request,
with span events matching what the consumer saw, and must leave what the consumer sees untouched. With Pydantic
AI's own instrumentation on as well, the streamscope span nests under Pydantic AI's request span and the token
and time-to-first-chunk histograms are recorded once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic_ai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from pydantic_ai import Agent, AgentRunResultEvent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import (
    FinalResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.test import TestModel as PydanticTestModel  # aliased: pytest would try to collect `Test*`

import streamscope
from tests.conftest import Instrument, Otel, sum_value

pytestmark = pytest.mark.anyio

PYDANTIC_AI_VERSION = tuple(int(part) for part in pydantic_ai.__version__.split(".")[:2])
# Pydantic AI 2.0.0 records no `gen_ai.client.operation.time_to_first_chunk` at all (its InstrumentationSettings
# has no such histogram); 2.68 records it on its model-request span. streamscope leaves that histogram to Pydantic
# AI under its span in either case, so under Pydantic AI 2.0.0 nobody records it. Only 2.0.0 and 2.68 are tested;
# anything newer than 2.0 is assumed to behave like 2.68.
PYDANTIC_AI_RECORDS_TTFC = PYDANTIC_AI_VERSION > (2, 0)

PROMPT = "What is the answer?"
STREAM_EVENT_PREFIX = "streamscope.stream."
EVENT_KINDS = ("part_start", "part_delta", "part_end", "final_result")
MODEL_STREAM_EVENTS = (PartStartEvent, PartDeltaEvent, PartEndEvent, FinalResultEvent)


# --- models and agents ----------------------------------------------------------------------------------------------
async def tool_then_text(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """First request: one streamed tool call; once the tool has answered: streamed text."""
    last = messages[-1]
    if isinstance(last, ModelRequest) and any(isinstance(part, ToolReturnPart) for part in last.parts):
        yield "The answer "
        yield "is "
        yield "42"
    else:
        yield {0: DeltaToolCall(name="get_answer", json_args='{"question": ', tool_call_id="call-1")}
        yield {0: DeltaToolCall(json_args='"life"}')}


async def failing_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    """Fails before its first chunk (so while `FunctionModel.request_stream` opens the stream)."""
    if not messages:
        yield "never"
    raise ModelAPIError("bad", "boom")


async def ok_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "ok "
    yield "done"


def get_answer(question: str) -> str:
    """Answer a question."""
    return f"answer to {question}"


@dataclass(frozen=True)
class Scripted:
    """A model factory and what streamscope must report for it."""

    make: Callable[[], Model]
    provider: str
    request_model: str


SCRIPTED = {
    "function": Scripted(
        lambda: FunctionModel(stream_function=tool_then_text, model_name="scripted"), "function", "scripted"
    ),
    "test": Scripted(PydanticTestModel, "test", "test"),
}

# What `Agent.run_stream` streams per request (the consumer of run_stream sees none of these events itself; the same
# sequences are what the run_stream_events and iter paths see, which those tests check against the consumer).
RUN_STREAM_KINDS = {
    "function": [
        ["part_start", "part_delta", "part_end"],
        ["part_start", "final_result", "part_delta", "part_delta", "part_end"],
    ],
    "test": [  # TestModel calls every tool, then answers '{"get_answer":"answer to a"}' in word-ish chunks
        ["part_start", "part_end"],
        ["part_start", "final_result", "part_delta", "part_delta", "part_delta", "part_end"],
    ],
}


def make_agent(model: Model) -> Agent[None, str]:
    return Agent(model, tools=[get_answer])


AgentFactory = Callable[[Model], Agent[None, str]]


# --- the consumer paths ---------------------------------------------------------------------------------------------
@dataclass
class Observed:
    """What a consumer got from one run."""

    output: object
    events: list[Any]  # every event the consumer iterated over, in order (none for run_stream)
    messages: list[ModelMessage]
    runs: list[list[Any]]  # the model-stream events the consumer saw, one list per model request

    @property
    def responses(self) -> list[ModelResponse]:
        return [message for message in self.messages if isinstance(message, ModelResponse)]


async def via_request_stream(model: Model, make: AgentFactory = make_agent) -> Observed:  # no agent: `make` unused
    messages: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart(PROMPT)])]
    async with model.request_stream(messages, None, ModelRequestParameters()) as stream:
        events = [event async for event in stream]
        response = stream.get()
    return Observed(output=response.parts, events=events, messages=[*messages, response], runs=[events])


async def via_run_stream(model: Model, make: AgentFactory = make_agent) -> Observed:
    async with make(model).run_stream(PROMPT) as result:
        output = await result.get_output()
    return Observed(output=output, events=[], messages=result.all_messages(), runs=[])


async def via_run_stream_events(model: Model, make: AgentFactory = make_agent) -> Observed:
    async with make(model).run_stream_events(PROMPT) as stream:
        events: list[Any] = [event async for event in stream]
    final = events[-1]
    assert isinstance(final, AgentRunResultEvent)
    messages = final.result.all_messages()
    return Observed(output=final.result.output, events=events, messages=messages, runs=model_event_runs(events))


async def via_iter(model: Model, make: AgentFactory = make_agent) -> Observed:
    agent = make(model)
    runs: list[list[Any]] = []
    async with agent.iter(PROMPT) as run:
        async for node in run:
            if Agent.is_model_request_node(node):
                async with node.stream(run.ctx) as agent_stream:
                    runs.append([event async for event in agent_stream])
    assert run.result is not None
    events = [event for events in runs for event in events]
    return Observed(output=run.result.output, events=events, messages=run.result.all_messages(), runs=runs)


PATHS: dict[str, Callable[[Model, AgentFactory], Awaitable[Observed]]] = {
    "request_stream": via_request_stream,
    "run_stream": via_run_stream,
    "run_stream_events": via_run_stream_events,
    "iter": via_iter,
}
AGENT_PATHS = ("run_stream", "run_stream_events", "iter")


# --- helpers --------------------------------------------------------------------------------------------------------
def stream_spans(otel: Otel) -> list[ReadableSpan]:
    return sorted(otel.stream_spans(), key=lambda span: span.start_time or 0)


def pydantic_request_spans(otel: Otel) -> list[ReadableSpan]:
    spans = [
        span
        for span in otel.spans()
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "pydantic-ai"
        and (span.attributes or {}).get("gen_ai.operation.name") == "chat"
    ]
    return sorted(spans, key=lambda span: span.start_time or 0)


def context(span: ReadableSpan) -> SpanContext:
    assert span.context is not None
    return span.context


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def span_event_kinds(span: ReadableSpan) -> list[str]:
    return [str(event.name).removeprefix(STREAM_EVENT_PREFIX) for event in span.events if event.name != "exception"]


def model_event_runs(events: Sequence[Any]) -> list[list[Any]]:
    """Split a consumer's events into the runs of model-stream events (one run per model request)."""
    runs: list[list[Any]] = []
    previous_was_model_event = False
    for event in events:
        is_model_event = isinstance(event, MODEL_STREAM_EVENTS)
        if is_model_event:
            if previous_was_model_event:
                runs[-1].append(event)
            else:
                runs.append([event])
        previous_was_model_event = is_model_event
    return runs


def fingerprint(event: Any) -> object:
    """Model-stream events compare whole; run events (tool results carry timestamps) by type and tool."""
    if isinstance(event, MODEL_STREAM_EVENTS):
        return event
    part = getattr(event, "part", None)
    return (type(event).__name__, getattr(event, "event_kind", None), getattr(part, "tool_name", None))


def shape(messages: Sequence[ModelMessage]) -> list[tuple[str, list[tuple[str, object, object]]]]:
    """Messages without their timestamps: kind, and each part's kind and content (or arguments)."""
    result: list[tuple[str, list[tuple[str, object, object]]]] = []
    for message in messages:
        parts: list[tuple[str, object, object]] = [
            (part.part_kind, getattr(part, "content", None), getattr(part, "args", None)) for part in message.parts
        ]
        result.append((message.kind, parts))
    return result


def assert_same_as_uninstrumented(observed: Observed, baseline: Observed) -> None:
    assert observed.output == baseline.output
    assert [fingerprint(event) for event in observed.events] == [fingerprint(event) for event in baseline.events]
    assert [type(event) for event in observed.events] == [type(event) for event in baseline.events]
    assert shape(observed.messages) == shape(baseline.messages)
    assert [r.usage for r in observed.responses] == [r.usage for r in baseline.responses]


def assert_span_events_match(span: ReadableSpan, events: Sequence[Any]) -> None:
    """The span's stream events are exactly the consumer's events: same kinds, order, parts and counts."""
    recorded = [event for event in span.events if event.name.startswith(STREAM_EVENT_PREFIX)]
    assert [event.name for event in recorded] == [STREAM_EVENT_PREFIX + event.event_kind for event in events]
    for span_event, event in zip(recorded, events, strict=True):
        attributes = dict(span_event.attributes or {})
        assert attributes["streamscope.event.kind"] == event.event_kind
        assert attributes.get("streamscope.part.index") == getattr(event, "index", None)
        part = getattr(event, "part", None)
        assert attributes.get("streamscope.part.kind") == (part.part_kind if part is not None else None)
        delta = getattr(event, "delta", None)
        assert attributes.get("streamscope.delta.kind") == (delta.part_delta_kind if delta is not None else None)
        assert "streamscope.content" not in attributes  # capture is off by default
    counts = Counter(event.event_kind for event in events)
    span_attributes = attrs(span)
    assert span_attributes["streamscope.stream.events.total"] == len(events)
    for kind in EVENT_KINDS:
        assert span_attributes.get(f"streamscope.stream.events.emitted.{kind}") == counts.get(kind)
        assert f"streamscope.stream.events.dropped.{kind}" not in span_attributes


def assert_complete(span: ReadableSpan, scripted: Scripted, response: ModelResponse) -> None:
    assert span.name == f"chat {scripted.request_model}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = attrs(span)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == scripted.provider
    assert attributes["gen_ai.request.model"] == scripted.request_model
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.model"] == response.model_name
    assert attributes["gen_ai.usage.input_tokens"] == response.usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert attributes["streamscope.stream.outcome"] == "complete"
    assert attributes["streamscope.stream.end_reason"] == "exhausted"
    assert attributes["streamscope.stream.span_event_mode"] == "all"
    assert 0 < attributes["gen_ai.response.time_to_first_chunk"] < 10
    assert "error.type" not in attributes
    assert "server.address" not in attributes  # in-process models have no base URL
    assert not [event for event in span.events if event.name == "exception"]


def histogram_count(points: list[tuple[dict[str, Any], Any]], **match: Any) -> int:
    wanted = {key.replace("__", "."): value for key, value in match.items()}
    return sum(point.count for attributes, point in points if all(attributes.get(k) == v for k, v in wanted.items()))


def scoped_metrics(otel: Otel) -> dict[tuple[str, str], list[tuple[dict[str, Any], Any]]]:
    """(instrumentation scope, metric name) → [(attributes, point)]."""
    result: dict[tuple[str, str], list[tuple[dict[str, Any], Any]]] = {}
    data = otel.metric_reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = result.setdefault((scope_metrics.scope.name, metric.name), [])
                points.extend((dict(point.attributes or {}), point) for point in metric.data.data_points)
    return result


def pydantic_ai_settings(otel: Otel) -> InstrumentationSettings:
    return InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)


# --- every path, both modes, both in-process models ---------------------------------------------------------------
@pytest.mark.parametrize("model_kind", ["function", "test"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_one_span_per_model_request(otel: Otel, instrument: Instrument, path: str, model_kind: str) -> None:
    scripted = SCRIPTED[model_kind]
    consume = PATHS[path]
    baseline = await consume(scripted.make(), make_agent)  # before any instrumentation
    assert otel.spans() == []

    observed = await consume(instrument(scripted.make()), make_agent)

    assert_same_as_uninstrumented(observed, baseline)
    spans = stream_spans(otel)
    responses = observed.responses
    assert len(spans) == len(responses) == (1 if path == "request_stream" else 2)  # the agent calls the tool once
    assert len({context(span).trace_id for span in spans}) == len(spans)  # no agent span: each request its own root
    for span, response in zip(spans, responses, strict=True):
        assert span.parent is None
        assert_complete(span, scripted, response)

    if path == "run_stream":
        assert [span_event_kinds(span) for span in spans] == RUN_STREAM_KINDS[model_kind]
    else:
        assert len(observed.runs) == len(spans)
        for span, run in zip(spans, observed.runs, strict=True):
            assert_span_events_match(span, run)
    if path != "request_stream":
        assert observed.output == baseline.output
        assert isinstance(observed.output, str) and observed.output

    metrics = otel.metrics()
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": scripted.provider,
        "gen_ai.request.model": scripted.request_model,
    }
    assert [attributes for attributes, _ in metrics["streamscope.streams.finished"]] == [
        {**base, "streamscope.stream.outcome": "complete"}
    ]
    assert sum_value(metrics["streamscope.streams.finished"]) == len(spans)
    assert sum_value(metrics["streamscope.streams.active"]) == 0
    seen = Counter(kind for span in spans for kind in span_event_kinds(span))
    for kind in EVENT_KINDS:
        assert sum_value(metrics["streamscope.stream.events"], streamscope__event__kind=kind) == seen.get(kind, 0)
    input_tokens = sum(response.usage.input_tokens for response in responses)
    output_tokens = sum(response.usage.output_tokens for response in responses)
    assert sum_value(metrics["streamscope.usage.input_tokens"]) == input_tokens
    assert sum_value(metrics["streamscope.usage.output_tokens"]) == output_tokens
    token_usage = metrics["gen_ai.client.token.usage"]
    # A zero count is not recorded (TestModel's tool-call response reports 0 output tokens).
    assert histogram_count(token_usage, gen_ai__token__type="input") == len(spans)
    assert sum_value(token_usage, gen_ai__token__type="input") == input_tokens
    with_output = [response for response in responses if response.usage.output_tokens]
    assert histogram_count(token_usage, gen_ai__token__type="output") == len(with_output)
    assert sum_value(token_usage, gen_ai__token__type="output") == output_tokens
    assert {frozenset(attributes) for attributes, _ in token_usage} == {
        frozenset({*base, "gen_ai.response.model", "gen_ai.token.type"})
    }
    assert histogram_count(metrics["gen_ai.client.operation.duration"]) == len(spans)
    assert histogram_count(metrics["gen_ai.client.operation.time_to_first_chunk"]) == len(spans)
    assert all("error.type" not in attributes for attributes, _ in metrics["gen_ai.client.operation.duration"])


# --- together with Pydantic AI's own instrumentation ----------------------------------------------------------------
def assert_nested_under_pydantic_ai(otel: Otel, requests: int) -> None:
    """Each streamscope span is the child of Pydantic AI's model-request span for the same request."""
    spans = stream_spans(otel)
    parents = pydantic_request_spans(otel)
    assert len(spans) == len(parents) == requests
    for span, parent in zip(spans, parents, strict=True):
        assert span.parent is not None
        assert span.parent.span_id == context(parent).span_id
        assert context(span).trace_id == context(parent).trace_id
        assert parent.name == span.name  # both "chat scripted"
        assert span.start_time is not None and parent.start_time is not None and span.end_time is not None
        assert parent.start_time <= span.start_time
        assert parent.end_time is not None and span.end_time <= parent.end_time


def assert_recorded_once(otel: Otel, requests: int, input_tokens: int, output_tokens: int) -> None:
    """Token usage and TTFC histograms come from Pydantic AI only; streamscope's own metrics are all there."""
    scoped = scoped_metrics(otel)
    assert ("streamscope", "gen_ai.client.token.usage") not in scoped
    pydantic_tokens = scoped[("pydantic-ai", "gen_ai.client.token.usage")]
    assert histogram_count(pydantic_tokens, gen_ai__token__type="input") == requests
    assert sum_value(pydantic_tokens, gen_ai__token__type="input") == input_tokens
    assert histogram_count(pydantic_tokens, gen_ai__token__type="output") == requests
    assert sum_value(pydantic_tokens, gen_ai__token__type="output") == output_tokens
    all_ttfc = [points for (_, name), points in scoped.items() if name == "gen_ai.client.operation.time_to_first_chunk"]
    # Exactly one time-to-first-chunk point per request: Pydantic AI's where it records one, else streamscope's.
    recorder = "pydantic-ai" if PYDANTIC_AI_RECORDS_TTFC else "streamscope"
    assert histogram_count(scoped[(recorder, "gen_ai.client.operation.time_to_first_chunk")]) == requests
    assert sum(histogram_count(points) for points in all_ttfc) == requests

    assert sum_value(scoped[("streamscope", "streamscope.usage.input_tokens")]) == input_tokens
    assert sum_value(scoped[("streamscope", "streamscope.usage.output_tokens")]) == output_tokens
    finished = scoped[("streamscope", "streamscope.streams.finished")]
    assert sum_value(finished, streamscope__stream__outcome="complete") == requests
    assert sum_value(scoped[("streamscope", "streamscope.streams.active")]) == 0
    assert histogram_count(scoped[("streamscope", "gen_ai.client.operation.duration")]) == requests
    assert histogram_count(scoped[("streamscope", "streamscope.stream.chunk_gap.longest")]) == requests
    assert histogram_count(scoped[("streamscope", "streamscope.stream.chunk_gap.mean")]) == requests
    # the conventions' per-chunk metric only with chunk_timing="per_chunk": never a per-stream summary under its name
    assert ("streamscope", "gen_ai.client.operation.time_per_output_chunk") not in scoped
    assert sum_value(scoped[("streamscope", "streamscope.stream.events")]) > 0


def usage_totals(observed: Observed) -> tuple[int, int]:
    return (
        sum(response.usage.input_tokens for response in observed.responses),
        sum(response.usage.output_tokens for response in observed.responses),
    )


@pytest.mark.parametrize("path", AGENT_PATHS)
async def test_agent_instrumentation_parents_streamscope_span(otel: Otel, instrument: Instrument, path: str) -> None:
    scripted = SCRIPTED["function"]
    consume = PATHS[path]
    baseline = await consume(scripted.make(), make_agent)

    def instrumented_agent(model: Model) -> Agent[None, str]:
        agent = make_agent(model)
        # `Agent(instrument=...)` is not a constructor argument in 2.0.0 or 2.68; the `instrument` property is.
        agent.instrument = pydantic_ai_settings(otel)
        return agent

    observed = await consume(instrument(scripted.make()), instrumented_agent)

    assert_same_as_uninstrumented(observed, baseline)
    assert_nested_under_pydantic_ai(otel, requests=2)
    (run_span,) = [span for span in otel.spans() if span.name.startswith("invoke_agent")]
    for parent in pydantic_request_spans(otel):
        assert parent.parent is not None and parent.parent.span_id == context(run_span).span_id
    for span, response in zip(stream_spans(otel), observed.responses, strict=True):
        assert_complete(span, scripted, response)
    if path != "run_stream":
        for span, run in zip(stream_spans(otel), observed.runs, strict=True):
            assert_span_events_match(span, run)
    assert_recorded_once(otel, 2, *usage_totals(observed))


async def test_instrumented_model_wrapping_streamscope(otel: Otel, instrument: Instrument) -> None:
    """`InstrumentedModel(streamscope model)` (or `InstrumentedModel(model)` under process-wide instrumentation)."""
    scripted = SCRIPTED["function"]
    baseline = await via_request_stream(scripted.make())

    model = InstrumentedModel(instrument(scripted.make()), pydantic_ai_settings(otel))
    observed = await via_request_stream(model)

    assert_same_as_uninstrumented(observed, baseline)
    assert_nested_under_pydantic_ai(otel, requests=1)
    (span,) = stream_spans(otel)
    assert_complete(span, scripted, observed.responses[0])
    assert_span_events_match(span, observed.events)
    assert_recorded_once(otel, 1, *usage_totals(observed))


async def test_instrumented_model_wrapping_streamscope_in_agent(otel: Otel, instrument: Instrument) -> None:
    """An agent given an `InstrumentedModel` instruments the run with its settings: same nesting, counted once."""
    scripted = SCRIPTED["function"]
    baseline = await via_run_stream(scripted.make())

    observed = await via_run_stream(InstrumentedModel(instrument(scripted.make()), pydantic_ai_settings(otel)))

    assert_same_as_uninstrumented(observed, baseline)
    assert_nested_under_pydantic_ai(otel, requests=2)
    assert [span_event_kinds(span) for span in stream_spans(otel)] == RUN_STREAM_KINDS["function"]
    assert_recorded_once(otel, 2, *usage_totals(observed))


async def test_streamscope_wrapping_instrumented_model_leaves_pydantic_spans_where_they_were(otel: Otel) -> None:
    """`streamscope.instrument(InstrumentedModel(model))`: streamscope never makes its span current, so Pydantic AI's
    span has the parent it has without streamscope, and the two describe the request side by side."""
    scripted = SCRIPTED["function"]
    baseline = await via_run_stream(scripted.make())

    model = streamscope.instrument(InstrumentedModel(scripted.make(), pydantic_ai_settings(otel)), **otel.providers)
    observed = await via_run_stream(model)

    assert_same_as_uninstrumented(observed, baseline)
    spans = stream_spans(otel)
    children = pydantic_request_spans(otel)
    assert len(spans) == len(children) == 2
    for span, child, response in zip(spans, children, observed.responses, strict=True):
        assert span.parent is None
        assert child.parent is None
        assert context(span).trace_id != context(child).trace_id
        assert_complete(span, scripted, response)
    assert [span_event_kinds(span) for span in spans] == RUN_STREAM_KINDS["function"]


async def test_streamscope_wrapping_instrumented_model_records_token_usage_once(otel: Otel) -> None:
    scripted = SCRIPTED["function"]
    model = streamscope.instrument(InstrumentedModel(scripted.make(), pydantic_ai_settings(otel)), **otel.providers)
    observed = await via_run_stream(model)
    assert_recorded_once(otel, 2, *usage_totals(observed))


async def test_time_to_first_chunk_recorded_once_per_request_under_pydantic_ai(otel: Otel) -> None:
    model = streamscope.instrument(SCRIPTED["function"].make(), **otel.providers)
    agent = make_agent(model)
    agent.instrument = pydantic_ai_settings(otel)
    async with agent.run_stream(PROMPT) as result:
        await result.get_output()
    ttfc = [points for (_, name), points in scoped_metrics(otel).items() if name.endswith("time_to_first_chunk")]
    assert sum(histogram_count(points) for points in ttfc) == 2


# --- FallbackModel --------------------------------------------------------------------------------------------------
def fallback_model() -> FallbackModel:
    return FallbackModel(
        FunctionModel(stream_function=failing_stream, model_name="bad"),
        FunctionModel(stream_function=ok_stream, model_name="good"),
    )


async def test_fallback_model_process_wide_one_span_per_attempt(instrumented: Otel) -> None:
    otel = instrumented
    async with make_agent(fallback_model()).run_stream(PROMPT) as result:
        output = await result.get_output()
    assert output == "ok done"

    failed, succeeded = stream_spans(otel)
    assert failed.name == "chat bad"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ModelAPIError: boom"
    failed_attributes = attrs(failed)
    assert failed_attributes["gen_ai.request.model"] == "bad"
    assert failed_attributes["error.type"] == "pydantic_ai.exceptions.ModelAPIError"
    assert failed_attributes["streamscope.stream.outcome"] == "error"
    assert failed_attributes["streamscope.stream.end_reason"] == "error"
    assert failed_attributes["streamscope.stream.events.total"] == 0
    assert "gen_ai.response.time_to_first_chunk" not in failed_attributes
    (exception,) = failed.events
    assert exception.name == "exception"
    assert dict(exception.attributes or {})["exception.type"] == "pydantic_ai.exceptions.ModelAPIError"
    assert dict(exception.attributes or {})["exception.message"] == "boom"

    assert succeeded.name == "chat good"
    assert succeeded.status.status_code is StatusCode.UNSET
    succeeded_attributes = attrs(succeeded)
    assert succeeded_attributes["streamscope.stream.outcome"] == "complete"
    assert succeeded_attributes["streamscope.stream.end_reason"] == "exhausted"
    assert succeeded_attributes["gen_ai.response.model"] == "good"
    assert span_event_kinds(succeeded) == ["part_start", "final_result", "part_delta", "part_end"]
    assert failed.parent is None and succeeded.parent is None

    metrics = otel.metrics()
    finished = metrics["streamscope.streams.finished"]
    assert sum_value(finished, streamscope__stream__outcome="error", gen_ai__request__model="bad") == 1
    assert sum_value(finished, streamscope__stream__outcome="complete", gen_ai__request__model="good") == 1
    assert sum_value(finished) == 2
    duration = metrics["gen_ai.client.operation.duration"]
    failed_type = "pydantic_ai.exceptions.ModelAPIError"
    assert histogram_count(duration, error__type=failed_type, gen_ai__request__model="bad") == 1
    assert histogram_count(duration, gen_ai__request__model="good") == 1
    assert all("error.type" not in a for a, _ in duration if a["gen_ai.request.model"] == "good")
    assert sum_value(metrics["streamscope.streams.active"]) == 0


async def test_fallback_model_explicit_is_one_span(otel: Otel) -> None:
    model = streamscope.instrument(fallback_model(), **otel.providers)
    async with make_agent(model).run_stream(PROMPT) as result:
        output = await result.get_output()
    assert output == "ok done"

    span = otel.one_stream_span()
    assert span.name == "chat fallback:bad,good"
    assert span.status.status_code is StatusCode.UNSET
    attributes = attrs(span)
    assert attributes["streamscope.stream.outcome"] == "complete"
    assert attributes["streamscope.stream.end_reason"] == "exhausted"
    assert attributes["gen_ai.response.model"] == "good"
    assert "error.type" not in attributes
    assert span_event_kinds(span) == ["part_start", "final_result", "part_delta", "part_end"]
    assert sum_value(otel.metrics()["streamscope.streams.finished"]) == 1


async def test_fallback_model_explicit_puts_no_request_content_on_the_span(otel: Otel) -> None:
    instructions = "Answer from instructions-secret-4e2d only."
    model = streamscope.instrument(fallback_model(), capture_content=False, **otel.providers)
    agent = Agent(model, tools=[get_answer], instructions=instructions)
    async with agent.run_stream(PROMPT) as result:
        assert await result.get_output() == "ok done"

    span = otel.one_stream_span()
    values = [str(value) for value in attrs(span).values()]
    values += [str(value) for event in span.events for value in (event.attributes or {}).values()]
    assert not [value for value in values if "instructions-secret-4e2d" in value]
    assert not [value for value in values if "Answer a question." in value]  # get_answer's tool description
    assert "model_request_parameters" not in attrs(span)
