"""Tests of calim_helpers.demix and the ``demix`` neuropil method of extract_traces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr

from calim_helpers.demix import demix_traces
from calim_helpers.traces import background_subtracted, extract_traces


def _scene(seed: int = 0, n_time: int = 120):
    """Two overlapping disks with independent activity, a third ROI on neuropil only.

    The neuropil is smooth in space and has activity of its own (a slow wave plus random
    bumps); the camera adds an offset and Gaussian noise. Returns the movie
    (time, 40, 56), the ROI masks (3, 40, 56), the disks' own traces (2, time) and the
    neuropil's value inside each ROI (3, time).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :56].astype(float)
    d1 = np.hypot(yy - 14, xx - 14) < 5
    d2 = np.hypot(yy - 14, xx - 21) < 5  # overlaps d1 by a lens of ~8 pixels
    d3 = np.hypot(yy - 28, xx - 40) < 4.5  # no cell here: neuropil only
    own = 40.0 * rng.gamma(0.3, 1.0, (2, n_time))  # sparse, independent transients
    npil_map = 30.0 * (1 + 0.3 * np.sin(xx / 25.0) + 0.2 * np.cos(yy / 30.0))
    npil_t = 1 + 0.3 * np.sin(np.arange(n_time) / 7.0) + 0.3 * rng.gamma(0.5, 1.0, n_time)
    movie = (100.0 + npil_map[None] * npil_t[:, None, None]
             + d1 * own[0][:, None, None] + d2 * own[1][:, None, None])
    movie = movie + rng.normal(0.0, 1.0, movie.shape)
    masks = np.stack([d1, d2, d3])
    npil_in = np.array([(npil_map * m).sum() / m.sum() for m in masks])[:, None] * npil_t
    return movie, masks, own, npil_in


def _weights(masks: np.ndarray) -> sp.csr_matrix:
    w = masks.reshape(masks.shape[0], -1).astype(float)
    return sp.csr_matrix(w / w.sum(axis=1, keepdims=True))


def _detrended_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_two_overlapping_disks_recovered():
    movie, masks, own, npil_in = _scene()
    w = _weights(masks)
    est, contamination, info = demix_traces(movie, w)
    raw = np.asarray(w @ movie.reshape(movie.shape[0], -1).T)
    signal = raw - contamination
    for k in range(2):
        # the disk's own activity: the overlap lens carries the other disk in raw
        share = (masks[k] & masks[1 - k]).sum() / masks[k].sum()
        assert share > 0.05
        err_raw = raw[k] - own[k] - share * own[1 - k] - npil_in[k]
        assert np.std(err_raw - err_raw.mean()) < 1.0  # the scene is what we think
        for trace in (est[k], signal[k]):
            err = trace - own[k]
            assert np.std(err - err.mean()) < 0.5, k  # noise of the mean ~ 0.13
            assert abs(np.polyfit(own[1 - k], err, 1)[0]) < 0.02  # in raw: share
        leak = np.polyfit(own[1 - k], raw[k] - npil_in[k] - own[k], 1)[0]
        assert leak == pytest.approx(share, abs=0.02)  # raw mixes the neighbour in
    # the footprints are the disks (each scaled to a ROI-weighted mean of 1)
    fp = info["footprints"].toarray().reshape(3, 40, 56)
    for k in range(2):
        inside = fp[k][masks[k]]
        assert np.median(inside) == pytest.approx(1.0, abs=0.1)
        assert fp[k][~masks[k]].max() < 0.2


def test_neuropil_only_roi_goes_to_zero():
    movie, masks, _, npil_in = _scene(seed=1)
    w = _weights(masks)
    est, contamination, info = demix_traces(movie, w)
    raw = np.asarray(w @ movie.reshape(movie.shape[0], -1).T)
    signal = raw[2] - contamination[2]
    swing = np.std(npil_in[2])
    assert swing > 5.0
    assert np.std(signal) < 0.1 * swing
    assert np.std(est[2]) < 0.1 * swing


