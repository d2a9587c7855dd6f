"""Figures built from arrays (no file access: :func:`calim_helpers.io.save_figure` saves).

Every function takes arrays or :class:`xarray.Dataset` objects and returns a
:class:`matplotlib.figure.Figure` built with ``Figure(...)`` (no pyplot, no global
state); inputs are never modified. Colours are shared by all figures: raw ROI trace
red, background blue, ROI − background (signal) purple, drift-corrected ("clean")
signal green, fitted arPLS baseline black dashed.

Per session (a Dataset with dims ``roi`` and ``time``, see SPEC §2):

- :func:`roi_raw_figure` — ``<session>_mask<n>.png``
- :func:`roi_clean_figure` — ``<session>_mask_arpls_clean_<n>.png``
- :func:`roi_norm_figure` — ``<session>_mask_arpls_NORM_<n>.png``
- :func:`qc_session_figure` — fit convergence, background, per-ROI baselines

Per experiment (sessions concatenated along ``cell``, see SPEC §3):

- :func:`heatmap_figure` — ``heatmap.pdf``
- :func:`hist_cum_figure` — ``hist_cum.pdf``

Across experiments: :func:`comparison_figure`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy import ndimage

from calim_helpers.errors import CalimWarning

__all__ = [
    "comparison_figure",
    "load_figure",
    "traces_figure",
    "heatmap_figure",
    "hist_cum_figure",
    "qc_session_figure",
    "roi_clean_figure",
    "roi_norm_figure",
    "roi_overlay",
    "roi_raw_figure",
]

#: Colours shared by all figures (the lab's convention).
COLORS = {
    "raw": "tab:red",
    "background": "tab:blue",
    "signal": "tab:purple",
    "corrected": "tab:green",
    "baseline": "black",
    "trim": "0.85",
    "warn": "tab:red",
}

#: Colours of experiments in comparisons (avoiding the trace colours above).
EXPERIMENT_COLORS = ("tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:olive",
                     "tab:gray", "navy", "gold", "teal", "magenta")

#: Axis label of each normalization (``normalize`` attribute).
NORM_LABELS = {
    "dff": "ΔF/F (dff)",
    "session": "corrected / S (session-normalized)",
    "zscore": "z-score (corrected / noise SD)",
}

_TIME_LABEL = "time (s)"
_INTENSITY_LABEL = "intensity (counts)"


def roi_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    /,
    *,
    names: Sequence[str] = (),
    title: str = "",
    extent_um: tuple[float, float] | None = None,
) -> Figure:
    """ROI label image drawn over a (maximum-intensity) projection.

    Parameters
    ----------
    image : numpy.ndarray, shape (y, x)
        Background image, e.g. the MIP.
    labels : numpy.ndarray of int, shape (y, x)
        0 outside ROIs, ``n`` inside ROI ``n``.
    names : sequence of str, optional
        Fiji names of the ROIs, shown next to their number. Default is none.
    title : str, optional
        Figure title. Default is ``""``.
    extent_um : tuple of float, optional
        ``(height, width)`` of the image in µm, for a scale in the axis labels.
        Default is None (pixels).

    Returns
    -------
    matplotlib.figure.Figure
    """
    ny, nx = image.shape
    fig = Figure(figsize=(8, 8 * ny / nx + 0.6), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.percentile(image, [1, 99.8])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    n = int(labels.max())
    if n:
        masked = np.ma.masked_equal(labels, 0)
        ax.imshow(masked, cmap="tab20", vmin=1, vmax=max(n, 2), alpha=0.35,
                  interpolation="nearest")
        # one outline per ROI, traced on its bounding box only (memory ~ ROI size)
        for k, box in enumerate(ndimage.find_objects(labels), 1):
            if box is None:
                continue
            inside = np.pad(labels[box] == k, 1)
            rows = np.arange(box[0].start - 1, box[0].stop + 1)
            cols = np.arange(box[1].start - 1, box[1].stop + 1)
            ax.contour(cols, rows, inside, levels=[0.5], colors="yellow", linewidths=0.7)
            rr, cc = np.nonzero(inside)
            label = f"{k}" + (f" {names[k - 1]}" if len(names) >= k else "")
            ax.text(cols[0] + cc.mean(), rows[0] + rr.mean(), label, color="yellow",
                    fontsize=7, ha="center", va="center")
    ax.set_title(title)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if extent_um is not None:
        ax.set_xlabel(f"x (pixel; width {extent_um[1]:.0f} µm)")
        ax.set_ylabel(f"y (pixel; height {extent_um[0]:.0f} µm)")
    return fig


# --------------------------------------------------------------------------- helpers


def _values(da: xr.DataArray) -> np.ndarray:
    """Return a float64 copy of ``da``'s values (never a view on the input)."""
    return np.array(da.values, dtype=float, copy=True)


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


