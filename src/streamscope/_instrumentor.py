"""`StreamscopeInstrumentor` and the `instrument()`/`uninstrument()` facade."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any, overload

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from pydantic_ai.models import Model, infer_model

from . import _guards, _sensors
from ._model import StreamscopeModel, find_streamscope_model
from ._options import build_options
from ._patching import ProcessPatches
from ._recorder import finish_orphans
from ._telemetry import build_telemetry

_INSTRUMENTS = ("pydantic-ai-slim >= 2.0, < 3",)
_BASE_INSTRUMENTOR_OPTIONS = frozenset({"skip_dep_check", "raise_exception_on_conflict"})


class StreamscopeInstrumentor(BaseInstrumentor):  # pyright: ignore[reportUntypedBaseClass]
    """OpenTelemetry instrumentor for every Pydantic AI stream in the process.

    `StreamscopeInstrumentor().instrument(**options)` patches the request methods of every model class that
    answers requests itself (existing ones, and ones created later, whatever the import order), and the
    `StreamedResponse.__aiter__` base (a safety net for streams opened elsewhere); `uninstrument()` restores
    the original objects. It is registered under the `opentelemetry_instrumentor` entry point, so
    `opentelemetry-instrument` finds it.
    """

    _patches: ProcessPatches | None = None
    _lock = threading.Lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = build_telemetry(build_options(**kwargs))
        with self._lock:
            patches = ProcessPatches(telemetry)
            patches.install()
            _sensors.install()
            _guards.use_process_telemetry(telemetry)
            type(self)._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            patches = type(self)._patches
            if patches is not None:
                patches.remove()
            _sensors.remove()
            _guards.use_process_telemetry(None)
            type(self)._patches = None


@overload
def instrument(model: None = None, /, **options: Any) -> None: ...
@overload
def instrument(model: Model | str, /, **options: Any) -> Model: ...
def instrument(model: Model | str | None = None, /, **options: Any) -> Model | None:
    """Instrument one model, or every Pydantic AI stream in the process.

    With a model (a `Model` instance or a name such as ``"openai:gpt-4o"``), return a `StreamscopeModel`
    wrapping it: each stream it opens is one span with a span event per stream event, usage-delta and
    GenAI metrics. A model already instrumented is returned as it is. Without a model, instrument every
    model in the process (see `StreamscopeInstrumentor`); calling it again is a no-op until `uninstrument()`.

    Options (invalid ones raise `TypeError`/`ValueError` here):
        tracer_provider, meter_provider, logger_provider: where telemetry goes (default: the global ones).
        capture_content: where stream content goes: ``"NO_CONTENT"``, ``"SPAN_ONLY"`` (or True: on span
            events), ``"EVENT_ONLY"`` (on OTel log records correlated with the stream span) or
            ``"SPAN_AND_EVENT"`` (both). Default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else off.
        max_content_length: captured content is truncated to this many characters (default 1024).
        redact: a ``str -> str`` hook applied to captured content before truncation.
        span_events: ``"all"`` (one span event per stream event, default), ``"coalesce"`` (one event per
            run of deltas of a part) or ``"none"``. Counts per kind are always on the span.
        usage_flush_interval: at most how often, in seconds, usage growth is recorded while streaming
            (default 0.05; 0 records every change). All growth is recorded when the stream ends.
        chunk_timing: ``"summary"`` (default: per stream the mean and longest gap between chunks) or
            ``"per_chunk"`` (also the conventions' ``gen_ai.client.operation.time_per_output_chunk``, one
            observation per chunk after the first).
        cost: record the cost in USD, priced as Pydantic AI prices a response (genai-prices), while streams
            run (``streamscope.cost``) and per stream at its end (``streamscope.stream.cost``). Default True.
        stall_threshold: seconds without a chunk after which a stream in flight counts as stalled
            (``streamscope.streams.stalled``). Default 30.
    """
    if model is None:
        # Validate here too: BaseInstrumentor returns early, without calling _instrument, when already on.
        build_options(**{k: v for k, v in options.items() if k not in _BASE_INSTRUMENTOR_OPTIONS})
        StreamscopeInstrumentor().instrument(**options)
        return None
    if not isinstance(model, Model | str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"instrument() takes a Pydantic AI Model or a model name, got {model!r}")
    resolved = infer_model(model)
    if find_streamscope_model(resolved) is not None:
        build_options(**options)  # still report bad options
        return resolved
    return StreamscopeModel(resolved, build_telemetry(build_options(**options)))


def uninstrument() -> None:
    """Undo `instrument()`: restore every patched attribute. Wrapped models stay wrapped (and instrumented)."""
    instrumentor = StreamscopeInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:  # else BaseInstrumentor warns: only instrument(model) was used
        instrumentor.uninstrument()
    finish_orphans()  # streams dropped unfinished whose event loop has not run since
    _sensors.remove()  # also when only `instrument(model)` installed them; its next request puts them back
