"""One robust noise estimate for calcium traces: resting level and noise sigma.

:func:`noise_sigma` is the package's only noise estimate. The z-score
normalization (:func:`calim_helpers.normalize.normalize` with
``method="zscore"``), event detection (:func:`calim_helpers.events.detect_events`,
whose ``threshold`` and ``prominence`` are in units of this sigma, above this
level) and the per-ROI ``noise_sigma`` and event ``snr`` of
:func:`calim_helpers.synchrony.session_features` all use it.

What it does
------------
A trace is noise around a resting level, plus positive transients (fast rise,
exponential decay) and possibly a little slow drift left by the baseline fit.
The estimate finds the trace's *quiet part*, the frames that belong to no
transient, and measures their spread around a local resting level:

1. Start from the low side of the finite frames, which transients do not
   reach: level ``m`` = their half-sample mode (the centre of their densest
   half, found recursively [2]_), ``s`` = 1.4826 × the median of ``m - x``
   over the frames below ``m`` (1.4826 = 1 / Φ⁻¹(3/4) makes a MAD a normal
   distribution's sigma [1]_); refined as the root mean square of ``m - x``
   below ``m`` (up to 3.5 ``s``) and the median of the frames within
   ``m ± 3 s``.
2. Local level ``L(t)``: the mean of the quiet frames within ``window // 2``
   frames of ``t``, leaving out ``t`` and its two neighbours (correlated noise
   of adjacent frames stays out), ``m`` where fewer than two are left.
   Residual ``r(t) = (x(t) - L(t)) / sqrt(1 + v / n(t))``, with ``n(t)`` the
   number of frames averaged and ``v`` the variance factor of step 4: slow
   drift is gone from ``r`` and, for white noise, its variance is the noise's.
3. Active frames: from any frame with ``r > clip * s`` on, as long as the
   frames stay above the local level (``r > 0``), and the first frame back
   at or below it; so a transient's decay goes with its peak. Apart from the
   ``clip`` test itself, whether a frame is active depends on the previous
   frame's value, never on its own, so the frames left are an unbiased sample
   of the noise. Quiet frames: finite, not active and ``|r| <= clip * s``
   (the symmetric cut also drops negative artefacts).
4. ``s`` = the root mean square of ``r`` over the quiet frames, or over those
   below the local level (``r < 0``) if that is smaller, divided by
   ``sqrt(v)``, with ``v = 1 - 2 c φ(c) / (2 Φ(c) - 1)`` the variance of a
   standard normal truncated to ``[-c, c]``, ``c = clip`` ([3]_; ``sqrt(v)`` =
   0.9546 at 2.5), which makes the clipped estimate consistent for Gaussian
   noise. For noise both sides agree; small transients that never reach
   ``clip`` and stay in the quiet part widen only the upper side, and taking
   the smaller keeps them from raising ``s``, and with it the clipping limit,
   round after round. ``m`` = median of the quiet frames. Steps 2-4 repeat
   until the quiet part repeats (a fixed point, or a short cycle of frames at
   the clipping limits, whose estimates are averaged), at most ``max_iter``
   rounds.

``level`` is ``m`` (one resting value per trace) and ``sigma`` is ``s``.

Why this one (measured)
-----------------------
Synthetic traces with known sigma = 1: Gaussian white noise, or AR(1) noise
with lag-1 correlation 0.3 (as left by block-averaging correlated native
frames); transients with a one-frame rise, peak 2-20 sigma (log-uniform),
exponential decay with tau 1-3 frames, Poisson onsets giving 0-42 % active
frames (transient > 0.5 sigma); optionally a slow drift of ±1 sigma (2 sine
cycles per trace). Median ± standard deviation of ``sigma_hat / sigma`` over
300 traces of 150 frames or 60 of 1500 frames per regime:

======================  =========  =========  =========  =========  =========
regime                  clip MAD   HSM+RMS    diff MAD   HSM+MAD    this
======================  =========  =========  =========  =========  =========
150, quiet              0.99±0.10  1.00±0.10  0.99±0.11  0.99±0.28  0.98±0.08
150, 15 % active        1.06±0.12  1.02±0.10  1.09±0.13  1.02±0.28  0.98±0.09
150, 42 % active        1.28±0.24  1.12±0.16  1.30±0.15  1.04±0.33  1.01±0.13
150, quiet, AR          0.99±0.10  1.00±0.10  0.84±0.08  1.00±0.26  0.99±0.09
150, 42 %, AR           1.29±0.25  1.11±0.15  1.11±0.15  1.04±0.33  1.02±0.15
150, quiet, drift       1.25±0.12  1.22±0.11  1.00±0.11  1.23±0.33  1.00±0.08
150, 42 %, drift        1.60±0.28  1.38±0.17  1.30±0.17  1.31±0.43  1.05±0.13
150, 15 %, 21 NaN       1.08±0.14  1.03±0.11  1.08±0.14  1.05±0.30  0.99±0.11
1500, quiet             1.01±0.04  0.99±0.03  1.01±0.03  0.99±0.14  0.99±0.03
1500, 42 % active       1.30±0.07  1.13±0.04  1.31±0.05  1.05±0.16  1.03±0.05
1500, 42 %, drift       1.58±0.07  1.39±0.05  1.30±0.04  1.32±0.22  1.04±0.04
150, 2-4 sigma, 48 %    1.44±0.22  1.22±0.15  1.24±0.13  1.13±0.36  1.21±0.17
1500, tau 5-15, 40 %    1.70±0.21  1.27±0.07  1.07±0.03  1.18±0.20  1.03±0.05
======================  =========  =========  =========  =========  =========

Over the full grid (150 and 1500 frames × white/AR × drift or not × 0, 5,
15, 42 % active; 32 regimes) the root-mean-square error of
``sigma_hat / sigma`` averages 0.072 here, against 0.26 (clip MAD), 0.19
(HSM+RMS), 0.15 (diff MAD) and 0.31 (HSM+MAD); the worst median bias is 5 %
here, 30-60 % for the others. The last two rows are stress tests: only small
transients (peaks 2-4 sigma, the hardest case for every estimate), and slow
decays as at a native 0.1 s frame rate. clip MAD is the former
``normalize.noise_sigma`` (one-sided iterated clipping at 3 sigma around the
median), HSM+RMS the former ``events.noise_level`` (step 1 alone), diff MAD
1.4826 × the MAD of first differences / √2, HSM+MAD the half-sample mode and
low-side MAD without refinement. Median-centred estimates break down when
many frames are active; the first-difference estimate is biased by
autocorrelation (by √(1 - ρ₁)) and by transient decays; every estimate
around one global level counts drift as noise; the half-sample mode alone is
nearly unbiased but noisy. ``clip = 2.5`` was chosen over 2.0 (mean error
0.092, spread 0.11 on quiet 150-frame traces) and 3.0 (0.072, but worst bias
8 % and a larger stress-test error); ``window = 21`` over 11 (0.077) and 41
(0.072, worst bias 9 %). Without the low-side rule of step 4 the mean error
is about the same (0.073) but the 2-4 sigma stress case reaches 1.35 and
traces full of overlapping 3-4 sigma transients 1.4-1.7.

Limits
------
- Gaussian-like noise is assumed by the 1.4826 and truncation factors; with
  heavier tails ``sigma`` is the spread of the core of the distribution.
- Transients that never reach ``clip`` sigma partly count as noise: a trace
  busy with only small (2-4 sigma) transients gets ``sigma`` ~20 % high, as
  with the former HSM+RMS; overlapping 3-4 sigma transients every ~8 frames,
  28-37 % high (HSM+RMS: 21-30 %).
- The smaller-side rule of step 4 costs a small low bias on quiet traces:
  -2 to -3 % at 150 frames, -1 % at 1500, -4.5 % at 60 frames, where the estimate
  also spreads more (10-90 % of ``sigma_hat / sigma`` on white noise: 0.79-1.12 at
  60 frames, 0.87-1.07 at 150, 0.95-1.02 at 1500; 2000, 2000 and 200 traces). A low
  estimate lowers an event threshold in sigmas: the false event rate of
  :func:`calim_helpers.events.detect_events` on white noise is 5.3 per 1000 frames at
  60 frames against 1.6 at 1500.
- Only positive transients are recognized; negative deflections (e.g. an
  over-fitted baseline) deeper than ``clip`` sigma are dropped as artefacts,
  shallower ones count as noise.
- Drift is taken out only when slower than about ``window`` frames. Noise
  with a lag-1 correlation well above 0.3 makes ``sigma`` a few % low.
- With few quiet frames (short or nearly always active traces) ``sigma`` is
  imprecise; ``n_quiet`` says how many frames it rests on.
- ``sigma`` is 0 for a constant trace (or any trace whose low side has no
  spread); ``sigma`` and ``level`` are NaN with fewer than 3 finite frames.

Threshold, prominence and level
-------------------------------
Event detection compares ``(x - level) / sigma`` with ``threshold`` and
measures each peak's prominence in sigmas. ``level`` is one resting value per
trace, not the local ``L(t)``: drift that the baseline fit left shifts the
effective threshold locally (a drift of ``d`` sigma lowers it by ``d``), but
it does not inflate ``sigma`` and so does not raise the threshold everywhere
else. The estimate leaves out everything that reaches ``clip = 2.5`` sigma
above the local level, with its decay, so a peak that passes the default
``threshold = 3`` never widens the noise it is measured against; a peak must
also stand ``prominence`` sigmas above the trough that separates it from
higher signal, which keeps noise on a decay from counting as a new event.
With the defaults (3, 3), Gaussian noise alone gives about 5.3 events per
1000 frames on 60-frame traces, 2.6 on 150-frame and 1.6 on 1500-frame traces
(measured); a
sigma that active frames inflate, as the former estimates did by ~5 % on
moderately active traces, lowers that rate at the price of missing small
transients.

Computation
-----------
With numba installed, all traces are estimated in one compiled loop that
repeats the numpy path's floating-point operations in the same order (numpy's
pairwise summation for means, scipy's running sum for the window sums), so the
two give the same results bit for bit. On the arPLS residuals of
``benchmarks/bench_arpls.py`` (seed 0) it takes 8 ms of CPU for 1000 traces of
150 frames and 15 ms for 100 traces of 1500 frames (of which numpy's argsort
3.5 ms), against 0.47 s and 0.13 s for the numpy path (measured side by side
before the local level and the quiet part were computed in fewer passes and
without branches, which took 12 ms and 19 ms to these 8 and 15). The first
call compiles it, about 6 s of CPU; numba keeps the result on disk and later
processes load it in about 0.2 s. Without numba the numpy path runs, one trace
at a time.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(0.5, 0.02, 3000)
>>> x[::4] += rng.uniform(0.1, 0.5, 750)  # a quarter of the frames: transients
>>> est = noise_sigma(x)
>>> round(float(est.sigma), 3), round(float(est.level), 2)
(0.02, 0.5)

Two traces at once (one a row), NaN frames ignored:

>>> y = np.stack([x, 2 * x])
>>> y[:, :20] = np.nan
>>> np.round(noise_sigma(y).sigma, 2).tolist()
[0.02, 0.04]

References
----------
.. [1] Rousseeuw, P. J. and Croux, C. "Alternatives to the median absolute
   deviation." *Journal of the American Statistical Association* 88,
   1273-1283 (1993).
.. [2] Bickel, D. R. and Frühwirth, R. "On a fast, robust estimator of the
   mode: comparisons to other robust estimators with applications."
   *Computational Statistics & Data Analysis* 50, 3500-3530 (2006).
.. [3] Johnson, N. L., Kotz, S. and Balakrishnan, N. *Continuous Univariate
   Distributions*, vol. 1, 2nd ed., Wiley (1994), ch. 13 (truncated normal
   distribution).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter1d

# the compiled loop over traces (about 20 times faster than the numpy one) where numba is
from calim_helpers.compiled import HAVE_NUMBA, jit

__all__ = ["MAD_TO_SIGMA", "NoiseEstimate", "noise_sigma"]

# 1 / Phi^-1(3/4): makes the MAD a consistent estimator of a Gaussian's sigma.
MAD_TO_SIGMA = 1.482602218505602

_GAP = 1  # the local level leaves out the frame itself and this many neighbours each side
_MIN_FINITE = 3  # fewer finite frames: sigma and level are NaN
_HAVE_NUMBA = HAVE_NUMBA  # False: the numpy path, _one per trace (tests switch it off)
_PW_BLOCK = 128  # numpy's pairwise summation: blocks of this many values, 8 partial sums
# The compiled path keeps the quiet part of this many rounds at most (a bool per frame
# each); a trace that runs more rounds without a repeat is redone by the numpy path.
_KEPT_ROUNDS = 256


class NoiseEstimate(NamedTuple):
    """Result of :func:`noise_sigma`; each field has the input's shape without time.

    Attributes
    ----------
    sigma : numpy.ndarray or xarray.DataArray, float64
        Noise standard deviation, in the units of the trace.
    level : numpy.ndarray or xarray.DataArray, float64
        Resting level: the median of the quiet frames, in the units of the trace.
    n_quiet : numpy.ndarray or xarray.DataArray, int64
        Number of quiet frames the estimate rests on.
    converged : numpy.ndarray or xarray.DataArray, bool
        Whether the quiet part stopped changing within ``max_iter`` rounds.
    """

    sigma: Any
    level: Any
    n_quiet: Any
    converged: Any


def _half_sample_mode(x: np.ndarray) -> float:
    """Half-sample mode of the (finite) values ``x`` (Bickel & Frühwirth 2006)."""
    x = np.sort(x)
    while x.size > 3:
        h = (x.size + 1) // 2
        widths = x[h - 1:] - x[:x.size - h + 1]
        i = int(np.argmin(widths))
        x = x[i:i + h]
    if x.size == 3:
        left, right = x[1] - x[0], x[2] - x[1]
        return float(x[1] if left == right else x[:2].mean() if left < right else x[1:].mean())
    return float(x.mean())


def _truncated_sd(clip: float) -> float:
    """Return the standard deviation of a standard normal truncated to ``[-clip, clip]``."""
    inside = math.erf(clip / math.sqrt(2.0))
    density = math.exp(-0.5 * clip * clip) / math.sqrt(2.0 * math.pi)
    return math.sqrt(1.0 - 2.0 * clip * density / inside)


def _window_sum(v: np.ndarray, half: int) -> np.ndarray:
    """Sum of ``v`` over ``t - half .. t + half`` minus the frames ``t - _GAP .. t + _GAP``."""
    outer = uniform_filter1d(v, 2 * half + 1, mode="constant") * (2 * half + 1)
    inner = uniform_filter1d(v, 2 * _GAP + 1, mode="constant") * (2 * _GAP + 1)
    return outer - inner


def _active(r: np.ndarray, limit: float) -> np.ndarray:
    """Frames of transients: from a frame with ``r > limit`` on while ``r > 0``, plus one.

    Frame ``t`` is active when ``r[t] > limit`` or when frame ``t - 1`` is
    active with ``r[t - 1] > 0``: a transient's decay goes with its peak, up to
    and including the first frame back at or below the local level. Apart
    from the ``limit`` test, whether a frame is active never depends on its
    own value, so for white noise the frames left are an unbiased sample.
    NaN frames end a transient.
    """
    with np.errstate(invalid="ignore"):
        above = r > 0
        high = r > limit
    starts = above & ~np.concatenate([[False], above[:-1]])
    run = np.cumsum(starts)  # id of the run of frames above the level, where above
    n_high = np.cumsum(high)
    before = np.concatenate([[0], n_high])[np.flatnonzero(starts)]  # highs before each run
    seen = n_high - np.concatenate([[0], before])[run] > 0  # a high frame earlier in the run
    core = above & seen
    active = core.copy()
    active[1:] |= core[:-1]
    return active


def _start(xf: np.ndarray) -> tuple[float, float]:
    """First level and sigma of the finite values ``xf``, from their low side.

    The half-sample mode and the low-side MAD, refined (at most 50 rounds) as
    the root mean square of the deviations below the level (up to 3.5 sigma)
    and the median of the values within 3 sigma of the level.
    """
    level = _half_sample_mode(xf)
    below = level - xf[xf < level]
    sigma = MAD_TO_SIGMA * float(np.median(below)) if below.size else 0.0
    for _ in range(50):
        if not sigma > 0:
            break
        below = level - xf[xf < level]
        below = below[below <= 3.5 * sigma]
        sigma = float(np.sqrt(np.mean(below**2))) if below.size else 0.0
        near = xf[np.abs(xf - level) <= 3.0 * sigma]
        new = float(np.median(near)) if near.size else level
        if new == level:
            break
        level = new
    return level, sigma


def _one(x: np.ndarray, clip: float, half: int, max_iter: int
         ) -> tuple[float, float, int, bool]:
    """Core of :func:`noise_sigma` on one float64 trace: sigma, level, n_quiet, converged."""
    finite = np.isfinite(x)
    xf = x[finite]
    if xf.size < _MIN_FINITE:
        return float("nan"), float("nan"), 0, True
    level, sigma = _start(xf)
    if not sigma > 0:  # constant, or no spread on the low side
        return 0.0, level, int(np.count_nonzero(xf == level)), True
    unit = _truncated_sd(clip)
    x0 = np.where(finite, x, 0.0)
    local = np.full(x.shape, level)
    n_avg = np.full(x.shape, np.inf)
    quiet = np.zeros(x.shape, dtype=bool)
    seen: dict[bytes, int] = {}  # quiet part -> round that produced it
    history: list[tuple[float, float]] = []  # sigma, level of each round
    converged = False
    for _ in range(max_iter):
        r = np.where(finite, (x - local) / np.sqrt(1.0 + unit**2 / n_avg), np.nan)
        with np.errstate(invalid="ignore"):
            new = finite & ~_active(r, clip * sigma) & (np.abs(r) <= clip * sigma)
        if np.count_nonzero(new) < _MIN_FINITE:
            break  # keep the previous estimate
        # sigma from both sides of the quiet frames and from their low side alone:
        # the same for noise, but positive signal left in the quiet part (transients
        # that never reach the clipping limit) only enlarges the first
        rms = float(np.sqrt(np.mean(r[new] ** 2)))
        low = r[new & (r < 0)]
        if low.size:
            rms = min(rms, float(np.sqrt(np.mean(low**2))))
        step = (rms / unit, float(np.median(x[new])))
        key = np.packbits(new).tobytes()
        if key in seen:
            # the quiet part repeats: a fixed point, or a short cycle between frames at
            # the clipping limits; the estimate is the mean over the rounds that used
            # the local level of a state of the cycle
            cycle = np.array(history[seen[key] + 1:] + [step])
            sigma, level = (float(v) for v in cycle.mean(axis=0))
            quiet, converged = new, True
            break
        seen[key] = len(history)
        history.append(step)
        (sigma, level), quiet = step, new
        if not sigma > 0:
            converged = True
            break
        n_avg = np.rint(_window_sum(quiet.astype(np.float64), half))
        total = _window_sum(np.where(quiet, x0, 0.0), half)
        enough = n_avg >= 2
        local = np.where(enough, total / np.where(enough, n_avg, 1.0), level)
        n_avg = np.where(enough, n_avg, np.inf)
    return sigma, level, int(np.count_nonzero(quiet)), converged


# --- the compiled path -------------------------------------------------------------------
# The same steps as _one, in loops that numba compiles, on all traces in one call. Every
# floating-point operation is the one numpy and scipy do, in the same order, so that the
# results are equal bit for bit (tests/test_noise.py compares the two on random traces):
# means use numpy's pairwise summation, the window sums scipy's running sum.


@jit
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    """Sum of ``a[lo:lo + n]`` (``n <= _PW_BLOCK``) as numpy sums one block."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(lo + i, lo + n):
        res += a[j]
    return res


