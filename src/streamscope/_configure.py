"""`configure()`: tracer, meter and logger providers with exporters, and streamscope instrumentation, in one call."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast, get_args

from opentelemetry import _logs, trace
from opentelemetry import metrics as otel_metrics
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider  # pyright: ignore[reportPrivateUsage]
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.types import AttributeValue

from . import _environment as environment
from . import _exporters as ex
from ._exporters import PrometheusEndpoint, Protocol, Signal
from ._instrumentor import StreamscopeInstrumentor
from ._options import build_options
from ._recorder import finish_in_flight
from ._telemetry import Telemetry

_EXPORTERS: dict[Signal, frozenset[str]] = {
    "traces": frozenset({"otlp", "console"}),
    "metrics": frozenset({"otlp", "console", "prometheus"}),
    "logs": frozenset({"otlp", "console"}),
}
_EXPORTER_ENV: dict[Signal, str] = {
    "traces": "OTEL_TRACES_EXPORTER",
    "metrics": "OTEL_METRICS_EXPORTER",
    "logs": "OTEL_LOGS_EXPORTER",
}
_PROVIDER_OPTIONS = frozenset({"tracer_provider", "meter_provider", "logger_provider"})
_DEFAULT_PROMETHEUS_HOST = "localhost"
_DEFAULT_PROMETHEUS_PORT = 9464
_logger = logging.getLogger("streamscope")


@dataclass(eq=False)
class Configuration:
    """What `configure()` set up: the SDK providers (pass them on to other instrumentations) and, when asked
    for, the Prometheus endpoint's bound address. `shutdown()` (or leaving a ``with`` block) ends the streams still
    in flight, flushes and stops everything, and undoes the instrumentation `configure()` turned on."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    prometheus_address: tuple[str, int] | None = None
    """(host, port) the ``/metrics`` endpoint listens on, the real port when 0 was asked for."""
    _prometheus: PrometheusEndpoint | None = field(default=None, repr=False)
    _instrumented: bool = field(default=False, repr=False)
    _global: bool = field(default=False, repr=False)
    _exports: list[ex.ExportRecord] = field(default_factory=list[ex.ExportRecord], repr=False)
    _stopped: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered now. True if every provider finished in time and no export has failed
        since the last flush; a failure is logged, naming the signals."""
        flushed = all(
            provider.force_flush(timeout_millis)
            for provider in (self.tracer_provider, self.meter_provider, self.logger_provider)
        )
        failed = sorted({record.signal for record in self._exports if record.take()})
        if failed:
            _logger.warning("streamscope: exporting %s failed (see the exporters' log records)", ", ".join(failed))
        return flushed and not failed

    def shutdown(self) -> bool:
        """End the streams still in flight (outcome ``interrupted``, end reason ``shutdown``), undo the
        instrumentation, flush, and shut the providers and the endpoint down. Idempotent. True if everything was
        exported (see `force_flush`)."""
        if self._stopped:
            return True
        self._stopped = True
        ended = finish_in_flight(self._owns)
        if ended:
            _logger.warning("streamscope: ended %d stream(s) still in flight at shutdown", ended)
        instrumentor = StreamscopeInstrumentor()
        if self._instrumented and instrumentor.is_instrumented_by_opentelemetry:  # the user may have undone it
            instrumentor.uninstrument()
        exported = self.force_flush()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()
        if self._prometheus is not None:
            self._prometheus.stop()
        return exported

    def _owns(self, telemetry: Telemetry) -> bool:
        """Whether a stream reports to these providers (given explicitly, or as the global ones this set)."""
        options = telemetry.options
        return any(
            given is mine or (given is None and self._global)
            for given, mine in (
                (options.tracer_provider, self.tracer_provider),
                (options.meter_provider, self.meter_provider),
                (options.logger_provider, self.logger_provider),
            )
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def configure(
    *,
    traces: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    logs: str | Sequence[str] | None = None,
    otlp_protocol: Protocol | None = None,
    otlp_endpoint: str | None = None,
    prometheus_host: str | None = None,
    prometheus_port: int | None = None,
    service_name: str | None = None,
    resource_attributes: Mapping[str, AttributeValue] | None = None,
    metric_export_interval: float | None = None,
    set_global: bool = True,
    instrument: bool = True,
    **options: Any,
) -> Configuration:
    """Set up OpenTelemetry for streamscope in one call and return the providers.

    Builds a `TracerProvider`, `MeterProvider` and `LoggerProvider` sharing one `Resource` (from
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, overridden by `service_name`/`resource_attributes`),
    with a `BatchSpanProcessor`, `BatchLogRecordProcessor` and `PeriodicExportingMetricReader` per exporter.
    By default it also makes them the global providers and instruments every Pydantic AI stream with them.

    Args:
        traces, metrics, logs: exporters per signal, a name or a list of names: ``"otlp"``, ``"console"``,
            ``"none"``, and for metrics ``"prometheus"``. Default: ``OTEL_TRACES_EXPORTER``,
            ``OTEL_METRICS_EXPORTER``, ``OTEL_LOGS_EXPORTER`` (comma-separated), else ``"otlp"``.
        otlp_protocol: ``"http/protobuf"`` or ``"grpc"``. Default: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``,
            then ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``"http/protobuf"``.
        otlp_endpoint: base URL of the collector, an absolute http(s) URL read like ``OTEL_EXPORTER_OTLP_ENDPOINT``
            (HTTP appends ``/v1/<signal>``). Default: the exporters read ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]ENDPOINT``
            themselves (``http://localhost:4318`` for HTTP, ``http://localhost:4317`` for gRPC), and headers,
            timeout, compression and certificates likewise.
        prometheus_host, prometheus_port: where the ``"prometheus"`` exporter serves ``/metrics``. Default:
            ``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT``, else localhost:9464; port 0 picks a free port.
        service_name: the ``service.name`` resource attribute; resource_attributes: more of them.
        metric_export_interval: seconds between pushes of metrics (OTLP, console). Default:
            ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds), else 60 s.
        set_global: make the providers the process's global ones (they can be set only once per process).
        instrument: instrument every Pydantic AI stream with these providers (`streamscope.instrument()`).
        **options: streamscope's instrumentation options (see `streamscope.instrument`).

    Environment variables follow the OpenTelemetry specification: an empty one means unset. Raises `ValueError`
    (or `TypeError`) for a bad argument or environment value — including the batch processor, metric reader and
    OTLP exporter variables the SDK would otherwise replace by defaults — before any provider, thread or socket
    is created; `ImportError` naming the extra to install when an exporter's package is missing; `RuntimeError`
    when `set_global` or `instrument` would be silently ignored because global providers or streamscope's
    instrumentation are already in place. A Prometheus endpoint has a registry of its own.
    """
    if _PROVIDER_OPTIONS & options.keys():
        raise TypeError("configure() builds the providers itself; use streamscope.instrument() to pass your own")
    if instrument:
        build_options(**options)  # report bad instrumentation options before building anything
    elif options:
        raise TypeError(f"instrumentation options ({', '.join(sorted(options))}) need instrument=True")
    signals: dict[Signal, list[str]] = {
        "traces": _exporter_names("traces", traces),
        "metrics": _exporter_names("metrics", metrics),
        "logs": _exporter_names("logs", logs),
    }
    if otlp_protocol is not None:
        _protocol("traces", otlp_protocol)  # a bad argument is an error even when no signal uses OTLP
    protocols: dict[Signal, Protocol] = {
        signal: _protocol(signal, otlp_protocol) for signal in signals if "otlp" in signals[signal]
    }
    prometheus = _prometheus_address(prometheus_host, prometheus_port, "prometheus" in signals["metrics"])
    interval_millis = _interval_millis(metric_export_interval)
    if otlp_endpoint is not None:
        if not isinstance(otlp_endpoint, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"otlp_endpoint must be a URL string, got {otlp_endpoint!r}")
        otlp_endpoint = environment.absolute_url(otlp_endpoint, "otlp_endpoint")
    # What the SDK components read themselves: checked now, so nothing is built on a bad value.
    environment.check_otlp(protocols)
    if signals["traces"]:
        environment.check_batch_processor(environment.BSP)
    if signals["logs"]:
        environment.check_batch_processor(environment.BLRP)
    if any(name != "prometheus" for name in signals["metrics"]):
        environment.check_periodic_reader()
    _check_not_taken(set_global=set_global, instrument=instrument)

    def protocol(signal: Signal) -> Protocol:
        return protocols.get(signal, "http/protobuf")

    made: list[Any] = []  # shut down again if a later one cannot be built
    exports: list[ex.ExportRecord] = []

    def keep(exporter: Any, signal: Signal) -> ex.ExportRecord:
        made.append(exporter)
        record = ex.ExportRecord(signal)
        exports.append(record)
        return record

    try:
        span_exporters: list[SpanExporter] = []
        for name in signals["traces"]:
            exporter = ex.span_exporter(name, protocol("traces"), otlp_endpoint)
            span_exporters.append(ex.TrackedSpanExporter(exporter, keep(exporter, "traces")))
        log_exporters: list[LogRecordExporter] = []
        for name in signals["logs"]:
            exporter = ex.log_exporter(name, protocol("logs"), otlp_endpoint)
            log_exporters.append(ex.TrackedLogExporter(exporter, keep(exporter, "logs")))
        metric_exporters: list[MetricExporter] = []
        for name in signals["metrics"]:
            if name != "prometheus":
                exporter = ex.metric_exporter(name, protocol("metrics"), otlp_endpoint)
                metric_exporters.append(ex.TrackedMetricExporter(exporter, keep(exporter, "metrics")))
        endpoint = ex.prometheus_endpoint(*prometheus) if prometheus is not None else None
    except BaseException:
        for exporter in made:
            exporter.shutdown()
        raise

    attributes: dict[str, AttributeValue] = dict(resource_attributes or {})
    if service_name is not None:
        attributes[SERVICE_NAME] = service_name
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource)
    for span_exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    for log_exporter in log_exporters:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    readers: list[MetricReader] = [
        PeriodicExportingMetricReader(exporter, export_interval_millis=interval_millis) for exporter in metric_exporters
    ]
    if endpoint is not None:
        readers.append(endpoint.reader)
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
        _logs.set_logger_provider(logger_provider)
    if instrument:
        StreamscopeInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider, **options
        )
    address = (endpoint.host, endpoint.port) if endpoint is not None else None
    return Configuration(
        tracer_provider, meter_provider, logger_provider, address, endpoint, instrument, set_global, exports
    )


def _exporter_names(signal: Signal, value: str | Sequence[str] | None) -> list[str]:
    source = repr(signal)
    if value is None:
        variable = _EXPORTER_ENV[signal]
        value, source = environment.env(variable) or "otlp", variable  # empty means unset: the default
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"{signal} must be an exporter name or a list of them, got {value!r}")
    names = [v.strip().lower() for v in value if v.strip()]
    unknown = [v for v in names if v != "none" and v not in _EXPORTERS[signal]]
    if unknown:
        raise ValueError(
            f"unknown {signal} exporter(s) {', '.join(map(repr, unknown))} in {source}; "
            f"expected some of: {', '.join(sorted(_EXPORTERS[signal]))}, or 'none'"
        )
    if "none" in names and len(names) > 1:
        raise ValueError(f"'none' cannot be combined with other {signal} exporters in {source}: {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {signal} exporter in {source}: {names}")
    return [v for v in names if v != "none"]


def _protocol(signal: Signal, given: str | None) -> Protocol:
    source = "otlp_protocol"
    if given is None:
        for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            if (value := environment.env(variable)) is not None:
                given, source = value, variable
                break
        else:
            return "http/protobuf"
    if given not in get_args(Protocol):
        hint = " (the Python OTLP exporters do not support http/json)" if given == "http/json" else ""
        raise ValueError(f"{source} must be 'http/protobuf' or 'grpc', got {given!r}{hint}")
    return cast(Protocol, given)


def _prometheus_address(host: str | None, port: int | None, wanted: bool) -> tuple[str, int] | None:
    if not wanted:
        if host is not None or port is not None:
            raise ValueError("prometheus_host/prometheus_port are set, but 'prometheus' is not a metrics exporter")
        return None
    if host is None:
        host = environment.env(environment.PROMETHEUS_HOST) or _DEFAULT_PROMETHEUS_HOST
    if port is None:
        raw = environment.env(environment.PROMETHEUS_PORT)
        try:
            port = int(raw) if raw is not None else _DEFAULT_PROMETHEUS_PORT
        except ValueError:
            raise ValueError(f"{environment.PROMETHEUS_PORT} must be a port number, got {raw!r}") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"prometheus_port must be a port number from 0 to 65535, got {port!r}")
    if not isinstance(host, str) or not host:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"prometheus_host must be a host name or address, got {host!r}")
    return host, port


def _interval_millis(seconds: float | None) -> float | None:
    if seconds is None:
        # Read here, not left to the reader, which would warn and use 60 s on a bad value, or raise only after the
        # span processors have started their threads.
        return environment.milliseconds(environment.METRIC_EXPORT_INTERVAL)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"metric_export_interval must be a positive number of seconds, got {seconds!r}")
    return seconds * 1000


def _check_not_taken(*, set_global: bool, instrument: bool) -> None:
    """Fail before building anything where OpenTelemetry or streamscope would ignore the request silently."""
    if set_global:
        taken = [
            kind
            for kind, provider, proxy in (
                ("TracerProvider", trace.get_tracer_provider(), trace.ProxyTracerProvider),
                ("MeterProvider", otel_metrics.get_meter_provider(), _ProxyMeterProvider),
                ("LoggerProvider", _logs.get_logger_provider(), ProxyLoggerProvider),
            )
            if not isinstance(provider, proxy)
        ]
        if taken:
            raise RuntimeError(
                f"a global {', '.join(taken)} is already set (by opentelemetry-instrument or an earlier "
                "configure()?) and cannot be replaced; pass set_global=False to use the new providers explicitly"
            )
    if instrument and StreamscopeInstrumentor().is_instrumented_by_opentelemetry:
        raise RuntimeError(
            "streamscope is already instrumented process-wide; call streamscope.uninstrument() first, "
            "or pass instrument=False"
        )
