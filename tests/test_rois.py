"""Tests for calim_helpers.rois against ImageJ 1.53t reference fixtures.

The fixtures in tests/fixtures/imagej/ were produced by real ImageJ (see the
README there and tools/imagej/regenerate.sh); these tests only read them.
"""

from __future__ import annotations

import doctest
import re
import shutil
import warnings
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from imagej_fixtures import FIX, UNSUPPORTED, imagej_means
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from calim_helpers import rois as rois_mod
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.rois import (
    coverage_weights,
    drop_outside,
    label_image,
    polygon_mask,
    rasterize,
    read_rois,
    roi_numbers,
    split_area_rois,
    write_rois,
)

_REF = np.load(FIX / "masks.npz")
REF_MASKS = _REF["masks"]
REF_NAMES = [str(n) for n in _REF["names"]]
SHAPE = REF_MASKS.shape[1:]
ZOO = read_rois(FIX / "zoo.zip")
# ImageJ draws rounded-rectangle corners as flattened Bezier curves (java.awt.geom);
# CALIM refuses them with a clear error instead of approximating.


def test_fixture_provenance():
    assert str(_REF["imagej_version"]) == "ImageJ 1.53t"
    assert [r.name for r in ZOO] == REF_NAMES
    assert SHAPE == (40, 56)


@pytest.mark.imagej
@pytest.mark.parametrize("i", range(len(ZOO)), ids=REF_NAMES)
def test_rasterize_matches_imagej(i):
    roi = ZOO[i]
    if roi.name in UNSUPPORTED:
        with pytest.raises(CalimInputError, match=UNSUPPORTED[roi.name]):
            rasterize(roi, SHAPE)
        return
    mask = rasterize(roi, SHAPE)
    assert mask.dtype == bool and mask.shape == SHAPE
    diff = np.argwhere(mask != REF_MASKS[i])
    assert diff.size == 0, f"{roi.name}: {len(diff)} pixels differ, first (row, col): {diff[:5]}"


@pytest.mark.imagej
def test_imagej_written_roiset_matches():
    """The same ROIs as ImageJ re-saved them (ImageJ's own encoder) give the same masks."""
    resaved = read_rois(FIX / "zoo_imagej.zip")
    assert [r.name for r in resaved] == REF_NAMES
    for roi, ref in zip(resaved, REF_MASKS, strict=True):
        if roi.name in UNSUPPORTED:
            continue
        np.testing.assert_array_equal(rasterize(roi, SHAPE), ref, err_msg=roi.name)


@pytest.mark.imagej
def test_multi_measure_means():
    stack = tifffile.imread(FIX / "stack.tif")
    assert stack.dtype == np.uint16 and stack.shape[1:] == SHAPE
    ij = imagej_means()
    assert list(ij) == REF_NAMES
    n_checked = 0
    for roi in ZOO:
        if roi.name in UNSUPPORTED:
            continue
        mask = rasterize(roi, SHAPE)
        ours = stack[:, mask].astype(np.float64).mean(axis=1)
        # ImageJ's table has 9 decimals
        np.testing.assert_allclose(ours, ij[roi.name], rtol=0, atol=1e-6, err_msg=roi.name)
        n_checked += 1
    assert n_checked == len(ZOO) - len(UNSUPPORTED)


# --------------------------------------------------------- brute-force oracle


def _oracle(rings, shape):
    """Slow, exact even-odd ray casting on pixel centres (rational arithmetic).

    Ties are handled deliberately with ImageJ's rule: an edge counts for a
    centre (px, py) when y_low < py <= y_high and it crosses that row strictly
    left of px. (Centres on left / top edges are outside, on right / bottom
    edges inside.)
    """
    edges = []
    for ring in rings:
        pts = [(Fraction(float(x)), Fraction(float(y))) for x, y in ring]
        edges += list(zip(pts, pts[1:] + pts[:1], strict=True))
    ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    for r in range(ny):
        py = Fraction(2 * r + 1, 2)
        xs = []
        for (x1, y1), (x2, y2) in edges:
            if y1 == y2:
                continue
            if y1 > y2:
                x1, y1, x2, y2 = x2, y2, x1, y1
            if y1 < py <= y2:
                xs.append(x1 + (py - y1) * (x2 - x1) / (y2 - y1))
        for c in range(nx):
            px = Fraction(2 * c + 1, 2)
            out[r, c] = sum(x < px for x in xs) % 2 == 1
    return out


