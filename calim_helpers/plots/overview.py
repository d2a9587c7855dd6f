"""Overview figures: several sessions at a glance, and the exploration notebook's views.

Like the other :mod:`calim_helpers.plots` modules, every function takes arrays or
tables and returns a :class:`matplotlib.figure.Figure` built without pyplot.

- :func:`sessions_overview_figure` -- the MIP of each session and its motion;
- :func:`roi_maps_figure` -- the ROI outlines of each session over its MIP;
- :func:`fit_comparison_figure` -- one ROI's stored arPLS fit next to a re-fit;
- :func:`events_figure` -- one normalized trace with its detected events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage

__all__ = ["events_figure", "fit_comparison_figure", "roi_maps_figure",
           "sessions_overview_figure"]

_MAX_PANELS = 12  # sessions shown as thumbnails; more are listed in the title


def _time_label(time_unit: str) -> str:
    return "time (s)" if time_unit == "s" else "frame"


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _show_image(ax, image: np.ndarray, title: str) -> None:
    image = np.asarray(image, dtype=float)
    finite = image[np.isfinite(image)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_titles(names: list[str]) -> tuple[list[str], str]:
    shown = names[:_MAX_PANELS]
    more = f" (first {_MAX_PANELS} of {len(names)} sessions)" if len(names) > _MAX_PANELS else ""
    return shown, more


def sessions_overview_figure(mips: Mapping[str, np.ndarray],
                             shifts: Mapping[str, pd.DataFrame | None], /, *,
                             title: str = "", time_unit: str = "s") -> Figure:
    """Each session's maximum projection, and the motion correction of all sessions.

    Parameters
    ----------
    mips : mapping of str to numpy.ndarray
        Session id -> (row, col) maximum-intensity projection after correction.
    shifts : mapping of str to pandas.DataFrame or None
        Session id -> table with ``time_s``, ``dy``, ``dx`` (native px, the correction
        applied) and ``bad``; None for sessions without motion correction.
    title : str, optional
        Figure title. Default is "".
    time_unit : {"s", "frame"}, optional
        Unit of ``time_s``. Default is "s".
    """
    names, more = _panel_titles(list(mips))
    rows, cols = _grid(max(1, len(names)))
    fig = Figure(figsize=(2.6 * cols, 2.2 * rows + 2.6), layout="constrained")
    gs = fig.add_gridspec(rows + 1, cols, height_ratios=[1.0] * rows + [1.2])
    for k, name in enumerate(names):
        _show_image(fig.add_subplot(gs[k // cols, k % cols]), mips[name], name)
    ax = fig.add_subplot(gs[rows, :])
    plotted = 0
    for name in names:
        table = shifts.get(name)
        if table is None or not len(table):
            continue
        dy = table["dy"].to_numpy(float) - np.median(table["dy"])
        dx = table["dx"].to_numpy(float) - np.median(table["dx"])
        ax.plot(table["time_s"], np.hypot(dy, dx), lw=0.8, label=name)
        plotted += 1
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel("displacement from the\nusual position (px)")
    if plotted:
        ax.legend(fontsize=7, ncols=min(4, plotted), loc="upper left")
    else:
        ax.text(0.5, 0.5, "no motion correction", ha="center", va="center",
                transform=ax.transAxes)
    fig.suptitle((title or "sessions") + ": MIP after correction, and motion" + more,
                 fontsize=10)
    return fig


def roi_maps_figure(maps: Mapping[str, tuple[np.ndarray, np.ndarray]], /, *,
                    title: str = "") -> Figure:
    """ROI outlines of every session over its MIP, with the ROI count.

    Parameters
    ----------
    maps : mapping of str to (numpy.ndarray, numpy.ndarray)
        Session id -> (MIP (row, col), ROI label image of the same shape; 0 outside).
    title : str, optional
        Figure title. Default is "".
    """
    names, more = _panel_titles(list(maps))
    rows, cols = _grid(max(1, len(names)))
    fig = Figure(figsize=(2.8 * cols, 2.4 * rows + 0.4), layout="constrained")
    for k, name in enumerate(names):
        mip, labels = maps[name]
        labels = np.asarray(labels)
        ax = fig.add_subplot(rows, cols, k + 1)
        n = int(np.unique(labels[labels > 0]).size)
        _show_image(ax, mip, f"{name}: {n} ROIs")
        edges = (labels > 0) & (ndimage.grey_erosion(labels, size=3) != labels)
        ax.imshow(np.ma.masked_where(~edges, edges), cmap="autumn", interpolation="nearest",
                  alpha=0.9)
    fig.suptitle((title or "sessions") + ": ROIs over the MIP" + more, fontsize=10)
    return fig


def fit_comparison_figure(time: np.ndarray, signal: np.ndarray,
                          fits: Mapping[str, tuple[np.ndarray, np.ndarray]], /, *,
                          title: str = "", norm_label: str = "normalized",
                          time_unit: str = "s") -> Figure:
    """One ROI's signal with several arPLS baselines, and the normalized results.

    Parameters
    ----------
    time : numpy.ndarray, shape (time,)
    signal : numpy.ndarray, shape (time,)
        ``raw - background`` of the ROI.
    fits : mapping of str to (numpy.ndarray, numpy.ndarray)
        Label (e.g. ``"stored, λ = 10"``) -> (baseline, normalized signal), each (time,).
    title : str, optional
    norm_label : str, optional
        Axis label of the normalized signal. Default is "normalized".
    time_unit : {"s", "frame"}, optional
    """
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(time, signal, color="tab:purple", lw=0.9, label="ROI − background")
    styles = ("--", ":", "-.", (0, (5, 1)))
    for k, (label, (base, norm)) in enumerate(fits.items()):
        top.plot(time, base, color="black" if k == 0 else f"C{k}", ls=styles[k % 4], lw=1.3,
                 label=f"baseline, {label}")
        bottom.plot(time, norm, color="tab:green" if k == 0 else f"C{k}", lw=0.9,
                    alpha=1.0 if k == 0 else 0.8, label=label)
    top.set_ylabel("intensity (counts)")
    top.legend(fontsize=8, loc="upper right")
    bottom.axhline(0, color="0.6", lw=0.6)
    bottom.set_ylabel(norm_label)
    bottom.set_xlabel(_time_label(time_unit))
    bottom.legend(fontsize=8, loc="upper right")
    fig.suptitle(title or "arPLS fits compared", fontsize=10)
    return fig


def events_figure(time: np.ndarray, trace: np.ndarray, events: pd.DataFrame, /, *,
                  level: float | None = None, sigma: float | None = None,
                  threshold: float | None = None, title: str = "",
                  norm_label: str = "normalized", time_unit: str = "s") -> Figure:
    """One normalized trace with its events: onsets, peaks and durations.

    Parameters
    ----------
    time, trace : numpy.ndarray, shape (time,)
    events : pandas.DataFrame
        Rows of :func:`calim_helpers.events.detect_events` (``time_s``, ``peak_time_s``
        or ``peak_frame``, ``peak_dff``, ``duration_s``).
    level, sigma, threshold : float, optional
        Resting level, noise σ and threshold (in σ): drawn as lines when given.
    title, norm_label, time_unit : str, optional
    """
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    time = np.asarray(time, float)
    ax.plot(time, trace, color="tab:green", lw=0.9)
    if level is not None and sigma is not None and np.isfinite(sigma):
        ax.axhline(level, color="0.5", lw=0.7, label="resting level")
        if threshold is not None:
            ax.axhline(level + threshold * sigma, color="tab:red", ls="--", lw=0.8,
                       label=f"threshold ({threshold:g} σ)")
    for row in events.itertuples():
        ax.axvspan(row.time_s, row.time_s + row.duration_s, color="tab:orange", alpha=0.2,
                   lw=0)
    if len(events):
        peak_t = (events["peak_time_s"] if "peak_time_s" in events
                  else time[events["peak_frame"].to_numpy(int)])
        ax.plot(peak_t, events["peak_dff"], "v", color="tab:red", ms=5,
                label=f"{len(events)} events")
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel(norm_label)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=10)
    return fig
