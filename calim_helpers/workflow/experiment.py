"""An experiment's sessions and where each step's results go (SPEC §3 output layout).

Outputs mirror the input tree: ``OUT/<experiment>/`` for the experiment's files,
``OUT/<experiment>/<date>/<session>/`` for a session's, with one Zarr store per step:

- ``<session>_load.zarr`` -- the downsampled movie (float32), the native MIP and, when
  motion was corrected, the shifts and mean images before / after (step ``load``);
- ``<session>_traces.zarr`` -- ROI traces, background, ROI label image (step ``rois``);
- ``<session>_result.zarr`` -- drift-corrected and normalized traces (step ``arpls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from calim_helpers import io
from calim_helpers.errors import CalimInputError

__all__ = ["COMPARISON_CELLS", "COMPARISON_OUTPUTS", "COMPARISON_PDF", "CONDITION_SUMMARY",
           "CONDITION_TESTS", "STORES", "Experiment"]

#: The store each step writes.
STORES = {"load": "load", "rois": "traces", "arpls": "result"}

# What a comparison of experiments writes under OUT/comparison/ (the compare step; a
# stale comparison is removed file by file by the run)
COMPARISON_CELLS = "comparison_cells.csv"
COMPARISON_PDF = "comparison.pdf"
CONDITION_TESTS = "condition_tests.csv"
CONDITION_SUMMARY = "condition_summary.pdf"
COMPARISON_OUTPUTS = (COMPARISON_CELLS, COMPARISON_PDF, CONDITION_TESTS, CONDITION_SUMMARY)


@dataclass(frozen=True)
class Experiment:
    """An experiment folder, its selected sessions and its output folder.

    Use :meth:`open` to build one from folders.
    """

    experiment_dir: Path
    out_dir: Path
    sessions: tuple[io.Session, ...]

    @classmethod
    def open(cls, experiment_dir: str | Path, out_dir: str | Path,
             sessions: Sequence[str] = ()) -> Experiment:
        """Find the sessions of ``experiment_dir``; keep those named in ``sessions``.

        Parameters
        ----------
        experiment_dir : path-like
            The experiment folder (``dd-mm-yy/<yymmdd>_<n>/`` tree), read only.
        out_dir : path-like
            Output root; this experiment's files go to ``out_dir/<experiment name>/``.
        sessions : sequence of str, optional
            Session ids (``"<date>_<session>"``) or names (``"<session>"``) to keep.
            Default is all.

        Raises
        ------
        CalimInputError
            A named session does not exist (the message lists the known ones).
        """
        found = io.find_sessions(experiment_dir)
        if sessions:
            wanted = {str(s) for s in sessions}
            known = {s.id for s in found} | {s.name for s in found}
            unknown = sorted(wanted - known)
            if unknown:
                raise CalimInputError(
                    f"{experiment_dir}: no session {', '.join(unknown)} "
                    f"(known: {', '.join(s.id for s in found)})")
            found = [s for s in found if s.id in wanted or s.name in wanted]
        return cls(Path(experiment_dir), Path(out_dir), tuple(found))

    @property
    def name(self) -> str:
        """Experiment (condition) name: the folder's name."""
        return self.experiment_dir.name

    @property
    def root(self) -> Path:
        """Output folder of the experiment."""
        return self.out_dir / self.name

    def session(self, key: str, /) -> io.Session:
        """Return the selected session with id or name ``key``."""
        for s in self.sessions:
            if key in (s.id, s.name):
                return s
        raise CalimInputError(f"{self.name}: no selected session {key!r} "
                              f"(selected: {', '.join(s.id for s in self.sessions)})")

    def session_dir(self, session: io.Session, /) -> Path:
        """Output folder of one session (mirrors the input tree)."""
        return self.root / session.date / session.name

    def path(self, session: io.Session, kind: str, /) -> Path:
        """Path of a session's ``load``, ``traces`` or ``result`` store."""
        return self.session_dir(session) / f"{session.name}_{kind}.zarr"

    def file(self, session: io.Session, suffix: str, /) -> Path:
        """Path of a session's output file ``<session>_<suffix>``."""
        return self.session_dir(session) / f"{session.name}_{suffix}"

    def has(self, session: io.Session, kind: str, /) -> bool:
        """Whether the session's ``kind`` store exists."""
        return self.path(session, kind).exists()

    def open_store(self, session: io.Session, kind: str, /) -> xr.Dataset:
        """Open a session's ``load``, ``traces`` or ``result`` store lazily."""
        return io.open_store(self.path(session, kind))

    def table(self) -> pd.DataFrame:
        """One row per selected session: id, stack files, ROI set, problem."""
        return pd.DataFrame([{
            "session": s.id, "stack_files": len(s.stack_files),
            "roi_file": str(s.roi_file.relative_to(s.path)) if s.roi_file else "none",
            "problem": s.problem or "",
        } for s in self.sessions], columns=["session", "stack_files", "roi_file", "problem"])
