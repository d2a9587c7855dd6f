"""arPLS at lam = 10: calim_helpers vs pybaselines on 1000 x 150 and 100 x 1500 traces.

Usage::

    .venv/bin/python benchmarks/bench_arpls.py [--repeat 5] [--lam 10] [--seeds 0]

``--seeds`` draws the traces from these seeds (``901-915`` or ``1,2,3``), one comparison
each, and ends with the smallest and median ratio over them. The default seed 0 is the
one earlier figures were measured on.

For each shape, times in one run, alternating and repeated (medians):

* ``calim_helpers.baseline.arpls`` on the whole 2-D array (the full call, with the
  per-trace fit status, which costs one ``noise_sigma`` per trace);
* the arPLS iteration alone (``calim_helpers.baseline._fit``, what pybaselines does);
* a loop of ``pybaselines.Baseline().arpls`` over the traces,

all with the same ``lam``, ``tol`` and ``max_iter``. Times are CPU seconds of this
process (``time.process_time``; every method is single-threaded), which other jobs on
the machine disturb less than wall-clock seconds. Also printed: which iteration ran
(compiled with numba, or numpy + LAPACK), the fraction of traces each converged on, the
fraction of those converged on both with the same iteration count, and the largest
baseline difference there, relative to the trace's range.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from pybaselines import Baseline

from calim_helpers import baseline as bl


def _traces(k, n, seed=0):
    """ROI-like traces: bleach + drift + Poisson(3) transients + shot-like noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    f0 = rng.uniform(50, 500, (k, 1))
    y = f0 * (1 + rng.uniform(0.05, 0.3, (k, 1)) * np.exp(-t / rng.uniform(20, 100, (k, 1)))
              + rng.uniform(-0.05, 0.05, (k, 1)) * t / n)
    for j in range(k):
        for t0 in rng.choice(np.arange(5, n - 15), size=rng.poisson(3), replace=False):
            # exp of -max(t - t0, 0): no overflow before the onset (NaN at some seeds)
            y[j] += rng.uniform(0.1, 0.5) * f0[j, 0] \
                * np.exp(-np.maximum(t - t0, 0) / rng.uniform(2, 8)) * (t >= t0)
    return y + rng.normal(0, 0.3, (k, n)) * np.sqrt(f0)


def _fit_only(y, lam, tol, max_iter):
    """The arPLS iteration of ``arpls`` without the fit status (y scaled as arpls does)."""
    k, n = y.shape
    y2 = np.ldexp(y, -np.frexp(np.abs(y).max(axis=1))[1][:, None])
    out = (np.empty((k, n)), np.ones((k, n)), np.zeros(k, bool), np.zeros(k, np.int64),
           np.full(k, np.nan))
    bl._fit(y2, np.arange(k), lam, tol, max_iter, *out)
    return out


def _pybaselines(y, lam, tol, max_iter):
    pyb = Baseline()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pyb.arpls(r, lam=lam, tol=tol, max_iter=max_iter) for r in y]


def _compare(k, n, lam, tol, max_iter, repeat, seed=0):
    y = _traces(k, n, seed)
    runs = {"calim arpls (full call)": lambda: bl.arpls(y, lam=lam, tol=tol, max_iter=max_iter),
            "calim iteration only": lambda: _fit_only(y, lam, tol, max_iter),
            "pybaselines arpls, loop": lambda: _pybaselines(y, lam, tol, max_iter)}
    times = {name: [] for name in runs}
    out = {}
    for _ in range(repeat):  # alternate the methods, repeat, take medians
        for name, fn in runs.items():
            t0 = time.process_time()
            out[name] = fn()
            times[name].append(time.process_time() - t0)
    med = {name: float(np.median(t)) for name, t in times.items()}
    base, info = out["calim arpls (full call)"]
    ref = out["pybaselines arpls, loop"]
    hist = [p["tol_history"] for _, p in ref]
    conv_pyb = np.array([h.size <= max_iter and h.size > 0 and h[-1] < tol for h in hist])
    both = info["converged"] & conv_pyb
    same_n = np.array([info["n_iter"][j] == hist[j].size for j in np.flatnonzero(both)])
    diff = max((np.abs(base[j] - ref[j][0]).max() / np.ptp(y[j]) for j in np.flatnonzero(both)),
               default=np.nan)
    t_pyb = med["pybaselines arpls, loop"]
    print(f"\n{k} traces x {n} points, seed {seed}, lam={lam:g}, tol={tol:g}, "
          f"max_iter={max_iter}, median of {repeat} (CPU s)")
    for name, t in med.items():
        print(f"  {name:26s} {t:8.4f} s   pybaselines / this = {t_pyb / t:6.1f}")
    print(f"  converged: calim {info['converged'].mean():.1%}, pybaselines {conv_pyb.mean():.1%};"
          f" same n_iter on {same_n.mean():.1%} of the {both.sum()} converged on both")
    print(f"  max |calim - pybaselines| on those: {diff:.1e} of the trace's range;"
          f" mean n_iter {info['n_iter'].mean():.1f}")
    same = bool(both.sum() == conv_pyb.sum() == info["converged"].sum() and same_n.all())
    return t_pyb / med["calim arpls (full call)"], same, diff


def _seeds(text):
    """``"901-915"`` or ``"1,2,3"`` -> a list of ints."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    """Run the benchmark and print the timings side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lam", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seeds", type=_seeds, default=[0])
    args = ap.parse_args()
    tol, max_iter = 1e-5, 100
    it = "compiled (numba)" if bl._HAVE_NUMBA else "numpy + LAPACK (numba not installed)"
    print(f"calim arPLS iteration: {it}")
    t0 = time.perf_counter()
    bl.arpls(_traces(3, 40), lam=args.lam)  # compile, or load the compiled code from the cache
    print(f"first call (compile or cache load): {time.perf_counter() - t0:.2f} s wall")
    ratios = {}
    for seed in args.seeds:
        for k, n in ((1000, 150), (100, 1500)):
            ratios.setdefault((k, n), []).append(
                _compare(k, n, args.lam, tol, max_iter, args.repeat, seed))
    if len(args.seeds) > 1:
        print(f"\nover seeds {args.seeds[0]}..{args.seeds[-1]} ({len(args.seeds)}):")
        for (k, n), res in ratios.items():
            r = np.array([x[0] for x in res])
            print(f"  {k} x {n}: whole call, pybaselines / this: min {r.min():.1f}, median "
                  f"{np.median(r):.1f}, max {r.max():.1f}; same convergence and n_iter on "
                  f"{sum(x[1] for x in res)} of {len(res)} seeds; largest difference "
                  f"{max(x[2] for x in res):.1e} of the trace's range")


if __name__ == "__main__":
    main()
