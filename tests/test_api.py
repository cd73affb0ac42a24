"""The public surface: `__all__`, the entry point, option validation, the capture-content environment variable,
`instrument(model)` idempotence, and `instrument()`/`uninstrument()` restoring every patched attribute."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import entry_points, requires, version
from types import ModuleType
from typing import Any, cast

import pydantic_ai.models
import pytest
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from packaging.requirements import Requirement
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel

import streamscope
from streamscope import Options, StreamscopeInstrumentor, StreamscopeModel
from streamscope._model import REQUEST_METHODS
from tests.conftest import Otel, sum_value
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
POLICY_FUNCTION = "check_allow_model_requests"
_MISSING = object()


# --- helpers --------------------------------------------------------------------------------------
async def _hello(_messages: list[ModelMessage], _info: AgentInfo) -> AsyncIterator[str]:
    yield "Hello "
    yield "world"


def function_model() -> FunctionModel:
    return FunctionModel(stream_function=_hello)


def messages() -> list[ModelMessage]:
    return [ModelRequest(parts=[UserPromptPart("hi")])]


async def consume_stream(model: Model) -> None:
    async with model.request_stream(messages(), None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass


async def run_agent_stream(model: Model) -> str:
    async with Agent(model).run_stream("hi") as result:
        return await result.get_output()


def content_events(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name.startswith("streamscope.stream.part_")]


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    seen: list[type[Any]] = []
    pending = [cls]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.append(current)
            pending.extend(current.__subclasses__())
    return seen


Key = tuple[str, Any, str]


MODEL_METHODS = ("request_stream", "__init_subclass__", *REQUEST_METHODS)


def snapshot() -> dict[Key, Any]:
    """What instrument() could patch: each class's own request methods, `__aiter__` and `__init_subclass__`, and
    each module's policy check (which it must leave alone)."""
    state: dict[Key, Any] = {}
    for cls in _subclasses(Model):
        for name in MODEL_METHODS:
            state["class", cls, name] = cls.__dict__.get(name, _MISSING)
    for cls in _subclasses(StreamedResponse):
        for name in ("__aiter__", "__init_subclass__"):
            state["class", cls, name] = cls.__dict__.get(name, _MISSING)
    for name, module in list(sys.modules.items()):
        if name.startswith("pydantic_ai") and isinstance(module, ModuleType):  # pyright: ignore[reportUnnecessaryIsInstance]
            state["module", name, POLICY_FUNCTION] = module.__dict__.get(POLICY_FUNCTION, _MISSING)
    return state


def changed(before: dict[Key, Any], after: dict[Key, Any]) -> set[Key]:
    return {key for key, value in before.items() if after.get(key, _MISSING) is not value}


def assert_restored(before: dict[Key, Any]) -> None:
    after = snapshot()
    assert set(after) == set(before)
    assert changed(before, after) == set()


def stream_metric_totals(otel: Otel) -> dict[str, Any]:
    """Everything streamscope's stream metrics hold now (cumulative), to compare before/after."""
    totals: dict[str, Any] = {}
    for name, points in otel.metrics().items():
        if name.startswith(("streamscope.", "gen_ai.")):
            totals[name] = sorted(
                (sorted(attrs.items()), getattr(point, "value", None), getattr(point, "count", None))
                for attrs, point in points
            )
    return totals


@pytest.fixture
def process_wide() -> Iterator[None]:
    """For tests that call instrument()/uninstrument() themselves: never leave the process instrumented."""
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    try:
        yield
    finally:
        if StreamscopeInstrumentor().is_instrumented_by_opentelemetry:
            streamscope.uninstrument()


