"""The shipped examples run offline and show what the README says they show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_demo_reports_every_scenario() -> None:
    output = run("demo.py")
    assert "Spans (7 streams, one span each)" in output
    for expected in (
        "complete     end=exhausted",
        "incomplete   end=consumer_closed",
        "interrupted  end=task_cancelled",
        "error        end=error",
        "error.type=ConnectionError",
        "error.type=RuntimeError",
        "streamscope.policy.violations                  1 series, total 1",
        "[WARN] streamscope.policy.violation",
        "[stdlib log streamscope.policy] Policy violation",
    ):
        assert expected in output, expected
    assert "Traceback" not in output


def test_quickstart_prints_the_span() -> None:
    output = run("quickstart.py")
    assert "Hello from a streamed answer!" in output
    assert '"name": "chat function::echo"' in output
    assert '"streamscope.stream.outcome": "complete"' in output
