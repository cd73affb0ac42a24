"""`streamscope.configure()` exactly: each error message in full (naming the argument or variable at fault), which
exporters are built for which protocol, the checks made only for the components that read a variable, setting and
refusing the global providers (in process, OpenTelemetry's globals reset for the test), what a failed build shuts
down again, the Prometheus port range, and metric intervals in milliseconds."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import _logs, trace
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

import streamscope
from streamscope import StreamscopeInstrumentor
from streamscope._configure import _prometheus_address
from tests import test_configure, test_exporters

built = test_configure.built  # the exporters configure() builds, per signal
fresh_globals = test_exporters.fresh_globals  # OpenTelemetry's global providers unset for the test

ALREADY_INSTRUMENTED = (
    "streamscope is already instrumented process-wide; call streamscope.uninstrument() first, or pass instrument=False"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in {*test_configure.OTEL_ENV, *test_exporters.OTEL_ENV}:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def configurations() -> Iterator[list[streamscope.Configuration]]:
    """Configurations made by a test, shut down after it even when it fails."""
    made: list[streamscope.Configuration] = []
    yield made
    for configuration in made:
        configuration.shutdown()


def quiet(**kwargs: Any) -> dict[str, Any]:
    """configure()'s arguments for no exporters, not global, and `kwargs`."""
    return {**test_configure.QUIET, **kwargs}


def raised(error_type: type[Exception], **kwargs: Any) -> str:
    """The full message of the error configure(**quiet(**kwargs)) raises."""
    with pytest.raises(error_type) as caught:
        streamscope.configure(**quiet(**kwargs))
    return str(caught.value)


# --- argument errors, in full -----------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["tracer_provider", "meter_provider", "logger_provider"])
def test_a_provider_option_is_refused_pointing_to_instrument(option: str) -> None:
    assert raised(TypeError, **{option: object()}) == (
        "configure() builds the providers itself; use streamscope.instrument() to pass your own"
    )


def test_instrumentation_options_without_instrument_are_listed_sorted() -> None:
    assert raised(TypeError, instrument=False, span_events="coalesce", capture_content=True) == (
        "instrumentation options (capture_content, span_events) need instrument=True"
    )


def test_a_non_string_otlp_endpoint_is_a_type_error() -> None:
    assert raised(TypeError, otlp_endpoint=4318) == "otlp_endpoint must be a URL string, got 4318"


def test_unknown_exporters_are_all_named_with_the_choices() -> None:
    assert raised(ValueError, traces="jaeger, zipkin") == (
        "unknown traces exporter(s) 'jaeger', 'zipkin' in 'traces'; expected some of: console, otlp, or 'none'"
    )
    assert raised(ValueError, metrics=["statsd"]) == (
        "unknown metrics exporter(s) 'statsd' in 'metrics'; expected some of: console, otlp, prometheus, or 'none'"
    )


def test_a_bad_protocol_message_hints_at_http_json_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert raised(ValueError, otlp_protocol="udp") == "otlp_protocol must be 'http/protobuf' or 'grpc', got 'udp'"
    assert raised(ValueError, otlp_protocol="http/json") == (
        "otlp_protocol must be 'http/protobuf' or 'grpc', got 'http/json'"
        " (the Python OTLP exporters do not support http/json)"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")
    assert raised(ValueError, logs="otlp") == (
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL must be 'http/protobuf' or 'grpc', got 'http/json'"
        " (the Python OTLP exporters do not support http/json)"
    )


def test_prometheus_address_without_the_prometheus_exporter_is_refused() -> None:
    message = "prometheus_host/prometheus_port are set, but 'prometheus' is not a metrics exporter"
    assert raised(ValueError, metrics="console", prometheus_port=9464) == message
    assert raised(ValueError, prometheus_host="127.0.0.1") == message


@pytest.mark.parametrize("port", [-1, 65536, True, "9464"])
def test_prometheus_ports_outside_0_to_65535_are_refused(port: Any) -> None:
    assert raised(ValueError, metrics="prometheus", prometheus_host="127.0.0.1", prometheus_port=port) == (
        f"prometheus_port must be a port number from 0 to 65535, got {port!r}"
    )


def test_prometheus_address_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _prometheus_address(None, None, True) == ("localhost", 9464)
    assert _prometheus_address("127.0.0.1", 65535, True) == ("127.0.0.1", 65535)  # the highest port is a port
    assert _prometheus_address("127.0.0.1", 0, True) == ("127.0.0.1", 0)
    assert _prometheus_address(None, None, False) is None
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "65535")
    assert _prometheus_address(None, None, True) == ("0.0.0.0", 65535)
    assert _prometheus_address("::1", 1, True) == ("::1", 1)  # arguments win


