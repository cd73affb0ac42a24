"""The OpenTelemetry environment variables `configure()` depends on, read and checked before anything is built.

As the OpenTelemetry environment specification says, an empty variable means the same as an unset one. The SDK
components `configure()` builds read some variables themselves (batch processors, the periodic metric reader,
the OTLP exporters) and, on a bad value, log a warning and use their default, or raise only after other
components have started their threads. `configure()` checks those values here first and refuses a bad one with a
`ValueError` naming the variable, before it creates any provider, thread or socket. The variable names are the
SDK's public constants; the SDK offers no public parser for their values, hence the small ones here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from opentelemetry.sdk import environment_variables as env_names


def env(name: str) -> str | None:
    """The variable's value, stripped; None when it is unset or empty (the specification: empty means unset)."""
    value = os.environ.get(name, "").strip()
    return value or None


def _number(name: str, *, integer: bool, minimum: float, exclusive: bool) -> float | None:
    raw = env(name)
    if raw is None:
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise ValueError(f"{name} must be {bound}, got {raw!r}")
    return value


def milliseconds(name: str) -> float | None:
    """A duration in milliseconds, greater than 0."""
    return _number(name, integer=False, minimum=0, exclusive=True)


def absolute_url(value: str, source: str) -> str:
    """`value` if it is an absolute http(s) URL with a host (what the OTLP endpoint variables hold)."""
    try:
        parts = urlsplit(value.strip())
        has_host = bool(parts.hostname)
    except ValueError:
        has_host = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not has_host:
        raise ValueError(f"{source} must be an absolute URL with a scheme, like http://localhost:4318, got {value!r}")
    return value.strip()


def check_batch_processor(prefix: str) -> None:
    """The batch span (``OTEL_BSP_*``) or log record (``OTEL_BLRP_*``) processor's settings."""
    _number(f"{prefix}_SCHEDULE_DELAY", integer=False, minimum=0, exclusive=True)
    _number(f"{prefix}_EXPORT_TIMEOUT", integer=False, minimum=0, exclusive=False)
    queue = _number(f"{prefix}_MAX_QUEUE_SIZE", integer=True, minimum=0, exclusive=True)
    batch = _number(f"{prefix}_MAX_EXPORT_BATCH_SIZE", integer=True, minimum=0, exclusive=True)
    default_queue, default_batch = 2048, 512
    if (batch or default_batch) > (queue or default_queue):
        raise ValueError(
            f"{prefix}_MAX_EXPORT_BATCH_SIZE ({batch or default_batch}) must not exceed "
            f"{prefix}_MAX_QUEUE_SIZE ({queue or default_queue})"
        )


def check_otlp(signals: Iterable[str]) -> None:
    """The OTLP exporters' endpoint and timeout variables, in general and for each signal exported over OTLP."""
    names = [env_names.OTEL_EXPORTER_OTLP_ENDPOINT]
    timeouts = [env_names.OTEL_EXPORTER_OTLP_TIMEOUT]
    for signal in signals:
        names.append(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        timeouts.append(f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT")
    for name in names:
        value = env(name)
        if value is not None:
            absolute_url(value, name)
    for name in timeouts:
        _number(name, integer=False, minimum=0, exclusive=False)


def check_periodic_reader() -> None:
    """The periodic metric reader's timeout (its interval is read by `configure()` itself)."""
    milliseconds(env_names.OTEL_METRIC_EXPORT_TIMEOUT)


METRIC_EXPORT_INTERVAL = env_names.OTEL_METRIC_EXPORT_INTERVAL
PROMETHEUS_HOST = env_names.OTEL_EXPORTER_PROMETHEUS_HOST
PROMETHEUS_PORT = env_names.OTEL_EXPORTER_PROMETHEUS_PORT
BSP = "OTEL_BSP"
BLRP = "OTEL_BLRP"
