"""Hatch build hook: ship the dashboards' data files inside the wheel, in ``streamscope/dashboards/``.

Which files: those ``streamscope._export_dashboards.data_files`` selects with its ``DATA_PATTERNS`` in the
repository's ``dashboards/`` folder (the Grafana JSON, ``provisioning/**``, ``alerts/*.yml``), globbed at build
time, so new files there ship without a change here; never the generator's Python modules. The module is loaded
by path: one list of patterns for the wheel and for exports from a source tree.

Editable wheels get nothing: an editable install reads the repository's ``dashboards/`` folder itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE_DATA = "streamscope/dashboards"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_streamscope_export_dashboards", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DashboardsBuildHook(BuildHookInterface[BuilderConfig]):
    """Adds every data file of ``dashboards/`` to the standard wheel under ``streamscope/dashboards/``."""

    PLUGIN_NAME = "streamscope-dashboards"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        source = root / "dashboards"
        names: list[str] = _load(root / "src" / "streamscope" / "_export_dashboards.py").data_files(source)
        if not names:
            raise RuntimeError(f"no dashboard files found in {source}")
        force_include: dict[str, str] = build_data["force_include"]
        for name in names:
            force_include[str(source / name)] = f"{PACKAGE_DATA}/{name}"
