"""Ground-truth helpers and small scorers for synthetic sessions (pure functions).

What a benchmark needs beside the raw truth arrays of ``truth.npz``:

- :func:`polygon_mask` — a Fiji polygon rasterized the ImageJ way (pixel centre inside);
- :func:`true_masks` — binary true soma masks from footprints (half-maximum, holes
  filled), optionally block-averaged to a downsampled grid first;
- :func:`mask_iou` — intersection over union of every pair of two mask sets;
- :func:`match_masks` — one-to-one matching of detected to true masks at IoU >= 0.5,
  with precision, recall and F1 (the detection score);
- :func:`true_transients` — the list of true calcium transients of each neuron
  (onset frame, peak frame, amplitude), on the native or a binned time base;
- :func:`session_transients` — the same from a session's truth (``truth.npz`` or
  ``session_truth``), with each transient's signal-to-noise ratio on that time base;
- :func:`match_events` — F1 of detected against true event frames within a tolerance;
- :func:`trace_correlation` — row-wise Pearson correlation of estimated and true traces.

Conventions as in :mod:`calim_helpers.demo`: frame ``t`` covers ``[t * dt, (t + 1) * dt)``;
Fiji vertices are ``(x, y)`` with pixel ``(row, col)`` centred at ``(col + .5, row + .5)``.

Examples
--------
>>> import numpy as np
>>> from calim_helpers.synthetic.truth import match_masks, polygon_mask, true_transients
>>> square = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 4.0], [1.0, 4.0]])
>>> polygon_mask(square, (6, 6)).astype(int)
array([[0, 0, 0, 0, 0, 0],
       [0, 1, 1, 1, 0, 0],
       [0, 1, 1, 1, 0, 0],
       [0, 1, 1, 1, 0, 0],
       [0, 0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0, 0]])
>>> a = np.zeros((2, 6, 6), bool); a[0, :3, :3] = a[1, 3:, 3:] = True
>>> score = match_masks(a[:1], a)
>>> score["precision"], score["recall"]
(1.0, 0.5)
>>> dff = np.zeros((1, 10)); dff[0, 3:] = [0.2, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02]
>>> tr = true_transients(dff, np.array([0.31]), np.array([0]), frame_interval_s=0.1)
>>> int(tr["onset_frame"][0]), int(tr["peak_frame"][0]), float(tr["amplitude"][0])
(3, 4, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = [
    "mask_iou",
    "match_events",
    "match_masks",
    "polygon_mask",
    "session_transients",
    "trace_correlation",
    "true_masks",
    "true_transients",
]


def polygon_mask(xy: np.ndarray, frame_shape: Sequence[int], /) -> np.ndarray:
    """Pixels of a frame whose centre lies inside a Fiji polygon.

    Parameters
    ----------
    xy : ndarray, shape (k, 2)
        Vertices ``(x, y)`` in Fiji coordinates.
    frame_shape : tuple of int
        ``(y, x)`` frame size.

    Returns
    -------
    ndarray, shape (y, x), bool
        True where the pixel centre ``(col + .5, row + .5)`` is inside.
    """
    from matplotlib.path import Path as MplPath

    xy = np.asarray(xy, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] < 3:
        raise ValueError(f"xy must have shape (k >= 3, 2), got {xy.shape}")
    h, w = (int(v) for v in frame_shape)
    out = np.zeros((h, w), dtype=bool)
    c0, r0 = (max(int(np.floor(v)) - 1, 0) for v in xy.min(axis=0))
    c1, r1 = int(np.ceil(xy[:, 0].max())) + 1, int(np.ceil(xy[:, 1].max())) + 1
    c1, r1 = min(c1, w), min(r1, h)
    if c1 <= c0 or r1 <= r0:
        return out
    rows, cols = np.mgrid[r0:r1, c0:c1]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    out[r0:r1, c0:c1] = MplPath(xy).contains_points(centres).reshape(rows.shape)
    return out


def true_masks(
    footprints: np.ndarray, /, *, level: float = 0.5, bin_yx: Sequence[int] = (1, 1)
) -> np.ndarray:
    """Binary true soma masks: footprint above ``level`` of its peak, holes filled.

    Parameters
    ----------
    footprints : ndarray, shape (n, y, x)
        Footprints (``truth.npz["footprints"]``).
    level : float, optional
        Fraction of each footprint's peak, in (0, 1). Default is 0.5.
    bin_yx : tuple of int, optional
        Block-average the footprints by ``(by, bx)`` pixels first (trailing partial
        blocks dropped), to score on the pipeline's downsampled grid. Default is (1, 1).

    Returns
    -------
    ndarray, shape (n, y // by, x // bx), bool
        One mask per footprint (empty for an all-zero footprint).
    """
    fp = np.asarray(footprints)
    if fp.ndim != 3:
        raise ValueError(f"footprints must have shape (n, y, x), got {fp.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    by, bx = (int(v) for v in bin_yx)
    if by < 1 or bx < 1:
        raise ValueError(f"bin_yx must be positive ints, got {bin_yx!r}")
    n, h, w = fp.shape
    h2, w2 = h // by, w // bx
    out = np.zeros((n, h2, w2), dtype=bool)
    for i in range(n):
        image = fp[i, : h2 * by, : w2 * bx].astype(float).reshape(h2, by, w2, bx).mean(axis=(1, 3))
        peak = image.max(initial=0.0)
        if peak > 0:
            above = image > level * peak
            rows, cols = np.nonzero(above)
            # fill holes in the bounding box with a 1-pixel empty margin (same result)
            r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, h2)
            c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, w2)
            box = np.pad(above[r0:r1, c0:c1], 1)
            out[i, r0:r1, c0:c1] = ndimage.binary_fill_holes(box)[1:-1, 1:-1]
    return out


def mask_iou(a: np.ndarray, b: np.ndarray, /) -> np.ndarray:
    """Intersection over union of every mask of ``a`` with every mask of ``b``.

    Parameters
    ----------
    a : ndarray, shape (n, y, x), bool
    b : ndarray, shape (m, y, x), bool

    Returns
    -------
    ndarray, shape (n, m), float64
        IoU in [0, 1]; 0 where both masks are empty.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a and b must be (n, y, x) masks of one frame, got {a.shape}, {b.shape}")
    size = int(np.prod(a.shape[1:]))
    fa = a.reshape(a.shape[0], size).astype(np.float64)
    fb = b.reshape(b.shape[0], size).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_masks(detected: np.ndarray, truth: np.ndarray, /, *, min_iou: float = 0.5) -> dict:
    """One-to-one matching of detected to true masks, maximizing the total IoU.

    Parameters
    ----------
    detected : ndarray, shape (k, y, x), bool
        Detected masks; a label image ``L`` gives
        ``L == np.arange(1, L.max() + 1)[:, None, None]``.
    truth : ndarray, shape (n, y, x), bool
        True masks, e.g. from :func:`true_masks`.
    min_iou : float, optional
        A pair counts as a match at IoU >= ``min_iou``. Default is 0.5.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int), ``precision``, ``recall``, ``f1`` (float, 0 when
        undefined), ``pairs`` (ndarray (tp, 2) of (detected, true) indices), ``iou``
        (ndarray (tp,)) and ``matched_truth`` (ndarray (n,), bool).
    """
    iou = mask_iou(detected, truth)
    k, n = iou.shape
    pairs = np.zeros((0, 2), dtype=np.int64)
    if k and n:
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] >= min_iou
        pairs = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    tp = len(pairs)
    matched = np.zeros(n, dtype=bool)
    matched[pairs[:, 1]] = True
    return {
        "tp": tp,
        "fp": k - tp,
        "fn": n - tp,
        **_prf(tp, k - tp, n - tp),
        "pairs": pairs,
        "iou": iou[pairs[:, 0], pairs[:, 1]] if tp else np.zeros(0),
        "matched_truth": matched,
    }


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def true_transients(
    dff: np.ndarray,
    spike_times_s: np.ndarray,
    spike_neuron: np.ndarray,
    /,
    *,
    frame_interval_s: float,
    min_gap_s: float = 0.5,
    time_bin: int = 1,
) -> dict[str, np.ndarray]:
    """List the true calcium transients of each neuron, from its spikes and ΔF/F.

    A neuron's spikes closer than ``min_gap_s`` to the previous one form one
    transient. Its onset frame is the (binned) frame of its first spike; its peak
    frame is where the noise-free ΔF/F is largest between the onset and the next
    transient's onset (or ``3 * min_gap_s`` later, whichever comes first, at least
    one frame); its amplitude is that peak minus the ΔF/F of the frame before the
    onset (the rise above what earlier transients left).

    Parameters
    ----------
    dff : ndarray, shape (n, T)
        Noise-free ΔF/F at the native frame rate (``truth.npz["dff"]``).
    spike_times_s : ndarray, shape (S,)
        Spike times, seconds.
    spike_neuron : ndarray, shape (S,), int
        Neuron of each spike, in ``[0, n)``.
    frame_interval_s : float
        Native frame interval ``dt``, seconds.
    min_gap_s : float, optional
        Spikes at least this far from the previous spike start a new transient,
        seconds. Default is 0.5.
    time_bin : int, optional
        Score on frames binned by this factor (the block mean of the pipeline's
        downsampling; a trailing partial block is dropped, transients starting in
        it too). Default is 1.

    Returns
    -------
    dict of str to ndarray, each shape (E,), sorted by neuron then onset
        ``neuron`` (int64), ``onset_frame``, ``peak_frame`` (int64, on the binned time
        base), ``amplitude`` (float64, ΔF/F rise), ``peak_dff`` (float64, ΔF/F at the
        peak), ``n_spikes`` (int64), ``onset_s`` (float64, first spike time).
    """
    if not frame_interval_s > 0:
        raise ValueError(f"frame_interval_s must be > 0, got {frame_interval_s!r}")
    if not min_gap_s >= 0:
        raise ValueError(f"min_gap_s must be >= 0, got {min_gap_s!r}")
    if int(time_bin) < 1:
        raise ValueError(f"time_bin must be >= 1, got {time_bin!r}")
    k = int(time_bin)
    dff = np.asarray(dff, dtype=float)
    if dff.ndim != 2:
        raise ValueError(f"dff must have shape (n, T), got {dff.shape}")
    n, t_native = dff.shape
    nb = t_native // k
    binned = dff[:, : nb * k].reshape(n, nb, k).mean(axis=2)
    times = np.asarray(spike_times_s, dtype=float)
    neuron = np.asarray(spike_neuron, dtype=np.int64)
    if times.shape != neuron.shape or times.ndim != 1:
        raise ValueError("spike_times_s and spike_neuron must be 1-D of the same length")
    dt = float(frame_interval_s) * k
    window = max(int(np.ceil(3 * min_gap_s / dt)), 1)
    cols: dict[str, list] = {c: [] for c in
                             ("neuron", "onset_frame", "peak_frame", "amplitude", "peak_dff",
                              "n_spikes", "onset_s")}
    for i in range(n):
        ts = np.sort(times[neuron == i])
        if ts.size == 0:
            continue
        starts = np.flatnonzero(np.diff(ts, prepend=-np.inf) >= min_gap_s)
        counts = np.diff(np.append(starts, ts.size))
        onsets = np.floor(ts[starts] / dt).astype(np.int64)
        for e, (onset, count) in enumerate(zip(onsets, counts, strict=True)):
            if onset >= nb:
                continue
            stop = onset + window
            if e + 1 < onsets.size:
                stop = min(stop, max(onsets[e + 1], onset + 1))
            stop = min(stop, nb)
            seg = binned[i, onset:stop]
            peak = onset + int(np.argmax(seg))
            before = binned[i, onset - 1] if onset > 0 else 0.0
            cols["neuron"].append(i)
            cols["onset_frame"].append(onset)
            cols["peak_frame"].append(peak)
            cols["amplitude"].append(binned[i, peak] - before)
            cols["peak_dff"].append(binned[i, peak])
            cols["n_spikes"].append(count)
            cols["onset_s"].append(ts[starts[e]])
    ints = ("neuron", "onset_frame", "peak_frame", "n_spikes")
    return {c: np.asarray(v, dtype=np.int64 if c in ints else np.float64)
            for c, v in cols.items()}


