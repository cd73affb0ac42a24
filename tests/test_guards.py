"""Pydantic AI's run guards — usage limits, concurrency limits, content filters — are policy violations.

Each denial is reported once (span event, OTel log record, counter, stdlib warning on `streamscope.policy`) in
every mode, beside Pydantic AI's own instrumentation too, with what was exceeded; the exception reaches the user
as Pydantic AI raised it. Real agents and models throughout (FunctionModel, the real OpenAIChatModel over the
loopback server).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from types import CoroutineType
from typing import Any

import anyio
import pydantic_ai.models
import pytest
from opentelemetry._logs import SeverityNumber
from pydantic_ai import Agent
from pydantic_ai.concurrency import ConcurrencyLimit, ConcurrencyLimiter
from pydantic_ai.exceptions import ConcurrencyLimitExceeded, ContentFilterError, UsageLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, check_allow_model_requests
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RunUsage, UsageLimits

import streamscope
from streamscope import _guards
from tests.composition import PYDANTIC_AI_VERSION
from tests.conftest import Otel, in_memory_pipeline, sum_value
from tests.openai_server import OpenAIStubServer

pytestmark = pytest.mark.anyio

VIOLATION = "streamscope.policy.violation"
METRIC = "streamscope.policy.violations"
NEWEST = PYDANTIC_AI_VERSION >= (2, 68)


# --- models -----------------------------------------------------------------------------------------------------
async def many_words(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    for word in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"):
        yield f"{word} "


def short_answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("one two three four five six seven eight")])


async def tool_then_text(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    if len(messages) == 1:
        yield {0: DeltaToolCall(name="lookup", json_args="{}", tool_call_id="call-1")}
    else:
        yield "done"


def tool_then_text_once(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if len(messages) == 1:
        return ModelResponse(parts=[ToolCallPart("lookup", {}, tool_call_id="call-1")])
    return ModelResponse(parts=[TextPart("done")])


def function_model() -> FunctionModel:
    return FunctionModel(short_answer, stream_function=many_words, model_name="guarded")


def tool_model() -> FunctionModel:
    return FunctionModel(tool_then_text_once, stream_function=tool_then_text, model_name="guarded")


# --- modes ------------------------------------------------------------------------------------------------------
def _explicit(model: Model, otel: Otel) -> Model:
    return streamscope.instrument(model, **otel.providers)


def _process_wide(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    return model


def _both(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    return streamscope.instrument(model, **otel.providers)


MODES: dict[str, Callable[[Model, Otel], Model]] = {"explicit": _explicit, "process": _process_wide, "both": _both}


@dataclass
class Guarded:
    """One agent run under a guard: streamscope on as the mode says, Pydantic AI's instrumentation on or off."""

    otel: Otel
    mode: str
    pydantic_ai: bool
    caplog: pytest.LogCaptureFixture

    def agent(self, model: Model, **kwargs: Any) -> Agent[None, str]:
        agent = Agent(MODES[self.mode](model, self.otel), **kwargs)
        if self.pydantic_ai:
            agent.instrument = InstrumentationSettings(
                tracer_provider=self.otel.tracer_provider, meter_provider=self.otel.meter_provider
            )
        return agent

    def violations(self, policy: str) -> list[dict[str, Any]]:
        """The attributes of each violation of `policy`, after checking all four channels agree on the count."""
        events = [
            (span, dict(event.attributes or {}))
            for span in self.otel.spans()
            for event in span.events
            if event.name == VIOLATION and (event.attributes or {}).get("streamscope.policy.name") == policy
        ]
        logs = [
            r
            for r in self.otel.logs()
            if r.log_record.event_name == VIOLATION
            and (r.log_record.attributes or {}).get("streamscope.policy.name") == policy
        ]
        warnings = [
            r
            for r in self.caplog.records
            if r.name == "streamscope.policy" and r.__dict__.get("streamscope_policy") == policy
        ]
        counted = sum_value(self.otel.metrics().get(METRIC, []), streamscope__policy__name=policy)
        assert len(logs) == len(warnings) == counted == len(events), (len(events), len(logs), len(warnings), counted)
        for (span, attributes), log in zip(events, logs, strict=True):
            assert dict(log.log_record.attributes or {}) == attributes
            assert span.context is not None
            assert log.log_record.span_id == span.context.span_id
        return [attributes for _, attributes in events]

    def all_violations(self) -> int:
        return int(sum_value(self.otel.metrics().get(METRIC, [])))


@pytest.fixture(
    params=[(mode, pai) for mode in MODES for pai in (False, True)],
    ids=lambda p: f"{p[0]}-pai{'on' if p[1] else 'off'}",
)
def guarded(request: pytest.FixtureRequest, otel: Otel, caplog: pytest.LogCaptureFixture) -> Iterator[Guarded]:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    mode, pydantic_ai = request.param
    try:
        yield Guarded(otel, mode, pydantic_ai, caplog)
    finally:
        streamscope.uninstrument()


@contextmanager
def user_span(otel: Otel) -> Generator[None]:
    with otel.tracer_provider.get_tracer("user").start_as_current_span("user operation"):
        yield