# --- __all__ and the entry point -----------------------------------------------------------------
def test_importing_streamscope_imports_neither_pydantic_ai_nor_opentelemetry() -> None:
    """`import streamscope` is cheap (pytest loads its plugin in every run); the rest comes on first use."""
    code = (
        "import sys, streamscope, streamscope.pytest_plugin\n"
        "assert not {'pydantic_ai', 'opentelemetry'} & {m.split('.')[0] for m in sys.modules}, sorted(sys.modules)\n"
        "streamscope.instrument\n"
        "assert 'pydantic_ai' in sys.modules and 'opentelemetry' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _mutmut_artefact(name: str, value: Any) -> bool:
    """A name `make mutation` adds to a mutated copy of the package (its trampolines and their table)."""
    return (
        "__mutmut_" in name
        or name.startswith("mutants_")
        or name == "MutantDict"  # a typing alias: its __module__ does not say where it comes from
        or getattr(value, "__module__", "").startswith("mutmut")
    )


def test_all_is_sorted_complete_and_importable() -> None:
    names = list(streamscope.__all__)
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    documented = {
        "Configuration",
        "ContentCapture",
        "Options",
        "SpanEventMode",
        "StreamscopeInstrumentor",
        "StreamscopeModel",
        "__version__",
        "configure",
        "instrument",
        "uninstrument",
    }
    assert documented <= set(names)

    for name in names:  # each is imported on first use
        getattr(streamscope, name)
    public = {
        name
        for name, value in vars(streamscope).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and type(value).__module__ != "__future__"  # `from __future__ import annotations` binds a name
        and not _mutmut_artefact(name, value)
    }
    assert public == {name for name in names if not name.startswith("_")}
    for name in names:  # nothing private: only dunders such as __version__ may start with an underscore
        assert not name.startswith("_") or (name.startswith("__") and name.endswith("__")), name

    namespace: dict[str, Any] = {}
    exec("from streamscope import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(names)
    module = importlib.import_module("streamscope")
    for name in names:
        assert getattr(module, name) is namespace[name]
    assert streamscope.__version__ == version("streamscope")


def test_entry_point_loads_the_instrumentor() -> None:
    ours = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.value.split(":")[0] == "streamscope"]
    assert len(ours) == 1
    (entry_point,) = ours
    assert entry_point.name == "pydantic_ai_streams"
    assert entry_point.load() is StreamscopeInstrumentor
    assert entry_point.dist is not None
    assert entry_point.dist.name == "streamscope"
    assert issubclass(StreamscopeInstrumentor, BaseInstrumentor)
    assert StreamscopeInstrumentor() is StreamscopeInstrumentor()


def test_instrumentation_dependencies() -> None:
    dependencies = list(StreamscopeInstrumentor().instrumentation_dependencies())
    assert len(dependencies) == 1
    requirement = Requirement(dependencies[0])
    assert requirement.name == "pydantic-ai-slim"
    # the same range the package itself requires, and satisfied by what is installed
    declared = [Requirement(r) for r in requires("streamscope") or []]
    runtime = [r for r in declared if r.name == "pydantic-ai-slim" and r.marker is None]
    assert [r.specifier for r in runtime] == [requirement.specifier]
    assert requirement.specifier.contains(version("pydantic-ai-slim"))
    assert not requirement.specifier.contains("1.99")
    assert not requirement.specifier.contains("3.0")
    assert get_dependency_conflicts(dependencies) is None


async def test_entry_point_instrumentor_is_the_facade(otel: Otel, process_wide: None) -> None:
    """`opentelemetry-instrument` calls the loaded class; the facade's uninstrument() undoes it."""
    (entry_point,) = [
        ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.value.split(":")[0] == "streamscope"
    ]
    entry_point.load()().instrument(**otel.providers)
    assert StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    await consume_stream(function_model())
    assert otel.one_stream_span().name == "chat function::_hello"
    streamscope.uninstrument()
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    await consume_stream(function_model())
    assert len(otel.stream_spans()) == 1


# --- option validation ----------------------------------------------------------------------------
BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"bogus_option": 1}, TypeError, "bogus_option"),
    ({"tracer_provider": object()}, TypeError, "tracer_provider"),
    ({"tracer_provider": NoOpMeterProvider()}, TypeError, "tracer_provider"),
    ({"meter_provider": "meter"}, TypeError, "meter_provider"),
    ({"meter_provider": NoOpTracerProvider()}, TypeError, "meter_provider"),
    ({"logger_provider": 1}, TypeError, "logger_provider"),
    ({"logger_provider": NoOpTracerProvider()}, TypeError, "logger_provider"),
    ({"capture_content": "yes"}, ValueError, "capture_content"),
    ({"capture_content": ""}, ValueError, "capture_content"),
    ({"capture_content": 1}, TypeError, "capture_content"),
    ({"max_content_length": 0}, ValueError, "max_content_length"),
    ({"max_content_length": -1}, ValueError, "max_content_length"),
    ({"max_content_length": "10"}, TypeError, "max_content_length"),
    ({"max_content_length": True}, TypeError, "max_content_length"),
    ({"max_content_length": 10.0}, TypeError, "max_content_length"),
    ({"redact": "not callable"}, TypeError, "redact"),
    ({"span_events": "bogus"}, ValueError, "span_events"),
    ({"span_events": "ALL"}, ValueError, "span_events"),
    ({"usage_flush_interval": -1}, ValueError, "usage_flush_interval"),
    ({"usage_flush_interval": 61}, ValueError, "usage_flush_interval"),
    ({"usage_flush_interval": 60.5}, ValueError, "usage_flush_interval"),
    ({"usage_flush_interval": "x"}, TypeError, "usage_flush_interval"),
    ({"usage_flush_interval": True}, TypeError, "usage_flush_interval"),
]


