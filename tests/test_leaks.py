"""Leaks: 10,000 streams opened and let go of, without iterating and after an early break.

Half of the streams are closed by their `async with` block, half are dropped with the block never exited (entered
with `__aenter__()` and forgotten), so only garbage collection can end them. After every batch of 1,000 streams
memory is measured as CPython's count of allocated blocks, and the last batch is traced with `tracemalloc`: after
two warm-up batches the block count must stay flat, and what the last batch leaves traced must be next to nothing
(tolerances far below one leaked object per stream).
To show the measurement would see a leak, the first warm-up batch keeps its streams alive until it is measured.
Every span started ends once the streams are closed or collected, and `streamscope.streams.active` returns to 0.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.conftest import sum_value
from tests.helpers_reliability import (
    ACTIVE,
    OtelDiagnostics,
    SpanLedger,
    instrumented_as,
    open_stream,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

BATCHES = 10
BATCH = 1_000
# tracemalloc traces the last two batches only (it slows allocation ~6x); block counts cover every batch. What the
# first traced batch leaves is bounded state, allocated anew while tracing (the histograms' exemplars: the latest
# per bucket); what the last one adds on top is what 1,000 more streams leak.
TRACED = 8
TOLERANCE = 32 * 1024  # bytes the last 1,000 streams may leave traced: ~33 a stream, less than any leaked object
BLOCK_TOLERANCE = 1_000  # allocated blocks over the last 7,000 streams: fewer than one per 7 streams


async def _words(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ("Once", " upon", " a", " time"):
        yield word


async def settle() -> None:
    """Collect garbage and let the event loop run the async-generator finalisers it schedules."""
    for _ in range(3):
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)


async def never_iterated(model: Model, number: int, keep: list[Any] | None) -> None:
    if number % 2:
        async with open_stream(model) as stream:
            if keep is not None:
                keep.append(stream)
    else:
        opening = open_stream(model)
        stream = await opening.__aenter__()  # and never exited: dropped
        if keep is not None:
            keep.append((opening, stream))


async def early_break(model: Model, number: int, keep: list[Any] | None) -> None:
    if number % 2:
        async with open_stream(model) as stream:
            async for _ in stream:
                break
            if keep is not None:
                keep.append(stream)
    else:
        opening = open_stream(model)
        stream = await opening.__aenter__()  # never exited: dropped after the break
        async for _ in stream:
            break
        if keep is not None:
            keep.append((opening, stream))


SCENARIOS = {"without iteration": never_iterated, "after an early break": early_break}


@pytest.mark.parametrize(
    ("scenario", "mode", "closed_reason"),
    [
        ("without iteration", "process-wide", "never_iterated"),
        ("after an early break", "instrument(model)", "consumer_closed"),
    ],
)
async def test_ten_thousand_streams_let_go_of_do_not_leak(scenario: str, mode: str, closed_reason: str) -> None:
    ledger = SpanLedger(keep=False)  # no exporter: nothing in the pipeline may hold on to the spans
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(ledger)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    run_one = SCENARIOS[scenario]
    blocks: list[int] = []
    traced: list[int] = []
    with (
        OtelDiagnostics() as diagnostics,
        instrumented_as(
            mode,
            FunctionModel(stream_function=_words, model_name="leaky"),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ) as model,
    ):
        await settle()
        before = sys.getallocatedblocks()
        # Warm-up batch 0 keeps its streams until measured: a leak of that size must show. (It also grows, once
        # and for good, the event loop's containers that hold 1,000 live streams' generators and tasks.)
        kept: list[Any] = []
        for number in range(BATCH):
            await run_one(model, number, kept)
        await settle()
        kept_blocks = sys.getallocatedblocks() - before
        assert ledger.started - ledger.ended == BATCH // 2  # the kept streams that were never closed
        kept.clear()
        await settle()
        assert ledger.started == ledger.ended  # ... have ended now they are collected
        try:
            for batch in range(1, BATCHES):
                if batch == TRACED:
                    tracemalloc.start()
                    traced.append(tracemalloc.get_traced_memory()[0])
                for number in range(BATCH):
                    await run_one(model, batch * BATCH + number, None)
                await settle()
                blocks.append(sys.getallocatedblocks())
                if tracemalloc.is_tracing():
                    traced.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()

    assert kept_blocks > 20 * BLOCK_TOLERANCE, kept_blocks  # the measurement sees 1,000 streams kept alive
    block_growth = [count - blocks[1] for count in blocks[1:]]  # from the end of warm-up batch 2 on
    assert max(block_growth) < BLOCK_TOLERANCE, block_growth
    assert len(traced) == 3  # when tracing started, after the first traced batch, after the last one
    assert traced[2] - traced[1] < TOLERANCE, traced

    assert ledger.started == BATCHES * BATCH
    ledger.assert_all_ended_once()
    # The closed half ended as closed; the dropped half as collected (or closed by the async-generator finaliser
    # the event loop runs for a collected generator that wraps the stream).
    assert set(ledger.end_reasons) <= {closed_reason, "garbage_collected"}, ledger.end_reasons
    assert ledger.end_reasons[closed_reason] >= BATCHES * BATCH // 2, ledger.end_reasons
    assert sum(ledger.end_reasons.values()) == BATCHES * BATCH
    data = reader.get_metrics_data()
    points: list[tuple[dict[str, Any], Any]] = [
        (dict(point.attributes or {}), point)
        for resource_metrics in (data.resource_metrics if data is not None else [])
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == ACTIVE
        for point in metric.data.data_points
    ]
    assert points and sum_value(points) == 0
    diagnostics.assert_clean()
    tracer_provider.shutdown()
    meter_provider.shutdown()