def limit_details(attributes: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (
        attributes.get("streamscope.policy.limit.name"),
        attributes.get("streamscope.policy.limit.threshold"),
        attributes.get("streamscope.policy.limit.value"),
    )


def unchanged_message(run: Callable[[], Any]) -> str:
    """What Pydantic AI raises for `run` with streamscope off, to compare the instrumented run's exception with."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any exception: the text is compared
        anyio.run(run)
    return str(raised.value)


def assert_reported_once(
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    attributes: dict[str, Any],
    *,
    body: str,
    text: str,
    counted: dict[str, Any],
) -> None:
    """Exactly one violation on each of the four channels, each saying exactly this: the span event's and the log
    record's attributes, the log record's body, the `streamscope.policy` warning's text, the counter's point."""
    events = [(s, e) for s in otel.spans() for e in s.events if e.name == VIOLATION]
    assert [dict(e.attributes or {}) for _, e in events] == [attributes]
    [(span, _)] = events
    [log] = [r.log_record for r in otel.logs() if r.log_record.event_name == VIOLATION]
    assert dict(log.attributes or {}) == attributes
    assert log.body == body
    assert (log.severity_number, log.severity_text) == (SeverityNumber.WARN, "WARN")
    assert span.context is not None
    assert (log.trace_id, log.span_id) == (span.context.trace_id, span.context.span_id)
    [warning] = [r for r in caplog.records if r.name == "streamscope.policy"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == text
    assert warning.__dict__["streamscope_policy"] == attributes["streamscope.policy.name"]
    assert warning.__dict__["streamscope_call_site"] == attributes.get("streamscope.policy.call_site")
    assert warning.__dict__["streamscope_model_class"] == attributes.get("streamscope.policy.model_class")
    assert warning.__dict__["streamscope_model"] == attributes.get("gen_ai.request.model")
    assert warning.__dict__["streamscope_provider"] == attributes.get("gen_ai.provider.name")
    assert [(a, p.value) for a, p in otel.metrics()[METRIC]] == [(counted, 1)]


def site_of(function: Callable[..., Any], marker: str) -> dict[str, Any]:
    """The `code.*` attributes and call site of the one line of `function` containing `marker` (besides the line
    asking for it)."""
    lines, first = inspect.getsourcelines(function)
    [line] = [first + i for i, text in enumerate(lines) if marker in text and "site_of(" not in text]
    return {
        "code.function.name": f"{function.__module__}.{function.__qualname__}",
        "code.file.path": function.__code__.co_filename,
        "code.line.number": line,
        "streamscope.policy.call_site": f"{function.__module__}:{function.__qualname__}:{line}",
    }


def pydantic_ai_site(violation: dict[str, Any]) -> str:
    """Take the `code.*` attributes and call site out of `violation` (where Pydantic AI's own code called the guard,
    so its line varies by version), check they agree, and return the qualified function name."""
    function = violation.pop("code.function.name")
    path = violation.pop("code.file.path")
    line = violation.pop("code.line.number")
    call_site = violation.pop("streamscope.policy.call_site")
    module, qualname, _ = call_site.split(":")
    assert call_site == f"{module}:{qualname}:{line}"
    assert function == f"{module}.{qualname}"
    assert isinstance(line, int)
    assert str(path).endswith(".py")
    return function


# --- usage limits -----------------------------------------------------------------------------------------------
async def test_request_limit_before_the_first_request_is_one_violation(guarded: Guarded) -> None:
    agent = guarded.agent(function_model())
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        async with agent.run_stream("hi", usage_limits=UsageLimits(request_limit=0)) as result:
            await result.get_output()
    [violation] = guarded.violations("usage_limit")
    assert limit_details(violation) == ("request_limit", 0, 0)
    assert violation["streamscope.policy.message"] == str(raised.value)
    assert violation["error.type"] == "pydantic_ai.exceptions.UsageLimitExceeded"
    assert violation["code.function.name"].startswith("pydantic_ai.")
    assert guarded.all_violations() == 1
    assert guarded.otel.stream_spans() == []  # the request was never made


@pytest.mark.parametrize("path", ["run_stream", "run", "iter"])
async def test_output_tokens_over_the_limit_are_one_violation(guarded: Guarded, path: str) -> None:
    agent = guarded.agent(function_model())
    limits = UsageLimits(output_tokens_limit=3)
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        if path == "run_stream":
            async with agent.run_stream("hi", usage_limits=limits) as result:
                async for _ in result.stream_text(delta=True):
                    pass
        elif path == "run":
            await agent.run("hi", usage_limits=limits)
        else:
            async with agent.iter("hi", usage_limits=limits) as run:
                async for node in run:
                    if Agent.is_model_request_node(node):
                        async with node.stream(run.ctx) as stream:
                            async for _ in stream:
                                pass
    [violation] = guarded.violations("usage_limit")
    name, threshold, value = limit_details(violation)
    assert (name, threshold) == ("output_tokens_limit", 3)
    assert isinstance(value, int)
    assert value > 3
    assert f"output_tokens={value}" in str(raised.value)
    assert guarded.all_violations() == 1


async def test_input_tokens_over_the_limit_are_one_violation(guarded: Guarded) -> None:
    agent = guarded.agent(function_model())
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        await agent.run("a prompt of several words", usage_limits=UsageLimits(input_tokens_limit=2))
    [violation] = guarded.violations("usage_limit")
    name, threshold, value = limit_details(violation)
    assert (name, threshold) == ("input_tokens_limit", 2)
    assert f"input_tokens={value}" in str(raised.value)


async def test_a_usage_limit_violation_names_the_limit_broken_not_one_only_reached(guarded: Guarded) -> None:
    """Input tokens exactly at their limit (allowed: `check_tokens` raises above it) and output tokens over theirs:
    the violation is the output-token limit's, and says so on every channel, word for word."""
    agent = guarded.agent(function_model())
    result = await agent.run("a prompt of several words")
    found: Any = result.usage
    usage: RunUsage = found if isinstance(found, RunUsage) else found()  # a method on the lowest Pydantic AI
    limits = UsageLimits(input_tokens_limit=usage.input_tokens, output_tokens_limit=3)
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        await agent.run("a prompt of several words", usage_limits=limits)
    message = str(raised.value)
    assert message.startswith(f"Exceeded the output_tokens_limit of 3 (output_tokens={usage.output_tokens})")
    [violation] = guarded.violations("usage_limit")
    call_site = violation["streamscope.policy.call_site"]
    assert pydantic_ai_site(violation).startswith("pydantic_ai.")  # where Pydantic AI checks (varies by version)
    assert violation == {
        "streamscope.policy.name": "usage_limit",
        "streamscope.policy.message": message,
        "error.type": "pydantic_ai.exceptions.UsageLimitExceeded",
        "streamscope.policy.limit.name": "output_tokens_limit",
        "streamscope.policy.limit.threshold": 3,
        "streamscope.policy.limit.value": usage.output_tokens,
    }
    [log] = [r.log_record for r in guarded.otel.logs() if r.log_record.event_name == VIOLATION]
    assert log.body == f"Agent run stopped by its usage limits at {call_site}: {message}"
    [warning] = [r for r in guarded.caplog.records if r.name == "streamscope.policy"]
    assert warning.getMessage() == f"Policy violation: agent run stopped by its usage limits ({message}) at {call_site}"


@pytest.mark.parametrize("streamed", [True, False], ids=["run_stream", "run"])
async def test_tool_calls_over_the_limit_are_one_violation(guarded: Guarded, streamed: bool) -> None:
    agent = guarded.agent(tool_model())

    @agent.tool_plain
    def lookup() -> str:
        return "found"

    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        if streamed:
            async with agent.run_stream("hi", usage_limits=UsageLimits(tool_calls_limit=0)) as result:
                await result.get_output()
        else:
            await agent.run("hi", usage_limits=UsageLimits(tool_calls_limit=0))
    [violation] = guarded.violations("usage_limit")
    assert limit_details(violation) == ("tool_calls_limit", 0, 1)
    assert "tool_calls_limit of 0" in str(raised.value)
    assert guarded.all_violations() == 1


@pytest.mark.skipif(not NEWEST, reason="UsageLimits.cost_limit arrived after Pydantic AI 2.0")
async def test_cost_over_the_limit_is_one_violation(guarded: Guarded, server: OpenAIStubServer) -> None:
    server.script(["The answer is 42."])
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
    agent = guarded.agent(model)
    limits = UsageLimits(cost_limit=Decimal("0.000000001"))
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded) as raised:
        async with agent.run_stream("hi", usage_limits=limits) as result:
            await result.get_output()
    [violation] = guarded.violations("usage_limit")
    name, threshold, value = limit_details(violation)
    assert (name, threshold) == ("cost_limit", 1e-9)
    assert isinstance(value, float)
    assert value > 1e-9
    assert "cost_limit" in str(raised.value)


