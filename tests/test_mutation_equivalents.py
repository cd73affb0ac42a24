"""tests/mutation_equivalents.py: under mutmut a listed equivalent mutant runs no test; every other mutant runs its
tests, as does everything outside mutmut."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.mutation_equivalents import changed_lines, equivalent_mutants, load_equivalents, mutations_in

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

# What mutmut writes for a module `pkg.mod` with a function `clamp` and a method `Box.size`: each original beside its
# mutants (abridged: no trampolines).
_MUTATED_MODULE = '''
def x_clamp__mutmut_orig(value, limit):
    """Clamp."""
    if value > limit:
        return limit
    return value

def x_clamp__mutmut_1(value, limit):
    """Clamp."""
    if value >= limit:
        return limit
    return value

def x_clamp__mutmut_2(value, limit):
    """Clamp."""
    if value > limit:
        return None
    return value

class Box:
    def xǁBoxǁsize__mutmut_orig(self):
        return len(self.items) or 0

    def xǁBoxǁsize__mutmut_1(self):
        return len(self.items) or 1

    def xǁBoxǁsize__mutmut_2(self):
        return len(self.items) or None
'''

_EQUIVALENTS = '''
[[equivalent]]
function = "pkg.mod.x_clamp"
mutation = """
- if value > limit:
+ if value >= limit:
"""
reason = "at value == limit both return limit"

[[equivalent]]
function = "pkg.mod.xǁBoxǁsize"
mutation = """
- return len(self.items) or 0
+ return len(self.items) or None
"""
reason = "read only as a truth value"
'''

_TESTS = """
def test_one(): pass
def test_two(): pass
"""


@pytest.fixture
def mutated(pytester: pytest.Pytester) -> Path:
    """A project as mutmut's mutants/ directory holds it: the mutated module and the list of equivalents."""
    (pytester.path / "src" / "pkg").mkdir(parents=True)
    (pytester.path / "src" / "pkg" / "mod.py").write_text(_MUTATED_MODULE, "utf-8")
    (pytester.path / "benchmarks").mkdir()
    (pytester.path / "benchmarks" / "mutation_equivalents.toml").write_text(_EQUIVALENTS, "utf-8")
    pytester.makepyfile(test_things=_TESTS)
    return pytester.path


def test_the_listed_mutants_are_found_by_function_and_changed_lines_whatever_their_number(
    mutated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(mutated)
    equivalent_mutants.cache_clear()
    assert equivalent_mutants() == {"pkg.mod.x_clamp__mutmut_1", "pkg.mod.xǁBoxǁsize__mutmut_2"}
    equivalent_mutants.cache_clear()


def test_changed_lines_are_those_mutmut_show_prints(mutated: Path) -> None:
    module = mutated / "src" / "pkg" / "mod.py"
    assert mutations_in(module, "x_clamp") == {
        "1": "- if value > limit:\n+ if value >= limit:",
        "2": "- return limit\n+ return None",
    }
    assert mutations_in(module, "xǁBoxǁsize") == {
        "1": "- return len(self.items) or 0\n+ return len(self.items) or 1",
        "2": "- return len(self.items) or 0\n+ return len(self.items) or None",
    }
    assert mutations_in(module, "x_missing") == {}
    assert mutations_in(mutated / "src" / "pkg" / "absent.py", "x_clamp") == {}


def test_changed_lines_of_a_diff_keep_only_the_changes_stripped() -> None:
    diff = textwrap.dedent("""\
        --- a.py
        +++ a.py
        @@ -1,3 +1,3 @@
         def f():
        -    return  1
        +    return 2
        """)
    assert changed_lines(diff) == "- return  1\n+ return 2"


def test_an_entry_without_a_reason_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "equivalents.toml"
    path.write_text('[[equivalent]]\nfunction = "pkg.mod.x_f"\nmutation = "- a\\n+ b"\nreason = " "\n', "utf-8")
    with pytest.raises(SystemExit, match=r"equivalent #1 \(pkg.mod.x_f\) gives no reason"):
        load_equivalents(path)
    path.write_text('[[equivalent]]\nfunction = "pkg.mod.x_f"\nreason = "why"\n', "utf-8")
    with pytest.raises(SystemExit, match="equivalent #1 has no 'mutation'"):
        load_equivalents(path)
    assert load_equivalents(tmp_path / "absent.toml") == []


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str | None) -> pytest.RunResult:
    if mutant is None:
        monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    else:
        monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # where `tests.mutation_equivalents` is importable from
    return pytester.runpytest_subprocess("-p", "tests.mutation_equivalents", "-p", "no:cacheprovider")


@pytest.mark.usefixtures("mutated")
@pytest.mark.parametrize("mutant", ["pkg.mod.x_clamp__mutmut_1", "pkg.mod.xǁBoxǁsize__mutmut_2"])
def test_a_listed_mutant_runs_no_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str) -> None:
    monkeypatch.delenv("MUTATION_RUN_EQUIVALENTS", raising=False)
    result = run(pytester, monkeypatch, mutant)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # exit code 5: mutmut records "no tests"
    result.assert_outcomes(deselected=2)


@pytest.mark.usefixtures("mutated")
@pytest.mark.parametrize("mutant", [None, "", "stats", "list_all_tests", "fail", "pkg.mod.x_clamp__mutmut_2"])
def test_every_other_run_runs_its_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str | None
) -> None:
    """Outside mutmut, its clean, stats, listing and forced-fail runs, and an unlisted mutant."""
    monkeypatch.delenv("MUTATION_RUN_EQUIVALENTS", raising=False)
    run(pytester, monkeypatch, mutant).assert_outcomes(passed=2)


@pytest.mark.usefixtures("mutated")
def test_listed_mutants_run_their_tests_when_asked_to(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUTATION_RUN_EQUIVALENTS", "1")
    run(pytester, monkeypatch, "pkg.mod.x_clamp__mutmut_1").assert_outcomes(passed=2)
