"""Figures of the wider analysis (SPEC §4), built from arrays and tables.

Like :mod:`calim_helpers.figures` (whose colours and conventions they share), every
function takes arrays, :class:`xarray.DataArray` objects or :class:`pandas.DataFrame`
tables and returns a :class:`matplotlib.figure.Figure` built with ``Figure(...)``
(no pyplot, no global state); inputs are never modified. Indices in ``order``
arguments are 0-based positions along the ROI axis (what :func:`numpy.argsort` or
:func:`scipy.cluster.hierarchy.leaves_list` return); ROI numbers in tables
(column ``roi``) start at 1.

Motion correction:

- :func:`shifts_figure` — estimated rigid shifts and their magnitude per frame
- :func:`registration_figure` — mean image before / after registration

Events, synchrony, clusters:

- :func:`raster_figure` — event raster, network events, population activity
- :func:`correlation_figure` — ROI × ROI Pearson matrix ordered by cluster
- :func:`cluster_heatmap_figure` — normalized traces ordered by cluster

Summaries of the feature table (one row per ROI):

- :func:`session_summary_figure` — distributions of the features of one session
- :func:`condition_tests` and :func:`condition_summary_figure` — experiments
  (conditions) side by side with a rank test per feature

Quality control: :func:`qc_figure` — one page per session.

Examples
--------
>>> import numpy as np, pandas as pd
>>> events = pd.DataFrame({"roi": [1, 2, 2], "time_s": [1.0, 2.0, 6.0],
...                        "duration_s": [2.0, 1.0, 1.0]})
>>> fig = raster_figure(events, 3, np.arange(10.0), title="DEMO · 230404_5")
>>> len(fig.axes)
2
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from scipy import ndimage, stats

from calim_helpers.figures import COLORS, EXPERIMENT_COLORS, _count, _half_step, _time_extent

__all__ = [
    "METRIC_LABELS",
    "cluster_heatmap_figure",
    "condition_summary_figure",
    "condition_tests",
    "correlation_figure",
    "qc_figure",
    "raster_figure",
    "registration_figure",
    "session_summary_figure",
    "shifts_figure",
]

#: ``column -> (name, unit)`` of the per-ROI features shown in summaries.
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

_SESSION_METRICS = ("rate_per_min", "mean_amplitude", "mean_duration_s", "participation",
                    "snr")
_AMPLITUDE_METRICS = ("mean_amplitude", "median_amplitude")
_TESTS = ("auto", "mannwhitney", "kruskal")
_TEST_NAMES = {"mannwhitney": "Mann–Whitney", "kruskal": "Kruskal–Wallis", "n/a": "n/a"}
_PX = "px"
_NETWORK_COLOR = "tab:orange"
_OK_OUTLINE = "yellow"
_BAD_OUTLINE = "red"


# --------------------------------------------------------------------------- helpers


def _float_array(x: object, name: str, ndim: int, /) -> np.ndarray:
    """Float64 copy of ``x`` (never a view on the input) with ``ndim`` dimensions."""
    values = x.values if isinstance(x, xr.DataArray) else x
    a = np.array(values, dtype=float, copy=True)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _series(x: object, name: str, /) -> tuple[np.ndarray, np.ndarray, str]:
    """Values, time axis and its label of a 1-D trace (time in s from a DataArray)."""
    values = _float_array(x, name, 1)
    if isinstance(x, xr.DataArray) and "time" in x.coords:
        return values, np.array(x["time"].values, dtype=float), "time (s)"
    return values, np.arange(values.size, dtype=float), "frame"


def _shift_values(shifts: object, /) -> tuple[np.ndarray, np.ndarray, str]:
    """``(time, 2)`` shifts ``(dy, dx)`` in px, their time axis and its label."""
    if isinstance(shifts, xr.DataArray):
        if shifts.ndim != 2 or "time" not in shifts.dims:
            raise ValueError(f"shifts must have dims ('time', 'axis'), got {shifts.dims}")
        other = next(d for d in shifts.dims if d != "time")
        da = shifts.transpose("time", other)
        if other in da.coords and {"dy", "dx"} <= {str(v) for v in da[other].values}:
            da = da.sel({other: ["dy", "dx"]})
        values, time, label = _float_array(da, "shifts", 2), None, "frame"
        if "time" in da.coords:
            time, label = np.array(da["time"].values, dtype=float), "time (s)"
    else:
        values, time, label = _float_array(shifts, "shifts", 2), None, "frame"
    if values.shape[1] != 2:
        raise ValueError(f"shifts must have shape (time, 2) holding (dy, dx), "
                         f"got {values.shape}")
    if time is None:
        time = np.arange(values.shape[0], dtype=float)
    return values, time, label


def _bool_mask(x: object, name: str, n: int, /) -> np.ndarray:
    """Boolean copy of ``x`` with shape ``(n,)``."""
    values = x.values if isinstance(x, xr.DataArray) else x
    a = np.array(values, copy=True)
    if a.shape != (n,) or not (a.dtype == bool or np.isin(a, [0, 1]).all()):
        raise ValueError(f"{name} must be boolean with shape ({n},), got "
                         f"{a.dtype} {a.shape}")
    return a.astype(bool)


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


def _check_order(order: object, n: int, name: str, /) -> np.ndarray:
    """Return ``order`` checked to be a permutation of ``range(n)`` (identity for None)."""
    if order is None:
        return np.arange(n)
    o = np.array(order, copy=True)
    if o.shape != (n,) or not np.issubdtype(o.dtype, np.integer) \
            or not np.array_equal(np.sort(o), np.arange(n)):
        raise ValueError(f"{name} must be a permutation of the {n} positions 0..{n - 1}, "
                         f"got {order!r}")
    return o.astype(int)


def _check_labels(labels: object, n: int, name: str, /) -> list[str]:
    """``n`` strings (``"1"`` … ``"n"`` for None)."""
    if labels is None:
        return [str(k) for k in range(1, n + 1)]
    out = [str(v) for v in (labels.values if isinstance(labels, xr.DataArray) else labels)]
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(out)}")
    return out


def _check_clusters(clusters: object, n: int, name: str, /) -> np.ndarray:
    """Array of ``n`` cluster labels."""
    values = clusters.values if isinstance(clusters, xr.DataArray) else clusters
    c = np.array(values, copy=True)
    if c.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {c.shape}")
    return c


def _blocks(sorted_labels: np.ndarray, /) -> list[tuple[object, int, int]]:
    """``(label, start, stop)`` of each run of equal labels."""
    if sorted_labels.size == 0:
        return []
    change = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [sorted_labels.size]])
    return [(sorted_labels[a], int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _tick_step(n: int, most: int, /) -> int:
    return max(1, int(np.ceil(n / most)))


def _join_title(title: str, what: str, /) -> str:
    return f"{title} — {what}" if title else what


def _jitter(n: int, /, *, seed: int = 0) -> np.ndarray:
    """Horizontal jitter of strip plots (fixed, so figures are reproducible)."""
    return np.random.default_rng(seed).uniform(-0.15, 0.15, n)


def _format_p(p: float, /) -> str:
    if not np.isfinite(p):
        return "p = n/a"
    return "p < 1e-4" if p < 1e-4 else f"p = {p:.2g}"


def _metric_label(metric: str, amplitude_label: str, /) -> tuple[str, str]:
    name, unit = METRIC_LABELS.get(metric, (metric, ""))
    if metric in _AMPLITUDE_METRICS:
        unit = f"amplitude ({amplitude_label})"
    return name, unit


# ----------------------------------------------------------------- motion correction


def shifts_figure(shifts: object, /, *, bad: object = None, title: str = "") -> Figure:
    """Estimated rigid shifts per frame and their magnitude.

    Top: ``dy`` (rows) and ``dx`` (columns); bottom: the magnitude
    ``sqrt(dy² + dx²)``. Frames flagged in ``bad`` are shaded red on both.

    Parameters
    ----------
    shifts : xarray.DataArray or numpy.ndarray, shape (time, 2)
        Shifts ``(dy, dx)`` in pixels. A DataArray with dims ``("time", "axis")``
        (``axis`` coordinate ``["dy", "dx"]``) gives the time axis in s; a plain
        array is plotted against the frame index.
    bad : array_like of bool, shape (time,), optional
        Frames flagged as bad (e.g. a motion jump). Default is None (none marked).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``shifts`` is not ``(time, 2)`` or ``bad`` does not match it.
    """
    values, time, xlabel = _shift_values(shifts)
    mask = None if bad is None else _bool_mask(bad, "bad", values.shape[0])
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True)
    _plot_shifts(ax, time, values, mask, magnitude=False)
    ax.set_ylabel(f"shift ({_PX})")
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    mag = np.hypot(values[:, 0], values[:, 1])
    bx.plot(time, mag, color="black", lw=1.1, label="|shift|")
    if mask is not None and mask.any():
        _shade_frames(bx, time, mask, label=f"bad frames ({int(mask.sum())})")
        bx.plot(time[mask], mag[mask], "x", color=COLORS["warn"], ms=5)
        bx.legend(loc="upper right", fontsize=8)
    bx.set_ylabel(f"|shift| ({_PX})")
    bx.set_xlabel(xlabel)
    bx.set_ylim(bottom=0)
    if time.size:
        ax.set_xlim(*_time_extent(time))
    peak = f"max |shift| {np.nanmax(mag):.2f} {_PX}" if np.isfinite(mag).any() else "no shifts"
    fig.suptitle(_join_title(title, f"rigid motion correction: {_count(time.size, 'frame')}, "
                                    f"{peak}"))
    return fig


def _gradient_energy(image: np.ndarray, /) -> float:
    """Sharpness: mean squared gradient magnitude divided by the squared mean level.

    Dimensionless (per px²) so images of different brightness compare; blurring by
    motion lowers it, registration raises it.
    """
    gy, gx = np.gradient(image)
    energy = float(np.nanmean(gy**2 + gx**2))
    level = float(np.nanmean(image))
    return energy / level**2 if level > 0 else energy


def _crop_box(image: np.ndarray, /) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of the quarter-size window with most structure."""
    ny, nx = image.shape
    h, w = max(min(ny, 8), ny // 4), max(min(nx, 8), nx // 4)
    gy, gx = np.gradient(np.nan_to_num(image))
    local = ndimage.uniform_filter(gy**2 + gx**2, size=(h, w), mode="constant")
    r0, c0 = h // 2, w // 2  # window centre range keeps the window inside the image
    valid = local[r0:ny - h + r0 + 1, c0:nx - w + c0 + 1]
    i, j = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(i), int(j), h, w


def registration_figure(mean_before: object, mean_after: object, /, *,
                        title: str = "") -> Figure:
    """Mean image before and after motion correction, with a zoom and a profile.

    Top row: the two mean images (one grey scale) and their difference. Bottom
    row: the quarter-size window with the most structure (in ``mean_after``),
    zoomed, and an intensity profile along the row of its brightest pixel. Each
    mean image's title gives its sharpness, the gradient energy
    ``mean(|∇I|²) / mean(I)²`` (per px²), which registration should raise.

    Parameters
    ----------
    mean_before, mean_after : numpy.ndarray or xarray.DataArray, shape (y, x)
        Mean over time of the movie before and after registration (counts).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        Six panel axes (``before``, ``after``, ``difference``, ``zoom_before``,
        ``zoom_after``, ``profile``) and the difference's colour bar.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape.
    """
    before = _float_array(mean_before, "mean_before", 2)
    after = _float_array(mean_after, "mean_after", 2)
    if before.shape != after.shape:
        raise ValueError(f"mean_before and mean_after must have one shape, got "
                         f"{before.shape} and {after.shape}")
    ny, nx = before.shape
    sharp_b, sharp_a = _gradient_energy(before), _gradient_energy(after)
    gain = 100 * (sharp_a / sharp_b - 1) if sharp_b > 0 else np.nan
    lo, hi = np.nanpercentile(np.concatenate([before.ravel(), after.ravel()]), [1, 99.8])
    r0, c0, h, w = _crop_box(after)
    crop = np.nan_to_num(after[r0:r0 + h, c0:c0 + w], nan=-np.inf)
    row = r0 + int(np.unravel_index(int(np.argmax(crop)), crop.shape)[0])  # profile row

    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axd = fig.subplot_mosaic([["before", "after", "difference"],
                              ["zoom_before", "zoom_after", "profile"]],
                             height_ratios=[1.15, 1])
    gray = {"cmap": "gray", "vmin": lo, "vmax": hi, "interpolation": "nearest"}
    for key, img, name in (("before", before, f"before: sharpness {sharp_b:.3g}"),
                           ("after", after, f"after: sharpness {sharp_a:.3g} "
                                            f"({gain:+.0f}%)")):
        ax = axd[key]
        ax.imshow(img, **gray)
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, ec="cyan", lw=1.2))
        ax.set_title(name, fontsize=10)
        zx = axd[f"zoom_{key}"]
        zx.imshow(img[r0:r0 + h, c0:c0 + w], extent=(c0 - 0.5, c0 + w - 0.5,
                                                     r0 + h - 0.5, r0 - 0.5), **gray)
        zx.axhline(row, color="cyan", lw=1.0, ls=":")
        zx.set_title(f"{key}, zoom (cyan box)", fontsize=10)
    diff = after - before
    lim = float(np.nanpercentile(np.abs(diff), 99.5)) if np.isfinite(diff).any() else 1.0
    lim = lim if lim > 0 else 1.0
    im = axd["difference"].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim,
                                  interpolation="nearest")
    axd["difference"].set_title("after − before", fontsize=10)
    fig.colorbar(im, ax=axd["difference"], shrink=0.8, label="after − before (counts)")
    for key in ("before", "after", "difference", "zoom_before", "zoom_after"):
        axd[key].set_xlabel("x (pixel)")
        axd[key].set_ylabel("y (pixel)")

    ax = axd["profile"]
    cols = np.arange(c0, c0 + w)
    ax.plot(cols, before[row, c0:c0 + w], color=COLORS["raw"], lw=1.2, label="before")
    ax.plot(cols, after[row, c0:c0 + w], color=COLORS["corrected"], lw=1.2, label="after")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("mean intensity (counts)")
    ax.set_title(f"profile along row {row} (dotted line)", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.suptitle(_join_title(title, f"registration: mean image, {ny} x {nx} px "
                                    "(sharpness = mean |∇I|² / mean(I)², per px²)"))
    return fig


# ----------------------------------------------------------- events and synchrony


def _event_table(events: object, n_roi: int, /) -> pd.DataFrame:
    """Return a checked copy of the events: ``roi`` (from 1), ``time_s``, ``duration_s``."""
    if not isinstance(events, pd.DataFrame):
        raise ValueError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in ("roi", "time_s") if c not in events.columns]
    if missing:
        raise ValueError(f"events is missing column(s) {missing}; has {list(events.columns)}")
    ev = pd.DataFrame({
        "roi": events["roi"].to_numpy(copy=True),
        "time_s": events["time_s"].to_numpy(dtype=float, copy=True),
        "duration_s": (events["duration_s"].to_numpy(dtype=float, copy=True)
                       if "duration_s" in events.columns else np.zeros(len(events))),
    })
    roi = ev["roi"].to_numpy()
    if len(ev) and (not np.issubdtype(roi.dtype, np.number) or np.any(roi != np.round(roi))
                    or roi.min() < 1 or roi.max() > n_roi):
        raise ValueError(f"events['roi'] must hold ROI numbers 1..{n_roi}, got "
                         f"{sorted(set(roi.tolist()))[:10]}")
    if not np.isfinite(ev["time_s"]).all():
        raise ValueError("events['time_s'] must be finite")
    ev["roi"] = roi.astype(int)
    ev["duration_s"] = np.nan_to_num(ev["duration_s"].to_numpy(), nan=0.0).clip(0)
    return ev


