"""Shared helpers for the reliability and safety suite (identity, faults, load, leaks, policy, privacy).

- `SpanLedger`: a real `SpanProcessor` that counts every span started and ended (thread-safe), remembers each
  span's parent, and can run in a bounded-memory mode for the leak tests.
- `OtelDiagnostics`: collects what the OpenTelemetry SDK/API log about misuse: a span ended twice
  ("Calling end() on an ended span.") or a context token detached in the wrong context ("Failed to detach
  context").
- `make_otel()`: the in-memory pipeline of `tests.conftest.Otel`, for code that cannot take a fixture
  (hypothesis examples, subprocess-free loops).
- `OtlpCollector`: a loopback OTLP/HTTP receiver for the real `opentelemetry-exporter-otlp-proto-http`
  exporters; it stores every request body and can hold requests to make an exporter block.
- `pydantic_ai_state()` / `assert_pydantic_ai_unchanged()`: the identity of every attribute of every Pydantic AI
  model and stream class and of every Pydantic AI module, to show `uninstrument()` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType, TracebackType
from typing import Any, Self, cast

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

import streamscope
from tests.conftest import Otel, sum_value

STREAMSCOPE_SCOPE = "streamscope"
END_REASON = "streamscope.stream.end_reason"
OUTCOME = "streamscope.stream.outcome"
EVENTS_TOTAL = "streamscope.stream.events.total"
ACTIVE = "streamscope.streams.active"
FINISHED = "streamscope.streams.finished"

ENDED_TWICE_MESSAGE = "Calling end() on an ended span."
DETACH_FAILED_MESSAGE = "Failed to detach context"


def messages(prompt: str = "Tell me a story") -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart(prompt)])]


def open_stream(model: Model, prompt: str = "Tell me a story") -> AbstractAsyncContextManager[StreamedResponse]:
    """`model.request_stream(...)` with a one-message prompt and default parameters."""
    return model.request_stream(messages(prompt), None, ModelRequestParameters())


MODES = ("instrument(model)", "process-wide")
"""The two ways in: a wrapped model, or every model in the process."""


@contextlib.contextmanager
def instrumented_as(mode: str, model: Model, **options: Any) -> Generator[Model]:
    """`model` instrumented one way or the other; process-wide instrumentation is undone afterwards."""
    if mode == "process-wide":
        streamscope.instrument(**options)
        try:
            yield model
        finally:
            streamscope.uninstrument()
    else:
        assert mode == "instrument(model)", mode
        yield streamscope.instrument(model, **options)


# --- a scripted provider --------------------------------------------------------------------------------------------
class ScriptedError(Exception):
    """What a scripted provider raises."""


def scripted_model(
    *,
    words: int = 4,
    fail_at: int | None = None,
    block_at: int | None = None,
    checkpoints: bool = False,
    name: str = "scripted",
) -> FunctionModel:
    """A real `FunctionModel` streaming a thinking part, `words` text deltas and a tool call with a fixed id.

    `fail_at`: raise `ScriptedError` before item `fail_at` (0: while the stream opens). `block_at`: wait forever
    before item `block_at` (until cancelled). `checkpoints`: yield to the event loop before every item.
    """
    items: list[Any] = [{0: DeltaThinkingPart(content="Let me think. ")}]
    items += [f"word{i} " for i in range(words)]
    items += [
        {9: DeltaToolCall(name="lookup", json_args='{"key": ', tool_call_id="call-lookup")},
        {9: DeltaToolCall(json_args='"value"}')},
    ]

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        for position, item in enumerate(items):
            if position == fail_at:
                raise ScriptedError(f"provider failed at item {position}")
            if position == block_at:
                await anyio.sleep_forever()
            if checkpoints:
                await anyio.lowlevel.checkpoint()
            yield item

    return FunctionModel(stream_function=stream, model_name=name)


EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class StreamResult:
    events: list[Any]
    response: ModelResponse | None
    error: BaseException | None = None


async def drain(model: Model, prompt: str = "Tell me a story") -> StreamResult:
    """Drain one stream; the response has its timestamp normalised so two runs compare equal."""
    result = StreamResult([], None)
    try:
        async with open_stream(model, prompt) as stream:
            async for event in stream:
                result.events.append(event)
            result.response = dataclasses.replace(stream.get(), timestamp=EPOCH)
    except Exception as error:
        result.error = error
    return result


# --- spans ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EndedSpan:
    """What the ledger keeps of one ended span."""

    span_id: int
    trace_id: int
    parent_span_id: int | None
    name: str
    scope: str | None
    attributes: dict[str, Any]


class SpanLedger(SpanProcessor):
    """Counts every span started and ended through the provider it is added to.

    With `keep=True` it also keeps every ended span's identity, parent and attributes (for the load tests); with
    `keep=False` its memory is bounded by the spans in flight (for the leak tests). The SDK calls `on_end` at most
    once per span and logs `Calling end() on an ended span.` on a second `end()`: watch that with `OtelDiagnostics`.
    """

    def __init__(self, *, keep: bool = True) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self.started = 0
        self.ended = 0
        self.in_flight: dict[int, str] = {}
        self.ended_spans: list[EndedSpan] = []
        self.end_reasons: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.unknown_ends = 0  # an end for a span never seen starting (or seen ending already)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span_id = span.get_span_context().span_id
        with self._lock:
            self.started += 1
            self.in_flight[span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        attributes = dict(span.attributes or {})
        scope = span.instrumentation_scope.name if span.instrumentation_scope is not None else None
        with self._lock:
            self.ended += 1
            if self.in_flight.pop(span.context.span_id, None) is None:
                self.unknown_ends += 1
            if scope == STREAMSCOPE_SCOPE:
                self.end_reasons[str(attributes.get(END_REASON))] += 1
                self.outcomes[str(attributes.get(OUTCOME))] += 1
            if self._keep:
                parent = span.parent.span_id if span.parent is not None else None
                self.ended_spans.append(
                    EndedSpan(span.context.span_id, span.context.trace_id, parent, span.name, scope, attributes)
                )

    def stream_spans(self) -> list[EndedSpan]:
        with self._lock:
            return [s for s in self.ended_spans if s.scope == STREAMSCOPE_SCOPE]

    def assert_all_ended_once(self) -> None:
        with self._lock:
            assert self.in_flight == {}, f"{len(self.in_flight)} spans never ended: {list(self.in_flight.values())[:5]}"
            assert self.unknown_ends == 0
            assert self.started == self.ended


class _Collect(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class OtelDiagnostics:
    """Collects WARNING+ records of the `opentelemetry` loggers (API and SDK) while active."""

    def __init__(self) -> None:
        self._handler = _Collect(logging.WARNING)
        self._logger = logging.getLogger("opentelemetry")

    def __enter__(self) -> Self:
        self._logger.addHandler(self._handler)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._logger.removeHandler(self._handler)

    @property
    def records(self) -> list[logging.LogRecord]:
        return list(self._handler.records)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self._handler.records]

    def assert_clean(self) -> None:
        """No span ended twice, no context detached in the wrong context, nothing else the SDK complained about."""
        found = self.messages()
        assert not [m for m in found if ENDED_TWICE_MESSAGE in m], found
        assert not [m for m in found if DETACH_FAILED_MESSAGE in m], found
        assert found == []


@contextlib.contextmanager
def collect_logs(name: str, level: int = logging.DEBUG) -> Generator[list[logging.LogRecord]]:
    """Records of logger `name` (and its children) while the block runs."""
    handler = _Collect(level)
    logger = logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# --- in-memory pipelines --------------------------------------------------------------------------------------------
def make_otel(
    *, max_events: int | None = None, processors: tuple[SpanProcessor, ...] = (), sampler: Sampler | None = None
) -> Otel:
    """A fresh in-memory pipeline (the one the `otel` fixture builds), optionally with a span event limit or a
    sampler."""
    spans_exporter = InMemorySpanExporter()
    limits = SpanLimits(max_events=max_events) if max_events is not None else None
    tracer_provider = TracerProvider(span_limits=limits, sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_exporter))
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    logs_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_exporter))
    return Otel(tracer_provider, meter_provider, logger_provider, spans_exporter, metric_reader, logs_exporter)


def shutdown_otel(otel: Otel) -> None:
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()
    otel.logger_provider.shutdown()


def metric_total(otel: Otel, name: str, **match: Any) -> int | float:
    """The sum of metric `name`'s points matching `match` (0 when the metric was never reported)."""
    return sum_value(otel.metrics().get(name, []), **match)


