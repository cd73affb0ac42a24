"""Marginal CPU instructions per stream event and per stream, counted by valgrind (deterministic, unlike wall time).

    make bench-instructions     # or: .venv/bin/python benchmarks/instructions.py [--json PATH] [--src DIR]

Per event: each variant drains one text stream of 1,000 and one of 5,000 deltas under
`valgrind --tool=callgrind`; the difference divided by 4,000 is what one more event costs, with everything a
stream costs once (open, close, span events) cancelled out. Per stream: each variant opens, drains and closes
50 and then 250 one-event streams; the difference divided by 200 is what one more stream costs (open + close,
its span and metrics), with start-up cancelled out. `--src` measures another checkout's `src/` (to compare a
change with the code before it in the same conditions). Needs valgrind on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
SHORT, LONG = 1_000, 5_000
FEW, MANY = 50, 250
_SOURCE: list[str] = []  # a checkout's src/ to import streamscope from, if given


def instructions(task: str, variant: str, size: int) -> int:
    """Instructions valgrind counts for a whole process running `task` (`stream`: one `size`-event stream;
    `streams`: `size` one-event streams)."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, str(BENCH), "--worker", task, f"{variant}:{size}", "0"]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    if _SOURCE:
        environment["PYTHONPATH"] = os.pathsep.join([*_SOURCE, environment.get("PYTHONPATH", "")])
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stderr
    match = re.search(r"Collected : (\d+)", output) or re.search(r"refs:\s+([\d,]+)", output)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{output[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/instructions.json"))
    parser.add_argument("--src", type=Path, help="import streamscope from this src/ directory instead")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if args.src is not None:
        _SOURCE.append(str(args.src.resolve()))
    jobs = [("stream", variant, events) for variant in VARIANTS for events in (SHORT, LONG)]
    jobs += [("streams", variant, streams) for variant in STREAM_VARIANTS for streams in (FEW, MANY)]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # one valgrind process per core
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
    results["ratios"] = {name: round(value, 3) for name, value in targets.items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
