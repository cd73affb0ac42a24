"""Usage and concurrency limits: each denial by Pydantic AI's `UsageLimits` or `ConcurrencyLimiter` is a violation.

Pass-through sensors sit on the functions of `UsageLimits` whose code raises `UsageLimitExceeded` (found from their
code objects, so every check is covered, also one Pydantic AI calls directly or adds later) and on
`ConcurrencyLimiter.acquire`. A denial is recognised where it leaves the function whose own code raised it (the
raising frame's code object is the wrapped function's), so a check that calls another check is recorded once, by
the inner one; the exception passes on unchanged.

Limits guard an agent run, not one model, so which streamscope options report a denial is decided in this order:
the streamscope request open in the context (a limit checked inside an instrumented request), else the
process-wide instrumentation, else the most recent `instrument(model)`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from types import CodeType, FrameType, FunctionType
from typing import Any

import wrapt
from pydantic_ai.concurrency import ConcurrencyLimiter
from pydantic_ai.exceptions import ConcurrencyLimitExceeded, UsageLimitExceeded
from pydantic_ai.usage import UsageLimits

from . import _names as n
from ._claims import current_claim
from ._events import Attributes
from ._policy import frame_site, innermost_code
from ._safety import report_internal_error
from ._telemetry import Telemetry
from ._violations import error_type, report_violation

_lock = threading.Lock()
_installed: list[tuple[type[Any], str, Any]] = []  # (class, attribute, original)


class _Reporting:
    """Whose telemetry reports denials outside instrumented requests."""

    process: Telemetry | None = None
    explicit: Telemetry | None = None


# (limit, usage field, reached counts as exceeded): what each public check compares, in the order it raises.
_REQUEST_LIMIT = ("request_limit", "requests", True)
_INPUT = ("input_tokens_limit", "input_tokens", False)
_OUTPUT = ("output_tokens_limit", "output_tokens", False)
_TOTAL = ("total_tokens_limit", "total_tokens", False)
_TOOL_CALLS = ("tool_calls_limit", "tool_calls", False)
_COST = ("cost_limit", "cost", False)
_PER_REQUEST_INPUT = "per_request_input_tokens_limit"
_CHECKED_BY: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "check_before_request": (_REQUEST_LIMIT, _INPUT, _TOTAL, _COST),
    "check_tokens": (_INPUT, _OUTPUT, _TOTAL),
    "check_cost": (_COST,),
    "check_before_tool_call": (_TOOL_CALLS,),
}
# A raising function of UsageLimits not listed above (a helper Pydantic AI calls directly): every cumulative limit
# but the request count, which is only checked before a request.
_CHECKED_BY_OTHERS = (_INPUT, _OUTPUT, _TOTAL, _TOOL_CALLS, _COST)


def limits_checked_by(function_name: str) -> tuple[tuple[str, str, bool], ...]:
    """(limit, usage field, reaching it counts) for each limit the `UsageLimits` function tests, in its order."""
    return _CHECKED_BY.get(function_name, _CHECKED_BY_OTHERS)


def use_process_telemetry(telemetry: Telemetry | None) -> None:
    """Report denials outside instrumented requests with the process-wide instrumentation's telemetry (None: off)."""
    _Reporting.process = telemetry


def note_explicit_telemetry(telemetry: Telemetry) -> None:
    """`instrument(model)` built a model reporting to `telemetry`: the fallback for denials outside its requests."""
    _Reporting.explicit = telemetry


def _telemetry() -> Telemetry | None:
    claim = current_claim()
    if claim is not None:
        return claim.telemetry
    return _Reporting.process if _Reporting.process is not None else _Reporting.explicit


def _usage_limit_checks() -> Iterator[tuple[str, FunctionType]]:
    """The functions `UsageLimits` defines whose own code raises `UsageLimitExceeded`."""
    for name, value in vars(UsageLimits).items():
        if isinstance(value, FunctionType) and UsageLimitExceeded.__name__ in value.__code__.co_names:
            yield name, value


def install() -> None:
    """Install the guard sensors (idempotent)."""
    with _lock:
        if _installed:
            return
        targets: list[tuple[type[Any], str, Callable[..., Any]]] = [
            (UsageLimits, name, _usage_limit_sensor(name, function.__code__))
            for name, function in _usage_limit_checks()
        ]
        acquire = vars(ConcurrencyLimiter)["acquire"]
        targets.append((ConcurrencyLimiter, "acquire", _concurrency_sensor(acquire.__code__)))
        for owner, attribute, wrapper in targets:
            original = owner.__dict__[attribute]
            wrapt.wrap_function_wrapper(owner, attribute, wrapper)
            _installed.append((owner, attribute, original))


