"""Property tests (hypothesis): invariances of arPLS, rasterization, block mean and traces.

Each test states a property that must hold for every input of a family, and hypothesis
draws (and, on failure, shrinks) the inputs. Tolerances are relative to the data's scale
and each is explained where it is set. ``max_examples`` is small so that the module runs
in a few seconds; run with ``--hypothesis-seed`` or a larger profile to search harder.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from roifile import ROI_TYPE, ImagejRoi

from calim_helpers.baseline import arpls
from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.noise import noise_sigma
from calim_helpers.rois import coverage_weights, polygon_mask, rasterize
from calim_helpers.traces import extract_traces

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EPS = np.finfo(np.float64).eps


# ------------------------------------------------------------------------------------ arPLS


@st.composite
def calcium_traces(draw, min_n: int = 10, max_n: int = 200) -> np.ndarray:
    """A level, a bleach, 0-6 transients and noise; sizes and shapes drawn at random."""
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(n)
    y = (rng.uniform(-100, 100) + rng.uniform(0, 50) * np.exp(-t / rng.uniform(5, 100))
         + rng.normal(0, rng.uniform(0.1, 10), n))
    for t0 in rng.integers(0, n, rng.integers(0, 7)):
        y += rng.uniform(0, 100) * np.exp(-(t - t0) / rng.uniform(1, 10)) * (t >= t0)
    y.setflags(write=False)
    return y


def _allowed(y: np.ndarray, moved: float, infos: tuple[dict, dict]) -> float:
    """Largest |baseline difference| two fits of equivalent data may show.

    - ``1e-9 * (max|y| + moved)``: the transformed data are rounded (by up to
      eps ≈ 2.2e-16 of their magnitude, which includes the shift ``moved``) and the
      penalized solve and the iteration amplify that by a few thousand at most
      (measured on 400 traces: ≤ 1e-10 of the range);
    - ``1e-6 * ptp(y)``: if that rounding makes the weight change cross ``tol`` one
      iteration earlier or later, the two converged baselines differ by one more
      step, which at a weight change below 1e-5 is far below 1e-6 of the range;
    - if a fit stopped at ``max_iter`` with a stable baseline, the two may return
      different iterates of the same cycle: within the stable band, 0.25 noise sigma.
    """
    tol = 1e-9 * (np.abs(y).max() + moved) + 1e-6 * np.ptp(y)
    if any(i["status"] == "stable" for i in infos):
        tol += 0.25 * float(noise_sigma(y - arpls(y)[0]).sigma)
    return tol


@FAST
@given(calcium_traces(), st.floats(-1e4, 1e4))
def test_arpls_adding_a_constant_moves_the_baseline_by_it(y, c):
    base, info = arpls(y)
    shifted, info_c = arpls(y + c)
    assert np.abs((shifted - c) - base).max() <= _allowed(y, abs(c), (info, info_c))


@FAST
@given(calcium_traces(), st.floats(-1e3, 1e3), st.floats(-5.0, 5.0))
def test_arpls_adding_a_line_moves_the_baseline_by_it(y, offset, slope):
    # the penalty sums squared second differences, which are 0 for a line, and the
    # weights depend only on y - z: the whole iteration is blind to the line
    line = offset + slope * np.arange(y.size)
    base, info = arpls(y)
    tilted, info_l = arpls(y + line)
    assert np.abs((tilted - line) - base).max() <= _allowed(y, np.abs(line).max(),
                                                             (info, info_l))


@FAST
@given(calcium_traces(), st.floats(-3.0, 3.0), st.integers(-60, 60))
def test_arpls_scaling_scales_the_baseline(y, log_c, k):
    c = 10.0**log_c
    base, info = arpls(y)
    scaled, info_c = arpls(c * y)
    assert np.abs(scaled / c - base).max() <= _allowed(y, 0.0, (info, info_c))
    # a power of 2 rounds nothing, so the fit is the same to the last bit
    exact, info_k = arpls(y * 2.0**k)
    np.testing.assert_array_equal(exact, base * 2.0**k)
    assert (info_k["status"], info_k["n_iter"]) == (info["status"], info["n_iter"])


finite_values = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)


@FAST
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(3, 80)),
                  elements=finite_values))
def test_arpls_finite_in_finite_out_and_input_untouched(y):
    # |y| <= 1e300: the baseline may overshoot the data a little (a smoother is not
    # bounded by its input), which near the float64 limit (1.8e308) is not representable
    y.setflags(write=False)
    before = y.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy warning on the way
        base, info = arpls(y)
    np.testing.assert_array_equal(y, before)
    assert base.shape == y.shape and np.isfinite(base).all()
    assert set(info["status"]) <= {"converged", "stable", "failed"}


@FAST
@given(hnp.arrays(np.float64, st.integers(3, 40),
                  elements=st.floats(allow_nan=False, allow_infinity=False)))
def test_arpls_a_non_finite_baseline_is_always_failed(y):
    with np.errstate(over="ignore"):
        base, info = arpls(y)
    if not np.isfinite(base).all():
        assert info["status"] == "failed"


# ---------------------------------------------------------------------------- rasterization

# vertices on a 1/8-pixel grid: adding whole pixels to them rounds nothing, so a tie
# (a pixel centre on an edge) is decided the same way before and after the translation
eighths = st.integers(8 * 8, 24 * 8).map(lambda v: v / 8.0)
polygons = st.lists(st.tuples(eighths, eighths), min_size=3, max_size=8)
shifts = st.integers(-8, 16)


@FAST
@given(polygons, shifts, shifts)
def test_translating_a_polygon_by_whole_pixels_translates_its_mask(xy, dy, dx):
    shape = (48, 48)  # vertices in [8, 24] + shifts in [-8, 16]: always inside
    vertices = np.array(xy)
    mask = polygon_mask(vertices, shape)
    moved = polygon_mask(vertices + [dx, dy], shape)  # (x, y) vertices
    np.testing.assert_array_equal(moved, np.roll(mask, (dy, dx), axis=(0, 1)))


@FAST
@given(st.lists(st.tuples(st.integers(8, 24), st.integers(8, 24)), min_size=3, max_size=8),
       shifts, shifts)
def test_translating_an_imagej_polygon_roi_translates_its_raster(xy, dy, dx):
    shape = (48, 48)
    points = np.array(xy, dtype=float)
    masks = []
    for offset in ([0, 0], [dx, dy]):
        roi = ImagejRoi.frompoints(points + offset, name="p")
        roi.roitype = ROI_TYPE.POLYGON
        try:
            masks.append(rasterize(roi, shape))
        except CalimInputError:  # a degenerate polygon (no pixel centre inside): skip it
            assume(False)
    np.testing.assert_array_equal(masks[1], np.roll(masks[0], (dy, dx), axis=(0, 1)))


@st.composite
def masks_and_factors(draw):
    fy, fx = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ny, nx = draw(st.integers(fy, 30)), draw(st.integers(fx, 30))
    mask = draw(hnp.arrays(bool, (ny, nx)))
    mask[ny // fy * fy:] = False  # the ROI lies inside the downsampled grid: none of
    mask[:, nx // fx * fx:] = False  # it in the partial blocks that are dropped
    return mask, fy, fx


@FAST
@given(masks_and_factors())
def test_coverage_weights_sum_to_the_pixel_count_over_the_block_size(case):
    mask, fy, fx = case
    cov = coverage_weights(mask, factors={"y": fy, "x": fx, "time": 7})
    assert cov.shape == (mask.shape[0] // fy, mask.shape[1] // fx)
    assert cov.min(initial=0.0) >= 0 and cov.max(initial=0.0) <= 1
    # each weight is k / (fy fx), k <= 16, held in float32 (relative rounding <= 2^-24)
    assert float(cov.sum(dtype=np.float64)) == pytest.approx(mask.sum() / (fy * fx),
                                                              rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------------------- block mean


@st.composite
def movie_cases(draw, dtype=np.uint16):
    factors = {"time": draw(st.integers(1, 5)), "y": draw(st.integers(1, 3)),
               "x": draw(st.integers(1, 3))}
    shape = tuple(draw(st.integers(factors[d], 3 * factors[d] + 2))
                  for d in ("time", "y", "x"))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.integers(0, 65536, shape).astype(dtype)
    chunks = draw(st.one_of(st.none(), st.tuples(*(st.integers(1, n) for n in shape))))
    return data, factors, chunks


def _as_movie(data: np.ndarray, chunks) -> xr.DataArray:
    m = xr.DataArray(data, dims=("time", "y", "x"),
                     coords={"time": np.arange(data.shape[0]) * 0.1})
    return m.chunk(dict(zip(("time", "y", "x"), chunks, strict=True))) if chunks else m


def _block_mean(movie, factors) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)  # partial blocks dropped: expected
        return downsample(movie, factors).values


@FAST
@given(movie_cases(), st.integers(0, 65535), st.floats(-1e6, 1e6, width=32))
def test_block_mean_of_a_constant_movie_is_the_constant(case, value, real):
    data, factors, chunks = case
    const = np.full_like(data, value)
    # counts: block sums of <= 45 values < 2^16 stay below 2^24, exact in float32
    np.testing.assert_array_equal(_block_mean(_as_movie(const, chunks), factors), value)
    # float32 values: the float32 sum rounds, by at most ~45 ulps in all
    out = _block_mean(_as_movie(np.full(data.shape, real, np.float32), chunks), factors)
    np.testing.assert_allclose(out, real, rtol=64 * 2.0**-24)


@FAST
@given(movie_cases())
def test_block_mean_equals_a_reshape_mean(case):
    data, factors, chunks = case
    ft, fy, fx = factors["time"], factors["y"], factors["x"]
    nt, ny, nx = (n // f for n, f in zip(data.shape, (ft, fy, fx), strict=True))
    ref = (data[:nt * ft, :ny * fy, :nx * fx].astype(np.float64)
           .reshape(nt, ft, ny, fy, nx, fx).mean(axis=(1, 3, 5)))
    out = _block_mean(_as_movie(data, chunks), factors)
    assert out.dtype == np.float32 and out.shape == ref.shape
    # the float32 block sum of integer counts is exact (< 2^24); the division rounds once
    np.testing.assert_allclose(out, ref, rtol=2.0**-23, atol=0)


# ---------------------------------------------------------------------------------- traces


@st.composite
def trace_cases(draw):
    factors = {"time": draw(st.integers(1, 3)), "y": 2, "x": 2}
    nt = draw(st.integers(factors["time"], 12))
    ny, nx = draw(st.integers(10, 20)), draw(st.integers(10, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.integers(0, 65536, (nt, ny, nx)).astype(np.uint16)
    masks = []
    for _ in range(draw(st.integers(1, 3))):  # small rectangles, inside the 2 x 2 grid
        r0, c0 = draw(st.integers(0, ny - 4)), draw(st.integers(0, nx - 4))
        h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        m = np.zeros((ny, nx), bool)
        m[r0:r0 + h, c0:c0 + w] = True
        masks.append(m)
    chunks = {"time": draw(st.integers(1, nt)), "y": draw(st.integers(1, ny)),
              "x": draw(st.integers(1, nx))}
    return data, masks, factors, chunks


@FAST
@given(trace_cases())
def test_traces_do_not_depend_on_the_movie_chunks(case):
    data, masks, factors, chunks = case
    movie = _as_movie(data, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        ref = extract_traces(movie, masks, factors=factors, seed=3).compute()
        out = extract_traces(movie.chunk(chunks), masks, factors=factors, seed=3).compute()
    np.testing.assert_array_equal(out["background_pixel"], ref["background_pixel"])
    # float32 sums in another order: a few ulps of the counts (< 65536)
    for name in ("raw", "background"):
        np.testing.assert_allclose(out[name].values, ref[name].values, rtol=1e-6, atol=0)