def session_transients(
    truth: Mapping[str, np.ndarray], /, *, time_bin: int = 1, min_gap_s: float = 0.5
) -> dict[str, np.ndarray]:
    """List the true transients of a session's neurons with their signal-to-noise ratio.

    Parameters
    ----------
    truth : mapping
        A session's truth: ``np.load(".../truth.npz")`` or ``session_truth(session)``.
        Needs ``dff``, ``spike_times_s``, ``spike_neuron``, ``frame_interval_s`` and,
        for the ``snr`` column, ``neuron_noise_dff`` (hard sessions).
    time_bin : int, optional
        Time base: native frames binned by this factor (10 for the pipeline's
        default downsampling). Default is 1.
    min_gap_s : float, optional
        As in :func:`true_transients`. Default is 0.5.

    Returns
    -------
    dict of str to ndarray
        The columns of :func:`true_transients`, plus ``snr`` (amplitude over the
        neuron's noise on the binned time base, ``neuron_noise_dff / sqrt(time_bin)``
        since the shot and read noise of different frames are independent; NaN
        without ``neuron_noise_dff``).
    """
    out = true_transients(truth["dff"], truth["spike_times_s"], truth["spike_neuron"],
                          frame_interval_s=float(truth["frame_interval_s"]),
                          min_gap_s=min_gap_s, time_bin=time_bin)
    if "neuron_noise_dff" in truth:
        noise = np.asarray(truth["neuron_noise_dff"], dtype=float) / np.sqrt(int(time_bin))
        out["snr"] = out["amplitude"] / noise[out["neuron"]]
    else:
        out["snr"] = np.full(out["amplitude"].shape, np.nan)
    return out


