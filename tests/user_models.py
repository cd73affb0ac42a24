"""User-defined models and streams, subclasses of the real Pydantic AI bases as third parties write them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, ModelResponseStreamEvent
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, check_allow_model_requests
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage


@dataclass
class PlainWordStream(StreamedResponse):
    """A third party's stream: one text delta per word, one output token each (iterated by `StreamedResponse`'s
    own `__aiter__`, which hands out its cached iterator)."""

    words: list[str] = field(default_factory=list)
    _timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        for word in self.words:
            self._usage = self._usage + RequestUsage(output_tokens=1)
            for event in self._parts_manager.handle_text_delta(vendor_part_id="text", content=word):
                yield event

    @property
    def model_name(self) -> str:
        return "words-1"

    @property
    def provider_name(self) -> str:
        return "acme"

    @property
    def provider_url(self) -> str | None:
        return "https://llm.acme.example:8443/v1"

    @property
    def timestamp(self) -> datetime:
        return self._timestamp

    async def close_stream(self) -> None:
        return None


@dataclass
class WordStream(PlainWordStream):
    """The same stream with an `__aiter__` of its own, as some have."""

    def __aiter__(self) -> AsyncIterator[ModelResponseStreamEvent]:
        return super().__aiter__()


def make_model_class(
    stream_class: type[WordStream],
    base_url: str | None = "https://llm.acme.example:8443/v1",
    *,
    checks_policy: bool = False,
) -> type[Model]:
    """A third party's model class, defined when this is called; `checks_policy`: it calls Pydantic AI's
    `check_allow_model_requests` before each request, as provider models do."""

    class WordModel(Model):
        @property
        def model_name(self) -> str:
            return "words-1"

        @property
        def system(self) -> str:
            return "acme"

        @property
        def base_url(self) -> str | None:
            return base_url

        async def request(
            self,
            messages: list[ModelMessage],
            model_settings: ModelSettings | None,
            model_request_parameters: ModelRequestParameters,
        ) -> ModelResponse:
            if checks_policy:
                check_allow_model_requests()
            raise NotImplementedError

        @asynccontextmanager
        async def request_stream(
            self,
            messages: list[ModelMessage],
            model_settings: ModelSettings | None,
            model_request_parameters: ModelRequestParameters,
            run_context: Any = None,
        ) -> AsyncGenerator[StreamedResponse]:
            if checks_policy:
                check_allow_model_requests()
            yield stream_class(model_request_parameters, words=["one", " two", " three"])

    return WordModel
