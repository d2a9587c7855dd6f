"""Motion correction of the native-resolution movie: rigid and piecewise-rigid (SPEC §4).

Motion is corrected on the native movie, before the block-mean downsampling, in three
steps that the pipeline chains on ``io.open_movie(session)``::

    template = make_template(movie)                  # (y, x) float32, a few hundred frames
    shifts = estimate_shifts(movie, template)        # (time, axis) float64, computed
    corrected = apply_shifts(movie, shifts)          # (time, y, x) float32, lazy

Sign convention
---------------
``shifts`` is the **correction to apply**, in native pixels, ``axis = ["dy", "dx"]``:
the corrected frame is ``corrected(y, x) = frame(y - dy, x - dx)`` (what
``scipy.ndimage.shift(frame, (dy, dx))`` does), i.e. the frame's content is moved by
``+dy`` rows and ``+dx`` columns onto the template. A frame whose content moved by
``(+a, +b)`` relative to the template gets the correction ``(-a, -b)``; for a
:mod:`calim_helpers.demo` session with motion, ``estimate ≈ -truth["shifts"] + const``.
The constant is the template's own position: the template is built from frames spread
over the whole session and re-centred so that the **median** correction of its frames
is zero, i.e. it sits where the movie usually is (where the expert drew the ROIs on the
raw maximum projection), not at the unknown unshifted scene.

Estimation
----------
Each frame is registered to the template by the cross-correlation of band-passed,
edge-tapered images (the criterion of Guizar-Sicairos et al. 2008, with
``normalization=None`` in :func:`skimage.registration.phase_cross_correlation` terms),
a whole dask chunk of frames at a time:

1. binning ``bin_px`` x ``bin_px`` (default 2: 4 times fewer pixels; the low-pass
   below keeps little beyond the binned Nyquist frequency, the error grows by about
   0.0005 px);
2. high-pass in real space: ``frame - gaussian_filter(frame, highpass_sigma)`` (mode
   ``"nearest"``), removing the camera offset, the neuropil, vignetting, bleaching and
   drift, which do not move with the cells or would pin the estimate at zero shift
   (steps 1 and 2 in one compiled pass per frame where numba is installed), then a
   clip of the filtered frame to the template's largest filtered value plus 10 robust
   noise sigmas: a structure the template lacks (a cell silent while it was made that
   fires hugely, debris, a flash) is cut to about the brightest cell's level instead
   of pulling the frame towards itself (8 late frames with a blob 20 times the median
   on 96 x 128 hard-motion sessions, seeds 11-13: 16-39 px RMS error without the
   clip, 0.33-0.68 px with it; 256 x 344 sessions at 100 times: 123-138 px -> 0.08-0.10 px; other
   frames unchanged within 0.0001 px);
3. a Tukey taper (``edge_taper``) so that the frame's border, which does not move with
   the content, is not a feature (subtracting only the mean, the estimates shrink
   towards zero: slope 0.90-0.98 instead of 1.00 on a 64 x 80 demo session);
4. ``scipy.fft.rfft2`` of the block (a tapered frame is padded with zeros to a size
   with small prime factors), low-pass in the Fourier domain (a Gaussian of
   ``lowpass_sigma`` pixels, against shot noise), product with the template's
   spectrum and inverse transform: the integer peak, refined by a parabola;
5. the sub-pixel peak of the *continuous* cross-correlation by Newton's method: the
   band-passed correlation is a finite Fourier series, so its value, gradient and
   Hessian at any shift are exact sums over the spectrum (separable, two small
   matrix products per frame). Unlike an upsampled DFT on a grid of
   ``1 / upsample_factor`` px (which alone adds ``0.05 / sqrt(12)`` = 0.014 px RMS per
   axis at 20) it is not quantized, and costs two or three evaluations;
6. a second pass with the frame's taper moved by the first estimate, so that it
   weights the same content as the template's: a fixed taper pulls the estimate
   towards zero (slope 0.995-0.997 on 256 x 344 frames, 0.98 on 64 x 80). Frames
   whose first estimate is below 5 times the refinement's tolerance (0.025 px at
   ``upsample_factor`` 20) skip it: the pull is then at most a tenth of that
   tolerance, and a still session registers a third faster.

Why not ``normalization="phase"``: the phase correlation whitens the spectrum, so
every frequency counts the same whatever its signal-to-noise ratio, and it cancels any
band-pass; on the demo's shot-noise-limited frames it is 8 times less precise (RMS
0.33 px instead of 0.04 px). The explicit high-pass gives the robustness to
illumination changes that is phase correlation's selling point, and the unnormalized
peak gives a meaningful quality number: ``r``, the normalized cross-correlation of the
filtered frame and template at the peak (skimage's ``error`` is ``sqrt(1 - r**2)``),
returned here as the ``peak_corr`` coordinate (low values flag frames that registered
badly: blur, a z-jump, a flash). :func:`correct_motion` corrects such bad frames by the
shifts interpolated between their good neighbours (:func:`bridge_bad_frames`): 8 frames
with a novel blob 100 times the median, pulled 10-21 px RMS on 96 x 128 hard-motion
sessions even with the clip, come out at 0.56-0.67 px, the size of the simulated
frame-to-frame jitter (0.3 px per axis) that no interpolation recovers.

Resampling
----------
:func:`apply_shifts` resamples each frame by Keys' cubic convolution by default
(``interpolation="cubic"``: separable, compiled, float32; about 0.6 ms per 512 x 688
frame on one core, 42 times less than ``scipy.ndimage.shift``'s cubic spline, which
stays available as ``interpolation="spline"``). Linear interpolation blurs by an
amount that depends on the sub-pixel part of the shift, so sharpness and noise
flicker from frame to frame; the cubic kernels do so much less. A Fourier shift is
exact only for periodic images and wraps the opposite border in. Pixels brought in
from outside the frame repeat the border; the largest correction is recorded in the
attributes so that a border of that width can be discarded. Integer shifts (and
zero) are exact copies.
:func:`make_template` instead averages its frames shifted in the Fourier domain after
padding them by repeating the border (no wrap-around; one transform per frame instead
of a spline resampling, and exact for band-limited content).

Piecewise-rigid
---------------
:func:`piecewise_shifts` registers overlapping patches on a grid, giving a shift
field ``(time, axis, patch_y, patch_x)`` at the patch centres;
:func:`apply_piecewise` interpolates it bilinearly to every pixel and resamples with
``scipy.ndimage.map_coordinates``. Use it when the tissue deforms (different parts of
the frame move differently); the rigid correction is enough for stage drift.

Cost (``benchmarks/bench_registration.py``: 1500 frames of 256 x 344 from the demo
generator, quiet 2-core machine): template and estimation 1640-1726 frames/s on 2
threads, 1154-1210 on one (estimation alone 3140-3184 and 1808-1842), shift error
0.013 px RMS with the demo's motion and 0.010 px with harder motion (drift, three
jumps of 1-3 px, 0.3 px jitter); scikit-image's ``phase_cross_correlation`` frame by
frame against the same template reaches at best 0.021 px (``upsample_factor=100``,
``normalization=None``; 0.10-0.14 px with the default phase normalization) at 186-190
frames/s: 8.6-9.3 times slower (6.1-6.5 times on one thread). The former estimator
(upsampled DFT, factor 20, frame by frame) gave 0.023-0.024 px on such sessions. A
multithreaded BLAS slows the estimation under dask's threads; ``threadpoolctl``
prevents it.

References
----------
M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
registration algorithms", Optics Letters 33:156-158 (2008). :DOI:`10.1364/OL.33.000156`

Examples
--------
>>> from calim_helpers import demo
>>> s = demo.simulate_session(60, (48, 64), 2, motion=True, seed=1)
>>> movie = xr.DataArray(demo.render_frames(s, 0, 60), dims=("time", "y", "x"))
>>> template = make_template(movie, n_frames=30)
>>> shifts = estimate_shifts(movie, template)
>>> shifts.dims, shifts.axis.values.tolist()
(('time', 'axis'), ['dy', 'dx'])
>>> error = shifts.values + s.shifts          # correction = -motion + constant
>>> bool(np.abs(error - np.median(error, axis=0)).max() < 0.3)
True
>>> corrected = apply_shifts(movie, shifts)    # lazy, float32
>>> corrected.dtype, corrected.chunks is not None
(dtype('float32'), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import fft as sfft
from scipy import ndimage
from threadpoolctl import threadpool_limits

from calim_helpers.compiled import HAVE_NUMBA, jit

__all__ = [
    "AXES",
    "apply_piecewise",
    "correct_motion",
    "bridge_bad_frames",
    "apply_shifts",
    "estimate_shifts",
    "make_template",
    "piecewise_shifts",
    "template_correlation",
]

AXES = ("dy", "dx")
_TEMPLATE_PIECES = 8  # dask chunks the template's frames are cut into
_MIN_BINNED = 32  # binning never leaves fewer pixels than this along an axis
_BATCH = 32  # frames registered together (one batch of FFTs)
_MEDIAN_ROWS = 32  # rows of the template's frames whose median is taken at a time
_CONVENTION = "correction to apply: corrected(y, x) = frame(y - dy, x - dx), native pixels"
_COMPILED_HIGHPASS = HAVE_NUMBA  # False: bin and high-pass with numpy and scipy.ndimage
_TRUNCATE = 4.0  # the high-pass Gaussian's radius in standard deviations (scipy's default)
# The second, window-following pass of the registration runs on frames whose first
# estimate is at least this many times the refinement's tolerance: a fixed window pulls
# an estimate s towards zero by at most 2 % of s (64 x 80 frames; 0.3-0.5 % at 256 x 344),
# a tenth of the tolerance at most below it. Still frames save a third of their time.
_FOLLOW_MIN = 5.0
# Filtered frames are clipped to the template's largest filtered value plus this many
# robust noise sigmas before the correlation (step 2 of the estimation in the module
# docstring); measured in tests/test_registration.py and the docstring.
_OUTLIER_CLIP = 10.0


# --------------------------------------------------------------------------- validation


def _check_movie(movie: xr.DataArray) -> None:
    if not isinstance(movie, xr.DataArray):
        raise TypeError(f"movie must be an xarray.DataArray, got {type(movie).__name__}")
    if movie.dims != ("time", "y", "x"):
        raise ValueError(f"movie must have dims ('time', 'y', 'x'), got {movie.dims}")
    if min(movie.shape) < 1:
        raise ValueError(f"movie must not be empty, got shape {movie.shape}")


def _check_template(template: np.ndarray | xr.DataArray, movie: xr.DataArray) -> np.ndarray:
    arr = np.asarray(template, dtype=np.float32)
    frame = (movie.sizes["y"], movie.sizes["x"])
    if arr.shape != frame:
        raise ValueError(f"template must have the movie's frame shape {frame}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("template must be finite")
    return arr


def _check_filter(
    *, upsample_factor: int, highpass_sigma: float | None, lowpass_sigma: float | None,
    edge_taper: float, max_shift_px: float | None = None,
) -> None:
    if not isinstance(upsample_factor, int | np.integer) or upsample_factor < 1:
        raise ValueError(f"upsample_factor must be an integer >= 1, got {upsample_factor!r}")
    if highpass_sigma is not None and not highpass_sigma > 0:
        raise ValueError(f"highpass_sigma must be > 0 or None, got {highpass_sigma!r}")
    if lowpass_sigma is not None and not lowpass_sigma >= 0:
        raise ValueError(f"lowpass_sigma must be >= 0 or None, got {lowpass_sigma!r}")
    if not 0 <= edge_taper <= 1:
        raise ValueError(f"edge_taper must lie in [0, 1], got {edge_taper!r}")
    if max_shift_px is not None and not max_shift_px > 0:
        raise ValueError(f"max_shift_px must be > 0 or None, got {max_shift_px!r}")


def _check_bin(bin_px: int, shape: tuple[int, int]) -> int:
    """Return the binning used: ``bin_px``, reduced to keep >= 32 px per axis."""
    if isinstance(bin_px, bool) or not isinstance(bin_px, int | np.integer) or bin_px < 1:
        raise ValueError(f"bin_px must be an integer >= 1, got {bin_px!r}")
    return int(max(1, min(bin_px, min(shape) // _MIN_BINNED)))


def _shift_array(shifts: xr.DataArray | np.ndarray, n_frames: int, name: str) -> np.ndarray:
    if isinstance(shifts, xr.DataArray):
        if shifts.dims != ("time", "axis"):
            raise ValueError(f"{name} must have dims ('time', 'axis'), got {shifts.dims}")
        if "axis" in shifts.coords and list(shifts["axis"].values) != list(AXES):
            raise ValueError(f"{name} axis must be {list(AXES)}, got {list(shifts.axis.values)}")
    arr = np.asarray(shifts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (time, 2), got {arr.shape}")
    if arr.shape[0] != n_frames:
        raise ValueError(f"{name} has {arr.shape[0]} frames, the movie has {n_frames}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite")
    return arr


# --------------------------------------------------------------------------- the core


class _Registrar:
    """Batched band-passed cross-correlation of frames (or patches) with a template.

    Every frame of a block is binned ``bin_px`` x ``bin_px``, high-passed (or its mean
    removed), cropped to each box and tapered; the spectra of the whole block are
    computed at once (``scipy.fft.rfft2``), low-passed, multiplied with the template's,
    and inverse transformed to find the integer peak; the sub-pixel peak of the
    continuous (band-limited) cross-correlation is then found by Newton's method.
    """

    def __init__(
        self, template: np.ndarray, boxes: Sequence[tuple[slice, slice]], *,
        upsample_factor: int, highpass_sigma: float | None, lowpass_sigma: float | None,
        edge_taper: float, bin_px: int = 1, binned_template: bool = False,
    ) -> None:
        self.boxes = list(boxes)
        self.bin_px = int(bin_px)
        self.highpass_sigma = highpass_sigma
        self.edge_taper = float(edge_taper)
        self.follow = self.edge_taper > 0
        self.tol = 0.1 / (int(upsample_factor) * self.bin_px)  # binned px
        by, bx = self.boxes[0]
        self.shape = ((by.stop - by.start) // self.bin_px, (bx.stop - bx.start) // self.bin_px)
        h, w = self.shape
        self.window = np.outer(_tukey(np.arange(h), edge_taper),
                               _tukey(np.arange(w), edge_taper)).astype(np.float32)
        # A tapered frame ends in zeros, so padding it with zeros to sizes with small
        # prime factors changes nothing but the speed of the transforms (344 = 8 x 43
        # binned columns: 0.46 + 0.66 ms for a forward and an inverse transform, 0.33 +
        # 0.32 ms at 360). An untapered frame keeps its size: padding would add edges.
        self.fft_shape = ((sfft.next_fast_len(h), sfft.next_fast_len(w, real=True))
                          if self.follow else (h, w))
        fh, fw = self.fft_shape
        # frequencies in cycles per binned pixel; the filters are specified in native px
        self.ky = sfft.fftfreq(fh)
        self.kx = sfft.rfftfreq(fw)
        k2 = (self.ky[:, None] ** 2 + self.kx[None, :] ** 2) / self.bin_px**2
        gain = np.exp(-2 * np.pi**2 * (lowpass_sigma or 0.0) ** 2 * k2)
        # rfft2 holds half the spectrum: the other columns count twice
        self.weight = np.full(len(self.kx), 2.0)
        self.weight[0] = 1.0
        if fw % 2 == 0:
            self.weight[-1] = 1.0
        self.power_filter = (gain**2).astype(np.float32)
        filtered = self._filtered(np.asarray(template, dtype=np.float32)[None],
                                  binned=binned_template)
        # the template's largest filtered value per box: what an aligned cell reaches
        self.peak = np.abs(filtered).max(axis=(-2, -1))[0].astype(np.float32)
        spectrum = self._tapered_spectra(filtered, self.window)[0]
        self.reference = (spectrum * self.power_filter).astype(np.complex64)
        self.reference_energy = self._energy(spectrum)

    def _filtered(self, block: np.ndarray, binned: bool = False) -> np.ndarray:
        """``(t, n_boxes, h, w)`` float32: binned, high-passed, cropped (not tapered).

        ``binned``: the block is binned already (binned pixels, e.g. a template).
        """
        b = self.bin_px
        h, w = self.shape
        frames = np.asarray(block)
        if self.highpass_sigma is not None and _COMPILED_HIGHPASS:
            frames = _bin_highpass(frames, 1 if binned else b, self.highpass_sigma / b)
        else:
            frames = _bin_sum(frames, 1 if binned else b)
        if self.highpass_sigma is not None and not _COMPILED_HIGHPASS:
            s = self.highpass_sigma / b
            frames -= ndimage.gaussian_filter(frames, (0, s, s), mode="nearest",
                                              truncate=_TRUNCATE)
        out = np.empty((frames.shape[0], len(self.boxes), h, w), dtype=np.float32)
        for k, (sy, sx) in enumerate(self.boxes):
            patch = frames[:, sy.start // b:sy.start // b + h, sx.start // b:sx.start // b + w]
            if self.highpass_sigma is None:
                patch = patch - patch.mean(axis=(1, 2), keepdims=True)
            out[:, k] = patch
        return out

    def _spectra(self, block: np.ndarray, binned: bool = False) -> np.ndarray:
        return self._tapered_spectra(self._filtered(block, binned), self.window)

    def _tapered_spectra(self, filtered: np.ndarray, window: np.ndarray,
                         window_x: np.ndarray | None = None) -> np.ndarray:
        """Spectra of ``filtered * window`` (``* window_x``) zero-padded to ``fft_shape``.

        The product is written straight into the padded array (no second copy).
        """
        h, w = self.shape
        padded = np.zeros((*filtered.shape[:-2], *self.fft_shape), dtype=np.float32)
        inside = padded[..., :h, :w]
        np.multiply(filtered, window, out=inside)
        if window_x is not None:
            inside *= window_x
        return sfft.rfft2(padded, workers=1, overwrite_x=True)

    def _energy(self, spectra: np.ndarray) -> np.ndarray:
        """Band-passed energy (Parseval sum over the full spectrum) of each spectrum."""
        power = (spectra.real**2 + spectra.imag**2) * self.power_filter
        return power.sum(axis=-2, dtype=np.float64) @ self.weight

    def register(self, block: np.ndarray) -> np.ndarray:
        """``(t, n_boxes, 3)`` float64: correction ``(dy, dx)`` and peak correlation.

        Two passes: the first with the window fixed on the frame, the second with the
        frame's window moved by the first estimate so that it covers the same content
        as the template's (a fixed window pulls the estimate towards zero by up to a
        few per cent of the shift on small frames). Frames (or patches) whose first
        estimate is below :data:`_FOLLOW_MIN` times the refinement's tolerance skip the
        second pass: there the pull is a tenth of that tolerance or less.
        """
        h, w = self.shape
        filtered = self._filtered(block)
        _clip_outliers(filtered, self.peak)
        spectra = self._tapered_spectra(filtered, self.window)
        energy = self._energy(spectra)
        product = self._product(spectra)  # (t, n_boxes, fh, fw // 2 + 1)
        cc = sfft.irfft2(product, s=self.fft_shape, workers=1)
        cc = cc.reshape(*product.shape[:2], -1)
        shift, value = self._refine(product, _parabolic_peak(cc, self.fft_shape))
        moved = (np.abs(shift).max(axis=-1) >= _FOLLOW_MIN * self.tol) if self.follow else None
        if moved is not None and moved.any():
            some = () if moved.all() else np.nonzero(moved)  # all: no copies
            s = shift[some]
            wy = _tukey(np.arange(h) + s[..., 0, None], self.edge_taper).astype(np.float32)
            wx = _tukey(np.arange(w) + s[..., 1, None], self.edge_taper).astype(np.float32)
            spectra = self._tapered_spectra(filtered[some], wy[..., :, None], wx[..., None, :])
            energy[some] = self._energy(spectra)
            # the selected boxes' own spectra (one box: it broadcasts as it is)
            reference = self.reference[some[1]] if some and len(self.boxes) > 1 else None
            shift[some], value[some] = self._refine(self._product(spectra, reference), s)
        out = np.empty((*shift.shape[:-1], 3))
        out[..., :2] = shift * self.bin_px
        den = np.sqrt(energy * self.reference_energy)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., 2] = np.where(den > 0, np.clip(value / den, 0.0, 1.0), 0.0)
        out[~(den > 0), :2] = 0.0
        return out

    def _product(self, spectra: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Return the template's spectrum times the conjugate of ``spectra``, in place.

        ``reference``: the template's spectra that go with ``spectra`` when these are a
        selection of frames and boxes (default: all of :attr:`reference`, one per box).
        """
        np.conjugate(spectra, out=spectra)
        spectra *= self.reference if reference is None else reference
        return spectra

    def _evaluate(self, product: np.ndarray, shift: np.ndarray):
        """Continuous cross-correlation, gradient and Hessian at ``shift`` (binned px)."""
        two_pi = 2 * np.pi
        ex = np.exp(1j * two_pi * shift[..., 1, None] * self.kx) * self.weight
        ey = np.exp(1j * two_pi * shift[..., 0, None] * self.ky)
        vx = np.stack([ex, ex * self.kx, ex * self.kx**2], axis=-1).astype(np.complex64)
        q = np.matmul(product, vx).astype(np.complex128)  # (..., h, 3)
        qy = np.stack([ey, ey * self.ky, ey * self.ky**2], axis=-2)  # (..., 3, h)
        m = np.matmul(qy, q)  # m[a, b] = sum ky^a kx^b ey ex P
        value = m[..., 0, 0].real
        grad = np.stack([(1j * two_pi * m[..., 1, 0]).real,
                         (1j * two_pi * m[..., 0, 1]).real], axis=-1)
        hyy = (-(two_pi**2) * m[..., 2, 0]).real
        hxx = (-(two_pi**2) * m[..., 0, 2]).real
        hxy = (-(two_pi**2) * m[..., 1, 1]).real
        return value, grad, hyy, hxx, hxy

    def _refine(self, product: np.ndarray, shift: np.ndarray, max_iter: int = 6):
        """Newton's method from the parabolic estimate to the continuous maximum.

        The band-passed cross-correlation is a finite Fourier series, so its value and
        derivatives at any shift are exact sums over the spectrum (separable: two small
        matrix products per frame); the iteration converges quadratically and stops
        when no step exceeds ``self.tol``.
        """
        shift = shift.copy()
        for _ in range(max_iter):
            value, grad, hyy, hxx, hxy = self._evaluate(product, shift)
            det = hyy * hxx - hxy**2
            ok = (det > 0) & (hyy < 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                sy = np.where(ok, -(hxx * grad[..., 0] - hxy * grad[..., 1]) / det, 0.0)
                sx = np.where(ok, -(hyy * grad[..., 1] - hxy * grad[..., 0]) / det, 0.0)
            step = np.clip(np.stack([sy, sx], axis=-1), -0.5, 0.5)
            shift += step
            if np.abs(step).max(initial=0.0) < self.tol:
                break
        return shift, value  # the peak value one (negligible) step before the end


def _clip_outliers(filtered: np.ndarray, peak: np.ndarray) -> None:
    """Clip filtered frames in place to the template's peak plus ``_OUTLIER_CLIP`` sigmas.

    ``filtered`` is ``(t, n_boxes, h, w)``, high-passed (median near 0), ``peak`` the
    template's largest absolute filtered value per box, ``(n_boxes,)``; sigma is each
    frame's (box's) robust noise level, 1.4826 times the median of ``|filtered|`` over
    every third pixel in each direction. An aligned cell reaches about ``peak`` plus its
    noise and is left alone; a structure the template lacks, far brighter than anything
    in it, is cut down to about the brightest cell's level.
    """
    t, n, h, w = filtered.shape
    sample = np.abs(filtered[..., ::3, ::3]).reshape(t, n, -1)
    limit = peak + (_OUTLIER_CLIP * 1.4826) * np.median(sample, axis=-1)
    limit = limit.astype(np.float32)[..., None, None]
    np.clip(filtered, -limit, limit, out=filtered)


def _bin_sum(frames: np.ndarray, bin_px: int) -> np.ndarray:
    """``(..., ny // bin_px, nx // bin_px)`` float32: sums over ``bin_px`` x ``bin_px`` blocks.

    A partial block at the bottom or right edge is dropped.
    """
    if bin_px == 1:
        return np.asarray(frames, dtype=np.float32)
    ny, nx = (frames.shape[-2] // bin_px) * bin_px, (frames.shape[-1] // bin_px) * bin_px
    rows = frames[..., 0:ny:bin_px, :].astype(np.float32)
    for k in range(1, bin_px):
        rows += frames[..., k:ny:bin_px, :]
    out = rows[..., 0:nx:bin_px].copy()
    for k in range(1, bin_px):
        out += rows[..., k:nx:bin_px]
    return out


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Return normalized Gaussian weights at ``-r .. r`` px, ``r = int(4 sigma + 0.5)``.

    The kernel of ``scipy.ndimage.gaussian_filter1d(..., truncate=_TRUNCATE)``: samples of
    ``exp(-x**2 / (2 sigma**2))`` divided by their sum.
    """
    radius = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def _bin_highpass(frames: np.ndarray, bin_px: int, sigma: float) -> np.ndarray:
    """``(t, ny // bin_px, nx // bin_px)`` float32: frames binned, minus their Gaussian blur.

    What the numpy path of :meth:`_Registrar._filtered` computes (sums over ``bin_px`` x
    ``bin_px`` blocks, then ``frame - gaussian_filter(frame, sigma, mode="nearest")``
    along both axes, ``sigma`` in binned px) in one compiled pass per frame, with float32
    sums: 0.6 ms instead of 1.4 ms for a 512 x 688 uint16 frame at ``bin_px = 2`` and
    ``sigma = 2.5`` on one core.
    """
    t, ny, nx = frames.shape
    out = np.empty((t, ny // bin_px, nx // bin_px), dtype=np.float32)
    _bin_highpass_block(np.ascontiguousarray(frames), int(bin_px), _gaussian_kernel(sigma), out)
    return out


@jit
def _bin_highpass_block(frames: np.ndarray, b: int, kernel: np.ndarray,
                        out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Fill ``out`` (t, h, w) with the binned frames minus their separable blur.

    Each frame's binned rows are summed into ``binned``, the frame's mean subtracted
    (which the high-pass removes anyway: a constant frame gives exactly 0, and the
    float32 sums are smaller) and blurred along y into ``blur`` (rows beyond the frame
    repeat the border row); each blurred row is then padded by repeating its end
    pixels, blurred along x and subtracted from the binned row. The innermost loops run
    along contiguous rows.
    """
    nt, h, w = out.shape
    r = (kernel.shape[0] - 1) // 2
    binned = np.empty((h, w), dtype=np.float32)
    blur = np.empty((h, w), dtype=np.float32)
    padded = np.empty(w + 2 * r, dtype=np.float32)
    for k in range(nt):
        for i in range(h):
            row = binned[i]
            row[:] = 0.0
            for v in range(b):
                src = frames[k, i * b + v]
                for u in range(b):
                    for j in range(w):
                        row[j] += np.float32(src[j * b + u])
        total = 0.0  # float64: the mean of a constant frame is that constant exactly
        for i in range(h):
            for j in range(w):
                total += binned[i, j]
        level = np.float32(total / (h * w))
        binned -= level  # the output of a constant frame is exactly 0
        for i in range(h):
            acc = blur[i]
            acc[:] = 0.0
            for m in range(2 * r + 1):
                c = kernel[m]
                src = binned[min(max(i + m - r, 0), h - 1)]
                for j in range(w):
                    acc[j] += c * src[j]
        for i in range(h):
            row = blur[i]
            padded[:r] = row[0]
            padded[w + r:] = row[w - 1]
            padded[r:w + r] = row
            dst = out[k, i]
            dst[:] = binned[i]
            for m in range(2 * r + 1):
                c = kernel[m]
                for j in range(w):
                    dst[j] -= c * padded[j + m]


def _tukey(position: np.ndarray, alpha: float) -> np.ndarray:
    """Tukey window of ``position.shape[-1]`` samples evaluated at any ``position``.

    Equals ``scipy.signal.windows.tukey(n, alpha)`` at ``position = arange(n)``; zero
    outside ``[0, n - 1]``, so a window moved by a fraction of a pixel is continuous.
    """
    n = position.shape[-1]
    x = np.minimum(position, (n - 1) - position)  # distance from the nearer end
    width = alpha * (n - 1) / 2
    if width <= 0:
        return ((x >= 0) * 1.0).astype(np.float64)
    ramp = 0.5 * (1 - np.cos(np.pi * np.clip(x, 0, None) / width))
    return np.where(x >= width, 1.0, np.where(x < 0, 0.0, ramp))


def _parabolic_peak(cc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Signed ``(..., 2)`` peak of flattened circular correlations, parabola-refined."""
    h, w = shape
    peak = np.argmax(cc, axis=-1)
    py, px = np.unravel_index(peak, (h, w))
    out = np.empty((*peak.shape, 2))
    centre = np.take_along_axis(cc, peak[..., None], axis=-1)[..., 0]
    for k, (p, n, other) in enumerate(((py, h, px * 1), (px, w, py * 1))):
        side = []
        for d in (-1, 1):
            q = (p + d) % n
            index = q * w + other if k == 0 else other * w + q
            side.append(np.take_along_axis(cc, index[..., None], axis=-1)[..., 0])
        curv = side[0] + side[1] - 2 * centre
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(curv < 0, 0.5 * (side[0] - side[1]) / curv, 0.0)
        signed = (p + n // 2) % n - n // 2
        out[..., k] = signed + np.clip(frac, -0.5, 0.5)
    return out


def _register_block(block: np.ndarray, registrar: _Registrar) -> np.ndarray:
    """``(t, n_boxes * 3)`` float64 for a ``(t, y, x)`` block, ``_BATCH`` frames at once.

    The batch bounds the temporaries (a few float32 and complex64 copies of the
    batch) whatever the size of the movie's chunks.
    """
    out = np.empty((block.shape[0], len(registrar.boxes) * 3))
    for start in range(0, block.shape[0], _BATCH):
        part = block[start:start + _BATCH]
        out[start:start + len(part)] = registrar.register(part).reshape(len(part), -1)
    return out


def _full_frames(movie: xr.DataArray) -> da.Array:
    """Return the movie as a dask array whose chunks hold whole frames."""
    data = movie.data
    if not isinstance(data, da.Array):
        return da.from_array(data, chunks=(-1, -1, -1))
    return data.rechunk({1: -1, 2: -1})


def _single_threaded_blas() -> AbstractContextManager:
    """Limit BLAS to one thread while dask's threads register frames.

    The sub-pixel refinement is two small matrix products per frame; a multithreaded
    BLAS under dask's own threads oversubscribes the cores and makes registration about
    four times slower (measured: 40 vs 9 ms per 512 x 688 frame on 2 cores).
    """
    return threadpool_limits(limits=1, user_api="blas")


def _register_movie(movie: xr.DataArray, registrar: _Registrar) -> np.ndarray:
    """``(time, n_boxes, 3)``, computed chunk by chunk on whole frames."""
    data = _full_frames(movie)
    n_out = len(registrar.boxes) * 3
    res = da.map_blocks(_register_block, data, registrar=registrar, dtype=np.float64,
                        drop_axis=(1, 2), new_axis=1, chunks=(data.chunks[0], (n_out,)))
    with _single_threaded_blas():
        out = np.asarray(res.compute())
    return out.reshape(movie.sizes["time"], len(registrar.boxes), 3)


def _clip(shifts: np.ndarray, max_shift_px: float | None) -> np.ndarray:
    """Clip ``shifts[..., :2]`` in place to ``max_shift_px``; return the clipped mask."""
    if max_shift_px is None:
        return np.zeros(shifts.shape[:-1], dtype=bool)
    clipped = np.any(np.abs(shifts[..., :2]) > max_shift_px, axis=-1)
    np.clip(shifts[..., :2], -max_shift_px, max_shift_px, out=shifts[..., :2])
    return clipped


def _whole_frame(movie: xr.DataArray) -> list[tuple[slice, slice]]:
    return [(slice(0, movie.sizes["y"]), slice(0, movie.sizes["x"]))]


# --------------------------------------------------------------------------- template


def _fourier_mean(frames: np.ndarray, shifts: np.ndarray, piece: int = 8,
                  bin_px: int = 1) -> np.ndarray:
    """Mean of ``frames`` each moved by its correction, by Fourier shifts, float32.

    Each frame is padded by repeating its border (at least ``ceil(max |shift|) + 2``
    px, so that content does not wrap around), its spectrum multiplied by the phase
    ramp of its shift; the spectra are summed ``piece`` frames at a time and
    transformed back once. (8 full-size frames at a time: the template's peak of
    memory in the load step is 36 MB lower than at 16, in the same time.) With
    ``bin_px`` > 1 the frames are first binned (:func:`_bin_sum`) and the shifts
    (native px) divided by ``bin_px``: the mean of the binned frames,
    ``(ny // bin_px, nx // bin_px)``.
    """
    shifts = np.asarray(shifts) / bin_px
    ny, nx = frames.shape[1] // bin_px, frames.shape[2] // bin_px
    pad = int(math.ceil(np.abs(shifts).max(initial=0.0))) + 2
    shape = (sfft.next_fast_len(ny + 2 * pad, real=True),
             sfft.next_fast_len(nx + 2 * pad, real=True))
    widths = ((0, 0), (pad, shape[0] - ny - pad), (pad, shape[1] - nx - pad))
    ky, kx = sfft.fftfreq(shape[0]), sfft.rfftfreq(shape[1])
    total = np.zeros((shape[0], len(kx)), dtype=np.complex128)
    for start in range(0, len(frames), piece):
        block = np.pad(_bin_sum(frames[start:start + piece], bin_px), widths, mode="edge")
        spectra = sfft.rfft2(block, workers=1)
        s = shifts[start:start + piece]
        spectra *= np.exp(-2j * np.pi * s[:, 0, None] * ky).astype(np.complex64)[:, :, None]
        spectra *= np.exp(-2j * np.pi * s[:, 1, None] * kx).astype(np.complex64)[:, None, :]
        total += spectra.sum(axis=0)
    mean = sfft.irfft2(total / len(frames), s=shape, workers=1)
    return mean[pad:pad + ny, pad:pad + nx].astype(np.float32)


def _read_frames(movie: xr.DataArray, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` (increasing) of the movie, read one dask chunk at a time.

    Filled into one array: reading them in one go holds whole chunks and the pieces
    of the result besides the result (twice its size at the peak).
    """
    out = np.empty((len(index), movie.sizes["y"], movie.sizes["x"]), dtype=movie.dtype)
    data = movie.data
    bounds = (np.cumsum((0, *data.chunks[0])) if isinstance(data, da.Array)
              else np.array([0, movie.sizes["time"]]))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        inside = np.flatnonzero((index >= lo) & (index < hi))
        if inside.size:
            want = index[inside]
            steps = np.unique(np.diff(want))
            # a strided slice reaches the file as one (only those frames are read)
            part = (data[want[0]:want[-1] + 1:int(steps[0]) if steps.size else 1]
                    if steps.size <= 1 else data[want])
            out[inside] = part.compute() if isinstance(part, da.Array) else part
    return out


def _pieces(frames: np.ndarray, chunk: int) -> da.Array:
    """Wrap ``frames`` in a dask array of ``chunk`` frames per chunk, sharing its memory.

    (``da.from_array`` copies a numpy array: 141 MB more for 200 full-size frames.) The
    tasks are named at random (``pure=False``): a pure task's name would hash ``frames``
    (1.1 s for 200 full-size frames, cProfile of the load step).
    """
    def piece(start: int) -> np.ndarray:
        return frames[start:start + chunk]

    return da.concatenate([
        da.from_delayed(dask.delayed(piece, pure=False)(start),
                        shape=(min(chunk, len(frames) - start), *frames.shape[1:]),
                        dtype=frames.dtype)
        for start in range(0, len(frames), chunk)])


def make_template(
    movie: xr.DataArray,
    /,
    *,
    n_frames: int = 200,
    n_iter: int = 2,
    upsample_factor: int = 10,
    highpass_sigma: float | None = 5.0,
    lowpass_sigma: float | None = 1.0,
    edge_taper: float = 0.25,
    order: int | None = None,
    bin_px: int = 2,
) -> xr.DataArray:
    """Registration template: frames spread over the session, registered and averaged.

    Reads ``n_frames`` evenly spaced frames (a strided slice, so a lazy movie reads
    only those), starts from their pixel-wise median (robust to transients), then
    ``n_iter`` times registers them to the current template and averages the
    registered frames. The last average is re-centred so that the median correction
    of the chosen frames is zero: the template sits where the movie usually is. The
    median and the averages before the last are taken of frames binned as the
    registration bins them (``bin_px``); only the last average is at native resolution.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, any numeric dtype, numpy- or dask-backed.
    n_frames : int, optional
        Number of frames used (all when the movie is shorter). Default is 200.
    n_iter : int, optional
        Register-and-average iterations; 0 returns the median. Default is 2.
    upsample_factor : int, optional
        Precision of the template frames' registration: the sub-pixel refinement stops
        when its step falls below ``0.1 / upsample_factor`` px. Default is 10.
    highpass_sigma, lowpass_sigma, edge_taper : optional
        Pre-filtering, see :func:`estimate_shifts`. Defaults are 5.0, 1.0 and 0.25.
    order : int, optional
        How the frames are shifted before averaging: None shifts them in the Fourier
        domain (exact for band-limited content; the frame is first padded by repeating
        its border, as ``mode="nearest"``), an integer is the spline order of
        :func:`apply_shifts`. Default is None.
    bin_px : int, optional
        Binning of the frames for the registration, see :func:`estimate_shifts`.
        Default is 2.

    Returns
    -------
    xarray.DataArray
        Dims ``("y", "x")``, float32, the movie's ``y``/``x`` coordinates; ``attrs``
        ``template_frames`` (indices used) and ``template_n_iter``.

    Raises
    ------
    ValueError
        If the movie's dims are not ``("time", "y", "x")`` or a parameter is out of range.
    """
    _check_movie(movie)
    _check_filter(upsample_factor=upsample_factor, highpass_sigma=highpass_sigma,
                  lowpass_sigma=lowpass_sigma, edge_taper=edge_taper)
    bin_px = _check_bin(bin_px, (movie.sizes["y"], movie.sizes["x"]))
    if order is not None:
        _check_resampling(order, "nearest")
    if not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    if not isinstance(n_iter, int | np.integer) or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    nt = movie.sizes["time"]
    step = max(1, nt // n_frames)
    start = (nt - step * (min(n_frames, nt) - 1) - 1) // 2
    picked = slice(start, start + step * min(n_frames, nt), step)
    frames = _read_frames(movie, np.arange(nt)[picked])
    index = np.arange(nt)[picked]

    # The references the frames are registered to are binned as the registration bins
    # the frames (4 times fewer pixels to take the median of and to average at 2); only
    # the template returned is averaged at native resolution.
    b = bin_px if order is None and n_iter > 0 else 1
    template = np.empty((frames.shape[1] // b, frames.shape[2] // b), dtype=np.float32)
    for r in range(0, len(template), _MEDIAN_ROWS):  # the median copies only these rows
        rows = _bin_sum(frames[:, r * b:(r + _MEDIAN_ROWS) * b], b)
        template[r:r + _MEDIAN_ROWS] = np.median(rows, axis=0)
    # a few chunks so that dask's threads share the work
    chunk = -(-len(frames) // _TEMPLATE_PIECES)
    stack = xr.DataArray(_pieces(frames, chunk), dims=movie.dims)
    for it in range(n_iter):
        registrar = _Registrar(template, _whole_frame(movie), upsample_factor=upsample_factor,
                               highpass_sigma=highpass_sigma, lowpass_sigma=lowpass_sigma,
                               edge_taper=edge_taper, bin_px=bin_px, binned_template=b > 1)
        shifts = _register_movie(stack, registrar)[:, 0, :2]
        shifts -= np.median(shifts, axis=0)
        if order is None:
            template = _fourier_mean(frames, shifts, bin_px=1 if it == n_iter - 1 else b)
        else:
            registered = apply_shifts(stack, shifts, interpolation="spline", order=order)
            template = registered.data.mean(axis=0, dtype=np.float64).astype(np.float32)
            template = template.compute()
    return xr.DataArray(
        template, dims=("y", "x"), coords={d: movie[d] for d in ("y", "x") if d in movie.coords},
        attrs={"template_frames": index.tolist(), "template_n_iter": int(n_iter)},
        name="template")


# --------------------------------------------------------------------------- rigid


def estimate_shifts(
    movie: xr.DataArray,
    template: np.ndarray | xr.DataArray,
    /,
    *,
    upsample_factor: int = 20,
    max_shift_px: float | None = None,
    highpass_sigma: float | None = 5.0,
    lowpass_sigma: float | None = 1.0,
    edge_taper: float = 0.25,
    bin_px: int = 2,
) -> xr.DataArray:
    """Rigid sub-pixel correction of every frame towards ``template``.

    Computed chunk by chunk (whole frames, the movie's time chunks) and returned
    computed: the result is small.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, any numeric dtype, numpy- or dask-backed.
    template : ndarray or xarray.DataArray, shape (y, x)
        Reference frame, e.g. from :func:`make_template`.
    upsample_factor : int, optional
        Precision of the sub-pixel refinement: Newton's method stops when its step
        falls below ``0.1 / upsample_factor`` px. Default is 20.
    max_shift_px : float, optional
        Largest plausible correction per axis, pixels. Larger estimates are clipped to
        it and flagged in the ``clipped`` coordinate. Default is None (no limit).
    highpass_sigma : float, optional
        Standard deviation, pixels, of the Gaussian whose blur is subtracted from every
        frame and the template before registration (removes slow spatial structure:
        offset, neuropil, bleaching). Keep it below the cell radius. None subtracts
        only the mean. Default is 5.0.
    lowpass_sigma : float, optional
        Standard deviation, pixels, of the Gaussian low-pass against shot noise;
        None or 0 disables it. Default is 1.0.
    edge_taper : float, optional
        Fraction of each axis tapered by the Tukey window (half on each side); 0 is
        no taper. Default is 0.25.
    bin_px : int, optional
        Frames and template are summed over ``bin_px`` x ``bin_px`` blocks before the
        registration (4 times fewer pixels at 2; the band-pass above already removes
        most of what binning loses). Reduced as needed to keep at least 32 binned
        pixels per axis; the value used is in the attributes. Default is 2.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "axis")``, float64, pixels, ``axis = ["dy", "dx"]``: the
        correction to apply, ``corrected(y, x) = frame(y - dy, x - dx)``. The movie's
        ``time`` coordinate; non-dimension coordinates ``peak_corr`` (time, float64,
        normalized cross-correlation of the filtered frame and template at the peak,
        in [0, 1]) and ``clipped`` (time, bool). ``attrs`` record the convention and
        the parameters.

    Raises
    ------
    ValueError
        If the dims, the template's shape or a parameter is wrong.
    """
    _check_movie(movie)
    ref = _check_template(template, movie)
    _check_filter(upsample_factor=upsample_factor, highpass_sigma=highpass_sigma,
                  lowpass_sigma=lowpass_sigma, edge_taper=edge_taper, max_shift_px=max_shift_px)
    bin_px = _check_bin(bin_px, ref.shape)
    registrar = _Registrar(ref, _whole_frame(movie), upsample_factor=upsample_factor,
                           highpass_sigma=highpass_sigma, lowpass_sigma=lowpass_sigma,
                           edge_taper=edge_taper, bin_px=bin_px)
    res = _register_movie(movie, registrar)[:, 0, :]
    clipped = _clip(res, max_shift_px)
    coords = {"axis": list(AXES), "peak_corr": ("time", res[:, 2]), "clipped": ("time", clipped)}
    if "time" in movie.coords:
        coords["time"] = movie["time"]
    return xr.DataArray(
        res[:, :2], dims=("time", "axis"), coords=coords, name="shifts",
        attrs={"units": "px", "convention": _CONVENTION, "method": "rigid",
               "upsample_factor": int(upsample_factor),
               "max_shift_px": "none" if max_shift_px is None else float(max_shift_px),
               "highpass_sigma": "none" if highpass_sigma is None else float(highpass_sigma),
               "lowpass_sigma": "none" if lowpass_sigma is None else float(lowpass_sigma),
               "edge_taper": float(edge_taper), "bin_px": bin_px})


def _shift_frame(frame: np.ndarray, shift: np.ndarray, *, order: int, mode: str,
                 output: np.ndarray | None = None) -> np.ndarray:
    """``ndimage.shift`` to float32; integer shifts are exact copies (order 0)."""
    if output is None:
        output = np.empty(frame.shape, dtype=np.float32)
    exact = bool(np.all(shift == np.round(shift)))
    ndimage.shift(frame, shift, output=output, order=0 if exact else order, mode=mode)
    return output


def _spline_block(block: np.ndarray, shifts: np.ndarray, *, order: int, mode: str) -> np.ndarray:
    out = np.empty(block.shape, dtype=np.float32)
    for k in range(block.shape[0]):
        _shift_frame(block[k], shifts[k, 0], order=order, mode=mode, output=out[k])
    return out


@jit(inline=True)
def _keys_weights(t: float) -> tuple[float, float, float, float]:  # pragma: no cover
    """Weights of the samples at ``-1, 0, 1, 2`` for a point ``t`` in [0, 1) past sample 0.

    Keys' cubic convolution kernel with ``a = -1/2`` (third-order accurate; the weights
    sum to 1, and ``t = 0`` gives ``(0, 1, 0, 0)``: an exact copy).
    """
    a = -0.5
    s0, s1, s2, s3 = 1.0 + t, t, 1.0 - t, 2.0 - t
    w0 = ((a * s0 - 5.0 * a) * s0 + 8.0 * a) * s0 - 4.0 * a
    w1 = ((a + 2.0) * s1 - (a + 3.0)) * s1 * s1 + 1.0
    w2 = ((a + 2.0) * s2 - (a + 3.0)) * s2 * s2 + 1.0
    w3 = ((a * s3 - 5.0 * a) * s3 + 8.0 * a) * s3 - 4.0 * a
    return w0, w1, w2, w3


@jit
def _cubic_block(block: np.ndarray, shifts: np.ndarray, out: np.ndarray) -> None:
    """Shift every frame of ``block`` by ``shifts[k] = (dy, dx)`` into ``out`` (float32).

    Separable: along x into a scratch frame, then along y. The sample position of output
    pixel ``j`` is ``j - d = j + q + t`` (``q`` integer, ``0 <= t < 1``), taken from input
    pixels ``j + q - 1 .. j + q + 2``, clamped to the frame (the border repeats). Along
    x, each row is first copied as float32 into ``line`` with its source positions
    clamped (``line[m] = row[clamp(m + q - 1)]``), so that the 4-tap sum runs over
    contiguous samples without a branch (0.57 instead of 0.88 ms per 512 x 688 frame,
    bit for bit the same result).
    """
    nt, ny, nx = block.shape
    tmp = np.empty((ny, nx), dtype=np.float32)
    line = np.empty(nx + 3, dtype=np.float32)
    for k in range(nt):
        p = -shifts[k, 1]
        q = int(np.floor(p))
        w0, w1, w2, w3 = _keys_weights(p - q)
        a0, a1, a2, a3 = np.float32(w0), np.float32(w1), np.float32(w2), np.float32(w3)
        lo = min(max(1 - q, 0), nx + 3)  # line[m] for m < lo repeats the first pixel
        hi = max(min(nx + 1 - q, nx + 3), lo)  # and for m >= hi the last
        for i in range(ny):
            src = block[k, i]
            line[:lo] = np.float32(src[0])
            for m in range(lo, hi):
                line[m] = np.float32(src[m + q - 1])
            line[hi:] = np.float32(src[nx - 1])
            row = tmp[i]
            for j in range(nx):
                row[j] = a0 * line[j] + a1 * line[j + 1] + a2 * line[j + 2] + a3 * line[j + 3]
        p = -shifts[k, 0]
        q = int(np.floor(p))
        w0, w1, w2, w3 = _keys_weights(p - q)
        a0, a1, a2, a3 = np.float32(w0), np.float32(w1), np.float32(w2), np.float32(w3)
        for i in range(ny):
            c = i + q
            r0 = tmp[min(max(c - 1, 0), ny - 1)]
            r1 = tmp[min(max(c, 0), ny - 1)]
            r2 = tmp[min(max(c + 1, 0), ny - 1)]
            r3 = tmp[min(max(c + 2, 0), ny - 1)]
            dst = out[k, i]
            for j in range(nx):
                dst[j] = a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j]


def _cubic_shift_block(block: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    out = np.empty(block.shape, dtype=np.float32)
    corrections = np.ascontiguousarray(shifts[:, 0], dtype=np.float64)
    _cubic_block(np.ascontiguousarray(block), corrections, out)
    return out


def _check_resampling(order: int, mode: str) -> None:
    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"order must be an integer in 0..5, got {order!r}")
    modes = ("nearest", "reflect", "mirror", "grid-wrap", "wrap", "constant", "grid-constant")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")


def _wrap(movie: xr.DataArray, data: da.Array, extra: dict) -> xr.DataArray:
    out = xr.DataArray(data, dims=movie.dims, coords=movie.coords, name=movie.name,
                       attrs={**movie.attrs, **extra})
    for d in out.coords:
        out[d].attrs = dict(movie[d].attrs)
    return out


_INTERPOLATIONS = ("cubic", "spline")


def apply_shifts(
    movie: xr.DataArray,
    shifts: xr.DataArray | np.ndarray,
    /,
    *,
    interpolation: str = "cubic",
    order: int = 3,
    mode: str = "nearest",
) -> xr.DataArray:
    """Shift every frame by its correction, lazily, in float32.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, any numeric dtype, numpy- or dask-backed.
    shifts : xarray.DataArray or ndarray, shape (time, 2)
        Corrections ``(dy, dx)`` in pixels, from :func:`estimate_shifts` (same sign
        convention: ``corrected(y, x) = frame(y - dy, x - dx)``).
    interpolation : {"cubic", "spline"}, optional
        "cubic": Keys' cubic convolution (``a = -1/2``), separable, compiled, in float32;
        the border repeats. "spline": ``scipy.ndimage.shift`` with a spline of ``order``
        and the border filled by ``mode`` (about 20 times slower). Default is "cubic".
    order : int, optional
        Spline order, for ``interpolation="spline"`` only (3: cubic, accurate; 1: linear,
        about twice as fast but blurs by a shift-dependent amount). Default is 3.
    mode : str, optional
        How pixels brought in from outside the frame are filled, as in
        ``scipy.ndimage.shift``; "cubic" supports only "nearest" (repeat the border).
        Default is "nearest".

    Returns
    -------
    xarray.DataArray
        float32, dask-backed, same dims, coordinates and attributes as ``movie``, plus
        ``registration`` ("rigid"), ``registration_interpolation`` ("cubic" or
        "spline order N"), ``registration_mode`` and ``registration_max_shift_px`` (the
        largest ``|dy|`` or ``|dx|``: the width of the border that holds filled-in
        pixels). Chunks: the movie's time chunks, whole frames.

    Raises
    ------
    ValueError
        If the dims, the number of shifts, or ``interpolation``/``order``/``mode`` is wrong.

    Notes
    -----
    Both reproduce the frame exactly for integer shifts (and zero). Keys' kernel
    interpolates (it passes through the samples) and reproduces polynomials up to
    degree 2; its slight smoothing between samples depends on the sub-pixel part of the
    shift, much less than linear interpolation's. Cost on one core, 512 x 688 uint16
    frames, measured in one process: "cubic" 1.0 ms per frame, "spline" 26.6 ms.

    References
    ----------
    R. Keys, "Cubic convolution interpolation for digital image processing", IEEE
    Trans. Acoust., Speech, Signal Process. 29:1153-1160 (1981).
    :DOI:`10.1109/TASSP.1981.1163711`
    """
    _check_movie(movie)
    arr = _shift_array(shifts, movie.sizes["time"], "shifts")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    _check_resampling(order, mode)
    if interpolation == "cubic" and mode != "nearest":
        raise ValueError(f"interpolation 'cubic' repeats the border (mode 'nearest'); "
                         f"got mode {mode!r}: use interpolation 'spline' for it")
    data = _full_frames(movie)
    sh = da.from_array(arr[:, None, :], chunks=(data.chunks[0], 1, 2))
    fn = (_cubic_shift_block if interpolation == "cubic"
          else partial(_spline_block, order=order, mode=mode))
    out = da.blockwise(fn, "tyx", data, "tyx", sh, "tzc", concatenate=True, dtype=np.float32)
    return _wrap(movie, out, {
        "registration": "rigid",
        "registration_interpolation": ("cubic" if interpolation == "cubic"
                                       else f"spline order {int(order)}"),
        "registration_mode": mode,
        "registration_max_shift_px": float(np.abs(arr).max(initial=0.0))})


def template_correlation(
    movie: xr.DataArray,
    template: np.ndarray | xr.DataArray,
    /,
    *,
    border_px: int = 0,
) -> xr.DataArray:
    """Pearson correlation of every frame with the template (QC of a registration).

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, raw or corrected, numpy- or dask-backed.
    template : ndarray or xarray.DataArray, shape (y, x)
        Reference frame.
    border_px : int, optional
        Pixels left out on each side (e.g. the border filled in by the correction).
        Default is 0.

    Returns
    -------
    xarray.DataArray
        Dims ``("time",)``, float64, computed; NaN for a flat frame.

    Raises
    ------
    ValueError
        If the dims, the template's shape or ``border_px`` is wrong.
    """
    _check_movie(movie)
    ref = _check_template(template, movie).astype(np.float64)
    ny, nx = ref.shape
    if not isinstance(border_px, int | np.integer) or not 0 <= 2 * border_px < min(ny, nx):
        raise ValueError(f"border_px must be an integer in [0, {(min(ny, nx) - 1) // 2}], "
                         f"got {border_px!r}")
    inner = (slice(border_px, ny - border_px), slice(border_px, nx - border_px))
    ref = ref[inner] - ref[inner].mean()
    ref_norm = np.sqrt((ref**2).sum())

    def corr(block: np.ndarray) -> np.ndarray:
        out = np.empty(block.shape[0])
        for k in range(block.shape[0]):
            f = block[k][inner].astype(np.float64)
            f -= f.mean()
            den = np.sqrt((f**2).sum()) * ref_norm
            out[k] = (f * ref).sum() / den if den > 0 else np.nan
        return out

    data = _full_frames(movie)
    res = da.map_blocks(corr, data, dtype=np.float64, drop_axis=(1, 2), chunks=(data.chunks[0],))
    coords = {"time": movie["time"]} if "time" in movie.coords else {}
    return xr.DataArray(np.asarray(res.compute()), dims=("time",), coords=coords,
                        name="template_correlation")


# --------------------------------------------------------------------------- piecewise


def _patch_boxes(n: int, count: int, overlap: float) -> tuple[list[slice], np.ndarray]:
    """``count`` windows of equal size covering ``0..n`` with the given overlap."""
    size = min(n, math.ceil(n / (1 + (count - 1) * (1 - overlap))))
    starts = np.round(np.linspace(0, n - size, count)).astype(int)
    return [slice(int(s), int(s) + size) for s in starts], starts + (size - 1) / 2


def piecewise_shifts(
    movie: xr.DataArray,
    template: np.ndarray | xr.DataArray,
    /,
    *,
    grid: tuple[int, int] = (4, 4),
    overlap: float = 0.25,
    upsample_factor: int = 20,
    max_shift_px: float | None = None,
    highpass_sigma: float | None = 5.0,
    lowpass_sigma: float | None = 1.0,
    edge_taper: float = 0.25,
    bin_px: int = 2,
) -> xr.DataArray:
    """Piecewise-rigid correction: one rigid correction per overlapping patch.

    The frame is covered by ``grid`` patches of equal size overlapping by ``overlap``
    of their size; each is registered to the same patch of the template as in
    :func:`estimate_shifts` (the high-pass is applied to the whole frame first).

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, numpy- or dask-backed.
    template : ndarray or xarray.DataArray, shape (y, x)
        Reference frame.
    grid : tuple of int, optional
        Number of patches ``(along y, along x)``. Default is (4, 4).
    overlap : float, optional
        Overlap of neighbouring patches as a fraction of the patch size, in [0, 1).
        Default is 0.25.
    upsample_factor, max_shift_px, highpass_sigma, lowpass_sigma, edge_taper, bin_px : optional
        As in :func:`estimate_shifts` (defaults 20, None, 5.0, 1.0, 0.25, 2; the
        binning is reduced to keep at least 32 binned pixels per patch axis); each
        patch must hold enough structure (a few cells) to register.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "axis", "patch_y", "patch_x")``, float64, pixels, same sign
        convention as :func:`estimate_shifts`; coordinates ``patch_y``/``patch_x``
        are the patch centres in pixel index units; non-dimension coordinates
        ``peak_corr`` and ``clipped`` (time, patch_y, patch_x).

    Raises
    ------
    ValueError
        If the dims, the template's shape or a parameter is wrong.
    """
    _check_movie(movie)
    ref = _check_template(template, movie)
    _check_filter(upsample_factor=upsample_factor, highpass_sigma=highpass_sigma,
                  lowpass_sigma=lowpass_sigma, edge_taper=edge_taper, max_shift_px=max_shift_px)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap!r}")
    grid = tuple(grid)
    if len(grid) != 2 or not all(isinstance(g, int | np.integer) and g >= 1 for g in grid):
        raise ValueError(f"grid must be two integers >= 1, got {grid!r}")
    rows, cy = _patch_boxes(movie.sizes["y"], grid[0], overlap)
    cols, cx = _patch_boxes(movie.sizes["x"], grid[1], overlap)
    if rows[0].stop - rows[0].start < 8 or cols[0].stop - cols[0].start < 8:
        raise ValueError(f"grid {grid!r} makes patches smaller than 8 px")
    boxes = [(r, c) for r in rows for c in cols]
    bin_px = _check_bin(bin_px, (rows[0].stop - rows[0].start, cols[0].stop - cols[0].start))
    registrar = _Registrar(ref, boxes, upsample_factor=upsample_factor,
                           highpass_sigma=highpass_sigma, lowpass_sigma=lowpass_sigma,
                           edge_taper=edge_taper, bin_px=bin_px)
    res = _register_movie(movie, registrar).reshape(movie.sizes["time"], *grid, 3)
    clipped = _clip(res, max_shift_px)
    coords = {"axis": list(AXES), "patch_y": cy, "patch_x": cx,
              "peak_corr": (("time", "patch_y", "patch_x"), res[..., 2]),
              "clipped": (("time", "patch_y", "patch_x"), clipped)}
    if "time" in movie.coords:
        coords["time"] = movie["time"]
    return xr.DataArray(
        np.moveaxis(res[..., :2], -1, 1), dims=("time", "axis", "patch_y", "patch_x"),
        coords=coords, name="shift_field",
        attrs={"units": "px", "convention": _CONVENTION, "method": "piecewise-rigid",
               "grid": list(grid), "overlap": float(overlap),
               "upsample_factor": int(upsample_factor),
               "max_shift_px": "none" if max_shift_px is None else float(max_shift_px),
               "highpass_sigma": "none" if highpass_sigma is None else float(highpass_sigma),
               "lowpass_sigma": "none" if lowpass_sigma is None else float(lowpass_sigma),
               "edge_taper": float(edge_taper), "bin_px": bin_px})


def _dense_index(centres: np.ndarray, n: int) -> np.ndarray:
    """Fractional patch index of every pixel (constant beyond the outer centres)."""
    return np.interp(np.arange(n), centres, np.arange(len(centres), dtype=float))


def _warp_block(block: np.ndarray, field: np.ndarray, iy: np.ndarray, ix: np.ndarray, *,
                order: int, mode: str) -> np.ndarray:
    ny, nx = block.shape[1:]
    gy, gx = np.meshgrid(iy, ix, indexing="ij")
    yy, xx = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    out = np.empty(block.shape, dtype=np.float32)
    for k in range(block.shape[0]):
        dy = ndimage.map_coordinates(field[k, 0], [gy, gx], order=1, mode="nearest")
        dx = ndimage.map_coordinates(field[k, 1], [gy, gx], order=1, mode="nearest")
        ndimage.map_coordinates(block[k], [yy - dy, xx - dx], output=out[k], order=order,
                                mode=mode)
    return out


def apply_piecewise(
    movie: xr.DataArray,
    shift_field: xr.DataArray,
    /,
    *,
    order: int = 3,
    mode: str = "nearest",
) -> xr.DataArray:
    """Warp every frame by its piecewise-rigid correction, lazily, in float32.

    The field at the patch centres is interpolated bilinearly to every pixel (held
    constant beyond the outermost centres), and the frame is resampled with
    ``scipy.ndimage.map_coordinates``: ``corrected(y, x) = frame(y - dy(y, x),
    x - dx(y, x))``.

    Parameters
    ----------
    movie : xarray.DataArray
        Dims ``("time", "y", "x")``, numpy- or dask-backed.
    shift_field : xarray.DataArray
        From :func:`piecewise_shifts`: dims ``("time", "axis", "patch_y", "patch_x")``
        with coordinates ``patch_y``/``patch_x`` (patch centres, pixel index units).
    order : int, optional
        Spline order of the resampling. Default is 3.
    mode : str, optional
        Filling of pixels from outside the frame. Default is "nearest".

    Returns
    -------
    xarray.DataArray
        float32, dask-backed, same dims, coordinates and attributes as ``movie``, plus
        ``registration`` ("piecewise-rigid"), ``registration_interpolation`` ("spline
        order N"), ``registration_mode``, ``registration_max_shift_px`` and
        ``registration_grid``.

    Raises
    ------
    ValueError
        If the dims or sizes do not match, or ``order``/``mode`` is wrong.
    """
    _check_movie(movie)
    _check_resampling(order, mode)
    dims = ("time", "axis", "patch_y", "patch_x")
    if not isinstance(shift_field, xr.DataArray) or shift_field.dims != dims:
        raise ValueError(f"shift_field must be a DataArray with dims {dims}")
    if shift_field.sizes["time"] != movie.sizes["time"] or shift_field.sizes["axis"] != 2:
        raise ValueError(f"shift_field has {shift_field.sizes['time']} frames and "
                         f"{shift_field.sizes['axis']} axes, the movie {movie.sizes['time']}")
    field = np.asarray(shift_field.values, dtype=np.float64)
    if not np.isfinite(field).all():
        raise ValueError("shift_field must be finite")
    iy = _dense_index(np.asarray(shift_field["patch_y"], dtype=float), movie.sizes["y"])
    ix = _dense_index(np.asarray(shift_field["patch_x"], dtype=float), movie.sizes["x"])
    data = _full_frames(movie)
    fd = da.from_array(field, chunks=(data.chunks[0], -1, -1, -1))
    out = da.blockwise(partial(_warp_block, iy=iy, ix=ix, order=order, mode=mode), "tyx",
                       data, "tyx", fd, "tagh", concatenate=True, dtype=np.float32)
    return _wrap(movie, out, {
        "registration": "piecewise-rigid",
        "registration_interpolation": f"spline order {int(order)}",
        "registration_mode": mode, "registration_max_shift_px": float(np.abs(field).max()),
        "registration_grid": [int(shift_field.sizes["patch_y"]),
                              int(shift_field.sizes["patch_x"])]})


# --------------------------------------------------------------------------- one call


class MotionCorrection(NamedTuple):
    """What :func:`correct_motion` returns."""

    corrected: xr.DataArray
    """(time, y, x) float32, lazy: the movie with each frame's correction applied."""
    shifts: xr.DataArray
    """(time, axis) correction applied, native px (``piecewise``: mean over patches),
    with a boolean ``bad`` coordinate (see :func:`bad_frames`); a bad frame's
    correction is interpolated from its neighbours (:func:`bridge_bad_frames`)."""


def bad_frames(clipped: np.ndarray, peak_corr: np.ndarray, /) -> np.ndarray:
    """Frames whose registration is not to be trusted.

    A frame is bad when its shift reached ``max_shift_px`` (``clipped``) or when its
    peak correlation with the template is below half the session's median: bursts of
    activity lower the correlation a little, a frame out of focus or a shutter
    artefact a lot.

    Parameters
    ----------
    clipped : numpy.ndarray of bool, shape (time,)
        The shift hit the limit.
    peak_corr : numpy.ndarray of float, shape (time,)
        Normalized correlation with the template at the peak (NaN when unknown).

    Returns
    -------
    numpy.ndarray of bool, shape (time,)

    Examples
    --------
    >>> bad_frames(np.array([False, False, True]), np.array([0.9, 0.3, 0.9])).tolist()
    [False, True, True]
    """
    clipped = np.asarray(clipped, bool)
    corr = np.asarray(peak_corr, float)
    if not np.isfinite(corr).any():
        return clipped.copy()
    with np.errstate(invalid="ignore"):
        return clipped | (corr < 0.5 * np.nanmedian(corr))


def correct_motion(
    movie: xr.DataArray,
    /,
    *,
    method: str,
    template_frames: int,
    upsample_factor: int,
    max_shift_px: float | None,
    grid: Sequence[int],
    bin_px: int = 2,
) -> MotionCorrection:
    """Motion-correct a native movie lazily: template, shifts, resampling, bad frames.

    The one entry point the pipeline calls (``registration`` parameters as keywords);
    it chains :func:`make_template`, :func:`estimate_shifts` (or
    :func:`piecewise_shifts`) and :func:`apply_shifts` (or :func:`apply_piecewise`).

    Parameters
    ----------
    movie : xarray.DataArray
        (time, y, x) native movie, lazy or not.
    method : {"rigid", "piecewise"}
        One shift per frame, or one per patch of a ``grid`` interpolated smoothly.
    template_frames : int
        Frames (evenly spaced) averaged into the template.
    upsample_factor : int
        Precision of the sub-pixel refinement: it stops when its step falls below
        ``0.1 / upsample_factor`` px (the name is from the upsampled DFT it replaces).
    max_shift_px : float or None
        Shifts are clipped to this (native px) and such frames flagged bad.
    grid : sequence of two int
        Patches (rows, columns) for ``method="piecewise"``.
    bin_px : int, optional
        Binning of the frames for the estimation (not for the resampling), see
        :func:`estimate_shifts`. Default is 2.

    Returns
    -------
    MotionCorrection
        ``corrected`` (lazy float32 movie) and ``shifts`` (computed, with ``bad``).
        Bad frames are corrected by the shifts interpolated between their good
        neighbours (:func:`bridge_bad_frames`), not by their own estimates.
    """
    if method not in ("rigid", "piecewise"):
        raise ValueError(f"method must be 'rigid' or 'piecewise', got {method!r}")
    template = make_template(movie, n_frames=int(template_frames),
                             upsample_factor=int(upsample_factor), bin_px=int(bin_px))
    if method == "piecewise":
        field = piecewise_shifts(movie, template, grid=(int(grid[0]), int(grid[1])),
                                 upsample_factor=int(upsample_factor),
                                 max_shift_px=max_shift_px, bin_px=int(bin_px))
        bad = bad_frames(field.coords["clipped"].any(("patch_y", "patch_x")).values,
                         field.coords["peak_corr"].median(("patch_y", "patch_x")).values)
        field = bridge_bad_frames(field, bad)
        corrected = apply_piecewise(movie, field)
        shifts = field.reset_coords(drop=True).mean(("patch_y", "patch_x"))
    else:
        shifts = estimate_shifts(movie, template, upsample_factor=int(upsample_factor),
                                 max_shift_px=max_shift_px, bin_px=int(bin_px))
        bad = bad_frames(shifts.coords["clipped"].values, shifts.coords["peak_corr"].values)
        shifts = bridge_bad_frames(shifts, bad)
        corrected = apply_shifts(movie, shifts)
    shifts = shifts.reset_coords(drop=True).assign_coords(bad=("time", bad))
    return MotionCorrection(corrected, shifts)


def bridge_bad_frames(shifts: xr.DataArray, bad: np.ndarray, /) -> xr.DataArray:
    """Replace the corrections of bad frames by linear interpolation in time.

    A bad frame's own estimate is not to be trusted (see :func:`bad_frames`): a frame
    pulled by a bright structure the template lacks, blurred or out of focus can get a
    shift of many pixels while the sample barely moved. Its correction is interpolated
    linearly between the nearest good frames before and after it (the first good
    frame's for bad frames at the start, the last one's at the end), as motion is
    continuous between frames.

    Parameters
    ----------
    shifts : xarray.DataArray
        Dims ``("time", ...)``: rigid ``(time, axis)`` shifts or a piecewise
        ``(time, axis, patch_y, patch_x)`` field, native px; coordinates are kept.
    bad : numpy.ndarray of bool, shape (time,)
        The frames to replace.

    Returns
    -------
    xarray.DataArray
        A copy with the bad frames' values interpolated, float64; ``shifts`` itself
        when no frame is bad or none is good (nothing to interpolate from).

    Examples
    --------
    >>> s = xr.DataArray([[0.0], [9.0], [2.0], [7.0]], dims=("time", "axis"))
    >>> bridge_bad_frames(s, np.array([False, True, False, True])).values.ravel().tolist()
    [0.0, 1.0, 2.0, 2.0]
    """
    bad = np.asarray(bad, dtype=bool)
    if bad.shape != (shifts.sizes["time"],):
        raise ValueError(f"bad must have shape ({shifts.sizes['time']},), got {bad.shape}")
    if not bad.any() or bad.all():
        return shifts
    values = np.asarray(shifts.transpose("time", ...).values, dtype=np.float64)
    flat = values.reshape(len(bad), -1).copy()
    t = np.arange(len(bad))
    for k in range(flat.shape[1]):
        flat[bad, k] = np.interp(t[bad], t[~bad], flat[~bad, k])
    out = shifts.transpose("time", ...).copy(data=flat.reshape(values.shape))
    return out.transpose(*shifts.dims)
