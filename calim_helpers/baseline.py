"""arPLS baseline (drift and photobleaching) of fluorescence traces (SPEC §2 step 5).

:func:`arpls` fits the asymmetrically reweighted penalized least squares baseline of
Baek et al. (2015) to one trace or to many at once; :func:`arpls_dataarray` lifts it
over an ``xarray.DataArray`` with a time dimension. :func:`lam_from_cutoff` and
:func:`cutoff_from_lam` convert between the smoothing parameter λ and the cut-off
period of the underlying Whittaker smoother, so that λ can follow the time base.
Each fit comes with a status: ``"converged"`` (the weights settled), ``"stable"``
(they kept changing until ``max_iter``, as arPLS weights can, but the baseline no
longer moves) or ``"failed"`` (a baseline that is not finite or does not follow the
trace; see :func:`arpls`).

The penalized system ``(W + λ DᵀD) z = W y`` is pentadiagonal and symmetric positive
definite. With numba installed, the whole iteration runs compiled: traces are fitted
side by side in ``_LANES`` lanes (a banded LDLᵀ factorization vectorized over the
lanes, with fused multiply-adds; a lane takes the next trace as soon as its trace stops,
and the last fits run in half as many lanes); so does the status's re-fit of the fits
stopped at ``max_iter``. Without numba, all
traces iterate together in numpy and each step is one call of LAPACK's banded Cholesky
(``?pbsv``, as :func:`scipy.linalg.solveh_banded`) on the block-diagonal system.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = np.arange(150.0)
>>> bleach = 100 + 20 * np.exp(-t / 60)
>>> transient = np.where(t >= 70, 30 * np.exp(-(t - 70) / 5), 0.0)
>>> y = bleach + transient + rng.normal(0, 1, t.size)
>>> baseline, info = arpls(y, lam=10.0)
>>> baseline.shape, info["converged"], info["n_iter"], info["status"]
((150,), True, 38, 'converged')
>>> float(np.median(np.abs(baseline - bleach))) < 1, float((y - baseline)[70]) > 25
(True, True)
>>> round(lam_from_cutoff(11.0, 1.0), 2), round(cutoff_from_lam(10.0, 1.0), 2)
(9.92, 11.02)

References
----------
.. [1] Baek, S.-J., Park, A., Ahn, Y.-J. and Choo, J. "Baseline correction using
   asymmetrically reweighted penalized least squares smoothing." *Analyst* 140,
   250-257 (2015). https://doi.org/10.1039/C4AN01061B
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from scipy.linalg import get_lapack_funcs
from scipy.special import expit

from calim_helpers.compiled import HAVE_NUMBA, jit, lazy_intrinsic
from calim_helpers.noise import noise_sigma

__all__ = ["FIT_STATUSES", "arpls", "arpls_dataarray", "cutoff_from_lam", "lam_from_cutoff"]

_EPS = np.finfo(np.float64).eps
#: A squared pivot at most this fraction of the largest diagonal entry: singular (LAPACK path).
_SINGULAR = 1e-10
_pbsv = get_lapack_funcs("pbsv", dtype=np.float64)  # banded Cholesky solve, as solveh_banded
_HAVE_NUMBA = HAVE_NUMBA  # False: the numpy iteration (tests switch it off)
# Traces fitted side by side by the compiled iteration: at least 16 lets LLVM vectorize
# the loops over lanes (it leaves loops of fewer than 16 iterations scalar); 32 measured
# fastest (benchmarks/bench_arpls.py; 48 and 64 no faster, a last step down to 8 lanes
# slower).
_LANES = 32
# A fit whose residuals are all below this many ulps of the trace's magnitude reproduces
# the data to rounding: its weights carry no information and the iteration stops.
_EXACT_FIT_ULPS = 1000.0
# Fit status (see arpls, Notes). A fit that stops at max_iter is "stable" when this many
# further iterations move its baseline by at most _STABLE_SIGMA noise sigmas. Measured at
# lam 10-100 on the 723 fits that reached max_iter among 7282 traces (synthetic bleach +
# transients, busy and random-walk traces, white noise, the demo data's signal and raw
# traces): at most 0.18 sigma (99th percentile 0.16, median 0.003-0.03); busy traces cut
# short at max_iter = 2, 5, 10 move by a median of 13, 8 and 4 sigma. (At lam = 1 some
# white-noise fits truly oscillate: up to 6.5 sigma, 99th percentile 1.0.)
_STABLE_ITER = 10
_STABLE_SIGMA = 0.25
# A baseline follows the trace when the residual's resting level is within _FOLLOW_SIGMA
# noise sigmas of 0 and at most _FOLLOW_FRACTION of the frames lie more than _FOLLOW_SIGMA
# sigmas below the baseline. Measured on 2082 such fits (lam 10 and 1e5), converged or
# not: |level| <= 1.0 sigma, at most 8 % of frames (a demo ROI with negative artefacts;
# 3 % on synthetic traces).
_FOLLOW_SIGMA = 3.0
_FOLLOW_FRACTION = 0.25
_MIN_QUIET = 3  # quiet frames noise_sigma needs to measure the resting level
#: Values of ``info["status"]``, in order of merit.
FIT_STATUSES = ("converged", "stable", "failed")


def _check_params(lam: Any, tol: Any, max_iter: Any) -> tuple[float, float, int]:
    """Validate the tuning scalars of :func:`arpls`; return them as float, float, int."""
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.integer | np.floating):
        raise ValueError(f"lam must be a real number > 0, got {lam!r}")
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.integer | np.floating):
        raise ValueError(f"tol must be a real number > 0, got {tol!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    return float(lam), float(tol), int(max_iter)


def _check_y(y: Any) -> np.ndarray:
    """Return ``y`` as a float64 2-D array (a copy), validating shape and values."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"y must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (n,) or 2-D (k, n), got shape {arr.shape}")
    if arr.shape[-1] < 3:
        raise ValueError(f"y must have n >= 3 points along its last axis, got shape {arr.shape}")
    y2 = np.array(arr, dtype=np.float64, ndmin=2, copy=True)
    finite = np.isfinite(y2)
    nan_rows = np.isnan(y2).all(axis=1)
    bad = ~finite.all(axis=1) & ~nan_rows
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f" (trace {row})" if arr.ndim == 2 else ""
        raise ValueError(
            f"y must be finite or, per trace, entirely NaN; {int((~finite[row]).sum())} of "
            f"{y2.shape[1]} values are NaN or inf{where}")
    return y2