def test_inputs_not_mutated_and_repeatable():
    movie, masks, _, _ = _scene(seed=2, n_time=40)
    w = _weights(masks)
    movie.setflags(write=False)
    first = demix_traces(movie, w, n_iter=1)
    second = demix_traces(movie, w, n_iter=1)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    dense = demix_traces(movie, w.toarray(), n_iter=1)
    np.testing.assert_allclose(dense[1], first[1], rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dilation_um": -1.0}, "dilation_um"),
    ({"surround_um": 0.0}, "surround_um"),
    ({"n_iter": 0}, "n_iter"),
    ({"n_sweeps": 1.5}, "n_sweeps"),
    ({"spacing_um": (1.0, 0.0)}, "spacing_um"),
])
def test_bad_parameters(kwargs, match):
    movie, masks, _, _ = _scene(n_time=10)
    with pytest.raises(ValueError, match=match):
        demix_traces(movie, _weights(masks), **kwargs)


def test_bad_shapes():
    movie, masks, _, _ = _scene(n_time=10)
    with pytest.raises(ValueError, match="shape"):
        demix_traces(movie[0], _weights(masks))
    with pytest.raises(ValueError, match="pixels per row"):
        demix_traces(movie[:, :-1], _weights(masks))
    empty = _weights(masks).toarray()
    empty[1] = 0
    with pytest.raises(ValueError, match="non-zero weight"):
        demix_traces(movie, empty)
    with pytest.raises(ValueError, match="away from every ROI"):
        demix_traces(movie, _weights(masks), dilation_um=100.0)


def test_extract_traces_demix():
    movie, masks, own, _ = _scene(seed=3, n_time=60)
    da = xr.DataArray(movie.astype(np.float32), dims=("time", "y", "x"),
                      attrs={"pixel_size_um": 1.0})
    kw = {"factors": {"time": 1, "y": 1, "x": 1}, "native_shape": (40, 56),
          "neuropil_method": "demix"}
    tr = extract_traces(da, list(masks), **kw).compute()
    assert tr.attrs["neuropil_method"] == "demix"
    assert tr.attrs["neuropil_demix_surround_um"] == 3.0
    assert tr["neuropil"].dims == ("roi", "time")
    signal = background_subtracted(tr)
    np.testing.assert_allclose(signal.values, (tr["raw"] - tr["neuropil"]).values)
    for k in range(2):
        assert _detrended_corr(signal.values[k], own[k]) > 0.99
    # the same lazily, from a dask-backed movie in time chunks
    lazy = extract_traces(da.chunk({"time": 7}), list(masks), **kw)
    assert lazy["neuropil"].chunks is not None
    np.testing.assert_allclose(lazy["neuropil"].values, tr["neuropil"].values, rtol=1e-6)
    # the lab's traces are unchanged by the option
    none = extract_traces(da, list(masks), factors=kw["factors"],
                          native_shape=(40, 56)).compute()
    np.testing.assert_array_equal(none["raw"].values, tr["raw"].values)
    np.testing.assert_array_equal(none["background"].values, tr["background"].values)
    with pytest.raises(ValueError, match="neuropil_demix_n_iter"):
        extract_traces(da, list(masks), neuropil_demix_n_iter=0, **kw)



def test_footprint_update_per_group_equals_joint():
    """The coordinate descent on all ROIs equals it on each group of ROIs sharing pixels."""
    from calim_helpers.demix import _nn_coordinate_descent

    rng = np.random.default_rng(5)
    c = rng.normal(size=(4, 30))
    z = rng.normal(size=(30, 12))
    mask = np.zeros((4, 12))
    mask[0:2, 0:7] = 1  # ROIs 0 and 1 share pixels 0-6
    mask[2:4, 7:12] = 1  # ROIs 2 and 3 share pixels 7-11: two groups, no pixel in common
    joint = _nn_coordinate_descent(c @ c.T, c @ z, mask, np.zeros((4, 12)), 25)
    for m, cols in ((np.array([0, 1]), np.arange(0, 7)), (np.array([2, 3]), np.arange(7, 12))):
        part = _nn_coordinate_descent(c[m] @ c[m].T, c[m] @ z[:, cols], mask[np.ix_(m, cols)],
                                      np.zeros((2, cols.size)), 25)
        np.testing.assert_allclose(part, joint[np.ix_(m, cols)], rtol=1e-12, atol=1e-12)
    assert (joint >= 0).all() and (joint[mask == 0] == 0).all()