def stable_id(value: object) -> str:
    """`repr(value)` without a memory address: the same test has the same id in every process (mutmut, -k, xdist)."""
    return re.sub(r" at 0x[0-9a-f]+>$", ">", repr(value))


BAD_IDS = [f"{next(iter(kwargs))}={stable_id(next(iter(kwargs.values())))}" for kwargs, _, _ in BAD_OPTIONS]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"colour": 2, "bogus": 1},
            "unknown streamscope option(s): bogus, colour; expected some of: capture_content, chunk_timing, cost, "
            "logger_provider, max_content_length, meter_provider, redact, span_events, stall_threshold, "
            "tracer_provider, usage_flush_interval",
        ),
        (
            {"capture_content": "yes"},
            "capture_content must be one of NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT (or True/False/None), "
            "got 'yes'",
        ),
        ({"span_events": "bogus"}, "span_events must be one of ('all', 'coalesce', 'none'), got 'bogus'"),
        ({"chunk_timing": "each"}, "chunk_timing must be one of ('summary', 'per_chunk'), got 'each'"),
        ({"stall_threshold": 0}, "stall_threshold must be more than 0 and at most 86400 seconds, got 0"),
    ],
    ids=["unknown", "capture_content", "span_events", "chunk_timing", "stall_threshold"],
)
def test_a_bad_options_message_says_what_is_allowed(options: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        streamscope.instrument(function_model(), **options)
    assert str(raised.value) == message


@pytest.mark.parametrize(("options", "error", "option"), BAD_OPTIONS, ids=BAD_IDS)
def test_bad_option_for_one_model(options: dict[str, Any], error: type[Exception], option: str) -> None:
    model = function_model()
    with pytest.raises(error, match=re.escape(option)) as excinfo:
        streamscope.instrument(model, **options)
    assert type(excinfo.value) is error
    # a model already instrumented still has its options checked
    instrumented = streamscope.instrument(model)
    with pytest.raises(error, match=re.escape(option)):
        streamscope.instrument(instrumented, **options)


@pytest.mark.parametrize(("options", "error", "option"), BAD_OPTIONS, ids=BAD_IDS)
async def test_bad_option_process_wide_patches_nothing(
    otel: Otel, process_wide: None, options: dict[str, Any], error: type[Exception], option: str
) -> None:
    before = snapshot()
    with pytest.raises(error, match=re.escape(option)) as excinfo:
        streamscope.instrument(**options)
    assert type(excinfo.value) is error
    assert not StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    assert_restored(before)
    await consume_stream(function_model())
    assert otel.stream_spans() == []

    # a correct call afterwards instruments as usual
    streamscope.instrument(**otel.providers)
    assert StreamscopeInstrumentor().is_instrumented_by_opentelemetry
    await consume_stream(function_model())
    span = otel.one_stream_span()
    assert dict(span.attributes or {})["streamscope.stream.outcome"] == "complete"
    streamscope.uninstrument()
    assert_restored(before)


def test_bad_option_reported_even_when_already_instrumented(instrumented: Otel) -> None:
    with pytest.raises(ValueError, match="max_content_length"):
        streamscope.instrument(max_content_length=0)


def test_good_options_are_kept(otel: Otel) -> None:
    def redact(text: str) -> str:
        return text.upper()

    model = streamscope.instrument(
        function_model(),
        **otel.providers,
        capture_content=True,
        max_content_length=1,
        redact=redact,
        span_events="coalesce",
        usage_flush_interval=60,
    )
    assert isinstance(model, StreamscopeModel)
    assert model.telemetry.options == Options(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        logger_provider=otel.logger_provider,
        capture_content="span_only",
        max_content_length=1,
        redact=redact,
        span_events="coalesce",
        usage_flush_interval=60.0,
    )
    for mode in ("all", "coalesce", "none"):
        options = cast(StreamscopeModel, streamscope.instrument(function_model(), span_events=mode)).telemetry.options
        assert options.span_events == mode
    zero = cast(StreamscopeModel, streamscope.instrument(function_model(), usage_flush_interval=0)).telemetry.options
    assert zero.usage_flush_interval == 0.0
    defaults = cast(StreamscopeModel, streamscope.instrument(function_model(), capture_content=False)).telemetry
    assert defaults.options == Options(capture_content="no_content") == Options()
    for name in ("NO_CONTENT", "span_only", "Event_Only", "SPAN_AND_EVENT"):
        model = cast(StreamscopeModel, streamscope.instrument(function_model(), capture_content=name))
        assert model.telemetry.options.capture_content == name.lower()


# --- OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT ------------------------------------------
async def _content_where(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, env: str | None, **options: Any
) -> tuple[bool, bool]:
    """(content on span events, content on log records) for one stream under `env` and `options`."""
    if env is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, env)
    await consume_stream(streamscope.instrument(function_model(), **otel.providers, **options))
    span = otel.one_stream_span()
    events = content_events(span)
    assert [e["streamscope.content.length"] for e in events] == [6, 5, 11]
    captured = [e.get("streamscope.content") for e in events]
    assert captured in ([None, None, None], ["Hello ", "world", "Hello world"])
    logs = [r.log_record for r in otel.logs() if (r.log_record.event_name or "").startswith("streamscope.stream.")]
    if logs:  # one per event with content, named as its span event, correlated with the stream span
        assert [(r.event_name, dict(r.attributes or {})["streamscope.content"]) for r in logs] == [
            ("streamscope.stream.part_start", "Hello "),
            ("streamscope.stream.part_delta", "world"),
            ("streamscope.stream.part_end", "Hello world"),
        ]
        assert span.context is not None
        assert {(r.trace_id, r.span_id) for r in logs} == {(span.context.trace_id, span.context.span_id)}
        assert [r.timestamp for r in logs] == [
            e.timestamp for e in span.events if e.name in {r.event_name for r in logs}
        ]
    return captured[0] is not None, bool(logs)


