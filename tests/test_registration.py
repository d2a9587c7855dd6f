"""Tests of calim_helpers.registration: known shifts, the demo's motion, laziness, errors."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from calim_helpers import demo
from calim_helpers import registration as reg
from calim_helpers.registration import (
    AXES,
    apply_piecewise,
    apply_shifts,
    estimate_shifts,
    make_template,
    piecewise_shifts,
    template_correlation,
)


def _texture(shape=(64, 80), seed=0, sigma=2.0):
    """Smooth random texture with a positive offset, float64."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return 100.0 + 50.0 * img / img.std()


def _fourier_shift(img, shift):
    """Content moved by +shift (periodic, exact for a band-limited image)."""
    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(img), shift)).real


def _movie(frames, chunks=None):
    frames = np.asarray(frames)
    nt, ny, nx = frames.shape
    m = xr.DataArray(frames, dims=("time", "y", "x"),
                     coords={"time": np.arange(nt) * 0.1, "y": np.arange(ny) * 0.65,
                             "x": np.arange(nx) * 0.65},
                     attrs={"pixel_size_um": 0.65})
    m["y"].attrs["units"] = "um"
    return m.chunk(chunks) if chunks else m


def _rms(err):
    return float(np.sqrt((err**2).sum(axis=1).mean()))


@pytest.fixture(scope="module")
def motion_session():
    """300 frames of 64 x 80 with 4 neurons and ~3 px of demo motion."""
    s = demo.simulate_session(300, (64, 80), 4, motion=True, seed=3)
    frames = demo.render_frames(s, 0, 300)
    frames.setflags(write=False)
    return s, frames


# --------------------------------------------------------------------------- known shifts


@pytest.mark.parametrize("highpass_sigma, lowpass_sigma", [(5.0, 1.0), (3.0, None), (5.0, None)])
def test_known_integer_and_subpixel_shifts_are_recovered(highpass_sigma, lowpass_sigma):
    img = _texture()
    moves = np.array([[0.0, 0.0], [3.0, -2.0], [1.25, -0.6], [-2.7, 0.35], [0.05, 2.5]])
    movie = _movie(np.stack([_fourier_shift(img, mv) for mv in moves]).astype(np.float32))
    est = estimate_shifts(movie, img, highpass_sigma=highpass_sigma, lowpass_sigma=lowpass_sigma)
    assert est.dims == ("time", "axis") and est.dtype == np.float64
    assert list(est.axis.values) == list(AXES)
    # the correction is minus the motion of the content
    np.testing.assert_allclose(est.values, -moves, atol=0.05)
    assert (est.peak_corr.values > 0.95).all() and not est.clipped.values.any()
    np.testing.assert_array_equal(est.time.values, movie.time.values)


def test_shifting_by_the_estimate_registers_the_frame():
    img = _texture(seed=1)
    frame = _fourier_shift(img, (1.7, -0.4))
    est = estimate_shifts(_movie(frame[None].astype(np.float32)), img)
    out = apply_shifts(_movie(frame[None]), est).values[0]
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(out - img)[inner].max() < 0.05 * np.abs(frame - img)[inner].max()


def test_subpixel_shifts_are_not_quantized_nor_shrunk():
    # noise-free periodic texture: the only errors are the method's (the former
    # upsampled-DFT grid of 1/20 px and the fixed taper gave up to 0.07 px at 3 px)
    img = _texture()
    moves = np.random.default_rng(7).uniform(-3, 3, (12, 2))
    movie = _movie(np.stack([_fourier_shift(img, mv) for mv in moves]).astype(np.float32))
    for bin_px in (1, 2):
        est = estimate_shifts(movie, img, bin_px=bin_px)
        assert est.attrs["bin_px"] == bin_px
        np.testing.assert_allclose(est.values, -moves, atol=0.015)  # measured 0.008


