"""Normalizing drift-corrected traces: SPEC §2 steps 6 and 7.

Three named methods turn the ``corrected`` signal (background- and
drift-corrected, camera counts) into a comparable quantity:

- ``"dff"``: ``corrected / baseline_raw``, frame by frame, with
  ``baseline_raw`` the arPLS baseline of the ROI's raw trace (its resting
  fluorescence);
- ``"session"``: ``corrected / S`` with one scale per session, ``S`` = the
  median over ROIs of each ROI's time-mean ``baseline_raw``;
- ``"zscore"``: ``corrected / sigma`` with ``sigma`` the robust per-ROI noise
  standard deviation of the corrected signal's *quiet part*
  (:func:`calim_helpers.noise.noise_sigma`, the same estimate event detection
  uses).

``trim_start`` blanks (NaN) the first frames of the output, which arPLS edges
make unreliable; the original notebook zeroed 20 points by hand.

Inputs are ``(roi, time)`` arrays (time last; a single 1-D trace also works)
or ``DataArray`` objects with a ``time`` dimension. Traces are small, so
dask-backed inputs are computed.

Examples
--------
>>> import numpy as np
>>> corrected = np.array([[0.0, 10.0, 20.0], [0.0, 50.0, 0.0]])
>>> baseline_raw = np.array([[100.0, 100.0, 100.0], [200.0, 250.0, 200.0]])
>>> norm, info = normalize(corrected, baseline_raw)
>>> norm.tolist()
[[0.0, 0.1, 0.2], [0.0, 0.2, 0.0]]

One scale for the session, the median over ROIs of their mean baseline, here
with the first frame trimmed (NaN, and left out of the scale):

>>> norm, info = normalize(corrected, baseline_raw, method="session", trim_start=1)
>>> info["session_scale"]
162.5
>>> np.round(norm, 4).tolist()
[[nan, 0.0615, 0.1231], [nan, 0.3077, 0.0]]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from calim_helpers.errors import CalimWarning
from calim_helpers.noise import noise_sigma

__all__ = ["METHODS", "dff_raw", "normalize"]

METHODS = ("dff", "session", "zscore")

# A divisor at or below this fraction of the ROI's largest |value| is "tiny": the
# ratio would be float noise blown up, so it is NaN instead.
_TINY = 1e-6


# ------------------------------------------------------------------ plumbing


def _check_trim(trim_start: Any, n_time: int) -> int:
    if isinstance(trim_start, bool) or not isinstance(trim_start, int | np.integer) \
            or trim_start < 0:
        raise ValueError(f"trim_start must be an integer >= 0, got {trim_start!r}")
    if trim_start >= n_time:
        raise ValueError(f"trim_start must be < the number of frames ({n_time}), "
                         f"got {trim_start}")
    return int(trim_start)


def _pair(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, Any]:
    """Two inputs as float64 numpy arrays with time last, and a function to rewrap."""
    if isinstance(a, xr.DataArray):
        if "time" not in a.dims:
            raise ValueError(f"{names[0]} must have a 'time' dimension, got dims {a.dims}")
        order = (*[d for d in a.dims if d != "time"], "time")
        if isinstance(b, xr.DataArray):
            try:
                a_al, b_al = xr.align(a, b, join="exact")
            except ValueError as exc:
                raise ValueError(f"{names[1]} does not align with {names[0]}: {exc}") from None
            if set(b.dims) != set(a.dims):
                raise ValueError(f"{names[1]} must have the dims of {names[0]} {a.dims}, "
                                 f"got {b.dims}")
            bv = b_al.transpose(*order).values
        else:
            a_al = a
            bv = np.asarray(b)
            if bv.shape != a.shape:
                raise ValueError(f"{names[1]} must have the shape of {names[0]} {a.shape}, "
                                 f"got {bv.shape}")
            bv = np.moveaxis(bv, a.dims.index("time"), -1)
        av = a_al.transpose(*order).values
        template = a_al.transpose(*order)

        def wrap(x: np.ndarray, dims: tuple[str, ...] = order) -> xr.DataArray:
            if dims == order:
                return template.copy(data=x).transpose(*a.dims)
            return xr.DataArray(x, dims=dims,
                                coords={k: v for k, v in template.coords.items()
                                        if "time" not in v.dims})
    else:
        av, bv = np.asarray(a), np.asarray(b)
        if av.ndim == 0:
            raise ValueError(f"{names[0]} must be (roi, time) or (time,), got a scalar")
        if bv.shape != av.shape:
            raise ValueError(f"{names[1]} must have the shape of {names[0]} {av.shape}, "
                             f"got {bv.shape}")

        def wrap(x: np.ndarray, dims: tuple[str, ...] = ()) -> np.ndarray:
            return x
    if not (np.issubdtype(av.dtype, np.number) and np.issubdtype(bv.dtype, np.number)):
        raise ValueError(f"{names[0]} and {names[1]} must be numeric, "
                         f"got {av.dtype} and {bv.dtype}")
    return np.array(av, dtype=np.float64), np.array(bv, dtype=np.float64), wrap


def _safe_divide(num: np.ndarray, den: np.ndarray, what: str, trim: int
                 ) -> tuple[np.ndarray, int]:
    """``num / den`` with NaN where ``den`` is <= 0, tiny or not finite.

    Warns with the number of such values (and ROIs) after the first ``trim``
    frames, and returns that number.
    """
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN ROI
        scale = np.nanmax(np.abs(np.where(np.isfinite(den), den, np.nan)), axis=-1,
                          keepdims=True)
        scale = np.where(np.isfinite(scale), scale, 0.0)
        bad = ~np.isfinite(den) | (den <= 0) | (den <= _TINY * scale)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=~bad)
    bad = bad[..., trim:]
    n_bad = int(bad.sum())
    if n_bad:
        rois = int(bad.reshape(-1, bad.shape[-1]).any(axis=-1).sum())
        warnings.warn(
            f"{what}: {n_bad} value(s) in {rois} ROI(s) have a baseline_raw <= 0, tiny or "
            "not finite; set to NaN", CalimWarning, stacklevel=3)
    return out, n_bad


# ------------------------------------------------------------------ noise


def _check_threshold(quiet_threshold: Any) -> None:
    if isinstance(quiet_threshold, bool) \
            or not isinstance(quiet_threshold, int | float | np.integer | np.floating) \
            or not (np.isfinite(quiet_threshold) and quiet_threshold > 0):
        raise ValueError(f"quiet_threshold must be a finite number > 0, got {quiet_threshold!r}")


# ------------------------------------------------------------------ normalize


def normalize(
    corrected: Any,
    baseline_raw: Any,
    /,
    *,
    method: str = "dff",
    trim_start: int = 0,
    quiet_threshold: float = 2.5,
) -> tuple[Any, dict[str, Any]]:
    """Normalize drift-corrected traces by one of the three named methods.

    Parameters
    ----------
    corrected : array_like or xarray.DataArray, shape (roi, time) or (time,)
        ``signal - baseline`` (SPEC §2 step 5), in camera counts. A DataArray
        needs a ``time`` dimension; time is the last axis of an array.
    baseline_raw : array_like or xarray.DataArray, same shape as ``corrected``
        arPLS baseline of each ROI's raw trace, in camera counts. Not used by
        ``"zscore"`` (but checked).
    method : {"dff", "session", "zscore"}, keyword-only
        ``"dff"``: ``corrected / baseline_raw`` frame by frame.
        ``"session"``: ``corrected / S``, ``S`` = median over ROIs of the
        time-mean of ``baseline_raw`` (one scale for all ROIs of the input,
        which should be one session).
        ``"zscore"``: ``corrected / sigma`` per ROI, ``sigma`` from
        :func:`calim_helpers.noise.noise_sigma`. Default is ``"dff"``.
    trim_start : int, keyword-only
        Number of leading (downsampled) frames set to NaN in the output; they
        are also left out of ``S`` and ``sigma``. Default is 0.
    quiet_threshold : float, keyword-only
        ``clip`` of :func:`calim_helpers.noise.noise_sigma`, in noise sigmas,
        > 0: excursions reaching it are transients, not noise; only used by
        ``"zscore"``. Default is 2.5 (that function's default, so that the
        z-score and event detection share one sigma).

    Returns
    -------
    norm : numpy.ndarray or xarray.DataArray, float64
        Same shape, dims and coordinates as ``corrected``; dimensionless. NaN
        in the first ``trim_start`` frames and where a guard applies.
    info : dict
        ``"method"``, ``"trim_start"``, ``"n_guarded"`` (values set to NaN by
        a guard, trimmed frames not counted) and, per method,
        ``"session_scale"`` (``S``, counts), or ``"sigma"`` (per ROI, counts),
        ``"n_quiet"``, ``"quiet_converged"`` (per ROI) and ``"quiet_threshold"``
        (see :func:`calim_helpers.noise.noise_sigma`).

    Raises
    ------
    ValueError
        For an unknown ``method``, a bad ``trim_start`` (negative or not below
        the number of frames), a ``quiet_threshold`` that is not > 0 or inputs
        of different shapes.

    Warns
    -----
    CalimWarning
        ``"dff"``: frames whose ``baseline_raw`` is <= 0, tiny (<= 1e-6 × the
        ROI's largest ``|baseline_raw|``) or not finite give NaN; ``"session"``:
        a scale ``S`` that is not > 0 gives all NaN; ``"zscore"``: ROIs with
        zero (or tiny, or NaN) ``sigma`` give NaN. The warning says how many
        values / ROIs.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")
    c, b, wrap = _pair(corrected, baseline_raw, ("corrected", "baseline_raw"))
    trim = _check_trim(trim_start, c.shape[-1])
    keep = (slice(None),) * (c.ndim - 1) + (slice(trim, None),)
    info: dict[str, Any] = {"method": method, "trim_start": trim}
    if method == "dff":
        norm, n_guarded = _safe_divide(c, b, "normalize(method='dff')", trim)
    elif method == "session":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(b[keep], axis=-1)
            scale = float(np.nanmedian(means))
        info["session_scale"] = scale
        if np.isfinite(scale) and scale > 0:
            norm, n_guarded = c / scale, 0
        else:
            warnings.warn(f"normalize(method='session'): session scale S = {scale} is not "
                          "> 0; all values set to NaN", CalimWarning, stacklevel=2)
            norm, n_guarded = np.full_like(c, np.nan), int(c[keep].size)
    else:
        _check_threshold(quiet_threshold)
        est = noise_sigma(c[keep], clip=float(quiet_threshold))
        sigma = np.asarray(est.sigma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scale = np.nanmax(np.abs(c[keep]), axis=-1)
        bad = ~np.isfinite(sigma) | (sigma <= _TINY * np.where(np.isfinite(scale), scale, 0))
        if bad.any():
            warnings.warn(f"normalize(method='zscore'): {int(bad.sum())} ROI(s) have zero, "
                          "tiny or undefined noise sigma; set to NaN", CalimWarning,
                          stacklevel=2)
        norm = np.where(bad[..., None], np.nan, c / np.where(bad, 1.0, sigma)[..., None])
        n_guarded = int(np.broadcast_to(bad[..., None], c[keep].shape).sum())
        dims = tuple(d for d in getattr(corrected, "dims", ()) if d != "time")
        info.update(sigma=wrap(sigma, dims), n_quiet=wrap(np.asarray(est.n_quiet), dims),
                    quiet_converged=wrap(np.asarray(est.converged), dims),
                    quiet_threshold=float(quiet_threshold))
    norm[..., :trim] = np.nan
    info["n_guarded"] = n_guarded
    out = wrap(norm)
    if isinstance(out, xr.DataArray):
        out.attrs = {"normalize": method, "trim_start": trim}
        out.name = method
    return out, info


def dff_raw(raw: Any, baseline_raw: Any, /, *, trim_start: int = 0) -> Any:
    """Classic ΔF/F of the raw trace: ``(raw - baseline_raw) / baseline_raw``.

    Parameters
    ----------
    raw : array_like or xarray.DataArray, shape (roi, time) or (time,)
        ROI traces, in camera counts.
    baseline_raw : array_like or xarray.DataArray, same shape as ``raw``
        arPLS baseline of ``raw``, in camera counts.
    trim_start : int, keyword-only
        Number of leading frames set to NaN. Default is 0.

    Returns
    -------
    numpy.ndarray or xarray.DataArray, float64
        Same shape, dims and coordinates as ``raw``; dimensionless.

    Raises
    ------
    ValueError
        If the shapes differ or ``trim_start`` is bad.

    Warns
    -----
    CalimWarning
        Frames whose ``baseline_raw`` is <= 0, tiny or not finite give NaN.
    """
    r, b, wrap = _pair(raw, baseline_raw, ("raw", "baseline_raw"))
    trim = _check_trim(trim_start, r.shape[-1])
    out, _ = _safe_divide(r - b, b, "dff_raw", trim)
    out[..., :trim] = np.nan
    res = wrap(out)
    if isinstance(res, xr.DataArray):
        res.attrs = {"trim_start": trim}
        res.name = "dff_raw"
    return res
