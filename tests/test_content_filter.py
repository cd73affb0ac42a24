"""A provider's content filter stopping an answer is a policy violation, reported once in every mode."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydantic_ai import Agent
from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.conftest import Otel, sum_value
from tests.openai_server import OpenAIStubServer
from tests.test_cost import _both_modes, _inside_instrumented_model

pytestmark = pytest.mark.anyio

VIOLATION = "streamscope.policy.violation"


def openai_model(server: OpenAIStubServer) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider=OpenAIProvider(base_url=server.base_url, api_key="test-key"))


def _explicit(model: Model, otel: Otel) -> Model:
    return streamscope.instrument(model, **otel.providers)


def _process_wide(model: Model, otel: Otel) -> Model:
    streamscope.instrument(**otel.providers)
    return model


MODES: dict[str, Callable[[Model, Otel], Model]] = {
    "explicit": _explicit,
    "process_wide": _process_wide,
    "both": _both_modes,
    "inside_InstrumentedModel": _inside_instrumented_model,
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_filtered_answer_is_one_policy_violation(
    otel: Otel, server: OpenAIStubServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    server.script(["I can"], finish_reason="content_filter")
    agent = Agent(MODES[mode](openai_model(server), otel))
    async with agent.run_stream("Say something.") as result:
        await result.get_output()

    span = otel.one_stream_span()
    expected = {
        "streamscope.policy.name": "content_filter",
        "streamscope.policy.message": "finish_reason=content_filter",
        "streamscope.policy.model_class": "OpenAIChatModel",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    [event] = [e for e in span.events if e.name == VIOLATION]
    attributes = dict(event.attributes or {})
    assert {k: attributes.pop(k) for k in ("gen_ai.response.model", "gen_ai.response.id")}
    assert attributes == expected
    assert (span.attributes or {})["gen_ai.response.finish_reasons"] == ("content_filter",)
    [log] = [r for r in otel.logs() if r.log_record.event_name == VIOLATION]
    assert span.context is not None
    assert log.log_record.span_id == span.context.span_id
    assert log.log_record.attributes is not None
    assert log.log_record.attributes["streamscope.policy.name"] == "content_filter"
    assert sum_value(otel.metrics()["streamscope.policy.violations"], streamscope__policy__name="content_filter") == 1
    assert len(otel.metrics()["streamscope.policy.violations"]) == 1
    [record] = [r for r in caplog.records if r.name == "streamscope.policy"]
    assert record.__dict__["streamscope_policy"] == "content_filter"
    assert record.__dict__["streamscope_model_class"] == "OpenAIChatModel"


async def test_an_answer_that_stopped_normally_is_no_violation(otel: Otel, server: OpenAIStubServer) -> None:
    server.script(["Hello"], finish_reason="stop")
    agent = Agent(streamscope.instrument(openai_model(server), **otel.providers))
    async with agent.run_stream("Say something.") as result:
        await result.get_output()
    assert [e for e in otel.one_stream_span().events if e.name == VIOLATION] == []
    assert "streamscope.policy.violations" not in otel.metrics()