def test_continuous_peak_matches_skimage_finely_upsampled_dft():
    # oracle: skimage's upsampled DFT (factor 1000) on the same band-passed spectra;
    # no taper, so the window does not move and both maximize the same function
    skreg = pytest.importorskip("skimage.registration")
    img = _texture(seed=8)
    rng = np.random.default_rng(8)
    moves = rng.uniform(-2.5, 2.5, (6, 2))
    frames = np.stack([_fourier_shift(img, mv) + rng.normal(0, 20, img.shape) for mv in moves])
    est = estimate_shifts(_movie(frames.astype(np.float32)), img, edge_taper=0.0, bin_px=1,
                          upsample_factor=100)
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    lowpass = np.exp(-2 * np.pi**2 * (ky**2 + kx**2))

    def spectrum(f):
        f = f.astype(np.float32)
        return np.fft.fft2(f - ndimage.gaussian_filter(f, 5.0, mode="nearest")) * lowpass

    for k, frame in enumerate(frames):
        ref = skreg.phase_cross_correlation(spectrum(img), spectrum(frame), space="fourier",
                                            upsample_factor=1000, normalization=None)[0]
        np.testing.assert_allclose(est.values[k], ref, atol=0.002)


def test_tukey_matches_scipy_and_moves_continuously():
    from scipy.signal.windows import tukey

    for n, alpha in ((64, 0.25), (65, 0.5), (10, 1.0), (8, 0.0)):
        np.testing.assert_allclose(reg._tukey(np.arange(n, dtype=float), alpha),
                                   tukey(n, alpha), atol=1e-12)
    moved = reg._tukey(np.arange(64) + 0.5, 0.25)
    assert moved[-1] == 0.0 and 0 < moved[0] < tukey(64, 0.25)[1]


def test_fourier_mean_of_integer_shifts_is_the_mean_of_shifted_copies():
    frames = np.stack([_texture(seed=s) for s in range(3)]).astype(np.float32)
    shifts = np.array([[2.0, -1.0], [0.0, 3.0], [-1.0, 0.0]])
    out = reg._fourier_mean(frames, shifts, piece=2)
    ref = np.mean([ndimage.shift(f, s, order=0, mode="nearest")
                   for f, s in zip(frames, shifts, strict=True)], axis=0)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    np.testing.assert_allclose(reg._fourier_mean(frames, np.zeros((3, 2))),
                               frames.mean(axis=0), atol=1e-3)


def test_fourier_mean_of_binned_frames_takes_shifts_in_native_pixels():
    frames = np.stack([_texture(seed=s) for s in range(3)]).astype(np.float32)
    shifts = np.array([[2.0, -4.0], [0.0, 6.0], [-2.0, 0.0]])  # whole binned pixels at 2
    out = reg._fourier_mean(frames, shifts, piece=2, bin_px=2)
    binned = frames.reshape(3, 32, 2, 40, 2).sum(axis=(2, 4))
    ref = np.mean([ndimage.shift(f, s / 2, order=0, mode="nearest")
                   for f, s in zip(binned, shifts, strict=True)], axis=0)
    assert out.shape == (32, 40)
    np.testing.assert_allclose(out, ref, atol=4e-3)


@pytest.mark.parametrize(("shape", "bin_px", "dtype"), [
    ((3, 64, 80), 2, np.uint16), ((2, 41, 33), 1, np.float32), ((2, 70, 95), 3, np.float64),
    ((2, 9, 7), 2, np.uint16),  # narrower than the Gaussian's radius: borders only
])
def test_compiled_bin_highpass_equals_binning_and_scipy_gaussian(shape, bin_px, dtype):
    rng = np.random.default_rng(sum(shape))
    frames = (rng.random(shape) * 4000).astype(dtype)
    got = reg._bin_highpass(frames, bin_px, 2.5)
    t, ny, nx = shape
    cut = frames[:, :ny // bin_px * bin_px, :nx // bin_px * bin_px].astype(np.float64)
    binned = cut.reshape(t, ny // bin_px, bin_px, nx // bin_px, bin_px).sum(axis=(2, 4))
    ref = binned - ndimage.gaussian_filter(binned, (0, 2.5, 2.5), mode="nearest")
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-6 * np.abs(binned).max())
    flat = reg._bin_highpass(np.full(shape, 7.3, dtype=np.float32), bin_px, 2.5)
    np.testing.assert_array_equal(flat, 0.0)


@pytest.mark.parametrize("piecewise", [False, True])
def test_still_frames_skip_the_second_pass_within_a_tenth_of_the_tolerance(monkeypatch,
                                                                             piecewise):
    rng = np.random.default_rng(5)
    shifts = rng.uniform(-2, 2, (16, 2))
    shifts[::2] = rng.normal(0, 0.002, (8, 2))  # still frames, among moving ones
    img = _texture((128, 160), seed=6)
    frames = np.stack([_fourier_shift(img, s) for s in shifts])
    movie = _movie((frames + rng.normal(0, 1, frames.shape)).astype(np.float32))

    def estimate():
        if piecewise:
            return piecewise_shifts(movie, img, grid=(2, 2)).values
        return estimate_shifts(movie, img).values

    skipping = estimate()
    monkeypatch.setattr(reg, "_FOLLOW_MIN", 0.0)  # every frame takes the second pass
    following = estimate()
    tol = 0.1 / 20  # native px: upsample_factor 20 (the refinement stops below it)
    assert np.abs(skipping - following).max() <= 0.1 * tol


def test_shifts_are_the_same_with_the_numpy_high_pass(monkeypatch):
    rng = np.random.default_rng(3)
    shifts = rng.uniform(-3, 3, (12, 2))
    img = _texture((128, 160), seed=4)
    frames = np.stack([_fourier_shift(img, s) for s in shifts])
    frames = (frames + rng.normal(0, 2, frames.shape)).astype(np.float32)
    movie = _movie(frames)
    compiled = estimate_shifts(movie, img)
    template = make_template(movie, n_frames=12)
    monkeypatch.setattr(reg, "_COMPILED_HIGHPASS", False)
    plain = estimate_shifts(movie, img)
    np.testing.assert_allclose(compiled.values, plain.values, atol=1e-4)
    np.testing.assert_allclose(compiled.peak_corr.values, plain.peak_corr.values, atol=1e-5)
    np.testing.assert_allclose(make_template(movie, n_frames=12).values, template.values,
                               atol=1e-3)
    assert np.abs(compiled.values + shifts - (compiled.values + shifts).mean(0)).max() < 0.05


def _hard_motion(n, seed):
    """Drift of 2 px, two jumps of 2.5 px and 0.3 px of jitter (harder than the demo)."""
    rng = np.random.default_rng(seed)
    walk = ndimage.gaussian_filter1d(np.cumsum(rng.standard_normal((n, 2)), 0), 10, axis=0)
    walk *= 2.0 / np.abs(walk - walk[:1]).max()
    step = np.zeros((n, 2))
    step[n // 3:] += (2.5, -1.0)
    step[2 * n // 3:] += (-1.0, 2.5)
    return walk - walk[:1] + step + rng.normal(0, 0.3, (n, 2))


def test_hard_motion_with_jumps_and_jitter_is_recovered():
    import dataclasses

    s = demo.simulate_session(200, (96, 128), 6, motion=True, motion_amplitude_px=6.0,
                              seed=11)
    s = dataclasses.replace(s, shifts=np.clip(_hard_motion(200, 11), -6, 6))
    frames = demo.render_frames(s, 0, 200)
    movie = _movie(frames, {"time": 64})
    for bin_px in (1, 2):
        template = make_template(movie, n_frames=100, bin_px=bin_px)
        est = estimate_shifts(movie, template, bin_px=bin_px)
        err = est.values + s.shifts
        err -= err.mean(axis=0)
        assert _rms(err) < 0.04, bin_px  # measured 0.022 (bin 1), 0.023 (bin 2)
        assert np.abs(err).max() < 0.1  # measured 0.046, 0.050


def _flashing(seed, gain):
    """Hard motion on 96 x 128 plus 8 late frames with a bright blob the template lacks.

    The blob (Gaussian, sigma 4 px, peak ``gain`` times the frame's median) stands for a
    cell silent while the template is made that then fires hugely, or a flash of debris.
    """
    import dataclasses

    s = demo.simulate_session(200, (96, 128), 6, motion=True, motion_amplitude_px=6.0,
                              seed=seed)
    s = dataclasses.replace(s, shifts=np.clip(_hard_motion(200, seed), -6, 6))
    frames = demo.render_frames(s, 0, 200).astype(np.float32)
    rng = np.random.default_rng(seed)
    flash = rng.choice(np.arange(120, 200), 8, replace=False)  # after the template frames
    yy, xx = np.mgrid[:96, :128]
    for t in flash:
        cy, cx = rng.uniform(15, 80), rng.uniform(15, 112)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        frames[t] += gain * np.median(frames[t]) * blob
    return s, _movie(frames, {"time": 64}), flash


@pytest.mark.parametrize("seed", [11, 12])
def test_a_bright_structure_the_template_lacks_does_not_pull_the_frame(seed, monkeypatch):
    s, movie, flash = _flashing(seed, gain=20.0)
    template = make_template(movie, n_frames=100)
    other = np.setdiff1d(np.arange(200), flash)

    def errors():
        err = estimate_shifts(movie, template).values + s.shifts
        return err - np.median(err, axis=0)

    err = errors()
    # measured 0.35 / 0.33 px RMS on the flash frames (seeds 11 / 12), 0.023 / 0.019 elsewhere
    assert _rms(err[flash]) < 1.0 and np.abs(err[flash]).max() < 1.5
    assert _rms(err[other]) < 0.04
    # without the outlier clip the same frames are pulled towards the blob: 29 / 16 px RMS
    monkeypatch.setattr(reg, "_OUTLIER_CLIP", np.inf)
    assert _rms(errors()[flash]) > 5.0


def _bridge_by_hand(values, bad):
    """Each bad frame from its nearest good frames before and after, by the formula."""
    out = values.copy()
    good = np.flatnonzero(~bad)
    for t in np.flatnonzero(bad):
        before, after = good[good < t], good[good > t]
        if before.size and after.size:
            a, b = before[-1], after[0]
            out[t] = values[a] + (values[b] - values[a]) * (t - a) / (b - a)
        else:  # before the first or after the last good frame: held
            out[t] = values[after[0] if after.size else before[-1]]
    return out


@pytest.mark.parametrize("shape", [(30, 2), (30, 2, 2, 3)])
def test_bridge_bad_frames_interpolates_between_good_neighbours(shape):
    rng = np.random.default_rng(7)
    values = rng.normal(0, 3, shape)
    bad = rng.random(30) < 0.3
    bad[[0, 1, 14, 15, 16, 29]] = True  # runs of bad frames, at both ends too
    dims = ("time", "axis", "patch_y", "patch_x")[:len(shape)]
    shifts = xr.DataArray(values, dims=dims, coords={"time": np.arange(30) * 0.1,
                                                     "axis": ["dy", "dx"]})
    out = reg.bridge_bad_frames(shifts.transpose(*dims[::-1]), bad)  # any dim order
    assert out.dims == dims[::-1] and (out.time == shifts.time).all()
    np.testing.assert_allclose(out.transpose(*dims).values, _bridge_by_hand(values, bad),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out.transpose(*dims).values[~bad], values[~bad])
    assert reg.bridge_bad_frames(shifts, np.zeros(30, bool)) is shifts
    assert reg.bridge_bad_frames(shifts, np.ones(30, bool)) is shifts
    with pytest.raises(ValueError, match=r"bad must have shape \(30,\)"):
        reg.bridge_bad_frames(shifts, bad[:5])


@pytest.mark.parametrize("seed", [11, 12])
def test_frames_pulled_far_are_flagged_and_corrected_like_their_neighbours(seed):
    # a blob 100 times the median pulls its frames by many pixels even with the clip;
    # their correlation with the template falls, so they are bad frames
    s, movie, flash = _flashing(seed, gain=100.0)
    other = np.setdiff1d(np.arange(200), flash)
    est = estimate_shifts(movie, make_template(movie, n_frames=100))
    err = est.values + s.shifts
    err -= np.median(err, axis=0)
    assert _rms(err[flash]) > 5.0  # measured 21 / 14 px RMS
    motion = reg.correct_motion(movie, method="rigid", template_frames=100,
                                upsample_factor=20, max_shift_px=20.0, grid=(4, 4))
    assert motion.shifts["bad"].values[flash].all() and not motion.shifts["bad"].values[other].any()
    err = motion.shifts.values + s.shifts
    err -= np.median(err, axis=0)
    # interpolated between neighbours: off by about the 0.3 px frame-to-frame jitter;
    # measured 0.61 / 0.56 px RMS, largest 0.91 / 0.66 px
    assert _rms(err[flash]) < 0.8 and np.abs(err[flash]).max() < 1.2
    assert _rms(err[other]) < 0.04


# --------------------------------------------------------------------------- demo motion


def test_demo_motion_is_recovered_well_under_a_tenth_of_a_pixel(motion_session):
    s, frames = motion_session
    movie = _movie(frames, {"time": 64})
    template = make_template(movie)
    est = estimate_shifts(movie, template)
    # estimate = -truth + const (the template is not the unshifted scene): remove the median
    err = est.values + s.shifts
    err -= np.median(err, axis=0)
    assert np.abs(s.shifts).max() > 2.0
    assert _rms(err) < 0.08  # measured 0.042 px RMS for 3 px of motion (4 cells, 64 x 80)
    assert np.abs(err).max() < 0.25
    # no shrinkage towards zero (the edge taper and the high-pass prevent it); measured
    # slopes 1.021 (dy) and 1.002 (dx)
    for k in range(2):
        assert abs(np.polyfit(-s.shifts[:, k], est.values[:, k], 1)[0] - 1) < 0.03
    # the template is centred where the movie usually is
    assert np.abs(np.median(est.values[template.attrs["template_frames"]], axis=0)).max() < 0.1
    assert (est.peak_corr.values > 0.85).all()  # lowest (0.90) during a network burst


def test_highpass_helps_on_the_demo(motion_session):
    s, frames = motion_session
    movie = _movie(frames)
    template = make_template(movie, n_frames=100)

    def rms(**kw):
        err = estimate_shifts(movie, template, **kw).values + s.shifts
        return _rms(err - np.median(err, axis=0))

    assert rms(highpass_sigma=5.0) < 0.8 * rms(highpass_sigma=None)


def test_highpass_is_robust_to_a_brightness_gradient_that_does_not_move():
    img = _texture(seed=2)
    ny, nx = img.shape
    ramp = np.linspace(0, 400, nx)[None, :] * np.ones((ny, 1))  # fixed uneven illumination
    moves = np.array([[1.5, -1.0], [-0.75, 2.25], [0.3, 0.6]])
    movie = _movie(np.stack([_fourier_shift(img, mv) + ramp for mv in moves]))
    est = estimate_shifts(movie, img + ramp)
    np.testing.assert_allclose(est.values, -moves, atol=0.05)


def test_correction_improves_the_correlation_with_the_template(motion_session):
    _, frames = motion_session
    movie = _movie(frames, {"time": 100})
    template = make_template(movie, n_frames=100)
    corrected = apply_shifts(movie, estimate_shifts(movie, template))
    before = template_correlation(movie, template, border_px=4)
    after = template_correlation(corrected, template, border_px=4)
    assert before.dims == ("time",) and after.sizes["time"] == 300
    assert after.mean() > before.mean() + 0.01
    assert (after.values > before.values - 0.002).mean() > 0.95


def test_motion_free_movie_gives_zero_shifts():
    s = demo.simulate_session(120, (64, 80), 4, motion=False, seed=5)
    movie = _movie(demo.render_frames(s, 0, 120), {"time": 50})
    est = estimate_shifts(movie, make_template(movie, n_frames=60))
    assert np.abs(est.values).max() <= 0.1 + 1e-6  # two steps of 1 / upsample_factor
    assert _rms(est.values) < 0.04


# --------------------------------------------------------------------------- template


class _CountingFrames:
    """Array-like that counts the frames dask reads from it."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim, self.read = data, data.shape, data.dtype, 3, 0

    def __getitem__(self, index):
        out = self.data[index]
        self.read += out.shape[0] if out.ndim == 3 else 1
        return out


def test_make_template_reads_only_its_frames_and_is_the_mean_without_motion():
    img = _texture(seed=3).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 5, (120, *img.shape)).astype(np.float32)
    frames = img + noise
    source = _CountingFrames(frames)
    movie = xr.DataArray(da.from_array(source, chunks=(40, -1, -1)), dims=("time", "y", "x"))
    template = make_template(movie, n_frames=20, n_iter=0)
    assert source.read == 20
    assert template.dtype == np.float32 and template.dims == ("y", "x")
    used = template.attrs["template_frames"]
    assert len(used) == 20 and used == sorted(used) and used[-1] - used[0] > 100
    np.testing.assert_allclose(template.values, np.median(frames[used], axis=0))
    refined = make_template(_movie(frames), n_frames=20, n_iter=1)
    # no motion: the registered average is (almost) the plain mean
    assert np.abs(refined.values - frames[used].mean(axis=0)).max() < 1.0


# --------------------------------------------------------------------------- apply


def test_zero_shifts_return_the_input_as_float32():
    frames = np.random.default_rng(1).integers(0, 4000, (12, 20, 24), dtype=np.uint16)
    frames.setflags(write=False)
    movie = _movie(frames, {"time": 5})
    out = apply_shifts(movie, np.zeros((12, 2)))
    assert isinstance(out.data, da.Array) and out.dtype == np.float32
    np.testing.assert_array_equal(out.values, frames.astype(np.float32))
    assert out.attrs["pixel_size_um"] == 0.65 and out.attrs["registration"] == "rigid"
    assert out.attrs["registration_max_shift_px"] == 0.0
    assert out["y"].attrs["units"] == "um"
    xr.testing.assert_equal(out.coords.to_dataset(), movie.coords.to_dataset())


def _keys(s: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel, a = -1/2, written from the paper's formula."""
    s = np.abs(s)
    return np.where(s <= 1, 1.5 * s**3 - 2.5 * s**2 + 1,
                    np.where(s < 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, 0.0))


def _keys_shift_brute(frame: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """corrected(y, x) = frame(y - dy, x - dx): the 4 x 4 sum at every pixel, border clamped."""
    ny, nx = frame.shape
    f = frame.astype(np.float64)
    out = np.zeros((ny, nx))
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    py, px = yy - shift[0], xx - shift[1]
    qy, qx = np.floor(py).astype(int), np.floor(px).astype(int)
    for m in range(-1, 3):
        for n in range(-1, 3):
            w = _keys(py - (qy + m)) * _keys(px - (qx + n))
            out += w * f[np.clip(qy + m, 0, ny - 1), np.clip(qx + n, 0, nx - 1)]
    return out


def test_cubic_apply_matches_keys_formula_whatever_the_chunks():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 4000, (15, 16, 18), dtype=np.uint16)
    frames.setflags(write=False)
    shifts = rng.uniform(-3, 3, (15, 2))
    shifts[3] = (2.0, -1.0)  # an integer shift is an exact copy
    shifts[4] = (-40.0, 25.5)  # beyond the frame: all border
    shifts.setflags(write=False)
    ref = np.stack([_keys_shift_brute(f, s) for f, s in zip(frames, shifts, strict=True)])
    for chunks in (None, {"time": 4}, {"time": 4, "y": 5}):
        out = apply_shifts(_movie(frames, chunks), shifts)
        assert out.attrs["registration_interpolation"] == "cubic"
        np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=2e-3)
    out = apply_shifts(_movie(frames), shifts).values
    np.testing.assert_array_equal(out[3, 2:, :-1], frames[3, :-2, 1:].astype(np.float32))


def test_cubic_apply_reproduces_a_quadratic_and_agrees_with_the_spline_on_smooth_frames():
    yy, xx = np.meshgrid(np.arange(30.0), np.arange(40.0), indexing="ij")
    quad = 500 + 3 * yy + 2 * xx + 0.05 * (yy - 15) ** 2 - 0.03 * (xx - 20) * (yy - 10)
    shift = np.array([[0.37, -1.62]])
    out = apply_shifts(_movie(quad[None].astype(np.float32)), shift).values[0]
    y2, x2 = yy - shift[0, 0], xx - shift[0, 1]
    truth = 500 + 3 * y2 + 2 * x2 + 0.05 * (y2 - 15) ** 2 - 0.03 * (x2 - 20) * (y2 - 10)
    np.testing.assert_allclose(out[3:-3, 3:-3], truth[3:-3, 3:-3], rtol=1e-6)
    smooth = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(48, 56)), 3) * 1e4
    smooth = (smooth + 2000).astype(np.float32)[None]
    cubic = apply_shifts(_movie(smooth), shift).values[0, 6:-6, 6:-6]
    spline = apply_shifts(_movie(smooth), shift, interpolation="spline").values[0, 6:-6, 6:-6]
    assert np.abs(cubic - spline).max() < 0.01 * np.ptp(smooth)


