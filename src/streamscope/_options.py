"""User-facing options: validated once, at instrument time, into an immutable `Options`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from opentelemetry._logs import LoggerProvider
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

_logger = logging.getLogger("streamscope")

SpanEventMode = Literal["all", "coalesce", "none"]
"""How stream events become span events.

- ``"all"`` (default): one span event per `ModelResponseStreamEvent`. When a stream has more events than the
  span may hold (`OTEL_SPAN_EVENT_COUNT_LIMIT`, 128 by default), the first and the last events are kept and
  the ones between are counted, per kind, under ``streamscope.stream.events.dropped.<kind>``.
- ``"coalesce"``: every non-delta event (part start/end, final result, ...) is a span event; each run of
  consecutive deltas of one part becomes a single ``streamscope.stream.part_deltas`` event carrying the
  number of deltas, their total content length and the offsets of the first and last. Coalesced deltas are
  counted under ``streamscope.stream.events.coalesced.<kind>``.
- ``"none"``: no span events; the per-kind counts are still recorded on the span.
"""

Redactor = Callable[[str], str]

ChunkTiming = Literal["summary", "per_chunk"]
"""How the time between a stream's chunks (events with new model output) is recorded.

- ``"summary"`` (default): per stream, the mean and the longest gap (``streamscope.stream.chunk_gap.*``, span
  attributes and histograms). A subtraction and a comparison per chunk.
- ``"per_chunk"``: also the conventions' ``gen_ai.client.operation.time_per_output_chunk``, one observation per
  chunk after the first, recorded when the stream ends (one histogram record per chunk: costly on long streams).
"""

ContentCapture = Literal["no_content", "span_only", "event_only", "span_and_event"]
"""Where captured content goes, as `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` names it (lower case).

- ``"no_content"`` (default): nowhere.
- ``"span_only"``: on the span events (``streamscope.content``).
- ``"event_only"``: on OTel log records, one per kept stream event, correlated with the stream span.
- ``"span_and_event"``: both.
"""

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_MODES: frozenset[str] = frozenset(get_args(ContentCapture))
_LEGACY_CAPTURE: dict[str, ContentCapture] = {"true": "span_only", "false": "no_content", "": "no_content"}

DEFAULT_MAX_CONTENT_LENGTH = 1024
DEFAULT_USAGE_FLUSH_INTERVAL = 0.05
DEFAULT_STALL_THRESHOLD = 30.0
MAX_STALL_THRESHOLD = 86_400.0


@dataclass(frozen=True, slots=True)
class Options:
    """Validated instrumentation options (see `streamscope.instrument` for what each one means)."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    capture_content: ContentCapture = "no_content"
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH
    redact: Redactor | None = None
    span_events: SpanEventMode = "all"
    usage_flush_interval: float = DEFAULT_USAGE_FLUSH_INTERVAL
    chunk_timing: ChunkTiming = "summary"
    cost: bool = True
    stall_threshold: float = DEFAULT_STALL_THRESHOLD

    @property
    def content_on_spans(self) -> bool:
        """Captured content goes on span events."""
        return self.capture_content in ("span_only", "span_and_event")

    @property
    def content_on_logs(self) -> bool:
        """Captured content goes on OTel log records."""
        return self.capture_content in ("event_only", "span_and_event")


_OPTION_NAMES = frozenset(Options.__dataclass_fields__)


def _capture_mode(value: str) -> ContentCapture | None:
    lowered = value.strip().lower()
    if lowered in _CAPTURE_MODES:
        return cast(ContentCapture, lowered)
    return _LEGACY_CAPTURE.get(lowered)


def capture_content_from_env() -> ContentCapture:
    """Read `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: ``NO_CONTENT``, ``SPAN_ONLY``, ``EVENT_ONLY`` or
    ``SPAN_AND_EVENT`` (any case; the legacy ``true``/``false`` mean span-only/none; empty means unset). An unknown
    value is ignored with a warning: content is then not captured."""
    value = os.environ.get(CAPTURE_CONTENT_ENV, "")
    mode = _capture_mode(value)
    if mode is None:
        _logger.warning(
            "Ignoring %s=%r: expected NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT",
            CAPTURE_CONTENT_ENV,
            value,
        )
        return "no_content"
    return mode


