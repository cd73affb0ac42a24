"""The instrumented stream: the per-event hot path, the stream proxy, and a model's span and metric attributes."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import wrapt
from opentelemetry.util.types import AttributeValue
from pydantic_ai.messages import PartDeltaEvent

from . import _names as n
from ._events import Attributes, content_of
from ._recorder import StreamRecorder
from ._safety import report_internal_error

RECORDER_ATTRIBUTE = "_streamscope_recorder"
"""Set on a stream that streamscope instruments, so no other layer instruments it a second time."""


async def _iterate_all(source: AsyncIterator[Any], recorder: StreamRecorder) -> AsyncIterator[Any]:
    """Yield `source`'s events, keeping the first and last ones (with their time) for span events.

    This is the per-event hot path: a clock read, a count, an append, a comparison of the clock with the time
    the usage is next due to be read, and for a chunk a subtraction and a comparison (the longest gap). A delta,
    by far the most frequent event, is counted as a chunk only; the recorder counts every other event. It runs in
    two loops so that the long second one (every event after the kept first ones) does less. The chunk step is
    written out in each loop, not called: a call per event would cost more than the step itself.
    """
    clock = time.perf_counter_ns
    count_non_delta = recorder.count_non_delta
    head_room = recorder.head_capacity
    keep_head = recorder.head.append
    keep_tail = recorder.tail.append  # a tail with no room (maxlen 0) keeps nothing
    flush_usage = recorder.flush_usage
    interval = recorder.usage_interval_ns
    next_flush = recorder.start_ns + interval  # usage growth is recorded at most once per interval
    # Chunks (events carrying new model output: deltas, and part starts with content) and the gaps between them.
    delta_cls = PartDeltaEvent
    last_chunk = longest = 0
    gaps = recorder.gaps  # every gap, only when the spec's per-chunk metric is asked for
    recorder.iterated = True
    try:
        # The first events, kept whole; the first one's time is the time to first chunk.
        async for event in source:
            now = clock()
            if not recorder.first_ns:
                recorder.first_ns = now
            cls = event.__class__
            # A delta (most events) is counted as a chunk only; any other event by the recorder.
            if cls is delta_cls or count_non_delta(event):
                recorder.chunks += 1
                if last_chunk:
                    gap = now - last_chunk
                    if gap > longest:
                        longest = recorder.longest_gap_ns = gap
                    if gaps is not None:
                        gaps.append(gap)
                else:
                    recorder.first_chunk_ns = now
                last_chunk = recorder.last_chunk_ns = now
            if head_room:
                keep_head((now, event))
                head_room -= 1
            else:
                keep_tail((now, event))
            if now >= next_flush:
                next_flush = now + interval
                flush_usage()
            yield event
            if not head_room:
                break
        # Every later event: only the last ones are kept.
        async for event in source:
            now = clock()
            cls = event.__class__
            # A delta (most events) is counted as a chunk only; any other event by the recorder.
            if cls is delta_cls or count_non_delta(event):
                recorder.chunks += 1
                if last_chunk:
                    gap = now - last_chunk
                    if gap > longest:
                        longest = recorder.longest_gap_ns = gap
                    if gaps is not None:
                        gaps.append(gap)
                else:
                    recorder.first_chunk_ns = now
                last_chunk = recorder.last_chunk_ns = now
            keep_tail((now, event))
            if now >= next_flush:
                next_flush = now + interval
                flush_usage()
            yield event
    except BaseException as error:
        recorder.finish_from_exception(error)
        if isinstance(error, GeneratorExit):
            await _close(source)
        raise
    recorder.finish(n.END_EXHAUSTED)


async def _iterate_coalescing(source: AsyncIterator[Any], recorder: StreamRecorder) -> AsyncIterator[Any]:
    """Yield `source`'s events, folding each run of consecutive deltas of one part into one entry."""
    clock = time.perf_counter_ns
    count_non_delta = recorder.count_non_delta
    runs = recorder.runs
    keep_limit = recorder.head_capacity + (recorder.tail.maxlen or 0)
    flush_usage = recorder.flush_usage
    interval = recorder.usage_interval_ns
    next_flush = recorder.start_ns + interval
    run_index: int | None = None  # part index of the open run of deltas, if any
    # Chunks (events carrying new model output: deltas, and part starts with content) and the gaps between them.
    delta_cls = PartDeltaEvent
    last_chunk = longest = 0
    gaps = recorder.gaps  # every gap, only when the spec's per-chunk metric is asked for
    recorder.iterated = True
    try:
        async for event in source:
            now = clock()
            if not recorder.first_ns:
                recorder.first_ns = now
            cls = event.__class__
            # A delta (most events) is counted as a chunk only; any other event by the recorder.
            if cls is delta_cls or count_non_delta(event):
                recorder.chunks += 1
                if last_chunk:
                    gap = now - last_chunk
                    if gap > longest:
                        longest = recorder.longest_gap_ns = gap
                    if gaps is not None:
                        gaps.append(gap)
                else:
                    recorder.first_chunk_ns = now
                last_chunk = recorder.last_chunk_ns = now
            delta = getattr(event, "delta", None)
            text = content_of(event) if delta is not None else None
            length = len(text) if text is not None else 0
            if delta is not None and run_index == event.index and runs:
                start, first, count, _, total = runs[-1]
                runs[-1] = (start, first, count + 1, now, total + length)
            else:
                run_index = event.index if delta is not None else None
                runs.append((now, event, 1, now, length))
                if len(runs) > keep_limit * 2:
                    # Keep memory flat: drop the middle runs the span could not hold anyway.
                    del runs[recorder.head_capacity : len(runs) - keep_limit]
            if now >= next_flush:
                next_flush = now + interval
                flush_usage()
            yield event
    except BaseException as error:
        recorder.finish_from_exception(error)
        if isinstance(error, GeneratorExit):
            await _close(source)
        raise
    recorder.finish(n.END_EXHAUSTED)