def test_spline_apply_matches_ndimage_frame_by_frame():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 4000, (15, 16, 18), dtype=np.uint16)
    shifts = rng.uniform(-3, 3, (15, 2))
    ref = np.stack([ndimage.shift(f.astype(np.float64), s, order=3, mode="nearest")
                    for f, s in zip(frames, shifts, strict=True)])
    out = apply_shifts(_movie(frames, {"time": 4}), shifts, interpolation="spline")
    np.testing.assert_allclose(out.values, ref, rtol=1e-5, atol=1e-2)
    lin = apply_shifts(_movie(frames), shifts, interpolation="spline", order=1)
    assert lin.attrs["registration_interpolation"] == "spline order 1"
    with pytest.raises(ValueError, match="interpolation"):
        apply_shifts(_movie(frames), shifts, interpolation="lanczos")
    with pytest.raises(ValueError, match="'spline'"):
        apply_shifts(_movie(frames), shifts, mode="constant")


def test_apply_is_lazy_until_computed():
    def boom(block):
        raise AssertionError("computed")

    data = da.zeros((10, 8, 9), chunks=(5, 8, 9)).map_blocks(boom, dtype=np.float64)
    out = apply_shifts(xr.DataArray(data, dims=("time", "y", "x")), np.ones((10, 2)) * 0.5)
    assert isinstance(out.data, da.Array) and out.chunks[0] == (5, 5)


