"""One stream, every way it can end: span, span events, metrics — on the real FunctionModel."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

import streamscope
from tests.conftest import Otel, collect_earlier_garbage, sum_value
from tests.helpers_reliability import make_otel, shutdown_otel
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

MESSAGES: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart("Tell me a story")])]
WORDS = ["Once", " upon", " a", " time"]


def text_model(words: list[str] = WORDS, *, delay: float = 0.0, fail_after: int | None = None) -> FunctionModel:
    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
        for i, word in enumerate(words):
            if fail_after is not None and i == fail_after:
                raise ValueError("provider exploded")
            if delay:
                await asyncio.sleep(delay)
            yield word

    return FunctionModel(stream_function=stream, model_name="storyteller")


def mixed_model() -> FunctionModel:
    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaThinkingPart(content="Let me ")}
        yield {0: DeltaThinkingPart(content="think.")}
        yield "The answer"
        yield " is:"
        yield {2: DeltaToolCall(name="lookup", json_args='{"q": ', tool_call_id="call-1")}
        yield {2: DeltaToolCall(json_args='"42"}')}

    return FunctionModel(stream_function=stream, model_name="mixed")


async def consume(model: Model, *, stop_after: int | None = None) -> list[Any]:
    events: list[Any] = []
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for event in stream:
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def kinds(span: ReadableSpan) -> list[str]:
    return [event.name.removeprefix("streamscope.stream.") for event in span.events]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_drained_stream_is_one_complete_span(otel: Otel) -> None:
    model = streamscope.instrument(text_model(), **otel.providers)
    events = await consume(model)

    span = otel.one_stream_span()
    assert span.name == "chat storyteller"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    a = attrs(span)
    assert {k: a[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "function",
        "gen_ai.request.model": "storyteller",
    }
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.model"] == "storyteller"
    assert a["streamscope.stream.outcome"] == "complete"
    assert a["streamscope.stream.end_reason"] == "exhausted"
    assert a["streamscope.stream.events.total"] == len(events) == 6
    assert kinds(span) == ["part_start", "final_result", "part_delta", "part_delta", "part_delta", "part_end"]
    seen = [type(e).__name__ for e in events]
    assert seen == ["PartStartEvent", "FinalResultEvent", *["PartDeltaEvent"] * 3, "PartEndEvent"]
    assert a["streamscope.stream.events.emitted.part_delta"] == seen.count("PartDeltaEvent")
    assert not any(k.startswith("streamscope.stream.events.dropped.") for k in a)
    assert a["gen_ai.usage.output_tokens"] == 4
    assert a["gen_ai.usage.input_tokens"] > 0
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 5
    first = span.events[0]
    assert first.attributes is not None
    assert first.attributes["streamscope.part.index"] == 0
    assert first.attributes["streamscope.part.kind"] == "text"
    assert first.attributes["streamscope.content.length"] == len("Once")
    assert "streamscope.content" not in first.attributes  # capture is off by default
    offsets = [float(str(e.attributes["streamscope.event.offset_seconds"])) for e in span.events if e.attributes]
    assert offsets == sorted(offsets)
    assert span.start_time is not None and span.end_time is not None
    assert all(span.start_time <= e.timestamp <= span.end_time for e in span.events)

    metrics = otel.metrics()
    base = {"gen_ai__provider__name": "function", "gen_ai__request__model": "storyteller"}
    assert sum_value(metrics["streamscope.streams.finished"], streamscope__stream__outcome="complete", **base) == 1
    assert sum_value(metrics["streamscope.streams.active"], **base) == 0
    assert sum_value(metrics["streamscope.usage.output_tokens"], **base) == 4
    assert sum_value(metrics["streamscope.usage.input_tokens"], **base) == a["gen_ai.usage.input_tokens"]
    assert sum_value(metrics["gen_ai.client.token.usage"], gen_ai__token__type="output", **base) == 4
    assert sum_value(metrics["streamscope.stream.events"], streamscope__event__kind="part_delta", **base) == (
        seen.count("PartDeltaEvent")
    )
    duration = metrics["gen_ai.client.operation.duration"]
    assert len(duration) == 1 and duration[0][1].count == 1
    assert "error.type" not in duration[0][0]
    assert metrics["gen_ai.client.operation.time_to_first_chunk"][0][1].count == 1
    # chunks: the part start (it carries "Once") and every delta; by default a summary of their gaps per stream
    assert a["streamscope.stream.chunks"] == seen.count("PartDeltaEvent") + 1
    assert 0 < a["streamscope.stream.chunk_gap.mean"] <= a["streamscope.stream.chunk_gap.longest"]
    assert metrics["streamscope.stream.chunk_gap.mean"][0][1].count == 1
    assert metrics["streamscope.stream.chunk_gap.longest"][0][1].count == 1
    assert metrics["streamscope.stream.chunk_gap.longest"][0][1].sum == a["streamscope.stream.chunk_gap.longest"]
    assert "gen_ai.client.operation.time_per_output_chunk" not in metrics


async def test_instrumented_stream_yields_the_same_events_and_response(otel: Otel) -> None:
    async def run(model: Model) -> tuple[list[Any], Any]:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            events = [event async for event in stream]
            return events, stream.get()

    raw_events, raw_response = await run(mixed_model())
    events, response = await run(streamscope.instrument(mixed_model(), **otel.providers))
    assert events == raw_events
    assert response.parts == raw_response.parts
    assert response.usage == raw_response.usage
    assert response.state == raw_response.state == "complete"
    span = otel.one_stream_span()
    part_kinds = [
        (e.attributes or {}).get("streamscope.part.kind") for e in span.events if e.name.endswith("part_start")
    ]
    assert part_kinds == ["thinking", "text", "tool-call"]
    tool_events = [e for e in span.events if (e.attributes or {}).get("gen_ai.tool.name") == "lookup"]
    assert tool_events


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_break_out_ends_span_when_the_context_exits(otel: Otel, mode: str) -> None:
    model = streamscope.instrument(text_model(), span_events=mode, **otel.providers)  # pyright: ignore[reportArgumentType]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            break
        assert otel.stream_spans() == []  # still open: the consumer may come back
    span = otel.one_stream_span()
    a = attrs(span)
    assert a["streamscope.stream.outcome"] == "incomplete"
    assert a["streamscope.stream.end_reason"] == "consumer_closed"
    assert a["streamscope.stream.events.total"] == 1
    assert sum_value(otel.metrics()["streamscope.streams.active"]) == 0


async def test_aclose_ends_span_immediately(otel: Otel) -> None:
    model = streamscope.instrument(text_model(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        iterator = aiter(stream)
        await anext(iterator)
        await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
        span = otel.one_stream_span()
        assert attrs(span)["streamscope.stream.end_reason"] == "consumer_closed"
        assert stream.get().state == "incomplete"
    assert len(otel.stream_spans()) == 1


async def test_consumer_exception_is_not_a_model_error_and_propagates(otel: Otel) -> None:
    """The consumer's own code raising inside `async with` interrupts the stream; the model did not fail."""
    model = streamscope.instrument(text_model(), **otel.providers)
    with pytest.raises(KeyError, match="consumer bug"):
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                raise KeyError("consumer bug")
    span = otel.one_stream_span()
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(span)
    assert attrs(span)["streamscope.stream.outcome"] == "interrupted"
    assert attrs(span)["streamscope.stream.end_reason"] == "consumer_error"
    assert "exception" not in [e.name for e in span.events]