def _norm_label(normalize: object) -> str:
    """Readable name of a normalization, for axis and colour-bar labels."""
    return NORM_LABELS.get(str(normalize), f"normalized signal ({normalize})")


def _half_step(time: np.ndarray) -> float:
    """Half the (median) frame interval of ``time``, 0.5 for a single frame."""
    finite = time[np.isfinite(time)]
    if finite.size < 2:
        return 0.5
    return float(np.median(np.diff(finite))) / 2


def _time_extent(time: np.ndarray) -> tuple[float, float]:
    """Left and right edges of the first and last frames, in s."""
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


def _check_vars(ds: xr.Dataset, names: Sequence[str], what: str, /) -> None:
    missing = [v for v in names if v not in ds.variables]
    if missing:
        raise ValueError(f"{what} is missing variable(s) {missing}; has {sorted(ds.variables)}")


def _select_roi(ds: xr.Dataset, roi: int, /) -> xr.Dataset:
    """Select ROI number ``roi`` (coordinate ``roi``, from 1) of a session Dataset."""
    if "roi" not in ds.dims:
        raise ValueError(f"ds must have a 'roi' dimension, got dims {tuple(ds.dims)}")
    numbers = [int(r) for r in ds["roi"].values]
    if isinstance(roi, bool) or not isinstance(roi, int | np.integer) or int(roi) not in numbers:
        raise ValueError(f"roi must be one of the ROI numbers {numbers}, got {roi!r}")
    return ds.isel(roi=numbers.index(int(roi)))


def _roi_title(ds: xr.Dataset, one: xr.Dataset, /) -> str:
    """``experiment · date · session · ROI n "name"``."""
    a = ds.attrs
    name = str(one["roi_name"].values) if "roi_name" in one.coords else ""
    parts = [str(a.get("experiment", "?")), str(a.get("date", "?")),
             f"session {a.get('session', '?')}", f"ROI {int(one['roi'])}"]
    title = " · ".join(parts)
    return f'{title} "{name}"' if name else title


def _fit_problems(one: xr.Dataset, which: Sequence[str], /) -> list[str]:
    """Lines describing non-converged arPLS fits (``which`` ⊂ {"signal", "raw"})."""
    lines = []
    for fit in which:
        suffix = "" if fit == "signal" else "_raw"
        conv, n_iter = f"converged{suffix}", f"n_iter{suffix}"
        if conv in one and not bool(one[conv]):
            n = int(one[n_iter]) if n_iter in one else "?"
            lines.append(f"arPLS ({fit}) did not converge (n_iter = {n})")
    return lines


def _set_title(ax, title: str, problems: Sequence[str], /) -> None:
    """Title; red with a warning line and red frame when a fit did not converge."""
    if problems:
        ax.set_title("\n".join([title, *problems]), color=COLORS["warn"], fontsize=10)
        for spine in ax.spines.values():
            spine.set_color(COLORS["warn"])
            spine.set_linewidth(1.5)
    else:
        ax.set_title(title, fontsize=10)


