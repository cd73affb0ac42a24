"""Policy violations under concurrency, on every path, and with instrumentation layered (extends test_policy.py).

- Denials on every path (`request_stream`, `request`, `Agent.run_stream`, `Agent.run`, `Agent.run_sync`, `Agent.iter`)
  from many asyncio tasks and from threads running event loops of their own are each recorded exactly once — one
  OTel log record, one `streamscope.policy` warning, one counter increment — and each is still raised to its caller
  as the very `RuntimeError` that `check_allow_model_requests` raised.
- A denial is recorded once however many layers instrument the model: `instrument(model)` on top of process-wide
  instrumentation, and Pydantic AI's own `InstrumentedModel` around it.
- Allowed requests record nothing, even when the policy flips to deny while they are streaming: the streams already
  open finish normally, and only the requests made after the flip are violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pydantic_ai.models
import pytest
from opentelemetry.trace import StatusCode
from pydantic_ai import Agent
from pydantic_ai.exceptions import FallbackExceptionGroup
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, check_allow_model_requests
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.instrumented import InstrumentationSettings, InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

import streamscope
from tests.conftest import Instrument, Otel, in_memory_pipeline
from tests.helpers_reliability import (
    OUTCOME,
    messages,
    metric_total,
    open_stream,
)
from tests.openai_server import OpenAIStubServer, StubResponse
from tests.user_models import WordStream, make_model_class

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

MESSAGE = "Model requests are not allowed, since ALLOW_MODEL_REQUESTS is False"
VIOLATION = "streamscope.policy.violation"
VIOLATIONS = "streamscope.policy.violations"
POLICY_LOGGER = "streamscope.policy"


@pytest.fixture
def policy_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger=POLICY_LOGGER)
    return caplog


def openai_model(server: OpenAIStubServer) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))


def denials(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == POLICY_LOGGER]


def violation_logs(otel: Otel) -> list[Any]:
    return [r.log_record for r in otel.logs() if r.log_record.event_name == VIOLATION]


def raised_by_the_policy(error: BaseException) -> bool:
    """The very RuntimeError `check_allow_model_requests` raised: its innermost frame is that function's."""
    if type(error) is not RuntimeError or str(error) != MESSAGE:
        return False
    traceback = error.__traceback__
    assert traceback is not None
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    code = traceback.tb_frame.f_code
    return code.co_name == "check_allow_model_requests" and Path(code.co_filename).parent.name == "models"


# --- every path, from tasks and threads -------------------------------------------------------------------------------
async def via_request_stream(model: Model) -> None:
    async with open_stream(model) as stream:
        async for _ in stream:
            pass


async def via_request(model: Model) -> None:
    await model.request(messages(), None, ModelRequestParameters())


async def via_run_stream(model: Model) -> None:
    async with Agent(model).run_stream("hi") as result:
        await result.get_output()


async def via_run(model: Model) -> None:
    await Agent(model).run("hi")


async def via_iter(model: Model) -> None:
    async with Agent(model).iter("hi") as run:
        async for _ in run:
            pass


ASYNC_PATHS: dict[str, Callable[[Model], Awaitable[None]]] = {
    "request_stream": via_request_stream,
    "request": via_request,
    "Agent.run_stream": via_run_stream,
    "Agent.run": via_run,
    "Agent.iter": via_iter,
}
STREAMING_PATHS = {"request_stream", "Agent.run_stream"}  # Agent.iter requests without streaming unless asked


async def denied(path: str, model: Model) -> BaseException:
    try:
        await ASYNC_PATHS[path](model)
    except RuntimeError as error:
        return error
    raise AssertionError(f"{path} was not denied")


