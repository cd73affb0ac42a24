"""Each fact streamscope decides composition from, tested where the guess it replaced went wrong.

- The abstract `Model.request_stream` is never wrapped: Pydantic AI's `is` check still tells a model without
  streaming from one with it (Pydantic AI's own `test_non_streaming_model_raises_a_clear_error` and
  `test_non_streaming_model_error_does_not_blame_a_capability`, which broke under process-wide mode).
- Classes are patched as they are created: models and streams defined after `instrument()`, in any order,
  across `uninstrument()`/`instrument()` cycles.
- Endings: Pydantic AI's request timeout while opening is an error with `error.type`; the consumer's own
  exception is not a model error, on `request_stream` and `Agent.run_stream` alike; unknown usage is left out.
- Labels join: for the same request, streamscope's `gen_ai.provider.name` is the one Pydantic AI puts on its
  metrics (google-gla, bedrock, mistral, xai, azure).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import anyio
import pydantic_ai
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic_ai import Agent
from pydantic_ai.exceptions import FallbackExceptionGroup, ModelAPIError, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, ModelResponseStreamEvent, TextPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, override_allow_model_requests
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

import streamscope
from tests.composition import MESSAGES, PROMPT, pydantic_ai_settings
from tests.conftest import Otel, sum_value
from tests.user_models import PlainWordStream, WordStream, make_model_class

pytestmark = pytest.mark.anyio

PYDANTIC_AI_VERSION = tuple(int(part) for part in pydantic_ai.__version__.split(".")[:2])


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- Pydantic AI's identity check on Model.request_stream -----------------------------------------------------------
class NonStreamingModel(Model):
    """A model without `request_stream` of its own, as Pydantic AI's tests define one."""

    @property
    def model_name(self) -> str:
        return "non-streaming"

    @property
    def system(self) -> str:
        return "test"

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        return ModelResponse(parts=[TextPart("hello")])


async def _streamed_run_error(model: Model) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever Pydantic AI raises, compared below
        async with Agent(model).run_stream(PROMPT) as result:
            await result.get_output()
    return type(raised.value), str(raised.value)


@pytest.mark.parametrize("defined", ["before instrument()", "after instrument()"])
async def test_non_streaming_model_still_raises_pydantic_ais_clear_error(otel: Otel, defined: str) -> None:
    """Under process-wide mode a model without streaming fails as it does without streamscope: with Pydantic AI's
    `UserError` where it has that guard (the abstract `Model.request_stream` is never wrapped)."""
    model_class: type[Model] = NonStreamingModel
    baseline = await _streamed_run_error(model_class())
    if PYDANTIC_AI_VERSION > (2, 0):
        assert baseline[0] is UserError
        assert "does not support streamed requests" in baseline[1]
    streamscope.instrument(**otel.providers)
    if defined == "after instrument()":

        class LaterNonStreamingModel(NonStreamingModel):
            pass

        model_class = LaterNonStreamingModel
    assert model_class.request_stream is Model.request_stream  # the abstract base is never wrapped
    error = await _streamed_run_error(model_class())
    assert error == (baseline[0], baseline[1].replace("NonStreamingModel", model_class.__name__))
    assert otel.stream_spans() == []
    # a non-streamed run is untouched
    assert (await Agent(model_class()).run(PROMPT)).output == "hello"


# --- classes created after instrument() --------------------------------------------------------------------------
async def test_stream_class_defined_after_instrument_iterated_directly(instrumented: Otel) -> None:
    """A `StreamedResponse` subclass with its own `__aiter__`, defined after `instrument()` and iterated without any
    `request_stream` (the safety net's case), is one span."""

    @dataclass
    class LateStream(WordStream):
        def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
            return super().__aiter__()

    assert hasattr(LateStream.__dict__["__aiter__"], "__wrapped__")  # patched as it was created
    stream = LateStream(ModelRequestParameters(), words=["user ", "words"])
    events = [event async for event in stream]
    span = instrumented.one_stream_span()
    assert attrs(span)["streamscope.stream.events.total"] == len(events) >= 3
    assert attrs(span)["gen_ai.provider.name"] == "acme"
    assert attrs(span)["streamscope.stream.outcome"] == "complete"


