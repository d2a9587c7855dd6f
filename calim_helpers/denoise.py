"""Optional denoising of a movie beyond the block mean (SPEC §4), lazily, in float32.

Methods (:func:`denoise`):

- ``"none"`` -- the movie as float32, unchanged (the default of the pipeline).
- ``"gaussian"`` -- a 2-D Gaussian of ``sigma_px`` pixels on every frame. On white
  noise the standard deviation falls by ``sqrt(sum(w**2))`` for the normalized kernel
  ``w``, about ``1 / (2 sigma sqrt(pi))`` for a large ``sigma`` (0.28 at
  ``sigma_px = 1``, 0.14 at 2).
- ``"median"`` -- a ``size x size`` median on every frame: removes isolated hot pixels
  and shot-noise outliers while keeping edges sharper than a Gaussian of similar
  strength; on Gaussian noise it is less efficient (a 3 x 3 median leaves about 0.4 of
  the noise, a 3 x 3 mean 0.33).
- ``"temporal_gaussian"`` -- a 1-D Gaussian of ``sigma_frames`` frames along time,
  computed chunk by chunk with an overlap of the kernel's radius
  (``dask.array.map_overlap``), so the result does not depend on the chunks; the noise
  falls by about ``1 / sqrt(2 sigma sqrt(pi))``.

Trade-offs
----------
Spatial smoothing lowers the noise but blurs neighbouring cells into each other and
into the neuropil: a ROI's trace then picks up its neighbours' transients. Keep
``sigma_px`` well below a soma's radius (at 0.65 µm per pixel a 12 µm soma is about
9 px in radius), and remember that the 2 x 2 block mean of the downsampling already
averages 4 pixels. Temporal smoothing lowers the noise but widens and lowers fast
transients (a rise of one frame becomes ~2.5 ``sigma_frames`` frames) and shifts
nothing in time only because the kernel is symmetric; the 10-frame block mean of the
downsampling already smooths strongly in time, so a temporal filter at the native rate
mostly helps event timing, not amplitude, and should stay at ``sigma_frames`` of a
few frames at most. Apply denoising after motion correction (a filter does not move
with the cells) and before downsampling.

Examples
--------
>>> movie = xr.DataArray(np.random.default_rng(0).normal(100, 10, (20, 32, 32)),
...                      dims=("time", "y", "x")).chunk({"time": 5})
>>> out = denoise(movie, method="gaussian", sigma_px=2.0)
>>> out.dtype, out.attrs["denoise"], out.chunks is not None
(dtype('float32'), 'gaussian', True)
>>> bool(out.std() < 0.2 * movie.std())
True
"""

from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

__all__ = ["METHODS", "denoise"]

METHODS = ("none", "gaussian", "median", "temporal_gaussian")
_TRUNCATE = 4.0  # Gaussian kernels reach truncate * sigma (scipy's default)


def _spatial_gaussian(block: np.ndarray, *, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(block, (0.0, sigma, sigma), output=np.float32,
                                   mode="reflect", truncate=_TRUNCATE)


def _spatial_median(block: np.ndarray, *, size: int) -> np.ndarray:
    return ndimage.median_filter(block, size=(1, size, size), mode="reflect").astype(
        np.float32, copy=False)


def _temporal_gaussian(block: np.ndarray, *, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter1d(block, sigma, axis=0, output=np.float32, mode="reflect",
                                     truncate=_TRUNCATE)


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, int | float | np.integer | np.floating) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def denoise(
    movie: xr.DataArray,
    /,
    *,
    method: str = "none",
    sigma_px: float = 1.0,
    sigma_frames: float = 1.0,
    size: int = 3,
) -> xr.DataArray:
    """Denoise a movie frame by frame (spatial) or along time, lazily, in float32.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, any numeric dtype, numpy- or dask-backed.
    method : {"none", "gaussian", "median", "temporal_gaussian"}, optional
        Filter, see the module docstring for what each costs in resolution.
        Default is "none".
    sigma_px : float, optional
        Standard deviation of the spatial Gaussian, pixels (``"gaussian"``).
        Default is 1.0.
    sigma_frames : float, optional
        Standard deviation of the temporal Gaussian, frames (``"temporal_gaussian"``).
        Default is 1.0.
    size : int, optional
        Side of the square median window, pixels, odd (``"median"``). Default is 3.

    Returns
    -------
    xarray.DataArray
        float32, dask-backed, same dims, coordinates and attributes as ``movie``, plus
        ``denoise`` (the method) and the parameter it used (``denoise_sigma_px``,
        ``denoise_sigma_frames`` or ``denoise_size``). Borders are handled by
        reflection (``mode="reflect"`` of ``scipy.ndimage``).

    Raises
    ------
    ValueError
        If the dims are not ``("time", "y", "x")``, ``method`` is unknown or the
        parameter of the chosen method is out of range.
    """
    if not isinstance(movie, xr.DataArray):
        raise TypeError(f"movie must be an xarray.DataArray, got {type(movie).__name__}")
    if movie.dims != ("time", "y", "x"):
        raise ValueError(f"movie must have dims ('time', 'y', 'x'), got {movie.dims}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    data = movie.data if isinstance(movie.data, da.Array) else da.from_array(movie.data)
    if method == "none":
        out, params = data.astype(np.float32), {}
    elif method == "gaussian":
        _check_positive("sigma_px", sigma_px)
        data = data.rechunk({1: -1, 2: -1})
        out = data.map_blocks(partial(_spatial_gaussian, sigma=float(sigma_px)),
                              dtype=np.float32)
        params = {"denoise_sigma_px": float(sigma_px)}
    elif method == "median":
        if not isinstance(size, int | np.integer) or size < 1 or size % 2 == 0:
            raise ValueError(f"size must be an odd integer >= 1, got {size!r}")
        data = data.rechunk({1: -1, 2: -1})
        out = data.map_blocks(partial(_spatial_median, size=int(size)), dtype=np.float32)
        params = {"denoise_size": int(size)}
    else:
        _check_positive("sigma_frames", sigma_frames)
        radius = int(_TRUNCATE * float(sigma_frames) + 0.5)  # scipy's kernel radius
        depth = min(radius, movie.sizes["time"] - 1)
        if depth > 0 and data.numblocks[0] > 1:
            # no padding at the movie's ends: scipy's own reflection handles them there,
            # so every chunk sees what the whole-array filter sees
            out = data.map_overlap(partial(_temporal_gaussian, sigma=float(sigma_frames)),
                                   depth={0: depth, 1: 0, 2: 0}, boundary="none",
                                   dtype=np.float32)
        else:
            out = data.map_blocks(partial(_temporal_gaussian, sigma=float(sigma_frames)),
                                  dtype=np.float32)
        params = {"denoise_sigma_frames": float(sigma_frames)}

    result = xr.DataArray(out, dims=movie.dims, coords=movie.coords, name=movie.name,
                          attrs={**movie.attrs, "denoise": method, **params})
    for d in result.coords:
        result[d].attrs = dict(movie[d].attrs)
    return result
