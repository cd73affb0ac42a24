"""streamscope combined with what users run beside it: every cell counts exactly once.

Modes {`instrument(model)`, `instrument()`, both, `configure()`, `StreamscopeInstrumentor`} x Pydantic AI's own
instrumentation {off, sampled, unsampled, and delegation both ways: an instrumented agent calling an
uninstrumented one from a tool, and the reverse} x models {FunctionModel, TestModel, the real OpenAIChatModel
over a loopback server, FallbackModel whose first model fails or succeeds, InstrumentedModel inside and outside
streamscope, a user-defined Model and StreamedResponse defined before and after streamscope is turned on} x
paths {request_stream, run_stream, run_stream_sync, run_stream_events, iter + node.stream}.

Each cell asserts: stream spans = provider requests; exactly one `gen_ai.client.token.usage` point per token type
per completed request across both libraries, with the response's own values; one time-to-first-chunk point per
completed stream across both; streamscope's usage deltas equal its span attributes; the caller's OTel context
unchanged; `streams.active` back to 0. Pruned: combinations that cannot exist (delegation needs an agent;
`InstrumentedModel` models carry Pydantic AI's instrumentation themselves; inside and outside are the same model
without an explicit streamscope wrapper). Denials have a matrix of their own below.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest
from pydantic_ai import Agent
from pydantic_ai.models import ModelRequestParameters, override_allow_model_requests
from pydantic_ai.models.instrumented import InstrumentedModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.composition import (
    AGENT_PATHS,
    DELEGATIONS,
    MESSAGES,
    MODELS,
    MODES,
    PATHS,
    PROMPT,
    PYDANTIC_AI,
    TOKEN_METRIC,
    TTFC_METRIC,
    Cell,
    CheckingModelBefore,
    Observed,
    attrs,
    expected_spans,
    in_memory_telemetry,
    pairwise_cover,
    pydantic_ai_settings,
    run_cell,
    run_path,
    streamscope_on,
    tokens,
)
from tests.openai_server import OpenAIStubServer
from tests.user_models import WordStream, make_model_class

pytestmark = pytest.mark.anyio

CARRY_THEIR_OWN = ("InstrumentedModel inside", "InstrumentedModel outside")


def cells() -> Iterator[Cell]:
    for mode, pydantic_ai, model, path in itertools.product(MODES, PYDANTIC_AI, MODELS, PATHS):
        if model in CARRY_THEIR_OWN and pydantic_ai != "off":
            continue  # Pydantic AI's instrumentation is the model's own InstrumentedModel
        if model == "InstrumentedModel inside" and mode not in ("explicit", "both"):
            continue  # without an explicit streamscope wrapper, inside and outside are the same model
        yield Cell(mode, pydantic_ai, model, path)
    for mode, delegation, model, path in itertools.product(MODES, DELEGATIONS, ("function", "openai"), AGENT_PATHS):
        yield Cell(mode, delegation, model, path)


CELLS = list(cells())


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer() as stub:
        yield stub


def pydantic_ai_records(cell: Cell) -> bool:
    """Whether Pydantic AI's own instrumentation records the cell's (non-delegated) request."""
    return cell.pydantic_ai != "off" or cell.model in CARRY_THEIR_OWN


def check(cell: Cell, observed: Observed) -> None:
    telemetry = observed.telemetry
    spans = telemetry.stream_spans()
    assert len(spans) == expected_spans(cell, observed.requests), [s.name for s in spans]
    assert all(s.end_time is not None for s in spans)
    completed = observed.responses
    assert completed, "the request completed"
    # one token point per type per completed request, across both libraries, with the response's values
    for token_type in ("input", "output"):
        values = tokens(observed.recorded, token_type)
        count, total = telemetry.histogram(TOKEN_METRIC, gen_ai__token__type=token_type)
        assert (count, total) == (len(values), sum(values)), token_type
    # one time-to-first-chunk point per completed stream (Pydantic AI 2.0.0 records none: streamscope does)
    assert telemetry.histogram(TTFC_METRIC)[0] == len(completed)
    # streamscope's usage deltas and its spans read the same usage
    for field in ("input_tokens", "output_tokens"):
        on_spans = sum(attrs(s).get(f"gen_ai.usage.{field}", 0) for s in spans)
        assert telemetry.counter(f"streamscope.usage.{field}") == on_spans, field
    # every completed response is on a span of its own, with its usage
    completed_spans = [s for s in spans if attrs(s)["streamscope.stream.outcome"] == "complete"]
    assert sorted(attrs(s).get("gen_ai.usage.output_tokens", 0) for s in completed_spans) == sorted(
        r.usage.output_tokens for r in completed
    )
    assert telemetry.counter("streamscope.streams.active") == 0
    # the caller's context is exactly what it was
    assert observed.context_after == observed.context_before
    assert observed.span_after is observed.span_before


def cell_id(cell: Cell) -> str:
    return f"{cell.mode}|{cell.pydantic_ai}|{cell.model}|{cell.path}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The matrices' cells: all of them, or with `--matrix=pairwise` a cover of every pair of dimension values."""
    if "cell" not in metafunc.fixturenames:
        return
    cells = CELLS if metafunc.function.__name__ == "test_cell" else DENIAL_CELLS
    if metafunc.config.getoption("matrix") == "pairwise":
        cells = pairwise_cover(cells)
    metafunc.parametrize("cell", cells, ids=cell_id)