def _session_groups(exp_ds: xr.Dataset, /) -> list[tuple[str, np.ndarray]]:
    """``(label, cell indices)`` per (date, session), in order of first appearance."""
    n = exp_ds.sizes["cell"]
    dates = ([str(d) for d in exp_ds["date"].values] if "date" in exp_ds.coords
             else [""] * n)
    sessions = ([str(s) for s in exp_ds["session"].values] if "session" in exp_ds.coords
                else ["all"] * n)
    keys = list(zip(dates, sessions, strict=True))
    order = list(dict.fromkeys(keys))
    ambiguous = len({s for _, s in order}) < len(order)
    groups = []
    for key in order:
        idx = np.array([i for i, k in enumerate(keys) if k == key], dtype=int)
        label = f"{key[0]} {key[1]}" if ambiguous else key[1]
        groups.append((label, idx))
    return groups


def _check_experiment(exp_ds: xr.Dataset, names: Sequence[str], what: str, /) -> None:
    if "cell" not in exp_ds.dims or "time" not in exp_ds.dims:
        raise ValueError(f"{what} must have dims 'cell' and 'time', got {tuple(exp_ds.dims)}")
    _check_vars(exp_ds, names, what)


# ------------------------------------------------------------------ per session / ROI


def roi_raw_figure(ds: xr.Dataset, roi: int, /) -> Figure:
    """Raw ROI trace, background, ROI − background and its arPLS baseline (``<session>_mask<n>``).

    The top panel shows the intensities as measured (ROI mean in red, background in
    blue); the bottom panel the background-subtracted signal (purple) with the arPLS
    baseline fitted to it (black dashed). A fit that did not converge turns the title
    and frame red and says so with its iteration count.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with dims ``(roi, time)`` and variables ``raw``,
        ``background``, ``signal``, ``baseline``; ``converged``/``n_iter`` if present.
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers or a variable is missing.
    """
    _check_vars(ds, ["raw", "background", "signal", "baseline"], "ds")
    one = _select_roi(ds, roi)
    t = _values(ds["time"])
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax_raw, ax_sig = fig.subplots(2, 1, sharex=True)
    ax_raw.plot(t, _values(one["raw"]), color=COLORS["raw"], lw=1.2, label="ROI (raw)")
    ax_raw.plot(t, _values(one["background"]), color=COLORS["background"], lw=1.2,
                label="background")
    ax_raw.set_ylabel(_INTENSITY_LABEL)
    ax_raw.legend(loc="best", fontsize=8)
    ax_sig.plot(t, _values(one["signal"]), color=COLORS["signal"], lw=1.2,
                label="ROI − background")
    ax_sig.plot(t, _values(one["baseline"]), color=COLORS["baseline"], ls="--", lw=1.2,
                label=_baseline_label(ds))
    ax_sig.set_ylabel(f"ROI − background\n{_INTENSITY_LABEL}")
    ax_sig.set_xlabel(_TIME_LABEL)
    ax_sig.legend(loc="best", fontsize=8)
    _set_title(ax_raw, _roi_title(ds, one), _fit_problems(one, ["signal"]))
    return fig


def _baseline_label(ds: xr.Dataset, /) -> str:
    lam = ds.attrs.get("lam")
    return "arPLS baseline" + (f" (λ = {float(lam):g})" if lam is not None else "")