def test_estimate_shifts_agrees_across_chunkings(motion_session):
    _, frames = motion_session
    sub = frames[:40]
    template = sub.mean(axis=0)
    a = estimate_shifts(_movie(sub), template)
    b = estimate_shifts(_movie(sub, {"time": 7, "x": 30}), template)
    xr.testing.assert_allclose(a, b)


def test_max_shift_px_clips_and_flags():
    img = _texture(seed=4)
    moves = np.array([[0.5, 0.0], [4.0, -1.0]])
    movie = _movie(np.stack([_fourier_shift(img, mv) for mv in moves]))
    est = estimate_shifts(movie, img, max_shift_px=2.0)
    np.testing.assert_array_equal(est.clipped.values, [False, True])
    np.testing.assert_allclose(est.values, [[-0.5, 0.0], [-2.0, 1.0]], atol=0.05)
    assert est.attrs["max_shift_px"] == 2.0


# --------------------------------------------------------------------------- piecewise


def _warped(img, field):
    """Content at (y, x) moved by field[:, y, x] (map_coordinates, cubic)."""
    ny, nx = img.shape
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    return ndimage.map_coordinates(img, [yy - field[0], xx - field[1]], order=3, mode="wrap")


def test_piecewise_recovers_a_known_smooth_warp():
    img = _texture((96, 112), seed=5, sigma=1.5)
    ny, nx = img.shape
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    base = np.stack([1.2 * (2 * xx / (nx - 1) - 1), 0.9 * (2 * yy / (ny - 1) - 1)])
    amps = np.array([1.0, -0.5, 0.0, 1.5])
    frames = np.stack([_warped(img, a * base) for a in amps]).astype(np.float32)
    frames.setflags(write=False)
    movie = _movie(frames, {"time": 2})
    field = piecewise_shifts(movie, img, grid=(3, 3), overlap=0.5)
    assert field.dims == ("time", "axis", "patch_y", "patch_x")
    cy, cx = field.patch_y.values, field.patch_x.values
    expected = -amps[:, None, None, None] * np.stack([
        1.2 * (2 * cx[None, :] / (nx - 1) - 1) * np.ones((3, 1)),
        0.9 * (2 * cy[:, None] / (ny - 1) - 1) * np.ones((1, 3))])[None]
    # a patch's estimate is a texture-weighted average of a shift that varies by up to
    # 0.9 px across it (amplitude 1), hence the tolerance
    np.testing.assert_allclose(field.values, expected, atol=0.2)
    assert np.sqrt(((field.values - expected) ** 2).mean()) < 0.06

    corrected = apply_piecewise(movie, field).values
    rigid = apply_shifts(movie, estimate_shifts(movie, img)).values
    inner = (slice(None), slice(12, -12), slice(12, -12))
    resid_pw = np.abs(corrected - img)[inner]
    resid_rigid = np.abs(rigid - img)[inner]
    assert resid_pw[1:].mean() < 0.5 * resid_rigid[1:].mean()
    assert resid_pw.mean() < 0.2 * np.abs(frames - img)[inner][np.abs(amps) > 0].mean()


