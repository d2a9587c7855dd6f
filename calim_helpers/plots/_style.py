"""Colours, labels and private helpers shared by the figure modules of :mod:`calim_helpers.plots`.

Nothing here opens a file or touches pyplot. The constants are re-exported by
:mod:`calim_helpers.plots`; the ``_``-prefixed helpers are for the figure modules
only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from contourpy import LineType, contour_generator
from matplotlib import patheffects
from matplotlib.collections import PathCollection
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from scipy import ndimage

from calim_helpers.errors import CalimWarning

__all__ = ["COLORS", "EXPERIMENT_COLORS", "METRIC_LABELS", "NORM_LABELS", "TIME_UNITS"]

#: Colours shared by all figures (the lab's convention): raw ROI trace red,
#: background blue, ROI − background purple, drift-corrected ("clean") signal
#: green, fitted arPLS baseline black.
COLORS = {
    "raw": "tab:red",
    "background": "tab:blue",
    "neuropil": "tab:olive",
    "signal": "tab:purple",
    "corrected": "tab:green",
    "baseline": "black",
    "trim": "0.85",
    "warn": "tab:red",
}

#: Colours of experiments (or sessions) side by side, avoiding the trace colours.
EXPERIMENT_COLORS = ("tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:olive",
                     "tab:gray", "navy", "gold", "teal", "magenta")

#: Axis label of each normalization (``normalize`` attribute).
NORM_LABELS = {
    "dff": "ΔF/F (dff)",
    "session": "corrected / S (session-normalized)",
    "zscore": "z-score (corrected / noise SD)",
}

#: ``column -> (name, unit)`` of the per-ROI features shown in summaries (time
#: units for a time axis in seconds; see ``time_unit`` of the summary figures).
METRIC_LABELS = {
    "n_events": ("number of events", "events"),
    "rate_per_min": ("event rate", "events / min"),
    "mean_amplitude": ("mean event amplitude", "amplitude (ΔF/F)"),
    "median_amplitude": ("median event amplitude", "amplitude (ΔF/F)"),
    "mean_duration_s": ("mean event duration", "duration (s)"),
    "participation": ("participation in network events", "fraction of network events"),
    "snr": ("signal-to-noise ratio", "SNR (ratio)"),
    "mean_corr": ("mean correlation with other ROIs", "Pearson r"),
}

#: Accepted ``time_unit`` values: ``"s"`` (time coordinate in seconds) or
#: ``"frame"`` (frame interval unknown, time coordinate counts frames).
TIME_UNITS = ("s", "frame")

_INTENSITY_LABEL = "intensity (counts)"
_PX = "px"
_AMPLITUDE_METRICS = ("mean_amplitude", "median_amplitude")
_FRAME_METRIC_UNITS = {"rate_per_min": "events / 60 frames",
                       "mean_duration_s": "duration (frames)"}
#: Outline drawn around ROI numbers and outlines: readable on dark and bright pixels.
_HALO = "black"


# ------------------------------------------------------------------------ time axis


def _check_time_unit(time_unit: object, /) -> str:
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit must be one of {TIME_UNITS}, got {time_unit!r}")
    return str(time_unit)


def _time_label(time_unit: str, /) -> str:
    """Axis label of a time axis: ``"time (s)"``, or ``"frame"`` (never "s")."""
    return "time (s)" if _check_time_unit(time_unit) == "s" else "frame"


def _coord_time(obj: xr.DataArray | xr.Dataset, name: str, time_unit: str, /) -> np.ndarray:
    """Float copy of the ``time`` coordinate of ``obj``.

    Warns when the coordinate's ``units`` attribute contradicts ``time_unit``
    (e.g. ``units="frame"`` with ``time_unit="s"``).
    """
    coord = obj["time"]
    declared = str(coord.attrs.get("units", ""))
    if declared in TIME_UNITS and declared != time_unit:
        warnings.warn(f"{name}'s time coordinate is in {declared!r} (its 'units' attribute) "
                      f"but time_unit={time_unit!r}: the axis label may be wrong",
                      CalimWarning, stacklevel=3)
    return np.array(coord.values, dtype=float, copy=True)


def _series(x: object, name: str, time_unit: str, /) -> tuple[np.ndarray, np.ndarray]:
    """Values and time axis of a 1-D trace.

    A DataArray's ``time`` coordinate is the time axis (in ``time_unit``); a plain
    array is plotted against its frame index, only allowed with
    ``time_unit="frame"``.
    """
    values = _float_array(x, name, 1)
    if isinstance(x, xr.DataArray) and "time" in x.coords:
        return values, _coord_time(x, name, time_unit)
    if time_unit != "frame":
        raise ValueError(f"{name} has no time coordinate: pass an xarray.DataArray with a "
                         "'time' coordinate in s, or time_unit='frame' to plot it against "
                         "its frame index")
    return values, np.arange(values.size, dtype=float)


def _shift_values(shifts: object, time_unit: str, /) -> tuple[np.ndarray, np.ndarray]:
    """``(time, 2)`` shifts ``(dy, dx)`` in px and their time axis (see :func:`_series`)."""
    time = None
    if isinstance(shifts, xr.DataArray):
        if shifts.ndim != 2 or "time" not in shifts.dims:
            raise ValueError(f"shifts must have dims ('time', 'axis'), got {shifts.dims}")
        other = next(d for d in shifts.dims if d != "time")
        da = shifts.transpose("time", other)
        if other in da.coords and {"dy", "dx"} <= {str(v) for v in da[other].values}:
            da = da.sel({other: ["dy", "dx"]})
        values = _float_array(da, "shifts", 2)
        if "time" in da.coords:
            time = _coord_time(da, "shifts", time_unit)
    else:
        values = _float_array(shifts, "shifts", 2)
    if values.shape[1] != 2:
        raise ValueError(f"shifts must have shape (time, 2) holding (dy, dx), "
                         f"got {values.shape}")
    if time is None:
        if time_unit != "frame":
            raise ValueError("shifts has no time coordinate: pass an xarray.DataArray with "
                             "a 'time' coordinate in s, or time_unit='frame' to plot the "
                             "shifts against the frame index")
        time = np.arange(values.shape[0], dtype=float)
    return values, time


def _half_step(time: np.ndarray, /) -> float:
    """Half the (median) frame interval of ``time``, 0.5 for a single frame."""
    finite = time[np.isfinite(time)]
    if finite.size < 2:
        return 0.5
    return float(np.median(np.diff(finite))) / 2


def _time_extent(time: np.ndarray, /) -> tuple[float, float]:
    """Left and right edges of the first and last frames, in the unit of ``time``."""
    h = _half_step(time)
    if not np.isfinite(time).any():
        return -h, h
    return float(np.nanmin(time)) - h, float(np.nanmax(time)) + h


def _shade_trim(ax, time: np.ndarray, trim_start: int, /) -> None:
    """Shade the first ``trim_start`` frames (set to NaN by the pipeline)."""
    trim = min(int(trim_start), time.size)
    if trim <= 0 or time.size == 0:
        return
    h = _half_step(time)
    ax.axvspan(time[0] - h, time[trim - 1] + h, color=COLORS["trim"], alpha=0.6, lw=0,
               zorder=0, label=f"trimmed (first {trim} frames)")


def _runs(mask: np.ndarray, /) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of the runs of True in a 1-D boolean ``mask``."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))


def _shade_frames(ax, time: np.ndarray, mask: np.ndarray, /, *, label: str) -> None:
    """Shade the frames of ``mask`` (runs merged) in the warning colour."""
    h = _half_step(time)
    for k, (a, b) in enumerate(_runs(mask)):
        ax.axvspan(time[a] - h, time[b - 1] + h, color=COLORS["warn"], alpha=0.25, lw=0,
                   zorder=0, label=label if k == 0 else None)


def _plot_shifts(ax, time: np.ndarray, values: np.ndarray, bad: np.ndarray | None, /,
                 *, magnitude: bool) -> None:
    """Plot the dy and dx lines (and the magnitude) and shade the bad frames."""
    ax.axhline(0, color="0.6", lw=0.8)
    ax.plot(time, values[:, 0], color="tab:blue", lw=1.1, label="dy (rows)")
    ax.plot(time, values[:, 1], color="tab:orange", lw=1.1, label="dx (columns)")
    if magnitude:
        ax.plot(time, np.hypot(values[:, 0], values[:, 1]), color="black", lw=1.1,
                label="|shift|")
    if bad is not None and bad.any():
        _shade_frames(ax, time, bad, label=f"bad frames ({int(bad.sum())})")


# ------------------------------------------------------------------ values and labels


def _values(da: xr.DataArray, /) -> np.ndarray:
    """Return a float64 copy of ``da``'s values (never a view on the input)."""
    return np.array(da.values, dtype=float, copy=True)


