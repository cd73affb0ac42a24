"""Serve streamscope's metrics for Prometheus on http://<host>:<port>/metrics while streams run.

    python examples/prometheus_endpoint.py --port 9464 --duration 120

Needs the `prometheus` extra (`pip install 'streamscope[prometheus]'`). Point a Prometheus scrape job at the
endpoint and import the dashboards in dashboards/ into Grafana. The streams are offline (a local
FunctionModel): most complete, some are broken out of early, some fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

import streamscope


async def answer(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    for word in ("Metrics", " for", " every", " stream."):
        await asyncio.sleep(0.01)
        yield word


async def flaky(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    yield "Half"
    raise ConnectionError("upstream reset the stream")


async def main(host: str, port: int, duration: float) -> None:
    # Metrics only: no trace or log exporter. The endpoint stops when the block ends.
    with streamscope.configure(
        service_name="prometheus-example", traces="none", logs="none", metrics="prometheus",
        prometheus_host=host, prometheus_port=port,
    ) as telemetry:  # fmt: skip
        assert telemetry.prometheus_address is not None
        bound_host, bound_port = telemetry.prometheus_address
        print(f"Serving metrics on http://{bound_host}:{bound_port}/metrics", flush=True)
        agent = Agent(FunctionModel(stream_function=answer, model_name="answerer"))
        failing = Agent(FunctionModel(stream_function=flaky, model_name="flaky"))
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            async with agent.run_stream("hi") as result:  # completed
                await result.get_output()
            async with agent.run_stream("hi") as result:  # broken out of after the first chunk
                async for _ in result.stream_text(delta=True, debounce_by=None):
                    break
            with contextlib.suppress(ConnectionError):  # failed mid-stream
                async with failing.run_stream("hi") as result:
                    await result.get_output()
            await asyncio.sleep(0.5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=9464, help="0 picks a free port")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to keep streaming")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.duration))
