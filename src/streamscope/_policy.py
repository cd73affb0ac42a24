"""Policy violations: each denial by `check_allow_model_requests` is recorded once, and reaches the user unchanged.

A denial is recognised where it surfaces, at the request boundaries streamscope wraps anyway (a model's
`request_stream`, `request`, `count_tokens`, ...): it is a `RuntimeError` whose traceback ends in the frame of
`check_allow_model_requests` itself. So every model is covered — built-in or user-defined, whatever imported the
function by name and whenever — without rebinding the name in any module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import CodeType, TracebackType
from typing import Any

from opentelemetry.trace import Span
from pydantic_ai import models as pai_models

from . import _names as n
from ._claims import RequestClaim
from ._events import Attributes
from ._safety import report_internal_error
from ._stream import model_attributes
from ._telemetry import Telemetry
from ._violations import report_violation


def _code_of(function: Any) -> CodeType:
    while hasattr(function, "__wrapped__"):  # a decorated or proxied function: the code that raises is inside
        function = function.__wrapped__
    return function.__code__


_CHECK_CODE = _code_of(pai_models.check_allow_model_requests)


def _model_classes() -> tuple[type[Any], ...]:
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
    """The denials `error` is or holds: raised by `check_allow_model_requests` itself (in groups too)."""
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
            yield from denials_in(member)  # pyright: ignore[reportUnknownArgumentType]
        return
    if isinstance(error, RuntimeError):
        tb = error.__traceback__
        if tb is None:
            return
        while tb.tb_next is not None:
            tb = tb.tb_next
        if tb.tb_frame.f_code is _CHECK_CODE:
            yield error


def note_denials(
    error: BaseException,
    telemetry: Telemetry,
    mine: RequestClaim | None,
    above: RequestClaim | None,
    boundary_model: Any,
    span: Span | None = None,
) -> None:
    """Record each denial in `error` that no boundary below this one recorded; tell the layer above."""
    try:
        for denial in denials_in(error):
            if mine is None or not mine.was_recorded(denial):
                record_violation(telemetry, denial, boundary_model, span)
            if above is not None:
                above.note_recorded(denial)
    except Exception:
        report_internal_error("recording a policy violation")


def _call_site(tb: TracebackType | None) -> tuple[Attributes, str]:
    if tb is None:
        return {}, "<unknown>"
    code = tb.tb_frame.f_code
    module = tb.tb_frame.f_globals.get("__name__", "<unknown>")
    function = getattr(code, "co_qualname", code.co_name)
    attributes: Attributes = {
        n.CODE_FUNCTION_NAME: f"{module}.{function}",
        n.CODE_FILE_PATH: code.co_filename,
        n.CODE_LINE_NUMBER: tb.tb_lineno,
    }
    return attributes, f"{module}:{function}:{tb.tb_lineno}"


def _denied_model(entries: list[TracebackType], boundary_model: Any) -> Any:
    """The model whose method made the denied call: the innermost frame's `self` that is a model."""
    for tb in reversed(entries):
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, _MODEL_CLASSES):
            return candidate
    return boundary_model


def record_violation(telemetry: Telemetry, error: BaseException, boundary_model: Any, span: Span | None) -> None:
    """Report one denial by `check_allow_model_requests`, at its call site and for the model that made the call.

    `span` is the stream span when the denial stopped a stream from opening; otherwise the current span.
    """
    entries = _frames(error)
    site_attributes, call_site = _call_site(entries[-2] if len(entries) >= 2 else None)
    model = _denied_model(entries, boundary_model)
    model_class = type(model).__qualname__ if model is not None else None
    _, _, model_attrs = model_attributes(model) if model is not None else (None, {}, {})
    report_violation(
        telemetry,
        policy=n.POLICY_ALLOW_MODEL_REQUESTS,
        summary="model request denied by check_allow_model_requests",
        message=str(error),
        attributes={
            n.ERROR_TYPE: type(error).__qualname__,
            **site_attributes,
            **{k: v for k, v in model_attrs.items() if k != n.GEN_AI_OPERATION_NAME},
        },
        span=span,
        model_class=model_class,
        call_site=call_site,
    )
