"""Stall detection: streams in flight with no chunk for longer than the threshold, and the oldest one's age."""

from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic_ai.models import ModelRequestParameters

import streamscope
from streamscope import _inflight
from streamscope._metrics import StallWatch
from tests.conftest import Otel
from tests.test_cost import GrowingModel, prompt
from tests.test_stream_timing import Clock

pytestmark = pytest.mark.anyio

STALLED = "streamscope.streams.stalled"
OLDEST_AGE = "streamscope.streams.oldest_age"
THRESHOLD = 0.2


def gauge(otel: Otel, name: str, model: str) -> float:
    [value] = [point.value for attributes, point in otel.metrics()[name] if attributes["gen_ai.request.model"] == model]
    return value


async def test_a_stream_waiting_longer_than_the_threshold_is_stalled(otel: Otel) -> None:
    gate = asyncio.Event()  # holds each stream before its second chunk
    stalling = streamscope.instrument(GrowingModel("gpt-4o", gate=gate), stall_threshold=THRESHOLD, **otel.providers)
    steady = streamscope.instrument(GrowingModel("gpt-4o-mini"), stall_threshold=THRESHOLD, **otel.providers)
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async with stalling.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 5)
    loop = asyncio.get_running_loop()
    opened = loop.time()
    assert gauge(otel, STALLED, "gpt-4o") == 0  # a chunk just arrived
    async with steady.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    await asyncio.sleep(THRESHOLD * 1.5)
    assert gauge(otel, STALLED, "gpt-4o") == 1
    assert gauge(otel, STALLED, "gpt-4o-mini") == 0  # finished: known, with none stalled
    age = gauge(otel, OLDEST_AGE, "gpt-4o")
    assert THRESHOLD * 1.5 <= age <= loop.time() - opened + 1.0
    assert gauge(otel, OLDEST_AGE, "gpt-4o-mini") == 0

    gate.set()  # the stream resumes and ends
    await asyncio.wait_for(task, 5)
    assert gauge(otel, STALLED, "gpt-4o") == 0
    assert gauge(otel, OLDEST_AGE, "gpt-4o") == 0
    span = next(s for s in otel.stream_spans() if (s.attributes or {})["gen_ai.request.model"] == "gpt-4o")
    longest = (span.attributes or {})["streamscope.stream.chunk_gap.longest"]
    assert isinstance(longest, float)
    assert longest >= THRESHOLD * 1.5


async def test_a_stream_with_no_first_chunk_yet_stalls_too(otel: Otel) -> None:
    model = streamscope.instrument(GrowingModel(), stall_threshold=THRESHOLD, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()):
        assert gauge(otel, STALLED, "gpt-4o") == 0
        await asyncio.sleep(THRESHOLD * 1.5)  # opened, never read
        assert gauge(otel, STALLED, "gpt-4o") == 1
    assert gauge(otel, STALLED, "gpt-4o") == 0


async def test_the_stall_gauges_only_count_their_own_meter_providers_streams(otel: Otel) -> None:
    reader = InMemoryMetricReader()
    other = MeterProvider(metric_readers=[reader])
    try:
        mine = streamscope.instrument(GrowingModel(), stall_threshold=THRESHOLD, **otel.providers)
        theirs = streamscope.instrument(GrowingModel(), stall_threshold=THRESHOLD, meter_provider=other)
        async with theirs.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
        async with mine.request_stream(prompt(), None, ModelRequestParameters()):
            await asyncio.sleep(THRESHOLD * 1.5)
            assert gauge(otel, STALLED, "gpt-4o") == 1
            data = reader.get_metrics_data()
            assert data is not None
            values = [
                getattr(point, "value", None)
                for resource_metrics in data.resource_metrics
                for scope_metrics in resource_metrics.scope_metrics
                for metric in scope_metrics.metrics
                if metric.name == STALLED
                for point in metric.data.data_points
            ]
            assert values == [0]
    finally:
        other.shutdown()


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (86_401, ValueError),
        (True, TypeError),
        ("30", TypeError),
        (None, TypeError),
    ],
)
def test_stall_threshold_is_validated(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="stall_threshold"):
        streamscope.instrument(GrowingModel(), stall_threshold=bad)


def test_stall_threshold_default_is_thirty_seconds() -> None:
    from streamscope._options import build_options

    assert build_options().stall_threshold == 30.0
    assert build_options(stall_threshold=2).stall_threshold == 2.0
    assert build_options(stall_threshold=86_400).stall_threshold == 86_400.0  # a day: the most allowed


def test_a_stall_watch_not_yet_given_its_instruments_observes_nothing() -> None:
    """Its callbacks are registered before its instruments exist: a collection in between (a periodic reader's
    thread) gets no observation, not an error."""
    watch = StallWatch()
    options = CallbackOptions()
    assert list(watch.observe_stalled(options)) == []
    assert list(watch.observe_oldest_age(options)) == []


async def test_streams_stall_only_past_the_threshold_and_are_each_counted(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a scripted clock: two streams of one model opened and not read yet are not stalled when exactly the
    threshold has passed, and both are, counted, one nanosecond later."""
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter_ns", clock)
    model = streamscope.instrument(GrowingModel("gpt-4o"), stall_threshold=2, **otel.providers)
    opened = clock.ns
    async with (
        model.request_stream(prompt(), None, ModelRequestParameters()),
        model.request_stream(prompt(), None, ModelRequestParameters()),
    ):
        clock.ns = opened + 2_000_000_000
        assert gauge(otel, STALLED, "gpt-4o") == 0
        clock.ns += 1
        assert gauge(otel, STALLED, "gpt-4o") == 2
        assert gauge(otel, OLDEST_AGE, "gpt-4o") == 2.000000001


@pytest.mark.parametrize("order", ["oldest first", "oldest last"])
def test_the_oldest_age_is_the_oldest_streams_in_any_order(monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """The streams in flight come in no particular order (a weak set): the gauge is the oldest's age either way."""
    key = (("gen_ai.request.model", "gpt-4o"),)
    owner = SimpleNamespace(streams_active=SimpleNamespace(keys=lambda: [key]))
    telemetry = SimpleNamespace(metrics=owner)
    old = SimpleNamespace(telemetry=telemetry, metric_key=key, start_ns=1_000, last_chunk_ns=0, stall_threshold_ns=10)
    young = SimpleNamespace(telemetry=telemetry, metric_key=key, start_ns=3_000, last_chunk_ns=0, stall_threshold_ns=10)
    in_flight = [old, young] if order == "oldest first" else [young, old]
    monkeypatch.setattr(_inflight, "snapshot", lambda: in_flight)
    monkeypatch.setattr(time, "perf_counter_ns", lambda: 5_000)
    watch = StallWatch()
    watch.owner = owner  # pyright: ignore[reportAttributeAccessIssue]
    [observation] = watch.observe_oldest_age(CallbackOptions())
    assert observation.value == 4_000 / 1e9
    assert observation.attributes == {"gen_ai.request.model": "gpt-4o"}
