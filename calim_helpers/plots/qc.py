"""Quality-control figures: make a bad ROI, a motion jump or a failed fit visible at a glance.

- :func:`qc_figure` — one page per session (A4 portrait): ROIs over the MIP
  (flagged in red), motion-correction shifts, background trace, per-ROI SNR and a
  summary box
- :func:`qc_session_figure` — arPLS fit status, background and per-ROI baselines
  of a session Dataset

Only a *failed* arPLS fit is red. A fit that reached ``max_iter`` with a stable
baseline (status ``"stable"``, see :func:`calim_helpers.baseline.arpls`) is as good as
a converged one: it is counted in grey text ("max_iter reached, stable"), never flagged.

Every time axis is in seconds (``time_unit="s"``, the default) or, when the frame
interval is unknown, in frames (``time_unit="frame"``); a figure never mixes the two.
"""

from __future__ import annotations

import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from calim_helpers import correction
from calim_helpers.baseline import FIT_STATUSES
from calim_helpers.plots._style import (
    _INTENSITY_LABEL,
    _PX,
    COLORS,
    _bool_mask,
    _check_time_unit,
    _check_vars,
    _coord_time,
    _count,
    _float_array,
    _join_title,
    _label_rois,
    _nanmean,
    _plot_shifts,
    _series,
    _shift_values,
    _tick_step,
    _time_extent,
    _time_label,
    _values,
)

__all__ = ["qc_figure", "qc_session_figure"]

_OK_OUTLINE = "yellow"
_BAD_OUTLINE = "red"
_NOTE = "0.45"  # grey of neutral notes (stable fits)
_STATUS_COLORS = {"converged": COLORS["corrected"], "stable": "0.6", "failed": COLORS["warn"]}


def _status_array(x: object, name: str, n: int, /) -> np.ndarray:
    """Fit status ``(n,)`` as strings; booleans (``converged``): True converged, False failed."""
    values = x.values if isinstance(x, xr.DataArray) else x
    a = np.array(values, copy=True)
    if a.shape == (n,) and a.dtype == bool:
        return np.where(a, "converged", "failed")
    if a.shape != (n,) or a.dtype.kind not in "UO" or not np.isin(a, FIT_STATUSES).all():
        raise ValueError(f"{name} must hold {', '.join(FIT_STATUSES)} (or be boolean, "
                         f"converged or not) with shape ({n},), got {a.dtype} {a.shape}")
    return a.astype(str)


def _roi_list(numbers: np.ndarray, /, *, most: int = 12) -> str:
    shown = ", ".join(str(int(r)) for r in numbers[:most])
    return shown + (f", … (+{numbers.size - most})" if numbers.size > most else "")


