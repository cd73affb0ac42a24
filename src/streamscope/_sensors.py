"""Whether Pydantic AI's own instrumentation records a request's token usage and time to first chunk.

Pydantic AI records `gen_ai.client.token.usage` (and, in releases that pass it, time to first chunk) for every
request its instrumentation wraps, whether or not its span is sampled. streamscope then leaves those two to it.
Which requests that is, is known from facts, never from the current span:

- an `InstrumentedModel` in the chain of models a `StreamscopeModel` wraps (known when it is built);
- the streams an `InstrumentedModel` hands out: a sensor on `InstrumentedModel.request_stream` marks them;
- the runs whose `Instrumentation` capability is handling a model request: a sensor on
  `Instrumentation.wrap_model_request` holds the run's id while it does (an agent calling another agent from a
  tool runs under another id, so each agent's requests are judged on their own).

The sensors pass every call through unchanged. They are installed with the first instrumentation (either
mode), together with the guard sensors of `_guards`, and removed by `uninstrument()`.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import wrapt
from pydantic_ai.capabilities import Instrumentation
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel

from ._safety import report_internal_error

PYDANTIC_AI_RECORDS_TIME_TO_FIRST_CHUNK = (
    "time_to_first_chunk" in inspect.signature(InstrumentationSettings.record_metrics).parameters
)
"""Whether the installed Pydantic AI records `gen_ai.client.operation.time_to_first_chunk` itself."""

_STREAM_MARK = "_streamscope_recorded_by_pydantic_ai"
_lock = threading.Lock()
_instrumented_runs: dict[str, int] = {}  # run id -> model requests its Instrumentation capability is handling
_installed: list[tuple[type[Any], str, Any]] = []  # (class, attribute, original)


def recorded_by_pydantic_ai(stream: Any) -> bool:
    """Whether an `InstrumentedModel` handed out `stream` (so it records the stream's tokens itself)."""
    try:
        return bool(stream.__dict__.get(_STREAM_MARK))
    except AttributeError:
        return False


def run_is_instrumented(run_context: Any) -> bool:
    """Whether the agent run of `run_context` has Pydantic AI's `Instrumentation` handling its model request."""
    if run_context is None:
        return False
    run_id = getattr(run_context, "run_id", None)
    return isinstance(run_id, str) and _instrumented_runs.get(run_id, 0) > 0


def chain_has_instrumented_model(chain: Any) -> bool:
    """Whether any model of a wrapper chain is an `InstrumentedModel`."""
    return any(isinstance(model, InstrumentedModel) for model in chain)


def ensure_installed() -> None:
    """Install the two sensors unless they are (cheap when they are: called for every explicit request)."""
    if not _installed:
        install()


def install() -> None:
    """Install the two sensors and the guard sensors (idempotent)."""
    from . import _guards  # here, not at the top: _guards imports (through _recorder) this module

    with _lock:
        if _installed:
            return
        for owner, attribute, wrapper in (
            (InstrumentedModel, "request_stream", _mark_instrumented_model_stream),
            (Instrumentation, "wrap_model_request", _hold_run_id),
        ):
            original = owner.__dict__[attribute]
            wrapt.wrap_function_wrapper(owner, attribute, wrapper)
            _installed.append((owner, attribute, original))
        _guards.install()


def remove() -> None:
    """Restore the exact original objects."""
    from . import _guards  # see install()

    with _lock:
        for owner, attribute, original in reversed(_installed):
            setattr(owner, attribute, original)
        _installed.clear()
        _guards.remove()


class _MarkingStreamOpener:
    """`InstrumentedModel.request_stream`'s context manager, marking the stream it hands out."""

    __slots__ = ("_inner",)

    def __init__(self, inner: AbstractAsyncContextManager[Any]) -> None:
        self._inner: AbstractAsyncContextManager[Any] = inner

    async def __aenter__(self) -> Any:
        stream = await self._inner.__aenter__()
        try:
            target = getattr(stream, "__wrapped__", stream)  # streamscope's proxy: mark the stream itself
            vars(target)[_STREAM_MARK] = True
        except Exception:
            report_internal_error("marking a stream of Pydantic AI's InstrumentedModel")
        return stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, traceback)


def _mark_instrumented_model_stream(
    wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return _MarkingStreamOpener(wrapped(*args, **kwargs))


async def _hold_run_id(
    wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    ctx = args[0] if args else kwargs.get("ctx")
    run_id = getattr(ctx, "run_id", None)
    if not isinstance(run_id, str):
        return await wrapped(*args, **kwargs)
    with _lock:
        _instrumented_runs[run_id] = _instrumented_runs.get(run_id, 0) + 1
    try:
        return await wrapped(*args, **kwargs)
    finally:
        with _lock, contextlib.suppress(KeyError):
            if _instrumented_runs[run_id] <= 1:
                del _instrumented_runs[run_id]
            else:
                _instrumented_runs[run_id] -= 1
