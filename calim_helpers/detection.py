"""Automatic soma detection and comparison of ROI sets (SPEC §4).

For sessions without expert ROIs, and to check expert ROIs, in four steps:

1. :func:`summary_images` -- mean, max, std, local-correlation and
   local-contrast images of the downsampled movie ``(time, y, x)``, computed
   block by block in one pass over time (nothing of the movie's size is held
   in float64).
2. :func:`detect_neurons` -- a label image on the same grid. By default
   (``method="morphology"``) somata are found by their shape in the mean
   image, firing or not: processes are removed by a grey opening, dark nuclei
   filled, the neuropil removed by a top-hat; seeds are scale-space blobs
   (Laplacian of Gaussian over the soma size range); a seeded watershed and
   a split at narrow necks separate touching cells; outlines are drawn at a
   fraction of each soma's peak; shape tests (size, solidity, elongation,
   ring contrast) reject neurites and out-of-focus cells, and a region failing
   them whole is split at its distance-transform cores (a cluster of touching
   cells) and its parts tested one by one; a second round, on
   the mean image minus a model of the somata found, finds dim cells next to
   or touching bright ones. ``method="correlation"`` finds active
   somata only, from the local correlation of the temporal differences.
3. :func:`labels_to_rois` -- Fiji polygon ROIs at native resolution, traced
   along pixel edges, so :func:`calim_helpers.rois.rasterize` gives back
   exactly the label's pixels (upsampled); write them with
   :func:`calim_helpers.rois.write_rois`.
4. :func:`match_rois` -- one-to-one matching of two ROI sets by IoU (Hungarian
   assignment): precision, recall and F1 of automatic against expert ROIs or
   true footprints.

Coordinate conventions are those of :mod:`calim_helpers.rois`: label images
are indexed ``[row, col]``; ROI vertices are Fiji ``(x, y)`` pixel-corner
coordinates, pixel ``(row, col)`` covering ``[col, col + 1) x [row, row + 1)``.

Examples
--------
Two bright squares in noise (32 frames of 24 x 24) are found; the first is
traced back to native pixels (2 x 2 larger):

>>> import numpy as np, xarray as xr
>>> from calim_helpers.rois import rasterize
>>> rng = np.random.default_rng(0)
>>> movie = rng.normal(100, 1, (32, 24, 24)).astype(np.float32)
>>> movie[:, 4:11, 4:11] += 5 * rng.standard_normal((32, 1, 1)).astype(np.float32) + 20
>>> movie[:, 13:20, 12:19] += 5 * rng.standard_normal((32, 1, 1)).astype(np.float32) + 20
>>> images = summary_images(xr.DataArray(movie, dims=("time", "y", "x")))
>>> labels = detect_neurons(images, diameter_px=7.0)
>>> int(labels.max()), [int((labels == k).sum()) for k in (1, 2)]  # 7 x 7 minus 4 corners
(2, [45, 45])
>>> rois = labels_to_rois(labels, scale=(2, 2))
>>> [r.name for r in rois]
['auto_001', 'auto_002']
>>> mask = rasterize(rois[0], (48, 48))
>>> bool((mask == np.kron(labels.values == 1, np.ones((2, 2), bool))).all())
True
>>> truth = np.zeros((24, 24), int); truth[4:11, 4:11] = 1; truth[13:20, 12:19] = 2
>>> match_rois(labels, truth)["f1"]
1.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr
from roifile import ROI_TYPE, ImagejRoi
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.morphology import convex_hull_image, reconstruction
from skimage.segmentation import watershed

from calim_helpers.errors import CalimWarning

__all__ = ["detect_neurons", "detect_rois", "labels_to_rois", "match_rois", "summary_images"]

# Neighbour offsets (dy, dx) of the 8-neighbourhood, one of each symmetric pair:
# the correlation of p with p + o is that of p + o with p - o + o.
_HALF_NEIGHBOURS = ((0, 1), (1, -1), (1, 0), (1, 1))


# ------------------------------------------------------------------ summary images


def _as_movie(movie_ds: Any) -> xr.DataArray:
    if isinstance(movie_ds, xr.DataArray):
        if set(movie_ds.dims) != {"time", "y", "x"}:
            raise ValueError(f"movie_ds must have dims ('time', 'y', 'x'), got {movie_ds.dims}")
        movie = movie_ds.transpose("time", "y", "x")
    else:
        arr = np.asarray(movie_ds)
        if arr.ndim != 3:
            raise ValueError(f"movie_ds must be 3-D (time, y, x), got shape {arr.shape}")
        movie = xr.DataArray(arr, dims=("time", "y", "x"))
    if movie.dtype.kind not in "uif":
        raise ValueError(f"movie_ds must be numeric, got dtype {movie.dtype}")
    if min(movie.shape) < 1:
        raise ValueError(f"movie_ds must not be empty, got shape {movie.shape}")
    return movie


def _time_blocks(movie: xr.DataArray, chunk_frames: int | None) -> Iterator[np.ndarray]:
    """Consecutive float32 blocks of frames (the dask chunks, or ``chunk_frames``)."""
    n = movie.sizes["time"]
    if chunk_frames is None:
        sizes = movie.chunksizes["time"] if movie.chunks is not None else (n,)
        stops = np.cumsum(sizes)
    else:
        stops = np.append(np.arange(chunk_frames, n, chunk_frames), n)
    start = 0
    for stop in stops:
        block = movie.isel(time=slice(start, int(stop))).to_numpy()
        yield np.asarray(block, dtype=np.float32)
        start = int(stop)


def _signal_blocks(
    movie: xr.DataArray, chunk_frames: int | None, difference: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frames, signal)`` per block; ``signal`` is the frames or their differences."""
    previous = None
    for block in _time_blocks(movie, chunk_frames):
        if not difference:
            yield block, block
            continue
        joined = block if previous is None else np.concatenate([previous, block])
        previous = block[-1:]
        yield block, np.diff(joined, axis=0)


