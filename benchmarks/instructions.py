"""Marginal CPU instructions per stream event and per stream, counted by valgrind (deterministic, unlike wall time).

    make bench-instructions     # or: .venv/bin/python benchmarks/instructions.py [--json PATH] [--src DIR]

Per event: each variant drains one text stream of 1,000 and one of 5,000 deltas under
`valgrind --tool=callgrind`; the difference divided by 4,000 is what one more event costs, with everything a
stream costs once (open, close, span events) cancelled out. Per stream: each variant opens, drains and closes
50 and then 250 one-event streams; the difference divided by 200 is what one more stream costs (open + close,
its span and metrics), with start-up cancelled out. Per request of the OpenAI workload (`openai_requests.py`):
agent requests streaming 40 chunks through `OpenAIChatModel` and the real openai SDK from the tests' loopback stub
(started here, outside valgrind), exported as a real app does (`configure()`: OTLP/HTTP to a loopback sink, a
Prometheus endpoint); 20 and then 60 requests, the difference divided by 40, and each variant's share of that
process's instructions. The span processor's schedule delay is set to 10 minutes there, so spans are exported in
one batch at shutdown, as a busy app exports a few seconds of spans per batch (under valgrind's slowdown the
default 5 s would send a batch every request or two). `--src` measures another checkout's `src/` (to compare a
change with the code before it in the same conditions); `--no-openai` skips the OpenAI workload (~10 minutes).
Needs valgrind on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).with_name("bench_streams.py")
VARIANTS = (
    "raw",
    "pydantic_ai_instrumented",
    "naive_add_event",
    "streamscope",
    "streamscope_capture",
    "streamscope_per_chunk",
    "streamscope_no_cost",
    "pass_through_layer",
    "streamscope_usage_flush_off",
)
STREAM_VARIANTS = (
    "raw",
    "sdk_floor",
    "pydantic_ai_instrumented",
    "streamscope",
    "streamscope_noop_providers",
    "streamscope_over_instrumented_model",
    "streamscope_no_cost",
    "streamscope_priced",
    "streamscope_priced_no_cost",
)
OPENAI = Path(__file__).with_name("openai_requests.py")
OPENAI_VARIANTS = ("off", "streamscope", "streamscope_usage_flush_off", "pydantic_ai")
FEW_REQUESTS, MANY_REQUESTS = 20, 60
SHORT, LONG = 1_000, 5_000
FEW, MANY = 50, 250
_SOURCE: list[str] = []  # a checkout's src/ to import streamscope from, if given


def instructions(task: str, variant: str, size: int) -> int:
    """Instructions valgrind counts for a whole process running `task` (`stream`: one `size`-event stream;
    `streams`: `size` one-event streams; `requests`: `size` OpenAI requests)."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    if task == "requests":
        command += [str(OPENAI), variant, str(size)]
        environment |= _OPENAI_ENVIRONMENT
    else:
        command += [str(BENCH), "--worker", task, f"{variant}:{size}", "0"]
    if _SOURCE:
        environment["PYTHONPATH"] = os.pathsep.join([*_SOURCE, environment.get("PYTHONPATH", "")])
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stderr
    match = re.search(r"Collected : (\d+)", output) or re.search(r"refs:\s+([\d,]+)", output)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{output[-2000:]}")
    return int(match.group(1).replace(",", ""))


_OPENAI_ENVIRONMENT: dict[str, str] = {}  # the stub's and the sink's addresses, once they run


class _OTLPSink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports (and drops them): the receiving end's cost is not the app's."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # the base class's name
        pass


