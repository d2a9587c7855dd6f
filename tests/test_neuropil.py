"""Tests of the neuropil option of calim_helpers.traces: rings against brute force,
recovery of a known contamination, the lab's method unchanged, chunking, one pass."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from _movies import movie as _movie
from _movies import poly as _poly
from _movies import random_movie
from scipy import ndimage

from calim_helpers.correction import correct_traces
from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimWarning
from calim_helpers.rois import rasterize
from calim_helpers.traces import (
    background_subtracted,
    extract_traces,
    fit_neuropil_coefficient,
    neuropil_rings,
    roi_weights,
)

ONES = {"time": 1, "y": 1, "x": 1}
F = {"time": 10, "y": 2, "x": 2}


def _random_movie(nt=40, ny=40, nx=52, seed=0, chunks=None):
    return random_movie(nt, ny, nx, seed=seed, chunks=chunks)


def _rois():
    """Polygons on a 40 x 52 frame: close neighbours, one across the left edge."""
    return [
        _poly([[8, 6], [16, 7], [15, 15], [7, 14]], "a"),
        _poly([[18, 8], [25, 8], [25, 16], [18, 15]], "b_next_to_a"),
        _poly([[-3, 22], [6, 21], [5, 30], [-2, 31]], "left_edge"),
        _poly([[30.5, 20.5], [41.2, 21.1], [38.5, 30.4], [31.1, 29.2]], "subpixel"),
        _poly([[40, 3], [47, 4], [44, 10]], "triangle"),
    ]


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _edt_rings(footprints, spacing, inner, outer):
    """Full-frame distance transforms: the ring definition written out."""
    union = footprints.any(axis=0)
    away = ndimage.distance_transform_edt(~union, sampling=spacing) > inner
    return np.array([(ndimage.distance_transform_edt(~f, sampling=spacing) <= outer) & away
                     for f in footprints])


def _pairwise_rings(footprints, spacing, inner, outer):
    """Distances from every pixel to every footprint pixel, no distance transform."""
    ny, nx = footprints.shape[1:]
    yy, xx = np.mgrid[:ny, :nx]
    pix = np.stack([yy.ravel() * spacing[0], xx.ravel() * spacing[1]], axis=1)
    dists = []
    for f in footprints:
        fy, fx = np.nonzero(f)
        fp = np.stack([fy * spacing[0], fx * spacing[1]], axis=1)
        d = np.sqrt(((pix[:, None, :] - fp[None, :, :]) ** 2).sum(-1)).min(axis=1)
        dists.append(d.reshape(ny, nx))
    dists = np.array(dists)
    return (dists <= outer) & (dists.min(axis=0) > inner)[None]


def _grid_footprints(rois, shape, fy, fx):
    """Grid pixels with any native pixel of their block inside the ROI."""
    by, bx = shape[0] // fy, shape[1] // fx
    return np.array([rasterize(r, shape)[:by * fy, :bx * fx].reshape(by, fy, bx, fx)
                     .any(axis=(1, 3)) for r in rois])


# ----------------------------------------------------------------- ring geometry


@pytest.mark.parametrize("spacing, inner, width", [((1.0, 1.0), 2.0, 5.0),
                                                   ((1.3, 1.3), 2.0, 10.0),
                                                   ((0.7, 1.1), 0.0, 3.0),
                                                   ((1.0, 1.0), 3.5, 0.5)])
def test_rings_match_brute_force_on_known_layout(spacing, inner, width):
    shape = (48, 60)
    fps = np.array([_disc(shape, 12, 12, 5), _disc(shape, 12, 21, 4),  # touching neighbours
                    _disc(shape, 30, 40, 6), _disc(shape, 2, 55, 3),   # one at a corner
                    _disc(shape, 44, 5, 2)])
    rings, info = neuropil_rings(fps, shape, spacing_um=spacing, inner_um=inner,
                                 width_um=width, min_pixels=1)
    got = rings.toarray().reshape(len(fps), *shape) > 0
    ref = _edt_rings(fps, spacing, inner, inner + width)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, _pairwise_rings(fps, spacing, inner, inner + width))
    np.testing.assert_array_equal(info["n_pixels"], ref.sum(axis=(1, 2)))
    assert not info["widened"].any()
    # equal weights summing to 1
    np.testing.assert_allclose(np.asarray(rings.sum(axis=1)).ravel(), 1.0)
    for k in range(len(fps)):
        assert np.ptp(rings[k].data) == 0
    # neighbours really were cut out: ROI 1's ring without the exclusion is larger
    alone = ndimage.distance_transform_edt(~fps[0], sampling=spacing)
    assert ((alone > inner) & (alone <= inner + width)).sum() > got[0].sum()
    # and no ring pixel is within the gap of any ROI
    for f in fps:
        d = ndimage.distance_transform_edt(~f, sampling=spacing)
        assert (d[got.any(axis=0)] > inner).all()


def test_rings_of_polygon_rois_on_the_downsampled_grid():
    shape = (40, 52)
    rois = _rois()
    w = roi_weights(rois, shape, factors=F)
    spacing = (0.65 * 2, 0.65 * 2)
    rings, info = neuropil_rings(w, (20, 26), spacing_um=spacing, inner_um=2.0,
                                 width_um=6.0, min_pixels=1)
    fps = _grid_footprints(rois, shape, 2, 2)
    ref = _edt_rings(fps, spacing, 2.0, 8.0)
    np.testing.assert_array_equal(rings.toarray().reshape(-1, 20, 26) > 0, ref)
    assert (info["n_pixels"] > 0).all()


def test_crowded_roi_ring_is_widened_and_recorded():
    shape = (60, 60)
    # a centre ROI enclosed by a thick ROI: no pixel between them is 2 px from both
    centre = _disc(shape, 30, 30, 4)
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 30, xx - 30)
    shell = (r >= 7) & (r <= 12)
    far = _disc(shape, 5, 5, 2)
    fps = np.array([centre, shell, far])
    nominal = _edt_rings(fps, (1.0, 1.0), 2.0, 6.0)
    assert nominal[0].sum() == 0 and nominal[2].sum() > 10
    rings, info = neuropil_rings(fps, shape, inner_um=2.0, width_um=4.0, min_pixels=10)
    got = rings.toarray().reshape(3, *shape) > 0
    assert info["widened"].tolist() == [True, False, False]
    assert info["outer_um"][0] in (10.0, 14.0, 18.0) and info["n_pixels"][0] >= 10
    # the widened ring is the brute-force ring of that outer edge, and the first wide enough
    np.testing.assert_array_equal(got[0], _edt_rings(fps, (1.0, 1.0), 2.0,
                                                     info["outer_um"][0])[0])
    assert _edt_rings(fps, (1.0, 1.0), 2.0, info["outer_um"][0] - 4.0)[0].sum() < 10
    np.testing.assert_allclose(info["outer_um"][1:], 6.0)
    np.testing.assert_array_equal(got[1:], nominal[1:])


def test_roi_without_any_ring_pixel_falls_back_to_background_with_a_warning():
    # 2 ROIs cover everything but a strip far from the first one; the gap of the
    # first ROI... the second ROI covers all pixels but one column at the far right
    ny, nx = 20, 40
    data = np.random.default_rng(1).integers(100, 200, (20, ny, nx), dtype=np.uint16)
    a = np.zeros((ny, nx), bool)
    a[:, :4] = True
    b = np.zeros((ny, nx), bool)
    b[:, 4:39] = True
    movie = _movie(data)
    with pytest.warns(CalimWarning, match=r"ROI\(s\) 1 \('ROI1'\), 2 \('ROI2'\); their "
                                          r"neuropil is the background trace"):
        out = extract_traces(movie, [a, b], factors=ONES, background_fraction=0.025,
                             neuropil_method="annulus", neuropil_inner_um=1.0,
                             pixel_size_um=1.0)
    out = out.compute()
    # the only pixels outside the ROIs (last column) are all within 1 µm of ROI 2
    assert out["neuropil_source"].values.tolist() == ["background", "background"]
    assert out["neuropil_pixels"].values.tolist() == [0, 0]
    np.testing.assert_array_equal(out["neuropil"].values[0], out["background"].values)
    assert np.isfinite(out["neuropil"].values).all()


# ------------------------------------------------------------- neuropil traces


def test_neuropil_trace_is_the_ring_mean_of_the_downsampled_movie():
    movie = _random_movie(nt=40, seed=3, chunks={"time": 10})
    rois = _rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        out = extract_traces(movie, rois, factors=F, neuropil_method="annulus",
                             neuropil_inner_um=1.0, neuropil_width_um=4.0,
                             neuropil_min_pixels=1).compute()
    assert out.attrs["neuropil_pixel_size_um"] == 0.65
    assert out.attrs["neuropil_pixel_size_source"] == "movie attrs"
    fps = _grid_footprints(rois, (40, 52), 2, 2)
    ring = _edt_rings(fps, (1.3, 1.3), 1.0, 5.0)
    ds = downsample(movie, F).values.astype(np.float64)
    ref = np.array([ds[:, r].mean(axis=1) for r in ring])
    np.testing.assert_allclose(out["neuropil"].values, ref, rtol=1e-6)
    assert out["neuropil"].dims == ("roi", "time") and out["neuropil"].dtype == np.float32
    np.testing.assert_array_equal(out["neuropil_pixels"].values, ring.sum(axis=(1, 2)))
    assert set(out["neuropil_source"].values) == {"ring"}
    np.testing.assert_array_equal(out["neuropil"].roi_name.values, [r.name for r in rois])


def _contaminated_movie(contamination, *, nt=300, seed=0):
    """Camera offset + drift everywhere; neuropil only in a tissue strip on the left.

    ROI 1 has no cell: it sees ``contamination`` x the (flat) neuropil of the strip.
    ROI 2 is a cell with its own transients on top of the same contamination. Returns
    the movie, the masks, the cell's ΔF/F and the neuropil's relative time course.
    """
    rng = np.random.default_rng(seed)
    ny, nx = 40, 120
    t = np.arange(nt)
    offset = 100.0 + 0.05 * t  # offset + slow additive drift, every pixel
    fluct = np.convolve(rng.standard_normal(nt + 20), np.ones(20) / 20, "valid")[:nt]
    npil = 1.0 + 2.0 * fluct  # neuropil time course, relative
    xx = np.broadcast_to(np.arange(nx), (ny, nx))
    level = np.where(xx < 40, 300.0, 0.0)  # flat neuropil in the strip, none elsewhere
    cell_dff = np.zeros(nt)
    for t0 in (50, 140, 220):
        cell_dff[t0:] += 1.5 * np.exp(-(t[t0:] - t0) / 8.0)
    roi1, roi2 = _disc((ny, nx), 12, 12, 4), _disc((ny, nx), 28, 26, 4)
    scene = offset[:, None, None] + level[None] * npil[:, None, None]
    for m, cell in ((roi1, 0.0), (roi2, 400.0)):
        scene[:, m] = (offset[:, None] + contamination * level[m][None] * npil[:, None]
                       + cell * (1 + cell_dff[:, None]))
    scene += rng.normal(0, 0.5, scene.shape)
    movie = _movie(scene.astype(np.float32), chunks={"time": 100}, pixel_size_um=1.0)
    return movie, [roi1, roi2], cell_dff, level


@pytest.mark.parametrize("contamination", [0.7, 0.4])
def test_neuropil_only_roi_corrected_to_zero_with_the_right_coefficient(contamination):
    """``raw = offset + a * L * n(t)``, ring ``= offset + L * n(t)``, background = the mean
    of all pixels outside the ROIs ``= offset + phi * L * n(t)`` (phi = the share of them
    in the tissue strip): the neuropil cancels exactly at ``c = (a - phi) / (1 - phi)``
    (``c = a`` when the background has no neuropil)."""
    movie, rois, cell_dff, level = _contaminated_movie(contamination)
    outside = ~(rois[0] | rois[1])
    phi = float((level[outside] > 0).mean())
    c_true = (contamination - phi) / (1 - phi)
    assert 0 < c_true < contamination
    resid = {}
    for c in (0.0, c_true, min(c_true + 0.3, 1.0), max(c_true - 0.3, 0.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)  # background: all outside pixels
            tr = extract_traces(movie, rois, factors=ONES, background_fraction=1.0,
                                neuropil_method="annulus", neuropil_coefficient=c,
                                neuropil_inner_um=2.0, neuropil_width_um=6.0).compute()
        assert tr.attrs["n_background_pixels"] == outside.sum()
        sig = background_subtracted(tr).values
        resid[c] = float(np.std(sig[0]))
        if c == c_true:
            np.testing.assert_allclose(sig[0], 0.0, atol=2.0)  # noise: 0.5 / pixel
            assert np.corrcoef(sig[1], cell_dff)[0, 1] > 0.999
    neuropil_swing = contamination * 300.0 * 2.0 * 0.2  # a * L * std of the fluctuation
    assert resid[c_true] < 0.5 < 0.1 * neuropil_swing
    for c, r in resid.items():
        if c != c_true:  # the lab's method (c = 0) and a wrong c leave neuropil
            assert r > 10 * resid[c_true], (c, r)


# ------------------------------------------------------- fitted coefficient


def _fit_case(k, *, nt=1500, coupled=True, seed=0):
    """``signal = k * neuropil + cell + noise`` on a bleaching, drifting baseline.

    The neuropil has events of its own (an exponential kernel) and a slow trend; the
    cell's transients start at a third of the neuropil's events (``coupled``: the
    local neuropil follows the cells) and at events of its own.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(nt)
    kernel = np.exp(-np.arange(30) / 4.0)
    np_events = (rng.random(nt) < 0.05) * rng.uniform(0.5, 2.0, nt)
    npil = np.convolve(np_events, kernel)[:nt] + 0.3 * np.sin(2 * np.pi * t / 700)
    npil += rng.normal(0, 0.05, nt)
    own = (rng.random(nt) < 0.01) * rng.uniform(2.0, 5.0, nt)
    shared = (np_events > 0) & (rng.random(nt) < (1 / 3 if coupled else 0.0))
    cell = np.convolve(own + shared * 4.0, kernel)[:nt]
    bleach = 5.0 * np.exp(-t / 800)  # a slow trend in the ROI only
    signal = k * npil + cell + bleach + rng.normal(0, 0.1, nt)
    return signal, npil


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8])
def test_fitted_coefficient_recovers_a_known_contamination(k):
    sig, npil = _fit_case(k)
    c, info = fit_neuropil_coefficient(sig, npil)
    assert c.ndim == 0 and str(info["status"]) == "fitted" and bool(info["converged"])
    assert abs(float(c) - k) < 0.05, float(c)
    # the cell's transients that ride on neuropil events pull least squares up:
    # on every frame (quiet_fraction=1) the estimate is biased, which the quiet frames fix
    _, info_all = fit_neuropil_coefficient(sig, npil, quiet_fraction=1.0)
    assert float(info_all["unclipped"]) - k > 0.2, float(info_all["unclipped"])


