"""Frequency content, network synchrony and correlation of a session's ROIs (SPEC §4).

- :func:`power_spectra`: Welch power spectral density of each normalized trace.
- :func:`activity_matrix`: the events of :mod:`calim_helpers.events` as a boolean
  ``(roi, time)`` raster.
- :func:`network_events`: time bins in which more ROIs are active together than
  chance allows, with a circular-shift null model, and each ROI's participation.
- :func:`correlation_matrix` and :func:`cluster_rois`: Pearson correlation between
  ROIs and a hierarchical clustering on ``1 - r`` that orders them for heatmaps.
- :func:`session_features`: the per-ROI feature table (``features.csv``).

All functions are pure: arrays, DataArrays and DataFrames in and out.

Examples
--------
Three ROIs active together at frame 5 (and ROI 1 alone at frame 12):

>>> import numpy as np, pandas as pd
>>> events = pd.DataFrame({"roi": [1, 2, 3, 1], "frame": [5, 5, 5, 12],
...                        "end_frame": [6, 7, 6, 13]})
>>> act = activity_matrix(events, 3, 20)
>>> act.sum(axis=1).tolist()
[2, 2, 1]
>>> net = network_events(act, n_shuffles=200, alpha=0.05)
>>> net.events[["start_frame", "stop_frame", "n_active"]].values.tolist()
[[5, 6, 3]]
>>> net.participation.tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers.errors import CalimWarning
from calim_helpers.events import event_rates
from calim_helpers.noise import noise_sigma

__all__ = [
    "FEATURE_COLUMNS",
    "NETWORK_COLUMNS",
    "NetworkEvents",
    "activity_matrix",
    "cluster_rois",
    "correlation_matrix",
    "network_events",
    "power_spectra",
    "session_features",
]

# Columns of NetworkEvents.events, in order, with their dtypes.
NETWORK_COLUMNS: dict[str, str] = {
    "start_frame": "int64",
    "stop_frame": "int64",
    "n_bins": "int64",
    "n_active": "int64",
    "fraction": "float64",
    "max_bin_fraction": "float64",
}

# Columns of session_features(), in order, with their dtypes.
FEATURE_COLUMNS: dict[str, str] = {
    "experiment": "object",
    "date": "object",
    "session": "object",
    "roi": "int64",
    "roi_name": "object",
    "n_events": "int64",
    "rate_per_min": "float64",
    "mean_amplitude": "float64",
    "median_amplitude": "float64",
    "mean_duration_s": "float64",
    "snr": "float64",
    "noise_sigma": "float64",
    "participation": "float64",
    "mean_corr": "float64",
    "cluster": "int64",
    "converged": "boolean",
    "shift_rms_px": "float64",
}

_LINKAGES = ("single", "complete", "average", "weighted")
# elements per batch of shuffles: their int64 indices take 16 MB (2**24 took 134 MB, the
# peak of a full-size session's analysis step)
_SHUFFLE_ELEMENTS = 2**21


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _roi_time(data: Any, name: str) -> tuple[np.ndarray, xr.DataArray | None]:
    """``(roi, time)`` float64 values of an array or DataArray, and the DataArray."""
    if isinstance(data, xr.DataArray):
        if set(data.dims) != {"roi", "time"}:
            raise ValueError(f"{name} must have dims ('roi', 'time'), got {data.dims}")
        data = data.transpose("roi", "time")
        values = data.values
    else:
        values = np.asarray(data)
        if values.ndim == 1:
            values = values[np.newaxis, :]
        if values.ndim != 2:
            raise ValueError(f"{name} must be (roi, time), got shape {values.shape}")
        data = None
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    return values.astype(np.float64), data


def _roi_coords(da: xr.DataArray | None, n_roi: int) -> dict[str, Any]:
    if da is None:
        return {"roi": np.arange(1, n_roi + 1)}
    coords: dict[str, Any] = {}
    for name, coord in da.coords.items():
        if coord.dims == ("roi",):
            coords[name] = coord
    coords.setdefault("roi", np.arange(1, n_roi + 1))
    return coords


# ------------------------------------------------------------------ spectra


def power_spectra(
    norm: Any,
    /,
    *,
    frame_interval_s: float | None = None,
    nperseg: int = 64,
) -> xr.DataArray:
    """Welch power spectral density of each ROI's normalized trace.

    Each trace loses its leading NaN frames (the trimmed start); a NaN left
    inside it (a guarded frame) is replaced by the trace's mean, which
    Welch's per-segment mean removal turns into 0, with a warning. The
    spectrum is :func:`scipy.signal.welch` with a Hann window, 50 % overlap,
    constant detrending and density scaling (one-sided).

    Parameters
    ----------
    norm : array_like or xarray.DataArray, shape (roi, time) or (time,)
        Normalized traces. A DataArray needs dims ``roi`` and ``time``; its
        ``roi`` coordinates are kept.
    frame_interval_s : float, keyword-only
        Time between frames, seconds, > 0. Default is None: the median step of
        the ``time`` coordinate of a DataArray (required for a plain array).
    nperseg : int, keyword-only
        Welch segment length, frames, >= 2; shortened to the shortest trace.
        Default is 64 (frequency resolution ``1 / (64 * dt)``: 0.016 Hz at 1 s
        frames).

    Returns
    -------
    xarray.DataArray, dims (roi, frequency)
        Power spectral density, (units of ``norm``)² / Hz; ``frequency`` in Hz
        from 0 to the Nyquist frequency ``1 / (2 dt)``. All NaN for a ROI with
        fewer than 2 finite frames. ``attrs``: ``frame_interval_s``,
        ``nperseg``, ``units``.

    Raises
    ------
    ValueError
        If ``norm`` is not (roi, time), the frame interval is unknown or not
        > 0, or ``nperseg`` < 2.

    Warns
    -----
    CalimWarning
        If NaN frames remain inside a trace after its leading NaN frames.
    """
    from scipy.signal import welch  # here: scipy.signal takes 0.6 s to import

    values, da = _roi_time(norm, "norm")
    nperseg = _positive_int("nperseg", nperseg, low=2)
    if frame_interval_s is None:
        if da is None or "time" not in da.coords or da.sizes["time"] < 2:
            raise ValueError("frame_interval_s must be given for an array without a "
                             "'time' coordinate")
        frame_interval_s = float(np.median(np.diff(da["time"].values.astype(np.float64))))
    if isinstance(frame_interval_s, bool) or not (float(frame_interval_s) > 0
                                                  and math.isfinite(frame_interval_s)):
        raise ValueError(f"frame_interval_s must be > 0, got {frame_interval_s!r}")
    fs = 1.0 / float(frame_interval_s)

    traces, filled = [], []
    for i, row in enumerate(values):
        finite = np.isfinite(row)
        if finite.sum() < 2:
            traces.append(None)
            continue
        row = row[int(np.argmax(finite)):]
        inside = ~np.isfinite(row)
        if inside.any():
            filled.append(i)
            row = np.where(inside, np.nanmean(row), row)
        traces.append(row)
    if filled:
        warnings.warn(f"power_spectra: NaN frames inside {len(filled)} trace(s) set to the "
                      "trace mean", CalimWarning, stacklevel=2)
    lengths = [t.size for t in traces if t is not None]
    seg = min([nperseg, *lengths])
    freq = np.fft.rfftfreq(seg, d=float(frame_interval_s))
    psd = np.full((values.shape[0], freq.size), np.nan)
    for i, row in enumerate(traces):
        if row is not None:
            _, psd[i] = welch(row, fs=fs, nperseg=seg, detrend="constant")
    out = xr.DataArray(psd, dims=("roi", "frequency"),
                       coords={**_roi_coords(da, values.shape[0]), "frequency": freq})
    out["frequency"].attrs["units"] = "Hz"
    out.attrs = {"frame_interval_s": float(frame_interval_s), "nperseg": int(seg),
                 "units": "(norm units)^2 / Hz"}
    out.name = "psd"
    return out


# ------------------------------------------------------------------ network events


def activity_matrix(events: pd.DataFrame, n_roi: int, n_time: int, /, *,
                    rois: Any = None) -> np.ndarray:
    """Boolean raster of events: True on every frame of every event.

    An event covers its frames from the onset (column ``frame``, or
    ``onset_frame``) up to, not including, ``end_frame``: the frames
    :func:`calim_helpers.events.detect_events` counts in ``duration_s``.

    Parameters
    ----------
    events : pandas.DataFrame
        Events with columns ``roi``, ``frame`` (or ``onset_frame``) and
        ``end_frame``; frames are positions ``0 .. n_time - 1`` along time.
    n_roi : int
        Number of rows (ROIs), >= 1.
    n_time : int
        Number of frames, >= 1.
    rois : sequence, keyword-only
        The ``roi`` label of each row. Default is None: rows are ROIs
        ``1 .. n_roi`` (row ``roi - 1``), as the pipeline numbers them.

    Returns
    -------
    numpy.ndarray of bool, shape (n_roi, n_time)

    Raises
    ------
    ValueError
        If a column is missing or an event's ROI or frames fall outside the raster.
    """
    n_roi = _positive_int("n_roi", n_roi)
    n_time = _positive_int("n_time", n_time)
    onset_col = "frame" if "frame" in events.columns else "onset_frame"
    missing = {"roi", onset_col, "end_frame"} - set(events.columns)
    if missing:
        raise ValueError(f"events must have the columns roi, frame (or onset_frame) and "
                         f"end_frame; missing {sorted(missing)}")
    labels = np.arange(1, n_roi + 1) if rois is None else np.asarray(rois)
    if labels.shape != (n_roi,):
        raise ValueError(f"rois must have n_roi={n_roi} labels, got shape {labels.shape}")
    lookup = {lab.item() if hasattr(lab, "item") else lab: i for i, lab in enumerate(labels)}
    out = np.zeros((n_roi, n_time), dtype=bool)
    for roi, start, stop in zip(events["roi"].to_numpy(), events[onset_col].to_numpy(),
                                events["end_frame"].to_numpy(), strict=True):
        key = roi.item() if hasattr(roi, "item") else roi
        if key not in lookup:
            raise ValueError(f"events: roi {key!r} is not among the {n_roi} ROIs")
        if not 0 <= start < stop <= n_time:
            raise ValueError(f"events: frames {int(start)}..{int(stop)} of roi {key!r} fall "
                             f"outside 0..{n_time}")
        out[lookup[key], int(start):int(stop)] = True
    return out


class NetworkEvents(NamedTuple):
    """Result of :func:`network_events`.

    Attributes
    ----------
    events : pandas.DataFrame
        One row per network event (a run of consecutive supra-threshold bins):
        ``start_frame``, ``stop_frame`` (exclusive), ``n_bins``, ``n_active``
        (ROIs active in any of its frames), ``fraction`` (``n_active / n_roi``),
        ``max_bin_fraction`` (largest co-active fraction of its bins).
    threshold : float
        Co-active fraction a bin must exceed: the ``1 - alpha`` quantile of
        the shuffled sessions' largest bin fraction.
    participation : numpy.ndarray, shape (roi,)
        Fraction of the network events each ROI is active in (NaN when there
        is no network event).
    coactivity : numpy.ndarray, shape (bins,)
        Fraction of ROIs active in each bin of the valid frames.
    bin_start : numpy.ndarray, shape (bins,)
        First frame of each bin.
    null_max : numpy.ndarray, shape (n_shuffles,)
        Largest bin fraction of each shuffled session.
    """

    events: pd.DataFrame
    threshold: float
    participation: np.ndarray
    coactivity: np.ndarray
    bin_start: np.ndarray
    null_max: np.ndarray


def _bin_any(active: np.ndarray, bin_frames: int) -> np.ndarray:
    """Any-over-bins along the last axis; a trailing partial bin is kept."""
    n = active.shape[-1]
    n_bins = -(-n // bin_frames)
    pad = n_bins * bin_frames - n
    if pad:
        active = np.concatenate([active, np.zeros((*active.shape[:-1], pad), dtype=bool)],
                                axis=-1)
    return active.reshape(*active.shape[:-1], n_bins, bin_frames).any(axis=-1)


def network_events(
    activity: Any,
    /,
    *,
    bin_frames: int = 1,
    n_shuffles: int = 1000,
    alpha: float = 0.01,
    min_active: int = 2,
    valid: Any = None,
    seed: int = 0,
) -> NetworkEvents:
    """Find synchronous network events: bins where more ROIs are co-active than chance.

    A ROI is active in a bin when it is active in any of the bin's frames
    (bins of ``bin_frames`` valid frames; a trailing partial bin is kept).
    The null model keeps each ROI's own activity and destroys only its timing
    relative to the others: every ROI's row is shifted circularly (over the
    valid frames) by its own random offset, ``n_shuffles`` times. The
    threshold is the ``1 - alpha`` quantile of the **largest** co-active
    fraction over all bins of each shuffled session, so for independent ROIs
    the chance that a session shows any network event is about ``alpha`` (a
    family-wise rate over the session, not a per-bin rate; somewhat below
    ``alpha`` in practice, as the fraction is discrete and must exceed the
    threshold). A bin is
    supra-threshold when its fraction exceeds the threshold and at least
    ``min_active`` ROIs are active; consecutive supra-threshold bins make one
    network event.

    Parameters
    ----------
    activity : array_like of bool or xarray.DataArray, shape (roi, time)
        Activity raster, e.g. from :func:`activity_matrix`.
    bin_frames : int, keyword-only
        Frames per co-activity bin, >= 1. Default is 1.
    n_shuffles : int, keyword-only
        Number of shuffled sessions, >= 1. Default is 1000.
    alpha : float, keyword-only
        Family-wise false-positive rate per session, in (0, 1). Default is 0.01.
    min_active : int, keyword-only
        Fewest co-active ROIs a network event needs, >= 1. Default is 2.
    valid : array_like of bool, shape (time,), keyword-only
        Frames to analyse (e.g. the non-trimmed ones,
        ``np.isfinite(norm).any(axis=0)``). Default is None (all frames).
    seed : int, keyword-only
        Seed of the shuffles (``np.random.default_rng(seed)``). Default is 0.

    Returns
    -------
    NetworkEvents
        ``events`` (DataFrame, see ``NETWORK_COLUMNS``; frames are positions
        in ``activity``), ``threshold``, ``participation`` (roi,),
        ``coactivity`` and ``bin_start`` (bins,), ``null_max`` (n_shuffles,).

    Raises
    ------
    ValueError
        For a raster that is not 2-D boolean-like, a ``valid`` mask of the
        wrong length or without valid frames, or a parameter out of range.
    """
    values, _ = _roi_time(activity, "activity")
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("activity must be boolean (or 0/1)")
    act = values.astype(bool)
    n_roi, n_time = act.shape
    bin_frames = _positive_int("bin_frames", bin_frames)
    n_shuffles = _positive_int("n_shuffles", n_shuffles)
    min_active = _positive_int("min_active", min_active)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if valid is None:
        frames = np.arange(n_time)
    else:
        mask = np.asarray(valid, dtype=bool)
        if mask.shape != (n_time,):
            raise ValueError(f"valid must have shape ({n_time},), got {mask.shape}")
        frames = np.flatnonzero(mask)
    if frames.size == 0:
        raise ValueError("valid must select at least one frame")
    act = act[:, frames]
    n_valid = frames.size

    binned = _bin_any(act, bin_frames)
    coactivity = binned.sum(axis=0) / n_roi
    bin_start = frames[np.arange(binned.shape[1]) * bin_frames]

    rng = np.random.default_rng(seed)
    shifts = rng.integers(0, n_valid, size=(n_shuffles, n_roi))
    null_max = np.empty(n_shuffles)
    batch = max(1, _SHUFFLE_ELEMENTS // (n_roi * n_valid))
    t = np.arange(n_valid)
    rows = np.arange(n_roi)[None, :, None]
    for b0 in range(0, n_shuffles, batch):
        sh = shifts[b0:b0 + batch]
        idx = (t[None, None, :] - sh[:, :, None]) % n_valid
        shuffled = _bin_any(act[rows, idx], bin_frames)
        null_max[b0:b0 + batch] = shuffled.sum(axis=1).max(axis=1) / n_roi
    threshold = float(np.quantile(null_max, 1.0 - alpha))

    supra = (coactivity > threshold) & (binned.sum(axis=0) >= min_active)
    d = np.diff(np.concatenate([[0], supra.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(d == 1), np.flatnonzero(d == -1)  # bin indices
    rows_out, member = [], np.zeros((n_roi, starts.size), dtype=bool)
    for k, (b0, b1) in enumerate(zip(starts, stops, strict=True)):
        f0 = b0 * bin_frames
        f1 = min(b1 * bin_frames, n_valid)
        member[:, k] = act[:, f0:f1].any(axis=1)
        rows_out.append({
            "start_frame": int(frames[f0]), "stop_frame": int(frames[f1 - 1]) + 1,
            "n_bins": int(b1 - b0), "n_active": int(member[:, k].sum()),
            "fraction": float(member[:, k].sum() / n_roi),
            "max_bin_fraction": float(coactivity[b0:b1].max()),
        })
    table = (pd.DataFrame(rows_out) if rows_out
             else pd.DataFrame(columns=list(NETWORK_COLUMNS))).astype(NETWORK_COLUMNS)
    table.attrs = {"threshold": threshold, "alpha": float(alpha), "n_shuffles": n_shuffles,
                   "bin_frames": bin_frames, "min_active": min_active, "seed": seed}
    participation = (member.mean(axis=1) if starts.size
                     else np.full(n_roi, np.nan))
    return NetworkEvents(table, threshold, participation, coactivity, bin_start, null_max)


# ------------------------------------------------------------------ correlation


def correlation_matrix(norm: Any, /) -> Any:
    """Pearson correlation between every pair of ROIs.

    Computed over the frames where every ROI with data is finite (the
    trimmed start and any guarded frame are left out); a ROI that is all NaN
    or constant there has NaN correlations (1 on the diagonal otherwise).

    Parameters
    ----------
    norm : array_like or xarray.DataArray, shape (roi, time)
        Normalized traces.

    Returns
    -------
    numpy.ndarray or xarray.DataArray, shape (roi, roi)
        Symmetric. A DataArray input gives dims ``("roi", "roi_other")`` with
        the ``roi`` coordinates on the first and the ROI labels on both.

    Raises
    ------
    ValueError
        If ``norm`` is not (roi, time).

    Warns
    -----
    CalimWarning
        If some ROI is all NaN or constant, or fewer than 3 common frames remain.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0, 2.0, 3.0], [np.nan, 2.0, 4.0, 7.0], [3.0, 2.0, 1.0, 0.0]])
    >>> np.round(correlation_matrix(x), 3).tolist()
    [[1.0, 0.993, -1.0], [0.993, 1.0, -0.993], [-1.0, -0.993, 1.0]]
    """
    values, da = _roi_time(norm, "norm")
    n_roi = values.shape[0]
    finite = np.isfinite(values)
    has_data = finite.any(axis=1)
    common = finite[has_data].all(axis=0) if has_data.any() else np.zeros(values.shape[1], bool)
    x = values[:, common]
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = x.std(axis=1) if x.shape[1] else np.zeros(n_roi)
    usable = has_data & (sd > 0) & (x.shape[1] >= 2)
    corr = np.full((n_roi, n_roi), np.nan)
    if usable.any():
        sub = np.corrcoef(x[usable]) if usable.sum() > 1 else np.ones((1, 1))
        corr[np.ix_(usable, usable)] = sub
        corr[usable, usable] = 1.0
    if not usable.all() or x.shape[1] < 3:
        warnings.warn(f"correlation_matrix: {int((~usable).sum())} ROI(s) all NaN or constant "
                      f"over the {x.shape[1]} common frame(s); their correlations are NaN",
                      CalimWarning, stacklevel=2)
    if da is None:
        return corr
    coords = _roi_coords(da, n_roi)
    coords["roi_other"] = np.asarray(coords["roi"].values if hasattr(coords["roi"], "values")
                                     else coords["roi"])
    out = xr.DataArray(corr, dims=("roi", "roi_other"), coords=coords, name="corr")
    out.attrs = {"n_frames": int(common.sum())}
    return out


def cluster_rois(
    corr: Any,
    /,
    *,
    method: str = "average",
    threshold: float = 0.5,
    n_clusters: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical clustering of ROIs on the distance ``1 - r``.

    :func:`scipy.cluster.hierarchy.linkage` on ``1 - corr`` (NaN correlations
    count as 0, distance 1), cut either at a distance (``threshold``) or into
    ``n_clusters`` clusters. With average linkage and ``threshold = 0.5``, a
    cluster's members correlate on average at r >= 0.5.

    Parameters
    ----------
    corr : array_like or xarray.DataArray, shape (roi, roi)
        Symmetric correlation matrix (:func:`correlation_matrix`).
    method : {"average", "complete", "single", "weighted"}, keyword-only
        Linkage (those valid for an arbitrary dissimilarity). Default is
        ``"average"``.
    threshold : float, keyword-only
        Cut height, distance ``1 - r`` in [0, 2]; ignored when ``n_clusters``
        is given. Default is 0.5.
    n_clusters : int, keyword-only
        Number of clusters wanted (scipy's ``maxclust``), >= 1. Default is None.

    Returns
    -------
    labels : numpy.ndarray of int64, shape (roi,)
        Cluster of each ROI, numbered 1, 2, ... in the order they appear
        along ``order``.
    order : numpy.ndarray of int64, shape (roi,)
        Dendrogram leaf order: ``corr[np.ix_(order, order)]`` shows the
        clusters as blocks on the diagonal.

    Raises
    ------
    ValueError
        If ``corr`` is not square, or a parameter is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1, .1, .9, .1], [.1, 1, 0, .8], [.9, 0, 1, .1], [.1, .8, .1, 1]])
    >>> labels, order = cluster_rois(r)
    >>> labels.tolist(), order.tolist()
    ([1, 2, 1, 2], [0, 2, 1, 3])
    """
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    c = np.asarray(corr.values if isinstance(corr, xr.DataArray) else corr, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"corr must be a square (roi, roi) matrix, got shape {c.shape}")
    if method not in _LINKAGES:
        raise ValueError(f"method must be one of {_LINKAGES}, got {method!r}")
    if n_clusters is not None:
        n_clusters = _positive_int("n_clusters", n_clusters)
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0 <= threshold <= 2:
        raise ValueError(f"threshold must be in [0, 2], got {threshold!r}")
    n = c.shape[0]
    if n < 2:
        return np.ones(n, dtype=np.int64), np.arange(n, dtype=np.int64)
    dist = 1.0 - np.where(np.isfinite(c), c, 0.0)
    dist = np.clip((dist + dist.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method=method)
    if n_clusters is not None:
        raw = fcluster(z, t=n_clusters, criterion="maxclust")
    else:
        raw = fcluster(z, t=float(threshold), criterion="distance")
    order = leaves_list(z).astype(np.int64)
    relabel: dict[int, int] = {}
    for leaf in order:
        relabel.setdefault(int(raw[leaf]), len(relabel) + 1)
    labels = np.array([relabel[int(v)] for v in raw], dtype=np.int64)
    return labels, order


# ------------------------------------------------------------------ features


def session_features(
    ds: xr.Dataset,
    events: pd.DataFrame,
    network: NetworkEvents,
    /,
    *,
    variable: str = "norm",
    cluster_method: str = "average",
    cluster_threshold: float = 0.5,
    corr: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-ROI feature table of one session (rows of ``features.csv``).

    Parameters
    ----------
    ds : xarray.Dataset
        The session result (``variable`` with dims roi, time; ``time``
        coordinate; optional ``converged`` (roi,); attrs ``experiment``,
        ``date``, ``session`` and optionally ``shift_rms_px``).
    events : pandas.DataFrame
        :func:`calim_helpers.events.detect_events_dataset` of ``ds`` (rows of
        other sessions are ignored).
    network : NetworkEvents
        :func:`network_events` of this session's activity raster (one
        participation value per ROI of ``ds``, in its order).
    variable : str, keyword-only
        Variable the events were detected on. Default is ``"norm"``.
    cluster_method : str, keyword-only
        Linkage of :func:`cluster_rois`. Default is ``"average"``.
    cluster_threshold : float, keyword-only
        Cut of :func:`cluster_rois`, distance ``1 - r``. Default is 0.5.
    corr : numpy.ndarray, shape (roi, roi), keyword-only
        :func:`correlation_matrix` of ``ds[variable]`` when the caller has it already.
        Default is None (computed here).
    clusters : numpy.ndarray, shape (roi,), keyword-only
        :func:`cluster_rois` labels of ``corr`` when the caller has them already.
        Default is None (computed here with ``cluster_method`` and ``cluster_threshold``).

    Returns
    -------
    pandas.DataFrame
        One row per ROI, columns (see ``FEATURE_COLUMNS``): ``experiment``,
        ``date``, ``session``, ``roi``, ``roi_name``, ``n_events``,
        ``rate_per_min`` (over the ROI's finite frames), ``mean_amplitude``,
        ``median_amplitude``, ``mean_duration_s`` (NaN without events),
        ``snr`` (median event SNR, each event's amplitude over the trace's
        noise sigma; NaN without events), ``noise_sigma``
        (:func:`calim_helpers.noise.noise_sigma` of the trace, the sigma that
        event detection and its SNR use),
        ``participation`` (fraction of the network events the ROI is active
        in; NaN without network events), ``mean_corr`` (mean Pearson r with
        the other ROIs), ``cluster`` (:func:`cluster_rois` label),
        ``converged`` (arPLS fit of the signal; NA when ``ds`` has no
        ``converged``), ``shift_rms_px`` (per-ROI variable or session attr
        ``shift_rms_px`` of the motion correction; NaN when absent).

    Raises
    ------
    ValueError
        If ``network`` does not have one participation value per ROI, or
        ``ds``/``events`` lack what :func:`calim_helpers.events.event_rates`
        needs.
    """
    rates = event_rates(events, ds, variable=variable)
    n_roi = ds.sizes["roi"]
    participation = np.asarray(network.participation, dtype=np.float64)
    if participation.shape != (n_roi,):
        raise ValueError(f"network must have one participation value per ROI ({n_roi}), "
                         f"got shape {participation.shape}")
    traces = ds[variable].transpose("roi", "time")
    if corr is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)  # NaN rows are reported as NaN
            corr = correlation_matrix(traces.values)
    if n_roi > 1:
        off = corr.copy()
        np.fill_diagonal(off, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            mean_corr = np.nanmean(off, axis=1)
    else:
        mean_corr = np.full(n_roi, np.nan)
    if clusters is None:
        clusters, _ = cluster_rois(corr, method=cluster_method, threshold=cluster_threshold)
    labels = np.asarray(clusters)
    sigma = np.asarray(noise_sigma(traces.values.astype(np.float64)).sigma)
    if "converged" in ds:
        converged = pd.array(ds["converged"].values.astype(bool), dtype="boolean")
    else:
        converged = pd.array([pd.NA] * n_roi, dtype="boolean")
    if "shift_rms_px" in ds and ds["shift_rms_px"].dims == ("roi",):
        shift = ds["shift_rms_px"].values.astype(np.float64)
    else:
        value = ds.attrs.get("shift_rms_px")  # 0.0 is a measured "no motion", not NaN
        shift = np.full(n_roi, np.nan if value is None else float(value))
    table = pd.DataFrame({
        "experiment": rates["experiment"], "date": rates["date"],
        "session": rates["session"], "roi": rates["roi"], "roi_name": rates["roi_name"],
        "n_events": rates["n_events"], "rate_per_min": rates["rate_per_min"],
        "mean_amplitude": rates["mean_amplitude"],
        "median_amplitude": rates["median_amplitude"],
        "mean_duration_s": rates["mean_duration_s"], "snr": rates["median_snr"],
        "noise_sigma": sigma, "participation": participation, "mean_corr": mean_corr,
        "cluster": labels, "converged": converged, "shift_rms_px": shift,
    })
    return table.astype(FEATURE_COLUMNS)
