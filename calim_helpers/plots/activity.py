"""Figures of one session's activity: events, synchrony, clusters, feature summary.

- :func:`raster_figure` — event raster, network events, population activity
- :func:`correlation_figure` — ROI × ROI Pearson matrix ordered by cluster
- :func:`cluster_heatmap_figure` — normalized traces ordered by cluster
- :func:`session_summary_figure` — distributions of the per-ROI features of a session

Indices in ``order`` arguments are 0-based positions along the ROI axis (what
:func:`numpy.argsort` or :func:`scipy.cluster.hierarchy.leaves_list` return); ROI
numbers in tables (column ``roi``) start at 1. Times (``time_s``, event onsets and
durations) are in seconds, or in frames with ``time_unit="frame"`` when the frame
interval is unknown.

Examples
--------
>>> import numpy as np, pandas as pd
>>> events = pd.DataFrame({"roi": [1, 2, 2], "time_s": [1.0, 2.0, 6.0],
...                        "duration_s": [2.0, 1.0, 1.0]})
>>> fig = raster_figure(events, 3, np.arange(10.0), title="DEMO · 230404_5")
>>> len(fig.axes), fig.axes[1].get_xlabel()
(2, 'time (s)')
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from calim_helpers.plots._style import (
    COLORS,
    _check_columns,
    _check_time_unit,
    _count,
    _float_array,
    _half_step,
    _join_title,
    _metric_label,
    _strip_box,
    _tick_step,
    _time_extent,
    _time_label,
)

__all__ = ["cluster_heatmap_figure", "correlation_figure", "raster_figure",
           "session_summary_figure"]

_SESSION_METRICS = ("rate_per_min", "mean_amplitude", "mean_duration_s", "participation",
                    "snr")
_NETWORK_COLOR = "tab:orange"


# --------------------------------------------------------------------------- helpers


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
    time_unit: str = "s",
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
        (onset); ``duration_s`` is used if present. Both in ``time_unit``.
    n_roi : int
        Number of ROIs of the session (ROIs without events get an empty row).
    time_s : array_like, shape (time,)
        Frame times of the traces the events were detected on, in ``time_unit``.
    network : pandas.DataFrame, optional
        One row per network event with its start (``start_s``, ``onset_s`` or
        ``time_s``) and end (``end_s``, or start + ``duration_s``), in
        ``time_unit``. Default is None (none shaded).
    order : sequence of int, optional
        Row order: a permutation of the ROI positions ``0 .. n_roi - 1`` (e.g. by
        cluster). Default is None (ROI number order).
    roi_labels : sequence of str, optional
        ``n_roi`` tick labels in ROI number order (e.g. ROI names). Default is None
        (the ROI numbers).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.
    time_unit : {"s", "frame"}, optional
        Unit of the times: ``"s"``, or ``"frame"`` when the frame interval is
        unknown (the axis is then labelled "frame"). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis: the raster and the population activity.

    Raises
    ------
    ValueError
        If ``n_roi < 1``, a column is missing, an event's ROI is not in
        ``1 .. n_roi``, ``order`` is not a permutation or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
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
    bx.set_xlabel(_time_label(time_unit))
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
    time_unit: str = "s",
) -> Figure:
    """Heatmap of the normalized traces (ROI × time) with the ROIs ordered by cluster.

    White lines separate the clusters, named with their sizes on the right; NaN
    (trimmed frames) is grey.

    Parameters
    ----------
    norm : numpy.ndarray or xarray.DataArray, shape (roi, time)
        Normalized traces.
    time_s : array_like, shape (time,)
        Frame times, in ``time_unit``.
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
    time_unit : {"s", "frame"}, optional
        Unit of ``time_s`` (see :func:`raster_figure`). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        The heatmap axes and its colour bar.

    Raises
    ------
    ValueError
        If the shapes do not match, ``order`` is not a permutation,
        ``vmin >= vmax`` or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
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
    ax.set_xlabel(_time_label(time_unit))
    fig.colorbar(im, ax=ax, extend="both", shrink=0.9, label=label, pad=0.02)
    ax.set_title(_join_title(title, f"traces by cluster: {_count(n, 'ROI')} in "
                                    f"{_count(len(np.unique(cl)), 'cluster')}"), fontsize=11)
    return fig


# ---------------------------------------------------------------- feature summaries


def session_summary_figure(features: pd.DataFrame, /, *, amplitude_label: str = "ΔF/F",
                           title: str = "", time_unit: str = "s") -> Figure:
    """Distributions of the per-ROI features of one session.

    One panel per feature — event rate, mean event amplitude, mean event
    duration, participation in network events, SNR — each a box plot with the
    ROIs as points (ROIs whose arPLS fit failed marked with a red cross). ROIs with
    a missing value (e.g. no events, so no amplitude) are left out of that panel;
    the panel says how many are shown.

    Parameters
    ----------
    features : pandas.DataFrame
        The feature table rows of one session (one row per ROI), with columns
        ``rate_per_min``, ``mean_amplitude``, ``mean_duration_s``, ``participation``
        and ``snr``; ``experiment``, ``date``, ``session`` (for the title),
        ``n_events`` and ``fit_status`` (or, for older tables, ``converged``) are used
        if present: ROIs whose fit failed are marked.
    amplitude_label : str, optional
        Unit of the amplitudes (the normalization). Default is ``"ΔF/F"``.
    title : str, optional
        Figure title. Default is ``""``: experiment · date · session from the table.
    time_unit : {"s", "frame"}, optional
        Time unit the features were computed in: ``"s"`` (rates per minute,
        durations in s) or ``"frame"`` when the frame interval is unknown (the
        same columns then hold events per 60 frames and durations in frames, and
        the axes say so). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Five axes, one per feature.

    Raises
    ------
    ValueError
        If a column is missing, the rows come from more than one session or
        ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
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
    if "fit_status" in features.columns:  # only a failed fit is flagged, not a stable one
        failed = features["fit_status"].to_numpy(dtype=str) == "failed"
    elif "converged" in features.columns:
        failed = ~features["converged"].to_numpy(dtype=bool)
    else:
        failed = None
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
        name, unit = _metric_label(metric, amplitude_label, time_unit)
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
