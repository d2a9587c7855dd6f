"""Tests of calim_helpers.denoise against scipy.ndimage on the whole array."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from calim_helpers.denoise import METHODS, denoise


def _movie(nt=30, ny=40, nx=48, chunks=None, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(1000.0, 20.0, (nt, ny, nx)).astype(dtype)
    data.setflags(write=False)
    m = xr.DataArray(data, dims=("time", "y", "x"),
                     coords={"time": np.arange(nt) * 0.1, "y": np.arange(ny) * 0.65,
                             "x": np.arange(nx) * 0.65},
                     attrs={"pixel_size_um": 0.65})
    m["time"].attrs["units"] = "s"
    return m.chunk(chunks) if chunks else m


def _reference(data, method, sigma_px=1.0, sigma_frames=1.0, size=3):
    d = data.astype(np.float64)
    if method == "gaussian":
        return ndimage.gaussian_filter(d, (0, sigma_px, sigma_px), mode="reflect")
    if method == "median":
        return ndimage.median_filter(d, size=(1, size, size), mode="reflect")
    if method == "temporal_gaussian":
        return ndimage.gaussian_filter1d(d, sigma_frames, axis=0, mode="reflect")
    return d


CASES = [("none", {}), ("gaussian", {"sigma_px": 1.5}), ("median", {"size": 5}),
         ("temporal_gaussian", {"sigma_frames": 2.0}), ("temporal_gaussian", {"sigma_frames": 3.7})]


@pytest.mark.parametrize("method, kw", CASES)
@pytest.mark.parametrize("chunks", [None, {"time": 30}, {"time": 4}, {"time": 7, "y": 9}])
def test_matches_the_whole_array_filter_whatever_the_chunks(method, kw, chunks):
    m = _movie(chunks=chunks)
    out = denoise(m, method=method, **kw)
    assert isinstance(out.data, da.Array) and out.dtype == np.float32
    ref = _reference(m.values, method, **kw)
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, atol=1e-3)
    assert out.dims == m.dims and out.attrs["pixel_size_um"] == 0.65
    assert out.attrs["denoise"] == method
    assert out["time"].attrs["units"] == "s"
    xr.testing.assert_equal(out.coords.to_dataset(), m.coords.to_dataset())


def test_none_is_the_identity_as_float32():
    m = _movie(dtype=np.uint16)
    out = denoise(m)
    np.testing.assert_array_equal(out.values, m.values.astype(np.float32))
    assert out.attrs["denoise"] == "none"
    assert not any(k.startswith("denoise_") for k in out.attrs)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_gaussian_lowers_white_noise_by_the_kernel_factor(sigma):
    m = _movie(nt=8, ny=160, nx=160)
    out = denoise(m, method="gaussian", sigma_px=sigma)
    # sqrt(sum(w**2)) of the discrete separable kernel, and its large-sigma limit
    w = ndimage.gaussian_filter1d(np.eye(1, 81, 40)[0], sigma)
    exact = float(np.sum(w**2))
    inner = (slice(None), slice(20, -20), slice(20, -20))  # away from the reflected border
    factor = float(out.values[inner].std() / m.values[inner].std())
    assert factor == pytest.approx(exact, rel=0.05)
    assert factor == pytest.approx(1 / (2 * sigma * np.sqrt(np.pi)), rel=0.15)
    assert out.attrs["denoise_sigma_px"] == sigma


def test_temporal_gaussian_lowers_noise_and_spreads_a_transient():
    m = _movie(nt=400, ny=6, nx=6, chunks={"time": 50})
    out = denoise(m, method="temporal_gaussian", sigma_frames=3.0)
    factor = float(out.std() / m.std())
    assert factor == pytest.approx(1 / np.sqrt(2 * 3.0 * np.sqrt(np.pi)), rel=0.1)
    spike = np.zeros((40, 1, 1), dtype=np.float32)
    spike[20] = 1.0
    smooth = denoise(xr.DataArray(spike, dims=("time", "y", "x")),
                     method="temporal_gaussian", sigma_frames=3.0).values[:, 0, 0]
    assert smooth.argmax() == 20 and smooth.max() < 0.15  # lower and wider, not moved
    assert smooth.sum() == pytest.approx(1.0, rel=1e-5)


def test_median_removes_a_hot_pixel():
    frame = np.full((1, 9, 9), 100, dtype=np.uint16)
    frame[0, 4, 4] = 5000
    out = denoise(xr.DataArray(frame, dims=("time", "y", "x")), method="median")
    np.testing.assert_array_equal(out.values, 100.0)
    assert out.attrs["denoise_size"] == 3


def test_is_lazy_until_computed():
    def boom(block):
        raise AssertionError("computed")

    data = da.zeros((20, 8, 9), chunks=(5, 4, 9)).map_blocks(boom, dtype=np.float64)
    for method in METHODS:
        out = denoise(xr.DataArray(data, dims=("time", "y", "x")), method=method)
        assert isinstance(out.data, da.Array)


@pytest.mark.parametrize("kw, match", [
    ({"method": "bilateral"}, "method must be one of"),
    ({"method": "gaussian", "sigma_px": 0}, "sigma_px must be > 0"),
    ({"method": "gaussian", "sigma_px": -1.0}, "sigma_px must be > 0"),
    ({"method": "temporal_gaussian", "sigma_frames": 0.0}, "sigma_frames must be > 0"),
    ({"method": "median", "size": 4}, "size must be an odd integer"),
    ({"method": "median", "size": 2.5}, "size must be an odd integer"),
])
def test_bad_parameters_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        denoise(_movie(nt=3, ny=4, nx=4), **kw)


def test_bad_movie_raises():
    m = _movie(nt=3, ny=4, nx=4)
    with pytest.raises(ValueError, match="dims"):
        denoise(m.transpose("x", "y", "time"), method="gaussian")
    with pytest.raises(TypeError, match="DataArray"):
        denoise(m.values)