async def test_a_stream_iterated_directly_in_two_goes_is_recorded_whole(instrumented: Otel) -> None:
    """Iterated without any `request_stream`, first by one `aiter()` and then by another (as Pydantic AI itself
    does): the second gets the same instrumented iterator, so every event is on the one span."""
    stream = PlainWordStream(ModelRequestParameters(), words=["one ", "two ", "three"])
    first = await anext(aiter(stream))
    rest = [event async for event in stream]
    span = instrumented.one_stream_span()
    assert attrs(span)["streamscope.stream.events.total"] == 1 + len(rest) >= 4
    assert attrs(span)["streamscope.stream.outcome"] == "complete"
    assert first.index == 0  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.skipif(PYDANTIC_AI_VERSION <= (2, 0), reason="capabilities skipping requests came after Pydantic AI 2.0")
@pytest.mark.parametrize("path", ["run_stream", "run"])
async def test_a_request_a_capability_answers_itself_is_no_stream(instrumented: Otel, path: str) -> None:
    """A capability answering from its cache (SkipModelRequest): Pydantic AI streams the answer it was given, no
    model request was made, so there is no stream span (and nothing is counted)."""
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.exceptions import SkipModelRequest

    class Cached(AbstractCapability[None]):
        async def before_model_request(self, ctx: Any, request_context: Any) -> Any:
            raise SkipModelRequest(ModelResponse(parts=[TextPart("cached answer")]))

    capabilities: list[Any] = [Cached()]
    agent = Agent(FunctionModel(stream_function=two_chunks, model_name="fn"), capabilities=capabilities)
    if path == "run_stream":
        async with agent.run_stream(PROMPT) as result:
            assert await result.get_output() == "cached answer"
    else:
        assert (await agent.run(PROMPT)).output == "cached answer"
    assert instrumented.stream_spans() == []
    assert "streamscope.streams.finished" not in instrumented.metrics()


async def test_class_defined_while_instrumented_is_restored_and_patched_again(otel: Otel) -> None:
    streamscope.instrument(**otel.providers)
    model_class = make_model_class(WordStream, checks_policy=True)
    patched = model_class.__dict__["request_stream"]
    original = patched.__wrapped__
    streamscope.uninstrument()
    assert model_class.__dict__["request_stream"] is original
    assert "__init_subclass__" not in StreamedResponse.__dict__

    # uninstrumented: the denial is raised, nothing is recorded
    with override_allow_model_requests(False), pytest.raises(RuntimeError):
        async with model_class().request_stream(MESSAGES, None, ModelRequestParameters()):
            pass
    assert sum_value(otel.metrics().get("streamscope.policy.violations", [])) == 0

    streamscope.instrument(**otel.providers)
    assert hasattr(model_class.__dict__["request_stream"], "__wrapped__")
    for _ in range(2):
        with override_allow_model_requests(False), pytest.raises(RuntimeError):
            async with model_class().request_stream(MESSAGES, None, ModelRequestParameters()):
                pass
    with override_allow_model_requests(False), pytest.raises(RuntimeError):
        await Agent(model_class()).run(PROMPT)  # not streamed: `request` is a boundary too
    assert sum_value(otel.metrics()["streamscope.policy.violations"]) == 3
    assert len(otel.stream_spans()) == 2