def test_fitted_coefficient_rows_clip_and_fallback():
    rows = [_fit_case(k, seed=s) for s, k in enumerate((0.3, 1.4, 0.6))]
    sig = np.stack([r[0] for r in rows] + [rows[0][0], rows[0][0]])
    npil = np.stack([r[1] for r in rows] + [np.full(sig.shape[1], 3.0), rows[0][1]])
    npil[4, 7] = np.nan
    sig.setflags(write=False)
    npil.setflags(write=False)
    c, info = fit_neuropil_coefficient(sig, npil, fallback=0.25)
    assert c.shape == (5,) and c.dtype == np.float64
    assert info["status"].tolist() == ["fitted", "clipped", "fitted", "fallback", "fallback"]
    np.testing.assert_allclose(c[[0, 2]], [0.3, 0.6], atol=0.05)
    assert c[1] == 1.0 and abs(info["unclipped"][1] - 1.4) < 0.05
    assert c[3] == c[4] == 0.25 and np.isnan(info["unclipped"][3:]).all()
    # one row alone gives what it gives in the stack, and again on a second call
    c0, _ = fit_neuropil_coefficient(sig[0], npil[0], fallback=0.25)
    assert float(c0) == c[0]
    np.testing.assert_array_equal(fit_neuropil_coefficient(sig, npil, fallback=0.25)[0], c)


