"""User-defined models and streams (subclasses of the real Pydantic AI bases), as third parties write them."""

from __future__ import annotations

import logging
import traceback
from abc import ABCMeta
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import pytest
import wrapt
from pydantic_ai import Agent, RunContext
from pydantic_ai.embeddings import EmbeddingModel
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ModelResponseStreamEvent, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

import streamscope
from streamscope._patching import answers_requests_itself
from tests.conftest import Instrument, Otel, sum_value
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

MESSAGES: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart("hi")])]


@dataclass
class MethodUsageStream(WordStream):
    """A stream whose `usage` is a method, as in Pydantic AI releases before 2.0."""

    def usage(self) -> RequestUsage:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        return self._usage


@dataclass
class StatedStream(WordStream):
    """A stream whose provider stamps the response's state as it ends (`suspended`: the model paused mid-turn),
    which `StreamedResponse.get()` reports as it is and a finished iteration cannot tell."""

    final_state: str = "suspended"

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        async for event in super()._get_event_iterator():
            yield event
        self.state = self.final_state  # pyright: ignore[reportAttributeAccessIssue]


@dataclass
class UnreadableStream(WordStream):
    """A stream whose `get()` or `cancelled` fails (`fails`: which one), as a third party's may."""

    fails: str = "get"

    def get(self) -> ModelResponse:
        if self.fails == "get":
            raise RuntimeError("get failed")
        return super().get()

    @property
    def cancelled(self) -> bool:
        if self.fails == "cancelled: no such attribute":  # as in a release without the property
            raise AttributeError("cancelled")
        if self.fails == "cancelled":
            raise RuntimeError("cancelled failed")
        return bool(self._cancelled)