@jit
def _pairwise_sum(a: np.ndarray, n: int) -> float:
    """Sum of ``a[:n]`` in the order of numpy's pairwise summation (``np.sum``).

    numpy halves a range of more than ``_PW_BLOCK`` values (at a multiple of 8) and
    adds the sums of the halves; here without recursion (numba's disk cache does not
    hold recursive functions), with a stack of ranges to do and of sums done.
    """
    if n <= _PW_BLOCK:
        return _block_sum(a, 0, n)
    todo = np.empty((128, 2), dtype=np.int64)  # (start, length); length -1: add two sums
    done = np.empty(64)
    todo[0, 0], todo[0, 1] = 0, n
    n_todo, n_done = 1, 0
    while n_todo:
        n_todo -= 1
        lo, size = todo[n_todo, 0], todo[n_todo, 1]
        if size < 0:
            n_done -= 1
            done[n_done - 1] += done[n_done]
        elif size <= _PW_BLOCK:
            done[n_done] = _block_sum(a, lo, size)
            n_done += 1
        else:
            half = size // 2
            half -= half % 8
            todo[n_todo, 0], todo[n_todo, 1] = 0, -1
            todo[n_todo + 1, 0], todo[n_todo + 1, 1] = lo + half, size - half
            todo[n_todo + 2, 0], todo[n_todo + 2, 1] = lo, half
            n_todo += 3
    return done[0]


