"""`python -m streamscope export-dashboards DIR [--force]`, in process: what the user sees, word for word.

The help texts, the usage errors, every line the command prints (and to which stream), its exit codes and the
files it leaves behind, read from each place the data can come from: the repository's `dashboards/` (the
editable install this suite imports), a packaged copy inside the installed package (a folder, as pip installs a
wheel, or a zip archive, as zipimport serves it; stood in for by replacing `importlib.resources.files`), and
neither (a broken install).
"""

from __future__ import annotations

import errno
import io
import os
import zipfile
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import pytest

from streamscope import _export_dashboards
from streamscope.__main__ import build_parser, main
from tests.test_packaging import SOURCE, assert_exported, expected_files, files_under

GRAFANA_NOTE = "copy or mount the *.json files there, or edit its `path:`"

TOP_LEVEL_HELP = """\
usage: python -m streamscope [-h] COMMAND ...

streamscope's command line.

positional arguments:
  COMMAND
    export-dashboards
                     write the Grafana dashboards, provisioning files and alert rules to a folder

options:
  -h, --help         show this help message and exit
"""

EXPORT_HELP = """\
usage: python -m streamscope export-dashboards [-h] [--force] DIR

Write streamscope's Grafana dashboards (*.json), Grafana provisioning files (provisioning/) and
Prometheus alert rules with their promtool tests (alerts/*.yml, when present) to DIR, keeping
their relative paths and their bytes. Existing files are left alone (exit code 2) unless --force
is given.

positional arguments:
  DIR         folder to write to (created if missing)

options:
  -h, --help  show this help message and exit
  --force     overwrite files that already exist in DIR

provisioning/dashboards.yaml names the folder Grafana loads dashboards from (its `path:`, as
Grafana sees it); put or mount the exported *.json files there, and provisioning/*.yaml in
Grafana's provisioning folders.
"""

TOP_LEVEL_USAGE = "usage: python -m streamscope [-h] COMMAND ...\n"
EXPORT_USAGE = "usage: python -m streamscope export-dashboards [-h] [--force] DIR\n"

# A packaged data set: data files at every depth, in the order the command writes them (sorted, depth first).
DATA: dict[str, bytes] = {
    "a.json": b'{"title": "A"}\n',
    "alerts/rules.yml": b"groups: []\n",
    "provisioning/dashboards.yaml": (
        b"apiVersion: 1\nproviders:\n  - name: streamscope\n    options:\n"
        b"      path:   /grafana/dashboards   # as Grafana sees it\n"
    ),
    "provisioning/nested/deeper/datasources.yaml": b"apiVersion: 1\ndatasources: []\n",
    "z.json": b'{"title": "Z"}\n',
}
# What the package folder may also hold and the command never writes: hidden, cache and Python files, some of
# them sorted before every data file of their folder.
NOT_DATA: dict[str, bytes] = {
    ".hidden/b.json": b"{}",
    "__pycache__/gen.cpython-311.pyc": b"\x00",
    "gen.py": b"",
    "provisioning/.secret.yaml": b"",
    "provisioning/__init__.yaml": b"",
    "provisioning/gen.pyc": b"\x00",
    "provisioning/nested/gen.py": b"",
}

Kind = Literal["folder", "zip"]


@pytest.fixture(autouse=True)
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help to the terminal's width (fixed here) and, from Python 3.14, may colour it (not here)."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("PYTHON_COLORS", "0")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    """Exit code, stdout and stderr of `python -m streamscope ARGV`, run in process."""
    try:
        code: int | str | None = main(argv)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def install_packaged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: Kind, contents: Mapping[str, bytes]) -> str:
    """Give the installed package a `dashboards/` copy holding `contents`; return how the command names it."""
    if kind == "folder":
        package: Traversable = tmp_path / "site" / "streamscope"
        for name, data in contents.items():
            path = tmp_path / "site" / "streamscope" / "dashboards" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        where = f"{tmp_path}/site/streamscope/dashboards"
    else:
        archive = tmp_path / "site.zip"
        with zipfile.ZipFile(archive, "w") as writing:
            writing.writestr("streamscope/__init__.py", "")
            for name in sorted(contents, reverse=True):  # the archive's own order is not the order written
                writing.writestr(f"streamscope/dashboards/{name}", contents[name])
        package = zipfile.Path(archive, "streamscope/")
        where = f"{archive}/streamscope/dashboards/"

    def files(anchor: str) -> Traversable:
        assert anchor == "streamscope"
        return package

    monkeypatch.setattr(_export_dashboards, "files", files)
    return where


