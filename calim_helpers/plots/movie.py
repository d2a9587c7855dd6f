"""Figures of the movie itself: projections, motion correction, ROIs over the MIP.

- :func:`load_figure` — native MIP beside the mean downsampled frame
- :func:`shifts_figure` — estimated rigid shifts and their magnitude per frame
- :func:`registration_figure` — mean image before / after registration
- :func:`roi_overlay` — ROI label image over the MIP (``<session>_rois.png``)

Images are shown in pixel coordinates, row 0 at the top; ROI numbers start at 1.

Examples
--------
>>> import numpy as np
>>> image = np.zeros((40, 60))
>>> labels = np.zeros((40, 60), dtype=int)
>>> labels[5:12, 5:15], labels[20:30, 30:40] = 1, 2
>>> fig = roi_overlay(image, labels, names=["0008-0010", "0025-0035"])
>>> sorted(t.get_text() for t in fig.axes[0].texts)
['1', '2']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import ndimage

from calim_helpers.plots._style import (
    _PX,
    COLORS,
    _bool_mask,
    _check_time_unit,
    _count,
    _float_array,
    _join_title,
    _label_rois,
    _plot_shifts,
    _shade_frames,
    _shift_values,
    _time_extent,
    _time_label,
)

__all__ = ["load_figure", "registration_figure", "roi_overlay", "shifts_figure"]

_OUTLINE = "#ffe14d"  # light yellow outline, under a dark halo
_NUMBER = "white"  # ROI numbers, under a dark halo


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
        Two image axes.
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


def shifts_figure(shifts: object, /, *, bad: object = None, title: str = "",
                  time_unit: str = "s") -> Figure:
    """Estimated rigid shifts per frame and their magnitude.

    Top: ``dy`` (rows) and ``dx`` (columns); bottom: the magnitude
    ``sqrt(dy² + dx²)``. Frames flagged in ``bad`` are shaded red on both.

    Parameters
    ----------
    shifts : xarray.DataArray or numpy.ndarray, shape (time, 2)
        Shifts ``(dy, dx)`` in pixels. A DataArray with dims ``("time", "axis")``
        (``axis`` coordinate ``["dy", "dx"]``) and a ``time`` coordinate gives the
        time axis; a plain array is plotted against the frame index (only with
        ``time_unit="frame"``).
    bad : array_like of bool, shape (time,), optional
        Frames flagged as bad (e.g. a motion jump). Default is None (none marked).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.
    time_unit : {"s", "frame"}, optional
        Unit of the time coordinate: ``"s"``, or ``"frame"`` when the frame
        interval is unknown (the axis is then labelled "frame"). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``shifts`` is not ``(time, 2)``, ``bad`` does not match it, or
        ``shifts`` has no time coordinate and ``time_unit`` is ``"s"``.
    """
    time_unit = _check_time_unit(time_unit)
    values, time = _shift_values(shifts, time_unit)
    mask = None if bad is None else _bool_mask(bad, "bad", values.shape[0])
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True)
    _plot_shifts(ax, time, values, mask, magnitude=False)
    ax.set_ylabel(f"shift ({_PX})")
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    mag = np.hypot(values[:, 0], values[:, 1])
    bx.plot(time, mag, color="black", lw=1.1, label="|shift|")
    if mask is not None and mask.any():
        _shade_frames(bx, time, mask, label=f"bad frames ({int(mask.sum())})")
        bx.plot(time[mask], mag[mask], "x", color=COLORS["warn"], ms=5)
        bx.legend(loc="upper right", fontsize=8)
    bx.set_ylabel(f"|shift| ({_PX})")
    bx.set_xlabel(_time_label(time_unit))
    bx.set_ylim(bottom=0)
    if time.size:
        ax.set_xlim(*_time_extent(time))
    peak = f"max |shift| {np.nanmax(mag):.2f} {_PX}" if np.isfinite(mag).any() else "no shifts"
    fig.suptitle(_join_title(title, f"rigid motion correction: {_count(time.size, 'frame')}, "
                                    f"{peak}"))
    return fig


def _gradient_energy(image: np.ndarray, /) -> float:
    """Sharpness: mean squared gradient magnitude divided by the squared mean level.

    Dimensionless (per px²) so images of different brightness compare; blurring by
    motion lowers it, registration raises it.
    """
    gy, gx = np.gradient(image)
    energy = float(np.nanmean(gy**2 + gx**2))
    level = float(np.nanmean(image))
    return energy / level**2 if level > 0 else energy


def _crop_box(image: np.ndarray, /) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of the quarter-size window with most structure."""
    ny, nx = image.shape
    h, w = max(min(ny, 8), ny // 4), max(min(nx, 8), nx // 4)
    gy, gx = np.gradient(np.nan_to_num(image))
    local = ndimage.uniform_filter(gy**2 + gx**2, size=(h, w), mode="constant")
    r0, c0 = h // 2, w // 2  # window centre range keeps the window inside the image
    valid = local[r0:ny - h + r0 + 1, c0:nx - w + c0 + 1]
    i, j = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(i), int(j), h, w


def registration_figure(mean_before: object, mean_after: object, /, *,
                        title: str = "") -> Figure:
    """Mean image before and after motion correction, with a zoom and a profile.

    Top row: the two mean images (one grey scale) and their difference. Bottom
    row: the quarter-size window with the most structure (in ``mean_after``),
    zoomed, and an intensity profile along the row of its brightest pixel. Each
    mean image's title gives its sharpness, the gradient energy
    ``mean(|∇I|²) / mean(I)²`` (per px²), which registration should raise.

    Parameters
    ----------
    mean_before, mean_after : numpy.ndarray or xarray.DataArray, shape (y, x)
        Mean over time of the movie before and after registration (counts).
    title : str, optional
        Experiment, date and session, put before the figure's own title.
        Default is ``""``.

    Returns
    -------
    matplotlib.figure.Figure
        Six panel axes (``before``, ``after``, ``difference``, ``zoom_before``,
        ``zoom_after``, ``profile``) and the difference's colour bar.

    Raises
    ------
    ValueError
        If the images are not 2-D or differ in shape.
    """
    before = _float_array(mean_before, "mean_before", 2)
    after = _float_array(mean_after, "mean_after", 2)
    if before.shape != after.shape:
        raise ValueError(f"mean_before and mean_after must have one shape, got "
                         f"{before.shape} and {after.shape}")
    ny, nx = before.shape
    sharp_b, sharp_a = _gradient_energy(before), _gradient_energy(after)
    gain = 100 * (sharp_a / sharp_b - 1) if sharp_b > 0 else np.nan
    lo, hi = np.nanpercentile(np.concatenate([before.ravel(), after.ravel()]), [1, 99.8])
    r0, c0, h, w = _crop_box(after)
    crop = np.nan_to_num(after[r0:r0 + h, c0:c0 + w], nan=-np.inf)
    row = r0 + int(np.unravel_index(int(np.argmax(crop)), crop.shape)[0])  # profile row

    fig = Figure(figsize=(13, 8.5), layout="constrained")
    axd = fig.subplot_mosaic([["before", "after", "difference"],
                              ["zoom_before", "zoom_after", "profile"]],
                             height_ratios=[1.15, 1])
    gray = {"cmap": "gray", "vmin": lo, "vmax": hi, "interpolation": "nearest"}
    for key, img, name in (("before", before, f"before: sharpness {sharp_b:.3g}"),
                           ("after", after, f"after: sharpness {sharp_a:.3g} "
                                            f"({gain:+.0f}%)")):
        ax = axd[key]
        ax.imshow(img, **gray)
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, ec="cyan", lw=1.2))
        ax.set_title(name, fontsize=10)
        zx = axd[f"zoom_{key}"]
        zx.imshow(img[r0:r0 + h, c0:c0 + w], extent=(c0 - 0.5, c0 + w - 0.5,
                                                     r0 + h - 0.5, r0 - 0.5), **gray)
        zx.axhline(row, color="cyan", lw=1.0, ls=":")
        zx.set_title(f"{key}, zoom (cyan box)", fontsize=10)
    diff = after - before
    lim = float(np.nanpercentile(np.abs(diff), 99.5)) if np.isfinite(diff).any() else 1.0
    lim = lim if lim > 0 else 1.0
    im = axd["difference"].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim,
                                  interpolation="nearest")
    axd["difference"].set_title("after − before", fontsize=10)
    fig.colorbar(im, ax=axd["difference"], shrink=0.8, label="after − before (counts)")
    for key in ("before", "after", "difference", "zoom_before", "zoom_after"):
        axd[key].set_xlabel("x (pixel)")
        axd[key].set_ylabel("y (pixel)")

    ax = axd["profile"]
    cols = np.arange(c0, c0 + w)
    ax.plot(cols, before[row, c0:c0 + w], color=COLORS["raw"], lw=1.2, label="before")
    ax.plot(cols, after[row, c0:c0 + w], color=COLORS["corrected"], lw=1.2, label="after")
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("mean intensity (counts)")
    ax.set_title(f"profile along row {row} (dotted line)", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.suptitle(_join_title(title, f"registration: mean image, {ny} x {nx} px "
                                    "(sharpness = mean |∇I|² / mean(I)², per px²)"))
    return fig


def _check_labels_image(labels: object, shape: tuple[int, ...], /) -> np.ndarray:
    lab = np.array(labels.values if isinstance(labels, xr.DataArray) else labels, copy=True)
    if lab.shape != shape or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an int image of the image's shape {shape}, "
                         f"got {lab.dtype} {lab.shape}")
    if lab.size and lab.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 outside ROIs), got {int(lab.min())}")
    return lab


