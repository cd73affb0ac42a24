"""tests/mutation_order.py: under mutmut a mutant's tests run fastest first; outside mutmut nothing changes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.mutation_order import measured_durations

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

_TESTS = """
def test_slow(): pass
def test_new(): pass
def test_fast(): pass
def test_middle(): pass
"""
_MEASURED = {"test_order.py::test_slow": 2.5, "test_order.py::test_fast": 0.01, "test_order.py::test_middle": 0.3}


def ran_in_order(pytester: pytest.Pytester, mutant: str | None, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    pytester.makepyfile(test_order=_TESTS)
    if mutant is None:
        monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    else:
        monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # where `tests.mutation_order` is importable from
    result = pytester.runpytest_subprocess("-p", "tests.mutation_order", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    return re.findall(r"::(test_\w+) PASSED", result.stdout.str())


@pytest.fixture
def measured(pytester: pytest.Pytester) -> Path:
    path = pytester.path / "mutmut-stats.json"
    path.write_text(json.dumps({"duration_by_test": _MEASURED, "tests_by_mangled_function_name": {}}))
    return path


@pytest.mark.usefixtures("measured")
@pytest.mark.parametrize("mutant", ["streamscope._events.x_describe__mutmut_3", ""])
def test_a_mutants_tests_and_the_clean_run_go_fastest_first_unmeasured_last(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str
) -> None:
    assert ran_in_order(pytester, mutant, monkeypatch) == ["test_fast", "test_middle", "test_slow", "test_new"]


@pytest.mark.usefixtures("measured")
@pytest.mark.parametrize("mutant", [None, "stats", "list_all_tests"])
def test_order_kept_outside_mutmut_and_in_its_stats_and_listing_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str | None
) -> None:
    assert ran_in_order(pytester, mutant, monkeypatch) == ["test_slow", "test_new", "test_fast", "test_middle"]


def test_order_kept_before_mutmut_has_measured_the_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = ran_in_order(pytester, "streamscope._events.x_describe__mutmut_3", monkeypatch)
    assert order == ["test_slow", "test_new", "test_fast", "test_middle"]


@pytest.mark.parametrize(
    "content",
    ["", "not json", "[]", '{"duration_by_test": []}', '{"other": {}}', '{"duration_by_test": {"t": "slow"}}'],
)
def test_an_unreadable_stats_file_measures_nothing(tmp_path: Path, content: str) -> None:
    path = tmp_path / "mutmut-stats.json"
    path.write_text(content)
    assert measured_durations(path) == {}


def test_durations_read_as_seconds_by_node_id(tmp_path: Path) -> None:
    path = tmp_path / "mutmut-stats.json"
    path.write_text(json.dumps({"duration_by_test": {"a.py::t": 1, "b.py::u": 0.25, "c.py::v": None}}))
    assert measured_durations(path) == {"a.py::t": 1.0, "b.py::u": 0.25}
    assert measured_durations(tmp_path / "missing.json") == {}


def test_the_stats_file_is_parsed_again_only_once_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "mutmut-stats.json"
    path.write_text(json.dumps({"duration_by_test": {"a.py::t": 1}}))
    first = measured_durations(path)
    assert measured_durations(path) is first  # parsed once: mutmut's fork server parses it, its mutants' forks reuse it
    path.write_text(json.dumps({"duration_by_test": {"a.py::t": 2.5, "b.py::u": 0.5}}))
    assert measured_durations(path) == {"a.py::t": 2.5, "b.py::u": 0.5}
