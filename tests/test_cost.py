"""Live cost: priced as Pydantic AI prices a response, counted while the stream runs, exactly once per request.

The priced streams are real: `OpenAIChatModel` (gpt-4o, which genai-prices knows by the provider's name) over the
loopback OpenAI server, and a user-defined stream of an OpenAI model whose usage grows chunk by chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ModelResponseStreamEvent, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

import streamscope
from streamscope import _cost
from tests.conftest import Instrument, Otel, sum_value
from tests.openai_server import OpenAIStubServer, StubUsage
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

COST = "streamscope.cost"
STREAM_COST = "streamscope.stream.cost"


@pytest.fixture(autouse=True)
def _fresh_explanations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first explanation of an unknown price, as a fresh process would."""
    monkeypatch.setattr(_cost, "_explained", set())
    monkeypatch.setattr(_cost, "_unpriced", {})


# USD, written out rather than imported: a boundary lost in the library must fail.
COST_BOUNDARIES = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def priced(response: ModelResponse) -> Decimal:
    """The cost Pydantic AI gives a response: the reported one if any, else `ModelResponse.cost()`."""
    reported = getattr(response.usage, "cost", None)
    return reported if isinstance(reported, Decimal) else response.cost().total_price


def openai_model(server: OpenAIStubServer, name: str = "gpt-4o") -> OpenAIChatModel:
    return OpenAIChatModel(name, provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))


def cost_points(otel: Otel) -> list[tuple[dict[str, Any], Any]]:
    return otel.metrics().get(COST, [])


def stream_cost_points(otel: Otel) -> list[tuple[dict[str, Any], Any]]:
    return otel.metrics().get(STREAM_COST, [])


# --- a user-defined stream of a priced model whose usage grows as it streams ------------------------------------
WORDS = ("one", " two", " three", " four", " five")


def usage_after(chunks: int) -> RequestUsage:
    return RequestUsage(input_tokens=1200, output_tokens=40 * chunks)


@dataclass
class GrowingStream(StreamedResponse):
    """Usage grows with each chunk, as Anthropic's or Gemini's streams report it; `gate` holds the second chunk."""

    model: str = "gpt-4o"
    provider: str = "openai"
    gate: asyncio.Event | None = None
    _timestamp: datetime = field(default_factory=lambda: datetime(2026, 11, 30, tzinfo=UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for index, word in enumerate(WORDS):
            if index == 1 and self.gate is not None:
                await self.gate.wait()
            self._usage = usage_after(index + 1)
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def provider_name(self) -> str:
        return self.provider

    @property
    def provider_url(self) -> str | None:
        return None

    @property
    def timestamp(self) -> datetime:
        return self._timestamp


class GrowingModel(Model):
    """A user-defined model streaming `GrowingStream`s."""

    def __init__(self, model: str = "gpt-4o", provider: str = "openai", gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self._name, self._system, self.gate = model, provider, gate

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def system(self) -> str:
        return self._system

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
        yield GrowingStream(model_request_parameters, model=self._name, provider=self._system, gate=self.gate)


def price_of(usage: RequestUsage, model: str = "gpt-4o") -> Decimal:
    response = ModelResponse(
        parts=[], usage=usage, model_name=model, provider_name="openai", timestamp=datetime(2026, 11, 30, tzinfo=UTC)
    )
    return response.cost().total_price


def prompt() -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart("count")])]


