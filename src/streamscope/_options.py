"""User-facing options: validated once, at instrument time, into an immutable `Options`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

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

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = frozenset({"true", "span_only", "span_and_event"})
_CAPTURE_OFF = frozenset({"", "false", "no_content", "event_only"})

DEFAULT_MAX_CONTENT_LENGTH = 1024
DEFAULT_USAGE_FLUSH_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class Options:
    """Validated instrumentation options (see `streamscope.instrument` for what each one means)."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    capture_content: bool = False
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH
    redact: Redactor | None = None
    span_events: SpanEventMode = "all"
    usage_flush_interval: float = DEFAULT_USAGE_FLUSH_INTERVAL


_OPTION_NAMES = frozenset(Options.__dataclass_fields__)


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Read `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`; content is captured on spans only for
    ``SPAN_ONLY``/``SPAN_AND_EVENT`` (and the legacy ``true``). An unknown value is ignored with a warning."""
    value = (environ if environ is not None else os.environ).get(CAPTURE_CONTENT_ENV, "").strip().lower()
    if value in _CAPTURE_ON:
        return True
    if value not in _CAPTURE_OFF:
        _logger.warning(
            "Ignoring %s=%r: expected NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT",
            CAPTURE_CONTENT_ENV,
            value,
        )
    return False


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

    capture = kwargs.get("capture_content")
    if capture is None:
        capture = capture_content_from_env()
    elif not isinstance(capture, bool):
        raise TypeError(f"capture_content must be a bool or None, got {capture!r}")

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

    return Options(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        capture_content=capture,
        max_content_length=max_len,
        redact=redact,
        span_events=mode,
        usage_flush_interval=float(interval),
    )