@pytest.mark.parametrize("seconds", [True, 0, -1.5, "5"])
def test_metric_export_intervals_that_are_not_positive_numbers_are_refused(seconds: Any) -> None:
    assert raised(ValueError, metrics="console", metric_export_interval=seconds) == (
        f"metric_export_interval must be a positive number of seconds, got {seconds!r}"
    )


@pytest.mark.parametrize(("seconds", "millis"), [(0.5, 500), (1, 1000), (2.25, 2250)])
def test_metric_export_interval_in_seconds_reaches_the_reader_in_milliseconds(
    configurations: list[streamscope.Configuration], seconds: float, millis: float
) -> None:
    configuration = streamscope.configure(**quiet(metrics="console", metric_export_interval=seconds))
    configurations.append(configuration)
    (reader,) = configuration.meter_provider._metric_readers
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert reader._export_interval_millis == millis


# --- the periodic reader's variables are checked when a periodic reader is built -----------------------------------
@pytest.mark.parametrize("metrics", ["console", "otlp", ["prometheus", "console"]])
def test_a_bad_metric_export_timeout_is_refused_for_a_periodic_reader(
    monkeypatch: pytest.MonkeyPatch, metrics: Any
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "soon")
    assert raised(ValueError, metrics=metrics) == ("OTEL_METRIC_EXPORT_TIMEOUT must be a number, got 'soon'")


