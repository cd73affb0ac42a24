"""`uninstrument()` after everything leaves Pydantic AI exactly as it was.

Every module of this suite already checks, around each test, that every attribute of every Pydantic AI model and
stream class and every function of every Pydantic AI module is the very object it was before the test. This test
puts it all together in one process-wide session: random streams, cancellations and early breaks under load,
a failing redaction hook, streams dropped to the garbage collector, denials from tasks and a
thread, an agent run over real HTTP — and `uninstrument()` called while streams are still open. Afterwards the
open streams still end exactly once, Pydantic AI is exactly as it was, and nothing more is recorded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import sys
import threading
from typing import Any

import anyio
import pydantic_ai.models
import pytest
from pydantic_ai import Agent
from pydantic_ai.models import Model, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.instrumented import InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.conftest import Otel, collect_earlier_garbage
from tests.helpers_reliability import (
    ACTIVE,
    OtelDiagnostics,
    ScriptedError,
    SpanLedger,
    assert_pydantic_ai_unchanged,
    drain,
    metric_total,
    open_stream,
    pydantic_ai_state,
    scripted_model,
)
from tests.openai_server import OpenAIStubServer, StubToolCall

pytestmark = pytest.mark.anyio

POLICY_FUNCTION = "check_allow_model_requests"


def _flaky_redact(text: str) -> str:
    if len(text) % 3 == 0:
        raise ValueError("redaction fault")
    return text.upper()


def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


async def _ending(model: Model, rng: random.Random) -> None:
    """One stream, ended at random: drained, broken, cancelled, failed, or dropped to the garbage collector."""
    how = rng.choice(["drain", "break", "cancel scope", "never", "dropped"])
    try:
        if how == "dropped":
            opening = open_stream(model)
            stream = await opening.__aenter__()
            async for _ in stream:
                break
            return
        with anyio.CancelScope() as scope:
            async with open_stream(model) as stream:
                if how == "never":
                    return
                async for _ in stream:
                    if how == "break":
                        break
                    if how == "cancel scope":
                        scope.cancel()
    except ScriptedError:
        pass


async def test_uninstrument_after_everything_leaves_pydantic_ai_as_it_was(
    otel: Otel, server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch, internal_errors: list[logging.LogRecord]
) -> None:
    collect_earlier_garbage()  # this test runs the collector: on its own garbage only
    # Every model and stream class of interest is imported before the snapshot.
    classes: list[type[Any]] = [
        FunctionModel,
        TestModel,
        OpenAIChatModel,
        FallbackModel,
        WrapperModel,
        InstrumentedModel,
    ]
    originals = {cls: dict(vars(cls)) for cls in [*classes, StreamedResponse]}
    modules_with_policy = {
        name: module.__dict__[POLICY_FUNCTION]
        for name, module in list(sys.modules.items())
        if name.startswith("pydantic_ai") and POLICY_FUNCTION in getattr(module, "__dict__", {})
    }
    before = pydantic_ai_state()
    ledger = SpanLedger()
    otel.tracer_provider.add_span_processor(ledger)
    rng = random.Random(5)

    with OtelDiagnostics() as diagnostics:
        streamscope.instrument(**otel.providers, capture_content=True, redact=_flaky_redact, span_events="coalesce")
        try:
            # Random streams and endings, 300 at once.
            async with anyio.create_task_group() as group:
                for _ in range(300):
                    model = scripted_model(
                        fail_at=rng.choice([None, None, 0, 3]), words=rng.randint(1, 6), checkpoints=True
                    )
                    group.start_soon(_ending, model, rng)
            # An agent over real HTTP, with a tool call.
            server.script([], tool_calls=[StubToolCall("lookup", ['{"key": "k"}'])])
            server.script(["done"])
            model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))
            agent = Agent(model, tools=[lookup])
            async with agent.run_stream("go") as result:
                assert await result.get_output() == "done"
            # Denials, from tasks and a thread.
            with monkeypatch.context() as patch:
                patch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
                raised: list[BaseException] = []

                async def deny() -> None:
                    result = await drain(model)
                    assert isinstance(result.error, RuntimeError)
                    raised.append(result.error)

                def in_thread() -> None:
                    async def run() -> None:
                        await asyncio.gather(*(deny() for _ in range(5)))

                    asyncio.run(run())

                thread = threading.Thread(target=in_thread)
                thread.start()
                await asyncio.gather(*(deny() for _ in range(5)))
                await anyio.to_thread.run_sync(thread.join, 30)
            # Streams still open when uninstrument() is called.
            still_open: list[tuple[Any, Any]] = []
            for _ in range(20):
                opening = open_stream(scripted_model(words=3))
                stream: StreamedResponse = await opening.__aenter__()
                await anext(aiter(stream))
                still_open.append((opening, stream))
        finally:
            streamscope.uninstrument()

        # Restored, while 20 instrumented streams are still open ...
        assert_pydantic_ai_unchanged(before)
        for name, check in modules_with_policy.items():
            assert sys.modules[name].__dict__[POLICY_FUNCTION] is check, name
        for cls, attributes in originals.items():
            assert dict(vars(cls)) == attributes, cls
            assert all(vars(cls)[k] is v for k, v in attributes.items()), cls
        # ... which end normally once consumed and closed.
        for opening, stream in still_open:
            async for _ in stream:
                pass
            await opening.__aexit__(None, None, None)
        still_open.clear()
        gc.collect()
        for _ in range(10):
            await asyncio.sleep(0)
    diagnostics.assert_clean()

    assert len(raised) == 10
    ledger.assert_all_ended_once()
    assert metric_total(otel, ACTIVE) == 0
    assert internal_errors  # the injected faults were hit (and only reported)

    # Nothing is recorded any more.
    spans, logs = len(otel.spans()), len(otel.logs())
    metrics = {
        name: [(attributes, getattr(p, "value", None)) for attributes, p in points]
        for name, points in otel.metrics().items()
    }
    for _ in range(3):
        await drain(scripted_model())
    server.script(["after"])
    async with Agent(model).run_stream("go") as result:
        assert await result.get_output() == "after"
    assert (len(otel.spans()), len(otel.logs())) == (spans, logs)
    after = {
        name: [(attributes, getattr(p, "value", None)) for attributes, p in points]
        for name, points in otel.metrics().items()
    }
    assert after == metrics