def match_events(
    detected_frames: np.ndarray,
    true_frames: np.ndarray,
    /,
    *,
    tolerance_frames: int = 2,
) -> dict:
    """Match detected to true event frames of one trace, one-to-one, within a tolerance.

    Greedy in order of increasing distance (optimal for points on a line when
    each detected event may match one true event only).

    Parameters
    ----------
    detected_frames : ndarray, shape (k,), int
        Frames of the detected events (onset or peak, the same kind as ``true_frames``).
    true_frames : ndarray, shape (m,), int
        Frames of the true events, e.g. ``true_transients(...)["peak_frame"]`` of a neuron.
    tolerance_frames : int, optional
        Largest ``|detected - true|`` that counts as a match. Default is 2.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int), ``precision``, ``recall``, ``f1`` (float) and
        ``pairs`` (ndarray (tp, 2) of (detected, true) indices).
    """
    if tolerance_frames < 0:
        raise ValueError(f"tolerance_frames must be >= 0, got {tolerance_frames!r}")
    d = np.asarray(detected_frames, dtype=float).ravel()
    t = np.asarray(true_frames, dtype=float).ravel()
    dist = np.abs(d[:, None] - t[None, :])
    order = np.argsort(dist, axis=None, kind="stable")
    used_d = np.zeros(d.size, dtype=bool)
    used_t = np.zeros(t.size, dtype=bool)
    pairs = []
    for flat in order:
        a, b = divmod(int(flat), t.size)
        if dist[a, b] > tolerance_frames:
            break
        if not used_d[a] and not used_t[b]:
            used_d[a] = used_t[b] = True
            pairs.append((a, b))
    tp = len(pairs)
    return {"tp": tp, "fp": d.size - tp, "fn": t.size - tp, **_prf(tp, d.size - tp, t.size - tp),
            "pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2)}


def trace_correlation(estimated: np.ndarray, truth: np.ndarray, /) -> np.ndarray:
    """Pearson correlation of each row of ``estimated`` with the same row of ``truth``.

    Parameters
    ----------
    estimated, truth : ndarray, shape (n, T) or (T,)
        Traces on the same time base (bin the truth first if needed).

    Returns
    -------
    ndarray, shape (n,) (or a 0-d array for 1-D input), float64
        Correlation in [-1, 1]; NaN where either row is constant or holds a NaN.
    """
    e = np.asarray(estimated, dtype=float)
    t = np.asarray(truth, dtype=float)
    if e.shape != t.shape or e.ndim not in (1, 2):
        raise ValueError(
            f"estimated and truth must have one shape (n, T), got {e.shape}, {t.shape}")
    one = e.ndim == 1
    e, t = np.atleast_2d(e), np.atleast_2d(t)
    e = e - e.mean(axis=1, keepdims=True)
    t = t - t.mean(axis=1, keepdims=True)
    den = np.sqrt((e**2).sum(1) * (t**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (e * t).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    return r[0] if one else r
