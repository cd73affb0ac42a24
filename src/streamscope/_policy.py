"""Policy violations: each denial by `check_allow_model_requests` is recorded once, and reaches the user unchanged.

A denial is recognised where it surfaces, at the request boundaries streamscope wraps anyway (a model's
`request_stream`, `request`, `count_tokens`, ...): it is a `RuntimeError` whose traceback ends in the frame of
`check_allow_model_requests` itself. So every model is covered — built-in or user-defined, whatever imported the
function by name and whenever — without rebinding the name in any module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Iterator
from types import CodeType, TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import Span
from pydantic_ai import models as pai_models

from . import _names as n
from ._claims import RequestClaim
from ._events import Attributes
from ._safety import report_internal_error
from ._stream import model_attributes
from ._telemetry import Telemetry

policy_logger = logging.getLogger("streamscope.policy")


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


@contextlib.contextmanager
def _reporting(what: str) -> Generator[None]:
    try:
        yield
    except Exception:
        report_internal_error(what)


def record_violation(telemetry: Telemetry, error: BaseException, boundary_model: Any, span: Span | None) -> None:
    """Report one denial: OTel log record, stdlib log record, counter, and an event on the span.

    `span` is the stream span when the denial stopped a stream from opening; otherwise the current span.
    """
    entries = _frames(error)
    site_attributes, call_site = _call_site(entries[-2] if len(entries) >= 2 else None)
    model = _denied_model(entries, boundary_model)
    model_class = type(model).__qualname__ if model is not None else None
    _, _, model_attrs = model_attributes(model) if model is not None else (None, {}, {})
    message = str(error)
    attributes: Attributes = {
        n.POLICY_NAME: n.POLICY_ALLOW_MODEL_REQUESTS,
        n.POLICY_CALL_SITE: call_site,
        n.POLICY_MESSAGE: message,
        n.ERROR_TYPE: type(error).__qualname__,
        **site_attributes,
        **{k: v for k, v in model_attrs.items() if k != n.GEN_AI_OPERATION_NAME},
    }
    if model_class:
        attributes[n.POLICY_MODEL_CLASS] = model_class
    target = span if span is not None else trace.get_current_span()
    # Each channel on its own: one failing (a raising log pipeline, say) must not silence the others.
    with _reporting("adding a policy-violation span event"):
        target.add_event(n.POLICY_VIOLATION_EVENT, attributes)
    with _reporting("emitting a policy-violation log record"):
        telemetry.logger.emit(
            event_name=n.POLICY_VIOLATION_EVENT,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body=f"Model request denied by check_allow_model_requests at {call_site}: {message}",
            attributes=attributes,
            context=trace.set_span_in_context(target, otel_context.get_current()),
        )
    counter_attributes: Attributes = {n.POLICY_NAME: n.POLICY_ALLOW_MODEL_REQUESTS}
    for key in (n.GEN_AI_PROVIDER_NAME, n.GEN_AI_REQUEST_MODEL):
        if key in attributes:
            counter_attributes[key] = attributes[key]
    with _reporting("counting a policy violation"):
        telemetry.metrics.policy_violations.add(1, counter_attributes)
    policy_logger.warning(
        "Policy violation: model request denied (%s) for %s %s at %s",
        message,
        model_class or "<unknown model>",
        attributes.get(n.GEN_AI_REQUEST_MODEL, ""),
        call_site,
        extra={
            "streamscope_policy": n.POLICY_ALLOW_MODEL_REQUESTS,
            "streamscope_call_site": call_site,
            "streamscope_model_class": model_class,
            "streamscope_model": attributes.get(n.GEN_AI_REQUEST_MODEL),
            "streamscope_provider": attributes.get(n.GEN_AI_PROVIDER_NAME),
        },
    )