def qc_figure(
    mip: object,
    labels: object,
    shifts: object,
    background: object,
    fit_status: object,
    snr: object,
    /,
    *,
    fit_status_raw: object = None,
    snr_threshold: float = 3.0,
    bad_frames: object = None,
    title: str = "",
    time_unit: str = "s",
) -> Figure:
    """One-page quality control of a session (A4 portrait).

    Panels: the MIP with each ROI outlined — red when flagged (SNR below
    ``snr_threshold`` or missing, or an arPLS fit failed), yellow otherwise; the
    motion-correction shifts with bad frames shaded; the background trace; per-ROI
    SNR bars with the threshold; and a text box counting failed fits (red),
    fits that reached ``max_iter`` with a stable baseline (grey, not flagged),
    low-SNR ROIs, flagged ROIs and bad frames. ROI numbers sit at the ROI
    centroids, bold with a dark halo, nudged apart when ROIs are close. The shifts
    (native frames) and the background (downsampled frames) are drawn on one time
    axis, in ``time_unit``: both need a ``time`` coordinate unless
    ``time_unit="frame"``.

    Parameters
    ----------
    mip : numpy.ndarray, shape (y, x)
        Maximum-intensity projection (counts).
    labels : numpy.ndarray of int, shape (y, x)
        ROI label image on the MIP's grid: 0 outside ROIs, ``n`` inside ROI ``n``.
    shifts : xarray.DataArray or numpy.ndarray, shape (time, 2), or None
        Rigid shifts ``(dy, dx)`` in pixels (see
        :func:`calim_helpers.plots.shifts_figure`), or None when the session was
        not motion-corrected.
    background : xarray.DataArray or numpy.ndarray, shape (time,)
        Background trace (counts), a DataArray with a ``time`` coordinate in
        ``time_unit``; a plain array (plotted against its index) only with
        ``time_unit="frame"``.
    fit_status : array_like of str, shape (roi,)
        Status of each ROI's arPLS fit of ``signal`` (ROI ``n`` at position
        ``n - 1``): ``"converged"``, ``"stable"`` or ``"failed"`` (the result's
        ``fit_status``). A boolean array (``converged``, as earlier versions took)
        reads True as converged and False as failed.
    snr : array_like of float, shape (roi,)
        Signal-to-noise ratio of each ROI.
    fit_status_raw : array_like of str, shape (roi,), optional
        The same for the fit of ``raw`` (the ΔF/F denominator); when given, the
        counts show both fits (``signal/raw``) and a failed fit of either flags the
        ROI. Default is None (the fit of ``signal`` only).
    snr_threshold : float, optional
        ROIs with ``snr < snr_threshold`` (or NaN) are flagged. Default is 3.0.
    bad_frames : array_like of bool, shape (time,) of ``shifts``, optional
        Frames flagged as bad (e.g. a motion jump). Default is None.
    title : str, optional
        Experiment, date and session. Default is ``""``.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinates: ``"s"``, or ``"frame"`` when the frame
        interval is unknown (every time axis is then labelled "frame"). Default
        is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Five axes: ``mip``, ``shifts``, ``background``, ``snr``, ``summary``.

    Raises
    ------
    ValueError
        If shapes or values do not match (``labels`` vs ``mip``, ``fit_status``
        or ``fit_status_raw`` vs ``snr``,
        ROI numbers in ``labels`` beyond the number of ROIs, ``bad_frames`` vs
        ``shifts``), or ``shifts`` or ``background`` has no time coordinate while
        ``time_unit="s"``.
    """
    time_unit = _check_time_unit(time_unit)
    image = _float_array(mip, "mip", 2)
    lab = np.array(labels.values if isinstance(labels, xr.DataArray) else labels, copy=True)
    if lab.shape != image.shape or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an int image of the mip's shape {image.shape}, "
                         f"got {lab.dtype} {lab.shape}")
    s = _float_array(snr, "snr", 1)
    n_roi = s.size
    fits = {"signal": _status_array(fit_status, "fit_status", n_roi)}
    if fit_status_raw is not None:
        fits["raw"] = _status_array(fit_status_raw, "fit_status_raw", n_roi)
    if lab.size and lab.max() > n_roi:
        raise ValueError(f"labels holds ROI numbers up to {int(lab.max())} but snr and "
                         f"fit_status have {n_roi} entries")
    bg, bg_time = _series(background, "background", time_unit)
    low = ~(s >= snr_threshold)
    failed = np.logical_or.reduce([f == "failed" for f in fits.values()])
    stable = np.logical_or.reduce([f == "stable" for f in fits.values()]) & ~failed
    flagged = low | failed
    rois = np.arange(1, n_roi + 1)

    fig = Figure(figsize=(8.27, 11.69), layout="constrained")
    axd = fig.subplot_mosaic([["mip", "mip"], ["shifts", "shifts"],
                              ["background", "background"], ["snr", "summary"]],
                             height_ratios=[5.0, 1.5, 1.3, 1.8], width_ratios=[2.6, 1])
    ax = axd["mip"]
    lo, hi = np.nanpercentile(image, [1, 99.8]) if image.size else (0, 1)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
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
        values, time = _shift_values(shifts, time_unit)
        mask = None if bad_frames is None else _bool_mask(bad_frames, "bad_frames",
                                                           values.shape[0])
        n_bad = 0 if mask is None else int(mask.sum())
        _plot_shifts(ax, time, values, mask, magnitude=True)
        mag = np.hypot(values[:, 0], values[:, 1])
        max_shift = (f"{np.nanmax(mag):.2f} {_PX}" if np.isfinite(mag).any() else "n/a")
        spans = [_time_extent(t) for t in (time, bg_time) if t.size]  # one time axis
        if spans:
            ax.set_xlim(min(a for a, _ in spans), max(b for _, b in spans))
        ax.set_xlabel(_time_label(time_unit))
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, ncols=4,
                  frameon=False, borderaxespad=0.1)
    ax.set_ylabel(f"shift ({_PX})")
    ax.set_title(f"motion correction (max |shift| {max_shift})", fontsize=10, loc="left")

    ax = axd["background"]
    ax.plot(bg_time, bg, color=COLORS["background"], lw=1.1)
    if bg_time.size:
        ax.set_xlim(*(axd["shifts"].get_xlim() if shifts is not None
                      else _time_extent(bg_time)))
    ax.set_xlabel(_time_label(time_unit))
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
        if failed[i]:
            tick.set_color(COLORS["warn"])
            tick.set_fontweight("bold")
    ax.set_xlim(0.3, n_roi + 0.7)
    # an absurd SNR (a noise of ~0, e.g. on a trace of a few frames) must not flatten the
    # rest: bars above 100 x the threshold (and 4 x the median) leave the axis, labelled
    limit = max(100.0 * snr_threshold,
                4.0 * float(np.median(heights)) if heights.size else 0.0)
    shown = heights[heights <= limit]
    top = max(float(shown.max(initial=0.0)), snr_threshold)
    for r, h in zip(rois, heights, strict=True):
        if h > limit:
            ax.annotate(f"↑{h:.3g}", (r, 1.2 * top), ha="center", va="bottom", fontsize=6,
                        zorder=6, bbox={"fc": "white", "ec": "none", "pad": 0.5})
    ax.set_ylim(0, 1.45 * top if top > 0 else 1.0)
    ax.set_xlabel("ROI (red number: fit failed)")
    ax.set_ylabel("SNR")
    ax.set_title("per-ROI SNR (red: flagged)", fontsize=10)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0],
                       Patch(color=COLORS["warn"], label="flagged")],
              loc="upper left", fontsize=7, ncols=2)

    ax = axd["summary"]
    ax.set_axis_off()
    def per_fit(status: str) -> str:
        return "/".join(str(int((f == status).sum())) for f in fits.values())

    lines = [  # (text, colour): red for problems, grey for neutral notes
        (f"{_count(n_roi, 'ROI')}", None),
        ("arPLS fits, signal/raw:" if len(fits) > 1 else "", None),
        (f"failed fits: {per_fit('failed')}", "warn" if failed.any() else None),
        (f"  ROI {_roi_list(rois[failed])}" if failed.any() else "", "warn"),
        (f"max_iter reached, stable: {per_fit('stable')}", "note"),
        (f"  ROI {_roi_list(rois[stable])}" if stable.any() else "", "note"),
        (f"SNR < {snr_threshold:g}: {int(low.sum())}", "warn" if low.any() else None),
        (f"  ROI {_roi_list(rois[low])}" if low.any() else "", "warn"),
        (f"flagged ROIs: {int(flagged.sum())}", "warn" if flagged.any() else None),
        (f"bad frames: {n_bad}", "warn" if n_bad > 0 else None),
        (f"max |shift|: {max_shift}" if shifts is not None else "not motion-corrected",
         None),
    ]
    parts = [(part, kind) for text, kind in lines if text
             for part in textwrap.wrap(text, 30, subsequent_indent="    ")]
    step = min(0.09, 0.98 / max(len(parts), 1))  # many lines: smaller, still in the box
    y = 0.98
    for part, kind in parts:
        ax.text(0.0, y, part, transform=ax.transAxes, ha="left", va="top",
                fontsize=9 if step >= 0.09 else 8,
                color={"warn": COLORS["warn"], "note": _NOTE}.get(kind, "black"),
                fontweight="bold" if kind == "warn" else "normal")
        y -= step
    ax.set_title("summary", fontsize=10, loc="left")
    fig.suptitle(_join_title(title, "quality control"), fontsize=12)
    if lab.size and lab.max() > 0:
        fig.draw_without_rendering()  # the MIP's final size sets the label spacing
        colors = [_BAD_OUTLINE if f else _OK_OUTLINE for f in flagged]
        _label_rois(axd["mip"], lab, colors, fontsize=7.0 if n_roi <= 40 else 6.0,
                    outline_width=0.9)
    return fig


