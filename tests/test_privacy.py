"""Privacy: nothing the user sends or receives leaks into telemetry unless content capture is on, and then only
redacted and truncated.

A realistic run goes through the real `OpenAIChatModel`, the real `openai` SDK and HTTP to a loopback server, with an
API key, credentials in the base URL, secret request headers, a secret system prompt and user prompt, a tool call
with secret arguments and a secret tool result, a secret completion, a provider error, a connection dropped
mid-stream, an early break and a policy denial. Everything streamscope exports goes through the real OTLP/HTTP
exporters (spans with their events and resource, metrics, log records) to a loopback collector, whose raw request
bytes are scanned, together with every record streamscope logs on its standard-library loggers (formatted, with
tracebacks). By default none of the secrets appears anywhere. With capture on, only streamed-back content appears,
passed through the redaction hook and truncated to the configured length; request-side secrets never appear.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic_ai.models
import pytest
from openai import AsyncOpenAI
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.helpers_reliability import OtlpCollector, collect_logs, messages, open_stream
from tests.openai_server import OpenAIStubServer, StubToolCall

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

API_KEY = "sk-apikey-secret-5e1f9a"
BASIC_PASSWORD = "basic-password-secret-3b7c"
HEADER_SECRET = "header-secret-77aa01"
SYSTEM_SECRET = "system-secret-0a1b2c"
PROMPT_SECRET = "prompt-secret-7f3a4d"
ARGS_SECRET = "args-secret-55d1e2"
TOOL_RESULT_SECRET = "tool-result-secret-c0de"
COMPLETION_SECRET = "completion-secret-91c2f3"
REQUEST_SIDE = (API_KEY, BASIC_PASSWORD, HEADER_SECRET, SYSTEM_SECRET, PROMPT_SECRET, TOOL_RESULT_SECRET)
RESPONSE_SIDE = (ARGS_SECRET, COMPLETION_SECRET)
SECRETS = (*REQUEST_SIDE, *RESPONSE_SIDE)
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with OtlpCollector() as otlp:
        yield otlp


@dataclass
class Pipeline:
    """Real OTLP/HTTP exporters to the collector, plus in-memory copies for structured checks."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter

    @property
    def providers(self) -> dict[str, Any]:
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            "logger_provider": self.logger_provider,
        }

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


def pipeline(collector: OtlpCollector) -> Pipeline:
    resource = Resource.create({"service.name": "privacy-test"})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint("traces"))))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=collector.endpoint("metrics")), export_interval_millis=60_000
    )
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=collector.endpoint("logs")))
    )
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return Pipeline(tracer_provider, meter_provider, logger_provider, spans, logs)


def lookup(key: str) -> str:
    """Look a key up."""
    return f"{TOOL_RESULT_SECRET} for {key}"


def secret_model(server: OpenAIStubServer, *, credentials_in_url: bool = False) -> OpenAIChatModel:
    """The real OpenAI model with an API key and a secret default header (and, if asked, a base URL carrying
    credentials, which the HTTP client then sends as basic auth instead of the key)."""
    base_url = server.base_url
    if credentials_in_url:
        base_url = base_url.replace("http://", f"http://user:{BASIC_PASSWORD}@")
    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, default_headers={"X-Secret": HEADER_SECRET}, max_retries=0)
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client))


LONG_CHUNK = f"The value you asked for is {COMPLETION_SECRET}, and that is all there is to say about it."


