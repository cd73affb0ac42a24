"""Spans exported by `streamscope.configure()` over OTLP/HTTP and OTLP/gRPC arrive intact in a real OTLP receiver.

Arize Phoenix stores what it receives and serves it back through its REST API. Every span is also kept by an
in-memory exporter on the same provider, and each one read back from Phoenix is compared with its local copy:
name, trace and parent ids, status, every attribute and every span event with its attributes. The exporters
are configured from the environment alone, as a deployment would do it; ``OTEL_RESOURCE_ATTRIBUTES`` routes
each run to its own Phoenix project (``openinference.project.name``), so the resource is checked to arrive too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.models import override_allow_model_requests
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.openai_server import OpenAIStubServer, StubUsage
from tests.servers import ROOT, Phoenix

pytestmark = pytest.mark.anyio

CLEARED_ENV = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
)


def exporter_env(phoenix: Phoenix, protocol: str, project: str) -> dict[str, str]:
    """Standard OTEL_* variables sending traces to Phoenix (which takes no metrics or logs)."""
    env = {
        "OTEL_SERVICE_NAME": "streamscope-tests",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project},deployment.environment=test",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    if protocol == "grpc":  # per-signal variables
        env |= {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": phoenix.grpc_url}
    else:  # the general ones, with the default protocol (http/protobuf)
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.http_url}
    return env


async def run_streams(tracer_provider: TracerProvider, server: OpenAIStubServer) -> None:
    """Under one parent span: a completed, a cancelled, a failed and a policy-denied stream (real OpenAI model)."""
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    agent = Agent(OpenAIChatModel("gpt-4o", provider=provider))
    with tracer_provider.get_tracer("tests").start_as_current_span("handle chat request"):
        server.script(["Hello", " from", " Phoenix"], usage=StubUsage(prompt_tokens=12, completion_tokens=3))
        async with agent.run_stream("complete") as result:
            assert await result.get_output() == "Hello from Phoenix"

        first_chunk = asyncio.Event()

        async def read_slowly() -> None:
            async with agent.run_stream("slow") as result:
                async for _ in result.stream_text(delta=True, debounce_by=None):
                    first_chunk.set()

        server.script(["slow"] * 10, delay=0.05)
        task = asyncio.create_task(read_slowly())
        await asyncio.wait_for(first_chunk.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        server.script(["cut", " off", " mid", " stream"], drop_after=3)
        with contextlib.suppress(Exception):
            async with agent.run_stream("fail") as result:
                await result.get_output()

        with override_allow_model_requests(False), contextlib.suppress(RuntimeError):
            async with agent.run_stream("denied") as result:
                await result.get_output()


def jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def assert_arrived_intact(sent: Sequence[ReadableSpan], received: list[dict[str, Any]]) -> None:
    by_id = {span["context"]["span_id"]: span for span in received}
    assert len(by_id) == len(sent), (len(by_id), [s.name for s in sent])
    for span in sent:
        assert span.context is not None
        got = by_id[hex_id(span.context.span_id, 16)]
        assert got["name"] == span.name
        assert got["context"]["trace_id"] == hex_id(span.context.trace_id, 32)
        assert got["parent_id"] == (hex_id(span.parent.span_id, 16) if span.parent else None)
        assert got["status_code"] == span.status.status_code.name
        # Phoenix adds attributes of its own (e.g. llm.model_name); every one sent arrives unchanged.
        sent_attributes = {key: jsonable(value) for key, value in (span.attributes or {}).items()}
        assert {key: got["attributes"].get(key) for key in sent_attributes} == sent_attributes, span.name
        sent_events = [(e.name, {k: jsonable(v) for k, v in (e.attributes or {}).items()}) for e in span.events]
        assert [(e["name"], e["attributes"]) for e in got["events"]] == sent_events, span.name


def ending(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    return f"{attributes.get('streamscope.stream.outcome')}/{attributes.get('streamscope.stream.end_reason')}"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_spans_arrive_intact(phoenix: Phoenix, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    project = f"streamscope-{protocol.replace('/', '-')}"
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in exporter_env(phoenix, protocol, project).items():
        monkeypatch.setenv(name, value)
    local = InMemorySpanExporter()
    with OpenAIStubServer() as server:
        configuration = streamscope.configure(set_global=False, capture_content=True)
        configuration.tracer_provider.add_span_processor(SimpleSpanProcessor(local))
        try:
            await run_streams(configuration.tracer_provider, server)
        finally:
            configuration.shutdown()  # flushes the BatchSpanProcessor
    sent = local.get_finished_spans()
    assert len(sent) == 5
    received = phoenix.wait_for_spans(project, len(sent))
    assert_arrived_intact(sent, received)

    # What arrived is what the scenarios should have produced.
    (parent,) = [s for s in received if s["name"] == "handle chat request"]
    streams = [s for s in received if s is not parent]
    assert sorted(map(ending, streams)) == [
        "complete/exhausted",
        "error/error",
        "error/error",
        "interrupted/task_cancelled",
    ]
    for span in streams:
        assert span["name"] == "chat gpt-4o"
        assert span["parent_id"] == parent["context"]["span_id"]
        assert span["context"]["trace_id"] == parent["context"]["trace_id"]
    (complete,) = [s for s in streams if ending(s) == "complete/exhausted"]
    assert complete["attributes"]["gen_ai.provider.name"] == "openai"
    assert complete["attributes"]["gen_ai.usage.input_tokens"] == 12
    assert complete["attributes"]["server.address"] == "127.0.0.1"
    deltas = [e for e in complete["events"] if e["name"] == "streamscope.stream.part_delta"]
    assert [e["attributes"]["streamscope.content"] for e in deltas] == [" from", " Phoenix"]
    errors = [s for s in streams if ending(s) == "error/error"]
    dropped, denied = sorted(errors, key=lambda s: s["attributes"]["error.type"] == "RuntimeError")
    # The dropped connection: Pydantic AI 2.0 lets httpx's error through, later releases wrap it.
    assert dropped["attributes"]["error.type"] in {"pydantic_ai.exceptions.ModelConnectionError", "httpx.ReadError"}
    assert all(s["status_code"] == "ERROR" for s in errors)
    assert denied["attributes"]["error.type"] == "RuntimeError"
    assert "streamscope.policy.violation" in [e["name"] for e in denied["events"]]
    assert "exception" in [e["name"] for e in denied["events"]]


def test_otlp_example_exports_to_phoenix(phoenix: Phoenix) -> None:
    project = "streamscope-example"
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env |= exporter_env(phoenix, "http/protobuf", project)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "otlp_export.py")],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "service.name=streamscope-tests" in result.stdout
    received = phoenix.wait_for_spans(project, 3)
    names = sorted(span["name"] for span in received)
    assert names == ["chat answerer", "chat flaky", "handle chat request"]
    parent = next(span for span in received if span["name"] == "handle chat request")
    assert all(s["parent_id"] == parent["context"]["span_id"] for s in received if s is not parent)