def _random_polygon(rng, n, shape, kind):
    ny, nx = shape
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(1, min(ny, nx) / 2 + 2, n)
    cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    if kind == "integer":
        return np.round(pts).astype(np.int64)
    if kind == "quarter":  # many exact ties on pixel centres and edges
        return (np.round(pts * 4) / 4).astype(np.float32)
    return pts.astype(np.float32)  # random sub-pixel: ties have probability ~0


@pytest.mark.parametrize("kind", ["integer", "quarter", "float"])
def test_rasterize_agrees_with_bruteforce_oracle(kind):
    rng = np.random.default_rng({"integer": 1, "quarter": 2, "float": 3}[kind])
    shape = (17, 23)
    n_done = 0
    for _ in range(12):
        pts = _random_polygon(rng, int(rng.integers(3, 11)), shape, kind)
        roi = ImagejRoi.frompoints(pts, name=f"{kind}{n_done}")
        roi.roitype = ROI_TYPE.POLYGON
        assert (roi.subpixel_coordinates is not None) == (kind != "integer")
        expected = _oracle([pts], shape)
        if not expected.any():
            with pytest.raises(CalimInputError, match="no pixel inside"):
                rasterize(roi, shape)
            continue
        np.testing.assert_array_equal(rasterize(roi, shape), expected, err_msg=str(pts.tolist()))
        n_done += 1
    assert n_done >= 6


def test_polygon_mask_multiple_rings_even_odd():
    rng = np.random.default_rng(4)
    shape = (15, 19)
    for _ in range(5):
        rings = [_random_polygon(rng, 6, shape, "quarter") for _ in range(3)]
        nan = np.full((1, 2), np.nan)
        xy = np.concatenate([rings[0], nan, rings[1], nan, rings[2]])
        np.testing.assert_array_equal(polygon_mask(xy, shape), _oracle(rings, shape))


def test_polygon_mask_convention_and_doctest():
    # (x, y) vertices -> mask[row=y, col=x]; a 3 wide, 2 tall box at x=1..4, y=5..7
    mask = polygon_mask([[1, 5], [4, 5], [4, 7], [1, 7]], (9, 6))
    assert np.array_equal(np.argwhere(mask), [[5, 1], [5, 2], [5, 3], [6, 1], [6, 2], [6, 3]])
    result = doctest.testmod(rois_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# ------------------------------------------------------------- type details


def test_oval_small_sizes_rule():
    """OvalRoi.getMask: up to 3 x 3 an oval is its full box; 4 x 4 loses its corners."""

    def oval(w, h):
        return ImagejRoi(roitype=ROI_TYPE.OVAL, name="o", left=1, top=1, right=1 + w, bottom=1 + h)

    counts = [int(rasterize(oval(s, s), (9, 9)).sum()) for s in range(1, 8)]
    assert counts == [1, 4, 9, 12, 21, 32, 37]
    four = rasterize(oval(4, 4), (6, 6))[1:5, 1:5].astype(int)
    assert four.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]


def test_spline_fit_refused():
    roi = ImagejRoi.frompoints([[2, 2], [9, 3], [5, 8]], name="spline")
    roi.roitype = ROI_TYPE.POLYGON
    roi.options |= ROI_OPTIONS.SPLINE_FIT
    with pytest.raises(CalimInputError, match="'spline'.*spline-fitted"):
        rasterize(roi, (10, 10))


# ---------------------------------------------------------- coverage weights


def test_coverage_weights_known_cases():
    mask = np.zeros((5, 7), dtype=bool)
    mask[0:2, 0:2] = True  # full block
    mask[2, 2:4] = True  # half of block (1, 1)
    mask[0, 4] = True  # a quarter of block (0, 2)
    mask[4, :] = True  # trailing partial row: dropped
    mask[:, 6] = True  # trailing partial column: dropped
    w = coverage_weights(mask)
    assert w.dtype == np.float32 and w.shape == (2, 3)
    np.testing.assert_array_equal(w, [[1.0, 0.0, 0.25], [0.0, 0.5, 0.0]])
    w3 = coverage_weights(np.ones((7, 10), dtype=bool), factors={"time": 10, "y": 3, "x": 4})
    assert w3.shape == (2, 2) and np.all(w3 == 1)


