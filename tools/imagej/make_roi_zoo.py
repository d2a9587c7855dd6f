"""Write the ImageJ reference ROI zoo and a small test stack (deterministic).

Run from the repository root (``tools/imagej/regenerate.sh`` does)::

    .venv/bin/python tools/imagej/make_roi_zoo.py tests/fixtures/imagej

Writes into the output folder:

- ``zoo.zip``: the area ROIs ImageJ rasterizes and measures (order = ROI number);
- ``single.roi``: one polygon as a lone ``.roi`` file;
- ``nonarea.zip``: line, polyline, point and a rectangle fully outside the
  frame (CALIM must refuse them);
- ``corrupt.zip`` (not a zip) and ``no_rois.zip`` (a zip without ``.roi``);
- ``stack.tif``: uint16, 5 frames of 40 x 56 pixels (seeded random), ImageJ
  hyperstack, for the Multi Measure means.

The frame is deliberately non-square (40 rows x 56 columns). Vertices use
roifile's (x, y) pixel-corner convention.
"""

from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from calim_helpers.rois import _ellipse_vertices, _rotated_rect_vertices, read_rois

NY, NX = 40, 56
N_FRAMES = 5
SEED = 20240404


def polygon(name, pts, roitype=ROI_TYPE.POLYGON, *, subpixel=None, options=ROI_OPTIONS.NONE):
    """Polygon-like ROI; float vertices (or subpixel=True) -> sub-pixel ROI."""
    arr = np.asarray(pts)
    if subpixel:
        arr = arr.astype(np.float64)
    roi = ImagejRoi.frompoints(arr, name=name)
    roi.roitype = roitype
    roi.options = (roi.options & ROI_OPTIONS.SUB_PIXEL_RESOLUTION) | options
    return roi


def rect(name, x, y, w, h, roitype=ROI_TYPE.RECT, *, arc=0):
    """Integer rectangle or oval with bounds (x, y, w, h)."""
    return ImagejRoi(
        roitype=roitype,
        name=name,
        left=x,
        top=y,
        right=x + w,
        bottom=y + h,
        rounded_rect_arc_size=arc,
    )


def rect_subpixel(name, x, y, w, h, roitype=ROI_TYPE.RECT):
    """Sub-pixel rectangle or oval (float bounds)."""
    return ImagejRoi(
        roitype=roitype,
        name=name,
        options=ROI_OPTIONS.SUB_PIXEL_RESOLUTION,
        left=int(np.floor(x)),
        top=int(np.floor(y)),
        right=int(np.ceil(x + w)),
        bottom=int(np.ceil(y + h)),
        xd=x,
        yd=y,
        widthd=w,
        heightd=h,
    )


def _with_float_param(roi, value):
    b0, b1, arc = struct.unpack(">BBh", struct.pack(">f", value))
    roi.arrow_style_or_aspect_ratio, roi.arrow_head_size, roi.rounded_rect_arc_size = b0, b1, arc
    return roi


def _param_roi(name, subtype, x1, y1, x2, y2, param, vertices):
    roi = ImagejRoi.frompoints(vertices.astype(np.float64), name=name)
    roi.roitype = ROI_TYPE.FREEHAND
    roi.subtype = subtype
    roi.options = ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    roi.x1, roi.y1, roi.x2, roi.y2 = x1, y1, x2, y2
    return _with_float_param(roi, param)


def ellipse(name, x1, y1, x2, y2, ratio):
    """EllipseRoi: major axis (x1, y1)-(x2, y2), aspect ratio minor/major."""
    v = _ellipse_vertices(x1, y1, x2, y2, ratio)
    return _param_roi(name, ROI_SUBTYPE.ELLIPSE, x1, y1, x2, y2, ratio, v)


def rotated_rect(name, x1, y1, x2, y2, width):
    """RotatedRectRoi: centre line (x1, y1)-(x2, y2) and width."""
    v = _rotated_rect_vertices(x1, y1, x2, y2, width)
    return _param_roi(name, ROI_SUBTYPE.ROTATED_RECT, x1, y1, x2, y2, width, v)


