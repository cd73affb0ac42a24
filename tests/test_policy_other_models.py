"""Denials by embedding and image-generation models (the Pydantic AI releases that have them) are policy violations.

Process-wide instrumentation patches each `EmbeddingModel` and `ImageGenerationModel` class that answers requests
itself (not Pydantic AI's wrappers of them), so a denial by `embed()`, `count_tokens()` or `generate()` is recorded
once, for the model that made it, also inside Pydantic AI's own instrumented wrapper, and still raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_ai.models
import pytest
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope
from tests.conftest import Otel
from tests.openai_server import OpenAIStubServer

embeddings = pytest.importorskip(
    "pydantic_ai.embeddings.openai", reason="embedding models arrived after Pydantic AI 2.0"
)
images = pytest.importorskip("pydantic_ai.images.openai", reason="image models arrived after Pydantic AI 2.0")
embeddings_instrumented = pytest.importorskip("pydantic_ai.embeddings.instrumented")
images_instrumented = pytest.importorskip("pydantic_ai.images.instrumented")
from pydantic_ai.models.instrumented import InstrumentationSettings  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("pydantic_ai_restored")]

VIOLATION = "streamscope.policy.violation"
MESSAGE = "Model requests are not allowed, since ALLOW_MODEL_REQUESTS is False"


def embedding_model(server: OpenAIStubServer) -> Any:
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    return embeddings.OpenAIEmbeddingModel("text-embedding-3-small", provider=provider)


def image_model(server: OpenAIStubServer) -> Any:
    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    return images.OpenAIImageGenerationModel("gpt-image-1", provider=provider)


async def embed(model: Any) -> Any:
    return await model.embed("hi", input_type="query")


async def generate(model: Any) -> Any:
    return await model.generate("a lighthouse at dusk")


KINDS: dict[str, tuple[Callable[[OpenAIStubServer], Any], Callable[[Any], Awaitable[Any]], str, str]] = {
    "embedding": (embedding_model, embed, "OpenAIEmbeddingModel", "text-embedding-3-small"),
    "image generation": (image_model, generate, "OpenAIImageGenerationModel", "gpt-image-1"),
}


def pydantic_ai_wrapper(kind: str, model: Any, otel: Otel) -> Any:
    settings = InstrumentationSettings(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    if kind == "embedding":
        return embeddings_instrumented.InstrumentedEmbeddingModel(model, settings)
    return images_instrumented.InstrumentedImageGenerationModel(model, options=settings)


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "in Pydantic AI's instrumented wrapper"])
@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_denial_by_an_embedding_or_image_model_is_one_violation(
    instrumented: Otel,
    server: OpenAIStubServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    wrapped: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="streamscope.policy")
    make, call, model_class, model_name = KINDS[kind]
    model = make(server)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError) as raised:
        await call(pydantic_ai_wrapper(kind, model, instrumented) if wrapped else model)
    assert str(raised.value) == MESSAGE
    [log] = [r.log_record for r in instrumented.logs() if r.log_record.event_name == VIOLATION]
    attributes = dict(log.attributes or {})
    assert attributes["streamscope.policy.name"] == "allow_model_requests"
    assert attributes["streamscope.policy.model_class"] == model_class
    assert attributes["gen_ai.request.model"] == model_name
    method = "embed" if kind == "embedding" else "generate"
    assert attributes["code.function.name"].endswith(f".{model_class}.{method}")
    [warning] = [r for r in caplog.records if r.name == "streamscope.policy"]
    assert f" for {model_class} {model_name} at " in warning.getMessage()
    counted = [p.value for _, p in instrumented.metrics()["streamscope.policy.violations"]]
    assert counted == [1]
    assert server.requests == []


async def test_an_embedding_models_class_made_after_instrument_is_patched_too(
    instrumented: Otel, server: OpenAIStubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class MyEmbeddingModel(embeddings.OpenAIEmbeddingModel):  # type: ignore[misc, name-defined]
        async def embed(self, *args: Any, **kwargs: Any) -> Any:
            return await super().embed(*args, **kwargs)

    provider = OpenAIProvider(base_url=server.base_url, api_key="test-key")
    model = MyEmbeddingModel("text-embedding-3-small", provider=provider)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS"):
        await embed(model)
    [log] = [r.log_record for r in instrumented.logs() if r.log_record.event_name == VIOLATION]
    assert dict(log.attributes or {})["streamscope.policy.model_class"] == MyEmbeddingModel.__qualname__


def test_uninstrumented_embedding_and_image_models_are_left_as_they_were(otel: Otel) -> None:
    methods = {
        embeddings.OpenAIEmbeddingModel: ("embed", "count_tokens", "max_input_tokens"),
        images.OpenAIImageGenerationModel: ("generate",),
    }
    before = {(cls, name): cls.__dict__.get(name) for cls, names in methods.items() for name in names}
    streamscope.instrument(**otel.providers)
    patched = {
        key for key, original in before.items() if original is not None and key[0].__dict__[key[1]] is not original
    }
    streamscope.uninstrument()
    assert patched == {key for key, original in before.items() if original is not None}
    assert {(cls, name): cls.__dict__.get(name) for cls, names in methods.items() for name in names} == before
