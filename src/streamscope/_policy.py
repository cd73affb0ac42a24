"""Policy violations: every denial raised by `check_allow_model_requests` is recorded, then re-raised unchanged."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber

from . import _names as n
from ._events import Attributes
from ._safety import report_internal_error
from ._stream import model_attributes, opening_span
from ._telemetry import Telemetry

policy_logger = logging.getLogger("streamscope.policy")


def _call_site(frame: FrameType | None) -> tuple[Attributes, str]:
    if frame is None:
        return {}, "<unknown>"
    code = frame.f_code
    module = frame.f_globals.get("__name__", "<unknown>")
    function = getattr(code, "co_qualname", code.co_name)
    attributes: Attributes = {
        n.CODE_FUNCTION_NAME: f"{module}.{function}",
        n.CODE_FILE_PATH: code.co_filename,
        n.CODE_LINE_NUMBER: frame.f_lineno,
    }
    return attributes, f"{module}:{function}:{frame.f_lineno}"


def _model_of(frame: FrameType | None) -> Any:
    """The model (or stream) whose method made the denied call: `self` of the calling frame, if any."""
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if candidate is not None and (hasattr(candidate, "model_name") or hasattr(candidate, "system")):
            return candidate
        frame = frame.f_back
        if frame is not None and not frame.f_globals.get("__name__", "").startswith("pydantic_ai"):
            return None
    return None


@contextlib.contextmanager
def _reporting(what: str) -> Generator[None]:
    try:
        yield
    except Exception:
        report_internal_error(what)


def record_violation(telemetry: Telemetry, error: BaseException, caller: FrameType | None) -> None:
    """Report one denial: OTel log record, stdlib log record, counter, and an event on the current span."""
    site_attributes, call_site = _call_site(caller)
    model = _model_of(caller)
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
    # Denied while streamscope opens a stream: the event belongs on that stream's span.
    span = opening_span() or trace.get_current_span()
    # Each channel on its own: one failing (a raising log pipeline, say) must not silence the others.
    with _reporting("adding a policy-violation span event"):
        span.add_event(n.POLICY_VIOLATION_EVENT, attributes)
    with _reporting("emitting a policy-violation log record"):
        telemetry.logger.emit(
            event_name=n.POLICY_VIOLATION_EVENT,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body=f"Model request denied by check_allow_model_requests at {call_site}: {message}",
            attributes=attributes,
            context=trace.set_span_in_context(span, otel_context.get_current()),
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
        extra={"streamscope_call_site": call_site, "streamscope_model_class": model_class},
    )


def make_denial_guard(telemetry: Telemetry, is_active: Callable[[], bool]) -> Callable[..., Any]:
    """A wrapt wrapper for `check_allow_model_requests` that records each denial and re-raises it.

    A module that imported the guard keeps it after `uninstrument()`; it then only passes calls through.
    """

    def guard(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except RuntimeError as error:
            if not is_active():
                raise
            try:
                frame = inspect.currentframe()
                record_violation(telemetry, error, frame.f_back if frame is not None else None)
            except Exception:
                report_internal_error("recording a policy violation")
            raise

    return guard
