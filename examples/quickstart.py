"""Quickstart: instrument one Pydantic AI model and print its stream span to the console.

python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope


async def echo(messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ["Hello", " from", " a", " streamed", " answer!"]:
        yield word


async def main() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))

    # Wrap an existing model: every stream it opens becomes one span. (`streamscope.instrument()` with no
    # model instruments every model in the process instead.)
    model = streamscope.instrument(FunctionModel(stream_function=echo), tracer_provider=tracer_provider)
    agent = Agent(model)
    async with agent.run_stream("Say hello") as result:
        async for text in result.stream_text(delta=True, debounce_by=None):
            print(text, end="", flush=True)
    print()


if __name__ == "__main__":
    asyncio.run(main())