@jit
def _mean_of(a: np.ndarray, n: int) -> float:
    """``np.mean(a[:n])`` (``n >= 1``), bit for bit."""
    return (0.0 + _pairwise_sum(a, n)) / n


@jit
def _middle(lower: float, upper: float) -> float:
    """``np.mean([lower, upper])``, bit for bit: the median of an even number of values."""
    return (0.0 + ((0.0 + lower) + upper)) / 2.0


@jit
def _hsm_sorted(x: np.ndarray) -> float:
    """:func:`_half_sample_mode` of the sorted values ``x`` (at least one)."""
    lo, size = 0, x.size
    while size > 3:
        h = (size + 1) // 2
        best, narrowest = 0, x[lo + h - 1] - x[lo]
        for i in range(1, size - h + 1):
            width = x[lo + i + h - 1] - x[lo + i]
            if width < narrowest:
                best, narrowest = i, width
        lo += best
        size = h
    if size == 3:
        left, right = x[lo + 1] - x[lo], x[lo + 2] - x[lo + 1]
        if left == right:
            return x[lo + 1]
        first = lo if left < right else lo + 1
        return _middle(x[first], x[first + 1])
    return _mean_of(x[lo:], size)


@jit
def _first_at_least(x: np.ndarray, level: float, bound: float, strict: bool) -> int:
    """First ``i`` with ``x[i] - level >= bound`` (``>`` if ``strict``) in sorted ``x``.

    ``x[i] - level`` as computed: rounding keeps it in the order of ``x``.
    """
    lo, hi = 0, x.size
    while lo < hi:
        mid = (lo + hi) // 2
        d = x[mid] - level
        if d > bound or (d == bound and not strict):
            hi = mid
        else:
            lo = mid + 1
    return lo


