"""Opening a stream: which layer owns it (see `_claims`), its span, and the end of a stream that failed to open."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, cast

import anyio
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from . import _names as n
from . import _stream
from ._claims import RequestClaim, claim_for, current_claim, place, withdraw
from ._policy import note_denials
from ._recorder import StreamRecorder, finish_orphans, orphans_waiting, start_stream_span, task_is_cancelling
from ._safety import report_internal_error
from ._sensors import run_is_instrumented
from ._stream import InstrumentedStream, model_attributes
from ._telemetry import Telemetry


def request_deadline(model: Any, model_settings: Any) -> float:
    """When Pydantic AI's own deadline for this request expires, on anyio's clock (inf: none applies).

    Pydantic AI enforces `request_timeout`/`first_event_timeout` (from the request's or the model's settings)
    with a cancel scope around the model's `request_stream`, and raises `ModelRequestTimeout` outside it; at
    this layer that is only a cancellation. When those settings apply, the nearest deadline around the opening
    stream is that scope's, so a cancellation after it has passed is the timeout.
    """
    if not any(_sets(settings) for settings in (model_settings, _settings_of(model))):
        return math.inf
    try:
        return anyio.current_effective_deadline()
    except Exception:  # no event loop
        return math.inf


def _settings_of(model: Any) -> Any:
    try:
        return model.settings
    except Exception:
        return None


def _sets(settings: Any) -> bool:
    if not isinstance(settings, dict):  # ModelSettings is a TypedDict: a dict at run time
        return False
    values = cast(dict[str, Any], settings)
    return values.get("request_timeout") is not None or values.get("first_event_timeout") is not None


def start_recorder(
    telemetry: Telemetry,
    model: Any,
    stream: Any,
    start: tuple[int, int],
    parent: Context | None,
    pydantic_ai_records: bool,
    deadline: float,
) -> StreamRecorder:
    """Start the span of one stream (opened at `start`, as (perf_counter_ns, time_ns)) and its recorder."""
    request_model, span_attributes, metric_attributes = model_attributes(model)
    span = start_stream_span(telemetry, request_model, span_attributes, start[1], parent)
    return StreamRecorder(
        telemetry,
        stream,
        span,
        metric_attributes,
        start[0],
        start[1],
        pydantic_ai_records,
        deadline=deadline,
        model_class=type(model).__qualname__,
    )


class InstrumentedRequestStream:
    """Async context manager: open `open_stream()` and hand out the stream instrumented, by whichever layer owns it.

    The span's start is taken before the request is sent (so time to first chunk counts from the request) and
    the span ends exactly once: when the iterator ends, fails or is closed, or at the latest when this context
    exits. The caller's OpenTelemetry context is never touched. `pydantic_ai_inside` says a Pydantic AI
    `InstrumentedModel` wraps the model, which then records token usage and time to first chunk itself.
    """

    __slots__ = (
        "_inner",
        "_model",
        "_model_settings",
        "_open_stream",
        "_pydantic_ai_inside",
        "_recorder",
        "_run_context",
        "_telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        model: Any,
        open_stream: Callable[[], AbstractAsyncContextManager[Any]],
        run_context: Any = None,
        model_settings: Any = None,
        *,
        pydantic_ai_inside: bool = False,
    ) -> None:
        self._telemetry: Telemetry = telemetry
        self._model_settings: Any = model_settings
        self._model: Any = model
        self._open_stream: Callable[[], AbstractAsyncContextManager[Any]] = open_stream
        self._run_context: Any = run_context
        self._pydantic_ai_inside: bool = pydantic_ai_inside
        self._inner: AbstractAsyncContextManager[Any] | None = None
        self._recorder: StreamRecorder | None = None

    async def __aenter__(self) -> Any:
        if orphans_waiting():
            finish_orphans()
        above = current_claim()
        start = (time.perf_counter_ns(), time.time_ns())
        try:
            facts = self._pydantic_ai_inside or run_is_instrumented(self._run_context)
            parent = otel_context.get_current()
            deadline = request_deadline(self._model, self._model_settings)
            claim, telemetry = claim_for(above, self._telemetry, facts)  # last: it takes the attempt from above
        except Exception:
            report_internal_error("starting to instrument a stream")
            self._inner = inner = self._open_stream()
            return await inner.__aenter__()

        token = place(claim)
        try:
            self._inner = inner = self._open_stream()
            stream = await inner.__aenter__()
        except BaseException as error:
            withdraw(token)
            self._failed(error, above, claim, telemetry, start, parent, deadline)
            raise
        withdraw(token)

        if claim.taken:
            if claim.resumed_at is None:
                return stream  # the layer further in that took the last attempt instruments it
            start = claim.resumed_at  # an attempt no layer further in took, made after a taken one failed
        try:
            recorder = start_recorder(
                telemetry, self._model, stream, start, parent, claim.pydantic_ai_records, deadline
            )
            _stream.mark_instrumented(stream, recorder)  # through the module: diagnostics may count the marks
            handed_out = InstrumentedStream(stream, recorder)
        except Exception:
            report_internal_error("instrumenting an opened stream")
            return stream
        self._recorder = recorder
        return handed_out

    def _failed(
        self,
        error: BaseException,
        above: RequestClaim | None,
        claim: RequestClaim,
        telemetry: Telemetry,
        start: tuple[int, int],
        parent: Context,
        deadline: float,
    ) -> None:
        """Report a stream that failed to open (denied, HTTP error, timed out, cancelled while connecting)."""
        if claim.taken:
            note_denials(error, telemetry, claim, above, self._model)  # recorded further in: only passed on
            _resume_after_failure(above)
            return
        try:
            recorder = start_recorder(
                telemetry, self._model, _NoStream(), start, parent, claim.pydantic_ai_records, deadline
            )
        except Exception:
            report_internal_error("reporting a stream that failed to open")
            note_denials(error, telemetry, claim, above, self._model)  # the violation still, on its other channels
            return
        note_denials(error, telemetry, claim, above, self._model, recorder.span)
        recorder.finish_from_exception(error)
        _resume_after_failure(above)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        recorder = self._recorder
        if recorder is not None and not recorder.finished:
            if exc is not None:
                recorder.finish_from_consumer_exception(exc)
            elif task_is_cancelling():
                recorder.finish(n.END_TASK_CANCELLED)
            else:
                recorder.finish(n.END_CONSUMER_CLOSED if recorder.iterated else n.END_NEVER_ITERATED)
        assert self._inner is not None
        return await self._inner.__aexit__(exc_type, exc, traceback)


def _resume_after_failure(above: RequestClaim | None) -> None:
    """Tell the layer above that the attempt taken from it failed: the next one, if no layer further in takes it,
    is the layer above's to instrument, from now."""
    if above is not None:
        above.resumed_at = (time.perf_counter_ns(), time.time_ns())


class _NoStream:
    """Stands in for the stream a failed open never produced."""

    cancelled = False
    usage = None

    def get(self) -> None:
        return None
