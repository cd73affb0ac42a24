"""`streamscope.configure()`: argument and environment handling, exporters per signal and protocol, the Prometheus
endpoint, shutdown, and missing extras. (Export to real servers: test_export_phoenix.py and
test_dashboards_prometheus.py.)"""

from __future__ import annotations

import importlib
import json
import logging
import re
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from prometheus_client.exposition import ThreadingWSGIServer
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope
from streamscope import StreamscopeInstrumentor, _exporters
from streamscope._configure import _exporter_names, _protocol

pytestmark = pytest.mark.anyio

OTEL_ENV = (
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BLRP_EXPORT_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


QUIET: dict[str, Any] = {"traces": "none", "metrics": "none", "logs": "none", "set_global": False}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def configurations() -> Iterator[list[streamscope.Configuration]]:
    """Configurations made by a test, shut down after it even when it fails."""
    made: list[streamscope.Configuration] = []
    yield made
    for configuration in made:
        configuration.shutdown()


async def words(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ("one", " two", " three"):
        yield word


async def stream_once(model_name: str = "counter") -> None:
    async with Agent(FunctionModel(stream_function=words, model_name=model_name)).run_stream("count") as result:
        await result.get_output()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The real exporters configure() builds, per signal, recorded as they are made."""
    made: dict[str, list[Any]] = {"traces": [], "metrics": [], "logs": []}
    for signal, factory in (("traces", "span_exporter"), ("metrics", "metric_exporter"), ("logs", "log_exporter")):
        original = getattr(_exporters, factory)

        def record(*args: Any, _original: Any = original, _signal: str = signal) -> Any:
            exporter = _original(*args)
            made[_signal].append(exporter)
            return exporter

        monkeypatch.setattr(_exporters, factory, record)
    return made


# --- arguments and the environment -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"traces": "jaeger"}, "unknown traces exporter(s) 'jaeger' in 'traces'"),
        ({"traces": "prometheus"}, "unknown traces exporter(s) 'prometheus'"),
        ({"logs": ["otlp", "zipkin"]}, "unknown logs exporter(s) 'zipkin'"),
        ({"metrics": "none,otlp"}, "'none' cannot be combined"),
        ({"metrics": ["otlp", "otlp"]}, "duplicate metrics exporter"),
        ({"otlp_protocol": "http/json"}, "do not support http/json"),
        ({"otlp_protocol": "udp"}, "otlp_protocol must be 'http/protobuf' or 'grpc'"),
        ({"otlp_endpoint": " "}, "otlp_endpoint must be an absolute URL with a scheme"),
        ({"otlp_endpoint": "localhost:4318"}, "otlp_endpoint must be an absolute URL with a scheme"),
        ({"otlp_endpoint": "ftp://collector:4318"}, "otlp_endpoint must be an absolute URL with a scheme"),
        ({"metrics": "prometheus", "prometheus_port": 70000}, "prometheus_port must be a port number"),
        ({"metrics": "prometheus", "prometheus_port": True}, "prometheus_port must be a port number"),
        ({"metrics": "prometheus", "prometheus_host": ""}, "prometheus_host must be a host name"),
        ({"prometheus_port": 9464}, "'prometheus' is not a metrics exporter"),
        ({"metric_export_interval": 0}, "metric_export_interval must be a positive number"),
        ({"span_events": "some"}, "span_events must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        streamscope.configure(**{**QUIET, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tracer_provider": object()}, "configure\\(\\) builds the providers itself"),
        ({"instrument": False, "capture_content": True}, "need instrument=True"),
        ({"traces": 3}, "traces must be an exporter name or a list"),
        ({"colour": "blue"}, "unknown streamscope option"),
    ],
)
def test_bad_argument_types_raise_type_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        streamscope.configure(**{**QUIET, **kwargs})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unknown traces exporter(s) 'zipkin' in OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be"),
        ({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "must be a port number"),
    ],
)
def test_bad_environment_values_raise_value_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(message)):
        kwargs: dict[str, Any] = {"logs": "none", "set_global": False}
        if "OTEL_TRACES_EXPORTER" not in env:
            kwargs["traces"] = "none"
        streamscope.configure(**kwargs)


def test_exporter_names_come_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _exporter_names("traces", None) == ["otlp"]  # the specification's default
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", " Prometheus , console ")
    assert _exporter_names("metrics", None) == ["prometheus", "console"]
    assert _exporter_names("metrics", "otlp") == ["otlp"]
    assert _exporter_names("logs", "none") == []
    assert _exporter_names("logs", []) == []


def test_protocol_comes_from_the_argument_then_the_signal_then_the_general_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _protocol("traces", None) == "http/protobuf"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert _protocol("traces", None) == "grpc"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert _protocol("traces", None) == "http/protobuf"
    assert _protocol("metrics", None) == "grpc"
    assert _protocol("metrics", "http/protobuf") == "http/protobuf"


def test_otlp_exporters_per_signal_and_protocol(
    monkeypatch: pytest.MonkeyPatch, configurations: list[streamscope.Configuration], built: dict[str, list[Any]]
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    configurations.append(streamscope.configure(set_global=False, instrument=False))
    assert [type(e) for e in built["traces"]] == [GrpcSpans]
    assert [type(e) for e in built["logs"]] == [GrpcLogs]
    assert [type(e) for e in built["metrics"]] == [HttpMetrics]
    assert built["metrics"][0]._endpoint == "http://127.0.0.1:1/v1/metrics"  # the exporter read the variable


def test_otlp_endpoint_argument_is_a_base_url_like_the_variable(
    configurations: list[streamscope.Configuration], built: dict[str, list[Any]]
) -> None:
    configuration = streamscope.configure(
        traces=["otlp", "console"],
        metrics="otlp",
        logs="otlp",
        otlp_endpoint="http://127.0.0.1:1/",
        metric_export_interval=30,
        set_global=False,
        instrument=False,
    )
    configurations.append(configuration)
    assert built["traces"][0]._endpoint == "http://127.0.0.1:1/v1/traces"
    assert isinstance(built["traces"][1], ConsoleSpanExporter)
    assert built["logs"][0]._endpoint == "http://127.0.0.1:1/v1/logs"
    assert built["metrics"][0]._endpoint == "http://127.0.0.1:1/v1/metrics"
    (reader,) = configuration.meter_provider._metric_readers
    assert isinstance(reader, PeriodicExportingMetricReader)
    assert reader._export_interval_millis == 30_000
    assert _exporters.otlp_endpoint_for("traces", "grpc", "http://127.0.0.1:4317") == "http://127.0.0.1:4317"
    # only trailing slashes go: a path keeps every character it ends with
    assert _exporters.otlp_endpoint_for("logs", "http/protobuf", "http://h:1/BOX//") == "http://h:1/BOX/v1/logs"


def test_resource_from_environment_and_arguments(
    monkeypatch: pytest.MonkeyPatch, configurations: list[streamscope.Configuration]
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=chat")
    configuration = streamscope.configure(
        traces="none", metrics="none", logs="none", set_global=False, instrument=False
    )
    configurations.append(configuration)
    attributes = dict(configuration.tracer_provider.resource.attributes)
    assert attributes["service.name"] == "from-env"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["team"] == "chat"
    assert configuration.meter_provider._sdk_config.resource is configuration.tracer_provider.resource
    assert configuration.logger_provider.resource is configuration.tracer_provider.resource

    explicit = streamscope.configure(
        traces="none",
        metrics="none",
        logs="none",
        service_name="explicit",
        resource_attributes={"team": "search"},
        set_global=False,
        instrument=False,
    )
    configurations.append(explicit)
    attributes = dict(explicit.tracer_provider.resource.attributes)
    assert (attributes["service.name"], attributes["team"]) == ("explicit", "search")  # arguments win
    assert attributes["deployment.environment"] == "staging"


# --- console exporters end to end ---------------------------------------------------------------------
async def test_console_exporters_receive_the_stream(
    capfd: pytest.CaptureFixture[str], built: dict[str, list[Any]]
) -> None:
    with streamscope.configure(
        traces="console", metrics="console", logs="console", service_name="console-test", set_global=False
    ):
        assert isinstance(built["traces"][0], ConsoleSpanExporter)
        assert isinstance(built["metrics"][0], ConsoleMetricExporter)
        assert isinstance(built["logs"][0], ConsoleLogRecordExporter)
        await stream_once()
    output = capfd.readouterr().out  # shutdown flushed everything
    assert '"name": "chat counter"' in output
    assert '"streamscope.stream.outcome": "complete"' in output
    assert '"name": "streamscope.streams.finished"' in output
    assert '"service.name": "console-test"' in output
    assert not streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry  # shutdown undid it


async def test_instrumentation_options_are_passed_on(capfd: pytest.CaptureFixture[str]) -> None:
    with streamscope.configure(
        traces="console", metrics="none", logs="none", set_global=False, capture_content=True, span_events="coalesce"
    ):
        await stream_once()
    output = capfd.readouterr().out
    assert '"streamscope.content": "one"' in output
    assert '"name": "streamscope.stream.part_deltas"' in output


# --- Prometheus endpoint ------------------------------------------------------------------------------
async def test_prometheus_endpoint_serves_metrics_and_stops(configurations: list[streamscope.Configuration]) -> None:
    configuration = streamscope.configure(
        traces="none",
        logs="none",
        metrics="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        service_name="prometheus-test",
        set_global=False,
    )
    configurations.append(configuration)
    assert configuration.prometheus_address is not None
    host, port = configuration.prometheus_address
    assert host == "127.0.0.1"
    assert port > 0
    await stream_once("metered")
    text = await anyio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port}/metrics")
    assert 'target_info{service_instance_id="' in text
    assert 'service_name="prometheus-test"' in text
    assert 'streamscope_streams_finished_total{gen_ai_operation_name="chat"' in text
    assert 'gen_ai_request_model="metered"' in text
    assert "gen_ai_client_operation_duration_seconds_bucket{" in text
    # Served on the address asked for only: another loopback address (all of 127/8 is this host) is refused.
    with pytest.raises(urllib.error.URLError):
        await anyio.to_thread.run_sync(fetch, f"http://127.0.0.2:{port}/metrics")
    configuration.shutdown()
    configuration.shutdown()  # idempotent
    with pytest.raises(urllib.error.URLError):
        await anyio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port}/metrics")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _endpoint_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("streamscope Prometheus endpoint")]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_prometheus_endpoint_on_an_ipv4_or_ipv6_address_or_a_name_serves_without_an_access_log(
    host: str, configurations: list[streamscope.Configuration], capfd: pytest.CaptureFixture[str]
) -> None:
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    configuration = streamscope.configure(
        traces="none", logs="none", metrics="prometheus", prometheus_host=host, prometheus_port=0, set_global=False
    )
    configurations.append(configuration)
    assert configuration.prometheus_address is not None
    assert configuration.prometheus_address[0] == host
    port = configuration.prometheus_address[1]
    [thread] = _endpoint_threads()
    assert thread.name == f"streamscope Prometheus endpoint :{port}"
    assert thread.daemon  # a process that never shuts the configuration down still exits
    await stream_once("served")
    url_host = f"[{host}]" if ":" in host else host
    text = await anyio.to_thread.run_sync(fetch, f"http://{url_host}:{port}/metrics")
    assert 'gen_ai_request_model="served"' in text
    assert capfd.readouterr().err == ""  # no line per scrape on stderr, as prometheus_client's own server
    configuration.shutdown()
    assert not thread.is_alive()
    assert _endpoint_threads() == []


def test_prometheus_address_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, configurations: list[streamscope.Configuration]
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "0")
    configuration = streamscope.configure(traces="none", logs="none", set_global=False, instrument=False)
    configurations.append(configuration)
    assert configuration.prometheus_address is not None
    assert configuration.prometheus_address[0] == "127.0.0.1"


def prometheus_only(port: int, **kwargs: Any) -> streamscope.Configuration:
    return streamscope.configure(
        traces="none",
        logs="none",
        metrics="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=port,
        set_global=False,
        **kwargs,
    )


def test_prometheus_port_in_use_fails_cleanly(configurations: list[streamscope.Configuration]) -> None:
    first = prometheus_only(0, instrument=False)
    configurations.append(first)
    assert first.prometheus_address is not None
    with pytest.raises(OSError, match="in use"):
        prometheus_only(first.prometheus_address[1])
    assert not streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    # The failed attempt unregistered its collector: a new endpoint can register one again.
    configurations.append(prometheus_only(0, instrument=False))


def test_an_endpoint_whose_serving_loop_failed_stops_without_waiting_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serving thread whose loop failed as it began, never serving: shutting down does not ask that loop to stop
    and wait for its answer (forever: the standard library's loop answers from the `finally` it never reached)."""

    loops: list[threading.Thread] = []
    failures: list[BaseException | None] = []

    def failing_loop(self: ThreadingWSGIServer, poll_interval: float = 0.5) -> None:
        loops.append(threading.current_thread())
        raise OSError("the listening socket failed")

    monkeypatch.setattr(ThreadingWSGIServer, "serve_forever", failing_loop)
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    configuration = prometheus_only(0, instrument=False)
    (loop,) = loops
    loop.join(timeout=10)
    assert [str(failure) for failure in failures] == ["the listening socket failed"]
    stopping = threading.Thread(target=configuration.shutdown, daemon=True)
    stopping.start()
    stopping.join(timeout=10)  # a guard against hanging the suite, not a time limit: it returns at once or never
    assert not stopping.is_alive()


# --- instrumentation and globals ----------------------------------------------------------------------
def test_refuses_to_instrument_twice(configurations: list[streamscope.Configuration]) -> None:
    configurations.append(streamscope.configure(traces="none", metrics="none", logs="none", set_global=False))
    with pytest.raises(RuntimeError, match="already instrumented"):
        streamscope.configure(traces="none", metrics="none", logs="none", set_global=False)
    configurations.append(
        streamscope.configure(traces="none", metrics="none", logs="none", set_global=False, instrument=False)
    )


def test_set_global_in_a_fresh_process() -> None:
    """Global providers can be set once per process, so this runs in a child process."""
    script = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import _logs, metrics, trace
        import streamscope
        from tests.test_configure import stream_once

        configuration = streamscope.configure(traces="console", metrics="none", logs="none", service_name="g")
        assert trace.get_tracer_provider() is configuration.tracer_provider
        assert metrics.get_meter_provider() is configuration.meter_provider
        assert _logs.get_logger_provider() is configuration.logger_provider
        asyncio.run(stream_once("global"))
        configuration.shutdown()
        try:
            streamscope.configure(traces="none", metrics="none", logs="none")
        except RuntimeError as error:
            print("second:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert '"name": "chat global"' in result.stdout
    assert "second: a global TracerProvider, MeterProvider, LoggerProvider is already set" in result.stdout


# --- missing extras -----------------------------------------------------------------------------------
GRPC_TRACES = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
HTTP_TRACES = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
PROMETHEUS_READER = "opentelemetry.exporter.prometheus"
PROMETHEUS_ONLY = {"traces": "none", "metrics": "prometheus"}


@pytest.mark.parametrize(
    ("missing", "kwargs", "what", "extra", "named"),
    [
        ([GRPC_TRACES], {"otlp_protocol": "grpc"}, "OTLP traces export over grpc", "otlp-grpc", GRPC_TRACES),
        ([HTTP_TRACES], {}, "OTLP traces export over http/protobuf", "otlp-http", HTTP_TRACES),
        ([PROMETHEUS_READER], PROMETHEUS_ONLY, "The Prometheus /metrics endpoint", "prometheus", PROMETHEUS_READER),
        # the reader imported already, its client library gone
        (["prometheus_client"], PROMETHEUS_ONLY, "The Prometheus /metrics endpoint", "prometheus", "prometheus_client"),
        # neither imported yet: the reader's import fails on the module it needs, which is the one named
        (
            ["prometheus_client", PROMETHEUS_READER],
            PROMETHEUS_ONLY,
            "The Prometheus /metrics endpoint",
            "prometheus",
            "prometheus_client",
        ),
    ],
    ids=["otlp-grpc", "otlp-http", "prometheus reader", "prometheus client", "client under the reader"],
)
def test_missing_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, missing: list[str], kwargs: dict[str, Any], what: str, extra: str, named: str
) -> None:
    """The error says what needed the extra, which extra to install and how, and the module that is missing."""
    if extra == "prometheus":
        importlib.import_module(PROMETHEUS_READER)  # imported, unless this case takes it out again
    monkeypatch.setitem(sys.modules, missing[0], None)  # as if the package were not installed
    for module in missing[1:]:  # not imported yet
        for loaded in [name for name in sys.modules if name == module or name.startswith(f"{module}.")]:
            monkeypatch.delitem(sys.modules, loaded)
    expected = f"{what} needs the '{extra}' extra: pip install 'streamscope[{extra}]' (missing: {named})"
    with pytest.raises(ImportError) as raised:
        options: dict[str, Any] = {**QUIET, "traces": "otlp", **kwargs}
        streamscope.configure(**options)
    assert str(raised.value) == expected
    assert not streamscope.StreamscopeInstrumentor().is_instrumented_by_opentelemetry


# --- the OpenTelemetry environment specification ---------------------------------------------------------------
def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
        monkeypatch.setenv(name, "")
    assert _exporter_names("traces", None) == ["otlp"]  # the default, not "no exporter"
    assert _exporter_names("metrics", None) == ["otlp"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", " ")
    assert _protocol("traces", None) == "http/protobuf"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_METRIC_EXPORT_INTERVAL": "abc"}, "OTEL_METRIC_EXPORT_INTERVAL must be a number, got 'abc'"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "-5"}, "OTEL_METRIC_EXPORT_INTERVAL must be greater than 0"),
        ({"OTEL_METRIC_EXPORT_TIMEOUT": "soon"}, "OTEL_METRIC_EXPORT_TIMEOUT must be a number"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "abc"}, "OTEL_BSP_SCHEDULE_DELAY must be a number"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "1.5"}, "OTEL_BSP_MAX_QUEUE_SIZE must be an integer"),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE (20) must not exceed OTEL_BSP_MAX_QUEUE_SIZE (10)",
        ),
        ({"OTEL_BLRP_EXPORT_TIMEOUT": "-1"}, "OTEL_BLRP_EXPORT_TIMEOUT must be at least 0"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "ten"}, "OTEL_EXPORTER_OTLP_TIMEOUT must be a number"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be an absolute URL"),
        ({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "collector"}, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT must be an absolute"),
    ],
)
def test_bad_sdk_variables_raise_before_anything_is_built(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    """A bad value the SDK would warn about (and replace by its default), or raise on only after other components
    started their threads, is refused before any provider, thread or socket exists."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    threads = {thread.ident for thread in threading.enumerate()}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match=re.escape(message)):
        streamscope.configure(
            traces="otlp", logs="otlp", metrics=["otlp", "prometheus"], prometheus_host="127.0.0.1",
            prometheus_port=port, set_global=False,
        )  # fmt: skip
    assert {thread.ident for thread in threading.enumerate()} == threads  # no exporter or processor thread
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the endpoint never listened
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry


def console_metrics(text: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(name, attributes, value or count) of every data point in the console exporter's JSON documents."""
    decoder = json.JSONDecoder()
    points: list[tuple[str, dict[str, Any], Any]] = []
    position = 0
    while (start := text.find("{", position)) != -1:
        try:
            document, position = decoder.raw_decode(text, start)
        except json.JSONDecodeError:  # a document still being written
            break
        for resource_metrics in document.get("resource_metrics", []):
            for scope_metrics in resource_metrics["scope_metrics"]:
                for metric in scope_metrics["metrics"]:
                    for point in metric["data"]["data_points"]:
                        points.append((metric["name"], point["attributes"], point.get("value", point.get("count"))))
    return points


async def test_metric_export_interval_from_the_environment_reaches_the_reader(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    configuration = streamscope.configure(traces="none", logs="none", metrics="console", set_global=False)
    try:
        await stream_once()
        # Exported within 15 s (on a loaded machine too), where the default interval would take 60 s.
        output = ""
        with anyio.move_on_after(15):
            while not any(name == "streamscope.streams.finished" for name, _, _ in console_metrics(output)):
                await anyio.sleep(0.1)
                output += capfd.readouterr().out
        assert any(name == "streamscope.streams.finished" for name, _, _ in console_metrics(output))
    finally:
        configuration.shutdown()


async def test_two_prometheus_endpoints_serve_only_their_own_metrics(
    configurations: list[streamscope.Configuration],
) -> None:
    first = streamscope.configure(
        traces="none", logs="none", metrics="prometheus", prometheus_host="127.0.0.1", prometheus_port=0,
        set_global=False, instrument=False,
    )  # fmt: skip
    second = streamscope.configure(
        traces="none", logs="none", metrics="prometheus", prometheus_host="127.0.0.1", prometheus_port=0,
        set_global=False, instrument=False,
    )  # fmt: skip
    configurations += [first, second]
    for configuration, model_name in ((first, "first-model"), (second, "second-model")):
        model = streamscope.instrument(
            FunctionModel(stream_function=words, model_name=model_name), meter_provider=configuration.meter_provider
        )
        async with Agent(model).run_stream("count") as result:
            await result.get_output()
    for configuration, mine, theirs in (
        (first, "first-model", "second-model"),
        (second, "second-model", "first-model"),
    ):
        assert configuration.prometheus_address is not None
        host, port = configuration.prometheus_address
        text = await anyio.to_thread.run_sync(fetch, f"http://{host}:{port}/metrics")
        assert f'gen_ai_request_model="{mine}"' in text
        assert theirs not in text


async def test_export_failures_are_reported_by_force_flush_and_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    """OTLP to a port nothing listens on: every export fails; force_flush() and shutdown() say so."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkey_timeout = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in monkey_timeout.items():
            monkeypatch.setenv(name, value)
        configuration = streamscope.configure(
            traces="otlp", metrics="none", logs="none", otlp_endpoint=f"http://127.0.0.1:{port}", set_global=False
        )
    caplog.set_level(logging.WARNING, logger="streamscope")
    try:
        await stream_once()
        assert configuration.force_flush() is False
        assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [
            "streamscope: exporting traces failed (see the exporters' log records)"
        ]
        assert configuration.force_flush() is True  # nothing more failed since
        await stream_once()
    finally:
        assert configuration.shutdown() is False


async def test_shutdown_ends_streams_still_in_flight_and_exports_them(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Streams still open when the configuration shuts down are ended first (interrupted, end reason shutdown),
    their metrics recorded and everything flushed; only then do the providers stop."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    configuration = streamscope.configure(traces="none", logs="none", metrics="console", set_global=False)
    spans = InMemorySpanExporter()
    configuration.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.WARNING, logger="streamscope")
    opened = [Agent(FunctionModel(stream_function=words, model_name="in-flight")).run_stream("go") for _ in range(3)]
    results = [await run.__aenter__() for run in opened]
    for result in results:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            break  # one chunk read: the stream is in flight
    capfd.readouterr()

    await anyio.to_thread.run_sync(configuration.shutdown)

    ended = spans.get_finished_spans()
    assert len(ended) == 3
    for span in ended:
        attributes = dict(span.attributes or {})
        assert (attributes["streamscope.stream.outcome"], attributes["streamscope.stream.end_reason"]) == (
            "interrupted",
            "shutdown",
        )
    exported = console_metrics(capfd.readouterr().out)  # flushed by shutdown (cumulative: each export says 3)
    finished = {
        (a["streamscope.stream.outcome"], v) for name, a, v in exported if name == "streamscope.streams.finished"
    }
    assert finished == {("interrupted", 3)}
    assert {v for name, _, v in exported if name == "streamscope.streams.active"} == {0}
    assert [r.getMessage() for r in caplog.records if r.name == "streamscope"] == [
        "streamscope: ended 3 stream(s) still in flight at shutdown"
    ]
    for run in reversed(opened):  # the application goes on closing its streams: nothing more is recorded
        await run.__aexit__(None, None, None)
    assert len(spans.get_finished_spans()) == 3


def test_shutdown_after_the_user_uninstrumented_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """`streamscope.uninstrument()` before `Configuration.shutdown()` is a clean sequence: shutdown has nothing left
    to undo and says nothing (OpenTelemetry's instrumentor would warn that it was already uninstrumented)."""
    configuration = streamscope.configure(**QUIET)
    assert StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    streamscope.uninstrument()
    with caplog.at_level(logging.DEBUG):
        assert configuration.shutdown()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry
