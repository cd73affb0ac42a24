"""What streamscope costs a real app, as a share of the app's CPU: the same app with and without it, in one run.

    make bench-app        # or: .venv/bin/python benchmarks/bench_app.py [--quick] [--rounds N] [--requests N]

The app is `benchmarks/chat_app.py`: a FastAPI endpoint streaming ``agent.run_stream(q).stream_text(delta=True)``
from an `OpenAIChatModel`, served by uvicorn. Its model is this process's loopback OpenAI stub
(`tests/openai_server.py`), answering every request with 40 text chunks and a usage chunk, without delay.
Each variant of the app runs in its own uvicorn process:

- ``off``: no OpenTelemetry at all (the baseline);
- ``streamscope``: ``streamscope.configure()`` with default options, exporting spans over OTLP/HTTP to a real
  Arize Phoenix (from ``.venv-phoenix``, started here) and serving a Prometheus ``/metrics`` endpoint;
- ``pydantic_ai``: Pydantic AI's own instrumentation (its default settings, which record prompts and answers)
  exporting to the same Phoenix and its own Prometheus endpoint, for comparison;
- ``streamscope_fastapi``: ``streamscope`` with FastAPI's own telemetry left on. FastAPI 0.16x traces every
  request (a server span and spans for dependencies, endpoint and serialization) and records HTTP metrics as soon
  as global providers are set, which `configure()` does; the other variants turn it off, so that ``streamscope``
  is streamscope's cost alone.

The load: an `httpx2.AsyncClient` (the HTTP client Pydantic AI and the openai SDK depend on; httpx's API) keeps
``--concurrency`` requests in flight; every third request reads a few chunks of the answer and closes the
connection (the client going away mid-answer), every other one must receive the whole answer, or the run fails.
While the load runs, the Prometheus endpoint of an instrumented variant is scraped every ``--scrape-interval``
seconds, as a Prometheus server would.

What is measured: the CPU time (user + system, all threads, from ``/proc/<pid>/stat``) each uvicorn process
spends on ``--requests`` requests after a warm-up, as CPU milliseconds per request; and the instrumentation's
share of the app's CPU, ``(cpu[streamscope] - cpu[off]) / cpu[streamscope]`` (likewise for the others).

How: each round starts a fresh process of every variant, warms them all up, lets them idle a little longer than
the `BatchSpanProcessor`'s schedule delay (so the warm-up's spans are exported before the window opens) and
waits until Phoenix has ingested them. Then the variants take turns, ``--slice`` requests each, in an order
rotated every slice, until each has served ``--requests``; then they idle again for the schedule delay, so each
process's window holds the export of exactly its measured requests' spans, and their CPU time is read. Phoenix
runs at the lowest priority (``nice 19``): it ingests spans far more slowly than the app makes them, and catches
up while the apps idle.

Why fresh processes per round, and turns of a few seconds within a round: a process's heap layout and import
order move its speed by a few percent for its whole life (see benchmarks/README.md), so one process per variant
for the whole run would bias that variant throughout; fresh processes sample that noise every round, and the
figures are medians over rounds. On a small machine shared with other jobs the CPU time a request costs also
drifts by 10-20 % within a minute (a busy sibling hyperthread, caches); measuring one variant for 15 s and then
the next would compare different minutes. Turns of a couple of seconds put every variant in the same minutes;
the idle processes between their turns cost next to nothing (an idle `BatchSpanProcessor` and Prometheus
endpoint), and those costs belong to the instrumented app anyway. Each process is stopped with SIGTERM at the end
of its round, which runs the app's lifespan shutdown (streamscope's flush); its log must hold no traceback.

Nothing is a pass/fail assertion on time: on a 2-core machine shared with other jobs, compare the shares, not
the absolute milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.openai_server import OpenAIStubServer, StubResponse, StubUsage  # noqa: E402
from tests.servers import free_port, http_get  # noqa: E402

# As in chat_app.py (not imported here: it builds the app). `streamscope_fastapi` leaves FastAPI's own telemetry on.
VARIANTS = ("off", "streamscope", "pydantic_ai", "streamscope_fastapi")
CHUNKS = 40
ANSWER_PIECES = tuple(f"word{i:02d} " for i in range(CHUNKS))
ANSWER = "".join(ANSWER_PIECES)
EARLY_CHUNKS = 3  # a disconnecting client reads this many HTTP chunks of the answer, then closes the connection
BSP_SCHEDULE_DELAY = 5.0  # seconds: the SDK's default OTEL_BSP_SCHEDULE_DELAY
SETTLE = BSP_SCHEDULE_DELAY + 1.5  # idle time around a measurement, so every span of its requests is exported
PHOENIX_START_TIMEOUT = 120.0
PHOENIX_IDLE_TIMEOUT = 180.0
APP_START_TIMEOUT = 60.0
PROJECT_PREFIX = "bench-app-"


class BenchmarkError(RuntimeError):
    """The app did not behave (a wrong answer, an error status, a server that did not start)."""


# --- processes ---------------------------------------------------------------------------------------------
class Process:
    """A child process whose output goes to a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            list(args), stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` until it holds; fail with the process's output if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchmarkError(f"{what} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise BenchmarkError(f"{what} not ready after {timeout:.0f} s; its output:\n{self.output()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)
        self._log_file.close()
        return self.popen.returncode


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, in seconds (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from `state` (3)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float, threshold: float = 0.05) -> float:
    """Wait until a process spends less than `threshold` of a core over a second; how long that took."""
    start = time.monotonic()
    previous = cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - previous < threshold:
            break
        previous = now
    return time.monotonic() - start


def machine_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (``/proc/stat``)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


@dataclass(frozen=True)
class Phoenix:
    """A running Phoenix: OTLP/HTTP at ``{url}/v1/traces``, spans back from its REST API."""

    url: str
    process: Process

    def count_spans(self, project: str) -> dict[str, int]:
        """How many spans the project holds, by name (an empty dict if the project does not exist yet)."""
        counts: dict[str, int] = {}
        cursor: str | None = None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            url = f"{self.url}/v1/projects/{urllib.parse.quote(project)}/spans?{urllib.parse.urlencode(query)}"
            status, body = http_get(url, timeout=60)
            if status == 404:
                return counts
            if status != 200:
                raise BenchmarkError(f"GET {url} -> {status}: {body[:500]!r}")
            page = json.loads(body)
            for span in page["data"]:
                counts[span["name"]] = counts.get(span["name"], 0) + 1
            cursor = page.get("next_cursor")
            if not cursor:
                return counts


def start_phoenix(work: Path) -> Phoenix:
    """Arize Phoenix from ``.venv-phoenix`` (``STREAMSCOPE_PHOENIX`` overrides) on free loopback ports."""
    executable = Path(os.environ.get("STREAMSCOPE_PHOENIX") or ROOT / ".venv-phoenix" / "bin" / "phoenix")
    if not executable.exists():
        raise BenchmarkError(f"Arize Phoenix is not installed at {executable}: run `make servers`")
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    # Lowest priority: Phoenix ingests spans far slower than the app makes them (~10 ms of CPU per span), and on
    # a small machine it would take CPU from the app under test. It catches up between measurements instead.
    # `nice` execs Phoenix: the process keeps the pid whose CPU time is read.
    process = Process(["nice", "-n", "19", str(executable), "serve"], work / "phoenix.log", env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        process.wait_ready(lambda: http_get(f"{url}/healthz", 2)[0] == 200, PHOENIX_START_TIMEOUT, "Phoenix")
    except BaseException:
        process.stop()
        raise
    return Phoenix(url, process)


@dataclass(frozen=True)
class App:
    """One uvicorn process serving `benchmarks/chat_app.py` as `variant`."""

    variant: str
    url: str
    metrics_url: str | None
    process: Process

    def wait_ready(self) -> None:
        check = lambda: http_get(f"{self.url}/health", 2)[0] == 200  # noqa: E731
        self.process.wait_ready(check, APP_START_TIMEOUT, f"uvicorn ({self.variant})")

    def stop(self) -> None:
        """SIGTERM (the lifespan's shutdown runs); fail if it did not exit cleanly or logged a traceback."""
        code = self.process.stop()
        output = self.process.output()
        if code not in (0, -signal.SIGTERM) or "Traceback" in output:  # uvicorn re-raises the SIGTERM it handled
            raise BenchmarkError(f"uvicorn ({self.variant}) exited with {code}:\n{output[-3000:]}")


def stop_all(apps: Sequence[App]) -> None:
    """Stop every app, then raise the first failure (an app that did not stop cleanly leaves none running)."""
    failures: list[BenchmarkError] = []
    for app in apps:
        try:
            app.stop()
        except BenchmarkError as error:
            failures.append(error)
    if failures:
        raise failures[0]


def launch_app(variant: str, model_url: str, phoenix_url: str, log: Path) -> App:
    """Start uvicorn serving `variant` on a free port, exporting to Phoenix (not waiting for it to be ready)."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "STREAMSCOPE_BENCH_VARIANT": variant,
        "MODEL_BASE_URL": model_url,
        "OTEL_SERVICE_NAME": f"bench-app-{variant}",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT_PREFIX}{variant}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_LOGS_EXPORTER": "none",  # Phoenix receives traces only
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
    }
    args = [
        sys.executable, "-m", "uvicorn", "benchmarks.chat_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    metrics_url = None if variant == "off" else f"http://127.0.0.1:{metrics_port}/metrics"
    return App(variant, f"http://127.0.0.1:{port}", metrics_url, Process(args, log, env))


# --- load --------------------------------------------------------------------------------------------------
@dataclass
class Load:
    """What the clients of one app saw."""

    completed: int = 0  # whole answers received and checked
    disconnected: int = 0  # closed by the client after EARLY_CHUNKS chunks
    early_but_complete: int = 0  # meant to disconnect, but the whole answer came in fewer chunks
    scrapes: int = 0
    scrape_bytes: int = 0
    wall_s: float = 0.0  # time spent driving this app (its turns)


async def one_request(client: httpx2.AsyncClient, index: int, load: Load) -> None:
    """GET /chat; every third request reads EARLY_CHUNKS chunks and closes, the others check the whole answer."""
    early = index % 3 == 2
    async with client.stream("GET", "/chat", params={"q": f"question {index}"}) as response:
        if response.status_code != 200:
            body = await response.aread()
            raise BenchmarkError(f"request {index}: HTTP {response.status_code}: {body[:300]!r}")
        chunks: list[bytes] = []
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            if early and len(chunks) >= EARLY_CHUNKS:
                load.disconnected += 1
                return  # leaving the block closes the unfinished response: the connection is dropped
    text = b"".join(chunks).decode()
    if text != ANSWER:
        raise BenchmarkError(f"request {index}: expected the whole answer ({len(ANSWER)} chars), got {text!r}")
    if early:
        load.early_but_complete += 1
    else:
        load.completed += 1


async def scrape(metrics_url: str, interval: float, load: Load, stop: asyncio.Event) -> None:
    """GET the Prometheus endpoint every `interval` seconds until `stop` is set, as a Prometheus server would."""
    async with httpx2.AsyncClient(timeout=30) as client:
        while True:
            response = await client.get(metrics_url)
            if response.status_code != 200 or b"gen_ai_client" not in response.content:
                raise BenchmarkError(f"{metrics_url} -> {response.status_code}: {response.content[:300]!r}")
            load.scrapes += 1
            load.scrape_bytes += len(response.content)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                continue
            return


async def drive(client: httpx2.AsyncClient, numbers: Iterator[int], concurrency: int, load: Load) -> None:
    """Send the requests `numbers` names, `concurrency` in flight."""

    async def worker() -> None:
        for index in numbers:
            await one_request(client, index, load)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.wall_s += time.perf_counter() - start


async def take_turns(
    apps: Sequence[App], loads: dict[str, Load], numbers: range, turn: int, concurrency: int, scrape_interval: float
) -> None:
    """Drive the apps in turn, `turn` requests each in an order rotated every time, until each has served every
    request of `numbers`; meanwhile scrape the Prometheus endpoints every `scrape_interval` seconds (0: never)."""
    # An app idles while the others take their turns: let the client drop its idle connections (after 1 s) before
    # uvicorn closes them (after 5 s), or a request may go out on a connection the server is closing.
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=1.0)
    async with AsyncExitStack() as stack:
        clients = {
            app.variant: await stack.enter_async_context(
                httpx2.AsyncClient(base_url=app.url, timeout=60, limits=limits)
            )
            for app in apps
        }
        stop = asyncio.Event()
        scrapers = [
            asyncio.create_task(scrape(app.metrics_url, scrape_interval, loads[app.variant], stop))
            for app in apps
            if app.metrics_url and scrape_interval > 0
        ]
        try:
            for number, start in enumerate(range(numbers.start, numbers.stop, turn)):
                shift = number % len(apps)
                for app in [*apps[shift:], *apps[:shift]]:
                    part = iter(range(start, min(start + turn, numbers.stop)))
                    await drive(clients[app.variant], part, concurrency, loads[app.variant])
        finally:
            stop.set()
            await asyncio.gather(*scrapers)


# --- measurement -------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """One variant in one round."""

    variant: str
    round: int
    requests: int
    cpu_s: float
    cpu_ms_per_request: float
    app_cores: float  # the app's CPU time over the wall time of its turns (cores busy on average)
    requests_per_s: float  # over its turns
    load: Load
    streams_by_outcome: dict[str, float] = field(default_factory=dict[str, float])


@dataclass
class Round:
    """One round: a fresh process of every variant, measured in turns."""

    number: int
    wall_s: float  # from the first turn to the last
    machine_busy: float  # share of the whole machine's CPU busy meanwhile (every process, ours or not)
    phoenix_cpu_s: float  # Phoenix's CPU time meanwhile (ingesting spans, at the lowest priority)
    phoenix_wait_s: float  # how long Phoenix took to go idle before the window opened
    measurements: list[Measurement]


def streams_by_outcome(metrics: str) -> dict[str, float]:
    """streamscope's finished-stream counter, by outcome, from a Prometheus exposition."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("streamscope_streams_finished_total{"):
            outcome = re.search(r'streamscope_stream_outcome="([^"]*)"', line)
            key = outcome.group(1) if outcome else "?"
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def measure_round(
    number: int, variants: Sequence[str], args: argparse.Namespace, model_url: str, phoenix: Phoenix, work: Path
) -> Round:
    shift = number % len(variants)
    order = [*variants[shift:], *variants[:shift]]
    apps: list[App] = []
    try:
        for variant in order:  # start them all, then wait: they import in parallel
            apps.append(launch_app(variant, model_url, phoenix.url, work / f"uvicorn-{variant}-{number}.log"))
        for app in apps:
            app.wait_ready()
        first = number * (args.warmup + args.requests)
        warmup = range(first, first + args.warmup)
        asyncio.run(take_turns(apps, {v: Load() for v in order}, warmup, args.warmup, args.concurrency, 0))
        time.sleep(SETTLE)  # the warm-up's spans leave before the window opens
        phoenix_wait = wait_idle(phoenix.process.pid, PHOENIX_IDLE_TIMEOUT)  # and Phoenix has ingested them
        cpu_before = {app.variant: cpu_seconds(app.process.pid) for app in apps}
        phoenix_before, machine_before, start = cpu_seconds(phoenix.process.pid), machine_times(), time.monotonic()
        loads = {v: Load() for v in order}
        measured = range(warmup.stop, warmup.stop + args.requests)
        asyncio.run(take_turns(apps, loads, measured, args.turn, args.concurrency, args.scrape_interval))
        wall, machine_after = time.monotonic() - start, machine_times()
        time.sleep(SETTLE)  # ... and the measured requests' spans are exported inside it
        cpu = {app.variant: cpu_seconds(app.process.pid) - cpu_before[app.variant] for app in apps}
        phoenix_cpu = cpu_seconds(phoenix.process.pid) - phoenix_before
        outcomes = {
            app.variant: streams_by_outcome(http_get(app.metrics_url)[1].decode())
            for app in apps
            if app.metrics_url and app.variant.startswith("streamscope")
        }
    finally:
        stop_all(apps)
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1)
    measurements = [
        Measurement(
            variant=variant,
            round=number,
            requests=args.requests,
            cpu_s=round(cpu[variant], 3),
            cpu_ms_per_request=round(1000 * cpu[variant] / args.requests, 3),
            app_cores=round(cpu[variant] / loads[variant].wall_s, 3),
            requests_per_s=round(args.requests / loads[variant].wall_s, 1),
            load=loads[variant],
            streams_by_outcome=outcomes.get(variant, {}),
        )
        for variant in variants
    ]
    return Round(number, round(wall, 1), round(busy, 3), round(phoenix_cpu, 2), round(phoenix_wait, 1), measurements)


def share(cpu: float, baseline: float) -> float:
    """The instrumentation's share of the instrumented app's CPU."""
    return (cpu - baseline) / cpu


def summarise(rounds: list[Round], variants: Sequence[str]) -> dict[str, Any]:
    """Medians over rounds, per variant; an instrumented variant's share against `off`, overall (from the medians)
    and round by round (against that round's `off`)."""
    measurements = [m for r in rounds for m in r.measurements]
    by_variant = {v: [m for m in measurements if m.variant == v] for v in variants}
    off_by_round = {m.round: m.cpu_ms_per_request for m in by_variant.get("off", [])}
    summary: dict[str, Any] = {}
    for variant, runs in by_variant.items():
        cpu = statistics.median(m.cpu_ms_per_request for m in runs)
        entry: dict[str, Any] = {
            "cpu_ms_per_request": round(cpu, 3),
            "cpu_ms_per_request_by_round": [m.cpu_ms_per_request for m in runs],
            "requests_per_s": statistics.median(m.requests_per_s for m in runs),
            "app_cores": statistics.median(m.app_cores for m in runs),
        }
        if variant != "off" and off_by_round:
            off = statistics.median(off_by_round.values())
            by_round = [share(m.cpu_ms_per_request, off_by_round[m.round]) for m in runs]
            entry["share_of_app_cpu"] = round(share(cpu, off), 4)
            entry["share_of_app_cpu_by_round"] = [round(value, 4) for value in by_round]
            entry["median_share_by_round"] = round(statistics.median(by_round), 4)
            entry["extra_cpu_ms_per_request"] = round(cpu - off, 3)
        summary[variant] = entry
    return summary


def print_table(results: dict[str, Any]) -> None:
    conditions = results["conditions"]
    print(
        f"\n{conditions['requests']} requests per variant and round after {conditions['warmup']} to warm up, in turns "
        f"of {conditions['turn']}, {conditions['concurrency']} in flight, every third closed after {EARLY_CHUNKS} "
        f"chunks, {CHUNKS} chunks per answer; {conditions['rounds']} round(s); {results['cpus']} CPUs, load average "
        f"{results['loadavg_before']} before, {results['loadavg_after']} after"
    )
    rows = [("variant", "CPU ms/req", "by round", "share of app CPU", "by round (vs that round's off)", "req/s")]
    for variant, entry in results["summary"].items():
        rows.append(
            (
                variant,
                f"{entry['cpu_ms_per_request']:.2f}",
                " ".join(f"{value:.2f}" for value in entry["cpu_ms_per_request_by_round"]),
                f"{100 * entry['share_of_app_cpu']:.1f} %" if "share_of_app_cpu" in entry else "(baseline)",
                " ".join(f"{100 * value:+.1f}%" for value in entry.get("share_of_app_cpu_by_round", [])),
                f"{entry['requests_per_s']:.1f}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        print("  ".join(c.rjust(w) if i in (1, 3, 5) else c.ljust(w) for i, (c, w) in enumerate(cells)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    for r in results["rounds"]:
        print(
            f"\nround {r['number']}: {r['wall_s']:.0f} s, machine {100 * r['machine_busy']:.0f}% busy, Phoenix "
            f"{r['phoenix_cpu_s']:.1f} s CPU meanwhile (idle {r['phoenix_wait_s']:.0f} s after the warm-up)"
        )
        for m in r["measurements"]:
            load = m["load"]
            outcomes = f"; streams by outcome {m['streams_by_outcome']}" if m["streams_by_outcome"] else ""
            print(
                f"  {m['variant']:<19} {m['cpu_ms_per_request']:6.2f} ms/req, {m['app_cores']:.2f} cores in its turns; "
                f"{load['completed']} complete, {load['disconnected']} disconnected, {load['early_but_complete']} "
                f"early-but-complete, {load['scrapes']} scrapes{outcomes}"
            )
    spans = results.get("spans_in_phoenix")
    if spans:
        print(f"\nspans in Phoenix, by project and name: {spans['by_name']}")


def check_spans(phoenix: Phoenix, expected: dict[str, int], timeout: float = 300.0) -> dict[str, Any]:
    """Wait until Phoenix holds a `chat gpt-4o` span for every request each instrumented variant served."""
    wait_idle(phoenix.process.pid, timeout)
    deadline = time.monotonic() + timeout
    counts: dict[str, dict[str, int]] = {}
    while True:
        counts = {variant: phoenix.count_spans(PROJECT_PREFIX + variant) for variant in expected}
        if all(counts[v].get("chat gpt-4o", 0) >= n for v, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(5)
    for variant, n in expected.items():
        got = counts[variant].get("chat gpt-4o", 0)
        if got != n:
            print(f"WARNING: Phoenix holds {got} 'chat gpt-4o' spans of {variant}, expected {n}", file=sys.stderr)
    return {"expected_chat_spans": expected, "by_name": counts}


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants: list[str] = args.variants
    loadavg = [round(value, 2) for value in os.getloadavg()]
    stub = StubResponse(text=ANSWER_PIECES, usage=StubUsage(prompt_tokens=12, completion_tokens=CHUNKS))
    rounds: list[Round] = []
    spans = None
    with tempfile.TemporaryDirectory(prefix="bench-app-") as directory, OpenAIStubServer(stub) as model_server:
        work = Path(directory)
        phoenix = start_phoenix(work)
        try:
            for number in range(args.rounds):
                rounds.append(measure_round(number, variants, args, model_server.base_url, phoenix, work))
                figures = ", ".join(f"{m.variant} {m.cpu_ms_per_request:.2f}" for m in rounds[-1].measurements)
                print(f"round {number}: CPU ms/request {figures}", flush=True)
            if args.check_spans:
                served = args.rounds * (args.warmup + args.requests)
                spans = check_spans(phoenix, {v: served for v in variants if v != "off"})
        finally:
            phoenix.process.stop()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg,
        "loadavg_after": [round(value, 2) for value in os.getloadavg()],
        "conditions": {
            "requests": args.requests,
            "warmup": args.warmup,
            "turn": args.turn,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "chunks_per_answer": CHUNKS,
            "disconnect_every": 3,
            "early_chunks": EARLY_CHUNKS,
            "scrape_interval_s": args.scrape_interval,
            "server": "uvicorn (asyncio loop, h11), --log-level warning",
        },
        "summary": summarise(rounds, variants),
        "rounds": [asdict(r) for r in rounds],
        "spans_in_phoenix": spans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--rounds", type=int, help="rounds, each with fresh processes (default 5; --quick: 1)")
    parser.add_argument("--requests", type=int, help="requests per variant and round (default 400; --quick: 120)")
    parser.add_argument("--warmup", type=int, help="requests before each round's window (default 40; --quick: 20)")
    parser.add_argument("--turn", type=int, default=40, help="requests per turn of a variant (default 40)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds between /metrics scrapes")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--no-check-spans", dest="check_spans", action="store_false", help="skip counting spans")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "app.json")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.requests = args.requests or (120 if args.quick else 400)
    args.warmup = args.warmup or (20 if args.quick else 40)
    results = run(args)
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