@pytest.mark.parametrize(("fy", "fx"), [(2, 2), (3, 2), (1, 4)])
def test_coverage_weights_conserve_pixel_count(fy, fx):
    for roi in ZOO:
        if roi.name in UNSUPPORTED:
            continue
        mask = rasterize(roi, SHAPE)
        w = coverage_weights(mask, factors={"y": fy, "x": fx})
        ny, nx = SHAPE[0] // fy * fy, SHAPE[1] // fx * fx
        assert w.shape == (SHAPE[0] // fy, SHAPE[1] // fx)
        assert round(float(w.astype(np.float64).sum()) * fy * fx) == mask[:ny, :nx].sum()
        assert w.min() >= 0 and w.max() <= 1


@pytest.mark.parametrize(
    ("factors", "match"),
    [({"y": 2}, "'x'"), ({"y": 0, "x": 2}, "positive integer"), ({"y": 2.0, "x": 2}, "positive")],
)
def test_coverage_weights_bad_factors(factors, match):
    with pytest.raises(CalimInputError, match=match):
        coverage_weights(np.ones((4, 4), dtype=bool), factors=factors)
    with pytest.raises(CalimInputError, match="2-D"):
        coverage_weights(np.ones((2, 4, 4), dtype=bool))


# --------------------------------------------------------------- label image


def _rect(name, x, y, w, h):
    return ImagejRoi(roitype=ROI_TYPE.RECT, name=name, left=x, top=y, right=x + w, bottom=y + h)


def test_label_image_later_roi_wins():
    a, b = _rect("a", 1, 1, 4, 4), _rect("b", 3, 3, 4, 4)
    lab = label_image([a, b], (8, 8))
    assert lab.dtype == np.int32
    assert lab[2, 2] == 1 and lab[3, 3] == 2 and lab[6, 6] == 2 and lab[0, 0] == 0
    assert label_image([b, a], (8, 8))[3, 3] == 2  # now `a` is second: it wins
    assert label_image([b, a], (8, 8))[6, 6] == 1


def test_label_image_fixture_zoo():
    rois = [r for r in ZOO if r.name not in UNSUPPORTED]
    lab = label_image(rois, SHAPE)
    for n in (len(rois), len(rois) - 1):
        assert np.array_equal(lab == n, rasterize(rois[n - 1], SHAPE) & (lab == n))
    assert np.array_equal(lab == len(rois), rasterize(rois[-1], SHAPE))


# ------------------------------------------------------------------- errors


NONAREA = read_rois(FIX / "nonarea.zip", area_only=False)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("line", r"ROI 1 \('line'\) is a line ROI, not an area ROI"),
        ("polyline", r"ROI 2 \('polyline'\) is a polyline ROI, not an area"),
        ("point", r"ROI 3 \('point'\) is a point ROI, not an area"),
        ("rect_outside", r"ROI 4 \('rect_outside'\) has no pixel inside the 40 x 56 frame"),
    ],
)
def test_nonarea_and_outside_rois_refused_by_rasterize(name, match):
    roi = next(r for r in NONAREA if r.name == name)
    with pytest.raises(CalimInputError, match=match):
        rasterize(roi, SHAPE)


def test_label_image_error_names_index_and_name():
    line = ImagejRoi(roitype=ROI_TYPE.LINE, name="line", x1=1, y1=1, x2=9, y2=1)
    with pytest.raises(CalimInputError, match=r"ROI 2 \('line'\) is a line ROI"):
        label_image([_rect("a", 1, 1, 3, 3), line], SHAPE)
    with pytest.raises(CalimInputError, match=r"ROI 9 \('line'\) is a line ROI"):
        label_image([_rect("a", 1, 1, 3, 3), line], SHAPE, numbers=[5, 9])
    with pytest.raises(CalimInputError, match=r"one positive label per ROI \(2\)"):
        label_image([_rect("a", 1, 1, 3, 3), line], SHAPE, numbers=[1])


# ------------------------------------------------- real-world ROI sets (issue 9)