@pytest.mark.skipif(not NEWEST, reason="per_request_input_tokens_limit arrived after Pydantic AI 2.0")
async def test_per_request_input_tokens_over_the_limit_are_one_violation(guarded: Guarded) -> None:
    agent = guarded.agent(function_model())
    with user_span(guarded.otel), pytest.raises(UsageLimitExceeded):
        await agent.run("a prompt of several words", usage_limits=UsageLimits(per_request_input_tokens_limit=2))
    [violation] = guarded.violations("usage_limit")
    name, threshold, value = limit_details(violation)
    assert (name, threshold) == ("per_request_input_tokens_limit", 2)
    assert value > 2


async def test_a_run_within_its_limits_is_no_violation(guarded: Guarded) -> None:
    agent = guarded.agent(function_model())
    limits = UsageLimits(request_limit=5, output_tokens_limit=1000, input_tokens_limit=1000, tool_calls_limit=5)
    async with agent.run_stream("hi", usage_limits=limits) as result:
        await result.get_output()
    await agent.run("hi", usage_limits=limits)
    assert guarded.all_violations() == 0
    assert guarded.caplog.records == []


def test_the_exception_is_pydantic_ais_own() -> None:
    """Same type, same text, same traceback end with streamscope on as off; the limits object is not changed."""

    def run() -> Any:
        async def go() -> None:
            agent = Agent(function_model())
            await agent.run("hi", usage_limits=UsageLimits(output_tokens_limit=3))

        return go

    without = unchanged_message(run())
    streamscope.instrument()
    try:
        with pytest.raises(UsageLimitExceeded) as raised:
            anyio.run(run())
    finally:
        streamscope.uninstrument()
    assert str(raised.value) == without
    assert type(raised.value) is UsageLimitExceeded