def _active_fraction(ev: pd.DataFrame, n_roi: int, time_s: np.ndarray, /) -> np.ndarray:
    """Fraction of ROIs with an event covering each frame.

    Frame ``i`` covers ``[t_i - h, t_i + h)`` (``h`` half the frame interval); event
    ``[onset, onset + duration]`` makes its ROI active in every frame it overlaps,
    at least the frame containing its onset.
    """
    n_t = time_s.size
    if n_t == 0:
        return np.zeros(0)
    h = _half_step(time_s)
    onset = ev["time_s"].to_numpy()
    first = np.searchsorted(time_s + h, onset, side="right")
    stop = np.searchsorted(time_s - h, onset + ev["duration_s"].to_numpy(), side="right")
    stop = np.maximum(stop, np.minimum(first + 1, n_t))
    diff = np.zeros((n_roi, n_t + 1))
    keep = first < n_t
    rows = ev["roi"].to_numpy()[keep] - 1
    np.add.at(diff, (rows, first[keep]), 1)
    np.add.at(diff, (rows, stop[keep]), -1)
    active = np.cumsum(diff, axis=1)[:, :n_t] > 0
    return active.mean(axis=0)


def _network_spans(network: object, /) -> list[tuple[float, float]]:
    """``(start, end)`` in s of each network event."""
    if network is None:
        return []
    if not isinstance(network, pd.DataFrame):
        raise ValueError(f"network must be a pandas DataFrame, got {type(network).__name__}")
    start_col = next((c for c in ("start_s", "onset_s", "time_s") if c in network), None)
    if start_col is None:
        raise ValueError(f"network must have a column start_s, onset_s or time_s; has "
                         f"{list(network.columns)}")
    start = network[start_col].to_numpy(dtype=float, copy=True)
    if "end_s" in network:
        end = network["end_s"].to_numpy(dtype=float, copy=True)
    elif "duration_s" in network:
        end = start + network["duration_s"].to_numpy(dtype=float, copy=True)
    else:
        end = start.copy()
    return list(zip(start.tolist(), end.tolist(), strict=True))


