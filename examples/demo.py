"""streamscope demo: instrument every Pydantic AI stream in-process and print what was recorded.

Runs offline: a local FunctionModel streams the answers, telemetry goes to the OpenTelemetry SDK's in-memory
exporters, and the policy denial uses a real OpenAIChatModel that is refused before any network call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import override_allow_model_requests
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope

STORY_TEXT = "Once upon a time, a tiny span followed every token of a stream and never lost one."
STORY = STORY_TEXT.split(" ")


async def storyteller(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for i, word in enumerate(STORY):
        await asyncio.sleep(0.002)
        yield word if i == 0 else " " + word


async def flaky(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    yield "Half an answer"
    raise ConnectionError("upstream reset the stream")


async def tool_user(messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
    if len(messages) == 1:
        yield {0: DeltaToolCall(name="add", json_args='{"a": 2, ', tool_call_id="call-1")}
        yield {0: DeltaToolCall(json_args='"b": 40}')}
    else:
        yield "The sum is 42."


async def scenarios() -> None:
    agent = Agent(FunctionModel(stream_function=storyteller, model_name="storyteller"))

    async with agent.run_stream("Tell me a story") as result:  # 1. drained to the end
        print(f"  complete     -> {await result.get_output()!r}")

    async with agent.run_stream("Tell me a story") as result:  # 2. consumer stops early
        async for text in result.stream_text(delta=True, debounce_by=None):
            print(f"  broken out   -> first chunk {text!r}")
            break

    first_chunk = asyncio.Event()

    async def read_slowly() -> None:  # 3. the task is cancelled mid-stream
        async with agent.run_stream("Tell me a story") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                first_chunk.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(read_slowly())
    await first_chunk.wait()  # cancelled mid-stream however slow the machine is
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    print("  cancelled    -> task cancelled mid-stream")

    try:  # 4. the provider fails mid-stream
        async with Agent(FunctionModel(stream_function=flaky, model_name="flaky")).run_stream("hi") as result:
            await result.get_output()
    except ConnectionError as error:
        print(f"  failed       -> {type(error).__name__}: {error}")

    tools = Agent(FunctionModel(stream_function=tool_user, model_name="calculator"))

    @tools.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    async with tools.run_stream("What is 2 + 40?") as result:  # 5. two model requests: tool call, then text
        print(f"  tool call    -> {await result.get_output()!r}")

    denied = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="demo"))
    try:  # 6. a request denied by check_allow_model_requests (never sent)
        with override_allow_model_requests(False):
            async with Agent(denied).run_stream("hi") as result:
                await result.get_output()
    except RuntimeError as error:
        print(f"  denied       -> RuntimeError: {error}")


def print_span(span: ReadableSpan) -> None:
    attributes = dict(span.attributes or {})
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    print(
        f"  {span.name:<22} {attributes.get('streamscope.stream.outcome', '?'):<12}"
        f" end={attributes.get('streamscope.stream.end_reason', '?'):<16} events={len(span.events):<3}"
        f" tokens in/out={attributes.get('gen_ai.usage.input_tokens', '-')}/"
        f"{attributes.get('gen_ai.usage.output_tokens', '-')}  {duration_ms:.1f} ms"
        + (f"  error.type={attributes['error.type']}" if "error.type" in attributes else "")
    )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  [stdlib log %(name)s] %(message)s")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))

    streamscope.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
    )
    print("Running six streamed agent runs (offline):")
    try:
        asyncio.run(scenarios())
    finally:
        streamscope.uninstrument()

    stream_spans = [s for s in spans.get_finished_spans() if s.instrumentation_scope.name == "streamscope"]  # type: ignore[union-attr]
    print(f"\nSpans ({len(stream_spans)} streams, one span each):")
    for span in stream_spans:
        print_span(span)
    first = stream_spans[0]
    print(f"\nSpan events of '{first.name}' (first 4 of {len(first.events)}):")
    for event in first.events[:4]:
        attributes = dict(event.attributes or {})
        print(
            f"  {event.name:<32} part={attributes.get('streamscope.part.index', '-')}"
            f" length={attributes.get('streamscope.content.length', '-')}"
            f" at +{float(str(attributes.get('streamscope.event.offset_seconds', 0))) * 1000:.1f} ms"
        )

    print("\nMetrics:")
    data = reader.get_metrics_data()
    metrics: list[Any] = [
        metric
        for resource_metrics in (data.resource_metrics if data else ())
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    ]
    for metric in metrics:
        points: list[Any] = list(metric.data.data_points)
        total = sum(getattr(p, "value", None) or getattr(p, "sum", 0) for p in points)
        print(f"  {metric.name:<46} {len(points)} series, total {total:g}")

    print("\nPolicy violations (OTel log records):")
    for record in logs.get_finished_logs():
        log = record.log_record
        print(f"  [{log.severity_text}] {log.event_name}: {log.body}")


if __name__ == "__main__":
    main()