@dataclass(frozen=True)
class NarrowUsage:
    """A usage of a release with fewer fields than `RequestUsage` now has (and no `details`)."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class InputOnlyUsage:
    """A usage type that counts input tokens only (no `output_tokens` field at all)."""

    input_tokens: int = 0


@dataclass
class ReportedUsageStream(WordStream):
    """A stream whose `usage` is whatever its provider reported, set by the test."""

    reported: Any = None

    @property
    def usage(self) -> Any:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.reported


class SlottedStream:
    """A third party's stream-like proxy with `__slots__` (no attribute dictionary to mark it by), delegating to a
    real stream."""

    __slots__ = ("_inner",)

    def __init__(self, inner: StreamedResponse) -> None:
        self._inner = inner

    def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
        return aiter(self._inner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # its own business, and the real stream's
            raise AttributeError(name)
        return getattr(self._inner, name)


STREAMED_RESPONSE_HAS_STATE = "state" in {f.name for f in fields(StreamedResponse)}
# Pydantic AI's own class hook on Model (None in releases without one), as imported: a broken uninstrument() in an
# earlier test of the process must not change what these tests expect.
PYDANTIC_AI_MODEL_CLASS_HOOK = Model.__dict__.get("__init_subclass__")


async def drain(model: Model) -> list[Any]:
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        return [event async for event in stream]


@pytest.mark.parametrize("stream_class", [WordStream, MethodUsageStream])
async def test_custom_model_wrapped_explicitly(otel: Otel, stream_class: type[WordStream]) -> None:
    model = streamscope.instrument(make_model_class(stream_class)(), **otel.providers)
    events = await drain(model)
    assert len(events) == 5  # start, final result, two deltas, end
    span = otel.one_stream_span()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.provider.name"] == "acme"
    assert attributes["server.address"] == "llm.acme.example"
    assert attributes["server.port"] == 8443
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert sum_value(otel.metrics()["streamscope.usage.output_tokens"], gen_ai__provider__name="acme") == 3


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://localhost/v1", {"server.address": "localhost", "server.port": 80}),
        ("https://[::1]/v1", {"server.address": "::1", "server.port": 443}),
        ("grpc://llm.acme.example/v1", {"server.address": "llm.acme.example"}),  # no default port known
        ("http://llm.acme.example:99999/v1", {}),  # a port out of range is no server to name
        ("not a url", {}),
        ("", {}),
    ],
)
async def test_server_attributes_come_from_the_base_url(otel: Otel, base_url: str, expected: dict[str, object]) -> None:
    for _ in range(2):  # the second stream takes the parsed URL from the cache: same attributes
        await drain(streamscope.instrument(make_model_class(WordStream, base_url)(), **otel.providers))
    for span in otel.stream_spans():
        attributes = dict(span.attributes or {})
        assert {key: attributes[key] for key in ("server.address", "server.port") if key in attributes} == expected


async def test_custom_model_class_defined_before_instrument_is_patched(otel: Otel) -> None:
    model_class = make_model_class(WordStream)
    streamscope.instrument(**otel.providers)
    try:
        await drain(model_class())
    finally:
        streamscope.uninstrument()
    span = otel.one_stream_span()
    assert span.name == "chat words-1"
    assert dict(span.attributes or {})["streamscope.stream.outcome"] == "complete"


async def test_custom_model_class_defined_after_instrument_is_patched_as_it_is_created(otel: Otel) -> None:
    streamscope.instrument(**otel.providers)
    try:
        model_class = make_model_class(WordStream)  # patched as it is created
        events = await drain(model_class())
    finally:
        streamscope.uninstrument()
    span = otel.one_stream_span()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.model"] == "words-1"
    assert attributes["gen_ai.provider.name"] == "acme"
    assert attributes["streamscope.stream.events.total"] == len(events)
    assert attributes["streamscope.stream.end_reason"] == "exhausted"


async def test_stream_iterated_outside_request_stream_is_instrumented_once(otel: Otel) -> None:
    streamscope.instrument(**otel.providers)
    try:
        stream = WordStream(ModelRequestParameters(), words=["a", "b"])
        first = [event async for event in stream]
        again = [event async for event in stream]  # the same, exhausted iterator
    finally:
        streamscope.uninstrument()
    assert len(first) == 4
    assert again == []
    (span,) = otel.stream_spans()
    # The stream stands in for the model it came from: its model, provider and server name the span and metrics.
    attributes = dict(span.attributes or {})
    assert span.name == "chat words-1"
    assert {key: attributes.get(key) for key in ("gen_ai.request.model", "gen_ai.provider.name")} == {
        "gen_ai.request.model": "words-1",
        "gen_ai.provider.name": "acme",
    }
    assert (attributes["server.address"], attributes["server.port"]) == ("llm.acme.example", 8443)
    # No Pydantic AI instrumentation saw it: streamscope records its token usage (one point, output tokens only).
    tokens = otel.metrics()["gen_ai.client.token.usage"]
    assert [(point_attributes["gen_ai.token.type"], point.sum) for point_attributes, point in tokens] == [("output", 2)]


@pytest.mark.skipif(not STREAMED_RESPONSE_HAS_STATE, reason="this Pydantic AI's StreamedResponse has no state")
@pytest.mark.parametrize("state", ["suspended", "incomplete"])
async def test_the_outcome_is_the_state_the_provider_stamped_on_an_exhausted_stream(otel: Otel, state: str) -> None:
    model = streamscope.instrument(make_model_class(StatedStream)(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, StatedStream)
        stream.final_state = state
        events = [event async for event in stream]
        assert stream.get().state == state
    assert len(events) == 5
    attributes = dict(otel.one_stream_span().attributes or {})
    assert (attributes["streamscope.stream.outcome"], attributes["streamscope.stream.end_reason"]) == (
        state,
        "exhausted",
    )
    finished = otel.metrics()["streamscope.streams.finished"]
    assert [(point_attributes["streamscope.stream.outcome"], point.value) for point_attributes, point in finished] == [
        (state, 1)
    ]


@pytest.mark.parametrize("fails", ["get", "cancelled", "cancelled: no such attribute"])
@pytest.mark.parametrize("ending", ["exhausted", "consumer_closed"])
async def test_a_stream_that_cannot_say_how_it_ended_gets_the_outcome_its_ending_implies(
    otel: Otel, internal_errors: list[logging.LogRecord], fails: str, ending: str
) -> None:
    """No response (`get()` failed) or no word on cancellation: an exhausted stream is complete, one closed early
    incomplete -- never interrupted or cancelled on a guess."""
    model = streamscope.instrument(make_model_class(UnreadableStream)(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, UnreadableStream)
        stream.fails = fails
        async for _ in stream:
            if ending == "consumer_closed":
                break
    attributes = dict(otel.one_stream_span().attributes or {})
    outcome = "complete" if ending == "exhausted" else "incomplete"
    assert (attributes["streamscope.stream.outcome"], attributes["streamscope.stream.end_reason"]) == (
        outcome,
        ending,
    )
    assert ("gen_ai.response.model" in attributes) is (fails != "get")  # read from the response get() builds
    expected = ["streamscope failed while building the response with get(); the stream is unaffected"]
    assert [record.getMessage() for record in internal_errors] == (expected if fails == "get" else [])


async def test_a_cancelled_stream_is_interrupted_even_when_it_cannot_build_its_response(
    otel: Otel, internal_errors: list[logging.LogRecord]
) -> None:
    model = streamscope.instrument(make_model_class(UnreadableStream)(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, UnreadableStream)
        async for _ in stream:
            await stream.cancel()
            break
    attributes = dict(otel.one_stream_span().attributes or {})
    assert (attributes["streamscope.stream.outcome"], attributes["streamscope.stream.end_reason"]) == (
        "interrupted",
        "cancel_called",
    )
    assert [record.getMessage() for record in internal_errors] == [
        "streamscope failed while building the response with get(); the stream is unaffected"
    ]


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        # Only details (say, reasoning tokens a provider counts apart): usage was reported, so the token counts
        # the conventions require are there, zero.
        (
            RequestUsage(details={"reasoning_tokens": 3}),
            {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0},
        ),
        (RequestUsage(input_tokens=5), {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 0}),
        (RequestUsage(), {}),  # nothing reported: no made-up zeros
        (NarrowUsage(), {}),  # the fields it lacks are not taken for reported ones
        (NarrowUsage(output_tokens=2), {"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 2}),
        (
            RequestUsage(input_tokens=1, output_tokens=1),
            {"gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1},
        ),
        (InputOnlyUsage(input_tokens=3), {"gen_ai.usage.input_tokens": 3}),  # no field, no attribute
    ],
    ids=["details only", "input only", "none", "narrow none", "narrow output", "one each", "no output field"],
)
async def test_token_attributes_and_points_are_there_exactly_when_the_provider_reported_usage(
    otel: Otel, reported: Any, expected: dict[str, int]
) -> None:
    model = streamscope.instrument(make_model_class(ReportedUsageStream)(), **otel.providers)
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        assert isinstance(stream, ReportedUsageStream)
        stream.reported = reported
        async for _ in stream:
            pass
    attributes = dict(otel.one_stream_span().attributes or {})
    assert {key: value for key, value in attributes.items() if key.startswith("gen_ai.usage.")} == expected
    # The token histogram: one point per type with tokens (as Pydantic AI records it), none for a type with none.
    points = otel.metrics().get("gen_ai.client.token.usage", [])
    recorded = {point_attributes["gen_ai.token.type"]: (point.count, point.sum) for point_attributes, point in points}
    assert recorded == {
        key.rsplit(".", 1)[1].removesuffix("_tokens"): (1, value) for key, value in expected.items() if value
    }


async def test_a_stream_that_cannot_be_marked_is_still_instrumented_once(otel: Otel) -> None:
    word_model = make_model_class(WordStream)

    class SlottedModel(word_model):  # type: ignore[misc,valid-type]
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any]:
            yield SlottedStream(WordStream(ModelRequestParameters(), words=["one", " two"]))

    model = SlottedModel()  # pyright: ignore[reportAbstractUsage]  # word_model implements them: a type[Model] here
    events = await drain(streamscope.instrument(model, **otel.providers))
    assert len(events) == 4
    attributes = dict(otel.one_stream_span().attributes or {})
    assert (attributes["streamscope.stream.outcome"], attributes["streamscope.stream.events.total"]) == ("complete", 4)
    assert attributes["gen_ai.usage.output_tokens"] == 2


class Sealed(ABCMeta):
    """A metaclass whose classes' methods cannot be replaced once defined (as some plugin frameworks seal them),
    while the class is `_sealed` (the test unseals the class it made when done, so that later tests can instrument
    it: it outlives the test until it is collected)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if cls.__dict__.get("_sealed") and callable(cls.__dict__.get(name)):
            raise TypeError(f"{cls.__name__}.{name} is sealed")
        super().__setattr__(name, value)