@jit
def _start_compiled(xf: np.ndarray, xs: np.ndarray, work: np.ndarray) -> tuple[float, float]:
    """:func:`_start` of the finite values ``xf`` (``xs``: sorted; ``work``: scratch).

    The medians are read off the sorted values: the frames below the level are
    the first of them, those within ``3 s`` of it a run of them (rounding keeps
    ``x - level`` in the order of ``x``).
    """
    level = _hsm_sorted(xs)
    m = _first_at_least(xs, level, 0.0, False)  # xs[:m] < level
    sigma = 0.0
    if m:  # median of level - xs[:m], whose order is that of xs[:m] reversed
        h = m // 2
        upper = level - xs[m - 1 - h]
        sigma = MAD_TO_SIGMA * (upper if m % 2 else _middle(level - xs[m - h], upper))
    for _ in range(50):
        if not sigma > 0:
            break
        reach = 3.5 * sigma
        k = 0
        for v in xf:  # in the frames' order: numpy's pairwise sum depends on it
            d = level - v
            work[k] = d * d  # kept by moving on, without a branch
            k += (v < level) & (d <= reach)
        sigma = math.sqrt(_mean_of(work, k)) if k else 0.0
        reach = 3.0 * sigma
        a = _first_at_least(xs, level, -reach, False)  # |x - level| <= reach: xs[a:b]
        b = _first_at_least(xs, level, reach, True)
        new = level
        if b > a:
            h = (b - a) // 2
            new = xs[a + h] if (b - a) % 2 else _middle(xs[a + h - 1], xs[a + h])
        if new == level:
            break
        level = new
    return level, sigma


