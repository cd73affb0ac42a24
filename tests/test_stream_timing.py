"""A stream's timings, exact: on a scripted clock, in every span-event mode.

The stream below sets the clock (`time.perf_counter_ns`, which streamscope reads for every duration) to a scripted
instant before each chunk, so every timing is known in advance: time to first chunk, the gaps between chunks (their
mean, the longest, and each one for the conventions' per-chunk metric), the duration, and when the usage growth is
flushed (at most once per `usage_flush_interval`, at the first event at or after it is due).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from pydantic_ai.messages import ModelResponse, ModelResponseStreamEvent
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.usage import RequestUsage

import streamscope
from streamscope import _cost
from tests.composition import MESSAGES
from tests.conftest import Otel, sum_value
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

MS = 1_000_000
OPENED_AT = 5_000 * MS  # the clock when the stream is opened
# (ms after opening, word): the first chunk 40 ms in, then gaps of 10, 50 (the longest), 20 and 100 - 10 ms.
SCRIPT = ((40, "a"), (50, "b"), (100, "c"), (120, "d"), (210, "e"))
GAPS_MS = (10, 50, 20, 90)
USAGE_FLUSH_MS = 50  # due at 50 (flushed at "b", exactly due), then at 100 ("c", exactly due), then at 150 ("e")


class Clock:
    """Stands in for `time.perf_counter_ns`: returns what the stream last set."""

    def __init__(self) -> None:
        self.ns = OPENED_AT

    def __call__(self) -> int:
        return self.ns


@dataclass
class ScriptedStream(WordStream):
    """One text delta per scripted word, each at its instant, one output token each."""

    script: ClassVar[tuple[tuple[int, str], ...]] = SCRIPT
    clock: Clock = field(default_factory=Clock)
    seen: list[int] = field(default_factory=list)  # the usage counter's value after each chunk, read by the test

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for at_ms, word in self.script:
            self.clock.ns = OPENED_AT + at_ms * MS
            self._usage = self._usage + RequestUsage(output_tokens=1)
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event


@dataclass
class PricedScriptedStream(ScriptedStream):
    """The scripted stream, of a model genai-prices knows."""

    @property
    def model_name(self) -> str:
        return "gpt-4o"

    @property
    def provider_name(self) -> str:
        return "openai"

    @property
    def provider_url(self) -> str | None:
        return None


async def run_scripted(
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    *,
    priced: bool = False,
    script: type[ScriptedStream] | None = None,
    **options: Any,
) -> list[int]:
    """Stream SCRIPT (or `script`'s own events) through an instrumented model; return the output-token counter
    after each event."""
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter_ns", clock)

    base: type[Any] = script or (PricedScriptedStream if priced else ScriptedStream)

    @dataclass
    class Stream(base):
        clock: Clock = field(default_factory=lambda: clock)

    model = streamscope.instrument(
        make_model_class(Stream)(),
        span_events=mode,
        cost=priced,
        **{"usage_flush_interval": USAGE_FLUSH_MS / 1000, **options},
        **otel.providers,
    )
    counted: list[int] = []
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            points = otel.metrics().get("streamscope.usage.output_tokens", [])
            counted.append(int(sum_value(points)))
        clock.ns = OPENED_AT + 300 * MS  # the caller's own work after the stream: not part of it
    return counted


def histogram(otel: Otel, name: str) -> tuple[int, float]:
    ((_, point),) = otel.metrics()[name]
    return point.count, point.sum


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_timings_are_exact_on_a_scripted_clock(otel: Otel, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    counted = await run_scripted(otel, monkeypatch, mode)
    span = otel.one_stream_span()
    attributes = dict(span.attributes or {})
    assert attributes["streamscope.stream.chunks"] == len(SCRIPT)
    assert attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.040)
    assert attributes["streamscope.stream.chunk_gap.mean"] == sum(GAPS_MS) * MS / len(GAPS_MS) / 1e9  # exact, in s
    assert attributes["streamscope.stream.chunk_gap.longest"] == pytest.approx(max(GAPS_MS) / 1000)
    assert attributes["streamscope.stream.end_reason"] == "exhausted"
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time == 210 * MS  # ended at the last event, not when the caller moved on
    # the same division as the span's: exact, to the last bit
    assert histogram(otel, "gen_ai.client.operation.time_to_first_chunk") == (1, 40 * MS / 1e9)
    assert histogram(otel, "gen_ai.client.operation.duration") == (1, (span.end_time - span.start_time) / 1e9)
    assert attributes["gen_ai.response.time_to_first_chunk"] == 40 * MS / 1e9
    assert histogram(otel, "streamscope.stream.chunk_gap.mean") == (1, pytest.approx(0.0425))
    assert histogram(otel, "streamscope.stream.chunk_gap.longest") == (1, pytest.approx(0.090))
    # Events: part start ("a"), final result, deltas "b".."e", part end (after the loop: the usage is flushed at
    # the end). The usage growth is flushed at "b" (due at 50 ms: 2 tokens), "c" (due at 100: 3) and "e" (due at
    # 150, first event after it at 210: 5); the final result marker comes right after "a", at 40 ms.
    assert counted == [0, 0, 2, 3, 3, 5, 5]
    assert sum_value(otel.metrics()["streamscope.usage.output_tokens"]) == 5
    if mode != "none":
        offsets = [
            float(str(event.attributes["streamscope.event.offset_seconds"]))
            for event in span.events
            if event.attributes and event.name != "streamscope.stream.part_deltas"
        ]
        assert offsets[0] == pytest.approx(0.040)
        assert offsets[-1] == pytest.approx(0.210)
    if mode == "coalesce":  # the deltas "b".."e": one event from the first (50 ms) to the last (210 ms)
        (deltas,) = [event for event in span.events if event.name == "streamscope.stream.part_deltas"]
        assert dict(deltas.attributes or {}) == {
            "streamscope.event.kind": "part_delta",
            "streamscope.part.index": 0,
            "streamscope.delta.kind": "text",
            "streamscope.event.offset_seconds": 0.050,
            "streamscope.event.last_offset_seconds": 0.210,
            "streamscope.event.coalesced_count": 4,
            "streamscope.content.length": 4,
        }


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_per_chunk_metric_records_each_gap(otel: Otel, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """chunk_timing="per_chunk": one observation per chunk after the first, each its own gap."""
    await run_scripted(otel, monkeypatch, mode, chunk_timing="per_chunk")
    ((_, point),) = otel.metrics()["gen_ai.client.operation.time_per_output_chunk"]
    assert point.count == len(GAPS_MS)
    assert point.sum == pytest.approx(sum(GAPS_MS) / 1000)
    assert point.min == pytest.approx(min(GAPS_MS) / 1000)
    assert point.max == pytest.approx(max(GAPS_MS) / 1000)
    # the bucket counts place each gap: 10 ms (<= 0.01), 20 ms (<= 0.02), 50 ms (<= 0.06), 90 ms (<= 0.1)
    bounds = list(point.explicit_bounds)
    assert [count for count in point.bucket_counts if count] == [1, 1, 1, 1]
    assert [bounds[i] for i, count in enumerate(point.bucket_counts) if count] == [0.01, 0.02, 0.06, 0.1]


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_without_per_chunk_timing_no_gaps_are_kept(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    await run_scripted(otel, monkeypatch, mode)
    assert "gen_ai.client.operation.time_per_output_chunk" not in otel.metrics()


@dataclass
class SecondsApartStream(ScriptedStream):
    """Words whole seconds in: the interval's nanoseconds must be exact to the last one."""

    script: ClassVar[tuple[tuple[int, str], ...]] = ((999, "a"), (1_000, "b"), (1_500, "c"), (2_000, "d"))


async def test_a_usage_flush_interval_of_seconds_is_due_exactly_on_the_nanosecond(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """usage_flush_interval=1.0: the growth is flushed at exactly 1 s ("b") and then exactly 2 s ("d")."""
    counted = await run_scripted(otel, monkeypatch, "all", script=SecondsApartStream, usage_flush_interval=1.0)
    assert counted == [0, 0, 2, 2, 4, 4]  # part start and final result at "a", "b".."d", part end (final flush)


@dataclass
class SameInstantStream(ScriptedStream):
    """Three chunks the clock cannot tell apart (a coarse clock, or a provider's burst)."""

    script: ClassVar[tuple[tuple[int, str], ...]] = ((40, "a"), (40, "b"), (40, "c"))


async def test_chunks_at_one_instant_have_gaps_of_zero(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    await run_scripted(otel, monkeypatch, "all", script=SameInstantStream, chunk_timing="per_chunk")
    attributes = dict(otel.one_stream_span().attributes or {})
    assert attributes["streamscope.stream.chunks"] == 3
    assert (attributes["streamscope.stream.chunk_gap.mean"], attributes["streamscope.stream.chunk_gap.longest"]) == (
        0.0,
        0.0,
    )
    assert histogram(otel, "streamscope.stream.chunk_gap.longest") == (1, 0.0)
    assert histogram(otel, "gen_ai.client.operation.time_per_output_chunk") == (2, 0.0)


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_live_pricing_is_due_exactly_one_interval_after_the_last(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With a 100 ms live-pricing interval, the usage flushed at 50 ms is too early to price, the one flushed at
    100 ms (exactly one interval in) is priced, the next at 210 ms too (110 ms after), then the final response."""
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 0.1)
    priced: list[int] = []
    original = ModelResponse.cost

    def recording_cost(self: ModelResponse) -> Any:
        priced.append(self.usage.output_tokens)
        return original(self)

    monkeypatch.setattr(ModelResponse, "cost", recording_cost)
    await run_scripted(otel, monkeypatch, mode, priced=True)
    assert priced == [3, 5, 5]


@dataclass
class SignatureFirstStream(ScriptedStream):
    """A thinking part's start with only its signature (no output: not a chunk) at 20 ms, then two deltas of text."""

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        self.clock.ns = OPENED_AT + 20 * MS
        for event in self._parts_manager.handle_thinking_delta(vendor_part_id="thinking", signature="sig-1"):
            yield event
        for at_ms, text in ((40, "hmm"), (100, " so")):
            self.clock.ns = OPENED_AT + at_ms * MS
            for event in self._parts_manager.handle_thinking_delta(vendor_part_id="thinking", content=text):
                yield event


@pytest.mark.parametrize("mode", ["all", "coalesce", "none"])
async def test_a_first_chunk_after_the_kept_first_events_is_timed(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With no span events ("none") the hot path keeps no first events: its first loop sees the first event only,
    and a first chunk that comes after it is timed by the second loop."""
    await run_scripted(otel, monkeypatch, mode, script=SignatureFirstStream)
    attributes = dict(otel.one_stream_span().attributes or {})
    assert attributes["streamscope.stream.chunks"] == 2
    assert attributes["gen_ai.response.time_to_first_chunk"] == 0.020  # the first event, as the conventions say
    assert attributes["streamscope.stream.chunk_gap.mean"] == 0.060  # from the first chunk, 40 ms in, to the last
    assert attributes["streamscope.stream.chunk_gap.longest"] == 0.060
