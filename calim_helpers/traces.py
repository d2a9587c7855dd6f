"""ROI and background traces from a movie: SPEC §2 steps 3 and 4.

Every ROI becomes one row of a sparse ``(roi, pixel)`` weight matrix on the
downsampled grid: its coverage weights (the fraction of each downsampling
block's native pixels inside the ROI, :func:`calim_helpers.rois.coverage_weights`)
normalized to sum 1. A trace is then that matrix times each frame, computed
lazily chunk by chunk of the downsampled movie: one pass over the movie for all
ROIs, no loop over ROIs. The background trace is one more row (equal weights on
pixels drawn at random outside every ROI), so :func:`extract_traces` gets the
ROI traces and the background from the same pass. The optional neuropil correction
(SPEC §4, ``neuropil_method="annulus"``) adds one row per ROI, the mean of a ring
around it outside every ROI (:func:`neuropil_rings`), to that same matrix;
:func:`background_subtracted` turns the traces into the ``signal`` of SPEC §2 step 5.

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
from scipy import ndimage

from calim_helpers._checks import check_int, check_number, check_spacing
from calim_helpers.demix import demix_traces
from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.rois import coverage_weights, rasterize

__all__ = [
    "NEUROPIL_METHODS",
    "background_pixels",
    "background_subtracted",
    "background_trace",
    "extract_traces",
    "fit_neuropil_coefficient",
    "neuropil_rings",
    "roi_means",
    "roi_weights",
    "saturated_pixels",
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


# ------------------------------------------------------------------ saturation


def saturated_pixels(
    mip: np.ndarray,
    labels: np.ndarray,
    /,
    *,
    saturation: float,
    tolerance: float = 0.5,
    n_rois: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Count, per ROI, the pixels whose maximum-intensity projection reaches saturation.

    A pixel counts when ``mip >= saturation - tolerance``. ``saturation`` is the
    camera's largest value, ``2 ** bits - 1`` (4095 for a 12-bit camera, 65535 for a
    16-bit one, whatever the dtype that stores it), the value it writes for every
    photon count above its range: there the recorded intensity, and the ROI's ΔF/F,
    is clipped.

    The default tolerance of 0.5 keeps the count exact on a MIP taken after motion
    correction. An unsaturated pixel of an integer recording is at most
    ``saturation - 1``; resampling a saturated neighbourhood returns ``saturation``
    up to float32 rounding (the interpolation weights sum to 1: about 0.01 at 65535),
    and Keys' cubic kernel overshoots *above* it at the border of a saturated patch.
    What resampling can hide is a saturated structure narrower than the kernel
    (4 x 4 pixels for cubic): a single saturated pixel shifted by a fraction of a
    pixel in every frame is blurred below the threshold, as is any saturation after
    a spatial or temporal denoising. The count is then a lower bound.

    Parameters
    ----------
    mip : numpy.ndarray, shape (ny, nx)
        Maximum-intensity projection over time, any real dtype (the recording's, or
        float32 after motion correction). NaN never counts.
    labels : numpy.ndarray of int, shape (ny, nx)
        ROI label image: 0 is background, ``k`` the ``k``-th ROI (as
        :func:`calim_helpers.rois.label_image` draws it).
    saturation : float, keyword-only
        The recording's saturation value, e.g. ``np.iinfo(np.uint16).max``.
    tolerance : float, keyword-only, optional
        How far below ``saturation`` a pixel still counts, >= 0. Default is 0.5.
    n_rois : int, keyword-only, optional
        Number of ROIs (labels ``1 … n_rois``); ROIs with no pixel in ``labels``
        (covered by later ROIs) get 0 of 0. Default is None: ``labels.max()``.

    Returns
    -------
    saturated : numpy.ndarray of int64, shape (n_rois,)
        Saturated pixels of ROI ``k`` at index ``k - 1``.
    n_pixels : numpy.ndarray of int64, shape (n_rois,)
        Pixels of ROI ``k`` in ``labels``, at index ``k - 1``.

    Raises
    ------
    ValueError
        If the shapes differ, ``labels`` is not a non-negative integer image, a
        label exceeds ``n_rois`` or a scalar is out of range.

    Examples
    --------
    >>> mip = np.array([[65535, 65535, 100], [65534.8, 65534, 65535]], np.float32)
    >>> labels = np.array([[1, 1, 1], [2, 2, 0]])
    >>> saturated_pixels(mip, labels, saturation=65535)
    (array([2, 1]), array([3, 2]))
    """
    mip = np.asarray(mip)
    labels = np.asarray(labels)
    if mip.ndim != 2 or mip.shape != labels.shape:
        raise ValueError(f"mip and labels must be 2-D images of one shape, got {mip.shape} "
                         f"and {labels.shape}")
    if not np.issubdtype(mip.dtype, np.number) or np.issubdtype(mip.dtype, np.complexfloating):
        raise ValueError(f"mip must hold real numbers, got dtype {mip.dtype}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError("labels must be an integer image with 0 for background and k >= 1 "
                         "for the k-th ROI")
    if isinstance(saturation, bool) or not isinstance(saturation, int | float | np.number) \
            or not np.isfinite(saturation):
        raise ValueError(f"saturation must be a finite number, got {saturation!r}")
    tolerance = check_number("tolerance", tolerance, low=0.0, strict=False)
    top = int(labels.max()) if labels.size else 0
    n = top if n_rois is None else check_int("n_rois", n_rois, low=0)
    if top > n:
        raise ValueError(f"labels holds ROI {top} but n_rois is {n}")
    flat = labels.ravel()
    hit = mip.ravel() >= float(saturation) - tolerance
    saturated = np.bincount(flat[hit], minlength=n + 1)[1:].astype(np.int64)
    n_pixels = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    return saturated, n_pixels