@jit
def _local_level(x: np.ndarray, quiet: np.ndarray, half: int, level: float,
                 widen: np.ndarray, div: np.ndarray, local: np.ndarray, pad: np.ndarray,
                 ipad: np.ndarray) -> None:
    """Compute the local level of :func:`_one`'s next round from its quiet part, in one pass.

    Bit for bit what :func:`_one` computes with :func:`_window_sum` (scipy's running
    sums), with less work: the frame counts add integers (the float running sums of 0 and
    1 are exact, and rounded back to them); the running sums of the values over the wide
    and the narrow window go side by side, each adding what scipy's running sum adds, in
    its order. ``local``: the mean of the quiet frames around each frame (``level`` where
    fewer than 2); ``div``: the residual's divisor ``sqrt(1 + unit² / n)``, ``widen[n]``
    (1 where fewer than 2). ``pad``, ``ipad``: scratch, at least ``x.size + 2 * half + 2``
    long. (Measured: a third of the time of four running means and a pass to combine
    them; the divisions in a loop of their own, to vectorize, made it slower.)
    """
    n = x.size
    wide, narrow = 2 * half + 1, 2 * _GAP + 1
    o = half + 1  # frame t is at t + o in the padded copies, zeros around
    for i in range(o):
        pad[i], ipad[i] = 0.0, 0
    for t in range(n):
        pad[t + o] = x[t] if quiet[t] else 0.0
        ipad[t + o] = 1 if quiet[t] else 0
    for i in range(n + o, n + 2 * o):
        pad[i], ipad[i] = 0.0, 0
    sum_w, sum_n, count = 0.0, 0.0, 0
    for k in range(wide):
        sum_w += pad[k - half + o]
        count += ipad[k - half + o]
    for k in range(narrow):
        sum_n += pad[k - _GAP + o]
        count -= ipad[k - _GAP + o]
    for t in range(n):
        if t:
            sum_w += pad[t + half + o] - pad[t - half - 1 + o]
            sum_n += pad[t + _GAP + o] - pad[t - _GAP - 1 + o]
            count += (ipad[t + half + o] - ipad[t - half - 1 + o]
                      - ipad[t + _GAP + o] + ipad[t - _GAP - 1 + o])
        total = sum_w / wide * wide - sum_n / narrow * narrow
        if count >= 2:
            local[t] = total / count
            div[t] = widen[count]
        else:
            local[t] = level
            div[t] = 1.0