def _poly(name, pts, roitype=ROI_TYPE.POLYGON):
    roi = ImagejRoi.frompoints(pts, name=name)
    roi.roitype = roitype
    return roi


def _line(name, subtype=ROI_SUBTYPE.UNDEFINED):
    return ImagejRoi(roitype=ROI_TYPE.LINE, subtype=subtype, name=name, x1=1, y1=30, x2=40,
                     y2=30)


def _measuring_set(path):
    """Cells drawn between the leftovers of measuring, as the lab's ROI sets hold them."""
    rois = [
        _poly("cell-1", [[2, 2], [10, 2], [10, 8], [2, 8]]),  # 1
        _rect("cell-2", 20, 4, 6, 5),  # 2
        _line("measurement-line"),  # 3
        _poly("pt", [[5, 5], [7, 7]], ROI_TYPE.POINT),  # 4
        _poly("ang", [[30, 10], [40, 10], [40, 20]], ROI_TYPE.ANGLE),  # 5
        ImagejRoi(roitype=ROI_TYPE.OVAL, name="cell-3", left=30, top=20, right=38, bottom=28),
        _poly("path", [[1, 35], [20, 36], [30, 33]], ROI_TYPE.POLYLINE),  # 7
        _poly("scribble", [[44, 3], [50, 9], [52, 4]], ROI_TYPE.FREELINE),  # 8
        _line("arrow", ROI_SUBTYPE.ARROW),  # 9
        ImagejRoi(roitype=ROI_TYPE.RECT, subtype=ROI_SUBTYPE.TEXT, name="label", left=1,
                  top=1, right=8, bottom=5),  # 10
        _poly("cell-4", [[44.5, 30.25], [53.5, 31.5], [49.0, 38.75]]),  # 11
    ]
    write_rois(path, rois)
    return path


def test_read_rois_leaves_out_lines_points_and_angles(tmp_path):
    path = _measuring_set(tmp_path / "RoiSet.zip")
    with pytest.warns(CalimWarning) as record:
        rois = read_rois(path)
    assert len(record) == 1
    message = str(record[0].message)
    for text in ("left out 7 ROI(s) that are not areas", "ROI 3 ('measurement-line', line)",
                 "ROI 4 ('pt', point)", "ROI 5 ('ang', angle)", "ROI 7 ('path', polyline)",
                 "ROI 8 ('scribble', freeline)", "ROI 9 ('arrow', arrow)",
                 "ROI 10 ('label', text)"):
        assert text in message, text
    assert "cell" not in message
    assert "keep their numbers" not in message  # the pipeline's tables renumber 1..n
    assert message.endswith("The pipeline's tables number the kept ROIs 1..n in zip order, "
                            "with their Fiji names beside: after a left-out ROI their "
                            "numbers differ from the ROI Manager's positions")
    # the session goes on: the cells keep their numbers in the ROI set (Fiji's)
    assert [r.name for r in rois] == ["cell-1", "cell-2", "cell-3", "cell-4"]
    assert roi_numbers(rois) == [1, 2, 6, 11]
    masks = [rasterize(r, SHAPE) for r in rois]
    labels = label_image(rois, SHAPE, numbers=roi_numbers(rois))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 6, 11]
    for n, mask in zip([1, 2, 6, 11], masks, strict=True):
        np.testing.assert_array_equal(labels == n, mask)
    np.testing.assert_array_equal(label_image(rois, SHAPE) == 3, masks[2])  # list order
    everything = read_rois(path, area_only=False)
    assert roi_numbers(everything) == list(range(1, 12))
    kept, left_out = split_area_rois(everything)
    assert [r.name for r in kept] == [r.name for r in rois]
    assert roi_numbers(left_out) == [3, 4, 5, 7, 8, 9, 10]


def test_read_rois_fixture_nonarea_and_only_nonarea(tmp_path):
    with pytest.warns(CalimWarning, match=r"ROI 1 \('line', line\), ROI 2 \('polyline', "
                                          r"polyline\), ROI 3 \('point', point\)"):
        (outside,) = read_rois(FIX / "nonarea.zip")
    assert outside.name == "rect_outside" and outside.number == 4
    write_rois(tmp_path / "lines.zip", [_line("a"), _poly("b", [[1, 1], [2, 2]], ROI_TYPE.POINT)])
    with pytest.raises(CalimInputError, match=r"lines\.zip' holds no area ROI, only ROI 1 "
                                              r"\('a', line\), ROI 2 \('b', point\)"):
        read_rois(tmp_path / "lines.zip")


