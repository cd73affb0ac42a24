"""The exporters `configure()` builds, in process: what reaches a loopback OTLP/HTTP receiver, what
`Configuration.force_flush()` reports per signal, the OTLP exporters' metric preferences, the wrappers that pass
every call (and its timeout) through to the SDK exporter they wrap, and which streams a configuration's shutdown
ends. (Export to a real server: test_export_phoenix.py.)"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import anyio
import pytest
from opentelemetry import trace
from opentelemetry._logs import _internal as logs_internal
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope
from streamscope._exporters import ExportRecord, TrackedLogExporter, TrackedMetricExporter, TrackedSpanExporter
from tests.conftest import Otel

pytestmark = pytest.mark.anyio

OTEL_ENV = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)
FAILURE_WARNING = "streamscope: exporting {} failed (see the exporters' log records)"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)


# --- a loopback OTLP/HTTP receiver ---------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any, **kwargs: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        receiver = cast(_Server, self.server).receiver
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with receiver.lock:
            receiver.bodies.setdefault(self.path, []).append(body)
            status = receiver.status
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


class Receiver:
    """Keeps the body of every OTLP/HTTP export request and answers `status` (400: a failure not retried)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = 200
        self.bodies: dict[str, list[bytes]] = {}
        self.server = _Server(self)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _bodies(self, signal: str) -> list[bytes]:
        with self.lock:
            return list(self.bodies.get(f"/v1/{signal}", []))

    def traces(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(body) for body in self._bodies("traces")]

    def metrics(self) -> list[ExportMetricsServiceRequest]:
        return [ExportMetricsServiceRequest.FromString(body) for body in self._bodies("metrics")]

    def logs(self) -> list[ExportLogsServiceRequest]:
        return [ExportLogsServiceRequest.FromString(body) for body in self._bodies("logs")]

    def requests(self, signal: str) -> int:
        return len(self._bodies(signal))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    made.thread.start()
    yield made
    made.server.shutdown()
    made.server.server_close()
    made.thread.join(timeout=5)


def span_names(requests: Sequence[ExportTraceServiceRequest]) -> list[str]:
    return [span.name for r in requests for rs in r.resource_spans for ss in rs.scope_spans for span in ss.spans]


def log_bodies(requests: Sequence[ExportLogsServiceRequest]) -> list[str]:
    return [
        record.body.string_value
        for r in requests
        for rl in r.resource_logs
        for sl in rl.scope_logs
        for record in sl.log_records
    ]


def metrics_named(requests: Sequence[ExportMetricsServiceRequest], name: str) -> list[Any]:
    """The metric `name` from each request that has it, in order."""
    return [
        metric
        for r in requests
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
    ]


def otlp_everywhere(receiver: Receiver, **kwargs: Any) -> streamscope.Configuration:
    options: dict[str, Any] = {
        "traces": "otlp",
        "metrics": "otlp",
        "logs": "otlp",
        "otlp_endpoint": receiver.endpoint,
        "set_global": False,
        "instrument": False,
        **kwargs,
    }
    return streamscope.configure(**options)


def emit(configuration: streamscope.Configuration, signal: str, label: str) -> None:
    """One span, one counter increment or one log record, through the configuration's providers."""
    if signal == "traces":
        with configuration.tracer_provider.get_tracer("test").start_as_current_span(label):
            pass
    elif signal == "metrics":
        configuration.meter_provider.get_meter("test").create_counter(label).add(1)
    else:
        configuration.logger_provider.get_logger("test").emit(body=label)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


