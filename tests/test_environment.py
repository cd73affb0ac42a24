"""The OpenTelemetry environment variables `configure()` checks before it builds anything: each bound exactly.

`tests/test_configure.py` shows that a bad value stops `configure()` before any thread or socket exists; here each
check's boundaries and messages, one variable at a time (an empty variable is unset, as the specification says).
"""

from __future__ import annotations

import os
import re

import pytest

from streamscope import _environment


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("OTEL_BSP_", "OTEL_BLRP_", "OTEL_EXPORTER_OTLP_", "OTEL_METRIC_EXPORT_"):
        for name in list(os.environ):
            if name.startswith(prefix):
                monkeypatch.delenv(name)


@pytest.mark.parametrize("prefix", ["OTEL_BSP", "OTEL_BLRP"])
@pytest.mark.parametrize(
    ("suffix", "value", "problem"),
    [
        ("SCHEDULE_DELAY", "0", "must be greater than 0, got '0'"),
        ("SCHEDULE_DELAY", "-1", "must be greater than 0, got '-1'"),
        ("SCHEDULE_DELAY", "soon", "must be a number, got 'soon'"),
        ("SCHEDULE_DELAY", "inf", "must be greater than 0, got 'inf'"),
        ("SCHEDULE_DELAY", "0.5", None),
        ("SCHEDULE_DELAY", " 5000 ", None),
        ("SCHEDULE_DELAY", "", None),
        ("EXPORT_TIMEOUT", "0", None),
        ("EXPORT_TIMEOUT", "2.5", None),
        ("EXPORT_TIMEOUT", "-0.1", "must be at least 0, got '-0.1'"),
        ("EXPORT_TIMEOUT", "nan", "must be at least 0, got 'nan'"),
        ("MAX_QUEUE_SIZE", "0", "must be greater than 0, got '0'"),
        ("MAX_QUEUE_SIZE", "1.5", "must be an integer, got '1.5'"),
        ("MAX_QUEUE_SIZE", "4096", None),
        ("MAX_EXPORT_BATCH_SIZE", "0", "must be greater than 0, got '0'"),
        ("MAX_EXPORT_BATCH_SIZE", "1", None),
        ("MAX_EXPORT_BATCH_SIZE", "2048", None),  # the default queue holds it exactly
    ],
)
def test_batch_processor_variables(
    monkeypatch: pytest.MonkeyPatch, prefix: str, suffix: str, value: str, problem: str | None
) -> None:
    name = f"{prefix}_{suffix}"
    monkeypatch.setenv(name, value)
    if problem is None:
        _environment.check_batch_processor(prefix)
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(f'{name} {problem}')}$"):
            _environment.check_batch_processor(prefix)


@pytest.mark.parametrize(
    ("queue", "batch", "problem"),
    [
        (None, "2049", "MAX_EXPORT_BATCH_SIZE (2049) must not exceed {p}_MAX_QUEUE_SIZE (2048)"),
        ("511", None, "MAX_EXPORT_BATCH_SIZE (512) must not exceed {p}_MAX_QUEUE_SIZE (511)"),
        ("512", None, None),
        ("100", "100", None),
        ("100", "101", "MAX_EXPORT_BATCH_SIZE (101) must not exceed {p}_MAX_QUEUE_SIZE (100)"),
    ],
)
@pytest.mark.parametrize("prefix", ["OTEL_BSP", "OTEL_BLRP"])
def test_a_batch_never_exceeds_the_queue_defaults_included(
    monkeypatch: pytest.MonkeyPatch, prefix: str, queue: str | None, batch: str | None, problem: str | None
) -> None:
    """The SDK's defaults are a queue of 2048 and batches of 512: either variable alone is checked against them."""
    if queue is not None:
        monkeypatch.setenv(f"{prefix}_MAX_QUEUE_SIZE", queue)
    if batch is not None:
        monkeypatch.setenv(f"{prefix}_MAX_EXPORT_BATCH_SIZE", batch)
    if problem is None:
        _environment.check_batch_processor(prefix)
    else:
        message = f"{prefix}_" + problem.format(p=prefix)
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            _environment.check_batch_processor(prefix)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("http://localhost:4318", "http://localhost:4318"),
        (" https://collector.example/v1/traces ", "https://collector.example/v1/traces"),
        ("localhost:4318", None),
        ("ftp://collector.example", None),
        ("http://", None),
        ("http://[::1", None),  # urlsplit refuses it
        ("/v1/traces", None),
    ],
)
def test_otlp_endpoints_are_absolute_http_urls(value: str, accepted: str | None) -> None:
    if accepted is not None:
        assert _environment.absolute_url(value, "SOURCE") == accepted
        return
    message = f"SOURCE must be an absolute URL with a scheme, like http://localhost:4318, got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _environment.absolute_url(value, "SOURCE")


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_otlp_variables_checked_for_each_signal_exported(monkeypatch: pytest.MonkeyPatch, signal: str) -> None:
    """The general and the signal's own endpoint and timeout; another signal's are not read."""
    other = next(s for s in ("traces", "metrics", "logs") if s != signal)
    monkeypatch.setenv(f"OTEL_EXPORTER_OTLP_{other.upper()}_ENDPOINT", "not a url")
    monkeypatch.setenv(f"OTEL_EXPORTER_OTLP_{other.upper()}_TIMEOUT", "never")
    _environment.check_otlp([signal])
    own = f"OTEL_EXPORTER_OTLP_{signal.upper()}"
    for name, value, problem in (
        (f"{own}_ENDPOINT", "collector:4318", "must be an absolute URL with a scheme"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "must be an absolute URL with a scheme"),
        (f"{own}_TIMEOUT", "-1", "must be at least 0, got '-1'"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten", "must be a number, got 'ten'"),
    ):
        with monkeypatch.context() as scoped:
            scoped.setenv(name, value)
            with pytest.raises(ValueError, match=f"^{re.escape(f'{name} {problem}')}"):
                _environment.check_otlp([signal])
    monkeypatch.setenv(f"{own}_TIMEOUT", "0")  # zero: no timeout bound is fine
    _environment.check_otlp([signal])


@pytest.mark.parametrize(("value", "ok"), [("0", False), ("1", True), ("-3", False), ("x", False), ("", True)])
def test_periodic_reader_timeout(monkeypatch: pytest.MonkeyPatch, value: str, ok: bool) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", value)
    if ok:
        _environment.check_periodic_reader()
    else:
        with pytest.raises(ValueError, match=r"^OTEL_METRIC_EXPORT_TIMEOUT must be "):
            _environment.check_periodic_reader()


def test_empty_or_blank_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "   ")
    assert _environment.env("OTEL_BSP_SCHEDULE_DELAY") is None
    assert _environment.milliseconds("OTEL_BSP_SCHEDULE_DELAY") is None
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", " 250 ")
    assert _environment.env("OTEL_BSP_SCHEDULE_DELAY") == "250"
    assert _environment.milliseconds("OTEL_BSP_SCHEDULE_DELAY") == 250.0
