"""Marginal CPU instructions per stream event, counted by valgrind (deterministic, unlike wall time).

    make bench-instructions     # or: .venv/bin/python benchmarks/instructions.py [--json PATH]

Each variant drains one text stream of 1,000 and one of 5,000 deltas under `valgrind --tool=callgrind`; the
difference divided by 4,000 is what one more event costs, with everything a stream costs once (open, close,
span events) cancelled out. Needs valgrind on PATH.
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
VARIANTS = ("raw", "pydantic_ai_instrumented", "naive_add_event", "streamscope", "streamscope_capture")
SHORT, LONG = 1_000, 5_000


def instructions(variant: str, events: int) -> int:
    """Instructions valgrind counts for a whole process draining one `events`-event stream."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, str(BENCH), "--worker", "stream", f"{variant}:{events}", "0"]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stderr
    match = re.search(r"Collected : (\d+)", output) or re.search(r"refs:\s+([\d,]+)", output)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{output[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/instructions.json"))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    jobs = [(variant, events) for variant in VARIANTS for events in (SHORT, LONG)]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # one valgrind process per core
        counts = dict(zip(jobs, pool.map(instructions, *zip(*jobs, strict=True)), strict=True))
    per_event = {variant: (counts[variant, LONG] - counts[variant, SHORT]) / (LONG - SHORT) for variant in VARIANTS}
    raw = per_event["raw"]
    print(f"marginal instructions per event ({SHORT:,} vs {LONG:,}-event streams, valgrind callgrind)")
    results: dict[str, dict[str, float]] = {}
    for variant, value in per_event.items():
        overhead = (value / raw - 1) * 100
        results[variant] = {"instructions_per_event": round(value), "overhead_pct": round(overhead, 2)}
        print(f"  {variant:<26} {value:>10,.0f} {overhead:>+8.2f} %")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
