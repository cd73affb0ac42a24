"""The pieces of the composition matrix: how streamscope is turned on, what runs beside it, the models, the paths.

A `Cell` is one combination. `run_cell` builds it from real parts (the OTel SDK, Pydantic AI's own
instrumentation, real models and agents, the loopback OpenAI server), runs one request through it, and returns
what was observed next to what is expected, for the test to compare exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import urllib.request
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pydantic_ai
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from pydantic_ai import Agent, AgentRunResultEvent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponseStreamEvent,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel as PydanticTestModel  # aliased: pytest would try to collect `Test*`
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from streamscope import StreamscopeInstrumentor
from tests.conftest import Otel, sum_value
from tests.helpers_reliability import make_otel
from tests.openai_server import OpenAIStubServer
from tests.user_models import WordStream, make_model_class

PYDANTIC_AI_VERSION = tuple(int(p) for p in pydantic_ai.__version__.split(".")[:2])
# Pydantic AI 2.0.0's `run_stream_sync` never finishes the run it streams (the sync result is no context manager),
# so Pydantic AI's own instrumentation records nothing for its requests; streamscope, which left them to it,
# neither. Newer releases finish the run when the `with` block of the sync result exits.
PYDANTIC_AI_FINISHES_SYNC_RUNS = PYDANTIC_AI_VERSION > (2, 0)

MODES = ("explicit", "process", "both", "configure", "instrumentor")
PYDANTIC_AI = ("off", "sampled", "unsampled")
DELEGATIONS = ("outer instrumented", "inner instrumented")
MODELS = (
    "function",
    "test",
    "openai",
    "fallback first fails",
    "fallback first succeeds",
    "InstrumentedModel inside",
    "InstrumentedModel outside",
    "user model before",
    "user model after",
)
PATHS = ("request_stream", "run_stream", "run_stream_sync", "run_stream_events", "iter")
AGENT_PATHS = PATHS[1:]
PROMPT = "What is the answer?"
MESSAGES: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart(PROMPT)])]
TOKEN_METRIC = "gen_ai.client.token.usage"
TTFC_METRIC = "gen_ai.client.operation.time_to_first_chunk"


# --- models -----------------------------------------------------------------------------------------------------
async def text_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "The answer "
    yield "is 42."


async def failing_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    """Fails before its first chunk, so `FallbackModel` falls back."""
    if not messages:
        yield "never"
    raise ModelAPIError("bad", "boom")


async def tool_then_text(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """First request: a call of the `ask_inner` tool; once it has answered: text."""
    if len(messages) == 1:
        yield {0: DeltaToolCall(name="ask_inner", json_args='{"question": "why"}', tool_call_id="call-1")}
    else:
        yield "Inner said so."


def define_user_stream() -> type[WordStream]:
    """A `WordStream` subclass defined when this is called, with its own `__aiter__` too."""

    @dataclass
    class LaterWordStream(WordStream):
        def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
            return super().__aiter__()

    return LaterWordStream


UserModelBefore = make_model_class(WordStream)
CheckingModelBefore = make_model_class(WordStream, checks_policy=True)


# --- telemetry ----------------------------------------------------------------------------------------------------
@dataclass
class Telemetry(Otel):
    """Where the cell's telemetry goes (streamscope's providers; Pydantic AI's share the meter provider), read back
    from the in-memory pipeline, or for `configure()` from its Prometheus endpoint."""

    prometheus_url: str | None = None

    def histogram(self, name: str, **labels: str) -> tuple[int, float]:
        """(count, sum) of histogram `name` over every scope and attribute set that has `labels`."""
        if self.prometheus_url is not None:
            return _scraped_histogram(self.prometheus_url, name, labels)
        wanted = {key.replace("__", "."): value for key, value in labels.items()}
        points = [p for a, p in self.metrics().get(name, []) if all(a.get(k) == v for k, v in wanted.items())]
        return sum(p.count for p in points), sum(p.sum for p in points)

    def counter(self, name: str) -> float:
        """The value of counter `name` summed over every attribute set."""
        if self.prometheus_url is not None:
            return _scraped_counter(self.prometheus_url, name)
        return sum_value(self.metrics().get(name, []))

    def violation_logs(self) -> list[Any]:
        return [r for r in self.logs() if r.log_record.event_name == "streamscope.policy.violation"]


def _prometheus_lines(url: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    lines: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        lines.append((match.group(1), labels, float(match.group(3))))
    return lines


def _prometheus_name(name: str) -> str:
    return name.replace(".", "_")


def _scraped_histogram(url: str, name: str, labels: dict[str, str]) -> tuple[int, float]:
    base = _prometheus_name(name) + ("_seconds" if name.endswith(("first_chunk", "duration")) else "")
    wanted = {k.replace("__", "_").replace(".", "_"): v for k, v in labels.items()}
    count, total = 0, 0.0
    for metric, metric_labels, value in _prometheus_lines(url):
        if all(metric_labels.get(k) == v for k, v in wanted.items()):
            if metric == base + "_count":
                count += int(value)
            elif metric == base + "_sum":
                total += value
    return count, total


def _scraped_counter(url: str, name: str) -> float:
    base = _prometheus_name(name)
    return sum(value for metric, _, value in _prometheus_lines(url) if metric in (base, base + "_total"))


def in_memory_telemetry() -> Telemetry:
    # Always on, not parent-based: the stream spans are counted even under an unsampled Pydantic AI span.
    otel = make_otel(sampler=ALWAYS_ON)
    return Telemetry(
        otel.tracer_provider,
        otel.meter_provider,
        otel.logger_provider,
        otel.spans_exporter,
        otel.metric_reader,
        otel.logs_exporter,
    )


# --- the cell -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    mode: str
    pydantic_ai: str  # off | sampled | unsampled | outer instrumented | inner instrumented
    model: str
    path: str

    @property
    def delegation(self) -> bool:
        return self.pydantic_ai in DELEGATIONS

    @property
    def explicit(self) -> bool:
        return self.mode in ("explicit", "both")

    @property
    def process_wide(self) -> bool:
        return self.mode != "explicit"


@dataclass
class Observed:
    """What one cell did, and what it should have done."""

    telemetry: Telemetry
    requests: int = 0  # provider requests made (attempts included)
    responses: list[ModelResponse] = field(default_factory=list[ModelResponse])  # streams that completed
    # completed responses whose token usage one of the two libraries records (all, but see run_stream_sync)
    recorded: list[ModelResponse] = field(default_factory=list[ModelResponse])
    context_before: Any = None
    context_after: Any = None
    span_before: Any = None
    span_after: Any = None
    output: Any = None

    def completed(self, responses: list[ModelResponse], *, recorded: bool = True) -> None:
        self.responses.extend(responses)
        if recorded:
            self.recorded.extend(responses)


@contextmanager
def streamscope_on(cell: Cell, telemetry: Telemetry) -> Generator[Telemetry]:
    """Turn streamscope on process-wide as the cell's mode says (explicit instrumentation is per model)."""
    if cell.mode == "configure":
        # configure() builds its own TracerProvider, whose sampler comes from the environment: always on, as the
        # other modes' provider, so the stream spans are counted under an unsampled Pydantic AI span too.
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
            configuration = streamscope.configure(
                traces="none",
                metrics="prometheus",
                logs="none",
                prometheus_host="127.0.0.1",
                prometheus_port=0,
                set_global=False,
            )
        configuration.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.spans_exporter))
        configuration.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(telemetry.logs_exporter))
        assert configuration.prometheus_address is not None
        host, port = configuration.prometheus_address
        configured = Telemetry(
            configuration.tracer_provider,
            configuration.meter_provider,
            configuration.logger_provider,
            telemetry.spans_exporter,
            telemetry.metric_reader,  # not the configured meter provider's: metrics are read from its endpoint
            telemetry.logs_exporter,
            prometheus_url=f"http://{host}:{port}/metrics",
        )
        try:
            yield configured
        finally:
            configuration.shutdown()
        return
    if cell.mode in ("process", "both"):
        streamscope.instrument(**telemetry.providers)
    elif cell.mode == "instrumentor":
        StreamscopeInstrumentor().instrument(**telemetry.providers)
    try:
        yield telemetry
    finally:
        streamscope.uninstrument()


