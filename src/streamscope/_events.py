"""Turning Pydantic AI stream events into span-event attributes (off the hot path, at stream end)."""

from __future__ import annotations

import json
from typing import Any, cast

from opentelemetry.util.types import AttributeValue
from pydantic_ai.messages import PartDeltaEvent, TextPartDelta

from . import _names as n
from ._options import Options
from ._safety import internal_logger

Attributes = dict[str, AttributeValue]

_DELTA_CONTENT_FIELDS = ("content_delta", "args_delta", "transcript_delta")
_PART_CONTENT_FIELDS = ("content", "args", "transcript")


def event_kind(event_type: type[Any]) -> str:
    """The event's kind (``part_start``, ``part_delta``, ...), from its `event_kind` discriminator."""
    kind = getattr(event_type, "event_kind", None)
    if isinstance(kind, str):
        return kind
    # Dataclass fields with defaults are class attributes; anything else is named after its class.
    return event_type.__name__


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _first_text(obj: object, fields: tuple[str, ...]) -> str | None:
    for field in fields:
        text = _as_text(getattr(obj, field, None))
        if text is not None:
            return text
    return None


def content_of(event: object) -> str | None:
    """The text an event carries: a delta's new text or arguments, or a whole part's content."""
    delta = getattr(event, "delta", None)
    if delta is not None:
        return _first_text(delta, _DELTA_CONTENT_FIELDS)
    part = getattr(event, "part", None)
    if part is not None:
        return _first_text(part, _PART_CONTENT_FIELDS)
    return None


def has_output(event: object) -> bool:
    """Whether a part-start event already carries output (text, arguments): then it is a chunk, like a delta."""
    return bool(content_of(event))


def describe(event: object) -> Attributes:
    """Span-event attributes that never contain content: part index and kind, delta kind, tool name, length."""
    if event.__class__ is PartDeltaEvent:  # most events: the general path below, without its probing
        delta_event = cast(PartDeltaEvent, event)
        delta = delta_event.delta
        if delta.__class__ is TextPartDelta:
            text = cast(TextPartDelta, delta).content_delta
            if isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
                return {
                    n.EVENT_PART_INDEX: delta_event.index,
                    n.EVENT_DELTA_KIND: delta.part_delta_kind,
                    n.EVENT_CONTENT_LENGTH: len(text),
                }
    attributes: Attributes = {}
    index = getattr(event, "index", None)
    if isinstance(index, int):
        attributes[n.EVENT_PART_INDEX] = index
    part = getattr(event, "part", None)
    if part is not None:
        part_kind = getattr(part, "part_kind", None)
        if isinstance(part_kind, str):
            attributes[n.EVENT_PART_KIND] = part_kind
        tool_name = getattr(part, "tool_name", None)
        if isinstance(tool_name, str):
            attributes[n.EVENT_TOOL_NAME] = tool_name
    delta = getattr(event, "delta", None)
    if delta is not None:
        delta_kind = getattr(delta, "part_delta_kind", None)
        if isinstance(delta_kind, str):
            attributes[n.EVENT_DELTA_KIND] = delta_kind
        tool_name_delta = getattr(delta, "tool_name_delta", None)
        if isinstance(tool_name_delta, str):
            attributes[n.EVENT_TOOL_NAME] = tool_name_delta
    if part is None and delta is None:
        tool_name = getattr(event, "tool_name", None)
        if isinstance(tool_name, str):
            attributes[n.EVENT_TOOL_NAME] = tool_name
        tool_call_id = getattr(event, "tool_call_id", None)
        if isinstance(tool_call_id, str):
            attributes[n.EVENT_TOOL_CALL_ID] = tool_call_id
    text = content_of(event)
    if text is not None:
        attributes[n.EVENT_CONTENT_LENGTH] = len(text)
    return attributes


def captured_content(text: str, options: Options) -> tuple[str, bool] | None:
    """Redact, then truncate, content for capture. `None` if the redaction hook failed: nothing is captured."""
    if options.redact is not None:
        try:
            text = options.redact(text)
        except Exception as error:
            # No traceback: the hook's exception may carry the very content it was meant to redact.
            internal_logger.warning(
                "streamscope's redaction hook raised %s; the content was dropped", type(error).__qualname__
            )
            return None
        if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            internal_logger.warning(
                "streamscope's redaction hook returned %s, not a str; the content was dropped", type(text).__qualname__
            )
            return None
    limit = options.max_content_length
    if len(text) > limit:
        return text[:limit], True
    return text, False


def add_content(attributes: Attributes, event: object, options: Options) -> bool:
    """Add the event's captured content (redacted, truncated) to `attributes`; whether there was any."""
    text = content_of(event)
    if text is None:
        return False
    captured = captured_content(text, options)
    if captured is None:
        return False
    content, truncated = captured
    attributes[n.EVENT_CONTENT] = content
    if truncated:
        attributes[n.EVENT_CONTENT_TRUNCATED] = True
    return True
