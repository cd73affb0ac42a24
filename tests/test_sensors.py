"""The sensors on Pydantic AI's own instrumentation, each on its own: they pass every call through unchanged and
keep exactly the facts streamscope decides from (which runs Pydantic AI records, which streams it handed out)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import pytest
import wrapt

from streamscope import _sensors

pytestmark = pytest.mark.anyio


@dataclass
class Context:
    run_id: Any


async def test_a_run_is_instrumented_exactly_while_its_request_is_handled() -> None:
    """Held while the wrapped request runs, however the context is passed; let go after, leaving nothing behind."""
    ctx = Context("run-1")
    seen: list[tuple[tuple[Any, ...], dict[str, Any], bool]] = []

    async def wrap_model_request(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs, _sensors.run_is_instrumented(ctx)))
        return "response"

    assert await _sensors._hold_run_id(wrap_model_request, None, (ctx, "handler"), {"extra": 1}) == "response"
    assert await _sensors._hold_run_id(wrap_model_request, None, (), {"ctx": ctx, "handler": "h"}) == "response"
    assert seen == [((ctx, "handler"), {"extra": 1}, True), ((), {"ctx": ctx, "handler": "h"}, True)]
    assert not _sensors.run_is_instrumented(ctx)
    assert "run-1" not in _sensors._instrumented_runs


@pytest.mark.parametrize("holders", [2, 3])
async def test_overlapping_requests_of_one_run_hold_it_until_the_last_ends(holders: int) -> None:
    """Requests of one run overlapping (nested `Instrumentation` capabilities, say): the run stays held until the
    last one ends, however many there are and whichever ends first."""
    ctx = Context(f"run-{holders}")
    inside = [anyio.Event() for _ in range(holders - 1)]
    may_end = [anyio.Event() for _ in range(holders - 1)]
    during: list[bool] = []

    def holder(number: int) -> Callable[..., Awaitable[None]]:
        async def request(*_: Any) -> None:
            inside[number].set()
            await may_end[number].wait()
            during.append(_sensors.run_is_instrumented(ctx))  # the others before it ended: still held by this one

        return request

    async def last(*_: Any) -> None:
        during.append(_sensors.run_is_instrumented(ctx))

    async with anyio.create_task_group() as tg:
        for number in range(holders - 1):
            tg.start_soon(_sensors._hold_run_id, holder(number), None, (ctx,), {})
            await inside[number].wait()
        await _sensors._hold_run_id(last, None, (ctx,), {})
        for event in may_end:
            event.set()
            await anyio.wait_all_tasks_blocked()
    assert during == [True] * holders
    assert not _sensors.run_is_instrumented(ctx)
    assert ctx.run_id not in _sensors._instrumented_runs


@pytest.mark.parametrize("ctx", [None, Context(None), Context(42), object()], ids=["none", "no-id", "int", "bare"])
async def test_a_context_without_a_run_id_passes_through(ctx: Any) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def wrapped(*args: Any, **kwargs: Any) -> int:
        calls.append((args, kwargs))
        return 7

    held_before = dict(_sensors._instrumented_runs)  # runs of earlier tests the collector has not closed yet
    assert await _sensors._hold_run_id(wrapped, None, (ctx, 1), {"k": 2}) == 7
    assert calls == [((ctx, 1), {"k": 2})]
    assert _sensors._instrumented_runs == held_before
    assert not _sensors.run_is_instrumented(ctx)


class Stream:
    """A stream with a __dict__, as Pydantic AI's are."""


class SlottedStream:
    __slots__ = ()


class Opener:
    """An async context manager handing out `stream`, recording what its exit was told."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.exits: list[tuple[Any, Any, Any]] = []

    async def __aenter__(self) -> Any:
        return self.stream

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        self.exits.append((exc_type, exc, traceback))
        return True  # what it answers (swallowing here) is the caller's answer too


async def test_a_stream_pydantic_ais_instrumented_model_hands_out_is_marked() -> None:
    created: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    stream = Stream()
    inner = Opener(stream)

    def request_stream(*args: Any, **kwargs: Any) -> Opener:
        created.append((args, kwargs))
        return inner

    opener = _sensors._mark_instrumented_model_stream(request_stream, None, ("messages",), {"run_context": "rc"})
    assert created == [(("messages",), {"run_context": "rc"})]
    assert not _sensors.recorded_by_pydantic_ai(stream)
    error = ValueError("boom")
    traceback: TracebackType | None = None
    try:
        raise error
    except ValueError as raised:
        traceback = raised.__traceback__
    async with opener as handed_out:
        assert handed_out is stream
        assert _sensors.recorded_by_pydantic_ai(stream)
    assert inner.exits == [(None, None, None)]
    assert await opener.__aexit__(ValueError, error, traceback) is True
    assert inner.exits[-1] == (ValueError, error, traceback)


async def test_a_proxied_stream_is_marked_on_the_stream_itself() -> None:
    stream = Stream()
    proxy = wrapt.ObjectProxy(stream)
    async with _sensors._MarkingStreamOpener(Opener(proxy)) as handed_out:
        assert handed_out is proxy
    assert _sensors.recorded_by_pydantic_ai(stream)


async def test_a_stream_that_cannot_be_marked_is_handed_out_and_said(internal_errors: list[logging.LogRecord]) -> None:
    stream = SlottedStream()
    async with _sensors._MarkingStreamOpener(Opener(stream)) as handed_out:
        assert handed_out is stream
    assert not _sensors.recorded_by_pydantic_ai(stream)
    (record,) = internal_errors
    assert record.getMessage() == (
        "streamscope failed while marking a stream of Pydantic AI's InstrumentedModel; the stream is unaffected"
    )