@pytest.mark.parametrize("created", ["before instrument()", "after instrument()"])
async def test_a_stream_class_that_cannot_be_patched_is_reported_and_its_streams_still_instrumented(
    otel: Otel, internal_errors: list[logging.LogRecord], created: str
) -> None:
    """Process-wide instrumentation meeting a stream class that refuses to be patched (at `instrument()`, or when
    the class is created later) leaves it as it is: streamscope says which class it could not patch, everything
    else is instrumented, and its streams, opened by a model's `request_stream`, are instrumented there."""
    if created == "after instrument()":
        streamscope.instrument(**otel.providers)

    class SealedStream(WordStream, metaclass=Sealed):
        _sealed = True

        def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
            return super().__aiter__()

    try:
        if created == "before instrument()":
            streamscope.instrument(**otel.providers)
        [record] = internal_errors
        expected = f"streamscope failed while patching {SealedStream.__qualname__}; the stream is unaffected"
        assert record.getMessage() == expected
        assert record.exc_info is not None
        assert str(record.exc_info[1]) == "SealedStream.__aiter__ is sealed"
        model = make_model_class(SealedStream)()
        async with model.request_stream(
            [ModelRequest(parts=[UserPromptPart("hi")])], None, ModelRequestParameters()
        ) as stream:
            events = [event async for event in stream]
        assert len(events) == 5  # start, final result, two deltas, end
        span = otel.one_stream_span()
        assert dict(span.attributes or {})["streamscope.stream.events.total"] == len(events)
    finally:
        SealedStream._sealed = False


