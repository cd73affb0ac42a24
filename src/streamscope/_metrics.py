"""Metric instruments, created once per meter provider, and the in-process sums behind the counters.

Counters (usage deltas, stream events, streams finished, streams in flight) are kept as plain sums that
streamscope updates the moment something happens and that observable instruments report at collection
time — the same values a synchronous counter would export, at a fraction of its cost per update, which
matters on a stream's open/close path. Histograms stay synchronous.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from . import _names as n

AttributesKey = tuple[tuple[str, AttributeValue], ...]
"""A metric attribute set as a hashable tuple of (key, value) pairs."""


class Sums:
    """Cumulative sums per attribute set, reported by an observable instrument."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._values: dict[AttributesKey, int] = {}
        self._lock = threading.Lock()

    def add(self, value: int, key: AttributesKey) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + value

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._values.items())
        return [Observation(value, dict(key)) for key, value in items]


@dataclass(frozen=True, slots=True, eq=False)
class MetricInstruments:
    """streamscope's instruments on one meter provider."""

    token_usage: Histogram
    operation_duration: Histogram
    time_to_first_chunk: Histogram
    time_per_output_chunk: Histogram
    chunk_gap_mean: Histogram
    chunk_gap_longest: Histogram
    usage: tuple[tuple[str, Sums], ...]  # (RequestUsage field, its delta sums)
    stream_events: Sums
    streams_active: Sums
    streams_finished: Sums
    policy_violations: Counter


_by_provider: weakref.WeakKeyDictionary[Any, MetricInstruments] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def instruments_for(meter_provider: MeterProvider | None, version: str) -> MetricInstruments:
    """The instruments on `meter_provider` (the global one if None), created on first use."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        found = _by_provider.get(provider)
        if found is None:
            found = _create(metrics.get_meter(n.INSTRUMENTATION_NAME, version, provider, n.SCHEMA_URL))
            _by_provider[provider] = found
        return found


def _observable_counter(meter: Meter, name: str, unit: str, description: str) -> Sums:
    sums = Sums()
    meter.create_observable_counter(name, callbacks=[sums.observe], unit=unit, description=description)
    return sums


def _histogram(meter: Meter, name: str, unit: str, description: str, buckets: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets)


def _create(meter: Meter) -> MetricInstruments:
    streams_active = Sums()
    meter.create_observable_up_down_counter(
        n.METRIC_STREAMS_ACTIVE,
        callbacks=[streams_active.observe],
        unit="{stream}",
        description="Streams opened and not yet finished.",
    )
    return MetricInstruments(
        token_usage=_histogram(meter, n.METRIC_TOKEN_USAGE, "{token}", n.DESCRIPTION_TOKEN_USAGE, n.TOKEN_BUCKETS),
        operation_duration=_histogram(
            meter, n.METRIC_OPERATION_DURATION, "s", n.DESCRIPTION_OPERATION_DURATION, n.DURATION_BUCKETS
        ),
        time_to_first_chunk=_histogram(
            meter, n.METRIC_TIME_TO_FIRST_CHUNK, "s", n.DESCRIPTION_TIME_TO_FIRST_CHUNK, n.DURATION_BUCKETS
        ),
        time_per_output_chunk=_histogram(
            meter, n.METRIC_TIME_PER_OUTPUT_CHUNK, "s", n.DESCRIPTION_TIME_PER_OUTPUT_CHUNK, n.CHUNK_TIME_BUCKETS
        ),
        chunk_gap_mean=_histogram(
            meter, n.METRIC_CHUNK_GAP_MEAN, "s", n.DESCRIPTION_CHUNK_GAP_MEAN, n.CHUNK_TIME_BUCKETS
        ),
        chunk_gap_longest=_histogram(
            meter, n.METRIC_CHUNK_GAP_LONGEST, "s", n.DESCRIPTION_CHUNK_GAP_LONGEST, n.CHUNK_TIME_BUCKETS
        ),
        usage=tuple(
            (
                field,
                _observable_counter(meter, name, "{token}", f"Growth of the streams' usage.{field}, as it happens."),
            )
            for field, name, _ in n.USAGE_FIELDS
        ),
        stream_events=_observable_counter(meter, n.METRIC_STREAM_EVENTS, "{event}", "Stream events seen, by kind."),
        streams_active=streams_active,
        streams_finished=_observable_counter(
            meter, n.METRIC_STREAMS_FINISHED, "{stream}", "Streams finished, by outcome."
        ),
        policy_violations=meter.create_counter(
            n.METRIC_POLICY_VIOLATIONS,
            unit="{violation}",
            description="Model requests denied by a policy (check_allow_model_requests).",
        ),
    )
