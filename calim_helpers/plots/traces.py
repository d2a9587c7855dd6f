"""Figures of one session's traces (a Dataset with dims ``roi`` and ``time``, SPEC §2).

- :func:`roi_raw_figure` — ``<session>_mask<n>.png``: raw ROI trace, background,
  ROI − background and its arPLS baseline
- :func:`roi_clean_figure` — ``<session>_mask_arpls_clean_<n>.png``: corrected
  signal and background
- :func:`roi_norm_figure` — ``<session>_mask_arpls_NORM_<n>.png``: normalized signal
- :func:`traces_figure` — all raw ROI traces and the background of a session

Colours follow :data:`calim_helpers.plots.COLORS`: raw red, background blue,
ROI − background purple, corrected green, baseline black dashed. The time axis is
the Dataset's ``time`` coordinate, in seconds (``time_unit="s"``) or in frames
(``time_unit="frame"``, when the frame interval is unknown). A failed arPLS fit
(``fit_status == "failed"``) turns a ROI figure's title and frame red; a fit that
reached ``max_iter`` with a stable baseline is only noted, in grey, under the title.

Examples
--------
>>> import numpy as np, xarray as xr
>>> tr = xr.Dataset({"raw": (("roi", "time"), np.ones((3, 5))),
...                  "background": ("time", np.zeros(5))},
...                 coords={"time": np.arange(5.0)})
>>> traces_figure(tr, title="demo", time_unit="frame").axes[0].get_xlabel()
'frame'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from calim_helpers import correction
from calim_helpers.plots._style import (
    _INTENSITY_LABEL,
    COLORS,
    _check_time_unit,
    _check_vars,
    _coord_time,
    _count,
    _norm_label,
    _shade_trim,
    _time_extent,
    _time_label,
    _values,
)

__all__ = ["roi_clean_figure", "roi_norm_figure", "roi_raw_figure", "traces_figure"]


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


_NOTE = "0.45"  # grey of neutral notes (stable fits)


def _fit_notes(one: xr.Dataset, which: Sequence[str], /) -> tuple[list[str], list[str]]:
    """Lines on the arPLS fits ``which`` ⊂ {"signal", "raw"}: (failed, stable).

    Uses ``fit_status`` / ``fit_status_raw``; a Dataset without them (earlier
    versions) reads a fit that did not converge as failed. Silent without either.
    """
    failed, stable = [], []
    for fit in which:
        suffix = "" if fit == "signal" else "_raw"
        try:
            status = str(correction.fit_status(one, raw=fit == "raw"))
        except ValueError:
            continue
        n_iter = f"n_iter{suffix}"
        n = int(one[n_iter]) if n_iter in one else "?"
        change = f"weight_change{suffix}"
        if status == "failed":
            failed.append(f"arPLS ({fit}) failed (n_iter = {n})")
        elif status == "stable":
            dw = (f", weight change {float(one[change]):.1e}" if change in one else "")
            stable.append(f"arPLS ({fit}): max_iter reached, stable (n_iter = {n}{dw})")
    return failed, stable


def _set_title(ax, title: str, notes: tuple[list[str], list[str]], /) -> None:
    """Title; red with a warning line and red frame when a fit failed.

    Stable fits (``max_iter`` reached, baseline stable) are noted in small grey text
    just above the axes, under the title; the title and frame keep their colours.
    """
    failed, stable = notes
    pad = 6.0  # points, matplotlib's default
    if stable:
        ax.annotate("\n".join(stable), (0.5, 1.0), xycoords="axes fraction", xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", color=_NOTE,
                    fontsize=7)
        pad = 4.0 + 9.0 * len(stable)  # the title goes above the note (7 pt lines)
    if failed:
        ax.set_title("\n".join([title, *failed]), color=COLORS["warn"], fontsize=10, pad=pad)
        for spine in ax.spines.values():
            spine.set_color(COLORS["warn"])
            spine.set_linewidth(1.5)
    else:
        ax.set_title(title, fontsize=10, pad=pad)


def _baseline_label(ds: xr.Dataset, /) -> str:
    lam = ds.attrs.get("lam")
    return "arPLS baseline" + (f" (λ = {float(lam):g})" if lam is not None else "")


def roi_raw_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
    """Raw ROI trace, background, ROI − background and its arPLS baseline (``<session>_mask<n>``).

    The top panel shows the intensities as measured (ROI mean in red, background in
    blue); the bottom panel the background-subtracted signal (purple) with the arPLS
    baseline fitted to it (black dashed). A failed fit turns the title and frame red
    and says so with its iteration count; a fit that reached ``max_iter`` with a
    stable baseline is noted in grey.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with dims ``(roi, time)`` and variables ``raw``,
        ``background``, ``signal``, ``baseline``; ``fit_status`` (or ``converged``),
        ``n_iter`` and ``weight_change`` if present.
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate: ``"s"``, or ``"frame"`` when the frame
        interval is unknown (the axis is then labelled "frame"). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, a variable is missing or
        ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(ds, ["raw", "background", "signal", "baseline"], "ds")
    one = _select_roi(ds, roi)
    t = _coord_time(ds, "ds", time_unit)
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
    ax_sig.set_xlabel(_time_label(time_unit))
    ax_sig.legend(loc="best", fontsize=8)
    _set_title(ax_raw, _roi_title(ds, one), _fit_notes(one, ["signal"]))
    return fig