# --- the total of a stream is the priced final response ---------------------------------------------------------
async def test_stream_cost_is_the_priced_final_response(
    otel: Otel, server: OpenAIStubServer, instrument: Instrument
) -> None:
    server.script(["Hello", " there"], usage=StubUsage(prompt_tokens=1234, completion_tokens=567))
    agent = Agent(instrument(openai_model(server)))
    async with agent.run_stream("Say hello.") as result:
        await result.get_output()
    response = result.all_messages()[-1]
    assert isinstance(response, ModelResponse)
    expected = priced(response)
    assert expected > 0

    span = otel.one_stream_span()
    assert (span.attributes or {})[STREAM_COST] == float(expected)
    [(_, first_collected)] = stream_cost_points(otel)  # a collection hands out the exemplars it holds: this one
    (exemplar,) = first_collected.exemplars  # the priced stream leads to its span
    assert span.context is not None
    assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)
    [(attributes, point)] = cost_points(otel)
    assert point.value == float(expected)  # exactly: the deltas are summed as Decimals
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    [(histogram_attributes, histogram)] = stream_cost_points(otel)
    assert (histogram.count, histogram.sum) == (1, float(expected))
    assert tuple(histogram.explicit_bounds) == COST_BOUNDARIES
    assert histogram_attributes == {
        **attributes,
        "gen_ai.response.model": response.model_name,
        "streamscope.stream.outcome": "complete",
    }


