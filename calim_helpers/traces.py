"""ROI and background traces from a movie: SPEC §2 steps 3 and 4.

Every ROI becomes one row of a sparse ``(roi, pixel)`` weight matrix on the
downsampled grid: its coverage weights (the fraction of each downsampling
block's native pixels inside the ROI, :func:`calim_helpers.rois.coverage_weights`)
normalized to sum 1. A trace is then that matrix times each frame, computed
lazily chunk by chunk of the downsampled movie: one pass over the movie for all
ROIs, no loop over ROIs. The background trace is one more row (equal weights on
pixels drawn at random outside every ROI), so :func:`extract_traces` gets the
ROI traces and the background from the same pass.

With every downsampling factor 1 the weights are the binary ImageJ masks over
their pixel count, and a trace is ImageJ's *Multi Measure* mean.

Examples
--------
A 20-frame 8 x 8 movie that is 1 in a 4 x 4 ROI and 3 elsewhere; 2 x 2 x 10
block means give a 4 x 4 grid of 2 frames, and 25 % of its pixels (4), drawn
outside the ROI, make the background:

>>> import numpy as np, xarray as xr
>>> from roifile import ImagejRoi
>>> data = np.full((20, 8, 8), 3, np.uint16)
>>> data[:, 2:6, 0:4] = 1
>>> movie = xr.DataArray(data, dims=("time", "y", "x")).chunk({"time": 10})
>>> roi = ImagejRoi.frompoints([[0, 2], [4, 2], [4, 6], [0, 6]], name="left")
>>> traces = extract_traces(movie, [roi], background_fraction=0.25, seed=0)
>>> traces["raw"].shape, traces["raw"].values.tolist()
((1, 2), [[1.0, 1.0]])
>>> int(traces.attrs["n_background_pixels"]), traces["background_pixel"].values.tolist()
(4, [3, 7, 10, 11])
>>> traces["background"].values.tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr
from roifile import ImagejRoi

from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.rois import coverage_weights, rasterize

__all__ = [
    "background_pixels",
    "background_trace",
    "extract_traces",
    "roi_means",
    "roi_weights",
]

_MOVIE_FACTORS: Mapping[str, int] = MappingProxyType({"time": 10, "y": 2, "x": 2})
_GRID_FACTORS: Mapping[str, int] = MappingProxyType({"y": 2, "x": 2})
_DIMS = ("time", "y", "x")


# ------------------------------------------------------------------ validation


def _check_movie(movie: Any, name: str = "movie") -> xr.DataArray:
    if not isinstance(movie, xr.DataArray):
        raise ValueError(f"{name} must be an xarray.DataArray, got {type(movie).__name__}")
    if tuple(movie.dims) != _DIMS:
        raise ValueError(f"{name} must have dims {_DIMS}, got {tuple(movie.dims)}")
    return movie


def _check_grid_shape(shape: Any, name: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):
        raise ValueError(f"{name} must be two positive integers, got {shape!r}")
    return ny, nx


def _grid_factors(factors: Mapping[str, int]) -> dict[str, int]:
    """``{"y": fy, "x": fx}`` from a factors mapping; a missing dimension means 1."""
    if not isinstance(factors, Mapping):
        raise ValueError(f"factors must be a mapping such as {{'y': 2, 'x': 2}}, got {factors!r}")
    out = {}
    for dim in ("y", "x"):
        v = factors.get(dim, 1)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"factors[{dim!r}] must be an integer >= 1, got {v!r}")
        out[dim] = int(v)
    return out


def _roi_name(roi: Any, index: int) -> str:
    name = getattr(roi, "name", "") if isinstance(roi, ImagejRoi) else ""
    return str(name) if name else f"ROI{index}"


def _native_mask(roi: Any, shape: tuple[int, int], index: int) -> np.ndarray:
    """Native mask of ROI number ``index`` (1-based): an ImagejRoi or a bool mask."""
    if isinstance(roi, ImagejRoi):
        return rasterize(roi, shape, index=index)
    mask = np.asarray(roi)
    if mask.shape != shape or mask.dtype != bool:
        raise CalimInputError(
            f"ROI {index}: expected a roifile.ImagejRoi or a bool mask of shape {shape}, "
            f"got {type(roi).__name__} with shape {mask.shape} and dtype {mask.dtype}")
    if not mask.any():
        raise CalimInputError(f"ROI {index} has no pixel inside the {shape[0]} x {shape[1]} frame")
    return mask


# --------------------------------------------------------------------- weights


def roi_weights(
    rois: Sequence[ImagejRoi | np.ndarray],
    shape: tuple[int, int],
    /,
    *,
    factors: Mapping[str, int] = _GRID_FACTORS,
) -> sp.csr_matrix:
    """Sparse coverage-weight matrix of ROIs on the downsampled grid.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi or of numpy.ndarray
        Area ROIs in session order (ROI ``k`` is row ``k - 1``), drawn at native
        resolution; a ROI may also be given as a bool mask of shape ``shape``.
    shape : tuple of int
        ``(ny, nx)`` of the native frame, in pixels.
    factors : mapping of str to int, keyword-only
        Block size ``{"y": fy, "x": fx}`` of the downsampling, in pixels; other
        keys (``"time"``) are ignored and a missing ``"y"`` or ``"x"`` means 1,
        so the pipeline's ``downsample`` parameter can be passed as is.
        Default is ``{"y": 2, "x": 2}``.

    Returns
    -------
    scipy.sparse.csr_matrix of float64, shape (n_roi, ny // fy * nx // fx)
        Row ``k - 1`` holds ROI ``k``'s coverage weights on the downsampled grid
        (flattened row-major, index ``row * (nx // fx) + col``), divided by their
        sum: each row sums to 1, and its product with a flattened downsampled
        frame is the ROI's coverage-weighted mean.

    Raises
    ------
    CalimInputError
        If ``rois`` is empty, a ROI cannot be rasterized (see
        :func:`calim_helpers.rois.rasterize`), or a ROI has zero total weight on
        the downsampled grid (it lies only in the trailing rows / columns that
        downsampling drops). The message gives the ROI's number and name.
    ValueError
        If ``shape`` or ``factors`` is invalid.
    """
    ny, nx = _check_grid_shape(shape, "shape")
    gf = _grid_factors(factors)
    by, bx = ny // gf["y"], nx // gf["x"]
    if by == 0 or bx == 0:
        raise ValueError(f"factors {gf} are larger than the native frame {ny} x {nx}")
    rois = list(rois)
    if not rois:
        raise CalimInputError("rois is empty: no ROI to measure")
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for k, roi in enumerate(rois, start=1):
        cov = coverage_weights(_native_mask(roi, (ny, nx), k), factors=gf).ravel()
        idx = np.flatnonzero(cov)
        if idx.size == 0:
            raise CalimInputError(
                f"ROI {k} ({_roi_name(roi, k)!r}) has zero weight on the {by} x {bx} "
                f"downsampled grid: it lies only in the last {ny - by * gf['y']} row(s) / "
                f"{nx - bx * gf['x']} column(s) that {gf['y']} x {gf['x']} downsampling drops")
        w = cov[idx].astype(np.float64)
        indices.append(idx)
        data.append(w / w.sum())
        indptr.append(indptr[-1] + idx.size)
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
        shape=(len(rois), by * bx))


def _as_weight_rows(weights_or_masks: Any, n_pixels: int) -> sp.csr_matrix:
    if sp.issparse(weights_or_masks):
        w = sp.csr_matrix(weights_or_masks)
    else:
        arr = np.asarray(weights_or_masks)
        if arr.ndim not in (2, 3):
            raise ValueError(
                "weights_or_masks must be a sparse (roi, pixel) matrix or an array "
                f"(roi, pixel) or (roi, y, x), got shape {arr.shape}")
        w = sp.csr_matrix(arr.reshape(arr.shape[0], -1))
    if w.shape[1] != n_pixels:
        raise ValueError(
            f"weights_or_masks has {w.shape[1]} pixels per row, grid_shape gives {n_pixels}")
    return w


# ------------------------------------------------------------------ the product


def _weighted_sums(block: np.ndarray, weights: sp.csr_matrix) -> np.ndarray:
    """``weights @ frame`` for each frame of a ``(..., y, x)`` block -> ``(..., n_rows)``.

    Accumulates in float64, returns float32.
    """
    lead = block.shape[:-2]
    flat = block.reshape(-1, block.shape[-2] * block.shape[-1])
    out = (weights @ flat.T).T  # scipy upcasts to float64
    return np.asarray(out, dtype=np.float32).reshape(*lead, weights.shape[0])


def _apply_rows(movie_ds: xr.DataArray, weights: sp.csr_matrix, dim: str) -> xr.DataArray:
    """``(dim, time)`` = weight rows times each frame, lazily over time chunks."""
    ny, nx = movie_ds.sizes["y"], movie_ds.sizes["x"]
    if weights.shape[1] != ny * nx:
        raise ValueError(
            f"weights have {weights.shape[1]} pixels per row, the movie's frames {ny} x {nx}")
    if movie_ds.chunks is not None:
        movie_ds = movie_ds.chunk({"y": -1, "x": -1})  # whole frames in every chunk
    out = xr.apply_ufunc(
        _weighted_sums,
        movie_ds,
        kwargs={"weights": weights},
        input_core_dims=[["y", "x"]],
        output_core_dims=[[dim]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {dim: weights.shape[0]}},
        keep_attrs=True,
    )
    return out.transpose(dim, "time")


def _downsampled(movie: xr.DataArray, factors: Mapping[str, int]) -> xr.DataArray:
    movie = _check_movie(movie)
    if not isinstance(factors, Mapping):
        raise ValueError(f"factors must be a mapping such as {dict(_MOVIE_FACTORS)}, "
                         f"got {factors!r}")
    return downsample(movie, dict(factors))


def roi_means(
    movie: xr.DataArray,
    rois: Sequence[ImagejRoi | np.ndarray],
    /,
    *,
    factors: Mapping[str, int] = _MOVIE_FACTORS,
) -> xr.DataArray:
    """Coverage-weighted mean of each ROI in each downsampled frame, lazily.

    The movie is block-mean downsampled with
    :func:`calim_helpers.downsample.downsample`; the ROI traces are then the
    sparse matrix of :func:`roi_weights` times each frame, evaluated chunk by
    chunk (a dask-backed movie gives a dask-backed result; nothing is read
    until it is computed). With every factor 1 this is ImageJ's *Multi
    Measure* mean of each ROI.

    Parameters
    ----------
    movie : xarray.DataArray, dims (time, y, x)
        The native-resolution movie (any numeric dtype), numpy- or dask-backed.
    rois : sequence of roifile.ImagejRoi or of numpy.ndarray
        Area ROIs drawn on the native frame, in session order (or bool masks of
        the native frame shape).
    factors : mapping of str to int, keyword-only
        Downsampling block size per dimension. Default is
        ``{"time": 10, "y": 2, "x": 2}``; ``{"time": 1, "y": 1, "x": 1}``
        measures the native movie.

    Returns
    -------
    xarray.DataArray of float32, dims (roi, time)
        Mean intensity (the movie's units) per ROI and downsampled frame
        (products accumulated in float64). Coordinates ``roi`` (1 … n, session
        order), ``roi_name`` (Fiji name, or ``"ROI<k>"`` for masks) and the
        downsampled movie's ``time``; ``attrs`` are the downsampled movie's.

    Raises
    ------
    CalimInputError
        If a ROI is unusable (see :func:`roi_weights`).
    ValueError
        If ``movie`` is not a ``(time, y, x)`` DataArray or ``factors`` is invalid.

    Warns
    -----
    CalimWarning
        When downsampling drops a trailing partial block.
    """
    movie_ds = _downsampled(movie, factors)
    weights = roi_weights(rois, (movie.sizes["y"], movie.sizes["x"]), factors=factors)
    out = _apply_rows(movie_ds, weights, "roi")
    return _label_rois(out, rois)


def _label_rois(out: xr.DataArray, rois: Sequence[Any]) -> xr.DataArray:
    n = out.sizes["roi"]
    return out.assign_coords(
        roi=("roi", np.arange(1, n + 1)),
        roi_name=("roi", [_roi_name(r, k) for k, r in enumerate(rois, start=1)]),
    )


# ------------------------------------------------------------------ background


def background_pixels(
    weights_or_masks: Any,
    grid_shape: tuple[int, int],
    /,
    *,
    fraction: float = 0.10,
    seed: int = 0,
) -> np.ndarray:
    """Draw background pixels at random, without replacement, outside every ROI.

    Parameters
    ----------
    weights_or_masks : scipy.sparse matrix or array_like
        The ROIs on the downsampled grid: the matrix of :func:`roi_weights`
        (shape ``(n_roi, ny * nx)``) or an array ``(n_roi, ny * nx)`` or
        ``(n_roi, ny, nx)`` of coverage weights or bool masks. A pixel is
        *outside* when its weight is 0 for every ROI, i.e. no native pixel of
        its block belongs to any ROI.
    grid_shape : tuple of int
        ``(ny, nx)`` of the downsampled grid, in pixels.
    fraction : float, keyword-only
        Number of pixels to draw as a fraction of **all** pixels of the grid
        (``ny * nx``, ROIs included, as SPEC §2 step 4 says "fraction of the
        downsampled pixels"), not of the outside pixels: ``round(fraction * ny
        * nx)`` pixels, halves rounded up. In (0, 1]. Default is 0.10.
    seed : int, keyword-only
        Seed of ``numpy.random.default_rng``; the same seed and inputs give the
        same pixels. Default is 0.

    Returns
    -------
    numpy.ndarray of int64, shape (n_background,)
        Sorted, distinct flat indices ``row * nx + col`` on the downsampled grid.

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1] or selects no pixel, ``seed`` is not a
        non-negative integer, or the weights do not match ``grid_shape``.
    CalimInputError
        If no pixel lies outside the ROIs.

    Warns
    -----
    CalimWarning
        When fewer pixels lie outside the ROIs than requested: all of them are used.
    """
    ny, nx = _check_grid_shape(grid_shape, "grid_shape")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating) \
            or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_pixels = ny * nx
    w = _as_weight_rows(weights_or_masks, n_pixels)
    w.eliminate_zeros()
    inside = np.zeros(n_pixels, dtype=bool)
    inside[w.indices] = True
    outside = np.flatnonzero(~inside)
    n_want = int(np.floor(fraction * n_pixels + 0.5))
    if n_want == 0:
        raise ValueError(
            f"fraction = {fraction!r} of the {ny} x {nx} grid selects no background pixel")
    if outside.size == 0:
        raise CalimInputError(
            f"no pixel of the {ny} x {nx} grid lies outside the ROIs: no background")
    if outside.size < n_want:
        warnings.warn(
            f"background: only {outside.size} pixels lie outside the ROIs, fewer than the "
            f"{n_want} requested (fraction {fraction} of {n_pixels}); using all of them",
            CalimWarning, stacklevel=2)
        n_want = outside.size
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(outside, size=n_want, replace=False)).astype(np.int64)


def _pixel_row(pixels: Any, n_pixels: int) -> sp.csr_matrix:
    """One weight row with equal weights summing to 1 on ``pixels``."""
    p = np.asarray(pixels)
    if p.ndim != 1 or p.size == 0 or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"pixels must be a non-empty 1-D array of flat indices, got {p!r}")
    if p.min() < 0 or p.max() >= n_pixels:
        raise ValueError(f"pixels must be in [0, {n_pixels}), got min {p.min()}, max {p.max()}")
    if np.unique(p).size != p.size:
        raise ValueError("pixels must be distinct")
    data = np.full(p.size, 1.0 / p.size)
    return sp.csr_matrix((data, p.astype(np.int64), [0, p.size]), shape=(1, n_pixels))


def background_trace(movie_ds: xr.DataArray, pixels: Any, /) -> xr.DataArray:
    """Mean of the background pixels in each frame, lazily.

    Parameters
    ----------
    movie_ds : xarray.DataArray, dims (time, y, x)
        The (downsampled) movie on the grid the pixels index.
    pixels : array_like of int, shape (n_background,)
        Distinct flat indices ``row * nx + col``, e.g. from :func:`background_pixels`.

    Returns
    -------
    xarray.DataArray of float32, dims (time,)
        Dask-backed when the movie is. Named ``"background"``.

    Raises
    ------
    ValueError
        If ``movie_ds`` is not a ``(time, y, x)`` DataArray or ``pixels`` are
        empty, repeated or out of range.
    """
    movie_ds = _check_movie(movie_ds, "movie_ds")
    row = _pixel_row(pixels, movie_ds.sizes["y"] * movie_ds.sizes["x"])
    return _apply_rows(movie_ds, row, "row").isel(row=0, drop=True).rename("background")


# ---------------------------------------------------------------- one pass


def extract_traces(
    movie: xr.DataArray,
    rois: Sequence[ImagejRoi | np.ndarray],
    /,
    *,
    factors: Mapping[str, int] = _MOVIE_FACTORS,
    background_fraction: float = 0.10,
    seed: int = 0,
    native_shape: tuple[int, int] | None = None,
) -> xr.Dataset:
    """ROI traces and the background trace in one lazy pass over the movie.

    The one entry point for traces. Downsamples the movie
    (:func:`calim_helpers.downsample.downsample`) unless it is already downsampled
    (``native_shape`` given), builds the ROI weights (:func:`roi_weights`; ROIs are
    always rasterized on the native frame), draws the background pixels
    (:func:`background_pixels`) and multiplies the stacked ``(n_roi + 1, pixel)``
    weight matrix with every downsampled frame.

    Parameters
    ----------
    movie : xarray.DataArray, dims (time, y, x)
        The native-resolution movie, or (with ``native_shape``) the movie already
        downsampled by ``factors``; numpy- or dask-backed.
    rois : sequence of roifile.ImagejRoi or of numpy.ndarray
        Area ROIs drawn on the native frame, in session order (or bool masks).
    factors : mapping of str to int, keyword-only
        Downsampling block size per dimension (for a downsampled ``movie``: the factors
        that made it; only ``"y"`` and ``"x"`` are then used). Default is
        ``{"time": 10, "y": 2, "x": 2}``.
    background_fraction : float, keyword-only
        Background pixels as a fraction of all pixels of the downsampled grid
        (see :func:`background_pixels`). Default is 0.10.
    seed : int, keyword-only
        Seed of the background draw. Default is 0.
    native_shape : tuple of int, keyword-only, optional
        ``(ny, nx)`` of the native frame, in pixels, when ``movie`` is already
        downsampled (of ``ny // fy`` x ``nx // fx`` pixels). Default is None: ``movie``
        is native.

    Returns
    -------
    xarray.Dataset
        Dask-backed when the movie is; compute it once to get both traces.

        - ``raw`` (roi, time), float32: coverage-weighted mean per ROI, as
          :func:`roi_means`;
        - ``background`` (time,), float32: mean of the background pixels;
        - coordinates ``roi`` (1 … n), ``roi_name``, ``time`` (of the
          downsampled movie), ``background_pixel`` (flat index on the
          downsampled grid, sorted) with ``background_y`` / ``background_x``
          (its row and column);
        - ``attrs``: the downsampled movie's (``downsample_factors``,
          ``dropped_<dim>``, source metadata) plus ``background_fraction``,
          ``background_fraction_of`` (``"all downsampled pixels"``),
          ``n_background_pixels``, ``seed`` and ``grid_shape``.

    Raises
    ------
    CalimInputError
        If a ROI is unusable or no pixel lies outside the ROIs.
    ValueError
        If ``movie``, ``factors``, ``background_fraction`` or ``seed`` is invalid, or a
        downsampled ``movie`` does not have the grid size that ``native_shape`` and
        ``factors`` give.

    Warns
    -----
    CalimWarning
        When downsampling drops a partial block, or fewer pixels lie outside
        the ROIs than requested.
    """
    if native_shape is None:
        movie_ds = _downsampled(movie, factors)
        return _extract(movie_ds, rois, (movie.sizes["y"], movie.sizes["x"]), factors,
                        background_fraction, seed)
    movie_ds = _check_movie(movie, "movie")
    ny, nx = _check_grid_shape(native_shape, "native_shape")
    gf = _grid_factors(factors)
    grid = (ny // gf["y"], nx // gf["x"])
    if (movie_ds.sizes["y"], movie_ds.sizes["x"]) != grid:
        raise ValueError(
            f"movie is {movie_ds.sizes['y']} x {movie_ds.sizes['x']} pixels; native_shape "
            f"{ny} x {nx} downsampled by factors {gf} gives {grid[0]} x {grid[1]}")
    return _extract(movie_ds, rois, (ny, nx), factors, background_fraction, seed)


def _extract(movie_ds: xr.DataArray, rois: Sequence[Any], native_shape: tuple[int, int],
             factors: Mapping[str, int], background_fraction: float, seed: int) -> xr.Dataset:
    ny, nx = movie_ds.sizes["y"], movie_ds.sizes["x"]
    w_roi = roi_weights(rois, native_shape, factors=factors)
    pixels = background_pixels(w_roi, (ny, nx), fraction=background_fraction, seed=seed)
    stacked = sp.vstack([w_roi, _pixel_row(pixels, ny * nx)], format="csr")
    rows = _apply_rows(movie_ds, stacked, "row")
    n = w_roi.shape[0]
    raw = _label_rois(rows.isel(row=slice(0, n)).rename(row="roi"), rois)
    background = rows.isel(row=n, drop=True)
    raw.attrs = {"long_name": "coverage-weighted ROI mean"}
    background.attrs = {"long_name": "mean of the background pixels"}
    attrs = dict(movie_ds.attrs)
    attrs.update(
        background_fraction=float(background_fraction),
        background_fraction_of="all downsampled pixels",
        n_background_pixels=int(pixels.size),
        seed=int(seed),
        grid_shape=[int(ny), int(nx)],
    )
    return xr.Dataset(
        {"raw": raw.drop_vars("row", errors="ignore"),
         "background": background.drop_vars("row", errors="ignore")},
        coords={
            "background_pixel": ("background_pixel", pixels),
            "background_y": ("background_pixel", pixels // nx),
            "background_x": ("background_pixel", pixels % nx),
        },
        attrs=attrs,
    )