def _float_array(x: object, name: str, ndim: int, /) -> np.ndarray:
    """Float64 copy of ``x`` (never a view on the input) with ``ndim`` dimensions."""
    values = x.values if isinstance(x, xr.DataArray) else x
    a = np.array(values, dtype=float, copy=True)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _bool_mask(x: object, name: str, n: int, /) -> np.ndarray:
    """Boolean copy of ``x`` with shape ``(n,)``."""
    values = x.values if isinstance(x, xr.DataArray) else x
    a = np.array(values, copy=True)
    if a.shape != (n,) or not (a.dtype == bool or np.isin(a, [0, 1]).all()):
        raise ValueError(f"{name} must be boolean with shape ({n},), got "
                         f"{a.dtype} {a.shape}")
    return a.astype(bool)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """``numpy.nanmean`` without the warning for all-NaN slices (they give NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _mean_sem(a: np.ndarray, /) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard error and count of finite values along axis 0 of ``a``."""
    n = np.sum(np.isfinite(a), axis=0)
    mean = _nanmean(a, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1:], np.nan)
    sem = np.where(n >= 2, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, sem, n


def _count(n: int, noun: str, /) -> str:
    """``"1 cell"``, ``"3 cells"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _norm_label(normalize: object, /) -> str:
    """Readable name of a normalization, for axis and colour-bar labels."""
    return NORM_LABELS.get(str(normalize), f"normalized signal ({normalize})")


def _metric_label(metric: str, amplitude_label: str, time_unit: str = "s", /
                  ) -> tuple[str, str]:
    """``(name, unit)`` of a feature column, in the figure's amplitude and time units."""
    name, unit = METRIC_LABELS.get(metric, (metric, ""))
    if metric in _AMPLITUDE_METRICS:
        unit = f"amplitude ({amplitude_label})"
    if _check_time_unit(time_unit) == "frame" and metric in _FRAME_METRIC_UNITS:
        unit = _FRAME_METRIC_UNITS[metric]
    return name, unit


def _tick_step(n: int, most: int, /) -> int:
    """Label every ``step``-th tick so that at most ``most`` labels are shown."""
    return max(1, int(np.ceil(n / most)))


def _join_title(title: str, what: str, /) -> str:
    return f"{title} — {what}" if title else what


def _jitter(n: int, /, *, seed: int = 0) -> np.ndarray:
    """Horizontal jitter of strip plots (fixed, so figures are reproducible)."""
    return np.random.default_rng(seed).uniform(-0.15, 0.15, n)


def _check_vars(ds: xr.Dataset, names: Sequence[str], what: str, /) -> None:
    missing = [v for v in names if v not in ds.variables]
    if missing:
        raise ValueError(f"{what} is missing variable(s) {missing}; has {sorted(ds.variables)}")


def _check_columns(table: pd.DataFrame, columns: Sequence[str], name: str, /) -> None:
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; has {list(table.columns)}")


def _strip_box(ax, pos: float, values: np.ndarray, color: str, /, *,
               flagged: np.ndarray | None = None) -> None:
    """Box plot (no fliers) and jittered points of the finite ``values`` at ``pos``."""
    keep = np.isfinite(values)
    v = values[keep]
    if not v.size:
        return
    ax.boxplot([v], positions=[pos], widths=0.5, showfliers=False,
               medianprops={"color": "black"}, manage_ticks=False)
    x = pos + _jitter(v.size)
    ax.scatter(x, v, s=14, color=color, alpha=0.75, zorder=3, edgecolors="none")
    if flagged is not None:
        f = flagged[keep]
        if f.any():
            ax.scatter(x[f], v[f], s=30, marker="x", color=COLORS["warn"], zorder=4,
                       label="fit failed")


# -------------------------------------------------------------------- ROI labels


def _halo(width: float, /) -> list:
    """Path effect drawing a dark outline of ``width`` points under an artist."""
    return [patheffects.withStroke(linewidth=width, foreground=_HALO)]


def _spread_boxes(centres: np.ndarray, half: np.ndarray, bounds: tuple[float, float],
                  /, *, max_iter: int = 200) -> np.ndarray:
    """Move axis-aligned label boxes apart until none overlap (or ``max_iter``).

    Each overlapping pair is pushed apart, half each, along the axis where they
    overlap least; boxes stay inside ``[0, bounds[0]] x [0, bounds[1]]`` (x, y).

    Parameters
    ----------
    centres : numpy.ndarray, shape (n, 2)
        Box centres ``(x, y)``.
    half : numpy.ndarray, shape (n, 2)
        Half widths and half heights, same units.
    bounds : tuple of float
        Width and height of the area the boxes must stay in.

    Returns
    -------
    numpy.ndarray, shape (n, 2)
        New centres.
    """
    pos = np.array(centres, dtype=float, copy=True)
    n = pos.shape[0]
    lo = half
    hi = np.array(bounds, dtype=float) - half
    if n < 2:
        return np.clip(pos, lo, np.maximum(lo, hi))
    i, j = np.triu_indices(n, 1)
    tie = np.where(i % 2 == 0, 1.0, -1.0)  # push identical centres apart, both ways
    for _ in range(max_iter):
        d = pos[j] - pos[i]
        overlap = (half[i] + half[j]) - np.abs(d)
        hit = (overlap > 0).all(axis=1)
        if not hit.any():
            break
        axis = np.argmin(overlap[hit] / (half[i][hit] + half[j][hit]), axis=1)
        rows = np.flatnonzero(hit)
        sign = np.sign(d[rows, axis])
        sign = np.where(sign == 0, tie[rows], sign)
        push = np.zeros((rows.size, 2))
        push[np.arange(rows.size), axis] = sign * (overlap[rows, axis] / 2 + 1e-3)
        step = np.zeros_like(pos)
        np.add.at(step, j[rows], push)
        np.add.at(step, i[rows], -push)
        pos = np.clip(pos + step, lo, np.maximum(lo, hi))
    return pos


def _outline(labels: np.ndarray, box: tuple[slice, slice], k: int, /) -> Path:
    """Outline of ROI ``k`` of a label image: its mask's 0.5 contour, in pixel coordinates.

    The path ``ax.contour`` draws for the mask (contourpy's ``mpl2014`` algorithm with
    corner masking, matplotlib's default), traced on the ROI's bounding box ``box``
    only (memory ~ ROI size) and without a contour set per ROI (4 ms each).
    """
    inside = np.pad(labels[box] == k, 1).astype(np.float64)
    rows = np.arange(box[0].start - 1, box[0].stop + 1, dtype=np.float64)
    cols = np.arange(box[1].start - 1, box[1].stop + 1, dtype=np.float64)
    lines, codes = contour_generator(cols, rows, inside, name="mpl2014", corner_mask=True,
                                     line_type=LineType.SeparateCode).lines(0.5)
    return Path(np.concatenate(lines), np.concatenate(codes))


def _label_rois(ax, labels: np.ndarray, colors: Sequence[str], /, *,
                text_color: Sequence[str] | None = None, fontsize: float = 7.0,
                outline_width: float = 0.8) -> None:
    """Outline each ROI of a label image and write its number at its centroid.

    Numbers are bold, in ``text_color`` (default: each ROI's outline colour) with
    a dark halo, so they read on dark background and on bright cells alike.
    Numbers whose boxes would overlap are nudged apart; a thin line then joins a
    moved number to its ROI's centroid. Call after the axes' final size is
    known (it is read to convert the text size into pixels of the image).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes showing the image (pixel coordinates, row down).
    labels : numpy.ndarray of int, shape (y, x)
        0 outside ROIs, ``n`` inside ROI ``n``.
    colors : sequence of str
        Outline colour of ROI ``n`` at position ``n - 1``; ROIs beyond it are
        skipped.
    text_color : sequence of str, optional
        Number colour per ROI. Default is None (the outline colours).
    fontsize : float, optional
        Size of the numbers, pt. Default is 7.0.
    outline_width : float, optional
        Width of the ROI outlines, pt. Default is 0.8.
    """
    text_color = colors if text_color is None else text_color
    boxes = ndimage.find_objects(labels) if labels.size else []
    present = [k for k, box in enumerate(boxes, 1) if box is not None and k <= len(colors)]
    if not present:
        return
    limits = ax.get_xlim(), ax.get_ylim()
    outlines = PathCollection([_outline(labels, boxes[k - 1], k) for k in present],
                              facecolors="none", edgecolors=[colors[k - 1] for k in present],
                              linewidths=outline_width, zorder=2)
    outlines.set_path_effects(_halo(outline_width + 1.2))
    ax.add_collection(outlines, autolim=False)
    centroids = np.array(ndimage.center_of_mass(labels > 0, labels, present), dtype=float)
    centres = centroids[:, ::-1]  # (row, col) -> (x, y)

    # label box sizes in image pixels, from the text's outline and the axes' scale
    ny, nx = labels.shape
    fig = ax.figure
    bbox = ax.get_window_extent()
    width_in, height_in = bbox.width / fig.dpi, bbox.height / fig.dpi
    px_per_pt = max(nx / max(width_in, 1e-6), ny / max(height_in, 1e-6)) / 72
    prop = FontProperties(size=fontsize, weight="bold")
    halo = 2.4
    sizes = {}
    for k in present:
        ext = TextPath((0, 0), str(k), prop=prop).get_extents()
        sizes[k] = (ext.width + halo + 1.0, max(ext.height, 0.72 * fontsize) + halo + 1.0)
    half = np.array([sizes[k] for k in present]) * px_per_pt / 2
    # the image spans [-0.5, n - 0.5] in pixel coordinates
    moved = _spread_boxes(centres + 0.5, half, (nx, ny)) - 0.5
    for i, k in enumerate(present):
        (cx, cy), (x, y) = centres[i], moved[i]
        if np.hypot(x - cx, y - cy) > 0.8 * half[i, 1]:
            (leader,) = ax.plot([cx, x], [cy, y], color="white", lw=0.6,
                                solid_capstyle="round", path_effects=_halo(1.6), zorder=3)
            leader.set_in_layout(False)
        text = ax.text(x, y, str(k), color=text_color[k - 1], fontsize=fontsize,
                       fontweight="bold", ha="center", va="center", zorder=4,
                       clip_on=True, path_effects=_halo(halo))
        text.set_in_layout(False)
    ax.set_xlim(*limits[0])  # outlines and leaders must not widen the image's axes
    ax.set_ylim(*limits[1])