def pydantic_ai_settings(telemetry: Telemetry, *, sampled: bool = True) -> InstrumentationSettings:
    """Pydantic AI's own instrumentation: its own tracer provider (sampled or not), the cell's meter provider."""
    tracer_provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    return InstrumentationSettings(tracer_provider=tracer_provider, meter_provider=telemetry.meter_provider)


class Builder:
    """Builds the cell's model: the kind of model, instrumented the way the cell's mode says."""

    def __init__(self, cell: Cell, telemetry: Telemetry, server: OpenAIStubServer) -> None:
        self.cell = cell
        self.telemetry = telemetry
        self.server = server

    def wrap(self, model: Model) -> Model:
        return streamscope.instrument(model, **self.telemetry.providers) if self.cell.explicit else model

    def leaf(self, name: str = "fn", stream_function: Any = text_stream) -> Model:
        return FunctionModel(stream_function=stream_function, model_name=name)

    def build(self, kind: str | None = None) -> tuple[Model, int]:
        """(model, provider requests one request of it makes)."""
        kind = kind or self.cell.model
        settings = pydantic_ai_settings(self.telemetry)
        if kind == "function":
            return self.wrap(self.leaf()), 1
        if kind == "test":
            return self.wrap(PydanticTestModel(custom_output_text="The answer is 42.")), 1
        if kind == "openai":
            provider = OpenAIProvider(base_url=self.server.base_url, api_key="test-key")
            return self.wrap(OpenAIChatModel("gpt-4o", provider=provider)), 1
        if kind == "fallback first fails":
            return self.wrap(FallbackModel(self.leaf("bad", failing_stream), self.leaf("good"))), 2
        if kind == "fallback first succeeds":
            return self.wrap(FallbackModel(self.leaf("good"), self.leaf("bad", failing_stream))), 1
        if kind == "InstrumentedModel inside":
            return self.wrap(InstrumentedModel(self.leaf(), settings)), 1
        if kind == "InstrumentedModel outside":
            return InstrumentedModel(self.wrap(self.leaf()), settings), 1
        if kind == "user model before":
            return self.wrap(UserModelBefore()), 1
        if kind == "user model after":
            return self.wrap(make_model_class(define_user_stream())()), 1
        raise AssertionError(kind)


