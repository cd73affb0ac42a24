"""The attributes of a stream event's span event: exact sets, and the text-delta fast path equal to the general one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic_ai.messages import (
    FinalResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)

from streamscope._events import add_content, captured_content, describe, event_kind
from streamscope._options import Options, build_options


@dataclass(repr=False)
class _PartDeltaEventSubclass(PartDeltaEvent):
    """Not `PartDeltaEvent` itself: described by the general path only."""


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            PartDeltaEvent(index=2, delta=TextPartDelta(content_delta="Hello")),
            {"streamscope.part.index": 2, "streamscope.delta.kind": "text", "streamscope.content.length": 5},
        ),
        (
            PartDeltaEvent(index=0, delta=TextPartDelta(content_delta="")),
            {"streamscope.part.index": 0, "streamscope.delta.kind": "text", "streamscope.content.length": 0},
        ),
        (
            PartDeltaEvent(index=1, delta=ThinkingPartDelta(content_delta="hmm")),
            {"streamscope.part.index": 1, "streamscope.delta.kind": "thinking", "streamscope.content.length": 3},
        ),
        (
            PartDeltaEvent(index=3, delta=ToolCallPartDelta(tool_name_delta="lookup", args_delta='{"q"')),
            {
                "streamscope.part.index": 3,
                "streamscope.delta.kind": "tool_call",
                "gen_ai.tool.name": "lookup",
                "streamscope.content.length": 4,
            },
        ),
        (
            FinalResultEvent(tool_name="final_result", tool_call_id="call-1"),
            {"gen_ai.tool.name": "final_result", "gen_ai.tool.call.id": "call-1"},
        ),
        (FinalResultEvent(tool_name=None, tool_call_id=None), {}),
        (
            PartStartEvent(index=0, part=TextPart(content="Hi")),
            {"streamscope.part.index": 0, "streamscope.part.kind": "text", "streamscope.content.length": 2},
        ),
        (
            PartStartEvent(index=4, part=ToolCallPart(tool_name="lookup", args={"q": 1}, tool_call_id="c1")),
            {
                "streamscope.part.index": 4,
                "streamscope.part.kind": "tool-call",
                "gen_ai.tool.name": "lookup",
                "streamscope.content.length": 8,
            },
        ),
    ],
)
def test_span_event_attributes_are_exactly_the_described_ones(event: Any, expected: dict[str, Any]) -> None:
    assert describe(event) == expected


@dataclass
class _OwnPart:
    """A part of a stream's own kind: no `part_kind`."""

    tool_name: str = "lookup"


@dataclass
class _OwnDelta:
    """A delta of a stream's own kind: no `part_delta_kind`."""

    tool_name_delta: str = "up"


@dataclass
class _OwnEvent:
    index: int
    part: Any = None
    delta: Any = None
    tool_name: str | None = None  # read only from an event with neither a part nor a delta


@dataclass
class _IndexOnlyEvent:
    index: int


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_IndexOnlyEvent(7), {"streamscope.part.index": 7}),
        (_OwnEvent(1, part=_OwnPart()), {"streamscope.part.index": 1, "gen_ai.tool.name": "lookup"}),
        (_OwnEvent(2, delta=_OwnDelta()), {"streamscope.part.index": 2, "gen_ai.tool.name": "up"}),
        (_OwnEvent(3, part=_OwnPart(), tool_name="other"), {"streamscope.part.index": 3, "gen_ai.tool.name": "lookup"}),
        (_OwnEvent(4, delta=_OwnDelta(), tool_name="other"), {"streamscope.part.index": 4, "gen_ai.tool.name": "up"}),
        (_OwnEvent(5, tool_name="other"), {"streamscope.part.index": 5, "gen_ai.tool.name": "other"}),
    ],
)
def test_events_of_a_streams_own_kinds_are_described_by_what_they_have(event: Any, expected: dict[str, Any]) -> None:
    assert describe(event) == expected


