"""The worker `instructions.py` runs under valgrind for its OpenAI workload: agent requests through a real provider.

    python benchmarks/openai_requests.py VARIANT REQUESTS

Runs ``REQUESTS`` `agent.run_stream(q).stream_text(delta=True)` requests, 8 in flight, every third one left after
3 chunks (as the real-app benchmark's clients do), through `OpenAIChatModel` and the real openai SDK against the
loopback stub at ``MODEL_BASE_URL`` (started by `instructions.py`, outside valgrind), after a 9-request warm-up.
Variants:

- ``off``, ``streamscope``, ``pydantic_ai``: the real-app benchmark's agent and instrumentation, from `chat_app.py`
  (``streamscope.configure()`` with default options, or Pydantic AI's own instrumentation with its defaults;
  exporters from the standard ``OTEL_*`` variables: the driver sets OTLP/HTTP spans to a loopback sink and a
  Prometheus endpoint, as in the real app);
- ``streamscope_usage_flush_off``: ``streamscope`` with ``usage_flush_interval=60`` (no time-based work while a
  stream runs: under valgrind's slowdown the 50 ms flush and the live pricing it may trigger run far more often per
  request than in real time).

Every variant shuts its providers down at the end, so every span is encoded and exported within the count. The
heap left by start-up and warm-up is frozen (`gc.freeze()`) before the measured requests, as `bench_streams.py`
does: a full collection of it lands in one run and not another, which would decide the figure.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from typing import Any

VARIANTS = ("off", "streamscope", "streamscope_usage_flush_off", "pydantic_ai")
IN_FLIGHT = 8
WARMUP = 9
LEAVE_EVERY, LEAVE_AFTER = 3, 3


async def request(agent: Any, number: int, in_flight: asyncio.Semaphore) -> None:
    async with in_flight, agent.run_stream("Tell me something") as result:
        chunks = 0
        async for _ in result.stream_text(delta=True, debounce_by=None):
            chunks += 1
            if number % LEAVE_EVERY == LEAVE_EVERY - 1 and chunks == LEAVE_AFTER:
                break


async def run(requests: int) -> None:
    """The requests within the app's own lifespan: its instrumentation set up before, shut down after."""
    import chat_app  # reads its variant, options and model server from the environment

    async with chat_app.lifespan(chat_app.app):
        in_flight = asyncio.Semaphore(IN_FLIGHT)
        await asyncio.gather(*(request(chat_app.agent, number, in_flight) for number in range(WARMUP)))
        # A full collection of the start-up heap would land in one run and not another: freeze that heap away.
        gc.collect()
        gc.freeze()
        await asyncio.gather(*(request(chat_app.agent, number, in_flight) for number in range(requests)))


def main() -> None:
    variant, requests = sys.argv[1], int(sys.argv[2])
    if variant not in VARIANTS:
        sys.exit(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    os.environ["STREAMSCOPE_BENCH_VARIANT"] = "streamscope" if variant.startswith("streamscope") else variant
    if variant == "streamscope_usage_flush_off":
        os.environ["STREAMSCOPE_BENCH_OPTIONS"] = json.dumps({"usage_flush_interval": 60})
    asyncio.run(run(requests))


if __name__ == "__main__":
    main()
