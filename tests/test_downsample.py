"""Tests of calim_helpers.downsample against a brute-force reshape-mean."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimWarning


def _movie(nt=35, ny=11, nx=14, chunks=None, seed=0):
    data = np.random.default_rng(seed).integers(0, 65535, (nt, ny, nx), dtype=np.uint16)
    data.setflags(write=False)
    m = xr.DataArray(data, dims=("time", "y", "x"),
                     coords={"time": np.arange(nt) * 0.1, "y": np.arange(ny) * 0.5,
                             "x": np.arange(nx) * 0.5}, attrs={"pixel_size_um": 0.5})
    return m.chunk(chunks) if chunks else m


def _reference(data, ft, fy, fx):
    nt, ny, nx = (s // f * f for s, f in zip(data.shape, (ft, fy, fx), strict=True))
    d = data[:nt, :ny, :nx].astype(np.float64)
    return d.reshape(nt // ft, ft, ny // fy, fy, nx // fx, fx).mean(axis=(1, 3, 5))


@pytest.mark.parametrize("chunks", [None, {"time": 7, "y": 5}, {"time": 100}])
def test_block_mean_matches_reference_and_drops_partial_blocks(chunks):
    m = _movie(chunks=chunks)
    with pytest.warns(CalimWarning, match="dropping the last 5 of 35 time"):
        out = downsample(m, {"time": 10, "y": 2, "x": 2})
    assert out.dtype == np.float32
    assert out.shape == (3, 5, 7)
    np.testing.assert_allclose(out.values, _reference(m.values, 10, 2, 2), rtol=2e-7)
    np.testing.assert_allclose(out.time.values, [0.45, 1.45, 2.45])
    assert out.attrs["dropped_time"] == 5 and out.attrs["dropped_y"] == 1
    assert out.attrs["pixel_size_um"] == 0.5


def test_lazy_stays_lazy():
    m = _movie(chunks={"time": 10})
    with pytest.warns(CalimWarning):
        out = downsample(m)
    assert out.chunks is not None


def test_exact_blocks_do_not_warn():
    m = _movie(nt=20, ny=4, nx=6)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = downsample(m, {"time": 10, "y": 2, "x": 2})
    assert out.shape == (2, 2, 3)


@pytest.mark.parametrize("factors, match", [({"z": 2}, "dimension 'z'"),
                                            ({"time": 0}, "integer >= 1"),
                                            ({"time": 2.5}, "integer >= 1"),
                                            ({"y": 50}, "exceeds")])
def test_bad_factors(factors, match):
    with pytest.raises(ValueError, match=match):
        downsample(_movie(), factors)


def _skipping_by_hand(data, skip, f=10, fy=2, fx=2):
    """Each block: the float64 mean over its kept frames (all of them if none is kept)."""
    nt, ny, nx = data.shape
    out = []
    for b in range(nt // f):
        frames = np.arange(b * f, (b + 1) * f)
        kept = frames[~skip[frames]] if (~skip[frames]).any() else frames
        block = data[kept, :ny // fy * fy, :nx // fx * fx].astype(np.float64)
        out.append(block.reshape(len(kept), ny // fy, fy, nx // fx, fx).mean(axis=(0, 2, 4)))
    return np.array(out)


@pytest.mark.parametrize("chunks", [None, {"time": 20}, {"time": 7, "y": 5}])
@pytest.mark.parametrize("order", [("time", "y", "x"), ("y", "x", "time")])
def test_skipped_frames_are_left_out_of_their_block(chunks, order):
    m = _movie(nt=53, ny=12, chunks=chunks)
    skip = np.zeros(53, bool)
    skip[[3, 7, 45, 51]] = True
    skip[20:30] = True  # a whole block: kept whole
    with pytest.warns(CalimWarning, match="dropping the last 3"):
        out = downsample(m.transpose(*order), {"time": 10, "y": 2, "x": 2}, skip_frames=skip)
    assert out.attrs["skipped_frames"] == 3  # 3, 7, 45 (51 is in the dropped tail)
    # float32 accumulation against float64: relative 1e-6 of values up to 65535
    np.testing.assert_allclose(out.transpose("time", "y", "x").values,
                               _skipping_by_hand(m.values, skip), rtol=2e-6)
    with pytest.warns(CalimWarning):
        plain = downsample(m, {"time": 10, "y": 2, "x": 2}, skip_frames=np.zeros(53, bool))
        assert plain.attrs["skipped_frames"] == 0
        np.testing.assert_array_equal(plain.values, downsample(m, {"time": 10, "y": 2,
                                                                   "x": 2}).values)


def test_skip_frames_must_be_one_bool_per_frame():
    m = _movie(nt=30)
    with pytest.raises(ValueError, match=r"skip_frames must be a bool array of shape \(30,\)"):
        downsample(m, skip_frames=np.zeros(29, bool))
    with pytest.raises(ValueError, match="skip_frames must be a bool array"):
        downsample(m, skip_frames=np.zeros(30))
