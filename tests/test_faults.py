"""Faults in the telemetry pipeline never reach the user's stream.

Each test breaks one part of the pipeline with real SDK parts (or a real OTLP/HTTP exporter) and checks that the
stream still yields exactly what the uninstrumented stream yields, and that a failure inside streamscope is
reported on the `streamscope.internal` logger (failures the SDK itself contains are reported by the SDK's loggers).

Covered: a span exporter that raises, blocks, or points at a closed port (real `OTLPSpanExporter`, metric and
log exporters); a span processor raising in `on_start`/`on_end`; a meter provider raising when asked for a meter or
whose instruments raise; an OTel logger raising while a policy violation is recorded; a redaction hook raising or
returning a non-string. Export never blocks the stream: with a `BatchSpanProcessor` whose exporter is stuck, streams
run as fast as without one (while the same exporter behind a `SimpleSpanProcessor` visibly stalls them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pydantic_ai.models
import pytest
from opentelemetry import baggage, metrics, trace
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import (
    CallbackT,
    Counter,
    Histogram,
    Meter,
    NoOpCounter,
    NoOpHistogram,
    NoOpMeter,
    NoOpMeterProvider,
    ObservableCounter,
    ObservableUpDownCounter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes
from pydantic_ai.models import Model, ModelRequestParameters, check_allow_model_requests
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from streamscope import _opening, _stream
from streamscope._recorder import StreamRecorder
from tests.conftest import Otel
from tests.helpers_reliability import (
    ACTIVE,
    END_REASON,
    EVENTS_TOTAL,
    FINISHED,
    MODES,
    OUTCOME,
    OtlpCollector,
    ScriptedError,
    StreamResult,
    closed_port,
    drain,
    instrumented_as,
    messages,
    metric_total,
    open_stream,
    scripted_model,
)
from tests.openai_server import OpenAIStubServer
from tests.user_models import WordStream, make_model_class

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

INTERNAL = "streamscope.internal"
FINISHING_FAILED = "streamscope failed while finishing a stream span; the stream is unaffected"
ENDING_FAILED = "streamscope failed while ending a stream span; the stream is unaffected"


# --- broken parts ---------------------------------------------------------------------------------------------------
class InjectedError(Exception):
    """The injected fault."""


class RaisingExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise InjectedError("exporter down")


class BlockingExporter(SpanExporter):
    """Blocks every export until released (or `hold_for` seconds pass); counts what it was given."""

    def __init__(self, hold_for: float | None = None) -> None:
        self.hold_for = hold_for
        self.entered = threading.Event()
        self.released = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        if self.hold_for is not None:
            time.sleep(self.hold_for)
        else:
            self.released.wait(timeout=30)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class RaisingProcessor(SpanProcessor):
    def __init__(self, *, on_start: bool = False, on_end: bool = False) -> None:
        self.raise_on_start = on_start
        self.raise_on_end = on_end
        self.raised = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if self.raise_on_start:
            self.raised += 1
            raise InjectedError("on_start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.raise_on_end:
            self.raised += 1
            raise InjectedError("on_end")


class RaisingCounter(NoOpCounter):
    def add(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        raise InjectedError("counter")


class RaisingHistogram(NoOpHistogram):
    def record(self, amount: int | float, attributes: Attributes = None, context: Any = None) -> None:
        raise InjectedError("histogram")


class RaisingInstrumentsMeter(NoOpMeter):
    """Hands out synchronous instruments that raise on every measurement."""

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return RaisingCounter(name)

    def create_histogram(self, name: str, unit: str = "", description: str = "", **kwargs: Any) -> Histogram:
        return RaisingHistogram(name)


class RaisingInstrumentsMeterProvider(NoOpMeterProvider):
    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Attributes = None
    ) -> Meter:
        return RaisingInstrumentsMeter(name)


class RaisingObservablesMeter(NoOpMeter):
    """Refuses to create observable instruments."""

    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableCounter:
        raise InjectedError("observable counter")

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableUpDownCounter:
        raise InjectedError("observable up-down counter")


class RaisingMeterProvider(NoOpMeterProvider):
    def __init__(self, meter: Callable[[str], Meter] | None = None) -> None:
        self.meter = meter

    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Attributes = None
    ) -> Meter:
        if self.meter is None:
            raise InjectedError("get_meter")
        return self.meter(name)


# --- helpers --------------------------------------------------------------------------------------------------------
def assert_same_stream(result: StreamResult, expected: StreamResult) -> None:
    assert result.events == expected.events
    assert result.response == expected.response
    if expected.error is None:
        assert result.error is None
    else:
        assert type(result.error) is type(expected.error)
        assert str(result.error) == str(expected.error)


def injected(records: list[logging.LogRecord]) -> list[BaseException]:
    """The exceptions streamscope reported, in order."""
    found: list[BaseException] = []
    for record in records:
        assert record.name == INTERNAL
        assert record.levelno >= logging.WARNING
        assert record.exc_info is not None and record.exc_info[1] is not None
        found.append(record.exc_info[1])
    return found


def assert_complete_span(otel: Otel) -> None:
    attributes = dict(otel.one_stream_span().attributes or {})
    assert attributes[OUTCOME] == "complete"
    assert attributes[END_REASON] == "exhausted"
    assert int(str(attributes[EVENTS_TOTAL])) > 0


# --- span exporters and processors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("processor", ["simple", "batch"])
async def test_exporter_raising(otel: Otel, mode: str, processor: str) -> None:
    expected = await drain(scripted_model())
    exporter = RaisingExporter()
    span_processor = SimpleSpanProcessor(exporter) if processor == "simple" else BatchSpanProcessor(exporter)
    otel.tracer_provider.add_span_processor(span_processor)
    with instrumented_as(mode, scripted_model(), **otel.providers) as model:
        result = await drain(model)
        span_processor.force_flush()
    assert_same_stream(result, expected)
    assert exporter.calls >= 1  # the fault really happened (the SDK contains and logs it)
    assert_complete_span(otel)  # the other exporter still got the whole span
    assert metric_total(otel, FINISHED, streamscope__stream__outcome="complete") == 1
    assert metric_total(otel, ACTIVE) == 0


@pytest.mark.parametrize("mode", MODES)
async def test_span_processor_raising_on_start(otel: Otel, internal_errors: list[logging.LogRecord], mode: str) -> None:
    expected = await drain(scripted_model())
    raising = RaisingProcessor(on_start=True)
    otel.tracer_provider.add_span_processor(raising)
    with instrumented_as(mode, scripted_model(), **otel.providers) as model:
        result = await drain(model)
    assert_same_stream(result, expected)
    # Process-wide, the `__aiter__` safety net tries once more for the stream `request_stream` could not mark.
    assert 1 <= raising.raised <= (2 if mode == "process-wide" else 1)
    assert [str(e) for e in injected(internal_errors)] == ["on_start"] * raising.raised
    opened = "streamscope failed while instrumenting an opened stream; the stream is unaffected"
    iterated = (
        "streamscope failed while instrumenting a stream iterated outside request_stream; the stream is unaffected"
    )
    expected_messages = [opened, iterated] if mode == "process-wide" else [opened]
    assert [record.getMessage() for record in internal_errors] == expected_messages
    assert metric_total(otel, ACTIVE) == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ending", ["drain", "break", "provider error"])
async def test_span_processor_raising_on_end(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str, ending: str
) -> None:
    def model_for() -> Model:
        return scripted_model(fail_at=3 if ending == "provider error" else None)

    async def consume(model: Model) -> StreamResult:
        if ending != "break":
            return await drain(model)
        result = StreamResult([], None)
        async with open_stream(model) as stream:
            async for event in stream:
                result.events.append(event)
                break
        return result

    expected = await consume(model_for())
    raising = RaisingProcessor(on_end=True)
    otel.tracer_provider.add_span_processor(raising)  # after the exporter's processor: that one still sees the span
    with instrumented_as(mode, model_for(), **otel.providers) as model:
        result = await consume(model)
    assert_same_stream(result, expected)
    if ending == "provider error":
        assert isinstance(result.error, ScriptedError)
    assert raising.raised == 1
    assert [str(e) for e in injected(internal_errors)] == ["on_end"]
    assert [record.getMessage() for record in internal_errors] == [ENDING_FAILED]
    span = otel.one_stream_span()
    attributes = dict(span.attributes or {})
    assert (
        attributes[END_REASON] == {"drain": "exhausted", "break": "consumer_closed", "provider error": "error"}[ending]
    )


@pytest.mark.parametrize("mode", MODES)
async def test_span_processor_raising_on_end_still_counts_the_stream(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str
) -> None:
    otel.tracer_provider.add_span_processor(RaisingProcessor(on_end=True))
    with instrumented_as(mode, scripted_model(), **otel.providers) as model:
        await drain(model)
    assert injected(internal_errors)
    assert metric_total(otel, ACTIVE) == 0
    assert metric_total(otel, FINISHED, streamscope__stream__outcome="complete") == 1
    assert otel.metrics()["gen_ai.client.operation.duration"][0][1].count == 1


@pytest.mark.parametrize("processor_fails_too", [False, True], ids=["span ends", "span end raises too"])
async def test_a_failure_while_finishing_still_ends_the_span_once_and_says_what_failed(
    otel: Otel, internal_errors: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch, processor_fails_too: bool
) -> None:
    """The last safety net: whatever breaks while a stream's telemetry is put together, its span still ends."""
    expected = await drain(scripted_model())

    def fail(*args: Any) -> None:
        raise InjectedError("finish")

    monkeypatch.setattr(StreamRecorder, "_finish", fail)
    ending = RaisingProcessor(on_end=processor_fails_too)
    otel.tracer_provider.add_span_processor(ending)
    model = streamscope.instrument(scripted_model(), **otel.providers)
    assert_same_stream(await drain(model), expected)
    [span] = otel.stream_spans()  # ended once, without the attributes the failed step would have set
    assert span.end_time is not None
    assert END_REASON not in (span.attributes or {})
    assert [str(e) for e in injected(internal_errors)] == ["finish", "on_end"][: 1 + processor_fails_too]
    assert [record.getMessage() for record in internal_errors] == [FINISHING_FAILED, ENDING_FAILED][
        : 1 + processor_fails_too
    ]
    assert ending.raised == processor_fails_too


