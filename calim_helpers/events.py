"""Calcium events on normalized traces: onset, peak, amplitude, duration (SPEC §4).

One trace at a time (:func:`detect_events`), lifted to a session result Dataset
(:func:`detect_events_dataset`, one table for all ROIs) and summarized per ROI
(:func:`event_rates`). Everything is a pure function: arrays and Datasets in,
``pandas.DataFrame`` out.

Definitions
-----------
Let ``x`` be one normalized trace (e.g. ΔF/F), NaN on trimmed or guarded frames.

- **Level** ``m`` and **noise** ``sigma``: the trace's resting value and the
  standard deviation of its quiet part, from
  :func:`calim_helpers.noise.noise_sigma` (the package's one noise estimate,
  also behind the z-score normalization; its module docstring has the method,
  its measured accuracy with busy ROIs, autocorrelated noise and drift, and
  how ``threshold``, ``prominence`` and the level interact).
- **Peak**: a local maximum (:func:`scipy.signal.find_peaks`) at least
  ``threshold`` sigmas above the level whose *prominence* (height above the
  higher of the two troughs that separate it from higher signal) is at least
  ``prominence`` sigmas. NaN frames are barriers, and a peak needs a finite
  frame on each side (a trace that starts high after trimmed frames, or has
  a guarded frame next to its maximum, has no event there), except at the
  trace's own first and last frames: a trace that ends rising has an event
  peaking at its last frame, its prominence measured on the inside only (at
  1 s frames a transient lasts one or two frames, so leaving the ends out
  missed 3 % of the true transients of hard sessions). ``peak`` is the
  trace's value there.
- **Onset**: the first frame of the rise to the peak. Walk back from the
  peak while the frame before is finite, lower (the signal was still
  rising), after the previous peak, and at or above ``level +
  onset_fraction * (peak - level)``; if the walk stops at a trough (the frame
  before it is not lower: earlier signal), that trough belongs to what came
  before and the onset is the frame after it.
- **End** (exclusive): the first frame after the peak whose value is below
  ``level + end_fraction * (peak - level)``, or a NaN frame, or the end of the
  trace, and never later than the next event's onset.
  ``duration_s = (end - onset) * dt`` with ``dt`` the median frame interval,
  so a one-frame event lasts ``dt``.
- **Merging**: consecutive events with less than ``merge_gap_s`` from the end
  of one to the onset of the next, and no NaN frame between, become one event
  (first onset, last end, highest peak). Then events shorter than
  ``min_duration_s`` or with an amplitude below ``min_amplitude`` are dropped.
- **Amplitude**: ``peak`` minus the local pre-onset level: the trough value
  when the event rises out of earlier signal (its onset follows a trough),
  else the median of the finite frames in the ``baseline_s`` seconds before
  the onset (the global level when there are none). So an event riding on
  the decay of another is measured from the trough, not from zero.
- **SNR**: ``amplitude / sigma``.

Threshold, prominence, floor and noise
--------------------------------------
Three tests, in this order, decide whether a local maximum is an event:

1. ``threshold``: its height above the trace's one resting level, in units of
   ``sigma``;
2. ``prominence``: its height above the higher of the troughs that separate
   it from higher signal, in the same ``sigma``;
3. ``min_amplitude``: its ``amplitude`` (from the local pre-onset level), in
   the trace's own units (ΔF/F for ``dff``), not in sigmas.

``sigma`` and the level come from :func:`calim_helpers.noise.noise_sigma`,
which leaves out every frame that reaches 2.5 sigma above the local level,
with its decay: detected transients never inflate the sigma they are measured
against, and anything that rises past 2.5 sigma (a neighbour's transient, a
neuropil wiggle) is not counted as noise either. For an isolated transient in
white noise the first two tests coincide; ``prominence`` decides only for a
transient riding on the decay of another (or on a drift the baseline fit
left), where it keeps noise on the decay from counting. Measured on white
noise (``tests/test_events.py``): kernel transients planted at one frame per
second are found with recall 0.45 at SNR 3 (the peak plus noise passes 3
sigma about half the time), 0.93 at SNR 5, 1.0 at SNR 10; noise alone gives
5.3 false events per 1000 frames on 60-frame traces, 2.6 on 150-frame and 1.6
on 1500-frame ones (the ideal, with sigma and level known, is at most
P(z > 3) = 1.35 per 1000): a sigma estimated from few frames spreads (10-90 %:
0.79-1.12 of the truth at 60 frames) and a low estimate lowers the effective
threshold.

The floor matters when a trace holds light that is not its cell's and not
white noise (neuropil left after the correction, out-of-focus cells,
neurites): such wiggles are many sigmas high when the shot noise is low, so
no sigma test removes them, but they have a typical size in ΔF/F. On the
pipeline's traces of hard sessions (below) the floor, not the sigma tests,
sets the balance: at a given floor, threshold = prominence from 2.5 to 3.5
changes F1 by at most 0.002; floors from 0.004 to 0.007 change it by 0.026
(``fitted``, seeds 11-40).
The floor's best value follows the neuropil correction (tuning seeds 1-10 /
11-40, F1): with ``neuropil.method none`` 0.734 / 0.707 at 0.01 (the default),
0.706 / 0.677 at 0.005, 0.671 / 0.660 at 0.015; with ``fitted`` 0.781 / 0.742
at 0.01, 0.804 / 0.779 at 0.005 (smallest-third recall 0.43 / 0.36 -> 0.68 /
0.69, precision 0.86 / 0.86 -> 0.78 / 0.75). The pipeline's ``dff`` shows
only about a quarter of a cell's true ΔF/F (median slope 0.27, 10-90 %
0.09-0.39, over its own neuron's ΔF/F): its divisor, the raw trace's
baseline, also holds the neuropil, the contaminants and the camera offset. So
the floor 0.01 is about 0.04 true ΔF/F, above most of the smallest third of
the true transients (0.01-0.06).

What limits it (measured)
-------------------------
``benchmarks/bench_events.py`` on "hard" synthetic sessions (600 frames at
0.1 s, the pipeline's defaults with ``neuropil.method fitted``, 1 s frames,
60 per trace; scoring in its docstring), tuning seeds 1-10 / 11-40, default
event parameters: on the pipeline's ``norm`` precision 0.862 / 0.864, recall
0.714 / 0.650, F1 0.781 / 0.742, smallest-third recall 0.430 / 0.357; on the
same ROIs' noise-free, neuropil-free ΔF/F plus Gaussian noise of their true
sigma ("oracle") 0.879 / 0.902, 0.945 / 0.933, 0.911 / 0.917, 0.898 / 0.890.

- Oracle false positives are other cells' light in the ROI: 33 of 50 / 85 of
  105 coincide with a transient of a neighbouring soma that the ROI covers (a
  touching cell, a ROI drawn too large); the rest are noise. Counting those
  as neither, precision is 0.955 / 0.980. The scoring is right to count them
  (they are not events of the ROI's neuron); a detector that sees one trace
  cannot tell them apart.
- Pipeline false positives (floor 0.01) coincide mostly with a rise of the
  neuropil inside the ROI (23 of 44 / 59 of 106) or of an out-of-focus cell or
  neurite (16 / 30), few with noise (4 / 9) or a neighbour's soma (1 / 8):
  the trace, not the detector. What is left of ``norm`` around the own
  cell's ΔF/F is a median 2.9 times the ROI's shot and read noise (1-10), so the
  small transients drown in it: recall at true SNR 3-5 is 0.07 / 0.15 (oracle
  0.76 / 0.66).
- Tried on these seeds (floor 0.005, ``fitted``; F1 change against the same
  seeds without it), not kept: rejecting events that the neuropil ring
  explains (ring rise over event amplitude above 0.3-1: -0.055 to 0.000);
  rejecting events that another ROI's simultaneous event explains (the
  lowest tenth of the ratio of the two traces at the other ROI's events,
  ROIs with 5 events or more): pipeline -0.004 / +0.004, oracle +0.013 /
  +0.009 with precision 0.911 / 0.928; a two-frame matched filter for
  transients split across frames (11-40: -0.005 to -0.001); floors scaled per
  ROI by the ring's spread, the trace's difference MAD or IQR (at best
  -0.012, against the fixed floor); a sigma that can only be larger (the max
  or mean with the difference MAD; 11-40: -0.017 to -0.006). The oracle's true
  sigma instead of the estimate gains only +0.009 (11-40), a match tolerance
  of 2 frames +0.004 to +0.006, and dividing by the raw baseline minus the
  ring's (true ΔF/F scale: median slope 0.99) reaches 0.784 at its best floor
  (0.02; 1-10). At 1 s frames a transient lasts one or two frames (decay time
  0.7 s), so its shape does not tell it from a neuropil wiggle, which follows
  the cells around.

Examples
--------
Gaussian noise (sigma 0.01) with two transients:

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(0.0, 0.01, 40)
>>> x[10:13] += [0.5, 0.3, 0.1]
>>> x[30] += 0.4
>>> ev = detect_events(x, time_s=np.arange(40.0))
>>> ev[["onset_frame", "peak_frame", "end_frame"]].values.tolist()
[[10, 10, 12], [30, 30, 31]]
>>> ev["duration_s"].tolist(), ev["amplitude"].round(2).tolist()
([2.0, 1.0], [0.5, 0.39])
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers._checks import check_number
from calim_helpers.errors import CalimWarning
from calim_helpers.noise import noise_sigma

__all__ = [
    "DATASET_COLUMNS",
    "EVENT_COLUMNS",
    "RATE_COLUMNS",
    "detect_events",
    "detect_events_dataset",
    "event_rates",
]

# Columns of detect_events(), in order, with their dtypes.
EVENT_COLUMNS: dict[str, str] = {
    "onset_frame": "int64",
    "onset_time_s": "float64",
    "peak_frame": "int64",
    "peak_time_s": "float64",
    "end_frame": "int64",
    "peak": "float64",
    "amplitude": "float64",
    "duration_s": "float64",
    "snr": "float64",
}

# Columns of detect_events_dataset(), in order, with their dtypes.
DATASET_COLUMNS: dict[str, str] = {
    "experiment": "object",
    "date": "object",
    "session": "object",
    "roi": "int64",
    "roi_name": "object",
    "frame": "int64",
    "time_s": "float64",
    "peak_frame": "int64",
    "peak_time_s": "float64",
    "end_frame": "int64",
    "peak_dff": "float64",
    "amplitude": "float64",
    "duration_s": "float64",
    "snr": "float64",
}

# Columns of event_rates(), in order, with their dtypes.
RATE_COLUMNS: dict[str, str] = {
    "experiment": "object",
    "date": "object",
    "session": "object",
    "roi": "int64",
    "roi_name": "object",
    "n_events": "int64",
    "observed_min": "float64",
    "rate_per_min": "float64",
    "mean_amplitude": "float64",
    "median_amplitude": "float64",
    "mean_duration_s": "float64",
    "median_snr": "float64",
}

_SESSION_KEYS = ("experiment", "date", "session")

#: Events at least this many noise sigmas high are clear of the noise: when
#: ``min_amplitude`` removes more than :data:`FLOOR_WARN_FRACTION` of them in a session
#: (and at least :data:`FLOOR_WARN_MIN`), :func:`detect_events_dataset` warns. Measured:
#: the default floor removes 0-11 % of them in hard synthetic sessions and 1 % in the
#: full-size demo sessions, and all 20 of a session recorded with a camera offset of
#: 3000 counts (dff about 20 times smaller than at an offset of 100).
STRONG_SNR = 10.0
FLOOR_WARN_FRACTION = 0.5
FLOOR_WARN_MIN = 3

#: When at least :data:`START_WARN_MIN` ROIs, and more than this fraction of the ROIs
#: with a noise estimate, have an event peaking at their trace's first frame (possible
#: only without trimmed frames: after them, the first finite frame is no peak),
#: :func:`detect_events_dataset` takes them for a start artefact that the ROIs share
#: (fast photobleaching when the light comes on, which the arPLS baseline does not
#: follow at the trace's edge), leaves those first-frame events out and warns; a burst
#: under way when the recording started looks the same. Fewer such peaks are kept: on
#: hard sessions they hold more true transients than artefacts (leaving every
#: first-frame peak out lowered F1 on fresh seeds 1401-1410 from 0.761 to 0.753,
#: ``neuropil.method fitted``; from 0.728 to 0.717 with ``none``), while in the
#: default demo experiment 16 of 310 events peak at the first frame and 4 of them at a
#: true transient. Measured on a hard demo
#: experiment (seed 5, 4 sessions of 60 s, 10-14 ROIs): 1, 1, 5 and 1 ROIs peak at the
#: first frame (of the 5, of 10 ROIs, 3 hold a cell firing in the first second); with
#: a 20 % extra brightness fading in 5 s multiplied into every frame, 10 (of 13), 1,
#: 6 (of 10) and 5 (of 14): the warning is given for 2 of those 4 sessions, none of the
#: first 4.
START_WARN_FRACTION = 0.5
START_WARN_MIN = 3


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in columns.items()})


def _trace(trace: Any, name: str = "trace") -> np.ndarray:
    x = np.asarray(trace.values if isinstance(trace, xr.DataArray) else trace)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one trace, shape (time,), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    return x.astype(np.float64)


# ------------------------------------------------------------------ one trace


def _peaks(z: np.ndarray, threshold: float, prominence: float) -> np.ndarray:
    """Frames of the peaks of ``z`` (NaN = barrier) >= threshold with enough prominence."""
    from scipy.signal import find_peaks  # here: scipy.signal takes 0.6 s to import

    finite = np.isfinite(z)
    padded = np.concatenate([[-np.inf], np.where(finite, z, -np.inf), [-np.inf]])
    with np.errstate(invalid="ignore"):
        peaks, _ = find_peaks(padded, height=threshold, prominence=prominence)
    peaks = peaks.astype(np.int64) - 1
    # a finite frame on each side; the trace's first and last frames need one inside
    left = np.concatenate([[True], finite[:-1]])
    right = np.concatenate([finite[1:], [True]])
    inside = np.concatenate([finite[1:], [False]]) | np.concatenate([[False], finite[:-1]])
    return peaks[(left & right & inside)[peaks]]


def detect_events(
    norm: Any,
    /,
    *,
    time_s: Any,
    threshold: float = 3.0,
    prominence: float = 3.0,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
    min_amplitude: float = 0.0,
    onset_fraction: float = 0.2,
    end_fraction: float = 0.5,
    baseline_s: float = 3.0,
) -> pd.DataFrame:
    """Detect calcium events in one normalized trace.

    See the module docstring for the definitions of noise, level, peak, onset,
    end, merging, amplitude and SNR.

    Parameters
    ----------
    norm : array_like, shape (time,)
        One normalized trace (e.g. ΔF/F); NaN frames (trimmed or guarded) are
        never part of an event.
    time_s : array_like, shape (time,)
        Time of each frame, seconds, strictly increasing.
    threshold : float, keyword-only
        A peak must reach this many noise sigmas above the quiet level, > 0.
        Default is 3.0.
    prominence : float, keyword-only
        A peak must stand out this many noise sigmas above the higher of the
        two troughs that separate it from higher signal (its topographic
        prominence, :func:`scipy.signal.find_peaks`), > 0. Separates a
        transient riding on the decay of another from noise on that decay.
        Default is 3.0.
    min_duration_s : float, keyword-only
        Events lasting less than this (``duration_s``, after merging) are
        dropped, seconds, >= 0. Default is 0.0 (keep all: at the lab's
        downsampled 1 s frames a single-spike GCaMP transient lasts one or two
        frames).
    min_amplitude : float, keyword-only
        Events whose ``amplitude`` is below this, in the units of ``norm`` (ΔF/F for
        the ``dff`` normalization), are dropped, >= 0. A floor in signal units on top
        of the noise threshold: when the noise is very low (after 10-frame binning),
        small neuropil-driven wiggles pass ``threshold`` σ without being transients
        of the cell. Default is 0.0 (no floor).
    merge_gap_s : float, keyword-only
        Consecutive events with less than this time from the end of one to the
        onset of the next (``(onset_next - end) * dt``), and no NaN frame
        between, are merged into one, seconds, >= 0; with any value > 0,
        touching events (one rising on the other's decay) merge. Default is
        0.0 (no merging: at 1 s frames, transients 2 s apart are resolved).
    onset_fraction : float, keyword-only
        The onset is the start of the rise to the peak, but not earlier than
        the signal's last crossing of this fraction of the peak (above the
        level), in [0, 1]. Default is 0.2.
    end_fraction : float, keyword-only
        The event lasts until the signal falls below this fraction of the peak
        (above the level), in [0, 1]. Default is 0.5 (a full width at half
        maximum, counted in whole frames).
    baseline_s : float, keyword-only
        Window before the onset whose median is the local pre-onset level that
        ``amplitude`` is measured from (unless the event rises out of a
        trough), seconds, >= 0. Default is 3.0.

    Returns
    -------
    pandas.DataFrame
        One row per event, in time order, columns (see ``EVENT_COLUMNS``):
        ``onset_frame``, ``onset_time_s``, ``peak_frame``, ``peak_time_s``,
        ``end_frame`` (first frame after the event), ``peak`` (value of
        ``norm`` at the peak), ``amplitude`` (peak minus the local pre-onset
        level), ``duration_s``, ``snr`` (amplitude / sigma). Frames are
        positions in the trace. No event gives an empty table with these
        columns and dtypes. ``attrs`` holds ``sigma``, ``level`` and the
        parameters.

    Raises
    ------
    ValueError
        If ``norm`` is not one numeric trace, ``time_s`` does not match it or
        is not strictly increasing, or a parameter is out of range.

    Warns
    -----
    CalimWarning
        If the noise sigma is 0 or undefined (constant or almost all-NaN
        trace); no event is reported then.
    """
    x = _trace(norm, "norm")
    t = _trace(time_s, "time_s")
    if t.shape != x.shape:
        raise ValueError(f"time_s must have the shape of norm {x.shape}, got {t.shape}")
    _check_times(t, "time_s")
    params = _check_params(threshold=threshold, prominence=prominence,
                           min_duration_s=min_duration_s, merge_gap_s=merge_gap_s,
                           min_amplitude=min_amplitude, onset_fraction=onset_fraction,
                           end_fraction=end_fraction, baseline_s=baseline_s)
    columns, sigma, level, _ = _event_arrays(x, t, params)
    if columns is None:
        warnings.warn(f"detect_events: noise sigma is {sigma} (constant or almost all-NaN "
                      "trace); no events", CalimWarning, stacklevel=2)
    table = (_empty(EVENT_COLUMNS) if columns is None
             else pd.DataFrame(columns).astype(EVENT_COLUMNS))
    table.attrs = {"sigma": sigma, "level": level, **params}
    return table


def _check_times(t: np.ndarray, name: str, /) -> None:
    if not np.isfinite(t).all() or (t.size > 1 and not (np.diff(t) > 0).all()):
        raise ValueError(f"{name} must be finite and strictly increasing")


def _check_params(**params: float) -> dict[str, float]:
    """Check the parameters of :func:`detect_events`; return them as floats."""
    strict = {"threshold", "prominence"}
    at_most_one = {"onset_fraction", "end_fraction"}
    return {k: check_number(k, v, low=0.0, strict=k in strict,
                            high=1.0 if k in at_most_one else None)
            for k, v in params.items()}


def _event_arrays(x: np.ndarray, t: np.ndarray, params: dict[str, float], /
                  ) -> tuple[dict[str, np.ndarray] | None, float, float, tuple[int, int]]:
    """Find the events of one float64 trace ``x`` at times ``t``.

    Returns ``(columns, sigma, level, strong)``: ``columns`` holds the arrays of
    :data:`EVENT_COLUMNS` (as :func:`detect_events` returns them), or is None when the
    noise sigma is 0 or undefined; ``strong`` is ``(n, n_floored)``, the events at
    least :data:`STRONG_SNR` sigmas high that pass every test but ``min_amplitude``,
    and how many of them ``min_amplitude`` removed.
    """
    finite = np.isfinite(x)
    n = x.size
    est = noise_sigma(x)
    level, sigma = float(est.level), float(est.sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        return None, sigma, level, (0, 0)
    dt = float(np.median(np.diff(t))) if n > 1 else 1.0
    tol = 1e-9 * dt

    peak_f = _peaks((x - level) / sigma, params["threshold"], params["prominence"])
    n_ev = peak_f.size
    onset_f = np.empty(n_ev, dtype=np.int64)
    end_f = np.empty(n_ev, dtype=np.int64)
    trough = np.zeros(n_ev, dtype=bool)
    lower = -1  # an onset never reaches back to the previous peak
    for k, p in enumerate(peak_f):
        on_level = level + params["onset_fraction"] * (x[p] - level)
        o = p
        while o - 1 > lower and finite[o - 1] and x[o - 1] < x[o] and x[o - 1] >= on_level:
            o -= 1
        trough[k] = o < p and o >= 1 and finite[o - 1] and x[o - 1] >= x[o]
        if trough[k]:
            o += 1  # o is the trough after earlier signal, not part of this rise
        onset_f[k] = o
        lower = p
    for k, p in enumerate(peak_f):
        stop = onset_f[k + 1] if k + 1 < n_ev else n
        end_level = level + params["end_fraction"] * (x[p] - level)
        e = p + 1
        while e < stop and finite[e] and x[e] >= end_level:
            e += 1
        end_f[k] = e

    if n_ev:  # merge events closer than merge_gap_s (no NaN frame between them)
        nan_before = np.concatenate([[0], np.cumsum(~finite)])  # NaN frames in x[:k]
        groups = [[0]]
        for k in range(1, n_ev):
            prev = groups[-1][-1]
            gap_s = (onset_f[k] - end_f[prev]) * dt
            if gap_s < params["merge_gap_s"] - tol and \
                    nan_before[onset_f[k]] == nan_before[end_f[prev]]:
                groups[-1].append(k)
            else:
                groups.append([k])
        first = np.array([g[0] for g in groups])
        last = np.array([g[-1] for g in groups])
        best = np.array([g[int(np.argmax(x[peak_f[g]]))] for g in groups])
        onset_f, end_f, peak_f, trough = (onset_f[first], end_f[last], peak_f[best],
                                          trough[first])

    n_base = max(int(round(params["baseline_s"] / dt)), 0)
    pre = np.empty(onset_f.size)
    for k, o in enumerate(onset_f):
        if trough[k]:
            pre[k] = x[o - 1]
            continue
        window = x[max(o - n_base, 0):o]
        window = window[np.isfinite(window)]
        pre[k] = np.median(window) if window.size else level

    peak = x[peak_f]
    amplitude = peak - pre
    duration = (end_f - onset_f) * dt
    long_enough = duration >= params["min_duration_s"] - tol
    keep = long_enough & (amplitude >= params["min_amplitude"])
    strong = long_enough & (amplitude >= STRONG_SNR * sigma)
    return {
        "onset_frame": onset_f[keep],
        "onset_time_s": t[onset_f[keep]],
        "peak_frame": peak_f[keep],
        "peak_time_s": t[peak_f[keep]],
        "end_frame": end_f[keep],
        "peak": peak[keep],
        "amplitude": amplitude[keep],
        "duration_s": duration[keep],
        "snr": amplitude[keep] / sigma,
    }, sigma, level, (int(strong.sum()), int((strong & ~keep).sum()))


# ------------------------------------------------------------------ a session


def _check_dataset(ds: Any, variable: str) -> None:
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    if variable not in ds.data_vars:
        raise ValueError(f"variable must name a data variable of ds, got {variable!r} "
                         f"(have {sorted(map(str, ds.data_vars))})")
    if set(ds[variable].dims) != {"roi", "time"}:
        raise ValueError(f"ds[{variable!r}] must have dims ('roi', 'time'), "
                         f"got {ds[variable].dims}")
    if "time" not in ds.coords:
        raise ValueError("ds must have a 'time' coordinate (seconds)")


def _roi_ids(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    n = ds.sizes["roi"]
    roi = ds["roi"].values.astype(np.int64) if "roi" in ds.coords else np.arange(1, n + 1)
    names = (ds["roi_name"].values.astype(str) if "roi_name" in ds.coords
             else np.array([f"ROI{r}" for r in roi]))
    return roi, names


def detect_events_dataset(
    ds: xr.Dataset,
    /,
    *,
    variable: str = "norm",
    threshold: float = 3.0,
    prominence: float = 3.0,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
    min_amplitude: float = 0.0,
    onset_fraction: float = 0.2,
    end_fraction: float = 0.5,
    baseline_s: float = 3.0,
) -> pd.DataFrame:
    """Detect events in every ROI of a session result Dataset: one table.

    Parameters
    ----------
    ds : xarray.Dataset
        A per-session result (dims ``roi``, ``time``; ``time`` coordinate in
        seconds; optional ``frame`` coordinate, ``roi`` and ``roi_name``
        coordinates; attrs ``experiment``, ``date``, ``session``).
    variable : str, keyword-only
        Variable to detect on. Default is ``"norm"`` (the chosen
        normalization; its trimmed frames are NaN).
    threshold, prominence, min_duration_s, merge_gap_s, min_amplitude, onset_fraction, \
