"""Tests of calim_helpers.normalize with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from calim_helpers.errors import CalimWarning
from calim_helpers.noise import noise_sigma
from calim_helpers.normalize import METHODS, dff_raw, normalize


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _noise_with_transients(n_roi=20, n_time=2000, seed=0, every=100):
    """Gaussian noise of known sigma per ROI plus sparse positive transients.

    One event every ``every`` frames on average, 5-30 sigma high, decaying
    with a 3-frame time constant (``every=100``: about 7 % of the frames
    visibly raised).
    """
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 5.0, n_roi)
    x = rng.normal(0.0, 1.0, (n_roi, n_time)) * sigma[:, None]
    kernel = np.exp(-np.arange(30) / 3.0)
    for i in range(n_roi):
        events = np.zeros(n_time)
        at = rng.choice(n_time, size=n_time // every, replace=False)
        events[at] = rng.uniform(5, 30, at.size) * sigma[i]
        x[i] += np.convolve(events, kernel)[:n_time]
    return x, sigma


# ------------------------------------------------------------------ methods


def test_dff_exact_with_constant_baseline():
    corrected = np.array([[0.0, 5.0, 10.0, -2.0], [1.0, 2.0, 3.0, 4.0]])
    baseline = np.full((2, 4), 100.0)
    _frozen(corrected, baseline)
    norm, info = normalize(corrected, baseline)
    np.testing.assert_array_equal(norm, corrected / 100.0)
    assert info == {"method": "dff", "trim_start": 0, "n_guarded": 0}
    assert norm.dtype == np.float64


def test_dff_uses_the_baseline_frame_by_frame():
    corrected = np.array([10.0, 10.0, 10.0])
    baseline = np.array([100.0, 200.0, 50.0])
    norm, _ = normalize(corrected, baseline, method="dff")
    np.testing.assert_allclose(norm, [0.1, 0.05, 0.2])


def test_session_scale_is_median_of_roi_means():
    baseline = np.array([[100.0, 100.0, 100.0, 100.0],   # mean 100
                         [300.0, 500.0, 300.0, 500.0],   # mean 400
                         [900.0, 1100.0, 1000.0, 1000.0],  # mean 1000
                         [10.0, 30.0, 20.0, 20.0]])      # mean 20
    corrected = np.arange(16.0).reshape(4, 4)
    _frozen(corrected, baseline)
    norm, info = normalize(corrected, baseline, method="session")
    assert info["session_scale"] == 250.0  # median of 20, 100, 400, 1000
    np.testing.assert_allclose(norm, corrected / 250.0)
    # trimmed frames are left out of the scale: means 100, 400, 1000 + 2/3, 20 -> 250.0
    # (frames 1: -> [100, 433.3, 1033.3, 23.3] -> median (100 + 433.3) / 2)
    _, info = normalize(corrected, baseline, method="session", trim_start=1)
    np.testing.assert_allclose(info["session_scale"], (100.0 + 1300.0 / 3) / 2)


def test_session_scale_ignores_nan_rois():
    baseline = np.array([[100.0, 100.0], [np.nan, np.nan], [300.0, 300.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = normalize(np.zeros((3, 2)), baseline, method="session")
    assert info["session_scale"] == 200.0


def test_zscore_recovers_sigma_with_transients():
    x, sigma = _noise_with_transients()
    (x,) = _frozen(x)
    norm, info = normalize(x, np.ones_like(x), method="zscore")
    ratio = info["sigma"] / sigma
    assert np.all(np.abs(ratio - 1) < 0.10), ratio
    assert abs(np.median(ratio) - 1) < 0.05
    # the plain standard deviation is fooled by the transients
    assert np.median(x.std(axis=1) / sigma) > 2
    np.testing.assert_allclose(norm, x / info["sigma"][:, None])
    assert info["quiet_threshold"] == 2.5 and info["quiet_converged"].all()
    assert np.all(info["n_quiet"] > 0.8 * x.shape[1])
    # the one noise estimate of the package, with the same default clipping
    est = noise_sigma(x)
    np.testing.assert_array_equal(info["sigma"], est.sigma)
    np.testing.assert_array_equal(info["n_quiet"], est.n_quiet)


def test_zscore_denser_transients_still_within_15_percent():
    x, sigma = _noise_with_transients(every=50, seed=1)  # ~15 % of frames raised
    ratio = normalize(x, np.ones_like(x), method="zscore")[1]["sigma"] / sigma
    assert np.all(np.abs(ratio - 1) < 0.15) and abs(np.median(ratio) - 1) < 0.10


def test_zscore_sigma_ignores_trimmed_frames_and_follows_quiet_threshold():
    x, sigma = _noise_with_transients(n_roi=4, n_time=400, seed=4)
    x = x.copy()
    x[:, :10] += 50 * sigma[:, None]  # an arPLS edge artefact, trimmed away
    _, info = normalize(x, np.ones_like(x), method="zscore", trim_start=10)
    np.testing.assert_array_equal(info["sigma"], noise_sigma(x[:, 10:]).sigma)
    _, info3 = normalize(x, np.ones_like(x), method="zscore", trim_start=10,
                         quiet_threshold=3.0)
    np.testing.assert_array_equal(info3["sigma"], noise_sigma(x[:, 10:], clip=3.0).sigma)
    assert info3["quiet_threshold"] == 3.0


def test_trim_start_sets_leading_frames_nan():
    corrected = np.ones((3, 10))
    baseline = np.full((3, 10), 4.0)
    for method in METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)  # zscore: constant trace
            norm, info = normalize(corrected, baseline, method=method, trim_start=4)
        assert np.isnan(norm[:, :4]).all(), method
        assert info["trim_start"] == 4
    norm, _ = normalize(corrected, baseline, trim_start=4)
    np.testing.assert_array_equal(norm[:, 4:], 0.25)
    raw = dff_raw(corrected + baseline, baseline, trim_start=2)
    assert np.isnan(raw[:, :2]).all() and np.all(raw[:, 2:] == 0.25)


def test_dff_raw():
    raw = np.array([[110.0, 100.0, 90.0]])
    base = np.array([[100.0, 100.0, 100.0]])
    _frozen(raw, base)
    np.testing.assert_allclose(dff_raw(raw, base), [[0.1, 0.0, -0.1]])


# ------------------------------------------------------------------ guards


def test_dff_guard_nonpositive_and_tiny_baseline():
    corrected = np.ones((3, 4))
    baseline = np.array([[100.0, 0.0, -5.0, 100.0],
                         [100.0, 1e-9, 100.0, 100.0],
                         [100.0, 100.0, 100.0, 100.0]])
    with pytest.warns(CalimWarning, match=r"3 value\(s\) in 2 ROI\(s\) have a baseline_raw"):
        norm, info = normalize(corrected, baseline)
    assert info["n_guarded"] == 3
    expected = np.full((3, 4), 0.01)
    expected[0, 1:3] = expected[1, 1] = np.nan
    np.testing.assert_array_equal(norm, expected)
    with pytest.warns(CalimWarning, match=r"dff_raw: 3 value\(s\) in 2 ROI"):
        out = dff_raw(corrected, baseline)
    assert np.isnan(out).sum() == 3


def test_dff_guard_counts_only_untrimmed_frames():
    baseline = np.array([[0.0, 100.0, 100.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        norm, info = normalize(np.ones((1, 3)), baseline, trim_start=1)
    assert info["n_guarded"] == 0 and np.isnan(norm[0, 0])


def test_session_guard_nonpositive_scale():
    with pytest.warns(CalimWarning, match="session scale S = -1.0 is not > 0"):
        norm, info = normalize(np.ones((3, 2)), -np.ones((3, 2)), method="session")
    assert np.isnan(norm).all() and info["n_guarded"] == 6


def test_zscore_guard_zero_sigma():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (3, 200))
    x[1] = 7.0  # constant: MAD 0
    with pytest.warns(CalimWarning, match=r"1 ROI\(s\) have zero, tiny or undefined"):
        norm, info = normalize(x, np.ones_like(x), method="zscore")
    assert np.isnan(norm[1]).all() and np.isfinite(norm[[0, 2]]).all()
    assert info["sigma"][1] == 0 and info["n_guarded"] == 200


# ------------------------------------------------------------------ DataArrays


def test_dataarray_in_dataarray_out():
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (4, 30))
    coords = {"roi": [1, 2, 3, 4], "roi_name": ("roi", list("abcd")),
              "time": np.arange(30) * 1.0}
    corrected = xr.DataArray(data, dims=("roi", "time"), coords=coords)
    baseline = xr.DataArray(np.full((30, 4), 50.0), dims=("time", "roi"), coords=coords)
    norm, info = normalize(corrected, baseline, trim_start=2)
    assert isinstance(norm, xr.DataArray) and norm.dims == ("roi", "time")
    np.testing.assert_array_equal(norm.roi_name.values, list("abcd"))
    np.testing.assert_allclose(norm.values[:, 2:], data[:, 2:] / 50.0)
    assert norm.attrs == {"normalize": "dff", "trim_start": 2}
    # time-first layout is accepted and kept
    normt, _ = normalize(corrected.T, baseline, method="zscore")
    assert normt.dims == ("time", "roi")
    _, zinfo = normalize(corrected, baseline, method="zscore")
    assert zinfo["sigma"].dims == ("roi",)
    np.testing.assert_allclose(normt.T.values, corrected.values / zinfo["sigma"].values[:, None])
    sigma = noise_sigma(corrected).sigma
    xr.testing.assert_allclose(sigma, zinfo["sigma"])
    out = dff_raw(corrected + baseline, baseline)
    assert out.dims == ("roi", "time") and out.name == "dff_raw"


def test_dataarray_misaligned_raises():
    a = xr.DataArray(np.ones((2, 3)), dims=("roi", "time"), coords={"time": [0, 1, 2]})
    b = xr.DataArray(np.ones((2, 3)), dims=("roi", "time"), coords={"time": [0, 1, 5]})
    with pytest.raises(ValueError, match="baseline_raw does not align with corrected"):
        normalize(a, b)


# ------------------------------------------------------------------ bad input


def test_inputs_not_mutated_and_repeatable():
    x, _ = _noise_with_transients(n_roi=3, n_time=100)
    b = np.full_like(x, 10.0)
    b[0, 3] = 0
    _frozen(x, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        for method in METHODS:
            first, _ = normalize(x, b, method=method, trim_start=5)
            again, _ = normalize(x, b, method=method, trim_start=5)
            np.testing.assert_array_equal(first, again)


def test_bad_arguments():
    c = np.ones((2, 5))
    with pytest.raises(ValueError, match=r"method must be one of 'dff', 'session', 'zscore', "
                                         r"got 'mean'"):
        normalize(c, c, method="mean")
    with pytest.raises(ValueError, match="trim_start must be an integer >= 0"):
        normalize(c, c, trim_start=-1)
    with pytest.raises(ValueError, match="trim_start must be an integer >= 0"):
        normalize(c, c, trim_start=1.5)
    with pytest.raises(ValueError, match=r"trim_start must be < the number of frames \(5\)"):
        normalize(c, c, trim_start=5)
    with pytest.raises(ValueError, match=r"baseline_raw must have the shape of corrected"):
        normalize(c, np.ones((2, 4)))
    with pytest.raises(ValueError, match="quiet_threshold must be a finite number > 0"):
        normalize(c, c, method="zscore", quiet_threshold=0)
    with pytest.raises(ValueError, match="quiet_threshold must be a finite number > 0"):
        normalize(c, c, method="zscore", quiet_threshold=float("inf"))
    with pytest.raises(ValueError, match="must have a 'time' dimension"):
        normalize(xr.DataArray(c, dims=("roi", "frame")), c)
    with pytest.raises(ValueError, match="must be numeric"):
        normalize(np.array([["a", "b"]]), np.array([["c", "d"]]))
