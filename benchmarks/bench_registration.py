"""Motion correction on a full-frame demo session: time, peak memory and shift error.

Usage::

    .venv/bin/python benchmarks/bench_registration.py [N_FRAMES]

Simulates a demo session with motion (N_FRAMES, default 300, of the lab's 512 x 688,
60 neurons, ~3 px of motion), writes it as a Micro-Manager stack in a temporary folder,
then in fresh subprocesses (so that each peak resident memory, ``VmHWM``, is its own)
runs on the lazily opened movie:

- ``downsample``: block mean 2 x 2 x 10, computed (the pipeline without registration);
- ``register``: make_template -> estimate_shifts -> apply_shifts (cubic) -> downsample;
- ``register o1``: the same with linear interpolation (``order=1``);
- ``register 1blas``: ``register`` with ``OPENBLAS_NUM_THREADS=1`` (BLAS threads
  oversubscribe the cores under dask's threads in the sub-pixel refinement).

The shift error is the RMS over frames of ``estimate + truth`` after removing its
median (the template is not the unshifted scene). All numbers are from this one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time

def hwm_mb():  # peak resident set of this address space (VmHWM, fresh after exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

what, path, truth = sys.argv[1], sys.argv[2], sys.argv[3]
import dask, numpy as np, scipy.ndimage, skimage.registration, tifffile, xarray, zarr
from calim_helpers import io, registration
from calim_helpers.downsample import downsample
base = hwm_mb()
steps = {}
t0 = time.perf_counter()
movie = io.open_movie(path)
res = {}
if what.startswith("register"):
    order = 1 if what.endswith("o1") else 3
    t = time.perf_counter()
    template = registration.make_template(movie)
    steps["template"] = time.perf_counter() - t
    t = time.perf_counter()
    shifts = registration.estimate_shifts(movie, template)
    steps["estimate"] = time.perf_counter() - t
    err = shifts.values + np.load(truth)["shifts"]
    err -= np.median(err, axis=0)
    res["rms_px"] = float(np.sqrt((err ** 2).sum(axis=1).mean()))
    res["max_px"] = float(np.abs(err).max())
    res["min_peak_corr"] = float(shifts.peak_corr.min())
    movie = registration.apply_shifts(movie, shifts, order=order)
t = time.perf_counter()
small = downsample(movie).compute()
steps["apply+downsample" if what.startswith("register") else "downsample"] = (
    time.perf_counter() - t)
res.update(seconds=time.perf_counter() - t0, steps=steps, peak_rss_mb=hwm_mb(),
           import_rss_mb=base, shape=list(small.shape))
print(json.dumps(res))
"""


def _make_session(folder: Path, n_frames: int) -> tuple[Path, Path, tuple[int, ...]]:
    from calim_helpers import demo

    s = demo.simulate_session(n_frames, (512, 688), 60, motion=True, seed=0)
    session = folder / "04-04-23" / "230404_9"
    demo.write_mmstack(session, "230404_9", demo.iter_frames(s, chunk_frames=50),
                       n_frames=s.n_frames, frame_shape=s.frame_shape,
                       pixel_size_um=s.pixel_size_um, interval_ms=s.frame_interval_s * 1000)
    truth = folder / "truth.npz"
    np.savez(truth, shifts=s.shifts)
    return session, truth, (s.n_frames, *s.frame_shape)


def _measure(what: str, session: Path, truth: Path) -> dict:
    env = dict(os.environ)
    if what.endswith("1blas"):
        env["OPENBLAS_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(session), str(truth)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print one line per measurement."""
    n_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session, truth, shape = _make_session(Path(tmp), n_frames)
        motion = np.load(truth)["shifts"]
        print(f"simulated and wrote {shape} uint16 in {time.perf_counter() - t0:.1f} s; "
              f"motion range dy {np.ptp(motion[:, 0]):.2f} px, dx {np.ptp(motion[:, 1]):.2f} px")
        res = {w: _measure(w, session, truth) for w in ("downsample", "register", "register o1",
                                                     "register 1blas")}
        for w, r in res.items():
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in r["steps"].items())
            line = (f"{w:14s} {r['seconds']:7.1f} s   peak RSS {r['peak_rss_mb']:6.0f} MB "
                    f"(after imports {r['import_rss_mb']:.0f} MB)   [{steps}]")
            if "rms_px" in r:
                line += (f"   shift error RMS {r['rms_px']:.3f} px, max {r['max_px']:.3f} px, "
                         f"min peak_corr {r['min_peak_corr']:.3f}")
            print(line)
        base, reg = res["downsample"], res["register"]
        print(f"registration costs {reg['seconds'] / base['seconds']:.1f}x the downsampling "
              f"alone ({(reg['seconds'] - base['seconds']) / shape[0] * 1e3:.0f} ms per frame), "
              f"peak RSS {reg['peak_rss_mb'] / base['peak_rss_mb']:.1f}x")


if __name__ == "__main__":
    main()
