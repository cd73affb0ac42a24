"""Real servers for the integration tests, started on 127.0.0.1 and stopped afterwards.

- Arize Phoenix (an OTLP receiver over HTTP and gRPC that stores spans and serves them back over HTTP), from
  its own virtualenv (`make servers` creates ``.venv-phoenix``; ``STREAMSCOPE_PHOENIX`` overrides the path).
- Prometheus, Debian's package (`make servers` installs it with apt-get when it is not on PATH).

A server that is missing or does not start fails the test: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHOENIX_START_TIMEOUT = 90.0
PROMETHEUS_START_TIMEOUT = 30.0


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel's pick; a server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL; (status, body), with HTTP errors returned rather than raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str, timeout: float = 5.0) -> Any:
    status, body = http_get(url, timeout)
    assert status == 200, f"GET {url} -> {status}: {body[:500]!r}"
    return json.loads(body)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


class Process:
    """A child process whose output goes to a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            list(args), stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{what} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            try:
                return check()
            except OSError:
                return False

        try:
            wait_until(ready, timeout, what)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; its output:\n{self.output()[-3000:]}") from None

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=15)
        self._log_file.close()


def _ok(url: str) -> bool:
    return http_get(url, timeout=2)[0] == 200


# --- Phoenix ---------------------------------------------------------------------------------------
def phoenix_executable() -> Path:
    path = Path(os.environ.get("STREAMSCOPE_PHOENIX") or ROOT / ".venv-phoenix" / "bin" / "phoenix")
    if not path.exists():
        pytest.fail(f"Arize Phoenix is not installed at {path}: run `make servers`")
    return path


@dataclass(frozen=True)
class Phoenix:
    """A running Phoenix: OTLP/HTTP at `http_url` (``/v1/traces``), OTLP/gRPC at `grpc_url`."""

    http_url: str
    grpc_url: str

    def spans(self, project: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The project's spans as Phoenix's REST API returns them (none if the project does not exist yet)."""
        url = f"{self.http_url}/v1/projects/{urllib.parse.quote(project)}/spans?limit={limit}"
        status, body = http_get(url)
        if status == 404:
            return []
        assert status == 200, f"GET {url} -> {status}: {body[:500]!r}"
        return json.loads(body)["data"]

    def wait_for_spans(
        self,
        project: str,
        count: int,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll until the project holds at least `count` spans (those `where` accepts, if given), and return them.
        Phoenix ingests asynchronously: other spans of the project (an app's server spans, say) may arrive first."""
        spans: list[dict[str, Any]] = []

        def enough() -> bool:
            nonlocal spans
            spans = [span for span in self.spans(project) if where is None or where(span)]
            return len(spans) >= count

        try:
            wait_until(enough, timeout, f"{count} spans in Phoenix project {project!r}")
        except TimeoutError:
            pytest.fail(f"Phoenix project {project!r} holds {len(spans)} such spans, expected {count}")
        return spans


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    executable = phoenix_executable()
    work = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    process = Process([str(executable), "serve"], work / "phoenix.log", env=env)
    try:
        url = f"http://127.0.0.1:{http_port}"
        process.wait_ready(lambda: _ok(f"{url}/healthz"), PHOENIX_START_TIMEOUT, "Phoenix")
        yield Phoenix(url, f"http://127.0.0.1:{grpc_port}")
    finally:
        process.stop()


# --- Prometheus ------------------------------------------------------------------------------------
def prometheus_executable() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("Prometheus is not installed: run `make servers` (apt-get install prometheus)")
    return path


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query; its result vector (an error response fails the test)."""
        data = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert data["status"] == "success", (expr, data)
        return data["data"]["result"]

    def label_values(self, label: str, selector: str) -> list[str]:
        query = urllib.parse.urlencode({"match[]": selector})
        data = get_json(f"{self.url}/api/v1/label/{urllib.parse.quote(label)}/values?{query}")
        assert data["status"] == "success", (label, selector, data)
        return data["data"]

    def series(self, selector: str) -> list[dict[str, str]]:
        """The label sets of every series `selector` matches."""
        data = get_json(f"{self.url}/api/v1/series?{urllib.parse.urlencode({'match[]': selector})}")
        assert data["status"] == "success", (selector, data)
        return data["data"]

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its health and last evaluation."""
        data = get_json(f"{self.url}/api/v1/rules")
        assert data["status"] == "success", data
        return [rule for group in data["data"]["groups"] for rule in group["rules"]]


def start_prometheus(
    directory: Path, targets: dict[str, str], scrape_interval: str = "1s", rule_files: tuple[Path, ...] = ()
) -> tuple[Process, Prometheus]:
    """Run Prometheus on a free loopback port with storage in `directory`, scraping `targets` (job → host:port)
    and evaluating `rule_files`, and wait until it is ready."""
    config = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}"]
    if rule_files:
        config.append("rule_files:")
        config += [f"  - '{path}'" for path in rule_files]
    config.append("scrape_configs:")
    for job, target in targets.items():
        config += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{target}']"]
    (directory / "prometheus.yml").write_text("\n".join(config) + "\n")
    port = free_port()
    process = Process(
        [
            prometheus_executable(),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        directory / "prometheus.log",
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:
        process.wait_ready(lambda: _ok(f"{prometheus.url}/-/ready"), PROMETHEUS_START_TIMEOUT, "Prometheus")
    except BaseException:
        process.stop()
        raise
    return process, prometheus
