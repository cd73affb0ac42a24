"""Policy violations seen at model request boundaries, each recorded once; exceptions reach the user unchanged.

They are recognised where they surface, at the request boundaries streamscope wraps anyway (a model's
`request_stream`, `request`, `count_tokens`, an image model's `generate`, ...):

- a denial by `check_allow_model_requests`: a `RuntimeError` whose traceback ends in the frame of
  `check_allow_model_requests` itself. So every model is covered — built-in or user-defined, whatever imported
  the function by name and whenever — without rebinding the name in any module;
- a `ContentFilterError` a model raised (an image model's moderation, a provider refusing a request);
- a response a non-streamed request returned with `finish_reason` content_filter (streams report theirs when
  they end, from the recorder).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from types import CodeType, FrameType, TracebackType
from typing import Any

from opentelemetry.trace import Span
from pydantic_ai import models as pai_models
from pydantic_ai.exceptions import ContentFilterError
from pydantic_ai.messages import ModelResponse

from . import _names as n
from ._claims import RequestClaim, current_claim, place, withdraw
from ._events import Attributes
from ._safety import report_internal_error
from ._stream import model_attributes
from ._telemetry import Telemetry
from ._violations import error_type, model_details, report_filtered_response, report_violation


# Both run once, at import (mutation testing cannot reach them; what they find is checked by the denial tests).
def _code_of(function: Any) -> CodeType:  # pragma: no mutate block
    while hasattr(function, "__wrapped__"):  # a decorated or proxied function: the code that raises is inside
        function = function.__wrapped__
    return function.__code__


_CHECK_CODE = _code_of(pai_models.check_allow_model_requests)


def _model_classes() -> tuple[type[Any], ...]:  # pragma: no mutate block
    classes: list[type[Any]] = [pai_models.Model]
    for module, name in (("pydantic_ai.embeddings", "EmbeddingModel"), ("pydantic_ai.images", "ImageGenerationModel")):
        with contextlib.suppress(ImportError, AttributeError):
            classes.append(getattr(__import__(module, fromlist=[name]), name))
    return tuple(classes)


_MODEL_CLASSES = _model_classes()


def _frames(error: BaseException) -> list[TracebackType]:
    entries: list[TracebackType] = []
    tb = error.__traceback__
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    return entries


def denials_in(error: BaseException) -> Iterator[BaseException]:
    """The violations `error` is or holds (in groups too): denials raised by `check_allow_model_requests` itself,
    and content-filter errors."""
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
            yield from denials_in(member)  # pyright: ignore[reportUnknownArgumentType]
        return
    if isinstance(error, ContentFilterError) or (
        isinstance(error, RuntimeError) and innermost_code(error) is _CHECK_CODE
    ):
        yield error


async def request_recording_violations(
    telemetry: Telemetry,
    method: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    boundary_model: Any,
) -> Any:
    """Await `method(*args, **kwargs)`, a request of `boundary_model`, as one streamscope layer: record each policy
    violation in it (a denial, a content filter) that no layer below recorded, and tell the layer above.

    The layer does not own the request: a stream opened inside it is instrumented by the layer opening it. What
    is recorded goes to the outermost layer's telemetry. No `self` here: a violation is attributed to the innermost
    frame's `self` that is a model, and this frame is in every violation's traceback.
    """
    above = current_claim()
    mine = RequestClaim(telemetry if above is None else above.telemetry)
    token = place(mine)
    try:
        result = await method(*args, **kwargs)
    except Exception as error:
        note_denials(error, mine.telemetry, mine, above, boundary_model)
        raise
    finally:
        withdraw(token)
    note_filtered_response(result, mine.telemetry, mine, above, boundary_model)
    return result


def note_denials(
    error: BaseException,
    telemetry: Telemetry,
    mine: RequestClaim | None,
    above: RequestClaim | None,
    boundary_model: Any,
    span: Span | None = None,
) -> None:
    """Record each violation in `error` that no boundary below this one recorded; tell the layer above."""
    try:
        for denial in denials_in(error):
            if mine is None or not mine.was_recorded(denial):
                if isinstance(denial, ContentFilterError):
                    record_content_filter_error(telemetry, denial, boundary_model, span)
                else:
                    record_violation(telemetry, denial, boundary_model, span)
            if above is not None:
                above.note_recorded(denial)
    except Exception:
        report_internal_error("recording a policy violation")


def note_filtered_response(
    response: Any, telemetry: Telemetry, mine: RequestClaim, above: RequestClaim | None, boundary_model: Any
) -> None:
    """Record a non-streamed response the provider's content filter stopped, unless a boundary below did."""
    try:
        if not isinstance(response, ModelResponse) or response.finish_reason != n.POLICY_CONTENT_FILTER:
            return
        if not mine.was_recorded(response):
            model_class, metric_attributes = _model_facts(boundary_model)
            report_filtered_response(
                telemetry,
                metric_attributes=metric_attributes,
                response_model=response.model_name,
                response_id=response.provider_response_id,
                message="finish_reason=content_filter",
                span=None,
                model_class=model_class,
            )
        if above is not None:
            above.note_recorded(response)
    except Exception:
        report_internal_error("recording a content-filter policy violation")


