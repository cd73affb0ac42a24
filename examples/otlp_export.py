"""Export streamscope's traces, metrics and logs over OTLP to a collector: one `streamscope.configure()` call.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 OTEL_SERVICE_NAME=chat-api python examples/otlp_export.py
    OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python examples/otlp_export.py

Needs the `otlp` extra (`pip install 'streamscope[otlp]'`). Everything comes from the standard OTEL_* variables:
endpoint and protocol (also per signal, e.g. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), headers, service name and
resource attributes, and which exporters run (OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER /
OTEL_LOGS_EXPORTER: otlp, console or none). The streams are offline (a local FunctionModel); one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from opentelemetry import trace
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope


async def answer(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ("Streams", " become", " spans", " in", " your", " collector."):
        await asyncio.sleep(0.005)
        yield word


async def flaky(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    yield "Half an answer"
    raise ConnectionError("upstream reset the stream")


async def main() -> None:
    # Providers, OTLP exporters and streamscope's instrumentation; leaving the block flushes and shuts down.
    with streamscope.configure() as telemetry:
        tracer = trace.get_tracer("examples.otlp_export")
        with tracer.start_as_current_span("handle chat request"):  # the streams' spans nest under it
            agent = Agent(FunctionModel(stream_function=answer, model_name="answerer"))
            async with agent.run_stream("How are streams exported?") as result:
                print(await result.get_output())
            try:
                async with Agent(FunctionModel(stream_function=flaky, model_name="flaky")).run_stream("hi") as result:
                    await result.get_output()
            except ConnectionError as error:
                print(f"failed stream: {error}")
        print(f"service.name={telemetry.tracer_provider.resource.attributes.get('service.name')}")
    print("exported")


if __name__ == "__main__":
    asyncio.run(main())