def test_drop_outside_keeps_clipped_rois_and_numbers(tmp_path):
    rois = [
        _rect("inside", 2, 2, 5, 4),  # 1
        _poly("corner", [[-5, -5], [4, -5], [4, 3], [-5, 3]]),  # 2: partly outside
        _rect("right", 60, 10, 5, 5),  # 3: entirely right of the 56 columns
        ImagejRoi(roitype=ROI_TYPE.OVAL, name="above", left=10, top=-9, right=16, bottom=-1),
        _poly("sliver", [[55.6, 5], [56.4, 5], [56.4, 9], [55.6, 9]]),  # 5: no pixel centre
        _line("ruler"),  # 6: left out on reading
        ImagejRoi(roitype=ROI_TYPE.OVAL, name="edge", left=50, top=35, right=60, bottom=45),
    ]
    write_rois(tmp_path / "RoiSet.zip", rois)
    with pytest.warns(CalimWarning, match="'ruler'"):
        read = read_rois(tmp_path / "RoiSet.zip")
    before = [r.tobytes() for r in read]
    with pytest.warns(CalimWarning) as record:
        kept, dropped = drop_outside(read, SHAPE)
    assert [r.tobytes() for r in read] == before
    assert [r.name for r in kept] == ["inside", "corner", "edge"]
    assert roi_numbers(kept) == [1, 2, 7]
    assert [r.name for r in dropped] == ["right", "above", "sliver"]
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("left out 3 ROI(s) with no pixel inside the 40 x 56 frame: ")
    assert "ROI 3 ('right', rectangle) at x 60..65, y 10..15 lies outside the frame" in message
    assert "ROI 4 ('above', oval) at x 10..16, y -9..-1 lies outside the frame" in message
    assert re.search(r"ROI 5 \('sliver', polygon\) at [^;]* covers no pixel centre inside", message)
    assert "move a ROI outside the frame to the image centre" in message
    assert "tables number the kept ROIs 1..n in zip order" in message
    corner = rasterize(kept[1], SHAPE)  # clipped: the 4 x 3 pixels inside the frame
    assert np.array_equal(np.argwhere(corner), np.argwhere(np.pad(np.ones((3, 4), bool),
                                                                  ((0, 37), (0, 52)))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drop_outside(kept, SHAPE) == (kept, [])
    assert label_image(kept, SHAPE, numbers=roi_numbers(kept)).max() == 7


def _zip_entries(path, entries):
    """Write ``(name, bytes)`` entries as they are, duplicate names included."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def test_read_rois_duplicate_entry_names_are_distinct_rois(tmp_path):
    a = _poly("dup", [[2, 2], [10, 2], [10, 8], [2, 8]])
    b = ImagejRoi(roitype=ROI_TYPE.OVAL, name="dup", left=30, top=20, right=38, bottom=28)
    c = _rect("other", 20, 4, 6, 5)
    path = _zip_entries(tmp_path / "RoiSet.zip",
                        [("dup.roi", a.tobytes()), ("dup.roi", b.tobytes()),
                         ("other.roi", c.tobytes())])
    rois = read_rois(path)
    assert [r.tobytes() for r in rois] == [x.tobytes() for x in (a, b, c)]  # zip order
    assert [r.name for r in rois] == ["dup", "dup", "other"]
    assert roi_numbers(rois) == [1, 2, 3]
    masks = [rasterize(r, SHAPE) for r in rois[:2]]
    np.testing.assert_array_equal(masks[0], rasterize(a, SHAPE))
    np.testing.assert_array_equal(masks[1], rasterize(b, SHAPE))
    assert not np.array_equal(masks[0], masks[1])
    # a bad entry is named by its ROI number too, as its name is not unique
    _zip_entries(path, [("dup.roi", a.tobytes()), ("dup.roi", b"not a roi" * 8)])
    with pytest.raises(CalimInputError,
                       match=r"RoiSet\.zip': ROI 2 \(entry 'dup\.roi'\) is not an ImageJ ROI"):
        read_rois(path)


def test_read_rois_skips_macos_resource_forks(tmp_path):
    fork = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 60
    a, b = _rect("cell-1", 2, 2, 5, 4), _rect("cell-2", 20, 4, 6, 5)
    path = _zip_entries(tmp_path / "RoiSet.zip",
                        [("cell-1.roi", a.tobytes()), ("__MACOSX/", b""),
                         ("__MACOSX/._cell-1.roi", fork), ("cell-2.roi", b.tobytes()),
                         ("__MACOSX/sub/x.roi", fork), ("._cell-2.roi", fork)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rois = read_rois(path)
    assert [r.tobytes() for r in rois] == [a.tobytes(), b.tobytes()]
    assert roi_numbers(rois) == [1, 2]
    _zip_entries(path, [("__MACOSX/._cell-1.roi", fork), ("._cell-2.roi", fork)])
    with pytest.raises(CalimInputError, match=r"contains no \.roi entries \(only 2 macOS "
                                              r"resource fork\(s\)"):
        read_rois(path)


def test_zero_area_rois_left_out_with_their_own_message():
    flat_oval = ImagejRoi(roitype=ROI_TYPE.OVAL, name="flat oval", left=30, top=20, right=38,
                          bottom=20)
    composite = ImagejRoi(roitype=ROI_TYPE.RECT, name="flat composite", left=2, top=30,
                          right=20, bottom=31)
    composite.multi_coordinates = np.asarray(
        [0, 2, 30, 1, 10, 30, 1, 20, 30, 4, 0, 5, 33, 1, 6, 33, 1, 7, 33, 4], np.float32)
    composite.shape_roi_size = len(composite.multi_coordinates)
    rois = [
        _rect("cell", 2, 2, 5, 4),  # 1
        _rect("zero_area", 30, 30, 0, 8),  # 2: width 0
        _poly("collinear", [[10, 10], [20, 10], [30, 10]]),  # 3
        flat_oval,  # 4: height 0
        composite,  # 5: two flat rings
        _poly("slanted", [[10.5, 20.5], [20.5, 25.5], [30.5, 30.5]]),  # 6: on one line
    ]
    with pytest.warns(CalimWarning) as record:
        kept, dropped = drop_outside(rois, SHAPE)
    assert [r.name for r in kept] == ["cell"]
    assert [r.name for r in dropped] == [r.name for r in rois[1:]]
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("left out 5 ROI(s) with no pixel inside the 40 x 56 frame: ")
    for text in ("ROI 2 ('zero_area', rectangle) at x 30..30, y 30..38 has zero area "
                 "(0 x 8 pixels)",
                 "ROI 3 ('collinear', polygon) at x 10..",
                 "ROI 4 ('flat oval', oval) at x 30..38, y 20..20 has zero area (8 x 0 pixels)",
                 "ROI 5 ('flat composite', composite) at x 2..20, y 30..31 has zero area "
                 "(its vertices lie on one line)"):
        assert text in message, text
    assert message.count("has zero area (its vertices lie on one line)") == 3
    assert "outside" not in message and "image centre" not in message
    with pytest.raises(CalimInputError, match=r"ROI 3 \('collinear'\) has no pixel inside the "
                                              r"40 x 56 frame: it has zero area \(its vertices"):
        rasterize(rois[2], SHAPE, index=3)
    with pytest.raises(CalimInputError, match=r"ROI 2 \('zero_area'\) .*: it has zero area "
                                              r"\(0 x 8 pixels\)"):
        label_image(rois[:2], SHAPE)
    # outside the frame wins over zero area; ROIs outside and flat ones in one warning
    far = _rect("far flat", 100, 100, 0, 5)
    with pytest.warns(CalimWarning) as record:
        drop_outside([rois[0], far, rois[1]], SHAPE)
    message = str(record[0].message)
    assert "ROI 2 ('far flat', rectangle) at x 100..100, y 100..105 lies outside the frame;" \
        in message
    assert "ROI 3 ('zero_area', rectangle) at x 30..30, y 30..38 has zero area" in message
    assert "move a ROI outside the frame to the image centre" in message
    with pytest.raises(CalimInputError, match=r"ROI 'far flat' has no pixel inside the 40 x 56 "
                                              r"frame: it lies outside the frame"):
        rasterize(far, SHAPE)


def test_roi_numbers_of_mixed_sets_refused():
    a = read_rois(FIX / "zoo.zip")[:2]
    assert roi_numbers(a) == [1, 2]
    assert roi_numbers([_rect("x", 1, 1, 2, 2), _rect("y", 3, 3, 2, 2)]) == [1, 2]
    with pytest.raises(CalimInputError, match=r"ROI numbers \[1\] occur more than once"):
        roi_numbers([_rect("x", 1, 1, 2, 2), a[0]])  # position 1 and number 1


def test_read_errors(tmp_path):
    with pytest.raises(CalimInputError, match=r"nope\.zip.*does not exist"):
        read_rois(tmp_path / "nope.zip")
    with pytest.raises(CalimInputError, match=r"corrupt\.zip.*not a readable zip"):
        read_rois(FIX / "corrupt.zip")
    with pytest.raises(CalimInputError, match=r"no_rois\.zip.*no \.roi entries"):
        read_rois(FIX / "no_rois.zip")
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(CalimInputError, match=r"empty\.zip.*is empty"):
        read_rois(tmp_path / "empty.zip")
    (tmp_path / "bad.roi").write_bytes(b"not a roi at all, just text" * 4)
    with pytest.raises(CalimInputError, match=r"bad\.roi.*not an ImageJ ROI"):
        read_rois(tmp_path / "bad.roi")
    shutil.copyfile(FIX / "stack.tif", tmp_path / "stack.tif")
    with pytest.raises(CalimInputError, match=r"expected a \.zip ROI set or a \.roi"):
        read_rois(tmp_path / "stack.tif")


def test_read_single_roi_and_names():
    (roi,) = read_rois(FIX / "single.roi")
    assert roi.name == "single_poly"
    assert rasterize(roi, SHAPE).sum() > 0


def test_write_rois_roundtrip_overwrites(tmp_path):
    path = tmp_path / "RoiSet.zip"
    write_rois(path, ZOO[:5])
    write_rois(path, ZOO[3:8])  # replaces, never appends
    back = read_rois(path)
    assert [r.name for r in back] == [r.name for r in ZOO[3:8]]
    assert [r.tobytes() for r in back] == [r.tobytes() for r in ZOO[3:8]]
    with pytest.raises(CalimInputError, match=r"\.zip"):
        write_rois(tmp_path / "x.roi", ZOO[:1])


# --------------------------------------------------- purity and performance


def test_inputs_not_mutated_and_repeatable():
    before = [r.tobytes() for r in ZOO]
    m1 = [rasterize(r, SHAPE) for r in ZOO if r.name not in UNSUPPORTED]
    m2 = [rasterize(r, SHAPE) for r in ZOO if r.name not in UNSUPPORTED]
    assert [r.tobytes() for r in ZOO] == before
    assert all(np.array_equal(a, b) for a, b in zip(m1, m2, strict=True))
    xy = np.array([[1.0, 1.0], [8.0, 2.0], [4.0, 9.0]])
    xy.setflags(write=False)
    polygon_mask(xy, (10, 10))
    mask = m1[0].copy()
    mask.setflags(write=False)
    coverage_weights(mask)
    assert np.array_equal(mask, m1[0])


def test_label_image_on_lab_sized_frame_composes_masks():
    rng = np.random.default_rng(5)
    shape = (512, 688)
    rois = []
    for k in range(50):
        cx, cy = rng.uniform(20, 668), rng.uniform(20, 492)
        pts = np.stack(
            [
                cx + rng.uniform(5, 15, 40) * np.cos(np.linspace(0, 6.2, 40)),
                cy + rng.uniform(5, 15, 40) * np.sin(np.linspace(0, 6.2, 40)),
            ],
            axis=1,
        )
        rois.append(ImagejRoi.frompoints(pts, name=f"cell{k}"))
    lab = label_image(rois, shape)
    expected = np.zeros(shape, np.int32)
    for k, roi in enumerate(rois, 1):
        expected[rasterize(roi, shape)] = k  # later ROIs win
    assert lab.max() == 50
    np.testing.assert_array_equal(lab, expected)
