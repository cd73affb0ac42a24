"""The attributes of a stream event's span event: exact sets, and the text-delta fast path equal to the general one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic_ai.messages import (
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ThinkingPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)

from streamscope._events import describe


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


@pytest.mark.parametrize("text", ["Hello", "", "naïve ✓"])
def test_the_text_delta_fast_path_describes_as_the_general_path_does(text: str) -> None:
    fast = describe(PartDeltaEvent(index=7, delta=TextPartDelta(content_delta=text)))
    general = describe(_PartDeltaEventSubclass(index=7, delta=TextPartDelta(content_delta=text)))
    assert fast == general
    assert list(fast) == list(general)  # the same order of attributes, too
