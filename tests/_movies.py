"""Small movies and polygon ROIs shared by the trace tests (test_traces, test_neuropil)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from roifile import ImagejRoi


def movie(data, chunks=None, pixel_size_um=0.65):
    """A (time, y, x) DataArray at 0.1 s per frame, dask-backed with ``chunks``."""
    m = xr.DataArray(data, dims=("time", "y", "x"),
                     coords={"time": np.arange(data.shape[0]) * 0.1},
                     attrs={"pixel_size_um": pixel_size_um})
    return m.chunk(chunks) if chunks else m


def random_movie(nt, ny, nx, seed=0, chunks=None):
    """A read-only uniform uint16 movie of the given size (see :func:`movie`)."""
    data = np.random.default_rng(seed).integers(0, 65535, (nt, ny, nx), dtype=np.uint16)
    data.setflags(write=False)
    return movie(data, chunks)


def poly(pts, name):
    """A polygon ROI through ``pts`` ((x, y) pairs)."""
    return ImagejRoi.frompoints(np.asarray(pts, dtype=float), name=name)
