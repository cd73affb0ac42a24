"""Tracer, meter, logger and metric instruments, built once per set of options."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import _logs, metrics, trace
from opentelemetry.metrics import Counter, Histogram, UpDownCounter

from . import _names as n
from ._options import Options

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
    token_usage: Histogram
    operation_duration: Histogram
    time_to_first_chunk: Histogram
    time_per_output_chunk: Histogram
    usage_counters: tuple[tuple[str, Counter], ...]
    stream_events: Counter
    streams_active: UpDownCounter
    streams_finished: Counter
    policy_violations: Counter


def build_telemetry(options: Options) -> Telemetry:
    """Create the tracer, logger and instruments from the options' providers (the globals by default)."""
    tracer = trace.get_tracer(n.INSTRUMENTATION_NAME, __version__, options.tracer_provider, schema_url=n.SCHEMA_URL)
    meter = metrics.get_meter(n.INSTRUMENTATION_NAME, __version__, options.meter_provider, n.SCHEMA_URL)
    logger = _logs.get_logger(n.INSTRUMENTATION_NAME, __version__, options.logger_provider, schema_url=n.SCHEMA_URL)
    return Telemetry(
        options=options,
        tracer=tracer,
        logger=logger,
        token_usage=meter.create_histogram(
            n.METRIC_TOKEN_USAGE,
            unit="{token}",
            description=n.DESCRIPTION_TOKEN_USAGE,
            explicit_bucket_boundaries_advisory=list(n.TOKEN_BUCKETS),
        ),
        operation_duration=meter.create_histogram(
            n.METRIC_OPERATION_DURATION,
            unit="s",
            description=n.DESCRIPTION_OPERATION_DURATION,
            explicit_bucket_boundaries_advisory=list(n.DURATION_BUCKETS),
        ),
        time_to_first_chunk=meter.create_histogram(
            n.METRIC_TIME_TO_FIRST_CHUNK,
            unit="s",
            description=n.DESCRIPTION_TIME_TO_FIRST_CHUNK,
            explicit_bucket_boundaries_advisory=list(n.DURATION_BUCKETS),
        ),
        time_per_output_chunk=meter.create_histogram(
            n.METRIC_TIME_PER_OUTPUT_CHUNK,
            unit="s",
            description=n.DESCRIPTION_TIME_PER_OUTPUT_CHUNK,
            explicit_bucket_boundaries_advisory=list(n.CHUNK_TIME_BUCKETS),
        ),
        usage_counters=tuple(
            (
                field,
                meter.create_counter(
                    metric_name,
                    unit="{token}",
                    description=f"Growth of the stream's usage.{field}, as it happens.",
                ),
            )
            for field, metric_name, _ in n.USAGE_FIELDS
        ),
        stream_events=meter.create_counter(
            n.METRIC_STREAM_EVENTS, unit="{event}", description="Stream events seen, by kind."
        ),
        streams_active=meter.create_up_down_counter(
            n.METRIC_STREAMS_ACTIVE, unit="{stream}", description="Streams opened and not yet finished."
        ),
        streams_finished=meter.create_counter(
            n.METRIC_STREAMS_FINISHED, unit="{stream}", description="Streams finished, by outcome."
        ),
        policy_violations=meter.create_counter(
            n.METRIC_POLICY_VIOLATIONS,
            unit="{violation}",
            description="Model requests denied by a policy (check_allow_model_requests).",
        ),
    )