def roi_clean_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
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
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, a variable is missing or
        ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(ds, ["corrected", "background"], "ds")
    one = _select_roi(ds, roi)
    t = _coord_time(ds, "ds", time_unit)
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
    bx.set_xlabel(_time_label(time_unit))
    bx.legend(loc="best", fontsize=8)
    _set_title(ax, _roi_title(ds, one), _fit_notes(one, ["signal"]))
    return fig


def roi_norm_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
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
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, ``norm`` is missing or
        ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(ds, ["norm"], "ds")
    one = _select_roi(ds, roi)
    t = _coord_time(ds, "ds", time_unit)
    normalize = ds.attrs.get("normalize", "?")
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    _shade_trim(ax, t, ds.attrs.get("trim_start", 0))
    ax.axhline(0, color="0.6", lw=0.8)
    ax.plot(t, _values(one["norm"]), color=COLORS["corrected"], lw=1.3, label="normalized")
    ax.set_xlim(*_time_extent(t))
    ax.set_ylabel(_norm_label(normalize))
    ax.set_xlabel(_time_label(time_unit))
    if normalize == "session" and "session_scale" in ds.attrs:
        ax.text(0.01, 0.97, f"S = {float(ds.attrs['session_scale']):.4g} counts",
                transform=ax.transAxes, ha="left", va="top", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    fits = ["signal", "raw"] if normalize in ("dff", "session") else ["signal"]
    _set_title(ax, _roi_title(ds, one), _fit_notes(one, fits))
    return fig


def traces_figure(tr: xr.Dataset, /, *, title: str = "", time_unit: str = "s") -> Figure:
    """Raw ROI traces (one line per ROI) and the background trace of one session.

    Parameters
    ----------
    tr : xarray.Dataset
        ``raw`` (roi, time) and ``background`` (time), with a ``time`` coordinate.
    title : str, optional
        Figure title. Default is ``""``.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ValueError
        If a variable is missing or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(tr, ("raw", "background"), "traces")
    time = _coord_time(tr, "traces", time_unit)
    raw = _values(tr["raw"].transpose("roi", "time"))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for k in range(raw.shape[0]):
        ax.plot(time, raw[k], lw=0.8, alpha=0.7, color=COLORS["raw"] if k == 0 else None)
    ax.plot(time, _values(tr["background"]), lw=2, color=COLORS["background"],
            label="background")
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel("mean fluorescence (counts)")
    what = f"{_count(raw.shape[0], 'ROI')} (thin) and background"
    ax.set_title(f"{title}: {what}" if title else what, fontsize=10)
    ax.legend(loc="best")
    return fig
