"""ROIs "as an expert would draw them" in Fiji: imperfect polygons around the somata.

:func:`expert_rois` draws one jittered, dilated polygon per soma, in random order,
named like Fiji's ROI Manager does (or ``cell_01``...); :func:`imagej_rois` turns
the polygons into :class:`roifile.ImagejRoi` objects ready to be zipped.
Vertices are ``(x, y)`` in Fiji coordinates: pixel ``(row, col)`` has its centre at
``(col + 0.5, row + 0.5)``.

Examples
--------
>>> from calim_helpers.synthetic.expert_rois import expert_rois, imagej_rois
>>> from calim_helpers.synthetic.scene import soma_footprints
>>> somata = soma_footprints((48, 64), 3, pixel_size_um=1.0, seed=2)
>>> polygons, names, roi_neuron = expert_rois(somata, naming="cell", seed=2)
>>> names, sorted(roi_neuron.tolist())
(['cell_01', 'cell_02', 'cell_03'], [0, 1, 2])
>>> [roi.name for roi in imagej_rois(polygons, names)]
['cell_01', 'cell_02', 'cell_03']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calim_helpers.synthetic._common import _STREAM_ROIS
from calim_helpers.synthetic.scene import Somata

__all__ = ["expert_rois", "imagej_rois"]


def expert_rois(
    somata: Somata,
    /,
    *,
    n_vertices: tuple[int, int] = (12, 24),
    jitter_px: float = 0.6,
    dilation_px: tuple[float, float] = (0.0, 2.0),
    subpixel_fraction: float = 0.5,
    naming: str = "fiji",
    outside: bool = False,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """Polygons around the somata "as an expert would draw them", slightly imperfect.

    One polygon per soma, in random order: ``n_vertices`` points around the
    outline, each at an angle and radius jittered by about ``jitter_px``, the
    whole outline dilated (or eroded when negative) by a random amount from
    ``dilation_px``. A fraction of the polygons keeps sub-pixel vertices; the
    others are rounded to integers, as Fiji's polygon tool gives them.

    Parameters
    ----------
    somata : Somata
        The somata, from :func:`soma_footprints`.
    n_vertices : tuple of int, optional
        Inclusive range of the number of vertices. Default is (12, 24).
    jitter_px : float, optional
        Standard deviation of each vertex's radial error, pixels. Default is 0.6.
    dilation_px : tuple of float, optional
        Range of the per-ROI outward offset of the outline, pixels. Default is (0.0, 2.0).
    subpixel_fraction : float, optional
        Probability that a polygon keeps sub-pixel vertices. Default is 0.5.
    naming : {"fiji", "cell"}, optional
        ``"fiji"``: Fiji's ROI Manager default ``"yyyy-xxxx"`` (centre of the
        bounding box; repeated names get ``-1``, ``-2`` ...); ``"cell"``:
        ``"cell_01"``, ``"cell_02"`` ... in ROI order. Default is "fiji".
    outside : bool, optional
        Push the part of the polygon of the soma nearest to the border out of
        the frame (a ROI partly outside the frame). Default is False.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    polygons : list of ndarray, each shape (k, 2), float64
        Vertices ``(x, y)`` in Fiji coordinates (pixel ``(row, col)`` has its
        centre at ``(col + 0.5, row + 0.5)``), counter-clockwise on screen;
        integer-valued for the non-sub-pixel polygons.
    names : list of str
        ROI names, in ROI order.
    roi_neuron : ndarray, shape (n,), int64
        ``roi_neuron[k]`` is the soma index of ROI ``k`` (0-based position in the
        list, so the pipeline's "ROI k + 1").
    """
    v_lo, v_hi = (int(v) for v in n_vertices)
    if not 3 <= v_lo <= v_hi:
        raise ValueError(
            f"n_vertices must be (low, high) with 3 <= low <= high, got {n_vertices!r}"
        )
    if naming not in ("fiji", "cell"):
        raise ValueError(f"naming must be 'fiji' or 'cell', got {naming!r}")
    d_lo, d_hi = (float(v) for v in dilation_px)
    if d_lo > d_hi:
        raise ValueError(f"dilation_px must be (low, high) with low <= high, got {dilation_px!r}")
    rng = np.random.default_rng([seed, _STREAM_ROIS])
    n = somata.n_neurons
    roi_neuron = rng.permutation(n).astype(np.int64)
    height, width = somata.frame_shape

    pushed = -1
    if outside and n:
        # the soma whose outline comes closest to a border
        gaps = [
            min(c[0], c[1], height - 1 - c[0], width - 1 - c[1]) - r.max()
            for c, r in zip(
                somata.centers,
                (somata.radius(i, np.linspace(0, 2 * np.pi, 90)) for i in range(n)),
                strict=True,
            )
        ]
        pushed = int(np.argmin(gaps))

    polygons = []
    for i in roi_neuron:
        k = int(rng.integers(v_lo, v_hi + 1))
        theta = np.sort(
            2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k + rng.uniform(0, 2 * np.pi)
        )
        r = somata.radius(i, theta) + rng.uniform(d_lo, d_hi) + rng.normal(0, jitter_px, k)
        r = np.maximum(r, 1.0)
        x = somata.centers[i, 1] + 0.5 + r * np.cos(theta)
        y = somata.centers[i, 0] + 0.5 + r * np.sin(theta)
        if i == pushed:
            x, y = _push_out(x, y, width, height)
        xy = np.stack([x, y], axis=1)
        if rng.random() >= subpixel_fraction:
            xy = np.round(xy)
        polygons.append(xy)

    names = _roi_names(polygons, naming)
    return polygons, names, roi_neuron


def _push_out(x: np.ndarray, y: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Move the vertices near the closest frame border 1.5 px beyond it."""
    gaps = {"left": x.min(), "top": y.min(), "right": width - x.max(), "bottom": height - y.max()}
    side = min(gaps, key=gaps.get)
    x, y = x.copy(), y.copy()
    if side == "left":
        near = x < x.min() + 2.5
        x[near] = -1.5
    elif side == "right":
        near = x > x.max() - 2.5
        x[near] = width + 1.5
    elif side == "top":
        near = y < y.min() + 2.5
        y[near] = -1.5
    else:
        near = y > y.max() - 2.5
        y[near] = height + 1.5
    return x, y


def _roi_names(polygons: list[np.ndarray], naming: str) -> list[str]:
    if naming == "cell":
        return [f"cell_{k + 1:02d}" for k in range(len(polygons))]
    names: list[str] = []
    seen: dict[str, int] = {}
    for xy in polygons:
        lo = np.floor(xy.min(axis=0)).astype(int)
        hi = np.floor(xy.max(axis=0)).astype(int) + 1
        xc, yc = (lo + (hi - lo) // 2).tolist()
        name = f"{max(yc, 0):04d}-{max(xc, 0):04d}"
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def imagej_rois(
    polygons: Sequence[np.ndarray], names: Sequence[str], /, *, roi_type: str = "polygon"
) -> list:
    """Fiji ROIs from polygons.

    Parameters
    ----------
    polygons : sequence of ndarray, each shape (k, 2)
        Vertices ``(x, y)`` in Fiji coordinates; integer-valued arrays give
        integer ROIs, others sub-pixel ROIs.
    names : sequence of str
        ROI names, one per polygon.
    roi_type : {"polygon", "freehand"}, optional
        Fiji ROI type. Default is "polygon".

    Returns
    -------
    list of roifile.ImagejRoi
        Ready for ``roifile.roiwrite(path, rois, mode="w")``.
    """
    import roifile

    kinds = {"polygon": roifile.ROI_TYPE.POLYGON, "freehand": roifile.ROI_TYPE.FREEHAND}
    if roi_type not in kinds:
        raise ValueError(f"roi_type must be 'polygon' or 'freehand', got {roi_type!r}")
    if len(polygons) != len(names):
        raise ValueError(f"got {len(polygons)} polygons but {len(names)} names")
    rois = []
    for xy, name in zip(polygons, names, strict=True):
        xy = np.asarray(xy, dtype=float)
        points = xy.astype(np.int32) if np.array_equal(xy, np.round(xy)) else xy
        roi = roifile.ImagejRoi.frompoints(points, name=name)
        roi.roitype = kinds[roi_type]
        rois.append(roi)
    return rois
