"""The shipped examples run offline and show what the README says they show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
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


def test_opentelemetry_instrument_turns_streamscope_on() -> None:
    """`opentelemetry-instrument` (with opentelemetry-distro) configures the SDK from OTEL_* variables and loads
    streamscope through its entry point; the example has no telemetry code at all."""
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {
        "OTEL_SERVICE_NAME": "auto-example",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
    }
    result = subprocess.run(
        [str(instrument), sys.executable, str(EXAMPLES / "auto.py")],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "Tokens drift like snow, each delta a footprint kept, the span remembers." in output
    assert '"name": "chat haiku-writer"' in output
    assert '"streamscope.stream.outcome": "complete"' in output
    assert output.count('"name": "streamscope.stream.part_start"') == 1  # with the first chunk
    assert output.count('"name": "streamscope.stream.part_delta"') == 2
    assert '"name": "streamscope.streams.finished"' in output
    assert '"service.name": "auto-example"' in output


def test_prometheus_example_serves_metrics() -> None:
    args = [sys.executable, str(EXAMPLES / "prometheus_endpoint.py"), "--host", "127.0.0.1", "--port", "0"]
    with subprocess.Popen([*args, "--duration", "30"], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"Serving metrics on (http://127\.0\.0\.1:\d+/metrics)\n", line)
            assert match, line
            text = ""
            deadline = time.monotonic() + 20
            while 'outcome="error"' not in text and time.monotonic() < deadline:  # a failed stream was counted
                with urllib.request.urlopen(match.group(1), timeout=5) as response:
                    text = response.read().decode()
                time.sleep(0.2)
            for outcome in ("complete", "incomplete", "error"):
                assert re.search(rf'streamscope_streams_finished_total{{[^}}]*_outcome="{outcome}"', text), outcome
            assert 'service_name="prometheus-example"' in text
            assert "gen_ai_client_operation_time_to_first_chunk_seconds_bucket{" in text
        finally:
            process.terminate()
