"""Run what exists of the pipeline over experiments, one session at a time.

Each session is processed independently: a session that fails is reported (session,
step, reason) and the others still complete. Outputs mirror the input tree under
``OUT/<experiment>/<date>/<session>/``; the input tree is only read.
"""

from __future__ import annotations

import csv
import io as _stdio
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calim_helpers import figures, io, rois
from calim_helpers.downsample import DEFAULT_FACTORS, downsample
from calim_helpers.errors import CalimInputError

__all__ = ["SessionResult", "process_session", "run_experiments"]


@dataclass
class SessionResult:
    """What happened to one session."""

    session: io.Session
    status: str = "ok"  # "ok", "skipped" or "failed"
    step: str = ""
    reason: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


def process_session(
    session: io.Session,
    out_root: Path,
    /,
    *,
    factors: Mapping[str, int] = DEFAULT_FACTORS,
) -> SessionResult:
    """Load, downsample and propagate the ROIs of one session; write its figures.

    Parameters
    ----------
    session : Session
        The session to process.
    out_root : pathlib.Path
        Output root; this session's files go to ``out_root/<experiment>/<date>/<name>/``.
    factors : mapping of str to int, optional
        Block-mean factors. Default is ``{"time": 10, "y": 2, "x": 2}``.

    Returns
    -------
    SessionResult
        Status, the failing step and reason if any, a summary row and the files written.
    """
    res = SessionResult(session, summary={"experiment": session.experiment,
                                          "date": session.date, "session": session.name})
    out_dir = out_root / session.experiment / session.date / session.name
    step = "load"
    try:
        movie = io.open_movie(session)
        step = "downsample"
        small = downsample(movie, factors)
        nt, ny, nx = movie.shape
        res.summary |= {
            "frames": nt, "height": ny, "width": nx,
            "frame_interval_s": movie.attrs["frame_interval_s"],
            "pixel_size_um": movie.attrs["pixel_size_um"],
            "downsampled_shape": "x".join(str(n) for n in small.shape),
            "roi_file": str(session.roi_file or ""),
        }
        step = "rois"
        if session.roi_file is None:
            res.status, res.step = "skipped", step
            res.reason = "no ROI set (ROIs/ROIs.zip, Rois/Rois.zip or RoiSet.zip)"
            return res
        roi_list = rois.read_rois(session.roi_file)
        labels = rois.label_image(roi_list, (ny, nx))
        weights = [rois.coverage_weights(rois.rasterize(r, (ny, nx), index=k), factors=factors)
                   for k, r in enumerate(roi_list, 1)]
        res.summary["n_rois"] = len(roi_list)
        res.summary["roi_pixels_median"] = int(np.median([np.sum(labels == k + 1)
                                                          for k in range(len(roi_list))]))
        res.summary["coverage_min"] = round(float(min(w.sum() for w in weights)), 2)
        step = "figures"
        mip = movie.max("time").values
        fig = figures.roi_overlay(mip, labels, names=[r.name for r in roi_list],
                                  title=f"{session.experiment} {session.id}: "
                                        f"{len(roi_list)} ROIs over the MIP")
        res.outputs.append(io.save_figure(fig, out_dir / f"{session.name}_rois.png", dpi=110))
    except CalimInputError as exc:
        res.status, res.step, res.reason = "failed", step, str(exc)
    except Exception as exc:  # noqa: BLE001 - one session's bug must not stop the others
        res.status, res.step = "failed", step
        res.reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    return res


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_experiments(
    experiments: Sequence[Path],
    out_root: Path,
    /,
    *,
    factors: Mapping[str, int] = DEFAULT_FACTORS,
    echo: Callable[[str], None] = print,
) -> list[SessionResult]:
    """Process every session of every experiment; write ``sessions.csv`` per experiment.

    Returns
    -------
    list of SessionResult
        One per session found, in order; experiments that cannot be read at all are
        reported through ``echo`` and skipped.
    """
    results: list[SessionResult] = []
    for exp in experiments:
        try:
            sessions = io.find_sessions(exp)
        except CalimInputError as exc:
            echo(f"FAILED experiment {exp}: {exc}")
            results.append(SessionResult(io.Session(Path(exp).name, "", "", Path(exp), (),
                                                    None, None),
                                         status="failed", step="find_sessions",
                                         reason=str(exc)))
            continue
        exp_results = []
        for i, session in enumerate(sessions, 1):
            t0 = time.perf_counter()
            echo(f"[{session.experiment} {i}/{len(sessions)}] {session.id} ...")
            r = process_session(session, out_root, factors=factors)
            took = time.perf_counter() - t0
            line = f"    {r.status} in {took:.1f} s"
            if r.status != "ok":
                line += f" at step '{r.step}': {r.reason.splitlines()[0]}"
            echo(line)
            exp_results.append(r)
        rows = [{"status": r.status, "step": r.step, "reason": r.reason.splitlines()[0]
                 if r.reason else "", **r.summary} for r in exp_results]
        table = io.write_text(out_root / Path(exp).name / "sessions.csv", _table(rows))
        echo(f"  wrote {table}")
        results += exp_results
    return results


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `calim` command")
