"""arPLS on 2000 traces x 150 points at lam = 10: calim_helpers vs pybaselines vs spsolve.

Usage::

    .venv/bin/python benchmarks/bench_arpls.py [--traces 2000] [--points 150] [--lam 10]

Times, in one run, ``calim_helpers.baseline.arpls`` on the whole 2-D array (and a loop
of 1-D calls), a loop of ``pybaselines.Baseline().arpls`` over the traces, and the plain
``scipy.sparse.linalg.spsolve`` arPLS on a subset (scaled to all traces); prints the
times side by side with their ratios, the fraction of converged fits, and the largest
difference from pybaselines on traces both converged on.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp
from pybaselines import Baseline
from scipy.sparse.linalg import spsolve
from scipy.special import expit

from calim_helpers.baseline import arpls


def _traces(k, n, seed=0):
    """ROI-like traces: bleach + drift + Poisson(3) transients + shot-like noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    f0 = rng.uniform(50, 500, (k, 1))
    y = f0 * (1 + rng.uniform(0.05, 0.3, (k, 1)) * np.exp(-t / rng.uniform(20, 100, (k, 1)))
              + rng.uniform(-0.05, 0.05, (k, 1)) * t / n)
    for j in range(k):
        for t0 in rng.choice(np.arange(5, n - 15), size=rng.poisson(3), replace=False):
            y[j] += rng.uniform(0.1, 0.5) * f0[j, 0] * np.exp(-(t - t0) / rng.uniform(2, 8)) \
                * (t >= t0)
    return y + rng.normal(0, 0.3, (k, n)) * np.sqrt(f0)


def _spsolve_arpls(y, lam, tol, max_iter):
    n = y.size
    D = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    P = lam * (D.T @ D)
    w = np.ones(n)
    for _ in range(max_iter):
        z = spsolve((sp.diags(w) + P).tocsc(), w * y)
        d = y - z
        dn = d[d < 0]
        if dn.size < 2:
            break
        m, s = dn.mean(), dn.std(ddof=1)
        w_new = expit(-2 * (d - (2 * s - m)) / s)
        if np.linalg.norm(w_new - w) / np.linalg.norm(w) < tol:
            break
        w = w_new
    return z


def _timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Run the benchmark and print the timings side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--points", type=int, default=150)
    ap.add_argument("--lam", type=float, default=10.0)
    ap.add_argument("--subset", type=int, default=200, help="traces for the slow loops")
    args = ap.parse_args()
    k, n, lam, tol, max_iter = args.traces, args.points, args.lam, 1e-5, 100
    y = _traces(k, n)
    sub = min(args.subset, k)

    t_2d, (base, info) = _timed(lambda: arpls(y, lam=lam, tol=tol, max_iter=max_iter), 3)
    t_1d, _ = _timed(lambda: [arpls(r, lam=lam, tol=tol, max_iter=max_iter) for r in y[:sub]])
    pyb = Baseline()

    def pyb_loop(rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [pyb.arpls(r, lam=lam, tol=tol, max_iter=max_iter) for r in rows]

    t_pyb, ref = _timed(lambda: pyb_loop(y))
    t_sps, _ = _timed(lambda: [_spsolve_arpls(r, lam, tol, max_iter) for r in y[:sub]])
    t_1d, t_sps = t_1d * k / sub, t_sps * k / sub

    conv_pyb = np.array([p["tol_history"].size and p["tol_history"][-1] < tol for _, p in ref])
    both = info["converged"] & conv_pyb
    diff = max((np.abs(base[j] - ref[j][0]).max() / np.ptp(y[j]) for j in np.flatnonzero(both)),
               default=np.nan)

    print(f"arPLS, {k} traces x {n} points, lam={lam:g}, tol={tol:g}, max_iter={max_iter}")
    rows = [("calim arpls, 2-D array", t_2d, ""),
            ("calim arpls, loop of 1-D", t_1d, f" (from {sub} traces)"),
            ("pybaselines arpls, loop", t_pyb, ""),
            ("scipy.sparse spsolve, loop", t_sps, f" (from {sub} traces)")]
    for name, t, note in rows:
        print(f"  {name:28s} {t:8.3f} s   {t / t_2d:6.1f} x calim 2-D{note}")
    print(f"  converged: calim {info['converged'].mean():.1%}, pybaselines {conv_pyb.mean():.1%}"
          f" (pybaselines allows max_iter + 1 solves)")
    print(f"  mean n_iter {info['n_iter'].mean():.1f}; max |calim - pybaselines| on traces both"
          f" converged: {diff:.1e} of the trace's range")


if __name__ == "__main__":
    main()
