"""The run record: what was run, on what, with which parameters and packages."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calim_helpers import io
from calim_helpers.workflow.experiment import Experiment

__all__ = ["PACKAGES", "package_versions", "run_record", "sha256"]

#: Distributions whose versions are recorded.
PACKAGES = ("calim", "numpy", "scipy", "tifffile", "imagecodecs", "roifile", "xarray", "dask",
            "zarr", "matplotlib", "pandas", "scikit-image", "threadpoolctl", "papermill",
            "jupytext", "nbconvert", "jsonschema")


def sha256(path: str | Path, /) -> str:
    """SHA-256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None when missing)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def run_record(experiment: Experiment, params: Mapping[str, Any], /, *,
               command: list[str] | None = None) -> dict[str, Any]:
    """Write ``OUT/<experiment>/run_record.json`` and return it.

    Holds the command line, the parameters as used, package versions and the SHA-256
    of every input file of the selected sessions.
    """
    inputs = {}
    for s in experiment.sessions:
        for f in (*s.stack_files, s.metadata_file, s.roi_file):
            if f is not None:
                key = str(Path(f).relative_to(experiment.experiment_dir))
                try:
                    inputs[key] = sha256(f)
                except OSError as exc:
                    inputs[key] = f"unreadable: {exc}"
    record = {"experiment": experiment.name, "experiment_dir": str(experiment.experiment_dir),
              "command": command if command is not None else sys.argv,
              "params": dict(params), "versions": package_versions(),
              "inputs_sha256": inputs}
    io.write_text(experiment.root / "run_record.json", json.dumps(record, indent=1))
    return record
