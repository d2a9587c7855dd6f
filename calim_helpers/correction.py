"""Drift correction and normalization of one session's traces (SPEC §2 steps 5-7).

From the ROI traces and the background trace of :func:`calim_helpers.traces.extract_traces`
to the normalized signal, in one call::

    signal    = raw - background
    baseline  = arPLS(signal)           (Baek et al. 2015, calim_helpers.baseline.arpls)
    corrected = signal - baseline       (the lab's "clean" green curve)
    baseline_raw = arPLS(raw)
    norm      = normalize(corrected, baseline_raw)   (dff | session | zscore)

Each ROI keeps the status of its two arPLS fits (``fit_status``, ``fit_status_raw``:
``"converged"``, ``"stable"`` or ``"failed"``); :func:`fit_status` reads them.

Examples
--------
>>> import numpy as np, xarray as xr
>>> t = np.arange(60.0)
>>> raw = 500 + 50 * np.exp(-t / 30) + 80 * (np.abs(t - 30) < 2)
>>> tr = xr.Dataset({"raw": (("roi", "time"), raw[None]),
...                  "background": ("time", 100 + 0 * t)},
...                 coords={"roi": [1], "time": t})
>>> out = correct_traces(tr, lam=10.0, cutoff_s=None, tol=1e-5, max_iter=100,
...                      normalize="dff", trim_start=0)
>>> int(out["dff"].sel(roi=1).argmax("time")) in (29, 30, 31)
True
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from calim_helpers import baseline as bl
from calim_helpers import normalize as nm
from calim_helpers import traces
from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = ["correct_traces", "fit_status", "resolve_lam"]

# trace attributes passed on to the result
_KEEP_ATTRS = ("experiment", "date", "session", "pixel_size_um", "frame_interval_s_downsampled",
               "frame_interval_s", "native_shape", "background_fraction", "seed",
               "n_background_pixels",
               "roi_file", "source_files", "roi_source", "shift_rms_px",
               "neuropil_method", "neuropil_coefficient", "neuropil_inner_um",
               "neuropil_width_um", "neuropil_min_pixels", "neuropil_pixel_size_um",
               "neuropil_pixel_size_source", "neuropil_quiet_fraction", "neuropil_fit_degree",
               "neuropil_formula", "neuropil_demix_dilation_um", "neuropil_demix_surround_um",
               "neuropil_demix_n_iter")


def resolve_lam(*, lam: float, cutoff_s: float | None,
                frame_interval_s: float | None) -> tuple[float, float]:
    """Return ``(lam, cutoff_s)``: λ and the cut-off period it gives on this time base.

    Parameters
    ----------
    lam : float
        arPLS smoothness on the (downsampled) time base; used when ``cutoff_s`` is None.
    cutoff_s : float or None
        Cut-off period in seconds; when set, λ follows from it
        (:func:`calim_helpers.baseline.lam_from_cutoff`).
    frame_interval_s : float or None
        Seconds per (downsampled) frame; None when unknown.

    Returns
    -------
    lam : float
    cutoff_s : float
        NaN when the frame interval is unknown and λ was given.

    Raises
    ------
    CalimInputError
        ``cutoff_s`` is set but the frame interval is unknown.
    """
    if cutoff_s is not None:
        if not frame_interval_s:
            raise CalimInputError("arpls.cutoff_s needs a known frame interval; set arpls.lam")
        return bl.lam_from_cutoff(float(cutoff_s), frame_interval_s), float(cutoff_s)
    cut = bl.cutoff_from_lam(float(lam), frame_interval_s) if frame_interval_s else float("nan")
    return float(lam), cut


def correct_traces(
    tr: xr.Dataset,
    /,
    *,
    lam: float,
    cutoff_s: float | None,
    tol: float,
    max_iter: int,
    normalize: str,
    trim_start: int,
) -> xr.Dataset:
    """Drift-correct and normalize one session's traces.

    Parameters
    ----------
    tr : xarray.Dataset
        ``raw`` (roi, time) and ``background`` (time) as
        :func:`calim_helpers.traces.extract_traces` returns them, and ``neuropil``
        (roi, time) with a neuropil correction; attribute
        ``frame_interval_s_downsampled`` (s per frame) when known. The ``signal``
        fitted is :func:`calim_helpers.traces.background_subtracted`: ``raw -
        background``, minus the neuropil share when there is a ``neuropil``.
    lam, cutoff_s : float, float or None
        arPLS smoothness, or the cut-off period in s it is computed from
        (:func:`resolve_lam`; both are recorded).
    tol : float
        Stop when the relative change of the weights falls below this.
    max_iter : int
        At most this many reweighting iterations.
    normalize : {"dff", "session", "zscore"}
        Normalization of the corrected signal (:func:`calim_helpers.normalize.normalize`).
    trim_start : int
        Leading frames set to NaN in the ratios (``norm``, ``dff``, ``dff_raw``).

    Returns
    -------
    xarray.Dataset
        ``raw``, ``background``, ``signal``, ``baseline``, ``corrected``,
        ``baseline_raw``, ``dff = corrected / baseline_raw``, ``dff_raw = (raw -
        baseline_raw) / baseline_raw``, ``norm`` (the chosen normalization), all
        float32 (roi, time) except ``background`` (time); per ROI, for the fit of
        ``signal`` and (suffix ``_raw``) of ``raw``: ``converged`` and
        ``converged_raw`` (bool, ``tol`` reached), ``n_iter`` and ``n_iter_raw``
        (int32), ``fit_status`` and ``fit_status_raw`` (str: ``"converged"``,
        ``"stable"`` -- ``max_iter`` reached but the baseline no longer moves -- or
        ``"failed"``, see :func:`calim_helpers.baseline.arpls`), ``weight_change``
        and ``weight_change_raw`` (float64, the final relative weight change, NaN when
        it could not be computed); attrs record ``lam``, ``cutoff_s`` (None when
        unknown), ``tol``, ``max_iter``, ``normalize``, ``trim_start`` and
        ``session_scale``; with a neuropil correction also ``neuropil`` (roi, time),
        ``neuropil_pixels``, ``neuropil_outer_um`` and ``neuropil_source`` (roi), the
        ``neuropil_*`` attrs and, for ``fitted``, the coordinates
        ``neuropil_coefficient`` and ``neuropil_fit_status`` (roi). The ratios are NaN
        where the baseline is not positive (with a CalimWarning).
    """
    frame_s = tr.attrs.get("frame_interval_s_downsampled")
    lam, cutoff = resolve_lam(lam=lam, cutoff_s=cutoff_s, frame_interval_s=frame_s)
    raw = tr["raw"].transpose("roi", "time").values.astype(np.float64)
    bg = tr["background"].values.astype(np.float64)
    signal_da = traces.background_subtracted(tr)  # raw - background (- neuropil share)
    signal = signal_da.values
    _warn_neuropil_fits(signal_da, tr.attrs.get("neuropil_coefficient"))
    base, info = bl.arpls(signal, lam=lam, tol=tol, max_iter=max_iter)
    base_raw, info_raw = bl.arpls(raw, lam=lam, tol=tol, max_iter=max_iter)
    corrected = signal - base
    norm, ninfo = nm.normalize(corrected, base_raw, method=normalize, trim_start=trim_start)
    dff = norm if normalize == "dff" else nm.normalize(corrected, base_raw, method="dff",
                                                       trim_start=trim_start)[0]
    f32 = np.float32
    coords = {k: tr.coords[k] for k in ("roi", "roi_name", "time") if k in tr.coords}
    coords["frame"] = ("time", np.arange(raw.shape[1]))
    two = ("roi", "time")
    out = xr.Dataset({
        "raw": (two, raw.astype(f32)), "background": ("time", bg.astype(f32)),
        "signal": (two, signal.astype(f32)), "baseline": (two, base.astype(f32)),
        "corrected": (two, corrected.astype(f32)), "baseline_raw": (two, base_raw.astype(f32)),
        "dff": (two, np.asarray(dff, dtype=f32)),
        "dff_raw": (two, np.asarray(nm.dff_raw(raw, base_raw, trim_start=trim_start),
                                    dtype=f32)),
        "norm": (two, np.asarray(norm, dtype=f32)),
        "converged": ("roi", np.atleast_1d(info["converged"])),
        "n_iter": ("roi", np.atleast_1d(info["n_iter"]).astype(np.int32)),
        "converged_raw": ("roi", np.atleast_1d(info_raw["converged"])),
        "n_iter_raw": ("roi", np.atleast_1d(info_raw["n_iter"]).astype(np.int32)),
        "fit_status": ("roi", np.atleast_1d(info["status"]).astype(str)),
        "fit_status_raw": ("roi", np.atleast_1d(info_raw["status"]).astype(str)),
        "weight_change": ("roi", np.atleast_1d(info["weight_change"]).astype(np.float64)),
        "weight_change_raw": ("roi", np.atleast_1d(info_raw["weight_change"])
                              .astype(np.float64)),
    }, coords=coords)
    if "neuropil" in tr:
        out["neuropil"] = (two, tr["neuropil"].transpose("roi", "time").values.astype(f32))
        for name in ("neuropil_coefficient", "neuropil_fit_status"):
            if name in signal_da.coords:  # fitted: one coefficient per ROI
                out = out.assign_coords({name: ("roi", signal_da[name].values)})
        for name in ("neuropil_pixels", "neuropil_outer_um", "neuropil_source"):
            if name in tr:
                out[name] = ("roi", tr[name].values)
    scale = ninfo.get("session_scale")
    out.attrs = {k: v for k, v in tr.attrs.items() if k in _KEEP_ATTRS} | {
        "lam": float(lam), "cutoff_s": cutoff if np.isfinite(cutoff) else None,
        "tol": float(tol), "max_iter": int(max_iter), "normalize": normalize,
        "trim_start": int(trim_start),
        "session_scale": None if scale is None else float(scale),
    }
    return out


def _warn_neuropil_fits(signal: xr.DataArray, fallback: Any, /) -> None:
    """Name the ROIs whose fitted neuropil coefficient fell back or was clipped."""
    if "neuropil_fit_status" not in signal.coords:
        return
    status = np.asarray(signal["neuropil_fit_status"].values)
    numbers = signal["roi"].values if "roi" in signal.coords else np.arange(1, status.size + 1)
    for kind, why in (("fallback", f"no fit (too few quiet frames or a flat ring): "
                                   f"coefficient {fallback} used"),
                      ("clipped", "fitted coefficient outside [0, 1], clipped")):
        rois = numbers[status == kind]
        if rois.size:
            warnings.warn(f"neuropil fitted: {rois.size} ROI(s) {why}: ROI "
                          + ", ".join(str(int(r)) for r in rois[:20])
                          + (", ..." if rois.size > 20 else ""), CalimWarning, stacklevel=3)


def fit_status(ds: xr.Dataset, /, *, raw: bool = False) -> np.ndarray:
    """Per-ROI status of the arPLS fits of a result Dataset, as strings.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`correct_traces` (or one ROI of it).
    raw : bool, optional
        The fit of ``raw`` (``fit_status_raw``) instead of that of ``signal``
        (``fit_status``). Default is False.

    Returns
    -------
    numpy.ndarray of str, shape of ``ds["converged"]``
        ``"converged"``, ``"stable"`` or ``"failed"`` (see
        :func:`calim_helpers.baseline.arpls`). A Dataset written before the status was
        stored has only ``converged``: True reads as ``"converged"``, False as
        ``"failed"`` (what those results flagged).

    Raises
    ------
    ValueError
        If ``ds`` has neither the status nor ``converged`` of that fit.

    Examples
    --------
    >>> import xarray as xr
    >>> old = xr.Dataset({"converged": ("roi", [True, False])})
    >>> fit_status(old).tolist()
    ['converged', 'failed']
    """
    suffix = "_raw" if raw else ""
    if f"fit_status{suffix}" in ds:
        return np.asarray(ds[f"fit_status{suffix}"].values).astype(str)
    if f"converged{suffix}" in ds:
        return np.where(np.asarray(ds[f"converged{suffix}"].values, dtype=bool),
                        "converged", "failed")
    raise ValueError(f"ds has neither fit_status{suffix} nor converged{suffix}")
