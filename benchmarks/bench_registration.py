"""Rigid motion estimation: CALIM against scikit-image, speed and shift error, one run.

Usage::

    .venv/bin/python benchmarks/bench_registration.py [N_FRAMES] [REPEATS]

Simulates two sessions with the demo generator (N_FRAMES, default 1500, of 256 x 344
pixels, 18 neurons; seeds not used to tune the registration):

- ``demo``: ``demo.simulate_session(..., motion=True)``, the generator's own motion
  (random walk, jitter 0.15 px, one jump, at most 3 px);
- ``hard``: the same scene with harder motion: a smooth drift of 3 px, three jumps
  of 1-3 px in random directions and 0.3 px of per-frame jitter (up to 6 px).

On each, in one process, alternating, ``REPEATS`` times (default 2), median times:

- CALIM: :func:`make_template` then :func:`estimate_shifts` on the dask-backed movie
  (chunks of 100 frames), with dask's threads (``threads``) and on one thread
  (``synchronous``);
- scikit-image: ``phase_cross_correlation(template, frame, upsample_factor=...)``
  frame by frame against the same CALIM template, BLAS limited to one thread (its
  fastest setting on a busy machine), for several upsample factors and both
  normalizations.

Shift error: RMS over frames of the Euclidean norm of ``estimate + truth`` after
removing its mean over frames (the template's position is an arbitrary constant), in
native pixels. The speed ratio compares CALIM (template + estimation) with the
cheapest scikit-image setting whose error is at most CALIM's, or, when none is, with
its most accurate setting.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

import dask
import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter1d
from skimage.registration import phase_cross_correlation
from threadpoolctl import threadpool_limits

from calim_helpers import demo
from calim_helpers.registration import estimate_shifts, make_template

SHAPE = (256, 344)
SKIMAGE = [(None, 20), (None, 50), (None, 100), ("phase", 100)]


def hard_motion(n_frames: int, seed: int) -> np.ndarray:
    """Drift (3 px), three jumps (1-3 px) and jitter (0.3 px RMS), shape (time, 2)."""
    rng = np.random.default_rng([seed, 7])
    walk = gaussian_filter1d(np.cumsum(rng.standard_normal((n_frames, 2)), 0), 20, axis=0)
    walk -= walk[:1]
    walk *= 3.0 / np.abs(walk).max()
    step = np.zeros((n_frames, 2))
    for _ in range(3):
        at = rng.integers(int(0.1 * n_frames), int(0.9 * n_frames))
        angle, size = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
        step[at:] += size * np.array([np.sin(angle), np.cos(angle)])
    jitter = rng.normal(0.0, 0.3, (n_frames, 2))
    return np.clip(walk + step - step.mean(axis=0) + jitter, -6.0, 6.0)


def make_session(kind: str, n_frames: int, seed: int) -> tuple[xr.DataArray, np.ndarray]:
    """Rendered movie (dask, 100-frame chunks) and the applied shifts."""
    if kind == "demo":
        s = demo.simulate_session(n_frames, SHAPE, 18, motion=True, seed=seed)
    else:  # room (pad) for 6 px of motion, then the harder motion
        s = demo.simulate_session(n_frames, SHAPE, 18, motion=True, motion_amplitude_px=6.0,
                                  seed=seed)
        s = dataclasses.replace(s, shifts=hard_motion(n_frames, seed))
    frames = demo.render_frames(s, 0, n_frames)
    movie = xr.DataArray(frames, dims=("time", "y", "x")).chunk({"time": 100})
    return movie, s.shifts


def rms_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """RMS Euclidean error of ``estimate = -truth + const``, px."""
    err = np.asarray(estimate) + truth
    err -= err.mean(axis=0)
    return float(np.sqrt((err**2).sum(axis=1).mean()))


def run_calim(movie: xr.DataArray, scheduler: str) -> tuple[float, float, np.ndarray, np.ndarray]:
    with dask.config.set(scheduler=scheduler):
        t0 = time.perf_counter()
        template = make_template(movie)
        t1 = time.perf_counter()
        shifts = estimate_shifts(movie, template)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, template.values, shifts.values


def run_skimage(frames: np.ndarray, template: np.ndarray, normalization: str | None,
                factor: int) -> tuple[float, np.ndarray]:
    out = np.empty((len(frames), 2))
    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        for k, frame in enumerate(frames):
            out[k] = phase_cross_correlation(template, frame.astype(np.float32),
                                             upsample_factor=factor,
                                             normalization=normalization)[0]
        return time.perf_counter() - t0, out


def bench(kind: str, n_frames: int, seed: int, repeats: int) -> None:
    t0 = time.perf_counter()
    movie, truth = make_session(kind, n_frames, seed)
    frames = movie.values
    print(f"\n[{kind}] seed {seed}: {movie.shape} uint16 rendered in "
          f"{time.perf_counter() - t0:.0f} s; motion range dy {np.ptp(truth[:, 0]):.2f} px, "
          f"dx {np.ptp(truth[:, 1]):.2f} px, largest frame-to-frame step "
          f"{np.abs(np.diff(truth, axis=0)).max():.2f} px")
    times: dict[str, list[float]] = {}
    errors: dict[str, float] = {}
    template = None
    for _ in range(repeats):
        for scheduler in ("threads", "synchronous"):
            t_tpl, t_est, template, est = run_calim(movie, scheduler)
            times.setdefault(f"calim {scheduler}", []).append(t_tpl + t_est)
            times.setdefault(f"calim {scheduler} estimate only", []).append(t_est)
            errors[f"calim {scheduler}"] = errors[f"calim {scheduler} estimate only"] = (
                rms_error(est, truth))
        for norm, factor in SKIMAGE:
            name = f"skimage {norm or 'none'} x{factor}"
            dt, est = run_skimage(frames, template, norm, factor)
            times.setdefault(name, []).append(dt)
            errors[name] = rms_error(est, truth)
    fps = {name: n_frames / statistics.median(t) for name, t in times.items()}
    print(f"{'method':34s} {'frames/s':>9s} {'shift RMSE px':>14s}")
    for name in times:
        print(f"{name:34s} {fps[name]:9.0f} {errors[name]:14.4f}")
    calim = errors["calim threads"]
    sk = [f"skimage {n or 'none'} x{f}" for n, f in SKIMAGE]
    good = [s for s in sk if errors[s] <= calim]
    if good:
        ref = max(good, key=lambda s: fps[s])
        why = "cheapest scikit-image setting at least as accurate"
    else:
        ref = min(sk, key=lambda s: errors[s])
        why = (f"no scikit-image setting reaches {calim:.4f} px; its most accurate "
               f"({errors[ref]:.4f} px)")
    print(f"speed ratio vs {ref} ({why}): CALIM threads {fps['calim threads'] / fps[ref]:.1f}x, "
          f"synchronous {fps['calim synchronous'] / fps[ref]:.1f}x "
          f"(template + estimation; estimation only "
          f"{fps['calim threads estimate only'] / fps[ref]:.1f}x / "
          f"{fps['calim synchronous estimate only'] / fps[ref]:.1f}x)")


def main() -> None:
    """Run the benchmark on both sessions and print a table for each."""
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    bench("demo", n_frames, 2026, repeats)
    bench("hard", n_frames, 2027, repeats)


if __name__ == "__main__":
    main()
