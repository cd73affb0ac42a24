"""The app `bench_app.py` measures: a FastAPI endpoint streaming an agent's answer, in one of four variants.

    STREAMSCOPE_BENCH_VARIANT=streamscope MODEL_BASE_URL=http://127.0.0.1:8000/v1 \\
        uvicorn benchmarks.chat_app:app --log-level warning

``GET /chat?q=...`` streams ``agent.run_stream(q)``'s ``stream_text(delta=True)`` from an `OpenAIChatModel` at
``MODEL_BASE_URL``, as `examples/fastapi_app.py` does (``debounce_by=None``: one HTTP chunk per text delta).
``STREAMSCOPE_BENCH_VARIANT`` chooses what else the process does:

- ``off``: no OpenTelemetry at all (the baseline);
- ``streamscope``: ``streamscope.configure(...)`` at startup and `Configuration.shutdown()` at the end, exactly as
  in `examples/fastapi_app.py`, default options (``STREAMSCOPE_BENCH_OPTIONS``, a JSON object, passes others);
  the exporters come from the standard ``OTEL_*`` variables (the driver sets OTLP/HTTP traces to Phoenix and a
  Prometheus ``/metrics`` endpoint). FastAPI's own telemetry is turned off: it would trace every request as soon
  as `configure()` sets the global providers;
- ``streamscope_fastapi``: the same with FastAPI's own telemetry left on, as it is by default (FastAPI 0.16x);
- ``pydantic_ai``: Pydantic AI's own instrumentation (``agent.instrument = InstrumentationSettings(...)``, its
  defaults) with an SDK `TracerProvider` and `BatchSpanProcessor` exporting OTLP/HTTP to the same endpoint and a
  `MeterProvider` whose `PrometheusMetricReader` is served on ``OTEL_EXPORTER_PROMETHEUS_HOST``/``_PORT``.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

VARIANTS = ("off", "streamscope", "streamscope_fastapi", "pydantic_ai")
VARIANT = os.environ.get("STREAMSCOPE_BENCH_VARIANT", "off")
if VARIANT not in VARIANTS:
    raise ValueError(f"STREAMSCOPE_BENCH_VARIANT={VARIANT!r}: expected one of {', '.join(VARIANTS)}")

provider = OpenAIProvider(
    base_url=os.environ.get("MODEL_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("MODEL_API_KEY", "not-needed"),
)
agent = Agent(OpenAIChatModel(os.environ.get("MODEL_NAME", "gpt-4o"), provider=provider))


def start_streamscope() -> Callable[[], object]:
    """`streamscope.configure()` as the FastAPI example calls it; returns its shutdown."""
    import streamscope

    options = json.loads(os.environ.get("STREAMSCOPE_BENCH_OPTIONS") or "{}")  # e.g. {"span_events": "coalesce"}
    configuration = streamscope.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "chat-api"), **options)
    return configuration.shutdown  # ends the streams still in flight, then flushes and stops


def start_pydantic_ai() -> Callable[[], object]:
    """Pydantic AI's own instrumentation on SDK providers exporting like `configure()` does; returns a shutdown."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from prometheus_client import start_http_server
    from pydantic_ai.models.instrumented import InstrumentationSettings

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "chat-api")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_ENDPOINT
    reader = PrometheusMetricReader()
    server, thread = start_http_server(
        int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")),
        addr=os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost"),
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    agent.instrument = InstrumentationSettings(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        server.shutdown()
        thread.join(timeout=5)

    return shutdown


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncGenerator[None]:
    shutdown: Callable[[], object] | None = None
    if VARIANT.startswith("streamscope"):
        shutdown = start_streamscope()
    elif VARIANT == "pydantic_ai":
        shutdown = start_pydantic_ai()
    try:
        yield
    finally:
        if shutdown is not None:
            shutdown()


# FastAPI's native telemetry (FastAPI 0.16x) traces every request and records HTTP metrics whenever global
# OpenTelemetry providers are set, as `configure()` sets them: on only in ``streamscope_fastapi``.
_fastapi_options: dict[str, Any] = {}
if "telemetry" in inspect.signature(FastAPI).parameters and VARIANT != "streamscope_fastapi":
    _fastapi_options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
app = FastAPI(lifespan=lifespan, **_fastapi_options)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "variant": VARIANT}


@app.get("/chat")
async def chat(q: str) -> StreamingResponse:
    async def answer() -> AsyncIterator[str]:
        async with agent.run_stream(q) as result:
            async for text in result.stream_text(delta=True, debounce_by=None):
                yield text

    return StreamingResponse(answer(), media_type="text/plain")
