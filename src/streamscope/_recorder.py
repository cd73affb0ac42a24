"""Per-stream telemetry state: the span, timings, event accounting, usage deltas and the finish-once end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic_ai.exceptions import ContentFilterError
from pydantic_ai.messages import PartDeltaEvent, PartStartEvent

from . import _cost, _inflight
from . import _names as n
from ._events import Attributes, add_content, describe, event_kind, has_output
from ._metrics import AttributesKey
from ._safety import never_raises, report_internal_error
from ._sensors import PYDANTIC_AI_RECORDS_TIME_TO_FIRST_CHUNK, recorded_by_pydantic_ai
from ._telemetry import Telemetry
from ._violations import error_type, report_filtered_response

_DEFAULT_SPAN_EVENT_LIMIT = 128
# Room left on the span for events streamscope adds besides stream events (the recorded exception).
_RESERVED_SPAN_EVENTS = 2

Timed = tuple[int, Any]  # (perf_counter_ns, event)
Run = tuple[int, int, int]  # a run of coalesced deltas: (count, last perf_counter_ns, content length)
_CANCELLABLE_ENDS = frozenset({n.END_EXHAUSTED, n.END_CONSUMER_CLOSED, n.END_NEVER_ITERATED})
_INTERRUPTING_ENDS = frozenset({n.END_TASK_CANCELLED, n.END_CONSUMER_ERROR, n.END_SHUTDOWN})


_orphans: deque[StreamRecorder] = deque()  # recorders of streams garbage-collected unfinished, to finish


def finish_in_flight(belongs: Callable[[Telemetry], bool]) -> int:
    """End every stream still in flight whose telemetry `belongs` (end reason `shutdown`); how many it ended."""
    finish_orphans()
    recorders: list[StreamRecorder] = [r for r in _inflight.snapshot() if belongs(r.telemetry)]
    for recorder in recorders:
        recorder.finish(n.END_SHUTDOWN)
    return len(recorders)


def orphans_waiting() -> bool:
    """Whether streams garbage-collected unfinished wait to be finished."""
    return bool(_orphans)


def finish_orphans() -> None:
    """Finish the streams that were garbage-collected unfinished (end reason `garbage_collected`)."""
    while _orphans:
        try:
            recorder = _orphans.popleft()
        except IndexError:  # another thread took the last one
            return
        recorder.finish(n.END_GARBAGE_COLLECTED)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _failure_type(end_reason: str, error: BaseException | None) -> str | None:
    """`error.type` of a stream that failed: its exception's type, or a deadline expiry; None if it did not fail."""
    if error is not None:
        return error_type(error)
    return n.ERROR_TYPE_TIMEOUT if end_reason == n.END_TIMEOUT else None


def usage_is_known(usage: Any) -> bool:
    """Whether the provider reported any usage (a stream whose provider sent none has all-zero usage)."""
    if usage is None:
        return False
    for field, _, _ in n.USAGE_FIELDS:
        if getattr(usage, field, 0):
            return True
    return bool(getattr(usage, "details", None))


def _cancelled_exception_types() -> tuple[type[BaseException], ...]:
    try:
        return (asyncio.CancelledError, anyio.get_cancelled_exc_class())
    except Exception:  # no async backend running (e.g. finishing from a finaliser)
        return (asyncio.CancelledError,)


