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
import subprocess
import sys
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


@dataclass(init=False)
class PassThroughModel(WrapperModel):
    """The least any per-event wrapper does: one async-generator layer that yields every event on, nothing else."""

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async with self.wrapped.request_stream(
            messages, model_settings, model_request_parameters, run_context
        ) as stream:
            yield _PassThroughStream(stream)  # type: ignore[misc]  # pyright: ignore[reportReturnType]


class _PassThroughStream:
    def __init__(self, stream: StreamedResponse) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for event in self.stream:
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
    # The GenAI conventions' time per output chunk, one histogram record per chunk (at the stream's end).
    "streamscope_per_chunk": lambda model, tp, mp: streamscope.instrument(
        model, tracer_provider=tp, meter_provider=mp, chunk_timing="per_chunk"
    ),
    # Live cost off (the benchmark models' names have no price: on, their cost path is a remembered unknown).
    "streamscope_no_cost": lambda model, tp, mp: streamscope.instrument(
        model, tracer_provider=tp, meter_provider=mp, cost=False
    ),
}


def priced(model: Model) -> FunctionModel:
    """The same stream under a model name genai-prices knows (gpt-4o), so that every stream is priced."""
    assert isinstance(model, FunctionModel)
    assert model.stream_function is not None
    return FunctionModel(stream_function=model.stream_function, model_name="gpt-4o")


# Stream open+close variants besides the per-event ones: streamscope's own machinery without the SDK's work, and
# streamscope composed with Pydantic AI's own instrumentation (which Pydantic AI records, which streamscope leaves).
STREAM_VARIANTS: dict[str, Callable[[Model, TracerProvider, MeterProvider], Any]] = {
    **VARIANTS,
    "streamscope_noop_providers": lambda model, _tp, _mp: streamscope.instrument(
        model, tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    ),
    "streamscope_over_instrumented_model": lambda model, tp, mp: streamscope.instrument(
        InstrumentedModel(model, InstrumentationSettings(tracer_provider=tp, meter_provider=mp)),
        tracer_provider=tp,
        meter_provider=mp,
    ),
    # A model genai-prices knows: each stream's final response is priced once (live cost), or not (cost=False).
    "streamscope_priced": lambda model, tp, mp: streamscope.instrument(
        priced(model), tracer_provider=tp, meter_provider=mp
    ),
    "streamscope_priced_no_cost": lambda model, tp, mp: streamscope.instrument(
        priced(model), tracer_provider=tp, meter_provider=mp, cost=False
    ),
}


# Per-event variants only `instructions.py` counts: the floor of any per-event wrapper, and streamscope's hot path
# without its usage flush (time-based: under valgrind's slowdown the 50 ms flush runs every few events instead of
# every couple of thousand, so the default variant over-counts it; this one shows the hot path alone).
INSTRUCTION_VARIANTS: dict[str, Callable[[Model, TracerProvider, MeterProvider], Any]] = {
    **VARIANTS,
    "pass_through_layer": lambda model, _tp, _mp: PassThroughModel(model),
    "streamscope_usage_flush_off": lambda model, tp, mp: streamscope.instrument(
        model, tracer_provider=tp, meter_provider=mp, usage_flush_interval=60
    ),
}


WORKLOADS: dict[str, Callable[[], Model]] = {
    "text, 2,000 deltas": lambda: text_stream(2_000),
    "text, 20,000 deltas": lambda: text_stream(20_000),
    "mixed thinking/text/tool-call, 2,000 deltas": lambda: mixed_stream(2_000),
}


async def measure_workload(name: str, repetitions: int) -> dict[str, list[float]]:
    """µs/event of every variant, `repetitions` times, interleaved (so drift hits every variant alike)."""
    tracer_provider, meter_provider = providers()
    models = {variant: build(WORKLOADS[name](), tracer_provider, meter_provider) for variant, build in VARIANTS.items()}
    samples: dict[str, list[float]] = {variant: [] for variant in models}
    for model in models.values():  # warm up
        await drain(model)
    for _ in range(repetitions):
        for variant, model in models.items():
            gc.collect()
            samples[variant].append(await per_event_us(model))
    tracer_provider.shutdown()
    return samples


