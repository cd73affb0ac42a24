"""Exporter factories for `configure()`: OTLP over HTTP or gRPC, console, and a Prometheus /metrics endpoint.

The exporters live in optional extras, imported only when asked for; a missing one raises an `ImportError`
that names the extra to install. Endpoints, headers, timeouts, compression and certificates not given here
are read by the OTLP exporters themselves from the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import importlib
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

Signal = Literal["traces", "metrics", "logs"]
Protocol = Literal["grpc", "http/protobuf"]

# (module, class) of each OTLP exporter, per protocol and signal.
_OTLP: dict[Protocol, dict[Signal, tuple[str, str]]] = {
    "http/protobuf": {
        "traces": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
        "metrics": ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
        "logs": ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
    },
    "grpc": {
        "traces": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
        "metrics": ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
        "logs": ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    },
}
_EXTRA: dict[Protocol, str] = {"http/protobuf": "otlp-http", "grpc": "otlp-grpc"}


def _import(module: str, name: str, extra: str, what: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as error:
        raise ImportError(
            f"{what} needs the {extra!r} extra: pip install 'streamscope[{extra}]' (missing: {error.name or module})"
        ) from error


def otlp_endpoint_for(signal: Signal, protocol: Protocol, endpoint: str) -> str:
    """The exporter URL for a base `endpoint`, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read: HTTP appends
    ``/v1/<signal>``, gRPC takes the address as it is."""
    return f"{endpoint.rstrip('/')}/v1/{signal}" if protocol == "http/protobuf" else endpoint


def otlp_exporter(signal: Signal, protocol: Protocol, endpoint: str | None) -> Any:
    """An OTLP exporter for `signal`; without an `endpoint`, the exporter reads it from the environment."""
    module, name = _OTLP[protocol][signal]
    exporter_class = _import(module, name, _EXTRA[protocol], f"OTLP {signal} export over {protocol}")
    if endpoint is None:
        return exporter_class()
    return exporter_class(endpoint=otlp_endpoint_for(signal, protocol, endpoint))


def span_exporter(kind: str, protocol: Protocol, endpoint: str | None) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # today's stdout, not the one at import time
    return otlp_exporter("traces", protocol, endpoint)


def metric_exporter(kind: str, protocol: Protocol, endpoint: str | None) -> MetricExporter:
    if kind == "console":
        return ConsoleMetricExporter(out=sys.stdout)
    return otlp_exporter("metrics", protocol, endpoint)


def log_exporter(kind: str, protocol: Protocol, endpoint: str | None) -> LogRecordExporter:
    if kind == "console":
        return ConsoleLogRecordExporter(out=sys.stdout)
    return otlp_exporter("logs", protocol, endpoint)


# How often the endpoint's serving loop looks whether stop() was asked: the longest stop() waits for it. (The
# standard library's 0.5 s, which prometheus_client's start_http_server keeps, made every shutdown half a second.)
STOP_POLL_SECONDS = 0.05


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds would fill stderr."""


@dataclass(eq=False)
class PrometheusEndpoint:
    """A Prometheus metric reader and the HTTP server that serves it on ``/metrics``."""

    reader: MetricReader
    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        # shutdown() waits for the serving loop's answer: forever from a thread that ended without running the loop
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def prometheus_endpoint(host: str, port: int) -> PrometheusEndpoint:
    """A `PrometheusMetricReader` served on http://host:port/metrics (port 0: any free port).

    Each endpoint has a registry of its own (not `prometheus_client`'s process-wide one), so it serves only the
    metrics of the configuration that made it. Served as `prometheus_client.start_http_server` serves (its WSGI app,
    one thread per request, no access log, IPv4 or IPv6 as `host` is), by a loop that stops within
    `STOP_POLL_SECONDS`.
    """
    what = "The Prometheus /metrics endpoint"
    reader_class = _import("opentelemetry.exporter.prometheus", "PrometheusMetricReader", "prometheus", what)
    registry_class = _import("prometheus_client", "CollectorRegistry", "prometheus", what)
    make_wsgi_app = _import("prometheus_client", "make_wsgi_app", "prometheus", what)
    server_class = _import("prometheus_client.exposition", "ThreadingWSGIServer", "prometheus", what)
    registry = registry_class()
    reader: Any = reader_class(registry=registry)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

        class PrometheusServer(server_class):
            address_family = family

        app = make_wsgi_app(registry)
        server = make_server(str(address[0]), port, app, PrometheusServer, handler_class=_QuietHandler)
    except BaseException:
        reader.shutdown()  # unregister its collector, so a later attempt can register again
        raise
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": STOP_POLL_SECONDS},
        name=f"streamscope Prometheus endpoint :{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return PrometheusEndpoint(reader, host, server.server_address[1], server, thread)


class ExportRecord:
    """Whether the exports of one exporter failed since it was last asked."""

    __slots__ = ("failures", "signal")

    def __init__(self, signal: Signal) -> None:
        self.signal: Signal = signal
        self.failures: int = 0

    def note(self, failed: bool) -> None:
        if failed:
            self.failures += 1

    def take(self) -> int:
        failures, self.failures = self.failures, 0
        return failures


class TrackedSpanExporter(SpanExporter):
    """A span exporter that passes everything through and remembers failed exports."""

    def __init__(self, inner: SpanExporter, record: ExportRecord) -> None:
        self.inner: SpanExporter = inner
        self.record: ExportRecord = record

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.record.note(result is not SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class TrackedLogExporter(LogRecordExporter):
    """A log record exporter that passes everything through and remembers failed exports."""

    def __init__(self, inner: LogRecordExporter, record: ExportRecord) -> None:
        self.inner: LogRecordExporter = inner
        self.record: ExportRecord = record

    def export(self, batch: Sequence[Any]) -> Any:
        result: Any = self.inner.export(batch)
        # The result enum was renamed (LogExportResult, then LogRecordExportResult); both have SUCCESS.
        self.record.note(getattr(result, "name", None) != "SUCCESS")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class TrackedMetricExporter(MetricExporter):
    """A metric exporter that passes everything through and remembers failed exports.

    The reader asks an exporter for its preferred temporality and aggregation; they are the wrapped exporter's
    (which, for OTLP, reads ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``).
    """

    def __init__(self, inner: MetricExporter, record: ExportRecord) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner: MetricExporter = inner
        self.record: ExportRecord = record

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        inner: Any = self.inner
        result: MetricExportResult = inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.record.note(result is not MetricExportResult.SUCCESS)
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner: Any = self.inner
        inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)
