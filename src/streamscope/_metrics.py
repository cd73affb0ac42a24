"""Metric instruments, created once per meter provider, and the in-process sums behind the counters.

Counters (usage deltas, stream events, streams finished, streams in flight) are kept as plain sums that
streamscope updates the moment something happens and that observable instruments report at collection
time — the same values a synchronous counter would export, at a fraction of its cost per update, which
matters on a stream's open/close path. Histograms stay synchronous.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from . import _inflight
from . import _names as n

AttributesKey = tuple[tuple[str, AttributeValue], ...]
"""A metric attribute set as a hashable tuple of (key, value) pairs."""


class Sums:
    """Cumulative sums per attribute set, reported by an observable instrument.

    Costs are added as `Decimal`s and summed exactly, so one stream's total is the float of its final price, with
    no rounding drift however many deltas it took to get there; they are reported as floats.
    """

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._values: dict[AttributesKey, int | Decimal] = {}
        self._lock: threading.Lock = threading.Lock()

    def add(self, value: int | Decimal, key: AttributesKey) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + value

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._values.items())
        return [Observation(float(value) if isinstance(value, Decimal) else value, dict(key)) for key, value in items]

    def keys(self) -> list[AttributesKey]:
        """Every attribute set seen so far."""
        with self._lock:
            return list(self._values)


class StallWatch:
    """The stall gauges of one set of instruments: in-flight streams with no chunk for longer than their stall
    threshold, and the age of the oldest in-flight stream, per attribute set (0 for sets with none).

    It reads, at collection time, what the hot path already keeps (the time of each stream's last chunk), so
    watching costs the stream nothing per event.
    """

    def __init__(self, owner: MetricInstruments | None = None) -> None:
        self.owner: MetricInstruments | None = owner

    def _in_flight(self) -> list[Any]:
        return [r for r in _inflight.snapshot() if r.telemetry.metrics is self.owner]

    def _keys(self) -> list[AttributesKey]:
        return self.owner.streams_active.keys() if self.owner is not None else []

    def observe_stalled(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = time.perf_counter_ns()
        stalled = dict.fromkeys(self._keys(), 0)
        for recorder in self._in_flight():
            if now - (recorder.last_chunk_ns or recorder.start_ns) > recorder.stall_threshold_ns:
                stalled[recorder.metric_key] = stalled.get(recorder.metric_key, 0) + 1
        return [Observation(count, dict(key)) for key, count in stalled.items()]

    def observe_oldest_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = time.perf_counter_ns()
        oldest = dict.fromkeys(self._keys(), 0)
        for recorder in self._in_flight():
            age = now - recorder.start_ns
            if age > oldest.get(recorder.metric_key, 0):
                oldest[recorder.metric_key] = age
        return [Observation(age / 1e9, dict(key)) for key, age in oldest.items()]


@dataclass(frozen=True, slots=True, eq=False)
class MetricInstruments:
    """streamscope's instruments on one meter provider."""

    token_usage: Histogram
    operation_duration: Histogram
    time_to_first_chunk: Histogram
    time_per_output_chunk: Histogram
    chunk_gap_mean: Histogram
    chunk_gap_longest: Histogram
    stream_cost: Histogram
    cost: Sums  # of Decimal USD
    usage: tuple[tuple[str, Sums], ...]  # (RequestUsage field, its delta sums)
    stream_events: Sums
    streams_active: Sums
    streams_finished: Sums
    policy_violations: Counter
    stall_watch: StallWatch


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
    cost = Sums()
    meter.create_observable_counter(
        n.METRIC_COST, callbacks=[cost.observe], unit=n.COST_UNIT, description=n.DESCRIPTION_COST
    )
    stall_watch = StallWatch()
    meter.create_observable_gauge(
        n.METRIC_STREAMS_STALLED,
        callbacks=[stall_watch.observe_stalled],
        unit="{stream}",
        description="Streams in flight whose last chunk (or open, before the first) is older than the stall threshold.",
    )
    meter.create_observable_gauge(
        n.METRIC_STREAMS_OLDEST_AGE,
        callbacks=[stall_watch.observe_oldest_age],
        unit="s",
        description="Age of the oldest stream in flight (0 when none is).",
    )
    instruments = MetricInstruments(
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
        stream_cost=_histogram(meter, n.METRIC_STREAM_COST, n.COST_UNIT, n.DESCRIPTION_STREAM_COST, n.COST_BUCKETS),
        cost=cost,
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
            description="Model requests denied, or answers stopped, by a policy (streamscope.policy.name).",
        ),
        stall_watch=stall_watch,
    )
    stall_watch.owner = instruments
    return instruments