def _name_key(ax, names: Sequence[str], numbers: Sequence[int], /, *, fontsize: float,
              height_in: float) -> None:
    """List ``number  name`` in as many columns as the panel's height needs."""
    ax.set_axis_off()
    lines = [f"{k:>3}  {names[k - 1]}" for k in numbers]
    per_col = max(5, int(height_in * 72 / (1.3 * fontsize)) - 2)
    n_col = max(1, int(np.ceil(len(lines) / per_col)))
    for c in range(n_col):
        ax.text(c / n_col, 1.0, "\n".join(lines[c * per_col:(c + 1) * per_col]),
                transform=ax.transAxes, ha="left", va="top", fontsize=fontsize,
                family="monospace", linespacing=1.3)
    ax.set_title("ROI names", fontsize=9, loc="left")


def roi_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    /,
    *,
    names: Sequence[str] = (),
    title: str = "",
    extent_um: tuple[float, float] | None = None,
    fontsize: float | None = None,
) -> Figure:
    """ROI label image drawn over a (maximum-intensity) projection.

    Each ROI is tinted, outlined, and numbered at its centroid in bold white with
    a black halo, readable on dark background and on bright cells. Numbers that
    would overlap (close centroids) are nudged apart, with a thin line back to
    their ROI. ROI names, if given, are listed beside the image rather than
    written over it.

    Parameters
    ----------
    image : numpy.ndarray, shape (y, x)
        Background image, e.g. the MIP.
    labels : numpy.ndarray of int, shape (y, x)
        0 outside ROIs, ``n`` inside ROI ``n``.
    names : sequence of str, optional
        Fiji names of the ROIs (ROI ``n`` at position ``n - 1``), listed with
        their numbers in a key beside the image. Default is none (no key).
    title : str, optional
        Figure title. Default is ``""``.
    extent_um : tuple of float, optional
        ``(height, width)`` of the image in µm, for a scale in the axis labels.
        Default is None (pixels).
    fontsize : float, optional
        Size of the ROI numbers, pt. Default is None: 7 up to 40 ROIs, 6 beyond.

    Returns
    -------
    matplotlib.figure.Figure
        The image axes, and the key axes when ``names`` is given.

    Raises
    ------
    ValueError
        If ``labels`` is not a non-negative int image of ``image``'s shape.
    """
    image = _float_array(image, "image", 2)
    lab = _check_labels_image(labels, image.shape)
    ny, nx = image.shape
    n = int(lab.max()) if lab.size else 0
    numbers = [k for k, box in enumerate(ndimage.find_objects(lab), 1) if box is not None]
    size = float(fontsize) if fontsize is not None else (7.0 if len(numbers) <= 40 else 6.0)
    img_w = float(np.clip(nx / 80, 6.0, 11.0))
    img_h = img_w * ny / nx + 0.7
    named = len(names) > 0 and bool(numbers)
    key_fs = 7.0
    full = [str(names[k - 1]) if k <= len(names) else "" for k in range(1, n + 1)]
    if named:
        per_col = max(5, int((img_h - 0.7) * 72 / (1.3 * key_fs)) - 2)
        n_col = int(np.ceil(len(numbers) / per_col))
        longest = max(len(full[k - 1]) for k in numbers)
        key_w = n_col * (longest + 6) * 0.62 * key_fs / 72 + 0.3  # monospace: 0.6 em
        fig = Figure(figsize=(img_w + key_w, img_h), layout="constrained")
        ax, kx = fig.subplots(1, 2, width_ratios=[img_w, key_w])
    else:
        fig = Figure(figsize=(img_w, img_h), layout="constrained")
        ax = fig.subplots()
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99.8]) if finite.size else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if n:
        ax.imshow(np.ma.masked_equal(lab, 0), cmap="tab20", vmin=1, vmax=max(n, 2),
                  alpha=0.3, interpolation="nearest")
    ax.set_title(_join_title(title, _count(len(numbers), "ROI")))
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if extent_um is not None:
        ax.set_xlabel(f"x (pixel; width {extent_um[1]:.0f} µm)")
        ax.set_ylabel(f"y (pixel; height {extent_um[0]:.0f} µm)")
    if named:
        _name_key(kx, full, numbers, fontsize=key_fs, height_in=img_h - 0.7)
    if numbers:
        fig.draw_without_rendering()  # the axes' final size sets the label spacing
        _label_rois(ax, lab, [_OUTLINE] * n, text_color=[_NUMBER] * n, fontsize=size)
    return fig

