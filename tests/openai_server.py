"""A loopback HTTP server speaking enough of the OpenAI Chat Completions protocol for tests.

The real `OpenAIChatModel` (through the real `openai` SDK and its HTTP client) can stream from it:

    with OpenAIStubServer() as server:
        server.script(['Hel', 'lo'], usage=StubUsage(prompt_tokens=3, completion_tokens=2))
        provider = OpenAIProvider(base_url=server.base_url, api_key='test-key')
        model = OpenAIChatModel('gpt-4o', provider=provider)

Each request to `POST /v1/chat/completions` takes the next scripted `StubResponse` (or the default
one when nothing is queued). Streams use HTTP/1.1 chunked transfer encoding and `Connection: close`,
so a scripted `drop_after` ends the body without its terminating chunk and the client sees an
incomplete read. Error responses carry `x-should-retry: false` unless `should_retry=True`, so the
SDK's automatic retries (two by default) do not consume further scripted responses.
Standard library only.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast

__all__ = ["DEFAULT_TEXT", "OpenAIStubServer", "RecordedRequest", "StubResponse", "StubToolCall", "StubUsage"]

DEFAULT_TEXT: tuple[str, ...] = ("Hello ", "from ", "the stub")


@dataclass(frozen=True)
class StubToolCall:
    """A tool call streamed as `tool_calls` deltas; `arguments` are the JSON fragments, in order."""

    name: str
    arguments: Sequence[str] = ("{}",)
    call_id: str | None = None  # default: call_<n>, numbered per response


@dataclass(frozen=True)
class StubUsage:
    """The `usage` object; the `*_details` objects are sent only when their count is given.

    Under pydantic-ai 2.0.0 with genai-prices 0.2.3, any `reasoning_tokens` (even 0) makes the whole
    `RequestUsage` come out empty (`output_reasoning_tokens` is not a field there yet).
    """

    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the wire form, with `total_tokens`."""
        data: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens is not None:
            data["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            data["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return data


@dataclass(frozen=True)
class StubResponse:
    """One scripted answer. `status` other than 200 sends an OpenAI-style JSON error instead."""

    text: Sequence[str] = DEFAULT_TEXT
    tool_calls: Sequence[StubToolCall] = ()
    finish_reason: str | None = None  # default: 'tool_calls' if there are tool calls, else 'stop'
    usage: StubUsage | None = field(default_factory=StubUsage)  # None: no usage chunk / object
    response_id: str | None = None  # default: chatcmpl-stub-<request number>
    model: str | None = None  # default: echo the request's `model`
    created: int | None = None  # default: now
    delay: float = 0.0  # seconds to wait before each streamed `data:` event
    drop_after: int | None = None  # close the socket abruptly after this many `data:` events
    status: int = 200
    error_message: str = "The server had an error while processing your request."
    error_type: str = "server_error"
    error_code: str | None = None
    should_retry: bool = False  # sent as the `x-should-retry` header on errors


@dataclass(frozen=True)
class RecordedRequest:
    """A request as received; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON body (None when empty)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, stub: OpenAIStubServer) -> None:
        self.stub = stub
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, *args: Any, **kwargs: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        stub = cast(_HTTPServer, self.server).stub
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = json.loads(raw) if raw else None
        headers = {key.lower(): value for key, value in self.headers.items()}
        number = stub._record(RecordedRequest("POST", self.path, headers, body))  # pyright: ignore[reportPrivateUsage]
        if self.path.rstrip("/") != "/v1/chat/completions" or not isinstance(body, dict):
            self._send_json(404, {"error": {"message": f"unsupported: {self.path}", "type": "invalid_request_error"}})
            return
        request = cast(dict[str, Any], body)
        response = stub._next_response()  # pyright: ignore[reportPrivateUsage]
        if response.status != 200:
            error = {"message": response.error_message, "type": response.error_type, "param": None}
            retry = "true" if response.should_retry else "false"
            self._send_json(response.status, {"error": {**error, "code": response.error_code}}, retry)
            return
        response_id = response.response_id or f"chatcmpl-stub-{number}"
        model = response.model or str(request.get("model", "gpt-4o"))
        created = response.created if response.created is not None else int(time.time())
        if request.get("stream"):
            stream_options = cast(dict[str, Any], request.get("stream_options") or {})
            base = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model}
            self._stream(response, base, include_usage=bool(stream_options.get("include_usage")))
        else:
            self._send_json(200, _completion(response, response_id, model, created))

    def _send_json(self, status: int, data: dict[str, Any], should_retry: str | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        if should_retry is not None:
            self.send_header("x-should-retry", should_retry)
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    def _stream(self, response: StubResponse, base: dict[str, Any], *, include_usage: bool) -> None:
        stopping = cast(_HTTPServer, self.server).stub._stopping  # pyright: ignore[reportPrivateUsage]
        events = [
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            for delta, finish in _deltas(response)
        ]
        if include_usage and response.usage is not None:
            events.append({**base, "choices": [], "usage": response.usage.to_json()})
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
            for sent, line in enumerate(lines):
                if response.drop_after is not None and sent >= response.drop_after:
                    self._drop()
                    return
                if response.delay and stopping.wait(response.delay):
                    self._drop()
                    return
                data = line.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away (e.g. a cancelled stream): nothing left to send
            return

    def _drop(self) -> None:
        """Close the connection abruptly: no terminating chunk, and a reset rather than a clean FIN."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


def _tool_call_id(response: StubResponse, index: int) -> str:
    return response.tool_calls[index].call_id or f"call_{index + 1}"


def _finish_reason(response: StubResponse) -> str:
    return response.finish_reason or ("tool_calls" if response.tool_calls else "stop")


def _deltas(response: StubResponse) -> list[tuple[dict[str, Any], str | None]]:
    """Return each choice chunk's `(delta, finish_reason)`: text, tool-call fragments, then the finish."""
    deltas: list[dict[str, Any]] = [{"content": piece} for piece in response.text]
    for index, call in enumerate(response.tool_calls):
        for position, fragment in enumerate(list(call.arguments) or [""]):
            delta: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
            if position == 0:  # the first fragment introduces the call
                delta.update(id=_tool_call_id(response, index), type="function")
                delta["function"] = {"name": call.name, "arguments": fragment}
            deltas.append({"tool_calls": [delta]})
    if not deltas:
        deltas.append({})
    deltas[0] = {"role": "assistant", **deltas[0]}
    return [*((delta, None) for delta in deltas), ({}, _finish_reason(response))]


def _completion(response: StubResponse, response_id: str, model: str, created: int) -> dict[str, Any]:
    """Return a non-streamed `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(response.text) or None, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": _tool_call_id(response, index),
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for index, call in enumerate(response.tool_calls)
        ]
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(response), "logprobs": None}
    data: dict[str, Any] = {"id": response_id, "object": "chat.completion", "created": created, "model": model}
    data["choices"] = [choice]
    if response.usage is not None:
        data["usage"] = response.usage.to_json()
    return data


class OpenAIStubServer:
    """A scripted OpenAI Chat Completions server on 127.0.0.1, run in a daemon thread."""

    def __init__(self, default: StubResponse | None = None) -> None:
        self.default = default or StubResponse()
        self._lock = threading.Lock()
        self._queue: deque[StubResponse] = deque()
        self._requests: list[RecordedRequest] = []
        self._counter = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind a free port and serve in the background; idempotent."""
        if self._server is None:
            self._stopping.clear()
            self._server = _HTTPServer(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-stub", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket, abort delayed streams and join the thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the server must be started)."""
        if self._server is None:
            raise RuntimeError("OpenAIStubServer is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The URL to pass as `OpenAIProvider(base_url=...)`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted responses are still queued."""
        with self._lock:
            return len(self._queue)

    def enqueue(self, *responses: StubResponse) -> None:
        """Queue responses; each request takes the next one, or `default` when none is left."""
        with self._lock:
            self._queue.extend(responses)

    def script(
        self,
        text: Sequence[str] = DEFAULT_TEXT,
        *,
        tool_calls: Sequence[StubToolCall] = (),
        finish_reason: str | None = None,
        usage: StubUsage | None = StubUsage(),  # frozen, so sharing the default is safe
        response_id: str | None = None,
        model: str | None = None,
        delay: float = 0.0,
        drop_after: int | None = None,
    ) -> StubResponse:
        """Queue a successful (or, with `drop_after`, truncated) response and return it."""
        response = StubResponse(
            text=tuple(text),
            tool_calls=tuple(tool_calls),
            finish_reason=finish_reason,
            usage=usage,
            response_id=response_id,
            model=model,
            delay=delay,
            drop_after=drop_after,
        )
        self.enqueue(response)
        return response

    def script_error(
        self,
        status: int = 500,
        message: str = "The server had an error while processing your request.",
        *,
        error_type: str = "server_error",
        code: str | None = None,
        should_retry: bool = False,
    ) -> StubResponse:
        """Queue an HTTP error with an OpenAI-style JSON body and return it."""
        response = StubResponse(
            status=status, error_message=message, error_type=error_type, error_code=code, should_retry=should_retry
        )
        self.enqueue(response)
        return response

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return next(self._counter)

    def _next_response(self) -> StubResponse:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default