def summarise_workload(name: str, runs: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Ratios to raw: within each process the median of per-repetition ratios, then the median over processes.

    A process's heap layout shifts every variant's speed by a few percent, the same way for the whole
    process: pairing within a repetition cancels the machine's drift, the median over processes the layout.
    """

    def process_ratios(variant: str) -> list[float]:
        return [statistics.median(v / r for v, r in zip(run[variant], run["raw"], strict=True)) for run in runs]

    baseline = statistics.median(value for run in runs for value in run["raw"])
    naive_overhead_ratio = statistics.median(process_ratios("naive_add_event")) - 1
    rows: dict[str, Any] = {}
    for variant in runs[0]:
        ratios = process_ratios(variant)
        ratio = statistics.median(ratios)
        rows[variant] = {
            "us_per_event": round(statistics.median(value for run in runs for value in run[variant]), 3),
            "ratio_to_raw": round(ratio, 4),
            "overhead_us": round((ratio - 1) * baseline, 3),
            "overhead_pct": round((ratio - 1) * 100, 2),
            "overhead_pct_per_process": [round((r - 1) * 100, 2) for r in ratios],
            "naive_overhead_over_this": round(naive_overhead_ratio / (ratio - 1), 2) if ratio > 1 else None,
        }
    return {"workload": name, "processes": len(runs), "repetitions": len(runs[0]["raw"]), "variants": rows}


async def peak_memory(events: int) -> dict[str, Any]:
    """Peak traced memory while draining one `events`-event stream, raw and under streamscope."""
    result: dict[str, Any] = {"events": events}
    for variant in ("raw", "streamscope"):
        tracer_provider, meter_provider = providers()
        model = VARIANTS[variant](text_stream(events), tracer_provider, meter_provider)
        await drain(VARIANTS[variant](text_stream(10), tracer_provider, meter_provider))  # imports, caches
        gc.collect()
        tracemalloc.start()
        await drain(model)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracer_provider.shutdown()
        result[f"{variant}_peak_mb"] = round(peak / 2**20, 3)
    result["growth_mb"] = round(result["streamscope_peak_mb"] - result["raw_peak_mb"], 3)
    return result


def sdk_minimum_us(tracer_provider: TracerProvider, meter_provider: MeterProvider, streams: int) -> float:
    """µs for what any GenAI instrumentation pays the SDK per stream: one CLIENT span, four histogram records.

    No stream at all: this is the floor under the `overhead_us` of every instrumented variant here.
    """
    tracer = tracer_provider.get_tracer("floor")
    meter = meter_provider.get_meter("floor")
    histograms = [meter.create_histogram(f"floor.{i}") for i in range(4)]
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "function", "gen_ai.request.model": "m"}
    start = time.perf_counter()
    for _ in range(streams):
        tracer.start_span("chat m", kind=SpanKind.CLIENT, attributes=attributes).end()
        for histogram in histograms:
            histogram.record(1.0, attributes)
    return (time.perf_counter() - start) / streams * 1e6


async def open_close(streams: int) -> dict[str, float]:
    """Cost of a stream's open and close: µs per 1-event stream, raw and instrumented.

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
    samples["sdk_span_and_histograms_only"] = []
    for _ in range(5):
        for name, model in models.items():
            samples[name].append(await per_stream_us(model))
        samples["sdk_span_and_histograms_only"].append(sdk_minimum_us(tracer_provider, meter_provider, streams))
    tracer_provider.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


async def one_stream(variant: str, events: int) -> int:
    """Drain one `events`-event text stream under `variant` (after a 10-event warm-up stream)."""
    tracer_provider, meter_provider = providers()
    await drain(INSTRUCTION_VARIANTS[variant](text_stream(10), tracer_provider, meter_provider))
    # A full collection of whatever the imports left would land in one run and not another: freeze it away.
    gc.collect()
    gc.freeze()
    count = await drain(INSTRUCTION_VARIANTS[variant](text_stream(events), tracer_provider, meter_provider))
    tracer_provider.shutdown()
    return count


SDK_FLOOR = "sdk_floor"
"""A `many_streams` variant: the raw stream, then one CLIENT span and four histogram records (the SDK floor)."""


async def many_streams(variant: str, streams: int) -> int:
    """Open, drain and close `streams` 1-event streams under `variant` (after a warm-up one), for counting
    instructions per stream (benchmarks/instructions.py). `sdk_floor` drains the raw stream and then pays the
    SDK floor once per stream, so that its cost over raw is the floor in the same units."""
    tracer_provider, meter_provider = providers()
    floor = variant == SDK_FLOOR
    model = STREAM_VARIANTS["raw" if floor else variant](text_stream(1), tracer_provider, meter_provider)
    await drain(model)
    if floor:
        sdk_minimum_us(tracer_provider, meter_provider, 1)
    gc.collect()
    gc.freeze()
    count = 0
    for _ in range(streams):
        count += await drain(model)
        if floor:
            sdk_minimum_us(tracer_provider, meter_provider, 1)
    tracer_provider.shutdown()
    return count


def print_table(results: dict[str, Any]) -> None:
    for workload in results["workloads"]:
        print(
            f"\n{workload['workload']} ({workload['processes']} processes x {workload['repetitions']} repetitions;"
            " ratio: median over processes of the median paired ratio)"
        )
        print(f"  {'variant':<26} {'µs/event':>9} {'ratio':>7} {'overhead':>10} {'naive/this':>11}  per process")
        for variant, row in workload["variants"].items():
            naive = row["naive_overhead_over_this"]
            spread = " ".join(f"{value:+.1f}" for value in row["overhead_pct_per_process"]) if variant != "raw" else ""
            print(
                f"  {variant:<26} {row['us_per_event']:>9.2f} {row['ratio_to_raw']:>7.3f}"
                f" {row['overhead_pct']:>9.2f}% {naive if naive is not None else '-':>11}  {spread}"
            )
    memory = results["memory"]
    print(
        f"\npeak memory, one {memory['events']:,}-event stream: raw {memory['raw_peak_mb']} MB, "
        f"streamscope {memory['streamscope_peak_mb']} MB (growth {memory['growth_mb']} MB)"
    )
    print("open+close of a 1-event stream (µs per stream, overhead over raw, streams per second):")
    for name, row in results["open_close"].items():
        print(f"  {name:<28} {row['us_per_stream']:>9.2f} {row['overhead_us']:>9.2f} {row['streams_per_s']:>9.0f}")


def run_worker(task: str, argument: str, repetitions: int) -> Any:
    """Run one measurement in this process (the parent starts one process per repetition of the suite)."""
    if task == "workload":
        return asyncio.run(measure_workload(argument, repetitions))
    if task == "open_close":
        return asyncio.run(open_close(int(argument)))
    if task == "stream":  # one stream, for counting instructions (benchmarks/instructions.py)
        variant, events = argument.split(":")
        return asyncio.run(one_stream(variant, int(events)))
    if task == "streams":  # many 1-event streams, for counting instructions per open+close
        variant, streams = argument.split(":")
        return asyncio.run(many_streams(variant, int(streams)))
    return asyncio.run(peak_memory(int(argument)))


def in_process(task: str, argument: str, repetitions: int = 0) -> Any:
    command = [sys.executable, __file__, "--worker", task, argument, str(repetitions)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output)


def run_suite(quick: bool) -> dict[str, Any]:
    processes = 2 if quick else 5
    repetitions = dict(zip(WORKLOADS, (15, 4, 15), strict=True))
    if quick:
        repetitions = {name: max(2, count // 3) for name, count in repetitions.items()}
    runs: dict[str, list[Any]] = {name: [] for name in WORKLOADS}
    open_close_runs: list[dict[str, Any]] = []
    for process in range(processes):
        print(f"process {process + 1}/{processes} ...", file=sys.stderr)
        for name in WORKLOADS:
            runs[name].append(in_process("workload", name, repetitions[name]))
        open_close_runs.append(in_process("open_close", "200" if quick else "1000"))
    workloads = [summarise_workload(name, name_runs) for name, name_runs in runs.items()]
    open_close_result: dict[str, Any] = {}
    raw_us = statistics.median(run["raw"] for run in open_close_runs)
    for name in open_close_runs[0]:
        us = statistics.median(run[name] for run in open_close_runs)
        # The SDK floor is no stream: its whole time is overhead.
        baseline = "raw" if name != "sdk_span_and_histograms_only" else None
        overhead = statistics.median(run[name] - (run[baseline] if baseline else 0) for run in open_close_runs)
        open_close_result[name] = {
            "us_per_stream": round(us, 2),
            "overhead_us": round(overhead, 2),
            "streams_per_s": round(1e6 / us),
            "raw_streams_per_s": round(1e6 / raw_us),
        }
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "workloads": workloads,
        "memory": in_process("memory", "20000" if quick else "100000"),
        "open_close": open_close_result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer processes, repetitions and events")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--worker", nargs=3, metavar=("TASK", "ARGUMENT", "REPETITIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        task, argument, repetitions = args.worker
        print(json.dumps(run_worker(task, argument, int(repetitions))))
        return
    results = run_suite(args.quick)
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
