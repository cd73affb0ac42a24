"""The mutants `benchmarks/mutation_equivalents.toml` lists as equivalent, and, under mutmut, not running their tests.

An equivalent mutant is one no test can tell from the original code; the list says why for each. It survives every
test, so running them only costs time: every test that reaches its function, 30-40 s in the hot path, on every run
from scratch. Under mutmut this plugin deselects all of an equivalent mutant's tests: pytest then runs none (exit
code 5) and mutmut records the mutant as "no tests"; `benchmarks/mutation_report.py` matches those against the list
as it matches survivors and counts them as equivalent. ``MUTATION_RUN_EQUIVALENTS=1`` runs them anyway: the check
that each listed mutant still survives (an entry no mutant matches any more is reported as stale either way).

A mutant is matched by its function (mutmut's mangled name, without the ``__mutmut_N`` suffix) and its changed
lines, so renumbering does not matter. Its changed lines are read from the mutated module mutmut wrote, where the
original of each function sits beside its mutants, and are the lines `mutmut show` would print as changed.

Loaded by ``pytest_add_cli_args`` in ``[tool.mutmut]``; does nothing outside mutmut.
"""

from __future__ import annotations

import ast
import difflib
import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

EQUIVALENTS = Path("benchmarks") / "mutation_equivalents.toml"  # mutmut runs pytest from inside mutants/
SOURCES = Path("src")
RUN_EQUIVALENTS = "MUTATION_RUN_EQUIVALENTS"
_MUTANT_SUFFIX = "__mutmut_"


@dataclass(frozen=True)
class Equivalent:
    function: str
    mutation: str
    reason: str


def changed_lines(diff: str) -> str:
    """The removed and added lines of a unified diff, stripped: what identifies a mutation within its function."""
    lines = [
        f"{line[0]} {line[1:].strip()}"
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return "\n".join(lines)


def load_equivalents(path: Path) -> list[Equivalent]:
    """The listed equivalents; `SystemExit` naming the entry if one lacks its function, mutation or reason."""
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text("utf-8"))
    entries: list[Equivalent] = []
    for index, entry in enumerate(data.get("equivalent", [])):
        try:
            function, mutation, reason = entry["function"], entry["mutation"], entry["reason"]
        except KeyError as missing:
            raise SystemExit(f"{path}: equivalent #{index + 1} has no {missing}") from None
        if not reason.strip():
            raise SystemExit(f"{path}: equivalent #{index + 1} ({function}) gives no reason")
        entries.append(Equivalent(function, changed_lines(mutation) or mutation.strip(), reason.strip()))
    return entries


def _module_path(module: str, sources: Path) -> Path:
    relative = Path(*module.split("."))
    candidate = sources / relative.with_suffix(".py")
    return candidate if candidate.exists() else sources / relative / "__init__.py"


@functools.cache
def _functions_of(path: Path) -> dict[str, list[str]]:
    """Each function and method of a mutated module by name (its mutants and originals), as its source lines."""
    try:
        source = path.read_text("utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return {}
    lines = source.splitlines()
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _MUTANT_SUFFIX in node.name:
            found[node.name] = lines[node.lineno - 1 : node.end_lineno]
    return found


def mutations_in(module_path: Path, mangled: str) -> dict[str, str]:
    """The changed lines of each mutant of `mangled` (a function's mangled name) in a mutated module, by number."""
    functions = _functions_of(module_path)
    original = functions.get(f"{mangled}{_MUTANT_SUFFIX}orig")
    if original is None:
        return {}
    prefix = f"{mangled}{_MUTANT_SUFFIX}"
    renamed_original = _renamed(original, f"{prefix}orig", mangled)
    found: dict[str, str] = {}
    for name, mutant in functions.items():
        number = name.removeprefix(prefix)
        if name.startswith(prefix) and number.isdigit():
            diff = difflib.unified_diff(renamed_original, _renamed(mutant, name, mangled), lineterm="")
            found[number] = changed_lines("\n".join(diff))
    return found


def _renamed(function: list[str], name: str, to: str) -> list[str]:
    """`function` named `to` on its `def` line, as `mutmut show` names both copies: they differ where mutated."""
    return [function[0].replace(f"def {name}(", f"def {to}(", 1), *function[1:]]


@functools.cache
def equivalent_mutants(equivalents: Path = EQUIVALENTS, sources: Path = SOURCES) -> frozenset[str]:
    """The names of the mutants in `sources` (mutmut's mutated copy) that `equivalents` lists.

    Computed once, in mutmut's fork server (its warm-up collection calls the hook below), not in each mutant's fork.
    """
    by_function: dict[str, set[str]] = {}
    for entry in load_equivalents(equivalents):
        by_function.setdefault(entry.function, set()).add(entry.mutation)
    names: set[str] = set()
    for function, mutations in by_function.items():
        module, _, mangled = function.rpartition(".")
        for number, mutation in mutations_in(_module_path(module, sources), mangled).items():
            if mutation in mutations:
                names.add(f"{function}{_MUTANT_SUFFIX}{number}")
    return frozenset(names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST")
    if mutant in (None, "stats", "list_all_tests") or os.environ.get(RUN_EQUIVALENTS) == "1":
        return
    listed = equivalent_mutants()  # in the fork server's warm-up too, so that every fork has it ready
    if mutant in listed and items:
        config.hook.pytest_deselected(items=list(items))
        items.clear()