async def test_the_model_receives_exactly_what_the_agent_asked(otel: Otel, instrument: Instrument) -> None:
    """Instrumented, the model's `request_stream` gets the very messages, settings, parameters and run context the
    agent passed (its temperature, its tools, its run), as it would uninstrumented."""
    received: list[tuple[Any, ...]] = []

    word_model: Any = make_model_class(WordStream)

    class RecordingModel(word_model):
        def request_stream(self, *args: Any, **kwargs: Any) -> Any:
            received.append((args, kwargs))
            return super().request_stream(*args, **kwargs)

    settings: ModelSettings = {"temperature": 0.25, "max_tokens": 64}
    agent = Agent(instrument(RecordingModel()), model_settings=settings)
    async with agent.run_stream("hi") as result:
        await result.get_output()
    [(args, kwargs)] = received
    messages, model_settings, parameters, *rest = (*args, *kwargs.values())
    assert [m.parts[0].content for m in messages if isinstance(m, ModelRequest)] == ["hi"]  # pyright: ignore[reportAttributeAccessIssue]
    assert model_settings is not None
    assert {k: model_settings[k] for k in settings} == settings  # pyright: ignore[reportUnknownArgumentType]
    assert isinstance(parameters, ModelRequestParameters)
    [run_context] = rest
    assert isinstance(run_context, RunContext)
    assert run_context.prompt == "hi"
    assert len(otel.stream_spans()) == 1


def _every_subclass(cls: type[Any]) -> set[type[Any]]:
    found: set[type[Any]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_every_subclass(sub)}
    return found


