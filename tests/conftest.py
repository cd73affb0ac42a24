"""Shared fixtures: explicit OTel providers wired to the SDK's in-memory exporters, never the globals."""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai.models import Model

import streamscope
from streamscope._safety import INTERNAL_LOGGER_NAME
from tests.openai_server import OpenAIStubServer

# `phoenix` (a real OTLP receiver) and `pydantic_ai_restored` (uninstrument leaves Pydantic AI as it was).
pytest_plugins = ["tests.servers", "tests.helpers_reliability"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--matrix",
        choices=("full", "pairwise"),
        default="full",
        help="composition matrices: every cell (default), or a cover of every pair of values (`make mutation`)",
    )


Instrument = Callable[[Model], Model]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Otel:
    """In-memory telemetry pipeline for one test."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    spans_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    logs_exporter: InMemoryLogRecordExporter
    _metrics_cache: dict[str, list[tuple[dict[str, Any], Any]]] = field(default_factory=dict)

    @property
    def providers(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
        }

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_exporter.get_finished_spans())

    def stream_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.instrumentation_scope and s.instrumentation_scope.name == "streamscope"]

    def one_stream_span(self) -> ReadableSpan:
        spans = self.stream_spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name → [(attributes, point)] from one collection (cumulative)."""
        result: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return result
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = result.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        points.append((dict(point.attributes or {}), point))
        return result

    def logs(self) -> list[Any]:
        return list(self.logs_exporter.get_finished_logs())


def sum_value(points: list[tuple[dict[str, Any], Any]], **match: Any) -> int | float:
    """Sum of counter values (or histogram sums) whose attributes include `match` (dots as __)."""
    wanted = {k.replace("__", "."): v for k, v in match.items()}
    total: int | float = 0
    for attributes, point in points:
        if all(attributes.get(k) == v for k, v in wanted.items()):
            total += point.value if hasattr(point, "value") else point.sum
    return total


@contextlib.contextmanager
def in_memory_pipeline() -> Generator[Otel]:
    """Tracer, meter and logger providers exporting to the SDK's in-memory exporters; shut down afterwards."""
    spans_exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_exporter))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    logs_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_exporter))
    yield Otel(tracer_provider, meter_provider, logger_provider, spans_exporter, metric_reader, logs_exporter)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    with in_memory_pipeline() as pipeline:
        yield pipeline


@pytest.fixture
def instrumented(otel: Otel) -> Iterator[Otel]:
    """Process-wide instrumentation into `otel`, undone after the test."""
    streamscope.instrument(**otel.providers)
    try:
        yield otel
    finally:
        streamscope.uninstrument()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def internal_errors() -> Iterator[list[logging.LogRecord]]:
    """Records of streamscope's own failures; a test that expects some takes this fixture and checks them."""
    handler = _Collect()
    logger = logging.getLogger(INTERNAL_LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


class _InnerRunGarbage:
    pending = False


def expect_inner_run_garbage() -> None:
    """Note that a pytest run made in this process left garbage the collector warns about: the event loop
    `Agent.run_sync` makes and leaves open -- dropped unclosed when a later inner test's `asyncio.run` replaced it --
    and the loop's sockets, kept alive by the inner run's records until its test is over. The next test collects it
    first, quietly: left to the collector, it would fail whichever later test the collector happens to run in with a
    ResourceWarning, depending on the order the tests run in (mutation runs order each mutant's tests their own way).
    """
    _InnerRunGarbage.pending = True


def collect_earlier_garbage() -> None:
    """Collect, quietly, what earlier tests left: a test that runs the collector itself does so first, so that its
    own collections find its own garbage only -- and not, depending on the order the tests run in, another test's
    unclosed event loop or socket, whose ResourceWarning would fail it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def _inner_run_garbage_collected() -> None:
    if _InnerRunGarbage.pending:
        _InnerRunGarbage.pending = False
        collect_earlier_garbage()


@pytest.fixture(autouse=True)
def _left_uninstrumented() -> Iterator[None]:
    """Each test starts as a fresh process would: `instrument(model)` installs sensors that outlive its test."""
    yield
    streamscope.uninstrument()


@pytest.fixture(autouse=True)
def _no_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test in which streamscope reported an internal error it did not ask for."""
    handler = _Collect()
    logger = logging.getLogger(INTERNAL_LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if "internal_errors" not in request.fixturenames and handler.records:
        details = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in handler.records)
        pytest.fail(f"streamscope reported internal errors:\n{details}")


@pytest.fixture(params=["explicit", "process_wide"])
def instrument(request: pytest.FixtureRequest, otel: Otel) -> Instrument:
    """Instrument a model explicitly, or (lazily, so a baseline can run first) the whole process."""
    if request.param == "explicit":
        return lambda model: streamscope.instrument(model, **otel.providers)

    def process_wide(model: Model) -> Model:
        request.getfixturevalue("instrumented")
        return model

    return process_wide


@pytest.fixture
def server() -> Iterator[OpenAIStubServer]:
    """A loopback server speaking the OpenAI Chat Completions protocol, for one test."""
    with OpenAIStubServer() as stub:
        yield stub


@pytest.fixture(autouse=True)
def _no_use_of_ended_spans(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A span ended twice (or changed after its end) makes the OTel SDK log a warning: none may appear."""
    caplog.set_level(logging.WARNING, logger="opentelemetry.sdk.trace")
    yield
    misuses = [
        r.getMessage() for r in caplog.records if r.name == "opentelemetry.sdk.trace" and "ended span" in r.getMessage()
    ]
    assert misuses == []
