"""An experiment from its sessions: the tables of SPEC §3 (pure, no file access).

- :func:`experiment_dataset` -- session results side by side along ``cell``;
- :func:`wide_table` -- ``results_raw.csv`` / ``results_norm.csv``: one column per ROI
  ``<date>_<session>_ROI<n>``, one row per downsampled frame;
- :func:`tidy_table` -- ``results_long.csv``: one row per cell and frame;
- :func:`average_trace` -- the lab's "average histogram" (``hist_cum``): mean, SEM and
  count over all ROIs of all sessions per frame;
- :func:`cell_summaries` -- per-cell summaries for comparisons across experiments.

Statistics across sessions and conditions are in :mod:`calim_helpers.stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = ["average_trace", "cell_summaries", "experiment_dataset", "tidy_table", "wide_table"]

# the trace variables of a session result, in the order of the tidy table
TRACE_VARIABLES = ("raw", "background", "signal", "baseline", "corrected", "baseline_raw",
                   "dff", "dff_raw", "norm")
_KEEP_ATTRS = ("experiment", "normalize", "trim_start", "lam", "cutoff_s", "tol", "max_iter",
               "seed", "background_fraction", "frame_interval_s_downsampled")


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
        ``session``, ``roi``, ``roi_name``, ``time`` (s, of the longest session) and
        ``frame``. Sessions with fewer frames are padded with NaN. Attrs: the
        parameters shared by the sessions and ``sessions`` (their ids).

    Raises
    ------
    CalimInputError
        No result given.
    """
    if not results:
        raise CalimInputError("no session result to aggregate")
    n_time = max(r.sizes["time"] for r in results)
    longest = next(r for r in results if r.sizes["time"] == n_time)
    steps = {f"{r.attrs['date']}_{r.attrs['session']}": float(np.median(np.diff(r["time"])))
             for r in results if r.sizes["time"] > 1}
    if steps and max(steps.values()) > 1.01 * min(steps.values()):
        warnings.warn(
            "sessions have different frame intervals ("
            + ", ".join(f"{k}: {v:g} s" for k, v in steps.items())
            + "); the experiment's time axis is the longest session's: compare by frame",
            CalimWarning, stacklevel=2)
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
            session=("cell", [sess] * len(ids)))
        parts.append(r)
    exp = xr.concat(parts, dim="cell", combine_attrs="drop_conflicts", data_vars="all",
                    coords="all", compat="equals", join="exact")
    exp = exp.assign_coords(time=("time", longest["time"].values),
                            frame=("time", np.arange(n_time)))
    exp.attrs = {k: results[0].attrs.get(k) for k in _KEEP_ATTRS}
    intervals = [r.attrs.get("frame_interval_s_downsampled") for r in results]
    if any(v is None or not np.isfinite(v) for v in intervals):
        exp.attrs["frame_interval_s_downsampled"] = None  # one unknown: count in frames
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

    Columns: ``experiment, date, session, roi, roi_name, frame, time_s``, the trace
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