class _Moments:
    """Per-pixel count, mean and variance from shifted sums (float64, (y, x))."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = block[0].astype(np.float64)
            self.s1 = np.zeros_like(self.shift)
            self.s2 = np.zeros_like(self.shift)
        d = block - self.shift.astype(np.float32)
        self.s1 += d.sum(axis=0, dtype=np.float64)
        self.s2 += np.square(d).sum(axis=0, dtype=np.float64)
        self.n += block.shape[0]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        m1 = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - m1 * m1, 0.0)
        return self.shift + m1, np.sqrt(var)


def _window(n: int, d: int) -> tuple[slice, slice]:
    """Slices ``a`` and ``b`` with ``b`` = ``a`` moved by ``d`` along an axis of size ``n``."""
    return slice(max(0, -d), n - max(0, d)), slice(max(0, d), n + min(0, d))


def summary_images(
    movie_ds: Any,
    /,
    *,
    chunk_frames: int | None = None,
    difference: bool = True,
    background_sigma_px: float = 20.0,
) -> xr.Dataset:
    """Summary images of a downsampled movie, in one pass over time, block by block.

    One pass over the movie, one block of frames at a time: per-pixel shifted sums
    and sums of neighbour products in float64, frames in float32, so nothing of
    the movie's size is held in float64 and a dask-backed movie is computed once.

    Parameters
    ----------
    movie_ds : xarray.DataArray or array_like, shape (time, y, x)
        Downsampled movie (e.g. from :func:`calim_helpers.downsample.downsample`),
        numpy- or dask-backed, any numeric dtype; must be finite. Its ``y``/``x``
        coordinates are kept.
    chunk_frames : int, optional
        Frames per block. Default is None: the movie's dask chunks along
        ``time``, or the whole movie if it is a numpy array.
    difference : bool, optional
        Correlate the temporal first differences ``F[t] - F[t-1]`` instead of
        the frames. Differencing removes bleaching, drift and other slow changes
        common to all pixels, which otherwise correlate every pixel with its
        neighbours; calcium transients, one or two downsampled frames long,
        survive. Default is True.
    background_sigma_px : float, optional
        Standard deviation, pixels of the movie's grid, of the Gaussian that
        estimates the smooth background (neuropil, uneven illumination)
        subtracted from the mean image to give ``contrast``; a few soma
        diameters. Default is 20.0.

    Returns
    -------
    xarray.Dataset
        Dims ``(y, x)``, float32 variables:

        - ``mean``, ``max``, ``std`` -- temporal mean, maximum and standard
          deviation (population, ``ddof=0``) of the frames;
        - ``correlation`` -- mean Pearson correlation of each pixel's signal
          (frames or their differences, see ``difference``) with its 8
          neighbours (fewer at the border); 0 where a pixel's signal is
          constant, and everywhere when the movie has fewer than 2 signal
          frames (1 frame, or 2 with ``difference``);
        - ``contrast`` -- ``mean`` minus its Gaussian blur of
          ``background_sigma_px`` (difference of Gaussians with an unblurred
          image): somata are positive.

        ``attrs`` record ``n_frames``, ``n_signal_frames`` (frames the
        correlation is computed from), ``difference`` and
        ``background_sigma_px``.

    Raises
    ------
    ValueError
        If ``movie_ds`` is not 3-D ``(time, y, x)``, is empty, or a parameter
        is out of range.
    """
    movie = _as_movie(movie_ds)
    n_frames = movie.sizes["time"]
    if chunk_frames is not None and (
        isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int | np.integer)
        or chunk_frames < 1
    ):
        raise ValueError(f"chunk_frames must be None or an integer >= 1, got {chunk_frames!r}")
    if not background_sigma_px > 0:
        raise ValueError(f"background_sigma_px must be > 0, got {background_sigma_px!r}")

    ny, nx = movie.sizes["y"], movie.sizes["x"]
    windows = [(_window(ny, dy), _window(nx, dx)) for dy, dx in _HALF_NEIGHBOURS]
    products = [np.zeros((ny - abs(dy), nx - abs(dx))) for dy, dx in _HALF_NEIGHBOURS]
    frames, signal = _Moments(), _Moments()
    peak = None
    for block, sig in _signal_blocks(movie, chunk_frames, difference):
        frames.add(block)
        signal.add(sig)
        block_max = block.max(axis=0)
        peak = block_max if peak is None else np.maximum(peak, block_max)
        if sig.shape[0]:
            # covariance is shift-invariant: products of the shifted signal suffice
            d = sig - signal.shift.astype(np.float32)
            for acc, ((ya, yb), (xa, xb)) in zip(products, windows, strict=True):
                acc += (d[:, ya, xa] * d[:, yb, xb]).sum(axis=0, dtype=np.float64)
    mean, std = frames.mean_std()

    total = np.zeros((ny, nx))
    count = np.zeros((ny, nx))
    if signal.n >= 2:
        m1 = signal.s1 / signal.n  # mean of the shifted signal
        _, sig_std = signal.mean_std()
        for acc, ((ya, yb), (xa, xb)) in zip(products, windows, strict=True):
            cov = acc / signal.n - m1[ya, xa] * m1[yb, xb]
            den = sig_std[ya, xa] * sig_std[yb, xb]
            rho = np.divide(cov, den, out=np.zeros_like(cov), where=den > 0)
            total[ya, xa] += rho
            total[yb, xb] += rho
            count[ya, xa] += 1
            count[yb, xb] += 1
    correlation = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    correlation = np.clip(correlation, -1.0, 1.0)

    contrast = mean - ndimage.gaussian_filter(mean, background_sigma_px, mode="reflect")
    coords = {d: movie.coords[d] for d in ("y", "x") if d in movie.coords}
    images = {
        "mean": mean,
        "max": peak,
        "std": std,
        "correlation": correlation,
        "contrast": contrast,
    }
    return xr.Dataset(
        {k: (("y", "x"), np.asarray(v, dtype=np.float32)) for k, v in images.items()},
        coords=coords,
        attrs={
            "n_frames": int(n_frames),
            "n_signal_frames": int(signal.n),
            "difference": int(difference),
            "background_sigma_px": float(background_sigma_px),
        },
    )


# ----------------------------------------------------------------------- detection


def _image(images: Any, name: str) -> np.ndarray:
    try:
        image = np.asarray(images[name], dtype=np.float64)
    except KeyError:
        raise ValueError(f"images must hold a {name!r} image (see summary_images)") from None
    if image.ndim != 2:
        raise ValueError(f"images[{name!r}] must be 2-D (y, x), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError(f"images[{name!r}] must be finite")
    return image


def detect_neurons(
    images: xr.Dataset,
    /,
    *,
    diameter_px: float = 9.0,
    method: str = "morphology",
    diameter_range: tuple[float, float] = (0.5, 1.6),
    seed_threshold: float = 2.0,
    min_ring_contrast: float = 0.5,
    min_solidity: float = 0.8,
    max_elongation: float = 2.1,
    min_edge_sharpness: float = 0.27,
    second_ring_contrast: float = 0.4,
    second_min_area: float = 0.4,
    threshold: float | None = None,
    smooth_px: float | None = None,
    contrast_weight: float = 0.0,
    outline_level: float | None = None,
    min_area_px: float | None = None,
    max_area_px: float | None = None,
    min_border_area_px: float | None = None,
) -> xr.DataArray:
    """Label image of somata, on the grid of the summary images.

    Two methods:

    ``"morphology"`` (default) finds somata by their shape in the ``mean``
    image, active or not -- a soma is a compact, convex, sharp-edged blob a few
    micrometres across, brighter than the neuropil around it:

    1. *Clean-up*: grey opening with a disc of radius ``0.4 * d_min`` (at least
       1 pixel) removes neurites and other processes narrower than the smallest
       soma; dark nuclei enclosed by brighter cytoplasm are filled (grey-level
       hole filling by morphological reconstruction).
    2. *Background*: grey opening with a disc wider than the largest soma
       (radius ``d_max / 2 + 3``), smoothed, is the neuropil and out-of-focus
       haze; ``top`` = cleaned image minus background (a white top-hat).
    3. *Seeds*: local maxima in position and scale of the scale-normalized
       Laplacian of Gaussian of ``top`` over radii ``d_min / 2 .. d_max / 2``
       (Lindeberg's blob detector), above ``seed_threshold`` standard
       deviations of the background clutter of ``top`` (from its negative
       values, which only the background has: 1.4826 times their median
       magnitude); of two seeds closer than 0.7 times the sum of their radii
       only the stronger is kept.
    4. *Regions*: watershed of the smoothed ``top`` from the seeds, within
       ``top`` > 1 clutter SD; neighbouring basins with no dip between them
       whose union is soma-sized and compact (elongation <= 1.8) are merged
       (one soma crossed by a neurite or with an off-centre nucleus gets
       several seeds); each soma keeps the pixels of its basin above
       ``outline_level`` of its 95th-percentile ``top`` (the half-maximum
       outline of the true footprint), largest part, holes filled. A region
       with two distance-transform cores joined by a narrow neck (below 0.85
       of the smaller core's radius) is split (two touching somata).
    5. *Shape tests*: a region is kept if its area is within
       ``[min_area_px, max_area_px]``, its solidity (area / convex-hull area)
       at least ``min_solidity``, its elongation (ratio of the principal axes)
       at most ``max_elongation`` (neurites, blood vessels), its ring
       contrast -- ``(median top inside - median top in a 2-pixel ring
       around) / median top inside`` -- at least ``min_ring_contrast``, and
       its edge sharpness -- the median gradient magnitude of ``top`` on the
       pixels just inside and just outside its outline, over its median
       ``top`` -- at least ``min_edge_sharpness`` (out-of-focus cells and
       neuropil texture have soft edges; a touching neighbour lowers the ring
       contrast but leaves most of the edge sharp); the step must also
       exceed 5 standard errors, from the noise of one pixel of
       ``mean`` (``median(std) / sqrt(n_frames)``, or without ``std`` the
       robust SD of ``mean`` minus its 1-pixel Gaussian blur), which rejects
       noise blobs on a featureless background. A region that fails these
       tests whole and is at least the disc of ``diameter_px`` in area (a
       cluster of touching somata: too elongated, concave or soft-edged for
       one) is split at the maxima of its distance transform at least
       ``0.8 * d_min`` apart (a watershed of the distance), each part outlined
       again and tested on its own with the other parts left out of its ring.
    6. *Second round*: steps 3-5 again on the residual ``top`` minus a model
       of the somata found (each soma's 90th-percentile ``top`` times its mask
       blurred by a Gaussian of 1 pixel, which removes the soft fringe outside
       its outline), with the somata and one pixel around them set to 0. The
       ring of a candidate leaves out the somata found (and one pixel around
       them) unless that leaves less than a third of it, so a bright
       neighbour does not fail a dim soma's ring test; second-round somata
       need a ring contrast of ``second_ring_contrast`` and an area of
       ``second_min_area`` times the disc of ``diameter_px``, which rejects
       the fragments a fringe leaves. This finds dim somata next to or
       touching bright ones.

    With ``d = diameter_px``, ``d_min, d_max = diameter_range[0] * d,
    diameter_range[1] * d``. Tuned on hard synthetic sessions
    (:func:`calim_helpers.demo.simulate_session` with ``difficulty="hard"``,
    seeds 1-60: somata 8-18 µm, dim, touching and rarely firing cells,
    neurites, out-of-focus cells); see ``benchmarks/bench_detection.py`` for
    held-out scores. Only ``mean`` is used, so a cell that never fires is found
    as well as an active one, and short movies work (a mean of a few frames).
    Known limitation: touching somata of similar brightness that make one
    compact, sharp-edged region pass the tests as one soma, and a cluster
    without separate distance-transform cores is still lost whole.

    ``"correlation"`` finds *active* somata only, where neighbouring pixels
    fluctuate together (the method of earlier versions):

    1. *Foreground*: ``correlation`` smoothed by a Gaussian of 0.5 pixel, above
       ``threshold`` (Otsu's threshold by default), holes filled.
    2. *Seeds*: local maxima, at least ``diameter_px / 2`` apart, of the
       landscape ``correlation + contrast_weight * contrast / p99(contrast)``
       smoothed by ``smooth_px``, one per soma.
    3. *Separation*: watershed of the negated landscape from the seeds within
       the foreground grown by one pixel.
    4. *Outline*: within its watershed region, a soma keeps the pixels whose
       ``contrast`` is at least ``outline_level`` times the region's maximum,
       its largest connected part, holes filled.
    5. *Cleanup*: regions smaller than ``min_area_px`` or larger than
       ``max_area_px`` are dropped, and so are regions touching the image
       border that are smaller than ``min_border_area_px``.

    Parameters
    ----------
    images : xarray.Dataset
        Summary images from :func:`summary_images` (dims ``(y, x)``); any
        mapping of name to 2-D array works. ``"morphology"`` needs ``mean``,
        ``"correlation"`` needs ``correlation`` and ``contrast``.
    diameter_px : float, optional
        Typical soma diameter in pixels *of the images' grid* (the downsampled
        grid: 12 µm at 0.65 µm native pixels and 2 x 2 binning is
        ``12 / 1.3 = 9.2``). Default is 9.0.
    method : {"morphology", "correlation"}, optional
        Detection method, see above. Default is "morphology".
    diameter_range : tuple of float, optional
        ``(low, high)``: smallest and largest soma diameter as multiples of
        ``diameter_px`` (``"morphology"``; 0 < low <= high). Default is
        (0.5, 1.6): 6-19 µm for a 12 µm typical soma.
    seed_threshold : float, optional
        Smallest blob response of a seed, in standard deviations of the
        top-hat image's background clutter (``"morphology"``). Default is 2.0.
    min_ring_contrast : float, optional
        Smallest ring contrast of a soma, in (-inf, 1] (``"morphology"``).
        Default is 0.5.
    min_solidity : float, optional
        Smallest solidity of a soma, in [0, 1] (``"morphology"``). Default is 0.8.
    max_elongation : float, optional
        Largest ratio of a soma's major to minor axis, >= 1 (``"morphology"``).
        Default is 2.1.
    min_edge_sharpness : float, optional
        Smallest median gradient magnitude of the top-hat image across a
        soma's outline, per pixel, as a fraction of the soma's median top-hat
        value, >= 0 (``"morphology"``; 0 switches the test off). A sharp
        disc edge smoothed over about a pixel gives 0.3-0.5, a cell of another
        plane blurred by 2 pixels about 0.2. Default is 0.27.
    second_ring_contrast : float, optional
        Smallest ring contrast of a soma found in the second round, in
        (-inf, 1] (``"morphology"``). Default is 0.4.
    second_min_area : float, optional
        Smallest area of a soma found in the second round, as a multiple of
        the area of a disc of ``diameter_px``, >= 0 (``"morphology"``).
        Default is 0.4.
    threshold : float, optional
        Local-correlation threshold of the foreground, in [-1, 1]
        (``"correlation"``). Default is None: Otsu's threshold of the smoothed
        correlation image.
    smooth_px : float, optional
        Standard deviation, pixels, of the Gaussian smoothing the seed and
        watershed landscape (``"correlation"``). Default is None:
        ``diameter_px / 6``.
    contrast_weight : float, optional
        Weight of the local contrast (scaled by its 99th percentile) added to
        the correlation in the seed landscape (``"correlation"``). Default is 0.0.
    outline_level : float, optional
        Fraction, in (0, 1), of a soma's peak (top-hat or local contrast) at its
        outline. Default is None: 0.6 for ``"morphology"``, 0.4 for
        ``"correlation"``.
    min_area_px : float, optional
        Smallest soma area, pixels. Default is None: for ``"morphology"`` half
        the area of a disc of ``d_min``; for ``"correlation"`` 0.3 times the
        area of a disc of ``diameter_px``.
    max_area_px : float, optional
        Largest soma area, pixels. Default is None: 1.3 times the area of a disc
        of ``d_max`` (``"morphology"``), 3 times that of ``diameter_px``
        (``"correlation"``).
    min_border_area_px : float, optional
        Smallest area of a soma touching the image border, pixels. Default is
        None: ``min_area_px`` for ``"morphology"`` (somata cut by the border
        are kept), half the disc of ``diameter_px`` for ``"correlation"``.

    Returns
    -------
    xarray.DataArray of int32, dims (y, x)
        0 is background, ``1..n`` the somata, numbered in raster order of their
        first pixel (top to bottom, then left to right). Coordinates come from
        ``images``; ``attrs`` record the method and its parameters.

    Raises
    ------
    ValueError
        If ``images`` lacks an image the method needs, images differ in shape or
        are not finite, or a parameter is out of range.

    References
    ----------
    Lindeberg T. Feature detection with automatic scale selection.
    *Int J Comput Vis* 30:79-116, 1998.
    """
    if not diameter_px > 0:
        raise ValueError(f"diameter_px must be > 0, got {diameter_px!r}")
    if method == "correlation":
        labels, attrs = _detect_correlation(
            images, diameter_px=diameter_px, threshold=threshold, smooth_px=smooth_px,
            contrast_weight=contrast_weight,
            outline_level=0.4 if outline_level is None else outline_level,
            min_area_px=min_area_px, max_area_px=max_area_px,
            min_border_area_px=min_border_area_px)
    elif method == "morphology":
        labels, attrs = _detect_morphology(
            images, diameter_px=diameter_px, diameter_range=diameter_range,
            seed_threshold=seed_threshold, min_ring_contrast=min_ring_contrast,
            min_solidity=min_solidity, max_elongation=max_elongation,
            min_edge_sharpness=min_edge_sharpness,
            second_ring_contrast=second_ring_contrast, second_min_area=second_min_area,
            outline_level=0.6 if outline_level is None else outline_level,
            min_area_px=min_area_px, max_area_px=max_area_px,
            min_border_area_px=min_border_area_px)
    else:
        raise ValueError(f"method must be 'morphology' or 'correlation', got {method!r}")
    coords = {}
    if isinstance(images, xr.Dataset):
        coords = {d: images.coords[d] for d in ("y", "x") if d in images.coords}
    return xr.DataArray(labels, dims=("y", "x"), coords=coords, name="labels",
                        attrs={"method": method, "diameter_px": float(diameter_px)} | attrs)


def _detect_correlation(
    images: Any, *, diameter_px: float, threshold: float | None, smooth_px: float | None,
    contrast_weight: float, outline_level: float, min_area_px: float | None,
    max_area_px: float | None, min_border_area_px: float | None,
) -> tuple[np.ndarray, dict]:
    """Run the ``"correlation"`` method of :func:`detect_neurons`: labels and attrs."""
    corr = _image(images, "correlation")
    contrast = _image(images, "contrast")
    if corr.shape != contrast.shape:
        raise ValueError(
            f"images['correlation'] {corr.shape} and images['contrast'] {contrast.shape} "
            "must have the same shape")
    if threshold is not None and not -1 <= threshold <= 1:
        raise ValueError(f"threshold must be None or in [-1, 1], got {threshold!r}")
    smooth_px = diameter_px / 6 if smooth_px is None else smooth_px
    if not smooth_px >= 0:
        raise ValueError(f"smooth_px must be >= 0, got {smooth_px!r}")
    if not contrast_weight >= 0:
        raise ValueError(f"contrast_weight must be >= 0, got {contrast_weight!r}")
    if not 0 < outline_level < 1:
        raise ValueError(f"outline_level must be in (0, 1), got {outline_level!r}")
    disc = math.pi * diameter_px**2 / 4
    min_area = 0.3 * disc if min_area_px is None else min_area_px
    max_area = 3.0 * disc if max_area_px is None else max_area_px
    min_border = 0.5 * disc if min_border_area_px is None else min_border_area_px
    if not 0 <= min_area <= max_area:
        raise ValueError(
            f"need 0 <= min_area_px <= max_area_px, got {min_area_px!r}, {max_area_px!r}")
    if not min_border >= 0:
        raise ValueError(f"min_border_area_px must be >= 0, got {min_border_area_px!r}")

    smooth_corr = ndimage.gaussian_filter(corr, 0.5)
    if threshold is None:
        flat = smooth_corr.min() == smooth_corr.max()
        level = float(smooth_corr.max()) if flat else float(threshold_otsu(smooth_corr))
    else:
        level = float(threshold)
    foreground = ndimage.binary_fill_holes(smooth_corr > level)

    landscape = corr
    if contrast_weight > 0:
        scale = np.percentile(contrast, 99)
        if scale > 0:
            landscape = corr + contrast_weight * contrast / scale
    landscape = ndimage.gaussian_filter(landscape, smooth_px)
    seeds = peak_local_max(
        landscape,
        min_distance=max(1, round(diameter_px / 2)),
        labels=foreground.astype(np.int32),
        exclude_border=False,
    )
    seeds = seeds[np.lexsort((seeds[:, 1], seeds[:, 0]))]
    markers = np.zeros(corr.shape, dtype=np.int32)
    markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
    # one pixel of slack around the foreground: the contrast outline decides the edge
    basins = watershed(-landscape, markers, mask=ndimage.binary_dilation(foreground))

    labels = np.zeros(corr.shape, dtype=np.int32)
    n = 0
    for k, box in enumerate(ndimage.find_objects(basins), start=1):
        if box is None:
            continue
        region = _outline_region(basins[box] == k, contrast[box], outline_level)
        area = int(region.sum())
        if not min_area <= area <= max_area:
            continue
        rows, cols = np.nonzero(region)
        rows, cols = rows + box[0].start, cols + box[1].start
        touches = (rows.min() == 0 or cols.min() == 0 or rows.max() == corr.shape[0] - 1
                   or cols.max() == corr.shape[1] - 1)
        if touches and area < min_border:
            continue
        n += 1
        labels[rows, cols] = n

    return labels, {
        "diameter_px": float(diameter_px),
        "threshold": level,
        "threshold_method": "otsu" if threshold is None else "fixed",
        "smooth_px": float(smooth_px),
        "contrast_weight": float(contrast_weight),
        "outline_level": float(outline_level),
        "min_area_px": float(min_area),
        "max_area_px": float(max_area),
        "min_border_area_px": float(min_border),
    }


def _robust_sd(x: np.ndarray) -> float:
    """1.4826 times the median absolute deviation from the median."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _disk(radius: float) -> np.ndarray:
    """Boolean disc footprint: offsets with ``dy**2 + dx**2 <= radius**2``."""
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= radius**2


def _top_hat(mean: np.ndarray, d_min: float, d_max: float) -> np.ndarray:
    """Mean image without processes, nuclei filled, minus the neuropil background."""
    opened = ndimage.grey_opening(mean, footprint=_disk(max(1, round(0.4 * d_min))))
    # grey-level hole filling: reconstruction by erosion from the border
    marker = opened.copy()
    marker[1:-1, 1:-1] = opened.max()
    filled = reconstruction(marker, opened, method="erosion")
    radius = math.ceil(d_max / 2) + 3
    background = ndimage.gaussian_filter(
        ndimage.grey_opening(filled, footprint=_disk(radius)), radius / 2)
    return filled - background


def _blob_seeds(top: np.ndarray, radii: np.ndarray, level: float) -> list[tuple[int, int]]:
    """Scale-space maxima of the normalized LoG above ``level``, pruned by distance.

    Of two maxima closer than 0.7 times the sum of their radii, the stronger wins.
    """
    stack = np.stack([-(r * r / 2) * ndimage.gaussian_laplace(top, r / math.sqrt(2))
                      for r in radii])
    peaks = np.argwhere((stack == ndimage.maximum_filter(stack, size=3, mode="nearest"))
                        & (stack > level))
    values = stack[tuple(peaks.T)]
    kept: list[tuple[int, int, float]] = []
    for i in np.argsort(-values, kind="stable"):
        s, y, x = (int(v) for v in peaks[i])
        if all(math.hypot(y - y2, x - x2) >= 0.7 * (radii[s] + r2) for y2, x2, r2 in kept):
            kept.append((y, x, float(radii[s])))
    return [(y, x) for y, x, _ in kept]


def _split_necks(cell: np.ndarray, d_min: float, neck: float = 0.85) -> list[np.ndarray]:
    """Split a region at narrow necks between distance-transform cores.

    Cores are maxima of the distance to the outside at least ``0.35 * d_min / 2``
    deep and ``d_min / 4`` apart; neighbouring parts of the watershed of the
    distance are merged back unless the largest distance on their shared border
    is below ``neck`` times the smaller core's.
    """
    pad = np.pad(cell, 1)
    dist = ndimage.distance_transform_edt(pad)
    cores = peak_local_max(dist, min_distance=max(1, round(d_min / 4)),
                           threshold_abs=0.35 * d_min / 2, exclude_border=False)
    if len(cores) < 2:
        return [cell]
    markers = np.zeros(pad.shape, dtype=np.int32)
    markers[tuple(cores.T)] = np.arange(1, len(cores) + 1)
    parts = watershed(-dist, markers, mask=pad)
    merged = True
    while merged:
        merged = False
        for a in np.unique(parts[parts > 0]):
            in_a = parts == a
            grown_a = ndimage.binary_dilation(in_a)
            for b in np.unique(parts[grown_a & ~in_a]):
                if b in (0, a):
                    continue
                in_b = parts == b
                border = (in_a & ndimage.binary_dilation(in_b)) | (in_b & grown_a)
                if dist[border].max() >= neck * min(dist[in_a].max(), dist[in_b].max()):
                    parts[in_b] = a
                    merged = True
                    break
            if merged:
                break
    parts = parts[1:-1, 1:-1]
    return [parts == k for k in np.unique(parts[parts > 0])]


#: A region failing the shape tests is split into somata (:func:`_split_cluster`) when
#: it is at least this multiple of the area of a disc of ``diameter_px``.
_CLUSTER_MIN_AREA = 1.0
#: Smallest distance between the cores of two somata of a cluster, times ``d_min``.
_CLUSTER_SPACING = 0.8


def _split_cluster(cell: np.ndarray, top: np.ndarray, d_min: float,
                   outline_level: float) -> list[np.ndarray]:
    """Split a region into somata at the cores of its distance transform.

    A cluster of touching somata of similar brightness makes one region too
    elongated, too concave or too soft-edged for one soma, and it fails the shape
    tests whole; its somata still show as maxima of the distance to the region's
    outside, even where the necks between them are too wide for
    :func:`_split_necks`. The maxima at least ``_CLUSTER_SPACING * d_min`` apart seed
    a watershed of the negated distance within the region; each part keeps its
    pixels above ``outline_level`` of its 95th-percentile ``top`` (largest part,
    holes filled). Returns ``[]`` when the region has fewer than two maxima.
    """
    dist = ndimage.distance_transform_edt(np.pad(cell, 1))[1:-1, 1:-1]
    peaks = peak_local_max(dist, min_distance=max(1, round(_CLUSTER_SPACING * d_min)),
                           labels=cell.astype(np.int32), exclude_border=False)
    if len(peaks) < 2:
        return []
    markers = np.zeros(cell.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    basins = watershed(-dist, markers, mask=cell)
    parts = []
    for k in range(1, len(peaks) + 1):
        basin = basins == k
        if basin.any():
            parts.append(_outline(basin, top, outline_level))
    return parts


def _outline(basin: np.ndarray, top: np.ndarray, outline_level: float) -> np.ndarray:
    """Return a soma's outline within ``basin`` (its largest part, holes filled).

    The pixels of ``basin`` at or above ``outline_level`` times the basin's 95th
    percentile of ``top``.
    """
    level = outline_level * np.percentile(top[basin], 95)
    return ndimage.binary_fill_holes(_largest(basin & (top >= level)))


def _largest(mask: np.ndarray) -> np.ndarray:
    """Largest 4-connected part of ``mask`` (``mask`` itself with fewer than 2 parts)."""
    parts, n = ndimage.label(mask)
    if n < 2:
        return mask
    return parts == int(np.argmax(np.bincount(parts.ravel())[1:])) + 1


def _pixel_noise(images: Any, mean: np.ndarray) -> float:
    """Noise SD of one pixel of the mean image.

    ``median(std) / sqrt(n_frames)`` when the images carry ``std`` and
    ``attrs["n_frames"] >= 2`` (an upper bound: activity and drift add to the
    std); otherwise the robust SD of ``mean`` minus its Gaussian blur of 1 pixel.
    """
    n_frames = int(getattr(images, "attrs", {}).get("n_frames", 0))
    if n_frames >= 2 and "std" in images:
        return float(np.median(_image(images, "std"))) / math.sqrt(n_frames)
    return _robust_sd(mean - ndimage.gaussian_filter(mean, 1.0))


def _shape_ok(cell: np.ndarray, top: np.ndarray, *, pixel_noise: float,
              min_ring_contrast: float, min_solidity: float, max_elongation: float,
              min_edge_sharpness: float = 0.0, exclude: np.ndarray | None = None) -> bool:
    """Shape tests of :func:`detect_neurons` (``"morphology"``) on one region.

    The ring leaves out the pixels of ``exclude`` (other somata) unless that leaves
    fewer than a third of it.
    """
    inside = float(np.median(top[cell]))
    if inside <= 0:
        return False
    ring = ndimage.binary_dilation(cell, iterations=2) & ~cell
    if exclude is not None:
        free = ring & ~exclude
        if free.sum() >= ring.sum() / 3:
            ring = free
    step = inside - float(np.median(top[ring]))
    # standard error of a difference of two medians of independent pixels
    step_se = 1.2533 * pixel_noise * math.sqrt(1 / cell.sum() + 1 / max(int(ring.sum()), 1))
    if step / inside < min_ring_contrast or step < 5 * step_se:
        return False
    if min_edge_sharpness > 0:
        edge = ndimage.binary_dilation(cell) & ~ndimage.binary_erosion(cell)
        gy, gx = np.gradient(top)
        if np.median(np.hypot(gy, gx)[edge]) < min_edge_sharpness * inside:
            return False
    if cell.sum() / convex_hull_image(cell).sum() < min_solidity:
        return False
    rows, cols = np.nonzero(cell)
    if rows.size > 2:
        eig = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64)))
        if eig[0] <= 0 or math.sqrt(eig[1] / eig[0]) > max_elongation:
            return False
    return True