# ------------------------------------------------------------------ background


def background_pixels(
    weights_or_masks: Any,
    grid_shape: tuple[int, int],
    /,
    *,
    fraction: float = 0.10,
    seed: int = 0,
    names: Sequence[str] | None = None,
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
    names : sequence of str, keyword-only, optional
        The ROI names, one per row of ``weights_or_masks``, for the error raised when
        no pixel lies outside the ROIs. Default is None: ROIs named by number only.

    Returns
    -------
    numpy.ndarray of int64, shape (n_background,)
        Sorted, distinct flat indices ``row * nx + col`` on the downsampled grid.

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1] or selects no pixel, ``seed`` is not a
        non-negative integer, the weights do not match ``grid_shape``, or ``names``
        does not give one name per ROI.
    CalimInputError
        If no pixel lies outside the ROIs. The message names the ROIs that cover
        more than half of the grid (else the one that covers most), with the number
        of grid pixels each covers (ROI ``k`` is row ``k - 1``).

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
    if names is not None and len(names) != w.shape[0]:
        raise ValueError(f"names must give one name per ROI ({w.shape[0]}), got {len(names)}")
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
            f"no pixel of the {ny} x {nx} grid lies outside the ROIs: no background. "
            f"{_largest_rois(w, names)}")
    if outside.size < n_want:
        warnings.warn(
            f"background: only {outside.size} pixels lie outside the ROIs, fewer than the "
            f"{n_want} requested (fraction {fraction} of {n_pixels}); using all of them",
            CalimWarning, stacklevel=2)
        n_want = outside.size
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(outside, size=n_want, replace=False)).astype(np.int64)


def _largest_rois(w: sp.csr_matrix, names: Sequence[str] | None) -> str:
    """Which ROIs (rows of ``w``) cover more than half of the grid, else the largest one."""
    cover = w.tocsr(copy=True)
    cover.sum_duplicates()
    cover.eliminate_zeros()
    counts = np.diff(cover.indptr)
    n_pixels = w.shape[1]
    big = np.flatnonzero(2 * counts > n_pixels)
    if big.size == 0:
        big = np.array([int(np.argmax(counts))])
    parts = []
    for i in big[np.argsort(-counts[big], kind="stable")]:
        label = f"ROI {i + 1}" if names is None else f"ROI {i + 1} ({str(names[i])!r})"
        parts.append(f"{label} covers {counts[i]} of the {n_pixels} grid pixels "
                     f"({100 * counts[i] / n_pixels:.1f} %)")
    return "; ".join(parts)


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


# -------------------------------------------------------------------- neuropil

NEUROPIL_METHODS = ("none", "annulus", "fitted", "demix")

# Soma diameter assumed when the pixel size is unknown (the default of
# ``detection.diameter_um``; the lab's somata are 10-15 µm across).
_ASSUMED_ROI_DIAMETER_UM = 12.0


def _check_neuropil(method: Any, coefficient: Any, inner_um: Any, width_um: Any,
                    min_pixels: Any) -> None:
    if method not in NEUROPIL_METHODS:
        raise ValueError(f"neuropil_method must be one of {NEUROPIL_METHODS}, got {method!r}")
    for name, value, lo_ok in (("neuropil_coefficient", coefficient, True),
                               ("neuropil_inner_um", inner_um, True),
                               ("neuropil_width_um", width_um, False)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                     | np.floating) \
                or not np.isfinite(value) or value < 0 or (value == 0 and not lo_ok):
            raise ValueError(f"{name} must be a finite number {'>=' if lo_ok else '>'} 0, "
                             f"got {value!r}")
    if coefficient > 1:
        raise ValueError(f"neuropil_coefficient must be in [0, 1], got {coefficient!r}")
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int | np.integer) \
            or min_pixels < 1:
        raise ValueError(f"neuropil_min_pixels must be an integer >= 1, got {min_pixels!r}")


def _check_fit(quiet_fraction: Any, degree: Any,
               names: tuple[str, str] = ("neuropil_quiet_fraction", "neuropil_fit_degree")
               ) -> None:
    real = int | float | np.integer | np.floating
    if isinstance(quiet_fraction, bool) or not isinstance(quiet_fraction, real) \
            or not 0 < quiet_fraction <= 1:
        raise ValueError(f"{names[0]} must be in (0, 1], got {quiet_fraction!r}")
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer) or degree < 0:
        raise ValueError(f"{names[1]} must be an integer >= 0, got {degree!r}")