def task_is_cancelling() -> bool:
    """Whether the running asyncio task is being cancelled (so a close now is the cancellation's doing)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    return task is not None and task.cancelling() > 0


def _span_event_limit(span: Span) -> int:
    limits = getattr(span, "_limits", None)  # the SDK span's SpanLimits; other spans get the default
    max_events = getattr(limits, "max_events", None)
    return max_events if isinstance(max_events, int) and max_events >= 0 else _DEFAULT_SPAN_EVENT_LIMIT


class StreamRecorder:
    """Collects what one stream does and reports it exactly once, however the stream ends.

    The hot path (`_stream.py`) only appends `(time, event)` pairs and counts event types; everything else
    happens here when the stream finishes.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        stream: Any,
        span: Span,
        metric_attributes: Attributes,
        start_ns: int,
        start_wall_ns: int,
        pydantic_ai_records: bool,
        *,
        deadline: float = math.inf,
        model_class: str | None = None,
    ) -> None:
        self.telemetry: Telemetry = telemetry
        self.model_class: str | None = (
            model_class  # the class of the model the stream was opened on, for policy violations
        )
        self.stream: Any = stream
        self.span: Span = span
        self.metric_attributes: Attributes = metric_attributes
        self.start_ns: int = start_ns
        self.start_wall_ns: int = start_wall_ns
        self.pydantic_ai_records: bool = pydantic_ai_records  # known when the stream opened; see `_sensors`
        self.loop: asyncio.AbstractEventLoop | None = (
            _running_loop()
        )  # where a stream dropped unfinished is finished (see `__del__`)
        self.deadline: float = deadline  # Pydantic AI's deadline for the request, if it set one (anyio clock)
        self.finished: bool = False
        self.iterated: bool = False
        self.iterator: Any = None  # the instrumented iterator, once handed out
        self.first_ns: int = 0
        self.chunks: int = 0  # events with new model output, and when the first and last arrived
        self.chunk_starts: int = 0  # of which part starts with content: every other chunk is a `PartDeltaEvent`
        self.first_chunk_ns: int = 0
        self.last_chunk_ns: int = 0
        self.longest_gap_ns: int = 0
        self.gaps: array[int] | None = array("q") if telemetry.options.chunk_timing == "per_chunk" else None
        self.counts: dict[Any, int] = {}  # event class -> count, but for `PartDeltaEvent` (see `event_counts`)
        mode = telemetry.options.span_events
        capacity = 0 if mode == "none" else max(_span_event_limit(span) - _RESERVED_SPAN_EVENTS, 0)
        self.head_capacity: int = (capacity + 1) // 2
        self.head: list[Timed] = []
        self.tail: deque[Timed] = deque(maxlen=capacity - self.head_capacity)
        # Coalesce mode: each kept entry is (start_ns, event, count, last_ns, content_length).
        self.runs: list[tuple[int, Any, int, int, int]] = []
        self.usage_reported: dict[str, int] = {}
        self.usage_interval_ns: int = int(telemetry.options.usage_flush_interval * 1e9)
        self.stall_threshold_ns: int = int(telemetry.options.stall_threshold * 1e9)  # read by the stall gauges
        self.pricing: bool = telemetry.options.cost  # off once the stream's price proves unknown, until its end
        self.cost_recorded: Decimal = Decimal(0)  # USD counted for this stream so far
        # When the usage was last priced while streaming: a stream's first live pricing waits one interval, so a
        # stream shorter than that (most answers) is priced once, at its end.
        self.priced_ns: int = start_ns
        self.metric_key: AttributesKey = tuple(metric_attributes.items())
        telemetry.metrics.streams_active.add(1, self.metric_key)
        _inflight.add(self)

    # --- while streaming -------------------------------------------------------------------------
    @never_raises("reading usage", None)
    def flush_usage(self, usage: Any = None, *, price: bool = True) -> None:
        """Record growth of the stream's usage (read now unless given) since the last flush as counter deltas,
        and, when it grew, the growth of its cost (unless `price` is False)."""
        if usage is None:
            usage = _read_usage(self.stream)
        if usage is None:
            return
        reported = self.usage_reported
        key = self.metric_key
        grew = False
        for field, sums in self.telemetry.metrics.usage:
            value = getattr(usage, field, 0) or 0
            delta = value - reported.get(field, 0)
            if delta > 0:
                sums.add(delta, key)
                reported[field] = value
                grew = True
        if grew and price and self.pricing and self._pricing_due():
            cost = _cost.price_of_stream(self.stream, usage)
            if cost is None:
                self.pricing = False  # priced again once, from the final response
            else:
                self._count_cost(cost)

    def _pricing_due(self) -> bool:
        """Whether the usage may be priced now: pricing is costly, so at most once per live-pricing interval."""
        now = time.perf_counter_ns()
        if now - self.priced_ns < _cost.LIVE_PRICING_INTERVAL_S * 1e9:
            return False
        self.priced_ns = now
        return True

    def _count_cost(self, cost: Decimal) -> None:
        """Count the growth of the stream's cost to `cost` (a counter never goes down)."""
        delta = cost - self.cost_recorded
        if delta > 0:
            self.telemetry.metrics.cost.add(delta, self.metric_key)
            self.cost_recorded = cost

    # --- the end -----------------------------------------------------------------------------------
    def finish(self, end_reason: str, error: BaseException | None = None) -> None:
        """End the span and record the stream's metrics; only the first call does anything."""
        if self.finished:
            return
        self.finished = True
        _inflight.discard(self)
        try:
            self._finish(end_reason, error)
        except Exception:
            report_internal_error("finishing a stream span")
            try:
                if self.span.is_recording():
                    self.span.end()
            except Exception:
                report_internal_error("ending a stream span")
        self._release()

    def _release(self) -> None:
        """Let go of the stream and its kept events: the stream marks its recorder, so holding on to it would
        keep both (and the HTTP response behind the stream) alive until the garbage collector finds the cycle."""
        self.stream = None
        self.head.clear()
        self.tail.clear()
        self.runs.clear()

    def __del__(self) -> None:
        # A stream dropped without being exhausted, closed or having its context exited. Not finished here: the
        # garbage collector may run this while the thread holds a lock the SDK takes again to record (the exemplar
        # reservoir's, say), which would deadlock. Kept alive instead, and finished from the event loop.
        if not self.finished:
            _orphans.append(self)
            if self.loop is not None:
                with contextlib.suppress(Exception):  # a closed loop: the next stream opened finishes it
                    self.loop.call_soon_threadsafe(finish_orphans)

    def finish_from_exception(self, error: BaseException) -> None:
        """Finish after `error` ended the stream: task cancellation, a deadline, consumer close, or a failure."""
        if isinstance(error, GeneratorExit):
            self.finish(n.END_TASK_CANCELLED if task_is_cancelling() else n.END_CONSUMER_CLOSED)
        elif isinstance(error, _cancelled_exception_types()):
            self.finish(n.END_TIMEOUT if self._deadline_expired() else n.END_TASK_CANCELLED)
        else:
            self.finish(n.END_ERROR, error)

    def finish_from_consumer_exception(self, error: BaseException) -> None:
        """Finish after `error` left the block the stream was open in: closing, cancellation, or the consumer's own
        code raising (an `Exception` the stream did not raise: not the model's failure)."""
        if isinstance(error, Exception) and not isinstance(error, _cancelled_exception_types()):
            self.finish(n.END_CONSUMER_ERROR)
        else:
            self.finish_from_exception(error)

    def _deadline_expired(self) -> bool:
        """Whether Pydantic AI's deadline for the request has passed (so a cancellation now is its timeout)."""
        if self.deadline == math.inf:
            return False
        try:
            return anyio.current_time() >= self.deadline
        except Exception:  # no event loop (finishing from a finaliser)
            return False

    def _finish(self, end_reason: str, error: BaseException | None) -> None:
        end_ns = time.perf_counter_ns()
        telemetry = self.telemetry
        stream = self.stream
        # One read of the usage serves the last usage deltas, the span attributes and the token histogram.
        usage = _safe_usage(stream)
        self.flush_usage(usage, price=False)  # the final response is priced below, once
        response = _safe_get(stream)
        state = getattr(response, "state", None)
        failure = _failure_type(end_reason, error)
        if failure is not None:
            outcome = n.OUTCOME_ERROR
        elif end_reason in _INTERRUPTING_ENDS or _cancelled(stream):
            outcome = n.OUTCOME_INTERRUPTED
        elif state in (n.OUTCOME_COMPLETE, n.OUTCOME_INCOMPLETE, n.OUTCOME_INTERRUPTED, n.OUTCOME_SUSPENDED):
            outcome = state
        else:
            outcome = n.OUTCOME_COMPLETE if end_reason == n.END_EXHAUSTED else n.OUTCOME_INCOMPLETE
        if end_reason in _CANCELLABLE_ENDS and _cancelled(stream):
            end_reason = n.END_CANCEL_CALLED

        counts = self.event_counts()
        kinds = {cls: event_kind(cls) for cls in counts}  # every event seen was counted
        kind_counts: dict[str, int] = {}
        for cls, count in counts.items():
            if count:
                kind_counts[kinds[cls]] = kind_counts.get(kinds[cls], 0) + count
        total = sum(kind_counts.values())
        attributes: Attributes = {
            n.STREAM_OUTCOME: outcome,
            n.STREAM_END_REASON: end_reason,
            n.STREAM_EVENTS_TOTAL: total,
            n.STREAM_SPAN_EVENT_MODE: telemetry.options.span_events,
        }
        if self.first_ns:
            attributes[n.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = (self.first_ns - self.start_ns) / 1e9
        attributes[n.STREAM_CHUNKS] = self.chunks
        if self.chunks > 1:
            attributes[n.STREAM_CHUNK_GAP_MEAN] = self._mean_gap_s()
            attributes[n.STREAM_CHUNK_GAP_LONGEST] = self.longest_gap_ns / 1e9
        if response is not None:
            if model_name := getattr(response, "model_name", None):
                attributes[n.GEN_AI_RESPONSE_MODEL] = model_name
            if response_id := getattr(response, "provider_response_id", None):
                attributes[n.GEN_AI_RESPONSE_ID] = response_id
            if finish_reason := getattr(response, "finish_reason", None):
                attributes[n.GEN_AI_RESPONSE_FINISH_REASONS] = (str(finish_reason),)
        known_usage = usage if usage_is_known(usage) else None
        if known_usage is not None:
            for field, _, attribute in n.USAGE_FIELDS:
                value = getattr(known_usage, field, None)
                if isinstance(value, int) and (value or field in ("input_tokens", "output_tokens")):
                    attributes[attribute] = value
        if failure is not None:
            attributes[n.ERROR_TYPE] = failure
        cost = self._final_cost(response) if known_usage is not None else None
        if cost is not None:
            attributes[n.STREAM_COST] = float(cost)
        if attributes.get(n.GEN_AI_RESPONSE_FINISH_REASONS) == (n.POLICY_CONTENT_FILTER,):
            self._report_content_filter(attributes, "finish_reason=content_filter")
        elif isinstance(error, ContentFilterError) and self.iterated:  # one failing to open is reported where it did
            self._report_content_filter(attributes, error.message)

        try:
            self._end_span(end_ns, attributes, kinds, kind_counts, error, failure)
        except Exception:
            report_internal_error("ending a stream span")
        if telemetry.options.content_on_logs:
            try:
                self._emit_content_logs(kinds)
            except Exception:
                report_internal_error("emitting content log records")
        # Metrics are recorded whatever happened to the span (a span processor may raise in on_end).
        response_model = attributes.get(n.GEN_AI_RESPONSE_MODEL)
        self._record_metrics(
            end_ns,
            outcome,
            failure,
            known_usage,
            kind_counts,
            response_model if isinstance(response_model, str) else None,
            cost,
        )

    def count_non_delta(self, event: Any) -> bool:
        """Count an event that is not a `PartDeltaEvent` (the hot path counts those only as chunks); whether it is a
        chunk: a part start that already carries output."""
        cls = event.__class__
        self.counts[cls] = self.counts.get(cls, 0) + 1
        if cls is PartStartEvent and has_output(event):
            self.chunk_starts += 1
            return True
        return False

    def event_counts(self) -> dict[Any, int]:
        """How many events of each class the stream yielded. The hot path counts deltas, by far the most frequent
        events, only as chunks (a chunk is a delta or a part start with content): their count is the difference."""
        deltas = self.chunks - self.chunk_starts
        return {**self.counts, PartDeltaEvent: deltas} if deltas else self.counts

    def _report_content_filter(self, attributes: Attributes, message: str) -> None:
        """The provider's content filter stopped the answer: a policy violation, on the stream span."""
        try:
            report_filtered_response(
                self.telemetry,
                metric_attributes=self.metric_attributes,
                response_model=attributes.get(n.GEN_AI_RESPONSE_MODEL),
                response_id=attributes.get(n.GEN_AI_RESPONSE_ID),
                message=message,
                span=self.span,
                model_class=self.model_class,
            )
        except Exception:
            report_internal_error("recording a content-filter policy violation")

    def _final_cost(self, response: Any) -> Decimal | None:
        """Price the final response, count what the live deltas have not, and return it (None: unknown)."""
        if not self.telemetry.options.cost or response is None:
            return None
        cost = _cost.price_of_response(response)
        if cost is not None:
            self._count_cost(cost)
        return cost

    def _end_span(
        self,
        end_ns: int,
        attributes: Attributes,
        kinds: dict[type[Any], str],
        kind_counts: dict[str, int],
        error: BaseException | None,
        failure: str | None,
    ) -> None:
        span = self.span
        if span.is_recording():
            emitted, coalesced = self._materialise_span_events(kinds)
            for kind, count in kind_counts.items():
                attributes[n.STREAM_EVENTS_EMITTED_PREFIX + kind] = emitted.get(kind, 0)
                if coalesced.get(kind):
                    attributes[n.STREAM_EVENTS_COALESCED_PREFIX + kind] = coalesced[kind]
                dropped = count - emitted.get(kind, 0) - coalesced.get(kind, 0)
                if dropped:
                    attributes[n.STREAM_EVENTS_DROPPED_PREFIX + kind] = dropped
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            elif failure is not None:
                span.set_status(Status(StatusCode.ERROR, "ModelRequestTimeout: the request's deadline expired"))
            span.set_attributes(attributes)
            sdk_dropped = getattr(span, "dropped_events", 0)
            if isinstance(sdk_dropped, int) and sdk_dropped:
                span.set_attribute(n.STREAM_EVENTS_SDK_DROPPED, sdk_dropped)
        span.end(end_time=self.start_wall_ns + (end_ns - self.start_ns))

    def _record_metrics(
        self,
        end_ns: int,
        outcome: str,
        failure: str | None,
        usage: Any,
        kind_counts: dict[str, int],
        response_model: str | None,
        cost: Decimal | None,
    ) -> None:
        instruments = self.telemetry.metrics
        key = self.metric_key
        instruments.streams_active.add(-1, key)
        instruments.streams_finished.add(1, (*key, (n.STREAM_OUTCOME, outcome)))
        for kind, count in kind_counts.items():
            instruments.stream_events.add(count, (*key, (n.EVENT_KIND, kind)))
        # The histograms: GenAI attributes as the conventions list them for each, in the stream span's context so
        # that an exemplar points at the stream span.
        base = self.metric_attributes
        if response_model:
            base = {**base, n.GEN_AI_RESPONSE_MODEL: response_model}
        timed = {**base, n.ERROR_TYPE: failure} if failure is not None else base
        context = trace.set_span_in_context(self.span)
        instruments.operation_duration.record((end_ns - self.start_ns) / 1e9, timed, context)
        if self.chunks > 1:
            instruments.chunk_gap_mean.record(self._mean_gap_s(), timed, context)
            instruments.chunk_gap_longest.record(self.longest_gap_ns / 1e9, timed, context)
        if cost is not None:
            instruments.stream_cost.record(float(cost), {**timed, n.STREAM_OUTCOME: outcome}, context)
        if self.gaps:  # the conventions' metric: one observation per chunk after the first
            record = instruments.time_per_output_chunk.record
            for gap in self.gaps:
                record(gap / 1e9, timed, context)
        # Where Pydantic AI's own instrumentation records this request, leave it what it records: never twice.
        pydantic_ai_records = self.pydantic_ai_records or recorded_by_pydantic_ai(self.stream)
        if self.first_ns and not (pydantic_ai_records and PYDANTIC_AI_RECORDS_TIME_TO_FIRST_CHUNK):
            instruments.time_to_first_chunk.record((self.first_ns - self.start_ns) / 1e9, timed, context)
        if pydantic_ai_records or usage is None:
            return
        for token_type, field in ((n.TOKEN_TYPE_INPUT, "input_tokens"), (n.TOKEN_TYPE_OUTPUT, "output_tokens")):
            value = getattr(usage, field, 0)
            if isinstance(value, int) and value > 0:  # as Pydantic AI does: no point for a type with no tokens
                instruments.token_usage.record(value, {**base, n.GEN_AI_TOKEN_TYPE: token_type}, context)

    def _mean_gap_s(self) -> float:
        return (self.last_chunk_ns - self.first_chunk_ns) / (self.chunks - 1) / 1e9

    def _kept_events(self, kinds: dict[type[Any], str]) -> Iterator[tuple[int, Any, str, Run | None]]:
        """The stream events kept for span events: (time, event, kind, the run it stands for or None)."""
        if self.telemetry.options.span_events == "coalesce":
            kept = self.runs[: self.head_capacity]
            tail_room = self.tail.maxlen or 0
            if len(self.runs) > self.head_capacity and tail_room:
                kept += self.runs[max(self.head_capacity, len(self.runs) - tail_room) :]
            for start_ns, event, count, last_ns, length in kept:
                yield start_ns, event, kinds[event.__class__], (count, last_ns, length) if count > 1 else None
        else:
            for start_ns, event in itertools.chain(self.head, self.tail):
                yield start_ns, event, kinds[event.__class__], None

    def _event_attributes(self, at_ns: int, event: Any, kind: str, run: Run | None) -> tuple[str, Attributes]:
        """The span event (name, attributes) for one kept event, content aside."""
        attributes = describe(event)
        attributes[n.EVENT_KIND] = kind
        attributes[n.EVENT_OFFSET_S] = (at_ns - self.start_ns) / 1e9
        if run is None:
            return n.STREAM_EVENT_PREFIX + kind, attributes
        count, last_ns, length = run
        attributes.pop(n.EVENT_TOOL_NAME, None)
        attributes[n.EVENT_COALESCED_COUNT] = count
        attributes[n.EVENT_LAST_OFFSET_S] = (last_ns - self.start_ns) / 1e9
        attributes[n.EVENT_CONTENT_LENGTH] = length
        return n.STREAM_DELTAS_EVENT, attributes

    def _materialise_span_events(self, kinds: dict[type[Any], str]) -> tuple[dict[str, int], dict[str, int]]:
        """Add the kept stream events to the span; return counts emitted and coalesced, per kind."""
        emitted: dict[str, int] = {}
        coalesced: dict[str, int] = {}
        options = self.telemetry.options
        with_content = options.content_on_spans
        for at_ns, event, kind, run in self._kept_events(kinds):
            name, attributes = self._event_attributes(at_ns, event, kind, run)
            if run is None:
                emitted[kind] = emitted.get(kind, 0) + 1
                if with_content:
                    add_content(attributes, event, options)
            else:
                coalesced[kind] = coalesced.get(kind, 0) + run[0]
            self.span.add_event(name, attributes, timestamp=self.start_wall_ns + (at_ns - self.start_ns))
        return emitted, coalesced

    def _emit_content_logs(self, kinds: dict[type[Any], str]) -> None:
        """One OTel log record, correlated with the stream span, per kept event that carries content."""
        options = self.telemetry.options
        logger = self.telemetry.logger
        context = trace.set_span_in_context(self.span)
        for at_ns, event, kind, run in self._kept_events(kinds):
            if run is not None:
                continue  # a run of deltas is summarised: its content was not kept
            name, attributes = self._event_attributes(at_ns, event, kind, None)
            if add_content(attributes, event, options):
                logger.emit(
                    event_name=name,
                    timestamp=self.start_wall_ns + (at_ns - self.start_ns),
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    attributes=attributes,
                    context=context,
                )


def _cancelled(stream: Any) -> bool:
    try:
        return bool(getattr(stream, "cancelled", False))
    except Exception:
        return False


def _safe_get(stream: Any) -> Any:
    try:
        return stream.get()
    except Exception:
        report_internal_error("building the response with get()")
        return None


def _safe_usage(stream: Any) -> Any:
    try:
        return _read_usage(stream)
    except Exception:
        report_internal_error("reading usage")
        return None


def _read_usage(source: Any) -> Any:
    """A stream's (or response's) usage: a property in Pydantic AI 2.x, a method `usage()` in older releases."""
    usage = getattr(source, "usage", None)
    return usage() if callable(usage) else usage


def start_stream_span(
    telemetry: Telemetry,
    request_model: str | None,
    attributes: Attributes,
    start_wall_ns: int,
    parent: Context | None = None,
) -> Span:
    """Start the CLIENT span of one stream, a child of the span current in `parent` (default: now)."""
    name = f"{n.OPERATION_CHAT} {request_model}" if request_model else n.OPERATION_CHAT
    return telemetry.tracer.start_span(
        name, context=parent, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_wall_ns
    )
