"""An instrumented workload that Prometheus scrapes in the dashboard tests.

    python -m tests.workload --port 0 --duration 300

Serves streamscope's metrics on http://127.0.0.1:<port>/metrics through `streamscope.configure()`'s Prometheus
endpoint, prints ``READY <url>`` once it listens, then runs rounds of real streams until `--duration` seconds
have passed: the real `OpenAIChatModel` against the loopback `OpenAIStubServer` (completed, broken out of,
cancelled mid-stream, stopped by the provider's content filter, dropped mid-stream, refused with HTTP 500, and
denied by `check_allow_model_requests`)
and a user-defined model reporting cache writes that goes through the same scenarios. Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai import Agent, models
from pydantic_ai.messages import ModelMessage, ModelResponse, ModelResponseStreamEvent, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, override_allow_model_requests
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

import streamscope
from tests.openai_server import OpenAIStubServer, StubUsage

SERVICE = "streamscope-workload"
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini")
# A user-defined model of an Anthropic-compatible endpoint (never contacted), which genai-prices prices by name.
CUSTOM_PROVIDER, CUSTOM_MODEL, CUSTOM_URL = "anthropic", "claude-3-5-haiku-latest", "http://127.0.0.1:9/v1"
# Pydantic AI 2.0 has no `output_reasoning_tokens`; its OpenAI usage extraction then drops the whole usage.
HAS_REASONING_TOKENS = "output_reasoning_tokens" in {f.name for f in dataclasses.fields(RequestUsage)}


@dataclass
class CachingStream(StreamedResponse):
    """A third-party stream reporting every kind of usage, cache writes included (OpenAI reports none).

    `mode` is the prompt: ``slow`` waits between chunks, ``fail`` breaks off mid-stream."""

    mode: str = "complete"
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for index, word in enumerate(("cached", " words", " stream", " here")):
            if self.mode == "slow":
                await asyncio.sleep(0.02)
            if self.mode == "fail" and index == 2:
                raise ConnectionError("upstream reset the stream")
            output = 2 * (index + 1)
            self._usage = RequestUsage(
                input_tokens=40, cache_write_tokens=30, cache_read_tokens=5, output_tokens=output
            )
            if HAS_REASONING_TOKENS:
                self._usage = dataclasses.replace(self._usage, output_reasoning_tokens=output // 2)
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event

    @property
    def model_name(self) -> str:
        return CUSTOM_MODEL

    @property
    def provider_name(self) -> str:
        return CUSTOM_PROVIDER

    @property
    def provider_url(self) -> str | None:
        return CUSTOM_URL

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


class CachingModel(Model):
    """A user-defined model that, like Pydantic AI's own, asks `check_allow_model_requests` first."""

    @property
    def model_name(self) -> str:
        return CUSTOM_MODEL

    @property
    def system(self) -> str:
        return CUSTOM_PROVIDER

    @property
    def base_url(self) -> str | None:
        return CUSTOM_URL

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        raise NotImplementedError

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        models.check_allow_model_requests()  # looked up at call time: instrumentation patches the module
        prompt = next((part.content for part in messages[-1].parts if isinstance(part, UserPromptPart)), "complete")
        if prompt == "refuse":
            raise ConnectionError("connection refused")
        yield CachingStream(model_request_parameters, mode=str(prompt))


def openai_script(server: OpenAIStubServer) -> Callable[[str], None]:
    """Queue the stub's answer for the next scenario."""
    usage = StubUsage(
        prompt_tokens=21, completion_tokens=9, cached_tokens=4, reasoning_tokens=3 if HAS_REASONING_TOKENS else None
    )

    def script(scenario: str) -> None:
        if scenario == "slow":
            server.script(["slow"] * 8, usage=usage, delay=0.02)
        elif scenario == "fail":
            server.script(["dropped", " mid", " stream", " here"], usage=usage, drop_after=3)
        elif scenario == "refuse":
            server.script_error(500)
        elif scenario == "filtered":
            server.script(["I can"], usage=usage, finish_reason="content_filter")
        else:
            server.script(["Hello", " from", " the", " stub"], usage=usage, delay=0.002)

    return script


async def scenarios(agent: Agent[None, str], prepare: Callable[[str], None]) -> None:
    """Every way a stream ends: completed, broken out of, cancelled, failed mid-stream, refused, denied."""
    prepare("complete")
    async with agent.run_stream("complete") as result:
        await result.get_output()

    prepare("complete")
    async with agent.run_stream("complete") as result:
        async for _ in result.stream_text(delta=True, debounce_by=None):
            break

    first_chunk = asyncio.Event()

    async def read_all() -> None:
        async with agent.run_stream("slow") as result:
            async for _ in result.stream_text(delta=True, debounce_by=None):
                first_chunk.set()

    prepare("slow")
    task = asyncio.create_task(read_all())
    await asyncio.wait_for(first_chunk.wait(), timeout=10)
    task.cancel()  # mid-stream, after the first chunk
    await asyncio.gather(task, return_exceptions=True)

    prepare("filtered")  # the provider's content filter stops the answer: a policy violation
    async with agent.run_stream("filtered") as result:
        await result.get_output()

    for scenario in ("fail", "refuse"):
        prepare(scenario)
        with contextlib.suppress(Exception):
            async with agent.run_stream(scenario) as result:
                await result.get_output()

    with override_allow_model_requests(False), contextlib.suppress(RuntimeError):
        async with agent.run_stream("denied") as result:
            await result.get_output()


async def main(port: int, duration: float, pause: float) -> None:
    configuration = streamscope.configure(
        service_name=SERVICE,
        traces="none",
        logs="none",
        metrics="prometheus",
        prometheus_host="127.0.0.1",
        prometheus_port=port,
        chunk_timing="per_chunk",  # so the dashboards' per-chunk panel has data too
    )
    assert configuration.prometheus_address is not None
    host, bound = configuration.prometheus_address
    with OpenAIStubServer() as server, configuration:
        provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
        agents = [(Agent(OpenAIChatModel(name, provider=provider)), openai_script(server)) for name in OPENAI_MODELS]
        agents.append((Agent(CachingModel()), lambda _scenario: None))
        print(f"READY http://{host}:{bound}/metrics", flush=True)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            for agent, prepare in agents:
                await scenarios(agent, prepare)
            await asyncio.sleep(pause)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="port of the /metrics endpoint (0: any free port)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to keep running streams")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between rounds")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.duration, args.pause))