async def test_denials_on_every_path_from_tasks_and_threads_are_each_recorded_once(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rounds, threads = 12, 4
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    errors: list[BaseException] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def in_thread(number: int) -> None:
        try:
            model = openai_model(server)
            start.wait(timeout=30)

            async def run() -> list[BaseException]:
                return list(
                    await asyncio.gather(*(denied(path, model) for _ in range(rounds // 4) for path in ASYNC_PATHS))
                )

            found = asyncio.run(run()) if number % 2 else anyio.run(run)
            # The synchronous API, on the thread's own event loop (closed here: Pydantic AI leaves it open).
            with contextlib.closing(asyncio.new_event_loop()) as loop:
                asyncio.set_event_loop(loop)
                try:
                    for _ in range(2):
                        try:
                            Agent(model).run_sync("hi")
                        except RuntimeError as error:
                            found.append(error)
                finally:
                    asyncio.set_event_loop(None)
            with lock:
                errors.extend(found)
        except BaseException as error:  # reported below
            with lock:
                failures.append(error)

    workers = [threading.Thread(target=in_thread, args=(i,), name=f"deny-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    model = openai_model(server)
    await anyio.to_thread.run_sync(start.wait, 30)
    in_tasks = await asyncio.gather(*(denied(path, model) for _ in range(rounds) for path in ASYNC_PATHS))
    for worker in workers:
        await anyio.to_thread.run_sync(worker.join, 60)
    assert failures == []
    assert not any(worker.is_alive() for worker in workers)

    per_thread = rounds // 4 * len(ASYNC_PATHS) + 2
    every = [*in_tasks, *errors]
    total = rounds * len(ASYNC_PATHS) + threads * per_thread
    assert len(every) == total
    assert all(raised_by_the_policy(error) for error in every)
    assert len({id(error) for error in every}) == total  # one RuntimeError per request, none re-created or shared

    # Each denial recorded exactly once, on every channel.
    assert metric_total(instrumented, VIOLATIONS) == total
    assert len(violation_logs(instrumented)) == total
    assert len(denials(policy_log.records)) == total
    # Streaming paths fail their own stream span, which carries the one violation event.
    streaming = rounds * len(STREAMING_PATHS) + threads * (rounds // 4 * len(STREAMING_PATHS))
    spans = instrumented.stream_spans()
    assert len(spans) == streaming
    for span in spans:
        assert [event.name for event in span.events] == [VIOLATION, "exception"]
        assert span.status.status_code is StatusCode.ERROR
    assert metric_total(instrumented, "streamscope.streams.active") == 0
    assert server.requests == []


# --- layered instrumentation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", ["instrument(model) inside process-wide", "InstrumentedModel around both"])
@pytest.mark.parametrize("path", ["request_stream", "request", "Agent.run_stream"])
async def test_a_denial_is_recorded_once_however_many_layers_instrument_the_model(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    layers: str,
    path: str,
) -> None:
    model: Model = streamscope.instrument(openai_model(server), **instrumented.providers)
    if layers == "InstrumentedModel around both":
        model = InstrumentedModel(model, InstrumentationSettings(tracer_provider=instrumented.tracer_provider))
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    error = await denied(path, model)
    assert raised_by_the_policy(error)
    assert metric_total(instrumented, VIOLATIONS) == 1
    assert len(violation_logs(instrumented)) == 1
    assert len(denials(policy_log.records)) == 1
    events = [event.name for span in instrumented.spans() for event in span.events if event.name == VIOLATION]
    # On the stream span, or on Pydantic AI's request span; a bare `request()` has no span to put it on.
    spanned = path in STREAMING_PATHS or layers == "InstrumentedModel around both"
    assert events == ([VIOLATION] if spanned else [])
    if path in STREAMING_PATHS:
        (span,) = instrumented.stream_spans()  # one stream span, not one per layer
        assert dict(span.attributes or {})[OUTCOME] == "error"


class RouterModel(Model):
    """A third party's router: a `Model` (not a wrapper) passing each request on to the model it picked."""

    def __init__(self, route: Model) -> None:
        super().__init__()
        self.route = route

    @property
    def model_name(self) -> str:
        return "router-1"

    @property
    def system(self) -> str:
        return "router"

    async def request(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await self.route.request(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
        async with self.route.request_stream(*args, **kwargs) as stream:
            yield stream


@pytest.mark.parametrize("router", [FallbackModel, RouterModel])
@pytest.mark.parametrize("path", ["request", "Agent.run", "request_stream"])
async def test_a_denial_deep_in_layers_is_the_outermost_telemetrys_once(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    router: Callable[[Model], Model],
) -> None:
    """`instrument(model, <own providers>)` around a router, all inside process-wide instrumentation (which also
    instruments a third party's router): each streamscope layer sees the denial; it is recorded once (by the
    innermost, which saw it first), for the model that raised it, in the outermost layer's telemetry, and nothing
    goes to the process-wide pipeline."""
    with in_memory_pipeline() as outer:
        model = streamscope.instrument(router(openai_model(server)), **outer.providers)
        monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
        error = await denied(path, model)
        assert raised_by_the_policy(error.exceptions[0] if isinstance(error, BaseExceptionGroup) else error)
        assert metric_total(outer, VIOLATIONS) == 1
        (log,) = violation_logs(outer)
        assert dict(log.attributes or {})["streamscope.policy.model_class"] == "OpenAIChatModel"
        assert dict(log.attributes or {})["gen_ai.request.model"] == "gpt-4o"
        assert len(denials(policy_log.records)) == 1
        assert instrumented.logs() == []
        assert metric_total(instrumented, VIOLATIONS) == 0
        assert instrumented.spans() == []
        assert len(outer.stream_spans()) == (1 if path in STREAMING_PATHS else 0)


@pytest.mark.parametrize("router", [FallbackModel, RouterModel])
@pytest.mark.parametrize("path", ["request", "request_stream"])
async def test_a_denial_behind_a_router_is_the_model_that_made_it(
    otel: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    router: Callable[[Model], Model],
) -> None:
    """Only `instrument(router)`: the one streamscope layer sees the router, but the violation names the model whose
    method called `check_allow_model_requests` (the innermost model frame in the traceback)."""
    model = streamscope.instrument(router(openai_model(server)), **otel.providers)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    await denied(path, model)
    (log,) = violation_logs(otel)
    attributes = dict(log.attributes or {})
    assert attributes["streamscope.policy.model_class"] == "OpenAIChatModel"
    assert (attributes["gen_ai.provider.name"], attributes["gen_ai.request.model"]) == ("openai", "gpt-4o")
    (warning,) = denials(policy_log.records)
    text = warning.getMessage()
    assert " for OpenAIChatModel gpt-4o at pydantic_ai.models.openai" in text
    assert f":OpenAIChatModel.{path}:" in text


async def denied_through_a_fallback(model: Model, path: str, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """`path` on `model` with every request denied, raising a FallbackExceptionGroup: which of its members the
    policy check raised."""
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(FallbackExceptionGroup) as raised:
        await ASYNC_PATHS[path](model)
    return [raised_by_the_policy(member) for member in raised.value.exceptions]


def recorded_violations(otel: Otel, policy_log: pytest.LogCaptureFixture) -> tuple[int | float, int, int]:
    """Violations recorded on each channel: (counter total, OTel log records, stdlib warnings)."""
    return metric_total(otel, VIOLATIONS), len(violation_logs(otel)), len(denials(policy_log.records))


def span_outcomes(otel: Otel) -> list[tuple[str, Any]]:
    return [(s.name, dict(s.attributes or {})["streamscope.stream.outcome"]) for s in otel.stream_spans()]


@pytest.mark.parametrize("path", ["request_stream", "Agent.run_stream"])
async def test_denials_of_a_fallbacks_instrumented_and_plain_models_are_each_recorded_once(
    otel: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """`instrument(FallbackModel(instrument(a), b))` falling back on any error: `a`'s layer records its denial; `b`
    has no layer of its own,
    so the outer layer records `b`'s denial (and only that one) when the fallback gives up."""
    first = streamscope.instrument(openai_model(server), **otel.providers)
    fallback = FallbackModel(first, openai_model(server), fallback_on=(RuntimeError,))  # on any denial, too
    model = streamscope.instrument(fallback, **otel.providers)
    assert await denied_through_a_fallback(model, path, monkeypatch) == [True, True]
    assert recorded_violations(otel, policy_log) == (2, 2, 2)
    # `a`'s attempt is its layer's span; `b`'s, which no layer took, failing last, has none
    assert span_outcomes(otel) == [("chat gpt-4o", "error")]


@pytest.mark.parametrize("path", ["request_stream", "Agent.run_stream"])
async def test_a_denial_through_nested_instrumented_fallbacks_is_recorded_once(
    otel: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    """`instrument(FallbackModel(instrument(FallbackModel(instrument(a)))))`: `a`'s layer records the denial, on
    the span of its attempt; each layer above it only passes it on."""
    inner = FallbackModel(streamscope.instrument(openai_model(server), **otel.providers), fallback_on=(RuntimeError,))
    model = streamscope.instrument(FallbackModel(streamscope.instrument(inner, **otel.providers)), **otel.providers)
    assert await denied_through_a_fallback(model, path, monkeypatch) == [True]
    assert recorded_violations(otel, policy_log) == (1, 1, 1)
    assert span_outcomes(otel) == [("chat gpt-4o", "error")]
    assert [event.name for event in otel.one_stream_span().events] == ["streamscope.policy.violation", "exception"]


WordModel: type[Any] = make_model_class(WordStream)


class StreamingOnlyModel(WordModel):
    """A third party's model that only speaks streaming: its `request` reads its own `request_stream`."""

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        async with self.request_stream(messages, model_settings, model_request_parameters) as stream:
            async for _ in stream:
                pass
        return stream.get()


@pytest.mark.parametrize("layers", ["process-wide", "instrument(model) inside process-wide"])
async def test_a_request_made_of_the_models_own_stream_is_one_stream_span(instrumented: Otel, layers: str) -> None:
    """The layer recording `request`'s violations does not own the request: the stream the model opens inside it is
    instrumented, once, with the outermost layer's telemetry."""
    with in_memory_pipeline() as outer:
        model: Model = StreamingOnlyModel()
        expected = instrumented
        if layers != "process-wide":
            model, expected = streamscope.instrument(model, **outer.providers), outer
        response = await Agent(model).run("hi")
        assert response.output == "one two three"
        (span,) = expected.stream_spans()
        assert dict(span.attributes or {})["gen_ai.usage.output_tokens"] == 3
        assert (outer if expected is instrumented else instrumented).spans() == []


class RequestAsStreamModel(WordModel):
    """A third party's model that streams by asking another model for the whole answer and handing it out as a
    stream (its `request_stream` calls the other model's `request`)."""

    def __init__(self, answering: Model) -> None:
        super().__init__()
        self.answering = answering

    @contextlib.asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[StreamedResponse]:
        response = await self.answering.request(*args[:3])
        yield WordStream(ModelRequestParameters(), words=[str(part) for part in response.parts])


@pytest.mark.parametrize("layers", ["process-wide", "instrument(model) inside process-wide"])
async def test_a_denial_inside_a_stream_built_on_another_models_request_is_recorded_once(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    layers: str,
) -> None:
    """The other model's `request` layer records the denial (it saw it first) and tells the stream's layer, whose
    failed stream span carries nothing more: one violation, one failed stream span."""
    model: Model = RequestAsStreamModel(openai_model(server))
    if layers != "process-wide":
        model = streamscope.instrument(model, **instrumented.providers)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    error = await denied("request_stream", model)
    assert raised_by_the_policy(error)
    assert metric_total(instrumented, VIOLATIONS) == 1
    assert len(violation_logs(instrumented)) == 1
    assert len(denials(policy_log.records)) == 1
    (span,) = instrumented.stream_spans()
    assert dict(span.attributes or {})[OUTCOME] == "error"


class FailureCountingModel(WordModel):
    """A third party's model counting its failed requests before letting each error go on."""

    failures = 0

    async def request(self, *args: Any, **kwargs: Any) -> ModelResponse:
        try:
            check_allow_model_requests()
        except RuntimeError:
            self.failures += 1
            raise
        raise NotImplementedError


async def test_a_denial_caught_and_reraised_is_at_the_line_that_called_the_check(
    otel: Otel, policy_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, instrument: Instrument
) -> None:
    """The call site is the line the traceback records for the calling frame, not the line that frame ended on."""
    model = FailureCountingModel()
    lines, first = inspect.getsourcelines(FailureCountingModel.request)
    [line] = [first + i for i, text in enumerate(lines) if text.strip() == "check_allow_model_requests()"]
    function = f"{FailureCountingModel.request.__module__}.{FailureCountingModel.request.__qualname__}"
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    await denied("request", instrument(model))
    assert model.failures == 1
    (log,) = violation_logs(otel)
    attributes = dict(log.attributes or {})
    assert (attributes["code.function.name"], attributes["code.line.number"]) == (function, line)
    call_site = f"{__name__}:{FailureCountingModel.request.__qualname__}:{line}"
    assert attributes["streamscope.policy.call_site"] == call_site
    (warning,) = denials(policy_log.records)
    assert warning.getMessage().endswith(f"at {call_site}")


NAMELESS_SOURCE = """
class NamelessModel(WordModel):
    async def request(self, *args, **kwargs):
        check_allow_model_requests()
"""


async def test_a_denial_in_code_run_without_a_module_name_is_at_an_unknown_module(
    otel: Otel, policy_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, instrument: Instrument
) -> None:
    """Code run by `exec` with globals of its own has no `__name__`: its call site says the module is unknown."""
    namespace: dict[str, Any] = {"WordModel": WordModel, "check_allow_model_requests": check_allow_model_requests}
    exec(compile(NAMELESS_SOURCE, "<generated>", "exec"), namespace)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    await denied("request", instrument(namespace["NamelessModel"]()))
    (log,) = violation_logs(otel)
    attributes = dict(log.attributes or {})
    assert attributes["code.function.name"] == "<unknown>.NamelessModel.request"
    assert (attributes["code.file.path"], attributes["code.line.number"]) == ("<generated>", 4)
    assert attributes["streamscope.policy.call_site"] == "<unknown>:NamelessModel.request:4"
    (warning,) = denials(policy_log.records)
    assert warning.getMessage().endswith(" at <unknown>:NamelessModel.request:4")


# --- allowed requests, and the policy flipping under load ------------------------------------------------------------
async def test_allowed_streams_record_nothing_when_the_policy_flips_while_they_stream(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allowed, later = 16, 16
    server.default = StubResponse(text=("slow ", "and ", "steady"), delay=0.01)
    model = openai_model(server)
    opened = 0
    all_open = anyio.Event()
    outputs: list[str] = []

    async def allowed_stream() -> None:
        nonlocal opened
        async with open_stream(model) as stream:
            opened += 1
            if opened == allowed:
                all_open.set()
            await all_open.wait()
            async for _ in stream:
                pass
            outputs.append("".join(str(getattr(part, "content", "")) for part in stream.get().parts))

    denied_errors: list[BaseException] = []

    async def later_request(path: str) -> None:
        denied_errors.append(await denied(path, model))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(allowed):
                group.start_soon(allowed_stream)
            await all_open.wait()
            # Every allowed stream is open and now streaming; from here on, requests are denied.
            monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
            for number in range(later):
                group.start_soon(later_request, "request_stream" if number % 2 else "request")

    assert outputs == ["slow and steady"] * allowed
    assert len(denied_errors) == later
    assert all(raised_by_the_policy(error) for error in denied_errors)
    assert len(server.requests) == allowed  # the denied requests never reached the network
    assert metric_total(instrumented, VIOLATIONS) == later
    assert len(violation_logs(instrumented)) == later
    assert len(denials(policy_log.records)) == later
    spans = instrumented.stream_spans()
    complete = [s for s in spans if dict(s.attributes or {})[OUTCOME] == "complete"]
    assert len(complete) == allowed
    for span in complete:
        assert VIOLATION not in [event.name for event in span.events]
        assert span.status.status_code is StatusCode.UNSET
    assert len(spans) == allowed + later // 2
    assert metric_total(instrumented, "streamscope.streams.active") == 0


async def test_allowed_requests_from_tasks_and_threads_record_nothing(
    instrumented: Otel, server: OpenAIStubServer, policy_log: pytest.LogCaptureFixture
) -> None:
    threads, per_thread, tasks = 3, 2, 6
    failures: list[BaseException] = []

    def in_thread() -> None:
        try:
            model = openai_model(server)

            async def run() -> None:
                await asyncio.gather(*(ASYNC_PATHS[path](model) for path in ASYNC_PATHS for _ in range(per_thread)))

            asyncio.run(run())
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=in_thread) for _ in range(threads)]
    for worker in workers:
        worker.start()
    model = openai_model(server)
    await asyncio.gather(*(ASYNC_PATHS[path](model) for path in ASYNC_PATHS for _ in range(tasks)))
    for worker in workers:
        await anyio.to_thread.run_sync(worker.join, 60)
    assert failures == []

    total = len(ASYNC_PATHS) * (tasks + threads * per_thread)
    assert len(server.requests) == total
    assert instrumented.logs() == []
    assert denials(policy_log.records) == []
    assert metric_total(instrumented, VIOLATIONS) == 0
    assert all(VIOLATION not in [e.name for e in span.events] for span in instrumented.spans())
    outcomes = {str(dict(s.attributes or {})[OUTCOME]) for s in instrumented.stream_spans()}
    assert outcomes == {"complete"}