def _penalty_bands(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bands of DᵀD for the (n - 2) × n second-difference matrix D.

    Returns the diagonal (n,), first sub-diagonal (n - 1,) and second sub-diagonal
    (n - 2,): ``[1, 5, 6, …, 6, 5, 1]``, ``[-2, -4, …, -4, -2]``, ``[1, …, 1]``.
    """
    ones = np.ones(n - 2)
    return np.convolve(ones, [1.0, 4.0, 1.0]), np.convolve(ones, [-2.0, -2.0]), ones


def _solve_lapack(w: np.ndarray, wy: np.ndarray, bands: tuple[np.ndarray, ...]) -> np.ndarray:
    """Solve all rows at once as one block-diagonal banded system (LAPACK ``pbsv``)."""
    k, n = w.shape
    ab = np.zeros((3, k, n))
    ab[0] = w + bands[0]
    ab[1, :, : n - 1] = bands[1]  # the last entry of each block couples to the next trace: 0
    ab[2, :, : n - 2] = bands[2]
    top = ab[0].max(axis=1)  # the largest diagonal entry of each trace's block
    # LAPACK directly: scipy.linalg.solveh_banded's argument checks cost as much as the solve
    factor, z, err = _pbsv(ab.reshape(3, k * n), wy.reshape(k * n), lower=1,
                           overwrite_ab=1, overwrite_b=1)
    if err:  # cannot happen for finite y: >= 2 weights are > 1/2 at every step
        raise np.linalg.LinAlgError(f"arPLS system not positive definite (LAPACK info {err})")
    # A singular system (fewer than 2 weights above ~0) need not fail in LAPACK: rounding can
    # leave its last pivot a tiny positive number (OpenBLAS 0.3.31: 3e-13 against a diagonal
    # of 60), and z is then noise of any size. The smallest squared pivot bounds the
    # condition number from below (diagonal / pivot^2); above 1e10 rounding reaches 2e-6 of
    # z's scale, so the system is treated as singular.
    pivots = factor[0].reshape(k, n) ** 2
    if (pivots.min(axis=1) <= _SINGULAR * top).any():
        raise np.linalg.LinAlgError("arPLS system numerically singular (a pivot below "
                                    f"{_SINGULAR:g} of the diagonal)")
    return z.reshape(k, n)


def _solve(w: np.ndarray, y: np.ndarray, bands: tuple[np.ndarray, ...]) -> np.ndarray:
    """Solve ``(diag(w) + DᵀD·λ) z = w y`` for each row; ``bands`` already carry λ."""
    return _solve_lapack(w, w * y, bands)


def arpls(
    y: np.ndarray,
    /,
    *,
    lam: float = 10.0,
    tol: float = 1e-5,
    max_iter: int = 100,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Asymmetrically reweighted penalized least squares (arPLS) baseline of traces.

    Iterates, starting from weights ``w = 1``:

    1. solve ``(W + lam·DᵀD) z = W y``, ``W = diag(w)``, ``D`` the second-difference
       matrix (a Whittaker smoother);
    2. from the negative residuals ``d⁻`` of ``d = y - z`` take their mean ``m`` and
       standard deviation ``s`` (``ddof=1``);
    3. ``w_new = expit(-2 (d - (2 s - m)) / s)`` (a logistic, free of overflow);
    4. stop when ``‖w_new - w‖ / ‖w‖ < tol``, else set ``w = w_new`` and repeat, at
       most ``max_iter`` times.

    The returned iterate is ``(z, w)`` of the stopping step: ``z`` is the solution for
    the weights ``w`` (as in pybaselines). A fit that has not met ``tol`` after
    ``max_iter`` solves (at ``lam`` ≈ 10 on ~150 points some traces keep oscillating
    between weight patterns) returns its *best* iterate, the one with the smallest
    weight change, and ``converged = False``. Nothing is printed or warned: ``info``
    tells, per trace, whether the fit converged and, in ``status``, whether its baseline
    can be used (``"converged"``, ``"stable"``) or not (``"failed"``; see Notes).

    Parameters
    ----------
    y : array-like, shape (n,) or (k, n)
        One trace, or ``k`` traces as rows, with ``n >= 3`` equally spaced points.
        Any real dtype; computed in float64; not modified. A trace must be finite
        or entirely NaN (an all-NaN trace gives an all-NaN baseline).
    lam : float, optional
        Smoothing parameter λ > 0, in units of frames⁴ (see :func:`lam_from_cutoff`
        to set it from a cut-off period in seconds). Default is 10.0.
    tol : float, optional
        Stop when the relative change of the weights (l2 norm) falls below ``tol``.
        Default is 1e-5.
    max_iter : int, optional
        Maximum number of solves (iterations) per trace, >= 1. Default is 100.

    Returns
    -------
    baseline : numpy.ndarray, float64, shape of ``y``
        The fitted baseline.
    info : dict
        Per trace: scalars for 1-D ``y``, arrays of shape (k,) for 2-D ``y``.

        * ``"converged"`` : bool -- the weight change fell below ``tol``, or the fit
          reproduces the data to rounding (see Notes).
        * ``"n_iter"`` : int -- solves performed (``max_iter`` when not converged;
          0 for constant and all-NaN traces).
        * ``"weights"`` : numpy.ndarray, float64, shape of ``y`` -- the weights of the
          returned iterate (the baseline solves the system with these weights).
        * ``"weight_change"`` : float -- ``‖w_new - w‖ / ‖w‖`` of the returned iterate
          (NaN when it could not be computed, see Notes).
        * ``"status"`` : str -- ``"converged"``, ``"stable"`` or ``"failed"`` (one of
          :data:`FIT_STATUSES`; a numpy array of ``<U9`` for 2-D ``y``), see Notes.
        * ``"baseline_change"`` : float -- for a fit stopped at ``max_iter``: how far
          10 further iterations move its baseline, ``max |z_j - baseline|``, in noise
          sigmas; NaN for the others (not measured) and when the iteration cannot go on.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or 2-D, has fewer than 3 points, or has a trace with some
        (not all) values NaN or inf; if ``lam <= 0``, ``tol <= 0`` or ``max_iter < 1``.
        Each message names the parameter.

    Notes
    -----
    Guards, per trace:

    * Constant trace: the baseline is the trace, weights 1, ``converged=True``,
      ``n_iter=0``, ``weight_change=0``.
    * All-NaN trace: baseline and weights NaN, ``converged=False``, ``n_iter=0``,
      ``weight_change=NaN``. No numpy warning is raised.
    * Fewer than two negative residuals: no standard deviation to weight with. As in
      pybaselines, the fit stops and returns this step's ``z`` and the weights that
      produced it; ``converged=False``, ``weight_change=NaN``.
    * ``s == 0`` (all negative residuals equal): ``s`` is floored at
      ``eps · max|y|`` (pybaselines floors at ``eps``, which is not scale-invariant).
    * Residuals all within ``1000 ulps`` of ``max|y|`` (a noise-free linear trace):
      ``z`` reproduces ``y`` for *any* weights, so the weights, computed from rounding
      noise, are meaningless; the fit stops with ``converged=True``,
      ``weight_change=0``.
    * Values near the float64 limit: each trace is fitted divided by the power of 2
      that brings ``max|y|`` into [1/2, 1), which is exact (nothing is rounded and
      the iteration is scale-equivariant), so ``y - z`` cannot overflow.

    Fit status, per trace, from the residual ``d = y - baseline`` and its noise
    ``σ`` and resting level ``L`` (:func:`calim_helpers.noise.noise_sigma` of ``d``;
    ``σ`` floored at 1000 ulps of ``max|y|``). When ``noise_sigma`` finds fewer than 3
    quiet frames (a short trace active throughout), ``L`` is not measured and the
    baseline is not judged on following the trace; ``σ`` then comes from the frames
    at the low side of the trace alone, which makes it small and the stability test
    strict.

    * ``"failed"``: the baseline is not finite (all-NaN trace); or it does
      not follow the trace: ``|L| > 3 σ`` (it runs above or below the trace's quiet
      part) or the trace lies more than ``3 σ`` below it at more than 25 % of the
      frames (it cuts through a step or a run of dips); or the fit stopped at
      ``max_iter`` and is not stable, or stopped early with fewer than two negative
      residuals (``weight_change`` NaN: the baseline lies under the trace).
    * ``"converged"``: otherwise, when ``converged`` is True (constant traces too).
    * ``"stable"``: otherwise, when the fit stopped at ``max_iter`` but
      ``baseline_change <= 0.25``: 10 further iterations from the returned iterate
      move the baseline by at most a quarter of the noise sigma. arPLS weights can
      cycle between patterns or creep instead of settling (about 10 % of traces at
      λ = 10 on 150 points); these baselines are as good as converged ones.

    Measured (λ 10-100; the 723 fits that reached ``max_iter`` among 7282 synthetic
    bleach + transient, busy, random-walk and white-noise traces and demo-data traces):
    ``baseline_change`` <= 0.18 (median 0.003-0.03), against a median of 13, 8 and 4
    for busy traces cut at ``max_iter`` = 2, 5, 10; on 2082 fits, converged and
    stable alike, ``|L| <= 1.0 σ`` and at most 8 % of frames lie ``3 σ`` below the
    baseline. At λ = 1 some fits truly oscillate (white noise: up to 6.5 σ) and fail.
    ``converged`` keeps its meaning (``tol`` reached); a converged fit whose baseline
    does not follow the trace is ``"failed"``.

    Differences from ``pybaselines.Baseline().arpls`` with the same ``lam``, ``tol``
    and ``max_iter``: pybaselines performs up to ``max_iter + 1`` solves, and after the
    last one returns the *last* baseline with the weights computed *from* it; this
    function performs at most ``max_iter`` solves and returns the best iterate. For
    converged traces both give the same baseline and weights (to rounding), and
    ``n_iter`` equals ``len(params["tol_history"])``.

    Performance (``benchmarks/bench_arpls.py --repeat 5``, CPU seconds, λ = 10, seed 0):
    with numba the whole call takes 0.037 s for 1000 traces × 150 points and 0.054 s
    for 100 × 1500, 47 and 10.5 times less than a loop of pybaselines (1.7 s, 0.57 s);
    on 15 fresh trace sets (seeds 901-915) 47-63 and 7.6-10.5 times (median 50 and 9.6).
    Of the 0.054 s, the iteration takes about 0.040 s, the status's
    :func:`~calim_helpers.noise.noise_sigma` 0.015 s and its re-fit of the 15 fits
    stopped at ``max_iter`` 0.002 s. Without numba the numpy + LAPACK iteration took
    0.58 s and 0.61 s (earlier measurement). The first call in a new environment
    compiles the iteration (about 15 s, then cached on disk).
    The compiled and the numpy iterations agree to rounding, not bit for bit.

    References
    ----------
    .. [1] Baek, S.-J., Park, A., Ahn, Y.-J. and Choo, J. "Baseline correction using
       asymmetrically reweighted penalized least squares smoothing." *Analyst* 140,
       250-257 (2015). https://doi.org/10.1039/C4AN01061B

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(150.0)
    >>> traces = 50 * np.exp(-t / 80) + rng.normal(0, 1, (3, 150))
    >>> baseline, info = arpls(traces)
    >>> baseline.shape, info["converged"].shape, info["weights"].shape
    ((3, 150), (3,), (3, 150))
    """
    lam, tol, max_iter = _check_params(lam, tol, max_iter)
    one_d = np.ndim(y) == 1
    y2 = _check_y(y)
    k, n = y2.shape

    baseline = np.empty_like(y2)
    weights = np.ones_like(y2)
    converged = np.zeros(k, dtype=bool)
    n_iter = np.zeros(k, dtype=np.int64)
    change = np.full(k, np.nan)

    nan_rows = np.isnan(y2[:, 0])  # _check_y: a NaN in a row means an all-NaN row
    baseline[nan_rows] = np.nan
    weights[nan_rows] = np.nan
    finite = ~nan_rows
    const = np.zeros(k, dtype=bool)
    const[finite] = (y2[finite] == y2[finite, :1]).all(axis=1)
    baseline[const] = y2[const]
    converged[const] = True
    change[const] = 0.0

    idx = np.flatnonzero(finite & ~const)  # trace numbers still being fitted
    # the rows to fit: all of them (the usual case: views, no copies), or some
    fit = slice(None) if idx.size == k else idx
    # fit each trace divided by a power of 2 that brings max|y| into [1/2, 1): exact (the
    # iteration is scale-equivariant and such a scaling rounds nothing), and nothing
    # overflows even for |y| near the float64 limit (an inf in one block of the LAPACK
    # block-diagonal solve would turn the following traces into NaN)
    exponent = np.frexp(np.fmax(y2[fit].max(axis=1), -y2[fit].min(axis=1)))[1][:, None]
    if isinstance(fit, slice):  # y2 is _check_y's copy
        np.ldexp(y2, -exponent, out=y2)
    else:
        y2[fit] = np.ldexp(y2[fit], -exponent)
    if idx.size:
        _fit(y2, idx, lam, tol, max_iter, baseline, weights, converged, n_iter, change)
    status, move = _fit_status(y2, baseline, converged, change, const, lam)
    with np.errstate(over="ignore"):  # a baseline beyond the float64 range: inf, "failed"
        if isinstance(fit, slice):
            np.ldexp(baseline, exponent, out=baseline)
        else:
            baseline[fit] = np.ldexp(baseline[fit], exponent)
    status[idx[~np.isfinite(baseline[fit]).all(axis=1)]] = "failed"

    if one_d:
        info = {"converged": bool(converged[0]), "n_iter": int(n_iter[0]),
                "weights": weights[0], "weight_change": float(change[0]),
                "status": str(status[0]), "baseline_change": float(move[0])}
        return baseline[0], info
    return baseline, {"converged": converged, "n_iter": n_iter, "weights": weights,
                      "weight_change": change, "status": status, "baseline_change": move}


def _reweight(y: np.ndarray, z: np.ndarray, s_floor: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the arPLS weights from the residuals ``d = y - z``, ``d``, and the count of d < 0.

    Rows with fewer than two negative residuals get finite (meaningless) weights: the
    caller stops them.
    """
    d = y - z
    neg = d < 0
    n_neg = neg.sum(axis=1)
    nn = np.maximum(n_neg, 2)  # keeps the rows with < 2 negatives free of 0/0
    m = np.minimum(d, 0.0).sum(axis=1) / nn  # mean of the negative residuals
    r = (d - m[:, None]) * neg
    s = np.maximum(np.sqrt(np.einsum("ij,ij->i", r, r) / (nn - 1)), s_floor)  # ddof=1
    # same expression as pybaselines._weighting._arpls; expit never overflows
    return expit(-(2.0 / s[:, None]) * (d - (2.0 * s - m)[:, None])), d, n_neg


def _baseline_move(y: np.ndarray, z: np.ndarray, lam: float, n_more: int) -> np.ndarray:
    """Largest ``|z_j - z|`` over ``n_more`` further arPLS iterations from the iterate ``z``.

    ``z`` solves the system for some weights; iteration ``j`` reweights from ``z_{j-1}``
    (``z_0 = z``) and solves again, exactly as :func:`_fit` would have gone on. NaN for
    a row whose iteration reaches fewer than two negative residuals (it cannot go on).
    """
    if _HAVE_NUMBA:
        moved = np.empty(len(y))
        _move_lanes(np.ascontiguousarray(y), np.ascontiguousarray(z), *_lane_bands(y.shape[1], lam),
                    n_more, moved)
        return moved
    bands = tuple(lam * b for b in _penalty_bands(y.shape[1]))
    s_floor = _EPS * np.abs(y).max(axis=1)
    moved = np.zeros(len(y))
    zj = z.copy()
    for _ in range(n_more):
        w, _, n_neg = _reweight(y, zj, s_floor)
        moved[n_neg < 2] = np.nan
        go = np.flatnonzero(np.isfinite(moved))  # the rows that can go on
        if go.size == 0:
            break
        try:
            zj[go] = _solve(w[go], y[go], bands)
        except np.linalg.LinAlgError:  # weights of ~0 at extreme values: row by row
            for i in go:
                try:
                    zj[i] = _solve(w[i:i + 1], y[i:i + 1], bands)[0]
                except np.linalg.LinAlgError:
                    moved[i] = np.nan
        moved = np.maximum(moved, np.abs(zj - z).max(axis=1))  # NaN stays NaN
    return moved


def _fit_status(y2: np.ndarray, baseline: np.ndarray, converged: np.ndarray,
                change: np.ndarray, const: np.ndarray, lam: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per trace: the status (see :func:`arpls`, Notes) and the baseline move in sigmas."""
    k = len(y2)
    status = np.full(k, "failed", dtype="<U9")
    move = np.full(k, np.nan)
    finite = np.isfinite(baseline).all(axis=1)
    status[finite & const] = "converged"
    rows = np.flatnonzero(finite & ~const)
    if not rows.size:
        return status, move
    y, z = (y2, baseline) if rows.size == k else (y2[rows], baseline[rows])
    d = y - z
    est = noise_sigma(d)
    # exact fits: rounding noise
    floor = _EXACT_FIT_ULPS * _EPS * np.fmax(y.max(axis=1), -y.min(axis=1))
    sigma = np.fmax(np.asarray(est.sigma, dtype=np.float64), floor)
    level = np.asarray(est.level, dtype=np.float64)
    below = (d < -_FOLLOW_SIGMA * sigma[:, None]).mean(axis=1)
    follows = ~(np.abs(level) > _FOLLOW_SIGMA * sigma) & (below <= _FOLLOW_FRACTION)
    # without quiet frames (a trace active throughout) the level is not measured and sigma
    # comes from the low side of the trace alone (small: the stability test stays strict)
    follows |= np.asarray(est.n_quiet) < _MIN_QUIET
    # stopped at max_iter (the weight change is finite): how far does the baseline go on?
    rest = follows & ~converged[rows] & np.isfinite(change[rows])
    if rest.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            move[rows[rest]] = _baseline_move(y[rest], z[rest], lam, _STABLE_ITER) / sigma[rest]
    status[rows[follows & converged[rows]]] = "converged"
    status[rows[rest][move[rows[rest]] <= _STABLE_SIGMA]] = "stable"
    return status, move


def _lane_bands(n: int, lam: float) -> np.ndarray:
    """Return the bands of ``λDᵀD`` by row of the lane arrays (2 zero rows each end), (3, n + 4)."""
    rows = np.zeros((3, n + 4))
    a, b, c = _penalty_bands(n)
    rows[0, 2:n + 2], rows[1, 2:n + 1], rows[2, 2:n] = lam * a, lam * b, lam * c
    return rows


def _fit(y2: np.ndarray, idx: np.ndarray, lam: float, tol: float, max_iter: int,
         baseline: np.ndarray, weights: np.ndarray, converged: np.ndarray,
         n_iter: np.ndarray, change: np.ndarray) -> None:
    """Run the arPLS iteration on the rows ``idx`` of ``y2``; fill the output arrays.

    Compiled (:func:`_fit_lanes`) when numba is installed, else :func:`_fit_numpy`;
    both follow the same steps and return the same iterates, to rounding.
    """
    if not _HAVE_NUMBA:
        _fit_numpy(y2, idx, lam, tol, max_iter, baseline, weights, converged, n_iter, change)
        return
    k, n = y2.shape
    if idx.size == k and all(a.flags.c_contiguous for a in (y2, baseline, weights)):
        _fit_lanes(y2, *_lane_bands(n, lam), tol, max_iter,  # every row: in place
                   baseline, weights, converged, n_iter, change)
        return
    k = idx.size
    base, w = np.empty((k, n)), np.empty((k, n))
    conv, nit, chg = np.empty(k, dtype=np.bool_), np.empty(k, dtype=np.int64), np.empty(k)
    _fit_lanes(np.ascontiguousarray(y2[idx]), *_lane_bands(n, lam), tol, max_iter,
               base, w, conv, nit, chg)
    baseline[idx], weights[idx], converged[idx], n_iter[idx], change[idx] = base, w, conv, nit, chg


# --- the compiled iteration ------------------------------------------------------------------
# Lane arrays: one row per time point (2 zero rows of padding at each end), in each row
# the fields below, each _LANES values wide (one per lane): the loops over lanes then read
# and write contiguous memory at offsets LLVM can tell apart, and vectorize. The next
# weights and the per-lane numbers live in arrays of their own: arrays allocated in the
# compiled function itself are known not to overlap, which the loops need to vectorize
# (measured: residual sums in rows of one array, or a best-iterate copy inside the
# factorization loop, made the iteration 1.2-1.4 times slower).
_Y, _W, _G, _L1, _L2, _E, _Z, _BZ, _BW = range(9)  # trace, weights, 1/pivot, L, e, z, best
_N_FIELDS = 9
# Width markers: the loops over lanes run to len(marker), a constant of the compiled code
# (LLVM vectorizes loops of a known count of 16 or more). A fit runs _LANES wide, and half
# as wide once no trace waits and half the lanes or fewer are busy (the last, slowest fits:
# 100 traces of 1500 points spend a quarter of their lane passes there).
_WIDE = (0,) * _LANES
_NARROW = (0,) * (_LANES // 2)
# exp(t) = 2^k exp(r), r = t - k ln 2 in [-ln2/2, ln2/2]: Taylor series to r^13 (error below
# 1 ulp), ln 2 split in two (Cody and Waite) so that k ln 2 is subtracted exactly.
_LOG2E = 1.4426950408889634
# ln 2 split into a high part exact in few bits and the rest (Cody and Waite's argument
# reduction; the values of fdlibm's e_exp.c)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_COEF = tuple(1.0 / math.factorial(i) for i in range(14))

if HAVE_NUMBA:
    @lazy_intrinsic
    def _pow2() -> Any:  # pragma: no cover - compiled
        """``2.0 ** k`` for an integer ``-1022 <= k <= 1023``: its bits, built directly.

        A table look-up instead (a gather per 8 lanes) made the iteration 6-10 % slower.
        """
        from llvmlite import ir
        from numba import types
        from numba.extending import intrinsic

        @intrinsic
        def pow2(typingctx, k):
            def codegen(context, builder, signature, args):
                bits = builder.shl(builder.add(args[0], ir.Constant(ir.IntType(64), 1023)),
                                   ir.Constant(ir.IntType(64), 52))
                return builder.bitcast(bits, ir.DoubleType())
            return types.float64(types.int64), codegen
        return pow2

    @lazy_intrinsic
    def _fma() -> Any:  # pragma: no cover - compiled
        """Return ``a * b + c`` rounded once (a fused multiply-add)."""
        from numba import types
        from numba.extending import intrinsic

        @intrinsic
        def fma(typingctx, a, b, c):
            def codegen(context, builder, signature, args):
                return builder.fma(*args)
            return types.float64(types.float64, types.float64, types.float64), codegen
        return fma
else:  # pragma: no cover - the compiled iteration does not run without numba
    def _pow2(k: int) -> float:
        return math.ldexp(1.0, k)

    def _fma(a: float, b: float, c: float) -> float:
        return a * b + c


@jit(inline=True)
def _logistic_weight(t: float) -> float:
    """``1 / (1 + exp(t))`` (= expit(-t)) for any finite ``t``, in a vectorizable form."""
    t = min(max(t, -708.0), 709.0)  # exp(t) stays a normal number; the weight is unchanged
    kf = np.floor(t * _LOG2E + 0.5)  # a float: one conversion to integer, for 2^k
    r = _fma(-kf, _LN2_LO, t - kf * _LN2_HI)  # k ln2_hi is exact
    p = _EXP_COEF[13]
    for i in range(12, -1, -1):  # Horner; unrolled by the compiler
        p = _fma(p, r, _EXP_COEF[i])
    return 1.0 / (1.0 + p * _pow2(int(kf)))


@jit(inline=True)
def _lane_solve(V, a, b, c, n, width, nneg, sneg, sq, shift, dmax):  # pragma: no cover
    """Solve the first ``len(width)`` lanes' ``(W + λDᵀD) z = W y`` in ``V``.

    Banded LDLᵀ: ``A = L diag(d) Lᵀ``, sub-diagonals ``l1``, ``l2`` of the unit lower
    ``L``; with ``e_i = l1_i d_i``: ``e_i = b_i - l2_{i-1} e_{i-1}``,
    ``d_i = a_i + w_i - l1_{i-1} e_{i-1} - l2_{i-2} c_{i-2}``, ``l2_i = c_i / d_i``.
    Forward substitution runs with the factorization, back substitution with the sums of
    the residuals ``d = y - z``, per lane: the count of ``d < 0`` (``nneg``), their sum
    (``sneg``) and their sum of squares about ``shift`` (``sq``), the largest ``|d|``.
    """
    L = _LANES
    nl = len(width)
    for r in range(2, n + 2):
        o, p, q = V[r], V[r - 1], V[r - 2]
        ar, br, cr, cq = a[r], b[r], c[r], c[r - 2]
        for j in range(nl):
            w = o[_W * L + j]
            d = _fma(-q[_L2 * L + j], cq, _fma(-p[_L1 * L + j], p[_E * L + j], w + ar))
            z = _fma(-q[_L2 * L + j], q[_Z * L + j],
                     _fma(-p[_L1 * L + j], p[_Z * L + j], w * o[_Y * L + j]))
            g = 1.0 / d
            e = _fma(-p[_L2 * L + j], p[_E * L + j], br)
            o[_G * L + j] = g
            o[_Z * L + j] = z
            o[_E * L + j] = e
            o[_L1 * L + j] = e * g
            o[_L2 * L + j] = cr * g
    for j in range(nl):
        nneg[j], sneg[j], sq[j], dmax[j] = 0.0, 0.0, 0.0, 0.0
    for r in range(n + 1, 1, -1):
        o, p, q = V[r], V[r + 1], V[r + 2]
        for j in range(nl):
            z = _fma(-o[_L2 * L + j], q[_Z * L + j],
                     _fma(-o[_L1 * L + j], p[_Z * L + j], o[_Z * L + j] * o[_G * L + j]))
            o[_Z * L + j] = z
            d = o[_Y * L + j] - z
            neg = d < 0.0
            u = d - shift[j]
            nneg[j] += 1.0 if neg else 0.0
            sneg[j] += d if neg else 0.0
            sq[j] += u * u if neg else 0.0
            dmax[j] = max(dmax[j], abs(d))


@jit(inline=True)
def _lane_weights(V, WN, n, width, nneg, sneg, sq, shift, scale, num, den):  # pragma: no cover
    """Compute the next weights ``WN`` of the first ``len(width)`` lanes from the residual sums.

    ``m``, ``s``: mean and standard deviation (``ddof=1``) of the negative residuals,
    ``s`` floored at ``eps · scale``, with ``Σ (d - m)² = Σ (d - shift)² - n (m - shift)²``
    (the shift, the previous step's ``m``, keeps the difference free of cancellation;
    ``m`` becomes the next shift). ``num``, ``den``: the sums of ``(WN - W)²`` and ``W²``.
    """
    L = _LANES
    nl = len(width)
    k2, off = np.empty(nl), np.empty(nl)
    for j in range(nl):
        nn = max(nneg[j], 2.0)  # rows with < 2 negatives stop: keep them free of 0/0
        m = sneg[j] / nn
        u = m - shift[j]
        ss = max(sq[j] - nneg[j] * u * u, 0.0)
        s = max(math.sqrt(ss / (nn - 1.0)), _EPS * scale[j])  # ddof=1
        k2[j], off[j], shift[j] = 2.0 / s, 2.0 * s - m, m
        num[j], den[j] = 0.0, 0.0
    for r in range(2, n + 2):
        o, x = V[r], WN[r]
        for j in range(nl):
            wn = _logistic_weight(k2[j] * ((o[_Y * L + j] - o[_Z * L + j]) - off[j]))
            w = o[_W * L + j]
            x[j] = wn
            num[j] = _fma(wn - w, wn - w, num[j])
            den[j] = _fma(w, w, den[j])


@jit(inline=True)
def _lane_next(V, WN, n, width, imp):  # pragma: no cover - compiled
    """Keep the iterate ``(Z, W)`` as the best where ``imp``; then ``W = WN``.

    From the last row back: the rows the weights sweep touched last are still in cache.
    """
    L = _LANES
    nl = len(width)
    for r in range(n + 1, 1, -1):
        o, x = V[r], WN[r]
        for j in range(nl):
            if imp[j]:
                o[_BZ * L + j] = o[_Z * L + j]
                o[_BW * L + j] = o[_W * L + j]
            o[_W * L + j] = x[j]


@jit(inline=True)
def _lane_far(V, n, width, far, bad):  # pragma: no cover - compiled
    """Per lane: the largest ``|Z - BZ|`` (``far``); ``bad`` > 0 if it or a pivot is wrong.

    Wrong: ``Z`` not finite, or a pivot not positive (``G = 1/pivot``): the system was not
    positive definite.
    """
    L = _LANES
    nl = len(width)
    for j in range(nl):
        far[j], bad[j] = 0.0, 0.0
    for r in range(2, n + 2):
        o = V[r]
        for j in range(nl):
            v = abs(o[_Z * L + j] - o[_BZ * L + j])
            far[j] = max(far[j], v)
            bad[j] += 0.0 if v < np.inf and o[_G * L + j] > 0.0 else 1.0


@jit(inline=True)
def _lane_load(V, y, trace, lane, n):  # pragma: no cover - compiled
    """Put ``y[trace]`` (or zeros, for ``trace < 0``) in ``lane`` with weights 1; max|y|."""
    L = _LANES
    scale = 0.0
    for i in range(n):
        v = y[trace, i] if trace >= 0 else 0.0
        V[i + 2, _Y * L + lane] = v
        V[i + 2, _W * L + lane] = 1.0
        scale = max(scale, abs(v))
    return scale if trace >= 0 else 1.0


@jit(inline=True)
def _lane_move(V, n, src, dst, fields):  # pragma: no cover - compiled
    """Copy ``fields`` of lane ``src`` to lane ``dst``."""
    L = _LANES
    for i in range(2, n + 2):
        for f in fields:
            V[i, f * L + dst] = V[i, f * L + src]


@jit
def _fit_lanes(y, a, b, c, tol, max_iter, base, wts, conv, nit, change):  # pragma: no cover
    """:func:`_fit_numpy`'s iteration for every row of ``y``, compiled, ``_LANES`` at a time.

    ``a``, ``b``, ``c``: the bands of ``λDᵀD`` on the lane rows (2 zero rows each end).
    Fills ``base``, ``wts``, ``conv``, ``nit``, ``change`` (one row/entry per trace).
    """
    L = _LANES
    k, n = y.shape
    V = np.zeros((n + 4, _N_FIELDS * L))
    WN = np.zeros((n + 4, L))  # the next weights
    nneg, sneg, sq, shift, dmax = np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L)
    num, den = np.zeros(L), np.zeros(L)
    trace = np.full(L, -1)
    it = np.zeros(L, np.int64)
    best = np.full(L, np.inf)
    scale = np.ones(L)
    ch = np.zeros(L)
    imp, done = np.zeros(L, np.bool_), np.zeros(L, np.bool_)
    wide = k > L // 2
    nl = L if wide else L // 2
    nxt = 0
    for j in range(L):
        trace[j] = nxt if nxt < k and j < nl else -1
        scale[j] = _lane_load(V, y, trace[j], j, n)
        nxt += trace[j] >= 0
    while True:
        if wide:
            _lane_solve(V, a, b, c, n, _WIDE, nneg, sneg, sq, shift, dmax)
            _lane_weights(V, WN, n, _WIDE, nneg, sneg, sq, shift, scale, num, den)
        else:
            _lane_solve(V, a, b, c, n, _NARROW, nneg, sneg, sq, shift, dmax)
            _lane_weights(V, WN, n, _NARROW, nneg, sneg, sq, shift, scale, num, den)
        for j in range(nl):
            imp[j] = done[j] = False
            if trace[j] < 0:
                continue
            it[j] += 1
            exact = it[j] == 1 and dmax[j] <= _EXACT_FIT_ULPS * _EPS * scale[j]
            few = nneg[j] < 2.0 and not exact
            ch[j] = math.sqrt(num[j] / max(den[j], _EPS * _EPS))
            if few:
                ch[j] = np.nan
            if exact:
                ch[j] = 0.0
            imp[j] = ch[j] < best[j]  # False for NaN
            if imp[j]:
                best[j] = ch[j]
            done[j] = ch[j] < tol or few or it[j] == max_iter
            if done[j]:
                last = ch[j] < tol or few or imp[j]  # else the best iterate was earlier
                fz, fw = (_Z, _W) if last else (_BZ, _BW)
                tr = trace[j]
                for i in range(n):
                    base[tr, i] = V[i + 2, fz * L + j]
                    wts[tr, i] = V[i + 2, fw * L + j]
                conv[tr] = ch[j] < tol
                nit[tr] = it[j]
                change[tr] = ch[j] if ch[j] < tol or few else best[j]
        if wide:
            _lane_next(V, WN, n, _WIDE, imp)
        else:
            _lane_next(V, WN, n, _NARROW, imp)
        busy = 0
        for j in range(nl):
            if done[j]:
                trace[j] = nxt if nxt < k else -1
                scale[j] = _lane_load(V, y, trace[j], j, n)
                it[j], best[j], shift[j] = 0, np.inf, 0.0
                nxt += trace[j] >= 0
            busy += trace[j] >= 0
        if busy == 0:
            return
        if wide and nxt >= k and busy <= L // 2:  # the last fits: move them to half the lanes
            free = 0
            for j in range(L // 2, L):
                if trace[j] < 0:
                    continue
                while trace[free] >= 0:
                    free += 1
                _lane_move(V, n, j, free, (_Y, _W, _BZ, _BW))
                trace[free], it[free], best[free] = trace[j], it[j], best[j]
                scale[free], shift[free] = scale[j], shift[j]
                trace[j] = -1
            wide, nl = False, L // 2


@jit
def _move_lanes(y, z, a, b, c, n_more, moved):  # pragma: no cover - compiled
    """:func:`_baseline_move` compiled, ``_LANES`` traces at a time; fills ``moved``."""
    L = _LANES
    k, n = y.shape
    V = np.zeros((n + 4, _N_FIELDS * L))
    WN = np.zeros((n + 4, L))
    nneg, sneg, sq, shift, dmax = np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L)
    num, den = np.zeros(L), np.zeros(L)
    trace = np.full(L, -1)
    it = np.zeros(L, np.int64)
    scale = np.ones(L)
    keep = np.zeros(L, np.bool_)  # never set: BZ keeps the starting iterate
    far, bad = np.zeros(L), np.zeros(L)
    wide = k > L // 2
    nl = L if wide else L // 2
    nxt = 0
    while True:
        for j in range(nl):  # free lanes take the next traces: z in Z and BZ, sums of y - z
            if trace[j] >= 0 or nxt >= k:
                continue
            trace[j], it[j] = nxt, 0
            moved[nxt] = 0.0
            nxt += 1
            scale[j] = _lane_load(V, y, trace[j], j, n)
            nneg[j], sneg[j], sq[j], shift[j] = 0.0, 0.0, 0.0, 0.0
            for i in range(n):
                zi = z[trace[j], i]
                V[i + 2, _Z * L + j] = zi
                V[i + 2, _BZ * L + j] = zi
                d = y[trace[j], i] - zi
                if d < 0.0:
                    nneg[j] += 1.0
                    sneg[j] += d
                    sq[j] += d * d
        busy = False
        for j in range(nl):  # a lane whose residual has < 2 negatives cannot go on
            if trace[j] >= 0 and nneg[j] < 2.0:
                moved[trace[j]] = np.nan
                trace[j] = -1
            busy |= trace[j] >= 0
        if not busy:
            return
        if wide:
            _lane_weights(V, WN, n, _WIDE, nneg, sneg, sq, shift, scale, num, den)
            _lane_next(V, WN, n, _WIDE, keep)
            _lane_solve(V, a, b, c, n, _WIDE, nneg, sneg, sq, shift, dmax)
            _lane_far(V, n, _WIDE, far, bad)
        else:
            _lane_weights(V, WN, n, _NARROW, nneg, sneg, sq, shift, scale, num, den)
            _lane_next(V, WN, n, _NARROW, keep)
            _lane_solve(V, a, b, c, n, _NARROW, nneg, sneg, sq, shift, dmax)
            _lane_far(V, n, _NARROW, far, bad)
        for j in range(nl):
            if trace[j] < 0:
                continue
            tr = trace[j]
            if bad[j]:  # the system was not positive definite: the move is unknown
                moved[tr] = np.nan
                trace[j] = -1
                continue
            moved[tr] = max(moved[tr], far[j])
            it[j] += 1
            if it[j] == n_more:
                trace[j] = -1


def _fit_numpy(y2: np.ndarray, idx: np.ndarray, lam: float, tol: float, max_iter: int,
         baseline: np.ndarray, weights: np.ndarray, converged: np.ndarray,
         n_iter: np.ndarray, change: np.ndarray) -> None:
    """:func:`_fit` in numpy: all traces iterate together, a trace leaves when it stops."""
    bands = tuple(lam * b for b in _penalty_bands(y2.shape[1]))
    y = y2[idx]
    scale = np.abs(y).max(axis=1)  # > 0: constant traces never get here
    s_floor = _EPS * scale
    w = np.ones_like(y)
    best_z, best_w = np.empty_like(y), np.empty_like(y)
    best_c = np.full(idx.size, np.inf)

    for it in range(1, max_iter + 1):
        z = _solve(w, y, bands)
        w_new, d, n_neg = _reweight(y, z, s_floor)
        # only a linear trace is fitted exactly, and then for any weights: check once
        exact = np.zeros(len(y), dtype=bool)
        if it == 1:
            exact = np.abs(d).max(axis=1) <= _EXACT_FIT_ULPS * _EPS * scale
        few = (n_neg < 2) & ~exact  # pybaselines' guard: nothing to take a std of
        r = w_new - w
        c = np.sqrt(np.einsum("ij,ij->i", r, r)
                    / np.maximum(np.einsum("ij,ij->i", w, w), _EPS**2))
        c[few] = np.nan
        c[exact] = 0.0

        better = c < best_c  # False for NaN
        best_z[better], best_w[better], best_c[better] = z[better], w[better], c[better]
        done = c < tol
        stop = done | few
        if stop.any():
            out = idx[stop]
            baseline[out], weights[out], change[out] = z[stop], w[stop], c[stop]
            converged[out], n_iter[out] = done[stop], it
        if it == max_iter or stop.all():
            rest = ~stop
            out = idx[rest]
            baseline[out], weights[out], change[out] = best_z[rest], best_w[rest], best_c[rest]
            converged[out], n_iter[out] = False, it
            return
        if stop.any():
            keep = ~stop
            idx, y, w_new, scale = idx[keep], y[keep], w_new[keep], scale[keep]
            s_floor = s_floor[keep]
            best_z, best_w, best_c = best_z[keep], best_w[keep], best_c[keep]
        w = w_new


def lam_from_cutoff(cutoff_s: float, frame_interval_s: float) -> float:
    """λ whose Whittaker smoother passes half the amplitude at period ``cutoff_s``.

    The second-difference Whittaker smoother ``z = (I + λ DᵀD)⁻¹ y`` (uniform weights,
    away from the edges) multiplies a sinusoid of angular frequency ω (radians per
    frame) by ``H(ω) = 1 / (1 + λ (2 - 2 cos ω)²) = 1 / (1 + 16 λ sin⁴(ω/2))``.
    The cut-off period ``T`` is where ``H = 1/2``, i.e. ``λ (2 - 2 cos ω_c)² = 1``
    with ``ω_c = 2π Δt / T``, so, exactly::

        λ = 1 / (16 sin⁴(π Δt / T))

    For ``T ≫ Δt`` this tends to ``(T / (2π Δt))⁴``: binning frames by ``k`` (Δt → kΔt)
    needs λ / k⁴ for the same cut-off, approximately; e.g. a cut-off of 11.02 s is
    λ = 10 at 1 s per frame and λ ≈ 9.48e4 (not exactly 1e5) at 0.1 s per frame.

    Parameters
    ----------
    cutoff_s : float
        Cut-off period in seconds, >= ``2 * frame_interval_s`` (Nyquist).
    frame_interval_s : float
        Time between frames in seconds, > 0.

    Returns
    -------
    float
        λ, in frames⁴, for :func:`arpls`.

    Raises
    ------
    ValueError
        If ``frame_interval_s <= 0`` or ``cutoff_s < 2 * frame_interval_s``.

    See Also
    --------
    cutoff_from_lam : the inverse.

    Examples
    --------
    >>> round(lam_from_cutoff(11.0226, 1.0), 3)
    10.0
    >>> round(lam_from_cutoff(11.0226, 0.1))  # not 10 * 10**4: the k**4 rule is the limit
    94766
    """
    dt = _check_positive(frame_interval_s, "frame_interval_s")
    cutoff = _check_positive(cutoff_s, "cutoff_s")
    if cutoff < 2.0 * dt:
        raise ValueError(f"cutoff_s must be >= 2 * frame_interval_s = {2.0 * dt!r} s "
                         f"(the Nyquist period), got {cutoff_s!r}")
    return 1.0 / (16.0 * math.sin(math.pi * dt / cutoff) ** 4)


def cutoff_from_lam(lam: float, frame_interval_s: float) -> float:
    """Cut-off period in seconds (response 1/2) of the Whittaker smoother with this λ.

    The inverse of :func:`lam_from_cutoff`: from ``16 λ sin⁴(ω_c/2) = 1``,
    ``ω_c = 2 arcsin(λ^(-1/4) / 2)`` radians per frame and::

        T = 2π Δt / ω_c = π Δt / arcsin(λ^(-1/4) / 2)

    which tends to ``2π Δt λ^(1/4)`` for large λ (the cut-off grows as λ^(1/4)).
    At 1 s per frame: λ = 10 gives T = 11.02 s (the ω⁴ approximation says 11.17 s);
    λ = 1e5 at 0.1 s per frame gives T = 11.17 s.

    Parameters
    ----------
    lam : float
        Smoothing parameter λ >= 1/16 (below it the response never falls to 1/2).
    frame_interval_s : float
        Time between frames in seconds, > 0.

    Returns
    -------
    float
        Cut-off period in seconds.

    Raises
    ------
    ValueError
        If ``lam < 1/16`` or ``frame_interval_s <= 0``.

    See Also
    --------
    lam_from_cutoff : the inverse.

    Examples
    --------
    >>> round(cutoff_from_lam(10.0, 1.0), 2), round(cutoff_from_lam(1e5, 0.1), 2)
    (11.02, 11.17)
    """
    dt = _check_positive(frame_interval_s, "frame_interval_s")
    lam = _check_positive(lam, "lam")
    if lam < 1.0 / 16.0:
        raise ValueError(f"lam must be >= 1/16 for the response to reach 1/2, got {lam!r}")
    return math.pi * dt / math.asin(0.5 * lam ** -0.25)


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _frame_interval(da: xr.DataArray, dim: str) -> float | None:
    """Median spacing of the ``dim`` coordinate (seconds), or None without one."""
    if dim not in da.coords or da.sizes[dim] < 2:
        return None
    step = np.diff(np.asarray(da[dim].values, dtype=np.float64))
    dt = float(np.median(step))
    return dt if math.isfinite(dt) and dt > 0 else None


def _arpls_nd(y: np.ndarray, lam: float, tol: float, max_iter: int) -> tuple[np.ndarray, ...]:
    """:func:`arpls` over the last axis of an array of any leading shape."""
    lead, n = y.shape[:-1], y.shape[-1]
    base, info = arpls(np.reshape(y, (-1, n)), lam=lam, tol=tol, max_iter=max_iter)
    return (base.reshape(*lead, n), info["converged"].reshape(lead),
            info["n_iter"].reshape(lead), info["weight_change"].reshape(lead),
            info["status"].reshape(lead), info["baseline_change"].reshape(lead))


def arpls_dataarray(
    da: xr.DataArray,
    /,
    *,
    dim: str = "time",
    lam: float | None = None,
    cutoff_s: float | None = None,
    tol: float = 1e-5,
    max_iter: int = 100,
) -> tuple[xr.DataArray, xr.Dataset]:
    """:func:`arpls` along ``dim`` of a DataArray of traces, lazily for dask arrays.

    Parameters
    ----------
    da : xarray.DataArray
        Traces with dims ``(..., dim, ...)``, e.g. ``("roi", "time")``; numpy- or
        dask-backed (``dim`` is gathered into one chunk).
    dim : str, optional
        The time dimension. Its coordinate, if any, is read as seconds. Default is
        ``"time"``.
    lam : float, optional
        Smoothing parameter λ. Give at most one of ``lam`` and ``cutoff_s``. Default is
        None, meaning 10.0 unless ``cutoff_s`` is given.
    cutoff_s : float, optional
        Cut-off period in seconds; λ then follows from the ``dim`` coordinate's median
        spacing by :func:`lam_from_cutoff`. Default is None.
    tol : float, optional
        Relative weight-change tolerance. Default is 1e-5.
    max_iter : int, optional
        Maximum number of iterations per trace. Default is 100.

    Returns
    -------
    baseline : xarray.DataArray
        float64, same dims and coordinates as ``da``. ``attrs`` record ``lam``,
        ``tol``, ``max_iter`` and, when the frame interval is known,
        ``frame_interval_s`` and ``cutoff_s``.
    info : xarray.Dataset
        ``converged`` (bool), ``n_iter`` (int64), ``weight_change`` (float64),
        ``status`` (str) and ``baseline_change`` (float64), as in :func:`arpls`, with
        the dims of ``da`` except ``dim``; same ``attrs`` as ``baseline``.

    Raises
    ------
    ValueError
        If ``dim`` is not a dimension of ``da``; if both ``lam`` and ``cutoff_s`` are
        given; if ``cutoff_s`` is given and ``dim`` has no increasing coordinate; as
        :func:`arpls` for bad values.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> t = np.arange(150) * 1.0
    >>> da = xr.DataArray(np.vstack([100 + 0.1 * t, 50 - 0.05 * t + np.sin(t)]),
    ...                   dims=("roi", "time"), coords={"time": t})
    >>> baseline, info = arpls_dataarray(da, cutoff_s=11.0)
    >>> baseline.dims, info["converged"].dims, round(baseline.attrs["lam"], 2)
    (('roi', 'time'), ('roi',), 9.92)
    """
    if dim not in da.dims:
        raise ValueError(f"dim must be a dimension of da {da.dims}, got {dim!r}")
    if lam is not None and cutoff_s is not None:
        raise ValueError("give lam or cutoff_s, not both")
    dt = _frame_interval(da, dim)
    if cutoff_s is not None:
        if dt is None:
            raise ValueError(f"cutoff_s needs an increasing {dim!r} coordinate in seconds")
        lam = lam_from_cutoff(cutoff_s, dt)
    lam, tol, max_iter = _check_params(10.0 if lam is None else lam, tol, max_iter)
    attrs: dict[str, Any] = {"lam": lam, "tol": tol, "max_iter": max_iter}
    if dt is not None:
        attrs["frame_interval_s"] = dt
        attrs["cutoff_s"] = cutoff_from_lam(lam, dt) if lam >= 1 / 16 else float("nan")

    if da.chunks is not None:
        da = da.chunk({dim: -1})
    base, conv, nit, change, status, move = xr.apply_ufunc(
        _arpls_nd, da, input_core_dims=[[dim]],
        output_core_dims=[[dim], [], [], [], [], []],
        kwargs={"lam": lam, "tol": tol, "max_iter": max_iter},
        dask="parallelized",
        output_dtypes=[np.float64, bool, np.int64, np.float64, np.dtype("<U9"), np.float64],
    )
    base = base.transpose(*da.dims)
    base.attrs = dict(attrs)
    info = xr.Dataset({"converged": conv, "n_iter": nit, "weight_change": change,
                       "status": status, "baseline_change": move}, attrs=dict(attrs))
    return base, info