def test_a_prometheus_endpoint_alone_does_not_read_the_metric_export_timeout(
    monkeypatch: pytest.MonkeyPatch, configurations: list[streamscope.Configuration]
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "soon")  # only a periodic reader reads it
    configuration = streamscope.configure(
        **quiet(metrics="prometheus", prometheus_host="127.0.0.1", prometheus_port=0, instrument=False)
    )
    configurations.append(configuration)
    assert configuration.prometheus_address is not None
    assert configuration.prometheus_address[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("metrics", "pushed"), [("prometheus", []), (["prometheus", "console"], ["ConsoleMetricExporter"])]
)
def test_prometheus_is_served_by_its_endpoint_not_pushed(
    monkeypatch: pytest.MonkeyPatch,
    configurations: list[streamscope.Configuration],
    built: dict[str, list[Any]],
    metrics: Any,
    pushed: list[str],
) -> None:
    """No metric exporter (nor periodic reader) is built for "prometheus": its endpoint's reader serves it."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")  # where a wrong OTLP exporter fails fast
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    configuration = streamscope.configure(
        **quiet(metrics=metrics, prometheus_host="127.0.0.1", prometheus_port=0, instrument=False)
    )
    configurations.append(configuration)
    assert [type(e).__name__ for e in built["metrics"]] == pushed
    readers = configuration.meter_provider._metric_readers
    assert [type(reader).__name__ for reader in readers] == [
        *["PeriodicExportingMetricReader" for _ in pushed],
        "PrometheusMetricReader",
    ]


# --- OTLP exporters per signal and protocol ---------------------------------------------------------------------
def test_the_otlp_protocol_argument_applies_to_every_signal(
    configurations: list[streamscope.Configuration], built: dict[str, list[Any]]
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

    configurations.append(
        streamscope.configure(
            traces="otlp",
            metrics="otlp",
            logs="otlp",
            otlp_protocol="grpc",
            otlp_endpoint="http://127.0.0.1:1",
            set_global=False,
            instrument=False,
        )
    )
    assert [type(e) for e in built["traces"]] == [GrpcSpans]
    assert [type(e) for e in built["metrics"]] == [GrpcMetrics]
    assert [type(e) for e in built["logs"]] == [GrpcLogs]


def test_each_signal_reads_its_own_protocol_variable(
    monkeypatch: pytest.MonkeyPatch, configurations: list[streamscope.Configuration], built: dict[str, list[Any]]
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    configurations.append(
        streamscope.configure(traces="otlp", metrics="otlp", logs="otlp", set_global=False, instrument=False)
    )
    assert [type(e) for e in built["traces"]] == [HttpSpans]
    assert [type(e) for e in built["metrics"]] == [GrpcMetrics]
    assert [type(e) for e in built["logs"]] == [HttpLogs]


# --- a failed build shuts down what it made -----------------------------------------------------------------------
def test_exporters_built_before_a_failure_are_shut_down_and_the_failure_raised(
    built: dict[str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The Prometheus port is taken: the OSError reaches the caller, and the OTLP exporters already built for every
    signal have been shut down (they refuse to export)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            streamscope.configure(
                traces=["console", "otlp"], logs=["console", "otlp"], metrics=["console", "otlp", "prometheus"],
                otlp_endpoint="http://127.0.0.1:1", prometheus_host="127.0.0.1", prometheus_port=port,
                set_global=False,
            )  # fmt: skip
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    otlp = {signal: exporters[1] for signal, exporters in built.items()}
    caplog.set_level(logging.WARNING)
    assert otlp["traces"].export([]) is SpanExportResult.FAILURE
    assert otlp["logs"].export([]) is LogRecordExportResult.FAILURE
    assert otlp["metrics"].export(MetricsData(resource_metrics=[])) is MetricExportResult.FAILURE
    assert [r.getMessage() for r in caplog.records] == ["Exporter already shutdown, ignoring batch"] * 3


# --- global providers and instrumentation -------------------------------------------------------------------------
@pytest.mark.usefixtures("fresh_globals")
def test_the_providers_become_the_global_ones_by_default(configurations: list[streamscope.Configuration]) -> None:
    configuration = streamscope.configure(traces="none", metrics="none", logs="none", instrument=False)
    configurations.append(configuration)
    assert trace.get_tracer_provider() is configuration.tracer_provider
    assert otel_metrics.get_meter_provider() is configuration.meter_provider
    assert _logs.get_logger_provider() is configuration.logger_provider


def set_globals(kinds: list[str]) -> None:
    if "TracerProvider" in kinds:
        trace.set_tracer_provider(TracerProvider())
    if "MeterProvider" in kinds:
        otel_metrics.set_meter_provider(MeterProvider(shutdown_on_exit=False))
    if "LoggerProvider" in kinds:
        _logs.set_logger_provider(LoggerProvider(shutdown_on_exit=False))


@pytest.mark.usefixtures("fresh_globals")
@pytest.mark.parametrize(
    "kinds",
    [["TracerProvider"], ["MeterProvider"], ["LoggerProvider"], ["TracerProvider", "MeterProvider", "LoggerProvider"]],
)
def test_global_providers_already_set_are_named_and_refused(
    kinds: list[str], configurations: list[streamscope.Configuration]
) -> None:
    set_globals(kinds)
    with pytest.raises(RuntimeError) as caught:
        streamscope.configure(traces="none", metrics="none", logs="none")
    assert str(caught.value) == (
        f"a global {', '.join(kinds)} is already set (by opentelemetry-instrument or an earlier configure()?) and "
        "cannot be replaced; pass set_global=False to use the new providers explicitly"
    )
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry  # refused before anything was done
    configurations.append(streamscope.configure(traces="none", metrics="none", logs="none", set_global=False))


def test_instrumenting_twice_is_refused_exactly(configurations: list[streamscope.Configuration]) -> None:
    configurations.append(streamscope.configure(**quiet()))
    assert raised(RuntimeError) == ALREADY_INSTRUMENTED
