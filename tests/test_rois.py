"""Tests for calim_helpers.rois against ImageJ 1.53t reference fixtures.

The fixtures in tests/fixtures/imagej/ were produced by real ImageJ (see the
README there and tools/imagej/regenerate.sh); these tests only read them.
"""

from __future__ import annotations

import doctest
import shutil
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from imagej_fixtures import FIX, UNSUPPORTED, imagej_means
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi

from calim_helpers import rois as rois_mod
from calim_helpers.errors import CalimInputError
from calim_helpers.rois import (
    coverage_weights,
    label_image,
    polygon_mask,
    rasterize,
    read_rois,
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


NONAREA = read_rois(FIX / "nonarea.zip")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("line", r"ROI 'line' is a line ROI, not an area ROI"),
        ("polyline", r"ROI 'polyline' is a polyline ROI, not an area"),
        ("point", r"ROI 'point' is a point ROI, not an area"),
        ("rect_outside", r"ROI 'rect_outside' has no pixel inside the 40 x 56 frame"),
    ],
)
def test_nonarea_and_outside_rois_refused(name, match):
    roi = next(r for r in NONAREA if r.name == name)
    with pytest.raises(CalimInputError, match=match):
        rasterize(roi, SHAPE)


def test_label_image_error_names_index_and_name():
    with pytest.raises(CalimInputError, match=r"ROI 2 \('line'\) is a line ROI"):
        label_image([ZOO[0], NONAREA[0]], SHAPE)


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
