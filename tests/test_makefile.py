"""The Makefile makes its virtualenvs with the first Python 3.11+ among python3.11, python3.12, python3.13,
python3.14 and python3 on PATH, or with PYTHON=..., says which once, and fails clearly when there is none.

Proven with the real `make` on this repository's Makefile, run with a PATH holding only what each test puts
there: symlinks to this suite's own interpreter (3.11+) under the candidates' names, and a fake `python3.11`
that answers like Python 3.10.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

MAKE = shutil.which("make")
# This suite's interpreter, resolved out of its virtualenv: a real Python 3.11 or newer.
REAL_PYTHON = Path(os.path.realpath(sys.executable))
REAL_VERSION = f"Python {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
# What make runs while it reads the Makefile, before any recipe: `SUDO := $(shell [ "$$(id -u)" = 0 ] ...)`.
TOOLS = ("id",)
FAKE_OLD_PYTHON = """#!/bin/sh
echo "$*" >> '{log}'
case "$1" in
  --version|-V) echo "Python 3.10.14"; exit 0 ;;
  -c) exit 1 ;;  # the Makefile's check, sys.exit(sys.version_info < (3, 11)), as Python 3.10 answers it
esac
exit 2
"""


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH directory with nothing but the tools the Makefile needs (no Python)."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (path / tool).symlink_to(found)
    return path


def add_python(bin_dir: Path, name: str) -> Path:
    (bin_dir / name).symlink_to(REAL_PYTHON)
    return bin_dir / name


def add_old_python(bin_dir: Path, name: str) -> Path:
    """A fake interpreter answering like Python 3.10; each call is logged to `<name>.log` beside `bin_dir`."""
    fake = bin_dir / name
    fake.write_text(FAKE_OLD_PYTHON.format(log=bin_dir.parent / f"{name}.log"))
    fake.chmod(0o755)
    return fake


def make(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A fresh environment: no PYTHON, MAKEFLAGS or MAKELEVEL from CI or from a `make unit` running this suite.
    assert MAKE is not None
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def using(python: Path | str, version: str = REAL_VERSION) -> str:
    return f"streamscope: using {python} ({version})\n"


def test_the_suite_runs_on_a_real_python_311_or_newer() -> None:
    assert sys.version_info >= (3, 11)
    result = subprocess.run([REAL_PYTHON, "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == REAL_VERSION


def test_picks_python312_when_it_is_the_only_python(bin_dir: Path) -> None:
    python = add_python(bin_dir, "python3.12")
    result = make(bin_dir, "which-python")
    assert (result.returncode, result.stdout, result.stderr) == (0, using(python), "")


def test_skips_a_python311_that_is_too_old(bin_dir: Path) -> None:
    add_old_python(bin_dir, "python3.11")
    python = add_python(bin_dir, "python3.12")
    result = make(bin_dir, "which-python")
    assert (result.returncode, result.stdout, result.stderr) == (0, using(python), "")
    # It was found and asked, and its answer (too old) counted.
    asked = (bin_dir.parent / "python3.11.log").read_text()
    assert asked.startswith("-c import sys; sys.exit(sys.version_info < (3, 11))")


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        (("python3.11", "python3.12", "python3"), "python3.11"),
        (("python3.13", "python3.14"), "python3.13"),
        (("python3.14",), "python3.14"),
        (("python3",), "python3"),
    ],
)
def test_the_first_candidate_in_order_wins(bin_dir: Path, present: tuple[str, ...], chosen: str) -> None:
    for name in present:
        add_python(bin_dir, name)
    result = make(bin_dir, "which-python")
    assert (result.returncode, result.stdout, result.stderr) == (0, using(bin_dir / chosen), "")


def test_fails_clearly_without_python_311(bin_dir: Path) -> None:
    add_old_python(bin_dir, "python3.11")
    add_old_python(bin_dir, "python3")
    # A virtualenv that does not exist yet, so `install` has a recipe to run whatever state .venv is in.
    result = make(bin_dir, "install", f"VENV={bin_dir.parent / 'no-venv-yet'}")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "*** streamscope: no Python 3.11+ found: none of python3.11 python3.12 python3.13 python3.14 python3" in (
        result.stderr
    )
    assert "PYTHON=/path/to/python3.11+" in result.stderr


def test_python_overrides_the_search_and_is_checked(bin_dir: Path) -> None:
    add_python(bin_dir, "python3.11")
    chosen = add_python(bin_dir.parent, "my-python")
    result = make(bin_dir, "which-python", f"PYTHON={chosen}")
    assert (result.returncode, result.stdout, result.stderr) == (0, using(chosen), "")

    old = add_old_python(bin_dir, "python3.9")
    result = make(bin_dir, "which-python", "PYTHON=python3.9")
    assert result.returncode == 2
    assert "*** streamscope: PYTHON=python3.9 is not Python 3.11+ (Python 3.10.14)" in result.stderr
    assert old.exists()

    result = make(bin_dir, "which-python", "PYTHON=no-such-python")
    assert result.returncode == 2
    assert "*** streamscope: PYTHON=no-such-python is not Python 3.11+ (not found)" in result.stderr


def test_recipes_create_the_virtualenvs_with_it_and_say_so_once(bin_dir: Path, tmp_path: Path) -> None:
    python = add_python(bin_dir, "python3.12")
    venv, venv_low = tmp_path / "venv", tmp_path / "venv-low"
    result = make(bin_dir, "-n", "install", "install-lowest", f"VENV={venv}", f"VENV_LOW={venv_low}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("streamscope: using") == 1
    assert result.stdout.startswith(using(python))
    assert f"{python} -m venv {venv}\n" in result.stdout
    assert f"{python} -m venv {venv_low}\n" in result.stdout


def test_targets_without_python_need_none(bin_dir: Path) -> None:
    result = make(bin_dir, "-n", "clean")
    assert result.returncode == 0, result.stderr
    assert "streamscope: using" not in result.stdout
    assert result.stdout.startswith("rm -rf .venv .venv-low .venv-phoenix")
