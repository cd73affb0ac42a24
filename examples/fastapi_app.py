"""A FastAPI endpoint streaming an agent's answer, with streamscope set up at startup and shut down at the end.

    MODEL_BASE_URL=http://127.0.0.1:8000/v1 uvicorn examples.fastapi_app:app

The model is an `OpenAIChatModel` talking to any OpenAI-compatible server at ``MODEL_BASE_URL`` (``MODEL_NAME``,
``MODEL_API_KEY``). `streamscope.configure()` reads the standard ``OTEL_*`` variables (OTLP to
localhost:4318 unless they say otherwise). On shutdown — a SIGTERM, say — `Configuration.shutdown()` first ends
every stream still in flight, so their spans and metrics are exported before the providers stop, even when the
server's grace period has run out.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import streamscope

provider = OpenAIProvider(
    base_url=os.environ.get("MODEL_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("MODEL_API_KEY", "not-needed"),
)
agent = Agent(OpenAIChatModel(os.environ.get("MODEL_NAME", "gpt-4o"), provider=provider))


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncGenerator[None]:
    configuration = streamscope.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "chat-api"))
    try:
        yield
    finally:
        configuration.shutdown()  # ends the streams still in flight, then flushes and stops


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/chat")
async def chat(q: str) -> StreamingResponse:
    async def answer() -> AsyncIterator[str]:
        async with agent.run_stream(q) as result:
            async for text in result.stream_text(delta=True, debounce_by=None):
                yield text

    return StreamingResponse(answer(), media_type="text/plain")
