"""Read Fiji ROIs and rasterize them exactly as ImageJ 1.53t does.

Coordinate conventions
----------------------
roifile (and ImageJ) give ROI vertices as ``(x, y)`` in *pixel-corner*
coordinates: pixel ``(row=r, col=c)`` covers the square ``[c, c+1) x [r, r+1)``
and its centre is ``(c + 0.5, r + 0.5)``. Masks are numpy boolean arrays
indexed ``mask[row, col]`` = ``mask[y, x]``. :func:`polygon_mask` is the one
function where the convention changes; everything else calls it.

A pixel belongs to an area ROI when its centre is inside (even-odd rule over
all sub-polygons). Centres exactly on the outline follow ImageJ's
``ij.process.PolygonFiller``: on a left edge -> outside, on a right edge ->
inside, on a top edge -> outside, on a bottom edge -> inside. Ovals follow
``ij.gui.OvalRoi.getMask`` (an implicit ellipse equation, not a polygon) and
rectangles fill their integer bounds (``ij.gui.Roi``).

ROI numbers
-----------
A ROI's number is its position in the ROI set (the zip), from 1: the position at which
Fiji's ROI Manager lists it (``roiManager("select", n - 1)`` selects ROI ``n``), which
is what the lab compares with.
:func:`read_rois` leaves out lines, points, angles and other ROIs that are not areas,
and :func:`drop_outside` ROIs that lie entirely outside the frame, each named in a
warning. Each ROI read carries its zip number as ``roi.number``; :func:`roi_numbers`
gives them for a list (positions for ROIs made in memory, e.g. by automatic detection),
and ``label_image(..., numbers=roi_numbers(rois))`` labels with them. The pipeline's
tables and figures (so far) number the ROIs they keep 1..n in zip order and keep
their Fiji names beside the numbers: after a left-out ROI the two numberings differ.

Examples
--------
>>> import numpy as np
>>> from roifile import ImagejRoi
>>> roi = ImagejRoi.frompoints([[2, 1], [7, 1], [7, 4], [2, 4]], name="cell")
>>> mask = rasterize(roi, (6, 9))
>>> mask.shape, int(mask.sum())
((6, 9), 15)
>>> label_image([roi], (6, 9))[1:5, 1:8]
array([[0, 1, 1, 1, 1, 1, 0],
       [0, 1, 1, 1, 1, 1, 0],
       [0, 1, 1, 1, 1, 1, 0],
       [0, 0, 0, 0, 0, 0, 0]], dtype=int32)
>>> coverage_weights(mask, factors={"y": 2, "x": 2})[:2]
array([[0.  , 0.5 , 0.5 , 0.25],
       [0.  , 1.  , 1.  , 0.5 ]], dtype=float32)

A ROI set from which a measuring line was left out keeps Fiji's numbers:

>>> import os, tempfile
>>> line = ImagejRoi(roitype=ROI_TYPE.LINE, name="scale bar", x1=0, y1=0, x2=5, y2=0)
>>> other = ImagejRoi.frompoints([[1, 1], [4, 1], [4, 3]], name="cell 2")
>>> with tempfile.TemporaryDirectory() as folder:
...     write_rois(os.path.join(folder, "RoiSet.zip"), [roi, line, other])
...     everything = read_rois(os.path.join(folder, "RoiSet.zip"), area_only=False)
>>> kept, left_out = split_area_rois(everything)
>>> [(n, r.name) for n, r in zip(roi_numbers(kept), kept)], [r.name for r in left_out]
([(1, 'cell'), (3, 'cell 2')], ['scale bar'])
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import roifile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = [
    "coverage_weights",
    "drop_outside",
    "label_image",
    "polygon_mask",
    "rasterize",
    "read_rois",
    "roi_numbers",
    "split_area_rois",
    "write_rois",
]

# Shift of ImageJ's PolygonFiller: edges are moved right by 1e-8 pixel so that a
# pixel centre exactly on a left edge is outside and on a right edge inside.
_EDGE_SHIFT = 1e-8

_DEFAULT_FACTORS: Mapping[str, int] = MappingProxyType({"y": 2, "x": 2})

# ImageJ's EllipseRoi is a 72-vertex polygon (ij/gui/EllipseRoi.java).
_ELLIPSE_VERTICES = 72

_POLYGON_TYPES = (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED)
_AREA_TYPES = (ROI_TYPE.RECT, ROI_TYPE.OVAL, *_POLYGON_TYPES)
_OVERLAY_SUBTYPES = (ROI_SUBTYPE.TEXT, ROI_SUBTYPE.ARROW, ROI_SUBTYPE.IMAGE)

# End of the warnings that leave ROIs out (see "ROI numbers" in the module docstring).
_NUMBERING_NOTE = ("The pipeline's tables number the kept ROIs 1..n in zip order, with "
                   "their Fiji names beside: after a left-out ROI their numbers differ "
                   "from the ROI Manager's positions")

# Reason given by _why_empty for a ROI whose outline misses the frame.
_OUTSIDE = "lies outside the frame"


# --------------------------------------------------------------------------- I/O


def read_rois(path: str | os.PathLike[str], /, *, area_only: bool = True) -> list[ImagejRoi]:
    """Read a Fiji ROI set (``.zip``) or a single ROI file (``.roi``).

    Parameters
    ----------
    path : str or os.PathLike
        A ``RoiSet.zip`` as written by the ROI Manager (*More > Save*), or one
        ``.roi`` file. Every ``.roi`` entry of a zip is a ROI, also when two entries
        have the same name; macOS resource forks (entries under ``__MACOSX/`` or named
        ``._*``, added when a zip is re-made on a Mac) are skipped.
    area_only : bool, keyword-only
        Leave out, with a warning, the ROIs that are not areas: lines, polylines,
        freelines, angles, points, arrows, text and image overlays (left over from
        measuring; see :func:`split_area_rois`). Default is True.

    Returns
    -------
    list of roifile.ImagejRoi
        The ROIs in the order of the zip entries (the ROI Manager's order). Each
        carries its position in the zip, from 1, as ``roi.number`` (a ROI left out
        leaves a gap in the numbers: they stay those of Fiji's ROI Manager). Each ROI
        keeps its Fiji name; a ROI without a stored name is named after its zip entry
        (or file) without ``.roi``, as ImageJ does.

    Raises
    ------
    CalimInputError
        If the file does not exist, is empty, is not a zip / ROI file, holds
        no ``.roi`` entries, an entry cannot be decoded, or (``area_only``) no ROI
        is an area. The message names the file (and the entry, with its ROI number).

    Warns
    -----
    CalimWarning
        With ``area_only``, once per file, naming each ROI left out: its number, name
        and type; it says that the pipeline's tables number the kept ROIs 1..n.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CalimInputError(f"ROI file {path!r} does not exist (or is not a file)")
    if os.path.getsize(path) == 0:
        raise CalimInputError(f"ROI file {path!r} is empty")
    if path.lower().endswith(".zip"):
        rois = _read_zip(path)
    elif path.lower().endswith(".roi"):
        with open(path, "rb") as fh:
            data = fh.read()
        rois = [_decode(data, path, os.path.basename(path))]
    else:
        raise CalimInputError(f"ROI file {path!r}: expected a .zip ROI set or a .roi file")
    for number, roi in enumerate(rois, start=1):
        roi.number = number
    if not area_only:
        return rois
    kept, left_out = split_area_rois(rois)
    described = ", ".join(_describe(r) for r in left_out)
    if not kept:
        raise CalimInputError(f"ROI file {path!r} holds no area ROI, only {described}")
    if left_out:
        warnings.warn(
            f"ROI file {path!r}: left out {len(left_out)} ROI(s) that are not areas (no "
            f"pixels to average): {described}. {_NUMBERING_NOTE}",
            CalimWarning, stacklevel=2,
        )
    return kept


def _kind(roi: ImagejRoi) -> str:
    """ROI type as Fiji names it: ``"line"``, ``"point"``, ``"rectangle"``, ``"ellipse"``..."""
    if roi.subtype in (*_OVERLAY_SUBTYPES, ROI_SUBTYPE.ELLIPSE, ROI_SUBTYPE.ROTATED_RECT):
        kind = roi.subtype.name.lower().replace("_", " ")
    elif roi.roitype == ROI_TYPE.RECT and roi.composite:
        kind = "composite"
    else:
        kind = getattr(roi.roitype, "name", str(roi.roitype)).lower()
    return kind.replace("rect", "rectangle")


def _describe(roi: ImagejRoi, index: int | None = None) -> str:
    number = getattr(roi, "number", index)
    head = "ROI" if number is None else f"ROI {number}"
    return f"{head} ({roi.name!r}, {_kind(roi)})"


def split_area_rois(rois: Iterable[ImagejRoi], /) -> tuple[list[ImagejRoi], list[ImagejRoi]]:
    """Split ROIs into area ROIs and the others (lines, points, overlays).

    Area ROIs are rectangles, ovals, ellipses, rotated rectangles, polygons, freehand,
    traced and composite ROIs: the ones with pixels inside. The others are lines,
    polylines, freelines, angles, points, arrows and text or image overlays. Area ROIs
    that :func:`rasterize` cannot reproduce exactly (rounded corners, spline fits) count
    as areas: they are cells, and :func:`rasterize` says how to fix them.

    Parameters
    ----------
    rois : iterable of roifile.ImagejRoi
        ROIs, e.g. from ``read_rois(path, area_only=False)``. Not modified.

    Returns
    -------
    kept : list of roifile.ImagejRoi
        The area ROIs, in order.
    left_out : list of roifile.ImagejRoi
        The others, in order.
    """
    kept: list[ImagejRoi] = []
    left_out: list[ImagejRoi] = []
    for roi in rois:
        area = roi.roitype in _AREA_TYPES and roi.subtype not in _OVERLAY_SUBTYPES
        (kept if area else left_out).append(roi)
    return kept, left_out


def roi_numbers(rois: Sequence[ImagejRoi], /) -> list[int]:
    """ROI numbers: each ROI's ``number`` from :func:`read_rois`, else its list position.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
        ROIs read by :func:`read_rois` (numbered by their zip position, with gaps where
        ROIs were left out) or made in memory (numbered 1, 2, ... in list order).

    Returns
    -------
    list of int
        One number per ROI, from 1.

    Raises
    ------
    CalimInputError
        If two ROIs have the same number (e.g. ROIs of two ROI sets mixed).
    """
    numbers = [int(getattr(roi, "number", i)) for i, roi in enumerate(rois, start=1)]
    if len(set(numbers)) != len(numbers):
        dupes = sorted({n for n in numbers if numbers.count(n) > 1})
        raise CalimInputError(f"ROI numbers {dupes} occur more than once; use one ROI set")
    return numbers


def _is_roi_entry(info: zipfile.ZipInfo) -> bool:
    """Whether a zip entry is a ROI: a ``.roi`` file, not a macOS resource fork.

    A zip made by macOS's Finder holds an AppleDouble ``__MACOSX/._<name>.roi`` entry
    beside each file: metadata, not a ROI.
    """
    parts = info.filename.split("/")
    return (not info.is_dir() and parts[-1].lower().endswith(".roi")
            and "__MACOSX" not in parts[:-1] and not parts[-1].startswith("._"))


def _read_zip(path: str) -> list[ImagejRoi]:
    """ROIs of the ``.roi`` entries of a zip, in zip order.

    Each entry is read through its own ``ZipInfo``: two entries with the same name
    (``roifile.roiwrite`` and scripts write them) are two ROIs, not the last one twice.
    macOS resource forks (``__MACOSX/``, ``._*``) are skipped.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            blobs = []
            for info in infos:
                if _is_roi_entry(info):
                    with zf.open(info) as fh:
                        blobs.append((info.filename, fh.read()))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CalimInputError(f"ROI file {path!r} is not a readable zip archive: {exc}") from exc
    if not blobs:
        forks = sum(not i.is_dir() and i.filename.lower().endswith(".roi") for i in infos)
        only = f" (only {forks} macOS resource fork(s), '__MACOSX/' or '._*')" if forks else ""
        raise CalimInputError(f"ROI file {path!r} contains no .roi entries{only}")
    return [_decode(data, path, entry, number=k)
            for k, (entry, data) in enumerate(blobs, start=1)]


def _decode(data: bytes, path: str, entry: str, *, number: int | None = None) -> ImagejRoi:
    """Decode one ROI file or zip entry; ``number`` is its position among the zip's ROIs."""
    where = f"entry {entry!r}" if number is None else f"ROI {number} (entry {entry!r})"
    try:
        roi = ImagejRoi.frombytes(data)
    except (ValueError, struct.error, IndexError, TypeError) as exc:
        raise CalimInputError(f"ROI file {path!r}: {where} is not an ImageJ ROI: {exc}") from exc
    if not roi.name:
        stem = os.path.basename(entry)
        roi.name = stem[:-4] if stem.lower().endswith(".roi") else stem
    return roi


def write_rois(path: str | os.PathLike[str], rois: Iterable[ImagejRoi], /) -> None:
    """Write ROIs to a Fiji ROI set (``.zip``), replacing an existing file.

    Parameters
    ----------
    path : str or os.PathLike
        Output path; must end in ``.zip``.
    rois : iterable of roifile.ImagejRoi
        ROIs in the order the ROI Manager should list them. Zip entries are
        named after the ROI names (``<name>.roi``; a number when unnamed;
        duplicate names get a ``-2``, ``-3`` suffix in the entry name only).

    Raises
    ------
    CalimInputError
        If ``path`` does not end in ``.zip`` or ``rois`` is empty.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".zip"):
        raise CalimInputError(f"ROI set {path!r} must be written as a .zip file")
    rois = list(rois)
    if not rois:
        raise CalimInputError(f"ROI set {path!r}: no ROIs to write")
    names: list[str] = []
    seen: set[str] = set()
    for i, roi in enumerate(rois):
        base = roi.name or f"{i + 1:04d}"
        name, k = base, 1
        while name.lower() in seen:
            k += 1
            name = f"{base}-{k}"
        seen.add(name.lower())
        names.append(name)
    roifile.roiwrite(path, rois, name=names, mode="w")


# ----------------------------------------------------------------- rasterization


def polygon_mask(vertices_xy: Any, shape: tuple[int, int], /) -> np.ndarray:
    """Pixels whose centre lies inside a polygon, with ImageJ's tie rules.

    This is where ``(x, y)`` vertices become a ``(row, col)`` mask: pixel
    ``(r, c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` is inside the
    polygon by the even-odd rule. Centres exactly on the outline follow
    ImageJ's ``ij.process.PolygonFiller``: on a left or top edge they are
    outside, on a right or bottom edge inside. Parts outside the frame are
    clipped. Only the polygon's bounding box is scanned.

    Parameters
    ----------
    vertices_xy : array_like, shape (n, 2)
        Vertices ``(x, y)`` in pixel-corner coordinates (pixels), closed
        implicitly (the last vertex joins the first). Several polygons may be
        given separated by a row of NaN; they are combined by the even-odd
        rule (a polygon inside another makes a hole), like ImageJ's composite
        ROIs.
    shape : tuple of int
        ``(ny, nx)`` of the frame, in pixels.

    Returns
    -------
    numpy.ndarray of bool, shape (ny, nx)
        ``True`` inside.

    Raises
    ------
    CalimInputError
        If ``vertices_xy`` is not ``(n, 2)`` or ``shape`` is not two
        non-negative integers.

    Examples
    --------
    A triangle whose vertices are pixel centres. Pixel (1, 4) has its centre
    on the top vertex (outside); the bottom row, whose centres lie on the
    bottom edge, is inside, up to and including the right vertex (8.5, 7.5):

    >>> tri = [[1.5, 7.5], [4.5, 1.5], [8.5, 7.5]]
    >>> m = polygon_mask(tri, (10, 10))
    >>> print(m.astype(int))
    [[0 0 0 0 0 0 0 0 0 0]
     [0 0 0 0 0 0 0 0 0 0]
     [0 0 0 0 1 0 0 0 0 0]
     [0 0 0 0 1 1 0 0 0 0]
     [0 0 0 1 1 1 1 0 0 0]
     [0 0 0 1 1 1 1 0 0 0]
     [0 0 1 1 1 1 1 1 0 0]
     [0 0 1 1 1 1 1 1 1 0]
     [0 0 0 0 0 0 0 0 0 0]
     [0 0 0 0 0 0 0 0 0 0]]
    """
    ny, nx = _check_shape(shape)
    xy = np.asarray(vertices_xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise CalimInputError(f"vertices_xy must have shape (n, 2), got {xy.shape}")
    mask = np.zeros((ny, nx), dtype=bool)
    box = _fill_box(xy, ny, nx)
    if box is not None:
        r0, c0, sub = box
        mask[r0 : r0 + sub.shape[0], c0 : c0 + sub.shape[1]] = sub
    return mask


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise CalimInputError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny < 0 or nx < 0 or (ny, nx) != tuple(shape):
        raise CalimInputError(f"shape must be two non-negative integers, got {shape!r}")
    return ny, nx


def _edges(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges (x1, y1, x2, y2) of NaN-separated closed polygons."""
    bad = np.isnan(xy).any(axis=1)
    starts, stops = [], []
    i, n = 0, len(xy)
    while i < n:
        if bad[i]:
            i += 1
            continue
        j = i
        while j < n and not bad[j]:
            j += 1
        starts.append(i)
        stops.append(j)
        i = j
    if not starts:
        empty = np.empty(0)
        return empty, empty, empty, empty
    a = np.concatenate([xy[s:e] for s, e in zip(starts, stops, strict=True)])
    b = np.concatenate([np.roll(xy[s:e], -1, axis=0) for s, e in zip(starts, stops, strict=True)])
    return a[:, 0], a[:, 1], b[:, 0], b[:, 1]


def _fill_box(xy: np.ndarray, ny: int, nx: int) -> tuple[int, int, np.ndarray] | None:
    """Scan-line fill restricted to the polygon's bounding box in the frame.

    Rule (ImageJ ``PolygonFiller``): an edge is active on row ``r`` when
    ``round(y_low) <= r < round(y_high)`` with round = floor(v + 0.5), i.e. the
    row centre ``r + 0.5`` is in ``(y_low, y_high]``. On that row it crosses at
    ``x_e`` (evaluated at the row centre, shifted right by 1e-8), and pixels
    from column ``floor(x_e + 0.5)`` onward are on its other side. Pixels with
    an odd number of crossings to their left (or at their column) are inside.
    """
    x1, y1, x2, y2 = _edges(xy)
    if x1.size == 0:
        return None
    r1 = np.floor(y1 + 0.5)
    r2 = np.floor(y2 + 0.5)
    keep = r1 != r2  # "horizontal" edges (no row centre in their y range) are ignored
    x1, y1, x2, y2, r1, r2 = x1[keep], y1[keep], x2[keep], y2[keep], r1[keep], r2[keep]
    swap = r1 > r2
    xa, xb = np.where(swap, x2, x1), np.where(swap, x1, x2)
    ya, yb = np.where(swap, y2, y1), np.where(swap, y1, y2)
    ra, rb = np.where(swap, r2, r1), np.where(swap, r1, r2)
    lo = np.maximum(ra, 0)
    hi = np.minimum(rb, ny)
    count = np.maximum(hi - lo, 0).astype(np.int64)
    total = int(count.sum())
    if total == 0:
        return None
    slope = (xb - xa) / (yb - ya)
    edge = np.repeat(np.arange(count.size), count)
    first = np.cumsum(count) - count
    rows = lo[edge] + (np.arange(total) - first[edge])
    ex = xa[edge] + (rows - ya[edge] + 0.5) * slope[edge] + _EDGE_SHIFT
    cols = np.clip(np.floor(ex + 0.5), 0, nx).astype(np.int64)
    rows = rows.astype(np.int64)
    r0, r_end = int(rows.min()), int(rows.max()) + 1
    c0, c_end = int(cols.min()), int(cols.max())
    if c_end <= c0:
        return None
    width = c_end - c0 + 1
    flat = (rows - r0) * width + (cols - c0)
    toggles = np.bincount(flat, minlength=(r_end - r0) * width).reshape(r_end - r0, width)
    inside = (np.cumsum(toggles, axis=1) & 1).astype(bool)[:, :-1]
    return r0, c0, inside


def _float_param(roi: ImagejRoi) -> float:
    """ImageJ's FLOAT_PARAM (header bytes 52-55): ellipse aspect ratio / rect width."""
    raw = struct.pack(
        roi.byteorder + "BBh",
        roi.arrow_style_or_aspect_ratio & 0xFF,
        roi.arrow_head_size & 0xFF,
        roi.rounded_rect_arc_size,
    )
    return float(struct.unpack(roi.byteorder + "f", raw)[0])


def _f32(v: Any) -> float:
    return float(np.float32(v))


def _ellipse_vertices(
    x1: float, y1: float, x2: float, y2: float, aspect_ratio: float
) -> np.ndarray:
    """Vertices of ImageJ's EllipseRoi, float32, shape (72, 2).

    Same construction as ``ij.gui.EllipseRoi.makeEllipse``: the major axis
    runs from ``(x1, y1)`` to ``(x2, y2)``, minor = major * aspect ratio
    (clipped to [0, 1]); 72 points at equal parametric angles (every 5
    degrees) of the unrotated ellipse, each rotated by the axis angle, rounded
    to float32.
    """
    ratio = min(max(aspect_ratio, 0.0), 1.0)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    dx, dy = x2 - x1, y2 - y1
    major = math.sqrt(dx * dx + dy * dy)
    minor = major * ratio
    alpha = math.atan2(dy, dx) * 180.0 / math.pi
    i = np.arange(_ELLIPSE_VERTICES, dtype=np.float64)
    beta1 = (i * 360.0 / _ELLIPSE_VERTICES) / 180.0 * math.pi
    ex = np.cos(beta1) * major / 2.0
    ey = np.sin(beta1) * minor / 2.0
    beta2 = np.arctan2(ey, ex)
    rad = np.sqrt(ex * ex + ey * ey)
    beta3 = beta2 + alpha / 180.0 * math.pi
    xs = (cx + np.cos(beta3) * rad).astype(np.float32)
    ys = (cy + np.sin(beta3) * rad).astype(np.float32)
    return np.stack([xs, ys], axis=1)


def _rotated_rect_vertices(x1: float, y1: float, x2: float, y2: float, width: float) -> np.ndarray:
    """Corners of ImageJ's RotatedRectRoi, float32, shape (4, 2).

    As ``ij.gui.RotatedRectRoi.makeRectangle``: ``(x1, y1)``-``(x2, y2)`` is
    the centre line; the corners are offset by half the width along the
    normal ``(sin, cos)(pi/2 + atan(dx / dy))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = float(np.arctan(np.float64(x2 - x1) / np.float64(y2 - y1)))
    p = width / 2.0 * math.sin(math.pi / 2 + angle)
    q = width / 2.0 * math.cos(math.pi / 2 + angle)
    pts = [(x1 + p, y1 + q), (x2 + p, y2 + q), (x2 - p, y2 - q), (x1 - p, y1 - q)]
    return np.asarray(pts, dtype=np.float64).astype(np.float32)


def _subpixel_polygon(coords: np.ndarray) -> np.ndarray:
    """Float polygon coordinates as ImageJ's PolygonRoi fills them.

    ImageJ stores sub-pixel vertices relative to their float32 minimum
    (``xpf = float32(x - min x)``) and adds ``min x - floor(min x)`` back in
    double precision when filling. The float32 subtraction can move a vertex
    by ~1e-7 pixel, which decides ties; this reproduces it.
    """
    xy = coords.astype(np.float32)
    base = xy.min(axis=0)  # float32
    rel = (xy - base).astype(np.float32)
    ibase = np.floor(base.astype(np.float64))
    return ibase + (rel.astype(np.float64) + (base.astype(np.float64) - ibase))


def _composite_path(roi: ImagejRoi, label: str) -> np.ndarray:
    """Composite ROI path as NaN-separated sub-polygons (float64, x/y)."""
    path = np.asarray(roi.multi_coordinates, dtype=np.float32).astype(np.float64)
    out: list[list[float]] = []
    i, n = 0, len(path)
    while i < n:
        op = int(path[i])
        if op in (0, 1):  # SEG_MOVETO, SEG_LINETO
            if i + 2 >= n:
                raise CalimInputError(f"{label}: truncated composite path")
            if op == 0 and out:
                out.append([math.nan, math.nan])
            out.append([path[i + 1], path[i + 2]])
            i += 3
        elif op == 4:  # SEG_CLOSE
            i += 1
        else:
            raise CalimInputError(
                f"{label}: composite path segment type {op} (curve) is not supported; "
                "flatten the ROI in Fiji (Edit > Selection > Interpolate) first"
            )
    if not out:
        raise CalimInputError(f"{label}: composite ROI has an empty path")
    return np.asarray(out, dtype=np.float64)


def _roi_label(roi: ImagejRoi, index: int | None) -> str:
    index = getattr(roi, "number", index)
    if index is None:
        return f"ROI {roi.name!r}"
    return f"ROI {index} ({roi.name!r})"


def rasterize(roi: ImagejRoi, shape: tuple[int, int], /, *, index: int | None = None) -> np.ndarray:
    """Mask of an area ROI exactly as ImageJ 1.53t draws it (*Create Mask*).

    Rules, per ROI type (reference: ImageJ 1.53t classes in ``ij.gui``):

    - rectangle (``Roi``): its integer bounds; sub-pixel rectangles use
      ``x = trunc(x), width = ceil(width)`` like ``Roi(double...)``;
    - oval (``OvalRoi.getMask``): for bounds ``w x h``, pixel ``(i, j)`` of the
      box is inside when ``(i - w/2 + 0.5)^2 / (w/2)^2 +
      (j - h/2 + 0.5)^2 / (h/2)^2 <= 1``;
    - polygon, freehand, traced, sub-pixel polygons, ellipse (``EllipseRoi``:
      72-vertex polygon rebuilt from its axis and aspect ratio), rotated
      rectangle (``RotatedRectRoi``, rebuilt from its centre line and width)
      and composite (``ShapeRoi``: all sub-paths, even-odd) are filled with
      :func:`polygon_mask` (pixel centre inside; ties as described there).
      Sub-pixel polygon vertices are first rounded as ``PolygonRoi`` stores
      them (float32 offsets from their float32 minimum), which can move a
      vertex by ~1e-7 pixel and so decides some ties.

    Parameters
    ----------
    roi : roifile.ImagejRoi
        An area ROI.
    shape : tuple of int
        ``(ny, nx)`` of the native-resolution frame, in pixels.
    index : int, optional
        ROI number used in error messages when the ROI carries none (a ROI from
        :func:`read_rois` is named by its ``number``). Default is None (name only).

    Returns
    -------
    numpy.ndarray of bool, shape (ny, nx)
        ``True`` for pixels of the ROI; parts outside the frame are clipped.

    Raises
    ------
    CalimInputError
        For line, point, text and other non-area ROIs, spline-fitted ROIs,
        rectangles with rounded corners, curved composite paths, and ROIs with
        no pixel inside the frame. The message names the ROI and, for one with no
        pixel, says whether it lies outside the frame, has zero area or covers no
        pixel centre.
    """
    ny, nx = _check_shape(shape)
    label = _roi_label(roi, index)
    mask = _mask(roi, ny, nx, label)
    if not mask.any():
        raise CalimInputError(f"{label} has no pixel inside the {ny} x {nx} frame: it "
                              f"{_why_empty(roi, ny, nx, label)}")
    return mask


def _mask(roi: ImagejRoi, ny: int, nx: int, label: str) -> np.ndarray:
    """:func:`rasterize` without the check that the mask is not empty."""
    roitype = roi.roitype
    mask = np.zeros((ny, nx), dtype=bool)
    if roi.subtype in (ROI_SUBTYPE.TEXT, ROI_SUBTYPE.ARROW, ROI_SUBTYPE.IMAGE):
        raise CalimInputError(f"{label} is a {roi.subtype.name.lower()} overlay, not an area ROI")
    if roitype == ROI_TYPE.RECT and roi.composite:
        if roi.multi_coordinates is None:
            raise CalimInputError(f"{label}: composite ROI without path data")
        box = _fill_box(_composite_path(roi, label), ny, nx)
        _paste(mask, box)
    elif roitype in (ROI_TYPE.RECT, ROI_TYPE.OVAL):
        x0, y0, w, h = _int_bounds(roi)
        if roitype == ROI_TYPE.RECT:
            if roi.rounded_rect_arc_size > 0:
                raise CalimInputError(
                    f"{label} is a rectangle with rounded corners "
                    f"(corner diameter {roi.rounded_rect_arc_size}), which CALIM cannot "
                    "rasterize exactly like ImageJ; redraw it as a polygon or plain rectangle"
                )
            mask[max(y0, 0) : max(y0 + h, 0), max(x0, 0) : max(x0 + w, 0)] = True
        else:
            _oval(mask, x0, y0, w, h)
    elif roitype in _POLYGON_TYPES:
        _paste(mask, _fill_box(_polygon_vertices(roi, label), ny, nx))
    else:
        kind = getattr(roitype, "name", str(roitype)).lower()
        raise CalimInputError(f"{label} is a {kind} ROI, not an area ROI (no mask)")
    return mask


def _polygon_vertices(roi: ImagejRoi, label: str) -> np.ndarray:
    """Vertices ``(x, y)`` (float64) that :func:`polygon_mask` fills for a polygon-type ROI."""
    roitype = roi.roitype
    if roitype == ROI_TYPE.FREEHAND and roi.subtype == ROI_SUBTYPE.ELLIPSE:
        xy = _ellipse_vertices(roi.x1, roi.y1, roi.x2, roi.y2, _float_param(roi))
    elif roitype == ROI_TYPE.FREEHAND and roi.subtype == ROI_SUBTYPE.ROTATED_RECT:
        xy = _rotated_rect_vertices(roi.x1, roi.y1, roi.x2, roi.y2, _float_param(roi))
    elif roi.options & ROI_OPTIONS.SPLINE_FIT:
        raise CalimInputError(
            f"{label} is spline-fitted; CALIM cannot reproduce ImageJ's spline. "
            "Remove the fit in Fiji (Edit > Selection > Fit Spline, undo) or convert it"
        )
    elif roi.subpixel_coordinates is not None:
        xy = _subpixel_polygon(np.asarray(roi.subpixel_coordinates))
    elif roi.integer_coordinates is not None:
        xy = np.asarray(roi.integer_coordinates, dtype=np.float64) + [roi.left, roi.top]
    else:
        raise CalimInputError(f"{label}: polygon ROI without coordinates")
    if len(xy) < 3:
        raise CalimInputError(f"{label}: polygon with fewer than 3 vertices has no area")
    return np.asarray(xy, dtype=np.float64)


def _why_empty(roi: ImagejRoi, ny: int, nx: int, label: str) -> str:
    """Why an area ROI with an empty mask has no pixel in the frame, as a verb phrase.

    ``"lies outside the frame"`` when its outline lies outside the ``ny x nx`` frame,
    ``"has zero area (...)"`` for a rectangle or oval of width or height 0 and a
    polygon whose vertices lie on one line, else ``"covers no pixel centre inside the
    frame"`` (e.g. a sliver between pixel centres).
    """
    if roi.roitype in (ROI_TYPE.RECT, ROI_TYPE.OVAL) and not roi.composite:
        x0, y0, w, h = _int_bounds(roi)
        x1, y1 = x0 + w, y0 + h
        flat = f"has zero area ({w} x {h} pixels)" if w <= 0 or h <= 0 else ""
    else:
        xy = _composite_path(roi, label) if roi.composite else _polygon_vertices(roi, label)
        (x0, y0), (x1, y1) = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
        rings = np.split(xy, np.flatnonzero(np.isnan(xy).any(axis=1)))
        flat = ("has zero area (its vertices lie on one line)"
                if all(_collinear(r[~np.isnan(r).any(axis=1)]) for r in rings) else "")
    if x1 < 0 or y1 < 0 or x0 > nx or y0 > ny:  # away from the frame, even its edge
        return _OUTSIDE
    if flat:
        return flat
    if x1 <= 0 or y1 <= 0 or x0 >= nx or y0 >= ny:
        return _OUTSIDE
    return "covers no pixel centre inside the frame"


def _collinear(xy: np.ndarray) -> bool:
    """Whether points ``(n, 2)`` lie on one line (to 1e-6 of their extent)."""
    if len(xy) < 3:
        return True
    s = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
    return bool(s[-1] <= 1e-6 * max(s[0], 1.0))


def drop_outside(
    rois: Sequence[ImagejRoi], shape: tuple[int, int], /
) -> tuple[list[ImagejRoi], list[ImagejRoi]]:
    """Leave out, with a warning, the ROIs that have no pixel inside the frame.

    ROIs partly outside the frame are kept (:func:`rasterize` clips them). A ROI
    entirely outside, e.g. drawn on a larger image, has no pixel to average: it is
    left out. (ImageJ's ROI Manager would instead move such a ROI to the image centre
    when it puts it on the image, and measure whatever lies there.) So are ROIs inside
    the frame that have no pixel: zero area (a width-0 rectangle, a polygon whose
    vertices lie on one line) or no pixel centre inside them. The ROIs kept keep
    their numbers (``roi.number``, see :func:`roi_numbers`); the pipeline's tables
    number them 1..n.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
        Area ROIs in session order, e.g. from :func:`read_rois`. Not modified.
    shape : tuple of int
        ``(ny, nx)`` of the native-resolution frame, in pixels.

    Returns
    -------
    kept : list of roifile.ImagejRoi
        The ROIs with at least one pixel inside the frame, in order.
    dropped : list of roifile.ImagejRoi
        The others, in order.

    Raises
    ------
    CalimInputError
        If a ROI cannot be rasterized for another reason (see :func:`rasterize`).

    Warns
    -----
    CalimWarning
        Once, naming each ROI dropped: its number, name, type, bounds and why it has no
        pixel (outside the frame, zero area, or no pixel centre inside it).
    """
    ny, nx = _check_shape(shape)
    kept: list[ImagejRoi] = []
    dropped: list[ImagejRoi] = []
    described = []
    outside = False
    for number, roi in zip(roi_numbers(rois), rois, strict=True):
        label = _roi_label(roi, number)
        if _mask(roi, ny, nx, label).any():
            kept.append(roi)
        else:
            dropped.append(roi)
            why = _why_empty(roi, ny, nx, label)
            outside |= why == _OUTSIDE
            described.append(f"{_describe(roi, number)} at x {roi.left}..{roi.right}, "
                             f"y {roi.top}..{roi.bottom} {why}")
    if dropped:
        warnings.warn(
            f"left out {len(dropped)} ROI(s) with no pixel inside the {ny} x {nx} frame: "
            f"{'; '.join(described)}. "
            + ("ImageJ's ROI Manager would move a ROI outside the frame to the image "
               "centre when it puts it on the image; CALIM does not measure there. "
               if outside else "")
            + _NUMBERING_NOTE,
            CalimWarning, stacklevel=2,
        )
    return kept, dropped


def _paste(mask: np.ndarray, box: tuple[int, int, np.ndarray] | None) -> None:
    if box is not None:
        r0, c0, sub = box
        mask[r0 : r0 + sub.shape[0], c0 : c0 + sub.shape[1]] = sub


def _int_bounds(roi: ImagejRoi) -> tuple[int, int, int, int]:
    """(x, y, width, height) in pixels as ImageJ's ``Roi`` constructors set them."""
    if roi.subpixelrect:
        return (
            int(math.trunc(roi.xd)),
            int(math.trunc(roi.yd)),
            int(math.ceil(roi.widthd)),
            int(math.ceil(roi.heightd)),
        )
    return roi.left, roi.top, roi.right - roi.left, roi.bottom - roi.top


def _oval(mask: np.ndarray, x0: int, y0: int, w: int, h: int) -> None:
    """Fill ``OvalRoi.getMask`` for the ``w x h`` box at ``(x0, y0)``, clipped."""
    if w <= 0 or h <= 0:
        return
    ny, nx = mask.shape
    j0, j1 = max(0, -y0), min(h, ny - y0)
    i0, i1 = max(0, -x0), min(w, nx - x0)
    if j1 <= j0 or i1 <= i0:
        return
    a, b = w / 2.0, h / 2.0
    a2, b2 = a * a, b * b
    ca, cb = a - 0.5, b - 0.5
    dx = np.arange(i0, i1, dtype=np.float64) - ca
    dy = np.arange(j0, j1, dtype=np.float64) - cb
    inside = (dx * dx / a2)[None, :] + (dy * dy / b2)[:, None] <= 1.0
    mask[y0 + j0 : y0 + j1, x0 + i0 : x0 + i1] = inside


# --------------------------------------------------------- downsampled weights


def coverage_weights(mask: Any, /, *, factors: Mapping[str, int] = _DEFAULT_FACTORS) -> np.ndarray:
    """Fraction of each downsampling block's native pixels inside a ROI.

    Parameters
    ----------
    mask : array_like of bool, shape (ny, nx)
        Native-resolution ROI mask, e.g. from :func:`rasterize`.
    factors : mapping of str to int, keyword-only
        Block size per dimension, ``{"y": fy, "x": fx}`` in pixels (other keys,
        such as ``"time"``, are ignored so the pipeline's ``downsample``
        parameter can be passed as is). Default is ``{"y": 2, "x": 2}``.

    Returns
    -------
    numpy.ndarray of float32, shape (ny // fy, nx // fx)
        Mean of the mask over each block, in [0, 1]. Trailing rows / columns
        that do not fill a whole block are dropped, as block-mean
        downsampling drops partial blocks.

    Raises
    ------
    CalimInputError
        If ``mask`` is not 2-D or a factor is missing or not a positive integer.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise CalimInputError(f"mask must be 2-D (y, x), got shape {m.shape}")
    f = []
    for dim in ("y", "x"):
        if dim not in factors:
            raise CalimInputError(f"factors must give '{dim}', got {dict(factors)!r}")
        v = factors[dim]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise CalimInputError(f"factors[{dim!r}] must be a positive integer, got {v!r}")
        f.append(int(v))
    fy, fx = f
    by, bx = m.shape[0] // fy, m.shape[1] // fx
    blocks = m[: by * fy, : bx * fx].astype(np.float32).reshape(by, fy, bx, fx)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def label_image(
    rois: Sequence[ImagejRoi],
    shape: tuple[int, int],
    /,
    *,
    numbers: Sequence[int] | None = None,
) -> np.ndarray:
    """Label image of ROIs: 0 is background, ``n`` is the ``n``-th ROI (1-based).

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
        Area ROIs in session order (the order of the ROI zip).
    shape : tuple of int
        ``(ny, nx)`` of the native frame, in pixels.
    numbers : sequence of int, keyword-only, optional
        Label of each ROI, e.g. ``roi_numbers(rois)`` to label ROIs with their numbers
        in the ROI set (the ROI Manager's). Default is None: 1, 2, ... in list order.

    Returns
    -------
    numpy.ndarray of int32, shape (ny, nx)
        Where ROIs overlap, the later ROI in the list wins (its number
        overwrites earlier ones), as when the masks are painted in order.

    Raises
    ------
    CalimInputError
        If a ROI cannot be rasterized (see :func:`rasterize`); the message
        gives its number and name. If ``numbers`` does not give one positive
        number per ROI.
    """
    ny, nx = _check_shape(shape)
    labels = np.zeros((ny, nx), dtype=np.int32)
    if numbers is None:
        numbers = range(1, len(rois) + 1)
    elif len(numbers) != len(rois) or any(int(n) < 1 for n in numbers):
        raise CalimInputError(
            f"numbers must give one positive label per ROI ({len(rois)}), got {list(numbers)}")
    for n, roi in zip(numbers, rois, strict=True):
        labels[rasterize(roi, (ny, nx), index=int(n))] = int(n)
    return labels
