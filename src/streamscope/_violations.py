"""Reporting one policy violation on every channel: span event, OTel log record, counter, stdlib warning.

Which guard denied what is decided elsewhere (`_policy` for `check_allow_model_requests`, the stream's end for a
provider's content filter); each violation is reported here exactly once, the same way whatever the policy.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import Span

from . import _names as n
from ._events import Attributes
from ._safety import report_internal_error
from ._telemetry import Telemetry

policy_logger = logging.getLogger("streamscope.policy")


@contextlib.contextmanager
def _reporting(what: str) -> Generator[None]:
    try:
        yield
    except Exception:
        report_internal_error(what)


def error_type(error: BaseException) -> str:
    """`error.type` value: the exception's fully qualified class name (builtins unqualified)."""
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def model_details(metric_attributes: Attributes) -> Attributes:
    """A model's GenAI attributes as a violation carries them: its metric attributes without the operation."""
    return {k: v for k, v in metric_attributes.items() if k != n.GEN_AI_OPERATION_NAME}


def report_filtered_response(
    telemetry: Telemetry,
    *,
    metric_attributes: Attributes,
    response_model: object,
    response_id: object,
    message: str,
    span: Span | None,
    model_class: str | None,
) -> None:
    """Report a response the provider's content filter stopped (a stream's or a non-streamed one)."""
    details = model_details(metric_attributes)
    for key, value in ((n.GEN_AI_RESPONSE_MODEL, response_model), (n.GEN_AI_RESPONSE_ID, response_id)):
        if isinstance(value, str) and value:
            details[key] = value
    report_violation(
        telemetry,
        policy=n.POLICY_CONTENT_FILTER,
        summary="response filtered by the provider's content filter",
        message=message,
        attributes=details,
        span=span,
        model_class=model_class,
        call_site=None,
    )


def report_violation(
    telemetry: Telemetry,
    *,
    policy: str,
    summary: str,
    message: str,
    attributes: Attributes,
    span: Span | None,
    model_class: str | None,
    call_site: str | None,
) -> None:
    """Report one violation of `policy`. `attributes` carry the model's GenAI attributes and any details;
    `summary` says what was denied ("model request denied by check_allow_model_requests"); `span` is the span it
    belongs to (default: the current one)."""
    attributes = {n.POLICY_NAME: policy, n.POLICY_MESSAGE: message, **attributes}
    if call_site is not None:
        attributes[n.POLICY_CALL_SITE] = call_site
    if model_class:
        attributes[n.POLICY_MODEL_CLASS] = model_class
    target = span if span is not None else trace.get_current_span()
    where = f" at {call_site}" if call_site is not None else ""
    # Each channel on its own: one failing (a raising log pipeline, say) must not silence the others.
    with _reporting("adding a policy-violation span event"):
        target.add_event(n.POLICY_VIOLATION_EVENT, attributes)
    with _reporting("emitting a policy-violation log record"):
        telemetry.logger.emit(
            event_name=n.POLICY_VIOLATION_EVENT,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body=f"{summary[:1].upper()}{summary[1:]}{where}: {message}",
            attributes=attributes,
            context=trace.set_span_in_context(target, otel_context.get_current()),
        )
    counter_attributes: Attributes = {n.POLICY_NAME: policy}
    for key in (n.GEN_AI_PROVIDER_NAME, n.GEN_AI_REQUEST_MODEL, n.POLICY_LIMIT_NAME):
        if key in attributes:
            counter_attributes[key] = attributes[key]
    with _reporting("counting a policy violation"):
        telemetry.metrics.policy_violations.add(1, counter_attributes)
    model = attributes.get(n.GEN_AI_REQUEST_MODEL)
    subject = " ".join(str(part) for part in (model_class, model) if part)
    # A logging filter may raise: the violation is still reported once (the caller would otherwise not tell the
    # streamscope layer above it, which would report it again).
    with _reporting("logging a policy violation"):
        policy_logger.warning(
            "Policy violation: %s (%s)%s%s",
            summary,
            message,
            f" for {subject}" if subject else "",
            where,
            extra={
                "streamscope_policy": policy,
                "streamscope_call_site": call_site,
                "streamscope_model_class": model_class,
                "streamscope_model": model,
                "streamscope_provider": attributes.get(n.GEN_AI_PROVIDER_NAME),
            },
        )