# --- concurrency limits -----------------------------------------------------------------------------------------
async def test_a_full_concurrency_queue_is_one_violation(guarded: Guarded) -> None:
    started = anyio.Event()
    release = anyio.Event()

    async def slow_words(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        started.set()
        await release.wait()
        yield "done"

    agent = guarded.agent(
        FunctionModel(stream_function=slow_words, model_name="guarded"),
        max_concurrency=ConcurrencyLimit(max_running=1, max_queued=0),
    )

    async def first() -> None:
        async with agent.run_stream("hi") as result:
            await result.get_output()

    refused: list[ConcurrencyLimitExceeded] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await started.wait()
        with user_span(guarded.otel), pytest.raises(ConcurrencyLimitExceeded) as raised:
            async with agent.run_stream("hi") as result:
                await result.get_output()
        refused.append(raised.value)
        release.set()
    [violation] = guarded.violations("concurrency_limit")
    site = pydantic_ai_site(violation)
    assert violation == {
        "streamscope.policy.name": "concurrency_limit",
        "streamscope.policy.message": "Concurrency queue depth (1) exceeds max_queued (0) for agent:agent",
        "streamscope.policy.limit.name": "max_queued",
        "streamscope.policy.limit.value": 1,
        "streamscope.policy.limiter.max_running": 1,
        "streamscope.policy.limiter.source": "agent:agent",  # an unnamed limiter: no limiter.name
        "error.type": "pydantic_ai.exceptions.ConcurrencyLimitExceeded",
    }
    assert site.startswith("pydantic_ai.")  # Pydantic AI's own code acquired the agent's limiter
    assert violation["streamscope.policy.message"] == str(refused[0])
    assert guarded.all_violations() == 1


async def test_a_model_limiters_refusal_goes_to_the_telemetry_of_the_request_it_refused(
    otel: Otel, inner_otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """A `ConcurrencyLimitedModel` refuses inside the request an outer `instrument(model, <own providers>)` opened:
    the refusal is reported there, once, and not to the process-wide instrumentation's telemetry."""
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    started, release = anyio.Event(), anyio.Event()

    async def slow_words(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        started.set()
        await release.wait()
        yield "done"

    limited = ConcurrencyLimitedModel(
        FunctionModel(stream_function=slow_words, model_name="guarded"), ConcurrencyLimit(max_running=1, max_queued=0)
    )
    streamscope.instrument(**inner_otel.providers)  # process-wide, into the other pipeline
    agent = Agent(streamscope.instrument(limited, **otel.providers))

    async def first() -> None:
        async with agent.run_stream("hi") as result:
            await result.get_output()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await started.wait()
        with pytest.raises(ConcurrencyLimitExceeded):
            async with agent.run_stream("hi") as result:
                await result.get_output()
        release.set()
    counted = sum_value(otel.metrics()[METRIC], streamscope__policy__name="concurrency_limit")
    assert counted == 1
    [log] = [r.log_record for r in otel.logs() if r.log_record.event_name == VIOLATION]
    assert dict(log.attributes or {})["streamscope.policy.limit.name"] == "max_queued"
    assert len([r for r in caplog.records if r.name == "streamscope.policy"]) == 1
    assert inner_otel.logs() == []
    assert METRIC not in inner_otel.metrics()


async def test_a_named_limiter_and_its_source_are_reported(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    streamscope.instrument(**otel.providers)
    try:
        limiter = ConcurrencyLimiter(max_running=1, max_queued=1, name="shared-llm-pool")
        done = anyio.Event()
        refused: list[ConcurrencyLimitExceeded] = []

        async def hold() -> None:  # slots belong to tasks in Pydantic AI 2.0: each acquisition in its own
            await limiter.acquire("model:gpt-4o")
            await done.wait()
            limiter.release()

        async def wait_then_release() -> None:
            await limiter.acquire("model:gpt-4o")
            limiter.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(wait_then_release)  # waits: the queue is now full
            await anyio.wait_all_tasks_blocked()
            with user_span(otel), pytest.raises(ConcurrencyLimitExceeded) as raised:
                await limiter.acquire("model:gpt-4o")  # refused
            refused.append(raised.value)
            done.set()
    finally:
        streamscope.uninstrument()
    message = "Concurrency queue depth (2) exceeds max_queued (1) for shared-llm-pool"
    assert [str(error) for error in refused] == [message]
    # where the request was refused: the code that called acquire()
    site = site_of(test_a_named_limiter_and_its_source_are_reported, "# refused")
    call_site = site["streamscope.policy.call_site"]
    attributes = {
        "streamscope.policy.name": "concurrency_limit",
        "streamscope.policy.message": message,
        "streamscope.policy.limit.name": "max_queued",
        "streamscope.policy.limit.value": 2,  # the queue depth this acquisition would have made
        "streamscope.policy.limiter.max_running": 1,
        "streamscope.policy.limiter.name": "shared-llm-pool",
        "streamscope.policy.limiter.source": "model:gpt-4o",
        "error.type": "pydantic_ai.exceptions.ConcurrencyLimitExceeded",
        **site,
    }
    summary = "request refused by a concurrency limiter's full queue"
    assert_reported_once(
        otel,
        caplog,
        attributes,
        body=f"Request refused by a concurrency limiter's full queue at {call_site}: {message}",
        text=f"Policy violation: {summary} ({message}) at {call_site}",
        counted={"streamscope.policy.name": "concurrency_limit", "streamscope.policy.limit.name": "max_queued"},
    )


class OpaqueLimiter(ConcurrencyLimiter):
    """A limiter that does not tell its queue depth or its size: reading them raises AttributeError."""

    @property
    def waiting_count(self) -> int:
        raise AttributeError("waiting_count")

    @property
    def max_running(self) -> int:
        raise AttributeError("max_running")


class UnnamableLimiter(ConcurrencyLimiter):
    """A limiter whose name cannot be read."""

    @property
    def name(self) -> str | None:
        raise LookupError("no name")


async def refused_acquisition(
    limiter: ConcurrencyLimiter, otel: Otel, *, by_keyword: bool = False
) -> ConcurrencyLimitExceeded:
    """Fill `limiter` (one slot, no queue) from another task, then have one more acquisition refused here (its
    source passed positionally, or `by_keyword`)."""
    holding, done = anyio.Event(), anyio.Event()
    refused: list[ConcurrencyLimitExceeded] = []

    async def hold() -> None:
        await limiter.acquire("model:held")
        holding.set()
        await done.wait()
        limiter.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await holding.wait()
        with user_span(otel), pytest.raises(ConcurrencyLimitExceeded) as raised:
            if by_keyword:
                await limiter.acquire(source="model:refused")
            else:
                await limiter.acquire("model:refused")
        refused.append(raised.value)
        done.set()
    [error] = refused
    return error


async def test_a_limiter_not_telling_its_counts_is_reported_without_them(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    streamscope.instrument(**otel.providers)
    error = await refused_acquisition(OpaqueLimiter(max_running=1, max_queued=0), otel)
    message = "Concurrency queue depth (1) exceeds max_queued (0) for model:refused"
    assert str(error) == message
    site = site_of(refused_acquisition, 'acquire("model:refused")')
    call_site = site["streamscope.policy.call_site"]
    attributes = {
        "streamscope.policy.name": "concurrency_limit",
        "streamscope.policy.message": message,
        "streamscope.policy.limit.name": "max_queued",  # neither its value nor the limiter's size: unknown
        "streamscope.policy.limiter.source": "model:refused",
        "error.type": "pydantic_ai.exceptions.ConcurrencyLimitExceeded",
        **site,
    }
    assert_reported_once(
        otel,
        caplog,
        attributes,
        body=f"Request refused by a concurrency limiter's full queue at {call_site}: {message}",
        text=f"Policy violation: request refused by a concurrency limiter's full queue ({message}) at {call_site}",
        counted={"streamscope.policy.name": "concurrency_limit", "streamscope.policy.limit.name": "max_queued"},
    )


async def test_a_limiter_failing_to_describe_itself_is_an_internal_error(
    otel: Otel, caplog: pytest.LogCaptureFixture, internal_errors: list[logging.LogRecord]
) -> None:
    """The refusal reaches the caller unchanged; streamscope logs its own failure (with the traceback) instead of
    a violation it cannot describe."""
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    streamscope.instrument(**otel.providers)
    error = await refused_acquisition(UnnamableLimiter(max_running=1, max_queued=0), otel)
    assert type(error) is ConcurrencyLimitExceeded
    assert str(error) == "Concurrency queue depth (1) exceeds max_queued (0) for model:refused"
    [record] = internal_errors
    assert (record.name, record.levelno) == ("streamscope.internal", logging.WARNING)
    expected = "streamscope failed while recording a concurrency-limit policy violation; the stream is unaffected"
    assert record.getMessage() == expected
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is LookupError
    assert str(record.exc_info[1]) == "no name"
    assert [e for s in otel.spans() for e in s.events if e.name == VIOLATION] == []
    assert otel.logs() == []
    assert [r for r in caplog.records if r.name == "streamscope.policy"] == []
    assert METRIC not in otel.metrics()


# --- content filters --------------------------------------------------------------------------------------------
FILTERED_SUMMARY = "response filtered by the provider's content filter"
REFUSED_SUMMARY = "request refused by the provider's content filter"
FUNCTION_MODEL_COUNTED = {
    "streamscope.policy.name": "content_filter",
    "gen_ai.provider.name": "function",
    "gen_ai.request.model": "guarded",
}


@pytest.mark.parametrize("response_id", ["resp-1", ""], ids=["with an id", "with an empty id"])
async def test_a_filtered_non_streamed_response_is_one_violation(guarded: Guarded, response_id: str) -> None:
    def filtered(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(
            parts=[TextPart("I can")],
            finish_reason="content_filter",
            model_name="guarded-v1",
            provider_response_id=response_id,
        )

    agent = guarded.agent(FunctionModel(filtered, model_name="guarded"))
    with user_span(guarded.otel):
        await agent.run("hi")
    attributes = {
        "streamscope.policy.name": "content_filter",
        "streamscope.policy.message": "finish_reason=content_filter",
        "streamscope.policy.model_class": "FunctionModel",
        "gen_ai.provider.name": "function",
        "gen_ai.request.model": "guarded",
        "gen_ai.response.model": "guarded",  # FunctionModel names its responses after itself
    }
    if response_id:  # an empty id says nothing: left out
        attributes["gen_ai.response.id"] = response_id
    assert_reported_once(
        guarded.otel,
        guarded.caplog,
        attributes,
        body="Response filtered by the provider's content filter: finish_reason=content_filter",
        text=f"Policy violation: {FILTERED_SUMMARY} (finish_reason=content_filter) for FunctionModel guarded",
        counted=FUNCTION_MODEL_COUNTED,
    )


async def test_an_empty_filtered_response_raising_in_the_agent_is_one_violation(guarded: Guarded) -> None:
    def empty_filtered(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[], finish_reason="content_filter")

    agent = guarded.agent(FunctionModel(empty_filtered, model_name="guarded"))
    with user_span(guarded.otel), pytest.raises(ContentFilterError):
        await agent.run("hi")
    assert len(guarded.violations("content_filter")) == 1
    assert guarded.all_violations() == 1


@pytest.mark.parametrize("where", ["request", "stream open", "stream"])
async def test_a_content_filter_error_raised_by_a_model_is_one_violation(guarded: Guarded, where: str) -> None:
    raised: list[ContentFilterError] = []

    def refuse() -> ContentFilterError:
        error = ContentFilterError("Content filter triggered: the request was refused", body='{"code": "refused"}')
        raised.append(error)
        return error

    def request(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise refuse()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        if where == "stream":
            yield "Sure, "
        raise refuse()
        yield "never"  # pragma: no cover - makes this an async generator

    agent = guarded.agent(FunctionModel(request, stream_function=stream, model_name="guarded"))
    with user_span(guarded.otel), pytest.raises(ContentFilterError) as caught:
        if where == "request":
            await agent.run("hi")
        else:
            async with agent.run_stream("hi") as result:
                await result.get_output()
    assert caught.value is raised[0]
    message = "Content filter triggered: the request was refused"
    attributes: dict[str, Any] = {
        "streamscope.policy.name": "content_filter",
        "streamscope.policy.message": message,
        "streamscope.policy.model_class": "FunctionModel",
        "gen_ai.provider.name": "function",
        "gen_ai.request.model": "guarded",
    }
    if where == "stream":  # the stream had begun: the answer was filtered, reported as the stream ends
        attributes["gen_ai.response.model"] = "guarded"
        body = f"Response filtered by the provider's content filter: {message}"
        text = f"Policy violation: {FILTERED_SUMMARY} ({message}) for FunctionModel guarded"
    else:  # where the model raised it (not where it was made, nor the model's call of the function)
        site = site_of(request if where == "request" else stream, "raise refuse()")
        attributes |= {"error.type": "pydantic_ai.exceptions.ContentFilterError", **site}
        call_site = site["streamscope.policy.call_site"]
        body = f"Request refused by the provider's content filter at {call_site}: {message}"
        text = f"Policy violation: {REFUSED_SUMMARY} ({message}) for FunctionModel guarded at {call_site}"
    assert_reported_once(guarded.otel, guarded.caplog, attributes, body=body, text=text, counted=FUNCTION_MODEL_COUNTED)
    if where != "request":  # on the stream's span
        [span] = guarded.otel.stream_spans()
        assert [e.name for e in span.events].count(VIOLATION) == 1


class RefusingClient:
    """A provider's client refusing every request."""

    async def complete(self, messages: list[ModelMessage]) -> ModelResponse:
        raise ContentFilterError("Content filter triggered: the request was refused", body="{}")


class ClientModel(Model):
    """A thin adapter: its `request` hands back its client's coroutine, so no frame of the model itself is in the
    traceback of what the client raises."""

    def __init__(self) -> None:
        super().__init__()
        self.client = RefusingClient()

    @property
    def model_name(self) -> str:
        return "adapter-1"

    @property
    def system(self) -> str:
        return "adapter"

    def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> CoroutineType[Any, Any, ModelResponse]:
        return self.client.complete(messages)


class DenyingClient:
    """A provider's client that asks Pydantic AI's policy before each request, as provider SDK adapters do."""

    async def complete(self, messages: list[ModelMessage]) -> ModelResponse:
        check_allow_model_requests()
        raise NotImplementedError


class DenyingClientModel(ClientModel):
    def __init__(self) -> None:
        super().__init__()
        self.client = DenyingClient()  # type: ignore[assignment]  # pyright: ignore[reportAttributeAccessIssue]


class DenyingStreamClient:
    """A provider's streaming client that asks Pydantic AI's policy before it opens a stream."""

    @asynccontextmanager
    async def stream(self, messages: list[ModelMessage]) -> AsyncGenerator[StreamedResponse]:
        check_allow_model_requests()
        raise NotImplementedError
        yield  # pragma: no cover - makes this a generator


class DenyingStreamingClientModel(ClientModel):
    """A thin streaming adapter: its `request_stream` hands back its client's stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_client = DenyingStreamClient()

    def request_stream(self, messages: list[ModelMessage], *args: Any, **kwargs: Any) -> Any:
        return self.stream_client.stream(messages)


async def test_a_denial_opening_a_stream_no_frame_of_the_model_made_is_the_instrumented_models(
    otel: Otel, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    agent = Agent(streamscope.instrument(DenyingStreamingClientModel(), **otel.providers))
    with pytest.raises(RuntimeError):
        async with agent.run_stream("hi") as result:
            await result.get_output()
    [violation] = [dict(e.attributes or {}) for s in otel.spans() for e in s.events if e.name == VIOLATION]
    assert violation["streamscope.policy.model_class"] == "DenyingStreamingClientModel"
    assert (violation["gen_ai.provider.name"], violation["gen_ai.request.model"]) == ("adapter", "adapter-1")
    assert violation["code.function.name"] == f"{__name__}.DenyingStreamClient.stream"


THIN_ADAPTERS: dict[str, tuple[type[ClientModel], Callable[..., Any], str, str, str, str]] = {
    # violation: (model, the client's method, its line's marker, policy, error.type, summary)
    "content filter": (
        ClientModel,
        RefusingClient.complete,
        "raise ContentFilterError",
        "content_filter",
        "pydantic_ai.exceptions.ContentFilterError",
        REFUSED_SUMMARY,
    ),
    "denial": (
        DenyingClientModel,
        DenyingClient.complete,
        "check_allow_model_requests()",
        "allow_model_requests",
        "RuntimeError",
        "model request denied by check_allow_model_requests",
    ),
}


@pytest.mark.parametrize("violation", list(THIN_ADAPTERS))
async def test_a_violation_no_frame_of_the_model_made_is_the_instrumented_models(
    otel: Otel, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, violation: str
) -> None:
    """Named after the model `instrument()` wrapped (not streamscope's wrapper), at the client's line."""
    model_class, function, marker, policy, error_type, summary = THIN_ADAPTERS[violation]
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    agent = Agent(streamscope.instrument(model_class(), **otel.providers))
    with user_span(otel), pytest.raises((ContentFilterError, RuntimeError)) as raised:
        await agent.run("hi")
    message = getattr(raised.value, "message", str(raised.value))
    site = site_of(function, marker)
    call_site = site["streamscope.policy.call_site"]
    name = model_class.__name__
    assert_reported_once(
        otel,
        caplog,
        {
            "streamscope.policy.name": policy,
            "streamscope.policy.message": message,
            "streamscope.policy.model_class": name,
            "error.type": error_type,
            "gen_ai.provider.name": "adapter",
            "gen_ai.request.model": "adapter-1",
            **site,
        },
        body=f"{summary[:1].upper()}{summary[1:]} at {call_site}: {message}",
        text=f"Policy violation: {summary} ({message}) for {name} adapter-1 at {call_site}",
        counted={
            "streamscope.policy.name": policy,
            "gen_ai.provider.name": "adapter",
            "gen_ai.request.model": "adapter-1",
        },
    )


# --- instrumented models inside instrumented models ---------------------------------------------------------------
@pytest.fixture
def inner_otel() -> Iterator[Otel]:
    """A second in-memory pipeline: the inner model's own telemetry."""
    with in_memory_pipeline() as pipeline:
        yield pipeline


def assert_nothing_recorded(otel: Otel) -> None:
    assert otel.spans() == []
    assert otel.logs() == []
    assert otel.metrics() == {}


@pytest.mark.parametrize("violation", ["filtered response", "raised content filter"])
async def test_a_violation_inside_nested_instrumented_models_is_the_outer_ones_once(
    otel: Otel, inner_otel: Otel, caplog: pytest.LogCaptureFixture, violation: str
) -> None:
    """An instrumented model in a `FallbackModel` instrumented itself: the outermost `instrument()` reports
    everything about the request, the violation once (the inner one records it, as it saw it first, with the outer
    one's telemetry, and tells the outer one, which passes it on)."""
    caplog.set_level(logging.WARNING, logger="streamscope.policy")

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if violation == "raised content filter":
            raise ContentFilterError("refused", body="{}")
        return ModelResponse(parts=[TextPart("I can")], finish_reason="content_filter")

    inner = streamscope.instrument(FunctionModel(answer, model_name="guarded"), **inner_otel.providers)
    agent = Agent(streamscope.instrument(FallbackModel(inner), **otel.providers))
    with user_span(otel):
        if violation == "raised content filter":
            with pytest.raises(ContentFilterError):
                await agent.run("hi")
        else:
            await agent.run("hi")
    attributes: dict[str, Any] = {
        "streamscope.policy.name": "content_filter",
        "streamscope.policy.model_class": "FunctionModel",
        "gen_ai.provider.name": "function",
        "gen_ai.request.model": "guarded",
    }
    if violation == "raised content filter":
        site = site_of(answer, "raise ContentFilterError")
        call_site = site["streamscope.policy.call_site"]
        attributes |= {
            "streamscope.policy.message": "refused",
            "error.type": "pydantic_ai.exceptions.ContentFilterError",
            **site,
        }
        body = f"Request refused by the provider's content filter at {call_site}: refused"
        text = f"Policy violation: {REFUSED_SUMMARY} (refused) for FunctionModel guarded at {call_site}"
    else:
        attributes |= {"streamscope.policy.message": "finish_reason=content_filter", "gen_ai.response.model": "guarded"}
        body = "Response filtered by the provider's content filter: finish_reason=content_filter"
        text = f"Policy violation: {FILTERED_SUMMARY} (finish_reason=content_filter) for FunctionModel guarded"
    assert_reported_once(otel, caplog, attributes, body=body, text=text, counted=FUNCTION_MODEL_COUNTED)
    assert_nothing_recorded(inner_otel)


class AnswersByStreaming(Model):
    """A model answering each request by streaming from another model (its source, which it does not wrap)."""

    def __init__(self, source: Model) -> None:
        super().__init__()
        self.source = source

    @property
    def model_name(self) -> str:
        return self.source.model_name

    @property
    def system(self) -> str:
        return self.source.system

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async with self.source.request_stream(messages, model_settings, model_request_parameters) as stream:
            async for _ in stream:
                pass
        return stream.get()


async def test_a_stream_inside_an_instrumented_request_is_the_outer_models_span(otel: Otel, inner_otel: Otel) -> None:
    """A request of an instrumented model that streams from another instrumented model: the stream is one span,
    with the outer model's telemetry (the outer layer owns nothing of it: it is no stream of its own)."""
    inner = streamscope.instrument(
        FunctionModel(stream_function=many_words, model_name="guarded"), **inner_otel.providers
    )
    agent = Agent(streamscope.instrument(AnswersByStreaming(inner), **otel.providers))
    result = await agent.run("hi")
    assert result.output == "one two three four five six seven eight nine ten "
    [span] = otel.stream_spans()
    assert span.name == "chat guarded"
    assert dict(span.attributes or {})["streamscope.stream.outcome"] == "complete"
    assert otel.spans() == [span]
    assert_nothing_recorded(inner_otel)


async def test_a_raising_logging_filter_loses_no_violation_and_adds_none(
    otel: Otel, caplog: pytest.LogCaptureFixture, internal_errors: list[logging.LogRecord]
) -> None:
    """A filter on `streamscope.policy` that raises: the warning is lost (an internal error says so), the span
    event, log record and count are not, and the violation is still reported once by the two layers that see it."""

    class RaisingFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise LookupError("filter")

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("I can")], finish_reason="content_filter")

    raising = RaisingFilter()
    policy_logger = logging.getLogger("streamscope.policy")
    policy_logger.addFilter(raising)
    try:
        agent = Agent(_both(FunctionModel(answer, model_name="guarded"), otel))
        with user_span(otel):
            await agent.run("hi")
    finally:
        policy_logger.removeFilter(raising)
    [event] = [e for s in otel.spans() for e in s.events if e.name == VIOLATION]
    [log] = [r.log_record for r in otel.logs() if r.log_record.event_name == VIOLATION]
    assert dict(log.attributes or {}) == dict(event.attributes or {})
    assert [(a, p.value) for a, p in otel.metrics()[METRIC]] == [(FUNCTION_MODEL_COUNTED, 1)]
    [record] = internal_errors
    assert record.getMessage() == "streamscope failed while logging a policy violation; the stream is unaffected"
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is LookupError


# --- removal ----------------------------------------------------------------------------------------------------
def test_uninstrument_restores_the_guards_exactly(otel: Otel) -> None:
    originals = {name: vars(UsageLimits)[name] for name in vars(UsageLimits)}
    acquire = vars(ConcurrencyLimiter)["acquire"]
    streamscope.instrument(**otel.providers)
    wrapped = [name for name in originals if vars(UsageLimits)[name] is not originals[name]]
    assert "check_before_request" in wrapped
    assert "check_before_tool_call" in wrapped
    assert "has_token_limits" not in wrapped  # raises nothing: passed by
    assert vars(ConcurrencyLimiter)["acquire"] is not acquire
    streamscope.uninstrument()
    assert {name: vars(UsageLimits)[name] for name in vars(UsageLimits)} == originals
    assert vars(ConcurrencyLimiter)["acquire"] is acquire
    with pytest.raises(UsageLimitExceeded):
        UsageLimits(request_limit=0).check_before_request(_usage())
    assert METRIC not in otel.metrics()


def _usage() -> Any:
    from pydantic_ai.usage import RunUsage

    return RunUsage()


def test_exceeded_limit_reads_the_limit_the_check_tests() -> None:
    from pydantic_ai.usage import RunUsage

    usage = RunUsage(requests=3, input_tokens=50, output_tokens=7, tool_calls=2)
    limits = UsageLimits(request_limit=3, input_tokens_limit=10, output_tokens_limit=5, tool_calls_limit=1)
    before_request = _guards.exceeded_limit(limits, usage, _guards.limits_checked_by("check_before_request"))
    tokens = _guards.exceeded_limit(limits, usage, _guards.limits_checked_by("check_tokens"))
    tools = _guards.exceeded_limit(limits, usage, _guards.limits_checked_by("check_before_tool_call"))
    helper = _guards.exceeded_limit(limits, usage, _guards.limits_checked_by("a helper checking tokens"))
    assert before_request == ("request_limit", 3, 3)  # reached: the next request would exceed it
    assert tokens == ("input_tokens_limit", 10, 50)
    assert tools == ("tool_calls_limit", 1, 2)
    assert helper == ("input_tokens_limit", 10, 50)  # never the request count: it is only checked before requests
    under = UsageLimits(request_limit=4)
    assert _guards.exceeded_limit(under, usage, _guards.limits_checked_by("check_before_request")) is None
    if NEWEST:
        per_request = UsageLimits(per_request_input_tokens_limit=5)  # pyright: ignore[reportCallIssue]
        assert _guards.exceeded_limit(per_request, 6, ()) == ("per_request_input_tokens_limit", 5, 6)
        assert _guards.exceeded_limit(per_request, 5, ()) is None


@pytest.mark.parametrize("passed", ["positionally", "by keyword"])
def test_a_usage_check_is_reported_however_its_usage_is_passed(otel: Otel, passed: str) -> None:
    """Code of its own calling a check (`limits.check_before_request(usage=...)`): the same violation, with its
    value."""
    streamscope.instrument(**otel.providers)
    limits, usage = UsageLimits(request_limit=2), RunUsage(requests=2)
    with pytest.raises(UsageLimitExceeded):
        if passed == "by keyword":
            limits.check_before_request(usage=usage)
        else:
            limits.check_before_request(usage)
    (log,) = [record.log_record for record in otel.logs()]
    assert limit_details(dict(log.attributes or {})) == ("request_limit", 2, 2)


async def test_a_limiter_acquired_by_keyword_is_reported_with_its_source(otel: Otel) -> None:
    streamscope.instrument(**otel.providers)
    await refused_acquisition(ConcurrencyLimiter(max_running=1, max_queued=0), otel, by_keyword=True)
    (log,) = [record.log_record for record in otel.logs()]
    assert dict(log.attributes or {})["streamscope.policy.limiter.source"] == "model:refused"