def roi_clean_figure(ds: xr.Dataset, roi: int, /) -> Figure:
    """Plot the drift-corrected signal and background (``<session>_mask_arpls_clean_<n>``).

    Top: the corrected signal (``signal − baseline``, green), the lab's "clean"
    curve. Bottom, on its own scale (both are in counts but at very different
    levels): the background trace (blue) that was subtracted from it.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with variables ``corrected`` and ``background``.
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers or a variable is missing.
    """
    _check_vars(ds, ["corrected", "background"], "ds")
    one = _select_roi(ds, roi)
    t = _values(ds["time"])
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.axhline(0, color="0.6", lw=0.8)
    ax.plot(t, _values(one["corrected"]), color=COLORS["corrected"], lw=1.3,
            label="corrected (ROI − background − baseline)")
    ax.set_ylabel(f"corrected\n{_INTENSITY_LABEL}")
    ax.legend(loc="best", fontsize=8)
    bx.plot(t, _values(one["background"]), color=COLORS["background"], lw=1.2,
            label="background")
    bx.set_ylabel(f"background\n{_INTENSITY_LABEL}")
    bx.set_xlabel(_TIME_LABEL)
    bx.legend(loc="best", fontsize=8)
    _set_title(ax, _roi_title(ds, one), _fit_problems(one, ["signal"]))
    return fig