# rows of the float scratch array of _one_compiled, each as long as a trace
_XF, _XS, _R, _LOCAL, _DIV, _WORK, _LOW = range(7)
_N_BUF = 7


@jit
def _one_compiled(x: np.ndarray, rank: np.ndarray, clip: float, half: int, max_iter: int,
                  unit: float, unit2: float, widen: np.ndarray, buf: np.ndarray,
                  by_value: np.ndarray, masks: np.ndarray, n_masked: np.ndarray,
                  history: np.ndarray, pad: np.ndarray, ipad: np.ndarray
                  ) -> tuple[float, float, int, bool]:
    """:func:`_one` on one trace ``x``, given ``rank = np.argsort(x)``.

    ``widen[m]`` = ``sqrt(1 + unit2 / m)``; ``buf``: float scratch (``_N_BUF``, time);
    ``by_value``: int scratch (time,); ``masks``, ``n_masked``, ``history``: the quiet
    part, its size and (sigma, level) of each round, (kept, time), (kept,) and (kept, 2).
    ``n_quiet`` is -1 if the trace needs more than ``kept`` rounds.
    """
    n = x.size
    k = 0
    for t in range(n):
        if math.isfinite(x[t]):
            buf[_XF, k] = x[t]
            k += 1
    if k < _MIN_FINITE:
        return math.nan, math.nan, 0, True
    xf, xs, by_value = buf[_XF, :k], buf[_XS, :k], by_value[:k]
    i = 0
    for t in rank:  # the finite frames in increasing order of their value
        if math.isfinite(x[t]):
            by_value[i], xs[i] = t, x[t]
            i += 1
    level, sigma = _start_compiled(xf, xs, buf[_WORK])
    if not sigma > 0:  # constant, or no spread on the low side
        same = 0
        for value in xf:
            same += value == level
        return 0.0, level, same, True
    r, local, div, work, low = buf[_R], buf[_LOCAL], buf[_DIV], buf[_WORK], buf[_LOW]
    local[:] = level
    div[:] = 1.0  # sqrt(1 + unit² / n) with n = inf
    n_quiet, converged, rounds = 0, False, 0
    for _ in range(max_iter):
        if rounds == masks.shape[0]:
            return math.nan, math.nan, -1, False  # more rounds than kept: see caller
        new = masks[rounds]  # this round's quiet part
        limit = clip * sigma
        count, n_low, chained = 0, 0, False
        for t in range(n):  # residual, active frames (see _active), quiet frames
            if not math.isfinite(x[t]):
                r[t] = math.nan
                new[t] = chained = False
                continue
            r[t] = (x[t] - local[t]) / div[t]
            # without branches (whether a frame is quiet is not predictable): every
            # square is written, and kept by moving on
            active = (r[t] > limit) | chained
            chained = active & (r[t] > 0)
            new[t] = (not active) & (abs(r[t]) <= limit)
            square = r[t] * r[t]
            work[count] = square
            low[n_low] = square
            count += new[t]
            n_low += new[t] & (r[t] < 0)
        if count < _MIN_FINITE:
            break  # keep the previous estimate
        rms = math.sqrt(_mean_of(work, count))
        if n_low:
            rms_low = math.sqrt(_mean_of(low, n_low))
            if rms_low < rms:
                rms = rms_low
        # median of x over the quiet frames: walk the frames in order of value
        h, j, lower, upper = count // 2, 0, 0.0, 0.0
        for t in by_value:
            if new[t]:
                if j == h - 1:
                    lower = x[t]
                elif j == h:
                    upper = x[t]
                    break
                j += 1
        step_sigma = rms / unit
        step_level = upper if count % 2 else _middle(lower, upper)
        repeat = -1
        for j in range(rounds):
            if n_masked[j] == count and np.array_equal(masks[j], new):
                repeat = j
                break
        if repeat >= 0:
            # the quiet part repeats: the mean over the rounds of the cycle (see _one)
            s_sum, l_sum = 0.0, 0.0
            for j in range(repeat + 1, rounds):
                s_sum += history[j, 0]
                l_sum += history[j, 1]
            s_sum += step_sigma
            l_sum += step_level
            m = rounds - repeat
            sigma, level = s_sum / m, l_sum / m
            n_quiet, converged = count, True
            break
        n_masked[rounds] = count
        history[rounds, 0], history[rounds, 1] = step_sigma, step_level
        rounds += 1
        sigma, level, n_quiet = step_sigma, step_level, count
        if not sigma > 0:
            converged = True
            break
        _local_level(x, new, half, level, widen, div, local, pad, ipad)
    return sigma, level, n_quiet, converged


