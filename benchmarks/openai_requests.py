"""The worker `instructions.py` runs under valgrind for its OpenAI workload: agent requests through a real provider.

    python benchmarks/openai_requests.py VARIANT REQUESTS

Runs ``REQUESTS`` `agent.run_stream(q).stream_text(delta=True)` requests, 8 in flight, every third one left after
3 chunks (as the real-app benchmark's clients do), through `OpenAIChatModel` and the real openai SDK against the
loopback stub at ``MODEL_BASE_URL`` (started by `instructions.py`, outside valgrind), after a 9-request warm-up.
Variants:

- ``off``: no OpenTelemetry at all;
- ``streamscope``: ``streamscope.configure()``, default options, exporters from the standard ``OTEL_*`` variables
  (the driver sets OTLP/HTTP spans to a loopback sink and a Prometheus endpoint, as in the real app);
- ``streamscope_usage_flush_off``: the same with ``usage_flush_interval=60`` (no time-based work while a stream
  runs: under valgrind's slowdown the 50 ms flush and the live pricing it may trigger run far more often per
  request than in real time);
- ``pydantic_ai``: Pydantic AI's own instrumentation (its defaults) exporting the same way.

Every variant shuts its providers down at the end, so every span is encoded and exported within the count. The
heap left by start-up and warm-up is frozen (`gc.freeze()`) before the measured requests, as `bench_streams.py`
does: a full collection of it lands in one run and not another, which would decide the figure.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

VARIANTS = ("off", "streamscope", "streamscope_usage_flush_off", "pydantic_ai")
IN_FLIGHT = 8
WARMUP = 9
LEAVE_EVERY, LEAVE_AFTER = 3, 3


def instrument(agent: Agent, variant: str) -> Callable[[], object] | None:
    """Set up `variant`'s instrumentation; return its shutdown."""
    if variant.startswith("streamscope"):
        import streamscope

        flush_interval = 60.0 if variant == "streamscope_usage_flush_off" else 0.05  # 0.05: the default
        return streamscope.configure(service_name="bench-openai", usage_flush_interval=flush_interval).shutdown
    if variant == "pydantic_ai":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from pydantic_ai.models.instrumented import InstrumentationSettings

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
        agent.instrument = InstrumentationSettings(tracer_provider=tracer_provider, meter_provider=meter_provider)

        def shutdown() -> None:
            tracer_provider.shutdown()
            meter_provider.shutdown()

        return shutdown
    return None


async def request(agent: Agent, number: int, in_flight: asyncio.Semaphore) -> None:
    async with in_flight, agent.run_stream("Tell me something") as result:
        chunks = 0
        async for _ in result.stream_text(delta=True, debounce_by=None):
            chunks += 1
            if number % LEAVE_EVERY == LEAVE_EVERY - 1 and chunks == LEAVE_AFTER:
                break


async def run(agent: Agent, requests: int) -> None:
    in_flight = asyncio.Semaphore(IN_FLIGHT)
    await asyncio.gather(*(request(agent, number, in_flight) for number in range(WARMUP)))
    # A full collection of the start-up heap would land in one run and not another: freeze that heap away.
    gc.collect()
    gc.freeze()
    await asyncio.gather(*(request(agent, number, in_flight) for number in range(requests)))


def main() -> None:
    variant, requests = sys.argv[1], int(sys.argv[2])
    if variant not in VARIANTS:
        sys.exit(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    provider = OpenAIProvider(base_url=os.environ["MODEL_BASE_URL"], api_key="not-needed")
    agent = Agent(OpenAIChatModel("gpt-4o", provider=provider))
    shutdown = instrument(agent, variant)
    asyncio.run(run(agent, requests))
    if shutdown is not None:
        shutdown()


if __name__ == "__main__":
    main()
