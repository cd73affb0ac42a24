"""tests/mutation_fork_server.py: mutmut's fork-server warm-up freezes what it loaded; no other pytest run does."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

# Written when the inner pytest's interpreter exits, after pytest.main has returned: what a fork would inherit.
_CONFTEST = """
import atexit, gc
from pathlib import Path

atexit.register(lambda: Path("frozen.txt").write_text(str(gc.get_freeze_count())))
"""


def objects_frozen(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str | None, *args: str) -> int:
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(test_something="def test_something(): assert [1] == [1]\n")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # where `tests.mutation_fork_server` is importable from
    if mutant is None:
        monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    else:
        monkeypatch.setenv("MUTANT_UNDER_TEST", mutant)
    result = pytester.runpytest_subprocess("-p", "tests.mutation_fork_server", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return int((pytester.path / "frozen.txt").read_text())


def test_the_fork_servers_warm_up_freezes_what_it_loaded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest, the plugins and the collected test module: thousands of objects, none of them the warm-up's garbage
    assert objects_frozen(pytester, monkeypatch, "", "--collect-only", "-qqq") > 10_000


@pytest.mark.parametrize(
    ("mutant", "args"),
    [
        (None, ["--collect-only"]),  # outside mutmut
        ("", []),  # mutmut's clean run
        ("stats", []),
        ("list_all_tests", ["--collect-only"]),
        ("streamscope._events.x_describe__mutmut_3", []),  # a mutant's fork
    ],
    ids=["outside-mutmut", "clean-run", "stats-run", "listing-run", "mutant-fork"],
)
def test_no_other_run_freezes_anything(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: str | None, args: list[str]
) -> None:
    assert objects_frozen(pytester, monkeypatch, mutant, *args) == 0