def composite(name, rings):
    """ShapeRoi from closed rings (lists of (x, y)), as a MOVETO/LINETO/CLOSE path."""
    path = []
    for ring in rings:
        (x0, y0), *rest = ring
        path += [0, x0, y0]
        for x, y in rest:
            path += [1, x, y]
        path += [4]
    allpts = np.concatenate([np.asarray(r, dtype=np.float64) for r in rings])
    lo = np.floor(allpts.min(axis=0)).astype(int)
    hi = np.ceil(allpts.max(axis=0)).astype(int)
    multi = np.asarray(path, dtype=np.float32)
    return ImagejRoi(
        roitype=ROI_TYPE.RECT,
        name=name,
        left=int(lo[0]),
        top=int(lo[1]),
        right=int(hi[0]),
        bottom=int(hi[1]),
        shape_roi_size=multi.size,
        multi_coordinates=multi,
    )


def random_star(rng, n, cx, cy, rmin, rmax, grid=None):
    """Random star-shaped polygon; vertices snapped to `grid` if given."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(rmin, rmax, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    if grid is not None:
        pts = np.round(pts / grid) * grid
    return pts


def area_rois(rng):
    """Return the zoo of area ROIs, in ROI-number order."""
    rois = []
    add = rois.append
    # integer polygons
    add(polygon("poly_convex", [[3, 2], [12, 4], [14, 11], [6, 13], [2, 8]]))
    add(
        polygon(
            "poly_concave",
            [[18, 2], [30, 2], [30, 12], [26, 12], [26, 6], [22, 6], [22, 14], [18, 14]],
        )
    )
    add(
        polygon(
            "poly_star",
            [
                [40, 1],
                [43, 7],
                [50, 8],
                [45, 12],
                [47, 19],
                [40, 15],
                [33, 19],
                [35, 12],
                [30, 8],
                [37, 7],
            ],
        )
    )
    add(
        polygon(
            "poly_selftouch",
            [[3, 16], [9, 16], [9, 22], [15, 22], [15, 28], [9, 28], [9, 22], [3, 22]],
        )
    )
    add(polygon("poly_bowtie", [[18, 17], [28, 27], [28, 17], [18, 27]]))
    add(polygon("poly_diamond45", [[40, 20], [47, 27], [40, 34], [33, 27]]))
    add(polygon("poly_slopes", [[2, 30], [7, 31], [13, 39], [4, 37], [1, 34]]))
    add(polygon("poly_sliver", [[20, 30], [34, 31], [20, 32]]))
    # freehand and traced (integer)
    add(
        polygon(
            "freehand_int",
            random_star(rng, 40, 12, 12, 4, 9).round().astype(int),
            ROI_TYPE.FREEHAND,
        )
    )
    add(
        polygon(
            "traced_steps",
            [
                [30, 22],
                [34, 22],
                [34, 24],
                [37, 24],
                [37, 27],
                [35, 27],
                [35, 30],
                [31, 30],
                [31, 27],
                [30, 27],
            ],
            ROI_TYPE.TRACED,
        )
    )
    # sub-pixel polygons: ties on pixel centres and pixel edges
    add(polygon("sp_centres_rect", [[5.5, 5.5], [12.5, 5.5], [12.5, 10.5], [5.5, 10.5]]))
    add(polygon("sp_centres_tri", [[20.5, 3.5], [29.5, 3.5], [20.5, 12.5]]))
    add(polygon("sp_centres_diamond", [[40.5, 20.5], [46.5, 26.5], [40.5, 32.5], [34.5, 26.5]]))
    add(
        polygon(
            "sp_edges_rect", [[3.0, 25.0], [10.0, 25.0], [10.0, 31.0], [3.0, 31.0]], subpixel=True
        )
    )
    add(polygon("sp_mixed", [[14.5, 20.0], [22.0, 20.5], [24.5, 27.0], [18.0, 31.5], [12.0, 26.5]]))
    add(polygon("sp_offbase", [[1.7, 2.3], [10.5, 2.5], [13.5, 8.5], [6.5, 12.5], [2.5, 9.25]]))
    add(
        polygon(
            "sp_offbase_big", [[31.3, 21.1], [52.5, 21.5], [54.5, 35.5], [40.5, 38.5], [33.5, 30.0]]
        )
    )
    add(polygon("sp_quarter_grid", random_star(rng, 9, 28, 20, 3, 11, grid=0.25), subpixel=True))
    add(polygon("sp_half_grid", random_star(rng, 12, 14, 30, 3, 9, grid=0.5), subpixel=True))
    for k in range(6):
        cx, cy = rng.uniform(6, NX - 6), rng.uniform(6, NY - 6)
        add(polygon(f"sp_random{k}", random_star(rng, int(rng.integers(5, 14)), cx, cy, 2, 10)))
    add(polygon("freehand_sp", random_star(rng, 60, 30, 20, 5, 12), ROI_TYPE.FREEHAND))
    add(
        polygon(
            "freehand_sp_drawoffset",
            random_star(rng, 30, 44, 30, 3, 7),
            ROI_TYPE.FREEHAND,
            options=ROI_OPTIONS.DRAW_OFFSET,
        )
    )
    add(
        polygon(
            "traced_sp",
            [[10.0, 33.0], [16.0, 33.0], [16.0, 36.0], [12.0, 36.0], [12.0, 38.0], [10.0, 38.0]],
            ROI_TYPE.TRACED,
            subpixel=True,
        )
    )
    # polygons partly outside the frame
    add(polygon("poly_out_topleft", [[-5, -3], [8, -2], [6, 6], [-2, 9]]))
    add(polygon("poly_out_bottomright", [[48, 33], [60, 35], [58, 45], [50, 44]]))
    add(polygon("sp_out_left", [[-3.5, 14.5], [4.5, 12.5], [5.5, 20.5], [-6.25, 22.0]]))
    # rectangles
    add(rect("rect_inside", 5, 7, 9, 6))
    add(rect("rect_1x1", 20, 20, 1, 1))
    add(rect("rect_frame", 0, 0, NX, NY))
    add(rect("rect_touch_right", 50, 30, 6, 10))
    add(rect("rect_out_topleft", -4, -3, 10, 8))
    add(rect("rect_out_bottomright", 50, 35, 12, 9))
    add(rect_subpixel("rect_subpixel", 10.5, 20.25, 7.3, 4.5))
    add(rect("rect_rounded", 30, 5, 12, 9, arc=6))
    # ovals: small sizes odd and even, non-square, large, partly outside
    x = 1
    for s in range(1, 8):
        add(rect(f"oval_{s}x{s}", x, 1 + (s % 2) * 10, s, s, ROI_TYPE.OVAL))
        x += s + 1
    x = 1
    for w, h in [(3, 5), (6, 4), (2, 7), (8, 3), (5, 2)]:
        add(rect(f"oval_{w}x{h}", x, 24, w, h, ROI_TYPE.OVAL))
        x += w + 2
    add(rect("oval_large", 6, 5, 37, 28, ROI_TYPE.OVAL))
    add(rect("oval_out_left", -6, 10, 15, 11, ROI_TYPE.OVAL))
    add(rect("oval_out_bottomright", 47, 31, 14, 13, ROI_TYPE.OVAL))
    add(rect_subpixel("oval_subpixel", 20.4, 10.6, 9.5, 6.2, ROI_TYPE.OVAL))
    # EllipseRoi (several aspect ratios and angles), one partly outside
    add(ellipse("ellipse_h", 5.0, 10.0, 25.0, 10.0, 0.5))
    add(ellipse("ellipse_30deg", 30.0, 10.0, 50.0, 21.547, 0.3))
    add(ellipse("ellipse_steep", 14.2, 14.7, 18.9, 36.1, 0.62))
    add(ellipse("ellipse_circle", 30.5, 30.5, 42.5, 30.5, 1.0))
    add(ellipse("ellipse_thin", 3.0, 36.0, 27.0, 24.0, 0.12))
    add(ellipse("ellipse_out", 45.0, -4.0, 60.0, 8.0, 0.7))
    # RotatedRectRoi
    add(rotated_rect("rotrect_30", 8.0, 20.0, 24.0, 29.0, 6.0))
    add(rotated_rect("rotrect_vertical", 40.5, 5.0, 40.5, 30.0, 5.0))
    add(rotated_rect("rotrect_horizontal", 6.0, 35.5, 30.0, 35.5, 3.0))
    add(rotated_rect("rotrect_steep", 47.3, 8.9, 52.1, 37.4, 7.7))
    # composite (ShapeRoi)
    add(
        composite(
            "comp_two_squares",
            [[(2, 2), (8, 2), (8, 8), (2, 8)], [(12, 4), (18, 4), (18, 12), (12, 12)]],
        )
    )
    add(
        composite(
            "comp_hole",
            [[(22, 14), (38, 14), (38, 30), (22, 30)], [(26, 18), (34, 18), (34, 26), (26, 26)]],
        )
    )
    add(
        composite(
            "comp_overlap_xor",
            [[(40, 2), (50, 2), (50, 10), (40, 10)], [(45, 6), (54, 6), (54, 14), (45, 14)]],
        )
    )
    add(
        composite(
            "comp_subpixel",
            [
                [(3.5, 30.5), (12.25, 29.75), (10.5, 38.5)],
                [(14.5, 31.5), (19.5, 31.5), (19.5, 36.5), (14.5, 36.5)],
                [(15.5, 32.5), (17.5, 32.5), (17.5, 34.5)],
            ],
        )
    )
    add(
        composite(
            "comp_out_right", [[(50.5, 20), (62, 18), (60, 28)], [(44, 30), (47, 30), (47, 33)]]
        )
    )
    return rois


def nonarea_rois():
    """ROIs CALIM must refuse: no area, or nothing inside the frame."""
    line = ImagejRoi(
        roitype=ROI_TYPE.LINE,
        name="line",
        x1=2.0,
        y1=3.0,
        x2=20.0,
        y2=15.0,
        left=2,
        top=3,
        right=21,
        bottom=16,
    )
    polyline = polygon("polyline", [[3, 3], [10, 20], [30, 5]], ROI_TYPE.POLYLINE)
    point = polygon("point", [[5, 5], [9, 12]], ROI_TYPE.POINT)
    outside = rect("rect_outside", 70, 10, 5, 5)
    return [line, polyline, point, outside]


def write_zip(path: Path, rois) -> None:
    """Write a ROI set with fixed entry timestamps, so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for roi in rois:
            zf.writestr(zipfile.ZipInfo(f"{roi.name}.roi", (1980, 1, 1, 0, 0, 0)), roi.tobytes())
    assert [r.name for r in read_rois(path, area_only=False)] == [r.name for r in rois]


def main(out: Path) -> None:
    """Write all fixtures into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rois = area_rois(rng)
    names = [r.name for r in rois]
    assert len(set(names)) == len(names), "ROI names must be unique"
    write_zip(out / "zoo.zip", rois)
    polygon("single_poly", [[4, 4], [20, 6], [12, 18]]).tofile(out / "single.roi")
    write_zip(out / "nonarea.zip", nonarea_rois())
    (out / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with zipfile.ZipFile(out / "no_rois.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo("readme.txt", (1980, 1, 1, 0, 0, 0)), "no ROIs in here")
    stack = rng.integers(0, 4096, size=(N_FRAMES, NY, NX), dtype=np.uint16)
    tifffile.imwrite(out / "stack.tif", stack, imagej=True, metadata={"axes": "TYX"})
    print(f"wrote {len(rois)} area ROIs and a {stack.shape} stack to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/imagej"))