def neuropil_rings(
    weights_or_masks: Any,
    grid_shape: tuple[int, int],
    /,
    *,
    spacing_um: tuple[float, float] = (1.0, 1.0),
    inner_um: float = 2.0,
    width_um: float = 10.0,
    min_pixels: int = 1,
) -> tuple[sp.csr_matrix, dict[str, np.ndarray]]:
    """Neuropil ring (annulus) of each ROI on the grid, excluding every ROI.

    A ROI's *footprint* is the set of grid pixels with a non-zero weight (any
    native pixel of the block inside the ROI, as for :func:`background_pixels`).
    Distances are Euclidean, between pixel centres, in µm, to the nearest
    footprint pixel. The ring of ROI ``k`` holds the grid pixels ``p`` with

    - ``distance(p, footprint k) <= inner_um + width_um`` (the outer edge), and
    - ``distance(p, every footprint) > inner_um``: outside all ROIs dilated by the
      gap ``inner_um`` (its own ROI included, so ``inner_um`` is the gap between
      the ROI's edge and the ring).

    A ring with fewer than ``min_pixels`` pixels (a ROI crowded by others, or at
    a frame corner) is widened: its outer edge moves out by ``width_um`` at a time
    until it holds ``min_pixels`` pixels or every allowed pixel of the frame.
    A ROI for which no pixel of the frame is allowed gets an empty row.

    Parameters
    ----------
    weights_or_masks : scipy.sparse matrix or array_like
        The ROIs on the grid, as for :func:`background_pixels`: the
        ``(n_roi, ny * nx)`` matrix of :func:`roi_weights`, or an array
        ``(n_roi, ny * nx)`` or ``(n_roi, ny, nx)`` of weights or bool masks.
    grid_shape : tuple of int
        ``(ny, nx)`` of the grid, in pixels.
    spacing_um : tuple of float, keyword-only
        ``(dy, dx)``: distance between the centres of neighbouring grid pixels
        along y and x, in µm (the native pixel size times the downsampling
        factor). Default is (1.0, 1.0): distances in grid pixels.
    inner_um : float, keyword-only
        Gap between the ROIs and the ring, µm, >= 0. Default is 2.0.
    width_um : float, keyword-only
        Ring width, µm, > 0; also the step of a widening. Default is 10.0.
    min_pixels : int, keyword-only
        Fewest ring pixels before the ring is widened, >= 1. Default is 1
        (widen only empty rings).

    Returns
    -------
    rings : scipy.sparse.csr_matrix of float64, shape (n_roi, ny * nx)
        Row ``k`` has equal weights summing to 1 on ROI ``k + 1``'s ring
        (all zero when the ring is empty).
    info : dict of str to numpy.ndarray, each of shape (n_roi,)
        ``"n_pixels"`` (int64): pixels in the ring; ``"outer_um"`` (float64):
        distance of the ring's outer edge from the ROI, µm (``inner_um +
        width_um`` unless widened); ``"widened"`` (bool).

    Raises
    ------
    ValueError
        If the weights do not match ``grid_shape``, or ``spacing_um``,
        ``inner_um``, ``width_um`` or ``min_pixels`` is invalid.

    Examples
    --------
    A one-pixel ROI in the middle of a 7 x 7 grid and another in a corner, 1 µm
    pixels, a gap of 1 µm and a 1 µm wide ring: a ring holds the pixels at
    distances in (1, 2] µm, the 4 diagonal neighbours (1.41 µm) and the 4 pixels
    2 µm away along the axes; the frame's corner cuts the second ring to 3.

    >>> import numpy as np
    >>> m = np.zeros((2, 7, 7), bool); m[0, 3, 3] = True; m[1, 0, 0] = True
    >>> rings, info = neuropil_rings(m, (7, 7), inner_um=1.0, width_um=1.0)
    >>> print((rings[0].toarray().reshape(7, 7) > 0).astype(int))
    [[0 0 0 0 0 0 0]
     [0 0 0 1 0 0 0]
     [0 0 1 0 1 0 0]
     [0 1 0 0 0 1 0]
     [0 0 1 0 1 0 0]
     [0 0 0 1 0 0 0]
     [0 0 0 0 0 0 0]]
    >>> info["n_pixels"].tolist(), info["widened"].tolist()
    ([8, 3], [False, False])
    """
    ny, nx = _check_grid_shape(grid_shape, "grid_shape")
    dy, dx = check_spacing(spacing_um)
    _check_neuropil("annulus", 0.0, inner_um, width_um, min_pixels)
    w = _as_weight_rows(weights_or_masks, ny * nx)
    w.eliminate_zeros()
    w.sort_indices()
    n = w.shape[0]
    inside = np.zeros(ny * nx, dtype=bool)
    inside[w.indices] = True
    # outside every ROI dilated by the gap: distance to the union > inner_um
    allowed = ndimage.distance_transform_edt(~inside.reshape(ny, nx), sampling=(dy, dx)) \
        > inner_um
    n_allowed = int(allowed.sum())
    indptr, indices = [0], []
    n_pixels = np.zeros(n, dtype=np.int64)
    outer_um = np.zeros(n, dtype=np.float64)
    for k in range(n):
        rows, cols = np.divmod(w.indices[w.indptr[k]:w.indptr[k + 1]], nx)
        outer = float(inner_um) + float(width_um)
        flat = np.zeros(0, dtype=np.int64)
        while rows.size:
            # the crop holds the footprint and every pixel within `outer` of it,
            # so the distance transform of the crop is exact there
            my, mx = int(np.ceil(outer / dy)) + 1, int(np.ceil(outer / dx)) + 1
            y0, y1 = max(rows.min() - my, 0), min(rows.max() + my + 1, ny)
            x0, x1 = max(cols.min() - mx, 0), min(cols.max() + mx + 1, nx)
            not_roi = np.ones((y1 - y0, x1 - x0), dtype=bool)
            not_roi[rows - y0, cols - x0] = False
            near = ndimage.distance_transform_edt(not_roi, sampling=(dy, dx)) <= outer
            ring = near & allowed[y0:y1, x0:x1]
            count = int(ring.sum())
            if count >= min_pixels or count == n_allowed:  # ends: the crop grows to all
                ry, rx = np.nonzero(ring)
                flat = ((ry + y0) * nx + (rx + x0)).astype(np.int64)  # row-major: sorted
                break
            outer += float(width_um)
        indices.append(flat)
        indptr.append(indptr[-1] + flat.size)
        n_pixels[k] = flat.size
        outer_um[k] = outer
    data = np.concatenate([np.full(i.size, 1.0 / max(i.size, 1)) for i in indices])
    rings = sp.csr_matrix((data, np.concatenate(indices), np.asarray(indptr)),
                          shape=(n, ny * nx))
    widened = outer_um > float(inner_um) + float(width_um) + 1e-9
    return rings, {"n_pixels": n_pixels, "outer_um": outer_um, "widened": widened}