def raster_figure(
    events: pd.DataFrame,
    n_roi: int,
    time_s: object,
    /,
    *,
    network: pd.DataFrame | None = None,
    order: Sequence[int] | None = None,
    roi_labels: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Event raster of one session, network events and the population activity.

    Top: one row per ROI (first row of ``order`` at the top), a tick at each
    event's onset; network (synchronous) events are shaded orange. Bottom: the
    fraction of ROIs active in each frame (an event covers ``[onset, onset +
    duration]``; an event without duration marks the frame containing its onset).

    Parameters
    ----------
    events : pandas.DataFrame
        One row per event with columns ``roi`` (ROI number, from 1) and ``time_s``
        (onset, s); ``duration_s`` (s) is used if present.
    n_roi : int
        Number of ROIs of the session (ROIs without events get an empty row).
    time_s : array_like, shape (time,)
        Frame times of the traces the events were detected on, s.
    network : pandas.DataFrame, optional
        One row per network event with its start (``start_s``, ``onset_s`` or
        ``time_s``) and end (``end_s``, or start + ``duration_s``), s. Default is
        None (none shaded).
    order : sequence of int, optional
        Row order: a permutation of the ROI positions ``0 .. n_roi - 1`` (e.g. by
        cluster). Default is None (ROI number order).
    roi_labels : sequence of str, optional
        ``n_roi`` tick labels in ROI number order (e.g. ROI names). Default is None
        (the ROI numbers).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis: the raster and the population activity.

    Raises
    ------
    ValueError
        If ``n_roi < 1``, a column is missing, an event's ROI is not in
        ``1 .. n_roi`` or ``order`` is not a permutation.
    """
    if isinstance(n_roi, bool) or not isinstance(n_roi, int | np.integer) or n_roi < 1:
        raise ValueError(f"n_roi must be an int >= 1, got {n_roi!r}")
    n_roi = int(n_roi)
    t = _float_array(time_s, "time_s", 1)
    if not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
        raise ValueError("time_s must be finite and increasing")
    ev = _event_table(events, n_roi)
    rows = _check_order(order, n_roi, "order")
    labels = _check_labels(roi_labels, n_roi, "roi_labels")
    spans = _network_spans(network)

    raster_in = float(np.clip(0.13 * n_roi, 2.2, 9.0))
    fig = Figure(figsize=(10, raster_in + 2.6), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [raster_in, 1.6]})
    for k, (a, b) in enumerate(spans):
        label = f"network event ({len(spans)})" if k == 0 else None
        for axis in (ax, bx):
            axis.axvspan(a, b, color=_NETWORK_COLOR, alpha=0.3, lw=0, zorder=0,
                         label=label if axis is ax else None)
    positions = [ev["time_s"].to_numpy()[ev["roi"].to_numpy() == r + 1] for r in rows]
    ax.eventplot(positions, lineoffsets=np.arange(n_roi), linelengths=0.8,
                 colors="black", linewidths=1.2)
    step = _tick_step(n_roi, 50)
    ax.set_yticks(np.arange(n_roi)[::step], [labels[r] for r in rows[::step]],
                  fontsize=8 if n_roi <= 30 else 6)
    ax.set_ylim(n_roi - 0.5, -0.5)
    ax.set_ylabel("ROI" if roi_labels is None else "ROI (name)")
    if spans:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)

    frac = _active_fraction(ev, n_roi, t)
    bx.fill_between(t, frac, step="mid", color="0.6", alpha=0.5, lw=0)
    bx.plot(t, frac, drawstyle="steps-mid", color="black", lw=1.0)
    bx.set_ylim(0, 1.05)
    bx.set_ylabel("fraction of\nROIs active")
    bx.set_xlabel("time (s)")
    bx.set_xlim(*_time_extent(t))
    ax.set_title(_join_title(title, f"event raster: {_count(len(ev), 'event')} in "
                                    f"{_count(n_roi, 'ROI')}"
                                    + (f", {_count(len(spans), 'network event')}"
                                       if network is not None else "")), fontsize=11)
    return fig


def _cluster_order(order: object, clusters: np.ndarray | None, n: int, /) -> np.ndarray:
    if order is None and clusters is not None:
        return np.argsort(clusters, kind="stable")
    return _check_order(order, n, "order")


def _cluster_ticks(ax, blocks: list[tuple[object, int, int]], /, *, axis: str) -> None:
    """Cluster names (and sizes) at the block centres on a secondary axis."""
    centres = [(a + b) / 2 - 0.5 for _, a, b in blocks]
    names = [f"{c} ({b - a})" for c, a, b in blocks]
    if axis == "x":
        sec = ax.secondary_xaxis("top")
        sec.set_xticks(centres, names, fontsize=8, rotation=90 if len(blocks) > 6 else 0)
        sec.set_xlabel("cluster (n ROIs)", fontsize=9)
    else:
        sec = ax.secondary_yaxis("right")
        sec.set_yticks(centres, names, fontsize=8)
        sec.set_ylabel("cluster (n ROIs)", fontsize=9)
    sec.tick_params(length=0)


def correlation_figure(
    corr: object,
    /,
    *,
    order: Sequence[int] | None = None,
    clusters: Sequence[object] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """ROI × ROI Pearson correlation matrix ordered by cluster.

    Diverging colour map centred on 0 (−1 blue, +1 red), NaN grey; black lines
    separate the clusters, whose names and sizes are written along the top.

    Parameters
    ----------
    corr : numpy.ndarray or xarray.DataArray, shape (roi, roi)
        Pearson correlation between the ROIs' traces.
    order : sequence of int, optional
        Row and column order, a permutation of ``0 .. n_roi - 1``. Default is None:
        grouped by ``clusters`` (stable, so ROI order within a cluster) if given,
        else ROI order.
    clusters : sequence, optional
        Cluster label of each ROI (ROI order). Default is None (no boundaries).
    labels : sequence of str, optional
        ROI tick labels (ROI order). Default is None (ROI numbers from 1).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        The matrix axes and its colour bar.

    Raises
    ------
    ValueError
        If ``corr`` is not square or an argument's length differs from it.
    """
    c = _float_array(corr, "corr", 2)
    n = c.shape[0]
    if c.shape != (n, n):
        raise ValueError(f"corr must be square (roi, roi), got shape {c.shape}")
    cl = None if clusters is None else _check_clusters(clusters, n, "clusters")
    o = _cluster_order(order, cl, n)
    names = _check_labels(labels, n, "labels")
    side = float(np.clip(4 + 0.04 * n, 6.0, 10.0))
    fig = Figure(figsize=(side + 1.3, side), layout="constrained")
    ax = fig.subplots()
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="0.8")
    im = ax.imshow(c[np.ix_(o, o)], cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    n_clusters = ""
    if cl is not None:
        blocks = _blocks(cl[o])
        for _, a, _ in blocks[1:]:
            ax.axhline(a - 0.5, color="black", lw=1.2)
            ax.axvline(a - 0.5, color="black", lw=1.2)
        _cluster_ticks(ax, blocks, axis="x")
        n_clusters = f", {_count(len(np.unique(cl)), 'cluster')}"
    step = _tick_step(n, 40)
    fs = 8 if n <= 20 else 6
    ticks = np.arange(n)[::step]
    ax.set_xticks(ticks, [names[i] for i in o[::step]], fontsize=fs, rotation=90)
    ax.set_yticks(ticks, [names[i] for i in o[::step]], fontsize=fs)
    ax.set_xlabel("ROI")
    ax.set_ylabel("ROI")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    fig.suptitle(_join_title(title, f"Pearson correlation, {_count(n, 'ROI')}{n_clusters}"),
                 fontsize=11)
    return fig


def cluster_heatmap_figure(
    norm: object,
    time_s: object,
    /,
    *,
    order: Sequence[int],
    clusters: Sequence[object],
    vmin: float = 0.0,
    vmax: float = 0.5,
    label: str = "ΔF/F",
    title: str = "",
) -> Figure:
    """Heatmap of the normalized traces (ROI × time) with the ROIs ordered by cluster.

    White lines separate the clusters, named with their sizes on the right; NaN
    (trimmed frames) is grey.

    Parameters
    ----------
    norm : numpy.ndarray or xarray.DataArray, shape (roi, time)
        Normalized traces.
    time_s : array_like, shape (time,)
        Frame times, s.
    order : sequence of int
        Row order, a permutation of ``0 .. n_roi - 1`` (first row at the top).
    clusters : sequence
        Cluster label of each ROI (ROI order).
    vmin, vmax : float, optional
        Colour scale limits, in units of ``label``. Defaults are 0.0 and 0.5.
    label : str, optional
        Colour-bar label (the normalization and its unit). Default is ``"ΔF/F"``.
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        The heatmap axes and its colour bar.

    Raises
    ------
    ValueError
        If the shapes do not match, ``order`` is not a permutation or
        ``vmin >= vmax``.
    """
    if isinstance(norm, xr.DataArray) and set(norm.dims) == {"roi", "time"}:
        norm = norm.transpose("roi", "time")
    x = _float_array(norm, "norm", 2)
    t = _float_array(time_s, "time_s", 1)
    n, n_t = x.shape
    if t.size != n_t:
        raise ValueError(f"time_s must have {n_t} entries (norm's time axis), got {t.size}")
    if not vmin < vmax:
        raise ValueError(f"vmin must be < vmax, got vmin={vmin!r}, vmax={vmax!r}")
    o = _check_order(order, n, "order")
    cl = _check_clusters(clusters, n, "clusters")
    rows_in = float(np.clip(0.09 * n, 2.5, 10.0))
    fig = Figure(figsize=(10, rows_in + 1.4), layout="constrained")
    ax = fig.subplots()
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.85")
    t0, t1 = _time_extent(t)
    im = ax.imshow(x[o], aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin,
                   vmax=vmax, extent=(t0, t1, n - 0.5, -0.5))
    blocks = _blocks(cl[o])
    for _, a, _ in blocks[1:]:
        ax.axhline(a - 0.5, color="white", lw=1.5)
    _cluster_ticks(ax, blocks, axis="y")
    step = _tick_step(n, 40)
    ax.set_yticks(np.arange(n)[::step], [str(i + 1) for i in o[::step]],
                  fontsize=8 if n <= 30 else 6)
    ax.set_ylabel("ROI")
    ax.set_xlabel("time (s)")
    fig.colorbar(im, ax=ax, extend="both", shrink=0.9, label=label, pad=0.02)
    ax.set_title(_join_title(title, f"traces by cluster: {_count(n, 'ROI')} in "
                                    f"{_count(len(np.unique(cl)), 'cluster')}"), fontsize=11)
    return fig


# ---------------------------------------------------------------- feature summaries


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


def session_summary_figure(features: pd.DataFrame, /, *, amplitude_label: str = "ΔF/F",
                           title: str = "") -> Figure:
    """Distributions of the per-ROI features of one session.

    One panel per feature — event rate (/min), mean event amplitude, mean event
    duration (s), participation in network events, SNR — each a box plot with the
    ROIs as points (ROIs whose arPLS fit failed marked with a red cross). ROIs with
    a missing value (e.g. no events, so no amplitude) are left out of that panel;
    the panel says how many are shown.

    Parameters
    ----------
    features : pandas.DataFrame
        The feature table rows of one session (one row per ROI), with columns
        ``rate_per_min``, ``mean_amplitude``, ``mean_duration_s``, ``participation``
        and ``snr``; ``experiment``, ``date``, ``session`` (for the title),
        ``n_events`` and ``converged`` are used if present.
    amplitude_label : str, optional
        Unit of the amplitudes (the normalization). Default is ``"ΔF/F"``.
    title : str, optional
        Figure title. Default is ``""``: experiment · date · session from the table.

    Returns
    -------
    matplotlib.figure.Figure
        Five axes, one per feature.

    Raises
    ------
    ValueError
        If a column is missing or the rows come from more than one session.
    """
    _check_columns(features, _SESSION_METRICS, "features")
    keys = [c for c in ("experiment", "date", "session") if c in features.columns]
    sessions = features[keys].drop_duplicates() if keys else pd.DataFrame()
    if len(sessions) > 1:
        raise ValueError(f"features must hold one session, got {len(sessions)} "
                         f"({', '.join(' '.join(map(str, r)) for r in sessions.values[:5])})")
    if not title and len(sessions):
        row = sessions.iloc[0]
        title = " · ".join(str(row[k]) if k != "session" else f"session {row[k]}"
                           for k in keys)
    n = len(features)
    failed = (~features["converged"].to_numpy(dtype=bool)
              if "converged" in features.columns else None)
    extra = []
    if "n_events" in features.columns:
        n_ev = features["n_events"].to_numpy(dtype=float)
        extra.append(f"{_count(int(np.nansum(n_ev)), 'event')}, "
                     f"{int(np.sum(n_ev > 0))} ROIs with events")
    if failed is not None and failed.any():
        extra.append(f"{int(failed.sum())} failed fits")

    fig = Figure(figsize=(13, 4.6), layout="constrained")
    axes = fig.subplots(1, len(_SESSION_METRICS))
    for ax, metric in zip(axes, _SESSION_METRICS, strict=True):
        values = features[metric].to_numpy(dtype=float, copy=True)
        _strip_box(ax, 0.0, values, "tab:purple", flagged=failed)
        name, unit = _metric_label(metric, amplitude_label)
        shown = int(np.isfinite(values).sum())
        ax.set_title("\n".join(textwrap.wrap(name, 18)) + f"\n(n = {shown}"
                     + (f" of {n})" if shown < n else ")"), fontsize=10)
        ax.set_ylabel(unit)
        ax.set_xticks([])
        ax.set_xlim(-0.6, 0.6)
        if metric == "participation":
            ax.set_ylim(-0.05, 1.05)
    if failed is not None and failed.any():
        fig.legend(handles=[Line2D([], [], ls="", marker="x", color=COLORS["warn"],
                                   label="ROI whose arPLS fit failed")],
                   loc="outside lower right", fontsize=8, frameon=False)
    fig.suptitle(_join_title(title, f"per-ROI features, {_count(n, 'ROI')}"
                                    + (f" ({'; '.join(extra)})" if extra else "")))
    return fig


def _feature_groups(features_by_experiment: object, /) -> dict[str, pd.DataFrame]:
    """Experiment name -> its feature rows, in display order."""
    if isinstance(features_by_experiment, pd.DataFrame):
        _check_columns(features_by_experiment, ["experiment"], "features_by_experiment")
        return {str(k): g for k, g in
                features_by_experiment.groupby("experiment", sort=False)}
    if isinstance(features_by_experiment, Mapping):
        out = {}
        for name, table in features_by_experiment.items():
            _check_columns(table, [], f"features_by_experiment[{name!r}]")
            out[str(name)] = table
        return out
    raise ValueError("features_by_experiment must be a mapping of experiment name to "
                     f"DataFrame, or a DataFrame, got {type(features_by_experiment).__name__}")


def condition_tests(
    features_by_experiment: Mapping[str, pd.DataFrame] | pd.DataFrame,
    /,
    *,
    metrics: Sequence[str] = ("rate_per_min", "mean_amplitude", "participation"),
    test: str = "auto",
) -> pd.DataFrame:
    """Rank test per feature between experiments (conditions), cells as samples.

    Missing values are dropped per feature; experiments with no value left are
    left out of that test. Two experiments are compared with the two-sided
    Mann–Whitney U test (:func:`scipy.stats.mannwhitneyu`), more with the
    Kruskal–Wallis H test (:func:`scipy.stats.kruskal`); fewer than two give
    ``test = "n/a"`` and NaN. p-values are not corrected for multiple comparisons.

    Parameters
    ----------
    features_by_experiment : mapping of str to pandas.DataFrame, or pandas.DataFrame
        Experiment name → its feature table (one row per cell), in display order;
        or one feature table with an ``experiment`` column (order of appearance).
    metrics : sequence of str, optional
        Feature columns to test. Default is ``("rate_per_min", "mean_amplitude",
        "participation")``.
    test : {"auto", "mannwhitney", "kruskal"}, optional
        ``"auto"`` picks Mann–Whitney for two experiments and Kruskal–Wallis for
        more; ``"kruskal"`` also applies to two. Default is ``"auto"``.

    Returns
    -------
    pandas.DataFrame
        One row per metric: ``metric``, ``test`` (``"mannwhitney"``, ``"kruskal"``
        or ``"n/a"``), ``statistic`` (U of the first experiment, or H),
        ``p_value``, ``groups`` (the experiments tested, ``" vs "``-joined) and
        ``n_<experiment>`` (cells with a value, per experiment).

    Raises
    ------
    ValueError
        If ``test`` is unknown, ``"mannwhitney"`` is asked for more than two
        experiments, or a metric column is missing.
    """
    if test not in _TESTS:
        raise ValueError(f"test must be one of {_TESTS}, got {test!r}")
    groups = _feature_groups(features_by_experiment)
    if not groups:
        raise ValueError("features_by_experiment must hold at least one experiment, got none")
    metrics = list(metrics)
    for name, table in groups.items():
        _check_columns(table, metrics, f"features_by_experiment[{name!r}]")
    rows = []
    for metric in metrics:
        samples = {name: table[metric].to_numpy(dtype=float, copy=True)
                   for name, table in groups.items()}
        samples = {name: v[np.isfinite(v)] for name, v in samples.items()}
        tested = {name: v for name, v in samples.items() if v.size}
        kind = "n/a" if len(tested) < 2 else (
            "mannwhitney" if test == "mannwhitney" or (test == "auto" and len(tested) == 2)
            else "kruskal")
        if kind == "mannwhitney" and len(tested) > 2:
            raise ValueError(f"test='mannwhitney' compares 2 experiments, got {len(tested)} "
                             f"for {metric!r}; use 'kruskal' or 'auto'")
        statistic = p_value = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # e.g. all values tied
            if kind == "mannwhitney":
                res = stats.mannwhitneyu(*tested.values(), alternative="two-sided")
            elif kind == "kruskal":
                res = stats.kruskal(*tested.values())
            if kind != "n/a":
                statistic, p_value = float(res.statistic), float(res.pvalue)
        row = {"metric": metric, "test": kind, "statistic": statistic, "p_value": p_value,
               "groups": " vs ".join(tested)}
        row.update({f"n_{name}": int(v.size) for name, v in samples.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def condition_summary_figure(
    features_by_experiment: Mapping[str, pd.DataFrame] | pd.DataFrame,
    /,
    *,
    metrics: Sequence[str] = ("rate_per_min", "mean_amplitude", "participation"),
    test: str = "auto",
    amplitude_label: str = "ΔF/F",
) -> Figure:
    """Experiments (conditions) side by side, one panel per feature.

    Each panel shows, per experiment, a box plot with the cells as points, the
    number of cells with a value in the tick labels, and the result of
    :func:`condition_tests` (statistic and p-value, or "n/a" for a single
    experiment) in its title.

    Parameters
    ----------
    features_by_experiment : mapping of str to pandas.DataFrame, or pandas.DataFrame
        Experiment name → its feature table (one row per cell), in display order;
        or one feature table with an ``experiment`` column.
    metrics : sequence of str, optional
        Feature columns, one panel each. Default is ``("rate_per_min",
        "mean_amplitude", "participation")``.
    test : {"auto", "mannwhitney", "kruskal"}, optional
        See :func:`condition_tests`. Default is ``"auto"``.
    amplitude_label : str, optional
        Unit of the amplitudes (the normalization). Default is ``"ΔF/F"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric.

    Raises
    ------
    ValueError
        As :func:`condition_tests`, or if ``metrics`` is empty.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one feature column, got none")
    results = condition_tests(features_by_experiment, metrics=metrics, test=test)
    groups = _feature_groups(features_by_experiment)
    names = list(groups)
    colors = [EXPERIMENT_COLORS[i % len(EXPERIMENT_COLORS)] for i in range(len(names))]
    width = max(3.2, 1.1 * len(names) + 1.4)
    fig = Figure(figsize=(min(width * len(metrics), 18), 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    pos = np.arange(len(names))
    for ax, metric, (_, res) in zip(axes, metrics, results.iterrows(), strict=True):
        ticks = []
        for p, name, color in zip(pos, names, colors, strict=True):
            values = groups[name][metric].to_numpy(dtype=float, copy=True)
            _strip_box(ax, p, values, color)
            ticks.append(f"{name}\n(n = {res[f'n_{name}']})")
        ax.set_xticks(pos, ticks, fontsize=9)
        ax.set_xlim(-0.6, len(names) - 0.4)
        label, unit = _metric_label(metric, amplitude_label)
        ax.set_ylabel(unit)
        if res["test"] == "n/a":
            result = "test n/a (< 2 experiments with values)"
        else:
            symbol = "U" if res["test"] == "mannwhitney" else "H"
            result = (f"{_TEST_NAMES[res['test']]}: {symbol} = {res['statistic']:.3g}, "
                      f"{_format_p(res['p_value'])}")
        significant = res["test"] != "n/a" and res["p_value"] < 0.05
        ax.set_title("\n".join(textwrap.wrap(label, 32)) + "\n" + result, fontsize=9,
                     fontweight="bold" if significant else "normal")
    fig.suptitle(f"Comparison of {_count(len(names), 'experiment')}: {', '.join(names)} "
                 "(points: cells; p uncorrected, bold: p < 0.05)", fontsize=11)
    return fig


# ------------------------------------------------------------------ quality control


def _outline_rois(ax, labels: np.ndarray, colors: Sequence[str], /) -> None:
    """Outline and number each ROI of a label image in its own colour."""
    for k, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None or k > len(colors):
            continue
        inside = np.pad(labels[box] == k, 1)
        rows = np.arange(box[0].start - 1, box[0].stop + 1)
        cols = np.arange(box[1].start - 1, box[1].stop + 1)
        ax.contour(cols, rows, inside, levels=[0.5], colors=colors[k - 1], linewidths=0.9)
        rr, cc = np.nonzero(inside)
        ax.text(cols[0] + cc.mean(), rows[0] + rr.mean(), str(k), color=colors[k - 1],
                fontsize=7, ha="center", va="center", fontweight="bold")


def _roi_list(numbers: np.ndarray, /, *, most: int = 12) -> str:
    shown = ", ".join(str(int(r)) for r in numbers[:most])
    return shown + (f", … (+{numbers.size - most})" if numbers.size > most else "")


def qc_figure(
    mip: object,
    labels: object,
    shifts: object,
    background: object,
    converged: object,
    snr: object,
    /,
    *,
    snr_threshold: float = 3.0,
    bad_frames: object = None,
    title: str = "",
) -> Figure:
    """One-page quality control of a session (A4 portrait).

    Panels: the MIP with each ROI outlined — red when flagged (SNR below
    ``snr_threshold`` or missing, or its arPLS fit did not converge), yellow
    otherwise; the motion-correction shifts with bad frames shaded; the background
    trace; per-ROI SNR bars with the threshold; and a text box counting failed
    fits, low-SNR ROIs, flagged ROIs and bad frames.

    Parameters
    ----------
    mip : numpy.ndarray, shape (y, x)
        Maximum-intensity projection (counts).
    labels : numpy.ndarray of int, shape (y, x)
        ROI label image on the MIP's grid: 0 outside ROIs, ``n`` inside ROI ``n``.
    shifts : xarray.DataArray or numpy.ndarray, shape (time, 2), or None
        Rigid shifts ``(dy, dx)`` in pixels (see :func:`shifts_figure`), or None
        when the session was not motion-corrected.
    background : xarray.DataArray or numpy.ndarray, shape (time,)
        Background trace (counts); a DataArray's ``time`` coordinate gives seconds.
    converged : array_like of bool, shape (roi,)
        Whether each ROI's arPLS fit converged (ROI ``n`` at position ``n - 1``).
    snr : array_like of float, shape (roi,)
        Signal-to-noise ratio of each ROI.
    snr_threshold : float, optional
        ROIs with ``snr < snr_threshold`` (or NaN) are flagged. Default is 3.0.
    bad_frames : array_like of bool, shape (time,) of ``shifts``, optional
        Frames flagged as bad (e.g. a motion jump). Default is None.
    title : str, optional
        Experiment, date and session. Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        Five axes: ``mip``, ``shifts``, ``background``, ``snr``, ``summary``.

    Raises
    ------
    ValueError
        If shapes do not match (``labels`` vs ``mip``, ``converged`` vs ``snr``,
        ROI numbers in ``labels`` beyond the number of ROIs, ``bad_frames`` vs
        ``shifts``).
    """
    image = _float_array(mip, "mip", 2)
    lab = np.array(labels.values if isinstance(labels, xr.DataArray) else labels, copy=True)
    if lab.shape != image.shape or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an int image of the mip's shape {image.shape}, "
                         f"got {lab.dtype} {lab.shape}")
    s = _float_array(snr, "snr", 1)
    n_roi = s.size
    ok_fit = _bool_mask(converged, "converged", n_roi)
    if lab.size and lab.max() > n_roi:
        raise ValueError(f"labels holds ROI numbers up to {int(lab.max())} but snr and "
                         f"converged have {n_roi} entries")
    bg, bg_time, bg_xlabel = _series(background, "background")
    low = ~(s >= snr_threshold)
    flagged = low | ~ok_fit
    rois = np.arange(1, n_roi + 1)

    fig = Figure(figsize=(8.27, 11.69), layout="constrained")
    axd = fig.subplot_mosaic([["mip", "mip"], ["shifts", "shifts"],
                              ["background", "background"], ["snr", "summary"]],
                             height_ratios=[5.0, 1.5, 1.3, 1.8], width_ratios=[2.6, 1])
    ax = axd["mip"]
    lo, hi = np.nanpercentile(image, [1, 99.8]) if image.size else (0, 1)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    _outline_rois(ax, lab, [_BAD_OUTLINE if f else _OK_OUTLINE for f in flagged])
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.set_title(f"MIP with {_count(n_roi, 'ROI')} (outlined yellow: ok; red: flagged, "
                 f"SNR < {snr_threshold:g} or fit failed)", fontsize=10)

    ax = axd["shifts"]
    n_bad = 0
    if shifts is None:
        max_shift = "n/a"
        ax.text(0.5, 0.5, "not motion-corrected (no shifts)", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        if bad_frames is not None:
            raise ValueError("bad_frames needs shifts (they share the time axis), got "
                             "shifts=None")
    else:
        values, time, xlabel = _shift_values(shifts)
        mask = None if bad_frames is None else _bool_mask(bad_frames, "bad_frames",
                                                           values.shape[0])
        n_bad = 0 if mask is None else int(mask.sum())
        _plot_shifts(ax, time, values, mask, magnitude=True)
        mag = np.hypot(values[:, 0], values[:, 1])
        max_shift = (f"{np.nanmax(mag):.2f} {_PX}" if np.isfinite(mag).any() else "n/a")
        if time.size:
            ax.set_xlim(*_time_extent(time))
        ax.set_xlabel(xlabel)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncols=4,
                  frameon=False, borderaxespad=0.1)
    ax.set_ylabel(f"shift ({_PX})")
    ax.set_title(f"motion correction (max |shift| {max_shift})", fontsize=10, loc="left")

    ax = axd["background"]
    ax.plot(bg_time, bg, color=COLORS["background"], lw=1.1)
    if bg_time.size:
        ax.set_xlim(*_time_extent(bg_time))
    ax.set_xlabel(bg_xlabel)
    ax.set_ylabel("background\n(counts)")
    ax.set_title("background trace", fontsize=10)

    ax = axd["snr"]
    heights = np.nan_to_num(s, nan=0.0)
    ax.bar(rois, heights, width=0.8,
           color=[COLORS["warn"] if f else "0.55" for f in flagged])
    ax.axhline(snr_threshold, color="black", ls="--", lw=1,
               label=f"threshold {snr_threshold:g}")
    step = _tick_step(n_roi, 30)
    ax.set_xticks(rois[::step], [str(r) for r in rois[::step]], fontsize=7,
                  rotation=90 if n_roi > 15 else 0)
    for tick, i in zip(ax.get_xticklabels(), rois[::step] - 1, strict=True):
        if not ok_fit[i]:
            tick.set_color(COLORS["warn"])
            tick.set_fontweight("bold")
    ax.set_xlim(0.3, n_roi + 0.7)
    top = max(float(np.nanmax(heights, initial=0.0)), snr_threshold)
    ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    ax.set_xlabel("ROI (red number: fit failed)")
    ax.set_ylabel("SNR")
    ax.set_title("per-ROI SNR (red: flagged)", fontsize=10)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0],
                       Patch(color=COLORS["warn"], label="flagged")],
              loc="upper right", fontsize=7)

    ax = axd["summary"]
    ax.set_axis_off()
    lines = [
        (f"{_count(n_roi, 'ROI')}", False),
        (f"failed fits: {int((~ok_fit).sum())}", (~ok_fit).any()),
        (f"  ROI {_roi_list(rois[~ok_fit])}" if (~ok_fit).any() else "", True),
        (f"SNR < {snr_threshold:g}: {int(low.sum())}", low.any()),
        (f"  ROI {_roi_list(rois[low])}" if low.any() else "", True),
        (f"flagged ROIs: {int(flagged.sum())}", flagged.any()),
        (f"bad frames: {n_bad}", n_bad > 0),
        (f"max |shift|: {max_shift}" if shifts is not None else "not motion-corrected",
         False),
    ]
    y = 0.98
    for text, warn in lines:
        if not text:
            continue
        for part in textwrap.wrap(text, 24, subsequent_indent="    ") or [""]:
            ax.text(0.0, y, part, transform=ax.transAxes, ha="left", va="top", fontsize=9,
                    color=COLORS["warn"] if warn else "black",
                    fontweight="bold" if warn else "normal")
            y -= 0.09
    ax.set_title("summary", fontsize=10, loc="left")
    fig.suptitle(_join_title(title, "quality control"), fontsize=12)
    return fig