def test_piecewise_with_one_patch_is_rigid():
    img = _texture(seed=6)
    moves = np.array([[1.3, -0.8], [-0.4, 2.1]])
    movie = _movie(np.stack([_fourier_shift(img, mv) for mv in moves]))
    field = piecewise_shifts(movie, img, grid=(1, 1))
    rigid = estimate_shifts(movie, img)
    np.testing.assert_allclose(field.values[:, :, 0, 0], rigid.values)
    a = apply_piecewise(movie, field).values
    b = apply_shifts(movie, rigid, interpolation="spline").values  # the same spline
    np.testing.assert_allclose(a, b, atol=1e-3)


# --------------------------------------------------------------------------- errors


def test_bad_input_raises():
    movie = _movie(np.zeros((6, 16, 16), dtype=np.uint16))
    with pytest.raises(ValueError, match="dims"):
        estimate_shifts(movie.transpose("y", "x", "time"), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="dims"):
        apply_shifts(movie.isel(time=0), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="DataArray"):
        make_template(np.zeros((6, 16, 16)))
    with pytest.raises(ValueError, match="template must have the movie's frame shape"):
        estimate_shifts(movie, np.zeros((16, 15)))
    with pytest.raises(ValueError, match="shifts has 5 frames, the movie has 6"):
        apply_shifts(movie, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"shape \(time, 2\)"):
        apply_shifts(movie, np.zeros((6, 3)))
    with pytest.raises(ValueError, match="finite"):
        apply_shifts(movie, np.full((6, 2), np.nan))
    with pytest.raises(ValueError, match="dims"):
        apply_shifts(movie, xr.DataArray(np.zeros((2, 6)), dims=("axis", "time")))
    with pytest.raises(ValueError, match="upsample_factor"):
        estimate_shifts(movie, np.zeros((16, 16)), upsample_factor=0)
    with pytest.raises(ValueError, match="highpass_sigma"):
        estimate_shifts(movie, np.zeros((16, 16)), highpass_sigma=-1.0)
    with pytest.raises(ValueError, match="max_shift_px"):
        estimate_shifts(movie, np.zeros((16, 16)), max_shift_px=0)
    with pytest.raises(ValueError, match="order"):
        apply_shifts(movie, np.zeros((6, 2)), order=7)
    with pytest.raises(ValueError, match="mode"):
        apply_shifts(movie, np.zeros((6, 2)), mode="edge")
    with pytest.raises(ValueError, match="n_frames"):
        make_template(movie, n_frames=0)
    with pytest.raises(ValueError, match="grid"):
        piecewise_shifts(movie, np.zeros((16, 16)), grid=(0, 2))
    with pytest.raises(ValueError, match="overlap"):
        piecewise_shifts(movie, np.zeros((16, 16)), overlap=1.0)
    with pytest.raises(ValueError, match="smaller than 8 px"):
        piecewise_shifts(movie, np.zeros((16, 16)), grid=(4, 4))
    with pytest.raises(ValueError, match="shift_field"):
        apply_piecewise(movie, xr.DataArray(np.zeros((5, 2, 1, 1)),
                                            dims=("time", "axis", "patch_y", "patch_x")))
    with pytest.raises(ValueError, match="bin_px"):
        estimate_shifts(movie, np.zeros((16, 16)), bin_px=0)
    with pytest.raises(ValueError, match="bin_px"):
        make_template(movie, bin_px=1.5)
    with pytest.raises(ValueError, match="border_px"):
        template_correlation(movie, np.zeros((16, 16)), border_px=8)


def test_flat_frames_give_zero_shift_and_zero_correlation():
    movie = _movie(np.full((3, 16, 16), 7, dtype=np.uint16))
    est = estimate_shifts(movie, np.full((16, 16), 7.0))
    np.testing.assert_array_equal(est.values, 0.0)
    np.testing.assert_array_equal(est.peak_corr.values, 0.0)