def test_every_model_class_is_patched_also_past_one_reached_twice(otel: Otel) -> None:
    """A model class with two model bases (diamond inheritance) is reached twice when the classes are walked:
    the walk goes on past it, and every class answering requests itself is patched."""
    word_model: Any = make_model_class(WordStream)

    class Left(word_model):
        pass

    class Right(word_model):
        pass

    class Both(Left, Right):
        def request_stream(self, *args: Any, **kwargs: Any) -> Any:
            return super().request_stream(*args, **kwargs)

    streamscope.instrument(**otel.providers)
    own = [cls for cls in _every_subclass(Model) if "request_stream" in cls.__dict__ and answers_requests_itself(cls)]
    assert Both in own
    assert {FunctionModel, OpenAIChatModel, TestModel} <= set(own)  # Pydantic AI's own models too
    unpatched = [cls for cls in own if not isinstance(cls.__dict__["request_stream"], wrapt.FunctionWrapper)]
    assert unpatched == []


def _model_class_with_its_own_stream() -> type[Model]:
    word_model: Any = make_model_class(WordStream)

    class Made(word_model):
        def request_stream(self, *args: Any, **kwargs: Any) -> Any:
            return super().request_stream(*args, **kwargs)

    return Made


def test_a_model_class_made_while_instrumented_is_set_up_by_pydantic_ai_as_without(otel: Otel) -> None:
    """Pydantic AI sets up each model class as it is created (its own `__init_subclass__`, which may wrap the
    class's `request_stream`); streamscope's hook runs it unchanged before patching, and `uninstrument()` gives
    Pydantic AI back its very hook."""
    hook = PYDANTIC_AI_MODEL_CLASS_HOOK
    assert Model.__dict__.get("__init_subclass__") is hook
    plain = _model_class_with_its_own_stream().__dict__["request_stream"]
    streamscope.instrument(**otel.providers)
    made = _model_class_with_its_own_stream().__dict__["request_stream"]
    assert isinstance(made, wrapt.FunctionWrapper)
    assert made.__wrapped__.__code__ is plain.__code__  # what Pydantic AI left there, the same as without
    streamscope.uninstrument()
    assert Model.__dict__.get("__init_subclass__") is hook


async def test_a_slots_dataclass_stream_made_while_instrumented_is_patched_once_and_restored(otel: Otel) -> None:
    """`@dataclass(slots=True)` makes a second class from the first one's namespace, which already holds
    streamscope's wrapper: the second class keeps it (not wrapped again), its streams are one span each, and
    `uninstrument()` gives both classes back the function the class statement defined."""
    streamscope.instrument(**otel.providers)

    @dataclass(slots=True)
    class SlotStream(WordStream):
        def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
            return WordStream.__aiter__(self)  # zero-argument super() does not work in slots dataclasses

    defined = SlotStream.__dict__["__aiter__"].__wrapped__
    assert not isinstance(defined, wrapt.FunctionWrapper)
    events = [event async for event in SlotStream(ModelRequestParameters(), words=["a ", "b"])]
    assert dict(otel.one_stream_span().attributes or {})["streamscope.stream.events.total"] == len(events)
    streamscope.uninstrument()
    assert SlotStream.__dict__["__aiter__"] is defined