def _pixel_size(pixel_size_um: float | None, attrs: Mapping[str, Any], w_roi: sp.csr_matrix,
                gf: Mapping[str, int]) -> tuple[float, str]:
    """Native pixel size in µm for the ring geometry, and where it comes from."""
    if pixel_size_um is not None:
        if isinstance(pixel_size_um, bool) or not isinstance(
                pixel_size_um, int | float | np.integer | np.floating) \
                or not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
            raise ValueError(f"pixel_size_um must be a finite number > 0 or None, "
                             f"got {pixel_size_um!r}")
        return float(pixel_size_um), "argument"
    v = attrs.get("pixel_size_um")
    try:
        v = float(v)
    except (TypeError, ValueError):
        v = float("nan")
    if np.isfinite(v) and v > 0:
        return v, "movie attrs"
    # unknown: take the median ROI's equivalent diameter (from its footprint on
    # the grid, in native pixels) as a typical soma's
    area_px = np.diff(w_roi.indptr) * gf["y"] * gf["x"]
    area_px = area_px[area_px > 0]  # ROIs that reach the grid
    if not area_px.size:
        raise ValueError("pixel_size_um is unknown and no ROI covers a pixel of the movie "
                         "to guess it from; pass pixel_size_um")
    diameter_px = float(np.median(2.0 * np.sqrt(area_px / np.pi)))
    size = _ASSUMED_ROI_DIAMETER_UM / diameter_px
    warnings.warn(
        f"neuropil: pixel size unknown (no pixel_size_um argument or movie attribute); "
        f"assuming the median ROI ({diameter_px:.1f} native px across) is "
        f"{_ASSUMED_ROI_DIAMETER_UM:g} µm, i.e. {size:.3g} µm per native pixel, for the "
        f"ring geometry", CalimWarning, stacklevel=3)
    return size, f"assumed: median ROI diameter {_ASSUMED_ROI_DIAMETER_UM:g} µm"


