"""Policy violations: denials by `check_allow_model_requests` in the real `OpenAIChatModel`, process-wide mode."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pydantic_ai.models
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanKind, StatusCode
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models import ModelRequestParameters, override_allow_model_requests
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.conftest import Otel, sum_value
from tests.openai_server import OpenAIStubServer

pytestmark = pytest.mark.anyio

MESSAGE = "Model requests are not allowed, since ALLOW_MODEL_REQUESTS is False"
MESSAGE_PATTERN = f"^{MESSAGE}$"
VIOLATION = "streamscope.policy.violation"
VIOLATIONS_METRIC = "streamscope.policy.violations"
POLICY_LOGGER = "streamscope.policy"


# --- helpers --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallSite:
    """Where a method of the model calls `check_allow_model_requests()`, read from its source."""

    module: str
    qualname: str
    file: str
    line: int

    @property
    def call_site(self) -> str:
        return f"{self.module}:{self.qualname}:{self.line}"


def call_site_of(method: Callable[..., Any]) -> CallSite:
    function = inspect.unwrap(method)
    lines, first = inspect.getsourcelines(function)
    offsets = [i for i, text in enumerate(lines) if "check_allow_model_requests()" in text]
    assert len(offsets) == 1, offsets
    return CallSite(function.__module__, function.__qualname__, function.__code__.co_filename, first + offsets[0])


STREAM_SITE = call_site_of(OpenAIChatModel.request_stream)
REQUEST_SITE = call_site_of(OpenAIChatModel.request)


def messages() -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart("hi")])]


def openai_model(server: OpenAIStubServer) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))


async def consume_stream(model: Any) -> None:
    async with model.request_stream(messages(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass


def expected_attributes(site: CallSite, server: OpenAIStubServer) -> dict[str, Any]:
    return {
        "streamscope.policy.name": "allow_model_requests",
        "streamscope.policy.call_site": site.call_site,
        "streamscope.policy.message": MESSAGE,
        "error.type": "RuntimeError",
        "code.function.name": f"{site.module}.{site.qualname}",
        "code.file.path": site.file,
        "code.line.number": site.line,
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "streamscope.policy.model_class": "OpenAIChatModel",
    }


COUNTER_ATTRIBUTES = {
    "streamscope.policy.name": "allow_model_requests",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
}


def policy_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == POLICY_LOGGER]


def violation_logs(otel: Otel) -> list[Any]:
    return [r.log_record for r in otel.logs() if r.log_record.event_name == VIOLATION]


def assert_raised_unchanged(excinfo: pytest.ExceptionInfo[RuntimeError]) -> None:
    """The very RuntimeError `check_allow_model_requests` raised, not a copy made by streamscope."""
    assert type(excinfo.value) is RuntimeError
    assert str(excinfo.value) == MESSAGE
    innermost = excinfo.traceback[-1]
    assert innermost.frame.code.name == "check_allow_model_requests"
    assert Path(innermost.frame.code.path).name == "__init__.py"
    assert Path(innermost.frame.code.path).parent.name == "models"


def assert_one_stream_denial(
    otel: Otel, caplog: pytest.LogCaptureFixture, server: OpenAIStubServer, site: CallSite = STREAM_SITE
) -> None:
    attributes = expected_attributes(site, server)
    assert site.module.startswith("pydantic_ai.models.openai")
    assert site.qualname == "OpenAIChatModel.request_stream"

    # OTel log record
    logs = otel.logs()
    assert len(logs) == 1
    record = logs[0].log_record
    assert logs[0].instrumentation_scope.name == "streamscope"
    assert record.event_name == VIOLATION
    assert record.severity_number == SeverityNumber.WARN
    assert record.severity_text == "WARN"
    assert dict(record.attributes or {}) == attributes
    assert isinstance(record.body, str)
    assert site.call_site in record.body
    assert MESSAGE in record.body

    # stdlib log record
    (std,) = policy_records(caplog)
    assert std.levelno == logging.WARNING
    text = std.getMessage()
    assert MESSAGE in text
    assert "OpenAIChatModel" in text
    assert "gpt-4o" in text
    assert site.call_site in text
    assert std.__dict__["streamscope_call_site"] == site.call_site
    assert std.__dict__["streamscope_model_class"] == "OpenAIChatModel"

    # counter
    metrics = otel.metrics()
    points = metrics[VIOLATIONS_METRIC]
    assert [attrs for attrs, _ in points] == [COUNTER_ATTRIBUTES]
    assert sum_value(points) == 1

    # the stream span: the violation is an event on it, and it failed with the RuntimeError
    span = otel.one_stream_span()
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    span_attributes = dict(span.attributes or {})
    assert span_attributes["error.type"] == "RuntimeError"
    assert span_attributes["streamscope.stream.outcome"] == "error"
    assert span_attributes["streamscope.stream.end_reason"] == "error"
    assert span_attributes["streamscope.stream.events.total"] == 0
    assert span_attributes["gen_ai.provider.name"] == "openai"
    assert span_attributes["gen_ai.request.model"] == "gpt-4o"
    assert [event.name for event in span.events] == [VIOLATION, "exception"]
    assert dict(span.events[0].attributes or {}) == attributes
    assert dict(span.events[1].attributes or {})["exception.type"] == "RuntimeError"
    assert dict(span.events[1].attributes or {})["exception.message"] == MESSAGE

    # the log record is correlated with the stream span
    assert span.context is not None
    assert record.trace_id == span.context.trace_id
    assert record.span_id == span.context.span_id

    # the failed stream is counted as finished in error, and no longer active
    finished = metrics["streamscope.streams.finished"]
    assert sum_value(finished, streamscope__stream__outcome="error", gen_ai__provider__name="openai") == 1
    assert sum_value(metrics["streamscope.streams.active"]) == 0

    # nothing reached the network
    assert server.requests == []


@contextlib.contextmanager
def flag_false(monkeypatch: pytest.MonkeyPatch) -> Generator[None]:
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    yield


@contextlib.contextmanager
def overridden_false(monkeypatch: pytest.MonkeyPatch) -> Generator[None]:
    with override_allow_model_requests(False):
        yield


DENIALS = pytest.mark.parametrize("deny", [flag_false, overridden_false], ids=["monkeypatch", "override"])


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def policy_caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger=POLICY_LOGGER)
    return caplog


# --- stream denials -------------------------------------------------------------------------------
@DENIALS
async def test_request_stream_denial_is_recorded_once_and_reraised(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    deny: Callable[[pytest.MonkeyPatch], contextlib.AbstractContextManager[None]],
) -> None:
    model = openai_model(server)
    with deny(monkeypatch), pytest.raises(RuntimeError, match=MESSAGE_PATTERN) as excinfo:
        await consume_stream(model)
    assert_raised_unchanged(excinfo)
    assert_one_stream_denial(instrumented, policy_caplog, server)


@DENIALS
async def test_agent_run_stream_denial(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    deny: Callable[[pytest.MonkeyPatch], contextlib.AbstractContextManager[None]],
) -> None:
    agent = Agent(openai_model(server))
    with deny(monkeypatch), pytest.raises(RuntimeError, match=MESSAGE_PATTERN) as excinfo:
        async with agent.run_stream("hi") as result:
            await result.get_output()
    assert_raised_unchanged(excinfo)
    assert_one_stream_denial(instrumented, policy_caplog, server)


@DENIALS
async def test_non_streaming_request_denial(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    deny: Callable[[pytest.MonkeyPatch], contextlib.AbstractContextManager[None]],
) -> None:
    model = openai_model(server)
    tracer = instrumented.tracer_provider.get_tracer("test-app")
    attributes = expected_attributes(REQUEST_SITE, server)
    assert REQUEST_SITE.qualname == "OpenAIChatModel.request"
    assert REQUEST_SITE.module.startswith("pydantic_ai.models.openai")

    with deny(monkeypatch):
        # outside any span: logged without a trace
        with pytest.raises(RuntimeError, match=MESSAGE_PATTERN) as excinfo:
            await model.request(messages(), None, ModelRequestParameters())
        assert_raised_unchanged(excinfo)
        # under the application's span: the violation is an event on it, and the log record is correlated
        with (
            tracer.start_as_current_span("app-operation", record_exception=False, set_status_on_exception=False),
            pytest.raises(RuntimeError, match=MESSAGE_PATTERN),
        ):
            await model.request(messages(), None, ModelRequestParameters())

    assert instrumented.stream_spans() == []
    (app_span,) = instrumented.spans()
    assert app_span.name == "app-operation"
    assert [event.name for event in app_span.events] == [VIOLATION]
    assert dict(app_span.events[0].attributes or {}) == attributes

    logs = instrumented.logs()
    assert len(logs) == 2
    for log in logs:
        assert log.log_record.event_name == VIOLATION
        assert log.log_record.severity_number == SeverityNumber.WARN
        assert dict(log.log_record.attributes or {}) == attributes
    assert logs[0].log_record.trace_id == 0
    assert logs[0].log_record.span_id == 0
    assert app_span.context is not None
    assert logs[1].log_record.trace_id == app_span.context.trace_id
    assert logs[1].log_record.span_id == app_span.context.span_id

    records = policy_records(policy_caplog)
    assert len(records) == 2
    assert [r.getMessage() for r in records] == [
        f"Policy violation: model request denied by check_allow_model_requests ({MESSAGE}) for OpenAIChatModel"
        f" gpt-4o at {REQUEST_SITE.call_site}"
    ] * 2

    points = instrumented.metrics()[VIOLATIONS_METRIC]
    assert [attrs for attrs, _ in points] == [COUNTER_ATTRIBUTES]
    assert sum_value(points) == 2
    assert server.requests == []


# --- allowed requests -----------------------------------------------------------------------------
async def test_allowed_requests_record_no_violation(
    instrumented: Otel, server: OpenAIStubServer, policy_caplog: pytest.LogCaptureFixture
) -> None:
    assert pydantic_ai.models.ALLOW_MODEL_REQUESTS is True
    model = openai_model(server)
    server.script(["Hel", "lo"])
    await consume_stream(model)
    server.script(["Hi"])
    response = await model.request(messages(), None, ModelRequestParameters())
    assert response.parts
    server.script(["Bye"])
    async with Agent(model).run_stream("hi") as result:
        assert await result.get_output() == "Bye"

    assert len(server.requests) == 3
    assert instrumented.logs() == []
    assert policy_records(policy_caplog) == []
    metrics = instrumented.metrics()
    assert VIOLATIONS_METRIC not in metrics or sum_value(metrics[VIOLATIONS_METRIC]) == 0
    spans = instrumented.stream_spans()
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes or {})["streamscope.stream.outcome"] == "complete"
        assert VIOLATION not in [event.name for event in span.events]


async def test_function_model_is_not_subject_to_the_policy(
    instrumented: Otel, policy_caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FunctionModel never calls the check, so denying requests records nothing for it."""

    async def stream(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
        yield "ok"

    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    await consume_stream(FunctionModel(stream_function=stream))
    assert instrumented.logs() == []
    assert policy_records(policy_caplog) == []
    assert dict(instrumented.one_stream_span().attributes or {})["streamscope.stream.outcome"] == "complete"


# --- concurrency ----------------------------------------------------------------------------------
async def test_concurrent_denials_are_each_counted_once(
    instrumented: Otel,
    server: OpenAIStubServer,
    policy_caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks, threads, per_thread = 8, 4, 3
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    barrier = threading.Barrier(threads)
    thread_errors: list[BaseException] = []
    thread_denials: list[str] = []
    lock = threading.Lock()

    async def deny_once(model: OpenAIChatModel) -> str:
        try:
            await consume_stream(model)
        except RuntimeError as error:
            return str(error)
        raise AssertionError("the stream was not denied")

    def in_thread() -> None:
        try:
            model = openai_model(server)
            barrier.wait(timeout=10)

            async def run() -> list[str]:
                return list(await asyncio.gather(*(deny_once(model) for _ in range(per_thread))))

            denied = asyncio.run(run())
            with lock:
                thread_denials.extend(denied)
        except BaseException as error:
            with lock:
                thread_errors.append(error)

    workers = [threading.Thread(target=in_thread, name=f"deny-{i}") for i in range(threads)]
    for worker in workers:
        worker.start()
    model = openai_model(server)
    task_denials = await asyncio.gather(*(deny_once(model) for _ in range(tasks)))
    for worker in workers:
        await anyio.to_thread.run_sync(worker.join, 30)
    assert not any(worker.is_alive() for worker in workers)

    assert thread_errors == []
    total = tasks + threads * per_thread
    assert task_denials == [MESSAGE] * tasks
    assert thread_denials == [MESSAGE] * (threads * per_thread)

    points = instrumented.metrics()[VIOLATIONS_METRIC]
    assert [attrs for attrs, _ in points] == [COUNTER_ATTRIBUTES]
    assert sum_value(points) == total
    logs = violation_logs(instrumented)
    assert len(logs) == total
    assert len(instrumented.logs()) == total
    assert len(policy_records(policy_caplog)) == total

    # one span per denied stream, each with exactly one violation event, and each log record on its own span
    spans = instrumented.stream_spans()
    assert len(spans) == total
    for span in spans:
        assert [event.name for event in span.events] == [VIOLATION, "exception"]
        assert span.status.status_code is StatusCode.ERROR
    span_ids = {(s.context.trace_id, s.context.span_id) for s in spans if s.context is not None}
    assert len(span_ids) == total
    assert {(r.trace_id, r.span_id) for r in logs} == span_ids
    assert server.requests == []


# --- a provider module imported after instrument() --------------------------------------------------
_LATE_IMPORT_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import json
    import logging
    import sys

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import streamscope
    import pydantic_ai.models

    base_url = sys.argv[1]
    PROVIDER_MODULE = "pydantic_ai.models.openai"


    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage() + "\\n" + (record.exc_text or ""))


    internal = Collect()
    logging.getLogger("streamscope.internal").addHandler(internal)
    policy = Collect()
    logging.getLogger("streamscope.policy").addHandler(policy)
    logging.getLogger("streamscope.policy").setLevel(logging.WARNING)

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))

    out = {"loaded_at_start": PROVIDER_MODULE in sys.modules}
    original_check = pydantic_ai.models.check_allow_model_requests
    streamscope.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
    )
    out["loaded_after_instrument"] = PROVIDER_MODULE in sys.modules

    from pydantic_ai.messages import ModelRequest, UserPromptPart
    from pydantic_ai.models import ModelRequestParameters
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    defining = sys.modules[OpenAIChatModel.__module__]
    out["defining_module"] = defining.__name__
    # the class was patched as it was created; the module's policy check is Pydantic AI's own
    patched_request_stream = OpenAIChatModel.__dict__["request_stream"]
    out["class_patched"] = hasattr(patched_request_stream, "__wrapped__")
    inner_request_stream = patched_request_stream.__wrapped__

    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=base_url, api_key="test-key"))
    pydantic_ai.models.ALLOW_MODEL_REQUESTS = False


    async def deny():
        try:
            async with model.request_stream(
                [ModelRequest(parts=[UserPromptPart("hi")])], None, ModelRequestParameters()
            ) as stream:
                async for _ in stream:
                    pass
        except RuntimeError as error:
            return {"type": type(error).__qualname__, "message": str(error)}
        return None


    def violations():
        data = reader.get_metrics_data()
        total = 0
        attributes = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == "streamscope.policy.violations":
                        for point in metric.data.data_points:
                            total += point.value
                            attributes.append(dict(point.attributes))
        return {"total": total, "attributes": attributes}


    def snapshot():
        return {
            "logs": [
                {
                    "event_name": r.log_record.event_name,
                    "severity_number": r.log_record.severity_number.value,
                    "severity_text": r.log_record.severity_text,
                    "attributes": dict(r.log_record.attributes),
                    "trace_id": r.log_record.trace_id,
                    "span_id": r.log_record.span_id,
                }
                for r in logs.get_finished_logs()
            ],
            "spans": [
                {
                    "name": s.name,
                    "scope": s.instrumentation_scope.name,
                    "status": s.status.status_code.name,
                    "attributes": dict(s.attributes),
                    "events": [[e.name, dict(e.attributes)] for e in s.events],
                    "trace_id": s.context.trace_id,
                    "span_id": s.context.span_id,
                }
                for s in spans.get_finished_spans()
            ],
            "violations": violations(),
            "policy_log_records": len(policy.messages),
        }


    def guarded_modules():
        return sorted(
            name
            for name, module in list(sys.modules.items())
            if name.startswith("pydantic_ai")
            and module is not None
            and module.__dict__.get("check_allow_model_requests", original_check) is not original_check
        )


    out["guarded_while_instrumented"] = guarded_modules()
    out["instrumented_denial"] = asyncio.run(deny())
    out["instrumented"] = snapshot()

    streamscope.uninstrument()
    out["site_untouched"] = defining.check_allow_model_requests is original_check
    out["models_restored"] = pydantic_ai.models.check_allow_model_requests is original_check
    out["request_stream_restored"] = OpenAIChatModel.__dict__["request_stream"] is inner_request_stream
    out["guarded_after_uninstrument"] = guarded_modules()
    out["uninstrumented_denial"] = asyncio.run(deny())
    out["uninstrumented"] = snapshot()

    streamscope.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
    )
    out["reinstrumented_class_patched"] = OpenAIChatModel.__dict__["request_stream"] is not inner_request_stream
    out["reinstrumented_denial"] = asyncio.run(deny())
    out["reinstrumented"] = snapshot()
    streamscope.uninstrument()
    out["finally_restored"] = (
        defining.check_allow_model_requests is original_check
        and OpenAIChatModel.__dict__["request_stream"] is inner_request_stream
    )

    out["internal_errors"] = internal.messages
    print(json.dumps(out))
    """
)


def test_provider_module_imported_after_instrument(tmp_path: Path, server: OpenAIStubServer) -> None:
    script = tmp_path / "late_import.py"
    script.write_text(_LATE_IMPORT_SCRIPT, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script), server.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    out = json.loads(completed.stdout.strip().splitlines()[-1])

    assert out["loaded_at_start"] is False
    assert out["loaded_after_instrument"] is False
    assert out["defining_module"] == STREAM_SITE.module
    assert out["class_patched"] is True
    assert out["guarded_while_instrumented"] == []  # no module's name is rebound: denials are seen where they surface
    assert out["internal_errors"] == []

    denial = {"type": "RuntimeError", "message": MESSAGE}
    attributes = expected_attributes(STREAM_SITE, server)

    # instrumented: recorded once, everywhere
    assert out["instrumented_denial"] == denial
    recorded = out["instrumented"]
    (log,) = recorded["logs"]
    assert log["event_name"] == VIOLATION
    assert log["severity_number"] == SeverityNumber.WARN.value
    assert log["severity_text"] == "WARN"
    assert log["attributes"] == attributes
    (span,) = recorded["spans"]
    assert span["scope"] == "streamscope"
    assert span["name"] == "chat gpt-4o"
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "RuntimeError"
    assert [name for name, _ in span["events"]] == [VIOLATION, "exception"]
    assert span["events"][0][1] == attributes
    assert (log["trace_id"], log["span_id"]) == (span["trace_id"], span["span_id"])
    assert recorded["violations"] == {"total": 1, "attributes": [COUNTER_ATTRIBUTES]}
    assert recorded["policy_log_records"] == 1

    # uninstrumented: originals restored, the denial is still raised but no longer recorded
    assert out["site_untouched"] is True
    assert out["models_restored"] is True
    assert out["request_stream_restored"] is True
    assert out["guarded_after_uninstrument"] == []
    assert out["uninstrumented_denial"] == denial
    assert out["uninstrumented"] == recorded

    # instrumented again: the already-imported module is patched again and records again
    assert out["reinstrumented_class_patched"] is True
    assert out["reinstrumented_denial"] == denial
    again = out["reinstrumented"]
    assert len(again["logs"]) == 2
    assert again["logs"][1]["attributes"] == attributes
    assert len(again["spans"]) == 2
    assert again["spans"][1]["status"] == "ERROR"
    assert again["violations"] == {"total": 2, "attributes": [COUNTER_ATTRIBUTES]}
    assert again["policy_log_records"] == 2
    assert out["finally_restored"] is True

    assert server.requests == []