async def test_a_slots_dataclass_model_made_while_instrumented_gets_each_method_back(otel: Otel) -> None:
    """The second class `@dataclass(slots=True)` makes holds three wrapped methods: `uninstrument()` gives each
    back the function the class statement defined. (Newer releases' class hook on Model wraps `request_stream`
    again, so that two request methods are needed for two wrappers carried over in every release.)"""
    base = make_model_class(WordStream)
    streamscope.instrument(**otel.providers)

    @dataclass(slots=True)
    class SlotModel(base):  # type: ignore[misc,valid-type]
        async def request(self, *args: Any, **kwargs: Any) -> ModelResponse:
            return await base.request(self, *args, **kwargs)

        async def count_tokens(self, *args: Any, **kwargs: Any) -> Any:
            return await base.count_tokens(self, *args, **kwargs)

        def request_stream(self, *args: Any, **kwargs: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
            return base.request_stream(self, *args, **kwargs)

    defined = {name: SlotModel.__dict__[name].__wrapped__ for name in ("request", "count_tokens", "request_stream")}
    assert not any(isinstance(method, wrapt.FunctionWrapper) for method in defined.values())
    streamscope.uninstrument()
    for name, method in defined.items():
        assert SlotModel.__dict__[name] is method, name  # (a wrapper would compare equal to it)


async def test_a_slots_dataclass_embedding_model_made_while_instrumented_gets_each_method_back(otel: Otel) -> None:
    """The same for an embedding model, whose request methods no release's class hook wraps again: the second class
    holds streamscope's two wrappers, and `uninstrument()` gives each back the function the class defined."""
    streamscope.instrument(**otel.providers)

    @dataclass(slots=True)
    class SlotEmbeddingModel(EmbeddingModel):
        @property
        def model_name(self) -> str:
            return "embed-1"

        @property
        def system(self) -> str:
            return "acme"

        async def embed(self, *args: Any, **kwargs: Any) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
            raise NotImplementedError

        async def count_tokens(self, *args: Any, **kwargs: Any) -> int:  # pyright: ignore[reportIncompatibleMethodOverride]
            raise NotImplementedError

    wrapped = {name: SlotEmbeddingModel.__dict__[name] for name in ("embed", "count_tokens")}
    assert all(isinstance(method, wrapt.FunctionWrapper) for method in wrapped.values())
    defined = {name: method.__wrapped__ for name, method in wrapped.items()}
    assert not any(isinstance(method, wrapt.FunctionWrapper) for method in defined.values())  # wrapped once
    streamscope.uninstrument()
    for name, method in defined.items():
        assert SlotEmbeddingModel.__dict__[name] is method, name


class Registered:
    """A third party's mixin registering each subclass, the way plugin registries do (`__init_subclass__`)."""

    subclasses: list[type[Any]] = []  # noqa: RUF012 - the registry itself

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Registered.subclasses.append(cls)


def test_a_mixins_class_hook_after_streamed_response_still_runs_while_instrumented(otel: Otel) -> None:
    """streamscope's class-creation hook on StreamedResponse passes on to the next hook in the class's order, so a
    mixin listed after the stream base still sees each class, as without streamscope."""
    streamscope.instrument(**otel.providers)

    class RegisteredStream(WordStream, Registered):
        pass

    assert Registered.subclasses[-1] is RegisteredStream


def test_a_model_class_made_while_instrumented_is_what_pydantic_ai_makes_of_it(otel: Otel) -> None:
    """Pydantic AI's own class hook on Model (where a release has one) still runs for a model class created while
    streamscope's hook is installed: the class gets the same members as one created before instrument()."""
    before = make_model_class(WordStream)
    pydantic_ai_has_a_hook = PYDANTIC_AI_MODEL_CLASS_HOOK is not None
    streamscope.instrument(**otel.providers)
    after = make_model_class(WordStream)
    assert set(after.__dict__) == set(before.__dict__)
    for name in ("__eq__", "__repr__"):  # what the hook of releases that have one sets
        assert (name in after.__dict__) == pydantic_ai_has_a_hook, name


class CallerAbortError(Exception):
    """What the caller raises inside `async with model.request_stream(...)`."""


async def test_the_models_own_context_manager_sees_the_callers_exception_whole(
    otel: Otel, instrument: Instrument
) -> None:
    """A model's `request_stream` that cleans up on an error (closing a connection, logging) gets the caller's
    exception as it would without streamscope: the exception itself, with the caller's frames in its traceback."""
    seen: list[BaseException] = []
    word_model = make_model_class(WordStream)

    class ObservingModel(word_model):  # type: ignore[misc,valid-type]
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any]:
            try:
                async with super().request_stream(*args, **kwargs) as stream:
                    yield stream
            except CallerAbortError as error:
                seen.append(error)
                raise

    model = instrument(ObservingModel())  # pyright: ignore[reportAbstractUsage]
    with pytest.raises(CallerAbortError) as raised:
        async with model.request_stream(MESSAGES, None, ModelRequestParameters()):
            raise CallerAbortError("enough")
    assert seen == [raised.value]
    frames = [frame.name for frame in traceback.extract_tb(seen[0].__traceback__)]
    assert "test_the_models_own_context_manager_sees_the_callers_exception_whole" in frames
    assert dict(otel.one_stream_span().attributes or {})["streamscope.stream.end_reason"] == "consumer_error"