class Abort(BaseException):
    """A `BaseException` that is not cancellation (as `GreenletExit` or a framework's abort signal are)."""


async def test_a_consumers_base_exception_ends_the_stream_as_failed(otel: Otel) -> None:
    """Only an `Exception` from the consumer's code is its own bug (consumer_error); anything else leaving the block,
    that is not cancellation or closing, ended the stream as a failure."""
    model = streamscope.instrument(text_model(), **otel.providers)
    with pytest.raises(Abort):
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                raise Abort
    span = otel.one_stream_span()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == f"{__name__}.Abort"
    assert attrs(span)["streamscope.stream.outcome"] == "error"
    assert attrs(span)["streamscope.stream.end_reason"] == "error"


async def test_provider_error_fails_the_span_and_reraises_unchanged(otel: Otel) -> None:
    model = streamscope.instrument(text_model(fail_after=2), **otel.providers)
    seen: list[Any] = []
    with pytest.raises(ValueError, match="provider exploded") as raised:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for event in stream:
                seen.append(event)
    assert type(raised.value) is ValueError
    span = otel.one_stream_span()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: provider exploded"
    assert a["error.type"] == "ValueError"
    assert a["streamscope.stream.outcome"] == "error"
    assert a["streamscope.stream.end_reason"] == "error"
    assert a["streamscope.stream.events.total"] == len(seen)
    exception_events = [e for e in span.events if e.name == "exception"]
    assert len(exception_events) == 1
    assert exception_events[0].attributes is not None
    assert exception_events[0].attributes["exception.message"] == "provider exploded"
    metrics = otel.metrics()
    assert sum_value(metrics["streamscope.streams.finished"], streamscope__stream__outcome="error") == 1
    durations = metrics["gen_ai.client.operation.duration"]
    assert [p[0].get("error.type") for p in durations] == ["ValueError"]