async def workload(server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind of stream, each carrying secrets, plus a denial."""
    model = secret_model(server)
    # An agent run: a tool call with secret arguments, a secret tool result, then a secret completion.
    server.script([], tool_calls=[StubToolCall("lookup", ['{"key": "', ARGS_SECRET, '"}'], call_id="call_lookup")])
    server.script([LONG_CHUNK[:20], LONG_CHUNK[20:]])
    agent = Agent(model, tools=[lookup], instructions=f"Use the lookup tool ({SYSTEM_SECRET}).")
    async with agent.run_stream(f"Look up {PROMPT_SECRET}.") as result:
        assert COMPLETION_SECRET in await result.get_output()
    # A stream broken out of early.
    server.script([LONG_CHUNK, "more"])
    async with open_stream(model, f"Again: {PROMPT_SECRET}") as stream:
        async for _ in stream:
            break
    # A provider error at open, and a connection dropped mid-stream.
    server.script_error(500, "upstream exploded")
    with pytest.raises(Exception, match="upstream exploded"):
        async with open_stream(model, PROMPT_SECRET) as stream:
            async for _ in stream:
                pass
    server.script([LONG_CHUNK, "and", "more"], drop_after=2)
    with pytest.raises(Exception) as dropped:  # noqa: PT011 - the type depends on the openai/httpx versions
        async with open_stream(model, PROMPT_SECRET) as stream:
            async for _ in stream:
                pass
    assert not isinstance(dropped.value, AssertionError)
    # A stream through a base URL that carries credentials.
    server.script([LONG_CHUNK])
    async with open_stream(secret_model(server, credentials_in_url=True), PROMPT_SECRET) as stream:
        async for _ in stream:
            pass
    # A non-streamed request, and a denial.
    server.script([LONG_CHUNK])
    await model.request(messages(PROMPT_SECRET), None, ModelRequestParameters())
    with monkeypatch.context() as patch:
        patch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
        with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
            async with open_stream(model, PROMPT_SECRET):
                pass


def assert_secrets_went_over_the_wire(server: OpenAIStubServer) -> None:
    """Each request-side secret was really sent (so its absence from telemetry means something)."""
    requests = server.requests
    assert len(requests) == 7
    first, second = requests[0], requests[1]
    assert first.headers["x-secret"] == HEADER_SECRET
    assert first.headers["authorization"] == f"Bearer {API_KEY}"
    assert base64.b64decode(requests[5].headers["authorization"].removeprefix("Basic ")) == (
        f"user:{BASIC_PASSWORD}".encode()
    )
    assert SYSTEM_SECRET in json.dumps(first.body) and PROMPT_SECRET in json.dumps(first.body)
    assert ARGS_SECRET in json.dumps(second.body) and TOOL_RESULT_SECRET in json.dumps(second.body)


@dataclass
class Exported:
    """Everything the run exported: raw OTLP bodies and streamscope's formatted standard-library log records."""

    bodies: list[bytes]
    span_names: list[str]
    metric_names: set[str]
    log_event_names: list[str]
    resources: list[dict[str, str]]
    stdlib: list[str]

    def leaked(self, secrets: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for secret in secrets:
            needle = secret.encode()
            if any(needle in body for body in self.bodies) or any(secret in text for text in self.stdlib):
                found.add(secret)
        return found


def exported(collector: OtlpCollector, stdlib: list[logging.LogRecord]) -> Exported:
    traces = [ExportTraceServiceRequest.FromString(r.body) for r in collector.requests("traces")]
    metrics = [ExportMetricsServiceRequest.FromString(r.body) for r in collector.requests("metrics")]
    logs = [ExportLogsServiceRequest.FromString(r.body) for r in collector.requests("logs")]
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return Exported(
        bodies=[r.body for r in collector.requests()],
        span_names=[s.name for t in traces for rs in t.resource_spans for ss in rs.scope_spans for s in ss.spans],
        metric_names={
            m.name for r in metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        },
        log_event_names=[
            record.event_name
            for r in logs
            for rl in r.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ],
        resources=[
            {a.key: a.value.string_value for a in rs.resource.attributes} for t in traces for rs in t.resource_spans
        ],
        stdlib=[formatter.format(record) for record in stdlib],
    )


async def run_and_export(
    server: OpenAIStubServer, collector: OtlpCollector, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[Exported, Pipeline]:
    otel = pipeline(collector)
    with collect_logs("streamscope") as stdlib:
        streamscope.instrument(**otel.providers, **options)
        try:
            await workload(server, monkeypatch)
        finally:
            streamscope.uninstrument()
        otel.shutdown()  # flushes every exporter
    assert_secrets_went_over_the_wire(server)
    found = exported(collector, stdlib)
    # The scan sees what it should: every signal arrived, from the stream spans down to the denial's log record.
    assert found.span_names.count("chat gpt-4o") == 7
    assert {"streamscope.streams.finished", "gen_ai.client.operation.duration"} <= found.metric_names
    assert found.log_event_names == ["streamscope.policy.violation"]
    assert found.resources and all(r["service.name"] == "privacy-test" for r in found.resources)
    assert any("Policy violation" in text for text in found.stdlib)
    return found, otel


async def test_nothing_private_is_exported_by_default(
    server: OpenAIStubServer, collector: OtlpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    found, otel = await run_and_export(server, collector, monkeypatch)
    assert found.leaked(SECRETS) == set()
    assert all(
        "streamscope.content" not in (event.attributes or {})
        for s in otel.spans.get_finished_spans()
        for event in s.events
    )
    # The server address is there, without the credentials the base URL carried.
    span = next(s for s in otel.spans.get_finished_spans() if s.name == "chat gpt-4o")
    assert dict(span.attributes or {})["server.address"] == "127.0.0.1"


# --- capture on: redacted, then truncated ----------------------------------------------------------------------------
MAX_LENGTH = 40
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, REDACTED)
    return text


class Redactor:
    """The hook: scrubs every secret, and remembers what it was given."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return scrub(text)


async def test_capture_on_exports_only_redacted_truncated_response_content(
    server: OpenAIStubServer, collector: OtlpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    redact = Redactor()
    found, otel = await run_and_export(
        server, collector, monkeypatch, capture_content=True, max_content_length=MAX_LENGTH, redact=redact
    )
    # Request-side secrets never appear; response-side ones only went through the hook, which removed them.
    assert found.leaked(SECRETS) == set()
    assert any(COMPLETION_SECRET in text for text in redact.seen)
    assert any(ARGS_SECRET in text for text in redact.seen)
    assert not any(secret in text for text in redact.seen for secret in REQUEST_SIDE)

    # Each captured content is the hook's output for one event, cut to the limit, and flagged when it was cut.
    captured: list[tuple[str, bool]] = [
        (str(attributes["streamscope.content"]), bool(attributes.get("streamscope.content.truncated", False)))
        for span in otel.spans.get_finished_spans()
        for event in span.events
        if "streamscope.content" in (attributes := dict(event.attributes or {}))
    ]
    expected = sorted((scrub(text)[:MAX_LENGTH], len(scrub(text)) > MAX_LENGTH) for text in redact.seen)
    assert sorted(captured) == expected
    assert any(cut for _, cut in captured)  # LONG_CHUNK is longer than the limit
    assert any(REDACTED in content for content, _ in captured)
    assert all(len(content) <= MAX_LENGTH for content, _ in captured)


# --- the redaction hook failing must not leak what it was given ------------------------------------------------------
def leaky_hook(text: str) -> str:
    """A hook that fails on content it does not know, naming it (as `KeyError` and many real errors do)."""
    raise KeyError(text)


async def test_a_failing_redaction_hook_does_not_leak_the_content_into_logs(
    server: OpenAIStubServer,
    collector: OtlpCollector,
    monkeypatch: pytest.MonkeyPatch,
    internal_errors: list[logging.LogRecord],
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    found, otel = await run_and_export(server, collector, monkeypatch, capture_content=True, redact=leaky_hook)
    assert internal_errors  # the failure is reported ...
    assert all(
        "streamscope.content" not in (event.attributes or {})
        for s in otel.spans.get_finished_spans()
        for event in s.events
    )
    assert found.leaked(SECRETS) == set()  # ... without the content it failed on
