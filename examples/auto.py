"""A Pydantic AI app without a line of telemetry code: `opentelemetry-instrument` adds streamscope.

    OTEL_SERVICE_NAME=auto-example OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=console \\
    OTEL_LOGS_EXPORTER=none opentelemetry-instrument python examples/auto.py

`opentelemetry-instrument` (from opentelemetry-instrumentation) sets up the SDK from the OTEL_* variables and
runs every installed instrumentor; streamscope's is registered under the `opentelemetry_instrumentor` entry
point, so each stream below becomes a span, with metrics. With the `otlp` extra installed, leave the
exporter variables unset (they default to otlp) and set OTEL_EXPORTER_OTLP_ENDPOINT instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel


async def haiku(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for line in ("Tokens drift like snow,", " each delta a footprint kept,", " the span remembers."):
        await asyncio.sleep(0.01)
        yield line


async def main() -> None:
    agent = Agent(FunctionModel(stream_function=haiku, model_name="haiku-writer"))
    async with agent.run_stream("Write a haiku about telemetry") as result:
        async for text in result.stream_text(delta=True, debounce_by=None):
            print(text, end="", flush=True)
    print()


if __name__ == "__main__":
    asyncio.run(main())