def roi_norm_figure(ds: xr.Dataset, roi: int, /) -> Figure:
    """Plot the normalized signal of one ROI (``<session>_mask_arpls_NORM_<n>``).

    The y label names the normalization (``ds.attrs["normalize"]``); the first
    ``trim_start`` frames (NaN in ``norm``) are shaded.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with variable ``norm`` and attributes ``normalize`` and
        ``trim_start`` (``session_scale`` is shown for ``normalize="session"``).
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers or ``norm`` is missing.
    """
    _check_vars(ds, ["norm"], "ds")
    one = _select_roi(ds, roi)
    t = _values(ds["time"])
    normalize = ds.attrs.get("normalize", "?")
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    _shade_trim(ax, t, ds.attrs.get("trim_start", 0))
    ax.axhline(0, color="0.6", lw=0.8)
    ax.plot(t, _values(one["norm"]), color=COLORS["corrected"], lw=1.3, label="normalized")
    ax.set_xlim(*_time_extent(t))
    ax.set_ylabel(_norm_label(normalize))
    ax.set_xlabel(_TIME_LABEL)
    if normalize == "session" and "session_scale" in ds.attrs:
        ax.text(0.01, 0.97, f"S = {float(ds.attrs['session_scale']):.4g} counts",
                transform=ax.transAxes, ha="left", va="top", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    fits = ["signal", "raw"] if normalize in ("dff", "session") else ["signal"]
    _set_title(ax, _roi_title(ds, one), _fit_problems(one, fits))
    return fig


def qc_session_figure(ds: xr.Dataset, /) -> Figure:
    """Quality control of one session: fit convergence, background, per-ROI baselines.

    Panels: counts of converged and non-converged arPLS fits (of ``signal`` and of
    ``raw``); the background trace; the time-mean of ``baseline_raw`` (the ΔF/F
    denominator F0) and of ``baseline`` per ROI, with the ROI numbers of
    non-converged fits in red.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with ``background``, ``baseline``, ``baseline_raw``,
        ``converged`` and ``converged_raw``.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes.

    Raises
    ------
    ValueError
        If a variable is missing.
    """
    _check_vars(ds, ["background", "baseline", "baseline_raw", "converged",
                     "converged_raw"], "ds")
    a = ds.attrs
    t = _values(ds["time"])
    n_roi = ds.sizes["roi"]
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axd = fig.subplot_mosaic([["conv", "background"], ["baseline", "baseline"]],
                             width_ratios=[1, 2])
    fig.suptitle(f"{a.get('experiment', '?')} · {a.get('date', '?')} · "
                 f"session {a.get('session', '?')}: quality control ({n_roi} ROIs)")

    ax = axd["conv"]
    conv = {"signal": np.asarray(ds["converged"].values, dtype=bool),
            "raw": np.asarray(ds["converged_raw"].values, dtype=bool)}
    x = np.arange(2)
    ok = np.array([c.sum() for c in conv.values()])
    bad = np.array([(~c).sum() for c in conv.values()])
    b1 = ax.bar(x - 0.2, ok, width=0.4, color=COLORS["corrected"], label="converged")
    b2 = ax.bar(x + 0.2, bad, width=0.4, color=COLORS["warn"], label="not converged")
    ax.bar_label(b1, fontsize=8)
    ax.bar_label(b2, fontsize=8)
    ax.set_xticks(x, [f"fit of {k}" for k in conv])
    ax.set_ylabel("number of ROIs")
    ax.set_ylim(0, max(n_roi, 1) * 1.2)
    ax.set_title("arPLS convergence", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)

    ax = axd["background"]
    ax.plot(t, _values(ds["background"]), color=COLORS["background"], lw=1.2)
    ax.set_xlabel(_TIME_LABEL)
    ax.set_ylabel(f"background {_INTENSITY_LABEL}")
    frac, npix = a.get("background_fraction"), a.get("n_background_pixels")
    extra = []
    if frac is not None:
        extra.append(f"{100 * float(frac):g}% of pixels")
    if npix is not None:
        extra.append(f"n = {int(npix)}")
    ax.set_title("background" + (f" ({', '.join(extra)})" if extra else ""), fontsize=10)

    ax = axd["baseline"]
    rois = np.array([int(r) for r in ds["roi"].values])
    pos = np.arange(n_roi)
    ax.bar(pos - 0.2, _nanmean(_values(ds["baseline_raw"]), axis=1), width=0.4,
           color="0.6", label="mean baseline of raw (F0)")
    ax.bar(pos + 0.2, _nanmean(_values(ds["baseline"]), axis=1), width=0.4,
           color=COLORS["baseline"], label="mean baseline of ROI − background")
    ax.axhline(0, color="0.3", lw=0.8)
    step = max(1, int(np.ceil(n_roi / 40)))
    ax.set_xticks(pos[::step], [str(r) for r in rois[::step]], fontsize=8)
    failed = ~(conv["signal"] & conv["raw"])
    for tick, i in zip(ax.get_xticklabels(), pos[::step], strict=True):
        if failed[i]:
            tick.set_color(COLORS["warn"])
            tick.set_fontweight("bold")
    ax.set_xlim(-0.7, n_roi - 0.3)
    ax.set_xlabel("ROI (red: an arPLS fit did not converge)")
    ax.set_ylabel(f"time-mean {_INTENSITY_LABEL}")
    ax.set_title("per-ROI baselines", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return fig


# ------------------------------------------------------------------- per experiment


def heatmap_figure(
    exp_ds: xr.Dataset,
    /,
    *,
    vmin: float = 0.0,
    vmax: float = 0.5,
    cmap: str = "viridis",
) -> Figure:
    """Plot the normalized signal of all cells × time by session (``heatmap.pdf``).

    Top panel: one row per cell, cells grouped by (date, session) in order of first
    appearance (input order within a session), with separators and session labels.
    Bottom panel: one row per session, the mean over its cells (NaN ignored) — the
    lab's group-analysis figure. Both share one colour scale and colour bar; NaN
    (trimmed or padded frames, empty cells) is drawn light grey.

    Parameters
    ----------
    exp_ds : xarray.Dataset
        Experiment Dataset with dims ``(cell, time)``, variable ``norm``, coordinates
        ``date`` and ``session`` along ``cell`` and attribute ``normalize``.
    vmin, vmax : float, optional
        Colour scale limits, in units of the normalization. Defaults are 0.0 and 0.5.
    cmap : str, optional
        Matplotlib colour map name. Default is ``"viridis"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two image axes and one colour-bar axes.

    Raises
    ------
    ValueError
        If ``norm`` or the dims are missing, or ``vmin >= vmax``.
    """
    _check_experiment(exp_ds, ["norm"], "exp_ds")
    if not vmin < vmax:
        raise ValueError(f"vmin must be < vmax, got vmin={vmin!r}, vmax={vmax!r}")
    groups = _session_groups(exp_ds)
    norm = _values(exp_ds["norm"].transpose("cell", "time"))
    order = np.concatenate([idx for _, idx in groups])
    rows = norm[order]
    means = np.stack([_nanmean(norm[idx], axis=0) for _, idx in groups])
    t = _values(exp_ds["time"])
    t0, t1 = _time_extent(t)
    n_cell, n_sess = rows.shape[0], len(groups)
    label = _norm_label(exp_ds.attrs.get("normalize", "?"))
    colormap = mpl.colormaps[cmap].with_extremes(bad="0.85")

    # panel heights in inches: the session-mean rows keep a readable height however
    # many cells the upper panel holds
    cells_in = float(np.clip(0.09 * n_cell, 2.0, 11.0))
    sess_in = float(np.clip(0.3 * n_sess, 0.9, 3.0))
    fig = Figure(figsize=(10, cells_in + sess_in + 1.6), layout="constrained")
    ax_cells, ax_sess = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [cells_in, sess_in]})
    kw = {"aspect": "auto", "interpolation": "nearest", "cmap": colormap,
          "vmin": vmin, "vmax": vmax}
    im = ax_cells.imshow(rows, extent=(t0, t1, n_cell - 0.5, -0.5), **kw)
    ax_sess.imshow(means, extent=(t0, t1, n_sess - 0.5, -0.5), **kw)

    bounds = np.cumsum([idx.size for _, idx in groups])
    for b in bounds[:-1]:
        ax_cells.axhline(b - 0.5, color="white", lw=1.5)
    for b in range(1, n_sess):
        ax_sess.axhline(b - 0.5, color="white", lw=1.5)
    centers = bounds - np.array([idx.size for _, idx in groups]) / 2 - 0.5
    fs = 8 if n_sess <= 20 else 6
    ax_cells.set_yticks(centers, [f"{lab} ({idx.size})" for lab, idx in groups], fontsize=fs)
    ax_cells.tick_params(axis="y", length=0)
    ax_cells.set_ylabel("cells, by session (n)")
    ax_sess.set_yticks(np.arange(n_sess), [lab for lab, _ in groups], fontsize=fs)
    ax_sess.set_ylabel("session mean")
    ax_sess.set_xlabel(_TIME_LABEL)
    ax_cells.set_title(f"{exp_ds.attrs.get('experiment', '?')}: {label}, "
                       f"{_count(n_cell, 'cell')} in {_count(n_sess, 'session')}", fontsize=11)
    ax_sess.set_title("mean over each session's cells", fontsize=10)
    cb = fig.colorbar(im, ax=[ax_cells, ax_sess], extend="both", shrink=0.8,
                      aspect=max(20.0, 4 * (cells_in + sess_in + 1.6)), extendfrac=0.03)
    cb.set_label(label)
    return fig