@pytest.fixture
def pricings(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The model name of every response priced (`ModelResponse.cost()` calls), in order."""
    priced: list[str | None] = []
    original = ModelResponse.cost

    def counting_cost(self: ModelResponse) -> Any:
        priced.append(self.model_name)
        return original(self)

    monkeypatch.setattr(ModelResponse, "cost", counting_cost)
    return priced


async def test_cost_follows_the_usage_while_the_stream_runs(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 0.0)  # price at every usage flush
    model = streamscope.instrument(GrowingModel(), usage_flush_interval=0, **otel.providers)
    seen: list[float] = []
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        chunks = 0
        async for event in stream:
            if type(event).__name__ == "PartDeltaEvent" or type(event).__name__ == "PartStartEvent":
                chunks += 1
                [(_, point)] = cost_points(otel)
                seen.append(point.value)
                # what has streamed so far is priced already, before the stream ends
                assert point.value == float(price_of(usage_after(chunks)))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(WORDS)
    final = price_of(usage_after(len(WORDS)))
    [(_, point)] = cost_points(otel)
    assert point.value == float(final)
    assert (otel.one_stream_span().attributes or {})[STREAM_COST] == float(final)


@dataclass
class ResoldStream(GrowingStream):
    """A stream from a reseller of OpenAI's models: its provider, API URL, time and price context all decide its
    price (genai-prices does not know this URL, so the provider's name prices it)."""

    @property
    def provider_url(self) -> str | None:
        return "https://llm.reseller.example/v1"


@dataclass
class Priced:
    model_name: str | None
    provider_name: str | None
    provider_url: str | None
    timestamp: datetime
    provider_details: dict[str, Any] | None


async def test_live_pricing_prices_the_streams_own_provider_url_time_and_context(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the stream runs, the price is asked for its usage so far, of its model at its provider (name and API
    URL: resellers price the same model differently), at the time of its request (prices change, by date and by
    time of day) and in its price context; the final pricing asks the same of the final response."""
    asked: list[Priced] = []
    original = ModelResponse.cost

    def recording_cost(self: ModelResponse) -> Any:
        fields = (self.model_name, self.provider_name, self.provider_url, self.timestamp, self.provider_details)
        asked.append(Priced(*fields))
        return original(self)

    monkeypatch.setattr(ModelResponse, "cost", recording_cost)
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 0.0)  # price at every usage flush
    requested_at = datetime(2025, 3, 4, 21, 30, tzinfo=UTC)
    details = {"service_tier": "flex"}

    class ResellerModel(GrowingModel):
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
            stream = ResoldStream(ModelRequestParameters(), model="gpt-4o", provider="openai")
            stream._timestamp = requested_at  # pyright: ignore[reportPrivateUsage]
            stream.provider_details = details
            yield stream

    model = streamscope.instrument(ResellerModel(), usage_flush_interval=0, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    expected = Priced("gpt-4o", "openai", "https://llm.reseller.example/v1", requested_at, details)
    assert asked == [expected] * (len(WORDS) + 1)  # live at each usage flush, then the final response


@dataclass
class UnreachableStream(GrowingStream):
    """A third party's stream whose API URL comes from a client that is gone by now."""

    @property
    def provider_url(self) -> str | None:
        raise RuntimeError("the client was closed")


async def test_a_stream_that_cannot_say_its_provider_is_not_priced_and_not_broken(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, internal_errors: list[logging.LogRecord]
) -> None:
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 0.0)

    class UnreachableModel(GrowingModel):
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
            yield UnreachableStream(ModelRequestParameters())

    async def events_of(model: Model) -> list[str]:
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            return [repr(event) async for event in stream]

    expected = await events_of(UnreachableModel())
    assert await events_of(streamscope.instrument(UnreachableModel(), usage_flush_interval=0, **otel.providers)) == (
        expected
    )
    live = "streamscope failed while reading a stream's model and provider for its price; the stream is unaffected"
    final = "streamscope failed while building the response with get(); the stream is unaffected"
    assert [record.getMessage() for record in internal_errors] == [live, final]
    assert all(type(record.exc_info[1]) is RuntimeError for record in internal_errors if record.exc_info)
    assert cost_points(otel) == []
    assert STREAM_COST not in (otel.one_stream_span().attributes or {})


async def test_a_stream_shorter_than_the_live_pricing_interval_is_priced_once_at_its_end(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, pricings: list[str | None]
) -> None:
    """Pricing costs hundreds of microseconds: while streaming, the usage is priced when it grew, at most once per
    interval (a second), and not before the stream has run for one: most answers are priced once, when they end."""
    assert _cost.LIVE_PRICING_INTERVAL_S == 1.0
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 3600.0)  # no stream here runs that long
    model = streamscope.instrument(GrowingModel(), usage_flush_interval=0, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            assert cost_points(otel) == []  # nothing priced while it runs: its usage grew, but too early
    assert pricings == ["gpt-4o"]  # once: the final response
    [(_, point)] = cost_points(otel)
    assert point.value == float(price_of(usage_after(len(WORDS))))


async def test_the_usage_left_unflushed_at_the_end_is_priced_once_from_the_final_response(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, pricings: list[str | None]
) -> None:
    """The last usage flush, when the stream ends, counts tokens only: the final response prices them, once."""
    monkeypatch.setattr(_cost, "LIVE_PRICING_INTERVAL_S", 0.0)  # live pricing would be due at any flush
    model = streamscope.instrument(GrowingModel(), usage_flush_interval=60, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    assert pricings == ["gpt-4o"]
    [(_, point)] = cost_points(otel)
    assert point.value == float(price_of(usage_after(len(WORDS))))


@dataclass
class UsagelessStream(GrowingStream):
    """A known model's stream whose provider reported no usage at all."""

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for word in WORDS:
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event


async def test_a_stream_without_reported_usage_is_not_priced(otel: Otel, pricings: list[str | None]) -> None:
    """No usage is not zero tokens: a known model's stream without any is given no cost (not $0)."""

    class UsagelessModel(GrowingModel):
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
            yield UsagelessStream(ModelRequestParameters())

    model = streamscope.instrument(UsagelessModel(), usage_flush_interval=0, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    assert pricings == []
    assert STREAM_COST not in (otel.one_stream_span().attributes or {})
    assert cost_points(otel) == stream_cost_points(otel) == []


async def test_an_unknown_model_is_not_looked_up_again_for_a_while(otel: Otel, pricings: list[str | None]) -> None:
    lookups = pricings
    model = streamscope.instrument(GrowingModel("words-1", "acme"), usage_flush_interval=0, **otel.providers)
    for _ in range(3):
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
    assert lookups == ["words-1"]  # the first flush of the first stream; then remembered as unpriced
    assert len(otel.stream_spans()) == 3
    for key in _cost._unpriced:  # its retry time has come
        _cost._unpriced[key] = 0.0
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    assert len(lookups) > 1  # looked up again once the retry time has passed


async def test_spend_on_a_stream_broken_off_is_recorded_by_outcome(otel: Otel) -> None:
    model = streamscope.instrument(GrowingModel(), usage_flush_interval=0, **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            break  # after the first chunk: 1,200 input and 40 output tokens spent on an answer nobody read
    spent = float(price_of(usage_after(1)))
    span = otel.one_stream_span()
    outcome = (span.attributes or {})["streamscope.stream.outcome"]
    assert outcome == "incomplete"
    assert (span.attributes or {})[STREAM_COST] == spent
    [(_, point)] = cost_points(otel)
    assert point.value == spent
    [(attributes, histogram)] = stream_cost_points(otel)
    assert (histogram.count, histogram.sum) == (1, spent)
    assert attributes["streamscope.stream.outcome"] == "incomplete"


async def test_spend_on_a_cancelled_stream(otel: Otel) -> None:
    gate = asyncio.Event()
    model = streamscope.instrument(GrowingModel(gate=gate), usage_flush_interval=0, **otel.providers)
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spent = float(price_of(usage_after(1)))
    [(attributes, histogram)] = stream_cost_points(otel)
    assert (histogram.sum, attributes["streamscope.stream.outcome"]) == (spent, "interrupted")
    [(_, point)] = cost_points(otel)
    assert point.value == spent


# --- unknown prices and switching cost off ------------------------------------------------------------------------
async def test_an_unknown_price_records_no_cost_and_says_why_once(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamscope")
    model = streamscope.instrument(GrowingModel("words-1", "acme"), usage_flush_interval=0, **otel.providers)
    for _ in range(2):
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
    assert COST not in otel.metrics()  # no cost at all, not a cost of 0
    assert STREAM_COST not in otel.metrics()
    assert all(STREAM_COST not in (span.attributes or {}) for span in otel.stream_spans())
    assert len(otel.stream_spans()) == 2
    explained = [r for r in caplog.records if "no cost recorded" in r.getMessage()]
    assert len(explained) == 1, [r.getMessage() for r in explained]
    assert explained[0].levelno == logging.DEBUG
    assert explained[0].name == "streamscope"
    assert re.fullmatch(
        r"streamscope: no cost recorded for model 'words-1' of provider 'acme' \(None\): genai-prices: .+",
        explained[0].getMessage(),
    ), explained[0].getMessage()
    # the token usage is still counted
    assert sum_value(otel.metrics()["streamscope.usage.output_tokens"]) == 2 * 40 * len(WORDS)


async def test_no_usage_no_cost(otel: Otel, server: OpenAIStubServer) -> None:
    server.script(["Hello"], usage=None)
    agent = Agent(streamscope.instrument(openai_model(server), **otel.providers))
    async with agent.run_stream("Say hello.") as result:
        await result.get_output()
    assert COST not in otel.metrics()
    assert STREAM_COST not in (otel.one_stream_span().attributes or {})


async def test_cost_can_be_switched_off(otel: Otel, server: OpenAIStubServer) -> None:
    server.script(["Hello"], usage=StubUsage(prompt_tokens=100, completion_tokens=10))
    agent = Agent(streamscope.instrument(openai_model(server), cost=False, **otel.providers))
    async with agent.run_stream("Say hello.") as result:
        await result.get_output()
    assert COST not in otel.metrics()
    assert STREAM_COST not in otel.metrics()
    assert STREAM_COST not in (otel.one_stream_span().attributes or {})


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_cost_option_is_validated(bad: Any) -> None:
    with pytest.raises(TypeError, match="cost must be True or False"):
        streamscope.instrument(GrowingModel(), cost=bad)


# --- exactly once, whatever streamscope is combined with ----------------------------------------------------------
Compose = Callable[[Model, Otel], Model]


def _both_modes(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    return streamscope.instrument(model, **otel.providers)


def _inside_instrumented_model(model: Model, otel: Otel) -> Model:
    settings = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    return InstrumentedModel(streamscope.instrument(model, **otel.providers), settings)


def _around_instrumented_model(model: Model, otel: Otel) -> Model:
    settings = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    return streamscope.instrument(InstrumentedModel(model, settings), **otel.providers)


def _process_wide_under_instrumented_model(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    settings = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    return InstrumentedModel(model, settings)


def _fallback_after_a_failure(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    return FallbackModel(GrowingModel("words-1", "acme-down"), model)


COMPOSITIONS: dict[str, Compose] = {
    "explicit_and_process_wide": _both_modes,
    "inside_InstrumentedModel": _inside_instrumented_model,
    "around_InstrumentedModel": _around_instrumented_model,
    "process_wide_under_InstrumentedModel": _process_wide_under_instrumented_model,
    "FallbackModel": _fallback_after_a_failure,
}


@pytest.fixture
def failing_acme(monkeypatch: pytest.MonkeyPatch) -> None:
    """`acme-down` models refuse every request, so a FallbackModel moves on to the next model."""
    original = GrowingModel.request_stream

    @asynccontextmanager
    async def request_stream(self: GrowingModel, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
        if self.system == "acme-down":
            raise ModelAPIError("words-1", "acme is down")
        async with original(self, *args, **kwargs) as stream:
            yield stream

    monkeypatch.setattr(GrowingModel, "request_stream", request_stream)


@pytest.mark.parametrize("composition", list(COMPOSITIONS))
@pytest.mark.usefixtures("failing_acme")
async def test_cost_is_counted_once_per_request(otel: Otel, composition: str) -> None:
    model = COMPOSITIONS[composition](GrowingModel(), otel)
    agent = Agent(model)
    async with agent.run_stream("count") as result:
        await result.get_output()
    response = result.all_messages()[-1]
    assert isinstance(response, ModelResponse)
    expected = float(priced(response))
    assert expected == float(price_of(usage_after(len(WORDS))))
    [(_, point)] = cost_points(otel)
    assert point.value == expected
    [(_, histogram)] = stream_cost_points(otel)
    assert (histogram.count, histogram.sum) == (1, expected)
    # Pydantic AI's own cost histogram, where its instrumentation is on, holds the same request once, by its name.
    own = otel.metrics().get("operation.cost", [])
    if "InstrumentedModel" in composition:
        assert [(p.count, p.sum) for _, p in own] == [(1, expected)]
    else:
        assert own == []


# --- the data Pydantic AI 2.0 and 2.68 price alike ----------------------------------------------------------------
USAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestUsage))  # this Pydantic AI release's


def test_pricing_matches_pydantic_ai_on_a_response_with_every_usage_field() -> None:
    usage = RequestUsage(input_tokens=5000, cache_read_tokens=1000, output_tokens=700)
    if "output_reasoning_tokens" in USAGE_FIELDS:
        usage = dataclasses.replace(usage, output_reasoning_tokens=300)
    response = ModelResponse(parts=[], usage=usage, model_name="gpt-4o", provider_name="openai")
    assert _cost.price_of_response(response) == response.cost().total_price


@pytest.mark.parametrize("mode", ["explicit", "process_wide"])
async def test_cost_is_counted_once_beside_the_agents_own_instrumentation(otel: Otel, mode: str) -> None:
    """The agent's `instrument` property (Pydantic AI's Instrumentation capability) prices the response on its own
    metric; streamscope counts the same request once on its own."""
    settings = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    if mode == "explicit":
        model: Model = streamscope.instrument(GrowingModel(), **otel.providers)
    else:
        streamscope.instrument(**otel.providers)
        model = GrowingModel()
    agent = Agent(model)
    agent.instrument = settings
    async with agent.run_stream("count") as result:
        await result.get_output()
    expected = float(price_of(usage_after(len(WORDS))))
    [(_, point)] = cost_points(otel)
    assert point.value == expected
    [(_, histogram)] = stream_cost_points(otel)
    assert (histogram.count, histogram.sum) == (1, expected)
    assert [(p.count, p.sum) for _, p in otel.metrics()["operation.cost"]] == [(1, expected)]


async def test_each_unknown_model_is_explained_once_up_to_a_bound(
    otel: Otel, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One explanation per (provider, URL, model), each naming its own model; past the bound on how many are
    remembered, no more (a process streaming from ever new model names must not grow without end)."""
    monkeypatch.setattr(_cost, "_MAX_KEYS", 2)
    caplog.set_level(logging.DEBUG, logger="streamscope")
    for name in ("words-1", "words-2", "words-1", "words-3", "words-2"):
        model = streamscope.instrument(GrowingModel(name, "acme"), **otel.providers)
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
    explained = [r.getMessage() for r in caplog.records if "no cost recorded" in r.getMessage()]
    assert [message.split("'")[1] for message in explained] == ["words-1", "words-2"]
    assert all(" of provider 'acme' (None): " in message for message in explained)


async def test_unknown_models_are_remembered_up_to_the_bound_and_a_remembered_one_stays_remembered(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, pricings: list[str | None]
) -> None:
    """An unknown model is not looked up again for a while -- for at most `_MAX_KEYS` models at a time: one past the
    bound is looked up each time; one already remembered is remembered again when its retry fails, bound or not."""
    monkeypatch.setattr(_cost, "_MAX_KEYS", 2)

    async def stream_from(name: str) -> None:
        model = streamscope.instrument(GrowingModel(name, "acme"), **otel.providers)
        async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass

    for name in ("words-1", "words-2", "words-3", "words-3", "words-1"):
        await stream_from(name)
    assert pricings == ["words-1", "words-2", "words-3", "words-3"]
    assert set(_cost._unpriced) == {("acme", None, "words-1"), ("acme", None, "words-2")}
    _cost._unpriced[("acme", None, "words-1")] = 0.0  # its retry time has come
    pricings.clear()
    for name in ("words-1", "words-1"):
        await stream_from(name)
    assert pricings == ["words-1"]  # retried once, failed, remembered again though the bound is reached


async def test_the_explanation_names_the_providers_url(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamscope")
    model = streamscope.instrument(make_model_class(WordStream)(), **otel.providers)
    async with model.request_stream(prompt(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    (message,) = [r.getMessage() for r in caplog.records if "no cost recorded" in r.getMessage()]
    assert message.startswith(
        "streamscope: no cost recorded for model 'words-1' of provider 'acme' (https://llm.acme.example:8443/v1): "
    ), message


def _usage_field(name: str) -> Any:
    return pytest.mark.skipif(
        name not in USAGE_FIELDS,
        reason=f"RequestUsage.{name} arrived after this Pydantic AI release",
    )


def _priced_response(**usage: Any) -> ModelResponse:
    """A response of a model genai-prices knows: 1,000 input and 100 output tokens of gpt-4o cost $0.0035."""
    return ModelResponse(
        parts=[],
        usage=RequestUsage(input_tokens=1000, output_tokens=100, **usage),
        model_name="gpt-4o",
        provider_name="openai",
    )


def test_a_known_model_is_priced_from_its_token_counts() -> None:
    assert _cost.price_of_response(_priced_response()) == Decimal("0.0035")


@_usage_field("cost")
def test_a_cost_the_provider_reported_is_taken_as_it_is() -> None:
    assert _cost.price_of_response(_priced_response(cost=Decimal("0.0123"))) == Decimal("0.0123")


@_usage_field("unmeasured_requests")
def test_a_response_that_omitted_its_usage_is_not_priced_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamscope")
    assert _cost.price_of_response(_priced_response(unmeasured_requests=1)) is None
    assert [r.getMessage() for r in caplog.records] == [
        "streamscope: no cost recorded for model 'gpt-4o' of provider 'openai' (None): the response omitted its usage"
    ]


@dataclass
class TokenCountsOnly:
    """A third party's usage type: token counts only, none of Pydantic AI's other fields (`unmeasured_requests`)."""

    input_tokens: int = 0
    output_tokens: int = 0


def test_a_usage_type_with_token_counts_only_is_priced_as_pydantic_ai_prices_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing says such a response omitted its usage: it is priced from its token counts where Pydantic AI prices
    them (2.0: $0.0035), and where Pydantic AI's pricing needs a field the type lacks (newer releases), it is not
    priced, saying what failed -- never "omitted its usage"."""
    response = ModelResponse(
        parts=[],
        usage=TokenCountsOnly(input_tokens=1000, output_tokens=100),  # pyright: ignore[reportArgumentType]
        model_name="gpt-4o",
        provider_name="openai",
    )
    try:
        pydantic_ais_price, failure = response.cost().total_price, None
    except AttributeError as missing:
        pydantic_ais_price, failure = None, f"pricing failed: AttributeError: {missing}"
    caplog.set_level(logging.DEBUG, logger="streamscope")
    assert _cost.price_of_response(response) == pydantic_ais_price
    assert pydantic_ais_price in (None, Decimal("0.0035"))
    said = "streamscope: no cost recorded for model 'gpt-4o' of provider 'openai' (None): "
    assert [r.getMessage() for r in caplog.records] == ([] if failure is None else [said + failure])


def test_a_pricing_failure_of_another_kind_is_not_priced_and_says_what_it_was(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ModelResponse) -> Any:
        raise RuntimeError("price table unreadable")

    monkeypatch.setattr(ModelResponse, "cost", broken)
    caplog.set_level(logging.DEBUG, logger="streamscope")
    assert _cost.price_of_response(_priced_response()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "streamscope: no cost recorded for model 'gpt-4o' of provider 'openai' (None): "
        "pricing failed: RuntimeError: price table unreadable"
    ]


def test_a_price_given_as_a_float_is_taken_exactly_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pricing that returns floats (not genai-prices' Decimals) is read as its decimal text: 0.1, not
    0.1000000000000000055511151231257827."""

    @dataclass
    class FloatPrice:
        total_price: float = 0.1

    monkeypatch.setattr(ModelResponse, "cost", lambda self: FloatPrice())  # pyright: ignore[reportUnknownLambdaType]
    assert _cost.price_of_response(_priced_response()) == Decimal("0.1")


def test_a_response_without_a_model_name_is_not_priced_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamscope")
    response = dataclasses.replace(_priced_response(), model_name=None)
    assert _cost.price_of_response(response) is None
    assert [r.getMessage() for r in caplog.records] == [
        "streamscope: no cost recorded for model None of provider 'openai' (None): the response has no model name"
    ]


def test_an_unknown_model_is_looked_up_again_exactly_when_its_retry_is_due(
    monkeypatch: pytest.MonkeyPatch, pricings: list[str | None]
) -> None:
    now = 1_000.0
    # the module's clock only: other threads (exporters, servers) keep the real one
    monkeypatch.setattr(_cost, "time", SimpleNamespace(monotonic=lambda: now))
    unknown = dataclasses.replace(_priced_response(), model_name="no-such-model-anywhere")
    assert _cost.price_of_response(unknown) is None
    now += _cost.UNKNOWN_RETRY_S - 0.001  # not yet due: not looked up
    assert _cost.price_of_response(unknown) is None
    now = 1_000.0 + _cost.UNKNOWN_RETRY_S  # due: looked up again
    assert _cost.price_of_response(unknown) is None
    assert pricings == ["no-such-model-anywhere"] * 2