async def test_model_instrumented_both_ways_records_each_denial_once(otel: Otel) -> None:
    streamscope.instrument(**otel.providers)
    model = streamscope.instrument(make_model_class(WordStream, checks_policy=True)(), **otel.providers)
    with override_allow_model_requests(False):
        for _ in range(3):
            with pytest.raises(RuntimeError):
                async with Agent(model).run_stream(PROMPT) as result:
                    await result.get_output()
        with pytest.raises(RuntimeError):
            await Agent(model).run(PROMPT)
    assert sum_value(otel.metrics()["streamscope.policy.violations"]) == 4
    assert len(otel.stream_spans()) == 3
    assert [e.name for s in otel.stream_spans() for e in s.events].count("streamscope.policy.violation") == 3


# --- endings -------------------------------------------------------------------------------------------------------
async def slow_to_answer(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    await asyncio.sleep(5)
    yield "too late"


@pytest.mark.skipif(PYDANTIC_AI_VERSION <= (2, 0), reason="request_timeout deadlines came after Pydantic AI 2.0")
@pytest.mark.parametrize("setting", ["request_timeout", "first_event_timeout"])
async def test_timeout_while_opening_is_an_error(otel: Otel, instrument: Any, setting: str) -> None:
    from pydantic_ai.exceptions import ModelRequestTimeout

    model = instrument(FunctionModel(stream_function=slow_to_answer, model_name="slow"))
    agent = Agent(model, model_settings=cast(ModelSettings, {setting: 0.05}))
    with pytest.raises(ModelRequestTimeout):
        async with agent.run_stream(PROMPT) as result:
            await result.get_output()
    span = otel.one_stream_span()
    assert attrs(span)["streamscope.stream.outcome"] == "error"
    assert attrs(span)["streamscope.stream.end_reason"] == "timeout"
    assert attrs(span)["error.type"] == "pydantic_ai.exceptions.ModelRequestTimeout"
    assert (span.status.status_code, span.status.description) == (
        StatusCode.ERROR,
        "ModelRequestTimeout: the request's deadline expired",
    )
    duration = otel.metrics()["gen_ai.client.operation.duration"]
    assert [a.get("error.type") for a, _ in duration] == ["pydantic_ai.exceptions.ModelRequestTimeout"]


async def test_cancellation_without_a_request_deadline_is_not_a_timeout(otel: Otel, instrument: Any) -> None:
    """A cancel scope of the caller's own (no Pydantic AI deadline set) interrupts the stream; it is no error."""
    model = instrument(FunctionModel(stream_function=slow_to_answer, model_name="slow"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05), model.request_stream(MESSAGES, None, ModelRequestParameters()):
            pass
    span = otel.one_stream_span()
    assert (attrs(span)["streamscope.stream.outcome"], attrs(span)["streamscope.stream.end_reason"]) == (
        "interrupted",
        "task_cancelled",
    )
    assert "error.type" not in attrs(span)


class ConsumerBugError(Exception):
    pass


async def two_chunks(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "one "
    yield "two"


@pytest.mark.parametrize("path", ["request_stream", "run_stream"])
async def test_consumer_exception_is_not_a_model_error(otel: Otel, instrument: Any, path: str) -> None:
    model = instrument(FunctionModel(stream_function=two_chunks, model_name="fn"))
    with pytest.raises(ConsumerBugError):
        if path == "request_stream":
            async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
                async for _ in stream:
                    raise ConsumerBugError
        else:
            async with Agent(model).run_stream(PROMPT) as result:
                async for _ in result.stream_text(delta=True, debounce_by=None):
                    raise ConsumerBugError
    span = otel.one_stream_span()
    assert attrs(span)["streamscope.stream.outcome"] == "interrupted"
    assert "error.type" not in attrs(span)
    assert span.status.status_code is StatusCode.UNSET
    finished = otel.metrics()["streamscope.streams.finished"]
    assert [(a["streamscope.stream.outcome"], p.value) for a, p in finished] == [("interrupted", 1)]


@dataclass
class UsagelessStream(WordStream):
    """A provider that reports no usage at all."""

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for word in self.words:
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event


async def test_unknown_usage_is_left_out_never_zero(otel: Otel, instrument: Any) -> None:
    model = instrument(make_model_class(UsagelessStream)())
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    span = otel.one_stream_span()
    assert attrs(span)["streamscope.stream.outcome"] == "complete"
    assert not [key for key in attrs(span) if key.startswith("gen_ai.usage.")]
    metrics = otel.metrics()
    assert "gen_ai.client.token.usage" not in metrics
    assert sum_value(metrics.get("streamscope.usage.input_tokens", [])) == 0


# --- labels ---------------------------------------------------------------------------------------------------------
PROVIDERS = ("google-gla", "bedrock", "mistral", "xai", "azure")


def provider_model(system: str) -> Model:
    """A model answering as Pydantic AI's `system` says (a FunctionModel under another provider's name)."""

    class ProviderModel(FunctionModel):
        @property
        def system(self) -> str:
            return system

    return ProviderModel(stream_function=two_chunks, model_name=f"{system}-model")


@pytest.mark.parametrize("system", PROVIDERS)
async def test_provider_labels_join_with_pydantic_ais(otel: Otel, instrument: Any, system: str) -> None:
    """Both libraries recording in one process label the same request with the same `gen_ai.provider.name`."""
    instrumented_agent = Agent(instrument(provider_model(system)))
    instrumented_agent.instrument = pydantic_ai_settings(_as_telemetry(otel))
    async with instrumented_agent.run_stream(PROMPT) as result:  # Pydantic AI records tokens and TTFC
        await result.get_output()
    async with Agent(instrument(provider_model(system))).run_stream(PROMPT) as result:  # streamscope does
        await result.get_output()

    labels: dict[tuple[str, str], set[Any]] = {}
    data = otel.metric_reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    value = dict(point.attributes or {}).get("gen_ai.provider.name")
                    if value is not None:
                        labels.setdefault((scope_metrics.scope.name, metric.name), set()).add(value)
    pydantic_ai_token_labels = labels[next(k for k in labels if k[0] != "streamscope" and "token" in k[1])]
    assert pydantic_ai_token_labels == {system}
    assert labels["streamscope", "gen_ai.client.token.usage"] == {system}
    assert labels["streamscope", "gen_ai.client.operation.duration"] == {system}
    assert {attrs(s)["gen_ai.provider.name"] for s in otel.stream_spans()} == {system}


def _as_telemetry(otel: Otel) -> Any:
    @dataclass
    class Providers:
        meter_provider: Any

    return Providers(otel.meter_provider)


# --- the caller's context -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["inside", "outside"])
async def test_callers_context_is_left_as_found_around_instrumented_model(otel: Otel, where: str) -> None:
    leaf = FunctionModel(stream_function=two_chunks, model_name="fn")
    settings = pydantic_ai_settings(_as_telemetry(otel))
    model = (
        streamscope.instrument(InstrumentedModel(leaf, settings), **otel.providers)
        if where == "inside"
        else InstrumentedModel(streamscope.instrument(leaf, **otel.providers), settings)
    )
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller") as caller:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
        assert trace.get_current_span() is caller
        with tracer.start_as_current_span("next") as after:
            pass
    assert after.parent is not None and after.parent.span_id == caller.get_span_context().span_id  # pyright: ignore[reportAttributeAccessIssue]
    assert trace.get_current_span() is trace.INVALID_SPAN


# --- sampling -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["always_off", "ratio"])
async def test_one_shared_tracer_provider_under_sampling_counts_every_request_once(
    otel: Otel, instrument: Any, sampler: str
) -> None:
    """The issue's case: streamscope and Pydantic AI on one tracer provider whose sampler drops (some) traces.
    Pydantic AI records its metrics for every request, sampled or not; streamscope leaves them to it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased
    from pydantic_ai.models.instrumented import InstrumentationSettings

    shared = TracerProvider(sampler=ALWAYS_OFF if sampler == "always_off" else TraceIdRatioBased(0.5))
    shared.add_span_processor(SimpleSpanProcessor(otel.spans_exporter))
    otel.tracer_provider = shared  # streamscope's spans go where Pydantic AI's go
    agent = Agent(instrument(FunctionModel(stream_function=two_chunks, model_name="fn")))
    agent.instrument = InstrumentationSettings(tracer_provider=shared, meter_provider=otel.meter_provider)
    runs = 20
    outputs: list[int] = []
    for _ in range(runs):
        async with agent.run_stream(PROMPT) as result:
            await result.get_output()
        outputs += [m.usage.output_tokens for m in result.new_messages() if isinstance(m, ModelResponse)]
    metrics = otel.metrics()
    token_points = metrics["gen_ai.client.token.usage"]
    for token_type in ("input", "output"):
        points = [p for a, p in token_points if a["gen_ai.token.type"] == token_type]
        assert sum(p.count for p in points) == runs
    assert sum(p.sum for a, p in token_points if a["gen_ai.token.type"] == "output") == sum(outputs)
    assert sum(p.count for _, p in metrics["gen_ai.client.operation.time_to_first_chunk"]) == runs
    assert sum(p.count for _, p in metrics["gen_ai.client.operation.duration"]) == runs  # streamscope's own


def token_point_counts(otel: Otel) -> list[tuple[str, int]]:
    """(token type, count) of each `gen_ai.client.token.usage` series, sorted: one request, one point per type."""
    points = otel.metrics()["gen_ai.client.token.usage"]
    return sorted((attributes["gen_ai.token.type"], point.count) for attributes, point in points)


class KeywordWrapper(WrapperModel):
    """A user's wrapper passing each request on by keyword (WrapperModel subclasses are not patched: the wrapped
    model's own layer is the one instrumenting)."""

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async with self.wrapped.request_stream(
            messages=messages,
            model_settings=model_settings,
            model_request_parameters=model_request_parameters,
            run_context=run_context,
        ) as stream:
            yield stream


async def test_a_request_passed_on_by_keyword_is_counted_once_beside_pydantic_ais_instrumentation(
    instrumented: Otel,
) -> None:
    """The run context arrives by keyword: streamscope still knows Pydantic AI's instrumentation records the
    request's tokens, and leaves them to it (one token point per type)."""
    agent = Agent(KeywordWrapper(FunctionModel(stream_function=two_chunks, model_name="fn")))
    agent.instrument = InstrumentationSettings(
        tracer_provider=instrumented.tracer_provider, meter_provider=instrumented.meter_provider
    )
    async with agent.run_stream(PROMPT) as result:
        await result.get_output()
    assert len(instrumented.stream_spans()) == 1
    assert token_point_counts(instrumented) == [("input", 1), ("output", 1)]


class ContextDroppingRouter(Model):
    """A third party's model that streams from another model (not a `WrapperModel`: no chain to follow), opening
    its stream without passing the run context on."""

    def __init__(self, inner: Model) -> None:
        super().__init__()
        self.inner = inner

    @property
    def model_name(self) -> str:
        return f"router:{self.inner.model_name}"

    @property
    def system(self) -> str:
        return self.inner.system

    async def request(self, *args: Any, **kwargs: Any) -> ModelResponse:
        raise NotImplementedError

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async with self.inner.request_stream(messages, model_settings, model_request_parameters) as stream:
            yield stream


async def test_a_layer_without_the_run_context_learns_from_the_layer_above_that_pydantic_ai_records_it(
    otel: Otel,
) -> None:
    """`instrument(router(instrument(model)))` in an agent run Pydantic AI instruments, the router not passing the
    run context on: the inner layer, which takes the request, cannot tell the run is instrumented; the outer one can
    and tells it. The tokens are left to Pydantic AI: one token point per type."""
    inner = streamscope.instrument(FunctionModel(stream_function=two_chunks, model_name="fn"), **otel.providers)
    model = streamscope.instrument(ContextDroppingRouter(inner), **otel.providers)
    agent = Agent(model)
    agent.instrument = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    async with agent.run_stream(PROMPT) as result:
        await result.get_output()
    assert [attrs(span)["gen_ai.request.model"] for span in otel.stream_spans()] == ["fn"]
    assert token_point_counts(otel) == [("input", 1), ("output", 1)]


async def stalls_after_one_chunk(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "one"
    await asyncio.sleep(5)
    yield "too late"


@pytest.mark.skipif(PYDANTIC_AI_VERSION <= (2, 0), reason="request_timeout deadlines came after Pydantic AI 2.0")
async def test_a_deadline_passed_on_by_keyword_still_makes_its_cancellation_a_timeout(instrumented: Otel) -> None:
    """The model settings arrive by keyword: streamscope still knows the request's deadline, so the cancellation
    it brings mid-stream ends the span as a timeout, not as the task's own cancellation."""
    from pydantic_ai.exceptions import ModelRequestTimeout

    model = KeywordWrapper(FunctionModel(stream_function=stalls_after_one_chunk, model_name="stalls"))
    agent = Agent(model, model_settings=cast(ModelSettings, {"request_timeout": 0.2}))
    with pytest.raises(ModelRequestTimeout):
        async with agent.run_stream(PROMPT) as result:
            async for _ in result.stream_text(delta=True):
                pass
    span = instrumented.one_stream_span()
    assert attrs(span)["streamscope.stream.end_reason"] == "timeout"


async def test_a_deadline_in_the_models_own_settings_makes_the_cancellation_at_it_a_timeout(
    otel: Otel, instrument: Any
) -> None:
    """The request carries no settings; the model's own `settings` set `request_timeout`, enforced (as Pydantic AI
    enforces it) by a cancel scope around the request: streamscope reads the model's settings, so the cancellation
    at that deadline mid-stream ends the stream as a timeout, not as the caller's own cancellation."""
    candidate = FunctionModel(
        stream_function=stalls_after_one_chunk,
        model_name="stalls",
        settings=cast(ModelSettings, {"request_timeout": 0.2}),
    )
    model = instrument(candidate)
    with anyio.move_on_after(0.2) as scope:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
            async for _ in stream:
                pass
    assert scope.cancelled_caught
    span = otel.one_stream_span()
    assert (attrs(span)["streamscope.stream.end_reason"], attrs(span)["error.type"]) == (
        "timeout",
        "pydantic_ai.exceptions.ModelRequestTimeout",
    )


async def test_a_chain_of_wrappers_that_loops_back_is_walked_once(otel: Otel) -> None:
    """A model whose `wrapped` leads back to its own wrapper (a user's delegation gone round): instrumenting it
    walks the chain once, and the stream is one span."""
    inner = FunctionModel(stream_function=two_chunks, model_name="fn")
    looping = WrapperModel(inner)
    inner.wrapped = looping  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]
    made: list[Model] = []
    # In a thread of its own, so that a walk going round forever fails this test instead of hanging the run.
    walker = threading.Thread(
        target=lambda: made.append(streamscope.instrument(looping, **otel.providers)), daemon=True
    )
    walker.start()
    walker.join(timeout=10)
    [model] = made
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    assert attrs(otel.one_stream_span())["streamscope.stream.outcome"] == "complete"


# --- FallbackModel, instrumented at several layers ------------------------------------------------------------------
async def failing_stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    if not messages:
        yield "never"
    raise ModelAPIError("bad", "boom")


def explicitly(model: Model, otel: Otel) -> Model:
    return streamscope.instrument(model, **otel.providers)


def function_model(name: str, *, fails: bool = False) -> FunctionModel:
    return FunctionModel(stream_function=failing_stream if fails else two_chunks, model_name=name)


def attempts(otel: Otel) -> list[tuple[str, str]]:
    """(request model, outcome) of each stream span, in the order the attempts started."""
    spans = sorted(otel.stream_spans(), key=lambda span: span.start_time or 0)
    ends = [span.end_time or 0 for span in spans]
    assert all(end <= (later.start_time or 0) for end, later in zip(ends, spans[1:], strict=False))  # one after another
    return [(attrs(span)["gen_ai.request.model"], attrs(span)["streamscope.stream.outcome"]) for span in spans]


async def one_output_token_point(otel: Otel, model: Model) -> None:
    async with Agent(model).run_stream(PROMPT) as result:
        assert await result.get_output() == "one two"
    metrics = otel.metrics()
    assert sum(p.count for a, p in metrics["gen_ai.client.token.usage"] if a["gen_ai.token.type"] == "output") == 1
    assert sum_value(metrics["streamscope.streams.active"]) == 0


@pytest.mark.parametrize("second", ["instrumented", "plain"])
@pytest.mark.parametrize("nesting", ["one FallbackModel", "inside another instrumented FallbackModel"])
async def test_fallback_of_instrumented_models_inside_an_instrumented_fallback(
    otel: Otel, second: str, nesting: str
) -> None:
    """`instrument(FallbackModel(instrument(a), b))`: the attempt a layer further in takes is its span; an attempt
    none takes (a plain `b`) is the layer's own, starting when the taken one failed. One span per attempt, however
    many instrumented FallbackModels wrap it."""
    good: Model = function_model("good")
    if second == "instrumented":
        good = explicitly(good, otel)
    model = explicitly(FallbackModel(explicitly(function_model("bad", fails=True), otel), good), otel)
    if nesting != "one FallbackModel":
        model = explicitly(FallbackModel(model), otel)
    await one_output_token_point(otel, model)
    # a plain `good` is instrumented by the layer around the FallbackModel that tried it: named after that one
    assert attempts(otel) == [
        ("bad", "error"),
        ("good" if second == "instrumented" else "fallback:bad,good", "complete"),
    ]
    assert {attrs(span).get("gen_ai.response.model") for span in otel.stream_spans()} == {None, "good"}


@pytest.mark.parametrize("then", ["instrumented", "plain"])
async def test_a_fallback_after_an_instrumented_fallback_failed_in_full(otel: Otel, then: str) -> None:
    """`instrument(FallbackModel(instrument(FallbackModel(instrument(a), instrument(b))), c))`, `a` and `b` failing:
    a span for each of the three attempts. A plain `c` is the outer layer's, starting when `b`'s attempt failed."""
    inner = FallbackModel(
        explicitly(function_model("bad-1", fails=True), otel), explicitly(function_model("bad-2", fails=True), otel)
    )
    last: Model = function_model("good")
    if then == "instrumented":
        last = explicitly(last, otel)
    outer = FallbackModel(explicitly(inner, otel), last, fallback_on=(ModelAPIError, FallbackExceptionGroup))
    await one_output_token_point(otel, explicitly(outer, otel))
    assert attempts(otel) == [
        ("bad-1", "error"),
        ("bad-2", "error"),
        ("good" if then == "instrumented" else "fallback:fallback:bad-1,bad-2,good", "complete"),
    ]


async def test_pydantic_ai_recording_a_fallbacks_requests_is_known_to_the_layers_inside_it(otel: Otel) -> None:
    """`instrument(InstrumentedModel(FallbackModel(instrument(a))))`: Pydantic AI records the token usage of the
    request `a`'s layer instruments (the stream its InstrumentedModel hands on is marked), and that layer does not
    record it again."""
    settings = pydantic_ai_settings(_as_telemetry(otel))
    inner = FallbackModel(explicitly(function_model("fn"), otel))
    model = explicitly(InstrumentedModel(inner, settings), otel)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    assert attempts(otel) == [("fn", "complete")]
    assert token_point_counts(otel) == [("input", 1), ("output", 1)]