def hist_cum_figure(exp_ds: xr.Dataset, /) -> Figure:
    """Average over all cells per frame, and before/after drift correction (``hist_cum.pdf``).

    Top: the "average histogram" — the mean over all cells of all sessions of
    ``norm`` per frame, ± SEM (NaN ignored; trimmed frames shaded). Bottom, side by
    side on one y scale: the mean of ``dff_raw`` (raw divided by its own baseline,
    background not subtracted) and the mean of ``dff`` (after background subtraction and
    arPLS correction).

    Parameters
    ----------
    exp_ds : xarray.Dataset
        Experiment Dataset with dims ``(cell, time)``, variables ``norm``, ``dff`` and
        ``dff_raw`` and attributes ``experiment``, ``normalize``, ``trim_start``.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: ``"average"``, ``"before"``, ``"after"``.

    Raises
    ------
    ValueError
        If a variable or the dims are missing.
    """
    _check_experiment(exp_ds, ["norm", "dff", "dff_raw"], "exp_ds")
    t = _values(exp_ds["time"])
    n_cell = exp_ds.sizes["cell"]
    n_sess = len(_session_groups(exp_ds))
    normalize = exp_ds.attrs.get("normalize", "?")
    trim = exp_ds.attrs.get("trim_start", 0)
    fig = Figure(figsize=(10, 7), layout="constrained")
    axd = fig.subplot_mosaic([["average", "average"], ["before", "after"]])
    fig.suptitle(f"{exp_ds.attrs.get('experiment', '?')}: average over "
                 f"{_count(n_cell, 'cell')} in {_count(n_sess, 'session')} (mean ± SEM)")

    def band(ax, values: np.ndarray, color: str, label: str) -> None:
        mean, sem, _ = _mean_sem(values)
        ax.plot(t, mean, color=color, lw=1.3, label=label)
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=0.25, lw=0,
                        label="± SEM")

    ax = axd["average"]
    _shade_trim(ax, t, trim)
    ax.axhline(0, color="0.6", lw=0.8)
    band(ax, _values(exp_ds["norm"].transpose("cell", "time")), COLORS["corrected"],
         "mean over cells")
    ax.set_xlim(*_time_extent(t))
    ax.set_ylabel(_norm_label(normalize))
    ax.set_xlabel(_TIME_LABEL)
    ax.set_title("average of the normalized signal per frame", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)

    before, after = axd["before"], axd["after"]
    after.sharey(before)
    for ax, var, color, title in (
        (before, "dff_raw", COLORS["raw"], "before: (raw − F0) / F0, background not subtracted"),
        (after, "dff", COLORS["corrected"], "after: background + arPLS corrected, / F0"),
    ):
        ax.axhline(0, color="0.6", lw=0.8)
        band(ax, _values(exp_ds[var].transpose("cell", "time")), color, f"mean {var}")
        ax.set_xlim(*_time_extent(t))
        ax.set_xlabel(_TIME_LABEL)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    before.set_ylabel("ΔF/F")
    after.tick_params(labelleft=False)
    return fig