@pytest.mark.parametrize("text", ["Hello", "", "naïve ✓"])
def test_the_text_delta_fast_path_describes_as_the_general_path_does(text: str) -> None:
    fast = describe(PartDeltaEvent(index=7, delta=TextPartDelta(content_delta=text)))
    general = describe(_PartDeltaEventSubclass(index=7, delta=TextPartDelta(content_delta=text)))
    assert fast == general
    assert list(fast) == list(general)  # the same order of attributes, too


# --- captured content: redaction, then truncation, exactly at the limit -----------------------------------------
def _options(**kwargs: Any) -> Options:
    return build_options(capture_content="span_only", **kwargs)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abcd", 4, ("abcd", False)), ("abcde", 4, ("abcd", True)), ("a", 1, ("a", False)), ("ab", 1, ("a", True))],
)
def test_content_is_truncated_only_beyond_the_limit(text: str, limit: int, expected: tuple[str, bool]) -> None:
    assert captured_content(text, _options(max_content_length=limit)) == expected


def test_redaction_runs_before_truncation() -> None:
    assert captured_content("secret: 42", _options(redact=lambda t: t.replace("42", "**"), max_content_length=9)) == (
        "secret: *",
        True,
    )


def test_a_failing_redaction_hook_drops_the_content_and_says_why(internal_errors: list[logging.LogRecord]) -> None:
    def leaky(text: str) -> str:
        raise KeyError(text)  # its message would carry the very content

    assert captured_content("the secret", _options(redact=leaky)) is None
    (record,) = internal_errors
    assert (record.levelno, record.getMessage()) == (
        logging.WARNING,
        "streamscope's redaction hook raised KeyError; the content was dropped",
    )
    assert record.exc_info is None and "the secret" not in record.getMessage()


def test_a_redaction_hook_returning_no_str_drops_the_content_and_says_why(
    internal_errors: list[logging.LogRecord],
) -> None:
    assert captured_content("text", _options(redact=len)) is None  # pyright: ignore[reportArgumentType]
    (record,) = internal_errors
    assert record.getMessage() == "streamscope's redaction hook returned int, not a str; the content was dropped"


def test_add_content_says_whether_it_added_any(internal_errors: list[logging.LogRecord]) -> None:
    options = _options(redact=lambda t: 1 / 0)  # pyright: ignore[reportArgumentType, reportUnknownLambdaType]
    text_delta = PartDeltaEvent(index=0, delta=TextPartDelta(content_delta="hi"))
    attributes: dict[str, Any] = {}
    assert add_content(attributes, text_delta, options) is False  # the hook failed: nothing captured
    assert attributes == {}
    assert add_content(attributes, FinalResultEvent(tool_name=None, tool_call_id=None), _options()) is False
    assert attributes == {}
    assert add_content(attributes, text_delta, _options(max_content_length=1)) is True
    assert attributes == {"streamscope.content": "h", "streamscope.content.truncated": True}
    assert len(internal_errors) == 1


def _circular() -> dict[str, Any]:
    arguments: dict[str, Any] = {"q": 1}
    arguments["self"] = arguments
    return arguments


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "Zürich"}, '{"city": "Zürich"}'),  # JSON as the model wrote it: no \u escapes
        ({"when": datetime(2026, 12, 1, tzinfo=UTC)}, '{"when": "2026-12-01 00:00:00+00:00"}'),  # not JSON: its str
        (_circular(), "{'q': 1, 'self': {...}}"),  # no JSON at all: Python's own text of it
    ],
    ids=["non-ascii", "datetime", "circular"],
)
def test_tool_arguments_given_as_a_dict_are_captured_as_json_text(arguments: dict[str, Any], expected: str) -> None:
    attributes: dict[str, Any] = {}
    part = ToolCallPart(tool_name="lookup", args=arguments, tool_call_id="c1")
    assert add_content(attributes, PartStartEvent(index=0, part=part), _options()) is True
    assert attributes == {"streamscope.content": expected}


def test_an_events_kind_is_its_discriminator_or_else_its_class_name() -> None:
    assert [event_kind(cls) for cls in (PartStartEvent, PartDeltaEvent, FinalResultEvent)] == [
        "part_start",
        "part_delta",
        "final_result",
    ]
    assert event_kind(_IndexOnlyEvent) == "_IndexOnlyEvent"  # a stream's own event class, no discriminator