def fit_neuropil_coefficient(
    signal: Any,
    neuropil: Any,
    /,
    *,
    quiet_fraction: float = 0.5,
    degree: int = 3,
    max_iter: int = 20,
    fallback: float = 0.7,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit each ROI's neuropil coefficient on its quiet frames, robustly.

    Model, per ROI: ``signal(t) = c * neuropil(t) + trend(t) + cell(t) + noise``,
    with ``trend`` a polynomial of degree ``degree`` in time (bleaching, drift) and
    ``cell`` the ROI's own activity: positive transients, partly at the same time as
    neuropil activity. Starting from the least-squares fit of ``c`` and the trend on
    every frame, they are refitted on the frames whose residual ``signal - c *
    neuropil - trend`` is among the lowest ``quiet_fraction`` of the ROI's -- the
    frames where the cell is quiet -- until the selection no longer changes or
    ``max_iter`` refits. On frames chosen by the residual alone the true
    coefficient is a fixed point, whereas a fit on every frame is pulled up by the
    cell's transients that come with neuropil activity. ``c`` is then clipped to
    [0, 1], the domain of the formula of :func:`background_subtracted`.

    Parameters
    ----------
    signal : array_like, shape (n_roi, n_time) or (n_time,)
        ``raw - background`` per ROI, in the movie's units.
    neuropil : array_like, same shape as ``signal``
        ``neuropil - background`` per ROI (the ring's contamination), same units.
    quiet_fraction : float, keyword-only
        Fraction of the frames, in (0, 1], on which ``c`` is fitted (1 = ordinary
        least squares on every frame). Default is 0.5.
    degree : int, keyword-only
        Degree (>= 0) of the polynomial trend fitted with ``c`` (Legendre basis
        over the session). Default is 3.
    max_iter : int, keyword-only
        Most refits on the quiet frames, >= 0. Default is 20.
    fallback : float, keyword-only
        Coefficient in [0, 1] of a ROI whose fit is undefined (fewer frames than
        ``degree + 3``, a neuropil that the trend explains exactly on the quiet
        frames, or a non-finite value). Default is 0.7.

    Returns
    -------
    coefficient : numpy.ndarray of float64, shape (n_roi,) (or a 0-d array for 1-D input)
        The fitted ``c`` in [0, 1].
    info : dict of str to numpy.ndarray, each of shape (n_roi,)
        ``"unclipped"`` (float64): the fit before clipping (NaN where undefined);
        ``"status"`` (str): ``"fitted"``, ``"clipped"`` (outside [0, 1]) or
        ``"fallback"``; ``"n_iter"`` (int64): refits done; ``"converged"`` (bool:
        the quiet frames stopped changing).

    Raises
    ------
    ValueError
        If the shapes differ or are not 1-D / 2-D, or a parameter is invalid.

    References
    ----------
    Kerlin, A. M. et al. (2010). Broadly tuned response properties of diverse
    inhibitory neuron subtypes in mouse visual cortex. *Neuron* 67, 858-871
    (neuropil coefficient fitted per cell where the cell is quiet).

    Examples
    --------
    A ROI that sees 0.8 x the neuropil plus transients that come with neuropil
    events: the fit on every frame is pulled up to the clip, the quiet-frame fit
    is not.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> npil = rng.normal(0, 1, 2000)
    >>> cell = np.where(rng.random(2000) < 0.2, 3.0 + npil, 0.0)
    >>> sig = 0.8 * npil + cell + rng.normal(0, 0.1, 2000)
    >>> c_all, _ = fit_neuropil_coefficient(sig, npil, quiet_fraction=1.0)
    >>> c, info = fit_neuropil_coefficient(sig, npil)
    >>> float(c_all), round(float(c), 2), str(info["status"])
    (1.0, 0.81, 'fitted')
    """
    y = np.asarray(signal, dtype=np.float64)
    x = np.asarray(neuropil, dtype=np.float64)
    if y.shape != x.shape or y.ndim not in (1, 2):
        raise ValueError(f"signal and neuropil must have one shape (n_roi, n_time) or "
                         f"(n_time,), got {y.shape} and {x.shape}")
    _check_fit(quiet_fraction, degree, ("quiet_fraction", "degree"))
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) \
            or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if isinstance(fallback, bool) or not isinstance(
            fallback, int | float | np.integer | np.floating) or not 0 <= fallback <= 1:
        raise ValueError(f"fallback must be in [0, 1], got {fallback!r}")
    one = y.ndim == 1
    y, x = np.atleast_2d(y), np.atleast_2d(x)
    n_roi, n_time = y.shape
    n_quiet = int(np.ceil(quiet_fraction * n_time))
    trend = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n_time), int(degree))
    c = np.full(n_roi, np.nan)
    n_iter = np.zeros(n_roi, dtype=np.int64)
    converged = np.zeros(n_roi, dtype=bool)
    n_par = int(degree) + 2
    for k in range(n_roi):
        if n_quiet < n_par + 1 or not (np.isfinite(y[k]).all() and np.isfinite(x[k]).all()):
            continue
        design = np.column_stack([x[k], trend])
        quiet = np.ones(n_time, dtype=bool)
        for it in range(int(max_iter) + 1):
            beta, _, rank, _ = np.linalg.lstsq(design[quiet], y[k, quiet], rcond=None)
            if rank < n_par:
                beta[0] = np.nan
                break
            if it == int(max_iter):
                break
            resid = y[k] - design @ beta
            new = np.zeros(n_time, dtype=bool)
            new[np.argsort(resid, kind="stable")[:n_quiet]] = True
            n_iter[k] += 1
            if np.array_equal(new, quiet):
                converged[k] = True
                break
            quiet = new
        c[k] = beta[0]
    ok = np.isfinite(c)
    unclipped = np.where(ok, c, np.nan)
    coef = np.where(ok, np.clip(np.nan_to_num(c), 0.0, 1.0), float(fallback))
    status = np.where(~ok, "fallback", np.where(coef != unclipped, "clipped", "fitted"))
    info = {"unclipped": unclipped, "status": status.astype(str), "n_iter": n_iter,
            "converged": converged}
    if one:
        return coef[0], {key: v[0] for key, v in info.items()}
    return coef, info


def background_subtracted(traces: xr.Dataset, /) -> xr.DataArray:
    """Return the background- (and neuropil-) subtracted ``signal`` of SPEC §2 step 5.

    Without a ``neuropil`` variable (``neuropil_method="none"``)::

        signal = raw - background

    With one (``"annulus"``), ``c`` = attribute ``neuropil_coefficient``::

        signal = (raw - background) - c * (neuropil - background)
               = raw - c * neuropil - (1 - c) * background

    With attribute ``neuropil_method = "demix"`` the ``neuropil`` is the model's light
    of everything but the ROI's cell (background included), so ``signal = raw -
    neuropil``.

    With attribute ``neuropil_method = "fitted"``, ``c`` is one coefficient per ROI,
    :func:`fit_neuropil_coefficient` of ``raw - background`` on ``neuropil -
    background`` (with the attributes ``neuropil_quiet_fraction`` and
    ``neuropil_fit_degree``, and ``neuropil_coefficient`` as the fallback), returned as
    the coordinates ``neuropil_coefficient`` and ``neuropil_fit_status`` (roi) of
    the result.

    The subtracted estimate is a weighted mean of the local ring and the global
    background with weights summing to 1, so what is the same in every pixel
    (camera offset, additive drift) is removed once, as by the lab's method;
    ``c = 0`` is the lab's method exactly, ``c = 1`` subtracts the ring alone.

    Parameters
    ----------
    traces : xarray.Dataset
        From :func:`extract_traces`: ``raw`` (roi, time), ``background`` (time)
        and, optionally, ``neuropil`` (roi, time) with attribute
        ``neuropil_coefficient``.

    Returns
    -------
    xarray.DataArray of float64, dims (roi, time)
        The signal, in the movie's units (computed in float64 from the float32
        traces, as :func:`calim_helpers.correction.correct_traces` does). For
        ``"fitted"`` the traces are computed (the fit needs every frame) and the
        result has the coordinates ``neuropil_coefficient`` (float64) and
        ``neuropil_fit_status`` (str) along ``roi``.

    Raises
    ------
    ValueError
        If ``raw`` or ``background`` is missing, or ``neuropil`` is there without a
        coefficient in [0, 1].
    """
    for name in ("raw", "background"):
        if name not in traces:
            raise ValueError(f"traces has no {name!r} variable")
    raw = traces["raw"].transpose("roi", "time").astype(np.float64)
    bg = traces["background"].astype(np.float64)
    signal = raw - bg
    if "neuropil" not in traces:
        return signal
    c = traces.attrs.get("neuropil_coefficient")
    if isinstance(c, bool) or not isinstance(c, int | float | np.integer | np.floating) \
            or not 0 <= c <= 1:
        raise ValueError(f"traces.attrs['neuropil_coefficient'] must be in [0, 1], got {c!r}")
    neuropil = traces["neuropil"].transpose("roi", "time").astype(np.float64)
    if traces.attrs.get("neuropil_method") == "demix":
        return raw - neuropil
    if traces.attrs.get("neuropil_method") != "fitted":
        return signal - float(c) * (neuropil - bg)
    contamination = neuropil - bg
    coef, info = fit_neuropil_coefficient(
        signal.values, contamination.values,
        quiet_fraction=traces.attrs.get("neuropil_quiet_fraction", 0.5),
        degree=int(traces.attrs.get("neuropil_fit_degree", 3)), fallback=float(c))
    out = signal - xr.DataArray(coef, dims="roi") * contamination
    return out.assign_coords(neuropil_coefficient=("roi", coef),
                             neuropil_fit_status=("roi", info["status"]))


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
    neuropil_method: str = "none",
    neuropil_coefficient: float = 0.7,
    neuropil_inner_um: float = 2.0,
    neuropil_width_um: float = 10.0,
    neuropil_min_pixels: int = 50,
    pixel_size_um: float | None = None,
    neuropil_quiet_fraction: float = 0.5,
    neuropil_fit_degree: int = 3,
    neuropil_demix_dilation_um: float = 3.0,
    neuropil_demix_surround_um: float = 3.0,
    neuropil_demix_n_iter: int = 2,
) -> xr.Dataset:
    """ROI traces, the background trace and optionally the neuropil, in one lazy pass.

    The one entry point for traces. Downsamples the movie
    (:func:`calim_helpers.downsample.downsample`) unless it is already downsampled
    (``native_shape`` given), builds the ROI weights (:func:`roi_weights`; ROIs are
    always rasterized on the native frame), draws the background pixels
    (:func:`background_pixels`) and multiplies the stacked ``(n_roi + 1, pixel)``
    weight matrix with every downsampled frame. With ``neuropil_method="annulus"``
    (an option beyond the lab's method, SPEC §4) the matrix has ``n_roi`` more
    rows, each ROI's neuropil ring (:func:`neuropil_rings`), so the neuropil comes
    from the same pass; :func:`background_subtracted` then gives the corrected
    ``signal = raw - c * neuropil - (1 - c) * background``.

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
    neuropil_method : {"none", "annulus", "fitted", "demix"}, keyword-only
        ``"none"``: the lab's method, no neuropil (the result is exactly that of
        the function before the option existed: no ``neuropil`` variable, no
        neuropil attribute). ``"annulus"``: also the mean of a ring around each
        ROI that excludes every ROI (as Suite2p does), subtracted with the one
        ``neuropil_coefficient``. ``"fitted"``: the same ring, subtracted with a
        coefficient fitted per ROI on its quiet frames
        (:func:`fit_neuropil_coefficient`, done by :func:`background_subtracted`).
        ``"demix"``: ``neuropil`` is the light inside each ROI of everything but its
        own cell (the other ROIs' footprints and the local background), from a
        demixing model of the downsampled movie
        (:func:`calim_helpers.demix.demix_traces`); ``signal = raw - neuropil``.
        Default is ``"none"``.
    neuropil_coefficient : float, keyword-only
        ``c`` in [0, 1], the weight of the ring in the subtracted contamination
        (see :func:`background_subtracted`); with ``"fitted"``, the coefficient of
        a ROI whose fit is undefined. Recorded in ``attrs``. Default is 0.7
        (Suite2p's ``neucoeff``; Chen et al. 2013 used r = 0.7).
    neuropil_inner_um : float, keyword-only
        Gap between every ROI and the ring, µm, >= 0. Default is 2.0 (Suite2p's
        ``inner_neuropil_radius`` of 2 pixels, at about 1 µm per pixel).
    neuropil_width_um : float, keyword-only
        Ring width, µm, > 0. Default is 10.0 (a ring reaching ~12 µm beyond a
        12 µm soma, i.e. ~18 µm from its centre, close to the 20 µm radius of
        Chen et al. 2013).
    neuropil_min_pixels : int, keyword-only
        A ring with fewer grid pixels is widened by ``neuropil_width_um`` at a time
        (:func:`neuropil_rings`). Default is 50 (about half a 12 µm soma's footprint
        on the 2 x 2 grid at 0.65 µm per pixel, so that the ring's noise, scaled by
        ``c``, stays below the ROI's own).
    pixel_size_um : float, keyword-only, optional
        Native pixel size, µm, for the ring geometry. Default is None: the movie's
        ``attrs["pixel_size_um"]`` (as :func:`calim_helpers.io.open_movie` sets
        it); when that is missing or NaN, the median ROI is taken to be 12 µm
        across, with a CalimWarning. Not used with ``neuropil_method="none"``.
    neuropil_quiet_fraction : float, keyword-only
        With ``"fitted"``: fraction of the frames, in (0, 1], on which each ROI's
        coefficient is fitted (:func:`fit_neuropil_coefficient`); recorded in
        ``attrs``. Default is 0.5.
    neuropil_fit_degree : int, keyword-only
        With ``"fitted"``: degree (>= 0) of the polynomial trend over the session
        (bleaching, drift) fitted with each coefficient. Recorded in ``attrs``.
        Default is 3.
    neuropil_demix_dilation_um : float, keyword-only
        With ``"demix"``: how far a cell's footprint may reach beyond its ROI, µm
        (``dilation_um`` of :func:`calim_helpers.demix.demix_traces`). Recorded in
        ``attrs``. Default is 3.0.
    neuropil_demix_surround_um : float, keyword-only
        With ``"demix"``: Gaussian radius of the background around a pixel, µm
        (``surround_um``). Recorded in ``attrs``. Default is 3.0.
    neuropil_demix_n_iter : int, keyword-only
        With ``"demix"``: alternations of footprints and traces (``n_iter``). Recorded
        in ``attrs``. Default is 2.

    Returns
    -------
    xarray.Dataset
        Dask-backed when the movie is; compute it once to get all traces.

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

        With ``neuropil_method="annulus"`` or ``"fitted"`` also:

        - ``neuropil`` (roi, time), float32: mean of the ROI's ring, or of the
          background pixels for a ROI without any ring pixel;
        - ``neuropil_pixels`` (roi, int64), ``neuropil_outer_um`` (roi, float64:
          outer edge of the ring from the ROI, µm) and ``neuropil_source`` (roi,
          str: ``"ring"``, ``"widened ring"`` or ``"background"``);
        - ``attrs`` ``neuropil_method``, ``neuropil_coefficient``,
          ``neuropil_inner_um``, ``neuropil_width_um``, ``neuropil_min_pixels``,
          ``neuropil_pixel_size_um``, ``neuropil_pixel_size_source``
          (``"argument"``, ``"movie attrs"`` or ``"assumed: ..."``) and
          ``neuropil_formula``; with ``"fitted"`` also ``neuropil_quiet_fraction``
          and ``neuropil_fit_degree``.

        With ``neuropil_method="demix"`` instead: ``neuropil`` (roi, time), float32,
        the model's light of everything but the ROI's cell inside the ROI (computed
        from the whole downsampled movie at once); ``attrs`` ``neuropil_method``,
        ``neuropil_coefficient`` (1.0), ``neuropil_pixel_size_um``,
        ``neuropil_pixel_size_source``, ``neuropil_demix_dilation_um``,
        ``neuropil_demix_surround_um``, ``neuropil_demix_n_iter`` and
        ``neuropil_formula``.

    Raises
    ------
    CalimInputError
        If a ROI is unusable or no pixel lies outside the ROIs.
    ValueError
        If ``movie``, ``factors``, ``background_fraction``, ``seed`` or a neuropil
        parameter is invalid, or a downsampled ``movie`` does not have the grid
        size that ``native_shape`` and ``factors`` give.

    Warns
    -----
    CalimWarning
        When downsampling drops a partial block, or fewer pixels lie outside
        the ROIs than requested; with the annulus, when the pixel size is
        unknown, or rings had to be widened or replaced by the background
        (naming the ROIs).

    References
    ----------
    Chen, T.-W. et al. (2013). Ultrasensitive fluorescent proteins for imaging
    neuronal activity. *Nature* 499, 295-300 (neuropil ring, r = 0.7).
    Pachitariu, M. et al. (2017). Suite2p: beyond 10,000 neurons with standard
    two-photon microscopy. *bioRxiv* 061507 (surround mask excluding cells,
    coefficient 0.7).
    """
    _check_neuropil(neuropil_method, neuropil_coefficient, neuropil_inner_um,
                    neuropil_width_um, neuropil_min_pixels)
    _check_fit(neuropil_quiet_fraction, neuropil_fit_degree)
    check_number("neuropil_demix_dilation_um", neuropil_demix_dilation_um, low=0.0,
                 strict=False)
    check_number("neuropil_demix_surround_um", neuropil_demix_surround_um, low=0.0,
                 strict=True)
    check_int("neuropil_demix_n_iter", neuropil_demix_n_iter, low=1)
    neuropil = {"method": neuropil_method, "coefficient": neuropil_coefficient,
                "inner_um": neuropil_inner_um, "width_um": neuropil_width_um,
                "min_pixels": neuropil_min_pixels, "pixel_size_um": pixel_size_um,
                "quiet_fraction": neuropil_quiet_fraction,
                "fit_degree": neuropil_fit_degree,
                "demix": {"dilation_um": neuropil_demix_dilation_um,
                          "surround_um": neuropil_demix_surround_um,
                          "n_iter": neuropil_demix_n_iter}}
    if native_shape is None:
        movie_ds = _downsampled(movie, factors)
        return _extract(movie_ds, rois, (movie.sizes["y"], movie.sizes["x"]), factors,
                        background_fraction, seed, neuropil)
    movie_ds = _check_movie(movie, "movie")
    ny, nx = _check_grid_shape(native_shape, "native_shape")
    gf = _grid_factors(factors)
    grid = (ny // gf["y"], nx // gf["x"])
    if (movie_ds.sizes["y"], movie_ds.sizes["x"]) != grid:
        raise ValueError(
            f"movie is {movie_ds.sizes['y']} x {movie_ds.sizes['x']} pixels; native_shape "
            f"{ny} x {nx} downsampled by factors {gf} gives {grid[0]} x {grid[1]}")
    return _extract(movie_ds, rois, (ny, nx), factors, background_fraction, seed, neuropil)


def _extract(movie_ds: xr.DataArray, rois: Sequence[Any], native_shape: tuple[int, int],
             factors: Mapping[str, int], background_fraction: float, seed: int,
             neuropil: Mapping[str, Any]) -> xr.Dataset:
    ny, nx = movie_ds.sizes["y"], movie_ds.sizes["x"]
    w_roi = roi_weights(rois, native_shape, factors=factors)
    pixels = background_pixels(w_roi, (ny, nx), fraction=background_fraction, seed=seed,
                               names=[_roi_name(r, k) for k, r in enumerate(rois, start=1)])
    bg_row = _pixel_row(pixels, ny * nx)
    blocks = [w_roi, bg_row]
    if neuropil["method"] not in ("none", "demix"):
        rings, ring_info, np_attrs = _rings(w_roi, rois, (ny, nx), factors, movie_ds.attrs,
                                            neuropil)
        blocks.append(rings)
        if not ring_info["n_pixels"].all():  # no ring pixel at all: the background instead
            rings = rings.tolil()
            for k in np.flatnonzero(ring_info["n_pixels"] == 0):
                rings[k] = bg_row
            blocks[-1] = rings.tocsr()
    stacked = sp.vstack(blocks, format="csr")
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
    out = xr.Dataset(
        {"raw": raw.drop_vars("row", errors="ignore"),
         "background": background.drop_vars("row", errors="ignore")},
        coords={
            "background_pixel": ("background_pixel", pixels),
            "background_y": ("background_pixel", pixels // nx),
            "background_x": ("background_pixel", pixels % nx),
        },
        attrs=attrs,
    )
    if neuropil["method"] == "demix":
        return _with_demix(out, movie_ds, w_roi, rois, factors, neuropil)
    if neuropil["method"] != "none":
        ring_rows = rows.isel(row=slice(n + 1, 2 * n + 1)).rename(row="roi")
        out["neuropil"] = ring_rows.drop_vars("row", errors="ignore").assign_coords(
            roi=raw["roi"], roi_name=raw["roi_name"])
        out["neuropil"].attrs = {
            "long_name": "mean of the neuropil ring around the ROI, outside every ROI"}
        source = np.where(ring_info["n_pixels"] == 0, "background",
                          np.where(ring_info["widened"], "widened ring", "ring"))
        out["neuropil_pixels"] = ("roi", ring_info["n_pixels"])
        out["neuropil_outer_um"] = ("roi", ring_info["outer_um"])
        out["neuropil_source"] = ("roi", source.astype(str))
        out.attrs.update(np_attrs)
    return out


def _demix_contamination(movie: np.ndarray, *, weights: sp.csr_matrix,
                         options: Mapping[str, Any]) -> np.ndarray:
    """:func:`calim_helpers.demix.demix_traces`'s contamination, (roi, time) float32."""
    _, contamination, _ = demix_traces(movie, weights, **options)
    return contamination.astype(np.float32)


def _with_demix(out: xr.Dataset, movie_ds: xr.DataArray, w_roi: sp.csr_matrix,
                rois: Sequence[Any], factors: Mapping[str, int],
                neuropil: Mapping[str, Any]) -> xr.Dataset:
    """Add the demixed ``neuropil`` (the light of everything but the ROI's cell) to ``out``."""
    gf = _grid_factors(factors)
    size, size_source = _pixel_size(neuropil["pixel_size_um"], movie_ds.attrs, w_roi, gf)
    options = dict(neuropil["demix"], spacing_um=(size * gf["y"], size * gf["x"]))
    if movie_ds.chunks is not None:  # the model needs the whole (small) downsampled movie
        movie_ds = movie_ds.chunk({"time": -1, "y": -1, "x": -1})
    contamination = xr.apply_ufunc(
        _demix_contamination, movie_ds,
        kwargs={"weights": w_roi, "options": options},
        input_core_dims=[["time", "y", "x"]], output_core_dims=[["roi", "time"]],
        dask="parallelized", output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"roi": w_roi.shape[0]}})
    out["neuropil"] = contamination.assign_coords(roi=out["raw"]["roi"],
                                                  roi_name=out["raw"]["roi_name"])
    out["neuropil"].attrs = {
        "long_name": "light inside the ROI of everything but its own cell (demixing model: "
                     "other ROIs' footprints and the local background)"}
    out.attrs.update(
        neuropil_method="demix", neuropil_coefficient=1.0,
        neuropil_pixel_size_um=float(size), neuropil_pixel_size_source=size_source,
        neuropil_demix_dilation_um=float(options["dilation_um"]),
        neuropil_demix_surround_um=float(options["surround_um"]),
        neuropil_demix_n_iter=int(options["n_iter"]),
        neuropil_formula="signal = raw - neuropil, neuropil = the ROI's weighted mean of "
                         "the other ROIs' footprints and the local background of a "
                         "demixing model (calim_helpers.demix.demix_traces)")
    return out


def _rings(w_roi: sp.csr_matrix, rois: Sequence[Any], grid: tuple[int, int],
           factors: Mapping[str, int], attrs: Mapping[str, Any], neuropil: Mapping[str, Any]
           ) -> tuple[sp.csr_matrix, dict[str, np.ndarray], dict[str, Any]]:
    """Build the ring rows, their info and the neuropil attributes; warn about bad rings."""
    gf = _grid_factors(factors)
    size, size_source = _pixel_size(neuropil["pixel_size_um"], attrs, w_roi, gf)
    rings, info = neuropil_rings(
        w_roi, grid, spacing_um=(size * gf["y"], size * gf["x"]),
        inner_um=float(neuropil["inner_um"]), width_um=float(neuropil["width_um"]),
        min_pixels=int(neuropil["min_pixels"]))
    names = [f"{k + 1} ({_roi_name(rois[k], k + 1)!r})" for k in range(len(rois))]
    empty = np.flatnonzero(info["n_pixels"] == 0)
    widened = np.flatnonzero(info["widened"] & (info["n_pixels"] > 0))
    if widened.size:
        warnings.warn(
            f"neuropil: the ring of {widened.size} ROI(s) held fewer than "
            f"{neuropil['min_pixels']} pixels and was widened: "
            + ", ".join(f"{names[k]} to {info['outer_um'][k]:.1f} µm"
                        f" ({info['n_pixels'][k]} px)" for k in widened),
            CalimWarning, stacklevel=4)
    if empty.size:
        warnings.warn(
            f"neuropil: no pixel of the frame lies {neuropil['inner_um']} µm away from every "
            f"ROI for ROI(s) " + ", ".join(names[k] for k in empty)
            + "; their neuropil is the background trace", CalimWarning, stacklevel=4)
    np_attrs = {
        "neuropil_method": neuropil["method"],
        "neuropil_coefficient": float(neuropil["coefficient"]),
        "neuropil_inner_um": float(neuropil["inner_um"]),
        "neuropil_width_um": float(neuropil["width_um"]),
        "neuropil_min_pixels": int(neuropil["min_pixels"]),
        "neuropil_pixel_size_um": float(size),
        "neuropil_pixel_size_source": size_source,
        "neuropil_formula": "signal = raw - c * neuropil - (1 - c) * background",
    }
    if neuropil["method"] == "fitted":
        np_attrs.update(
            neuropil_quiet_fraction=float(neuropil["quiet_fraction"]),
            neuropil_fit_degree=int(neuropil["fit_degree"]),
            neuropil_formula="signal = raw - c_k * neuropil - (1 - c_k) * background, c_k "
                             "fitted per ROI on its quiet frames (fit_neuropil_coefficient; "
                             "neuropil_coefficient where the fit is undefined)")
    return rings, info, np_attrs
