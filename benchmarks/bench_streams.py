"""Per-event overhead, memory and open/close cost of streamscope, side by side with the alternatives.

    make bench            # or: .venv/bin/python benchmarks/bench_streams.py [--quick] [--json PATH]

Everything runs in one process on the same machine, and every figure is reported as a ratio to the raw,
uninstrumented Pydantic AI stream measured in the same run. Nothing here is a pass/fail assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

import streamscope

MESSAGES: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart("benchmark")])]
PARAMETERS = ModelRequestParameters()


def text_stream(deltas: int) -> FunctionModel:
    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
        for _ in range(deltas):
            yield "tok "

    return FunctionModel(stream_function=stream, model_name=f"text-{deltas}")


def mixed_stream(deltas: int) -> FunctionModel:
    """Thinking, text and tool-call parts in turn, `deltas` deltas in all."""

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        part = 0
        for i in range(deltas):
            if i % 100 == 0:
                part += 1
            kind = part % 3
            if kind == 0:
                yield {part: DeltaThinkingPart(content="hmm ")}
            elif kind == 1:
                yield "tok "
            else:
                yield {part: DeltaToolCall(name="lookup" if i % 100 == 0 else None, json_args='"x",')}

    return FunctionModel(stream_function=stream, model_name=f"mixed-{deltas}")


@dataclass(init=False)
class NaiveModel(WrapperModel):
    """The obvious wrapper: `span.add_event` and a read of `usage` for every stream event."""

    def __init__(self, wrapped: Model, tracer_provider: TracerProvider) -> None:
        super().__init__(wrapped)
        self.tracer = tracer_provider.get_tracer("naive")

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        with self.tracer.start_as_current_span(f"chat {self.model_name}", kind=SpanKind.CLIENT) as span:
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                yield _NaiveStream(stream, span)  # type: ignore[misc]  # pyright: ignore[reportReturnType]


class _NaiveStream:
    def __init__(self, stream: StreamedResponse, span: Any) -> None:
        self.stream = stream
        self.span = span

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for event in self.stream:
            usage = self.stream.usage
            self.span.add_event(event.event_kind, {"output_tokens": usage.output_tokens})
            yield event


def providers() -> tuple[TracerProvider, MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter(), max_queue_size=100_000))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


async def drain(model: Any) -> int:
    count = 0
    async with model.request_stream(MESSAGES, None, PARAMETERS) as stream:
        async for _ in stream:
            count += 1
    return count


async def per_event_us(model: Any) -> float:
    start = time.perf_counter()
    count = await drain(model)
    return (time.perf_counter() - start) / count * 1e6


VARIANTS: dict[str, Callable[[Model, TracerProvider, MeterProvider], Any]] = {
    "raw": lambda model, _tp, _mp: model,
    "pydantic_ai_instrumented": lambda model, tp, mp: InstrumentedModel(
        model, InstrumentationSettings(tracer_provider=tp, meter_provider=mp)
    ),
    "naive_add_event": lambda model, tp, _mp: NaiveModel(model, tp),
    "streamscope": lambda model, tp, mp: streamscope.instrument(model, tracer_provider=tp, meter_provider=mp),
    "streamscope_capture": lambda model, tp, mp: streamscope.instrument(
        model, tracer_provider=tp, meter_provider=mp, capture_content=True
    ),
}


async def measure_workload(name: str, factory: Callable[[], Model], repetitions: int) -> dict[str, Any]:
    tracer_provider, meter_provider = providers()
    models = {variant: build(factory(), tracer_provider, meter_provider) for variant, build in VARIANTS.items()}
    samples: dict[str, list[float]] = {variant: [] for variant in models}
    for model in models.values():  # warm up
        await drain(model)
    for _ in range(repetitions):  # interleaved, so drift hits every variant alike
        for variant, model in models.items():
            gc.collect()
            samples[variant].append(await per_event_us(model))
    tracer_provider.shutdown()
    # Each repetition runs every variant back to back: the ratio to raw is taken within a repetition (so drift
    # of the machine's speed cancels), then the median over repetitions.
    baseline = statistics.median(samples["raw"])

    def paired_ratio(variant: str) -> float:
        return statistics.median(v / r for v, r in zip(samples[variant], samples["raw"], strict=True))

    naive_overhead_ratio = paired_ratio("naive_add_event") - 1
    rows: dict[str, Any] = {}
    for variant, values in samples.items():
        ratio = paired_ratio(variant)
        rows[variant] = {
            "us_per_event": round(statistics.median(values), 3),
            "ratio_to_raw": round(ratio, 4),
            "overhead_us": round((ratio - 1) * baseline, 3),
            "overhead_pct": round((ratio - 1) * 100, 2),
            "naive_overhead_over_this": round(naive_overhead_ratio / (ratio - 1), 2) if ratio > 1 else None,
        }
    return {"workload": name, "repetitions": repetitions, "variants": rows}


async def peak_memory(events: int) -> dict[str, Any]:
    """Peak traced memory while draining one `events`-event stream, raw and under streamscope."""
    result: dict[str, Any] = {"events": events}
    for variant in ("raw", "streamscope"):
        tracer_provider, meter_provider = providers()
        model = VARIANTS[variant](text_stream(events), tracer_provider, meter_provider)
        gc.collect()
        tracemalloc.start()
        await drain(model)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracer_provider.shutdown()
        result[f"{variant}_peak_mb"] = round(peak / 2**20, 3)
    result["growth_mb"] = round(result["streamscope_peak_mb"] - result["raw_peak_mb"], 3)
    return result


async def open_close(streams: int) -> dict[str, Any]:
    """Cost of a stream's open and close: 1-event streams, raw vs instrumented (µs per stream).

    `streamscope_noop_providers` runs streamscope against the OpenTelemetry API's no-op providers: what
    streamscope itself costs, without the SDK's span, event and histogram work.
    """
    tracer_provider, meter_provider = providers()
    models: dict[str, Any] = {
        "raw": text_stream(1),
        "pydantic_ai_instrumented": VARIANTS["pydantic_ai_instrumented"](
            text_stream(1), tracer_provider, meter_provider
        ),
        "streamscope": VARIANTS["streamscope"](text_stream(1), tracer_provider, meter_provider),
        "streamscope_noop_providers": streamscope.instrument(
            text_stream(1), tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
        ),
    }

    async def per_stream_us(model: Any) -> float:
        start = time.perf_counter()
        for _ in range(streams):
            await drain(model)
        return (time.perf_counter() - start) / streams * 1e6

    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(5):
        for name, model in models.items():
            samples[name].append(await per_stream_us(model))
    tracer_provider.shutdown()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        name: {"us_per_stream": round(value, 2), "overhead_us": round(value - medians["raw"], 2)}
        for name, value in medians.items()
    }


def print_table(results: dict[str, Any]) -> None:
    for workload in results["workloads"]:
        print(f"\n{workload['workload']} (median of {workload['repetitions']}; ratio: median of paired ratios)")
        print(f"  {'variant':<26} {'µs/event':>9} {'ratio':>7} {'overhead':>10} {'naive/this':>11}")
        for variant, row in workload["variants"].items():
            naive = row["naive_overhead_over_this"]
            print(
                f"  {variant:<26} {row['us_per_event']:>9.2f} {row['ratio_to_raw']:>7.3f}"
                f" {row['overhead_pct']:>9.2f}% {naive if naive is not None else '-':>11}"
            )
    memory = results["memory"]
    print(
        f"\npeak memory, one {memory['events']:,}-event stream: raw {memory['raw_peak_mb']} MB, "
        f"streamscope {memory['streamscope_peak_mb']} MB (growth {memory['growth_mb']} MB)"
    )
    print("open+close of a 1-event stream (µs per stream, overhead over raw):")
    for name, row in results["open_close"].items():
        print(f"  {name:<28} {row['us_per_stream']:>9.2f} {row['overhead_us']:>9.2f}")


async def main_async(quick: bool) -> dict[str, Any]:
    repetitions = 5 if quick else 41
    workloads: list[tuple[str, Callable[[], Model], int]] = [
        ("text, 2,000 deltas", lambda: text_stream(2_000), repetitions),
        ("text, 20,000 deltas", lambda: text_stream(20_000), max(3, repetitions // 4)),
        ("mixed thinking/text/tool-call, 2,000 deltas", lambda: mixed_stream(2_000), repetitions),
    ]
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "workloads": [await measure_workload(name, factory, reps) for name, factory, reps in workloads],
        "memory": await peak_memory(20_000 if quick else 100_000),
        "open_close": await open_close(200 if quick else 2_000),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller streams")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args.quick))
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
