"""``python -m streamscope export-dashboards DIR``: write streamscope's dashboards and their companions to a folder.

The data set is what the repository's ``dashboards/`` folder holds besides the generator's code
(:data:`DATA_PATTERNS`): the Grafana dashboards (``*.json``), the Grafana provisioning files
(``provisioning/**``) and the Prometheus alert rules with their promtool unit tests (``alerts/*.yml``). They are
written byte for byte, keeping their paths relative to ``dashboards/``.

Where they are read from (:func:`locate_dashboards`):

- An installed wheel carries them inside the package, in ``streamscope/dashboards/``: the build hook
  ``hatch_build.py`` copies them there when the wheel is built, selecting them with :data:`DATA_PATTERNS`
  (it loads this module by path, so this module imports nothing but the standard library at import time).
- An editable install (``pip install -e .``) or a source checkout has no such copy (the hook adds nothing to
  editable wheels): they are read from the repository's ``dashboards/`` folder, beside ``src/``, selected with
  the same patterns, so what a source tree exports is what its wheel would carry.

The packaged copy is used whenever it exists; the repository's folder only when it does not.

``provisioning/dashboards.yaml`` tells Grafana where to load dashboards from (its ``path:``, a path as Grafana
sees it, usually inside its container or VM, not the folder written here). It is written unchanged; the command
prints that path, where the exported ``*.json`` files belong (copy or mount them there, or edit ``path:``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO

DATA_PATTERNS: tuple[str, ...] = ("*.json", "provisioning/**/*", "alerts/*.yml")
"""Globs, relative to ``dashboards/``, of the files that are data (shipped in the wheel and exported)."""

PACKAGE_DATA_DIR = "dashboards"
"""Where the data files live inside the installed package: ``streamscope/dashboards/``."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2

_PROVISIONING_DASHBOARDS = "provisioning/dashboards.yaml"
_PROVISIONING_PATH = re.compile(rb"^\s*path:\s*(\S+)", re.MULTILINE)


def _is_data(relative: Path) -> bool:
    """Not a cache, hidden or Python file (the generator's modules live in the same folder)."""
    return relative.suffix not in {".py", ".pyc"} and not any(part.startswith((".", "__")) for part in relative.parts)


def data_files(folder: Path) -> list[str]:
    """The data files under a ``dashboards/`` source folder, as sorted POSIX paths relative to it."""
    found: set[str] = set()
    for pattern in DATA_PATTERNS:
        for path in folder.glob(pattern):
            relative = path.relative_to(folder)
            if path.is_file() and _is_data(relative):
                found.add(relative.as_posix())
    return sorted(found)


def packaged_dashboards() -> Traversable | None:
    """The copy inside the installed package (``streamscope/dashboards/``), or None (editable or source tree)."""
    folder = files("streamscope") / PACKAGE_DATA_DIR
    return folder if folder.is_dir() else None


def source_dashboards() -> Path | None:
    """The repository's ``dashboards/`` folder when streamscope runs from ``src/`` (editable or checkout), else None."""
    package = Path(__file__).resolve().parent
    if package.parent.name != "src":
        return None
    folder = package.parent.parent / "dashboards"
    return folder if folder.is_dir() else None


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        relative = f"{prefix}{entry.name}"
        if not _is_data(Path(relative)):
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{relative}/")
        elif entry.is_file():
            yield relative, entry


def locate_dashboards() -> tuple[str, dict[str, Traversable]]:
    """Where the data files are read from (for messages) and each one by its relative POSIX path.

    The package's own copy when it has one (a wheel install), else the repository's ``dashboards/`` folder
    (an editable install or a source checkout). Raises ``FileNotFoundError`` when neither exists.
    """
    packaged = packaged_dashboards()
    if packaged is not None:
        return str(packaged), dict(_walk(packaged))
    source = source_dashboards()
    if source is not None:
        return str(source), {name: source / name for name in data_files(source)}
    raise FileNotFoundError(
        "streamscope's dashboards are neither in the installed package (streamscope/dashboards/) nor in a "
        "source checkout's dashboards/ folder; reinstall streamscope from its wheel"
    )


def _provisioning_path(found: Mapping[str, Traversable]) -> str | None:
    """The folder ``provisioning/dashboards.yaml`` tells Grafana to load dashboards from, if it names one."""
    resource = found.get(_PROVISIONING_DASHBOARDS)
    if resource is None:
        return None
    match = _PROVISIONING_PATH.search(resource.read_bytes())
    return match.group(1).decode() if match else None


def export_dashboards(
    destination: Path, *, force: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Write every data file into ``destination`` (created if missing); return the process exit code.

    Refuses (exit code 2, nothing written) when a file to be written already exists, unless ``force``; prints
    one line per file written, then a summary.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        source, found = locate_dashboards()
    except FileNotFoundError as error:
        print(f"streamscope: {error}", file=err)
        return EXIT_FAILED
    if not found:
        print(f"streamscope: no dashboard files found in {source}", file=err)
        return EXIT_FAILED
    if destination.exists() and not destination.is_dir():
        print(f"streamscope: {destination} exists and is not a directory", file=err)
        return EXIT_REFUSED

    targets = {name: destination / name for name in found}
    directories = [name for name, target in targets.items() if target.is_dir()]
    if directories:
        print(f"streamscope: cannot write files over directories in {destination}: {', '.join(directories)}", file=err)
        return EXIT_REFUSED
    existing = [name for name, target in targets.items() if target.exists() or target.is_symlink()]
    if existing and not force:
        print(
            f"streamscope: refusing to overwrite {len(existing)} existing file(s) in {destination}: "
            f"{', '.join(existing)}; pass --force to overwrite them",
            file=err,
        )
        return EXIT_REFUSED

    try:
        for name, resource in found.items():
            target = targets[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()  # replace the file itself, never write through a symlink
            target.write_bytes(resource.read_bytes())
            print(f"wrote {target}", file=out)
    except OSError as error:
        print(f"streamscope: cannot write the dashboards to {destination}: {error}", file=err)
        return EXIT_FAILED

    grafana_path = _provisioning_path(found)
    if grafana_path is not None:
        print(
            f"note: {_PROVISIONING_DASHBOARDS} makes Grafana load dashboards from {grafana_path}: "
            "copy or mount the *.json files there, or edit its `path:`",
            file=out,
        )
    print(f"streamscope: wrote {len(found)} file(s) to {destination} (from {source})", file=out)
    return EXIT_OK


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``export-dashboards``."""
    parser.add_argument("directory", type=Path, metavar="DIR", help="folder to write to (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite files that already exist in DIR")


def run(args: argparse.Namespace) -> int:
    """Run ``export-dashboards`` with parsed arguments; return the exit code."""
    directory: Path = args.directory
    force: bool = args.force
    return export_dashboards(directory, force=force)


DESCRIPTION = (
    "Write streamscope's Grafana dashboards (*.json), Grafana provisioning files (provisioning/) and Prometheus "
    "alert rules with their promtool tests (alerts/*.yml, when present) to DIR, keeping their relative paths and "
    "their bytes. Existing files are left alone (exit code 2) unless --force is given."
)
EPILOG = (
    "provisioning/dashboards.yaml names the folder Grafana loads dashboards from (its `path:`, as Grafana sees it); "
    "put or mount the exported *.json files there, and provisioning/*.yaml in Grafana's provisioning folders."
)