def innermost_code(error: BaseException) -> CodeType | None:
    """The code object of the frame `error` was raised in (None without a traceback)."""
    tb = error.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code


def frame_site(frame: FrameType | None, line: int | None = None) -> tuple[Attributes, str]:
    """The `code.*` attributes and the "module:function:line" text of a call made from `frame`."""
    if frame is None:
        return {}, "<unknown>"
    code = frame.f_code
    line = frame.f_lineno if line is None else line
    module = frame.f_globals.get("__name__", "<unknown>")
    function = getattr(code, "co_qualname", code.co_name)
    attributes: Attributes = {
        n.CODE_FUNCTION_NAME: f"{module}.{function}",
        n.CODE_FILE_PATH: code.co_filename,
        n.CODE_LINE_NUMBER: line,
    }
    return attributes, f"{module}:{function}:{line}"


def _denied_model(entries: list[TracebackType], boundary_model: Any) -> Any:
    """The model whose method made the denied call: the innermost frame's `self` that is a model."""
    for tb in reversed(entries):
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, _MODEL_CLASSES):
            return candidate
    return boundary_model


def _model_facts(model: Any) -> tuple[str | None, Attributes]:
    """The model's class name and its GenAI attributes (without the operation)."""
    if model is None:
        return None, {}
    _, _, metric_attributes = model_attributes(model)
    return type(model).__qualname__, model_details(metric_attributes)


def record_content_filter_error(
    telemetry: Telemetry, error: ContentFilterError, boundary_model: Any, span: Span | None
) -> None:
    """Report a `ContentFilterError` a model raised, at the place it was raised."""
    summary = "request refused by the provider's content filter"
    _report_raised(telemetry, error, n.POLICY_CONTENT_FILTER, summary, error.message, -1, boundary_model, span)


def record_violation(telemetry: Telemetry, error: BaseException, boundary_model: Any, span: Span | None) -> None:
    """Report one denial by `check_allow_model_requests`, at its call site and for the model that made the call.

    `span` is the stream span when the denial stopped a stream from opening; otherwise the current span.
    """
    summary = "model request denied by check_allow_model_requests"
    _report_raised(telemetry, error, n.POLICY_ALLOW_MODEL_REQUESTS, summary, str(error), -2, boundary_model, span)


def _report_raised(
    telemetry: Telemetry,
    error: BaseException,
    policy: str,
    summary: str,
    message: str,
    site_frame: int,
    boundary_model: Any,
    span: Span | None,
) -> None:
    """Report a violation raised as `error`, at its traceback entry `site_frame` (-1: where it was raised, -2: the
    call into the raising function), for the model whose method made the call."""
    entries = _frames(error)
    site = entries[site_frame] if len(entries) >= -site_frame else None
    site_attributes, call_site = frame_site(site.tb_frame, site.tb_lineno) if site else frame_site(None)
    model_class, model_attrs = _model_facts(_denied_model(entries, boundary_model))
    report_violation(
        telemetry,
        policy=policy,
        summary=summary,
        message=message,
        attributes={n.ERROR_TYPE: error_type(error), **site_attributes, **model_attrs},
        span=span,
        model_class=model_class,
        call_site=call_site,
    )
