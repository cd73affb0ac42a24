"""Under mutmut, run the selected tests fastest first, so that a mutant dies at its cheapest failing test.

mutmut runs each mutant's tests with ``-x`` in no particular order (the order of a set), so a mutant that most of its
tests kill often runs seconds of slow tests before a fast one fails. Ordered by the duration mutmut measured for each
test in its stats run (``mutants/mutmut-stats.json``), a killed mutant costs its fastest killing test, not a random one:
about a third less time over the hot path's mutants. What is killed and what survives does not change, as long as the
tests do not depend on their order; mutmut's clean run, ordered the same way, checks that they do not.

Loaded by ``pytest_add_cli_args`` in ``[tool.mutmut]``; does nothing outside mutmut (no ``MUTANT_UNDER_TEST`` in the
environment) or before mutmut has measured the tests.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import pytest

STATS_FILE = Path("mutmut-stats.json")  # mutmut runs pytest from inside mutants/


def measured_durations(stats_file: Path = STATS_FILE) -> dict[str, float]:
    """Each test's duration in seconds as mutmut measured it, by node id; empty if there is no readable measure.

    Parsed once per version of the file (some MB): in mutmut's fork server, whose warm-up collection reads it, and not
    again in each mutant's fork.
    """
    try:
        stat = stats_file.stat()
    except OSError:
        return {}
    return _durations_in(str(stats_file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _durations_in(path: str, mtime_ns: int, size: int) -> dict[str, float]:
    try:
        durations = json.loads(Path(path).read_text("utf-8"))["duration_by_test"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(durations, dict):
        return {}
    return {str(test): float(seconds) for test, seconds in durations.items() if isinstance(seconds, int | float)}


def fastest_first(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Order `items` by measured duration, fastest first; unmeasured tests (new since the stats run) go last."""
    items.sort(key=lambda item: durations.get(item.nodeid, math.inf))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") in (None, "stats", "list_all_tests"):
        return
    durations = measured_durations()
    if durations:
        fastest_first(items, durations)