@jit
def _rows_compiled(rows: np.ndarray, rank: np.ndarray, clip: float, half: int, max_iter: int,
                   kept: int, unit: float, unit2: float, sigma: np.ndarray, level: np.ndarray,
                   n_quiet: np.ndarray, converged: np.ndarray) -> None:
    """:func:`_one_compiled` on each row of ``rows`` (trace, time); fill the outputs.

    ``rank``: ``np.argsort(rows, axis=1)`` (numpy's vectorized sort is several times
    faster than numba's); ``kept``: rounds kept (``n_quiet`` -1 where that is too few).
    """
    n = rows.shape[1]
    # sqrt(1 + unit^2 / m) of _one by number of frames averaged, m = 0 .. 2 half + 1
    widen = np.sqrt(1.0 + unit2 / np.arange(2 * half + 2))
    buf = np.empty((_N_BUF, n))
    by_value = np.empty(n, dtype=np.int64)
    masks = np.empty((kept, n), dtype=np.bool_)
    n_masked = np.empty(kept, dtype=np.int64)
    history = np.empty((kept, 2))
    pad, ipad = np.empty(n + 2 * half + 2), np.empty(n + 2 * half + 2, dtype=np.int64)
    for i in range(rows.shape[0]):
        sigma[i], level[i], n_quiet[i], converged[i] = _one_compiled(
            rows[i], rank[i], clip, half, max_iter, unit, unit2, widen, buf, by_value, masks,
            n_masked, history, pad, ipad)


def _check(name: str, value: Any, *, integer: bool, low: float) -> None:
    if integer:
        ok = not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= low
        if not ok:
            raise ValueError(f"{name} must be an integer >= {low:g}, got {value!r}")
    else:
        ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer
                                                          | np.floating)
              and math.isfinite(value) and value > low)
        if not ok:
            raise ValueError(f"{name} must be a finite number > {low:g}, got {value!r}")


