"""The real `OpenAIChatModel` (openai SDK, real HTTP) streaming from the loopback stub server through streamscope."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import pydantic_ai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.tools import ToolDefinition

import streamscope
from tests.conftest import Instrument, Otel, sum_value
from tests.openai_server import OpenAIStubServer, RecordedRequest, StubToolCall, StubUsage

pytestmark = pytest.mark.anyio

PYDANTIC_AI_VERSION = tuple(int(part) for part in pydantic_ai.__version__.split(".")[:2])
# Pydantic AI 2.68 raises a categorised subclass of its API errors (`ModelServerError`, itself a `ModelHTTPError`,
# for a 500; `ModelConnectionError` for a dropped connection); 2.0.0 raises `ModelHTTPError` / `ModelAPIError`
# themselves. `error.type` is the class actually raised, so the expected name differs. Only 2.0.0 and 2.68 are
# tested; anything newer than 2.0 is assumed to behave like 2.68.
CATEGORISED_ERRORS = PYDANTIC_AI_VERSION > (2, 0)
HTTP_500_ERROR_TYPE = (
    "pydantic_ai.exceptions.ModelServerError" if CATEGORISED_ERRORS else "pydantic_ai.exceptions.ModelHTTPError"
)
# What a reset connection raises depends on the versions: 2.68 categorises it; 2.0.0 wraps it in ModelAPIError
# with the openai 3.x SDK (httpx2), while with the openai 2.x SDK the transport's own ReadError escapes.
DROPPED_ERROR_TYPES = (
    ("pydantic_ai.exceptions.ModelConnectionError",)
    if CATEGORISED_ERRORS
    else ("pydantic_ai.exceptions.ModelAPIError", "httpx.ReadError")
)

PROMPT = "Say hello."
STREAM_EVENT_PREFIX = "streamscope.stream."
EVENT_KINDS = ("part_start", "part_delta", "part_end", "final_result")


@pytest.fixture(scope="module")
def stub_server() -> Iterator[OpenAIStubServer]:
    """One loopback server for the module (stopping one takes half a second)."""
    stub = OpenAIStubServer().start()
    try:
        yield stub
    finally:
        stub.stop()


@dataclass(frozen=True)
class Stub:
    """The shared server, as one test sees it."""

    server: OpenAIStubServer
    earlier_requests: int

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests this test made."""
        return self.server.requests[self.earlier_requests :]


@pytest.fixture
def stub(stub_server: OpenAIStubServer) -> Iterator[Stub]:
    assert stub_server.pending == 0
    yield Stub(stub_server, len(stub_server.requests))
    assert stub_server.pending == 0, "a scripted response was left unused"


@pytest.fixture(autouse=True)
def _no_capture_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)


def openai_model(server: OpenAIStubServer) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))


def prompt() -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(PROMPT)])]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def stream_events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    """The span's stream events as (name, attributes without the offset), after checking offsets are ordered."""
    events = [event for event in span.events if event.name.startswith(STREAM_EVENT_PREFIX)]
    offsets: list[float] = []
    for event in events:
        offset = dict(event.attributes or {})["streamscope.event.offset_seconds"]
        assert isinstance(offset, float)
        offsets.append(offset)
    assert offsets == sorted(offsets)
    assert all(offset >= 0 for offset in offsets)
    return [
        (event.name, {k: v for k, v in (event.attributes or {}).items() if k != "streamscope.event.offset_seconds"})
        for event in events
    ]


def assert_events_match_consumer(span: ReadableSpan, events: Sequence[Any]) -> None:
    """Span events and per-kind counts are exactly the events the consumer iterated over."""
    recorded = stream_events(span)
    assert [name for name, _ in recorded] == [STREAM_EVENT_PREFIX + event.event_kind for event in events]
    for (_, attributes), event in zip(recorded, events, strict=True):
        assert attributes["streamscope.event.kind"] == event.event_kind
        assert attributes.get("streamscope.part.index") == getattr(event, "index", None)
    counts = Counter(event.event_kind for event in events)
    span_attributes = attrs(span)
    assert span_attributes["streamscope.stream.events.total"] == len(events)
    for kind in EVENT_KINDS:
        assert span_attributes.get(f"streamscope.stream.events.emitted.{kind}") == counts.get(kind)