def remove() -> None:
    """Restore the exact original objects."""
    with _lock:
        for owner, attribute, original in reversed(_installed):
            setattr(owner, attribute, original)
        _installed.clear()


def _caller_of(sensor: FrameType | None) -> FrameType | None:
    """The frame that called a sensor, given the sensor's own frame (read by the sensor itself, so that no
    count of frames between here and there is assumed)."""
    return sensor.f_back if sensor is not None else None


def _usage_limit_sensor(name: str, code: CodeType) -> Callable[..., Any]:
    checked = limits_checked_by(name)

    def sensor(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except UsageLimitExceeded as error:
            if innermost_code(error) is code:
                checked_value = args[0] if args else next(iter(kwargs.values()), None)
                _report_usage_limit(error, instance, checked_value, checked, _caller_of(inspect.currentframe()))
            raise

    return sensor


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    return None


def exceeded_limit(
    limits: Any, checked_value: Any, checked: tuple[tuple[str, str, bool], ...]
) -> tuple[str, int | float, int | float] | None:
    """(limit name, limit, value) of the first limit `checked_value` breaks, in the order the check tests them.

    `checked_value` is the usage a check was given, or a number for the per-request input-token check.
    """
    if isinstance(checked_value, int | Decimal) and not isinstance(checked_value, bool):
        limit = _number(getattr(limits, _PER_REQUEST_INPUT, None))
        value = _number(checked_value)
        if limit is not None and value is not None and value > limit:
            return _PER_REQUEST_INPUT, limit, value
        return None
    for limit_name, field, reached in checked:
        limit = _number(getattr(limits, limit_name, None))
        value = _number(getattr(checked_value, field, None))
        if limit is None or value is None:
            continue
        if value > limit or (reached and value >= limit):
            return limit_name, limit, value
    return None


def _report_usage_limit(
    error: UsageLimitExceeded,
    limits: Any,
    checked_value: Any,
    checked: tuple[tuple[str, str, bool], ...],
    caller: FrameType | None,
) -> None:
    try:
        telemetry = _telemetry()
        if telemetry is None:
            return
        details: Attributes = {n.ERROR_TYPE: error_type(error)}
        exceeded = exceeded_limit(limits, checked_value, checked)
        if exceeded is not None:
            limit_name, limit, value = exceeded
            details[n.POLICY_LIMIT_NAME] = limit_name
            details[n.POLICY_LIMIT_THRESHOLD] = limit
            details[n.POLICY_LIMIT_VALUE] = value
        _report_guard(telemetry, error, n.POLICY_USAGE_LIMIT, "agent run stopped by its usage limits", details, caller)
    except Exception:
        report_internal_error("recording a usage-limit policy violation")


def _report_guard(
    telemetry: Telemetry, error: Exception, policy: str, summary: str, details: Attributes, caller: FrameType | None
) -> None:
    """Report a guard's denial: no model (a limit guards a run), on the current span, at the guard's caller."""
    site_attributes, call_site = frame_site(caller)
    report_violation(
        telemetry,
        policy=policy,
        summary=summary,
        message=str(error),
        attributes={**details, **site_attributes},
        span=None,
        model_class=None,
        call_site=call_site,
    )


def _concurrency_sensor(code: CodeType) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def sensor(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return await wrapped(*args, **kwargs)
        except ConcurrencyLimitExceeded as error:
            if innermost_code(error) is code:
                source = args[0] if args else kwargs.get("source")
                _report_concurrency_limit(error, instance, source, _caller_of(inspect.currentframe()))
            raise

    return sensor


def _report_concurrency_limit(
    error: ConcurrencyLimitExceeded, limiter: Any, source: Any, caller: FrameType | None
) -> None:
    try:
        telemetry = _telemetry()
        if telemetry is None:
            return
        details: Attributes = {n.ERROR_TYPE: error_type(error), n.POLICY_LIMIT_NAME: "max_queued"}
        waiting = _number(getattr(limiter, "waiting_count", None))
        if waiting is not None:
            details[n.POLICY_LIMIT_VALUE] = waiting + 1  # the queue depth this acquisition would have made
        max_running = _number(getattr(limiter, "max_running", None))
        if max_running is not None:
            details[n.POLICY_LIMITER_MAX_RUNNING] = max_running
        if isinstance(name := getattr(limiter, "name", None), str):
            details[n.POLICY_LIMITER_NAME] = name
        if isinstance(source, str):
            details[n.POLICY_LIMITER_SOURCE] = source
        summary = "request refused by a concurrency limiter's full queue"
        _report_guard(telemetry, error, n.POLICY_CONCURRENCY_LIMIT, summary, details, caller)
    except Exception:
        report_internal_error("recording a concurrency-limit policy violation")