def expected_spans(cell: Cell, requests: int) -> int:
    """Stream spans: one per provider request — except that `instrument(FallbackModel(...))` alone sees the
    fallback's request as one (it cannot see inside the FallbackModel; process-wide mode sees each attempt)."""
    if cell.mode == "explicit" and cell.model == "fallback first fails":
        return 1
    return requests


async def run_cell(cell: Cell, server: OpenAIStubServer) -> Observed:
    base = in_memory_telemetry()
    with streamscope_on(cell, base) as telemetry:
        observed = Observed(telemetry)
        builder = Builder(cell, telemetry, server)
        observed.context_before = otel_context.get_current()
        observed.span_before = trace.get_current_span()
        if cell.delegation:
            await _delegate(cell, builder, observed)
        else:
            model, requests = builder.build()
            if cell.pydantic_ai != "off" and cell.path == "request_stream":
                model = InstrumentedModel(model, pydantic_ai_settings(telemetry, sampled=cell.pydantic_ai == "sampled"))
            agent = Agent(model)
            if cell.pydantic_ai != "off":
                agent.instrument = pydantic_ai_settings(telemetry, sampled=cell.pydantic_ai == "sampled")
            owned = cell.pydantic_ai != "off" or cell.model.startswith("InstrumentedModel")
            observed.output = await run_path(cell.path, model, agent, observed, pydantic_ai_owns=owned)
            observed.requests += requests
        observed.context_after = otel_context.get_current()
        observed.span_after = trace.get_current_span()
        telemetry.tracer_provider.force_flush()
        # Read the metrics before the providers shut down (a Prometheus endpoint stops with `configure()`).
        observed.telemetry = _Snapshot.of(telemetry)
    return observed


async def run_path(
    path: str, model: Model, agent: Agent[Any, Any], observed: Observed, *, pydantic_ai_owns: bool = False
) -> Any:
    """One request through `path`; record the completed responses on `observed`.

    `pydantic_ai_owns`: Pydantic AI's own instrumentation records the run's token usage (see run_stream_sync).
    """
    if path == "request_stream":
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
        response = stream.get()
        observed.completed([response])
        return response
    if path == "run_stream":
        async with agent.run_stream(PROMPT) as result:
            output = await result.get_output()
        observed.completed(_responses(result.new_messages()))
        return output
    if path == "run_stream_sync":

        def in_thread() -> Any:
            # The thread's own event loop, which Pydantic AI's sync bridge runs on: closed afterwards.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                result = agent.run_stream_sync(PROMPT)
                # A context manager since 2.x releases after 2.0, which then finish the run on exit.
                with result if hasattr(result, "__exit__") else contextlib.nullcontext(result):
                    output = result.get_output()
                    responses = _responses(result.new_messages())
                if PYDANTIC_AI_FINISHES_SYNC_RUNS or not pydantic_ai_owns:
                    observed.completed(responses)
                else:  # only the requests the run got past are recorded (by Pydantic AI): not the last
                    observed.completed(responses[:-1])
                    observed.completed(responses[-1:], recorded=False)
                return output
            finally:
                asyncio.set_event_loop(None)
                loop.close()

        return await anyio.to_thread.run_sync(in_thread)
    if path == "run_stream_events":
        output = None
        async with agent.run_stream_events(PROMPT) as events:
            async for event in events:
                if isinstance(event, AgentRunResultEvent):
                    output = event.result.output
                    observed.completed(_responses(event.result.new_messages()))
        return output
    if path == "iter":
        async with agent.iter(PROMPT) as run:
            async for node in run:
                if Agent.is_model_request_node(node):
                    async with node.stream(run.ctx) as stream:
                        async for _ in stream:
                            pass
        assert run.result is not None
        observed.completed(_responses(run.result.new_messages()))
        return run.result.output
    raise AssertionError(path)