async def test_a_model_without_a_name_streams_under_the_bare_operation_name(otel: Otel, instrument: Instrument) -> None:
    """The conventions' span name is "{operation} {request model}", or the operation alone without a model."""
    word_model = make_model_class(WordStream)

    class NamelessModel(word_model):  # type: ignore[misc,valid-type]
        @property
        def model_name(self) -> str:
            return ""

    model = instrument(NamelessModel())  # pyright: ignore[reportAbstractUsage]
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    span = otel.one_stream_span()
    assert span.name == "chat"
    assert "gen_ai.request.model" not in dict(span.attributes or {})


@pytest.mark.parametrize(
    ("attribute", "value", "left_out"),
    [
        ("model_name", 7, {"gen_ai.request.model"}),
        ("system", ("acme",), {"gen_ai.provider.name"}),
        ("base_url", urlsplit("https://llm.acme.example:8443/v1"), {"server.address", "server.port"}),
    ],
    ids=["name", "system", "base_url"],
)
async def test_a_model_attribute_that_is_not_a_string_is_left_out(
    otel: Otel,
    instrument: Instrument,
    internal_errors: list[logging.LogRecord],
    attribute: str,
    value: Any,
    left_out: set[str],
) -> None:
    """Pydantic AI types a model's name, system and base URL as strings. A third party's model returning something
    else (its base URL already parsed, say) streams as before, without that attribute: no
    attribute of another type, no failure of streamscope's. (The model's profile is given, with its context window:
    otherwise the newest Pydantic AI looks that up by these three and fails first.)"""
    word_model = make_model_class(WordStream)
    odd_model = type("OddModel", (word_model,), {attribute: property(lambda self: value)})
    model = instrument(odd_model(profile={"context_window": 8_000}))
    async with model.request_stream(MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    span = otel.one_stream_span()
    described = {
        "gen_ai.request.model": "words-1",
        "gen_ai.provider.name": "acme",
        "server.address": "llm.acme.example",
        "server.port": 8443,
    }
    attributes = dict(span.attributes or {})
    assert {key: attributes[key] for key in described if key in attributes} == {
        key: described[key] for key in described.keys() - left_out
    }
    assert span.name == ("chat" if attribute == "model_name" else "chat words-1")
    assert internal_errors == []


class UsagelessProxy:
    """A third party's stream-like proxy that hands out the events and the response, and no `usage`."""

    def __init__(self, inner: StreamedResponse) -> None:
        self._inner = inner

    def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
        return aiter(self._inner)

    def get(self) -> ModelResponse:
        return self._inner.get()


async def test_a_stream_like_object_without_usage_is_recorded_without_token_counts(otel: Otel) -> None:
    word_model = make_model_class(WordStream)

    class ProxyModel(word_model):  # type: ignore[misc,valid-type]
        @asynccontextmanager
        async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any]:
            yield UsagelessProxy(WordStream(ModelRequestParameters(), words=["one", " two"]))

    events = await drain(streamscope.instrument(ProxyModel(), **otel.providers))  # pyright: ignore[reportAbstractUsage]
    attributes = dict(otel.one_stream_span().attributes or {})
    assert attributes["streamscope.stream.events.total"] == len(events) > 0
    assert not [key for key in attributes if key.startswith("gen_ai.usage.")]
