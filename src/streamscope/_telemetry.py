"""Tracer, logger and metric instruments for one set of options."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import _logs, trace
from opentelemetry.metrics import NoOpMeterProvider

from . import _names as n
from ._metrics import MetricInstruments, instruments_for
from ._options import Options
from ._safety import report_internal_error

try:
    __version__ = version("streamscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0"


@dataclass(frozen=True, slots=True, eq=False)
class Telemetry:
    """Everything a stream needs to report itself: providers' handles and the options they were built for."""

    options: Options
    tracer: trace.Tracer
    logger: _logs.Logger
    metrics: MetricInstruments


def build_telemetry(options: Options) -> Telemetry:
    """Create the tracer and logger, and find the instruments, for the options' providers (default: global).

    A provider that fails here is reported and replaced by the API's no-op one: instrumenting never fails
    because a telemetry backend does.
    """
    try:
        tracer = trace.get_tracer(n.INSTRUMENTATION_NAME, __version__, options.tracer_provider, schema_url=n.SCHEMA_URL)
    except Exception:
        report_internal_error("getting a tracer (spans are off)")
        tracer = trace.NoOpTracer()
    try:
        logger = _logs.get_logger(n.INSTRUMENTATION_NAME, __version__, options.logger_provider, schema_url=n.SCHEMA_URL)
    except Exception:
        report_internal_error("getting a logger (policy-violation log records are off)")
        logger = _logs.NoOpLogger(n.INSTRUMENTATION_NAME)
    try:
        instruments = instruments_for(options.meter_provider, __version__)
    except Exception:
        report_internal_error("creating metric instruments (metrics are off)")
        instruments = instruments_for(NoOpMeterProvider(), __version__)
    return Telemetry(options=options, tracer=tracer, logger=logger, metrics=instruments)