async def _content_on_span(otel: Otel, monkeypatch: pytest.MonkeyPatch, env: str | None, **options: Any) -> bool:
    return (await _content_where(otel, monkeypatch, env, **options))[0]


@pytest.mark.parametrize(
    ("env", "where"),
    [
        ("SPAN_ONLY", (True, False)),
        ("span_only", (True, False)),
        ("true", (True, False)),
        (" TRUE ", (True, False)),
        ("EVENT_ONLY", (False, True)),
        ("event_only", (False, True)),
        ("SPAN_AND_EVENT", (True, True)),
        ("NO_CONTENT", (False, False)),
        ("false", (False, False)),
        ("", (False, False)),  # empty means unset
        (None, (False, False)),
    ],
    ids=repr,
)
async def test_env_capture_modes(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, env: str | None, where: tuple[bool, bool]
) -> None:
    assert await _content_where(otel, monkeypatch, env) == where


@pytest.mark.parametrize(
    ("option", "where"),
    [("EVENT_ONLY", (False, True)), ("span_and_event", (True, True)), (True, (True, False)), (False, (False, False))],
)
async def test_explicit_capture_modes_override_env(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, option: Any, where: tuple[bool, bool]
) -> None:
    assert (
        await _content_where(
            otel, monkeypatch, "SPAN_AND_EVENT" if not any(where) else "NO_CONTENT", capture_content=option
        )
        == where
    )