async def test_cell(cell: Cell, server: OpenAIStubServer) -> None:
    observed = await run_cell(cell, server)
    check(cell, observed)


def test_matrix_size() -> None:
    """The matrix's size, for the record (and so a pruning mistake shows)."""
    assert len(CELLS) == 640
    assert {c.mode for c in CELLS} == set(MODES)
    assert {c.path for c in CELLS} == set(PATHS)
    assert {c.model for c in CELLS} == set(MODELS)
    assert {c.pydantic_ai for c in CELLS} == {*PYDANTIC_AI, *DELEGATIONS}


# --- denials ----------------------------------------------------------------------------------------------------
DENIAL_MODELS = ("openai", "user model before", "user model after")
DENIAL_PATHS = ("request_stream", "run_stream", "run", "iter")


def denial_cells() -> Iterator[Cell]:
    for mode, pydantic_ai, model, path in itertools.product(MODES, ("off", "sampled"), DENIAL_MODELS, DENIAL_PATHS):
        yield Cell(mode, pydantic_ai, model, path)


DENIAL_CELLS = list(denial_cells())


async def test_denial_recorded_once(cell: Cell, server: OpenAIStubServer, caplog: pytest.LogCaptureFixture) -> None:
    """A real provider class (or a user model calling `check_allow_model_requests`) denied: recorded exactly once,
    on every channel, and the very `RuntimeError` reaches the caller."""
    requests_before = len(server.requests)
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    with streamscope_on(cell, in_memory_telemetry()) as telemetry:
        if cell.model == "openai":
            provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
            model = OpenAIChatModel("gpt-4o", provider=provider)
        elif cell.model == "user model before":
            model = CheckingModelBefore()
        else:
            model = make_model_class(WordStream, checks_policy=True)()
        if cell.explicit:
            model = streamscope.instrument(model, **telemetry.providers)
        if cell.pydantic_ai == "sampled" and cell.path == "request_stream":
            model = InstrumentedModel(model, pydantic_ai_settings(telemetry))
        agent = Agent(model)
        if cell.pydantic_ai == "sampled":
            agent.instrument = pydantic_ai_settings(telemetry)
        with override_allow_model_requests(False), pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
            if cell.path == "run":
                await agent.run(PROMPT)
            elif cell.path == "request_stream":
                async with model.request_stream(MESSAGES, None, ModelRequestParameters()):
                    pass
            else:
                await run_path(cell.path, model, agent, Observed(telemetry))
        telemetry.tracer_provider.force_flush()
        assert telemetry.counter("streamscope.policy.violations") == 1
        assert len(telemetry.violation_logs()) == 1
        violation_events = [
            e
            for s in telemetry.spans_exporter.get_finished_spans()
            for e in s.events
            if e.name == "streamscope.policy.violation"
        ]
        # streamed: on the failed stream's span; not streamed: on the current span (Pydantic AI's, elsewhere)
        assert len(violation_events) == (0 if cell.path == "run" else 1)
        if cell.path != "run":
            (span,) = telemetry.stream_spans()
            assert attrs(span)["error.type"] == "RuntimeError"
        assert telemetry.counter("streamscope.streams.active") == 0
    assert len([r for r in caplog.records if r.name == "streamscope.policy"]) == 1
    assert len(server.requests) == requests_before  # nothing reached the provider


@pytest.mark.parametrize("cells", [CELLS, DENIAL_CELLS], ids=["streams", "denials"])
def test_the_pairwise_cover_keeps_every_pair_of_values(cells: list[Cell]) -> None:
    """`--matrix=pairwise` (mutation testing) keeps, for any two dimensions, every pair of values the full matrix
    has, in far fewer cells."""

    def value_pairs(subset: list[Cell]) -> set[tuple[int, str, int, str]]:
        found: set[tuple[int, str, int, str]] = set()
        for cell in subset:
            values = (cell.mode, cell.pydantic_ai, cell.model, cell.path)
            found |= {(i, values[i], j, values[j]) for i in range(4) for j in range(i + 1, 4)}
        return found

    cover = pairwise_cover(cells)
    assert value_pairs(cover) == value_pairs(cells)
    assert set(cover) <= set(cells) and len(set(cover)) == len(cover)
    assert len(cover) * 4 < len(cells)