end_fraction, baseline_s
        As in :func:`detect_events`, keyword-only, same defaults (3.0, 3.0,
        0.0, 0.0, 0.0, 0.2, 0.5, 3.0).

    Returns
    -------
    pandas.DataFrame
        One row per event, ordered by ROI then time, columns (see
        ``DATASET_COLUMNS``): ``experiment``, ``date``, ``session``, ``roi``,
        ``roi_name``, ``frame`` and ``time_s`` (of the event **onset**: the
        ``frame`` coordinate and the ``time`` coordinate of the onset frame),
        ``peak_frame``, ``peak_time_s``, ``end_frame`` (first frame after the
        event), ``peak_dff`` (peak value of ``variable``: ΔF/F when the
        normalization is ``dff``, its units otherwise), ``amplitude``,
        ``duration_s``, ``snr``. Empty (with these columns) when no ROI has an
        event. ``attrs`` holds the parameters and ``variable``.

    Raises
    ------
    ValueError
        If ``ds`` lacks ``variable`` with dims (roi, time) or a ``time``
        coordinate, or a parameter is out of range.

    Warns
    -----
    CalimWarning
        Once, naming the ROIs whose noise sigma is 0 or undefined (no events). Once
        when ``min_amplitude`` removes more than half of the session's events that
        are at least 10 noise sigmas high (at least 3 of them): the trace's values are
        small for its noise, e.g. ΔF/F divided by a baseline that holds a large camera
        offset (see :data:`STRONG_SNR`). Once when many ROIs have an event peaking at
        their first frame: those events are left out (see :data:`START_WARN_FRACTION`).
    """
    _check_dataset(ds, variable)
    kw = {"threshold": threshold, "prominence": prominence, "min_duration_s": min_duration_s,
          "merge_gap_s": merge_gap_s, "min_amplitude": min_amplitude,
          "onset_fraction": onset_fraction,
          "end_fraction": end_fraction, "baseline_s": baseline_s}
    values = ds[variable].transpose("roi", "time").values
    time_s = ds["time"].values.astype(np.float64)
    frame = (ds["frame"].values.astype(np.int64) if "frame" in ds.coords
             else np.arange(ds.sizes["time"], dtype=np.int64))
    roi, names = _roi_ids(ds)
    params = _check_params(**kw)
    _check_times(time_s, "ds's time coordinate")
    ends = np.append(frame, frame[-1] + 1) if frame.size else frame
    tables, silent, at_start = [], [], []
    n_strong = n_floored = 0
    for i in range(values.shape[0]):
        ev, _, _, (strong, floored) = _event_arrays(values[i].astype(np.float64), time_s,
                                                    params)
        n_strong, n_floored = n_strong + strong, n_floored + floored
        if ev is None:
            silent.append(str(roi[i]))
        elif len(ev["onset_frame"]):
            if ev["peak_frame"][0] == 0:  # after trimmed frames no peak is at the start
                at_start.append(len(tables))
            tables.append({
                "roi": np.full(len(ev["onset_frame"]), roi[i]),
                "roi_name": np.full(len(ev["onset_frame"]), names[i], dtype=object),
                "frame": frame[ev["onset_frame"]],
                "time_s": ev["onset_time_s"],
                "peak_frame": frame[ev["peak_frame"]],
                "peak_time_s": ev["peak_time_s"],
                "end_frame": ends[ev["end_frame"]],
                "peak_dff": ev["peak"],
                "amplitude": ev["amplitude"],
                "duration_s": ev["duration_s"],
                "snr": ev["snr"],
            })
    if silent:
        warnings.warn(f"detect_events_dataset: ROI(s) {', '.join(silent)} have zero or "
                      "undefined noise sigma; no events", CalimWarning, stacklevel=2)
    where = " ".join(str(ds.attrs[k]) for k in ("date", "session") if k in ds.attrs)
    if n_floored >= FLOOR_WARN_MIN and n_floored > FLOOR_WARN_FRACTION * n_strong:
        warnings.warn(
            f"{where + ': ' if where else ''}min_amplitude = {min_amplitude:g} removed "
            f"{n_floored} of the {n_strong} events at least {STRONG_SNR:g} noise sigmas high: "
            f"the {variable!r} values are small for this recording (for 'dff', the divisor, "
            "the raw trace's baseline, also holds the camera offset and background light); "
            "lower events.min_amplitude or choose another normalization",
            CalimWarning, stacklevel=2)
    n_defined = values.shape[0] - len(silent)
    if len(at_start) >= START_WARN_MIN and len(at_start) > START_WARN_FRACTION * n_defined:
        listed = ", ".join(str(tables[k]["roi"][0]) for k in at_start)
        for k in at_start:  # the shared falling start is no event
            tables[k] = {c: v[1:] for c, v in tables[k].items()}
        tables = [t for t in tables if len(t["roi"])]
        warnings.warn(
            f"{where + ': ' if where else ''}{len(at_start)} of {n_defined} ROIs (ROI "
            f"{listed}) start high and falling (a peak at their first frame): a start "
            "artefact they share (fast photobleaching when the light comes on, which the "
            "baseline does not follow at the trace's edge) rather than events; these peaks "
            "are not counted as events. A burst under way when the recording started looks "
            "the same: look at the traces' start; trim_start leaves the first frames out of "
            "the normalized traces and their summaries too", CalimWarning, stacklevel=2)
    if not tables:
        table = _empty(DATASET_COLUMNS)
    else:
        table = pd.DataFrame({c: np.concatenate([t[c] for t in tables]) for c in tables[0]})
        for key in _SESSION_KEYS:
            table[key] = str(ds.attrs.get(key, ""))
        table = table[list(DATASET_COLUMNS)].astype(DATASET_COLUMNS)
    table.attrs = {"variable": variable, **kw}
    return table


def _session_rows(events: pd.DataFrame, ds: xr.Dataset) -> pd.DataFrame:
    """Keep the rows of ``events`` that belong to the session of ``ds`` (when it says)."""
    keep = np.ones(len(events), dtype=bool)
    for key in _SESSION_KEYS:
        if key in events.columns and key in ds.attrs:
            keep &= events[key].astype(str).to_numpy() == str(ds.attrs[key])
    return events[keep]


def event_rates(events: pd.DataFrame, ds: xr.Dataset, /, *, variable: str = "norm"
                ) -> pd.DataFrame:
    """Event count, rate and mean size per ROI of a session.

    Parameters
    ----------
    events : pandas.DataFrame
        The table of :func:`detect_events_dataset` (rows of other sessions, as
        told by ``experiment``/``date``/``session``, are ignored).
    ds : xarray.Dataset
        The session result the events come from.
    variable : str, keyword-only
        Variable the events were detected on; its finite frames per ROI define
        the observed time. Default is ``"norm"``.

    Returns
    -------
    pandas.DataFrame
        One row per ROI of ``ds`` (every ROI, with or without events), columns
        (see ``RATE_COLUMNS``): identifiers, ``n_events``, ``observed_min``
        (the ROI's finite, i.e. non-trimmed, frames × frame interval, minutes),
        ``rate_per_min`` (``n_events / observed_min``), ``mean_amplitude``,
        ``median_amplitude``, ``mean_duration_s``, ``median_snr`` (NaN without
        events).

    Raises
    ------
    ValueError
        If ``events`` lacks the columns ``roi``, ``amplitude``, ``duration_s``,
        ``snr`` or ``ds`` lacks ``variable``.
    """
    _check_dataset(ds, variable)
    missing = {"roi", "amplitude", "duration_s", "snr"} - set(events.columns)
    if missing:
        raise ValueError(f"events must have the columns of detect_events_dataset; "
                         f"missing {sorted(missing)}")
    ev = _session_rows(events, ds)
    roi, names = _roi_ids(ds)
    time_s = ds["time"].values.astype(np.float64)
    dt = float(np.median(np.diff(time_s))) if time_s.size > 1 else float("nan")
    finite = np.isfinite(ds[variable].transpose("roi", "time").values).sum(axis=1)
    observed_min = finite * dt / 60.0
    grouped = ev.groupby("roi")
    stats = pd.DataFrame({
        "n_events": grouped.size(),
        "mean_amplitude": grouped["amplitude"].mean(),
        "median_amplitude": grouped["amplitude"].median(),
        "mean_duration_s": grouped["duration_s"].mean(),
        "median_snr": grouped["snr"].median(),
    }).reindex(roi)
    n_events = stats["n_events"].fillna(0).to_numpy(dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(observed_min > 0, n_events / np.where(observed_min > 0,
                                                             observed_min, 1.0), np.nan)
    table = pd.DataFrame({
        **{key: str(ds.attrs.get(key, "")) for key in _SESSION_KEYS},
        "roi": roi, "roi_name": names, "n_events": n_events,
        "observed_min": observed_min, "rate_per_min": rate,
        "mean_amplitude": stats["mean_amplitude"].to_numpy(),
        "median_amplitude": stats["median_amplitude"].to_numpy(),
        "mean_duration_s": stats["mean_duration_s"].to_numpy(),
        "median_snr": stats["median_snr"].to_numpy(),
    }, index=pd.RangeIndex(len(roi)))
    return table.astype(RATE_COLUMNS)
