"""The never-raise guard: a failure inside streamscope is logged, never raised into the user's code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

INTERNAL_LOGGER_NAME = "streamscope.internal"
internal_logger = logging.getLogger(INTERNAL_LOGGER_NAME)

P = ParamSpec("P")
R = TypeVar("R")


def report_internal_error(what: str) -> None:
    """Log the exception being handled as a streamscope failure (with its traceback)."""
    internal_logger.warning("streamscope failed while %s; the stream is unaffected", what, exc_info=True)


def never_raises(what: str, default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a telemetry callback so an `Exception` in it is logged and `default` returned instead."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except Exception:
                report_internal_error(what)
                return default

        return guarded

    return decorate