# --- one of streamscope's own steps failing -------------------------------------------------------------------------
def failed_while(what: str) -> str:
    return f"streamscope failed while {what}; the stream is unaffected"


def raising(name: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise InjectedError(name)

    return fail


@pytest.mark.parametrize("mode", MODES)
async def test_a_failure_while_starting_leaves_the_stream_whole(
    otel: Otel, internal_errors: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The stream is opened uninstrumented; process-wide, its iteration is still seen (as a stream opened
    outside request_stream would be), and recorded."""
    expected = await drain(scripted_model())
    monkeypatch.setattr(_opening, "request_deadline", raising("deadline"))
    with instrumented_as(mode, scripted_model(), **otel.providers) as model:
        assert_same_stream(await drain(model), expected)
    spans = otel.stream_spans()
    assert len(spans) == (1 if mode == "process-wide" else 0)
    for span in spans:
        assert (span.attributes or {})[END_REASON] == "exhausted"
    assert [record.getMessage() for record in internal_errors] == [failed_while("starting to instrument a stream")]
    assert [str(e) for e in injected(internal_errors)] == ["deadline"]


async def test_a_failure_while_instrumenting_the_iterator_leaves_the_stream_whole(
    otel: Otel, internal_errors: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's own iterator is handed out; its span still ends, once, when the stream is closed."""
    expected = await drain(scripted_model())
    monkeypatch.setattr(_stream, "instrument_iterator", raising("iterator"))
    model = streamscope.instrument(scripted_model(), **otel.providers)
    assert_same_stream(await drain(model), expected)
    [span] = otel.stream_spans()
    assert (span.attributes or {})[EVENTS_TOTAL] == 0  # no event was seen
    assert [record.getMessage() for record in internal_errors] == [failed_while("instrumenting a stream's iterator")]
    assert [str(e) for e in injected(internal_errors)] == ["iterator"]


@dataclass
class PinnedIteratorStream(WordStream):
    """A stream whose cached iterator, once set, cannot be replaced (a third party guarding its internals)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_event_iterator" and getattr(self, "_event_iterator", None) is not None:
            raise InjectedError("pinned")
        super().__setattr__(name, value)


async def exhausted_and_recorded(otel: Otel, stream_class: type[WordStream]) -> dict[str, Any]:
    """Stream a model of `stream_class` to its end, instrumented; check its one span counted every event and says
    the stream was exhausted; return the span's attributes."""
    model = streamscope.instrument(make_model_class(stream_class)(), **otel.providers)
    async with open_stream(model) as stream:
        events = [event async for event in stream]
    attributes = dict(otel.one_stream_span().attributes or {})
    assert attributes[EVENTS_TOTAL] == len(events) > 0
    assert attributes[END_REASON] == "exhausted"
    return attributes


async def test_a_stream_that_refuses_the_instrumented_iterator_is_still_recorded(
    otel: Otel, internal_errors: list[logging.LogRecord]
) -> None:
    await exhausted_and_recorded(otel, PinnedIteratorStream)
    assert [record.getMessage() for record in internal_errors] == [failed_while("caching the instrumented iterator")]
    assert [str(e) for e in injected(internal_errors)] == ["pinned"]


@dataclass
class UsagelessOnReadStream(WordStream):
    """A stream whose `usage` fails when read."""

    @property
    def usage(self) -> Any:  # pyright: ignore[reportIncompatibleVariableOverride]
        raise InjectedError("usage")


async def test_a_stream_whose_usage_cannot_be_read_ends_without_token_counts(
    otel: Otel, internal_errors: list[logging.LogRecord]
) -> None:
    attributes = await exhausted_and_recorded(otel, UsagelessOnReadStream)
    assert not [key for key in attributes if key.startswith("gen_ai.usage.")]
    try:  # in newer Pydantic AI releases get() reads `usage` too
        UsagelessOnReadStream(ModelRequestParameters()).get()
        get_reads_usage = False
    except InjectedError:
        get_reads_usage = True
    expected = [
        failed_while("reading usage"),  # at the end, for the token counts
        failed_while("reading usage"),  # for the last usage growth
        *([failed_while("building the response with get()")] if get_reads_usage else []),
    ]
    assert [record.getMessage() for record in internal_errors] == expected
    assert [str(e) for e in injected(internal_errors)] == ["usage"] * len(expected)


# --- export never blocks the stream ---------------------------------------------------------------------------------
async def _timed_streams(model: Model, count: int) -> list[float]:
    durations: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        result = await drain(model)
        durations.append(time.perf_counter() - started)
        assert result.error is None
    return durations


async def test_a_stuck_exporter_behind_a_simple_processor_stalls_the_stream(otel: Otel) -> None:
    """The control for the next tests: this measurement does see an exporter on the stream's path."""
    hold = 0.3
    otel.tracer_provider.add_span_processor(SimpleSpanProcessor(BlockingExporter(hold_for=hold)))
    model = streamscope.instrument(scripted_model(), **otel.providers)
    (duration,) = await _timed_streams(model, 1)
    assert duration >= hold


async def test_batch_processor_with_a_stuck_exporter_never_blocks_the_stream(otel: Otel) -> None:
    exporter = BlockingExporter()
    batch = BatchSpanProcessor(exporter, schedule_delay_millis=10, max_export_batch_size=1)
    otel.tracer_provider.add_span_processor(batch)
    model = streamscope.instrument(scripted_model(words=20), **otel.providers)
    try:
        await _timed_streams(model, 1)
        assert exporter.entered.wait(timeout=10)  # the exporter thread is now stuck in export()
        with anyio.fail_after(10):  # a stream waiting on the exporter would never finish
            await _timed_streams(model, 50)
        # All 50 streams ended while the exporter was still stuck: none waited on it (no timing needed to tell).
        assert not exporter.released.is_set()
        assert exporter.exported == 0
    finally:
        exporter.released.set()
    assert batch.force_flush(timeout_millis=10_000)
    assert exporter.exported == 51
    assert len(otel.stream_spans()) == 51


async def test_batch_processor_with_a_stuck_otlp_collector_never_blocks_the_stream(otel: Otel) -> None:
    with OtlpCollector() as collector:
        collector.hold()
        batch = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=collector.endpoint("traces"), timeout=20),
            schedule_delay_millis=10,
            max_export_batch_size=1,
        )
        otel.tracer_provider.add_span_processor(batch)
        model = streamscope.instrument(scripted_model(words=20), **otel.providers)
        await _timed_streams(model, 1)
        assert collector.arrived.wait(timeout=10)  # the real exporter is now waiting on the collector
        # Blocked on the exporter, a stream would wait for the held collector (the exporter's timeout is 20 s):
        # 30 streams finishing within 10 s while it still holds prove they never wait for it. No wall-time bound
        # per stream: on a loaded machine one may take longer for reasons of its own.
        with anyio.fail_after(10):
            durations = await _timed_streams(model, 30)
        assert len(durations) == 30
        collector.release()
        assert batch.force_flush(timeout_millis=20_000)
        exported = [ExportTraceServiceRequest.FromString(r.body) for r in collector.requests("traces")]
    names = [
        span.name
        for request in exported
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert names == ["chat scripted"] * 31  # nothing lost once the collector answers


async def test_otlp_exporters_pointing_at_a_closed_port(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real OTLP/HTTP exporters for spans, metrics and logs, all pointing at a port nothing listens on."""
    port = closed_port()

    def endpoint(signal: str) -> str:
        return f"http://127.0.0.1:{port}/v1/{signal}"

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint("traces"), timeout=0.5), schedule_delay_millis=10)
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint("metrics"), timeout=0.5), export_interval_millis=20
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint("logs"), timeout=0.5), schedule_delay_millis=10)
    )
    providers: dict[str, Any] = {
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
        "logger_provider": logger_provider,
    }
    expected = await drain(scripted_model())
    expected_failure = await drain(scripted_model(fail_at=2))
    caplog.set_level(logging.WARNING)
    streamscope.instrument(**providers)
    try:
        started = time.perf_counter()
        with anyio.fail_after(10):
            for _ in range(20):
                assert_same_stream(await drain(scripted_model()), expected)
                assert_same_stream(await drain(scripted_model(fail_at=2)), expected_failure)
            # A policy violation, so the log exporter has something to send.
            monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
            denied = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=endpoint(""), api_key="test-key"))
            with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
                await drain_or_raise(denied)
        elapsed = time.perf_counter() - started
    finally:
        streamscope.uninstrument()
    assert elapsed < 5, elapsed  # every export failed in the background; no stream waited for one
    shutdown_started = time.perf_counter()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()
    assert time.perf_counter() - shutdown_started < 30
    # The SDK's exporters did try, failed, and said so (on their loggers, not by raising).
    exporter_warnings = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert exporter_warnings, [r.name for r in caplog.records]
    assert not [r for r in caplog.records if r.name == INTERNAL]


async def drain_or_raise(model: Model) -> None:
    async with open_stream(model) as stream:
        async for _ in stream:
            pass


async def denied_while_unreportable(
    otel: Otel,
    internal_errors: list[logging.LogRecord],
    mode: str,
    model: Model,
    monkeypatch: pytest.MonkeyPatch,
) -> RuntimeError:
    """`model`'s stream, instrumented in `mode`, denied while no span can start (a span processor raising on start):
    the denial reaches the caller, returned here, and streamscope says once that it could not report the stream."""
    otel.tracer_provider.add_span_processor(RaisingProcessor(on_start=True))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with instrumented_as(mode, model, **otel.providers) as instrumented_model, pytest.raises(RuntimeError) as denied:
        await drain_or_raise(instrumented_model)
    assert [record.getMessage() for record in internal_errors] == [
        failed_while("reporting a stream that failed to open")
    ]
    return denied.value


@pytest.mark.parametrize("composition", ["alone", "in a FallbackModel"])
@pytest.mark.parametrize("mode", MODES)
async def test_span_processor_raising_on_start_of_a_stream_that_fails_to_open(
    otel: Otel,
    internal_errors: list[logging.LogRecord],
    mode: str,
    composition: str,
    server: OpenAIStubServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span can start: the denial reaches the caller unchanged and is still recorded, once, about the model
    that was denied (log record, counter, stdlib log; no span to put the event on), and streamscope says it could
    not report the failed stream. In a FallbackModel (each layer instrumented) the layer that failed to report
    still tells the layer above that the denial is recorded: it is not recorded twice."""
    model: Model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    if composition != "alone":
        if mode != "process-wide":
            model = streamscope.instrument(model, **otel.providers)
        model = FallbackModel(model)
    denied = await denied_while_unreportable(otel, internal_errors, mode, model, monkeypatch)
    assert "ALLOW_MODEL_REQUESTS" in str(denied)
    assert [str(e) for e in injected(internal_errors)] == ["on_start"]
    assert metric_total(otel, "streamscope.policy.violations") == 1
    (log,) = [r.log_record for r in otel.logs()]
    assert log.event_name == "streamscope.policy.violation"
    attributes = dict(log.attributes or {})
    assert (attributes["streamscope.policy.model_class"], attributes["gen_ai.request.model"]) == (
        "OpenAIChatModel",
        "gpt-4o",
    )
    assert otel.stream_spans() == []


class CheckingOpener:
    """What a third party's `request_stream` returns: an opener object of its own, checking the policy when it
    is entered -- no frame of the denial has the model as `self`."""

    async def __aenter__(self) -> Any:
        check_allow_model_requests()
        raise AssertionError("requests were allowed")

    async def __aexit__(self, *exc_info: Any) -> None:
        return None


class OpenerModel(make_model_class(WordStream)):  # type: ignore[misc]
    def request_stream(self, *args: Any, **kwargs: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        return CheckingOpener()


@pytest.mark.parametrize("mode", MODES)
async def test_a_denial_no_models_frame_raised_is_still_about_the_model_when_its_stream_cannot_be_reported(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await denied_while_unreportable(otel, internal_errors, mode, OpenerModel(), monkeypatch)  # pyright: ignore[reportAbstractUsage]
    (log,) = [r.log_record for r in otel.logs()]
    assert (log.attributes or {})["streamscope.policy.model_class"] == "OpenerModel"


WORD_MODEL_CLASS = "make_model_class.<locals>.WordModel"
"""How a violation names the class of `make_model_class`'s models (its qualified name)."""


def model_with_an_opener_on_the_object() -> Model:
    """A model whose `request_stream`, replaced on the object (a test double, say), returns a `CheckingOpener`: in no
    release is a frame of its denial a model's (newer releases wrap a model class's own `request_stream` in a frame
    of the model's)."""
    model = make_model_class(WordStream)()  # pyright: ignore[reportAbstractUsage]
    vars(model)["request_stream"] = lambda *args, **kwargs: CheckingOpener()  # pyright: ignore[reportUnknownLambdaType, reportIndexIssue]
    return model


async def test_a_denial_by_an_opener_set_on_the_model_object_is_about_the_model_when_its_stream_cannot_be_reported(
    otel: Otel, internal_errors: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No frame of the denial is a model's: the violation is about the model `instrument()` wraps."""
    model = model_with_an_opener_on_the_object()
    await denied_while_unreportable(otel, internal_errors, "instrument(model)", model, monkeypatch)
    (log,) = [r.log_record for r in otel.logs()]
    assert (log.attributes or {})["streamscope.policy.model_class"] == WORD_MODEL_CLASS


async def test_a_denial_by_an_opener_set_on_the_model_object_is_about_the_model_on_its_span(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same opener, the stream's span starting as usual: the violation is about the model `instrument()` wraps,
    on the span of the failed stream."""
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError):
        await drain_or_raise(streamscope.instrument(model_with_an_opener_on_the_object(), **otel.providers))
    (log,) = [r.log_record for r in otel.logs()]
    assert (log.attributes or {})["streamscope.policy.model_class"] == WORD_MODEL_CLASS
    (violation,) = [e for e in otel.one_stream_span().events if e.name == "streamscope.policy.violation"]
    assert (violation.attributes or {})["streamscope.policy.model_class"] == WORD_MODEL_CLASS


class RoutingModel(make_model_class(WordStream)):  # type: ignore[misc]
    """A third party's router; its request_stream is set on each object (see the test below)."""


async def test_a_denial_an_untaken_attempt_raised_in_no_models_frame_is_about_the_model_the_layer_wraps(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`instrument(router)`, the router's `request_stream` a plain function set on the object that tries an
    instrumented model, then (denied too) a plain one whose denial no model's frame raises: the first denial is its
    layer's; the second reaches the router's layer, which took no part in it, and is about the router."""
    first = streamscope.instrument(make_model_class(WordStream, checks_policy=True)(), **otel.providers)  # pyright: ignore[reportAbstractUsage]

    @asynccontextmanager
    async def routing(*args: Any, **kwargs: Any) -> AsyncGenerator[Any]:
        try:
            async with first.request_stream(*args, **kwargs) as stream:
                yield stream
        except RuntimeError:
            async with CheckingOpener() as stream:
                yield stream

    router = RoutingModel()  # pyright: ignore[reportAbstractUsage]
    vars(router)["request_stream"] = routing  # pyright: ignore[reportIndexIssue]
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError):
        await drain_or_raise(streamscope.instrument(router, **otel.providers))
    assert [(r.log_record.attributes or {})["streamscope.policy.model_class"] for r in otel.logs()] == [
        WORD_MODEL_CLASS,
        "RoutingModel",
    ]


class RequestingFirstModel(make_model_class(WordStream, checks_policy=True)):  # type: ignore[misc]
    """A model whose stream first makes a plain request of its own (say, to warm a cache)."""

    @asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        await self.request(*args[:3])
        async with super().request_stream(*args, **kwargs) as stream:
            yield stream


@pytest.mark.parametrize("mode", MODES)
async def test_a_denial_recorded_by_a_request_inside_a_stream_that_cannot_be_reported_is_recorded_once(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process-wide, the inner request is a layer of its own: it records the denial and says so to the stream's
    layer, which (failing to report its stream) does not record it again."""
    await denied_while_unreportable(otel, internal_errors, mode, RequestingFirstModel(), monkeypatch)  # pyright: ignore[reportAbstractUsage]
    assert metric_total(otel, "streamscope.policy.violations") == 1
    assert [r.log_record.event_name for r in otel.logs()] == ["streamscope.policy.violation"]


# --- meter provider -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_meter_provider_whose_instruments_raise(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str
) -> None:
    expected = await drain(scripted_model())
    providers = {**otel.providers, "meter_provider": RaisingInstrumentsMeterProvider()}
    with instrumented_as(mode, scripted_model(), **providers) as model:
        results = [await drain(model) for _ in range(3)]
    for result in results:
        assert_same_stream(result, expected)
    errors = injected(internal_errors)
    assert errors and all(isinstance(e, InjectedError) for e in errors)
    assert {record.getMessage() for record in internal_errors} == {FINISHING_FAILED}
    # Tracing does not depend on metrics: every span is whole.
    spans = otel.stream_spans()
    assert len(spans) == 3
    for span in spans:
        attributes = dict(span.attributes or {})
        assert attributes[OUTCOME] == "complete"
        assert attributes[EVENTS_TOTAL] == len(expected.events)
        assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["get_meter", "observable instruments"])
async def test_meter_provider_raising_at_instrument_time(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metrics are off: none goes to the global meter provider instead (the application's, which it did not give
    streamscope)."""
    expected = await drain(scripted_model())
    global_reader = InMemoryMetricReader()
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: MeterProvider(metric_readers=[global_reader]))
    meter_provider = RaisingMeterProvider(None if fault == "get_meter" else RaisingObservablesMeter)
    with instrumented_as(mode, scripted_model(), **{**otel.providers, "meter_provider": meter_provider}) as model:
        result = await drain(model)
    assert_same_stream(result, expected)
    assert all(isinstance(e, InjectedError) for e in injected(internal_errors))
    assert [record.getMessage() for record in internal_errors] == [
        failed_while("creating metric instruments (metrics are off)")
    ]
    assert_complete_span(otel)  # spans still work without metrics
    collected = global_reader.get_metrics_data()
    assert collected is None or not collected.resource_metrics


class RaisingTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        raise InjectedError("get_tracer")


class RaisingGetLoggerProvider(LoggerProvider):
    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        raise InjectedError("get_logger")


@pytest.mark.parametrize("mode", MODES)
async def test_providers_failing_to_give_a_tracer_and_a_logger_turn_those_off_and_say_so(
    otel: Otel, internal_errors: list[logging.LogRecord], mode: str
) -> None:
    """No spans, no policy log records; the stream and its metrics as ever."""
    expected = await drain(scripted_model())
    providers = {
        **otel.providers,
        "tracer_provider": RaisingTracerProvider(),
        "logger_provider": RaisingGetLoggerProvider(),
    }
    with instrumented_as(mode, scripted_model(), **providers) as model:
        assert_same_stream(await drain(model), expected)
    assert [record.getMessage() for record in internal_errors] == [
        failed_while("getting a tracer (spans are off)"),
        failed_while("getting a logger (policy-violation log records are off)"),
    ]
    assert [str(e) for e in injected(internal_errors)] == ["get_tracer", "get_logger"]
    assert otel.spans() == []
    assert metric_total(otel, FINISHED, streamscope__stream__outcome="complete") == 1


# --- the OTel logger raising while a policy violation is recorded ---------------------------------------------------
class RaisingLoggerProvider(LoggerProvider):
    def __init__(self) -> None:
        super().__init__()
        self.emitted = 0

    def get_logger(self, *args: Any, **kwargs: Any) -> Any:
        provider = self
        logger = super().get_logger(*args, **kwargs)

        class RaisingLogger(type(logger)):  # type: ignore[misc]
            def emit(self, *a: Any, **k: Any) -> None:
                provider.emitted += 1
                raise InjectedError("log emit")

        logger.__class__ = RaisingLogger
        return logger


async def test_logger_raising_while_emitting_content_leaves_the_stream_and_its_span_whole(
    otel: Otel, internal_errors: list[logging.LogRecord]
) -> None:
    expected = await drain(scripted_model())
    logger_provider = RaisingLoggerProvider()
    model = streamscope.instrument(
        scripted_model(), capture_content="event_only", **{**otel.providers, "logger_provider": logger_provider}
    )
    assert_same_stream(await drain(model), expected)
    assert logger_provider.emitted == 1  # the first content record raised: the rest of the stream's were not tried
    assert [str(e) for e in injected(internal_errors)] == ["log emit"]
    assert [record.getMessage() for record in internal_errors] == [
        "streamscope failed while emitting content log records; the stream is unaffected"
    ]
    assert_complete_span(otel)
    assert metric_total(otel, FINISHED, streamscope__stream__outcome="complete") == 1


async def test_logger_raising_while_recording_a_denial(
    otel: Otel, internal_errors: list[logging.LogRecord], server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger_provider = RaisingLoggerProvider()
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS") as raw:
        await drain_or_raise(model)
    with (
        instrumented_as("process-wide", model, **{**otel.providers, "logger_provider": logger_provider}),
        pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS") as denied,
    ):
        await drain_or_raise(model)
    assert type(denied.value) is RuntimeError
    assert str(denied.value) == str(raw.value)
    assert logger_provider.emitted == 1
    assert [str(e) for e in injected(internal_errors)] == ["log emit"]
    span = otel.one_stream_span()
    assert dict(span.attributes or {})[OUTCOME] == "error"
    assert metric_total(otel, ACTIVE) == 0
    assert server.requests == []


async def test_logger_raising_still_counts_and_logs_the_denial(
    otel: Otel,
    internal_errors: list[logging.LogRecord],
    server: OpenAIStubServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with (
        instrumented_as("process-wide", model, **{**otel.providers, "logger_provider": RaisingLoggerProvider()}),
        pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"),
    ):
        await drain_or_raise(model)
    assert internal_errors
    assert metric_total(otel, "streamscope.policy.violations") == 1
    assert len([r for r in caplog.records if r.name == "streamscope.policy"]) == 1


class RaisingEventSpan(NonRecordingSpan):
    """The application's current span, from a tracing library whose spans refuse events."""

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        raise InjectedError("add_event")


class RaisingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        raise InjectedError("logging filter")


VIOLATION_CHANNELS = {
    "span event": "adding a policy-violation span event",
    "log record": "emitting a policy-violation log record",
    "counter": "counting a policy violation",
    "stdlib log": "logging a policy violation",
}


@pytest.mark.parametrize("channel", list(VIOLATION_CHANNELS))
async def test_each_violation_channel_failing_alone_is_named_and_the_others_still_report(
    otel: Otel,
    internal_errors: list[logging.LogRecord],
    server: OpenAIStubServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    channel: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    providers: dict[str, Any] = dict(otel.providers)
    if channel == "log record":
        providers["logger_provider"] = RaisingLoggerProvider()
    if channel == "counter":
        providers["meter_provider"] = RaisingInstrumentsMeterProvider()
    policy_logger = logging.getLogger("streamscope.policy")
    raising_filter = RaisingFilter()
    if channel == "stdlib log":
        policy_logger.addFilter(raising_filter)
    app_span = RaisingEventSpan(SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)))
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    streamscope.instrument(**providers)
    try:
        with (
            trace.use_span(app_span if channel == "span event" else INVALID_SPAN, end_on_exit=False),
            pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"),
        ):
            await model.request(messages(), None, ModelRequestParameters())
    finally:
        streamscope.uninstrument()
        policy_logger.removeFilter(raising_filter)
    expected = f"streamscope failed while {VIOLATION_CHANNELS[channel]}; the stream is unaffected"
    assert [record.getMessage() for record in internal_errors] == [expected]
    assert [type(error) for error in injected(internal_errors)] == [InjectedError]
    # every other channel reported the violation, once
    logs = [r for r in otel.logs() if r.log_record.event_name == "streamscope.policy.violation"]
    assert len(logs) == (0 if channel == "log record" else 1)
    counted = metric_total(otel, "streamscope.policy.violations")
    assert counted == (0 if channel == "counter" else 1)
    warnings = [r for r in caplog.records if r.name == "streamscope.policy"]
    assert len(warnings) == (0 if channel == "stdlib log" else 1)
    if channel == "span event":
        assert (logs[0].log_record.trace_id, logs[0].log_record.span_id) == (0x1234, 0x5678)


async def test_a_violations_log_record_is_emitted_in_the_callers_context(
    otel: Otel, server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log record's context is the caller's, with the span it is about: log processors that copy baggage
    (a tenant, a request id) onto records find it there."""
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    streamscope.instrument(**otel.providers)
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with (
            otel.tracer_provider.get_tracer("app").start_as_current_span("app operation") as app_span,
            pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"),
        ):
            await model.request(messages(), None, ModelRequestParameters())
    finally:
        otel_context.detach(token)
        streamscope.uninstrument()
    [log] = [r.log_record for r in otel.logs()]
    assert baggage.get_all(log.context) == {"tenant": "acme"}
    assert trace.get_current_span(log.context) is app_span


# --- redaction hook -------------------------------------------------------------------------------------------------
def _raising_hook(text: str) -> str:
    raise InjectedError("redaction")


def _non_str_hook(text: str) -> str:
    return None  # type: ignore[return-value]  # a broken hook


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("span_events", ["all", "coalesce"])
@pytest.mark.parametrize("hook", [_raising_hook, _non_str_hook], ids=["raises", "returns None"])
async def test_redaction_hook_failing(
    otel: Otel,
    internal_errors: list[logging.LogRecord],
    mode: str,
    span_events: str,
    hook: Callable[[str], str],
) -> None:
    expected = await drain(scripted_model())
    options: dict[str, Any] = {"capture_content": True, "redact": hook, "span_events": span_events}
    with instrumented_as(mode, scripted_model(), **otel.providers, **options) as model:
        result = await drain(model)
    assert_same_stream(result, expected)
    assert internal_errors
    # Reported without a traceback: the hook's exception may carry the content it was meant to redact.
    expected_word = "InjectedError" if hook is _raising_hook else "NoneType"
    for record in internal_errors:
        assert record.name == INTERNAL
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert expected_word in record.getMessage()
        assert "content was dropped" in record.getMessage()
    span = otel.one_stream_span()
    events = [dict(event.attributes or {}) for event in span.events]
    assert events and all("streamscope.content" not in event for event in events)
    assert any("streamscope.content.length" in event for event in events)  # nothing else was lost
    assert dict(span.attributes or {})[OUTCOME] == "complete"
