"""The wheel carries the dashboards' data files, and `python -m streamscope export-dashboards DIR` writes them out.

Proven on a real wheel built from this repository (pip, with hatchling in an isolated build environment),
installed with `pip install --target` and run in subprocesses that import it rather than the editable source;
and, in process, on the source tree this suite imports (the editable install), which reads `dashboards/` itself.
The data set is every `dashboards/*.json`, `dashboards/provisioning/**` and `dashboards/alerts/*.yml` file,
whichever of them exist when the test runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import streamscope
from streamscope import _export_dashboards
from streamscope.__main__ import main
from tests.servers import ROOT

SOURCE = ROOT / "dashboards"
PACKAGE_PREFIX = "streamscope/dashboards/"

# Imports the installed streamscope, asserts it is the one under argv[1], then runs it as `python -m streamscope`
# would with the remaining arguments.
RUN_FROM_TARGET = """
import runpy, sys
from pathlib import Path
import streamscope
target = Path(sys.argv[1]).resolve()
assert Path(streamscope.__file__).resolve().is_relative_to(target), f"not the wheel: {streamscope.__file__}"
sys.argv = ["streamscope", *sys.argv[2:]]
runpy.run_module("streamscope", run_name="__main__", alter_sys=True)
"""


def expected_files() -> set[str]:
    """The source data set, by path relative to dashboards/ (found here independently of the code under test)."""
    found = [
        *SOURCE.glob("*.json"),
        *(path for path in (SOURCE / "provisioning").rglob("*") if path.is_file()),
        *(SOURCE / "alerts").glob("*.yml"),
    ]
    return {path.relative_to(SOURCE).as_posix() for path in found}


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def assert_exported(out: Path) -> None:
    """`out` holds exactly the source data set, byte for byte."""
    assert files_under(out) == expected_files()
    for name in expected_files():
        assert (out / name).read_bytes() == (SOURCE / name).read_bytes(), name


def run(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)],
        cwd=out, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("streamscope-*.whl")
    return built


@pytest.fixture(scope="module")
def target(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed with `pip install --no-deps --target`: import it with PYTHONPATH=target."""
    site = tmp_path_factory.mktemp("site")
    result = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
        cwd=site, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def test_the_source_data_set_is_what_the_code_selects() -> None:
    assert {"streamscope-overview.json", "provisioning/dashboards.yaml"} <= expected_files()
    assert _export_dashboards.data_files(SOURCE) == sorted(expected_files())


def test_data_files_selects_data_never_code(tmp_path: Path) -> None:
    for name in (
        "a.json", "provisioning/dashboards.yaml", "provisioning/deep/er/notifiers.yaml", "alerts/rules.yml",
        "alerts/rules.test.yml", "alerts/README.md", "generate.py", "_grafana.py", "__init__.py",
        "__pycache__/generate.cpython-311.pyc", "provisioning/__pycache__/x.pyc", "provisioning/.hidden", "notes.txt",
    ):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert _export_dashboards.data_files(tmp_path) == [
        "a.json", "alerts/rules.test.yml", "alerts/rules.yml", "provisioning/dashboards.yaml",
        "provisioning/deep/er/notifiers.yaml",
    ]  # fmt: skip


def test_the_wheel_holds_every_data_file_and_no_generator_code(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = {name.removeprefix(PACKAGE_PREFIX) for name in names if name.startswith(PACKAGE_PREFIX)}
        assert packaged == expected_files()
        for name in packaged:
            assert archive.read(PACKAGE_PREFIX + name) == (SOURCE / name).read_bytes(), name
    assert {"streamscope/__main__.py", "streamscope/_export_dashboards.py"} <= names
    assert not any(name.startswith("dashboards/") or name.endswith("hatch_build.py") for name in names)


def test_export_from_the_installed_wheel(target: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = tmp_path / "created" / "by the command"
    packaged = target / "streamscope" / "dashboards"

    exporting = [sys.executable, "-c", RUN_FROM_TARGET, str(target), "export-dashboards", str(out)]
    result = run(exporting, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exported(out)
    lines = result.stdout.splitlines()
    assert {line for line in lines if line.startswith("wrote ")} == {f"wrote {out / name}" for name in expected_files()}
    assert lines[-1] == f"streamscope: wrote {len(expected_files())} file(s) to {out} (from {packaged})"
    assert "/var/lib/grafana/dashboards/streamscope" in result.stdout  # where provisioning/dashboards.yaml looks

    # Without --force: refused, exit code 2, nothing written (neither over the edited file nor the missing one).
    (out / "streamscope-overview.json").write_bytes(b"edited")
    (out / "provisioning" / "datasources.yaml").unlink()
    command = [sys.executable, "-m", "streamscope", "export-dashboards", str(out)]
    refused = run(command, cwd=tmp_path, env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == ""
    assert f"refusing to overwrite {len(expected_files()) - 1} existing file(s) in {out}" in refused.stderr
    assert "streamscope-overview.json" in refused.stderr
    assert "--force" in refused.stderr
    assert (out / "streamscope-overview.json").read_bytes() == b"edited"
    assert not (out / "provisioning" / "datasources.yaml").exists()

    forced = run([*command, "--force"], cwd=tmp_path, env=env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.splitlines()[-1].endswith(f"(from {packaged})")
    assert_exported(out)


def test_export_from_the_source_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # This suite imports the editable install: src/streamscope, without a packaged copy of the data.
    assert Path(streamscope.__file__).resolve().parent == ROOT / "src" / "streamscope"
    assert _export_dashboards.packaged_dashboards() is None
    assert _export_dashboards.locate_dashboards()[0] == str(SOURCE)

    out = tmp_path / "out"
    assert main(["export-dashboards", str(out)]) == 0
    assert_exported(out)
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"to {out} (from {SOURCE})")

    assert main(["export-dashboards", str(out)]) == 2
    assert "pass --force to overwrite them" in capsys.readouterr().err
    (out / "streamscope-overview.json").write_bytes(b"edited")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(b"not ours")
    (out / "streamscope-model.json").unlink()
    (out / "streamscope-model.json").symlink_to(elsewhere)
    assert main(["export-dashboards", "--force", str(out)]) == 0
    assert_exported(out)
    assert not (out / "streamscope-model.json").is_symlink()
    assert elsewhere.read_bytes() == b"not ours"  # replaced the link, never wrote through it


def test_export_refuses_a_file_as_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    destination = tmp_path / "a-file"
    destination.write_text("keep")
    assert main(["export-dashboards", "--force", str(destination)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert destination.read_text() == "keep"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export-dashboards", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "usage: python -m streamscope export-dashboards [-h] [--force] DIR" in text
    assert "provisioning/dashboards.yaml" in text
    words = " ".join(text.split())  # as argparse wraps it at any terminal width
    assert "positional arguments: DIR folder to write to (created if missing) options:" in words
    assert "--force overwrite files that already exist in DIR provisioning/" in words