def install_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module_file: Path) -> None:
    """No packaged copy, and streamscope imported from `module_file` instead of this repository's src/."""
    monkeypatch.setattr(_export_dashboards, "files", lambda anchor: tmp_path / "empty-site" / anchor)
    monkeypatch.setattr(_export_dashboards, "__file__", str(module_file))


def exported_lines(out: Path, names: list[str], *, grafana_path: str | None, source: str) -> list[str]:
    note = [] if grafana_path is None else [
        f"note: provisioning/dashboards.yaml makes Grafana load dashboards from {grafana_path}: {GRAFANA_NOTE}"
    ]  # fmt: skip
    return [
        *(f"wrote {out / name}" for name in names),
        *note,
        f"streamscope: wrote {len(names)} file(s) to {out} (from {source})",
    ]


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], TOP_LEVEL_HELP),
        (["export-dashboards", "--help"], EXPORT_HELP),
        (["export-dashboards", "-h"], EXPORT_HELP),
    ],
)
def test_help(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Word for word; where argparse breaks the lines differs between Python versions (3.13 puts a subcommand's help
    # beside its name), so the layout is compared on the usage line only.
    code, stdout, stderr = run_main(argv, capsys)
    assert (code, stdout.split(), stderr) == (0, expected.split(), "")
    assert stdout.splitlines()[0] == expected.splitlines()[0]


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main([], capsys) == (
        2, "", f"{TOP_LEVEL_USAGE}python -m streamscope: error: the following arguments are required: COMMAND\n"
    )  # fmt: skip
    code, stdout, stderr = run_main(["bogus"], capsys)
    assert (code, stdout) == (2, "")
    # How the choices are quoted is up to the Python version ('export-dashboards' up to 3.13).
    assert stderr.replace("'export-dashboards'", "export-dashboards") == (
        f"{TOP_LEVEL_USAGE}python -m streamscope: error: argument COMMAND: invalid choice: 'bogus' "
        "(choose from export-dashboards)\n"
    )
    assert run_main(["export-dashboards"], capsys) == (
        2, "",
        f"{EXPORT_USAGE}python -m streamscope export-dashboards: error: the following arguments are required: DIR\n",
    )  # fmt: skip
    assert run_main(["export-dashboards", "a", "b"], capsys) == (
        2, "", f"{TOP_LEVEL_USAGE}python -m streamscope: error: unrecognized arguments: b\n"
    )  # fmt: skip


def test_parsed_arguments() -> None:
    parser = build_parser()
    assert vars(parser.parse_args(["export-dashboards", "out/dir"])) == {
        "command": "export-dashboards", "directory": Path("out/dir"), "force": False,
        "handler": _export_dashboards.run,
    }  # fmt: skip
    assert vars(parser.parse_args(["export-dashboards", "--force", "d"])) == {
        "command": "export-dashboards", "directory": Path("d"), "force": True, "handler": _export_dashboards.run,
    }  # fmt: skip


# --- from the source tree (the editable install this suite imports) ---------------------------------------------


def test_export_from_the_source_tree_prints_every_file_then_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "out"
    names = sorted(expected_files())
    code, stdout, stderr = run_main(["export-dashboards", str(out)], capsys)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == exported_lines(
        out, names, grafana_path="/var/lib/grafana/dashboards/streamscope", source=str(SOURCE)
    )
    assert_exported(out)

    # Again, without --force: every file is named, in order, and none is touched.
    (out / names[0]).write_bytes(b"edited")
    assert run_main(["export-dashboards", str(out)], capsys) == (
        2, "",
        f"streamscope: refusing to overwrite {len(names)} existing file(s) in {out}: {', '.join(names)}; "
        "pass --force to overwrite them\n",
    )  # fmt: skip
    assert (out / names[0]).read_bytes() == b"edited"


def test_export_dashboards_writes_to_the_streams_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    names = sorted(expected_files())
    stdout, stderr = io.StringIO(), io.StringIO()
    assert _export_dashboards.export_dashboards(out, stdout=stdout, stderr=stderr) == _export_dashboards.EXIT_OK
    assert stdout.getvalue().splitlines() == exported_lines(
        out, names, grafana_path="/var/lib/grafana/dashboards/streamscope", source=str(SOURCE)
    )
    assert stderr.getvalue() == ""
    assert_exported(out)

    # Not forced unless asked.
    stdout, stderr = io.StringIO(), io.StringIO()
    assert _export_dashboards.export_dashboards(out, stdout=stdout, stderr=stderr) == _export_dashboards.EXIT_REFUSED
    assert stdout.getvalue() == ""
    assert stderr.getvalue().startswith(f"streamscope: refusing to overwrite {len(names)} existing file(s) in {out}: ")
    stdout, stderr = io.StringIO(), io.StringIO()
    assert _export_dashboards.export_dashboards(out, force=True, stdout=stdout, stderr=stderr) == 0
    assert stdout.getvalue().splitlines() == exported_lines(
        out, names, grafana_path="/var/lib/grafana/dashboards/streamscope", source=str(SOURCE)
    )
    assert stderr.getvalue() == ""

    assert capsys.readouterr() == ("", "")  # nothing went to the process's own streams


# --- from a packaged copy (a wheel install) ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_export_from_a_packaged_copy(
    kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The packaged copy wins over the repository's dashboards/ folder, which is there too.
    where = install_packaged(monkeypatch, tmp_path, kind, {**DATA, **NOT_DATA})
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["export-dashboards", str(out)], capsys)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == exported_lines(out, list(DATA), grafana_path="/grafana/dashboards", source=where)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == DATA


@pytest.mark.parametrize(
    ("provisioning", "grafana_path"),
    [
        (None, None),
        (b"apiVersion: 1\nproviders:\n  - name: streamscope\n    type: file\n", None),
        (b"providers:\n- options:\n    path: /srv/grafana\n    foldersFromFilesStructure: true\n", "/srv/grafana"),
    ],
    ids=["no dashboards.yaml", "no path in it", "a path in it"],
)
def test_the_note_names_the_folder_grafana_loads_from(
    provisioning: bytes | None,
    grafana_path: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    contents = {"a.json": b"{}", "provisioning/datasources.yaml": b"apiVersion: 1\n"}
    if provisioning is not None:
        contents["provisioning/dashboards.yaml"] = provisioning
    where = install_packaged(monkeypatch, tmp_path, "folder", contents)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["export-dashboards", str(out)], capsys)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == exported_lines(out, sorted(contents), grafana_path=grafana_path, source=where)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_a_packaged_copy_without_data_files(
    kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = install_packaged(monkeypatch, tmp_path, kind, NOT_DATA)
    out = tmp_path / "out"
    assert run_main(["export-dashboards", str(out)], capsys) == (
        1, "", f"streamscope: no dashboard files found in {where}\n"
    )  # fmt: skip
    assert not out.exists()


# --- without any copy (a broken install) -------------------------------------------------------------------------

NOWHERE = (
    "streamscope: streamscope's dashboards are neither in the installed package (streamscope/dashboards/) nor in "
    "a source checkout's dashboards/ folder; reinstall streamscope from its wheel\n"
)


@pytest.mark.parametrize(
    "module_file",
    ["src/streamscope/_export_dashboards.py", "lib/site-packages/streamscope/_export_dashboards.py"],
    ids=["a src tree without dashboards/", "not a src tree"],
)
def test_no_dashboards_anywhere(
    module_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lib" / "dashboards").mkdir(parents=True)  # beside site-packages/, not a checkout's: never read
    (tmp_path / "lib" / "dashboards" / "a.json").write_text("{}")
    install_nothing(monkeypatch, tmp_path, tmp_path / module_file)
    out = tmp_path / "out"
    assert run_main(["export-dashboards", str(out)], capsys) == (1, "", NOWHERE)

    stdout, stderr = io.StringIO(), io.StringIO()
    assert _export_dashboards.export_dashboards(out, stdout=stdout, stderr=stderr) == _export_dashboards.EXIT_FAILED
    assert (stdout.getvalue(), stderr.getvalue(), capsys.readouterr()) == ("", NOWHERE, ("", ""))
    assert not out.exists()


def test_export_from_another_source_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, data in {**DATA, **NOT_DATA, "notes.txt": b"", "alerts/README.md": b""}.items():
        (tmp_path / "dashboards" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dashboards" / name).write_bytes(data)
    install_nothing(monkeypatch, tmp_path, tmp_path / "src" / "streamscope" / "_export_dashboards.py")
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["export-dashboards", str(out)], capsys)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == exported_lines(
        out, list(DATA), grafana_path="/grafana/dashboards", source=str(tmp_path / "dashboards")
    )
    assert {name: (out / name).read_bytes() for name in files_under(out)} == DATA


# --- what is already in DIR ------------------------------------------------------------------------------------


def test_existing_files_are_named_and_kept_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = install_packaged(monkeypatch, tmp_path, "folder", DATA)
    out = tmp_path / "out"
    (out / "alerts").mkdir(parents=True)
    (out / "alerts" / "rules.yml").write_bytes(b"mine")
    (out / "z.json").symlink_to(tmp_path / "nowhere.json")  # a dangling link: it exists, as a link
    expected_refusal = (
        f"streamscope: refusing to overwrite 2 existing file(s) in {out}: alerts/rules.yml, z.json; "
        "pass --force to overwrite them\n"
    )
    assert run_main(["export-dashboards", str(out)], capsys) == (2, "", expected_refusal)
    assert files_under(out) == {"alerts/rules.yml"}
    assert (out / "alerts" / "rules.yml").read_bytes() == b"mine"

    code, stdout, stderr = run_main(["export-dashboards", str(out), "--force"], capsys)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == exported_lines(out, list(DATA), grafana_path="/grafana/dashboards", source=where)
    assert {name: (out / name).read_bytes() for name in files_under(out)} == DATA
    assert not (out / "z.json").is_symlink()
    assert not (tmp_path / "nowhere.json").exists()  # the link was replaced, never written through


def test_a_hard_link_is_replaced_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_packaged(monkeypatch, tmp_path, "folder", {"a.json": b"new"})
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "theirs.json").write_bytes(b"theirs")
    (out / "a.json").hardlink_to(tmp_path / "theirs.json")
    assert run_main(["export-dashboards", "--force", str(out)], capsys)[0] == 0
    assert (out / "a.json").read_bytes() == b"new"
    assert (tmp_path / "theirs.json").read_bytes() == b"theirs"


def test_directories_where_files_go_are_refused_even_when_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_packaged(monkeypatch, tmp_path, "folder", DATA)
    out = tmp_path / "out"
    (out / "a.json").mkdir(parents=True)
    (out / "provisioning" / "dashboards.yaml").mkdir(parents=True)
    assert run_main(["export-dashboards", "--force", str(out)], capsys) == (
        2, "",
        f"streamscope: cannot write files over directories in {out}: a.json, provisioning/dashboards.yaml\n",
    )  # fmt: skip
    assert files_under(out) == set()


def test_a_file_as_destination_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_packaged(monkeypatch, tmp_path, "folder", DATA)
    destination = tmp_path / "a-file"
    destination.write_text("keep")
    assert run_main(["export-dashboards", "--force", str(destination)], capsys) == (
        2, "", f"streamscope: {destination} exists and is not a directory\n"
    )  # fmt: skip
    assert destination.read_text() == "keep"


def test_a_write_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_packaged(monkeypatch, tmp_path, "folder", DATA)
    out = tmp_path / "out"
    out.mkdir()
    (out / "provisioning").write_text("a file where a folder goes")
    error = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(out / "provisioning"))
    code, stdout, stderr = run_main(["export-dashboards", str(out)], capsys)
    assert (code, stderr) == (1, f"streamscope: cannot write the dashboards to {out}: {error}\n")
    assert stdout.splitlines() == [f"wrote {out / 'a.json'}", f"wrote {out / 'alerts' / 'rules.yml'}"]
