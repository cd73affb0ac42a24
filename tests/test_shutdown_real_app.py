"""Streams in flight when a real server shuts down still arrive, with their spans, at a real collector.

uvicorn serves `examples/fastapi_app.py` (a FastAPI endpoint streaming `agent.run_stream(...)` from
`OpenAIChatModel` over a loopback server whose answers are slow), exporting with `streamscope.configure()` over
OTLP/HTTP to Phoenix. Clients open streams; once every request has reached the model, the server gets SIGTERM
with a grace period of one second. Every stream that reached the model must have its span in Phoenix, ended as
interrupted. (Before `Configuration.shutdown()` ended streams in flight, none of them arrived.)
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.openai_server import OpenAIStubServer, StubResponse
from tests.servers import Phoenix, Process, free_port, http_get, wait_until

STREAMS = 12
CHUNKS = 40
CHUNK_DELAY = 0.25  # seconds per chunk: an answer takes 10 s, far longer than the grace period


def test_sigterm_with_streams_in_flight_exports_every_stream(phoenix: Phoenix, tmp_path: Path) -> None:
    project = "streamscope-shutdown"
    port = free_port()
    with OpenAIStubServer(StubResponse(text=["word "] * CHUNKS, delay=CHUNK_DELAY)) as model_server:
        env = {
            **os.environ,
            "MODEL_BASE_URL": model_server.base_url,
            "OTEL_SERVICE_NAME": "streamscope-shutdown-test",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.http_url,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        server = Process(
            [
                sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--timeout-graceful-shutdown", "1",
            ],
            tmp_path / "uvicorn.log",
            env=env,
        )  # fmt: skip
        try:
            server.wait_ready(lambda: http_get(f"http://127.0.0.1:{port}/health")[0] == 200, 30, "uvicorn")
            received: list[int] = []

            def client(number: int) -> None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/chat?q=q{number}", timeout=30) as response:
                        while chunk := response.read1(1024):
                            received.append(len(chunk))
                except (OSError, http.client.HTTPException):
                    pass  # the server went away mid-answer: expected

            clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(STREAMS)]
            for thread in clients:
                thread.start()
            wait_until(lambda: len(model_server.requests) >= STREAMS, 20, "every request to reach the model")
            wait_until(lambda: len(received) >= STREAMS, 20, "a first chunk on the clients")
            server.popen.send_signal(signal.SIGTERM)
            server.popen.wait(timeout=30)
            for thread in clients:
                thread.join(timeout=10)
        finally:
            server.stop()
        reached = len(model_server.requests)

    output = server.output()
    assert "ended" in output or "Cancel" in output, output[-2000:]
    # FastAPI's own telemetry puts its server spans in the same project: wait for the stream spans themselves.
    streams = phoenix.wait_for_spans(project, reached, where=_is_stream_span)
    assert len(streams) == reached == STREAMS, output[-3000:]
    for span in streams:
        attributes = _attributes(span)
        assert attributes["streamscope.stream.outcome"] == "interrupted"
        assert attributes["streamscope.stream.end_reason"] in ("shutdown", "task_cancelled")
        assert 0 < attributes["streamscope.stream.events.total"] < CHUNKS + 3
    assert f"ended {reached} stream(s) still in flight at shutdown" in output


def _is_stream_span(span: dict[str, Any]) -> bool:
    return span["name"].startswith("chat ") and "streamscope.stream.outcome" in _attributes(span)


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    return span.get("attributes", {})
