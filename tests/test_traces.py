"""Tests of calim_helpers.traces: ImageJ Multi Measure, a brute-force oracle, laziness."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import tifffile
import xarray as xr
from _movies import movie as _movie
from _movies import poly as _poly
from _movies import random_movie
from imagej_fixtures import FIX, UNSUPPORTED, imagej_means

from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.rois import rasterize, read_rois
from calim_helpers.traces import (
    background_pixels,
    background_trace,
    extract_traces,
    roi_means,
    roi_weights,
)

ONES = {"time": 1, "y": 1, "x": 1}
F = {"time": 10, "y": 2, "x": 2}


def _random_movie(nt=35, ny=21, nx=27, seed=0, chunks=None):
    return random_movie(nt, ny, nx, seed=seed, chunks=chunks)


def _small_rois():
    """ROIs on a 21 x 27 frame: inside, partly outside (left, top, bottom-right), sub-pixel."""
    return [
        _poly([[3, 2], [11, 3], [9, 10], [2, 8]], "quad"),
        _poly([[-4, 5], [5, 4], [4, 12], [-3, 14]], "left_edge"),
        _poly([[14, -3], [22, -1], [19, 6]], "top_edge"),
        _poly([[20.3, 15.7], [30.2, 16.1], [29.5, 25.4], [21.1, 24.2]], "corner_subpixel"),
        _poly([[10.5, 12.5], [17.5, 13.5], [13.5, 19.5]], "triangle"),
    ]


def _brute_force(data, rois, ft, fy, fx):
    """Explicit loops over ROIs, downsampled frames and blocks, in float64."""
    nt, ny, nx = data.shape
    bt, by, bx = nt // ft, ny // fy, nx // fx
    out = np.zeros((len(rois), bt))
    for k, roi in enumerate(rois):
        mask = rasterize(roi, (ny, nx))
        for t in range(bt):
            acc = wsum = 0.0
            for i in range(by):
                for j in range(bx):
                    w = mask[i * fy:(i + 1) * fy, j * fx:(j + 1) * fx].mean()
                    if w == 0:
                        continue
                    block = data[t * ft:(t + 1) * ft, i * fy:(i + 1) * fy, j * fx:(j + 1) * fx]
                    acc += w * block.astype(np.float64).mean()
                    wsum += w
            out[k, t] = acc / wsum
    return out


# ------------------------------------------------------------------- ImageJ


@pytest.mark.imagej
def test_factors_one_equal_imagej_multi_measure():
    stack = tifffile.imread(FIX / "stack.tif")
    rois = [r for r in read_rois(FIX / "zoo.zip") if r.name not in UNSUPPORTED]
    ij = imagej_means()
    movie = _movie(stack, chunks={"time": 2})
    out = roi_means(movie, rois, factors=ONES)
    assert out.dims == ("roi", "time") and out.dtype == np.float32
    assert out.shape == (len(rois), stack.shape[0]) == (69, 5)
    assert list(out.roi_name.values) == [r.name for r in rois]
    ref = np.array([ij[r.name] for r in rois])
    # float32 output: within float32 rounding of ImageJ's (9-decimal) means
    np.testing.assert_allclose(out.values, ref, rtol=2**-24, atol=1e-6)
    # and the float64 product inside agrees to ImageJ's 9 decimals
    w = roi_weights(rois, stack.shape[1:], factors=ONES)
    inner = (w @ stack.reshape(stack.shape[0], -1).T.astype(np.float64))
    np.testing.assert_allclose(inner, ref, rtol=0, atol=1e-6)


def test_rounded_rectangle_refused_with_its_name():
    rois = read_rois(FIX / "zoo.zip")
    k = [r.name for r in rois].index("rect_rounded") + 1
    with pytest.raises(CalimInputError, match=rf"ROI {k} \('rect_rounded'\).*rounded corners"):
        roi_weights(rois, (40, 56), factors=ONES)


# ------------------------------------------------------------- brute force


@pytest.mark.parametrize("chunks", [None, {"time": 10}, {"time": 7, "y": 5}])
def test_matches_brute_force_with_partial_blocks(chunks):
    movie = _random_movie(chunks=chunks)  # 35 x 21 x 27: partial block in every dim
    rois = _small_rois()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = roi_means(movie, rois, factors=F)
    assert sorted(str(w.message)[:40] for w in rec) == [
        "downsample: dropping the last 1 of 21 y ",
        "downsample: dropping the last 1 of 27 x ",
        "downsample: dropping the last 5 of 35 ti"]
    assert all(w.category is CalimWarning for w in rec)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out.values, _brute_force(movie.values, rois, 10, 2, 2),
                               rtol=1e-6)
    np.testing.assert_array_equal(out.roi.values, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(out.time.values, [0.45, 1.45, 2.45])
    assert out.attrs["dropped_y"] == 1


@pytest.mark.parametrize("factors", [{"time": 5, "y": 3, "x": 2}, {"y": 2, "x": 3},
                                     {"time": 3}])
def test_other_factors_match_brute_force(factors):
    movie = _random_movie(nt=30, seed=3)
    rois = _small_rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        out = roi_means(movie, rois, factors=factors)
    ref = _brute_force(movie.values, rois, factors.get("time", 1), factors.get("y", 1),
                       factors.get("x", 1))
    np.testing.assert_allclose(out.values, ref, rtol=1e-6)


def test_weights_rows_are_normalized_coverage():
    rois = _small_rois()
    w = roi_weights(rois, (21, 27), factors={"time": 10, "y": 2, "x": 2})
    assert sp.issparse(w) and w.format == "csr" and w.shape == (5, 10 * 13)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0)
    mask = rasterize(rois[0], (21, 27))
    cov = mask[:20, :26].reshape(10, 2, 13, 2).mean(axis=(1, 3)).ravel()
    np.testing.assert_allclose(w[0].toarray().ravel(), cov / cov.sum())
    # masks and ROIs give the same weights
    masks = [rasterize(r, (21, 27)) for r in rois]
    assert abs(roi_weights(masks, (21, 27)) - w).max() == 0


# ------------------------------------------------------------- laziness


def test_lazy_nothing_read_before_compute():
    calls = []
    base = _random_movie(nt=40, ny=20, nx=26).values

    def frames(block, block_info=None):
        if block.size:
            calls.append(block_info[None]["chunk-location"])
        return block

    movie = _movie(da.from_array(base, chunks=(10, 20, 26)).map_blocks(frames, dtype=np.uint16))
    rois = _small_rois()[:3]
    out = roi_means(movie, rois, factors=F)
    traces = extract_traces(movie, rois, factors=F)
    assert isinstance(out.data, da.Array)
    assert all(isinstance(v.data, da.Array) for v in traces.data_vars.values())
    assert calls == []
    computed = traces.compute()
    assert len(calls) == 4  # each chunk read once for ROIs and background together
    np.testing.assert_array_equal(computed.raw.values, out.values)


def test_chunking_invariance():
    movie = _random_movie(nt=70, seed=1)
    rois = _small_rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        results = [extract_traces(movie.chunk(c) if c else movie, rois, factors=F).compute()
                   for c in (None, {"time": 10}, {"time": 30}, {"time": 70, "x": 9})]
    for r in results[1:]:
        xr.testing.assert_identical(r, results[0])


def test_repeat_calls_agree_and_input_untouched():
    movie = _random_movie()
    before = movie.values.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        a = roi_means(movie, _small_rois()).values
        b = roi_means(movie, _small_rois()).values
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(movie.values, before)


# ------------------------------------------------------------- background


def test_background_pixels_outside_distinct_count_sorted():
    rois = _small_rois()
    w = roi_weights(rois, (21, 27))
    grid = (10, 13)
    px = background_pixels(w, grid, fraction=0.25, seed=4)
    assert px.dtype == np.int64
    assert px.size == 33  # fraction of ALL 130 pixels of the grid: 32.5, halves up
    assert np.unique(px).size == px.size and np.all(np.diff(px) > 0)
    touched = np.asarray((w != 0).sum(axis=0)).ravel() > 0
    assert not touched[px].any()
    # the same pixels from dense weights and from (roi, y, x) masks
    dense = w.toarray()
    np.testing.assert_array_equal(background_pixels(dense, grid, fraction=0.25, seed=4), px)
    np.testing.assert_array_equal(
        background_pixels(dense.reshape(5, 10, 13) > 0, grid, fraction=0.25, seed=4), px)


def test_background_seeded():
    w = roi_weights(_small_rois(), (21, 27))
    a = background_pixels(w, (10, 13), seed=7)
    b = background_pixels(w, (10, 13), seed=7)
    c = background_pixels(w, (10, 13), seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.size == 13  # round(0.10 * 130)


def test_background_rounding_half_up():
    w = np.zeros((1, 50))
    w[0, :5] = 1
    assert background_pixels(w, (5, 10), fraction=0.05).size == 3  # 2.5 -> 3


def test_background_too_few_outside_warns_and_uses_all():
    w = np.ones((1, 4, 5))
    w[0, 0, :3] = 0
    with pytest.warns(CalimWarning, match="only 3 pixels lie outside"):
        px = background_pixels(w, (4, 5), fraction=0.5)
    np.testing.assert_array_equal(px, [0, 1, 2])


def test_background_errors():
    w = roi_weights(_small_rois(), (21, 27))
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        background_pixels(w, (10, 13), fraction=0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        background_pixels(w, (10, 13), fraction=1.5)
    with pytest.raises(ValueError, match="selects no background pixel"):
        background_pixels(w, (10, 13), fraction=0.001)
    with pytest.raises(ValueError, match="seed must be"):
        background_pixels(w, (10, 13), seed=-1)
    with pytest.raises(ValueError, match="seed must be"):
        background_pixels(w, (10, 13), seed=None)
    with pytest.raises(ValueError, match="grid_shape gives 120"):
        background_pixels(w, (10, 12))
    with pytest.raises(CalimInputError, match="no pixel .* outside the ROIs"):
        background_pixels(np.ones((1, 6)), (2, 3))


def test_no_background_error_names_the_largest_rois():
    # a rectangle over the whole frame ("field", drawn to measure it) leaves no background
    movie = _random_movie(nt=20, ny=20, nx=24)
    rois = [_poly([[2, 2], [8, 2], [8, 8], [2, 8]], "cellA"),
            _poly([[0, 0], [24, 0], [24, 20], [0, 20]], "field"),
            _poly([[12, 10], [18, 10], [18, 16], [12, 16]], "cellB")]
    with pytest.raises(CalimInputError, match=r"no pixel of the 10 x 12 grid lies outside the "
                                              r"ROIs: no background\. ROI 2 \('field'\) covers "
                                              r"120 of the 120 grid pixels \(100\.0 %\)$"):
        extract_traces(movie, rois, factors=F)
    # ROIs covering more than half of the grid, largest first; numbers only without names
    w = np.zeros((3, 4, 5), bool)
    w[0, :, :3] = True  # 12 of 20
    w[1, :, 1:] = True  # 16 of 20
    w[2, 0, 0] = True
    expected = ("ROI 2 ('b') covers 16 of the 20 grid pixels (80.0 %); "
                "ROI 1 ('a') covers 12 of the 20 grid pixels (60.0 %)")
    with pytest.raises(CalimInputError) as info:
        background_pixels(w, (4, 5), names=["a", "b", "c"])
    assert str(info.value).endswith("no background. " + expected)
    with pytest.raises(CalimInputError) as info:
        background_pixels(sp.csr_matrix(w.reshape(3, -1) * 0.25), (4, 5))
    assert str(info.value).endswith("no background. " + expected.replace(" ('b')", "")
                                    .replace(" ('a')", ""))
    # none covers more than half: the largest one
    w = np.zeros((3, 2, 2), bool)
    w[0, 0, 0] = w[1, 0, 1] = True
    w[2, 1, :] = True
    with pytest.raises(CalimInputError, match=r"no background\. ROI 3 \('c'\) covers 2 of the "
                                              r"4 grid pixels \(50\.0 %\)$"):
        background_pixels(w, (2, 2), fraction=0.5, names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"names must give one name per ROI \(3\), got 2"):
        background_pixels(w, (2, 2), names=["a", "b"])


def test_background_trace_is_mean_of_pixels():
    movie = _random_movie(nt=20, ny=10, nx=12, chunks={"time": 5})
    px = np.array([0, 5, 17, 100, 119])
    trace = background_trace(movie, px)
    assert trace.dims == ("time",) and isinstance(trace.data, da.Array)
    ref = movie.values.reshape(20, -1)[:, px].astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(trace.values, ref, rtol=1e-7)
    for bad, match in [([], "non-empty"), ([0, 0], "distinct"), ([120], r"\[0, 120\)"),
                       ([0.5], "flat indices")]:
        with pytest.raises(ValueError, match=match):
            background_trace(movie, np.asarray(bad))


# ------------------------------------------------------------- known answers


def test_synthetic_constant_rois_and_background_recovered_exactly():
    """Block-aligned rectangles with known values; everything else is the background."""
    nt, ny, nx = 40, 24, 30
    t = np.arange(nt)
    bg = 200 + (t % 7)  # background value per frame
    data = np.broadcast_to(bg[:, None, None], (nt, ny, nx)).astype(np.uint16).copy()
    boxes = [(2, 4, 6, 8), (10, 2, 4, 4), (16, 20, 8, 6)]  # (y0, x0, h, w), even: whole blocks
    rois = []
    for k, (y0, x0, h, w) in enumerate(boxes, start=1):
        data[:, y0:y0 + h, x0:x0 + w] = (1000 * k + 3 * t)[:, None, None]
        rois.append(_poly([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], f"r{k}"))
    movie = _movie(data, chunks={"time": 20})
    out = extract_traces(movie, rois, factors=F, background_fraction=0.5, seed=3).compute()
    block_t = t.reshape(4, 10).mean(axis=1)
    for k in range(1, 4):
        np.testing.assert_array_equal(out.raw.sel(roi=k).values,
                                      (1000 * k + 3 * block_t).astype(np.float32))
    np.testing.assert_allclose(out.background.values, bg.reshape(4, 10).mean(axis=1),
                               rtol=1e-7)
    assert out.attrs["n_background_pixels"] == round(0.5 * 12 * 15)
    assert out.attrs["seed"] == 3 and out.attrs["background_fraction"] == 0.5
    assert out.attrs["background_fraction_of"] == "all downsampled pixels"
    # the recorded pixels are the draw, with their grid row / column
    w = roi_weights(rois, (ny, nx))
    px = background_pixels(w, (12, 15), fraction=0.5, seed=3)
    np.testing.assert_array_equal(out.background_pixel.values, px)
    np.testing.assert_array_equal(out.background_y.values * 15 + out.background_x.values, px)
    np.testing.assert_array_equal(out.raw.roi_name.values, ["r1", "r2", "r3"])


def test_extract_traces_equals_separate_functions():
    movie = _random_movie(nt=40, seed=2, chunks={"time": 20})
    rois = _small_rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        out = extract_traces(movie, rois, factors=F, seed=11)
        means = roi_means(movie, rois, factors=F)
        movie_ds = downsample(movie, F)
    np.testing.assert_array_equal(out.raw.values, means.values)
    bg = background_trace(movie_ds, out.background_pixel.values)
    np.testing.assert_array_equal(out.background.values, bg.values)
    assert out.background.dims == ("time",)
    np.testing.assert_allclose(out.time.values, movie_ds.time.values)


def test_extract_from_downsampled_movie_equals_extract_traces():
    movie = _random_movie(nt=40, seed=5, chunks={"time": 20})
    rois = _small_rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        direct = extract_traces(movie, rois, factors=F, seed=2).compute()
        movie_ds = downsample(movie, F)
    later = extract_traces(movie_ds, rois, native_shape=(21, 27), factors=F, seed=2)
    assert isinstance(later.raw.data, da.Array)
    xr.testing.assert_identical(later.compute(), direct)
    with pytest.raises(ValueError, match=r"movie is 10 x 13 pixels; native_shape 21 x 27 "
                                         r"downsampled by factors .* gives 7 x 9"):
        extract_traces(movie_ds, rois, native_shape=(21, 27), factors={"y": 3, "x": 3})


# ------------------------------------------------------------- bad input


def test_roi_in_dropped_margin_has_zero_weight():
    rois = _small_rois() + [_poly([[3, 20], [9, 20], [9, 21], [3, 21]], "last_row")]
    with pytest.raises(CalimInputError, match=r"ROI 6 \('last_row'\) has zero weight"):
        roi_weights(rois, (21, 27))
    # at native resolution it is fine
    assert roi_weights(rois, (21, 27), factors=ONES).shape == (6, 21 * 27)


def test_bad_inputs():
    movie = _random_movie(nt=20, ny=10, nx=12)
    rois = _small_rois()[:1]
    outside = _poly([[40, 40], [50, 40], [50, 50]], "far")
    with pytest.raises(CalimInputError, match=r"ROI 2 \('far'\) has no pixel"):
        roi_weights([rois[0], outside], (21, 27))
    with pytest.raises(CalimInputError, match="rois is empty"):
        roi_means(movie, [])
    with pytest.raises(CalimInputError, match="ROI 1: expected a roifile.ImagejRoi or a bool"):
        roi_weights([np.ones((21, 27))], (21, 27))
    with pytest.raises(CalimInputError, match="ROI 1 has no pixel"):
        roi_weights([np.zeros((21, 27), bool)], (21, 27))
    with pytest.raises(ValueError, match="movie must have dims"):
        roi_means(movie.transpose("y", "x", "time"), rois)
    with pytest.raises(ValueError, match="movie must be an xarray.DataArray"):
        roi_means(movie.values, rois)
    with pytest.raises(ValueError, match=r"factors\['y'\] must be an integer >= 1"):
        roi_weights(rois, (21, 27), factors={"y": 0, "x": 2})
    with pytest.raises(ValueError, match="factors names dimension 'z'"):
        roi_means(movie, rois, factors={"z": 2})
    with pytest.raises(ValueError, match="shape must be"):
        roi_weights(rois, (21,))
    with pytest.raises(ValueError, match="background_fraction|fraction must be"):
        extract_traces(movie, rois, factors=ONES, background_fraction=-0.1)


def test_saturated_pixels_counts_like_a_loop_over_rois():
    from calim_helpers.traces import saturated_pixels

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (30, 40))
    labels[labels == 3] = 0  # ROI 3 covered by others: 0 of 0
    mip = rng.integers(60000, 65536, (30, 40)).astype(np.float32)
    mip[0, 0] = np.nan
    got, n = saturated_pixels(mip, labels, saturation=65535, n_rois=6)
    for k in range(1, 7):  # brute force, ROI by ROI
        inside = labels == k
        assert n[k - 1] == inside.sum()
        assert got[k - 1] == np.sum(mip[inside] >= 65534.5)
    assert got[2] == n[2] == 0 and got[5] == n[5] == 0
    # an unsaturated integer pixel (65534) never counts; resampled 65535 (float32
    # rounding, a cubic overshoot) always does
    mip2 = np.array([[65534, 65534.99, 65535.3]], np.float32)
    assert saturated_pixels(mip2, np.array([[1, 2, 3]]), saturation=65535)[0].tolist() \
        == [0, 1, 1]
    with pytest.raises(ValueError, match="labels holds ROI 4 but n_rois is 2"):
        saturated_pixels(mip, labels, saturation=65535, n_rois=2)
    with pytest.raises(ValueError, match="one shape"):
        saturated_pixels(mip[:5], labels, saturation=65535)
    with pytest.raises(ValueError, match="integer image"):
        saturated_pixels(mip, labels.astype(float), saturation=65535)