async def test_redaction_and_truncation_apply_to_log_records(otel: Otel) -> None:
    model = streamscope.instrument(
        function_model(), **otel.providers, capture_content="EVENT_ONLY", redact=str.upper, max_content_length=4
    )
    await consume_stream(model)
    logs = [dict(r.log_record.attributes or {}) for r in otel.logs()]
    assert [(a["streamscope.content"], a.get("streamscope.content.truncated")) for a in logs] == [
        ("HELL", True),
        ("WORL", True),
        ("HELL", True),
    ]
    assert all("streamscope.content" not in e for e in content_events(otel.one_stream_span()))


async def test_env_unknown_value_is_ignored_with_a_warning(
    otel: Otel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope")
    assert await _content_on_span(otel, monkeypatch, "bogus") is False
    warnings = [r.getMessage() for r in caplog.records if r.name == "streamscope" and ENV in r.getMessage()]
    assert warnings == [f"Ignoring {ENV}='bogus': expected NO_CONTENT, SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT"]


async def test_explicit_capture_false_overrides_env(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _content_on_span(otel, monkeypatch, "SPAN_ONLY", capture_content=False) is False


async def test_explicit_capture_true_overrides_env(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _content_on_span(otel, monkeypatch, "NO_CONTENT", capture_content=True) is True


async def test_explicit_capture_none_reads_env(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _content_on_span(otel, monkeypatch, "SPAN_AND_EVENT", capture_content=None) is True


async def test_env_is_read_at_instrument_time(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    model = streamscope.instrument(function_model(), tracer_provider=otel.tracer_provider)
    monkeypatch.setenv(ENV, "SPAN_ONLY")
    await consume_stream(model)
    assert [e.get("streamscope.content") for e in content_events(otel.one_stream_span())] == [None, None, None]


async def test_env_applies_process_wide(otel: Otel, monkeypatch: pytest.MonkeyPatch, process_wide: None) -> None:
    monkeypatch.setenv(ENV, "SPAN_ONLY")
    streamscope.instrument(**otel.providers)
    await consume_stream(function_model())
    streamscope.uninstrument()
    contents = [e.get("streamscope.content") for e in content_events(otel.one_stream_span())]
    assert contents == ["Hello ", "world", "Hello world"]


# --- instrument(model) ----------------------------------------------------------------------------
async def test_instrument_model_twice_is_a_no_op(otel: Otel) -> None:
    first = streamscope.instrument(function_model(), tracer_provider=otel.tracer_provider)
    assert isinstance(first, StreamscopeModel)
    assert streamscope.instrument(first) is first
    assert streamscope.instrument(first, tracer_provider=otel.tracer_provider, span_events="none") is first
    assert first.telemetry.options.span_events == "all"
    await consume_stream(first)
    assert otel.one_stream_span().name == "chat function::_hello"


@pytest.mark.parametrize("outer", [WrapperModel, InstrumentedModel], ids=["WrapperModel", "InstrumentedModel"])
async def test_instrument_model_wrapped_in_another_wrapper_is_a_no_op(otel: Otel, outer: type[WrapperModel]) -> None:
    inner = streamscope.instrument(function_model(), tracer_provider=otel.tracer_provider)
    assert isinstance(inner, StreamscopeModel)
    wrapper = outer(inner)
    assert wrapper.wrapped is inner
    assert streamscope.instrument(wrapper) is wrapper
    await consume_stream(wrapper)
    assert otel.one_stream_span().name == "chat function::_hello"
    assert await run_agent_stream(wrapper) == "Hello world"
    assert len(otel.stream_spans()) == 2


async def test_instrument_model_name_is_resolved(otel: Otel) -> None:
    model = streamscope.instrument("test", tracer_provider=otel.tracer_provider)
    assert isinstance(model, StreamscopeModel)
    assert isinstance(model.wrapped, TestModel)
    assert streamscope.instrument(model) is model
    await consume_stream(model)
    span = otel.one_stream_span()
    assert span.name == "chat test"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.provider.name"] == "test"
    assert attributes["gen_ai.request.model"] == "test"


@pytest.mark.parametrize("bad", [42, object(), FunctionModel, b"test", ["test"]], ids=stable_id)
def test_instrument_rejects_non_models(bad: object) -> None:
    with pytest.raises(TypeError, match="Model"):
        streamscope.instrument(cast(Any, bad))


# --- instrument() / uninstrument() ----------------------------------------------------------------
def test_uninstrument_restores_every_patched_attribute(otel: Otel, process_wide: None) -> None:
    openai_module = sys.modules[OpenAIChatModel.__module__]
    assert openai_module.__name__.startswith("pydantic_ai.models.openai")
    before = snapshot()
    assert before["module", openai_module.__name__, POLICY_FUNCTION] is pydantic_ai.models.check_allow_model_requests

    streamscope.instrument(**otel.providers)
    during = snapshot()
    assert set(during) == set(before)
    patched = changed(before, during)
    leaves = (OpenAIChatModel, FunctionModel, TestModel)
    expected = {
        *(("class", cls, "request_stream") for cls in leaves),
        *(("class", cls, "request") for cls in leaves),
        ("class", StreamedResponse, "__aiter__"),
        ("class", Model, "__init_subclass__"),  # classes created later are patched as they are created
        ("class", StreamedResponse, "__init_subclass__"),
        ("class", InstrumentedModel, "request_stream"),  # the sensor marking the streams Pydantic AI records
    }
    assert expected <= patched
    # the abstract base, compared by identity in Pydantic AI, and models that answer by calling another model
    for cls in (Model, WrapperModel, FallbackModel, StreamscopeModel):
        assert ("class", cls, "request_stream") not in patched
    # no module's policy check is touched: denials are recognised where they surface
    assert not any(key[0] == "module" for key in patched)

    streamscope.uninstrument()
    assert_restored(before)
    assert openai_module.check_allow_model_requests is before["module", openai_module.__name__, POLICY_FUNCTION]


async def test_instrument_uninstrument_instrument(otel: Otel, process_wide: None) -> None:
    before = snapshot()

    streamscope.instrument(**otel.providers)
    await consume_stream(function_model())
    assert await run_agent_stream(function_model()) == "Hello world"
    assert len(otel.stream_spans()) == 2
    finished = otel.metrics()["streamscope.streams.finished"]
    assert sum_value(finished, streamscope__stream__outcome="complete") == 2

    streamscope.uninstrument()
    assert_restored(before)
    metrics_before = stream_metric_totals(otel)
    await consume_stream(function_model())
    assert await run_agent_stream(function_model()) == "Hello world"
    assert len(otel.stream_spans()) == 2
    assert stream_metric_totals(otel) == metrics_before

    streamscope.instrument(**otel.providers)
    await consume_stream(function_model())
    assert await run_agent_stream(function_model()) == "Hello world"
    spans = otel.stream_spans()
    assert len(spans) == 4  # exactly one span per stream: no double wrapping
    assert len({s.context.span_id for s in spans if s.context is not None}) == 4
    for span in spans:
        assert span.name == "chat function::_hello"
        assert dict(span.attributes or {})["streamscope.stream.events.total"] == 4
        assert [e.name for e in span.events].count("streamscope.stream.part_start") == 1
    finished = otel.metrics()["streamscope.streams.finished"]
    assert sum_value(finished, streamscope__stream__outcome="complete") == 4
    events = otel.metrics()["streamscope.stream.events"]
    assert sum_value(events, streamscope__event__kind="part_start") == 4

    streamscope.uninstrument()
    assert_restored(before)


async def test_instrument_twice_in_a_row_is_a_no_op(otel: Otel, process_wide: None) -> None:
    before = snapshot()
    streamscope.instrument(**otel.providers)
    during = snapshot()

    other_exporter = InMemorySpanExporter()
    other_provider = TracerProvider()
    other_provider.add_span_processor(SimpleSpanProcessor(other_exporter))
    streamscope.instrument(tracer_provider=other_provider)
    assert changed(during, snapshot()) == set()

    await consume_stream(function_model())
    assert await run_agent_stream(function_model()) == "Hello world"
    spans = otel.stream_spans()
    assert len(spans) == 2
    for span in spans:
        assert dict(span.attributes or {})["streamscope.stream.events.total"] == 4
    assert other_exporter.get_finished_spans() == ()
    other_provider.shutdown()

    # one uninstrument() undoes both calls
    streamscope.uninstrument()
    assert_restored(before)
    await consume_stream(function_model())
    assert len(otel.stream_spans()) == 2


async def test_no_telemetry_after_uninstrument(otel: Otel, process_wide: None) -> None:
    streamscope.instrument(**otel.providers)
    streamscope.uninstrument()
    await consume_stream(function_model())
    assert await run_agent_stream(function_model()) == "Hello world"
    assert otel.spans() == []
    assert stream_metric_totals(otel) == {}
    assert otel.logs() == []


async def test_uninstrument_after_only_explicit_instrumentation_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`uninstrument()` after `instrument(model)` alone removes the sensors and logs nothing (OTel's
    BaseInstrumentor would warn that nothing was instrumented process-wide)."""
    from pydantic_ai.usage import UsageLimits

    original = vars(UsageLimits)["check_before_request"]
    model = streamscope.instrument(FunctionModel(stream_function=_two_words))
    async with Agent(model).run_stream("hi") as result:
        await result.get_output()
    assert vars(UsageLimits)["check_before_request"] is not original  # the guard sensors are on
    caplog.set_level(logging.DEBUG)
    streamscope.uninstrument()
    assert vars(UsageLimits)["check_before_request"] is original
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def _two_words(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "two "
    yield "words"


class _Delegate:
    """Stands in for a wrapped model: each request method returns what it was called with."""

    def __getattr__(self, name: str) -> Any:
        async def method(*args: Any, **kwargs: Any) -> Any:
            return (name, args, kwargs)

        return method


@pytest.mark.anyio
@pytest.mark.parametrize("name", [name for name in REQUEST_METHODS if name in vars(WrapperModel)])
async def test_each_request_method_is_the_wrapped_models_under_its_own_name(otel: Otel, name: str) -> None:
    """StreamscopeModel's non-streamed request methods pass every argument to the wrapped model's method of the
    same name and return its result unchanged; each is named and documented as itself."""
    model = streamscope.instrument(TestModel(), **otel.providers)
    assert isinstance(model, StreamscopeModel)
    model.wrapped = cast(Any, _Delegate())
    method = getattr(StreamscopeModel, name)
    assert (method.__name__, method.__qualname__) == (name, name)
    assert method.__doc__ == f"The wrapped model's `{name}`; a policy violation in it is recorded."
    sentinel = object()
    assert await getattr(model, name)(1, sentinel, option=sentinel) == (name, (1, sentinel), {"option": sentinel})
    assert otel.logs() == []


def test_public_names_are_imported_on_first_use_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each public name is looked up in its module the first time it is used, then kept on the package; an
    unknown name is the usual AttributeError; dir() lists every public name before any is used."""
    modules = {
        "Configuration": "streamscope._configure",
        "configure": "streamscope._configure",
        "StreamscopeInstrumentor": "streamscope._instrumentor",
        "instrument": "streamscope._instrumentor",
        "uninstrument": "streamscope._instrumentor",
        "StreamscopeModel": "streamscope._model",
        "ContentCapture": "streamscope._options",
        "Options": "streamscope._options",
        "SpanEventMode": "streamscope._options",
        "__version__": "streamscope._telemetry",
    }
    assert set(modules) == set(streamscope.__all__)
    for name in modules:
        monkeypatch.delitem(vars(streamscope), name, raising=False)  # as before its first use
    assert set(modules) <= set(dir(streamscope))
    for name, module in modules.items():
        assert name not in vars(streamscope)
        value = getattr(streamscope, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert vars(streamscope)[name] is value, name  # kept: the next use is a plain attribute
    with pytest.raises(AttributeError, match=r"^module 'streamscope' has no attribute 'instrumentt'$"):
        _ = streamscope.instrumentt  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.anyio
async def test_process_wide_request_methods_pass_keyword_arguments_through(instrumented: Otel) -> None:
    """Under `instrument()`, a model's own `request` called with keyword arguments gets every one of them."""
    seen: list[tuple[str, Any]] = []

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(("messages", messages))
        return ModelResponse(parts=[TextPart("fine")], model_name="keywords")

    model = FunctionModel(answer, model_name="keywords")
    parameters = ModelRequestParameters()
    prompt: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart("hello")])]
    response = await model.request(messages=prompt, model_settings=None, model_request_parameters=parameters)
    assert [part.content for part in response.parts if isinstance(part, TextPart)] == ["fine"]
    assert seen == [("messages", prompt)]
    assert instrumented.logs() == []


def test_every_module_imports_on_its_own() -> None:
    """Each of streamscope's modules can be the first one imported (no import cycle depends on the order)."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    package = Path(streamscope.__file__).parent
    modules = sorted(f"streamscope.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__")

    def first_import(module: str) -> tuple[str, int, str]:
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
        )
        return module, result.returncode, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [found for found in pool.map(first_import, modules) if found[1] != 0]
    assert len(modules) > 20
    assert failures == []


async def test_spans_metrics_and_log_records_carry_streamscopes_instrumentation_scope(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each signal names its instrumentation: streamscope, its version, the semantic conventions' schema URL."""
    model = streamscope.instrument(make_model_class(WordStream, checks_policy=True)(), **otel.providers)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)
    async with model.request_stream(SCOPE_MESSAGES, None, ModelRequestParameters()) as stream:
        async for _ in stream:
            pass
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
        async with model.request_stream(SCOPE_MESSAGES, None, ModelRequestParameters()):
            pass
    expected = ("streamscope", streamscope.__version__, "https://opentelemetry.io/schemas/1.41.0")
    spans = otel.stream_spans()
    assert len(spans) == 2
    for span in spans:
        scope = span.instrumentation_scope
        assert scope is not None
        assert (scope.name, scope.version, scope.schema_url) == expected
    data = otel.metric_reader.get_metrics_data()
    assert data is not None
    metric_scopes = {
        (scope_metrics.scope.name, scope_metrics.scope.version, scope_metrics.scope.schema_url)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
    }
    assert metric_scopes == {expected}
    log_scopes = [
        (log.instrumentation_scope.name, log.instrumentation_scope.version, log.instrumentation_scope.schema_url)
        for log in otel.logs()
    ]
    assert log_scopes == [expected]


SCOPE_MESSAGES: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart("hi")])]