@contextlib.contextmanager
def openai_servers() -> Generator[None]:
    """The loopback OpenAI stub (40 text chunks and a usage chunk per answer) and an OTLP sink, for the workers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.openai_server import OpenAIStubServer, StubResponse, StubUsage

    answer = StubResponse(
        text=[f"word{i} " for i in range(40)], usage=StubUsage(prompt_tokens=12, completion_tokens=40)
    )
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _OTLPSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        with OpenAIStubServer(answer) as stub:
            _OPENAI_ENVIRONMENT.update(
                {
                    "MODEL_BASE_URL": stub.base_url,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_port}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_METRICS_EXPORTER": "prometheus",
                    "OTEL_LOGS_EXPORTER": "none",
                    "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                    "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
                    "OTEL_BSP_SCHEDULE_DELAY": "600000",
                }
            )
            yield
    finally:
        sink.shutdown()
        sink.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/instructions.json"))
    parser.add_argument("--src", type=Path, help="import streamscope from this src/ directory instead")
    parser.add_argument("--no-openai", dest="openai", action="store_false", help="skip the OpenAI workload")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if args.src is not None:
        _SOURCE.append(str(args.src.resolve()))
    jobs = [("stream", variant, events) for variant in VARIANTS for events in (SHORT, LONG)]
    jobs += [("streams", variant, streams) for variant in STREAM_VARIANTS for streams in (FEW, MANY)]
    if args.openai:
        jobs += [("requests", variant, size) for variant in OPENAI_VARIANTS for size in (FEW_REQUESTS, MANY_REQUESTS)]
    with openai_servers(), ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # one valgrind run per core
        counts = dict(zip(jobs, pool.map(instructions, *zip(*jobs, strict=True)), strict=True))
    per_event = {
        variant: (counts["stream", variant, LONG] - counts["stream", variant, SHORT]) / (LONG - SHORT)
        for variant in VARIANTS
    }
    raw = per_event["raw"]
    print(f"marginal instructions per event ({SHORT:,} vs {LONG:,}-event streams, valgrind callgrind)")
    results: dict[str, dict[str, float]] = {}  # variant -> figures; "ratios" -> the targets' ratios
    for variant, value in per_event.items():
        overhead = (value / raw - 1) * 100
        results[variant] = {"instructions_per_event": round(value), "overhead_pct": round(overhead, 2)}
        print(f"  {variant:<26} {value:>10,.0f} {overhead:>+8.2f} %")
    per_stream = {
        variant: (counts["streams", variant, MANY] - counts["streams", variant, FEW]) / (MANY - FEW)
        for variant in STREAM_VARIANTS
    }
    print(f"\nmarginal instructions per 1-event stream, open to close ({FEW} vs {MANY} streams)")
    for variant, value in per_stream.items():
        added = value - per_stream["raw"]
        results.setdefault(variant, {})
        results[variant] |= {"instructions_per_stream": round(value), "added_per_stream": round(added)}
        print(f"  {variant:<26} {value:>10,.0f} {added:>+10,.0f}")
    added = {variant: per_stream[variant] - per_stream["raw"] for variant in STREAM_VARIANTS}
    targets = {
        "open_close_over_instrumented_model": added["streamscope"] / added["pydantic_ai_instrumented"],
        "own_machinery_over_sdk_floor": added["streamscope_noop_providers"] / added["sdk_floor"],
        "naive_over_streamscope_per_event": (per_event["naive_add_event"] - raw) / (per_event["streamscope"] - raw),
        "per_event_overhead_pct": (per_event["streamscope"] / raw - 1) * 100,
        "per_event_overhead_pct_usage_flush_off": (per_event["streamscope_usage_flush_off"] / raw - 1) * 100,
    }
    print("\nratios (targets of issue 13: <= 0.5, <= 0.5, >= 10, <= 2 %)")
    for name, value in targets.items():
        print(f"  {name:<40} {value:>8.3f}")
    if args.openai:
        per_request = {
            variant: (counts["requests", variant, MANY_REQUESTS] - counts["requests", variant, FEW_REQUESTS])
            / (MANY_REQUESTS - FEW_REQUESTS)
            for variant in OPENAI_VARIANTS
        }
        off = per_request["off"]
        print(f"\nOpenAI workload: instructions per request ({FEW_REQUESTS} vs {MANY_REQUESTS} requests)")
        openai: dict[str, dict[str, float]] = {}
        for variant, value in per_request.items():
            share = (value - off) / value
            openai[variant] = {"instructions_per_request": round(value), "share_of_process": round(share, 4)}
            print(f"  {variant:<30} {value:>14,.0f} {share * 100:>+8.2f} %")
        results["openai_requests"] = openai  # type: ignore[assignment]  # pyright: ignore[reportArgumentType]
        targets["openai_share_of_process"] = openai["streamscope"]["share_of_process"]
    results["ratios"] = {name: round(value, 3) for name, value in targets.items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