def qc_session_figure(ds: xr.Dataset, /, *, time_unit: str = "s") -> Figure:
    """Quality control of one session: arPLS fit status, background, per-ROI baselines.

    Panels: counts of converged, stable (``max_iter`` reached, the baseline no longer
    moving; grey) and failed (red) arPLS fits, of ``signal`` and of ``raw``; the
    background trace; the time-mean of ``baseline_raw`` (the ΔF/F denominator F0)
    and of ``baseline`` per ROI, with the ROI numbers of failed fits in red.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with ``background``, ``baseline``, ``baseline_raw``,
        ``fit_status`` and ``fit_status_raw`` (or, from earlier versions,
        ``converged`` and ``converged_raw``: not converged then counts as failed).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate: ``"s"``, or ``"frame"`` when the frame
        interval is unknown. Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes.

    Raises
    ------
    ValueError
        If a variable is missing or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(ds, ["background", "baseline", "baseline_raw"], "ds")
    try:
        fits = {"signal": correction.fit_status(ds), "raw": correction.fit_status(ds, raw=True)}
    except ValueError as exc:
        raise ValueError(f"ds lacks a fit status: {exc}") from None
    a = ds.attrs
    t = _coord_time(ds, "ds", time_unit)
    n_roi = ds.sizes["roi"]
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axd = fig.subplot_mosaic([["conv", "background"], ["baseline", "baseline"]],
                             width_ratios=[1, 2])
    fig.suptitle(f"{a.get('experiment', '?')} · {a.get('date', '?')} · "
                 f"session {a.get('session', '?')}: quality control ({n_roi} ROIs)")

    ax = axd["conv"]
    x = np.arange(len(fits))
    labels = {"converged": "converged", "stable": "max_iter reached, stable",
              "failed": "failed"}
    for j, status in enumerate(FIT_STATUSES):
        counts = [int((f == status).sum()) for f in fits.values()]
        bars = ax.bar(x + 0.27 * (j - 1), counts, width=0.27, color=_STATUS_COLORS[status],
                      label=labels[status])
        ax.bar_label(bars, fontsize=8, color=_NOTE if status == "stable" else "black")
    ax.set_xticks(x, [f"fit of {k}" for k in fits])
    ax.set_ylabel("number of ROIs")
    ax.set_ylim(0, max(n_roi, 1) * 1.45)
    ax.set_title("arPLS fits", fontsize=10)
    ax.legend(loc="upper right", fontsize=7)

    ax = axd["background"]
    ax.plot(t, _values(ds["background"]), color=COLORS["background"], lw=1.2)
    ax.set_xlabel(_time_label(time_unit))
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
    failed = (fits["signal"] == "failed") | (fits["raw"] == "failed")
    for tick, i in zip(ax.get_xticklabels(), pos[::step], strict=True):
        if failed[i]:
            tick.set_color(COLORS["warn"])
            tick.set_fontweight("bold")
    ax.set_xlim(-0.7, n_roi - 0.3)
    ax.set_xlabel("ROI (red: an arPLS fit failed)")
    ax.set_ylabel(f"time-mean {_INTENSITY_LABEL}")
    ax.set_title("per-ROI baselines", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    return fig