def build_options(**kwargs: Any) -> Options:
    """Validate keyword options; raise `TypeError`/`ValueError` naming the bad option."""
    unknown = set(kwargs) - _OPTION_NAMES
    if unknown:
        raise TypeError(
            f"unknown streamscope option(s): {', '.join(sorted(unknown))}; "
            f"expected some of: {', '.join(sorted(_OPTION_NAMES))}"
        )
    tracer_provider = kwargs.get("tracer_provider")
    if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
        raise TypeError(f"tracer_provider must be an opentelemetry TracerProvider, got {tracer_provider!r}")
    meter_provider = kwargs.get("meter_provider")
    if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
        raise TypeError(f"meter_provider must be an opentelemetry MeterProvider, got {meter_provider!r}")
    logger_provider = kwargs.get("logger_provider")
    if logger_provider is not None and not isinstance(logger_provider, LoggerProvider):
        raise TypeError(f"logger_provider must be an opentelemetry LoggerProvider, got {logger_provider!r}")

    requested = kwargs.get("capture_content")
    capture: ContentCapture
    if requested is None:
        capture = capture_content_from_env()
    elif isinstance(requested, bool):
        capture = "span_only" if requested else "no_content"
    elif isinstance(requested, str):
        mode = _capture_mode(requested)
        if mode is None or not requested.strip():
            raise ValueError(
                "capture_content must be one of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT "
                f"(or True/False/None), got {requested!r}"
            )
        capture = mode
    else:
        raise TypeError(f"capture_content must be a bool, a capture mode name or None, got {requested!r}")

    max_len = kwargs.get("max_content_length", DEFAULT_MAX_CONTENT_LENGTH)
    if isinstance(max_len, bool) or not isinstance(max_len, int):
        raise TypeError(f"max_content_length must be an int, got {max_len!r}")
    if max_len < 1:
        raise ValueError(f"max_content_length must be at least 1, got {max_len}")

    redact: Redactor | None = kwargs.get("redact")
    if redact is not None and not callable(redact):  # pyright: ignore[reportUnnecessaryComparison]
        raise TypeError(f"redact must be a callable taking and returning a str, got {redact!r}")

    mode = kwargs.get("span_events", "all")
    if mode not in get_args(SpanEventMode):
        raise ValueError(f"span_events must be one of {get_args(SpanEventMode)}, got {mode!r}")

    interval = kwargs.get("usage_flush_interval", DEFAULT_USAGE_FLUSH_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise TypeError(f"usage_flush_interval must be a number of seconds, got {interval!r}")
    if not 0 <= interval <= 60:
        raise ValueError(f"usage_flush_interval must be between 0 and 60 seconds, got {interval}")

    chunk_timing = kwargs.get("chunk_timing", "summary")
    if chunk_timing not in get_args(ChunkTiming):
        raise ValueError(f"chunk_timing must be one of {get_args(ChunkTiming)}, got {chunk_timing!r}")

    cost = kwargs.get("cost", True)
    if not isinstance(cost, bool):
        raise TypeError(f"cost must be True or False, got {cost!r}")

    stall_threshold = kwargs.get("stall_threshold", DEFAULT_STALL_THRESHOLD)
    if isinstance(stall_threshold, bool) or not isinstance(stall_threshold, int | float):
        raise TypeError(f"stall_threshold must be a number of seconds, got {stall_threshold!r}")
    if not 0 < stall_threshold <= MAX_STALL_THRESHOLD:  # also rejects NaN
        raise ValueError(
            f"stall_threshold must be more than 0 and at most {MAX_STALL_THRESHOLD:g} seconds, got {stall_threshold}"
        )

    return Options(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        capture_content=capture,
        max_content_length=max_len,
        redact=redact,
        span_events=mode,
        usage_flush_interval=float(interval),
        chunk_timing=chunk_timing,
        cost=cost,
        stall_threshold=float(stall_threshold),
    )