#: Basins of one soma are merged when the saddle between them is at least this
#: fraction of the lower basin peak and their union is at most this elongated.
_MERGE_SADDLE = 0.8
_MERGE_ELONGATION = 1.8


def _elongation(cell: np.ndarray) -> float:
    """Ratio of the principal axes of a region's pixels (inf when degenerate)."""
    rows, cols = np.nonzero(cell)
    if rows.size < 3:
        return float("inf")
    eig = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64)))
    return math.sqrt(eig[1] / eig[0]) if eig[0] > 0 else float("inf")


def _clutter_sd(top: np.ndarray) -> float:
    """SD of the background clutter of a top-hat image, from its negative values.

    Somata, neurites and out-of-focus cells only add to the top-hat image, so its
    values below 0 are background (noise, neuropil texture): taken as one half of a
    zero-mean normal, their SD is ``1.4826 * median(|x|)``. The robust SD of the
    whole image instead grows with the fraction of the frame the cells cover (half
    of it or more in dense fields). Falls back to that with fewer than 10 negative
    pixels.
    """
    neg = top[top < 0]
    if neg.size < 10:
        return _robust_sd(top)
    return float(1.4826 * np.median(-neg))


def _merge_basins(basins: np.ndarray, smooth: np.ndarray, residual: np.ndarray, *,
                  outline_level: float, saddle: float, max_elongation: float,
                  max_area: float) -> np.ndarray:
    """Merge neighbouring watershed basins that belong to one soma.

    A soma crossed by a neurite, or with an off-centre nucleus, gets several blob
    seeds and so several basins, each outlined as a fragment. Two touching basins
    are merged when ``smooth`` shows no dip between them -- the highest of
    ``min(smooth[p], smooth[q])`` over their touching pixel pairs is at least
    ``saddle`` times the lower of the two basin peaks -- and their union, outlined
    like a soma, is at most ``max_area`` pixels and ``max_elongation`` elongated
    (two touching somata side by side have an elongation near 2). Pairs are
    tried from the shallowest dip.
    """
    n = int(basins.max())
    if n < 2:
        return basins
    peak = ndimage.maximum(smooth, basins, np.arange(n + 1))
    pairs: dict[tuple[int, int], float] = {}
    for axis in (0, 1):
        a = basins.take(np.arange(basins.shape[axis] - 1), axis=axis)
        b = basins.take(np.arange(1, basins.shape[axis]), axis=axis)
        va = smooth.take(np.arange(basins.shape[axis] - 1), axis=axis)
        vb = smooth.take(np.arange(1, basins.shape[axis]), axis=axis)
        sel = (a > 0) & (b > 0) & (a != b)
        for x, y, v in zip(a[sel], b[sel], np.minimum(va, vb)[sel], strict=True):
            key = (min(x, y), max(x, y))
            pairs[key] = max(pairs.get(key, -np.inf), float(v))
    parent = np.arange(n + 1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def depth(item: tuple[tuple[int, int], float]) -> float:
        (x, y), v = item
        return -v / max(min(peak[x], peak[y]), 1e-12)

    for (x, y), v in sorted(pairs.items(), key=depth):
        if v < saddle * min(peak[x], peak[y]):
            continue
        rx, ry = find(x), find(y)
        if rx == ry:
            continue
        union = np.isin(basins, [k for k in range(1, n + 1) if find(k) in (rx, ry)])
        region = union & (residual >= outline_level * np.percentile(residual[union], 95))
        if region.sum() > max_area or _elongation(region) > max_elongation:
            continue
        parent[ry] = rx
    roots = np.array([find(k) for k in range(n + 1)])
    roots[0] = 0
    return roots[basins]


def _soma_model(top: np.ndarray, labels: np.ndarray, blur_px: float = 1.0) -> np.ndarray:
    """Model the top-hat image the somata of ``labels`` explain, blurred edges included.

    Each soma contributes its 90th-percentile top-hat value times its mask blurred by
    a Gaussian of ``blur_px``: subtracted from ``top``, it removes the soft fringe
    outside a soma's outline that would otherwise look like a dim neighbour.
    """
    model = np.zeros(top.shape)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pad = math.ceil(4 * blur_px)
        box = tuple(slice(max(b.start - pad, 0), min(b.stop + pad, size))
                    for b, size in zip(box, top.shape, strict=True))
        cell = labels[box] == k
        model[box] += np.percentile(top[box][cell], 90) * ndimage.gaussian_filter(
            cell.astype(np.float64), blur_px, mode="constant")
    return model


def _detect_morphology(
    images: Any, *, diameter_px: float, diameter_range: tuple[float, float],
    seed_threshold: float, min_ring_contrast: float, min_solidity: float,
    max_elongation: float, min_edge_sharpness: float, second_ring_contrast: float,
    second_min_area: float,
    outline_level: float, min_area_px: float | None,
    max_area_px: float | None, min_border_area_px: float | None,
) -> tuple[np.ndarray, dict]:
    """Run the ``"morphology"`` method of :func:`detect_neurons`: labels and attrs."""
    mean = _image(images, "mean")
    try:
        low, high = (float(v) for v in diameter_range)
    except (TypeError, ValueError):
        raise ValueError(f"diameter_range must be (low, high), got {diameter_range!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"diameter_range must satisfy 0 < low <= high, got {diameter_range!r}")
    if not seed_threshold >= 0:
        raise ValueError(f"seed_threshold must be >= 0, got {seed_threshold!r}")
    if not min_ring_contrast <= 1:
        raise ValueError(f"min_ring_contrast must be <= 1, got {min_ring_contrast!r}")
    if not 0 <= min_solidity <= 1:
        raise ValueError(f"min_solidity must be in [0, 1], got {min_solidity!r}")
    if not max_elongation >= 1:
        raise ValueError(f"max_elongation must be >= 1, got {max_elongation!r}")
    if not min_edge_sharpness >= 0:
        raise ValueError(f"min_edge_sharpness must be >= 0, got {min_edge_sharpness!r}")
    if not second_ring_contrast <= 1:
        raise ValueError(f"second_ring_contrast must be <= 1, got {second_ring_contrast!r}")
    if not second_min_area >= 0:
        raise ValueError(f"second_min_area must be >= 0, got {second_min_area!r}")
    if not 0 < outline_level < 1:
        raise ValueError(f"outline_level must be in (0, 1), got {outline_level!r}")
    d_min, d_max = low * diameter_px, high * diameter_px
    min_area = 0.5 * math.pi * d_min**2 / 4 if min_area_px is None else min_area_px
    max_area = 1.3 * math.pi * d_max**2 / 4 if max_area_px is None else max_area_px
    min_border = min_area if min_border_area_px is None else min_border_area_px
    if not 0 <= min_area <= max_area:
        raise ValueError(
            f"need 0 <= min_area_px <= max_area_px, got {min_area_px!r}, {max_area_px!r}")
    if not min_border >= 0:
        raise ValueError(f"min_border_area_px must be >= 0, got {min_border_area_px!r}")

    top = _top_hat(mean, d_min, d_max)
    noise = _clutter_sd(top)
    pixel_noise = _pixel_noise(images, mean)
    radii = np.geomspace(d_min / 2, d_max / 2, 6)
    disc_area = math.pi * diameter_px**2 / 4
    second_area = second_min_area * disc_area
    shape = mean.shape
    labels = np.zeros(shape, dtype=np.int32)
    n = 0
    residual = top

    def placed(cell: np.ndarray, box: tuple[slice, slice], round_: int):
        """Return the image rows and columns of ``cell``, a mask in ``box``.

        None when its area, or its area at the image border, rules it out.
        """
        area = int(cell.sum())
        if not min_area <= area <= max_area or (round_ and area < second_area):
            return None
        rows, cols = np.nonzero(cell)
        rows, cols = rows + box[0].start, cols + box[1].start
        touches = (rows.min() == 0 or cols.min() == 0 or rows.max() == shape[0] - 1
                   or cols.max() == shape[1] - 1)
        return None if touches and area < min_border else (rows, cols)

    for round_ in range(2):
        seeds = [(y, x) for y, x in _blob_seeds(residual, radii, seed_threshold * noise)
                 if labels[y, x] == 0]
        if not seeds:
            break
        markers = np.zeros(shape, dtype=np.int32)
        markers[tuple(np.array(seeds).T)] = np.arange(1, len(seeds) + 1)
        smooth = ndimage.gaussian_filter(residual, 0.7)
        basins = watershed(-smooth, markers,
                           mask=((residual > noise) & (labels == 0)) | (markers > 0))
        basins = _merge_basins(basins, smooth, residual, outline_level=outline_level,
                               saddle=_MERGE_SADDLE, max_elongation=_MERGE_ELONGATION,
                               max_area=max_area)
        candidates = []
        for k, box in enumerate(ndimage.find_objects(basins), start=1):
            if box is None:
                continue
            # a margin of 3 pixels for the ring and the convex hull
            box = tuple(slice(max(b.start - 3, 0), min(b.stop + 3, size))
                        for b, size in zip(box, shape, strict=True))
            basin = basins[box] == k
            local = residual[box]
            for cell in _split_necks(_outline(basin, local, outline_level), d_min):
                where = placed(cell, box, round_)
                if where is not None:
                    candidates.append((box, cell, *where))
        tests = {"pixel_noise": pixel_noise,
                 "min_ring_contrast": min_ring_contrast if round_ == 0
                 else second_ring_contrast,
                 "min_solidity": min_solidity, "max_elongation": max_elongation,
                 "min_edge_sharpness": min_edge_sharpness}
        for box, cell, rows, cols in candidates:
            local = residual[box]
            exclude = ndimage.binary_dilation(labels[box] > 0) if round_ else None
            if _shape_ok(cell, local, exclude=exclude, **tests):
                n += 1
                labels[rows, cols] = n
                continue
            # a cluster of touching somata failing whole: its parts, each tested
            # with its neighbours left out of its ring
            if cell.sum() < _CLUSTER_MIN_AREA * disc_area:
                continue
            for part in _split_cluster(cell, local, d_min, outline_level):
                where = placed(part, box, round_)
                if where is None:
                    continue
                rows, cols = where
                others = ndimage.binary_dilation(cell & ~part)
                if exclude is not None:
                    others |= exclude
                if _shape_ok(part, local, exclude=others, **tests):
                    n += 1
                    labels[rows, cols] = n
        residual = np.where(ndimage.binary_dilation(labels > 0), 0.0,
                            top - _soma_model(top, labels))

    labels = _renumber_raster(labels)
    return labels, {
        "diameter_range": [float(low), float(high)],
        "seed_threshold": float(seed_threshold),
        "noise": noise,
        "pixel_noise": pixel_noise,
        "min_ring_contrast": float(min_ring_contrast),
        "min_solidity": float(min_solidity),
        "max_elongation": float(max_elongation),
        "min_edge_sharpness": float(min_edge_sharpness),
        "second_ring_contrast": float(second_ring_contrast),
        "second_min_area": float(second_min_area),
        "outline_level": float(outline_level),
        "min_area_px": float(min_area),
        "max_area_px": float(max_area),
        "min_border_area_px": float(min_border),
    }


def _renumber_raster(labels: np.ndarray) -> np.ndarray:
    """Renumber the labels 1..n in raster order of their first pixel."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[1:][np.argsort(first[1:])] if ids.size and ids[0] == 0 else ids[np.argsort(first)]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels]


def _outline_region(region: np.ndarray, contrast: np.ndarray, level: float) -> np.ndarray:
    """Pixels of ``region`` above ``level`` of its peak contrast: largest part, filled."""
    peak = contrast[region].max()
    if peak > 0:
        region = region & (contrast >= level * peak)
    parts, n = ndimage.label(region)
    if n > 1:
        sizes = np.bincount(parts.ravel())[1:]
        region = parts == int(np.argmax(sizes)) + 1
    return ndimage.binary_fill_holes(region)


# --------------------------------------------------------------------- label -> ROI


def _pixel_edge_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Trace the closed loops of pixel edges between ``mask`` and its outside.

    Vertices are ``(x, y)`` pixel corners. Each in-pixel contributes its edges
    that face an out-pixel, directed clockwise on screen (y down): outer
    boundaries run clockwise, hole boundaries anticlockwise. Where two pixels
    touch only at a corner the walk turns left, which keeps them in one loop
    (8-connectivity). Collinear vertices are removed.
    """
    m = np.pad(mask.astype(bool), 1)
    inside = m[1:-1, 1:-1]
    starts: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    # (neighbour offset (dr, dc), edge start corner (dx, dy) in the pixel, step (dx, dy))
    sides = (((-1, 0), (0, 0), (1, 0)), ((0, 1), (1, 0), (0, 1)),
             ((1, 0), (1, 1), (-1, 0)), ((0, -1), (0, 1), (0, -1)))
    for (dr, dc), corner, step in sides:
        outside = ~m[1 + dr : m.shape[0] - 1 + dr, 1 + dc : m.shape[1] - 1 + dc]
        r, c = np.nonzero(inside & outside)
        starts.append(np.stack([c + corner[0], r + corner[1]], axis=1))
        steps.append(np.broadcast_to(step, (r.size, 2)))
    start = np.concatenate(starts)
    step = np.concatenate(steps)
    outgoing: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(start.tolist()):
        outgoing.setdefault((x, y), []).append(i)
    used = np.zeros(len(start), dtype=bool)
    loops = []
    for first in range(len(start)):
        if used[first]:
            continue
        vertices, i = [], first
        while not used[i]:
            used[i] = True
            vertices.append(start[i])
            end = (int(start[i, 0] + step[i, 0]), int(start[i, 1] + step[i, 1]))
            options = [j for j in outgoing[end] if not used[j]]
            if not options:
                break
            # cross < 0 is a left turn on screen (y down): prefer it at corner contacts
            cross = [step[i, 0] * step[j, 1] - step[i, 1] * step[j, 0] for j in options]
            i = options[int(np.argmin(cross))]
        xy = np.array(vertices)
        turn = np.any(np.roll(xy, -1, axis=0) - xy != xy - np.roll(xy, 1, axis=0), axis=1)
        loops.append(xy[turn])
    return loops


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0].astype(float), xy[:, 1].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def labels_to_rois(
    labels: Any,
    /,
    *,
    scale: tuple[float, float] = (2, 2),
    names: Sequence[str] | None = None,
) -> list[ImagejRoi]:
    """Fiji polygon ROIs tracing the outer boundary of each label.

    Each label's outline is traced along pixel edges (like ImageJ's wand tool),
    then scaled from the label grid to native pixels. Rasterized with
    :func:`calim_helpers.rois.rasterize`, a ROI gives back exactly the label's
    pixels upsampled by ``scale`` (``np.kron`` with a block of ones), holes
    filled.

    Parameters
    ----------
    labels : array_like of int, shape (y, x)
        Label image, 0 background (e.g. from :func:`detect_neurons`).
    scale : tuple of float, optional
        ``(sy, sx)``: native pixels per label pixel along y and x (the
        downsampling factors). Integer factors give integer ROI coordinates,
        others sub-pixel ones. Default is (2, 2).
    names : sequence of str, optional
        One name per label, in increasing label order. Default is None:
        ``auto_001``, ``auto_002``, ... numbered by label value.

    Returns
    -------
    list of roifile.ImagejRoi
        Polygon ROIs in increasing label order, vertices ``(x, y)`` in native
        pixel-corner coordinates. Write them with
        :func:`calim_helpers.rois.write_rois`.

    Raises
    ------
    ValueError
        If ``labels`` is not a 2-D non-negative integer array, ``scale`` is
        not two positive numbers or ``names`` has the wrong length.

    Warns
    -----
    CalimWarning
        When a label has several separate (not even 8-connected) parts: only
        the largest is traced.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 2-D integer array, got shape {lab.shape} dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be >= 0 (0 is background)")
    try:
        sy, sx = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be (sy, sx), got {scale!r}") from None
    if not (sy > 0 and sx > 0):
        raise ValueError(f"scale must be two positive numbers, got {scale!r}")
    ids = np.unique(lab)
    ids = ids[ids > 0]
    if names is None:
        names = [f"auto_{int(k):03d}" for k in ids]
    elif isinstance(names, str) or len(names) != len(ids):
        raise ValueError(f"names must give one name per label ({len(ids)}), got {names!r}")
    integer = sy == int(sy) and sx == int(sx)

    rois = []
    for k, name, box in zip(ids, names, _boxes(lab, ids), strict=True):
        loops = _pixel_edge_loops(ndimage.binary_fill_holes(lab[box] == k))
        outer = [xy for xy in loops if _signed_area(xy) > 0]
        if len(outer) > 1:
            warnings.warn(
                f"labels_to_rois: label {int(k)} has {len(outer)} separate parts; "
                "only the largest is kept", CalimWarning, stacklevel=2)
        xy = max(outer, key=_signed_area) + [box[1].start, box[0].start]
        native = xy * [sx, sy]
        points = native.astype(np.int32) if integer else native.astype(np.float64)
        roi = ImagejRoi.frompoints(points, name=str(name))
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)
    return rois


def _boxes(lab: np.ndarray, ids: np.ndarray) -> list[tuple[slice, slice]]:
    objects = ndimage.find_objects(lab)
    return [objects[int(k) - 1] for k in ids]


# ------------------------------------------------------------------------ matching


def _indicator(masks: Any, name: str) -> tuple[sp.csr_matrix, np.ndarray, tuple[int, ...]]:
    """Sparse (roi, pixel) indicator matrix, the ROI ids and the frame shape."""
    if isinstance(masks, np.ndarray | xr.DataArray):
        arr = np.asarray(masks)
    else:
        masks = list(masks)
        if not masks:
            raise ValueError(f"{name} is an empty list of masks; pass a label image instead")
        arr = np.stack([np.asarray(m) for m in masks])
        if arr.dtype != bool:
            raise ValueError(f"{name}: a list of masks must hold boolean arrays, got {arr.dtype}")
    if arr.ndim == 3 and arr.dtype == bool:
        n = arr.shape[0]
        flat = arr.reshape(n, -1)
        rows, cols = np.nonzero(flat)
        ids = np.arange(1, n + 1)
        shape = arr.shape[1:]
    elif arr.ndim == 2 and arr.dtype.kind in "biu":
        lab = arr.astype(np.int64).ravel()
        if lab.size and lab.min() < 0:
            raise ValueError(f"{name} must be >= 0 (0 is background)")
        ids, inverse = np.unique(lab, return_inverse=True)
        keep = lab > 0
        offset = 1 if ids.size and ids[0] == 0 else 0
        rows, cols = inverse[keep] - offset, np.flatnonzero(keep)
        ids = ids[offset:]
        n = ids.size
        shape = arr.shape
    else:
        raise ValueError(
            f"{name} must be a 2-D label image or boolean masks (n, y, x), "
            f"got shape {arr.shape} dtype {arr.dtype}")
    data = np.ones(rows.size, dtype=np.float64)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(n, int(np.prod(shape))))
    return matrix, ids, tuple(shape)


def match_rois(labels_a: Any, labels_b: Any, /, *, iou_threshold: float = 0.5) -> dict:
    """Match two ROI sets one to one by intersection over union.

    The assignment maximizing the summed IoU (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`) is computed, then pairs with
    IoU below ``iou_threshold`` are left unmatched. For ``iou_threshold >= 0.5``
    this is the unique matching (a mask can overlap at most one other mask of a
    set of disjoint masks by more than half of their union).

    Parameters
    ----------
    labels_a, labels_b : array_like
        The candidate set (e.g. automatic ROIs) and the reference set (expert
        ROIs, true footprints), each either a 2-D integer label image (0 is
        background; ROI ids are the label values) or boolean masks, a
        sequence of 2-D arrays or one ``(n, y, x)`` array (overlaps allowed;
        the ``k``-th mask has id ``k``, numbered from 1 like ROIs). Both on
        the same grid.
    iou_threshold : float, optional
        Smallest IoU of a match, in (0, 1]. Default is 0.5.

    Returns
    -------
    dict
        ``precision`` (matched / n_a), ``recall`` (matched / n_b), ``f1``
        (``2 matched / (n_a + n_b)``; NaN where the denominator is 0),
        ``n_a``, ``n_b``, ``n_matched``, ``mean_iou`` (over the matches, NaN
        without matches), ``pairs`` (list of ``(id_a, id_b, iou)`` sorted by
        ``id_a``), ``ids_a``, ``ids_b`` and ``iou`` (the ``(n_a, n_b)`` IoU
        matrix).

    Raises
    ------
    ValueError
        If the sets are not label images or boolean masks, their frames differ
        in shape, or ``iou_threshold`` is outside (0, 1].

    Examples
    --------
    >>> a = np.zeros((4, 6), int); a[:2, :2] = 1; a[2:, 3:] = 2
    >>> b = np.zeros((4, 6), int); b[:2, :3] = 7; b[3:, :2] = 8
    >>> r = match_rois(a, b)
    >>> r["pairs"], r["precision"], r["recall"]
    ([(1, 7, 0.6666666666666666)], 0.5, 0.5)
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    a, ids_a, shape_a = _indicator(labels_a, "labels_a")
    b, ids_b, shape_b = _indicator(labels_b, "labels_b")
    if shape_a != shape_b:
        raise ValueError(f"labels_a {shape_a} and labels_b {shape_b} must have the same shape")
    inter = (a @ b.T).toarray()
    area_a = np.asarray(a.sum(axis=1)).ravel()
    area_b = np.asarray(b.sum(axis=1)).ravel()
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    pairs = []
    if iou.size:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        pairs = [(int(ids_a[r]), int(ids_b[c]), float(iou[r, c]))
                 for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_threshold]
    n_a, n_b, n_m = len(ids_a), len(ids_b), len(pairs)
    nan = float("nan")
    return {
        "precision": n_m / n_a if n_a else nan,
        "recall": n_m / n_b if n_b else nan,
        "f1": 2 * n_m / (n_a + n_b) if n_a + n_b else nan,
        "n_a": n_a,
        "n_b": n_b,
        "n_matched": n_m,
        "mean_iou": float(np.mean([p[2] for p in pairs])) if pairs else nan,
        "pairs": pairs,
        "ids_a": ids_a,
        "ids_b": ids_b,
        "iou": iou,
    }


#: Soma diameter on the detection grid when the pixel size is unknown, px.
_FALLBACK_DIAMETER_PX = 9.0


def detect_rois(
    movie_ds: xr.DataArray,
    /,
    *,
    diameter_um: float,
    pixel_size_um: float | None,
    factors: Mapping[str, int],
    method: str = "morphology",
    diameter_range: tuple[float, float] = (0.5, 1.6),
) -> list[ImagejRoi]:
    """Find somata in a downsampled movie and return them as Fiji polygon ROIs.

    Chains :func:`summary_images`, :func:`detect_neurons` and :func:`labels_to_rois`:
    the ROIs are drawn on the native grid (scaled by the downsampling ``factors``), so
    they rasterize exactly back to the detected labels and open in Fiji.

    Parameters
    ----------
    movie_ds : xarray.DataArray
        (time, y, x) downsampled movie.
    diameter_um : float
        Typical soma diameter, µm.
    pixel_size_um : float or None
        Native pixel size, µm; when unknown, a diameter of 9 downsampled pixels is
        assumed (with a CalimWarning).
    factors : mapping
        Block-mean factors ``{"y": fy, "x": fx, ...}`` between native and ``movie_ds``.
    method : {"morphology", "correlation"}, optional
        Detection method of :func:`detect_neurons`. Default is "morphology".
    diameter_range : tuple of float, optional
        Smallest and largest soma diameter as multiples of ``diameter_um``
        (:func:`detect_neurons`). Default is (0.5, 1.6).

    Returns
    -------
    list of roifile.ImagejRoi
        One polygon per detected neuron, named ``auto_001``, ``auto_002``, ...;
        empty when none is found.
    """
    fy, fx = int(factors.get("y", 1)), int(factors.get("x", 1))
    if pixel_size_um is not None and math.isfinite(pixel_size_um) and pixel_size_um > 0:
        diameter_px = float(diameter_um) / (float(pixel_size_um) * fy)
    else:
        warnings.warn(f"pixel size unknown: detection assumes a soma diameter of "
                      f"{_FALLBACK_DIAMETER_PX:g} downsampled pixels", CalimWarning,
                      stacklevel=2)
        diameter_px = _FALLBACK_DIAMETER_PX
    labels = detect_neurons(summary_images(movie_ds), diameter_px=diameter_px, method=method,
                            diameter_range=diameter_range)
    if not int(np.asarray(labels).max(initial=0)):
        return []
    return labels_to_rois(np.asarray(labels), scale=(fy, fx))
