"""The shipped alert rules are valid, and each one fires and stays silent when it should (`promtool`, no server).

That every rule refers to metrics and labels the library really exports, and that a real Prometheus evaluates
each without error, is checked by `test_dashboards_prometheus.py` against the workload process.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dashboards import alerts
from dashboards.generate import render

from tests.servers import ROOT

ALERTS_DIR = ROOT / "dashboards" / "alerts"
RULES = ALERTS_DIR / "streamscope-rules.yml"
TESTS = ALERTS_DIR / "streamscope-rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool (Debian's prometheus package) is installed by `make servers`"
    return found


def run(*args: str | Path, cwd: Path = ALERTS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], check=False, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_committed_files_are_what_the_generator_writes() -> None:
    files = render()
    assert RULES.read_text() == files[alerts.RULES_FILE]
    assert TESTS.read_text() == files[alerts.TESTS_FILE]


def test_promtool_checks_the_rules_clean() -> None:
    result = run("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_stays_silent_as_its_unit_tests_say() -> None:
    result = run("test", "rules", TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case_and_what_operators_need() -> None:
    names = [alert.name for alert in alerts.ALERTS]
    assert names == [
        "StreamscopeHighErrorRate",
        "StreamscopeSlowTimeToFirstChunk",
        "StreamscopeStalledStreams",
        "StreamscopeStreamsNeverFinish",
        "StreamscopePolicyViolations",
        "StreamscopeCostBurnRate",
    ]
    text = TESTS.read_text()
    rules = RULES.read_text()
    for alert in alerts.ALERTS:
        assert alert.fires.fires_with is not None
        assert alert.silent.fires_with is None
        assert alert.severity in ("warning", "critical")
        assert alert.summary
        assert alert.description
        assert f"# Default: {alert.defaults}.\n      - alert: {alert.name}\n" in rules
        # one test where it fires (its expected labels listed) and one where it does not
        blocks = re.findall(rf"alertname: {alert.name}\n        exp_alerts:( \[\])?", text)
        assert sorted(blocks) == ["", " []"], (alert.name, blocks)


def _with(alert_name: str, **changes: str) -> str:
    """The rules file with one alert changed."""
    changed = tuple(
        dataclasses.replace(alert, **changes) if alert.name == alert_name else alert for alert in alerts.ALERTS
    )
    original = alerts.ALERTS
    alerts.ALERTS = changed
    try:
        return alerts.rules_yaml()
    finally:
        alerts.ALERTS = original


@pytest.mark.parametrize("alert", alerts.ALERTS, ids=lambda alert: alert.name)
def test_the_unit_tests_catch_an_alert_that_never_fires_or_always_fires(alert: alerts.Alert, tmp_path: Path) -> None:
    """The promtool tests are not vacuous: an alert that can never fire, or fires on anything, fails them."""
    shutil.copy(TESTS, tmp_path / TESTS.name)
    for broken in ("vector(1) < 0", f"{alert.expr.rsplit('>', 1)[0]} > -1e9" if ">" in alert.expr else "vector(1)"):
        (tmp_path / RULES.name).write_text(_with(alert.name, expr=broken))
        result = run("test", "rules", tmp_path / TESTS.name, cwd=tmp_path)
        assert result.returncode != 0, (alert.name, broken, result.stdout)
        assert alert.name in result.stdout + result.stderr
