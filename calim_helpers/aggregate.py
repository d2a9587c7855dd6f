"""An experiment from its sessions: the tables of SPEC §3 (pure, no file access).

- :func:`experiment_dataset` -- session results side by side along ``cell``;
- :func:`wide_table` -- ``results_raw.csv`` / ``results_norm.csv``: one column per ROI
  ``<date>_<session>_ROI<n>``, one row per downsampled frame;
- :func:`tidy_table` -- ``results_long.csv``: one row per cell and frame;
- :func:`average_trace` -- the lab's "average histogram" (``hist_cum``): mean, SEM and
  count over all ROIs of all sessions per frame;
- :func:`cell_summaries` -- per-cell summaries for comparisons across experiments;
- :func:`time_base` and :func:`seconds_to_frames` -- the one time unit of an
  experiment's tables: seconds when every session has the same known frame interval,
  else native frames, each session's times converted.

Statistics across sessions and conditions are in :mod:`calim_helpers.stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = ["average_trace", "cell_summaries", "experiment_dataset", "native_frame_interval",
           "seconds_to_frames", "tidy_table", "time_base", "wide_table"]

# the trace variables of a session result, in the order of the tidy table
TRACE_VARIABLES = ("raw", "background", "signal", "baseline", "corrected", "baseline_raw",
                   "dff", "dff_raw", "norm")
_KEEP_ATTRS = ("experiment", "normalize", "trim_start", "lam", "cutoff_s", "tol", "max_iter",
               "seed", "background_fraction", "frame_interval_s_downsampled")


def native_frame_interval(result: xr.Dataset, /) -> float | None:
    """Return the seconds per recorded (native) frame of a session result, None if unknown.

    From ``attrs["frame_interval_s"]``. A result without it (written by an earlier
    version) derives it from its downsampled interval ``dt``
    (``attrs["frame_interval_s_downsampled"]``) and the time ``t0`` of its first frame,
    the centre of a block of ``f`` native frames starting at 0 s:
    ``t0 = (f - 1) / 2 · dt / f``, so the native interval ``dt / f = dt - 2 t0``.
    """
    def known(value: object) -> float | None:
        try:
            v = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) and v > 0 else None

    if "frame_interval_s" in result.attrs:
        return known(result.attrs["frame_interval_s"])
    dt = known(result.attrs.get("frame_interval_s_downsampled"))
    if dt is None or result.sizes.get("time", 0) == 0:
        return None
    return known(dt - 2 * float(result["time"].values[0]))


def time_base(results: Sequence[xr.Dataset], /) -> tuple[str, list[float | None]]:
    """Return the time unit of an experiment's tables and each session's native interval.

    Returns
    -------
    unit : {"s", "frame"}
        ``"s"`` when every session's frame interval is known and all agree within 1 %;
        else ``"frame"``: times are then counted in native (recorded) frames, which is
        what a session without a frame interval counts in.
    intervals : list of float or None
        :func:`native_frame_interval` of each result, s.
    """
    intervals = [native_frame_interval(r) for r in results]
    known = [v for v in intervals if v is not None]
    same = len(known) == len(intervals) and (not known or max(known) <= 1.01 * min(known))
    return ("s" if same else "frame"), intervals


def seconds_to_frames(table: pd.DataFrame, interval_s: float, /) -> pd.DataFrame:
    """Convert a table's times from seconds to native frames of ``interval_s`` seconds.

    Columns ending in ``_s`` are divided by ``interval_s`` (rounded to 1e-9 frame);
    ``rate_per_min`` (events per
    60 s) and ``frequency_hz`` (per s) are multiplied by it, giving events per 60 frames
    and cycles per frame. Names are kept: the workflow renames the columns of tables
    written in frames (``*_frames``, ``rate_per_60_frames``, ``frequency_per_frame``).

    Examples
    --------
    >>> t = pd.DataFrame({"time_s": [1.0, 3.0], "rate_per_min": [6.0, 12.0], "n": [1, 2]})
    >>> seconds_to_frames(t, 0.5).to_dict("list")
    {'time_s': [2.0, 6.0], 'rate_per_min': [3.0, 6.0], 'n': [1, 2]}
    """
    if not (np.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    out = table.copy()
    for col in out.columns:
        if not isinstance(col, str):
            continue
        if col.endswith("_s"):  # rounded: 10.9 s / 0.2 s is 54.5 frames, not 54.50000000000001
            out[col] = (out[col] / interval_s).round(9)
        elif col in ("rate_per_min", "frequency_hz"):
            out[col] = out[col] * interval_s
    return out


def experiment_dataset(results: Sequence[xr.Dataset], /) -> xr.Dataset:
    """Concatenate session results along ``cell`` (``cell_id = <date>_<session>_ROI<n>``).

    Parameters
    ----------
    results : sequence of xarray.Dataset
        Session results (:func:`calim_helpers.correction.correct_traces`), loaded, with
        attrs ``date`` and ``session``.

    Returns
    -------
    xarray.Dataset
        Every variable with ``roi`` renamed ``cell``; coords ``cell_id``, ``date``,
        ``session``, ``roi``, ``roi_name``, ``roi_source`` (``"expert"`` or ``"auto"``,
        from each result's attrs; empty when not recorded), ``time`` (of the longest session, in the
        unit of :func:`time_base`: s, or native frames when a session's frame interval
        is unknown or the sessions' intervals differ) and ``frame``. Sessions with
        fewer frames are padded with NaN. Attrs: the parameters shared by the sessions
        (``frame_interval_s_downsampled`` None when time is in frames) and ``sessions``
        (their ids).

    Raises
    ------
    CalimInputError
        No result given.

    Warns
    -----
    CalimWarning
        When the sessions' frame intervals are all known but differ: the experiment is
        then counted in frames.
    """
    if not results:
        raise CalimInputError("no session result to aggregate")
    n_time = max(r.sizes["time"] for r in results)
    i_longest = next(i for i, r in enumerate(results) if r.sizes["time"] == n_time)
    unit, intervals = time_base(results)
    if unit == "frame" and all(v is not None for v in intervals):
        warnings.warn(
            "sessions have different frame intervals ("
            + ", ".join(f"{r.attrs['date']}_{r.attrs['session']}: {v:g} s"
                        for r, v in zip(results, intervals, strict=True))
            + "); the experiment's tables count time in recorded frames",
            CalimWarning, stacklevel=2)
    time = results[i_longest]["time"].values.astype(np.float64)
    if unit == "frame" and intervals[i_longest] is not None:
        time = np.round(time / intervals[i_longest], 9)
    parts = []
    for r in results:
        n = r.sizes["time"]
        r = r.drop_vars(["time", "frame"], errors="ignore")
        if n < n_time:
            r = r.pad(time=(0, n_time - n))  # NaN for the float traces
        date, sess = r.attrs["date"], r.attrs["session"]
        ids = [f"{date}_{sess}_ROI{k}" for k in r["roi"].values.tolist()]
        r = r.rename_dims(roi="cell").drop_indexes("roi").assign_coords(
            cell_id=("cell", ids), date=("cell", [date] * len(ids)),
            session=("cell", [sess] * len(ids)),
            roi_source=("cell", [str(r.attrs.get("roi_source", ""))] * len(ids)))
        parts.append(r)
    exp = xr.concat(parts, dim="cell", combine_attrs="drop_conflicts", data_vars="all",
                    coords="all", compat="equals", join="exact")
    exp = exp.assign_coords(time=("time", time), frame=("time", np.arange(n_time)))
    exp.attrs = {k: results[0].attrs.get(k) for k in _KEEP_ATTRS}
    if unit == "frame":
        exp.attrs["frame_interval_s_downsampled"] = None  # counted in frames
    exp.attrs["sessions"] = [f"{r.attrs['date']}_{r.attrs['session']}" for r in results]
    return exp


def wide_table(exp: xr.Dataset, variable: str, /) -> pd.DataFrame:
    """One column per cell (``cell_id``), one row per frame: ``frame, time_s, <cells>``."""
    table = pd.DataFrame(exp[variable].transpose("time", "cell").values,
                         columns=exp["cell_id"].values)
    table.insert(0, "time_s", exp["time"].values)
    table.insert(0, "frame", exp["frame"].values)
    return table


def tidy_table(exp: xr.Dataset, /) -> pd.DataFrame:
    """Long table: one row per cell and frame with every trace variable (SPEC §3).

    Columns: ``experiment, date, session, roi, roi_name, roi_source, frame, time_s``
    (``roi_source``: ``expert`` for a ROI of the session's ROI set, ``auto`` for a
    detected one), the trace
    variables (``raw, background``, ``neuropil`` with a neuropil correction, ``signal,
    baseline, corrected, baseline_raw, dff, dff_raw, norm``), ``converged`` and
    ``normalize``.
    """
    n_cell, n_time = exp.sizes["cell"], exp.sizes["time"]
    out = pd.DataFrame({
        "experiment": exp.attrs.get("experiment"),
        "date": np.repeat(exp["date"].values, n_time),
        "session": np.repeat(exp["session"].values, n_time),
        "roi": np.repeat(exp["roi"].values, n_time),
        "roi_name": np.repeat(exp["roi_name"].values, n_time),
        "roi_source": np.repeat(exp["roi_source"].values if "roi_source" in exp.coords
                                else np.full(n_cell, ""), n_time),
        "frame": np.tile(exp["frame"].values, n_cell),
        "time_s": np.tile(exp["time"].values, n_cell),
    })
    names = list(TRACE_VARIABLES)
    if "neuropil" in exp:
        names.insert(names.index("background") + 1, "neuropil")
    for c in names:
        values = exp[c]
        if "cell" not in values.dims:
            values = values.expand_dims(cell=n_cell)
        out[c] = values.transpose("cell", "time").values.reshape(-1)
    out["converged"] = np.repeat(exp["converged"].values, n_time)
    out["normalize"] = exp.attrs.get("normalize")
    return out


def average_trace(exp: xr.Dataset, /) -> pd.DataFrame:
    """Return the "average histogram": mean, SEM and count of ``norm`` over cells, per frame.

    Returns
    -------
    pandas.DataFrame
        ``frame, time_s, mean, sem, n_cells, normalize, trim_start``; frames where no
        cell has a value (trimmed) have ``n_cells`` 0 and NaN statistics.
    """
    norm = exp["norm"].transpose("cell", "time").values.astype(np.float64)
    n = np.isfinite(norm).sum(axis=0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (trimmed) frames
        mean = np.nanmean(norm, axis=0)
        sem = np.nanstd(norm, axis=0, ddof=1) / np.sqrt(n)
    return pd.DataFrame({"frame": exp["frame"].values, "time_s": exp["time"].values,
                         "mean": mean, "sem": sem, "n_cells": n,
                         "normalize": exp.attrs.get("normalize"),
                         "trim_start": exp.attrs.get("trim_start")})


def cell_summaries(experiments: Mapping[str, xr.Dataset], /) -> pd.DataFrame:
    """One row per cell of each experiment: mean and 95th percentile of ``norm``.

    Returns
    -------
    pandas.DataFrame
        ``experiment, date, session, cell_id, mean_norm, p95_norm``.
    """
    rows = []
    for name, exp in experiments.items():
        norm = exp["norm"].transpose("cell", "time").values
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(norm, axis=1)
            p95 = np.nanpercentile(norm, 95, axis=1)
        rows += [{"experiment": name, "date": d, "session": s, "cell_id": c, "mean_norm": m,
                  "p95_norm": p}
                 for d, s, c, m, p in zip(exp["date"].values, exp["session"].values,
                                          exp["cell_id"].values, mean, p95, strict=True)]
    return pd.DataFrame(rows, columns=["experiment", "date", "session", "cell_id", "mean_norm",
                                       "p95_norm"])