async def test_cancel_marks_the_stream_interrupted(otel: Otel) -> None:
    model = streamscope.instrument(text_model(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            await stream.cancel()
            break
        assert stream.cancelled
    span = otel.one_stream_span()
    assert attrs(span)["streamscope.stream.outcome"] == "interrupted"
    assert attrs(span)["streamscope.stream.end_reason"] == "cancel_called"
    assert sum_value(otel.metrics()["streamscope.streams.finished"], streamscope__stream__outcome="interrupted") == 1


async def test_task_cancellation_ends_the_span_once(otel: Otel) -> None:
    model = streamscope.instrument(text_model(["a"] * 50, delay=0.01), **otel.providers)
    seen = 0
    with anyio.move_on_after(0.1) as scope:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                seen += 1
    assert scope.cancelled_caught
    span = otel.one_stream_span()
    a = attrs(span)
    assert a["streamscope.stream.end_reason"] == "task_cancelled"
    assert a["streamscope.stream.outcome"] == "interrupted"
    assert span.status.status_code is StatusCode.UNSET
    assert a["streamscope.stream.events.total"] in (seen, seen + 1)


async def test_asyncio_task_cancel(otel: Otel) -> None:
    model = streamscope.instrument(text_model(["a"] * 50, delay=0.01), **otel.providers)
    started = asyncio.Event()

    async def consumer() -> None:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                started.set()

    task = asyncio.create_task(consumer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attrs(otel.one_stream_span())["streamscope.stream.end_reason"] == "task_cancelled"


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_never_iterated_stream_still_ends(otel: Otel, mode: str) -> None:
    model = streamscope.instrument(text_model(), span_events=mode, **otel.providers)  # pyright: ignore[reportArgumentType]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()):
        pass
    span = otel.one_stream_span()
    a = attrs(span)
    assert a["streamscope.stream.end_reason"] == "never_iterated"
    assert a["streamscope.stream.outcome"] == "incomplete"
    assert a["streamscope.stream.events.total"] == 0
    assert "gen_ai.response.time_to_first_chunk" not in a
    assert "gen_ai.client.operation.time_to_first_chunk" not in otel.metrics()


class CountingProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.ended: dict[int, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended[span.context.span_id] = self.ended.get(span.context.span_id, 0) + 1


@pytest.mark.parametrize("ending", ["drain", "break", "error", "cancel", "never", "aclose"])
async def test_every_ending_ends_the_span_exactly_once(otel: Otel, ending: str) -> None:
    counter = CountingProcessor()
    otel.tracer_provider.add_span_processor(counter)
    model = streamscope.instrument(text_model(fail_after=2 if ending == "error" else None), **otel.providers)
    with pytest.raises(ValueError, match="exploded") if ending == "error" else contextlib.nullcontext():
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            if ending == "never":
                pass
            elif ending == "aclose":
                iterator = aiter(stream)
                await anext(iterator)
                await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
                await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]  # closing twice
            else:
                async for _ in stream:
                    if ending == "break":
                        break
                    if ending == "cancel":
                        await stream.cancel()
                        await stream.cancel()
    assert list(counter.ended.values()) == [1]


async def test_span_event_limit_keeps_first_and_last_and_counts_the_rest() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_events=10))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = streamscope.instrument(text_model(["x"] * 100), tracer_provider=provider)
    events = await consume(model)
    (span,) = exporter.get_finished_spans()
    a = attrs(span)
    assert len(span.events) == 8  # 10 minus 2 reserved for streamscope's own events
    assert span.dropped_events == 0
    assert kinds(span)[:2] == ["part_start", "final_result"]
    assert kinds(span)[-1] == "part_end"
    total = len(events)
    dropped = {k.rsplit(".", 1)[1]: v for k, v in a.items() if k.startswith("streamscope.stream.events.dropped.")}
    emitted = {k.rsplit(".", 1)[1]: v for k, v in a.items() if k.startswith("streamscope.stream.events.emitted.")}
    assert dropped == {"part_delta": total - 8}
    assert sum(emitted.values()) == 8
    assert sum(emitted.values()) + sum(dropped.values()) == total == a["streamscope.stream.events.total"]


async def test_coalesce_mode_folds_deltas_into_runs(otel: Otel) -> None:
    model = streamscope.instrument(mixed_model(), span_events="coalesce", **otel.providers)
    events = await consume(model)
    span = otel.one_stream_span()
    # Each part gets one delta after its start, so every run has one delta: a run of one is an ordinary event.
    assert sum(1 for e in events if type(e).__name__ == "PartDeltaEvent") == 3
    assert "streamscope.stream.part_deltas" not in [e.name for e in span.events]
    assert len(span.events) == len(events)
    a = attrs(span)
    assert a["streamscope.stream.events.emitted.part_delta"] == 3
    assert "streamscope.stream.events.coalesced.part_delta" not in a
    assert a["streamscope.stream.span_event_mode"] == "coalesce"


async def test_coalesce_mode_long_text_is_one_run(otel: Otel) -> None:
    model = streamscope.instrument(text_model(["ab"] * 60), span_events="coalesce", **otel.providers)
    await consume(model)
    span = otel.one_stream_span()
    runs = [e for e in span.events if e.name == "streamscope.stream.part_deltas"]
    assert len(runs) == 1
    assert runs[0].attributes is not None
    assert runs[0].attributes["streamscope.event.coalesced_count"] == 59
    assert runs[0].attributes["streamscope.content.length"] == 118
    assert attrs(span)["streamscope.stream.events.coalesced.part_delta"] == 59


async def test_none_mode_records_counts_only(otel: Otel) -> None:
    model = streamscope.instrument(text_model(), span_events="none", **otel.providers)
    events = await consume(model)
    span = otel.one_stream_span()
    assert span.events == ()
    a = attrs(span)
    assert a["streamscope.stream.events.total"] == len(events)
    assert sum(v for k, v in a.items() if k.startswith("streamscope.stream.events.dropped.")) == len(events)


async def test_capture_truncates_and_redacts(otel: Otel) -> None:
    model = streamscope.instrument(
        text_model(["secret-token abc", " and more text"]),
        capture_content=True,
        max_content_length=8,
        redact=lambda text: text.replace("secret-token", "[REDACTED]"),
        **otel.providers,
    )
    await consume(model)
    span = otel.one_stream_span()
    start = span.events[0].attributes
    assert start is not None
    assert start["streamscope.content"] == "[REDACTE"
    assert start["streamscope.content.truncated"] is True
    assert start["streamscope.content.length"] == len("secret-token abc")
    exported = repr([dict(e.attributes or {}) for e in span.events]) + repr(attrs(span))
    assert "secret-token" not in exported


async def test_failing_redaction_hook_drops_content_but_not_the_stream(otel: Otel, internal_errors: list[Any]) -> None:
    def redact(_text: str) -> str:
        raise RuntimeError("hook bug")

    model = streamscope.instrument(text_model(), capture_content=True, redact=redact, **otel.providers)
    events = await consume(model)
    assert len(events) == 6
    span = otel.one_stream_span()
    assert all("streamscope.content" not in (e.attributes or {}) for e in span.events)
    assert internal_errors
    assert "redaction hook" in internal_errors[0].getMessage()


async def test_usage_deltas_are_recorded_while_the_stream_runs(otel: Otel) -> None:
    model = streamscope.instrument(text_model(["w"] * 10), usage_flush_interval=0, **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        iterator = aiter(stream)
        for _ in range(5):
            await anext(iterator)
        mid = sum_value(otel.metrics()["streamscope.usage.output_tokens"])
        assert 0 < mid < 10
        assert stream.usage.output_tokens == mid
        async for _ in iterator:
            pass
    assert sum_value(otel.metrics()["streamscope.usage.output_tokens"]) == 10
    assert otel.stream_spans()


async def test_unsampled_stream_still_records_metrics(otel: Otel) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    model = streamscope.instrument(text_model(), tracer_provider=provider, meter_provider=otel.meter_provider)
    events = await consume(model)
    assert len(events) == 6
    metrics = otel.metrics()
    assert sum_value(metrics["streamscope.streams.finished"]) == 1
    assert sum_value(metrics["streamscope.usage.output_tokens"]) == 4


# --- streams dropped unfinished -------------------------------------------------------------------------------------
class _LockingProcessor(SpanProcessor):
    """A span processor with a lock of its own, as exporters and SDK parts have, held across a collection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocked = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        with self.lock:
            gc.collect()  # the garbage collector runs while this thread holds the lock

    def on_end(self, span: Any) -> None:
        if not self.lock.acquire(timeout=1):  # re-entered from a finaliser under the lock: would deadlock
            self.blocked += 1
            return
        self.lock.release()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Pydantic AI's, at the drop
def test_a_stream_dropped_after_its_event_loop_closed_is_ended_when_the_next_stream_opens(otel: Otel) -> None:
    """No loop is left to end a stream collected after its loop closed: the next stream opened ends it first."""
    collect_earlier_garbage()
    model = streamscope.instrument(text_model(), **otel.providers)

    async def drop_one() -> None:
        opening = model.request_stream(MESSAGES, None, ModelRequestParameters())
        await opening.__aenter__()  # never iterated, never exited: dropped

    async def consume_one() -> None:
        await consume(model)

    asyncio.run(drop_one())  # the loop closes with the stream still referenced by the dropped opener
    gc.collect()  # the stream is collected now, its loop closed
    assert otel.stream_spans() == []  # nothing could end it yet
    asyncio.run(consume_one())
    reasons = [attrs(s)["streamscope.stream.end_reason"] for s in otel.stream_spans()]
    assert reasons == ["garbage_collected", "exhausted"]  # ended as the next stream opened, before it


async def test_dropped_stream_ends_from_the_event_loop_not_the_finaliser(otel: Otel) -> None:
    """A stream dropped unfinished is ended soon after it is collected, never inside the garbage collector, which
    may run while a lock is held that ending a span takes again."""
    collect_earlier_garbage()  # the collections below are to find this test's streams only
    processor = _LockingProcessor()
    otel.tracer_provider.add_span_processor(processor)
    model = streamscope.instrument(text_model(), **otel.providers)

    async def drop_one() -> None:
        opening = model.request_stream(MESSAGES, None, ModelRequestParameters())
        await opening.__aenter__()  # never iterated, never exited: dropped

    async def let_the_loop_run() -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # the loop closes the dropped generators, which then let go of the stream

    await drop_one()
    await let_the_loop_run()
    await drop_one()  # its span starts while the first stream is collected under the processor's lock
    assert processor.blocked == 0
    await let_the_loop_run()
    gc.collect()
    await let_the_loop_run()
    assert processor.blocked == 0
    spans = otel.stream_spans()
    assert len(spans) == 2
    assert [attrs(s)["streamscope.stream.end_reason"] for s in spans] == ["garbage_collected"] * 2


async def _stream_freed_without_the_collector(model: Model, ending: str) -> bool:
    """Run a stream to `ending` with the garbage collector off; whether the stream is freed once let go of."""
    collect_earlier_garbage()
    gc.disable()
    try:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            real = weakref.ref(getattr(stream, "__wrapped__", stream))
            iterator = aiter(stream)
            if ending == "exhausted":
                async for _ in iterator:
                    pass
            else:
                await anext(iterator)
                if ending == "aclose":
                    await iterator.aclose()  # type: ignore[attr-defined]
        del stream, iterator
        return real() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("ending", ["exhausted", "aclose", "context_exit"])
async def test_a_finished_stream_is_freed_by_reference_counting_as_without_streamscope(otel: Otel, ending: str) -> None:
    """streamscope keeps no reference cycle alive past a stream's end: the stream (and the HTTP response behind a
    real provider's stream) is freed when the user lets go of it, not later by the garbage collector, which would
    have to find, promote and traverse it first — that costs a busy app CPU."""
    raw_freed = await _stream_freed_without_the_collector(text_model(), ending)
    instrumented = streamscope.instrument(text_model(), **otel.providers)
    assert await _stream_freed_without_the_collector(instrumented, ending) is raw_freed
    # An exhausted stream is freed by reference counting alone without streamscope (its iterators are done):
    # the case a cycle of streamscope's would change. Left suspended, Pydantic AI's own iterators hold the stream.
    assert raw_freed or ending != "exhausted"
    assert [attrs(s)["streamscope.stream.end_reason"] for s in otel.spans()] == [
        {"exhausted": "exhausted", "aclose": "consumer_closed", "context_exit": "consumer_closed"}[ending]
    ]


SPAN_EVENT_MODES = ["all", "coalesce", "none"]


@pytest.mark.parametrize("mode", SPAN_EVENT_MODES)
async def test_exhausting_the_stream_ends_its_span_there_in_every_span_event_mode(otel: Otel, mode: str) -> None:
    """The span ends when the last event has been read, not when the `async with` exits: its end reason says the
    stream was exhausted and its duration leaves out what the caller does afterwards."""
    model = streamscope.instrument(text_model(["ab"] * 20), span_events=mode, **otel.providers)  # pyright: ignore[reportArgumentType]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
        exhausted_wall_ns = time.time_ns()
        (span,) = otel.stream_spans()  # ended already, inside the context
        await asyncio.sleep(0.05)  # the caller's own work after the stream
    assert len(otel.stream_spans()) == 1
    a = attrs(span)
    assert (a["streamscope.stream.end_reason"], a["streamscope.stream.outcome"]) == ("exhausted", "complete")
    assert span.end_time is not None and span.end_time <= exhausted_wall_ns
    ((_, duration),) = otel.metrics()["gen_ai.client.operation.duration"]
    assert duration.count == 1
    assert duration.sum * 1e9 <= exhausted_wall_ns - (span.start_time or 0) + 1_000  # float rounding


def events_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in attrs(span).items() if k.startswith("streamscope.stream.events.")}


async def test_coalesced_deltas_are_counted_as_coalesced_never_as_dropped(otel: Otel) -> None:
    """Every event is accounted for once: 60 words are a part start (with the first word), the final-result
    marker, 59 deltas folded into one run, and the part end. Nothing was lost, so nothing says dropped."""
    model = streamscope.instrument(text_model(["ab"] * 60), span_events="coalesce", **otel.providers)
    await consume(model)
    span = otel.one_stream_span()
    assert events_attributes(span) == {
        "streamscope.stream.events.total": 62,
        "streamscope.stream.events.emitted.part_start": 1,
        "streamscope.stream.events.emitted.final_result": 1,
        "streamscope.stream.events.emitted.part_delta": 0,
        "streamscope.stream.events.coalesced.part_delta": 59,
        "streamscope.stream.events.emitted.part_end": 1,
    }
    assert [e.name for e in span.events] == [
        "streamscope.stream.part_start",
        "streamscope.stream.final_result",
        "streamscope.stream.part_deltas",
        "streamscope.stream.part_end",
    ]


@dataclass
class ClosableWordStream(WordStream):
    """A third party's stream whose `__aiter__` hands out its own async generator, which notes being closed."""

    closed: bool = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        try:
            async for event in StreamedResponse.__aiter__(self):
                yield event
        finally:
            self.closed = True


@pytest.mark.parametrize("mode", ["all", "coalesce"])
async def test_the_consumers_aclose_reaches_the_models_own_iterator(otel: Otel, mode: str) -> None:
    """Closing the instrumented iterator closes the iterator it wraps at once, as closing it uninstrumented would:
    the model's generator runs its `finally` (releasing its connection) now, not whenever it is collected."""
    model = streamscope.instrument(make_model_class(ClosableWordStream)(), span_events=mode, **otel.providers)  # pyright: ignore[reportArgumentType]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, ClosableWordStream)  # the proxy passes isinstance
        iterator = aiter(stream)
        await anext(iterator)
        assert not stream.closed
        await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
        assert stream.closed
        assert attrs(otel.one_stream_span())["streamscope.stream.end_reason"] == "consumer_closed"


class _PlainIterator:
    """An async iterator that is not a generator: it has no `aclose()`."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.source = source

    def __aiter__(self) -> _PlainIterator:
        return self

    async def __anext__(self) -> Any:
        return await anext(self.source)


class PlainIteratorWordStream(WordStream):
    """A third party's stream whose `__aiter__` hands out a plain async iterator (a class with `__anext__`)."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return _PlainIterator(StreamedResponse.__aiter__(self))


@pytest.mark.parametrize("mode", ["all", "coalesce"])
async def test_closing_an_instrumented_plain_iterator_is_allowed_as_it_is_uninstrumented(otel: Otel, mode: str) -> None:
    """The consumer may `aclose()` what it iterates (streamscope hands out a generator); with nothing to close
    underneath, that ends the span and nothing else."""
    model = streamscope.instrument(make_model_class(PlainIteratorWordStream)(), span_events=mode, **otel.providers)  # pyright: ignore[reportArgumentType]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        iterator = aiter(stream)
        await anext(iterator)
        await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
        assert attrs(otel.one_stream_span())["streamscope.stream.end_reason"] == "consumer_closed"


async def test_mean_chunk_gap_is_the_time_from_first_to_last_chunk_over_the_gaps(otel: Otel) -> None:
    """Four chunks have three gaps: the mean is (last chunk - first chunk) / 3, on the span and the histogram;
    the longest gap is the largest of the three. The chunk times are the kept span events' own timestamps."""

    async def uneven(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
        for word, pause in (("a", 0.0), ("b", 0.01), ("c", 0.04), ("d", 0.02)):
            await asyncio.sleep(pause)
            yield word

    model = streamscope.instrument(FunctionModel(stream_function=uneven, model_name="u"), **otel.providers)
    await consume(model)
    span = otel.one_stream_span()
    chunk_times = [
        e.timestamp for e in span.events if e.name in ("streamscope.stream.part_start", "streamscope.stream.part_delta")
    ]
    assert len(chunk_times) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(chunk_times)]
    a = attrs(span)
    assert a["streamscope.stream.chunks"] == 4
    assert a["streamscope.stream.chunk_gap.mean"] == pytest.approx(
        (chunk_times[-1] - chunk_times[0]) / 3 / 1e9, abs=2e-9
    )
    assert a["streamscope.stream.chunk_gap.longest"] == pytest.approx(max(gaps) / 1e9, abs=2e-9)
    metrics = otel.metrics()
    ((_, mean),) = metrics["streamscope.stream.chunk_gap.mean"]
    ((_, longest),) = metrics["streamscope.stream.chunk_gap.longest"]
    assert (mean.count, mean.sum) == (1, a["streamscope.stream.chunk_gap.mean"])
    assert (longest.count, longest.sum) == (1, a["streamscope.stream.chunk_gap.longest"])


@pytest.mark.parametrize("mode", ["all", "coalesce"])
async def test_content_log_records_mirror_the_span_events_with_content(otel: Otel, mode: str) -> None:
    """With capture_content="span_and_event", each kept event that carries content is also one INFO log record:
    the span event's name, timestamp and attributes, in the stream span's context. A coalesced run of deltas kept
    no content, so it has no log record."""
    words = ["Once", " upon", " a", " time"]
    model = streamscope.instrument(
        text_model(words), capture_content="span_and_event", span_events=mode, **otel.providers
    )  # pyright: ignore[reportArgumentType]
    await consume(model)
    span = otel.one_stream_span()
    with_content = [e for e in span.events if e.attributes and "streamscope.content" in e.attributes]
    whole = "Once upon a time"  # the part end carries the whole part
    expected_contents = ["Once", " upon", " a", " time", whole] if mode == "all" else ["Once", whole]
    assert [e.attributes["streamscope.content"] for e in with_content if e.attributes] == expected_contents
    records = [r.log_record for r in otel.logs()]
    assert len(records) == len(with_content)
    span_context = span.get_span_context()
    assert span_context is not None
    for record, event in zip(records, with_content, strict=True):
        assert record.event_name == event.name
        assert record.timestamp == event.timestamp
        assert (record.severity_number, record.severity_text) == (SeverityNumber.INFO, "INFO")
        assert dict(record.attributes or {}) == dict(event.attributes or {})
        assert (record.trace_id, record.span_id) == (span_context.trace_id, span_context.span_id)


async def test_the_instrumented_stream_shows_as_the_stream_it_wraps(otel: Otel) -> None:
    """repr() of the stream a wrapped model hands out is the real stream's (what a user sees when debugging)."""
    model = streamscope.instrument(make_model_class(WordStream)(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, WordStream)
        assert type(stream) is not WordStream  # the proxy
        assert repr(stream) == repr(stream.__wrapped__)  # pyright: ignore[reportAttributeAccessIssue]
        assert repr(stream).startswith("WordStream(")


def alternating_model(count: int) -> FunctionModel:
    """`count` deltas alternating between a text part and a thinking part: each delta is a run of its own."""

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        for i in range(count):
            yield f"t{i}" if i % 2 == 0 else {1: DeltaThinkingPart(content=f"k{i}")}

    return FunctionModel(stream_function=stream, model_name="alternating")


@pytest.mark.parametrize("count", [40, 41, 42, 43])
async def test_coalesce_keeps_the_same_first_and_last_events_as_all_under_a_limit(count: int) -> None:
    """Runs of one delta are the events themselves: under a span event limit, coalesce mode keeps exactly the
    events "all" mode keeps (the first ones and the last ones, content included), however long the stream, and
    counts the rest as dropped the same way. Several lengths, so the last ones never fall at a convenient point."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    seen: dict[str, list[tuple[str, Any]]] = {}
    counts: dict[str, dict[str, Any]] = {}
    for mode in ("all", "coalesce"):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(span_limits=SpanLimits(max_events=10))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        model = streamscope.instrument(
            alternating_model(count), span_events=mode, capture_content=True, tracer_provider=provider
        )  # pyright: ignore[reportArgumentType]
        await consume(model)
        (span,) = exporter.get_finished_spans()
        seen[mode] = [(e.name, (e.attributes or {}).get("streamscope.content")) for e in span.events]
        counts[mode] = {k: v for k, v in attrs(span).items() if k.startswith("streamscope.stream.events.")}
    assert len(seen["all"]) == 8
    assert seen["coalesce"] == seen["all"]
    assert counts["coalesce"] == counts["all"]
    last = f"t{count - 1}" if (count - 1) % 2 == 0 else f"k{count - 1}"
    assert (("streamscope.stream.part_delta", last)) in seen["all"][4:]  # the last delta is among the last kept


async def test_a_coalesced_run_counts_only_the_content_its_deltas_carry(otel: Otel) -> None:
    """A thinking part's signature-only delta (as Anthropic streams it) is a delta of the run with no content: the
    run's content length is the text its deltas carried, 4 characters here, and its count all 3 deltas."""

    async def thinking(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaThinkingPart(content="ab")}  # the part start
        yield {0: DeltaThinkingPart(content="cd")}
        yield {0: DeltaThinkingPart(signature="sig-1")}
        yield {0: DeltaThinkingPart(content="ef")}
        yield "done"

    model = streamscope.instrument(
        FunctionModel(stream_function=thinking, model_name="thinker"), span_events="coalesce", **otel.providers
    )
    await consume(model)
    (run,) = [e for e in otel.one_stream_span().events if e.name == "streamscope.stream.part_deltas"]
    assert run.attributes is not None
    assert run.attributes["streamscope.event.coalesced_count"] == 3
    assert run.attributes["streamscope.content.length"] == 4
    assert run.attributes["streamscope.part.index"] == 0


async def test_a_coalesced_run_of_tool_call_deltas_names_no_tool(otel: Otel) -> None:
    """A run's first delta may carry a piece of the tool's name (a name streamed in pieces): the run is not named
    after that piece; the part start that came before it names the tool."""

    async def tool_call(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaToolCall(name="get_")}  # the part start
        yield {0: DeltaToolCall(name="weather")}
        yield {0: DeltaToolCall(json_args='{"city": ')}
        yield {0: DeltaToolCall(json_args='"Paris"}')}

    model = streamscope.instrument(
        FunctionModel(stream_function=tool_call, model_name="caller"), span_events="coalesce", **otel.providers
    )
    await consume(model)
    span = otel.one_stream_span()
    (start,) = [e for e in span.events if e.name == "streamscope.stream.part_start"]
    assert (start.attributes or {})["gen_ai.tool.name"] == "get_"
    (run,) = [e for e in span.events if e.name == "streamscope.stream.part_deltas"]
    assert {k: v for k, v in (run.attributes or {}).items() if "offset" not in k} == {
        "streamscope.event.kind": "part_delta",
        "streamscope.part.index": 0,
        "streamscope.delta.kind": "tool_call",
        "streamscope.event.coalesced_count": 3,
        "streamscope.content.length": 17,
    }


def runs_model() -> FunctionModel:
    """Three runs of deltas: 3 thinking deltas, 4 text deltas, 2 more thinking deltas (each after its part start)."""

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        for word in ["a", "b", "c", "d"]:
            yield {0: DeltaThinkingPart(content=word)}
        for word in ["e", "f", "g", "h", "i"]:
            yield word
        for word in ["j", "k"]:
            yield {0: DeltaThinkingPart(content=word)}

    return FunctionModel(stream_function=stream, model_name="runs")


async def test_every_coalesced_run_is_counted_under_its_kind(otel: Otel) -> None:
    model = streamscope.instrument(runs_model(), span_events="coalesce", **otel.providers)
    await consume(model)
    span = otel.one_stream_span()
    runs = [(e.attributes or {})["streamscope.event.coalesced_count"] for e in span.events if e.name.endswith("deltas")]
    assert runs == [3, 4, 2]
    assert attrs(span)["streamscope.stream.events.coalesced.part_delta"] == 9


@pytest.mark.parametrize("mode", ["all", "coalesce"])
async def test_a_span_limit_of_no_events_keeps_none_and_counts_every_one_as_dropped(mode: str) -> None:
    """SpanLimits(max_events=0): streamscope adds no span event for the SDK to drop; each is counted, by kind."""
    otel = make_otel(max_events=0)
    try:
        events = await consume(streamscope.instrument(runs_model(), span_events=mode, **otel.providers))  # pyright: ignore[reportArgumentType]
        span = otel.one_stream_span()
    finally:
        shutdown_otel(otel)
    assert span.events == ()
    a = attrs(span)
    assert "streamscope.stream.events.sdk_dropped" not in a
    emitted = {k: v for k, v in a.items() if k.startswith("streamscope.stream.events.emitted.")}
    dropped = {k: v for k, v in a.items() if k.startswith("streamscope.stream.events.dropped.")}
    assert set(emitted.values()) == {0}
    assert sum(dropped.values()) == len(events) == a["streamscope.stream.events.total"]


class EventsAtStart(SpanProcessor):
    """Another library's processor that adds span events of its own to every span it sees start."""

    def __init__(self, count: int) -> None:
        self.count = count

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for index in range(self.count):
            span.add_event(f"app.event.{index}")


async def test_span_events_the_sdk_dropped_anyway_are_counted_as_the_sdk_counts_them() -> None:
    """Events someone else added take room streamscope counted on: the SDK drops what no longer fits, and the span
    says how many, as the SDK counted them (streamscope's own counts stay its own)."""
    otel = make_otel(max_events=4, processors=(EventsAtStart(3),))  # 4 - 2 reserved: room for 2 stream events
    try:
        events = await consume(streamscope.instrument(text_model(["a", "b", "c"]), **otel.providers))
        span = otel.one_stream_span()
    finally:
        shutdown_otel(otel)
    a = attrs(span)
    assert (len(span.events), span.dropped_events) == (4, 1)  # 3 + 2 added, the oldest dropped
    assert a["streamscope.stream.events.sdk_dropped"] == 1
    emitted = sum(v for k, v in a.items() if k.startswith("streamscope.stream.events.emitted."))
    dropped = sum(v for k, v in a.items() if k.startswith("streamscope.stream.events.dropped."))
    assert (emitted, emitted + dropped) == (2, len(events))


class ForeignSpan(trace.Span):
    """A span of a tracing SDK other than OpenTelemetry's: recording, but without the SDK's `dropped_events`."""

    def __init__(self, inner: trace.Span) -> None:
        self.inner = inner

    def end(self, end_time: int | None = None) -> None:
        self.inner.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self.inner.get_span_context()

    def set_attributes(self, attributes: Any) -> None:
        self.inner.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.inner.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.inner.add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self.inner.update_name(name)

    def is_recording(self) -> bool:
        return self.inner.is_recording()

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.inner.set_status(status, description)

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        self.inner.record_exception(exception, *args, **kwargs)


class ForeignTracer(trace.Tracer):
    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return ForeignSpan(self.inner.start_span(*args, **kwargs))

    @contextlib.contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        with trace.use_span(self.start_span(*args, **kwargs), end_on_exit=True) as span:
            yield span


class ForeignTracerProvider(trace.TracerProvider):
    def __init__(self, inner: trace.TracerProvider) -> None:
        self.inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return ForeignTracer(self.inner.get_tracer(*args, **kwargs))


async def test_a_foreign_sdks_span_gets_the_whole_record_and_no_sdk_drop_count(otel: Otel) -> None:
    """A tracer provider of another SDK: its recording spans get the stream's span events and counts, and no
    `sdk_dropped` (a number streamscope cannot know there), without an internal error."""
    providers = {**otel.providers, "tracer_provider": ForeignTracerProvider(otel.tracer_provider)}
    events = await consume(streamscope.instrument(text_model(["a", "b"]), **providers))
    span = otel.one_stream_span()
    a = attrs(span)
    assert "streamscope.stream.events.sdk_dropped" not in a
    assert len(span.events) == len(events) == a["streamscope.stream.events.total"]
    assert not any(k.startswith("streamscope.stream.events.dropped.") for k in a)
    assert span.end_time is not None


@pytest.mark.parametrize("room", [1, 2])
async def test_coalesced_runs_beyond_the_span_event_room_are_dropped_and_counted(room: int) -> None:
    """With room for one span event of the stream (the limit less the two streamscope keeps for itself) only the
    first is kept, with room for two the first and the last: the rest are counted as dropped."""
    otel = make_otel(max_events=room + 2)
    try:
        events = await consume(streamscope.instrument(runs_model(), span_events="coalesce", **otel.providers))
        span = otel.one_stream_span()
    finally:
        shutdown_otel(otel)
    assert kinds(span)[:room] == ["part_start", "part_end"][:room]
    a = attrs(span)
    emitted = sum(v for k, v in a.items() if k.startswith("streamscope.stream.events.emitted."))
    dropped = sum(v for k, v in a.items() if k.startswith("streamscope.stream.events.dropped."))
    assert emitted == room
    assert emitted + dropped == len(events) == a["streamscope.stream.events.total"]