def _responses(messages: list[ModelMessage]) -> list[ModelResponse]:
    return [message for message in messages if isinstance(message, ModelResponse)]


async def _delegate(cell: Cell, builder: Builder, observed: Observed) -> None:
    """An outer agent whose tool runs an inner agent; Pydantic AI instruments one of the two."""
    telemetry = builder.telemetry
    inner_model, inner_requests = builder.build()
    inner = Agent(inner_model)
    outer = Agent(builder.wrap(builder.leaf("outer", tool_then_text)))
    instrumented = outer if cell.pydantic_ai == "outer instrumented" else inner
    instrumented.instrument = pydantic_ai_settings(telemetry)

    @outer.tool_plain
    async def ask_inner(question: str) -> str:  # pyright: ignore[reportUnusedFunction]
        """Ask the inner agent."""
        async with inner.run_stream(question) as result:
            output = await result.get_output()
        observed.completed(_responses(result.new_messages()))
        observed.requests += inner_requests
        return str(output)

    observed.output = await run_path(
        cell.path,
        outer.model,  # pyright: ignore[reportArgumentType]
        outer,
        observed,
        pydantic_ai_owns=cell.pydantic_ai == "outer instrumented",
    )
    observed.requests += 2  # the outer agent's tool call, then its answer


class _Snapshot(Telemetry):
    """The cell's telemetry, read once (a Prometheus endpoint is gone after `configure()` shuts down)."""

    _histograms: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, float]]
    _counters: dict[str, float]

    @classmethod
    def of(cls, telemetry: Telemetry) -> _Snapshot:
        snapshot = cls(
            telemetry.tracer_provider,
            telemetry.meter_provider,
            telemetry.logger_provider,
            telemetry.spans_exporter,
            telemetry.metric_reader,
            telemetry.logs_exporter,
            prometheus_url=telemetry.prometheus_url,
        )
        snapshot._histograms = {}
        snapshot._counters = {}
        for token_type in ("input", "output"):
            key = (TOKEN_METRIC, (("gen_ai__token__type", token_type),))
            snapshot._histograms[key] = telemetry.histogram(TOKEN_METRIC, gen_ai__token__type=token_type)
        snapshot._histograms[TTFC_METRIC, ()] = telemetry.histogram(TTFC_METRIC)
        for name in (
            "streamscope.streams.active",
            "streamscope.usage.input_tokens",
            "streamscope.usage.output_tokens",
            "streamscope.policy.violations",
        ):
            snapshot._counters[name] = telemetry.counter(name)
        return snapshot

    def histogram(self, name: str, **labels: str) -> tuple[int, float]:
        return self._histograms[name, tuple(sorted(labels.items()))]

    def counter(self, name: str) -> float:
        return self._counters[name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def tokens(responses: list[ModelResponse], token_type: str) -> list[int]:
    """The token counts of one type the responses carry (a type with none gets no histogram point)."""
    values = [getattr(response.usage, f"{token_type}_tokens") for response in responses]
    return [value for value in values if value]


CellCheck = Callable[[Cell, Observed], None]


def pairwise_cover(cells: list[Cell]) -> list[Cell]:
    """A subset of `cells` in which every pair of values two dimensions take together in `cells` still occurs
    (greedy: each step keeps the cell that covers most pairs not covered yet), in `cells`' order.

    `make mutation` runs the matrices this way (`--matrix=pairwise`): each mutant meets every mode beside every
    Pydantic AI setting, every model and every path, at a tenth of the cells.
    """
    return list(_pairwise_cover(tuple(cells)))


@functools.cache
def _pairwise_cover(cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    # cached: each mutant's pytest run parametrizes the matrices again, in a fork of a process that already did
    pairs_of = {cell: _value_pairs(cell) for cell in cells}
    uncovered = set().union(*pairs_of.values())
    chosen: set[Cell] = set()
    while uncovered:
        best = max(cells, key=lambda cell: len(pairs_of[cell] & uncovered))
        chosen.add(best)
        uncovered -= pairs_of[best]
    return tuple(cell for cell in cells if cell in chosen)


def _value_pairs(cell: Cell) -> frozenset[tuple[int, str, int, str]]:
    values = (cell.mode, cell.pydantic_ai, cell.model, cell.path)
    return frozenset((i, values[i], j, values[j]) for i in range(4) for j in range(i + 1, 4))
