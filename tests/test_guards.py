"""Pydantic AI's run guards — usage limits, concurrency limits, content filters — are policy violations.

Each denial is reported once (span event, OTel log record, counter, stdlib warning on `streamscope.policy`) in
every mode, beside Pydantic AI's own instrumentation too, with what was exceeded; the exception reaches the user
as Pydantic AI raised it. Real agents and models throughout (FunctionModel, the real OpenAIChatModel over the
loopback server).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.concurrency import ConcurrencyLimit, ConcurrencyLimiter
from pydantic_ai.exceptions import ConcurrencyLimitExceeded, ContentFilterError, UsageLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.usage import UsageLimits

import streamscope
from streamscope import _guards
from tests.composition import PYDANTIC_AI_VERSION
from tests.conftest import Otel, sum_value
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
    assert violation["streamscope.policy.limit.name"] == "max_queued"
    assert violation["streamscope.policy.limit.value"] == 1
    assert violation["streamscope.policy.limiter.max_running"] == 1
    assert violation["streamscope.policy.message"] == str(refused[0])
    assert violation["error.type"] == "pydantic_ai.exceptions.ConcurrencyLimitExceeded"
    assert guarded.all_violations() == 1


async def test_a_named_limiter_and_its_source_are_reported(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    streamscope.instrument(**otel.providers)
    try:
        limiter = ConcurrencyLimiter(max_running=1, max_queued=1, name="shared-llm-pool")
        done = anyio.Event()

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
            with pytest.raises(ConcurrencyLimitExceeded):
                await limiter.acquire("model:gpt-4o")
            done.set()
    finally:
        streamscope.uninstrument()
    [log] = [r for r in otel.logs() if r.log_record.event_name == VIOLATION]
    attributes = dict(log.log_record.attributes or {})
    assert attributes["streamscope.policy.limiter.name"] == "shared-llm-pool"
    assert attributes["streamscope.policy.limiter.source"] == "model:gpt-4o"
    assert attributes["streamscope.policy.limit.value"] == 2


# --- content filters --------------------------------------------------------------------------------------------
def filtered(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("I can")], finish_reason="content_filter", model_name="guarded-v1")


async def test_a_filtered_non_streamed_response_is_one_violation(guarded: Guarded) -> None:
    agent = guarded.agent(FunctionModel(filtered, model_name="guarded"))
    with user_span(guarded.otel):
        await agent.run("hi")
    [violation] = guarded.violations("content_filter")
    assert violation["streamscope.policy.message"] == "finish_reason=content_filter"
    assert violation["streamscope.policy.model_class"] == "FunctionModel"
    assert violation["gen_ai.request.model"] == "guarded"
    assert violation["gen_ai.response.model"] == "guarded"  # FunctionModel names its responses after itself
    assert guarded.all_violations() == 1


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
    [violation] = guarded.violations("content_filter")
    assert violation["streamscope.policy.message"] == "Content filter triggered: the request was refused"
    assert "refused" not in str(violation.get("streamscope.policy.call_site", ""))
    assert guarded.all_violations() == 1
    if where != "request":
        spans = guarded.otel.stream_spans()
        assert len(spans) == 1
        assert [e.name for e in spans[0].events].count(VIOLATION) == 1


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