def test_fitted_method_end_to_end_recovers_the_coefficient():
    """The movie of the annulus test: ``c_true`` cancels the neuropil exactly. The
    fitted method finds it per ROI, for the neuropil-only ROI and for the cell."""
    movie, rois, cell_dff, _ = _contaminated_movie(0.7, nt=600)
    outside = ~(rois[0] | rois[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        kw = dict(factors=ONES, background_fraction=1.0, neuropil_inner_um=2.0,
                  neuropil_width_um=6.0)
        tr = extract_traces(movie, rois, neuropil_method="fitted", **kw).compute()
        ann = extract_traces(movie, rois, neuropil_method="annulus", **kw).compute()
    phi = float((np.broadcast_to(np.arange(120), (40, 120))[outside] < 40).mean())
    c_true = (0.7 - phi) / (1 - phi)
    assert tr.attrs["neuropil_method"] == "fitted"
    assert tr.attrs["neuropil_quiet_fraction"] == 0.5 and tr.attrs["neuropil_fit_degree"] == 3
    assert "fitted per ROI" in tr.attrs["neuropil_formula"]
    # the traces are those of the annulus: only the subtraction differs
    xr.testing.assert_identical(tr["neuropil"], ann["neuropil"])
    sig = background_subtracted(tr)
    np.testing.assert_allclose(sig["neuropil_coefficient"].values, c_true, atol=0.03)
    assert sig["neuropil_fit_status"].values.tolist() == ["fitted", "fitted"]
    assert np.std(sig.values[0]) < 3.0  # noise 0.5 / pixel; the neuropil swings ~100
    assert np.corrcoef(sig.values[1], cell_dff)[0, 1] > 0.99
    assert "neuropil_coefficient" not in background_subtracted(ann).coords


# ------------------------------------------------- the lab's method, unchanged


_KEYS_BEFORE = {"background_fraction", "background_fraction_of", "n_background_pixels",
                "seed", "grid_shape"}


def test_none_is_the_default_and_adds_nothing():
    movie = _random_movie(chunks={"time": 20})
    rois = _rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        default = extract_traces(movie, rois, factors=F, seed=4).compute()
        none = extract_traces(movie, rois, factors=F, seed=4, neuropil_method="none",
                              neuropil_coefficient=0.2, neuropil_width_um=3.0,
                              pixel_size_um=9.0).compute()
        ann = extract_traces(movie, rois, factors=F, seed=4,
                             neuropil_method="annulus").compute()
    xr.testing.assert_identical(default, none)
    assert set(default.data_vars) == {"raw", "background"}
    assert not any(k.startswith("neuropil") for k in default.attrs)
    assert _KEYS_BEFORE <= set(default.attrs)
    # the extra rows do not change the other rows: raw and background bit for bit
    assert ann["raw"].values.tobytes() == default["raw"].values.tobytes()
    assert ann["background"].values.tobytes() == default["background"].values.tobytes()
    same = ann.drop_vars(["neuropil", "neuropil_pixels", "neuropil_outer_um",
                          "neuropil_source"])
    same.attrs = dict(default.attrs)
    xr.testing.assert_identical(same, default)
    # the signal downstream: exactly correct_traces' with method none
    out = correct_traces(default, lam=10.0, cutoff_s=None, tol=1e-5, max_iter=100,
                         normalize="dff", trim_start=0)
    np.testing.assert_array_equal(background_subtracted(default).values.astype(np.float32),
                                  out["signal"].values)


def test_background_subtracted_formula():
    movie = _random_movie(chunks={"time": 20})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        tr = extract_traces(movie, _rois(), factors=F, neuropil_method="annulus",
                            neuropil_coefficient=0.6).compute()
    raw = tr["raw"].values.astype(np.float64)
    bg = tr["background"].values.astype(np.float64)[None]
    npil = tr["neuropil"].values.astype(np.float64)
    np.testing.assert_allclose(background_subtracted(tr).values,
                               raw - 0.6 * npil - 0.4 * bg, rtol=1e-12, atol=1e-9)
    assert tr.attrs["neuropil_coefficient"] == 0.6
    tr0 = tr.assign_attrs(neuropil_coefficient=0.0)
    np.testing.assert_array_equal(background_subtracted(tr0).values,
                                  background_subtracted(tr[["raw", "background"]]).values)
    with pytest.raises(ValueError, match="neuropil_coefficient"):
        background_subtracted(tr.assign_attrs(neuropil_coefficient=1.5))
    with pytest.raises(ValueError, match="no 'background'"):
        background_subtracted(tr[["raw"]])


# ----------------------------------------------------- chunking and one pass


def test_annulus_chunking_invariance():
    movie = _random_movie(nt=70, seed=1)
    rois = _rois()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        results = [extract_traces(movie.chunk(c) if c else movie, rois, factors=F,
                                  neuropil_method="annulus").compute()
                   for c in (None, {"time": 10}, {"time": 30}, {"time": 70, "x": 9})]
    for r in results[1:]:
        xr.testing.assert_identical(r, results[0])


def test_annulus_reads_each_chunk_once():
    calls = []
    base = _random_movie(nt=40, ny=40, nx=52).values

    def frames(block, block_info=None):
        if block.size:
            calls.append(block_info[None]["chunk-location"])
        return block

    movie = _movie(da.from_array(base, chunks=(10, 40, 52)).map_blocks(frames,
                                                                       dtype=np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        tr = extract_traces(movie, _rois(), factors=F, neuropil_method="annulus")
    assert calls == [] and isinstance(tr["neuropil"].data, da.Array)
    tr.compute()
    assert len(calls) == 4  # raw, background and neuropil from one read of each chunk


# ------------------------------------------------------------- pixel size


def test_pixel_size_sources():
    movie = _random_movie(chunks={"time": 20})
    rois = _rois()
    kw = {"factors": F, "neuropil_method": "annulus", "neuropil_min_pixels": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        attrs = extract_traces(movie, rois, **kw)
        arg = extract_traces(movie, rois, pixel_size_um=0.65, **kw)
        coarse = extract_traces(movie, rois, pixel_size_um=2.0, **kw)
    assert arg.attrs["neuropil_pixel_size_source"] == "argument"
    np.testing.assert_array_equal(attrs["neuropil_pixels"], arg["neuropil_pixels"])
    # bigger pixels: the same µm ring spans fewer pixels
    assert (coarse["neuropil_pixels"].values <= arg["neuropil_pixels"].values).all()
    assert coarse["neuropil_pixels"].values.sum() < arg["neuropil_pixels"].values.sum()
    unknown = movie.assign_attrs(pixel_size_um=float("nan"))
    with pytest.warns(CalimWarning, match="pixel size unknown"):
        out = extract_traces(unknown, rois, **kw)
    assert out.attrs["neuropil_pixel_size_source"].startswith("assumed: median ROI")
    assert np.isfinite(out.attrs["neuropil_pixel_size_um"])
    assert np.isfinite(out["neuropil"].values).all()


@pytest.mark.parametrize("kw, match", [
    ({"neuropil_method": "ring"}, "neuropil_method must be one of"),
    ({"neuropil_coefficient": 1.2}, r"neuropil_coefficient must be in \[0, 1\]"),
    ({"neuropil_coefficient": -0.1}, "neuropil_coefficient must be a finite number"),
    ({"neuropil_inner_um": -1.0}, "neuropil_inner_um must be"),
    ({"neuropil_width_um": 0.0}, r"neuropil_width_um must be a finite number > 0"),
    ({"neuropil_min_pixels": 0}, "neuropil_min_pixels must be an integer >= 1"),
    ({"neuropil_method": "annulus", "pixel_size_um": -1.0}, "pixel_size_um must be"),
    ({"neuropil_quiet_fraction": 0.0}, r"neuropil_quiet_fraction must be in \(0, 1\]"),
    ({"neuropil_quiet_fraction": 1.5}, r"neuropil_quiet_fraction must be in \(0, 1\]"),
    ({"neuropil_fit_degree": -1}, "neuropil_fit_degree must be an integer >= 0"),
    ({"neuropil_fit_degree": 2.5}, "neuropil_fit_degree must be an integer >= 0"),
    ({"neuropil_fit_degree": True}, "neuropil_fit_degree must be an integer >= 0"),
])
def test_bad_neuropil_parameters(kw, match):
    movie = _random_movie(nt=20)
    with pytest.raises(ValueError, match=match):
        extract_traces(movie, _rois(), factors=F, **kw)


def test_fit_bad_input():
    y = np.zeros((2, 10))
    with pytest.raises(ValueError, match="must have one shape"):
        fit_neuropil_coefficient(y, np.zeros((2, 11)))
    with pytest.raises(ValueError, match=r"quiet_fraction must be in \(0, 1\]"):
        fit_neuropil_coefficient(y, y, quiet_fraction=0)
    with pytest.raises(ValueError, match="degree must be an integer >= 0"):
        fit_neuropil_coefficient(y, y, degree=-1)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 0"):
        fit_neuropil_coefficient(y, y, max_iter=1.5)
    with pytest.raises(ValueError, match=r"fallback must be in \[0, 1\]"):
        fit_neuropil_coefficient(y, y, fallback=1.1)


def test_rings_bad_input():
    m = np.zeros((1, 5, 5), bool)
    m[0, 2, 2] = True
    with pytest.raises(ValueError, match="spacing_um must be two finite numbers > 0"):
        neuropil_rings(m, (5, 5), spacing_um=(0.0, 1.0))
    with pytest.raises(ValueError, match="weights_or_masks has 25 pixels per row"):
        neuropil_rings(m, (5, 6))
