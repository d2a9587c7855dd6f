"""Figures built from arrays (no file access: :func:`calim_helpers.io.save_figure` saves)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["roi_overlay"]


def roi_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    /,
    *,
    names: Sequence[str] = (),
    title: str = "",
    extent_um: tuple[float, float] | None = None,
) -> Figure:
    """ROI label image drawn over a (maximum-intensity) projection.

    Parameters
    ----------
    image : numpy.ndarray, shape (y, x)
        Background image, e.g. the MIP.
    labels : numpy.ndarray of int, shape (y, x)
        0 outside ROIs, ``n`` inside ROI ``n``.
    names : sequence of str, optional
        Fiji names of the ROIs, shown next to their number. Default is none.
    title : str, optional
        Figure title. Default is ``""``.
    extent_um : tuple of float, optional
        ``(height, width)`` of the image in µm, for a scale in the axis labels.
        Default is None (pixels).

    Returns
    -------
    matplotlib.figure.Figure
    """
    ny, nx = image.shape
    fig = Figure(figsize=(8, 8 * ny / nx + 0.6), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.percentile(image, [1, 99.8])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    n = int(labels.max())
    if n:
        masked = np.ma.masked_equal(labels, 0)
        ax.imshow(masked, cmap="tab20", vmin=1, vmax=max(n, 2), alpha=0.35,
                  interpolation="nearest")
        for k in range(1, n + 1):
            rr, cc = np.nonzero(labels == k)
            if rr.size:
                ax.contour(labels == k, levels=[0.5], colors="yellow", linewidths=0.7)
                label = f"{k}" + (f" {names[k - 1]}" if len(names) >= k else "")
                ax.text(cc.mean(), rr.mean(), label, color="yellow", fontsize=7,
                        ha="center", va="center")
    ax.set_title(title)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if extent_um is not None:
        ax.set_xlabel(f"x (pixel; width {extent_um[1]:.0f} µm)")
        ax.set_ylabel(f"y (pixel; height {extent_um[0]:.0f} µm)")
    return fig