# --- OTLP export through configure() -------------------------------------------------------------------------------
def test_every_signal_reaches_the_otlp_receiver_and_force_flush_reports_success(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    configuration = otlp_everywhere(receiver)
    caplog.set_level(logging.WARNING)
    try:
        for signal in ("traces", "metrics", "logs"):
            emit(configuration, signal, f"{signal}-item")
        assert configuration.force_flush() is True
        assert span_names(receiver.traces()) == ["traces-item"]
        assert log_bodies(receiver.logs()) == ["logs-item"]
        (counter,) = metrics_named(receiver.metrics(), "metrics-item")
        assert [point.as_int for point in counter.sum.data_points] == [1]
        assert warnings_logged(caplog) == []  # no failure reported, no exporter raised
        emit(configuration, "logs", "second")
        assert configuration.force_flush() is True
        assert log_bodies(receiver.logs()) == ["logs-item", "second"]
    finally:
        assert configuration.shutdown() is True
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_a_refused_export_is_reported_once_for_its_signal(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, signal: str
) -> None:
    """The receiver answers 400 (not retried): the exporter reports a failure, and force_flush() says which signal
    failed, once; after the receiver accepts again, the next flush succeeds."""
    configuration = otlp_everywhere(
        receiver, **{other: "none" for other in ("traces", "metrics", "logs") if other != signal}
    )
    caplog.set_level(logging.WARNING, logger="streamscope")
    try:
        receiver.status = 400
        emit(configuration, signal, "refused")
        assert configuration.force_flush() is False
        assert receiver.requests(signal) == 1  # the export was attempted, and refused
        assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [FAILURE_WARNING.format(signal)]
        receiver.status = 200
        emit(configuration, signal, "accepted")
        assert configuration.force_flush() is True
        assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [FAILURE_WARNING.format(signal)]
    finally:
        assert configuration.shutdown() is True


def test_signals_refused_together_are_reported_in_one_warning(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    configuration = otlp_everywhere(receiver, metrics="none")
    caplog.set_level(logging.WARNING, logger="streamscope")
    try:
        receiver.status = 400
        emit(configuration, "traces", "refused")
        emit(configuration, "logs", "refused")
        assert configuration.force_flush() is False
        assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [
            FAILURE_WARNING.format("logs, traces")
        ]
    finally:
        receiver.status = 200
        configuration.shutdown()


def test_shutdown_is_idempotent_and_says_so(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """A second shutdown() does nothing (no provider is shut down twice: the SDK would warn) and returns True,
    as Configuration's context manager exit after an explicit shutdown() does; force_flush waits as long as the
    SDK's providers do by default (30 s)."""
    assert inspect.signature(streamscope.Configuration.force_flush).parameters["timeout_millis"].default == 30_000
    configuration = otlp_everywhere(receiver)
    emit(configuration, "traces", "before shutdown")
    assert configuration.shutdown() is True
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    requests = receiver.requests("traces")
    assert configuration.shutdown() is True
    assert configuration.shutdown() is True
    assert caplog.records == []
    assert receiver.requests("traces") == requests == 1


def test_otlp_metric_preferences_from_the_environment_apply(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OTLP metric exporter's temporality and histogram aggregation (read from the environment) are what the
    reader configure() builds uses: deltas, and exponential histograms."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram")
    configuration = otlp_everywhere(receiver, traces="none", logs="none")
    try:
        meter = configuration.meter_provider.get_meter("test")
        counter = meter.create_counter("work.done")
        histogram = meter.create_histogram("work.seconds", unit="s")
        counter.add(2)
        histogram.record(1.5)
        assert configuration.force_flush() is True
        counter.add(3)
        assert configuration.force_flush() is True
    finally:
        configuration.shutdown()
    counters = metrics_named(receiver.metrics(), "work.done")
    assert [(c.sum.aggregation_temporality, [p.as_int for p in c.sum.data_points]) for c in counters][:2] == [
        (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA, [2]),
        (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA, [3]),
    ]
    first = metrics_named(receiver.metrics(), "work.seconds")[0]
    assert first.WhichOneof("data") == "exponential_histogram"
    assert [p.count for p in first.exponential_histogram.data_points] == [1]


def test_otlp_metrics_default_to_cumulative_explicit_histograms(receiver: Receiver) -> None:
    configuration = otlp_everywhere(receiver, traces="none", logs="none")
    try:
        meter = configuration.meter_provider.get_meter("test")
        meter.create_counter("work.done").add(2)
        meter.create_histogram("work.seconds", unit="s").record(1.5)
        assert configuration.force_flush() is True
    finally:
        configuration.shutdown()
    counter = metrics_named(receiver.metrics(), "work.done")[0]
    assert counter.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert metrics_named(receiver.metrics(), "work.seconds")[0].WhichOneof("data") == "histogram"


def test_console_log_exporter_writes_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    with streamscope.configure(traces="none", metrics="none", logs="console", set_global=False, instrument=False) as c:
        c.logger_provider.get_logger("test").emit(body="console log line")
        assert c.force_flush() is True
    assert '"body": "console log line"' in capfd.readouterr().out


# --- the wrappers pass every call through -------------------------------------------------------------------------
def default_timeout(method: Any) -> Any:
    return inspect.signature(method).parameters["timeout_millis"].default


class RecordingSpanExporter(SpanExporter):
    """An SDK span exporter that answers `result` and `flushed`, and keeps what it was called with."""

    def __init__(self, result: SpanExportResult, flushed: bool) -> None:
        self.result, self.flushed = result, flushed
        self.calls: list[tuple[Any, ...]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls.append(("export", [span.name for span in spans]))
        return self.result

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.calls.append(("force_flush", timeout_millis))
        return self.flushed


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, result: LogRecordExportResult, flushed: bool) -> None:
        self.result, self.flushed = result, flushed
        self.calls: list[tuple[Any, ...]] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.calls.append(("export", [record.log_record.body for record in batch]))
        return self.result

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.calls.append(("force_flush", timeout_millis))
        return self.flushed


class RecordingMetricExporter(MetricExporter):
    def __init__(self, result: MetricExportResult, flushed: bool) -> None:
        super().__init__()
        self.result, self.flushed = result, flushed
        self.calls: list[tuple[Any, ...]] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.calls.append(("export", metrics_data, timeout_millis, kwargs))
        return self.result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.calls.append(("shutdown", timeout_millis, kwargs))

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.calls.append(("force_flush", timeout_millis))
        return self.flushed


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_tracked_span_exporter_passes_everything_through(outcome: str) -> None:
    result = SpanExportResult.SUCCESS if outcome == "success" else SpanExportResult.FAILURE
    inner = RecordingSpanExporter(result, flushed=outcome == "success")
    record = ExportRecord("traces")
    tracked = TrackedSpanExporter(inner, record)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tracked))
    with provider.get_tracer("test").start_as_current_span("work"):
        pass
    assert record.take() == (outcome == "failure")
    assert tracked.export([]) is result
    assert tracked.force_flush() is inner.flushed
    assert tracked.force_flush(1_234) is inner.flushed
    provider.shutdown()
    assert inner.calls == [
        ("export", ["work"]),
        ("export", []),
        ("force_flush", default_timeout(SpanExporter.force_flush)),
        ("force_flush", 1_234),
        ("shutdown",),
    ]
    assert default_timeout(SpanExporter.force_flush) == 30_000


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_tracked_log_exporter_passes_everything_through(outcome: str) -> None:
    result = LogRecordExportResult.SUCCESS if outcome == "success" else LogRecordExportResult.FAILURE
    inner = RecordingLogExporter(result, flushed=outcome == "success")
    record = ExportRecord("logs")
    tracked = TrackedLogExporter(inner, record)
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(tracked))
    provider.get_logger("test").emit(body="first")
    provider.get_logger("test").emit(body="second")
    assert record.take() == (2 if outcome == "failure" else 0)
    assert record.take() == 0
    assert tracked.export([]) is result
    assert record.take() == (outcome == "failure")
    assert tracked.force_flush() is inner.flushed
    assert tracked.force_flush(1_234) is inner.flushed
    provider.shutdown()
    assert inner.calls == [
        ("export", ["first"]),
        ("export", ["second"]),
        ("export", []),
        ("force_flush", default_timeout(LogRecordExporter.force_flush)),
        ("force_flush", 1_234),
        ("shutdown",),
    ]
    assert default_timeout(LogRecordExporter.force_flush) == 30_000


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_tracked_metric_exporter_in_the_sdk_reader_passes_the_timeouts_on(outcome: str) -> None:
    """Behind a `PeriodicExportingMetricReader`, as configure() builds it: each export and flush reaches the wrapped
    exporter with the time left of the flush, and shutdown with what the reader passes."""
    result = MetricExportResult.SUCCESS if outcome == "success" else MetricExportResult.FAILURE
    inner = RecordingMetricExporter(result, flushed=True)
    record = ExportRecord("metrics")
    tracked = TrackedMetricExporter(inner, record)
    reader = PeriodicExportingMetricReader(tracked, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("test").create_counter("work.done").add(1)
    assert provider.force_flush(timeout_millis=5_000) is True
    assert record.take() == (outcome == "failure")
    (exported, export_data, export_timeout, export_kwargs), (flushed, flush_timeout) = inner.calls
    assert (exported, export_kwargs, flushed) == ("export", {}, "force_flush")
    assert isinstance(export_data, MetricsData)
    assert 4_000 < export_timeout <= 5_000
    assert 4_000 < flush_timeout <= 5_000
    inner.calls.clear()
    provider.shutdown(timeout_millis=5_000)
    *_, (name, timeout_millis, kwargs) = inner.calls
    assert (name, timeout_millis, sorted(kwargs)) == ("shutdown", default_timeout(MetricExporter.shutdown), ["timeout"])
    assert 0 < kwargs["timeout"] <= 5_000  # the reader's time left, as it passes it


def test_tracked_metric_exporter_passes_direct_calls_through() -> None:
    inner = RecordingMetricExporter(MetricExportResult.FAILURE, flushed=False)
    record = ExportRecord("metrics")
    tracked = TrackedMetricExporter(inner, record)
    data = MetricsData(resource_metrics=[])
    assert tracked.export(data) is MetricExportResult.FAILURE
    assert tracked.export(data, timeout_millis=250, extra="kept") is MetricExportResult.FAILURE
    assert record.take() == 2
    assert tracked.force_flush() is False
    assert tracked.force_flush(timeout_millis=250) is False
    tracked.shutdown()
    tracked.shutdown(timeout_millis=250, extra="kept")
    assert inner.calls == [
        ("export", data, default_timeout(MetricExporter.export), {}),
        ("export", data, 250, {"extra": "kept"}),
        ("force_flush", default_timeout(MetricExporter.force_flush)),
        ("force_flush", 250),
        ("shutdown", default_timeout(MetricExporter.shutdown), {}),
        ("shutdown", 250, {"extra": "kept"}),
    ]
    assert (
        default_timeout(MetricExporter.export),
        default_timeout(MetricExporter.force_flush),
        default_timeout(MetricExporter.shutdown),
    ) == (10_000, 10_000, 30_000)


# --- which streams a configuration's shutdown ends ----------------------------------------------------------------
async def words(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ("one", " two", " three"):
        yield word


@pytest.fixture
def fresh_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's global providers unset for this test (as in a new process) and restored after it, so
    configure(set_global=True) can run in this process without leaving its providers behind."""
    for module, kind, proxy in (
        (trace, "TRACER", trace.ProxyTracerProvider()),
        (metrics_internal, "METER", metrics_internal._ProxyMeterProvider()),
        (logs_internal, "LOGGER", logs_internal.ProxyLoggerProvider()),
    ):
        monkeypatch.setattr(module, f"_{kind}_PROVIDER_SET_ONCE", Once())
        monkeypatch.setattr(module, f"_{kind}_PROVIDER", None)
        monkeypatch.setattr(module, f"_PROXY_{kind}_PROVIDER", proxy)


async def in_flight(models: dict[str, Any]) -> dict[str, Any]:
    """A stream per model, opened and one chunk read: in flight."""
    opened = {name: Agent(model).run_stream("go") for name, model in models.items()}
    for run in opened.values():
        result = await run.__aenter__()
        async for _ in result.stream_text(delta=True, debounce_by=None):
            break
    return opened


def ended_by_shutdown(spans: Sequence[ReadableSpan]) -> list[str]:
    return sorted(
        span.name for span in spans if (span.attributes or {}).get("streamscope.stream.end_reason") == "shutdown"
    )


async def test_shutdown_ends_only_the_streams_reporting_to_its_own_providers(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """Not global: the streams on its providers, not those on the global providers or on others."""
    configuration = streamscope.configure(
        traces="none", metrics="none", logs="none", set_global=False, instrument=False
    )
    spans = InMemorySpanExporter()
    configuration.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    mine = {
        "tracer_provider": configuration.tracer_provider,
        "meter_provider": configuration.meter_provider,
        "logger_provider": configuration.logger_provider,
    }
    models = {
        "mine": streamscope.instrument(FunctionModel(stream_function=words, model_name="mine"), **mine),
        "global": streamscope.instrument(FunctionModel(stream_function=words, model_name="global")),
        "other": streamscope.instrument(FunctionModel(stream_function=words, model_name="other"), **otel.providers),
    }
    opened = await in_flight(models)
    caplog.set_level(logging.WARNING, logger="streamscope")
    assert await anyio.to_thread.run_sync(configuration.shutdown) is True
    assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [
        "streamscope: ended 1 stream(s) still in flight at shutdown"
    ]
    assert ended_by_shutdown(spans.get_finished_spans()) == ["chat mine"]
    for run in reversed(opened.values()):
        await run.__aexit__(None, None, None)
    assert ended_by_shutdown(otel.spans()) == []
    assert [span.name for span in otel.stream_spans()] == ["chat other"]


async def test_a_global_configuration_shutdown_also_ends_the_streams_on_the_global_providers(
    fresh_globals: None, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    configuration = streamscope.configure(traces="none", metrics="none", logs="none", instrument=False)
    try:
        assert trace.get_tracer_provider() is configuration.tracer_provider
        spans = InMemorySpanExporter()
        configuration.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        models = {
            "global": streamscope.instrument(FunctionModel(stream_function=words, model_name="global")),
            "other": streamscope.instrument(FunctionModel(stream_function=words, model_name="other"), **otel.providers),
        }
        opened = await in_flight(models)
        caplog.set_level(logging.WARNING, logger="streamscope")
        assert await anyio.to_thread.run_sync(configuration.shutdown) is True
        assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [
            "streamscope: ended 1 stream(s) still in flight at shutdown"
        ]
        assert ended_by_shutdown(spans.get_finished_spans()) == ["chat global"]
        for run in reversed(opened.values()):
            await run.__aexit__(None, None, None)
        assert ended_by_shutdown(otel.spans()) == []
        assert [span.name for span in otel.stream_spans()] == ["chat other"]
    finally:
        configuration.shutdown()