# --- a loopback OTLP/HTTP collector ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OtlpRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class _CollectorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, collector: OtlpCollector) -> None:
        self.collector = collector
        super().__init__(("127.0.0.1", 0), _CollectorHandler)


class _CollectorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any, **kwargs: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        collector = cast(_CollectorServer, self.server).collector
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        collector._received(OtlpRequest(self.path, headers, body))  # pyright: ignore[reportPrivateUsage]
        collector._hold_if_asked()  # pyright: ignore[reportPrivateUsage]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


class OtlpCollector:
    """An OTLP/HTTP receiver on 127.0.0.1 that keeps every export request; `hold()` makes each request wait
    (so the exporter sending it blocks) until `release()` or `stop()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[OtlpRequest] = []
        self._holding = threading.Event()
        self._released = threading.Event()
        self.arrived = threading.Event()  # set by the first request
        self._server: _CollectorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._server = _CollectorServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="otlp-collector", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def endpoint(self, signal: str) -> str:
        """The URL for `signal` (``traces``, ``metrics`` or ``logs``)."""
        assert self._server is not None, "collector not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/{signal}"

    def hold(self) -> None:
        self._released.clear()
        self._holding.set()

    def release(self) -> None:
        self._holding.clear()
        self._released.set()

    def requests(self, signal: str | None = None) -> list[OtlpRequest]:
        with self._lock:
            found = list(self._requests)
        return [r for r in found if signal is None or r.path == f"/v1/{signal}"]

    def _received(self, request: OtlpRequest) -> None:
        with self._lock:
            self._requests.append(request)
        self.arrived.set()

    def _hold_if_asked(self) -> None:
        if self._holding.is_set():
            self._released.wait(timeout=30)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Pydantic AI, exactly as it was ---------------------------------------------------------------------------------
_ABSENT = object()
StateKey = tuple[str, Any, str]


@dataclass
class PydanticAIState:
    """Every attribute (by identity) of every `Model`/`StreamedResponse` class, and every function, class or other
    callable of every `pydantic_ai` module."""

    values: dict[StateKey, object] = field(default_factory=dict[StateKey, object])
    classes: set[type[Any]] = field(default_factory=set[type[Any]])
    modules: dict[str, ModuleType] = field(default_factory=dict[str, ModuleType])


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    seen: set[type[Any]] = set()
    pending = [cls]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            yield current
            pending.extend(current.__subclasses__())


def pydantic_ai_state() -> PydanticAIState:
    state = PydanticAIState()
    for base in (Model, StreamedResponse):
        for cls in _subclasses(base):
            state.classes.add(cls)
            for name, value in vars(cls).items():
                state.values["class", cls, name] = value
    for name, module in list(sys.modules.items()):
        if (name == "pydantic_ai" or name.startswith("pydantic_ai.")) and isinstance(module, ModuleType):  # pyright: ignore[reportUnnecessaryIsInstance]
            state.modules[name] = module
            for attribute, value in list(vars(module).items()):
                # Functions, classes and other callables (what an instrumentation patches); a module's plain
                # state (counters, flags such as ALLOW_MODEL_REQUESTS) is Pydantic AI's own business.
                if callable(value) or isinstance(value, ModuleType):
                    state.values["module", name, attribute] = value
    return state


def pydantic_ai_differences(before: PydanticAIState, after: PydanticAIState) -> list[str]:
    """What changed between two states, among the classes and modules both know.

    Nothing may be replaced or removed. The only additions allowed are ones Python itself makes while the process
    runs: a submodule bound on its package when first imported, and dunder bookkeeping such as
    `__warningregistry__`.
    """
    problems: list[str] = []
    for key, value in before.values.items():
        kind, owner, attribute = key
        if kind == "class" and owner not in after.classes:
            continue
        now = after.values.get(key, _ABSENT)
        if now is not value:
            problems.append(f"{kind} {owner!r}.{attribute}: {value!r} -> {now!r}")
    for key, value in after.values.items():
        kind, owner, attribute = key
        if key in before.values:
            continue
        known_owner = owner in before.classes if kind == "class" else owner in before.modules
        if not known_owner:
            continue
        if isinstance(value, ModuleType) or (attribute.startswith("__") and attribute.endswith("__")):
            continue
        problems.append(f"{kind} {owner!r}.{attribute} added: {value!r}")
    return problems


def assert_pydantic_ai_unchanged(before: PydanticAIState) -> None:
    problems = pydantic_ai_differences(before, pydantic_ai_state())
    assert problems == [], "\n".join(problems)


@contextlib.contextmanager
def pydantic_ai_left_as_it_was() -> Generator[PydanticAIState]:
    """Assert, after the block (and everything it instrumented) and `uninstrument()`, that nothing changed."""
    before = pydantic_ai_state()
    yield before
    streamscope.uninstrument()  # `instrument(model)` installs sensors that only uninstrument() removes
    assert_pydantic_ai_unchanged(before)


@pytest.fixture
def pydantic_ai_restored() -> Iterator[None]:
    """Fail the test unless Pydantic AI is left exactly as it was (every patched attribute the same object)."""
    with pydantic_ai_left_as_it_was():
        yield