# ------------------------------------------------------------------ across experiments


def _per_cell_summaries(exp_ds: xr.Dataset, /) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell mean and 95th percentile of ``norm`` over the non-trimmed frames."""
    norm = _values(exp_ds["norm"].transpose("cell", "time"))
    norm = norm[:, min(int(exp_ds.attrs.get("trim_start", 0)), norm.shape[1]):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(norm, axis=1) if norm.size else np.full(norm.shape[0], np.nan)
        peak = (np.nanpercentile(norm, 95, axis=1) if norm.size
                else np.full(norm.shape[0], np.nan))
    return mean, peak


def comparison_figure(experiments: Mapping[str, xr.Dataset], /) -> Figure:
    """Experiments (conditions) side by side.

    Top: the average trace of each experiment (mean ± SEM over its cells of
    ``norm``). Bottom: per-experiment distributions (box plot with the cells as
    jittered points) of two per-cell summaries over the non-trimmed frames: the mean
    of ``norm`` and its peak (95th percentile). Cells whose ``norm`` is all NaN are
    left out of the distributions; the labels give the number of cells shown.

    Parameters
    ----------
    experiments : mapping of str to xarray.Dataset
        Experiment name → experiment Dataset (dims ``(cell, time)``, variable
        ``norm``, attributes ``normalize`` and ``trim_start``), in display order.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: ``"traces"``, ``"mean"``, ``"peak"``.

    Raises
    ------
    ValueError
        If ``experiments`` is empty or a Dataset lacks ``norm`` or the dims.

    Warns
    -----
    CalimWarning
        If the experiments were normalized differently (their values do not compare).
    """
    if not experiments:
        raise ValueError("experiments must hold at least one experiment, got none")
    for name, exp_ds in experiments.items():
        _check_experiment(exp_ds, ["norm"], f"experiments[{name!r}]")
    norms = list(dict.fromkeys(str(e.attrs.get("normalize", "?"))
                               for e in experiments.values()))
    if len(norms) > 1:
        warnings.warn(f"experiments were normalized differently ({', '.join(norms)}); "
                      "their values are not comparable", CalimWarning, stacklevel=2)
    ylabel = " | ".join(_norm_label(n) for n in norms)
    colors = [EXPERIMENT_COLORS[i % len(EXPERIMENT_COLORS)] for i in range(len(experiments))]

    fig = Figure(figsize=(10, 7.5), layout="constrained")
    axd = fig.subplot_mosaic([["traces", "traces"], ["mean", "peak"]])
    fig.suptitle(f"Comparison of {_count(len(experiments), 'experiment')}: "
                 + ", ".join(experiments))

    ax = axd["traces"]
    summaries = {}
    for (name, exp_ds), color in zip(experiments.items(), colors, strict=True):
        t = _values(exp_ds["time"])
        mean, sem, _ = _mean_sem(_values(exp_ds["norm"].transpose("cell", "time")))
        n = exp_ds.sizes["cell"]
        ax.plot(t, mean, color=color, lw=1.3, label=f"{name} (n = {_count(n, 'cell')})")
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=0.2, lw=0)
        summaries[name] = _per_cell_summaries(exp_ds)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(_TIME_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title("average trace per experiment (mean ± SEM over cells)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)

    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    pos = np.arange(len(experiments))
    for key, which, title in (("mean", 0, "per-cell mean"),
                              ("peak", 1, "per-cell peak (95th percentile)")):
        ax = axd[key]
        labels = []
        for p, (name, vals), color in zip(pos, summaries.items(), colors, strict=True):
            v = vals[which][np.isfinite(vals[which])]
            of = f" of {vals[which].size}" if v.size < vals[which].size else ""
            labels.append(f"{name}\n(n = {v.size}{of})")
            if v.size:
                ax.boxplot([v], positions=[p], widths=0.5, showfliers=False,
                           medianprops={"color": "black"}, manage_ticks=False)
                ax.scatter(p + rng.uniform(-0.15, 0.15, v.size), v, s=12, color=color,
                           alpha=0.7, zorder=3, edgecolors="none")
        ax.set_xticks(pos, labels, fontsize=8)
        ax.set_xlim(-0.6, len(experiments) - 0.4)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} over non-trimmed frames", fontsize=10)
    return fig


def load_figure(mip: np.ndarray, mean_image: np.ndarray, /, *, title: str = "") -> Figure:
    """Native maximum-intensity projection beside the mean downsampled frame.

    Parameters
    ----------
    mip : numpy.ndarray, shape (row, col)
        Maximum over time at native resolution.
    mean_image : numpy.ndarray, shape (y, x)
        Mean over time of the downsampled movie.
    title : str, optional
        Figure title. Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    for ax, img, name in zip(fig.subplots(1, 2), (mip, mean_image),
                             (f"MIP, native {mip.shape[0]} x {mip.shape[1]}",
                              f"mean, downsampled {mean_image.shape[0]} x "
                              f"{mean_image.shape[1]}"), strict=True):
        lo, hi = np.nanpercentile(img, [1, 99.8])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
    fig.suptitle(title)
    return fig


def traces_figure(tr: xr.Dataset, /, *, title: str = "") -> Figure:
    """Raw ROI traces (one line per ROI) and the background trace of one session.

    Parameters
    ----------
    tr : xarray.Dataset
        ``raw`` (roi, time) and ``background`` (time), with a ``time`` coordinate (s).
    title : str, optional
        Figure title. Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_vars(tr, ("raw", "background"), "traces")
    time = np.asarray(tr["time"].values, dtype=float)
    raw = _values(tr["raw"].transpose("roi", "time"))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for k in range(raw.shape[0]):
        ax.plot(time, raw[k], lw=0.8, alpha=0.7, color=COLORS["raw"] if k == 0 else None)
    ax.plot(time, _values(tr["background"]), lw=2, color=COLORS["background"],
            label="background")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean fluorescence (counts)")
    ax.set_title(f"{title}: {_count(raw.shape[0], 'ROI')} (thin) and background", fontsize=10)
    ax.legend(loc="best")
    return fig
