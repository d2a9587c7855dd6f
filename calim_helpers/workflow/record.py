"""The run record ``OUT/<experiment>/run_record.json``: what ran, on what, how, and when.

Written when a run starts (command line, start time, CALIM version and git commit when
CALIM runs from a git checkout, package versions, parameters as used, SHA-256 of every
input file) and completed when it ends (end time, per-session status and timings of
every step, every warning) by :func:`finish_record`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from calim_helpers import io
from calim_helpers.workflow.cluster import machine_cores
from calim_helpers.workflow.experiment import Experiment

__all__ = ["EXPERIMENT_WARNINGS", "PACKAGES", "experiment_warnings", "finish_record",
           "git_commit", "package_versions", "run_record", "sha256"]

#: The warnings of the steps that work on the whole experiment (a CSV of ``step,
#: warning``; :func:`calim_helpers.workflow.steps.recording_warnings`), under
#: ``OUT/<experiment>/``.
EXPERIMENT_WARNINGS = Path("status") / "experiment.csv"

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


def _now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def git_commit() -> str | None:
    """Return the git commit of the CALIM source when it runs from a git checkout, or None."""
    folder = Path(__file__).resolve().parents[2]
    if not (folder / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                "--untracked-files=no"], check=True, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def run_record(experiment: Experiment, params: Mapping[str, Any], /, *,
               command: list[str] | None = None) -> dict[str, Any]:
    """Write ``OUT/<experiment>/run_record.json`` at the start of a run and return it.

    Holds the command line, the start time, the CALIM version and git commit, package
    versions, the parameters as used and the SHA-256 of every input file of the
    selected sessions.
    """
    files = [Path(f) for s in experiment.sessions
             for f in (*s.stack_files, s.metadata_file, s.roi_file) if f is not None]

    def checksum(path: Path) -> str:
        try:
            return sha256(path)
        except OSError as exc:
            return f"unreadable: {exc}"

    # hashlib hashes outside the GIL: one thread per core (a full-size session's
    # 1.06 GB stack takes 0.7 s; 2 sessions' files 0.7 s on 2 threads, 1.4-1.7 s on one)
    with ThreadPoolExecutor(max(1, min(machine_cores(), len(files)))) as pool:
        inputs = {str(f.relative_to(experiment.experiment_dir)): digest
                  for f, digest in zip(files, pool.map(checksum, files), strict=True)}
    from calim_helpers import __version__

    record = {"experiment": experiment.name, "experiment_dir": str(experiment.experiment_dir),
              "command": command if command is not None else sys.argv,
              "started": _now(), "finished": None,
              "calim_version": __version__, "git_commit": git_commit(),
              "params": dict(params), "versions": package_versions(),
              "inputs_sha256": inputs, "sessions": {}, "warnings": []}
    io.write_text(experiment.root / "run_record.json", json.dumps(record, indent=1))
    return record


def experiment_warnings(root: Path, /) -> list[tuple[str, str]]:
    """``(step, warning)`` of each warning in ``root /`` :data:`EXPERIMENT_WARNINGS`."""
    import csv

    path = Path(root) / EXPERIMENT_WARNINGS
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["step"], r["warning"]) for r in csv.DictReader(fh) if r.get("warning")]


def finish_record(root: Path, statuses: Mapping[str, Any], /, *,
                  notebook_error: str = "", other_warnings: Sequence[str] = ()
                  ) -> dict[str, Any]:
    """Complete ``root/run_record.json``: end time, per-session steps, warnings.

    Parameters
    ----------
    root : pathlib.Path
        The experiment's output folder.
    statuses : mapping of str to pandas.DataFrame
        Step -> its status table (:func:`calim_helpers.workflow.runner.run_step`).
    notebook_error : str, optional
        The failed notebook and its error, if one failed. Default is "".
    other_warnings : sequence of str, optional
        Warnings not raised by a session's step (finding the sessions, the experiment's
        tables), each with where it was raised. Default is none.
    """
    path = root / "run_record.json"
    record = json.loads(path.read_text())
    sessions: dict[str, dict[str, Any]] = {}
    warned: list[str] = []
    for step, table in statuses.items():
        for row in table.to_dict("records"):
            sessions.setdefault(str(row["session"]), {})[step] = {
                "status": row["status"], "seconds": row["seconds"],
                "cached": bool(row.get("cached", False)), "reason": row.get("reason", "")}
            for w in str(row.get("warnings", "") or "").split(" | "):
                if w:
                    warned.append(f"{row['session']} {step}: {w}")
    warned += other_warnings
    record |= {"finished": _now(), "sessions": sessions,
               "warnings": list(dict.fromkeys(warned)), "notebook_error": notebook_error}
    io.write_text(path, json.dumps(record, indent=1, default=str))
    return record
