"""The streams in flight (opened, not finished yet): what shutdown ends and what the stall gauges watch."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_streams: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def add(recorder: Any) -> None:
    """Register a stream's recorder when the stream opens."""
    with _lock:
        _streams.add(recorder)


def discard(recorder: Any) -> None:
    """Forget a stream's recorder when the stream finishes."""
    with _lock:
        _streams.discard(recorder)


def snapshot() -> list[Any]:
    """The recorders of every stream in flight now (any thread may call this: the metric reader's does)."""
    with _lock:
        return list(_streams)