async def _close(source: AsyncIterator[Any]) -> None:
    """Propagate the consumer's `aclose()` to the wrapped iterator, as it would reach it uninstrumented."""
    aclose: Callable[[], Any] | None = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


def instrument_iterator(source: AsyncIterator[Any], recorder: StreamRecorder) -> AsyncIterator[Any]:
    """Wrap the stream's event iterator in the hot loop for the recorder's span-event mode."""
    if recorder.telemetry.options.span_events == "coalesce":
        return _iterate_coalescing(source, recorder)
    return _iterate_all(source, recorder)


def mark_instrumented(stream: Any, recorder: StreamRecorder) -> None:
    """Mark `stream` as instrumented by `recorder` (so the class-level safety net leaves it alone)."""
    # A stream without a __dict__ cannot be marked; nothing else can claim it either.
    with contextlib.suppress(AttributeError, TypeError):
        stream.__dict__[RECORDER_ATTRIBUTE] = recorder


def recorder_of(stream: Any) -> StreamRecorder | None:
    """The recorder instrumenting `stream`, if any."""
    try:
        return stream.__dict__.get(RECORDER_ATTRIBUTE)
    except AttributeError:
        return None


def hand_out_iterator(stream: Any, recorder: StreamRecorder, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Wrap `iterator` (what `stream.__aiter__()` returned) once; later calls get the stream's own iterator."""
    if recorder.iterator is not None:
        return iterator
    wrapped = instrument_iterator(iterator, recorder)
    recorder.iterator = wrapped
    # `StreamedResponse.__aiter__` hands out the iterator cached in `_event_iterator`: cache ours there so
    # every later `aiter(stream)` (Pydantic AI's own included) goes through the instrumented one.
    try:
        if getattr(stream, "_event_iterator", None) is iterator:
            stream._event_iterator = wrapped
    except Exception:
        report_internal_error("caching the instrumented iterator")
    return wrapped


if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy  # not subscriptable at runtime in wrapt 1.x


class InstrumentedStream(_Proxy):
    """A `StreamedResponse` proxy whose iteration is instrumented; everything else passes through.

    It passes `isinstance(x, StreamedResponse)`, and `get()`, `usage`, `cancel()` reach the real stream.
    """

    _self_recorder: StreamRecorder

    def __init__(self, stream: Any, recorder: StreamRecorder) -> None:
        super().__init__(stream)
        self._self_recorder = recorder

    def __aiter__(self) -> AsyncIterator[Any]:
        stream = self.__wrapped__
        iterator = stream.__aiter__()
        try:
            return hand_out_iterator(stream, self._self_recorder, iterator)
        except Exception:
            report_internal_error("instrumenting a stream's iterator")
            return iterator

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


def _server_attributes(model: Any) -> Attributes:
    try:
        base_url = getattr(model, "base_url", None)
    except Exception:
        return {}
    if not isinstance(base_url, str) or not base_url:
        return {}
    return dict(_server_attributes_of_url(base_url))


@functools.lru_cache(maxsize=256)
def _server_attributes_of_url(base_url: str) -> tuple[tuple[str, AttributeValue], ...]:
    """`server.address` and `server.port` of a base URL (parsed once per URL: streams reuse a few)."""
    try:
        parts = urlsplit(base_url)
        hostname, port = parts.hostname, parts.port
    except ValueError:  # not a URL (an out-of-range port, say): no server attributes
        return ()
    if not hostname:
        return ()
    port = port or {"https": 443, "http": 80}.get(parts.scheme)
    return ((n.SERVER_ADDRESS, hostname), (n.SERVER_PORT, port)) if port else ((n.SERVER_ADDRESS, hostname),)


def model_attributes(model: Any) -> tuple[str | None, Attributes, Attributes]:
    """(request model, span start attributes, metric attributes) for a stream opened on `model`."""
    request_model = _safe_str(model, "model_name")
    system = _safe_str(model, "system")
    common: Attributes = {n.GEN_AI_OPERATION_NAME: n.OPERATION_CHAT}
    if system:  # Pydantic AI's own name for the provider, as on its metrics, so the two join
        common[n.GEN_AI_PROVIDER_NAME] = system
    if request_model:
        common[n.GEN_AI_REQUEST_MODEL] = request_model
    server = _server_attributes(model)
    metric_attributes: Attributes = {**common, **server}  # server.port is conditionally required with the address
    span_attributes: Attributes = {**common, **server, n.GEN_AI_REQUEST_STREAM: True}
    return request_model, span_attributes, metric_attributes


def _safe_str(obj: Any, attribute: str) -> str | None:
    try:
        value = getattr(obj, attribute, None)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None
