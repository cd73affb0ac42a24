"""Endings under load: 1,000 concurrent streams, each ending its own way, all at once.

Every stream runs in its own task under its own application span, on the real `FunctionModel`; all of them are
opened before any is consumed, then each ends one way: drained, broken out of, `aclose()`d, `cancel()`ed, never
iterated, failed by the provider (while opening or mid-stream), failed by the consumer, cancelled by an anyio
cancel scope or timeout, or cancelled from another task with asyncio's `Task.cancel()`. Afterwards every span
started has ended exactly once, each stream span under its own task's span and reporting how it ended; the SDK
never saw a span ended twice or a context detached in the wrong place; `streamscope.streams.active` is back at 0
and `streamscope.streams.finished` counts every stream under its outcome.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field

import anyio
import pytest
from opentelemetry import trace
from pydantic_ai.models import Model

import streamscope
from tests.conftest import Otel
from tests.helpers_reliability import (
    ACTIVE,
    END_REASON,
    EVENTS_TOTAL,
    FINISHED,
    OUTCOME,
    OtelDiagnostics,
    ScriptedError,
    SpanLedger,
    metric_total,
    open_stream,
    scripted_model,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

STREAMS = 1000

# ending -> (streamscope.stream.end_reason, streamscope.stream.outcome)
ENDINGS: dict[str, tuple[str, str]] = {
    "drain": ("exhausted", "complete"),
    "break": ("consumer_closed", "incomplete"),
    "aclose": ("consumer_closed", "incomplete"),
    "cancel()": ("cancel_called", "interrupted"),
    "never iterated": ("never_iterated", "incomplete"),
    "provider error": ("error", "error"),
    "error while opening": ("error", "error"),
    "consumer error": ("consumer_error", "interrupted"),
    "anyio cancel scope": ("task_cancelled", "interrupted"),
    "anyio timeout": ("task_cancelled", "interrupted"),
    "asyncio Task.cancel()": ("task_cancelled", "interrupted"),
}
CANCELLED_BY_THE_EVENT_LOOP = ("anyio cancel scope", "anyio timeout", "asyncio Task.cancel()")


class ConsumerError(Exception):
    """Raised by the consuming code inside the `async with` block."""


@dataclass
class Plan:
    index: int
    ending: str
    after: int  # the consumer ends after this many events; a failing or hanging provider after this many items


@dataclass
class Outcome:
    """What one consumer saw."""

    parent_span_id: int = 0
    events: int = 0
    error: BaseException | None = None
    cancelled: bool = False


@dataclass
class Run:
    plans: list[Plan]
    tracer: trace.Tracer
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    opened: int = 0
    failed_to_open: int = 0
    everyone_arrived: anyio.Event = field(default_factory=anyio.Event)
    go: anyio.Event = field(default_factory=anyio.Event)

    def arrive(self, *, opened: bool) -> None:
        if opened:
            self.opened += 1
        else:
            self.failed_to_open += 1
        if self.opened + self.failed_to_open == len(self.plans):
            self.everyone_arrived.set()


def make_plans(seed: int) -> list[Plan]:
    rng = random.Random(seed)
    endings = list(itertools.islice(itertools.cycle(ENDINGS), STREAMS))
    rng.shuffle(endings)
    return [Plan(i, ending, rng.randint(1, 3)) for i, ending in enumerate(endings)]


def model_for(plan: Plan) -> Model:
    if plan.ending == "error while opening":
        return scripted_model(fail_at=0)
    if plan.ending == "provider error":
        return scripted_model(fail_at=plan.after, checkpoints=True)
    if plan.ending in CANCELLED_BY_THE_EVENT_LOOP:
        # The provider hangs after `after` items: only the cancellation can end these streams.
        return scripted_model(block_at=plan.after, checkpoints=True)
    return scripted_model(checkpoints=True)


async def consume(run: Run, plan: Plan, model: Model, reached: asyncio.Event | None = None) -> None:
    """Under a span of its own, open the stream, wait until every stream is open, then end it the planned way."""
    outcome = run.outcomes[plan.index]
    with run.tracer.start_as_current_span(f"consumer {plan.index}") as parent:
        outcome.parent_span_id = parent.get_span_context().span_id
        try:
            await _consume(run, plan, model, outcome, reached)
        except ScriptedError as error:
            outcome.error = error
        except ConsumerError as error:
            outcome.error = error


async def _consume(run: Run, plan: Plan, model: Model, outcome: Outcome, reached: asyncio.Event | None) -> None:
    opened = False
    try:
        async with open_stream(model) as stream:
            opened = True
            run.arrive(opened=True)
            await run.go.wait()
            match plan.ending:
                case "never iterated":
                    pass
                case "aclose":
                    iterator = aiter(stream)
                    for _ in range(plan.after):
                        await anext(iterator)
                        outcome.events += 1
                    await iterator.aclose()  # pyright: ignore[reportAttributeAccessIssue]
                case "anyio cancel scope":
                    with anyio.CancelScope() as scope:
                        async for _ in stream:
                            outcome.events += 1
                            if outcome.events == plan.after:
                                scope.cancel()
                    outcome.cancelled = scope.cancelled_caught
                case "anyio timeout":
                    with anyio.move_on_after(0.05) as scope:
                        async for _ in stream:
                            outcome.events += 1
                    outcome.cancelled = scope.cancelled_caught
                case _:
                    async for _ in stream:
                        outcome.events += 1
                        if outcome.events == plan.after:
                            if plan.ending == "break":
                                break
                            if plan.ending == "cancel()":
                                await stream.cancel()
                                break
                            if plan.ending == "consumer error":
                                raise ConsumerError(f"consumer {plan.index} gave up")
                            if reached is not None:
                                reached.set()
    finally:
        if not opened:
            run.arrive(opened=False)


async def cancelled_from_another_task(run: Run, plan: Plan, model: Model) -> None:
    reached = asyncio.Event()
    task = asyncio.create_task(consume(run, plan, model, reached))
    waiter = asyncio.create_task(reached.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert reached.is_set(), "the consumer ended before it could be cancelled"
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        run.outcomes[plan.index].cancelled = True


@pytest.mark.parametrize(("mode", "seed"), [("instrument(model)", 1), ("process-wide", 2)])
async def test_a_thousand_concurrent_streams_each_end_exactly_once(otel: Otel, mode: str, seed: int) -> None:
    ledger = SpanLedger()
    otel.tracer_provider.add_span_processor(ledger)
    plans = make_plans(seed)
    run = Run(plans, otel.tracer_provider.get_tracer("load-test"), {plan.index: Outcome() for plan in plans})
    assert Counter(plan.ending for plan in plans).keys() == ENDINGS.keys()
    expected_open = sum(plan.ending != "error while opening" for plan in plans)

    with OtelDiagnostics() as diagnostics:
        if mode == "process-wide":
            streamscope.instrument(**otel.providers)
        try:
            models = [
                streamscope.instrument(model_for(plan), **otel.providers)
                if mode == "instrument(model)"
                else model_for(plan)
                for plan in plans
            ]
            with anyio.fail_after(120):
                async with anyio.create_task_group() as group:
                    for plan, model in zip(plans, models, strict=True):
                        if plan.ending == "asyncio Task.cancel()":
                            group.start_soon(cancelled_from_another_task, run, plan, model)
                        else:
                            group.start_soon(consume, run, plan, model)
                    await run.everyone_arrived.wait()
                    # Every stream that could open is open at the same time: in flight, and counted as active.
                    assert run.opened == expected_open
                    assert metric_total(otel, ACTIVE) == expected_open
                    assert len(ledger.in_flight) == 2 * expected_open  # each with its consumer's span
                    run.go.set()
            # Finalisers of iterators left suspended (break, consumer error) run now, in tasks of their own.
            gc.collect()
            for _ in range(10):
                await asyncio.sleep(0)
        finally:
            if mode == "process-wide":
                streamscope.uninstrument()
    diagnostics.assert_clean()

    ledger.assert_all_ended_once()
    assert ledger.started == 2 * STREAMS
    stream_spans = ledger.stream_spans()
    assert len(stream_spans) == STREAMS
    by_parent = {span.parent_span_id: span for span in stream_spans}
    assert len(by_parent) == STREAMS  # one stream span under each consumer span
    consumers = {span.span_id: span for span in ledger.ended_spans if span.scope == "load-test"}
    for plan in plans:
        outcome = run.outcomes[plan.index]
        span = by_parent[outcome.parent_span_id]
        assert span.trace_id == consumers[outcome.parent_span_id].trace_id
        assert (span.attributes[END_REASON], span.attributes[OUTCOME]) == ENDINGS[plan.ending], plan
        assert span.attributes[EVENTS_TOTAL] == outcome.events, plan
        if plan.ending in CANCELLED_BY_THE_EVENT_LOOP:
            assert outcome.cancelled, plan
        if plan.ending in ("provider error", "error while opening"):
            assert isinstance(outcome.error, ScriptedError), plan
        elif plan.ending == "consumer error":
            assert isinstance(outcome.error, ConsumerError), plan
        else:
            assert outcome.error is None, plan

    assert metric_total(otel, ACTIVE) == 0
    assert metric_total(otel, FINISHED) == STREAMS
    expected_outcomes = Counter(ENDINGS[plan.ending][1] for plan in plans)
    for outcome_name, count in expected_outcomes.items():
        assert metric_total(otel, FINISHED, streamscope__stream__outcome=outcome_name) == count
    assert ledger.outcomes == expected_outcomes
    assert ledger.end_reasons == Counter(ENDINGS[plan.ending][0] for plan in plans)