def noise_sigma(
    trace: Any,
    /,
    *,
    axis: int = -1,
    clip: float = 2.5,
    window: int = 21,
    max_iter: int = 50,
) -> NoiseEstimate:
    """Resting level and noise standard deviation of the quiet part of traces.

    See the module docstring for the method, its measured accuracy and its
    limits.

    Parameters
    ----------
    trace : array_like or xarray.DataArray, shape (..., time)
        One trace (time,) or many, e.g. (roi, time); NaN frames (trimmed or
        guarded) are ignored. Not modified.
    axis : int, keyword-only
        Time axis of an array. A DataArray uses its ``time`` dimension
        instead. Default is -1.
    clip : float, keyword-only
        In noise sigmas, > 0: a frame this far above the local level starts a
        transient, which lasts while the trace stays above that level; quiet
        frames lie within ± this of it. Default is 2.5.
    window : int, keyword-only
        Width of the running window of the local resting level, frames, >= 5
        (the frame itself and its two neighbours are left out). Drift slower
        than about this is not counted as noise. Default is 21.
    max_iter : int, keyword-only
        Maximum number of refinement rounds, >= 1. Default is 50.

    Returns
    -------
    NoiseEstimate
        Named tuple ``(sigma, level, n_quiet, converged)``, each of the
        input's shape without the time axis (numpy scalars for one trace;
        DataArrays with the other dimensions and their coordinates for a
        DataArray). ``sigma`` is in the units of ``trace`` (0 for a constant
        trace; NaN, like ``level``, with fewer than 3 finite frames).

    Raises
    ------
    ValueError
        If ``trace`` is not numeric or is a scalar, a DataArray has no
        ``time`` dimension, ``axis`` is out of range, or ``clip``, ``window``
        or ``max_iter`` is out of range.

    References
    ----------
    Bickel and Frühwirth (2006) for the half-sample mode; Rousseeuw and Croux
    (1993) for the MAD factor 1.4826 (see the module docstring).
    """
    _check("clip", clip, integer=False, low=0.0)
    _check("window", window, integer=True, low=5)
    _check("max_iter", max_iter, integer=True, low=1)
    da = trace if isinstance(trace, xr.DataArray) else None
    if da is not None:
        if "time" not in da.dims:
            raise ValueError(f"trace must have a 'time' dimension, got dims {da.dims}")
        values = np.asarray(da.values)
        axis = da.dims.index("time")
    else:
        values = np.asarray(trace)
    if values.ndim == 0:
        raise ValueError("trace must be (..., time), got a scalar")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"trace must be real numbers, got dtype {values.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) \
            or not -values.ndim <= axis < values.ndim:
        raise ValueError(f"axis must be an integer in [{-values.ndim}, {values.ndim - 1}], "
                         f"got {axis!r}")
    x = np.moveaxis(values, axis, -1).astype(np.float64, copy=False)  # only read
    shape = x.shape[:-1]
    rows = x.reshape(math.prod(shape), x.shape[-1])
    clip, half, max_iter = float(clip), int(window) // 2, int(max_iter)
    if _HAVE_NUMBA:
        if not rows.flags.writeable:  # numba compiles read-only arrays apart (a 2nd type)
            rows = rows.copy()
        k = rows.shape[0]
        sigma, level = np.empty(k), np.empty(k)
        n_quiet, converged = np.empty(k, dtype=np.int64), np.empty(k, dtype=bool)
        unit = _truncated_sd(clip)
        rows = np.ascontiguousarray(rows)
        _rows_compiled(rows, np.argsort(rows, axis=1), clip, half, max_iter,
                       min(max_iter, _KEPT_ROUNDS), unit, unit**2, sigma, level, n_quiet,
                       converged)
        for i in np.flatnonzero(n_quiet < 0):  # more rounds than the compiled path keeps
            sigma[i], level[i], n_quiet[i], converged[i] = _one(rows[i], clip, half, max_iter)
        sigma, level = sigma.reshape(shape), level.reshape(shape)
        n_quiet, converged = n_quiet.reshape(shape), converged.reshape(shape)
    else:
        out = [_one(row, clip, half, max_iter) for row in rows]
        sigma = np.array([o[0] for o in out], dtype=np.float64).reshape(shape)
        level = np.array([o[1] for o in out], dtype=np.float64).reshape(shape)
        n_quiet = np.array([o[2] for o in out], dtype=np.int64).reshape(shape)
        converged = np.array([o[3] for o in out], dtype=bool).reshape(shape)
    if da is None:
        if not shape:
            return NoiseEstimate(sigma[()], level[()], n_quiet[()], converged[()])
        return NoiseEstimate(sigma, level, n_quiet, converged)
    dims = tuple(d for d in da.dims if d != "time")
    coords = {k: v for k, v in da.coords.items() if "time" not in v.dims}

    def wrap(a: np.ndarray) -> xr.DataArray:
        return xr.DataArray(a, dims=dims, coords=coords)

    return NoiseEstimate(wrap(sigma), wrap(level), wrap(n_quiet), wrap(converged))
