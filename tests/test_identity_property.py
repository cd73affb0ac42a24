"""Identity: instrumentation never changes a stream.

A property over random streams of text, thinking and tool-call deltas from the real `FunctionModel`, failing at a
random point or not, consumed in a random way (drained, broken out of, `aclose()`d, `cancel()`ed, `get()` mid-way,
the consumer raising): the instrumented stream yields exactly the same events, builds the same `ModelResponse`,
reports the same usage and raises the same exceptions as the raw one — both through `instrument(model)` and
process-wide — under random streamscope options (span-event mode, content capture with truncation and redaction,
usage flush interval, a tiny span event limit).

Tool-call ids are given explicitly, so two runs of one script are deterministic; timestamps are normalised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import StatusCode
from pydantic_ai.exceptions import ModelHTTPError, UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

import streamscope
from tests.conftest import Otel
from tests.helpers_reliability import (
    ACTIVE,
    END_REASON,
    EPOCH,
    EVENTS_TOTAL,
    OUTCOME,
    OtelDiagnostics,
    make_otel,
    metric_total,
    open_stream,
    shutdown_otel,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]


# --- the scripts ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    content: str


@dataclass(frozen=True)
class Thinking:
    index: int
    content: str | None
    signature: str | None


@dataclass(frozen=True)
class ToolDelta:
    index: int
    name: str | None
    args: str | None


Item = Text | Thinking | ToolDelta


class ProviderError(Exception):
    """A provider-specific failure (not a builtin)."""


FAILURES: dict[str, Callable[[str], Exception]] = {
    "ValueError": ValueError,
    "ProviderError": ProviderError,
    "ModelHTTPError": lambda message: ModelHTTPError(503, "scripted-model", {"error": message}),
    "UnexpectedModelBehavior": UnexpectedModelBehavior,
}


class ConsumerError(Exception):
    """Raised by the consuming code itself, inside the `async with` block."""


Action = Literal["drain", "break", "aclose", "cancel", "get_midway", "raise"]


@dataclass(frozen=True)
class Script:
    items: tuple[Item, ...]
    fail_at: int | None  # before yielding items[fail_at] (== len(items): after the last one); 0: while opening
    failure: str
    action: Action
    after: int  # the consumer acts after this many events


_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_items: st.SearchStrategy[Item] = st.one_of(
    st.builds(Text, _texts),
    st.builds(
        Thinking, st.integers(0, 2), st.one_of(_texts, _texts, _texts, st.none()), st.none() | st.just("signature")
    ),
    # Tool calls mostly on indices of their own; index 1 is shared with thinking parts, which Pydantic AI may reject.
    st.builds(
        ToolDelta,
        st.sampled_from([1, 10, 11, 12]),
        st.none() | st.sampled_from(["lookup", "search", "final_result"]),
        st.none() | st.sampled_from(['{"q": ', '"x"', "}", "{}", "not json", ""]),
    ),
)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    items = tuple(draw(st.lists(_items, min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=20)))
    fail_at = draw(st.integers(0, len(items))) if draw(st.booleans()) else None
    return Script(
        items=items,
        fail_at=fail_at,
        failure=draw(st.sampled_from(sorted(FAILURES))),
        action=draw(st.sampled_from(["drain", "break", "aclose", "cancel", "get_midway", "raise"])),
        after=draw(st.integers(0, 12)),
    )


def _redact(text: str) -> str:
    return text.upper().replace("X", "*")


@st.composite
def option_sets(draw: st.DrawFn) -> tuple[dict[str, Any], int | None]:
    """Random streamscope options, and a span event limit for the tracer provider (None: the default 128)."""
    options: dict[str, Any] = {
        "span_events": draw(st.sampled_from(["all", "coalesce", "none"])),
        "capture_content": draw(st.booleans()),
        "max_content_length": draw(st.integers(1, 16)),
        "usage_flush_interval": draw(st.sampled_from([0.0, 0.05])),
    }
    if draw(st.booleans()):
        options["redact"] = _redact
    return options, draw(st.none() | st.integers(0, 6))


def stream_function(script: Script, raised: list[BaseException]) -> Any:
    """The script as a `FunctionModel` stream function; each failure it raises is appended to `raised`."""

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[Any]:
        named: set[int] = set()
        for position, item in enumerate(script.items):
            if position == script.fail_at:
                raised.append(error := FAILURES[script.failure](f"scripted failure at {position}"))
                raise error
            match item:
                case Text(content):
                    yield content
                case Thinking(index, content, signature):
                    yield {index: DeltaThinkingPart(content=content, signature=signature)}
                case ToolDelta(index, name, args):
                    # The call id comes with the first delta of each call, so runs are deterministic.
                    call_id = None if index in named else f"call-{index}"
                    named.add(index)
                    yield {index: DeltaToolCall(name=name, json_args=args, tool_call_id=call_id)}
        if script.fail_at == len(script.items):
            raised.append(error := FAILURES[script.failure](f"scripted failure at {len(script.items)}"))
            raise error

    return stream


# --- observing one run ----------------------------------------------------------------------------------------------
@dataclass
class Observed:
    events: list[Any]
    midway: ModelResponse | None
    final: ModelResponse | None
    usage: Any
    cancelled: bool | None
    error: BaseException | None


def _normalised(response: ModelResponse | None) -> ModelResponse | None:
    return None if response is None else dataclasses.replace(response, timestamp=EPOCH)


def _usage(stream: Any) -> Any:
    usage = stream.usage
    return usage() if callable(usage) else usage


async def observe(model: Model, script: Script) -> Observed:
    observed = Observed([], None, None, None, None, None)
    try:
        async with open_stream(model) as stream:
            iterator = aiter(stream)
            if script.action == "aclose":
                for _ in range(script.after):
                    observed.events.append(await anext(iterator, None))
                    if observed.events[-1] is None:
                        observed.events.pop()
                        break
                await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
            else:
                async for event in iterator:
                    observed.events.append(event)
                    if len(observed.events) == script.after:
                        if script.action == "break":
                            break
                        if script.action == "cancel":
                            await stream.cancel()
                        elif script.action == "get_midway":
                            observed.midway = _normalised(stream.get())
                        elif script.action == "raise":
                            raise ConsumerError("the consumer gave up")
            observed.final = _normalised(stream.get())
            observed.usage = _usage(stream)
            observed.cancelled = stream.cancelled
    except Exception as error:
        observed.error = error
    return observed


def _exception_shape(error: BaseException | None) -> object:
    if error is None:
        return None
    return (
        type(error),
        str(error),
        error.args if not isinstance(error, ModelHTTPError) else (error.status_code, error.body),
        type(error.__cause__),
    )


def assert_same(raw: Observed, instrumented: Observed) -> None:
    assert instrumented.events == raw.events
    assert [type(e) for e in instrumented.events] == [type(e) for e in raw.events]
    assert instrumented.midway == raw.midway
    assert instrumented.final == raw.final
    assert instrumented.usage == raw.usage
    assert instrumented.cancelled == raw.cancelled
    assert _exception_shape(instrumented.error) == _exception_shape(raw.error)


def assert_one_honest_span(otel: Otel, observed: Observed, raised: list[BaseException]) -> None:
    """The instrumented run was really instrumented: one span, ended, counting what the consumer saw."""
    span = otel.one_stream_span()
    attributes = dict(span.attributes or {})
    assert attributes[EVENTS_TOTAL] == len(observed.events)
    # Only the provider's failure is the model's; the consumer's own exception interrupts the stream.
    consumer_failed = isinstance(observed.error, ConsumerError)
    failed = observed.error is not None and not consumer_failed
    assert (attributes[OUTCOME] == "error") is failed
    assert (attributes[END_REASON] == "error") is failed
    assert (span.status.status_code is StatusCode.ERROR) is failed
    if consumer_failed:
        assert (attributes[OUTCOME], attributes[END_REASON]) == ("interrupted", "consumer_error")
        assert "error.type" not in attributes
    if raised and observed.error is not None:
        # A provider failure reaches the consumer as the very object the provider raised.
        assert observed.error is raised[-1]
    assert metric_total(otel, ACTIVE) == 0


SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("mode", ["instrument(model)", "process-wide"])
@SETTINGS
@given(script=scripts(), options=option_sets())
async def test_instrumented_stream_is_identical_to_the_raw_stream(
    mode: str, script: Script, options: tuple[dict[str, Any], int | None]
) -> None:
    streamscope_options, max_events = options
    raw_raised: list[BaseException] = []
    raw = await observe(FunctionModel(stream_function=stream_function(script, raw_raised), model_name="m"), script)

    otel = make_otel(max_events=max_events)
    raised: list[BaseException] = []
    model: Model = FunctionModel(stream_function=stream_function(script, raised), model_name="m")
    with OtelDiagnostics() as diagnostics:
        try:
            if mode == "process-wide":
                streamscope.instrument(**otel.providers, **streamscope_options)
                try:
                    instrumented = await observe(model, script)
                finally:
                    streamscope.uninstrument()
            else:
                instrumented = await observe(
                    streamscope.instrument(model, **otel.providers, **streamscope_options), script
                )
            event(f"consumer: {script.action}")
            event(f"raised: {type(raw.error).__name__ if raw.error is not None else 'nothing'}")
            event(f"events seen: {'none' if not raw.events else '1-5' if len(raw.events) <= 5 else 'more'}")
            assert_same(raw, instrumented)
            assert_one_honest_span(otel, instrumented, raised)
            assert [type(e) for e in raised] == [type(e) for e in raw_raised]
        finally:
            shutdown_otel(otel)
    diagnostics.assert_clean()