def histogram_points(points: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], int, float]]:
    return [(attributes, point.count, point.sum) for attributes, point in points]


def base_attributes(server: OpenAIStubServer) -> dict[str, Any]:
    """The attributes of every metric of a stream from `server` (histograms add the response model when known)."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }


# --- successful streams -------------------------------------------------------------------------------------------
async def test_text_stream(otel: Otel, stub: Stub, instrument: Instrument) -> None:
    stub.server.script(
        ["Hel", "lo, ", "world"],
        usage=StubUsage(prompt_tokens=13, completion_tokens=5, cached_tokens=4),
        response_id="chatcmpl-text-1",
        model="gpt-4o-2024-08-06",
    )
    model = instrument(openai_model(stub.server))

    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        events = [event async for event in stream]
        response = stream.get()

    assert [type(event).__name__ for event in events] == [
        "PartStartEvent",
        "FinalResultEvent",
        "PartDeltaEvent",
        "PartDeltaEvent",
        "PartEndEvent",
    ]
    assert response.text == "Hello, world"
    (request,) = stub.requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}

    span = otel.one_stream_span()
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    attributes = attrs(span)
    ttfc = attributes.pop("gen_ai.response.time_to_first_chunk")
    mean_gap = attributes.pop("streamscope.stream.chunk_gap.mean")
    longest_gap = attributes.pop("streamscope.stream.chunk_gap.longest")
    assert 0 < mean_gap <= longest_gap
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.stream": True,
        "server.address": "127.0.0.1",
        "server.port": stub.server.port,
        "gen_ai.response.id": "chatcmpl-text-1",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 13,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "streamscope.stream.cost": float(response.cost().total_price),  # as Pydantic AI prices the response
        "streamscope.stream.outcome": "complete",
        "streamscope.stream.end_reason": "exhausted",
        "streamscope.stream.events.total": 5,
        "streamscope.stream.span_event_mode": "all",
        "streamscope.stream.chunks": 3,  # "Hel" starts the part, two deltas follow
        "streamscope.stream.events.emitted.part_start": 1,
        "streamscope.stream.events.emitted.final_result": 1,
        "streamscope.stream.events.emitted.part_delta": 2,
        "streamscope.stream.events.emitted.part_end": 1,
    }
    assert span.start_time is not None and span.end_time is not None
    assert 0 < ttfc <= (span.end_time - span.start_time) / 1e9
    assert stream_events(span) == [
        (
            "streamscope.stream.part_start",
            {
                "streamscope.event.kind": "part_start",
                "streamscope.part.index": 0,
                "streamscope.part.kind": "text",
                "streamscope.content.length": 3,
            },
        ),
        ("streamscope.stream.final_result", {"streamscope.event.kind": "final_result"}),
        (
            "streamscope.stream.part_delta",
            {
                "streamscope.event.kind": "part_delta",
                "streamscope.part.index": 0,
                "streamscope.delta.kind": "text",
                "streamscope.content.length": 4,
            },
        ),
        (
            "streamscope.stream.part_delta",
            {
                "streamscope.event.kind": "part_delta",
                "streamscope.part.index": 0,
                "streamscope.delta.kind": "text",
                "streamscope.content.length": 5,
            },
        ),
        (
            "streamscope.stream.part_end",
            {
                "streamscope.event.kind": "part_end",
                "streamscope.part.index": 0,
                "streamscope.part.kind": "text",
                "streamscope.content.length": 12,
            },
        ),
    ]
    first_offset = dict(span.events[0].attributes or {})["streamscope.event.offset_seconds"]
    assert first_offset == ttfc

    metrics = otel.metrics()
    base = base_attributes(stub.server)
    assert [(a, p.value) for a, p in metrics["streamscope.usage.input_tokens"]] == [(base, 13)]
    assert [(a, p.value) for a, p in metrics["streamscope.usage.output_tokens"]] == [(base, 5)]
    assert [(a, p.value) for a, p in metrics["streamscope.usage.cache_read.input_tokens"]] == [(base, 4)]
    assert "streamscope.usage.cache_creation.input_tokens" not in metrics
    assert "streamscope.usage.reasoning.output_tokens" not in metrics
    histogram_base = {**base, "gen_ai.response.model": "gpt-4o-2024-08-06"}
    assert histogram_points(metrics["gen_ai.client.token.usage"]) == [
        ({**histogram_base, "gen_ai.token.type": "input"}, 1, 13),
        ({**histogram_base, "gen_ai.token.type": "output"}, 1, 5),
    ]
    ((ttfc_attributes, ttfc_point),) = metrics["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc_attributes == histogram_base
    assert ttfc_point.count == 1
    assert ttfc_point.sum == pytest.approx(ttfc)
    ((duration_attributes, duration_point),) = metrics["gen_ai.client.operation.duration"]
    assert duration_attributes == histogram_base
    assert duration_point.count == 1
    assert ttfc <= duration_point.sum
    assert [(a, p.value) for a, p in metrics["streamscope.streams.finished"]] == [
        ({**base, "streamscope.stream.outcome": "complete"}, 1)
    ]
    assert [(a, p.value) for a, p in metrics["streamscope.streams.active"]] == [(base, 0)]
    assert {a["streamscope.event.kind"]: p.value for a, p in metrics["streamscope.stream.events"]} == {
        "part_start": 1,
        "final_result": 1,
        "part_delta": 2,
        "part_end": 1,
    }


async def test_tool_call_stream(otel: Otel, stub: Stub) -> None:
    stub.server.script(
        [],
        tool_calls=[
            StubToolCall("get_weather", ['{"city": ', '"Paris"}'], call_id="call_weather"),
            StubToolCall("get_time", ['{"tz": "CET"}'], call_id="call_time"),
        ],
    )
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "tz": {"type": "string"}}}
    tools = [ToolDefinition(name=name, parameters_json_schema=schema) for name in ("get_weather", "get_time")]
    model = streamscope.instrument(openai_model(stub.server), **otel.providers)

    async with model.request_stream(prompt(), None, ModelRequestParameters(function_tools=tools)) as stream:
        events = [event async for event in stream]
        response = stream.get()

    assert [(part.tool_name, part.args) for part in response.tool_calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"tz": "CET"}'),
    ]
    span = otel.one_stream_span()
    attributes = attrs(span)
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_call",)
    assert attributes["streamscope.stream.outcome"] == "complete"
    assert attributes["streamscope.stream.end_reason"] == "exhausted"
    assert "streamscope.stream.events.emitted.final_result" not in attributes
    assert_events_match_consumer(span, events)
    assert stream_events(span) == [
        (
            "streamscope.stream.part_start",
            {
                "streamscope.event.kind": "part_start",
                "streamscope.part.index": 0,
                "streamscope.part.kind": "tool-call",
                "gen_ai.tool.name": "get_weather",
                "streamscope.content.length": len('{"city": '),
            },
        ),
        (
            "streamscope.stream.part_delta",
            {
                "streamscope.event.kind": "part_delta",
                "streamscope.part.index": 0,
                "streamscope.delta.kind": "tool_call",
                "streamscope.content.length": len('"Paris"}'),
            },
        ),
        (
            "streamscope.stream.part_end",
            {
                "streamscope.event.kind": "part_end",
                "streamscope.part.index": 0,
                "streamscope.part.kind": "tool-call",
                "gen_ai.tool.name": "get_weather",
                "streamscope.content.length": len('{"city": "Paris"}'),
            },
        ),
        (
            "streamscope.stream.part_start",
            {
                "streamscope.event.kind": "part_start",
                "streamscope.part.index": 1,
                "streamscope.part.kind": "tool-call",
                "gen_ai.tool.name": "get_time",
                "streamscope.content.length": len('{"tz": "CET"}'),
            },
        ),
        (
            "streamscope.stream.part_end",
            {
                "streamscope.event.kind": "part_end",
                "streamscope.part.index": 1,
                "streamscope.part.kind": "tool-call",
                "gen_ai.tool.name": "get_time",
                "streamscope.content.length": len('{"tz": "CET"}'),
            },
        ),
    ]


# --- failures -----------------------------------------------------------------------------------------------------
async def test_http_500_at_open(otel: Otel, stub: Stub, instrument: Instrument) -> None:
    stub.server.script_error(500)
    model = instrument(openai_model(stub.server))

    with pytest.raises(ModelHTTPError) as raised:
        async with model.request_stream(prompt(), None, ModelRequestParameters()):
            pass
    assert raised.value.status_code == 500
    assert len(stub.requests) == 1  # x-should-retry: false, so no SDK retry

    error_type = f"{type(raised.value).__module__}.{type(raised.value).__qualname__}"
    assert error_type == HTTP_500_ERROR_TYPE
    span = otel.one_stream_span()
    assert span.name == "chat gpt-4o"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"{type(raised.value).__name__}: {raised.value}"
    attributes = attrs(span)
    assert attributes["error.type"] == error_type
    assert attributes["streamscope.stream.outcome"] == "error"
    assert attributes["streamscope.stream.end_reason"] == "error"
    assert attributes["streamscope.stream.events.total"] == 0
    assert attributes["server.port"] == stub.server.port
    for absent in ("gen_ai.response.id", "gen_ai.response.model", "gen_ai.response.time_to_first_chunk"):
        assert absent not in attributes
    (exception,) = span.events
    assert exception.name == "exception"
    assert dict(exception.attributes or {})["exception.type"] == error_type

    metrics = otel.metrics()
    base = base_attributes(stub.server)
    assert [(a, p.count) for a, p in metrics["gen_ai.client.operation.duration"]] == [
        ({**base, "error.type": error_type}, 1)
    ]
    assert [(a, p.value) for a, p in metrics["streamscope.streams.active"]] == [(base, 0)]
    assert [(a, p.value) for a, p in metrics["streamscope.streams.finished"]] == [
        ({**base, "streamscope.stream.outcome": "error"}, 1)
    ]
    for never in (
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.time_to_first_chunk",
        "streamscope.stream.events",
    ):
        assert never not in metrics


async def test_connection_dropped_mid_stream(otel: Otel, stub: Stub, instrument: Instrument) -> None:
    stub.server.script(["a", "b", "c", "d"], drop_after=3, response_id="chatcmpl-dropped")  # 3 `data:` events, reset
    model = instrument(openai_model(stub.server))

    events: list[Any] = []
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the type is checked below, per version
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for event in stream:
                events.append(event)

    error_type = f"{type(raised.value).__module__}.{type(raised.value).__qualname__}"
    assert error_type in DROPPED_ERROR_TYPES
    assert [event.event_kind for event in events] == ["part_start", "final_result", "part_delta", "part_delta"]

    span = otel.one_stream_span()
    assert span.status.status_code is StatusCode.ERROR
    attributes = attrs(span)
    assert attributes["error.type"] == error_type
    assert attributes["streamscope.stream.outcome"] == "error"
    assert attributes["streamscope.stream.end_reason"] == "error"
    assert attributes["gen_ai.response.id"] == "chatcmpl-dropped"  # seen in the chunks before the drop
    assert attributes["gen_ai.response.model"] == "gpt-4o"
    assert "gen_ai.response.finish_reasons" not in attributes
    # the provider never sent usage: unknown, so no usage attributes (never a made-up 0)
    assert not any(key.startswith("gen_ai.usage.") for key in attributes)
    assert_events_match_consumer(span, events)
    assert span.events[-1].name == "exception"
    assert dict(span.events[-1].attributes or {})["exception.type"] == error_type
    assert attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(
        dict(span.events[0].attributes or {})["streamscope.event.offset_seconds"]
    )

    metrics = otel.metrics()
    base = base_attributes(stub.server)
    assert {a["streamscope.event.kind"]: p.value for a, p in metrics["streamscope.stream.events"]} == {
        "part_start": 1,
        "final_result": 1,
        "part_delta": 2,
    }
    assert [a for a, _ in metrics["gen_ai.client.operation.duration"]] == [
        {**base, "gen_ai.response.model": "gpt-4o", "error.type": error_type}
    ]
    assert [(a, p.value) for a, p in metrics["streamscope.streams.finished"]] == [
        ({**base, "streamscope.stream.outcome": "error"}, 1)
    ]
    assert sum_value(metrics["streamscope.streams.active"]) == 0
    assert "gen_ai.client.token.usage" not in metrics  # no usage arrived before the drop


# --- cancellation -------------------------------------------------------------------------------------------------
SLOW_TEXT = ["a", "b", "c", "d", "e", "f"]
SLOW_DELAY = 0.05  # seconds before each `data:` event: long enough to cancel between chunks


def assert_interrupted(otel: Otel, server: OpenAIStubServer, end_reason: str, events: Sequence[Any]) -> None:
    spans = otel.stream_spans()
    assert len(spans) == 1  # exactly one span, ended once
    (span,) = spans
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    attributes = attrs(span)
    assert attributes["streamscope.stream.outcome"] == "interrupted"
    assert attributes["streamscope.stream.end_reason"] == end_reason
    assert "error.type" not in attributes
    assert "gen_ai.response.finish_reasons" not in attributes
    assert not [event for event in span.events if event.name == "exception"]
    assert_events_match_consumer(span, events)

    metrics = otel.metrics()
    base = base_attributes(server)
    assert [(a, p.value) for a, p in metrics["streamscope.streams.finished"]] == [
        ({**base, "streamscope.stream.outcome": "interrupted"}, 1)
    ]
    assert [(a, p.value) for a, p in metrics["streamscope.streams.active"]] == [(base, 0)]
    # the histograms add the response model the stream reported before it was cut off
    assert [(a, p.count) for a, p in metrics["gen_ai.client.operation.duration"]] == [
        ({**base, "gen_ai.response.model": "gpt-4o"}, 1)
    ]
    assert sum_value(metrics["streamscope.stream.events"]) == len(events)


async def test_cancel_called_mid_stream(otel: Otel, stub: Stub) -> None:
    stub.server.script(SLOW_TEXT, delay=SLOW_DELAY)
    model = streamscope.instrument(openai_model(stub.server), **otel.providers)

    events: list[Any] = []
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for event in stream:
            events.append(event)
            if len(events) == 3:
                await stream.cancel()
                break
        assert stream.cancelled
        assert stream.get().state == "interrupted"

    assert [event.event_kind for event in events] == ["part_start", "final_result", "part_delta"]
    assert_interrupted(otel, stub.server, "cancel_called", events)


@pytest.mark.parametrize("how", ["cancel_scope", "task_cancel"])
async def test_task_cancelled_mid_stream(otel: Otel, stub: Stub, how: str) -> None:
    stub.server.script(SLOW_TEXT, delay=SLOW_DELAY)
    model = streamscope.instrument(openai_model(stub.server), **otel.providers)
    events: list[Any] = []

    if how == "cancel_scope":
        with anyio.CancelScope() as scope:
            async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
                async for event in stream:
                    events.append(event)
                    if len(events) == 3:
                        scope.cancel()
        assert scope.cancelled_caught
    else:
        three_seen = asyncio.Event()

        async def consume() -> None:
            async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
                async for event in stream:
                    events.append(event)
                    if len(events) == 3:
                        three_seen.set()

        task = asyncio.create_task(consume())
        await three_seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert [event.event_kind for event in events] == ["part_start", "final_result", "part_delta"]
    assert_interrupted(otel, stub.server, "task_cancelled", events)


# --- content capture over real HTTP -------------------------------------------------------------------------------
SYSTEM_SECRET = "system-secret-0a1b"
PROMPT_SECRET = "prompt-secret-7f3a"
ARGS_SECRET = "args-secret-55d1"
TOOL_SECRET = "tool-secret-c0de"
COMPLETION_SECRET = "completion-secret-91c2"
SECRETS = (SYSTEM_SECRET, PROMPT_SECRET, ARGS_SECRET, TOOL_SECRET, COMPLETION_SECRET)


def lookup(key: str) -> str:
    """Look a key up."""
    return f"{TOOL_SECRET} for {key}"


def telemetry_strings(otel: Otel) -> list[str]:
    """Every string in every span (any scope), span event, log record and metric attribute."""
    found: list[str] = []

    def add(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:  # pyright: ignore[reportUnknownVariableType]
                add(item)

    for span in otel.spans():
        add(span.name)
        add(span.status.description)
        for key, value in (span.attributes or {}).items():
            add(key)
            add(value)
        for event in span.events:
            add(event.name)
            for key, value in (event.attributes or {}).items():
                add(key)
                add(value)
    for log in otel.logs():
        record = getattr(log, "log_record", log)
        add(str(record.body))
        for key, value in (record.attributes or {}).items():
            add(key)
            add(value)
    for points in otel.metrics().values():
        for attributes, _ in points:
            for key, value in attributes.items():
                add(key)
                add(value)
    return found


@pytest.mark.parametrize("capture", [False, True])
async def test_content_capture_over_http(
    otel: Otel, stub: Stub, monkeypatch: pytest.MonkeyPatch, capture: bool
) -> None:
    # The explicit option wins over the environment, which says the opposite.
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT" if capture else "SPAN_AND_EVENT"
    )
    stub.server.script([], tool_calls=[StubToolCall("lookup", ['{"key": "', ARGS_SECRET, '"}'], call_id="call_lookup")])
    stub.server.script(["The value is ", COMPLETION_SECRET, "."])
    model = streamscope.instrument(openai_model(stub.server), capture_content=capture, **otel.providers)
    agent = Agent(model, tools=[lookup], instructions=f"Use the lookup tool ({SYSTEM_SECRET}).")

    async with agent.run_stream(f"Look up {PROMPT_SECRET}.") as result:
        output = await result.get_output()

    # Every secret really went over HTTP, one way or the other.
    assert output == f"The value is {COMPLETION_SECRET}."
    first, second = (json.dumps(request.body) for request in stub.requests)
    assert SYSTEM_SECRET in first and PROMPT_SECRET in first
    assert ARGS_SECRET in second and TOOL_SECRET in second and PROMPT_SECRET in second

    assert len(otel.stream_spans()) == 2
    strings = telemetry_strings(otel)
    assert any(s == "chat gpt-4o" for s in strings)  # the scan does see the spans
    leaked = {secret for secret in SECRETS if any(secret in s for s in strings)}
    if capture:
        # Only what streamed back is captured (completion text and tool arguments), never the request side.
        assert leaked == {ARGS_SECRET, COMPLETION_SECRET}
        contents = [
            dict(event.attributes or {}).get("streamscope.content")
            for span in otel.stream_spans()
            for event in span.events
        ]
        assert COMPLETION_SECRET in contents
        assert ARGS_SECRET in contents
    else:
        assert leaked == set()
        for span in otel.stream_spans():
            assert all("streamscope.content" not in (event.attributes or {}) for event in span.events)
